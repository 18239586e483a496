//! Lab scenarios: client traffic through the VIPs, with a live view of
//! answers per backend and a summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{net, serve, Lab, BACKEND_PORTS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// HTTP over the IPv4 and IPv6 VIPs and UDP over the IPv4 VIP; passes
    /// when every backend answered on each.
    Smoke,
    /// Two gateways in active-active VRRP (gw-a masters vip1, gw-b vip2)
    /// and a 1 kpps UDP probe per VIP while gw-a is killed, loses its
    /// client link, and resigns vip1 (planned: no loss); passes when both
    /// VIPs are served throughout except for the reported windows.
    Failover,
    /// The failover phases at 10 kpps per VIP, first with the vipgate
    /// pair, then with a keepalived pair (kernel NAT), side by side.
    FailoverCompare,
    /// An upstream router (`--router builtin` or `bird`) with one
    /// multipath route per VIP to two gateways that announce it over BGP:
    /// the split of flows per gateway, the same backend through either
    /// (Maglev), and a UDP probe while gw-a is drained (planned: no loss),
    /// frozen with SIGSTOP (lost until the hold timer) and killed.
    Ecmp,
    /// The ECMP lab timing VIP state changes on gw-a (drain, operator
    /// route, VRRP resign/resume) to the router's kernel FIB, `--repeat`
    /// rounds, medians.
    EcmpTiming,
}

/// One kind of request the client sends.
#[derive(Debug, Clone, Copy)]
struct Probe {
    label: &'static str,
    target: SocketAddr,
    udp: bool,
}

fn probes() -> [Probe; 3] {
    [
        Probe {
            label: "http v4",
            target: (net::VIP_V4, 80).into(),
            udp: false,
        },
        Probe {
            label: "http v6",
            target: (net::VIP_V6, 80).into(),
            udp: false,
        },
        Probe {
            label: "udp  v4",
            target: (net::VIP_V4, 7).into(),
            udp: true,
        },
    ]
}

/// Tally of one probe kind.
#[derive(Debug, Default, Clone)]
struct Tally {
    per_port: BTreeMap<u16, u32>,
    failures: u32,
    last_error: Option<String>,
}

impl Tally {
    fn line(&self, label: &str) -> String {
        let mut s = format!("{label:8}");
        for p in BACKEND_PORTS {
            s.push_str(&format!(
                "  web{p}: {:4}",
                self.per_port.get(&p).copied().unwrap_or(0)
            ));
        }
        s.push_str(&format!("  failed: {}", self.failures));
        s
    }

    fn all_backends(&self) -> bool {
        BACKEND_PORTS
            .iter()
            .all(|p| self.per_port.get(p).is_some_and(|n| *n > 0))
    }
}

/// Runs `scenario`; `Ok(true)` when it passed.
pub fn run(scenario: Scenario, lab: &Lab, requests: u32) -> Result<bool> {
    match scenario {
        Scenario::Smoke => smoke(lab, requests),
        // Runs on its own topology (see `super::failover`).
        Scenario::Failover | Scenario::FailoverCompare | Scenario::Ecmp | Scenario::EcmpTiming => {
            Ok(false)
        }
    }
}

fn smoke(lab: &Lab, requests: u32) -> Result<bool> {
    // Let the gateway's kernel learn the client's MAC (it answers the
    // client's ARP/ND for its own address) so the first replies need not
    // wait for a resolution.
    lab.client.run(|| {
        for gw in [IpAddr::V4(net::GW_CLI_V4), IpAddr::V6(net::GW_CLI_V6)] {
            let _ = TcpStream::connect_timeout(&(gw, 9).into(), Duration::from_millis(500));
        }
    })?;
    let tty = std::io::stdout().is_terminal();
    println!("\nsending {requests} requests per VIP and protocol from the client namespace:");
    let mut tallies = Vec::new();
    for probe in probes() {
        let tally = lab.client.run(move || drive(probe, requests, tty))?;
        if !tty {
            println!("{}", tally.line(probe.label));
        }
        if let Some(e) = &tally.last_error {
            println!("          last error: {e}");
        }
        tallies.push((probe, tally));
    }
    println!("\nsummary (answers per backend through the VIPs):");
    let mut ok = true;
    for (probe, tally) in &tallies {
        let verdict = if tally.all_backends() {
            "ok"
        } else {
            "MISSING BACKENDS"
        };
        ok &= tally.all_backends();
        println!(
            "  {}  -> {}  {verdict}",
            tally.line(probe.label),
            probe.target
        );
    }
    Ok(ok)
}

/// Sends `requests` requests of one kind, each on a new connection (new
/// source port), redrawing the tally line on a terminal.
fn drive(probe: Probe, requests: u32, tty: bool) -> Tally {
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..requests {
        let answer = if probe.udp {
            udp_request(probe.target, i)
        } else {
            http_request(probe.target)
        };
        match answer {
            Ok(text) => match serve::port_of_answer(&text) {
                Some(port) => *tally.per_port.entry(port).or_insert(0) += 1,
                None => {
                    tally.failures += 1;
                    tally.last_error = Some(format!("unexpected answer {text:?}"));
                }
            },
            Err(e) => {
                tally.failures += 1;
                tally.last_error = Some(e.to_string());
            }
        }
        if tty {
            print!("\r{}", tally.line(probe.label));
            let _ = std::io::stdout().flush();
        }
        if super::interrupted() {
            tally.last_error = Some("interrupted".into());
            break;
        }
        // Bounded in time as well as in count.
        if started.elapsed() > Duration::from_secs(60) {
            tally.last_error = Some("stopped after 60 s".into());
            break;
        }
    }
    if tty {
        println!();
    }
    tally
}

/// One HTTP/1.1 GET on a fresh connection; returns the body. Retries once
/// (a first SYN may meet an unresolved neighbour).
pub(super) fn http_request(target: SocketAddr) -> std::io::Result<String> {
    let mut last = None;
    for _ in 0..3 {
        match http_once(target) {
            Ok(body) => return Ok(body),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no attempt")))
}

fn http_once(target: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    let host = match target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| std::io::Error::other("incomplete HTTP response"))?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "HTTP status line {:?}",
            response.lines().next().unwrap_or("")
        )));
    }
    Ok(body)
}

/// One UDP datagram from a fresh socket; waits for the answer (3 tries).
fn udp_request(target: SocketAddr, i: u32) -> std::io::Result<String> {
    udp_request_from(target, 0, i)
}

/// [`udp_request`] from source port `port` (0: any).
pub(super) fn udp_request_from(target: SocketAddr, port: u16, i: u32) -> std::io::Result<String> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let request = format!("lab request {i}");
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        socket.send(request.as_bytes())?;
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.ends_with(&request) {
                return Ok(text);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no UDP answer",
    ))
}
