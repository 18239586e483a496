//! `vipgate lab run --scenario failover`: two gateways in active-active
//! VRRP in front of one backend host, and a probe stream through both VIPs
//! while one gateway fails and comes back.
//!
//! Owns the failover topology (four namespaces, two bridges, policy
//! routing on the backend host), the two daemons and the backend server it
//! starts, the probe stream and the report. Builds links with `ip` (bridge
//! ports and policy rules are beyond the lab's netlink helpers). Touches
//! nothing outside its namespaces; only 198.18.0.0/15.
//!
//! ```text
//!            <lab>-cli: br0 198.18.0.2/24 (client)
//!            ports a0 ──────────────┐     ┌────────── b0
//!  <lab>-gwa vg-cli 198.18.0.1      │     │   <lab>-gwb vg-cli 198.18.0.3
//!  (vipgate) vg-srv 198.18.20.1     │     │   (vipgate) vg-srv 198.18.20.4
//!            ports a1 ──────────────┘     └────────── b1
//!            <lab>-srv: br0 198.18.20.2/24 + .3/24 (backend, web80-82)
//!
//!  vip1 198.18.10.10 + vip1-gw 198.18.20.254: gw-a 150, gw-b 100
//!  vip2 198.18.10.11 + vip2-gw 198.18.20.253: gw-a 100, gw-b 150
//!  backend: from .2 via .254 (table 1), from .3 via .253 (table 2)
//! ```
//!
//! Phases, each measured with a 1 kpps UDP echo stream per VIP: (a)
//! SIGKILL of gw-a's daemon, restart, preemption; (b) gw-a's client link
//! down, up, preemption; (c) `vrrp resign vip1` on gw-a (no loss
//! expected), `vrrp resume`, preemption.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::netns::NetNs;

/// One gateway's configuration; see the file for the placeholders.
pub const GW_TEMPLATE: &str = include_str!("failover-gw.toml");

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The two VIPs, in report order.
pub const VIPS: [(&str, Ipv4Addr); 2] = [
    ("vip1", Ipv4Addr::new(198, 18, 10, 10)),
    ("vip2", Ipv4Addr::new(198, 18, 10, 11)),
];
/// The backend host's address for each VIP's services.
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 20, 2), Ipv4Addr::new(198, 18, 20, 3)];
/// The backend link's VIPs the backend host routes each address's replies
/// through.
const BACKEND_GWS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 18, 20, 254),
    Ipv4Addr::new(198, 18, 20, 253),
];
/// The UDP echo service port on each VIP.
const ECHO_PORT: u16 = 7;
/// Probe rate per VIP: one datagram per this interval (1 kpps).
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Upper bound on one probe stream (datagrams per VIP).
const PROBE_MAX: usize = 30_000;
/// An unplanned loss window longer than this fails the phase.
const WINDOW_LIMIT: Duration = Duration::from_secs(3);
/// How long a wait for a VRRP state lasts at most.
const STATE_WAIT: Duration = Duration::from_secs(8);
/// Probe traffic before and after each event.
const SETTLE: Duration = Duration::from_millis(600);

/// The two gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gw {
    A,
    B,
}

impl Gw {
    pub const BOTH: [Gw; 2] = [Gw::A, Gw::B];

    pub fn label(self) -> &'static str {
        match self {
            Gw::A => "gw-a",
            Gw::B => "gw-b",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Gw::A => "gwa",
            Gw::B => "gwb",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// (vip1, vip2) priorities: each gateway prefers one VIP.
    fn priorities(self) -> (u8, u8) {
        match self {
            Gw::A => (150, 100),
            Gw::B => (100, 150),
        }
    }

    fn client_addr(self) -> &'static str {
        match self {
            Gw::A => "198.18.0.1/24",
            Gw::B => "198.18.0.3/24",
        }
    }

    fn backend_addr(self) -> &'static str {
        match self {
            Gw::A => "198.18.20.1/24",
            Gw::B => "198.18.20.4/24",
        }
    }

    /// The gateway each instance should end on.
    fn preferred(instance: &str) -> Gw {
        if instance.starts_with("vip1") {
            Gw::A
        } else {
            Gw::B
        }
    }
}

