//! Per-worker connection table of the LVS-NAT (DNAT) dataplane.
//!
//! Owns the connections one worker forwards: which backend each client flow
//! of a service was sent to, the flow's TCP state, and when it times out.
//! One [`ConnTable`] per worker thread, owned exclusively: no locks, no
//! atomics, nothing shared. It must not touch packets (the pipeline parses
//! and rewrites them), clocks (every call that needs time takes `now` in
//! milliseconds from the caller), schedulers or per-backend counters (it
//! hands back every connection it drops as a [`Released`], so the caller can
//! decrement the backend's count), or another worker's table.
//!
//! # Model
//!
//! A connection is a client endpoint ([`ClientEndpoint`]: address, port,
//! protocol), the service it addressed (a `u32` id the caller derives from
//! VIP:port:protocol) and the backend it was sent to (a `u32` id the caller
//! derives from the backend's address:port). With DNAT the client endpoint
//! is seen unchanged in both directions, so two O(1) lookups cover all
//! packets:
//!
//! - forward (client -> VIP): [`ConnTable::lookup_forward`] on
//!   (client endpoint, service id);
//! - reply (backend -> client): [`ConnTable::lookup_reply`] on
//!   (client endpoint, backend id).
//!
//! A reply key must name one connection, so an insert whose client endpoint
//! already talks to the same backend through another service is refused
//! ([`Refused::ReplyKeyTaken`]): the backend's replies could not be told
//! apart. (If that other connection is already due, the insert reaps it
//! instead and returns it in [`Inserted::released`].)
//!
//! # TCP states
//!
//! The states and their default timeouts follow Linux conntrack and IPVS
//! ([`ConnState`], [`Timeouts`]). There is no sequence-number tracking: like
//! IPVS, the table trusts the flags of packets that matched a connection.
//! Flags are read in the order RST, SYN, FIN, ACK (the first one set
//! decides). "Forward" is client -> backend, "reply" backend -> client.
//!
//! | state       | event                        | next        |
//! |-------------|------------------------------|-------------|
//! | any         | RST either way               | CLOSE       |
//! | (insert)    | client's SYN                 | SYN_SENT    |
//! | SYN_SENT    | reply SYN+ACK                | SYN_RECV    |
//! | SYN_RECV    | forward ACK                  | ESTABLISHED |
//! | (insert mid-flow) | client's ACK           | SYN_RECV (picked up) |
//! | SYN_RECV (picked up) | reply ACK             | ESTABLISHED |
//! | SYN_RECV (picked up) | reply FIN             | FIN_WAIT (backend) |
//! | SYN_RECV, ESTABLISHED | FIN from side X    | FIN_WAIT (X)|
//! | FIN_WAIT (X)| ACK from the other side      | CLOSE_WAIT (X) |
//! | FIN_WAIT, CLOSE_WAIT (X) | FIN from the other side | LAST_ACK |
//! | LAST_ACK    | ACK either way               | TIME_WAIT   |
//! | TIME_WAIT, CLOSE | forward SYN (port reuse) | SYN_SENT   |
//!
//! A connection can also start mid-flow:
//! a client's ACK for a flow another node carried until an ECMP rehash or
//! a failover ([`ConnTable::insert_as`] with [`Opening::MidFlow`]). It counts as SYN_RECV (embryonic: short timeout, evictable,
//! so an ACK flood costs no more than a SYN flood) until the backend shows
//! that it knows the connection: its ACK makes it ESTABLISHED, its FIN
//! FIN_WAIT. The client's packets alone never promote it.
//!
//! Everything else keeps the state and only refreshes the timer (SYN and
//! SYN-ACK retransmits, data, a SYN in ESTABLISHED as IPVS ignores it). A
//! flow is ESTABLISHED once the client's ACK follows the backend's SYN-ACK,
//! that is once data can flow both ways. FIN_WAIT and CLOSE_WAIT remember
//! which side sent the first FIN, so a retransmitted FIN is not taken for
//! the second one. UDP flows have the single state [`ConnState::Udp`].
//!
//! Every packet of a connection ([`ConnTable::on_packet`]) restarts its
//! timer with the timeout of its (new) state, with one economy: a packet
//! that leaves the state as it was moves the deadline only when that pushes
//! it out by more than the state's refresh step, min(1 s, timeout / 16)
//! (nf_conntrack skips refreshes under a second the same way). A busy
//! connection's packets then write nothing but their own entry: no list
//! links of neighbouring entries, which are foreign cache lines. The price:
//! a connection is due between `timeout - step` and `timeout` after its
//! last packet (at most 1 s early on the default timeouts). SYN_SENT and SYN_RECV default
//! to 30 s: shorter than IPVS (120 s / 60 s) so that a SYN flood ages out
//! quickly, longer than DPVS (3 s / 30 s) so that a client's SYN
//! retransmits (1, 3, 7, 15 s on Linux) and a slow backend still make it.
//!
//! # Expiry
//!
//! Each state has its own intrusive LRU list (entries doubly linked by
//! `u32` index). All entries of a list share one timeout and `now` never
//! goes backwards (a smaller `now` counts as the largest seen), so each list
//! is sorted by deadline: a packet moves its entry to the tail of its
//! state's list, and [`ConnTable::expire`] pops heads while they are due.
//! (A packet that skips its refresh leaves the entry where it is, with the
//! deadline it had: the list stays sorted.) No scans; O(1) per packet and
//! per expired entry. A due connection stays usable until `expire` (or an
//! insert that needs room or its reply key) reaps it: a late packet
//! revives it.
//!
//! Deadlines are stored as `u32` milliseconds and compared as serial
//! numbers, so timeouts are limited to [`MAX_TIMEOUT`] (12.4 days) and
//! `expire` must run at least once in that time (workers call it every
//! batch).
//!
//! # Capacity policy
//!
//! The capacity is fixed at construction (rounded up to a power of two) and
//! everything is allocated then; nothing allocates afterwards. When an
//! insert finds the table full it makes room for the new connection by
//! releasing, in this order:
//!
//! 1. a connection whose timeout has passed (counted as expired);
//! 2. the least recently seen closing TCP connection (CLOSE, TIME_WAIT,
//!    LAST_ACK): both sides are done with it;
//! 3. the least recently seen embryonic TCP connection (SYN_SENT, SYN_RECV)
//!    or UDP flow.
//!
//! ESTABLISHED, FIN_WAIT and CLOSE_WAIT connections (data may still flow)
//! are never evicted: when nothing else can go, the new connection is
//! refused ([`Refused::TableFull`], counted in `refused_full`).
//!
//! # Memory
//!
//! An entry is 40 bytes. The forward and the reply index are open-addressed
//! arrays (linear probing, backward-shift deletion, no tombstones) of `u32`
//! slots, two slots per entry each (load factor at most 1/2). A slot holds
//! the entry's index in its low bits and a tag from the key's hash in the
//! high bits (at least 7 bits of hash at the largest capacity), so most
//! probes that do not match never touch an entry. That makes
//! [`ConnTable::bytes_per_connection`] 40 + 2 × 2 × 4 = 56 bytes.
//!
//! The hash is three folded 128-bit multiplies over the packed key (the
//! last one so that keys differing only in the port spread), keyed with
//! [`ConnTableConfig::hash_seed`] (expanded with SplitMix64): give each
//! table a random seed so clients cannot aim for one probe chain.

use std::fmt;
use std::mem::size_of;
use std::ops::BitOr;
use std::time::Duration;

use crate::flow::{splitmix64, Addr16, L4Proto};

/// Largest capacity of one table. An index slot is a `u32` that holds the
/// entry index and a hash tag of at least 8 bits.
pub const MAX_CAPACITY: usize = 1 << 24;

/// Capacity of [`ConnTableConfig::default`].
pub const DEFAULT_CAPACITY: usize = 1 << 18;

/// Longest timeout a state may have (2^30 ms, about 12.4 days): deadlines
/// are `u32` milliseconds compared as serial numbers.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(1 << 30);

/// "No entry" in list links.
const NIL: u32 = u32::MAX;

/// A same-state packet's refresh step is the timeout divided by this...
const REFRESH_FRACTION: u32 = 16;
/// ...and at most this many ms (nf_conntrack's step is one second too).
const MAX_REFRESH_MS: u32 = 1_000;

/// Slots per entry in each of the two indexes (load factor 1/2).
const SLOTS_PER_ENTRY: usize = 2;

/// The state of a connection; each state has its own timeout.
///
/// Names follow Linux conntrack: SYN_SENT is "the client's SYN was seen",
/// SYN_RECV "the backend answered with SYN-ACK". FIN_WAIT, CLOSE_WAIT and
/// LAST_ACK describe the close from whichever side sent the first FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    /// The client's SYN was seen; no answer from the backend yet.
    SynSent,
    /// The backend's SYN-ACK was seen; the client's ACK not yet.
    SynRecv,
    /// The handshake completed.
    Established,
    /// One side sent a FIN that was not acknowledged yet.
    FinWait,
    /// The first FIN was acknowledged; the other side may still send.
    CloseWait,
    /// Both sides sent a FIN; waiting for the last ACK.
    LastAck,
    /// Both FINs were acknowledged.
    TimeWait,
    /// Reset by either side.
    Close,
    /// A UDP flow (no states).
    Udp,
}

impl ConnState {
    pub const COUNT: usize = 9;
    pub const ALL: [ConnState; Self::COUNT] = [
        ConnState::SynSent,
        ConnState::SynRecv,
        ConnState::Established,
        ConnState::FinWait,
        ConnState::CloseWait,
        ConnState::LastAck,
        ConnState::TimeWait,
        ConnState::Close,
        ConnState::Udp,
    ];

    /// The name `ipvsadm -lc` prints.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::SynSent => "SYN_SENT",
            ConnState::SynRecv => "SYN_RECV",
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::Udp => "UDP",
        }
    }

    /// A TCP handshake in progress (SYN_SENT, SYN_RECV).
    pub fn is_embryonic(self) -> bool {
        matches!(self, ConnState::SynSent | ConnState::SynRecv)
    }
}

/// Per-state timeouts: how long after its last packet a connection in each
/// state is released. Millisecond resolution, at most [`MAX_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub syn_sent: Duration,
    pub syn_recv: Duration,
    pub established: Duration,
    pub fin_wait: Duration,
    pub close_wait: Duration,
    pub last_ack: Duration,
    pub time_wait: Duration,
    pub close: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    /// IPVS's timeouts, except the embryonic ones (30 s, see the module
    /// documentation).
    fn default() -> Self {
        Timeouts {
            syn_sent: Duration::from_secs(30),
            syn_recv: Duration::from_secs(30),
            established: Duration::from_secs(900),
            fin_wait: Duration::from_secs(120),
            close_wait: Duration::from_secs(60),
            last_ack: Duration::from_secs(30),
            time_wait: Duration::from_secs(120),
            close: Duration::from_secs(10),
            udp: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    /// The timeout of `state`.
    pub fn get(&self, state: ConnState) -> Duration {
        match state {
            ConnState::SynSent => self.syn_sent,
            ConnState::SynRecv => self.syn_recv,
            ConnState::Established => self.established,
            ConnState::FinWait => self.fin_wait,
            ConnState::CloseWait => self.close_wait,
            ConnState::LastAck => self.last_ack,
            ConnState::TimeWait => self.time_wait,
            ConnState::Close => self.close,
            ConnState::Udp => self.udp,
        }
    }

    fn to_millis(self) -> Result<[u32; ConnState::COUNT], ConnTableError> {
        let mut ms = [0; ConnState::COUNT];
        for state in ConnState::ALL {
            let timeout = self.get(state);
            if timeout > MAX_TIMEOUT {
                return Err(ConnTableError::TimeoutTooLong { state, timeout });
            }
            // Fits: at most 2^30 ms, checked above.
            ms[state as usize] = timeout.as_millis() as u32;
        }
        Ok(ms)
    }
}

/// How to build a [`ConnTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTableConfig {
    /// Most connections the table holds; rounded up to a power of two,
    /// at most [`MAX_CAPACITY`].
    pub capacity: usize,
    pub timeouts: Timeouts,
    /// Keys the index hash. Use a random value per table in production;
    /// tests use fixed ones.
    pub hash_seed: u64,
}

impl Default for ConnTableConfig {
    fn default() -> Self {
        ConnTableConfig {
            capacity: DEFAULT_CAPACITY,
            timeouts: Timeouts::default(),
            hash_seed: 0x7669_7067_6174_6521,
        }
    }
}

/// A [`ConnTableConfig`] that cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnTableError {
    ZeroCapacity,
    CapacityTooLarge { requested: usize },
    TimeoutTooLong { state: ConnState, timeout: Duration },
}

