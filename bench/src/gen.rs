//! The traffic generator: UDP frames built in user space and sent with
//! `sendmmsg` on an AF_PACKET socket (vipgate-dataplane's [`AfPacket`],
//! PACKET_QDISC_BYPASS), paced to a rate.
//!
//! Owns its socket (opened in the generator namespace, on one link) and
//! the per-flow sequence numbers. Every run is bounded by a datagram count
//! and a time limit, and stops early on [`crate::topo::stopped`]. It must
//! be called from a thread pinned to the load core.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vipgate_dataplane::io::afpacket::{AfPacket, AfPacketConfig, Interface, RingConfig};
use vipgate_dataplane::io::PacketIo;
use vipgate_dataplane::io::Verdict;

use crate::topo::{stopped, Port};
use crate::wire::{self, BenchHeader, Target};

/// Frames per `sendmmsg` at most.
const BATCH: usize = 64;
/// The generator sends a batch per this much time at most (smaller
/// batches at low rates keep the spacing even).
const BATCH_SPAN: Duration = Duration::from_micros(50);

/// What to send.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Load {
    /// Datagrams per second; 0 = as fast as the socket takes them.
    pub rate: u64,
    /// Datagrams to send at most.
    pub count: u64,
    /// Time limit of the run.
    pub max_time: Duration,
    /// Concurrent flows, sent round robin.
    pub flows: u32,
    /// Flow number of the first flow (flows are `first_flow..first_flow+flows`
    /// plus new ones).
    pub first_flow: u32,
    /// Share of datagrams that start a new flow (0.0-1.0): every
    /// `1/share`-th datagram replaces the flow of its slot by a fresh one.
    pub new_flow_share: f64,
    /// Frame size, FCS included (RFC 2544).
    pub frame_size: usize,
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sent {
    pub sent: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub achieved_pps: f64,
    /// Highest flow number used + 1.
    pub flow_end: u32,
}

/// The generator's socket on one link.
pub struct Generator {
    io: AfPacket,
    ifindex: u32,
}

impl Generator {
    /// Opens a socket on `port` (call from a thread in its namespace).
    pub fn open(port: &Port) -> Result<Generator> {
        let iface = Interface {
            ifindex: port.index,
            name: port.name.to_string(),
            extra_macs: Vec::new(),
        };
        let mut cfg =
            AfPacketConfig::new(vec![iface], 0x7a00 + (port.index % 256) as u16, Vec::new());
        // The generator receives nothing it needs: keep its ring small.
        cfg.ring = RingConfig {
            block_size: 64 * 1024,
            block_count: 2,
            frame_size: 2048,
            block_timeout: Duration::from_millis(10),
        };
        let io =
            AfPacket::open(&cfg).with_context(|| format!("opening AF_PACKET on {}", port.name))?;
        Ok(Generator {
            io,
            ifindex: port.index,
        })
    }

    /// Sends `load` to `target`; `tag` marks the frames; `epoch` is the
    /// clock the sink reads too.
    pub fn run(&mut self, load: &Load, target: &Target, tag: u16, epoch: Instant) -> Sent {
        let len = wire::link_len(load.frame_size);
        let mut bufs = vec![vec![0u8; len]; BATCH];
        let mut slots = Slots::new(load);
        let per_batch = batch_size(load.rate);
        let before = self.io.counters();
        let start = Instant::now();
        let deadline = start + load.max_time;
        let mut queued = 0u64;
        let mut batches = 0u64;
        while queued < load.count && !stopped() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if load.rate > 0 {
                let due = start + Duration::from_secs_f64(queued as f64 / load.rate as f64);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let n = per_batch.min((load.count - queued) as usize);
            let sent_ns = epoch.elapsed().as_nanos() as u64;
            for buf in bufs.iter_mut().take(n) {
                let (flow, seq) = slots.next();
                let h = BenchHeader {
                    tag,
                    flow,
                    seq,
                    sent_ns,
                };
                wire::write_frame(buf, target, &h);
            }
            let frames: Vec<(u32, &[u8])> =
                bufs[..n].iter().map(|b| (self.ifindex, &b[..])).collect();
            // Errors are counted by the backend (tx_errors).
            let _ = self.io.send(&frames);
            queued += n as u64;
            batches += 1;
            if batches.is_multiple_of(256) {
                self.drain_rx();
            }
        }
        let elapsed = start.elapsed();
        let after = self.io.counters();
        let sent = after.tx_frames - before.tx_frames;
        Sent {
            sent,
            errors: after.tx_errors - before.tx_errors,
            elapsed_s: elapsed.as_secs_f64(),
            achieved_pps: sent as f64 / elapsed.as_secs_f64().max(1e-9),
            flow_end: slots.fresh,
        }
    }

