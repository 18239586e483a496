//! AF_PACKET packet I/O: [`AfPacket`], one worker's sockets.
//!
//! Owns, per (worker, interface): one `AF_PACKET`/`SOCK_RAW` socket bound to
//! the interface with protocol `ETH_P_ALL`, its RX ring (an `mmap`ed area of
//! `block_count` blocks of `block_size` bytes, laid out as TPACKET_V3 or
//! TPACKET_V2, [`RingVersion`]), its socket filter, and its membership in
//! the interface's fanout group. It must not touch the interface itself
//! (links, offloads, addresses, qdiscs): that is the daemon's job. This is
//! the only module of the crate with `unsafe`; every `unsafe` block states
//! why it is sound.
//!
//! # Receive
//! The kernel hands the ring to user space one *slot* at a time, each with
//! a status word: with TPACKET_V3 a slot is a block of many frames, handed
//! over when full or older than the block retire timeout; with TPACKET_V2 a
//! slot is one fixed-size frame, handed over as soon as it is written.
//! `poll_batch` waits in poll(2) over the worker's sockets (unless a slot
//! is already waiting), then walks the slots the kernel has handed over, in
//! ring order: at most one ring's worth of blocks (V3) or [`RX_BATCH`]
//! frames (V2) per socket and poll, so the worker gets back to its snapshot
//! swaps and expiry between batches. Each frame becomes an [`RxMeta`]
//! (`ifindex` of the socket's interface, `wire_len` = `tp_len`,
//! `csum_not_ready` = `TP_STATUS_CSUMNOTREADY`) and a mutable slice of
//! `tp_snaplen` bytes inside the ring, which the handler rewrites in place.
//!
//! V3 packs frames densely and wakes the worker once per block; V2 spends a
//! whole `frame_size` slot per frame and the kernel signals the socket per
//! frame (which only costs a wake-up while the worker sleeps in poll(2)).
//! V3's price is latency at low rates: a frame waits up to the block
//! timeout (at least 1 ms) in a block that does not fill.
//!
//! # RX coalescing (V2)
//! With `rx_coalesce` > 0 ([`AfPacketConfig::rx_coalesce`]) a V2 worker
//! moderates its own wake-ups as a NIC's interrupt moderation (`ethtool -C
//! rx-usecs`) does: when a poll handed frames over and the ring is now
//! empty, the next `poll_batch` first sleeps `rx_coalesce` (clock_nanosleep,
//! with the thread's timer slack lowered to [`COALESCE_TIMER_SLACK`]) so
//! that frames arriving meanwhile are taken in one batch, then takes what
//! came or, if nothing did, blocks in poll(2) as before. The first frame
//! after an idle poll is taken at once; a frame that arrives while the
//! worker sleeps waits at most the bound (plus the timer's wake-up
//! latency); under load the ring never runs empty and nothing sleeps. While
//! it sleeps, the kernel finds no waiter on the socket and wakes nobody.
//! Off by default: on the lab VM (bench/README.md, "RX ring", coalescing)
//! a timer wake-up costs more than the poll(2) wake-ups it replaces, so
//! 25-100 µs bounds raised CPU per packet at 200 kpps (1.18-1.32x V3's,
//! plain V2 1.13x) and added 2-41 µs at the median at 20 kpps. It may pay
//! where timers are cheap (bare metal) and arrivals sparse; measure first.
//!
//! The socket filter (SO_ATTACH_FILTER, [`socket_filter_program`]) runs in
//! the kernel before a frame is copied into the ring and
//! - drops frames the interface *sent* (`PACKET_OUTGOING`, loaded with the
//!   `SKF_AD_PKTTYPE` ancillary load): the kernel's own transmissions are not
//!   dataplane input (the walker skips any that still show up);
//! - drops frames that carried an 802.1Q/802.1ad tag: the kernel strips the
//!   tag before packet sockets see the frame, so such a frame would reach
//!   the handler looking untagged, on the wrong network (the walker skips
//!   any that still show up with `TP_STATUS_VLAN_VALID`). A VLAN is served
//!   by opening its VLAN interface, where frames arrive untagged;
//! - caps the copy at `frame_size - FRAME_HEADROOM` bytes ("snap length").
//!
//! TPACKET_V3 packs frames of any size into a block, so the snap length is
//! what makes the frame size a bound (V2 would cut a frame at its slot end
//! too, a little later): a frame longer than it (a GRO/LRO or TSO
//! super-frame up to 64 KiB) is delivered truncated, with `wire_len`
//! showing its real length, and counted in `rx_truncated`; the pipeline
//! drops it. The daemon turns GRO/LRO off on the links it serves.
//!
//! Kernel ring drops (`tp_drops`) are read with PACKET_STATISTICS when a
//! slot handed over carries `TP_STATUS_LOSING`, every [`STATS_EVERY_POLLS`]
//! polls, and on [`AfPacket::refresh_stats`]; they add to `rx_ring_drops`.
//!
//! # Transmit
//! Frames with a `Tx` verdict are sent straight out of the RX ring with
//! sendmmsg(2): one `iovec` per frame pointing into the ring slot, one
//! `sendmmsg` per target socket per poll (or when [`TX_BATCH`] frames are
//! queued), and the slots go back to the kernel only after that. Chosen
//! over a TX ring because the frame is already in memory the kernel can
//! read: the kernel copies it once into a fresh skb, the same single copy a
//! TX ring costs (user space copies RX ring -> TX ring, the kernel then
//! sends without copying), without a second ring to size, map and keep in
//! step. The socket has PACKET_QDISC_BYPASS set: frames go to the driver
//! directly, skipping the qdisc and packet taps (tcpdump on the interface
//! does not see them). A frame goes out of the worker's socket bound to the
//! target `ifindex`; a target without a socket, a length beyond the frame,
//! or a kernel refusal counts in `tx_errors`. ENOBUFS/EAGAIN are retried up
//! to `tx_retries` times per batch, then the rest of the batch is counted
//! as errors. [`PacketIo::send`] sends worker-built frames the same way.
//!
//! # Fanout
//! Every worker's socket on one interface joins one fanout group of type
//! PACKET_FANOUT_CBPF (no DEFRAG, no ROLLOVER flag: rollover would break
//! flow affinity). The kernel runs [`fanout_program`] on each frame and
//! delivers it to socket `result % members`. The program hashes the client
//! endpoint, so both directions of a DNAT flow reach the same worker; see
//! its doc for what it reads. A group is tied to one device in the kernel,
//! so interface `i` of [`AfPacketConfig::interfaces`] joins group
//! `fanout_group + i`; all workers must list the interfaces in the same
//! order. The program belongs to the group: [`AfPacket::set_vips`] or a
//! [`FanoutHandle`] replaces it for all members when the VIP set changes.
//!
//! Sockets start with a drop-everything filter and get their real filter
//! only after joining the group, so no frame is delivered to every worker
//! in the window between bind(2) and joining.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{IoCounters, PacketIo, RxMeta, Verdict};

/// Bytes of a ring frame slot used before the Ethernet header: the
/// `tpacket3_hdr`, the `sockaddr_ll` after it, and the alignment the kernel
/// adds so the network header lands on a 16-byte boundary (V2's
/// `tpacket2_hdr` needs 80; both versions use this one snap length).
pub const FRAME_HEADROOM: u32 = 96;

/// Frames of a TPACKET_V2 ring handed to the handler per socket and poll
/// at most (they stay held until the poll's transmissions are flushed).
pub const RX_BATCH: usize = 256;

/// Frames queued for transmission on one socket before a `sendmmsg` is
/// issued even though the poll is not over (the kernel caps one `sendmmsg`
/// at 1024 messages).
pub const TX_BATCH: usize = 512;

/// Polls between two reads of PACKET_STATISTICS when no slot reported
/// losses.
pub const STATS_EVERY_POLLS: u32 = 256;

/// Default number of immediate retries of a batch refused with
/// ENOBUFS/EAGAIN.
pub const DEFAULT_TX_RETRIES: u32 = 4;

/// Largest `rx_coalesce`: beyond it a V3 ring does the same job with fewer
/// wake-ups.
pub const MAX_RX_COALESCE: Duration = Duration::from_millis(1);

/// Timer slack a worker thread sets for itself before its first coalescing
/// sleep (the kernel's default of 50 µs would add up to that much to every
/// sleep of a few tens of µs).
pub const COALESCE_TIMER_SLACK: Duration = Duration::from_micros(1);

/// One interface a worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel interface index, also the `ifindex` of [`RxMeta`] and `Tx`.
    pub ifindex: u32,
    /// Interface name, for error messages; when not empty, `open` checks
    /// that it still names `ifindex`.
    pub name: String,
    /// Further unicast MACs the link must accept for this socket (VRRP
    /// virtual MACs), added with `PACKET_MR_UNICAST` memberships that end
    /// with the socket.
    pub extra_macs: Vec<[u8; 6]>,
}

/// Layout of the RX ring, as set with PACKET_VERSION. Measured in
/// bench/README.md ("RX ring"): V2 adds ~0.1 ms at the median instead of
/// V3's ~0.7 ms at 20 kpps, and costs ~15% more CPU per packet at 200 kpps
/// (a wake-up per frame while the worker idles), so V3 stays the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RingVersion {
    /// TPACKET_V2: fixed `frame_size` slots, each handed to user space as
    /// soon as the kernel has written it (per-frame `tp_status`). No
    /// batching delay; a frame takes a whole slot.
    V2,
    /// TPACKET_V3: frames packed into blocks, a block handed over when full
    /// or after `block_timeout`, which delays frames at low rates.
    #[default]
    V3,
}

impl RingVersion {
    fn socket_option(self) -> libc::c_int {
        let version = match self {
            RingVersion::V2 => libc::tpacket_versions::TPACKET_V2,
            RingVersion::V3 => libc::tpacket_versions::TPACKET_V3,
        };
        version as libc::c_int
    }

    fn name(self) -> &'static str {
        match self {
            RingVersion::V2 => "TPACKET_V2",
            RingVersion::V3 => "TPACKET_V3",
        }
    }
}

/// Geometry of one RX ring. A TPACKET_V2 ring of this geometry holds
/// [`RingConfig::frame_count`] frame slots in the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block; a multiple of the page size. A TPACKET_V3 ring is
    /// handed to user space a block at a time; a V2 ring places
    /// `block_size / frame_size` frame slots in each block.
    pub block_size: u32,
    /// Blocks per ring; the ring is `block_size * block_count` bytes.
    pub block_count: u32,
    /// Largest frame slot, a multiple of 16: frames longer than
    /// `frame_size - FRAME_HEADROOM` bytes are truncated (`rx_truncated`).
    pub frame_size: u32,
    /// TPACKET_V3: a block that is not full is retired to user space after
    /// this long (millisecond resolution, at least 1 ms): the latency bound
    /// at low rates. Unused by V2.
    pub block_timeout: Duration,
}

impl Default for RingConfig {
    /// 32 blocks of 128 KiB (4 MiB per ring), 2048-byte frames (snap length
    /// 1952: a 1514-byte frame with a VLAN tag fits), 2 ms retire timeout.
    fn default() -> RingConfig {
        RingConfig {
            block_size: 128 * 1024,
            block_count: 32,
            frame_size: 2048,
            block_timeout: Duration::from_millis(2),
        }
    }
}

impl RingConfig {
    /// Bytes of a frame copied into the ring at most.
    pub fn snap_len(&self) -> u32 {
        self.frame_size.saturating_sub(FRAME_HEADROOM)
    }

    /// Frame slots of a TPACKET_V2 ring: `block_size / frame_size` per
    /// block (a block's tail shorter than a frame stays unused).
    pub fn frame_count(&self) -> Option<u32> {
        let per_block = self.block_size.checked_div(self.frame_size)?;
        per_block.checked_mul(self.block_count)
    }

    fn ring_bytes(&self) -> Option<usize> {
        usize::try_from(self.block_size)
            .ok()?
            .checked_mul(usize::try_from(self.block_count).ok()?)
    }

