//! In-memory packet I/O: [`MemIo`], for unit tests and microbenchmarks.
//!
//! Owns a queue of injected received frames and a log of transmitted ones,
//! and counts both the way [`super::afpacket::AfPacket`] does: a frame whose
//! `wire_len` exceeds its bytes is delivered truncated and counted in
//! `rx_truncated`; a `Tx` verdict longer than the frame, or towards an
//! interface the backend does not serve (see [`MemIo::with_interfaces`]),
//! counts in `tx_errors` and is not sent.
//!
//! Two modes:
//! - **queue** ([`MemIo::new`]): frames go in with [`MemIo::inject`], each is
//!   handed to the handler once, transmitted frames are recorded as
//!   [`TxFrame`]s for inspection.
//! - **replay** ([`MemIo::replay`]): one preloaded frame set is handed over
//!   once per poll, for a fixed number of rounds. Each frame is copied from
//!   its pristine template into a preallocated scratch buffer (as the kernel
//!   copies a frame into the RX ring), so the handler may rewrite it in place
//!   and a poll allocates nothing. Transmitted frames are counted, not
//!   recorded.
//!
//! It never sleeps: `poll_batch` ignores its timeout and returns `Ok(0)` at
//! once when there is nothing to deliver. It touches no kernel object.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use super::{IoCounters, PacketIo, RxMeta, Verdict};

/// How many queued frames one `poll_batch` hands over in queue mode, unless
/// changed with [`MemIo::with_batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// A frame the backend transmitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    /// Interface it was sent on.
    pub ifindex: u32,
    /// The bytes on the wire.
    pub bytes: Vec<u8>,
}

/// An in-memory [`PacketIo`] backend.
#[derive(Debug, Default)]
pub struct MemIo {
    rx: VecDeque<(RxMeta, Vec<u8>)>,
    transmitted: Vec<TxFrame>,
    replay: Option<Replay>,
    interfaces: Option<Vec<u32>>,
    batch_size: Option<usize>,
    counters: IoCounters,
}

/// The preloaded frame set of replay mode.
#[derive(Debug)]
struct Replay {
    templates: Vec<(RxMeta, Vec<u8>)>,
    scratch: Vec<u8>,
    rounds_left: u64,
}

impl MemIo {
    /// An empty backend in queue mode that transmits on any interface.
    pub fn new() -> MemIo {
        MemIo::default()
    }

    /// A backend in replay mode: each `poll_batch` hands every frame of
    /// `frames` to the handler once (a fresh copy each time), for `rounds`
    /// polls; later polls return `Ok(0)`. `u64::MAX` rounds is, in practice,
    /// unbounded.
    pub fn replay(frames: Vec<(RxMeta, Vec<u8>)>, rounds: u64) -> MemIo {
        let longest = frames.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
        let replay = Replay {
            templates: frames,
            scratch: vec![0; longest],
            rounds_left: rounds,
        };
        MemIo {
            replay: Some(replay),
            ..MemIo::default()
        }
    }

    /// Only these interfaces can be transmitted on; a `Tx` verdict or a
    /// `send` towards any other counts in `tx_errors` (the AF_PACKET backend
    /// has sockets only on its configured interfaces).
    pub fn with_interfaces(mut self, ifindexes: &[u32]) -> MemIo {
        self.interfaces = Some(ifindexes.to_vec());
        self
    }

    /// Hand at most `batch_size` queued frames (at least one) to the handler
    /// per poll. Replay mode always hands over the whole set.
    pub fn with_batch_size(mut self, batch_size: usize) -> MemIo {
        self.batch_size = Some(batch_size.max(1));
        self
    }

    /// Queue a received frame with explicit metadata. A `wire_len` larger
    /// than the frame simulates ring truncation.
    pub fn inject(&mut self, meta: RxMeta, frame: impl Into<Vec<u8>>) {
        self.rx.push_back((meta, frame.into()));
    }

    /// Queue a complete received frame (wire length = its length, checksum
    /// ready) on `ifindex`.
    pub fn inject_frame(&mut self, ifindex: u32, frame: impl Into<Vec<u8>>) {
        let frame = frame.into();
        let wire_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let meta = RxMeta {
            ifindex,
            wire_len,
            csum_not_ready: false,
        };
        self.rx.push_back((meta, frame));
    }

    /// Frames queued and not yet handed to a handler (queue mode).
    pub fn pending_rx(&self) -> usize {
        self.rx.len()
    }