impl fmt::Display for ConnTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnTableError::ZeroCapacity => {
                write!(f, "connection table capacity must be at least 1")
            }
            ConnTableError::CapacityTooLarge { requested } => write!(
                f,
                "connection table capacity {requested} is above the maximum {MAX_CAPACITY}"
            ),
            ConnTableError::TimeoutTooLong { state, timeout } => write!(
                f,
                "{} timeout {timeout:?} is above the maximum {MAX_TIMEOUT:?}",
                state.name()
            ),
        }
    }
}

impl std::error::Error for ConnTableError {}

/// The flags byte of a TCP header (offset 13). Only FIN, SYN, RST and ACK
/// matter to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags(0);
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const ACK: TcpFlags = TcpFlags(0x10);

    /// From the TCP header's flags byte as it is on the wire.
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// Which way a packet of a connection travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client -> VIP, forwarded to the backend.
    Forward,
    /// Backend -> client, sent back from the VIP.
    Reply,
}

/// The client side of a connection: the part of the key both directions
/// share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientEndpoint {
    pub addr: Addr16,
    pub port: u16,
    pub proto: L4Proto,
}

/// A connection's slot in its table. Valid until the next call that can
/// release connections (`insert`, `remove`, `expire`); do not keep it
/// longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// The slot number (for status output).
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// A lookup hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: ConnId,
    pub service: u32,
    pub backend: u32,
    pub state: ConnState,
}

/// The state change one packet caused (`from == to` when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: ConnState,
    pub to: ConnState,
}

/// Which kind of connection an insert evicted to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EvictReason {
    /// CLOSE, TIME_WAIT or LAST_ACK.
    Closing,
    /// SYN_SENT or SYN_RECV.
    Embryonic,
    /// A UDP flow.
    Udp,
}

impl EvictReason {
    pub const COUNT: usize = 3;
    pub const ALL: [EvictReason; Self::COUNT] = [
        EvictReason::Closing,
        EvictReason::Embryonic,
        EvictReason::Udp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvictReason::Closing => "closing",
            EvictReason::Embryonic => "embryonic",
            EvictReason::Udp => "udp",
        }
    }

    fn of(state: ConnState) -> EvictReason {
        match state {
            ConnState::SynSent | ConnState::SynRecv => EvictReason::Embryonic,
            ConnState::Udp => EvictReason::Udp,
            _ => EvictReason::Closing,
        }
    }
}

/// Why a connection left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    Expired,
    Evicted(EvictReason),
    /// [`ConnTable::remove`].
    Removed,
}

/// A connection that left the table: the caller decrements its backend's
/// count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub client: ClientEndpoint,
    pub service: u32,
    pub backend: u32,
    pub state: ConnState,
    pub reason: ReleaseReason,
}

/// A successful insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub id: ConnId,
    /// The connection released to make room (the table was full) or to
    /// free the reply key (its holder was due), if any.
    pub released: Option<Released>,
}

/// Why an insert did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Full of connections that must not be evicted.
    TableFull,
    /// The forward key is already in the table (look up before inserting).
    Exists(ConnId),
    /// This client endpoint already reaches the same backend through another
    /// service: replies would be ambiguous.
    ReplyKeyTaken(ConnId),
}

/// What a table has done; plain numbers the worker copies into its shared
/// counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnTableCounters {
    /// Connections in the table now.
    pub live: u64,
    /// Connections in each state now, indexed by `ConnState as usize`.
    pub by_state: [u64; ConnState::COUNT],
    pub inserted: u64,
    pub expired: u64,
    /// Indexed by `EvictReason as usize`.
    pub evicted: [u64; EvictReason::COUNT],
    pub removed: u64,
    pub refused_full: u64,
    pub refused_reply_key: u64,
    pub lookup_hit: u64,
    pub lookup_miss: u64,
}

impl ConnTableCounters {
    pub fn in_state(&self, state: ConnState) -> u64 {
        self.by_state[state as usize]
    }
    pub fn evicted_for(&self, reason: EvictReason) -> u64 {
        self.evicted[reason as usize]
    }
    pub fn evicted_total(&self) -> u64 {
        self.evicted.iter().sum()
    }
}

/// One connection as status output shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStatus {
    pub id: ConnId,
    pub client: ClientEndpoint,
    pub service: u32,
    pub backend: u32,
    pub state: ConnState,
    /// Time until the connection is due (zero when it already is).
    pub remaining: Duration,
}

/// The connection table of one worker. See the module documentation.
pub struct ConnTable {
    entries: Box<[Entry]>,
    forward: Index,
    reply: Index,
    hasher: KeyHasher,
    timeouts: Timeouts,
    timeouts_ms: [u32; ConnState::COUNT],
    /// Per state: a same-state packet moves the deadline only by more
    /// than this (ms); see "Timeouts" in the module documentation.
    refresh_ms: [u32; ConnState::COUNT],
    lists: [List; ConnState::COUNT],
    free_head: u32,
    live: u32,
    /// Largest `now` seen, in milliseconds.
    now: u64,
    /// The list `expire` starts with, rotated so no list starves.
    expire_cursor: usize,
    stats: ConnTableCounters,
}

impl ConnTable {
    /// Builds a table and allocates all its memory
    /// (`capacity × bytes_per_connection()` bytes).
    pub fn new(config: &ConnTableConfig) -> Result<ConnTable, ConnTableError> {
        let capacity = match config.capacity {
            0 => return Err(ConnTableError::ZeroCapacity),
            c if c > MAX_CAPACITY => return Err(ConnTableError::CapacityTooLarge { requested: c }),
            c => c.next_power_of_two(),
        };
        let mut entries = vec![Entry::FREE; capacity].into_boxed_slice();
        for (i, e) in entries.iter_mut().enumerate() {
            // Fits: capacity <= 2^24.
            e.next = if i + 1 < capacity { i as u32 + 1 } else { NIL };
        }
        let timeouts_ms = config.timeouts.to_millis()?;
        Ok(ConnTable {
            entries,
            forward: Index::new(capacity),
            reply: Index::new(capacity),
            hasher: KeyHasher::new(config.hash_seed),
            timeouts: config.timeouts,
            timeouts_ms,
            refresh_ms: timeouts_ms.map(|t| (t / REFRESH_FRACTION).min(MAX_REFRESH_MS)),
            lists: [List::EMPTY; ConnState::COUNT],
            free_head: 0,
            live: 0,
            now: 0,
            expire_cursor: 0,
            stats: ConnTableCounters::default(),
        })
    }

    /// Memory per connection slot: the entry plus its share of both
    /// indexes. Exact, because the capacity is a power of two and each index
    /// has exactly two slots per entry.
    pub const fn bytes_per_connection() -> usize {
        size_of::<Entry>() + 2 * SLOTS_PER_ENTRY * size_of::<u32>()
    }