    fn timeout_ms(&self) -> u32 {
        u32::try_from(self.block_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    fn check(&self, version: RingVersion, page_size: usize) -> io::Result<()> {
        let page = u32::try_from(page_size).unwrap_or(4096);
        let problem = if self.block_size == 0 || !self.block_size.is_multiple_of(page) {
            format!(
                "block_size {} is not a multiple of the page size {page}",
                self.block_size
            )
        } else if !self.frame_size.is_multiple_of(16) || self.frame_size < FRAME_HEADROOM + 64 {
            format!(
                "frame_size {} must be a multiple of 16 and at least {}",
                self.frame_size,
                FRAME_HEADROOM + 64
            )
        } else if self.frame_size > self.block_size {
            format!(
                "frame_size {} exceeds block_size {}",
                self.frame_size, self.block_size
            )
        } else if self.block_count == 0 || self.ring_bytes().is_none() {
            format!("block_count {} is not usable", self.block_count)
        } else if version == RingVersion::V2 && self.frame_count().is_none() {
            format!(
                "{} blocks of {} frames exceed 2^32 frame slots; use fewer or larger frames",
                self.block_count,
                self.block_size / self.frame_size
            )
        } else {
            return Ok(());
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("AF_PACKET {} ring: {problem}", version.name()),
        ))
    }
}

/// What one worker's [`AfPacket`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Interfaces to open one socket on each, in the same order in every
    /// worker.
    pub interfaces: Vec<Interface>,
    /// Fanout group id of the first interface; interface `i` joins group
    /// `fanout_group + i` (wrapping). Unique in the network namespace.
    pub fanout_group: u16,
    /// VIPs the fanout program treats as "destination is the service".
    pub vips: Vec<IpAddr>,
    /// RX ring geometry, the same for every socket.
    pub ring: RingConfig,
    /// RX ring layout, the same for every socket.
    pub rx_ring: RingVersion,
    /// TPACKET_V2 only: after a poll that handed frames over and left the
    /// ring empty, let frames gather this long before taking the next
    /// batch (see "RX coalescing" in the module doc). Zero: off. At most
    /// [`MAX_RX_COALESCE`].
    pub rx_coalesce: Duration,
    /// Immediate retries of a transmit batch refused with ENOBUFS/EAGAIN.
    pub tx_retries: u32,
}

impl AfPacketConfig {
    /// A configuration with the default ring and retry count.
    pub fn new(interfaces: Vec<Interface>, fanout_group: u16, vips: Vec<IpAddr>) -> AfPacketConfig {
        AfPacketConfig {
            interfaces,
            fanout_group,
            vips,
            ring: RingConfig::default(),
            rx_ring: RingVersion::default(),
            rx_coalesce: Duration::ZERO,
            tx_retries: DEFAULT_TX_RETRIES,
        }
    }
}

/// One worker's AF_PACKET sockets, one per interface.
pub struct AfPacket {
    ports: Vec<Port>,
    /// `ifindex` of each port, for the `Tx` target look-up.
    ifindexes: Vec<u32>,
    /// Transmit queue of each port, parallel to `ports`.
    tx: Vec<TxBatch>,
    pollfds: Vec<libc::pollfd>,
    counters: IoCounters,
    tx_retries: u32,
    next_port: usize,
    polls_since_stats: u32,
    stats_due: bool,
    /// `rx_coalesce` (zero with V3).
    coalesce: Duration,
    /// Frames the last poll handed over.
    last_handed: usize,
    /// The calling thread's timer slack was lowered for coalescing.
    slack_set: bool,
}

// SAFETY: an `AfPacket` exclusively owns its sockets and ring mappings; the
// raw pointers it holds point into those mappings (or, during `send`, into
// the caller's frames) and are only dereferenced by the thread that calls
// its `&mut self` methods. Moving it to a worker thread moves all of that.
unsafe impl Send for AfPacket {}

impl std::fmt::Debug for AfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacket")
            .field("ifindexes", &self.ifindexes)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// A socket, its interface and its RX ring.
struct Port {
    /// Declared before `fd`: unmapped first.
    ring: Ring,
    fd: OwnedFd,
    ifindex: u32,
    name: String,
}

impl AfPacket {
    /// Open one socket per configured interface, with ring, filters and
    /// fanout membership. Needs CAP_NET_RAW.
    pub fn open(config: &AfPacketConfig) -> io::Result<AfPacket> {
        if config.interfaces.is_empty() {
            return Err(invalid("AF_PACKET: no interface to open"));
        }
        config.ring.check(config.rx_ring, page_size())?;
        check_coalesce(config.rx_ring, config.rx_coalesce)?;
        let fanout = checked_program(fanout_program(&config.vips))?;
        let mut ports = Vec::with_capacity(config.interfaces.len());
        for (i, iface) in config.interfaces.iter().enumerate() {
            let group = config.fanout_group.wrapping_add(i as u16);
            ports.push(open_port(iface, config, group, &fanout)?);
        }
        let ifindexes = ports.iter().map(|p| p.ifindex).collect();
        let tx = ports
            .iter()
            .map(|p| TxBatch::new(p.fd.as_raw_fd()))
            .collect();
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(AfPacket {
            ports,
            ifindexes,
            tx,
            pollfds,
            counters: IoCounters::default(),
            tx_retries: config.tx_retries,
            next_port: 0,
            polls_since_stats: 0,
            stats_due: false,
            coalesce: config.rx_coalesce,
            last_handed: 0,
            slack_set: false,
        })
    }