    /// Polls left before replay mode runs dry (0 in queue mode).
    pub fn rounds_left(&self) -> u64 {
        self.replay.as_ref().map_or(0, |r| r.rounds_left)
    }

    /// Set the number of polls replay mode still serves (no effect in queue
    /// mode).
    pub fn set_rounds(&mut self, rounds: u64) {
        if let Some(replay) = self.replay.as_mut() {
            replay.rounds_left = rounds;
        }
    }

    /// Frames transmitted so far, oldest first (queue mode; replay mode only
    /// counts them).
    pub fn transmitted(&self) -> &[TxFrame] {
        &self.transmitted
    }

    /// Take the transmitted frames out of the log.
    pub fn take_transmitted(&mut self) -> Vec<TxFrame> {
        std::mem::take(&mut self.transmitted)
    }

    fn can_send_on(&self, ifindex: u32) -> bool {
        self.interfaces
            .as_ref()
            .is_none_or(|set| set.contains(&ifindex))
    }

    fn poll_queue(&mut self, handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict) -> usize {
        let batch = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        let mut handed = 0;
        while handed < batch {
            let Some((meta, mut frame)) = self.rx.pop_front() else {
                break;
            };
            self.count_rx(&meta, frame.len());
            handed += 1;
            if let Verdict::Tx { ifindex, len } = handler(&meta, &mut frame) {
                if len <= frame.len() && self.can_send_on(ifindex) {
                    frame.truncate(len);
                    self.transmitted.push(TxFrame {
                        ifindex,
                        bytes: frame,
                    });
                    self.counters.tx_frames += 1;
                } else {
                    self.counters.tx_errors += 1;
                }
            }
        }
        handed
    }

    fn poll_replay(&mut self, handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict) -> usize {
        let Some(mut replay) = self.replay.take() else {
            return 0;
        };
        let mut handed = 0;
        if replay.rounds_left > 0 {
            replay.rounds_left -= 1;
            let Replay {
                templates, scratch, ..
            } = &mut replay;
            for (meta, template) in templates.iter() {
                let frame = &mut scratch[..template.len()];
                frame.copy_from_slice(template);
                self.count_rx(meta, frame.len());
                handed += 1;
                if let Verdict::Tx { ifindex, len } = handler(meta, frame) {
                    if len <= frame.len() && self.can_send_on(ifindex) {
                        self.counters.tx_frames += 1;
                    } else {
                        self.counters.tx_errors += 1;
                    }
                }
            }
        }
        self.replay = Some(replay);
        handed
    }

    fn count_rx(&mut self, meta: &RxMeta, frame_len: usize) {
        self.counters.rx_frames += 1;
        if usize::try_from(meta.wire_len).is_ok_and(|wire| wire > frame_len) {
            self.counters.rx_truncated += 1;
        }
    }
}

impl PacketIo for MemIo {
    fn poll_batch(
        &mut self,
        timeout: Duration,
        handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    ) -> io::Result<usize> {
        if self.replay.is_some() {
            return Ok(self.poll_replay(handler));
        }
        let n = self.poll_queue(handler);
        if n == 0 && !timeout.is_zero() {
            // Like a real poll with nothing arriving: wait rather than
            // spin a core (a daemon with `io = "memory"` idles here).
            std::thread::sleep(timeout);
        }
        Ok(n)
    }

