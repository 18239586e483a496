//! The labs' UDP probe stream: datagrams at a fixed rate on several flows
//! from the client namespace, each answered by the lab's backend echo, and
//! the analysis of what was lost (runs of lost datagrams and the loss
//! window around each).
//!
//! Owns the probe's sockets and threads (bounded in count and time: at
//! most [`PROBE_SECONDS`] at the given rate), the payload format, and the
//! small helpers the failover and ECMP scenarios share (rates, host socket
//! drops, interruptible sleeps). Must not touch the lab topology or its
//! processes; sends only to the targets it is given.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// Upper bound on one probe stream's length; with the rate, on its count
/// (30,000 datagrams per flow at 1 kpps, 300,000 at 10 kpps).
pub const PROBE_SECONDS: u32 = 30;
/// After a stall the sender catches up with at most this many datagrams
/// back to back per flow.
const PROBE_BURST: u32 = 10;
/// Receive buffer of each probe socket (bytes asked for).
const PROBE_RCVBUF: usize = 8 << 20;

/// One flow of the probe: a socket of the client sending to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub target: SocketAddr,
    /// Source port; 0: the kernel picks one.
    pub source_port: u16,
}

impl Flow {
    /// A flow from a port the kernel picks.
    pub fn to(target: SocketAddr) -> Flow {
        Flow {
            target,
            source_port: 0,
        }
    }
}

/// A UDP echo stream on each flow from the client namespace.
pub struct Probe {
    pub started: Instant,
    /// Datagrams per flow at most.
    pub max: usize,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: JoinHandle<Vec<Instant>>,
    receivers: Vec<JoinHandle<Vec<Option<Instant>>>>,
}

/// What one flow's stream saw: send time and reply time per sequence
/// number.
pub struct Trace {
    pub sent: Vec<Instant>,
    pub replies: Vec<Option<Instant>>,
}

impl Probe {
    /// A stream of `rate` datagrams per second on each flow (IPv4), at
    /// most [`PROBE_SECONDS`] long.
    pub fn start(client: &NetNs, rate: u32, flows: &[Flow]) -> Result<Probe> {
        let rate = rate.max(1);
        let every = Duration::from_secs(1) / rate;
        let max = rate as usize * PROBE_SECONDS as usize;
        let flows = flows.to_vec();
        let sockets = client.run(move || -> std::io::Result<Vec<UdpSocket>> {
            flows
                .iter()
                .map(|f| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, f.source_port))?;
                    s.connect(f.target)?;
                    s.set_read_timeout(Some(Duration::from_millis(20)))?;
                    // Room for a few hundred ms of replies while the
                    // receiver waits for a core (capped by rmem_max).
                    socket2::SockRef::from(&s).set_recv_buffer_size(PROBE_RCVBUF)?;
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
            receivers.push(std::thread::spawn(move || receive(&s, i, max, &stop)));
        }
        let stop = stop_send.clone();
        let started = Instant::now();
        let sender = std::thread::spawn(move || send(&sockets, every, max, &stop));
        Ok(Probe {
            started,
            max,
            stop_send,
            stop_recv,
            sender,
            receivers,
        })
    }