    /// Replace the fanout program of every group this worker belongs to
    /// (the program is per group, so one worker doing this is enough).
    pub fn set_vips(&self, vips: &[IpAddr]) -> io::Result<()> {
        let program = checked_program(fanout_program(vips))?;
        for port in &self.ports {
            set_fanout_program(port.fd.as_raw_fd(), &program).map_err(|e| {
                port_error(
                    "setsockopt(PACKET_FANOUT_DATA)",
                    &port.name,
                    port.ifindex,
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// A handle the control plane keeps to replace the fanout program from
    /// another thread (it holds duplicates of this worker's sockets).
    pub fn fanout_handle(&self) -> io::Result<FanoutHandle> {
        let mut sockets = Vec::with_capacity(self.ports.len());
        for port in &self.ports {
            sockets.push((port.fd.try_clone()?, port.name.clone(), port.ifindex));
        }
        Ok(FanoutHandle { sockets })
    }

    /// Read PACKET_STATISTICS of every socket now and add the ring drops to
    /// the counters (the kernel resets its counts on each read).
    pub fn refresh_stats(&mut self) -> io::Result<()> {
        self.polls_since_stats = 0;
        self.stats_due = false;
        for port in &self.ports {
            self.counters.rx_ring_drops += u64::from(ring_drops(port.fd.as_raw_fd())?);
        }
        Ok(())
    }

    /// Interface indexes served, in configuration order.
    pub fn ifindexes(&self) -> &[u32] {
        &self.ifindexes
    }

    fn any_slot_ready(&self) -> bool {
        self.ports.iter().any(|p| p.ring.next_ready())
    }

    /// Let frames gather for the coalescing delay the last poll calls for
    /// (none after an idle poll or with coalescing off), at most `timeout`.
    fn coalesce(&mut self, timeout: Duration) {
        let delay = coalesce_delay(self.last_handed, self.coalesce).min(timeout);
        if delay.is_zero() {
            return;
        }
        if !self.slack_set {
            self.slack_set = true;
            // Best effort: with the default slack the sleeps only get longer.
            let _ = set_timer_slack(COALESCE_TIMER_SLACK);
        }
        sleep_monotonic(delay);
    }

    /// Wait in poll(2) until a socket is readable or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
        for pfd in &mut self.pollfds {
            pfd.revents = 0;
        }
        let nfds = self.pollfds.len() as libc::nfds_t;
        // SAFETY: `pollfds` is a live, exclusively borrowed array of `nfds`
        // pollfd structs; poll(2) writes only their `revents`.
        let ready = unsafe { libc::poll(self.pollfds.as_mut_ptr(), nfds, ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        for pfd in &self.pollfds {
            if pfd.revents & libc::POLLERR != 0 {
                // The socket reports ENETDOWN when its link goes down; the
                // daemon follows link state through netlink. Reading
                // SO_ERROR clears it so poll(2) does not spin.
                let _ = take_socket_error(pfd.fd);
            }
        }
        Ok(())
    }

    /// Hand the frames of up to one batch of slots of port `p` to
    /// `handler`; the slots stay held until `release_slots`.
    fn drain_port(
        &mut self,
        p: usize,
        handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    ) -> usize {
        let AfPacket {
            ports,
            ifindexes,
            tx,
            counters,
            tx_retries,
            stats_due,
            ..
        } = self;
        let port = &mut ports[p];
        let mut outbox = Outbox {
            ifindexes,
            tx,
            counters,
            retries: *tx_retries,
        };
        drain_ring(
            &mut port.ring,
            port.ifindex,
            handler,
            &mut outbox,
            stats_due,
        )
    }

    fn flush_tx(&mut self) {
        for batch in &mut self.tx {
            batch.flush(self.tx_retries, &mut self.counters);
        }
    }

    fn release_slots(&mut self) {
        for port in &mut self.ports {
            port.ring.release_held();
        }
    }

    fn maybe_read_stats(&mut self) {
        self.polls_since_stats += 1;
        if self.stats_due || self.polls_since_stats >= STATS_EVERY_POLLS {
            // A failed read leaves the drops for the next one; the kernel
            // keeps counting.
            let _ = self.refresh_stats();
        }
    }
}

/// How long to let frames gather before looking at an empty ring again,
/// after a poll that handed `handed` frames over, with coalescing bound
/// `bound`: nothing after an idle poll (the next frame is taken as soon as
/// it arrives), `bound` after a poll that found frames (more are likely on
/// the way).
pub fn coalesce_delay(handed: usize, bound: Duration) -> Duration {
    if handed == 0 {
        Duration::ZERO
    } else {
        bound
    }
}

fn check_coalesce(version: RingVersion, coalesce: Duration) -> io::Result<()> {
    if coalesce > MAX_RX_COALESCE {
        return Err(invalid(&format!(
            "AF_PACKET: rx_coalesce {coalesce:?} exceeds {MAX_RX_COALESCE:?}"
        )));
    }
    if version == RingVersion::V3 && !coalesce.is_zero() {
        return Err(invalid(
            "AF_PACKET: rx_coalesce applies to the TPACKET_V2 ring only",
        ));
    }
    Ok(())
}

/// Set the calling thread's timer slack (PR_SET_TIMERSLACK).
fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(slack.as_nanos()).unwrap_or(libc::c_ulong::MAX);
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the
    // calling thread's timer slack.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, zero, zero, zero) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sleep `delay` on CLOCK_MONOTONIC; a signal ends the sleep early.
fn sleep_monotonic(delay: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(delay.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: delay.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec for the call; a null remainder
    // pointer is allowed. The result (0, or EINTR on a signal) needs no
    // handling: an early wake-up only shortens the coalescing delay.
    unsafe {
        libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut());
    }
}

/// Where a walk puts `Tx` verdicts and counts.
struct Outbox<'a> {
    ifindexes: &'a [u32],
    tx: &'a mut [TxBatch],
    counters: &'a mut IoCounters,
    retries: u32,
}

impl Outbox<'_> {
    /// Queue `len` bytes at `frame` for `ifindex`; the bytes must stay valid
    /// until the next flush.
    fn queue(&mut self, ifindex: u32, frame: *mut u8, len: usize) {
        match self.ifindexes.iter().position(|&i| i == ifindex) {
            Some(q) => self.tx[q].push(frame, len, self.retries, self.counters),
            None => self.counters.tx_errors += 1,
        }
    }
}

/// Take up to one batch of ready slots of `ring` and hand their frames to
/// `handler`; returns how many were handed. Sets `stats_due` when the
/// kernel marked a slot `TP_STATUS_LOSING`.
fn drain_ring(
    ring: &mut Ring,
    ifindex: u32,
    handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    outbox: &mut Outbox<'_>,
    stats_due: &mut bool,
) -> usize {
    let version = ring.layout.version;
    let mut handed = 0;
    for _ in 0..ring.layout.batch() {
        let Some((status, mut slot)) = ring.take_ready() else {
            break;
        };
        *stats_due |= status & libc::TP_STATUS_LOSING != 0;
        handed += match version {
            RingVersion::V3 => walk_block(&mut slot, ifindex, handler, outbox),
            RingVersion::V2 => walk_frame(&mut slot, ifindex, handler, outbox),
        };
    }
    handed
}

/// Hand each frame of TPACKET_V3 `block` to `handler`; returns how many
/// were handed.
fn walk_block(
    block: &mut Slot<'_>,
    ifindex: u32,
    handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    outbox: &mut Outbox<'_>,
) -> usize {
    let count = block.frame_count();
    let mut at = block.first_frame();
    let mut handed = 0;
    for walked in 0..count {
        let hdr = at.and_then(|here| Some((here, block.frame_header(here)?)));
        let Some((here, hdr)) = hdr.filter(|(_, h)| block.holds(h.data_at, h.snap_len)) else {
            // A layout that breaks the TPACKET_V3 ABI: count the rest of
            // the block as lost rather than guess.
            outbox.counters.rx_ring_drops += u64::from(count - walked);
            break;
        };
        at = hdr.next.and_then(|next| here.checked_add(next));
        handed += usize::from(hand_frame(block, &hdr, ifindex, handler, outbox));
    }
    handed
}

/// Hand the frame of TPACKET_V2 frame slot `slot` to `handler`; returns 1
/// if it was handed.
fn walk_frame(
    slot: &mut Slot<'_>,
    ifindex: u32,
    handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    outbox: &mut Outbox<'_>,
) -> usize {
    match slot.v2_header() {
        Some(hdr) if slot.holds(hdr.data_at, hdr.snap_len) => {
            usize::from(hand_frame(slot, &hdr, ifindex, handler, outbox))
        }
        _ => {
            // A header that breaks the TPACKET_V2 ABI: the frame is lost.
            outbox.counters.rx_ring_drops += 1;
            0
        }
    }
}

/// Hand the frame `hdr` describes to `handler` and queue its `Tx` verdict;
/// false for frames that are not dataplane input (see the module doc).
fn hand_frame(
    slot: &mut Slot<'_>,
    hdr: &FrameHeader,
    ifindex: u32,
    handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    outbox: &mut Outbox<'_>,
) -> bool {
    if hdr.pkttype == libc::PACKET_OUTGOING || hdr.status & libc::TP_STATUS_VLAN_VALID != 0 {
        return false;
    }
    let Some(frame) = slot.frame_mut(hdr.data_at, hdr.snap_len) else {
        return false;
    };
    let meta = RxMeta {
        ifindex,
        wire_len: hdr.wire_len,
        csum_not_ready: hdr.status & libc::TP_STATUS_CSUMNOTREADY != 0,
    };
    outbox.counters.rx_frames += 1;
    if (hdr.snap_len as u64) < u64::from(hdr.wire_len) {
        outbox.counters.rx_truncated += 1;
    }
    if let Verdict::Tx { ifindex: out, len } = handler(&meta, frame) {
        if len <= frame.len() {
            outbox.queue(out, frame.as_mut_ptr(), len);
        } else {
            outbox.counters.tx_errors += 1;
        }
    }
    true
}

impl PacketIo for AfPacket {
    fn poll_batch(
        &mut self,
        timeout: Duration,
        handler: &mut dyn FnMut(&RxMeta, &mut [u8]) -> Verdict,
    ) -> io::Result<usize> {
        if !self.any_slot_ready() {
            self.coalesce(timeout);
            if !self.any_slot_ready() {
                self.wait(timeout)?;
            }
        }
        let n = self.ports.len();
        let mut handed = 0;
        for k in 0..n {
            handed += self.drain_port((self.next_port + k) % n, handler);
        }
        self.next_port = (self.next_port + 1) % n;
        // Every queued iovec points into a held slot: send, then release.
        self.flush_tx();
        self.release_slots();
        self.maybe_read_stats();
        self.last_handed = handed;
        Ok(handed)
    }

    fn send(&mut self, frames: &[(u32, &[u8])]) -> io::Result<()> {
        let AfPacket {
            ifindexes,
            tx,
            counters,
            tx_retries,
            ..
        } = self;
        let mut outbox = Outbox {
            ifindexes,
            tx,
            counters,
            retries: *tx_retries,
        };
        for &(ifindex, bytes) in frames {
            outbox.queue(ifindex, bytes.as_ptr().cast_mut(), bytes.len());
        }
        // The queued iovecs point into `frames`: they must be sent before
        // this call returns.
        self.flush_tx();
        Ok(())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

/// Duplicates of one worker's sockets, for replacing the fanout program of
/// its groups from the control plane.
#[derive(Debug)]
pub struct FanoutHandle {
    sockets: Vec<(OwnedFd, String, u32)>,
}

impl FanoutHandle {
    /// Install the fanout program for `vips` on every group.
    pub fn set_vips(&self, vips: &[IpAddr]) -> io::Result<()> {
        let program = checked_program(fanout_program(vips))?;
        for (fd, name, ifindex) in &self.sockets {
            set_fanout_program(fd.as_raw_fd(), &program)
                .map_err(|e| port_error("setsockopt(PACKET_FANOUT_DATA)", name, *ifindex, e))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Socket set-up

fn open_port(
    iface: &Interface,
    config: &AfPacketConfig,
    group: u16,
    fanout: &[libc::sock_filter],
) -> io::Result<Port> {
    let err = |step: &str, e: io::Error| port_error(step, &iface.name, iface.ifindex, e);
    check_name(iface)?;
    let ifindex = libc::c_int::try_from(iface.ifindex).map_err(|_| {
        invalid(&format!(
            "AF_PACKET: ifindex {} out of range",
            iface.ifindex
        ))
    })?;
    let fd = packet_socket().map_err(|e| err("socket(AF_PACKET)", e))?;
    let raw = fd.as_raw_fd();
    attach_filter(raw, &drop_all_program()).map_err(|e| err("setsockopt(SO_ATTACH_FILTER)", e))?;
    let version = config.rx_ring;
    set_opt(
        raw,
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        &version.socket_option(),
    )
    .map_err(|e| {
        err(
            &format!("setsockopt(PACKET_VERSION, {})", version.name()),
            e,
        )
    })?;
    let ring = Ring::map(raw, &config.ring, version).map_err(|e| err("RX ring set-up", e))?;
    let bypass: libc::c_int = 1;
    set_opt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &bypass)
        .map_err(|e| err("setsockopt(PACKET_QDISC_BYPASS)", e))?;
    bind_to(raw, ifindex).map_err(|e| err("bind", e))?;
    for mac in &iface.extra_macs {
        add_unicast_membership(raw, ifindex, mac)
            .map_err(|e| err("setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_UNICAST)", e))?;
    }
    let fanout_arg = u32::from(group) | (libc::PACKET_FANOUT_CBPF << 16);
    set_opt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &fanout_arg).map_err(|e| {
        err(&format!("setsockopt(PACKET_FANOUT) joining group {group} (in use on another device or with another type?)"), e)
    })?;
    set_fanout_program(raw, fanout).map_err(|e| err("setsockopt(PACKET_FANOUT_DATA)", e))?;
    attach_filter(raw, &socket_filter_program(ring.snap_len))
        .map_err(|e| err("setsockopt(SO_ATTACH_FILTER)", e))?;
    Ok(Port {
        ring: ring.ring,
        fd,
        ifindex: iface.ifindex,
        name: iface.name.clone(),
    })
}

fn check_name(iface: &Interface) -> io::Result<()> {
    if iface.name.is_empty() {
        return Ok(());
    }
    let name = CString::new(iface.name.as_str()).map_err(|_| {
        invalid(&format!(
            "AF_PACKET: interface name {:?} contains NUL",
            iface.name
        ))
    })?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let found = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if found != iface.ifindex {
        return Err(invalid(&format!(
            "AF_PACKET: interface {} has ifindex {found} (0 = absent), configured {}",
            iface.name, iface.ifindex
        )));
    }
    Ok(())
}

fn packet_socket() -> io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until bind(2) names ETH_P_ALL,
    // after the filter and the ring are in place.
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_to(fd: RawFd, ifindex: libc::c_int) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex;
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes for the call.
    let rc = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_opt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to `len` readable bytes for the duration of the
    // call; the kernel copies them.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the link accept frames to `mac` (its unicast filter, as a
/// macvlan would) for as long as the socket lives.
fn add_unicast_membership(fd: RawFd, ifindex: libc::c_int, mac: &[u8; 6]) -> io::Result<()> {
    let mut mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_UNICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: [0; 8],
    };
    mreq.mr_address[..6].copy_from_slice(mac);
    set_opt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

fn attach_filter(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = fprog(program);
    set_opt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

fn set_fanout_program(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = fprog(program);
    set_opt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
}

/// A `sock_fprog` borrowing `program`; the kernel only reads through it.
/// Callers pass programs checked to fit in `u16` instructions.
fn fprog(program: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_ptr().cast_mut(),
    }
}

fn checked_program(program: Vec<libc::sock_filter>) -> io::Result<Vec<libc::sock_filter>> {
    let limit = libc::BPF_MAXINSNS as usize;
    if program.len() > limit {
        return Err(invalid(&format!(
            "AF_PACKET fanout: too many VIPs, program has {} instructions (kernel limit {limit})",
            program.len()
        )));
    }
    Ok(program)
}

fn ring_drops(fd: RawFd) -> io::Result<u32> {
    let mut stats = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes and `len` is a valid
    // in/out length for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.tp_drops)
}

fn take_socket_error(fd: RawFd) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// An error naming the step and interface; EPERM names the capability.
fn port_error(step: &str, name: &str, ifindex: u32, err: io::Error) -> io::Error {
    let hint = if err.raw_os_error() == Some(libc::EPERM) {
        " (AF_PACKET sockets need CAP_NET_RAW)"
    } else {
        ""
    };
    io::Error::new(
        err.kind(),
        format!("AF_PACKET {step} on {name} (ifindex {ifindex}): {err}{hint}"),
    )
}

// ---------------------------------------------------------------------------
// The RX ring: TPACKET_V3 blocks or TPACKET_V2 frames

// Offsets inside a block descriptor (`tpacket_block_desc` with its
// `tpacket_hdr_v1`), checked against the libc definitions at compile time.
const BLOCK_HDR: usize = 8;
const BLOCK_STATUS: usize = BLOCK_HDR;
const BLOCK_NUM_PKTS: usize = BLOCK_HDR + 4;
const BLOCK_FIRST_PKT: usize = BLOCK_HDR + 8;
const _: () = assert!(offset_of!(libc::tpacket_block_desc, hdr) == BLOCK_HDR);
const _: () = assert!(offset_of!(libc::tpacket_hdr_v1, block_status) == 0);
const _: () = assert!(offset_of!(libc::tpacket_hdr_v1, num_pkts) == 4);
const _: () = assert!(offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt) == 8);

// Offsets inside a `tpacket3_hdr`, and of the `sockaddr_ll` after it.
const PKT_NEXT: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
const PKT_SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
const PKT_LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
const PKT_STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
const PKT_MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
const PKT_SLL: usize = tpacket_align(size_of::<libc::tpacket3_hdr>());
const PKT_PKTTYPE: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_pkttype);

// Offsets inside a `tpacket2_hdr` (at the start of its frame slot), and of
// the `sockaddr_ll` after it.
const V2_STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
const V2_LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
const V2_SNAPLEN: usize = offset_of!(libc::tpacket2_hdr, tp_snaplen);
const V2_MAC: usize = offset_of!(libc::tpacket2_hdr, tp_mac);
const V2_SLL: usize = tpacket_align(size_of::<libc::tpacket2_hdr>());
const V2_PKTTYPE: usize = V2_SLL + offset_of!(libc::sockaddr_ll, sll_pkttype);
const _: () = assert!(V2_STATUS == 0 && V2_LEN == 4 && V2_SNAPLEN == 8 && V2_MAC == 12);
const _: () = assert!(V2_SLL == 32 && V2_PKTTYPE == 42);
const _: () = assert!(libc::TPACKET2_HDRLEN <= FRAME_HEADROOM as usize);

/// `TPACKET_ALIGN` of if_packet.h.
const fn tpacket_align(len: usize) -> usize {
    (len + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// Where the slots of a ring lie. A slot is what the kernel hands to user
/// space with one status word: a block (TPACKET_V3, one slot per block) or
/// a frame (TPACKET_V2, `block_size / frame_size` slots per block, none
/// crossing a block boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    version: RingVersion,
    block_size: usize,
    slot_size: usize,
    slots_per_block: usize,
    slot_count: usize,
    /// Offset of the status word in a slot.
    status_at: usize,
}

impl Layout {
    /// The layout of a ring `config` passed [`RingConfig::check`] for.
    fn of(config: &RingConfig, version: RingVersion) -> Layout {
        let block_size = config.block_size as usize;
        let block_count = config.block_count as usize;
        match version {
            RingVersion::V3 => Layout {
                version,
                block_size,
                slot_size: block_size,
                slots_per_block: 1,
                slot_count: block_count,
                status_at: BLOCK_STATUS,
            },
            RingVersion::V2 => {
                let slots_per_block = block_size / config.frame_size as usize;
                Layout {
                    version,
                    block_size,
                    slot_size: config.frame_size as usize,
                    slots_per_block,
                    slot_count: slots_per_block * block_count,
                    status_at: V2_STATUS,
                }
            }
        }
    }

    /// Offset of slot `index` (< `slot_count`) from the ring start; the slot
    /// ends at most at `block_size * block_count`.
    fn slot_at(&self, index: usize) -> usize {
        let (block, slot) = (index / self.slots_per_block, index % self.slots_per_block);
        block * self.block_size + slot * self.slot_size
    }

    /// Slots handed to the handler per poll at most.
    fn batch(&self) -> usize {
        match self.version {
            RingVersion::V3 => self.slot_count,
            RingVersion::V2 => self.slot_count.min(RX_BATCH),
        }
    }
}

/// A mapped RX ring and the walk position in it.
struct Ring {
    base: NonNull<u8>,
    len: usize,
    layout: Layout,
    /// Next slot to look at.
    next: usize,
    /// Slots taken from the kernel and not yet given back; they precede
    /// `next`.
    held: usize,
}

/// A ring just mapped, with the snap length its filter should use.
struct MappedRing {
    ring: Ring,
    snap_len: u32,
}

impl Ring {
    /// Ask the kernel for an RX ring of `version` (already set with
    /// PACKET_VERSION) on `fd` and map it.
    fn map(fd: RawFd, config: &RingConfig, version: RingVersion) -> io::Result<MappedRing> {
        let frames_per_block = config.block_size / config.frame_size;
        let req = libc::tpacket_req3 {
            tp_block_size: config.block_size,
            tp_block_nr: config.block_count,
            tp_frame_size: config.frame_size,
            tp_frame_nr: frames_per_block.saturating_mul(config.block_count),
            tp_retire_blk_tov: config.timeout_ms(),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        match version {
            RingVersion::V3 => set_opt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?,
            RingVersion::V2 => {
                let req = libc::tpacket_req {
                    tp_block_size: req.tp_block_size,
                    tp_block_nr: req.tp_block_nr,
                    tp_frame_size: req.tp_frame_size,
                    tp_frame_nr: req.tp_frame_nr,
                };
                set_opt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
            }
        }
        let len = config
            .ring_bytes()
            .ok_or_else(|| invalid("AF_PACKET ring too large"))?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: maps `len` bytes of the socket's ring, which the kernel
        // just allocated with exactly this size; no existing memory is
        // affected.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| invalid("mmap returned NULL"))?;
        Ok(MappedRing {
            ring: Ring::over(base, len, Layout::of(config, version)),
            snap_len: config.snap_len(),
        })
    }

    /// A ring over the mapping `base..base + len`, which it unmaps on drop;
    /// `layout` must fit inside it.
    fn over(base: NonNull<u8>, len: usize, layout: Layout) -> Ring {
        Ring {
            base,
            len,
            layout,
            next: 0,
            held: 0,
        }
    }

    /// The status word of slot `index`, shared with the kernel.
    fn status_word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < self.layout.slot_count);
        let at = self.layout.slot_at(index) + self.layout.status_at;
        debug_assert!(at + 4 <= self.len);
        // SAFETY: `index < slot_count`, so the word lies inside the mapping
        // (`Layout::slot_at`), 4-byte aligned (blocks are page aligned,
        // frame slots a multiple of 16 bytes, status words at offset 0 or
        // 8). The kernel and we access it only atomically (smp_wmb/smp_rmb
        // pairs on its side), and the mapping lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(at).cast()) }
    }

    fn next_ready(&self) -> bool {
        self.held < self.layout.slot_count
            && self.status_word(self.next).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next slot and its status word if the kernel has handed it to
    /// user space; it is then held until `release_held`.
    fn take_ready(&mut self) -> Option<(u32, Slot<'_>)> {
        if self.held == self.layout.slot_count {
            return None;
        }
        let status = self.status_word(self.next).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        let index = self.next;
        self.next = (self.next + 1) % self.layout.slot_count;
        self.held += 1;
        // SAFETY: the slot is inside the mapping; its status says the kernel
        // has handed it to user space (the Acquire load above orders our
        // reads after its writes), and it will not write it until
        // `release_held` stores TP_STATUS_KERNEL. `Slot` borrows the ring
        // mutably, so only one slot view exists at a time.
        let base = unsafe { self.base.as_ptr().add(self.layout.slot_at(index)) };
        let slot = Slot {
            base,
            len: self.layout.slot_size,
            _ring: std::marker::PhantomData,
        };
        Some((status, slot))
    }

    /// Give every held slot back to the kernel, oldest first.
    fn release_held(&mut self) {
        let count = self.layout.slot_count;
        let first = (self.next + count - self.held) % count;
        for i in 0..self.held {
            self.status_word((first + i) % count)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
        self.held = 0;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map` (or by
        // the caller of `over`), and no slot view or queued iovec outlives
        // the `&mut self` calls.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A slot user space owns (status TP_STATUS_USER), viewed as bytes.
struct Slot<'r> {
    base: *mut u8,
    len: usize,
    _ring: std::marker::PhantomData<&'r mut Ring>,
}

/// Fields of one frame header (`tpacket3_hdr` or `tpacket2_hdr`), with
/// offsets relative to the slot.
struct FrameHeader {
    /// TPACKET_V3: offset of the next header from this one; `None` for the
    /// last (and for V2).
    next: Option<usize>,
    data_at: usize,
    snap_len: usize,
    wire_len: u32,
    status: u32,
    pkttype: u8,
}

impl Slot<'_> {
    fn read_u32(&self, at: usize) -> Option<u32> {
        if at.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: `at + 4 <= len`, inside the slot this view owns.
        Some(unsafe { self.base.add(at).cast::<u32>().read_unaligned() })
    }

    fn read_u16(&self, at: usize) -> Option<u16> {
        if at.checked_add(2)? > self.len {
            return None;
        }
        // SAFETY: `at + 2 <= len`, inside the slot this view owns.
        Some(unsafe { self.base.add(at).cast::<u16>().read_unaligned() })
    }

    fn read_u8(&self, at: usize) -> Option<u8> {
        if at >= self.len {
            return None;
        }
        // SAFETY: `at < len`, inside the slot this view owns.
        Some(unsafe { self.base.add(at).read() })
    }

    /// TPACKET_V3 block: frames in it.
    fn frame_count(&self) -> u32 {
        self.read_u32(BLOCK_NUM_PKTS).unwrap_or(0)
    }

    /// TPACKET_V3 block: offset of its first frame header.
    fn first_frame(&self) -> Option<usize> {
        self.read_u32(BLOCK_FIRST_PKT).map(|o| o as usize)
    }

    /// TPACKET_V3 block: the `tpacket3_hdr` at `at`.
    fn frame_header(&self, at: usize) -> Option<FrameHeader> {
        let next = self.read_u32(at.checked_add(PKT_NEXT)?)? as usize;
        let mac = self.read_u16(at.checked_add(PKT_MAC)?)? as usize;
        Some(FrameHeader {
            next: (next != 0).then_some(next),
            data_at: at.checked_add(mac)?,
            snap_len: self.read_u32(at.checked_add(PKT_SNAPLEN)?)? as usize,
            wire_len: self.read_u32(at.checked_add(PKT_LEN)?)?,
            status: self.read_u32(at.checked_add(PKT_STATUS)?)?,
            pkttype: self.read_u8(at.checked_add(PKT_PKTTYPE)?)?,
        })
    }

    /// TPACKET_V2 frame slot: its `tpacket2_hdr`.
    fn v2_header(&self) -> Option<FrameHeader> {
        Some(FrameHeader {
            next: None,
            data_at: usize::from(self.read_u16(V2_MAC)?),
            snap_len: self.read_u32(V2_SNAPLEN)? as usize,
            wire_len: self.read_u32(V2_LEN)?,
            status: self.read_u32(V2_STATUS)?,
            pkttype: self.read_u8(V2_PKTTYPE)?,
        })
    }

    fn holds(&self, at: usize, len: usize) -> bool {
        at.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// The frame bytes `at..at + len`, if inside the slot.
    fn frame_mut(&mut self, at: usize, len: usize) -> Option<&mut [u8]> {
        if at.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the range is inside the slot, which user space owns until
        // it is released; the slice borrows this view mutably, so no other
        // reference to the slot exists while it lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.add(at), len) })
    }
}

// ---------------------------------------------------------------------------
// Batched transmission

/// Frames queued for one socket, sent with sendmmsg(2).
struct TxBatch {
    fd: RawFd,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl TxBatch {
    fn new(fd: RawFd) -> TxBatch {
        TxBatch {
            fd,
            iov: Vec::with_capacity(TX_BATCH),
            msgs: Vec::with_capacity(TX_BATCH),
        }
    }

    /// Queue `len` bytes at `frame`, which must stay valid and unchanged
    /// until the next `flush`.
    fn push(&mut self, frame: *mut u8, len: usize, retries: u32, counters: &mut IoCounters) {
        if self.iov.len() == TX_BATCH {
            self.flush(retries, counters);
        }
        self.iov.push(libc::iovec {
            iov_base: frame.cast(),
            iov_len: len,
        });
    }

    /// Send every queued frame; count what the kernel refuses.
    fn flush(&mut self, retries: u32, counters: &mut IoCounters) {
        if self.iov.is_empty() {
            return;
        }
        self.msgs.clear();
        for iov in self.iov.iter_mut() {
            self.msgs.push(single_iov_msg(iov));
        }
        let total = self.msgs.len();
        let mut sent = 0;
        let mut busy = 0;
        while sent < total {
            match self.send_from(sent) {
                Ok(0) => busy += 1,
                Ok(n) => {
                    sent += n;
                    counters.tx_frames += n as u64;
                    continue;
                }
                Err(e) if is_busy(&e) => busy += 1,
                Err(_) => {
                    // sendmmsg fails only when its first message fails:
                    // count that frame and go on with the next.
                    counters.tx_errors += 1;
                    sent += 1;
                    continue;
                }
            }
            if busy > retries {
                counters.tx_errors += (total - sent) as u64;
                break;
            }
            std::thread::yield_now();
        }
        self.msgs.clear();
        self.iov.clear();
    }

    fn send_from(&mut self, first: usize) -> io::Result<usize> {
        let rest = &mut self.msgs[first..];
        let count = rest.len() as libc::c_uint;
        // SAFETY: `rest` holds `count` initialised mmsghdr, each pointing to
        // one iovec in `self.iov` (alive and unmoved during the call), whose
        // bytes the caller of `push` keeps valid until this flush. The
        // kernel only reads the frames and writes `msg_len`.
        let rc = unsafe { libc::sendmmsg(self.fd, rest.as_mut_ptr(), count, libc::MSG_DONTWAIT) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

fn single_iov_msg(iov: &mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data; all-zero (null name and control,
    // no flags) is a valid value.
    let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
    msg.msg_hdr.msg_iov = iov;
    msg.msg_hdr.msg_iovlen = 1;
    msg
}

fn is_busy(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
    )
}

// ---------------------------------------------------------------------------
// Thread placement (re-exported by `super::sys`: this is the crate's only
// module allowed `unsafe`)

/// Pins the calling thread to CPU `core`.
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= CPU_SET_BITS {
        return Err(invalid(&format!("CPU {core} out of range")));
    }
    let mut set = empty_cpu_set();
    // SAFETY: `core < CPU_SET_BITS`, so CPU_SET writes inside `set`;
    // sched_setaffinity(0, ..) reads `set` for its size and affects only
    // the calling thread.
    let rc = unsafe {
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs this process may run on, in order (`[0]` if the kernel will not
/// say).
pub fn allowed_cpus() -> Vec<usize> {
    let mut set = empty_cpu_set();
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()`
    // bytes into `set`, which is that large.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return vec![0];
    }
    // SAFETY: every index is below CPU_SET_BITS, inside `set`.
    (0..CPU_SET_BITS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

const CPU_SET_BITS: usize = 8 * size_of::<libc::cpu_set_t>();

fn empty_cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

// ---------------------------------------------------------------------------
// Classic BPF programs

/// Where classic BPF loads relative to the network header start
/// (`SKF_NET_OFF`): valid wherever the kernel runs the program, whether
/// `skb->data` points at the MAC or the network header.
fn net(offset: u32) -> u32 {
    (libc::SKF_NET_OFF as u32).wrapping_add(offset)
}

fn ancillary(field: libc::c_int) -> u32 {
    (libc::SKF_AD_OFF + field) as u32
}

// Opcodes, spelled as in the kernel's filter.h.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const LD_W_IND: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_IND) as u16;
const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
const LD_IMM: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_IMM) as u16;
const LD_MEM: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_MEM) as u16;
const LDX_MEM: u16 = (libc::BPF_LDX | libc::BPF_W | libc::BPF_MEM) as u16;
const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
const ST: u16 = libc::BPF_ST as u16;
const TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
const ADD_X: u16 = (libc::BPF_ALU | libc::BPF_ADD | libc::BPF_X) as u16;
const MUL_K: u16 = (libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K) as u16;
const XOR_X: u16 = (libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X) as u16;
const RSH_K: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;

/// Scratch memory cells of the fanout program.
const M_ADDR_OFF: u32 = 0;
const M_PORT_OFF: u32 = 1;
const M_HASH: u32 = 2;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// IPv4 "more fragments" flag and fragment offset bits of the flags word.
const IPV4_FRAGMENT_BITS: u32 = 0x3fff;
const HASH_MUL: u32 = 0x9e37_79b1;

/// The socket filter every RX socket gets (see the module doc): drop
/// outgoing and VLAN-tagged frames, accept the rest with a snap length of
/// `snap_len` bytes.
pub fn socket_filter_program(snap_len: u32) -> Vec<libc::sock_filter> {
    vec![
        insn(LD_W_ABS, ancillary(libc::SKF_AD_PKTTYPE)),
        jump(JEQ_K, u32::from(libc::PACKET_OUTGOING), 2, 0),
        insn(LD_W_ABS, ancillary(libc::SKF_AD_VLAN_TAG_PRESENT)),
        jump(JEQ_K, 0, 1, 0),
        insn(RET_K, 0),
        insn(RET_K, snap_len),
    ]
}

fn drop_all_program() -> Vec<libc::sock_filter> {
    vec![insn(RET_K, 0)]
}

/// The fanout program: a 32-bit hash of the flow's *client* endpoint, so
/// that both directions of a DNAT flow get the same value (the kernel takes
/// it modulo the group size).
///
/// - IPv4/IPv6 (by `skb->protocol`, so frames whose 802.1Q tag the kernel
///   stripped count too) whose destination is one of `vips`: the client is
///   the source (address, port); any other IP packet, i.e. a backend reply
///   going backend -> client, has the client as destination.
/// - Ports are hashed only for TCP/UDP at a known offset: IPv4 unfragmented
///   (header length from IHL), IPv6 when the next header is directly
///   TCP/UDP; otherwise the port counts as 0 (fragments, ICMP, extension
///   headers hash on the address alone).
/// - Non-IP frames (ARP, LLDP, frames still carrying a VLAN tag) return 0:
///   they all go to one fixed socket.
///
/// All loads are relative to the network header (`SKF_NET_OFF`). Known
/// limits: an ICMP error about a flow is steered by its outer addresses,
/// which are not the flow's client endpoint; traffic between two non-VIP
/// hosts (neither direction towards a VIP, so not a DNAT flow) is steered
/// on each packet's destination, so its two directions may reach different
/// workers. Telling such traffic apart from a backend reply would need the
/// backend list in the program.
pub fn fanout_program(vips: &[IpAddr]) -> Vec<libc::sock_filter> {
    let mut asm = Asm::default();
    let (v4, v6) = (asm.label(), asm.label());
    asm.stmt(LD_W_ABS, ancillary(libc::SKF_AD_PROTOCOL));
    asm.jump_far(JEQ_K, ETH_P_IP, v4);
    asm.jump_far(JEQ_K, ETH_P_IPV6, v6);
    asm.stmt(RET_K, 0);
    asm.bind(v4);
    emit_ipv4(&mut asm, vips);
    asm.bind(v6);
    emit_ipv6(&mut asm, vips);
    asm.finish()
}

/// IPv4: choose the client side, then hash address and (maybe) port.
fn emit_ipv4(asm: &mut Asm, vips: &[IpAddr]) {
    let (client_src, hash) = (asm.label(), asm.label());
    asm.stmt(LD_W_ABS, net(16));
    for vip in vips.iter().filter_map(|v| match v {
        IpAddr::V4(a) => Some(u32::from(*a)),
        IpAddr::V6(_) => None,
    }) {
        asm.jump_far(JEQ_K, vip, client_src);
    }
    emit_client_offsets(asm, 16, 2);
    asm.ja(hash);
    asm.bind(client_src);
    emit_client_offsets(asm, 12, 0);
    asm.bind(hash);
    asm.stmt(LDX_MEM, M_ADDR_OFF);
    asm.stmt(LD_W_IND, net(0));
    asm.stmt(ST, M_HASH);
    let (with_port, no_port) = (asm.label(), asm.label());
    asm.stmt(LD_H_ABS, net(6));
    asm.jump(
        JSET_K,
        IPV4_FRAGMENT_BITS,
        Target::To(no_port),
        Target::Next,
    );
    asm.stmt(LD_B_ABS, net(9));
    asm.jump(JEQ_K, IPPROTO_TCP, Target::To(with_port), Target::Next);
    asm.jump(
        JEQ_K,
        IPPROTO_UDP,
        Target::To(with_port),
        Target::To(no_port),
    );
    asm.bind(with_port);
    asm.stmt(LDX_MSH, net(0));
    asm.stmt(LD_MEM, M_PORT_OFF);
    asm.stmt(ADD_X, 0);
    asm.stmt(TAX, 0);
    asm.stmt(LD_H_IND, net(0));
    emit_mix_and_return(asm);
    asm.bind(no_port);
    asm.stmt(LD_IMM, 0);
    emit_mix_and_return(asm);
}

/// IPv6: the destination is compared word by word against each VIP.
fn emit_ipv6(asm: &mut Asm, vips: &[IpAddr]) {
    let (client_src, hash) = (asm.label(), asm.label());
    for vip in vips.iter().filter_map(|v| match v {
        IpAddr::V6(a) => Some(a.octets()),
        IpAddr::V4(_) => None,
    }) {
        let other = asm.label();
        for (i, word) in vip.chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            asm.stmt(LD_W_ABS, net(24 + 4 * i as u32));
            asm.jump(JEQ_K, word, Target::Next, Target::To(other));
        }
        asm.ja(client_src);
        asm.bind(other);
    }
    emit_client_offsets(asm, 24, 42);
    asm.ja(hash);
    asm.bind(client_src);
    emit_client_offsets(asm, 8, 40);
    asm.bind(hash);
    asm.stmt(LDX_MEM, M_ADDR_OFF);
    asm.stmt(LD_W_IND, net(0));
    asm.stmt(ST, M_HASH);
    for word in 1..4 {
        asm.stmt(LDX_MEM, M_ADDR_OFF);
        asm.stmt(LD_W_IND, net(4 * word));
        asm.stmt(TAX, 0);
        asm.stmt(LD_MEM, M_HASH);
        asm.stmt(MUL_K, HASH_MUL);
        asm.stmt(ADD_X, 0);
        asm.stmt(ST, M_HASH);
    }
    let (with_port, no_port) = (asm.label(), asm.label());
    asm.stmt(LD_B_ABS, net(6));
    asm.jump(JEQ_K, IPPROTO_TCP, Target::To(with_port), Target::Next);
    asm.jump(
        JEQ_K,
        IPPROTO_UDP,
        Target::To(with_port),
        Target::To(no_port),
    );
    asm.bind(with_port);
    asm.stmt(LDX_MEM, M_PORT_OFF);
    asm.stmt(LD_H_IND, net(0));
    emit_mix_and_return(asm);
    asm.bind(no_port);
    asm.stmt(LD_IMM, 0);
    emit_mix_and_return(asm);
}

/// Store where the client address starts (from the network header) and
/// where its port starts (from the L4 header for IPv4, the network header
/// for IPv6).
fn emit_client_offsets(asm: &mut Asm, addr: u32, port: u32) {
    asm.stmt(LD_IMM, addr);
    asm.stmt(ST, M_ADDR_OFF);
    asm.stmt(LD_IMM, port);
    asm.stmt(ST, M_PORT_OFF);
}

/// A = port, M[hash] = address hash: return fmix32(hash * K + port)
/// (murmur3's finaliser, so every input bit moves the low bits the kernel's
/// modulo keeps).
fn emit_mix_and_return(asm: &mut Asm) {
    asm.stmt(TAX, 0);
    asm.stmt(LD_MEM, M_HASH);
    asm.stmt(MUL_K, HASH_MUL);
    asm.stmt(ADD_X, 0);
    for (shift, mul) in [(16, Some(0x85eb_ca6b)), (13, Some(0xc2b2_ae35)), (16, None)] {
        asm.stmt(TAX, 0);
        asm.stmt(RSH_K, shift);
        asm.stmt(XOR_X, 0);
        if let Some(mul) = mul {
            asm.stmt(MUL_K, mul);
        }
    }
    asm.stmt(RET_A, 0);
}

const fn insn(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A jump target of a conditional jump.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    To(Label),
}

#[derive(Clone, Copy)]
struct Label(usize);

/// A tiny classic-BPF assembler with forward labels.
#[derive(Default)]
struct Asm {
    insns: Vec<libc::sock_filter>,
    labels: Vec<Option<usize>>,
    /// (instruction, its jt target, its jf target) for conditional jumps;
    /// (instruction, target) for `ja`.
    cond: Vec<(usize, Target, Target)>,
    always: Vec<(usize, Label)>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(insn(code, k));
    }

    /// A conditional jump; targets must be within 255 instructions.
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.cond.push((self.insns.len(), jt, jf));
        self.insns.push(jump(code, k, 0, 0));
    }

    /// Jump to `to` if the condition holds, however far it is: a short
    /// conditional jump over an unconditional one.
    fn jump_far(&mut self, code: u16, k: u32, to: Label) {
        self.insns.push(jump(code, k, 0, 1));
        self.ja(to);
    }

    fn ja(&mut self, to: Label) {
        self.always.push((self.insns.len(), to));
        self.insns.push(insn(JA, 0));
    }

    fn offset(&self, from: usize, to: Label) -> usize {
        // Invariant: every label is bound after the jumps to it (the
        // generators above only jump forward), so this is a code bug if hit.
        let target = self.labels[to.0].expect("classic BPF label bound");
        assert!(target > from, "classic BPF jumps only forward");
        target - from - 1
    }

    fn short(&self, from: usize, target: Target) -> u8 {
        match target {
            Target::Next => 0,
            // Invariant: `jump` is only used for nearby targets; far ones go
            // through `jump_far`.
            Target::To(label) => {
                u8::try_from(self.offset(from, label)).expect("short classic BPF jump")
            }
        }
    }

    fn finish(mut self) -> Vec<libc::sock_filter> {
        for &(at, jt, jf) in &self.cond {
            let (jt, jf) = (self.short(at, jt), self.short(at, jf));
            self.insns[at].jt = jt;
            self.insns[at].jf = jf;
        }
        for &(at, to) in &self.always {
            self.insns[at].k = self.offset(at, to) as u32;
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    // -- A classic BPF interpreter covering the opcodes emitted above. -----

    /// What the kernel shows a program: an Ethernet frame as it is after
    /// receive processing (802.1Q tag already stripped into metadata), with
    /// the network header right after the 14-byte MAC header.
    struct Skb<'a> {
        frame: &'a [u8],
        pkttype: u8,
        vlan_present: bool,
    }

    const NET_AT: usize = 14;

    impl Skb<'_> {
        fn of(frame: &[u8]) -> Skb<'_> {
            Skb {
                frame,
                pkttype: libc::PACKET_HOST,
                vlan_present: false,
            }
        }

        fn protocol(&self) -> u32 {
            u32::from(u16::from_be_bytes([self.frame[12], self.frame[13]]))
        }

        /// Load `size` bytes big-endian at a classic-BPF offset; `None`
        /// aborts the program (the kernel then returns 0).
        fn load(&self, offset: i64, size: usize) -> Option<u32> {
            let start = if offset >= libc::SKF_NET_OFF as i64 && offset < libc::SKF_AD_OFF as i64 {
                NET_AT as i64 + offset - libc::SKF_NET_OFF as i64
            } else if offset >= libc::SKF_LL_OFF as i64 && offset < libc::SKF_NET_OFF as i64 {
                offset - libc::SKF_LL_OFF as i64
            } else {
                // Positive offsets depend on where skb->data points, which
                // differs between fanout and socket filter: never emitted.
                return None;
            };
            let start = usize::try_from(start).ok()?;
            let bytes = self.frame.get(start..start + size)?;
            Some(bytes.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
        }

        fn ancillary(&self, k: u32) -> Option<u32> {
            let field = (k as i32).wrapping_sub(libc::SKF_AD_OFF);
            match field {
                libc::SKF_AD_PROTOCOL => Some(self.protocol()),
                libc::SKF_AD_PKTTYPE => Some(u32::from(self.pkttype)),
                libc::SKF_AD_VLAN_TAG_PRESENT => Some(u32::from(self.vlan_present)),
                _ => None,
            }
        }
    }

    fn size_of_load(code: u16) -> usize {
        match u32::from(code) & 0x18 {
            libc::BPF_W => 4,
            libc::BPF_H => 2,
            _ => 1,
        }
    }

    /// Run `prog` on `skb`. Panics on anything the kernel's checker would
    /// reject (unknown opcode, memory cell read before written, falling off
    /// the end).
    fn run(prog: &[libc::sock_filter], skb: &Skb) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem: [Option<u32>; 16] = [None; 16];
        let mut pc = 0;
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k;
            let load = |offset: i64| skb.load(offset, size_of_load(i.code));
            match i.code {
                LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                    let v = if (k as i32) >= libc::SKF_AD_OFF && (k as i32) < 0 {
                        skb.ancillary(k)
                    } else {
                        load(i64::from(k as i32))
                    };
                    match v {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                LD_W_IND | LD_H_IND => match load(i64::from(x.wrapping_add(k) as i32)) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_MSH => match skb.load(i64::from(k as i32), 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                LD_IMM => a = k,
                LD_MEM => a = mem[k as usize].expect("memory cell read before written"),
                LDX_MEM => x = mem[k as usize].expect("memory cell read before written"),
                ST => mem[k as usize] = Some(a),
                TAX => x = a,
                ADD_X => a = a.wrapping_add(x),
                MUL_K => a = a.wrapping_mul(k),
                XOR_X => a ^= x,
                RSH_K => a >>= k,
                JA => pc += k as usize,
                JEQ_K => pc += usize::from(if a == k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & k != 0 { i.jt } else { i.jf }),
                RET_K => return k,
                RET_A => return a,
                other => panic!("opcode {other:#x} not emitted by this module"),
            }
        }
    }

    // -- Frame builders. ----------------------------------------------------

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;

    fn ethernet(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.resize(if proto == TCP { 20 } else { 8 }, 0);
        l4
    }

    struct V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        sport: u16,
        dport: u16,
        options: usize,
        flags_frag: u16,
    }

    fn v4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> V4 {
        V4 {
            src,
            dst,
            proto,
            sport,
            dport,
            options: 0,
            flags_frag: 0x4000,
        }
    }

    impl V4 {
        fn frame(&self) -> Vec<u8> {
            let mut f = ethernet(0x0800);
            let ihl = 5 + self.options;
            f.push(0x40 | ihl as u8);
            f.push(0);
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(&self.flags_frag.to_be_bytes());
            f.extend_from_slice(&[64, self.proto, 0, 0]);
            f.extend_from_slice(&self.src.octets());
            f.extend_from_slice(&self.dst.octets());
            f.extend(std::iter::repeat_n(1, 4 * self.options));
            f.extend(l4(self.proto, self.sport, self.dport));
            f
        }
    }

    fn v6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, next: u8) -> Vec<u8> {
        let mut f = ethernet(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, next, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend(l4(next, sport, dport));
        f
    }

    fn hash(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        run(prog, &Skb::of(frame))
    }

    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    const VIP4B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const BACKEND4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);

    fn vip6() -> Ipv6Addr {
        "2001:db8:1::1".parse().unwrap()
    }

    fn vips() -> Vec<IpAddr> {
        vec![IpAddr::V4(VIP4), IpAddr::V6(vip6()), IpAddr::V4(VIP4B)]
    }

    /// (client -> VIP, backend -> client) frames of one DNAT flow.
    fn flow4(client: Ipv4Addr, cport: u16, vip: Ipv4Addr, proto: u8) -> (V4, V4) {
        (
            v4(client, cport, vip, 80, proto),
            v4(BACKEND4, 8080, client, cport, proto),
        )
    }

    // -- Tests. -------------------------------------------------------------

    #[test]
    fn socket_filter_fixture() {
        let prog = socket_filter_program(1952);
        let raw: Vec<(u16, u8, u8, u32)> = prog.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        // Hand-encoded from the kernel's uapi filter.h (SKF_AD_OFF = -0x1000,
        // SKF_AD_PKTTYPE = 4, SKF_AD_VLAN_TAG_PRESENT = 48); the kernel
        // accepting it is checked by tests/afpacket.rs:
        //   ld pkttype; jeq #PACKET_OUTGOING, drop; ld vlan_avail;
        //   jeq #0, accept; drop: ret #0; accept: ret #1952
        assert_eq!(
            raw,
            vec![
                (0x20, 0, 0, 0xffff_f004),
                (0x15, 2, 0, 4),
                (0x20, 0, 0, 0xffff_f030),
                (0x15, 1, 0, 0),
                (0x06, 0, 0, 0),
                (0x06, 0, 0, 1952),
            ]
        );
    }

    #[test]
    fn socket_filter_drops_outgoing_and_tagged() {
        let prog = socket_filter_program(1952);
        let frame = v4(CLIENT4, 1, VIP4, 2, UDP).frame();
        let mut skb = Skb::of(&frame);
        assert_eq!(run(&prog, &skb), 1952);
        skb.pkttype = libc::PACKET_BROADCAST;
        assert_eq!(run(&prog, &skb), 1952);
        skb.pkttype = libc::PACKET_OUTGOING;
        assert_eq!(run(&prog, &skb), 0);
        skb.pkttype = libc::PACKET_HOST;
        skb.vlan_present = true;
        assert_eq!(run(&prog, &skb), 0);
    }

    #[test]
    fn forward_and_reply_hash_alike_ipv4() {
        let prog = fanout_program(&vips());
        for proto in [TCP, UDP, ICMP] {
            for vip in [VIP4, VIP4B] {
                let (fwd, rev) = flow4(CLIENT4, 40000, vip, proto);
                assert_eq!(
                    hash(&prog, &fwd.frame()),
                    hash(&prog, &rev.frame()),
                    "proto {proto} vip {vip}"
                );
            }
        }
    }

    #[test]
    fn ports_are_read_after_ipv4_options() {
        let prog = fanout_program(&vips());
        let (mut fwd, rev) = flow4(CLIENT4, 40000, VIP4, TCP);
        fwd.options = 3;
        assert_eq!(hash(&prog, &fwd.frame()), hash(&prog, &rev.frame()));
        // and the port is really part of the hash
        let other = flow4(CLIENT4, 40001, VIP4, TCP).0;
        assert_ne!(hash(&prog, &fwd.frame()), hash(&prog, &other.frame()));
    }

    #[test]
    fn fragments_hash_on_address_only() {
        let prog = fanout_program(&vips());
        let mut first = v4(CLIENT4, 40000, VIP4, 53, UDP);
        first.flags_frag = 0x2000; // MF
        let mut later = v4(CLIENT4, 0, VIP4, 0, UDP);
        later.flags_frag = 0x0010; // offset 128
        let no_ports = v4(CLIENT4, 0, VIP4, 0, ICMP);
        let h = hash(&prog, &no_ports.frame());
        assert_eq!(hash(&prog, &first.frame()), h);
        assert_eq!(hash(&prog, &later.frame()), h);
    }

    #[test]
    fn direction_follows_the_vip_list() {
        let with = fanout_program(&vips());
        let without = fanout_program(&[]);
        let fwd = v4(CLIENT4, 40000, VIP4, 80, TCP).frame();
        // Towards a VIP the client is the source; without that VIP it is the
        // destination (VIP4:80), so the value changes.
        assert_ne!(hash(&with, &fwd), hash(&without, &fwd));
        let as_reply = v4(BACKEND4, 8080, CLIENT4, 40000, TCP).frame();
        assert_eq!(hash(&with, &fwd), hash(&without, &as_reply));
    }

    #[test]
    fn forward_and_reply_hash_alike_ipv6() {
        let prog = fanout_program(&vips());
        let client: Ipv6Addr = "2001:db8:2::42".parse().unwrap();
        let backend: Ipv6Addr = "2001:db8:3::7".parse().unwrap();
        for next in [TCP, UDP, 58] {
            let fwd = v6_frame(client, 50000, vip6(), 443, next);
            let rev = v6_frame(backend, 8443, client, 50000, next);
            assert_eq!(hash(&prog, &fwd), hash(&prog, &rev), "next header {next}");
        }
        // A VIP differing only in its last word is not a match.
        let near: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let fwd = v6_frame(client, 50000, near, 443, TCP);
        let rev = v6_frame(backend, 8443, client, 50000, TCP);
        assert_ne!(hash(&prog, &fwd), hash(&prog, &rev));
    }

    #[test]
    fn non_ip_and_short_frames_go_to_index_zero() {
        let prog = fanout_program(&vips());
        let mut arp = ethernet(0x0806);
        arp.resize(42, 0);
        assert_eq!(hash(&prog, &arp), 0);
        let mut tagged = ethernet(0x8100);
        tagged.extend_from_slice(&v4(CLIENT4, 1, VIP4, 2, UDP).frame()[12..]);
        assert_eq!(hash(&prog, &tagged), 0);
        let truncated = &v4(CLIENT4, 1, VIP4, 2, UDP).frame()[..20];
        assert_eq!(hash(&prog, truncated), 0);
    }

    fn spread(values: impl Iterator<Item = u32>, sockets: u32) -> Vec<u32> {
        let mut buckets = vec![0; sockets as usize];
        for v in values {
            buckets[(v % sockets) as usize] += 1;
        }
        buckets
    }

    fn assert_even(buckets: &[u32], total: u32) {
        let expected = total / buckets.len() as u32;
        for &b in buckets {
            assert!(
                b.abs_diff(expected) < expected / 8,
                "uneven spread {buckets:?}"
            );
        }
    }

    #[test]
    fn flows_spread_across_two_and_four_sockets() {
        let prog = fanout_program(&vips());
        // Many clients, random-ish ports.
        let many = (0..4096u32).map(|i| {
            let client = Ipv4Addr::from(0xc612_0000 | (i.wrapping_mul(2_654_435_761) & 0xffff));
            hash(
                &prog,
                &v4(client, 1024 + (i * 7919 % 60000) as u16, VIP4, 80, TCP).frame(),
            )
        });
        let values: Vec<u32> = many.collect();
        for sockets in [2, 4] {
            assert_even(&spread(values.iter().copied(), sockets), 4096);
        }
        // One client, sequential ports (a load generator).
        let one: Vec<u32> = (0..4096u16)
            .map(|p| hash(&prog, &v4(CLIENT4, 10000 + p, VIP4, 80, UDP).frame()))
            .collect();
        for sockets in [2, 4] {
            assert_even(&spread(one.iter().copied(), sockets), 4096);
        }
    }

    #[test]
    fn large_vip_lists_assemble() {
        // 198.19.16.0 + i: clear of CLIENT4 and BACKEND4.
        let mut vips: Vec<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc613_1000 + i)))
            .collect();
        vips.extend(
            (0..100u16).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
        );
        let prog = fanout_program(&vips);
        assert!(
            checked_program(prog.clone()).is_ok(),
            "{} instructions",
            prog.len()
        );
        let last = Ipv4Addr::from(0xc613_1000 + 999);
        let (fwd, rev) = flow4(CLIENT4, 40000, last, TCP);
        assert_eq!(hash(&prog, &fwd.frame()), hash(&prog, &rev.frame()));
        let too_many: Vec<IpAddr> = (0..3000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(i)))
            .collect();
        assert!(checked_program(fanout_program(&too_many)).is_err());
    }

    #[test]
    fn programs_end_in_return_and_jump_forward() {
        for prog in [
            fanout_program(&vips()),
            socket_filter_program(100),
            drop_all_program(),
        ] {
            let last = prog.last().unwrap();
            assert!(last.code == RET_K || last.code == RET_A);
            for (pc, i) in prog.iter().enumerate() {
                if u32::from(i.code) & 0x07 != libc::BPF_JMP {
                    continue;
                }
                let reach = if i.code == JA {
                    i.k as usize
                } else {
                    usize::from(i.jt.max(i.jf))
                };
                assert!(
                    pc + 1 + reach < prog.len(),
                    "jump at {pc} leaves the program"
                );
            }
        }
    }

    #[test]
    fn ring_config_checks() {
        let page = 4096;
        for version in [RingVersion::V2, RingVersion::V3] {
            assert!(RingConfig::default().check(version, page).is_ok());
        }
        assert_eq!(RingConfig::default().frame_count(), Some(2048));
        assert_eq!(RingConfig::default().snap_len(), 1952);
        assert_eq!(RingConfig::default().ring_bytes(), Some(4 << 20));
        let bad = [
            RingConfig {
                block_size: 5000,
                ..RingConfig::default()
            },
            RingConfig {
                frame_size: 1000,
                ..RingConfig::default()
            },
            RingConfig {
                frame_size: 128,
                ..RingConfig::default()
            },
            RingConfig {
                frame_size: 8192,
                block_size: 4096,
                ..RingConfig::default()
            },
            RingConfig {
                block_count: 0,
                ..RingConfig::default()
            },
        ];
        for config in bad {
            for version in [RingVersion::V2, RingVersion::V3] {
                assert!(config.check(version, page).is_err(), "{config:?}");
            }
        }
        // 2^16 blocks of 104,857 frames: fine as V3 blocks, more than
        // 2^32 V2 frame slots.
        let huge = RingConfig {
            block_size: 1 << 24,
            block_count: 1 << 16,
            frame_size: 160,
            ..RingConfig::default()
        };
        assert!(huge.check(RingVersion::V3, page).is_ok());
        let e = huge.check(RingVersion::V2, page).unwrap_err();
        assert!(
            e.to_string().starts_with("AF_PACKET TPACKET_V2 ring:"),
            "{e}"
        );
        let tiny = RingConfig {
            block_timeout: Duration::ZERO,
            ..RingConfig::default()
        };
        assert_eq!(tiny.timeout_ms(), 1);
    }

    #[test]
    fn coalescing_waits_only_after_a_poll_that_found_frames() {
        let bound = Duration::from_micros(50);
        assert_eq!(coalesce_delay(0, bound), Duration::ZERO);
        assert_eq!(coalesce_delay(1, bound), bound);
        assert_eq!(coalesce_delay(RX_BATCH, bound), bound);
        assert_eq!(coalesce_delay(3, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn coalescing_is_v2_only_and_bounded() {
        let us = Duration::from_micros;
        assert!(check_coalesce(RingVersion::V2, us(50)).is_ok());
        assert!(check_coalesce(RingVersion::V2, MAX_RX_COALESCE).is_ok());
        assert!(check_coalesce(RingVersion::V3, Duration::ZERO).is_ok());
        let v3 = check_coalesce(RingVersion::V3, us(50)).unwrap_err();
        assert!(v3.to_string().contains("TPACKET_V2 ring only"), "{v3}");
        let long = check_coalesce(RingVersion::V2, us(1001)).unwrap_err();
        assert!(long.to_string().contains("exceeds 1ms"), "{long}");
    }

    #[test]
    fn coalescing_sleep_lasts_at_least_the_bound() {
        set_timer_slack(COALESCE_TIMER_SLACK).expect("PR_SET_TIMERSLACK");
        let start = std::time::Instant::now();
        sleep_monotonic(Duration::from_micros(200));
        assert!(start.elapsed() >= Duration::from_micros(200));
    }

    #[test]
    fn eperm_names_the_capability() {
        let e = port_error(
            "socket(AF_PACKET)",
            "eth0",
            2,
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn forward_and_reply_agree_for_tcp_and_udp_over_both_families_and_group_sizes() {
        let prog = fanout_program(&vips());
        let client6: Ipv6Addr = "2001:db8:2::99".parse().unwrap();
        let backend6: Ipv6Addr = "2001:db8:3::9".parse().unwrap();
        for proto in [TCP, UDP] {
            let (fwd4, rev4) = flow4(CLIENT4, 33333, VIP4, proto);
            let fwd6 = v6_frame(client6, 33333, vip6(), 80, proto);
            let rev6 = v6_frame(backend6, 8080, client6, 33333, proto);
            for (fwd, rev) in [(fwd4.frame(), rev4.frame()), (fwd6, rev6)] {
                let (f, r) = (hash(&prog, &fwd), hash(&prog, &rev));
                for members in 1..=8 {
                    assert_eq!(f % members, r % members, "proto {proto}, {members} sockets");
                }
            }
        }
    }

    #[test]
    fn non_vip_traffic_is_steered_on_its_destination_endpoint() {
        // Not towards a VIP: the destination is taken as the client (a
        // backend reply), whoever sends it. So every packet to one
        // endpoint reaches one worker, wherever it comes from.
        let prog = fanout_program(&vips());
        let to_client =
            |from: Ipv4Addr, sport| hash(&prog, &v4(from, sport, CLIENT4, 40000, TCP).frame());
        assert_eq!(
            to_client(BACKEND4, 8080),
            to_client(Ipv4Addr::new(198, 19, 9, 9), 1)
        );
        assert_ne!(
            to_client(BACKEND4, 8080),
            hash(&prog, &v4(BACKEND4, 8080, CLIENT4, 40001, TCP).frame())
        );
    }

    #[test]
    fn arp_requests_and_replies_share_index_zero() {
        let prog = fanout_program(&vips());
        for op in [1u8, 2] {
            let mut arp = ethernet(0x0806);
            arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, op]);
            arp.resize(60, 0);
            assert_eq!(hash(&prog, &arp), 0);
        }
        let mut lldp = ethernet(0x88cc);
        lldp.resize(60, 0);
        assert_eq!(hash(&prog, &lldp), 0);
    }

    #[test]
    fn vip_update_regroups_ipv6_flows() {
        let client: Ipv6Addr = "2001:db8:2::5".parse().unwrap();
        let late: Ipv6Addr = "2001:db8:1::99".parse().unwrap();
        let fwd = v6_frame(client, 50000, late, 443, TCP);
        let rev = v6_frame("2001:db8:3::7".parse().unwrap(), 8443, client, 50000, TCP);
        let before = fanout_program(&vips());
        assert_ne!(hash(&before, &fwd), hash(&before, &rev));
        let mut updated = vips();
        updated.push(IpAddr::V6(late));
        let after = fanout_program(&updated);
        assert_eq!(hash(&after, &fwd), hash(&after, &rev));
    }

    // -- The block walker, on a hand-built TPACKET_V3 block. ----------------

    /// Offset of the frame data from its `tpacket3_hdr`, as the kernel
    /// lays it out for a 14-byte MAC header.
    const MAC_AT: usize = 82;

    /// Write a frame header at `at` (and its data at `at + MAC_AT`).
    fn put_frame(block: &mut [u8], at: usize, next: u32, data: &[u8], wire_len: u32, pkttype: u8) {
        block[at + PKT_NEXT..][..4].copy_from_slice(&next.to_ne_bytes());
        block[at + PKT_SNAPLEN..][..4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        block[at + PKT_LEN..][..4].copy_from_slice(&wire_len.to_ne_bytes());
        let status = libc::TP_STATUS_USER | libc::TP_STATUS_CSUMNOTREADY;
        block[at + PKT_STATUS..][..4].copy_from_slice(&status.to_ne_bytes());
        block[at + PKT_MAC..][..2].copy_from_slice(&(MAC_AT as u16).to_ne_bytes());
        block[at + PKT_PKTTYPE] = pkttype;
        block[at + MAC_AT..][..data.len()].copy_from_slice(data);
    }

    fn put_block_header(block: &mut [u8], frames: u32, first: u32) {
        block[BLOCK_STATUS..][..4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        block[BLOCK_NUM_PKTS..][..4].copy_from_slice(&frames.to_ne_bytes());
        block[BLOCK_FIRST_PKT..][..4].copy_from_slice(&first.to_ne_bytes());
    }

    fn view(block: &mut [u8]) -> Slot<'_> {
        Slot {
            base: block.as_mut_ptr(),
            len: block.len(),
            _ring: std::marker::PhantomData,
        }
    }

    /// (meta, length) of each frame handed to the handler.
    type Seen = Vec<(RxMeta, usize)>;
    /// (offset in the block or ring, length) of each queued transmission.
    type Queued = Vec<(usize, usize)>;
    /// (frames handed, counters, frames seen, transmissions queued).
    type Walked = (usize, IoCounters, Seen, Queued);

    /// Walk `block` as interface 7 with a handler that transmits frames
    /// whose first byte is 0xaa on `tx_to` (with `tx_len`).
    fn walk(block: &mut [u8], tx_to: u32, tx_len: usize) -> Walked {
        let base = block.as_ptr() as usize;
        let mut counters = IoCounters::default();
        // fd -1: nothing is flushed below TX_BATCH frames.
        let mut tx = vec![TxBatch::new(-1)];
        let mut seen = Vec::new();
        let mut handler = |meta: &RxMeta, frame: &mut [u8]| {
            seen.push((*meta, frame.len()));
            if frame[0] == 0xaa {
                frame[1] = 0xbb;
                Verdict::Tx {
                    ifindex: tx_to,
                    len: tx_len,
                }
            } else {
                Verdict::Drop
            }
        };
        let handed = {
            let mut outbox = Outbox {
                ifindexes: &[7],
                tx: &mut tx,
                counters: &mut counters,
                retries: 0,
            };
            walk_block(&mut view(block), 7, &mut handler, &mut outbox)
        };
        let queued = tx[0]
            .iov
            .drain(..)
            .map(|v| (v.iov_base as usize - base, v.iov_len))
            .collect();
        (handed, counters, seen, queued)
    }

    #[test]
    fn walker_hands_frames_counts_truncation_and_queues_tx_in_place() {
        let mut block = vec![0u8; 4096];
        put_block_header(&mut block, 3, 48);
        put_frame(&mut block, 48, 160, &[0xaa; 64], 64, libc::PACKET_HOST);
        put_frame(&mut block, 208, 160, &[0x11; 60], 60, libc::PACKET_OUTGOING);
        put_frame(
            &mut block,
            368,
            0,
            &[0x22; 100],
            9000,
            libc::PACKET_OTHERHOST,
        );
        let (handed, counters, seen, queued) = walk(&mut block, 7, 60);
        assert_eq!(handed, 2, "the outgoing frame is skipped");
        assert_eq!(
            counters,
            IoCounters {
                rx_frames: 2,
                rx_truncated: 1,
                ..IoCounters::default()
            }
        );
        let meta = |wire_len| RxMeta {
            ifindex: 7,
            wire_len,
            csum_not_ready: true,
        };
        assert_eq!(seen, vec![(meta(64), 64), (meta(9000), 100)]);
        // Sent from the ring, rewritten in place.
        assert_eq!(queued, vec![(48 + MAC_AT, 60)]);
        assert_eq!(block[48 + MAC_AT + 1], 0xbb);
    }

    #[test]
    fn walker_counts_bad_tx_verdicts() {
        let mut block = vec![0u8; 4096];
        put_block_header(&mut block, 1, 48);
        put_frame(&mut block, 48, 0, &[0xaa; 64], 64, libc::PACKET_HOST);
        let (_, counters, _, queued) = walk(&mut block, 7, 65);
        assert_eq!(
            (counters.tx_errors, queued.len()),
            (1, 0),
            "longer than the frame"
        );
        let (_, counters, _, queued) = walk(&mut block, 8, 64);
        assert_eq!(
            (counters.tx_errors, queued.len()),
            (1, 0),
            "interface without a socket"
        );
    }

    #[test]
    fn walker_stops_at_a_broken_layout_and_counts_the_rest() {
        let mut block = vec![0u8; 4096];
        put_block_header(&mut block, 3, 48);
        put_frame(&mut block, 48, 4000, &[0x33; 64], 64, libc::PACKET_HOST);
        let (handed, counters, _, _) = walk(&mut block, 7, 0);
        assert_eq!(handed, 1);
        assert_eq!((counters.rx_frames, counters.rx_ring_drops), (1, 2));
        // A first offset outside the block loses the whole block, counted.
        put_block_header(&mut block, 2, 5000);
        let (handed, counters, _, _) = walk(&mut block, 7, 0);
        assert_eq!((handed, counters.rx_ring_drops), (0, 2));
    }

    #[test]
    fn walker_skips_vlan_tagged_frames() {
        // The socket filter drops them; one that shows up anyway is not
        // handed over as if it were untagged.
        let mut block = vec![0u8; 4096];
        put_block_header(&mut block, 2, 48);
        put_frame(&mut block, 48, 160, &[0x11; 64], 64, libc::PACKET_HOST);
        put_frame(&mut block, 208, 0, &[0x22; 64], 64, libc::PACKET_HOST);
        let tagged = libc::TP_STATUS_USER | libc::TP_STATUS_VLAN_VALID;
        block[48 + PKT_STATUS..][..4].copy_from_slice(&tagged.to_ne_bytes());
        let (handed, counters, seen, _) = walk(&mut block, 7, 0);
        assert_eq!((handed, counters.rx_frames), (1, 1));
        assert_eq!(seen[0].1, 64);
    }

    // -- The TPACKET_V2 ring, on an anonymous mapping. ----------------------

    /// Offset of the frame data in a V2 slot, as the kernel lays it out for
    /// a 14-byte MAC header (tpacket_rcv): TPACKET_ALIGN(TPACKET2_HDRLEN 52
    /// + 16) - 14.
    const V2_MAC_AT: usize = 66;

    /// A V2 ring of `blocks` blocks of `block_size` bytes and `frame_size`
    /// frame slots, over anonymous memory instead of a socket's ring.
    fn anonymous_v2(block_size: u32, blocks: u32, frame_size: u32) -> Ring {
        let config = RingConfig {
            block_size,
            block_count: blocks,
            frame_size,
            ..RingConfig::default()
        };
        config.check(RingVersion::V2, 4096).expect("test geometry");
        let len = config.ring_bytes().expect("test geometry");
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh private anonymous mapping of `len` bytes, owned
        // (and unmapped) by the returned ring.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        assert_ne!(addr, libc::MAP_FAILED);
        let base = NonNull::new(addr.cast::<u8>()).expect("mmap result");
        Ring::over(base, len, Layout::of(&config, RingVersion::V2))
    }

    /// The whole ring as bytes, as the kernel writes it.
    fn ring_bytes(ring: &mut Ring) -> &mut [u8] {
        // SAFETY: `base..base + len` is the ring's mapping; the slice
        // borrows the ring mutably, so no slot view exists meanwhile.
        unsafe { std::slice::from_raw_parts_mut(ring.base.as_ptr(), ring.len) }
    }

    /// Write frame slot `index` byte for byte as the kernel's tpacket_rcv
    /// does for TPACKET_V2: `tpacket2_hdr` (tp_status 0, tp_len 4,
    /// tp_snaplen 8, tp_mac 12, tp_net 14, tp_sec 16, tp_nsec 20,
    /// tp_vlan_tci 24, tp_vlan_tpid 26), `sockaddr_ll` at TPACKET_ALIGN(32)
    /// = 32 (family, protocol, ifindex 36, hatype 40, pkttype 42, halen
    /// 43, addr 44), the frame at tp_mac.
    fn put_v2(ring: &mut Ring, index: usize, data: &[u8], wire_len: u32, status: u32, vlan: u16) {
        let at = ring.layout.slot_at(index);
        let slot = &mut ring_bytes(ring)[at..];
        slot[4..8].copy_from_slice(&wire_len.to_ne_bytes());
        slot[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        slot[12..14].copy_from_slice(&(V2_MAC_AT as u16).to_ne_bytes());
        slot[14..16].copy_from_slice(&(V2_MAC_AT as u16 + 14).to_ne_bytes());
        slot[16..20].copy_from_slice(&1_700_000_000u32.to_ne_bytes());
        slot[24..26].copy_from_slice(&vlan.to_ne_bytes());
        slot[26..28].copy_from_slice(&(if vlan != 0 { 0x8100u16 } else { 0 }).to_ne_bytes());
        slot[32..34].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        slot[34..36].copy_from_slice(&0x0800u16.to_be_bytes());
        slot[36..40].copy_from_slice(&7i32.to_ne_bytes());
        slot[40..42].copy_from_slice(&1u16.to_ne_bytes());
        slot[42] = if data[0] == 0x0e {
            libc::PACKET_OUTGOING
        } else {
            libc::PACKET_HOST
        };
        slot[43] = 6;
        slot[V2_MAC_AT..][..data.len()].copy_from_slice(data);
        // tp_status last, as the kernel publishes the frame.
        slot[0..4].copy_from_slice(&status.to_ne_bytes());
    }

    fn v2_status(ring: &mut Ring, index: usize) -> u32 {
        let at = ring.layout.slot_at(index);
        let bytes = &ring_bytes(ring)[at..at + 4];
        u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Drain `ring` once as interface 7 with the handler of `walk`:
    /// (frames handed, counters, (meta, length) of each handed frame,
    /// (offset in the ring, length) of each queued transmission,
    /// statistics due).
    fn drain(ring: &mut Ring) -> (usize, IoCounters, Seen, Queued, bool) {
        let base = ring.base.as_ptr() as usize;
        let mut counters = IoCounters::default();
        let mut tx = vec![TxBatch::new(-1)];
        let mut seen = Vec::new();
        let mut stats_due = false;
        let mut handler = |meta: &RxMeta, frame: &mut [u8]| {
            seen.push((*meta, frame.len()));
            if frame[0] == 0xaa {
                frame[1] = 0xbb;
                Verdict::Tx {
                    ifindex: 7,
                    len: frame.len(),
                }
            } else {
                Verdict::Drop
            }
        };
        let handed = {
            let mut outbox = Outbox {
                ifindexes: &[7],
                tx: &mut tx,
                counters: &mut counters,
                retries: 0,
            };
            drain_ring(ring, 7, &mut handler, &mut outbox, &mut stats_due)
        };
        let queued = tx[0]
            .iov
            .drain(..)
            .map(|v| (v.iov_base as usize - base, v.iov_len))
            .collect();
        (handed, counters, seen, queued, stats_due)
    }

    const USER: u32 = libc::TP_STATUS_USER;

    #[test]
    fn v2_layout_keeps_frames_inside_blocks() {
        // 1536-byte frames: two per 4096-byte block, 1024 bytes unused.
        let layout = Layout::of(
            &RingConfig {
                block_size: 4096,
                block_count: 3,
                frame_size: 1536,
                ..RingConfig::default()
            },
            RingVersion::V2,
        );
        assert_eq!(layout.slot_count, 6);
        let slots: Vec<usize> = (0..6).map(|i| layout.slot_at(i)).collect();
        assert_eq!(slots, [0, 1536, 4096, 5632, 8192, 9728]);
        assert_eq!(layout.batch(), 6);
        let v3 = Layout::of(&RingConfig::default(), RingVersion::V3);
        assert_eq!(
            (v3.slot_count, v3.slot_at(2), v3.status_at),
            (32, 256 << 10, 8)
        );
    }

    #[test]
    fn v2_walk_hands_frames_counts_truncation_and_sends_in_place() {
        let mut ring = anonymous_v2(4096, 3, 1536);
        let csum = USER | libc::TP_STATUS_CSUMNOTREADY;
        put_v2(&mut ring, 0, &[0xaa; 64], 64, csum, 0);
        put_v2(&mut ring, 1, &[0x0e; 60], 60, USER, 0); // outgoing
        put_v2(&mut ring, 2, &[0x22; 100], 9000, USER, 0); // truncated
        put_v2(
            &mut ring,
            3,
            &[0x33; 64],
            64,
            USER | libc::TP_STATUS_VLAN_VALID,
            5,
        );
        put_v2(&mut ring, 4, &[0xaa; 80], 80, USER, 0);
        // Slot 5 is still the kernel's: the walk stops there.
        let (handed, counters, seen, queued, stats_due) = drain(&mut ring);
        assert_eq!(handed, 3, "outgoing and VLAN-tagged frames are skipped");
        assert_eq!(
            counters,
            IoCounters {
                rx_frames: 3,
                rx_truncated: 1,
                ..IoCounters::default()
            }
        );
        let meta = |wire_len, csum_not_ready| RxMeta {
            ifindex: 7,
            wire_len,
            csum_not_ready,
        };
        assert_eq!(
            seen,
            [
                (meta(64, true), 64),
                (meta(9000, false), 100),
                (meta(80, false), 80)
            ]
        );
        // Sent from the ring, rewritten in place: slot 0 and slot 4 (the
        // first of the third block).
        assert_eq!(queued, [(V2_MAC_AT, 64), (8192 + V2_MAC_AT, 80)]);
        assert_eq!(ring_bytes(&mut ring)[8192 + V2_MAC_AT + 1], 0xbb);
        assert!(!stats_due);
        // Held until released, then the kernel's again.
        assert_eq!((ring.held, ring.next), (5, 5));
        assert_eq!(v2_status(&mut ring, 4), USER);
        ring.release_held();
        let statuses: Vec<u32> = (0..6).map(|i| v2_status(&mut ring, i)).collect();
        assert_eq!(statuses, [libc::TP_STATUS_KERNEL; 6]);
        assert_eq!(drain(&mut ring).0, 0);
    }

    #[test]
    fn v2_walk_counts_broken_headers_and_losses() {
        let mut ring = anonymous_v2(4096, 1, 2048);
        put_v2(
            &mut ring,
            0,
            &[0x11; 64],
            64,
            USER | libc::TP_STATUS_LOSING,
            0,
        );
        // tp_mac pointing past the slot end.
        put_v2(&mut ring, 1, &[0x11; 64], 64, USER, 0);
        let at = ring.layout.slot_at(1);
        ring_bytes(&mut ring)[at + 12..at + 14].copy_from_slice(&2000u16.to_ne_bytes());
        let (handed, counters, _, _, stats_due) = drain(&mut ring);
        assert_eq!(
            (handed, counters.rx_frames, counters.rx_ring_drops),
            (1, 1, 1)
        );
        assert!(stats_due, "TP_STATUS_LOSING asks for PACKET_STATISTICS");
    }

    #[test]
    fn v2_batches_are_bounded_and_wrap_around_the_ring() {
        // 409 slots of 160 bytes in one 64 KiB block.
        let mut ring = anonymous_v2(65536, 1, 160);
        let slots = ring.layout.slot_count;
        assert_eq!(slots, 409);
        for i in 0..slots {
            put_v2(&mut ring, i, &[0x44; 60], 60, USER, 0);
        }
        assert_eq!(drain(&mut ring).0, RX_BATCH);
        ring.release_held();
        assert_eq!(drain(&mut ring).0, slots - RX_BATCH);
        ring.release_held();
        assert_eq!(ring.next, 0, "wrapped around");
        // The kernel goes on at slot 0.
        put_v2(&mut ring, 0, &[0x44; 60], 60, USER, 0);
        assert_eq!(drain(&mut ring).0, 1);
    }

    #[test]
    fn pinning_to_an_allowed_cpu_works_and_out_of_range_fails() {
        // On a thread of its own: the pin must not outlive the test.
        std::thread::spawn(|| {
            let cpus = allowed_cpus();
            assert!(!cpus.is_empty());
            pin_current_thread(cpus[cpus.len() - 1]).expect("pin to an allowed CPU");
            assert_eq!(allowed_cpus(), vec![cpus[cpus.len() - 1]]);
            assert!(pin_current_thread(CPU_SET_BITS).is_err());
        })
        .join()
        .expect("pinning thread");
    }

    proptest! {
        #[test]
        fn any_ipv4_flow_hashes_alike_both_ways(
            client in any::<u32>(), backend in any::<u32>(), cport in any::<u16>(),
            bport in any::<u16>(), vport in any::<u16>(), tcp in any::<bool>(), options in 0usize..11,
        ) {
            let (client, backend) = (Ipv4Addr::from(client), Ipv4Addr::from(backend));
            prop_assume!(client != VIP4 && client != VIP4B);
            let proto = if tcp { TCP } else { UDP };
            let prog = fanout_program(&vips());
            let mut fwd = v4(client, cport, VIP4B, vport, proto);
            fwd.options = options;
            let rev = v4(backend, bport, client, cport, proto);
            prop_assert_eq!(hash(&prog, &fwd.frame()), hash(&prog, &rev.frame()));
        }

        #[test]
        fn any_ipv6_flow_hashes_alike_both_ways(
            client in any::<u128>(), backend in any::<u128>(), cport in any::<u16>(),
            bport in any::<u16>(), tcp in any::<bool>(),
        ) {
            let (client, backend) = (Ipv6Addr::from(client), Ipv6Addr::from(backend));
            prop_assume!(client != vip6());
            let proto = if tcp { TCP } else { UDP };
            let prog = fanout_program(&vips());
            let fwd = v6_frame(client, cport, vip6(), 443, proto);
            let rev = v6_frame(backend, bport, client, cport, proto);
            prop_assert_eq!(hash(&prog, &fwd), hash(&prog, &rev));
        }
    }
}
