//! The sink: a UDP socket on the sink host that counts what arrives,
//! finds reordering and duplicates from the per-flow sequence numbers, and
//! records one-way latency (sink clock − generator clock: both are this
//! process's CLOCK_MONOTONIC) into an HDR histogram.
//!
//! Owns its socket and thread. The thread runs pinned to the load core,
//! is bounded in time, and stops on [`Sink::finish`] or
//! [`crate::topo::stopped`]. Loss is `sent − received` (the sink cannot
//! know what was sent); the host's own drops (UDP receive-buffer
//! overflows, `RcvbufErrors`) are read from the sink namespace so they
//! are not blamed on the gateway.

use std::fs;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use vipgate::netns::NetNs;

use crate::sys::Mmsg;
use crate::topo::stopped;
use crate::wire::{BenchHeader, ETH_LEN, IPV4_LEN, UDP_LEN};

/// Longest a sink keeps reading after it was asked to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);
/// Longest a sink lives at all.
const LIFE_LIMIT: Duration = Duration::from_secs(600);
/// Flow numbers the sink tracks sequence numbers for.
const MAX_TRACKED_FLOWS: usize = 1 << 25;

/// What one sink saw.
#[derive(Debug, Clone)]
pub struct Received {
    pub received: u64,
    /// UDP payload bytes plus headers: the frame bytes on the link.
    pub frame_bytes: u64,
    /// Datagrams older than one already seen on their flow.
    pub reordered: u64,
    pub duplicates: u64,
    /// Datagrams of other measurements or not from the generator.
    pub foreign: u64,
    /// UDP receive-buffer drops of the sink host during the run.
    pub host_drops: u64,
    pub latency: Histogram<u64>,
}

/// A running sink.
pub struct Sink {
    thread: Option<JoinHandle<Result<Received>>>,
    finish: Arc<AtomicBool>,
    rcvbuf_before: u64,
    ns: NetNs,
}

impl Sink {
    /// Binds the sink's socket on UDP `port` in `ns` and starts reading on
    /// a thread pinned to `core`. `tag` is the measurement's tag; `epoch`
    /// the clock the generator stamps with.
    pub fn start(ns: &NetNs, port: u16, core: usize, tag: u16, epoch: Instant) -> Result<Sink> {
        let sock = ns.run(|| -> Result<UdpSocket> {
            let s = UdpSocket::bind(("0.0.0.0", port)).context("binding the sink socket")?;
            crate::sys::set_rcvbuf_force(&s, 64 << 20).context("SO_RCVBUFFORCE")?;
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok(s)
        })??;
        let rcvbuf_before = rcvbuf_errors(ns)?;
        let finish = Arc::new(AtomicBool::new(false));
        let flag = finish.clone();
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                let _ = vipgate_dataplane::io::sys::pin_current_thread(core);
                read_loop(&sock, tag, epoch, &flag)
            })?;
        Ok(Sink {
            thread: Some(thread),
            finish,
            rcvbuf_before,
            ns: ns.try_clone()?,
        })
    }

    /// Stops reading once the socket has been quiet for 20 ms (or after
    /// [`DRAIN_LIMIT`]) and returns what arrived.
    pub fn finish(mut self) -> Result<Received> {
        self.finish.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("sink already finished"))?;
        let mut got = thread
            .join()
            .map_err(|_| anyhow!("sink thread panicked"))??;
        got.host_drops = rcvbuf_errors(&self.ns)?.saturating_sub(self.rcvbuf_before);
        Ok(got)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.finish.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(sock: &UdpSocket, tag: u16, epoch: Instant, finish: &AtomicBool) -> Result<Received> {
    let mut got = Received {
        received: 0,
        frame_bytes: 0,
        reordered: 0,
        duplicates: 0,
        foreign: 0,
        host_drops: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
    };
    let mut next_seq: Vec<u32> = Vec::new();
    let mut mm: Mmsg<64> = Mmsg::new();
    let born = Instant::now();
    let mut finishing: Option<Instant> = None;
    loop {
        let n = mm.recv(sock)?;
        let now_ns = epoch.elapsed().as_nanos() as u64;
        for i in 0..n {
            let (head, len) = mm.get(i);
            let Some(h) = BenchHeader::parse(head).filter(|h| h.tag == tag) else {
                got.foreign += 1;
                continue;
            };
            got.received += 1;
            got.frame_bytes += (len + ETH_LEN + IPV4_LEN + UDP_LEN) as u64;
            got.latency
                .saturating_record(now_ns.saturating_sub(h.sent_ns).max(1));
            track(&mut next_seq, &mut got, h);
        }
        if finishing.is_none() && (finish.load(Ordering::Relaxed) || stopped()) {
            finishing = Some(Instant::now());
        }
        let drained = n == 0 || finishing.is_some_and(|t| t.elapsed() > DRAIN_LIMIT);
        if (finishing.is_some() && drained) || born.elapsed() > LIFE_LIMIT {
            return Ok(got);
        }
    }
}

/// Sequence bookkeeping of one datagram.
fn track(next_seq: &mut Vec<u32>, got: &mut Received, h: BenchHeader) {
    let f = h.flow as usize;
    if f >= MAX_TRACKED_FLOWS {
        return;
    }
    if f >= next_seq.len() {
        next_seq.resize((f + 1).next_power_of_two().min(MAX_TRACKED_FLOWS), 0);
    }
    // Stored: highest seq seen + 1 (0 = nothing yet).
    let want = next_seq[f];
    let seen = h.seq.wrapping_add(1);
    if want == 0 || seen > want {
        next_seq[f] = seen;
    } else if seen == want {
        got.duplicates += 1;
    } else {
        got.reordered += 1;
    }
}

/// `RcvbufErrors` of the UDP MIB in namespace `ns`.
fn rcvbuf_errors(ns: &NetNs) -> Result<u64> {
    let text = ns.run(|| fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return Ok(0);
    };
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors");
    Ok(at
        .and_then(|i| values.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(flow: u32, seq: u32) -> BenchHeader {
        BenchHeader {
            tag: 1,
            flow,
            seq,
            sent_ns: 0,
        }
    }

    #[test]
    fn reordering_and_duplicates_per_flow() {
        let mut got = Received {
            received: 0,
            frame_bytes: 0,
            reordered: 0,
            duplicates: 0,
            foreign: 0,
            host_drops: 0,
            latency: Histogram::new(3).expect("histogram"),
        };
        let mut next = Vec::new();
        // Flow 0 in order with a gap (loss is not reordering), flow 5
        // out of order once, then a duplicate.
        for (f, s) in [
            (0, 0),
            (0, 1),
            (0, 3),
            (5, 1),
            (5, 0),
            (5, 2),
            (5, 2),
            (0, 4),
        ] {
            track(&mut next, &mut got, h(f, s));
        }
        assert_eq!(got.reordered, 1);
        assert_eq!(got.duplicates, 1);
    }
}
