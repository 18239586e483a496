//! Per-worker counters.
//!
//! Each worker owns one [`WorkerCounters`] block, alone on its cache lines,
//! and is the only writer: increments are a relaxed load and store (a plain
//! `mov` on x86), never a locked read-modify-write. The control plane reads
//! the blocks of all workers and sums them for `vipgate status`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Why the pipeline dropped a frame. Every drop has exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than the headers it claims, or lengths that disagree.
    Malformed,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// TCP/UDP/ICMP checksum wrong.
    BadL4Checksum,
    /// VIP traffic to a port/protocol no service listens on.
    NoService,
    /// The service has no usable backend.
    NoBackend,
    /// IP fragment: the dataplane does not reassemble.
    Fragment,
    /// IPv4 options or IPv6 extension headers we do not forward.
    IpOptions,
    /// TTL or hop limit expired (a time-exceeded error was sent back).
    TtlExpired,
    /// Backend reply without a connection entry.
    ReplyMiss,
    /// A non-SYN TCP segment to a VIP without a connection entry.
    NoConnection,
    /// The connection table is full of flows that must not be evicted.
    TableFull,
    /// No MAC for the next hop yet; a resolution was requested.
    NeighbourMiss,
    /// No route to the destination.
    NoRoute,
    /// Frame longer than the ring slot (GRO/TSO super-frame).
    Oversize,
    /// ICMP error whose quoted packet matches no connection.
    IcmpNoConnection,
    /// Protocol we do not handle (not TCP, UDP or ICMP) to a VIP.
    UnknownProtocol,
    /// A new connection whose client endpoint already talks to the same
    /// backend through another service: replies could not be told apart.
    ReplyKeyConflict,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        DropReason::Malformed,
        DropReason::BadIpChecksum,
        DropReason::BadL4Checksum,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::Fragment,
        DropReason::IpOptions,
        DropReason::TtlExpired,
        DropReason::ReplyMiss,
        DropReason::NoConnection,
        DropReason::TableFull,
        DropReason::NeighbourMiss,
        DropReason::NoRoute,
        DropReason::Oversize,
        DropReason::IcmpNoConnection,
        DropReason::UnknownProtocol,
        DropReason::ReplyKeyConflict,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::BadL4Checksum => "bad_l4_checksum",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::Fragment => "fragment",
            DropReason::IpOptions => "ip_options",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::ReplyMiss => "reply_miss",
            DropReason::NoConnection => "no_connection",
            DropReason::TableFull => "table_full",
            DropReason::NeighbourMiss => "neighbour_miss",
            DropReason::NoRoute => "no_route",
            DropReason::Oversize => "oversize",
            DropReason::IcmpNoConnection => "icmp_no_connection",
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::ReplyKeyConflict => "reply_key_conflict",
        }
    }
}

/// Named counters other than drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Rx,
    Tx,
    /// Forward NAT: client -> VIP rewritten to client -> backend.
    Forwarded,
    /// Reverse NAT: backend -> client rewritten to VIP -> client.
    Replied,
    /// Replies translated without a connection entry (included in
    /// `replied`): the backend endpoint serves exactly one service, so the
    /// VIP is known. This is how a node that just became master translates
    /// replies to connections the old master opened (planned switchover).
    RepliedWithoutConnection,
    ArpReplies,
    NdAdverts,
    EchoReplies,
    IcmpErrorsTranslated,
    IcmpErrorsSent,
    ConnNew,
    /// Connections opened mid-flow (a client's ACK with no entry, on a
    /// Maglev or source-hash service): flows another node carried until an
    /// ECMP rehash or a failover sent them here. Included in `conn_new`.
    ConnPickedUp,
    ConnExpired,
    ConnEvicted,
    /// Current number of entries in the worker's table (a gauge).
    ConnActive,
    NeighbourRequests,
    /// Frames that are the kernel's (control traffic: neither to a VIP nor
    /// from a backend): ignored by the dataplane, not dropped.
    KernelPassed,
    /// Frames the kernel dropped because a worker's RX ring was full.
    RxRingDrops,
    /// Frames the kernel refused to transmit.
    TxErrors,
    /// Frames longer than the I/O slot (GRO/TSO super-frames), as the I/O
    /// backend saw them (the pipeline drops them as `oversize`).
    RxTruncated,
    /// Generation of the service snapshot the worker's current batch uses
    /// (a gauge): once every worker shows a generation, no packet is
    /// handled with an older one.
    ServiceGeneration,
}