    /// Stops sending, waits for late replies, returns one trace per flow.
    pub fn stop(self) -> Vec<Trace> {
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

/// The payload of datagram `seq` of flow `flow`.
pub fn payload(flow: usize, seq: usize) -> String {
    format!("probe {flow} {seq}")
}

/// (flow, seq) from an echo reply: the server's answer line, then the
/// request.
pub fn parse_reply(reply: &[u8]) -> Option<(usize, usize)> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut words = text.split_whitespace().rev();
    let seq = words.next()?.parse().ok()?;
    let flow = words.next()?.parse().ok()?;
    (words.next()? == "probe").then_some((flow, seq))
}

/// Sends one datagram to each socket every `every` (catching up after an
/// oversleep, by [`PROBE_BURST`] at most), at most `max`; the send times.
fn send(sockets: &[UdpSocket], every: Duration, max: usize, stop: &AtomicBool) -> Vec<Instant> {
    use std::fmt::Write;
    let mut sent = Vec::with_capacity(max.min(1 << 20));
    let mut text = String::with_capacity(32);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && sent.len() < max {
        let seq = sent.len();
        sent.push(Instant::now());
        for (i, s) in sockets.iter().enumerate() {
            text.clear();
            let _ = write!(text, "probe {i} {seq}");
            // A send error (e.g. an unresolved VIP) is a lost datagram.
            let _ = s.send(text.as_bytes());
        }
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > every * PROBE_BURST {
            // Stalled: resume the pace instead of a burst that would
            // overflow the backend's socket buffer (shows as a lower
            // achieved rate, never as loss).
            next = now;
        }
    }
    sent
}

fn receive(socket: &UdpSocket, flow: usize, max: usize, stop: &AtomicBool) -> Vec<Option<Instant>> {
    let mut replies: Vec<Option<Instant>> = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let Some((f, seq)) = parse_reply(&buf[..n]) else {
            continue;
        };
        if f != flow || seq >= max {
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

/// UDP datagrams the kernel of `ns` dropped for a full socket buffer
/// (RcvbufErrors in /proc/net/snmp); 0 if unreadable.
pub fn udp_rcvbuf_errors(ns: &NetNs) -> u64 {
    // thread-self: the namespace of the thread `run` moved, not the
    // process's.
    ns.run(|| fs::read_to_string("/proc/thread-self/net/snmp"))
        .ok()
        .and_then(Result::ok)
        .and_then(|t| parse_rcvbuf_errors(&t))
        .unwrap_or(0)
}

fn parse_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|w| w == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Datagrams per second from the first send to the last.
pub fn achieved_rate(sent: &[Instant]) -> f64 {
    match (sent.first(), sent.last()) {
        (Some(a), Some(b)) if sent.len() > 1 => {
            (sent.len() - 1) as f64 / b.saturating_duration_since(*a).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    }
}

/// "1 kpps", "10 kpps", "9.98 kpps", "500 pps".
pub fn fmt_rate(pps: f64) -> String {
    if pps >= 1000.0 {
        let k = pps / 1000.0;
        if (k - k.round()).abs() < 1e-9 {
            format!("{k:.0} kpps")
        } else {
            format!("{k:.2} kpps")
        }
    } else {
        format!("{pps:.0} pps")
    }
}

/// Sleeps `d`, or less if the lab is interrupted.
pub fn sleep_unless_interrupted(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !super::interrupted() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// TCP connections to a VIP's HTTP service kept open across an event
/// (a gateway killed, a VIP moving), each asked one HTTP/1.1 request when
/// opened and one per [`KeptConnections::request_all`]: whether
/// established connections survive it.
pub struct KeptConnections {
    streams: Vec<TcpStream>,
}

/// How long one request on a kept connection may take: TCP retransmits
/// (1 s RTO at first) through a new path.
const KEPT_ANSWER: Duration = Duration::from_secs(8);

impl KeptConnections {
    /// Opens `n` connections from namespace `client` to `target` (each
    /// from its own ephemeral port), each answered once.
    pub fn open(client: &NetNs, target: SocketAddr, n: usize) -> Result<KeptConnections> {
        let streams = client.run(|| -> Result<Vec<TcpStream>> {
            (0..n)
                .map(|_| {
                    let s = TcpStream::connect_timeout(&target, KEPT_ANSWER)
                        .with_context(|| format!("connecting to {target}"))?;
                    s.set_read_timeout(Some(KEPT_ANSWER))?;
                    s.set_write_timeout(Some(KEPT_ANSWER))?;
                    keep_alive_request(&s).context("first request")?;
                    Ok(s)
                })
                .collect()
        })??;
        Ok(KeptConnections { streams })
    }

    /// The connections' source ports, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.streams
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(0))
            .collect()
    }

    /// One more request on every connection; the ones that were not
    /// answered, as ":port (why)".
    pub fn request_all(&mut self) -> Vec<String> {
        self.streams
            .iter()
            .filter_map(|s| {
                let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                keep_alive_request(s)
                    .err()
                    .map(|e| format!(":{port} ({e:#})"))
            })
            .collect()
    }
}

/// One HTTP/1.1 request on a kept-alive connection; reads the whole
/// response (Content-Length framing, as `vipgate lab serve` sends).
fn keep_alive_request(mut s: &TcpStream) -> Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed by the peer");
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        if !text.starts_with("HTTP/1.1 200") {
            bail!("answer {:?}", text.lines().next().unwrap_or(""));
        }
        let length = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .context("response without Content-Length")?;
        if got.len() >= end + 4 + length {
            return Ok(());
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
    fn rcvbuf_errors_parse_from_snmp() {
        let snmp = "Ip: Forwarding\nIp: 1\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 0 7 12 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 9 0\n";
        assert_eq!(parse_rcvbuf_errors(snmp), Some(5));
        assert_eq!(parse_rcvbuf_errors("Ip: x\n"), None);
    }

    #[test]
    fn rates_read_well() {
        assert_eq!(fmt_rate(1000.0), "1 kpps");
        assert_eq!(fmt_rate(9_981.0), "9.98 kpps");
        let s = Instant::now();
        let sent: Vec<Instant> = (0..11).map(|i| at(s, i)).collect();
        assert!((achieved_rate(&sent) - 1000.0).abs() < 1.0);
    }

    #[test]
    fn replies_parse_back_to_flow_and_sequence() {
        let reply = format!("{}{}", super::super::serve::answer_text(80), payload(1, 42));
        assert_eq!(parse_reply(reply.as_bytes()), Some((1, 42)));
        assert_eq!(parse_reply(b"vhost web80 port 80\nnot a probe"), None);
    }
}