/// The configuration of gateway `gw`.
pub fn gateway_config(gw: Gw, socket: &Path, workers: u16) -> String {
    let (p1, p2) = gw.priorities();
    GW_TEMPLATE
        .replace("@NODE@", gw.label())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@WORKERS@", &workers.to_string())
        .replace("@VIP1_PRIORITY@", &p1.to_string())
        .replace("@VIP2_PRIORITY@", &p2.to_string())
}

/// Namespace names of a failover lab (for `lab down`).
pub fn namespace_names(name: &str) -> Vec<String> {
    ["cli", "gwa", "gwb", "srv"]
        .iter()
        .map(|s| format!("{name}-{s}"))
        .collect()
}

/// `lab run --scenario failover`.
pub fn run(name: &str, workers: u16) -> Result<ExitCode> {
    let mut lab = FailoverLab::up(name, workers)?;
    println!("{}", lab.describe());
    let outcome = scenario(&mut lab);
    if super::interrupted() {
        drop(lab);
        bail!("interrupted; the lab was torn down");
    }
    drop(lab);
    let reports = outcome?;
    print_summary(&reports);
    if reports.iter().all(|r| r.ok) {
        println!("lab {name}: PASS: both VIPs served throughout except for the windows above; preferred masters at the end");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab {name}: FAIL (see above)");
        Ok(ExitCode::FAILURE)
    }
}

// ------------------------------------------------------------- the lab

/// The running failover lab. Dropping it ends its processes by pid and
/// deletes its namespaces.
pub struct FailoverLab {
    name: String,
    client: NetNs,
    gws: [NetNs; 2],
    backend: NetNs,
    dir: PathBuf,
    workers: u16,
    backend_proc: Option<Child>,
    daemons: [Option<Child>; 2],
}