    /// Memory the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.capacity() * Self::bytes_per_connection() + size_of::<Self>()
    }

    /// Most connections the table holds (the configured capacity rounded
    /// up to a power of two).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The connection a client -> VIP packet belongs to.
    #[inline]
    pub fn lookup_forward(&mut self, client: &ClientEndpoint, service: u32) -> Option<Found> {
        let h = self.hasher.hash(client, service);
        let hit = self.find(Side::Forward, h, client, service);
        self.found(hit)
    }

    /// The connection a backend -> client packet belongs to.
    #[inline]
    pub fn lookup_reply(&mut self, client: &ClientEndpoint, backend: u32) -> Option<Found> {
        let h = self.hasher.hash(client, backend);
        let hit = self.find(Side::Reply, h, client, backend);
        self.found(hit)
    }

    /// Adds a connection for a client's first packet (a SYN for TCP: the
    /// connection starts in SYN_SENT; UDP in [`ConnState::Udp`]). When the
    /// table is full, releases one connection first (see the module's
    /// capacity policy) and returns it in [`Inserted::released`].
    pub fn insert(
        &mut self,
        client: &ClientEndpoint,
        service: u32,
        backend: u32,
        now: u64,
    ) -> Result<Inserted, Refused> {
        self.insert_as(Opening::First, client, service, backend, now)
    }

    /// [`ConnTable::insert`] for a connection that starts as `opening`
    /// says: [`Opening::MidFlow`] starts a TCP connection in SYN_RECV until
    /// the backend answers (see "TCP states" in the module documentation).
    pub fn insert_as(
        &mut self,
        opening: Opening,
        client: &ClientEndpoint,
        service: u32,
        backend: u32,
        now: u64,
    ) -> Result<Inserted, Refused> {
        let phase = match (client.proto, opening) {
            (L4Proto::Udp, _) => Phase::Udp,
            (L4Proto::Tcp, Opening::First) => Phase::SynSent,
            (L4Proto::Tcp, Opening::MidFlow) => Phase::PickedUp,
        };
        let now = self.advance(now);
        let fh = self.hasher.hash(client, service);
        if let Some((_, i)) = self.find(Side::Forward, fh, client, service) {
            return Err(Refused::Exists(ConnId(i)));
        }
        let rh = self.hasher.hash(client, backend);
        let reaped = self.claim_reply_key(rh, client, backend, now)?;
        let (i, evicted) = self.take_free(now)?;
        // At most one is set: a reaped holder leaves a free entry.
        let released = reaped.or(evicted);
        let state = phase.state();
        self.entries[i as usize] = Entry {
            client: client.addr,
            service,
            backend,
            deadline: now.wrapping_add(self.timeouts_ms[state as usize]),
            prev: NIL,
            next: NIL,
            port: client.port,
            proto: client.proto,
            phase: Some(phase),
        };
        self.forward.put(fh, i);
        self.reply.put(rh, i);
        self.push_tail(state, i);
        self.live += 1;
        self.stats.inserted += 1;
        Ok(Inserted {
            id: ConnId(i),
            released,
        })
    }

    /// Accounts one packet of connection `id`: runs the TCP state machine
    /// on `flags` (ignored for UDP) and restarts the timer. `None` if `id`
    /// is not a live connection.
    #[inline]
    pub fn on_packet(
        &mut self,
        id: ConnId,
        dir: Direction,
        flags: TcpFlags,
        now: u64,
    ) -> Option<Transition> {
        let now = self.advance(now);
        let i = id.0;
        let entry = self.entries.get_mut(i as usize)?;
        let from = entry.phase?;
        let to = from.next(dir, flags);
        entry.phase = Some(to);
        let (from, to) = (from.state(), to.state());
        self.requeue(i, from, to, now);
        Some(Transition { from, to })
    }

    /// Removes connection `id` (e.g. its backend was deleted). `None` if it
    /// is not a live connection.
    pub fn remove(&mut self, id: ConnId) -> Option<Released> {
        self.release(id.0, ReleaseReason::Removed)
    }

    /// Releases up to `budget` connections that are due at `now`, oldest
    /// deadline first within each state, and calls `on_release` for each.
    /// Returns how many it released. O(1) per released connection plus one
    /// check per state.
    pub fn expire(
        &mut self,
        now: u64,
        budget: usize,
        mut on_release: impl FnMut(&Released),
    ) -> usize {
        let now = self.advance(now);
        let mut done = 0;
        for k in 0..ConnState::COUNT {
            let list = (self.expire_cursor + k) % ConnState::COUNT;
            while done < budget {
                let head = self.lists[list].head;
                if head == NIL || !is_due(self.entries[head as usize].deadline, now) {
                    break;
                }
                let Some(released) = self.release(head, ReleaseReason::Expired) else {
                    break;
                };
                on_release(&released);
                done += 1;
            }
        }
        self.expire_cursor = (self.expire_cursor + 1) % ConnState::COUNT;
        done
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ConnTableCounters {
        let mut c = self.stats;
        c.live = u64::from(self.live);
        for (n, list) in c.by_state.iter_mut().zip(&self.lists) {
            *n = u64::from(list.len);
        }
        c
    }

    /// Connection `id` as status output shows it, times relative to `now`.
    pub fn status(&self, id: ConnId, now: u64) -> Option<ConnStatus> {
        let e = self.entries.get(id.0 as usize)?;
        let phase = e.phase?;
        let left = e.deadline.wrapping_sub(now as u32) as i32;
        Some(ConnStatus {
            id,
            client: e.client_endpoint(),
            service: e.service,
            backend: e.backend,
            state: phase.state(),
            remaining: Duration::from_millis(left.max(0) as u64),
        })
    }

    /// All connections, for status output (walks the whole table: not for
    /// the packet path).
    pub fn iter(&self, now: u64) -> impl Iterator<Item = ConnStatus> + '_ {
        // Fits: capacity <= 2^24.
        (0..self.entries.len() as u32).filter_map(move |i| self.status(ConnId(i), now))
    }

    /// Clamps `now` to the largest seen and truncates it for deadlines.
    #[inline]
    fn advance(&mut self, now: u64) -> u32 {
        self.now = self.now.max(now);
        self.now as u32
    }

    #[inline]
    fn found(&mut self, hit: Option<(usize, u32)>) -> Option<Found> {
        let found = hit.and_then(|(_, i)| {
            let e = &self.entries[i as usize];
            Some(Found {
                id: ConnId(i),
                service: e.service,
                backend: e.backend,
                state: e.phase?.state(),
            })
        });
        match found {
            Some(_) => self.stats.lookup_hit += 1,
            None => self.stats.lookup_miss += 1,
        }
        found
    }

    /// The slot position and entry index of a key in one index.
    #[inline]
    fn find(&self, side: Side, h: u64, client: &ClientEndpoint, peer: u32) -> Option<(usize, u32)> {
        let ix = match side {
            Side::Forward => &self.forward,
            Side::Reply => &self.reply,
        };
        let tag = ix.tag(h);
        let mut pos = ix.home(h);
        // Bounded: at most half the slots are used, so an empty one ends
        // the probe long before this.
        for _ in 0..ix.slots.len() {
            let slot = ix.slots[pos];
            if slot == 0 {
                return None;
            }
            if slot & !ix.entry_mask == tag {
                let i = slot & ix.entry_mask;
                if self.entries[i as usize].matches(side, client, peer) {
                    return Some((pos, i));
                }
            }
            pos = (pos + 1) & ix.mask;
        }
        None
    }

    /// Makes sure the reply key (client endpoint, backend) is free for a new
    /// connection: refuses if a live connection holds it, releases the
    /// holder (as expired) if it is due but not reaped yet.
    fn claim_reply_key(
        &mut self,
        rh: u64,
        client: &ClientEndpoint,
        backend: u32,
        now: u32,
    ) -> Result<Option<Released>, Refused> {
        let Some((_, i)) = self.find(Side::Reply, rh, client, backend) else {
            return Ok(None);
        };
        if is_due(self.entries[i as usize].deadline, now) {
            return Ok(self.release(i, ReleaseReason::Expired));
        }
        self.stats.refused_reply_key += 1;
        Err(Refused::ReplyKeyTaken(ConnId(i)))
    }

    /// A free entry, releasing a connection first if there is none.
    fn take_free(&mut self, now: u32) -> Result<(u32, Option<Released>), Refused> {
        let mut released = None;
        if self.free_head == NIL {
            if let Some((i, reason)) = self.victim(now) {
                released = self.release(i, reason);
            }
        }
        let i = self.free_head;
        if i == NIL {
            self.stats.refused_full += 1;
            return Err(Refused::TableFull);
        }
        self.free_head = self.entries[i as usize].next;
        Ok((i, released))
    }

    /// What to release for room: a due connection, else the least recently
    /// seen closing one, else the least recently seen embryonic or UDP one.
    fn victim(&self, now: u32) -> Option<(u32, ReleaseReason)> {
        const CLOSING: [ConnState; 3] = [ConnState::Close, ConnState::TimeWait, ConnState::LastAck];
        const FRESH: [ConnState; 3] = [ConnState::SynSent, ConnState::SynRecv, ConnState::Udp];
        let due = self
            .lists
            .iter()
            .map(|l| l.head)
            .find(|&h| h != NIL && is_due(self.entries[h as usize].deadline, now));
        if let Some(h) = due {
            return Some((h, ReleaseReason::Expired));
        }
        self.least_recent_head(&CLOSING)
            .or_else(|| self.least_recent_head(&FRESH))
            .map(|(h, state)| (h, ReleaseReason::Evicted(EvictReason::of(state))))
    }

    /// Among the heads of `states`' lists, the one with the oldest last
    /// packet.
    fn least_recent_head(&self, states: &[ConnState]) -> Option<(u32, ConnState)> {
        let mut best: Option<(u32, ConnState, u32)> = None;
        for &state in states {
            let head = self.lists[state as usize].head;
            if head == NIL {
                continue;
            }
            let deadline = self.entries[head as usize].deadline;
            let seen = deadline.wrapping_sub(self.timeouts_ms[state as usize]);
            if best.is_none_or(|(_, _, b)| is_before(seen, b)) {
                best = Some((head, state, seen));
            }
        }
        best.map(|(h, state, _)| (h, state))
    }

    /// Takes live entry `i` out of both indexes and its list, frees it and
    /// counts why. `None` if `i` is not live.
    fn release(&mut self, i: u32, reason: ReleaseReason) -> Option<Released> {
        let e = *self.entries.get(i as usize)?;
        let state = e.phase?.state();
        self.unindex(Side::Forward, i, &e);
        self.unindex(Side::Reply, i, &e);
        self.unlink(state, i);
        let slot = &mut self.entries[i as usize];
        slot.phase = None;
        slot.next = self.free_head;
        self.free_head = i;
        self.live -= 1;
        match reason {
            ReleaseReason::Expired => self.stats.expired += 1,
            ReleaseReason::Evicted(why) => self.stats.evicted[why as usize] += 1,
            ReleaseReason::Removed => self.stats.removed += 1,
        }
        Some(Released {
            client: e.client_endpoint(),
            service: e.service,
            backend: e.backend,
            state,
            reason,
        })
    }

    fn unindex(&mut self, side: Side, i: u32, e: &Entry) {
        let h = self.hasher.hash_entry(e, side);
        let (entries, hasher) = (&self.entries, &self.hasher);
        let ix = match side {
            Side::Forward => &mut self.forward,
            Side::Reply => &mut self.reply,
        };
        ix.remove(h, i, |j| hasher.hash_entry(&entries[j as usize], side));
    }

    /// Restarts entry `i`'s timer in state `to` and moves it to the tail of
    /// that state's list (nothing to move if it is already there). In the
    /// same state, a restart by no more than the refresh step is skipped.
    #[inline]
    fn requeue(&mut self, i: u32, from: ConnState, to: ConnState, now: u32) {
        let deadline = now.wrapping_add(self.timeouts_ms[to as usize]);
        let entry = &mut self.entries[i as usize];
        if from == to {
            // `now` never goes backwards, so the deadline only grows.
            if deadline.wrapping_sub(entry.deadline) <= self.refresh_ms[to as usize] {
                return;
            }
            entry.deadline = deadline;
            if self.lists[to as usize].tail == i {
                return;
            }
        } else {
            entry.deadline = deadline;
        }
        self.unlink(from, i);
        self.push_tail(to, i);
    }

    fn push_tail(&mut self, state: ConnState, i: u32) {
        let list = &mut self.lists[state as usize];
        let e = &mut self.entries[i as usize];
        e.prev = list.tail;
        e.next = NIL;
        match list.tail {
            NIL => list.head = i,
            tail => self.entries[tail as usize].next = i,
        }
        list.tail = i;
        list.len += 1;
    }

    fn unlink(&mut self, state: ConnState, i: u32) {
        let list = &mut self.lists[state as usize];
        let Entry { prev, next, .. } = self.entries[i as usize];
        match prev {
            NIL => list.head = next,
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => list.tail = prev,
            n => self.entries[n as usize].prev = prev,
        }
        list.len -= 1;
    }
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity())
            .field("live", &self.live)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// `deadline` has come at `now` (serial-number compare of `u32` ms).
#[inline]
fn is_due(deadline: u32, now: u32) -> bool {
    now.wrapping_sub(deadline) as i32 >= 0
}

/// `a` is strictly earlier than `b` (serial-number compare).
fn is_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// How a client's packet without a connection starts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The first packet: a TCP SYN (without ACK), or any UDP datagram.
    First,
    /// A TCP ACK in the middle of a flow another node carried until an
    /// ECMP rehash or a failover sent it here.
    MidFlow,
}

/// Which index (and so which peer id) a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Keyed on the service id.
    Forward,
    /// Keyed on the backend id.
    Reply,
}

/// The TCP state plus, while closing, which side sent the first FIN.
/// `Option<Phase>` is one byte; `None` marks a free entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SynSent,
    SynRecv,
    /// Opened mid-flow; the backend has not answered yet.
    PickedUp,
    Established,
    FinWaitByClient,
    FinWaitByBackend,
    CloseWaitByClient,
    CloseWaitByBackend,
    LastAck,
    TimeWait,
    Close,
    Udp,
}

impl Phase {
    fn state(self) -> ConnState {
        match self {
            Phase::SynSent => ConnState::SynSent,
            Phase::SynRecv | Phase::PickedUp => ConnState::SynRecv,
            Phase::Established => ConnState::Established,
            Phase::FinWaitByClient | Phase::FinWaitByBackend => ConnState::FinWait,
            Phase::CloseWaitByClient | Phase::CloseWaitByBackend => ConnState::CloseWait,
            Phase::LastAck => ConnState::LastAck,
            Phase::TimeWait => ConnState::TimeWait,
            Phase::Close => ConnState::Close,
            Phase::Udp => ConnState::Udp,
        }
    }

    /// The state after a packet with `flags` travelling `dir` (the table in
    /// the module documentation).
    #[inline]
    fn next(self, dir: Direction, flags: TcpFlags) -> Phase {
        if self == Phase::Udp {
            self
        } else if flags.contains(TcpFlags::RST) {
            Phase::Close
        } else if flags.contains(TcpFlags::SYN) {
            self.on_syn(dir, flags.contains(TcpFlags::ACK))
        } else if flags.contains(TcpFlags::FIN) {
            self.on_fin(dir)
        } else if flags.contains(TcpFlags::ACK) {
            self.on_ack(dir)
        } else {
            self
        }
    }

    fn on_syn(self, dir: Direction, ack: bool) -> Phase {
        match (dir, ack, self) {
            (Direction::Forward, false, Phase::TimeWait | Phase::Close) => Phase::SynSent,
            (Direction::Reply, true, Phase::SynSent) => Phase::SynRecv,
            _ => self,
        }
    }

    fn on_fin(self, dir: Direction) -> Phase {
        use Direction::{Forward, Reply};
        match (self, dir) {
            (Phase::SynRecv | Phase::Established, Forward) => Phase::FinWaitByClient,
            (Phase::SynRecv | Phase::Established | Phase::PickedUp, Reply) => {
                Phase::FinWaitByBackend
            }
            (Phase::FinWaitByClient | Phase::CloseWaitByClient, Reply)
            | (Phase::FinWaitByBackend | Phase::CloseWaitByBackend, Forward) => Phase::LastAck,
            _ => self,
        }
    }

    fn on_ack(self, dir: Direction) -> Phase {
        use Direction::{Forward, Reply};
        match (self, dir) {
            (Phase::SynRecv, Forward) | (Phase::PickedUp, Reply) => Phase::Established,
            (Phase::FinWaitByClient, Reply) => Phase::CloseWaitByClient,
            (Phase::FinWaitByBackend, Forward) => Phase::CloseWaitByBackend,
            (Phase::LastAck, _) => Phase::TimeWait,
            _ => self,
        }
    }
}

/// One connection slot: 40 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    client: Addr16,
    service: u32,
    backend: u32,
    /// When the connection is due, `u32` ms (serial number).
    deadline: u32,
    /// Links in the state's list (or, for `next`, the free list).
    prev: u32,
    next: u32,
    port: u16,
    proto: L4Proto,
    phase: Option<Phase>,
}

impl Entry {
    const FREE: Entry = Entry {
        client: Addr16([0; 16]),
        service: 0,
        backend: 0,
        deadline: 0,
        prev: NIL,
        next: NIL,
        port: 0,
        proto: L4Proto::Tcp,
        phase: None,
    };

    #[inline]
    fn peer(&self, side: Side) -> u32 {
        match side {
            Side::Forward => self.service,
            Side::Reply => self.backend,
        }
    }

    #[inline]
    fn matches(&self, side: Side, client: &ClientEndpoint, peer: u32) -> bool {
        self.peer(side) == peer
            && self.port == client.port
            && self.proto == client.proto
            && self.client == client.addr
    }