impl Counter {
    pub const ALL: [Counter; 21] = [
        Counter::Rx,
        Counter::Tx,
        Counter::Forwarded,
        Counter::Replied,
        Counter::RepliedWithoutConnection,
        Counter::ArpReplies,
        Counter::NdAdverts,
        Counter::EchoReplies,
        Counter::IcmpErrorsTranslated,
        Counter::IcmpErrorsSent,
        Counter::ConnNew,
        Counter::ConnPickedUp,
        Counter::ConnExpired,
        Counter::ConnEvicted,
        Counter::ConnActive,
        Counter::NeighbourRequests,
        Counter::KernelPassed,
        Counter::RxRingDrops,
        Counter::TxErrors,
        Counter::RxTruncated,
        Counter::ServiceGeneration,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Counter::Rx => "rx",
            Counter::Tx => "tx",
            Counter::Forwarded => "forwarded",
            Counter::Replied => "replied",
            Counter::RepliedWithoutConnection => "replied_without_connection",
            Counter::ArpReplies => "arp_replies",
            Counter::NdAdverts => "nd_adverts",
            Counter::EchoReplies => "echo_replies",
            Counter::IcmpErrorsTranslated => "icmp_errors_translated",
            Counter::IcmpErrorsSent => "icmp_errors_sent",
            Counter::ConnNew => "conn_new",
            Counter::ConnPickedUp => "conn_picked_up",
            Counter::ConnExpired => "conn_expired",
            Counter::ConnEvicted => "conn_evicted",
            Counter::ConnActive => "conn_active",
            Counter::NeighbourRequests => "neighbour_requests",
            Counter::KernelPassed => "kernel_passed",
            Counter::RxRingDrops => "rx_ring_drops",
            Counter::TxErrors => "tx_errors",
            Counter::RxTruncated => "rx_truncated",
            Counter::ServiceGeneration => "service_generation",
        }
    }
}

/// One worker's counters, padded so two workers never share a cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct WorkerCounters {
    counters: [AtomicU64; Counter::COUNT],
    drops: [AtomicU64; DropReason::COUNT],
}

impl WorkerCounters {
    /// Single-writer increment: only the owning worker calls this.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let slot = &self.counters[c as usize];
        slot.store(slot.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        self.counters[c as usize].store(v, Relaxed);
    }

    #[inline]
    pub fn drop_frame(&self, r: DropReason) {
        let slot = &self.drops[r as usize];
        slot.store(slot.load(Relaxed).wrapping_add(1), Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Relaxed)
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }

    pub fn total_drops(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.drops(*r)).sum()
    }

    /// A plain copy for reporting.
    pub fn read(&self) -> CounterValues {
        CounterValues {
            counters: Counter::ALL.map(|c| (c.name(), self.get(c))).to_vec(),
            drops: DropReason::ALL.map(|r| (r.name(), self.drops(r))).to_vec(),
        }
    }
}

/// Most backend ids a [`BackendGauges`] block tracks (ids at or above are
/// not counted; the control plane assigns ids densely from 0).
pub const MAX_BACKEND_IDS: usize = 1 << 16;

/// One worker's live connections per backend id: single writer (the
/// worker), read by the control plane for status and by the worker's own
/// least-connections scheduler.
#[derive(Debug)]
pub struct BackendGauges {
    slots: Box<[AtomicU32]>,
}

impl Default for BackendGauges {
    fn default() -> Self {
        BackendGauges {
            slots: (0..MAX_BACKEND_IDS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl BackendGauges {
    #[inline]
    pub fn get(&self, id: u32) -> u32 {
        self.slots.get(id as usize).map_or(0, |s| s.load(Relaxed))
    }

    /// Single-writer increment.
    #[inline]
    pub fn inc(&self, id: u32) {
        if let Some(s) = self.slots.get(id as usize) {
            s.store(s.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }

    /// Single-writer decrement (saturating at 0).
    #[inline]
    pub fn dec(&self, id: u32) {
        if let Some(s) = self.slots.get(id as usize) {
            s.store(s.load(Relaxed).saturating_sub(1), Relaxed);
        }
    }
}

/// Counter values copied out for status output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CounterValues {
    pub counters: Vec<(&'static str, u64)>,
    pub drops: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_drops_are_separate() {
        let c = WorkerCounters::default();
        c.add(Counter::Rx, 3);
        c.drop_frame(DropReason::Fragment);
        c.drop_frame(DropReason::Fragment);
        assert_eq!(c.get(Counter::Rx), 3);
        assert_eq!(c.drops(DropReason::Fragment), 2);
        assert_eq!(c.total_drops(), 2);
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 128);
        let v = c.read();
        assert!(v.drops.contains(&("fragment", 2)));
    }

    #[test]
    fn names_are_unique() {
        let mut n: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        n.extend(Counter::ALL.iter().map(|c| c.name()));
        let len = n.len();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), len);
    }
}