    /// Empties the receive ring (frames the link delivers to us are not
    /// ours to look at).
    fn drain_rx(&mut self) {
        let _ = self
            .io
            .poll_batch(Duration::ZERO, &mut |_, _| Verdict::Drop);
    }
}

/// Frames per batch for `rate`: one batch per [`BATCH_SPAN`].
fn batch_size(rate: u64) -> usize {
    if rate == 0 {
        return BATCH;
    }
    let per_span = rate as f64 * BATCH_SPAN.as_secs_f64();
    (per_span.ceil() as usize).clamp(1, BATCH)
}

/// The flows being sent round robin, with their next sequence numbers.
struct Slots {
    flow: Vec<u32>,
    seq: Vec<u32>,
    at: usize,
    /// Next flow number never used.
    fresh: u32,
    /// A new flow every this many datagrams (0: never).
    new_every: u64,
    count: u64,
}

impl Slots {
    fn new(load: &Load) -> Slots {
        let n = load.flows.max(1);
        let new_every = if load.new_flow_share > 0.0 {
            (1.0 / load.new_flow_share.min(1.0)).round().max(1.0) as u64
        } else {
            0
        };
        Slots {
            flow: (load.first_flow..load.first_flow + n).collect(),
            seq: vec![0; n as usize],
            at: 0,
            fresh: load.first_flow + n,
            new_every,
            count: 0,
        }
    }

    /// Flow and sequence number of the next datagram.
    fn next(&mut self) -> (u32, u32) {
        self.count += 1;
        let i = self.at;
        self.at = (self.at + 1) % self.flow.len();
        if self.new_every > 0 && self.count.is_multiple_of(self.new_every) {
            self.flow[i] = self.fresh;
            self.seq[i] = 0;
            self.fresh = self.fresh.wrapping_add(1);
        }
        let seq = self.seq[i];
        self.seq[i] = seq.wrapping_add(1);
        (self.flow[i], seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(flows: u32, share: f64) -> Load {
        Load {
            rate: 0,
            count: 100,
            max_time: Duration::from_secs(1),
            flows,
            first_flow: 10,
            new_flow_share: share,
            frame_size: 64,
        }
    }

    #[test]
    fn round_robin_with_per_flow_sequence() {
        let mut s = Slots::new(&load(3, 0.0));
        let got: Vec<_> = (0..7).map(|_| s.next()).collect();
        assert_eq!(
            got,
            vec![
                (10, 0),
                (11, 0),
                (12, 0),
                (10, 1),
                (11, 1),
                (12, 1),
                (10, 2)
            ]
        );
    }

    #[test]
    fn new_flow_share_replaces_slots() {
        let mut s = Slots::new(&load(2, 0.5));
        let got: Vec<_> = (0..6).map(|_| s.next()).collect();
        // Every 2nd datagram starts a fresh flow in its slot.
        assert_eq!(
            got,
            vec![(10, 0), (12, 0), (10, 1), (13, 0), (10, 2), (14, 0)]
        );
        assert_eq!(s.fresh, 15);
    }

    #[test]
    fn batches_follow_the_rate() {
        assert_eq!(batch_size(10_000), 1);
        assert_eq!(batch_size(200_000), 10);
        assert_eq!(batch_size(10_000_000), BATCH);
        assert_eq!(batch_size(0), BATCH);
    }
}