    fn client_endpoint(&self) -> ClientEndpoint {
        ClientEndpoint {
            addr: self.client,
            port: self.port,
            proto: self.proto,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// An open-addressed index of `u32` slots: `0` is empty, otherwise the
/// hash tag in the high bits and the entry index in the low `entry_bits`.
struct Index {
    slots: Box<[u32]>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    entry_bits: u32,
    entry_mask: u32,
}

impl Index {
    /// For `capacity` entries (a power of two, at most [`MAX_CAPACITY`]).
    fn new(capacity: usize) -> Index {
        let len = capacity * SLOTS_PER_ENTRY;
        let entry_bits = capacity.trailing_zeros();
        Index {
            slots: vec![0; len].into_boxed_slice(),
            mask: len - 1,
            entry_bits,
            entry_mask: (1u32 << entry_bits) - 1,
        }
    }

    /// High bits of the slot for hash `h`: never zero (lowest tag bit set).
    #[inline]
    fn tag(&self, h: u64) -> u32 {
        (((h >> 32) as u32) | 1) << self.entry_bits
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// Stores entry `i` under hash `h` in the first empty slot of its probe
    /// sequence (one exists: at most half the slots are used).
    fn put(&mut self, h: u64, i: u32) {
        let mut pos = self.home(h);
        for _ in 0..self.slots.len() {
            if self.slots[pos] == 0 {
                self.slots[pos] = self.tag(h) | i;
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Removes entry `i` stored under hash `h`, shifting later slots of the
    /// cluster back so probes need no tombstones. `hash_of` gives the hash
    /// of any stored entry (to find its home slot).
    fn remove(&mut self, h: u64, i: u32, hash_of: impl Fn(u32) -> u64) {
        let Some(mut hole) = self.position(self.tag(h) | i, self.home(h)) else {
            return;
        };
        let mut pos = hole;
        for _ in 0..self.slots.len() {
            pos = (pos + 1) & self.mask;
            let slot = self.slots[pos];
            if slot == 0 {
                break;
            }
            let home = self.home(hash_of(slot & self.entry_mask));
            // The slot may move back into the hole if the hole lies on its
            // probe path, i.e. between its home and its position.
            if pos.wrapping_sub(home) & self.mask >= pos.wrapping_sub(hole) & self.mask {
                self.slots[hole] = slot;
                hole = pos;
            }
        }
        self.slots[hole] = 0;
    }

    fn position(&self, slot: u32, home: usize) -> Option<usize> {
        let mut pos = home;
        for _ in 0..self.slots.len() {
            match self.slots[pos] {
                0 => return None,
                s if s == slot => return Some(pos),
                _ => pos = (pos + 1) & self.mask,
            }
        }
        None
    }
}

/// Keyed hash of a (client endpoint, peer id) key: three folded
/// 64×64->128 multiplies (the foldhash construction, with its final
/// fold), keys expanded with SplitMix64.
#[derive(Debug, Clone, Copy)]
struct KeyHasher {
    k: [u64; 5],
}

impl KeyHasher {
    fn new(seed: u64) -> KeyHasher {
        let mut k = [0; 5];
        let mut s = seed;
        for x in &mut k {
            s = splitmix64(s);
            // Odd, so no key zeroes a multiplication.
            *x = s | 1;
        }
        KeyHasher { k }
    }

    #[inline]
    fn hash(&self, client: &ClientEndpoint, peer: u32) -> u64 {
        self.hash_parts(&client.addr, client.port, client.proto, peer)
    }

    fn hash_entry(&self, e: &Entry, side: Side) -> u64 {
        self.hash_parts(&e.client, e.port, e.proto, e.peer(side))
    }

    #[inline]
    fn hash_parts(&self, addr: &Addr16, port: u16, proto: L4Proto, peer: u32) -> u64 {
        let a = u128::from_le_bytes(addr.0);
        let rest = (u64::from(peer) << 32) | (u64::from(port) << 8) | proto as u64;
        let h = fold_mul(a as u64 ^ self.k[0], (a >> 64) as u64 ^ self.k[1]);
        let h = fold_mul(h ^ self.k[2], rest ^ self.k[3]);
        // One fold alone is nearly linear in an operand that moves by small
        // steps (consecutive ports): a last fold spreads every bit.
        fold_mul(h, self.k[4])
    }
}

#[inline]
fn fold_mul(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    p as u64 ^ (p >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use Direction::{Forward, Reply};

    const S: TcpFlags = TcpFlags::SYN;
    const A: TcpFlags = TcpFlags::ACK;
    const F: TcpFlags = TcpFlags::FIN;
    const R: TcpFlags = TcpFlags::RST;

    fn syn_ack() -> TcpFlags {
        S | A
    }
    fn fin_ack() -> TcpFlags {
        F | A
    }

    fn config(capacity: usize) -> ConnTableConfig {
        ConnTableConfig {
            capacity,
            timeouts: Timeouts::default(),
            hash_seed: 0x5eed,
        }
    }

    fn table(capacity: usize) -> ConnTable {
        ConnTable::new(&config(capacity)).expect("valid test config")
    }

    /// Distinct timeouts (in ms) per state, so a test can tell them apart.
    fn distinct_timeouts() -> Timeouts {
        let ms = Duration::from_millis;
        Timeouts {
            syn_sent: ms(1_000),
            syn_recv: ms(2_000),
            established: ms(3_000),
            fin_wait: ms(4_000),
            close_wait: ms(5_000),
            last_ack: ms(6_000),
            time_wait: ms(7_000),
            close: ms(8_000),
            udp: ms(9_000),
        }
    }

    /// Client `n` in 198.18.0.0/15.
    fn client(n: u32, proto: L4Proto) -> ClientEndpoint {
        ClientEndpoint {
            addr: Addr16::from_v4(Ipv4Addr::from(0xc612_0000 | (n & 0x1_ffff))),
            port: 40_000 + (n % 1000) as u16,
            proto,
        }
    }
    fn tcp(n: u32) -> ClientEndpoint {
        client(n, L4Proto::Tcp)
    }
    fn udp(n: u32) -> ClientEndpoint {
        client(n, L4Proto::Udp)
    }

    /// Checks every structural invariant: both indexes hold exactly the
    /// live entries, each reachable from its home slot without crossing an
    /// empty slot (what backward-shift deletion must keep), the state lists
    /// are well linked and sorted by deadline, and the free list holds the
    /// rest.
    fn assert_consistent(t: &ConnTable) {
        let cap = t.entries.len();
        let mut live = 0;
        for (i, e) in t.entries.iter().enumerate() {
            if e.phase.is_none() {
                continue;
            }
            live += 1;
            for side in [Side::Forward, Side::Reply] {
                let h = t.hasher.hash_entry(e, side);
                let hit = t.find(side, h, &e.client_endpoint(), e.peer(side));
                assert_eq!(hit.map(|(_, j)| j), Some(i as u32), "entry {i} lost");
            }
        }
        assert_eq!(live, t.live as usize);
        for (ix, side) in [(&t.forward, Side::Forward), (&t.reply, Side::Reply)] {
            assert_eq!(ix.slots.iter().filter(|&&s| s != 0).count(), live);
            for (pos, &slot) in ix.slots.iter().enumerate() {
                if slot == 0 {
                    continue;
                }
                let e = &t.entries[(slot & ix.entry_mask) as usize];
                assert!(e.phase.is_some(), "slot {pos} names a free entry");
                let h = t.hasher.hash_entry(e, side);
                assert_eq!(slot & !ix.entry_mask, ix.tag(h));
                let mut p = ix.home(h);
                while p != pos {
                    assert_ne!(ix.slots[p], 0, "hole in the probe path of slot {pos}");
                    p = (p + 1) & ix.mask;
                }
            }
        }
        let mut listed = 0;
        for state in ConnState::ALL {
            let list = &t.lists[state as usize];
            let (mut prev, mut i, mut n) = (NIL, list.head, 0);
            while i != NIL {
                let e = &t.entries[i as usize];
                assert_eq!(e.prev, prev);
                assert_eq!(e.phase.map(Phase::state), Some(state));
                if prev != NIL {
                    assert!(!is_before(e.deadline, t.entries[prev as usize].deadline));
                }
                (prev, i, n) = (i, e.next, n + 1);
                assert!(n <= cap, "cycle in the {} list", state.name());
            }
            assert_eq!(list.tail, prev);
            assert_eq!(list.len as usize, n);
            listed += n;
        }
        assert_eq!(listed, live);
        let (mut i, mut free) = (t.free_head, 0);
        while i != NIL {
            assert!(t.entries[i as usize].phase.is_none());
            (i, free) = (t.entries[i as usize].next, free + 1);
            assert!(free <= cap, "cycle in the free list");
        }
        assert_eq!(free + live, cap);
    }

    // ---- construction, sizes ------------------------------------------

    #[test]
    fn entry_and_connection_sizes() {
        assert_eq!(size_of::<Entry>(), 40);
        assert_eq!(size_of::<Option<Phase>>(), 1);
        assert_eq!(ConnTable::bytes_per_connection(), 56);
        assert!(ConnTable::bytes_per_connection() <= 64);
        let t = table(1000);
        assert_eq!(t.capacity(), 1024);
        assert_eq!(t.forward.slots.len(), 2048);
        assert_eq!(
            t.memory_bytes(),
            1024 * ConnTable::bytes_per_connection() + size_of::<ConnTable>()
        );
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            ConnTable::new(&config(0)).err(),
            Some(ConnTableError::ZeroCapacity)
        );
        assert_eq!(
            ConnTable::new(&config(MAX_CAPACITY + 1)).err(),
            Some(ConnTableError::CapacityTooLarge {
                requested: MAX_CAPACITY + 1
            })
        );
        let mut c = config(8);
        c.timeouts.time_wait = MAX_TIMEOUT + Duration::from_millis(1);
        let err = ConnTable::new(&c).err();
        assert_eq!(
            err,
            Some(ConnTableError::TimeoutTooLong {
                state: ConnState::TimeWait,
                timeout: c.timeouts.time_wait
            })
        );
        assert!(err.is_some_and(|e| e.to_string().contains("TIME_WAIT")));
        c.timeouts.time_wait = MAX_TIMEOUT;
        assert!(ConnTable::new(&c).is_ok());
        assert_eq!(table(1).capacity(), 1);
    }

    #[test]
    fn default_timeouts_are_the_documented_ones() {
        let t = Timeouts::default();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(t.syn_sent, secs(30));
        assert_eq!(t.syn_recv, secs(30));
        assert_eq!(t.established, secs(900));
        assert_eq!(t.fin_wait, secs(120));
        assert_eq!(t.close_wait, secs(60));
        assert_eq!(t.last_ack, secs(30));
        assert_eq!(t.time_wait, secs(120));
        assert_eq!(t.close, secs(10));
        assert_eq!(t.udp, secs(300));
        assert_eq!(ConnTableConfig::default().capacity, DEFAULT_CAPACITY);
    }

    // ---- TCP state table ------------------------------------------------

    /// A fresh connection driven through `steps`; returns the table and id.
    fn driven(steps: &[(Direction, TcpFlags)]) -> (ConnTable, ConnId) {
        let mut t = table(8);
        let id = t.insert(&tcp(1), 80, 7, 0).expect("empty table").id;
        for (n, &(dir, flags)) in steps.iter().enumerate() {
            t.on_packet(id, dir, flags, n as u64 + 1).expect("live");
        }
        (t, id)
    }

    const TO_SYN_RECV: &[(Direction, TcpFlags)] = &[(Reply, TcpFlags::from_bits(0x12))];
    const TO_ESTABLISHED: &[(Direction, TcpFlags)] =
        &[(Reply, TcpFlags::from_bits(0x12)), (Forward, TcpFlags::ACK)];

    fn path(extra: &[(Direction, TcpFlags)]) -> Vec<(Direction, TcpFlags)> {
        let mut p = TO_ESTABLISHED.to_vec();
        p.extend_from_slice(extra);
        p
    }

    /// Every reachable phase with a packet path that reaches it.
    fn all_phases() -> Vec<(Phase, Vec<(Direction, TcpFlags)>)> {
        vec![
            (Phase::SynSent, vec![]),
            (Phase::SynRecv, TO_SYN_RECV.to_vec()),
            (Phase::Established, path(&[])),
            (Phase::FinWaitByClient, path(&[(Forward, F)])),
            (Phase::FinWaitByBackend, path(&[(Reply, F)])),
            (Phase::CloseWaitByClient, path(&[(Forward, F), (Reply, A)])),
            (Phase::CloseWaitByBackend, path(&[(Reply, F), (Forward, A)])),
            (Phase::LastAck, path(&[(Forward, F), (Reply, fin_ack())])),
            (
                Phase::TimeWait,
                path(&[(Forward, F), (Reply, fin_ack()), (Forward, A)]),
            ),
            (Phase::Close, vec![(Forward, R)]),
        ]
    }

    /// The state after `steps` and then one more packet, with the
    /// transition the table reported for it.
    fn step(steps: &[(Direction, TcpFlags)], dir: Direction, flags: TcpFlags) -> Transition {
        let (mut t, id) = driven(steps);
        let tr = t.on_packet(id, dir, flags, 1_000).expect("live");
        assert_eq!(t.lookup_forward(&tcp(1), 80).map(|f| f.state), Some(tr.to));
        assert_eq!(t.lookup_reply(&tcp(1), 7).map(|f| f.state), Some(tr.to));
        assert_consistent(&t);
        tr
    }

    fn next(steps: &[(Direction, TcpFlags)], dir: Direction, flags: TcpFlags) -> ConnState {
        step(steps, dir, flags).to
    }

    #[test]
    fn paths_reach_their_phases() {
        for (phase, steps) in all_phases() {
            let (t, id) = driven(&steps);
            assert_eq!(t.entries[id.0 as usize].phase, Some(phase));
        }
    }

    #[test]
    fn insert_starts_tcp_in_syn_sent_and_udp_in_udp() {
        let mut t = table(8);
        let a = t.insert(&tcp(1), 80, 7, 0).expect("room");
        let b = t.insert(&udp(1), 53, 7, 0).expect("room");
        assert_eq!(a.released, None);
        assert_eq!(t.status(a.id, 0).map(|s| s.state), Some(ConnState::SynSent));
        assert_eq!(t.status(b.id, 0).map(|s| s.state), Some(ConnState::Udp));
    }

    #[test]
    fn rst_either_way_closes_every_state() {
        for (phase, steps) in all_phases() {
            for dir in [Forward, Reply] {
                for flags in [R, R | A, R | S, R | F, R | S | F | A] {
                    let tr = step(&steps, dir, flags);
                    assert_eq!(tr.from, phase.state());
                    assert_eq!(tr.to, ConnState::Close, "{phase:?} {dir:?} {flags:?}");
                }
            }
        }
    }

    #[test]
    fn syn_sent_moves_only_on_reply_syn_ack() {
        use ConnState::*;
        assert_eq!(
            step(&[], Reply, syn_ack()),
            Transition {
                from: SynSent,
                to: SynRecv
            }
        );
        assert_eq!(next(&[], Forward, S), SynSent); // SYN retransmit
        assert_eq!(next(&[], Forward, syn_ack()), SynSent);
        assert_eq!(next(&[], Reply, S), SynSent);
        assert_eq!(next(&[], Reply, A), SynSent);
        assert_eq!(next(&[], Forward, A), SynSent);
        assert_eq!(next(&[], Forward, F), SynSent);
        assert_eq!(next(&[], Reply, F), SynSent);
        assert_eq!(next(&[], Forward, TcpFlags::NONE), SynSent);
    }

    #[test]
    fn syn_recv_moves_on_forward_ack() {
        use ConnState::*;
        assert_eq!(next(TO_SYN_RECV, Forward, A), Established);
        assert_eq!(next(TO_SYN_RECV, Reply, A), SynRecv);
        assert_eq!(next(TO_SYN_RECV, Reply, syn_ack()), SynRecv); // retransmit
        assert_eq!(next(TO_SYN_RECV, Forward, S), SynRecv);
        assert_eq!(next(TO_SYN_RECV, Forward, TcpFlags::NONE), SynRecv);
    }

    #[test]
    fn fin_from_either_side_starts_the_close() {
        use ConnState::*;
        for steps in [TO_SYN_RECV.to_vec(), path(&[])] {
            assert_eq!(next(&steps, Forward, F), FinWait);
            assert_eq!(next(&steps, Forward, fin_ack()), FinWait);
            assert_eq!(next(&steps, Reply, F), FinWait);
            assert_eq!(next(&steps, Reply, fin_ack()), FinWait);
        }
    }

    #[test]
    fn established_ignores_syn_and_data() {
        use ConnState::*;
        let est = path(&[]);
        for (dir, flags) in [
            (Forward, S),
            (Forward, syn_ack()),
            (Reply, syn_ack()),
            (Forward, A),
            (Reply, A),
            (Forward, TcpFlags::NONE),
            // SYN wins over FIN, and a SYN in ESTABLISHED is ignored.
            (Forward, S | F),
        ] {
            assert_eq!(next(&est, dir, flags), Established, "{dir:?} {flags:?}");
        }
    }

    #[test]
    fn fin_wait_remembers_who_sent_the_first_fin() {
        use ConnState::*;
        let by_client = path(&[(Forward, F)]);
        let by_backend = path(&[(Reply, F)]);
        // ACK from the other side: CLOSE_WAIT.
        assert_eq!(next(&by_client, Reply, A), CloseWait);
        assert_eq!(next(&by_backend, Forward, A), CloseWait);
        // ACK or a retransmitted FIN from the same side: no change.
        assert_eq!(next(&by_client, Forward, A), FinWait);
        assert_eq!(next(&by_client, Forward, F), FinWait);
        assert_eq!(next(&by_client, Forward, fin_ack()), FinWait);
        assert_eq!(next(&by_backend, Reply, A), FinWait);
        assert_eq!(next(&by_backend, Reply, F), FinWait);
        // FIN from the other side: LAST_ACK.
        assert_eq!(next(&by_client, Reply, F), LastAck);
        assert_eq!(next(&by_client, Reply, fin_ack()), LastAck);
        assert_eq!(next(&by_backend, Forward, F), LastAck);
        assert_eq!(next(&by_backend, Forward, fin_ack()), LastAck);
    }

    #[test]
    fn close_wait_ends_with_the_other_sides_fin() {
        use ConnState::*;
        let by_client = path(&[(Forward, F), (Reply, A)]);
        let by_backend = path(&[(Reply, F), (Forward, A)]);
        assert_eq!(next(&by_client, Reply, F), LastAck);
        assert_eq!(next(&by_backend, Forward, F), LastAck);
        // The first FIN's side retransmitting, or data: no change.
        assert_eq!(next(&by_client, Forward, F), CloseWait);
        assert_eq!(next(&by_backend, Reply, F), CloseWait);
        for steps in [&by_client, &by_backend] {
            assert_eq!(next(steps, Forward, A), CloseWait);
            assert_eq!(next(steps, Reply, A), CloseWait);
        }
    }

    #[test]
    fn last_ack_goes_to_time_wait_on_any_ack() {
        use ConnState::*;
        let last_ack = path(&[(Forward, F), (Reply, fin_ack())]);
        assert_eq!(next(&last_ack, Forward, A), TimeWait);
        assert_eq!(next(&last_ack, Reply, A), TimeWait);
        assert_eq!(next(&last_ack, Forward, F), LastAck);
        assert_eq!(next(&last_ack, Reply, TcpFlags::NONE), LastAck);
    }

    #[test]
    fn port_reuse_syn_restarts_time_wait_and_close() {
        use ConnState::*;
        let time_wait = path(&[(Forward, F), (Reply, fin_ack()), (Forward, A)]);
        let close = vec![(Forward, R)];
        for steps in [&time_wait, &close] {
            let from = next(steps, Forward, TcpFlags::NONE);
            assert_eq!(next(steps, Forward, S), SynSent);
            // Only a client's plain SYN reopens.
            assert_eq!(next(steps, Reply, S), from);
            assert_eq!(next(steps, Forward, syn_ack()), from);
            assert_eq!(next(steps, Reply, syn_ack()), from);
            assert_eq!(next(steps, Forward, A), from);
            assert_eq!(next(steps, Reply, F), from);
        }
        // The reopened connection goes through the handshake again.
        let mut again = time_wait.clone();
        again.extend_from_slice(&[(Forward, S), (Reply, syn_ack())]);
        assert_eq!(next(&again, Forward, A), Established);
    }

    #[test]
    fn udp_ignores_flags() {
        let mut t = table(8);
        let id = t.insert(&udp(1), 53, 7, 0).expect("room").id;
        for bits in 0..=u8::MAX {
            for dir in [Forward, Reply] {
                let tr = t.on_packet(id, dir, TcpFlags::from_bits(bits), 1);
                let udp = ConnState::Udp;
                assert_eq!(tr, Some(Transition { from: udp, to: udp }));
            }
        }
    }

    #[test]
    fn flags_round_trip() {
        assert_eq!(TcpFlags::from_bits(0x12), S | A);
        assert_eq!((S | A).bits(), 0x12);
        assert!((S | A).contains(S));
        assert!(!S.contains(S | A));
        assert!(S.contains(TcpFlags::NONE));
    }

    // ---- timeouts and expiry --------------------------------------------

    /// Each state's connection is due exactly `timeout` after its last
    /// packet, with the configured (not the default) timeouts.
    #[test]
    fn each_state_uses_its_configured_timeout() {
        let timeouts = distinct_timeouts();
        let mut states = all_phases();
        states.push((Phase::Udp, vec![]));
        for (phase, steps) in states {
            let state = phase.state();
            let mut t = ConnTable::new(&ConnTableConfig {
                timeouts,
                ..config(8)
            })
            .expect("valid");
            let c = if phase == Phase::Udp { udp(1) } else { tcp(1) };
            let id = t.insert(&c, 80, 7, 0).expect("room").id;
            let mut last = 0;
            for (n, &(dir, flags)) in steps.iter().enumerate() {
                last = 10 * (n as u64 + 1);
                t.on_packet(id, dir, flags, last).expect("live");
            }
            let timeout = timeouts.get(state).as_millis() as u64;
            let st = t.status(id, last).expect("live");
            assert_eq!((st.state, st.remaining), (state, timeouts.get(state)));
            let deadline = last + timeout;
            assert_eq!(t.expire(deadline - 1, usize::MAX, |_| {}), 0, "{state:?}");
            assert_eq!(
                t.status(id, deadline).map(|s| s.remaining),
                Some(Duration::ZERO)
            );
            let mut released = Vec::new();
            assert_eq!(t.expire(deadline, usize::MAX, |r| released.push(*r)), 1);
            assert_eq!(released[0].state, state);
            assert_eq!(released[0].reason, ReleaseReason::Expired);
            assert!(t.is_empty());
            assert_eq!(t.counters().expired, 1);
            assert_consistent(&t);
        }
    }

    /// A packet that keeps the state restarts the timer only when that
    /// moves the deadline by more than the refresh step, min(1 s,
    /// timeout / 16); and leaves the list order alone when it does not.
    #[test]
    fn same_state_packets_refresh_in_steps() {
        let mut t = table(8);
        let (a, b) = (udp(1), udp(2));
        let ia = t.insert(&a, 53, 1, 0).expect("room").id;
        t.insert(&b, 53, 2, 10).expect("room");
        // UDP: 300 s timeout, step 1 s. Within the step: no restart, and
        // `a` stays ahead of `b`.
        t.on_packet(ia, Forward, TcpFlags::NONE, 1_000)
            .expect("live");
        assert_eq!(
            t.status(ia, 1_000).map(|s| s.remaining),
            Some(Duration::from_secs(299))
        );
        let mut order = Vec::new();
        assert_eq!(t.expire(300_010, 10, |r| order.push(r.backend)), 2);
        assert_eq!(order, [1, 2]);
        // Past the step: restarted, and now behind `b`.
        let ia = t.insert(&a, 53, 1, 300_010).expect("room").id;
        let ib = t.insert(&b, 53, 2, 300_020).expect("room").id;
        t.on_packet(ia, Forward, TcpFlags::NONE, 301_011)
            .expect("live");
        assert_eq!(t.expire(600_020, 10, |_| {}), 1);
        assert!(t.status(ib, 600_020).is_none());
        assert_eq!(t.expire(601_010, 10, |_| {}), 0);
        assert_eq!(t.expire(601_011, 10, |_| {}), 1);
        // A short timeout has a short step: CLOSE (8 s here) moves on any
        // packet more than 500 ms later.
        let mut t = ConnTable::new(&ConnTableConfig {
            timeouts: distinct_timeouts(),
            ..config(8)
        })
        .expect("valid");
        let id = t.insert(&tcp(1), 80, 7, 0).expect("room").id;
        t.on_packet(id, Forward, TcpFlags::RST, 0).expect("live");
        t.on_packet(id, Forward, TcpFlags::RST, 500).expect("live");
        assert_eq!(t.expire(7_999, 10, |_| {}), 0);
        assert_eq!(t.expire(8_000, 10, |_| {}), 1);
        let id = t.insert(&tcp(1), 80, 7, 8_000).expect("room").id;
        t.on_packet(id, Forward, TcpFlags::RST, 8_000)
            .expect("live");
        t.on_packet(id, Forward, TcpFlags::RST, 8_501)
            .expect("live");
        assert_eq!(t.expire(16_500, 10, |_| {}), 0);
        assert_eq!(t.expire(16_501, 10, |_| {}), 1);
        assert_consistent(&t);
    }

    #[test]
    fn a_state_change_restarts_the_timer_with_the_new_timeout() {
        let mut t = ConnTable::new(&ConnTableConfig {
            timeouts: distinct_timeouts(),
            ..config(8)
        })
        .expect("valid");
        let id = t.insert(&tcp(1), 80, 7, 0).expect("room").id;
        t.on_packet(id, Reply, syn_ack(), 500).expect("live");
        // SYN_RECV: 2 s from 500 ms, not 1 s from 0.
        assert_eq!(t.expire(2_499, 10, |_| {}), 0);
        t.on_packet(id, Forward, A, 2_499).expect("live");
        // ESTABLISHED: 3 s from 2499 ms.
        assert_eq!(t.expire(5_498, 10, |_| {}), 0);
        assert_eq!(t.expire(5_499, 10, |_| {}), 1);
    }

    #[test]
    fn expire_goes_in_deadline_order_and_respects_the_budget() {
        let mut t = table(64);
        let ids: Vec<ConnId> = (0..10)
            .map(|n| t.insert(&udp(n), 53, n, n as u64).expect("room").id)
            .collect();
        // Refresh the first three (past the 1 s refresh step): they become
        // the last to expire.
        for (k, &id) in ids[..3].iter().enumerate() {
            t.on_packet(id, Forward, TcpFlags::NONE, 2_000 + k as u64)
                .expect("live");
        }
        let udp_ms = 300_000;
        let mut order = Vec::new();
        let now = udp_ms + 3_000;
        assert_eq!(t.expire(now, 4, |r| order.push(r.backend)), 4);
        assert_eq!(t.len(), 6);
        assert_eq!(t.expire(now, 0, |r| order.push(r.backend)), 0);
        assert_eq!(t.expire(now, 100, |r| order.push(r.backend)), 6);
        assert_eq!(order, [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]);
        assert!(t.is_empty());
        assert_consistent(&t);
    }

    #[test]
    fn expire_stops_at_the_first_entry_not_due() {
        let mut t = table(64);
        for n in 0..10 {
            t.insert(&udp(n), 53, n, u64::from(n) * 1_000)
                .expect("room");
        }
        let mut seen = Vec::new();
        // Due: those inserted at 0, 1000, 2000 s... up to 300_000 + 4_000.
        assert_eq!(t.expire(304_000, 100, |r| seen.push(r.backend)), 5);
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn expire_takes_due_connections_of_every_state() {
        let mut t = ConnTable::new(&ConnTableConfig {
            timeouts: distinct_timeouts(),
            ..config(64)
        })
        .expect("valid");
        let mut n = 0;
        for (_, steps) in all_phases() {
            n += 1;
            let id = t.insert(&tcp(n), 80, n, 0).expect("room").id;
            for &(dir, flags) in &steps {
                t.on_packet(id, dir, flags, 0).expect("live");
            }
        }
        t.insert(&udp(99), 53, 99, 0).expect("room");
        assert_eq!(t.len(), 11);
        let mut states = Vec::new();
        // Budget 1 per call: the rotating cursor must not starve any list.
        for _ in 0..20 {
            t.expire(9_000, 1, |r| states.push(r.state));
        }
        assert!(t.is_empty());
        states.sort();
        let mut want: Vec<_> = all_phases().iter().map(|(p, _)| p.state()).collect();
        want.push(ConnState::Udp);
        want.sort();
        assert_eq!(states, want);
    }

    #[test]
    fn a_late_packet_revives_a_due_connection() {
        let mut t = table(8);
        let c = udp(1);
        let id = t.insert(&c, 53, 7, 0).expect("room").id;
        let late = 300_000 + 5_000;
        // Due, but not reaped: still found, and a packet restarts its timer.
        let found = t.lookup_forward(&c, 53).expect("not reaped yet");
        assert_eq!(found.id, id);
        t.on_packet(id, Reply, TcpFlags::NONE, late).expect("live");
        assert_eq!(t.expire(late, 10, |_| {}), 0);
        assert_eq!(t.expire(late + 299_999, 10, |_| {}), 0);
        assert_eq!(t.expire(late + 300_000, 10, |_| {}), 1);
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut t = table(8);
        let id = t.insert(&udp(1), 53, 7, 100_000).expect("room").id;
        // An older `now` counts as the newest seen (100 s).
        t.on_packet(id, Forward, TcpFlags::NONE, 5).expect("live");
        assert_eq!(t.expire(50, 10, |_| {}), 0);
        assert_eq!(t.expire(399_999, 10, |_| {}), 0);
        assert_eq!(t.expire(400_000, 10, |_| {}), 1);
    }

    #[test]
    fn deadlines_survive_u32_wraparound() {
        let mut t = table(8);
        let start = u64::from(u32::MAX) - 1_000;
        let id = t.insert(&tcp(1), 80, 7, start).expect("room").id;
        t.on_packet(id, Reply, syn_ack(), start).expect("live");
        t.on_packet(id, Forward, A, start).expect("live");
        assert_eq!(t.expire(start + 899_999, 10, |_| {}), 0);
        let st = t.status(id, start + 899_000).expect("live");
        assert_eq!(st.remaining, Duration::from_millis(1_000));
        assert_eq!(t.expire(start + 900_000, 10, |_| {}), 1);
    }

    // ---- capacity policy ------------------------------------------------

    /// A table of capacity 4 with connections in the given phases, made at
    /// times 1, 2, 3, ...; returns their ids.
    fn full_table(phases: &[Phase]) -> (ConnTable, Vec<ConnId>) {
        let all = all_phases();
        let mut t = table(4);
        let mut ids = Vec::new();
        for (n, &phase) in phases.iter().enumerate() {
            let now = n as u64 + 1;
            let n = n as u32;
            if phase == Phase::Udp {
                ids.push(t.insert(&udp(n), 53, n, now).expect("room").id);
                continue;
            }
            let id = t.insert(&tcp(n), 80, n, now).expect("room").id;
            let steps = &all.iter().find(|(p, _)| *p == phase).expect("listed").1;
            for &(dir, flags) in steps {
                t.on_packet(id, dir, flags, now).expect("live");
            }
            ids.push(id);
        }
        assert_eq!(t.len(), t.capacity());
        (t, ids)
    }

    fn insert_new(t: &mut ConnTable, now: u64) -> Result<Inserted, Refused> {
        t.insert(&tcp(1_000), 80, 1_000, now)
    }

    #[test]
    fn established_and_closing_by_data_are_never_evicted() {
        use Phase::*;
        let (mut t, _) = full_table(&[
            Established,
            FinWaitByClient,
            CloseWaitByBackend,
            Established,
        ]);
        assert_eq!(insert_new(&mut t, 10), Err(Refused::TableFull));
        assert_eq!(t.insert(&udp(1_000), 53, 1, 10), Err(Refused::TableFull));
        let c = t.counters();
        assert_eq!(c.refused_full, 2);
        assert_eq!(c.evicted_total(), 0);
        assert_eq!(c.inserted, 4);
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup_forward(&tcp(1_000), 80), None);
        assert_consistent(&t);
        // Once one is due, it makes room (counted as expired).
        let est_ms = 900_000;
        let ins = insert_new(&mut t, est_ms + 1).expect("room after expiry");
        let r = ins.released.expect("released one");
        assert_eq!(
            (r.state, r.reason),
            (ConnState::Established, ReleaseReason::Expired)
        );
        assert_eq!(r.backend, 0);
        assert_eq!(t.counters().expired, 1);
        assert_consistent(&t);
    }

    #[test]
    fn a_due_connection_goes_before_a_closing_one() {
        use Phase::*;
        // The TIME_WAIT one (made at 2) is due at 120 002; the CLOSE one
        // (made at 3) at 10 003, and the SYN_SENT at 30 004.
        let (mut t, _) = full_table(&[Established, TimeWait, Close, SynSent]);
        let r = insert_new(&mut t, 10_003)
            .expect("room")
            .released
            .expect("one");
        assert_eq!(
            (r.state, r.reason),
            (ConnState::Close, ReleaseReason::Expired)
        );
        assert_eq!(t.counters().expired, 1);
        assert_eq!(t.counters().evicted_total(), 0);
    }

    #[test]
    fn closing_goes_before_embryonic_least_recent_first() {
        use Phase::*;
        let (mut t, _) = full_table(&[SynSent, TimeWait, LastAck, Close]);
        let mut states = Vec::new();
        for n in 0..3 {
            let ins = t.insert(&tcp(1_000 + n), 80, 1_000 + n, 10).expect("room");
            let r = ins.released.expect("full");
            assert_eq!(r.reason, ReleaseReason::Evicted(EvictReason::Closing));
            states.push(r.state);
        }
        // Least recently seen first, across the three closing lists.
        use ConnState as C;
        assert_eq!(states, [C::TimeWait, C::LastAck, C::Close]);
        assert_eq!(t.counters().evicted_for(EvictReason::Closing), 3);
        assert_eq!(t.counters().in_state(ConnState::SynSent), 4);
        assert_consistent(&t);
    }

    #[test]
    fn embryonic_and_udp_go_last_least_recent_first() {
        use Phase::*;
        let (mut t, ids) = full_table(&[Udp, Established, SynRecv, SynSent]);
        // Seen again past its refresh step (1 s for UDP's 300 s): the UDP
        // flow is now the most recent.
        t.on_packet(ids[0], Forward, TcpFlags::NONE, 1_005)
            .expect("live");
        let mut got = Vec::new();
        for n in 0..3 {
            let ins = t.insert(&tcp(1_000 + n), 80, 1_000 + n, 1_010 + u64::from(n));
            got.push(ins.expect("room").released.expect("full"));
        }
        let what: Vec<_> = got.iter().map(|r| (r.state, r.reason)).collect();
        let ev = ReleaseReason::Evicted;
        assert_eq!(
            what,
            [
                (ConnState::SynRecv, ev(EvictReason::Embryonic)),
                (ConnState::SynSent, ev(EvictReason::Embryonic)),
                (ConnState::Udp, ev(EvictReason::Udp)),
            ]
        );
        // The new SYN_SENT ones are now the only candidates: the oldest goes.
        let r = t.insert(&tcp(2_000), 80, 2_000, 1_020).expect("room");
        let r = r.released.expect("full");
        assert_eq!((r.backend, r.state), (1_000, ConnState::SynSent));
        let c = t.counters();
        assert_eq!(c.evicted_for(EvictReason::Embryonic), 3);
        assert_eq!(c.evicted_for(EvictReason::Udp), 1);
        assert_eq!(c.in_state(ConnState::Established), 1);
        assert_consistent(&t);
    }

    /// A connection opened mid-flow stays embryonic whatever the client
    /// sends, until the backend answers.
    #[test]
    fn a_mid_flow_connection_waits_for_the_backend() {
        let state = |t: &ConnTable, id| t.status(id, 0).expect("live").state;
        let mut t = table(8);
        let id = t
            .insert_as(Opening::MidFlow, &tcp(1), 80, 7, 0)
            .expect("room")
            .id;
        assert_eq!(state(&t, id), ConnState::SynRecv);
        for flags in [A, F | A, S, S | A, TcpFlags::NONE] {
            t.on_packet(id, Forward, flags, 0).expect("live");
            assert_eq!(state(&t, id), ConnState::SynRecv, "after {flags:?}");
        }
        t.on_packet(id, Reply, A, 0).expect("live");
        assert_eq!(state(&t, id), ConnState::Established);

        let id = t
            .insert_as(Opening::MidFlow, &tcp(2), 80, 7, 0)
            .expect("room")
            .id;
        t.on_packet(id, Reply, F | A, 0).expect("live");
        assert_eq!(state(&t, id), ConnState::FinWait);
        t.on_packet(id, Forward, F | A, 0).expect("live");
        assert_eq!(state(&t, id), ConnState::LastAck);

        let id = t
            .insert_as(Opening::MidFlow, &tcp(3), 80, 7, 0)
            .expect("room")
            .id;
        t.on_packet(id, Reply, R, 0).expect("live");
        assert_eq!(state(&t, id), ConnState::Close);

        let id = t
            .insert_as(Opening::MidFlow, &udp(4), 53, 7, 0)
            .expect("room")
            .id;
        assert_eq!(state(&t, id), ConnState::Udp);
        assert_consistent(&t);
    }

    /// Mid-flow connections are evicted like SYNs, never at the expense of
    /// established ones.
    #[test]
    fn an_ack_flood_cannot_evict_established_connections() {
        let mut t = table(4);
        let est = t.insert(&tcp(0), 80, 0, 0).expect("room").id;
        t.on_packet(est, Reply, syn_ack(), 0).expect("live");
        t.on_packet(est, Forward, A, 0).expect("live");
        for n in 1..100 {
            let ins = t
                .insert_as(Opening::MidFlow, &tcp(n), 80, n, u64::from(n))
                .expect("room");
            if let Some(r) = ins.released {
                assert_eq!(r.reason, ReleaseReason::Evicted(EvictReason::Embryonic));
            }
        }
        let found = t.lookup_forward(&tcp(0), 80).expect("established kept");
        assert_eq!(found.id, est);
        assert_consistent(&t);
    }

    #[test]
    fn a_syn_flood_cannot_evict_established_connections() {
        let mut t = table(64);
        let mut est = Vec::new();
        for n in 0..32 {
            let id = t.insert(&tcp(n), 80, n, 0).expect("room").id;
            t.on_packet(id, Reply, syn_ack(), 0).expect("live");
            t.on_packet(id, Forward, A, 0).expect("live");
            est.push(tcp(n));
        }
        for n in 0..10_000 {
            let c = tcp(100 + n);
            let ins = t.insert(&c, 80, n, 1 + u64::from(n) / 10).expect("room");
            if let Some(r) = ins.released {
                assert_eq!(r.state, ConnState::SynSent);
            }
        }
        for c in &est {
            let f = t.lookup_forward(c, 80).expect("kept");
            assert_eq!(f.state, ConnState::Established);
        }
        assert_eq!(t.len(), 64);
        assert_consistent(&t);
    }

    // ---- keys -----------------------------------------------------------

    #[test]
    fn exists_and_reply_key_taken() {
        let mut t = table(8);
        let c = tcp(1);
        let first = t.insert(&c, 80, 7, 0).expect("room").id;
        assert_eq!(t.insert(&c, 80, 8, 0), Err(Refused::Exists(first)));
        assert_eq!(t.insert(&c, 443, 7, 0), Err(Refused::ReplyKeyTaken(first)));
        assert_eq!(t.counters().refused_reply_key, 1);
        // Another backend, another protocol or another port: distinct keys.
        let second = t.insert(&c, 443, 8, 0).expect("room").id;
        t.insert(&udp(1), 80, 7, 0).expect("room");
        let other_port = ClientEndpoint { port: 1, ..c };
        t.insert(&other_port, 80, 7, 0).expect("room");
        assert_eq!(t.lookup_forward(&c, 80).map(|f| f.id), Some(first));
        assert_eq!(t.lookup_forward(&c, 443).map(|f| f.id), Some(second));
        assert_eq!(t.lookup_reply(&c, 7).map(|f| f.id), Some(first));
        assert_eq!(t.lookup_reply(&c, 8).map(|f| f.id), Some(second));
        assert_eq!(t.len(), 4);
        assert_consistent(&t);
    }

    #[test]
    fn a_due_reply_key_holder_is_reaped_not_refused() {
        let mut t = table(8);
        let c = tcp(1);
        let old = t.insert(&c, 80, 7, 0).expect("room").id;
        assert_eq!(
            t.insert(&c, 443, 7, 29_999),
            Err(Refused::ReplyKeyTaken(old))
        );
        let ins = t.insert(&c, 443, 7, 30_000).expect("holder was due");
        let r = ins.released.expect("holder released");
        assert_eq!((r.service, r.reason), (80, ReleaseReason::Expired));
        assert_eq!(t.lookup_forward(&c, 80), None);
        assert_eq!(t.lookup_reply(&c, 7).map(|f| f.service), Some(443));
        let cnt = t.counters();
        assert_eq!((cnt.expired, cnt.refused_reply_key, cnt.live), (1, 1, 1));
        assert_consistent(&t);
    }

    #[test]
    fn ipv6_clients_are_distinct_from_ipv4() {
        let mut t = table(8);
        let v6 = ClientEndpoint {
            addr: Addr16::from_v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port: 40_001,
            proto: L4Proto::Tcp,
        };
        let a = t.insert(&v6, 80, 7, 0).expect("room").id;
        let b = t.insert(&tcp(1), 80, 7, 0).expect("room").id;
        assert_ne!(a, b);
        assert_eq!(t.lookup_reply(&v6, 7).map(|f| f.id), Some(a));
        assert_eq!(t.status(a, 0).map(|s| s.client), Some(v6));
    }

    // ---- remove, status, counters ---------------------------------------

    #[test]
    fn remove_releases_once() {
        let mut t = table(8);
        let c = tcp(1);
        let id = t.insert(&c, 80, 7, 0).expect("room").id;
        let r = t.remove(id).expect("live");
        assert_eq!(
            r,
            Released {
                client: c,
                service: 80,
                backend: 7,
                state: ConnState::SynSent,
                reason: ReleaseReason::Removed
            }
        );
        assert_eq!(t.remove(id), None);
        assert_eq!(t.remove(ConnId(1_000)), None);
        assert_eq!(t.on_packet(id, Forward, A, 1), None);
        assert_eq!(t.on_packet(ConnId(u32::MAX), Forward, A, 1), None);
        assert_eq!(t.status(id, 0), None);
        assert_eq!(t.lookup_forward(&c, 80), None);
        assert_eq!(t.lookup_reply(&c, 7), None);
        assert_eq!(t.expire(u64::MAX / 2, 10, |_| {}), 0);
        assert_eq!(t.counters().removed, 1);
        assert!(t.is_empty());
        // The key can be used again.
        t.insert(&c, 80, 7, 0).expect("room");
        assert_consistent(&t);
    }

    #[test]
    fn iter_and_status_show_every_connection() {
        let mut t = table(8);
        let a = t.insert(&tcp(1), 80, 7, 1_000).expect("room").id;
        let b = t.insert(&udp(2), 53, 8, 2_000).expect("room").id;
        let c = t.insert(&tcp(3), 80, 9, 2_000).expect("room").id;
        t.remove(c).expect("live");
        let mut all: Vec<ConnStatus> = t.iter(11_000).collect();
        all.sort_by_key(|s| s.id.raw());
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            ConnStatus {
                id: a,
                client: tcp(1),
                service: 80,
                backend: 7,
                state: ConnState::SynSent,
                remaining: Duration::from_secs(20),
            }
        );
        assert_eq!(all[1].id, b);
        assert_eq!(all[1].state, ConnState::Udp);
        assert_eq!(all[1].remaining, Duration::from_secs(291));
        // Past the deadline: zero, not negative.
        assert_eq!(
            t.status(a, 60_000).map(|s| s.remaining),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn counters_follow_the_table() {
        let mut t = table(8);
        let id = t.insert(&tcp(1), 80, 7, 0).expect("room").id;
        t.insert(&udp(1), 53, 7, 0).expect("room");
        assert!(t.lookup_forward(&tcp(1), 80).is_some());
        assert!(t.lookup_reply(&tcp(1), 7).is_some());
        assert!(t.lookup_forward(&tcp(1), 81).is_none());
        t.on_packet(id, Reply, syn_ack(), 1).expect("live");
        let c = t.counters();
        assert_eq!((c.lookup_hit, c.lookup_miss), (2, 1));
        assert_eq!((c.live, c.inserted), (2, 2));
        assert_eq!(c.in_state(ConnState::SynRecv), 1);
        assert_eq!(c.in_state(ConnState::SynSent), 0);
        assert_eq!(c.in_state(ConnState::Udp), 1);
        assert_eq!(c.by_state.iter().sum::<u64>(), c.live);
    }

    #[test]
    fn names() {
        let names: Vec<_> = ConnState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names[0], "SYN_SENT");
        assert_eq!(names[8], "UDP");
        assert!(ConnState::SynRecv.is_embryonic());
        assert!(!ConnState::Established.is_embryonic());
        for (k, s) in ConnState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, k);
        }
        assert_eq!(EvictReason::of(ConnState::LastAck), EvictReason::Closing);
        assert_eq!(EvictReason::Udp.name(), "udp");
    }

    // ---- index ----------------------------------------------------------

    /// Backward-shift deletion on a hand-made cluster that wraps around the
    /// end of the slot array.
    #[test]
    fn index_backward_shift_across_the_wrap() {
        // 16 slots. Entry i's homes: 14, 14, 15, 14, 1 (the cluster wraps
        // to slots 0, 1, 2).
        let mut ix = Index::new(8);
        let hashes: [u64; 5] = [14, 14 + 16, 15, 14 + 32, 1];
        let hash_of = |i: u32| hashes[i as usize] | (u64::from(i) << 40);
        for i in 0..5 {
            ix.put(hash_of(i), i);
        }
        let at = |ix: &Index, pos: usize| match ix.slots[pos] {
            0 => None,
            s => Some(s & ix.entry_mask),
        };
        let layout = |ix: &Index| [14, 15, 0, 1, 2].map(|p| at(ix, p));
        assert_eq!(layout(&ix), [Some(0), Some(1), Some(2), Some(3), Some(4)]);
        ix.remove(hash_of(1), 1, hash_of);
        // 2 (home 15) and 3 (home 14) move back; 4 (home 1) moves to 1.
        assert_eq!(layout(&ix), [Some(0), Some(2), Some(3), Some(4), None]);
        ix.remove(hash_of(0), 0, hash_of);
        // 2 cannot move before its home (15); 3 can; 4 is at its home.
        assert_eq!(layout(&ix), [Some(3), Some(2), None, Some(4), None]);
        ix.remove(hash_of(2), 2, hash_of);
        assert_eq!(layout(&ix), [Some(3), None, None, Some(4), None]);
        // Removing a missing entry changes nothing.
        ix.remove(hash_of(2), 2, hash_of);
        assert_eq!(layout(&ix), [Some(3), None, None, Some(4), None]);
        assert_eq!(ix.slots.iter().filter(|&&s| s != 0).count(), 2);
    }

    #[test]
    fn index_stays_intact_through_churn() {
        let mut t = table(1 << 10);
        let mut rng = 0x1234_5678_u64;
        let mut live: Vec<(ClientEndpoint, ConnId)> = Vec::new();
        for round in 0..20_000u32 {
            rng = splitmix64(rng);
            let fill = live.len() < t.capacity() && (!rng.is_multiple_of(3) || live.len() < 100);
            if fill {
                let c = tcp(round % 100_000);
                let c = ClientEndpoint {
                    port: (rng >> 16) as u16,
                    ..c
                };
                if let Ok(ins) = t.insert(&c, 80, round, 0) {
                    assert_eq!(ins.released, None);
                    live.push((c, ins.id));
                }
            } else {
                let k = (rng >> 32) as usize % live.len();
                let (c, id) = live.swap_remove(k);
                assert_eq!(t.remove(id).map(|r| r.client), Some(c));
            }
            if round % 2_000 == 0 {
                assert_consistent(&t);
            }
        }
        assert_consistent(&t);
        assert_eq!(t.len(), live.len());
        for (c, id) in &live {
            assert_eq!(t.lookup_forward(c, 80).map(|f| f.id), Some(*id));
        }
    }

    #[test]
    fn probe_lengths_stay_short_when_full() {
        let mut t = table(1 << 16);
        for n in 0..(1u32 << 16) {
            // Sequential addresses and ports: the worst case for a weak hash.
            let c = ClientEndpoint {
                addr: Addr16::from_v4(Ipv4Addr::from(0xc612_0000 | (n >> 4))),
                port: 1024 + (n & 15) as u16,
                proto: L4Proto::Tcp,
            };
            t.insert(&c, 1, n & 3, 0).expect("room");
        }
        for ix in [&t.forward, &t.reply] {
            let (mut total, mut max) = (0usize, 0usize);
            for (pos, &slot) in ix.slots.iter().enumerate() {
                if slot == 0 {
                    continue;
                }
                let e = &t.entries[(slot & ix.entry_mask) as usize];
                let side = if std::ptr::eq(ix, &t.forward) {
                    Side::Forward
                } else {
                    Side::Reply
                };
                let home = ix.home(t.hasher.hash_entry(e, side));
                let d = pos.wrapping_sub(home) & ix.mask;
                total += d;
                max = max.max(d);
            }
            let mean = total as f64 / f64::from(1u32 << 16);
            // Linear probing at load 1/2 averages 0.5 displacement.
            assert!(mean < 1.0, "mean displacement {mean}");
            assert!(max < 64, "max displacement {max}");
        }
    }

    proptest! {
        /// Structured keys (one field varying) spread evenly over both the
        /// home bits and the tag bits, for any seed.
        #[test]
        fn hash_spreads_structured_keys(seed in any::<u64>(), shape in 0u8..4) {
            let h = KeyHasher::new(seed);
            const N: u32 = 4096;
            let (mut low, mut high) = ([0u32; 64], [0u32; 64]);
            for n in 0..N {
                let (c, peer) = match shape {
                    0 => (tcp(n), 1),
                    1 => (ClientEndpoint { port: n as u16, ..tcp(0) }, 1),
                    2 => (tcp(0), n),
                    _ => {
                        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (n >> 8) as u16, n as u16);
                        let addr = Addr16::from_v6(a);
                        (ClientEndpoint { addr, port: 443, proto: L4Proto::Udp }, 1)
                    }
                };
                let x = h.hash(&c, peer);
                low[(x & 63) as usize] += 1;
                high[((x >> 32) & 63) as usize] += 1;
            }
            // Mean 64, standard deviation about 8 (bounds: 6 of them);
            // chi-squared with 63 degrees of freedom has mean 63, standard
            // deviation about 11.
            for counts in [&low, &high] {
                let chi2: f64 = counts
                    .iter()
                    .map(|&c| (f64::from(c) - 64.0).powi(2) / 64.0)
                    .sum();
                prop_assert!(chi2 < 140.0, "shape {shape}: chi2 {chi2} {counts:?}");
                let spread = counts.iter().all(|c| (16..=120).contains(c));
                prop_assert!(spread, "shape {shape}: {counts:?}");
            }
        }
    }

    // ---- model-based property test --------------------------------------

    const MODEL_CAPACITY: usize = 8;

    fn model_timeouts() -> Timeouts {
        let ms = Duration::from_millis;
        Timeouts {
            syn_sent: ms(30),
            syn_recv: ms(40),
            established: ms(500),
            fin_wait: ms(120),
            close_wait: ms(60),
            last_ack: ms(30),
            time_wait: ms(120),
            close: ms(10),
            udp: ms(300),
        }
    }

    /// The state table of the module documentation, written independently:
    /// (state, side of the first FIN).
    fn model_next(
        (state, fin_by): (ConnState, Option<Direction>),
        dir: Direction,
        flags: TcpFlags,
    ) -> (ConnState, Option<Direction>) {
        use ConnState::*;
        let has = |f| flags.contains(f);
        let other = fin_by.is_some_and(|x| x != dir);
        let to = if state == Udp {
            None
        } else if has(R) {
            Some((Close, None))
        } else if has(S) {
            match state {
                TimeWait | Close if dir == Forward && !has(A) => Some((SynSent, None)),
                SynSent if dir == Reply && has(A) => Some((SynRecv, None)),
                _ => None,
            }
        } else if has(F) {
            match state {
                SynRecv | Established => Some((FinWait, Some(dir))),
                FinWait | CloseWait if other => Some((LastAck, None)),
                _ => None,
            }
        } else if has(A) {
            match state {
                SynRecv if dir == Forward => Some((Established, None)),
                FinWait if other => Some((CloseWait, fin_by)),
                LastAck => Some((TimeWait, None)),
                _ => None,
            }
        } else {
            None
        };
        to.unwrap_or((state, fin_by))
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    struct ModelKey {
        client: u8,
        udp: bool,
        service: u32,
    }

    impl ModelKey {
        fn endpoint(self) -> ClientEndpoint {
            model_endpoint(self.client, self.udp)
        }
    }

    fn model_endpoint(client: u8, udp: bool) -> ClientEndpoint {
        ClientEndpoint {
            addr: Addr16::from_v4(Ipv4Addr::new(198, 18, 0, client / 2)),
            port: 1_000 + u16::from(client % 2),
            proto: if udp { L4Proto::Udp } else { L4Proto::Tcp },
        }
    }

    #[derive(Debug, Clone, Copy)]
    struct ModelConn {
        id: ConnId,
        backend: u32,
        state: (ConnState, Option<Direction>),
        last_seen: u64,
    }

    #[derive(Debug, Default)]
    struct Model {
        conns: HashMap<ModelKey, ModelConn>,
        now: u64,
    }

    impl Model {
        fn due(&self, c: &ModelConn) -> bool {
            let timeout = model_timeouts().get(c.state.0).as_millis() as u64;
            c.last_seen + timeout <= self.now
        }

        fn sorted_keys(&self) -> Vec<ModelKey> {
            let mut keys: Vec<_> = self.conns.keys().copied().collect();
            keys.sort();
            keys
        }

        fn reply_holder(&self, client: u8, udp: bool, backend: u32) -> Option<ModelKey> {
            let mut holders = self
                .conns
                .iter()
                .filter(|(k, c)| k.client == client && k.udp == udp && c.backend == backend);
            let found = holders.next().map(|(k, _)| *k);
            assert!(
                holders.next().is_none(),
                "model: two holders of a reply key"
            );
            found
        }

        fn key_of(&self, r: &Released) -> ModelKey {
            let key = self.conns.iter().find(|(k, c)| {
                k.endpoint() == r.client && k.service == r.service && c.backend == r.backend
            });
            key.map(|(k, _)| *k)
                .expect("released connection is in the model")
        }

        /// Checks `r` against the model and takes it out.
        fn release(&mut self, r: &Released) -> ModelConn {
            let key = self.key_of(r);
            let c = self.conns.remove(&key).expect("just found");
            assert_eq!(r.state, c.state.0);
            c
        }

        /// Checks that evicting `r` follows the capacity policy.
        fn check_victim(&self, r: &Released) {
            let c = self.conns[&self.key_of(r)];
            let any_due = self.conns.values().any(|c| self.due(c));
            let closing = |s: ConnState| {
                matches!(
                    s,
                    ConnState::Close | ConnState::TimeWait | ConnState::LastAck
                )
            };
            let fresh = |s: ConnState| s.is_embryonic() || s == ConnState::Udp;
            let oldest = |f: &dyn Fn(ConnState) -> bool| {
                self.conns
                    .values()
                    .filter(|c| f(c.state.0))
                    .map(|c| c.last_seen)
                    .min()
            };
            match r.reason {
                ReleaseReason::Expired => assert!(self.due(&c)),
                ReleaseReason::Evicted(why) => {
                    assert!(!any_due, "evicted while a connection was due");
                    assert_eq!(why, EvictReason::of(c.state.0));
                    let class: &dyn Fn(ConnState) -> bool = if closing(c.state.0) {
                        &closing
                    } else {
                        assert!(oldest(&closing).is_none(), "evicted fresh before closing");
                        assert!(fresh(c.state.0), "evicted {:?}", c.state.0);
                        &fresh
                    };
                    assert_eq!(Some(c.last_seen), oldest(class), "not least recent");
                }
                ReleaseReason::Removed => panic!("insert reported a removal"),
            }
        }

        /// A full table may refuse only if nothing may go.
        fn check_refusal(&self) {
            assert_eq!(self.conns.len(), MODEL_CAPACITY);
            for c in self.conns.values() {
                assert!(!self.due(c), "refused while {c:?} was due");
                let keep = [
                    ConnState::Established,
                    ConnState::FinWait,
                    ConnState::CloseWait,
                ];
                assert!(keep.contains(&c.state.0), "refused while {c:?} could go");
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            client: u8,
            udp: bool,
            service: u32,
            backend: u32,
            dt: i32,
        },
        LookupForward {
            client: u8,
            udp: bool,
            service: u32,
        },
        LookupReply {
            client: u8,
            udp: bool,
            backend: u32,
        },
        Packet {
            pick: usize,
            reply: bool,
            flags: u8,
            dt: i32,
        },
        Remove {
            pick: usize,
        },
        Expire {
            budget: usize,
            dt: i32,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let client = 0u8..6;
        // Mostly small steps (so full tables of live closing connections
        // happen), sometimes a jump past every timeout, sometimes back.
        let dt = prop_oneof![8 => 0i32..10, 1 => 0i32..600, 1 => -20i32..0];
        // None, FIN, SYN, RST, ACK, FIN+ACK, SYN+ACK, RST+ACK.
        let flags = prop::sample::select(vec![0x00, 0x01, 0x02, 0x04, 0x10, 0x11, 0x12, 0x14]);
        prop_oneof![
            3 => (client.clone(), any::<bool>(), 0u32..3, 0u32..3, dt.clone()).prop_map(
                |(client, udp, service, backend, dt)| {
                    Op::Insert { client, udp, service, backend, dt }
                }
            ),
            1 => (client.clone(), any::<bool>(), 0u32..3)
                .prop_map(|(client, udp, service)| Op::LookupForward { client, udp, service }),
            1 => (client, any::<bool>(), 0u32..3)
                .prop_map(|(client, udp, backend)| Op::LookupReply { client, udp, backend }),
            5 => (any::<usize>(), any::<bool>(), flags, dt.clone())
                .prop_map(|(pick, reply, flags, dt)| Op::Packet { pick, reply, flags, dt }),
            1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            2 => (0usize..4, dt).prop_map(|(budget, dt)| Op::Expire { budget, dt }),
        ]
    }

    fn run_op(t: &mut ConnTable, m: &mut Model, op: &Op) {
        let step = |m: &mut Model, dt: i32| {
            let now = m.now.saturating_add_signed(i64::from(dt));
            m.now = m.now.max(now);
            now
        };
        match *op {
            Op::Insert {
                client,
                udp,
                service,
                backend,
                dt,
            } => {
                let now = step(m, dt);
                model_insert(
                    t,
                    m,
                    ModelKey {
                        client,
                        udp,
                        service,
                    },
                    backend,
                    now,
                );
            }
            Op::LookupForward {
                client,
                udp,
                service,
            } => {
                let key = ModelKey {
                    client,
                    udp,
                    service,
                };
                let got = t.lookup_forward(&key.endpoint(), service);
                let want = m
                    .conns
                    .get(&key)
                    .map(|c| (c.id, service, c.backend, c.state.0));
                assert_eq!(got.map(|f| (f.id, f.service, f.backend, f.state)), want);
            }
            Op::LookupReply {
                client,
                udp,
                backend,
            } => {
                let got = t.lookup_reply(&model_endpoint(client, udp), backend);
                let want = m
                    .reply_holder(client, udp, backend)
                    .map(|k| (m.conns[&k].id, k.service));
                assert_eq!(got.map(|f| (f.id, f.service)), want);
            }
            Op::Packet {
                pick,
                reply,
                flags,
                dt,
            } => {
                let keys = m.sorted_keys();
                let Some(key) = keys.get(pick % keys.len().max(1)) else {
                    return;
                };
                let now = step(m, dt);
                let dir = if reply { Reply } else { Forward };
                let c = m.conns.get_mut(key).expect("picked from the model");
                let flags = TcpFlags::from_bits(flags);
                let tr = t
                    .on_packet(c.id, dir, flags, now)
                    .expect("live in the model");
                let to = model_next(c.state, dir, flags);
                assert_eq!(
                    tr,
                    Transition {
                        from: c.state.0,
                        to: to.0
                    }
                );
                // The refresh step: a same-state packet within it leaves
                // the timer (and the LRU position) alone.
                let timeout = model_timeouts().get(to.0).as_millis() as u64;
                let refresh = (timeout / 16).min(1_000);
                if to.0 != c.state.0 || m.now - c.last_seen > refresh {
                    c.last_seen = m.now;
                }
                c.state = to;
            }
            Op::Remove { pick } => {
                let keys = m.sorted_keys();
                let Some(key) = keys.get(pick % keys.len().max(1)) else {
                    return;
                };
                let id = m.conns[key].id;
                let r = t.remove(id).expect("live in the model");
                assert_eq!(r.reason, ReleaseReason::Removed);
                assert_eq!(m.release(&r).id, id);
                assert_eq!(t.remove(id), None);
            }
            Op::Expire { budget, dt } => {
                let now = step(m, dt);
                let mut released = Vec::new();
                let n = t.expire(now, budget, |r| released.push(*r));
                assert_eq!(n, released.len());
                assert!(n <= budget);
                for r in &released {
                    assert_eq!(r.reason, ReleaseReason::Expired);
                    let c = m.release(r);
                    assert!(m.due(&c), "expired early: {c:?}");
                }
                if n < budget {
                    assert!(!m.conns.values().any(|c| m.due(c)), "left a due connection");
                }
            }
        }
    }

    fn model_insert(t: &mut ConnTable, m: &mut Model, key: ModelKey, backend: u32, now: u64) {
        let got = t.insert(&key.endpoint(), key.service, backend, now);
        if let Some(c) = m.conns.get(&key) {
            assert_eq!(got, Err(Refused::Exists(c.id)));
            return;
        }
        let holder = m
            .reply_holder(key.client, key.udp, backend)
            .map(|k| m.conns[&k]);
        if let Some(h) = holder.filter(|h| !m.due(h)) {
            assert_eq!(got, Err(Refused::ReplyKeyTaken(h.id)));
            return;
        }
        let full = m.conns.len() == MODEL_CAPACITY;
        let ins = match got {
            Err(Refused::TableFull) if holder.is_none() && full => return m.check_refusal(),
            Err(e) => panic!("refused: {e:?}"),
            Ok(ins) => ins,
        };
        match (holder, ins.released) {
            (Some(h), Some(r)) => {
                assert_eq!(r.reason, ReleaseReason::Expired);
                assert_eq!(m.release(&r).id, h.id);
            }
            (None, Some(r)) => {
                assert!(full, "released {r:?} with room left");
                m.check_victim(&r);
                m.release(&r);
            }
            (None, None) => assert!(!full, "inserted into a full table"),
            (Some(h), None) => panic!("due holder {h:?} not released"),
        }
        let state = if key.udp {
            ConnState::Udp
        } else {
            ConnState::SynSent
        };
        let conn = ModelConn {
            id: ins.id,
            backend,
            state: (state, None),
            last_seen: m.now,
        };
        m.conns.insert(key, conn);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any sequence of operations agrees with a plain map: lookups,
        /// transitions, releases, length and per-state counts.
        #[test]
        fn agrees_with_a_model(ops in prop::collection::vec(op(), 1..300)) {
            let mut t = ConnTable::new(&ConnTableConfig {
                capacity: MODEL_CAPACITY,
                timeouts: model_timeouts(),
                hash_seed: 42,
            }).expect("valid");
            let mut m = Model::default();
            for op in &ops {
                run_op(&mut t, &mut m, op);
                prop_assert_eq!(t.len(), m.conns.len());
                let c = t.counters();
                for state in ConnState::ALL {
                    let n = m.conns.values().filter(|c| c.state.0 == state).count();
                    prop_assert_eq!(c.in_state(state), n as u64);
                }
                assert_consistent(&t);
            }
            for (k, c) in &m.conns {
                let found = t.lookup_forward(&k.endpoint(), k.service);
                prop_assert_eq!(found.map(|f| f.id), Some(c.id));
            }
        }
    }
}
