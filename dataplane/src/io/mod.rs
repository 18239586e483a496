//! Packet I/O behind one trait: [`PacketIo`].
//!
//! Backends: [`memory::MemIo`] (tests, microbenchmarks) and
//! [`afpacket::AfPacket`] (TPACKET_V2/V3 RX ring, batched TX, fanout with a
//! classic-BPF program that keeps both directions of a flow on one worker).
//! Only the AF_PACKET backend may use `unsafe`.
//!
//! The contract: a worker calls [`PacketIo::poll_batch`] in a loop. The
//! backend hands each received frame to the handler as a mutable slice that
//! the handler may rewrite in place (NAT keeps frame sizes); the handler's
//! [`Verdict`] says whether to transmit it and where. Frames the handler
//! builds itself (ARP replies, ICMP errors, neighbour solicitations) go out
//! through [`PacketIo::send`]. A backend never drops a frame silently: every
//! frame it cannot deliver to the handler or cannot transmit is counted in
//! [`IoCounters`].

use std::io;
use std::time::Duration;

pub mod afpacket;
pub mod memory;
pub mod sys;

/// What the kernel told us about one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxMeta {
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// Length of the frame on the wire; larger than the slice handed to the
    /// handler when the frame was truncated by the ring's frame size.
    pub wire_len: u32,
    /// The L4 checksum was not computed yet (TP_STATUS_CSUMNOTREADY:
    /// locally generated traffic on veth with checksum offload). The
    /// pipeline must compute a full checksum instead of an incremental one.
    pub csum_not_ready: bool,
}

/// What to do with a received frame after the handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop it (the handler has counted why).
    Drop,
    /// Transmit the first `len` bytes of the (rewritten) frame on `ifindex`.
    Tx { ifindex: u32, len: usize },
}

/// Counters a backend keeps for frames it could not hand over or send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames longer than the ring frame (GRO/TSO super-frames); they were
    /// delivered truncated to the handler, which drops and counts them.
    pub rx_truncated: u64,
    /// Frames the kernel dropped because the ring was full (tp_drops).
    pub rx_ring_drops: u64,
    /// Frames the kernel refused to transmit (ENOBUFS, EAGAIN after retry).
    pub tx_errors: u64,
}

/// A source and sink of Ethernet frames for one worker.
pub trait PacketIo {
    /// Wait up to `timeout` for frames; hand each to `handler`, then
    /// transmit, in one batch, every frame whose verdict is [`Verdict::Tx`].
    /// Returns the number of frames handed to `handler`.
    fn poll_batch(
        &mut self,
        timeout: Duration,
        handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    ) -> io::Result<usize>;

    /// Transmit frames the worker built itself, in one batch.
    fn send(&mut self, frames: &[(u32, &[u8])]) -> io::Result<()>;

    /// Counters so far.
    fn counters(&self) -> IoCounters;
}