    fn send(&mut self, frames: &[(u32, &[u8])]) -> io::Result<()> {
        for &(ifindex, bytes) in frames {
            if !self.can_send_on(ifindex) {
                self.counters.tx_errors += 1;
                continue;
            }
            self.counters.tx_frames += 1;
            if self.replay.is_none() {
                self.transmitted.push(TxFrame {
                    ifindex,
                    bytes: bytes.to_vec(),
                });
            }
        }
        Ok(())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: Duration = Duration::ZERO;

    fn meta(ifindex: u32, wire_len: u32) -> RxMeta {
        RxMeta {
            ifindex,
            wire_len,
            csum_not_ready: false,
        }
    }

    #[test]
    fn queue_hands_frames_in_order_and_records_tx() {
        let mut io = MemIo::new();
        io.inject_frame(3, vec![1, 2, 3, 4]);
        io.inject(
            RxMeta {
                ifindex: 4,
                wire_len: 2,
                csum_not_ready: true,
            },
            vec![9, 9],
        );
        let mut seen = Vec::new();
        let n = io
            .poll_batch(ZERO, &mut |m, f| {
                seen.push((*m, f.to_vec()));
                f[0] = 0xaa;
                Verdict::Tx {
                    ifindex: 7,
                    len: f.len() - 1,
                }
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0], (meta(3, 4), vec![1, 2, 3, 4]));
        assert_eq!(
            seen[1],
            (
                RxMeta {
                    ifindex: 4,
                    wire_len: 2,
                    csum_not_ready: true
                },
                vec![9, 9]
            )
        );
        let tx = io.take_transmitted();
        assert_eq!(
            tx,
            vec![
                TxFrame {
                    ifindex: 7,
                    bytes: vec![0xaa, 2, 3]
                },
                TxFrame {
                    ifindex: 7,
                    bytes: vec![0xaa]
                },
            ]
        );
        let c = io.counters();
        assert_eq!(
            (c.rx_frames, c.tx_frames, c.tx_errors, c.rx_truncated),
            (2, 2, 0, 0)
        );
        assert_eq!(io.poll_batch(ZERO, &mut |_, _| Verdict::Drop).unwrap(), 0);
    }

    #[test]
    fn queue_respects_batch_size() {
        let mut io = MemIo::new().with_batch_size(2);
        for i in 0..5u8 {
            io.inject_frame(1, vec![i]);
        }
        let mut polls = Vec::new();
        for _ in 0..4 {
            polls.push(io.poll_batch(ZERO, &mut |_, _| Verdict::Drop).unwrap());
        }
        assert_eq!(polls, vec![2, 2, 1, 0]);
        assert_eq!(io.pending_rx(), 0);
        assert_eq!(io.counters().rx_frames, 5);
    }

    #[test]
    fn truncated_frames_and_bad_tx_are_counted() {
        let mut io = MemIo::new().with_interfaces(&[1, 2]);
        io.inject(meta(1, 9000), vec![0; 100]);
        io.inject_frame(1, vec![0; 60]);
        io.inject_frame(1, vec![0; 60]);
        let mut verdicts = [
            Verdict::Tx {
                ifindex: 2,
                len: 100,
            },
            Verdict::Tx {
                ifindex: 2,
                len: 61,
            },
            Verdict::Tx {
                ifindex: 3,
                len: 60,
            },
        ]
        .into_iter();
        io.poll_batch(ZERO, &mut |_, _| verdicts.next().unwrap_or(Verdict::Drop))
            .unwrap();
        let c = io.counters();
        assert_eq!(
            (c.rx_frames, c.rx_truncated, c.tx_frames, c.tx_errors),
            (3, 1, 1, 2)
        );
        assert_eq!(io.transmitted().len(), 1);
    }

    #[test]
    fn send_records_and_checks_interfaces() {
        let mut io = MemIo::new().with_interfaces(&[5]);
        io.send(&[(5, &[1, 2][..]), (6, &[3][..])]).unwrap();
        assert_eq!(
            io.transmitted(),
            &[TxFrame {
                ifindex: 5,
                bytes: vec![1, 2]
            }]
        );
        assert_eq!((io.counters().tx_frames, io.counters().tx_errors), (1, 1));
    }

    #[test]
    fn replay_hands_pristine_copies_each_round() {
        let frames = vec![(meta(1, 3), vec![1, 2, 3]), (meta(2, 5), vec![4, 5])];
        let mut io = MemIo::replay(frames, 3);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let n = io
                .poll_batch(ZERO, &mut |m, f| {
                    seen.push((m.ifindex, f.to_vec()));
                    f.fill(0xff);
                    Verdict::Tx {
                        ifindex: m.ifindex,
                        len: f.len(),
                    }
                })
                .unwrap();
            assert!(n == 2 || n == 0);
        }
        let round = [(1, vec![1, 2, 3]), (2, vec![4, 5])];
        assert_eq!(
            seen,
            round.iter().cycle().take(6).cloned().collect::<Vec<_>>()
        );
        let c = io.counters();
        assert_eq!((c.rx_frames, c.tx_frames, c.rx_truncated), (6, 6, 3));
        assert!(io.transmitted().is_empty());
        assert_eq!(io.rounds_left(), 0);
        io.set_rounds(1);
        assert_eq!(io.poll_batch(ZERO, &mut |_, _| Verdict::Drop).unwrap(), 2);
    }

    #[test]
    fn replay_with_empty_set_is_harmless() {
        let mut io = MemIo::replay(Vec::new(), 2);
        assert_eq!(io.poll_batch(ZERO, &mut |_, _| Verdict::Drop).unwrap(), 0);
        assert_eq!(io.rounds_left(), 1);
    }
}