impl FailoverLab {
    fn up(name: &str, workers: u16) -> Result<FailoverLab> {
        super::check_name(name)?;
        let dir = super::lab_dir(name);
        if dir.exists()
            || NetNs::list_named()?
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        {
            bail!("a lab named {name} is already up; run `vipgate lab down --name {name}` first");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = (|| -> Result<(NetNs, [NetNs; 2], NetNs)> {
            let names = namespace_names(name);
            Ok((
                NetNs::create(&names[0])?,
                [NetNs::create(&names[1])?, NetNs::create(&names[2])?],
                NetNs::create(&names[3])?,
            ))
        })();
        let (client, gws, backend) = match made {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.context("creating the lab's namespaces"));
            }
        };
        let mut lab = FailoverLab {
            name: name.into(),
            client,
            gws,
            backend,
            dir,
            workers,
            backend_proc: None,
            daemons: [None, None],
        };
        lab.wire().context("building the failover lab network")?;
        lab.start_backend()?;
        for gw in Gw::BOTH {
            lab.start_daemon(gw)?;
        }
        Ok(lab)
    }

    fn ns_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    fn gw_ns(&self, gw: Gw) -> String {
        self.ns_name(gw.suffix())
    }

    fn socket(&self, gw: Gw) -> PathBuf {
        self.dir.join(format!("{}.sock", gw.label()))
    }

    /// Runs `ip -n NS ARGS`.
    fn ip(&self, ns: &str, args: &str) -> Result<()> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .context("running ip (iproute2)")?;
        if !out.status.success() {
            bail!(
                "ip -n {ns} {args}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Bridges, veth links, addresses, routes and policy rules.
    fn wire(&self) -> Result<()> {
        let cli = self.ns_name("cli");
        let srv = self.ns_name("srv");
        // A fixed MAC: a bridge otherwise takes its lowest port's, and a
        // port going down (phase b) would change the host's address.
        for (ns, mac) in [(&cli, "02:00:c6:12:00:02"), (&srv, "02:00:c6:12:14:02")] {
            self.ip(
                ns,
                &format!("link add br0 address {mac} type bridge stp_state 0 mcast_snooping 0"),
            )?;
        }
        for gw in Gw::BOTH {
            let ns = self.gw_ns(gw);
            let p = match gw {
                Gw::A => "a",
                Gw::B => "b",
            };
            self.ip(
                &ns,
                &format!("link add vg-cli type veth peer name {p}0 netns {cli}"),
            )?;
            self.ip(
                &ns,
                &format!("link add vg-srv type veth peer name {p}1 netns {srv}"),
            )?;
            self.ip(&cli, &format!("link set {p}0 master br0 up"))?;
            self.ip(&srv, &format!("link set {p}1 master br0 up"))?;
            self.ip(&ns, &format!("addr add {} dev vg-cli", gw.client_addr()))?;
            self.ip(&ns, &format!("addr add {} dev vg-srv", gw.backend_addr()))?;
            self.ip(&ns, "link set vg-cli up")?;
            self.ip(&ns, "link set vg-srv up")?;
        }
        self.ip(&cli, &format!("addr add {CLIENT}/24 dev br0"))?;
        self.ip(&cli, "link set br0 up")?;
        // The VIPs are on the client's link: it resolves them itself, and
        // the VRRP master's dataplane answers.
        for (_, vip) in VIPS {
            self.ip(&cli, &format!("route add {vip}/32 dev br0 scope link"))?;
        }
        for (i, (addr, via)) in BACKENDS.iter().zip(BACKEND_GWS).enumerate() {
            let table = i + 1;
            self.ip(&srv, &format!("addr add {addr}/24 dev br0"))?;
            self.ip(&srv, &format!("rule add from {addr} table {table}"))?;
            if i == 0 {
                self.ip(&srv, "link set br0 up")?;
            }
            self.ip(
                &srv,
                &format!("route add default via {via} dev br0 onlink table {table}"),
            )?;
        }
        // A VIP moves with a gratuitous ARP: let it replace a fresh
        // neighbour entry at once (locktime defaults to 1 s).
        for ns in [&self.client, &self.backend] {
            ns.run(|| fs::write("/proc/sys/net/ipv4/neigh/br0/locktime", "0"))??;
        }
        Ok(())
    }

    fn start_backend(&mut self) -> Result<()> {
        let exe = std::env::current_exe()?;
        let log = fs::File::create(self.dir.join("backend.log"))?;
        let addresses = BACKENDS.map(|a| a.to_string()).join(",");
        let child = self
            .backend
            .command(&exe)
            .args(["lab", "serve", "--ports", "80,81,82", "--addresses"])
            .arg(addresses)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the lab's backend servers")?;
        self.record(child.id())?;
        self.backend_proc = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = self.backend.run(|| {
                BACKENDS.iter().all(|a| {
                    std::net::TcpStream::connect_timeout(
                        &(*a, 80).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
            })?;
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the backend servers did not start (see {}/backend.log)",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `vipgate run` in `gw`'s namespace and waits until it answers.
    fn start_daemon(&mut self, gw: Gw) -> Result<()> {
        let config_path = self.dir.join(format!("{}.toml", gw.label()));
        fs::write(
            &config_path,
            gateway_config(gw, &self.socket(gw), self.workers),
        )?;
        let exe = std::env::current_exe()?;
        let log_path = self.dir.join(format!("{}.log", gw.label()));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let ns = &self.gws[gw.index()];
        let child = ns
            .command(&exe)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}'s daemon", gw.label()))?;
        self.record(child.id())?;
        self.daemons[gw.index()] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.status(gw).is_some() {
                return Ok(());
            }
            let exited = self.daemons[gw.index()]
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(code) = exited {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                bail!(
                    "{}'s daemon exited ({code}) during start:\n{log}",
                    gw.label()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}'s daemon did not answer within 20 s (see {})",
                    gw.label(),
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL for `gw`'s daemon (no resign, no restore); waits for it.
    fn kill_daemon(&mut self, gw: Gw) {
        if let Some(mut child) = self.daemons[gw.index()].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn record(&self, pid: u32) -> Result<()> {
        let path = self.dir.join("pids");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("{pid}\n"));
        fs::write(&path, text)?;
        Ok(())
    }

    fn request(&self, gw: Gw, request: &Value) -> Result<Value> {
        crate::control::request(&self.socket(gw), request)
    }

    fn status(&self, gw: Gw) -> Option<Value> {
        self.request(gw, &json!({"cmd": "status"})).ok()
    }

    /// Instance name -> state on each gateway ("-" when it does not answer).
    fn states(&self) -> BTreeMap<String, [String; 2]> {
        let mut out: BTreeMap<String, [String; 2]> = BTreeMap::new();
        for gw in Gw::BOTH {
            let Some(status) = self.status(gw) else {
                continue;
            };
            let instances = status["vrrp"]["instances"].as_array().cloned();
            for inst in instances.unwrap_or_default() {
                let name = inst["name"].as_str().unwrap_or("?").to_string();
                let state = inst["state"].as_str().unwrap_or("?").to_string();
                let entry = out
                    .entry(name)
                    .or_insert_with(|| ["-".to_string(), "-".to_string()]);
                entry[gw.index()] = state;
            }
        }
        out
    }

    /// "vip1 gw-a, vip1-gw gw-a, ...": who masters what; "none" or "both"
    /// when not exactly one gateway does.
    fn masters_line(&self) -> (String, bool) {
        let mut parts = Vec::new();
        let mut preferred = true;
        let states = self.states();
        for (name, s) in &states {
            let masters: Vec<&str> = Gw::BOTH
                .iter()
                .filter(|g| s[g.index()] == "MASTER")
                .map(|g| g.label())
                .collect();
            let who = match masters.as_slice() {
                [one] => one.to_string(),
                [] => "none".to_string(),
                _ => "BOTH".to_string(),
            };
            preferred &= masters == [Gw::preferred(name).label()];
            parts.push(format!("{name} {who}"));
        }
        preferred &= states.len() == 4;
        (parts.join(", "), preferred)
    }

    /// Dataplane drops and ring drops per reason, summed over workers.
    fn drops(&self, gw: Gw) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Some(status) = self.status(gw) else {
            return out;
        };
        for w in status["workers"].as_array().cloned().unwrap_or_default() {
            let counters = w["drops"].as_object().into_iter().flatten().chain(
                w["counters"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "rx_ring_drops" | "tx_errors" | "kernel_passed")
                    }),
            );
            for (k, v) in counters {
                *out.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        out
    }

    /// Waits until `gw` reports `instance` as MASTER; the time it took.
    fn wait_master(&self, gw: Gw, instance: &str) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < STATE_WAIT && !super::interrupted() {
            let state = self.states().get(instance).map(|s| s[gw.index()].clone());
            if state.as_deref() == Some("MASTER") {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn describe(&self) -> String {
        format!(
            "lab {n}: namespaces {n}-cli (client), {n}-gwa (gw-a), {n}-gwb (gw-b), {n}-srv (backend)\n\
             vip1 198.18.10.10 (gw-a 150 / gw-b 100), vip2 198.18.10.11 (gw-a 100 / gw-b 150), \
             adverts every 100 ms; backend-side VIPs .20.254 / .20.253 follow them\n\
             logs and configs in {}",
            self.dir.display(),
            n = self.name,
        )
    }
}

impl Drop for FailoverLab {
    fn drop(&mut self) {
        // SIGTERM to everything at once (the daemons resign and drain for
        // their grace period in parallel), then wait, then SIGKILL.
        let mut children: Vec<Child> = self
            .daemons
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.backend_proc.take())
            .collect();
        for c in &children {
            super::terminate_pid(c.id() as i32);
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        for c in &mut children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The NetNs values delete their namespaces when dropped after this.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------- the probe

/// A 1 kpps UDP echo stream to each VIP from the client namespace.
struct Probe {
    started: Instant,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: JoinHandle<Vec<Instant>>,
    receivers: Vec<JoinHandle<Vec<Option<Instant>>>>,
}

/// What one VIP's stream saw: send time and reply time per sequence number.
struct Trace {
    sent: Vec<Instant>,
    replies: Vec<Option<Instant>>,
}

impl Probe {
    fn start(client: &NetNs) -> Result<Probe> {
        let sockets = client.run(|| -> std::io::Result<Vec<UdpSocket>> {
            VIPS.iter()
                .map(|(_, vip)| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                    s.connect(SocketAddr::from((*vip, ECHO_PORT)))?;
                    s.set_read_timeout(Some(Duration::from_millis(20)))?;
                    Ok(s)
                })
                .collect()
        })??;
        let stop_send = Arc::new(AtomicBool::new(false));
        let stop_recv = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        for (i, s) in sockets.iter().enumerate() {
            let s = s.try_clone()?;
            let stop = stop_recv.clone();
            receivers.push(std::thread::spawn(move || receive(&s, i, &stop)));
        }
        let stop = stop_send.clone();
        let started = Instant::now();
        let sender = std::thread::spawn(move || send(&sockets, &stop));
        Ok(Probe {
            started,
            stop_send,
            stop_recv,
            sender,
            receivers,
        })
    }

    /// Stops sending, waits for late replies, returns one trace per VIP.
    fn stop(self) -> Vec<Trace> {
        self.stop_send.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap_or_default();
        std::thread::sleep(Duration::from_millis(300));
        self.stop_recv.store(true, Ordering::Relaxed);
        self.receivers
            .into_iter()
            .map(|r| Trace {
                sent: sent.clone(),
                replies: r.join().unwrap_or_default(),
            })
            .collect()
    }
}

fn payload(vip: usize, seq: usize) -> String {
    format!("probe {vip} {seq}")
}

/// (vip, seq) from an echo reply: the server's answer line, then the
/// request.
fn parse_reply(reply: &[u8]) -> Option<(usize, usize)> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut words = text.split_whitespace().rev();
    let seq = words.next()?.parse().ok()?;
    let vip = words.next()?.parse().ok()?;
    (words.next()? == "probe").then_some((vip, seq))
}

fn send(sockets: &[UdpSocket], stop: &AtomicBool) -> Vec<Instant> {
    let mut sent = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && sent.len() < PROBE_MAX {
        let seq = sent.len();
        sent.push(Instant::now());
        for (i, s) in sockets.iter().enumerate() {
            // A send error (e.g. an unresolved VIP) is a lost datagram.
            let _ = s.send(payload(i, seq).as_bytes());
        }
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    sent
}

fn receive(socket: &UdpSocket, vip: usize, stop: &AtomicBool) -> Vec<Option<Instant>> {
    let mut replies: Vec<Option<Instant>> = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let Some((v, seq)) = parse_reply(&buf[..n]) else {
            continue;
        };
        if v != vip || seq >= PROBE_MAX {
            continue;
        }
        if replies.len() <= seq {
            replies.resize(seq + 1, None);
        }
        replies[seq].get_or_insert(at);
    }
    replies
}

/// A run of lost datagrams.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// Send time of the first lost datagram, from the stream's start.
    pub at: Duration,
    pub lost: usize,
    /// Last reply before the gap to the first after it; `None`: no reply
    /// came after it.
    pub window: Option<Duration>,
}

/// The gaps of one stream. `sent[i]` is when datagram i left, `replies[i]`
/// when its reply came (shorter than `sent` if the tail got none).
pub fn gaps(start: Instant, sent: &[Instant], replies: &[Option<Instant>]) -> Vec<Gap> {
    let got = |i: usize| replies.get(i).copied().flatten();
    let mut out = Vec::new();
    let mut last_reply = Some(start);
    let mut i = 0;
    while i < sent.len() {
        if let Some(at) = got(i) {
            last_reply = Some(at);
            i += 1;
            continue;
        }
        let first = i;
        while i < sent.len() && got(i).is_none() {
            i += 1;
        }
        let after = if i < sent.len() { got(i) } else { None };
        out.push(Gap {
            at: sent[first].saturating_duration_since(start),
            lost: i - first,
            window: after
                .zip(last_reply)
                .map(|(a, b)| a.saturating_duration_since(b)),
        });
    }
    out
}

// ------------------------------------------------------------- phases

/// One phase's measurements.
struct Report {
    label: &'static str,
    planned: bool,
    /// (time from the stream's start, what happened).
    events: Vec<(Duration, String)>,
    /// Per VIP: datagrams sent and the gaps.
    sent: usize,
    gaps: [Vec<Gap>; 2],
    masters: Vec<(String, String)>,
    ok: bool,
    problems: Vec<String>,
}

impl Report {
    fn lost(&self, vip: usize) -> usize {
        self.gaps[vip].iter().map(|g| g.lost).sum()
    }

    fn longest(&self, vip: usize) -> Option<Duration> {
        self.gaps[vip].iter().filter_map(|g| g.window).max()
    }
}

/// A phase in progress: the probe and the log of events.
struct Phase {
    label: &'static str,
    planned: bool,
    probe: Probe,
    events: Vec<(Duration, String)>,
    masters: Vec<(String, String)>,
    problems: Vec<String>,
    /// Drop counters of each gateway at the start.
    drops_before: [BTreeMap<String, u64>; 2],
}

impl Phase {
    fn start(lab: &FailoverLab, label: &'static str, planned: bool) -> Result<Phase> {
        println!("\n{label}");
        let probe = Probe::start(&lab.client)?;
        let mut phase = Phase {
            label,
            planned,
            probe,
            events: Vec::new(),
            masters: Vec::new(),
            problems: Vec::new(),
            drops_before: Gw::BOTH.map(|g| lab.drops(g)),
        };
        phase.event("probe stream started (1 kpps per VIP)");
        Ok(phase)
    }

    fn event(&mut self, what: impl Into<String>) {
        let at = self.probe.started.elapsed();
        let what = what.into();
        println!("  +{:>6.3}s  {what}", at.as_secs_f64());
        self.events.push((at, what));
    }

    fn snapshot(&mut self, lab: &FailoverLab, when: &str) {
        let (line, _) = lab.masters_line();
        println!("  masters {when}: {line}");
        self.masters.push((when.to_string(), line));
    }

    fn wait_master(&mut self, lab: &FailoverLab, gw: Gw, instance: &str, since: &str) {
        match lab.wait_master(gw, instance) {
            Some(t) => self.event(format!(
                "{} masters {instance} (status; {} ms after {since})",
                gw.label(),
                t.as_millis()
            )),
            None => self.problems.push(format!(
                "{} did not become master of {instance} within {} s after {since}",
                gw.label(),
                STATE_WAIT.as_secs()
            )),
        }
    }

    fn settle(&self) {
        sleep_unless_interrupted(SETTLE);
    }

    fn finish(mut self, lab: &FailoverLab) -> Report {
        let (line, preferred) = lab.masters_line();
        println!("  masters at the end: {line}");
        self.masters.push(("at the end".into(), line));
        if !preferred {
            self.problems
                .push("the VIPs did not end on their preferred gateways".into());
        }
        let start = self.probe.started;
        let traces = self.probe.stop();
        for gw in Gw::BOTH {
            let before = &self.drops_before[gw.index()];
            let grown: Vec<String> = lab
                .drops(gw)
                .into_iter()
                .filter_map(|(k, v)| {
                    // A restarted daemon counts from zero.
                    let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
                    (d > 0).then(|| format!("{k} {d}"))
                })
                .collect();
            if !grown.is_empty() {
                println!("  {} dataplane drops: {}", gw.label(), grown.join(", "));
            }
        }
        let sent = traces.first().map_or(0, |t| t.sent.len());
        let gaps = [0, 1].map(|i| {
            traces
                .get(i)
                .map(|t| gaps(start, &t.sent, &t.replies))
                .unwrap_or_default()
        });
        for (i, (vip, _)) in VIPS.iter().enumerate() {
            for g in &gaps[i] {
                match g.window {
                    None => self.problems.push(format!(
                        "{vip}: {} datagrams from +{:.3}s got no reply, none after them",
                        g.lost,
                        g.at.as_secs_f64()
                    )),
                    Some(w) if w > WINDOW_LIMIT => self.problems.push(format!(
                        "{vip}: loss window {} ms is over {} s",
                        w.as_millis(),
                        WINDOW_LIMIT.as_secs()
                    )),
                    Some(_) => {}
                }
            }
        }
        let mut report = Report {
            label: self.label,
            planned: self.planned,
            events: self.events,
            sent,
            gaps,
            masters: self.masters,
            ok: false,
            problems: self.problems,
        };
        if report.planned {
            for (i, (vip, _)) in VIPS.iter().enumerate() {
                if report.lost(i) > 0 {
                    report.problems.push(format!(
                        "{vip}: planned switchover lost {} datagrams",
                        report.lost(i)
                    ));
                }
            }
        }
        if sent == 0 {
            report.problems.push("the probe sent nothing".into());
        }
        report.ok = report.problems.is_empty();
        print_report(&report);
        report
    }
}

fn sleep_unless_interrupted(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !super::interrupted() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn scenario(lab: &mut FailoverLab) -> Result<Vec<Report>> {
    // Both gateways start as backup; wait for the preferred masters.
    for (instance, gw) in [("vip1", Gw::A), ("vip2", Gw::B)] {
        if lab.wait_master(gw, instance).is_none() {
            bail!(
                "{} did not become master of {instance} after start",
                gw.label()
            );
        }
    }
    // Let the client resolve both VIPs before measuring.
    warm_up(lab)?;
    let mut reports = Vec::new();
    type Step = fn(&mut FailoverLab) -> Result<Report>;
    let steps: [Step; 3] = [phase_kill, phase_link_down, phase_resign];
    for step in steps {
        if super::interrupted() {
            break;
        }
        reports.push(step(lab)?);
    }
    Ok(reports)
}

fn warm_up(lab: &FailoverLab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = lab.client.run(move || {
        VIPS.iter().all(|(_, vip)| {
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 512];
            while Instant::now() < deadline {
                let _ = s.send_to(payload(0, 0).as_bytes(), (*vip, ECHO_PORT));
                if s.recv(&mut buf).is_ok() {
                    return true;
                }
            }
            false
        })
    })?;
    if !answered {
        bail!("the VIPs did not answer the client's UDP echo before the first phase");
    }
    Ok(())
}

/// (a) SIGKILL of gw-a's daemon, restart, preemption.
fn phase_kill(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(lab, "(a) gw-a's daemon killed with SIGKILL", false)?;
    p.settle();
    p.event("gw-a: SIGKILL to vipgate");
    lab.kill_daemon(Gw::A);
    p.event("gw-a: vipgate reaped");
    p.wait_master(lab, Gw::B, "vip1", "the reaping");
    p.settle();
    p.snapshot(lab, "after the failure");
    p.event("gw-a: vipgate restarting");
    let restarted = lab.start_daemon(Gw::A);
    match restarted {
        Ok(()) => {
            p.event("gw-a: vipgate answers on its control socket");
            p.wait_master(lab, Gw::A, "vip1", "the restart");
        }
        Err(e) => p.problems.push(format!(
            "gw-a's daemon did not restart after SIGKILL: {e:#}"
        )),
    }
    p.settle();
    Ok(p.finish(lab))
}

/// (b) gw-a's client link down, then up.
fn phase_link_down(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(lab, "(b) gw-a's client link down, then up", false)?;
    let ns = lab.gw_ns(Gw::A);
    p.settle();
    lab.ip(&ns, "link set vg-cli down")?;
    p.event("gw-a: ip link set vg-cli down");
    p.wait_master(lab, Gw::B, "vip1", "link down");
    p.settle();
    p.snapshot(lab, "with the link down");
    lab.ip(&ns, "link set vg-cli up")?;
    p.event("gw-a: ip link set vg-cli up");
    p.wait_master(lab, Gw::A, "vip1", "link up");
    p.settle();
    Ok(p.finish(lab))
}

/// (c) planned: `vrrp resign vip1` on gw-a, then `vrrp resume vip1`.
fn phase_resign(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(
        lab,
        "(c) planned: vrrp resign vip1 on gw-a, then resume",
        true,
    )?;
    p.settle();
    let r = lab.request(Gw::A, &json!({"cmd": "vrrp.resign", "instance": "vip1"}));
    match r {
        Ok(v) => p.event(format!(
            "gw-a: vrrp resign vip1 (grace {} ms)",
            v["grace_ms"]
        )),
        Err(e) => p.problems.push(format!("vrrp resign vip1 failed: {e:#}")),
    }
    p.wait_master(lab, Gw::B, "vip1", "the resign");
    p.settle();
    p.snapshot(lab, "after the resign");
    match lab.request(Gw::A, &json!({"cmd": "vrrp.resume", "instance": "vip1"})) {
        Ok(_) => p.event("gw-a: vrrp resume vip1"),
        Err(e) => p.problems.push(format!("vrrp resume vip1 failed: {e:#}")),
    }
    p.wait_master(lab, Gw::A, "vip1", "the resume");
    p.settle();
    Ok(p.finish(lab))
}

// ------------------------------------------------------------- output

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

/// The event a gap belongs to: the last one before it began (with 50 ms
/// of slack for datagrams in flight).
fn cause(events: &[(Duration, String)], at: Duration) -> &str {
    events
        .iter()
        .rev()
        .find(|(t, _)| *t <= at + Duration::from_millis(50))
        .map_or("?", |(_, what)| what.as_str())
}

fn print_report(r: &Report) {
    println!("  {} datagrams sent per VIP", r.sent);
    for (i, (vip, _)) in VIPS.iter().enumerate() {
        if r.gaps[i].is_empty() {
            println!("  {vip}: lost 0");
            continue;
        }
        println!("  {vip}: lost {}", r.lost(i));
        for g in &r.gaps[i] {
            println!(
                "    +{:.3}s  {:>5} lost  window {:>8}  after: {}",
                g.at.as_secs_f64(),
                g.lost,
                g.window
                    .map_or("NO REPLY AFTER".into(), |w| format!("{} ms", w.as_millis())),
                cause(&r.events, g.at)
            );
        }
    }
    for p in &r.problems {
        println!("  PROBLEM: {p}");
    }
    println!(
        "RESULT phase={} planned={} vip1_lost={} vip2_lost={} ok={}",
        r.label.get(1..2).unwrap_or("?"),
        r.planned,
        r.lost(0),
        r.lost(1),
        r.ok
    );
}

fn print_summary(reports: &[Report]) {
    println!("\nsummary (loss per VIP; window = last reply before a gap to the first after it)");
    println!(
        "  {:<44} {:>9} {:>10} {:>9} {:>10}  verdict",
        "phase", "vip1 lost", "vip1 win", "vip2 lost", "vip2 win"
    );
    for r in reports {
        println!(
            "  {:<44} {:>9} {:>10} {:>9} {:>10}  {}",
            r.label,
            r.lost(0),
            fmt_ms(r.longest(0)),
            r.lost(1),
            fmt_ms(r.longest(1)),
            if r.ok { "ok" } else { "FAIL" }
        );
    }
    for r in reports {
        for (when, line) in &r.masters {
            println!(
                "  {} masters {when}: {line}",
                r.label.get(..3).unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn gaps_measure_lost_runs_and_windows() {
        let s = Instant::now();
        let sent: Vec<Instant> = (0..6).map(|i| at(s, i)).collect();
        let replies = vec![Some(at(s, 1)), None, None, Some(at(s, 10)), Some(at(s, 11))];
        let g = gaps(s, &sent, &replies);
        assert_eq!(
            g,
            vec![
                Gap {
                    at: Duration::from_millis(1),
                    lost: 2,
                    window: Some(Duration::from_millis(9)),
                },
                Gap {
                    at: Duration::from_millis(5),
                    lost: 1,
                    window: None,
                },
            ]
        );
        let all: Vec<Option<Instant>> = sent.iter().map(|t| Some(*t)).collect();
        assert!(gaps(s, &sent, &all).is_empty());
    }

    #[test]
    fn replies_parse_back_to_vip_and_sequence() {
        let reply = format!("{}{}", super::super::serve::answer_text(80), payload(1, 42));
        assert_eq!(parse_reply(reply.as_bytes()), Some((1, 42)));
        assert_eq!(parse_reply(b"vhost web80 port 80\nnot a probe"), None);
    }

    #[test]
    fn both_gateway_configs_validate() {
        use crate::config::{validate_str, SystemInterface, SystemView};
        for gw in Gw::BOTH {
            let lo = SystemInterface::new("lo", vec!["127.0.0.1/8".parse().expect("test address")]);
            let cli = SystemInterface::new(
                "vg-cli",
                vec![gw.client_addr().parse().expect("test address")],
            );
            let srv = SystemInterface::new(
                "vg-srv",
                vec![gw.backend_addr().parse().expect("test address")],
            );
            let view = SystemView::new(vec![lo, cli, srv]);
            let text = gateway_config(gw, Path::new("/run/vipgate/lab/x/gw.sock"), 1);
            assert!(!text.contains('@'), "a placeholder is left");
            let config = match validate_str(&text, "gw.toml", Some(&view)) {
                Ok(c) => c,
                Err(e) => panic!("{} does not validate:\n{e}", gw.label()),
            };
            assert_eq!(config.vrrp.instances.len(), 4);
            let (p1, _) = gw.priorities();
            assert_eq!(config.vrrp_instance("vip1").map(|i| i.priority), Some(p1));
        }
    }
}
