//! The packet pipeline of one worker: LVS-NAT (DNAT) forwarding, reverse
//! NAT, ICMP error translation, and the answers a VIP owes its link (ARP,
//! neighbour advertisements, echo replies).
//!
//! Owns the worker's connection table, its scheduler cursors and its
//! per-backend connection counts. Sans-IO: it is handed one frame at a
//! time with the current snapshots and `now` in milliseconds, rewrites the
//! frame in place and returns a [`Verdict`]; frames it builds itself (ARP
//! answers, ICMP errors, announcements) wait in a small pool until the
//! worker sends them with [`Pipeline::built_frames`]. It must not touch
//! clocks, sockets, locks or the kernel, and must not allocate per packet.
//!
//! # What happens to a frame
//!
//! | frame                                              | action |
//! |----------------------------------------------------|--------|
//! | longer than the I/O slot (GRO/TSO super-frame)      | drop, `oversize` |
//! | ARP request for a VIP answered on this link         | ARP reply, in place |
//! | NDP solicitation for a VIP answered on this link    | neighbour advertisement |
//! | ICMP/ICMPv6 echo request to a VIP                   | echo reply, in place |
//! | TCP/UDP to VIP:port of a service                    | forward NAT to a backend |
//! | TCP/UDP from a backend endpoint                     | reverse NAT to the client |
//! | ICMP error to a VIP about a flow we sent to a client | translated, to the backend |
//! | ICMP error about a flow we sent to a backend        | translated, to the client |
//! | anything else (the node's own traffic)              | left to the kernel, `kernel_passed` |
//!
//! Packets we act on are checked: IPv4 header checksum, no fragments, no
//! IPv4 options or IPv6 extension headers (dropped and counted: the
//! dataplane neither reassembles nor forwards source routes), TTL/hop limit
//! above 1 (else an ICMP time-exceeded goes back and the packet is dropped).
//!
//! # Checksums
//!
//! Rewrites update checksums incrementally (RFC 1624), so a packet that
//! arrived with a bad L4 checksum leaves with a bad checksum and the end
//! host drops it, as with any router. The L4 checksum is verified in full
//! only on packets that create state or get an answer from the gateway: a
//! connection's first packet (TCP SYN, first UDP datagram), echo requests,
//! ICMP errors, neighbour solicitations. A frame whose checksum the kernel
//! has not computed yet (`csum_not_ready`, locally generated traffic on a
//! veth) gets a full checksum after the rewrite instead.
//!
//! # Connections
//!
//! A TCP connection starts only with a SYN (without ACK); other segments
//! to a VIP without an entry are dropped (`no_connection`), as IPVS does.
//! A UDP flow starts with any datagram. A connection keeps its backend for
//! its life, even when the backend's weight drops to 0 or it is removed
//! from the service (the snapshot keeps removed backends as "retired"
//! until their connections end); a connection whose backend vanished
//! entirely is removed and its packets dropped (`no_backend`).

use std::hash::Hasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::checksum;
use crate::conntrack::{
    ClientEndpoint, ConnTable, ConnTableConfig, ConnTableError, Direction, Opening, Refused,
    ReleaseReason, Released, TcpFlags,
};
use crate::counters::{BackendGauges, Counter, DropReason, WorkerCounters};
use crate::flow::{Addr16, FlowTuple, L4Proto};
use crate::io::{RxMeta, Verdict};
use crate::sched::{SchedState, SchedulerKind};
use crate::snapshot::{
    Backend, FxHashMap, FxHasher, NextHop, NextHopMiss, NextHopSnapshot, ServiceSnapshot,
};
use crate::wire::{
    self, icmpv4, icmpv6, ipv4, ipv6, ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress,
    EthernetFrame, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol,
    Ipv4Packet, Ipv4Quote, Ipv6Packet, Ipv6Quote, NdpRepr, NeighborFlags,
};

/// Size of one slot of the pool of frames the pipeline builds itself.
const BUILT_SLOT: usize = 1536;
/// Slots in that pool: frames built per batch before new ones are refused.
const BUILT_SLOTS: usize = 128;
/// Neighbour misses remembered per batch (more are dropped; the next
/// packet asks again).
const MAX_MISSES: usize = 32;
/// TTL of packets the gateway originates (echo replies, ICMP errors).
const ORIGIN_TTL: u8 = 64;
/// Entries of the per-worker next-hop cache for reply destinations
/// (direct-mapped by address).
const HOP_CACHE: usize = 256;

/// How a worker's pipeline is built.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Worker index: spreads rr/wrr starting points and seeds the table.
    pub worker: usize,
    pub conn: ConnTableConfig,
    /// Most connections expired per [`Pipeline::expire`] call.
    pub expire_budget: usize,
    /// Pick up TCP flows mid-flow on Maglev and source-hash services (see
    /// [`Opening::MidFlow`]); off, only a SYN opens a connection.
    pub mid_flow_pickup: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            worker: 0,
            conn: ConnTableConfig::default(),
            expire_budget: 256,
            mid_flow_pickup: true,
        }
    }
}

/// One worker's packet pipeline. See the module documentation.
pub struct Pipeline {
    conns: ConnTable,
    counters: Arc<WorkerCounters>,
    worker: usize,
    expire_budget: usize,
    mid_flow_pickup: bool,
    /// rr/wrr cursors per service id.
    sched: FxHashMap<u32, SchedState>,
    /// This worker's live connections per backend id (for lc and status).
    active: Arc<BackendGauges>,
    lc_scratch: Vec<u32>,
    built: BuiltPool,
    misses: Vec<(u32, Addr16)>,
    /// Fingerprint of the VIP set last announced (GARP / unsolicited NA).
    announced: Option<u64>,
    /// Next hop of each backend id, valid for one next-hop snapshot
    /// (keyed by its stamp): saves the route scan and neighbour lookup per
    /// packet.
    backend_hops: Vec<Option<(u64, NextHop)>>,
    /// Next hops of recent reply destinations (clients), the same way:
    /// with a gateway route every client shares one hop, and on a
    /// connected route a busy client's hop stays cached.
    client_hops: Box<[CachedHop]>,
}

/// One entry of [`Pipeline::client_hops`]: `hop` is what the next-hop
/// snapshot with stamp `stamp` resolves `dst` to.
#[derive(Debug, Clone, Copy)]
struct CachedHop {
    stamp: u64,
    dst: Addr16,
    hop: NextHop,
}

impl CachedHop {
    /// Matches no snapshot: stamps count up from 1 (0 is the empty
    /// default, which resolves nothing, so it is never cached either).
    const EMPTY: CachedHop = CachedHop {
        stamp: u64::MAX,
        dst: Addr16([0; 16]),
        hop: NextHop {
            ifindex: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        },
    };
}

/// The outcome of one frame, before it becomes a [`Verdict`] and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Forward NAT done: send on `ifindex`.
    Forward {
        ifindex: u32,
        len: usize,
    },
    /// Reverse NAT done: send on `ifindex`.
    Reply {
        ifindex: u32,
        len: usize,
    },
    /// The frame was turned into an answer in place (counted by the caller
    /// of this variant).
    Answer {
        ifindex: u32,
        len: usize,
    },
    /// The frame is consumed; an answer may wait in the built pool.
    Consumed,
    Drop(DropReason),
    /// Not dataplane traffic: the kernel handles its own copy.
    Pass,
}

use Action::{Consumed, Drop, Pass};

/// The parsed IP layer of a frame. Offsets count from the frame start.
#[derive(Debug, Clone, Copy)]
struct Ip {
    v4: bool,
    l3: usize,
    l4: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    src: Addr16,
    dst: Addr16,
    ttl: u8,
}

/// The TCP or UDP header of a frame.
#[derive(Debug, Clone, Copy)]
struct L4 {
    proto: L4Proto,
    src_port: u16,
    dst_port: u16,
    flags: u8,
}

impl Pipeline {
    pub fn new(config: &PipelineConfig) -> Result<Pipeline, ConnTableError> {
        let mut conn = config.conn;
        conn.hash_seed ^= crate::flow::splitmix64(config.worker as u64 + 1);
        Ok(Pipeline {
            conns: ConnTable::new(&conn)?,
            counters: Arc::new(WorkerCounters::default()),
            worker: config.worker,
            expire_budget: config.expire_budget.max(1),
            mid_flow_pickup: config.mid_flow_pickup,
            sched: FxHashMap::default(),
            active: Arc::new(BackendGauges::default()),
            lc_scratch: Vec::with_capacity(64),
            built: BuiltPool::new(),
            misses: Vec::with_capacity(MAX_MISSES),
            announced: None,
            backend_hops: Vec::new(),
            client_hops: vec![CachedHop::EMPTY; HOP_CACHE].into_boxed_slice(),
        })
    }

    /// This worker's counters (shared with the control plane, which reads).
    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.counters.clone()
    }

    /// The connection table (for status output and tests).
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// Live connections of this worker per backend id (shared with the
    /// control plane, which reads).
    pub fn backend_gauges(&self) -> Arc<BackendGauges> {
        self.active.clone()
    }

    /// Handles one received frame; see the module documentation.
    pub fn process(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
    ) -> Verdict {
        let action = self.classify(now, svc, nh, meta, frame);
        let c = &self.counters;
        match action {
            Action::Forward { ifindex, len } => {
                c.add(Counter::Forwarded, 1);
                Verdict::Tx { ifindex, len }
            }
            Action::Reply { ifindex, len } => {
                c.add(Counter::Replied, 1);
                Verdict::Tx { ifindex, len }
            }
            Action::Answer { ifindex, len } => Verdict::Tx { ifindex, len },
            Consumed => Verdict::Drop,
            Drop(reason) => {
                c.drop_frame(reason);
                Verdict::Drop
            }
            Pass => {
                c.add(Counter::KernelPassed, 1);
                Verdict::Drop
            }
        }
    }

    /// Frames built during this batch, for [`crate::io::PacketIo::send`].
    pub fn built_frames(&self) -> Vec<(u32, &[u8])> {
        self.built.frames().collect()
    }

    pub fn has_built(&self) -> bool {
        !self.built.is_empty()
    }

    pub fn clear_built(&mut self) {
        self.built.clear();
    }

    /// Neighbour misses seen since the last call (deduplicated).
    pub fn take_neighbour_misses(&mut self) -> impl Iterator<Item = (u32, Addr16)> + '_ {
        self.misses.drain(..)
    }

    /// Releases connections that timed out (at most the configured budget)
    /// and publishes the table gauge.
    pub fn expire(&mut self, now: u64) {
        let Pipeline {
            conns,
            active,
            counters,
            expire_budget,
            ..
        } = self;
        let n = conns.expire(now, *expire_budget, |r| release(active, r));
        counters.add(Counter::ConnExpired, n as u64);
        counters.set(Counter::ConnActive, conns.len() as u64);
    }

    /// Queues gratuitous ARP and unsolicited neighbour advertisements for
    /// every VIP to announce on every link it is answered on, if that set
    /// changed since the last announcement. Returns whether it queued any.
    pub fn announce_if_changed(&mut self, svc: &ServiceSnapshot) -> bool {
        let mut h = FxHasher::default();
        for v in svc.vips.iter().filter(|v| v.announce) {
            h.write(&Addr16::from_ip(v.addr).0);
            for i in &v.ifindexes {
                h.write_u32(*i);
            }
        }
        let fingerprint = h.finish();
        if self.announced == Some(fingerprint) {
            return false;
        }
        self.announced = Some(fingerprint);
        let before = self.built.frames.len();
        self.announce(svc);
        self.built.frames.len() > before
    }

    /// Queues gratuitous ARP / unsolicited NA for every VIP to announce
    /// ([`crate::snapshot::Vip::announce`]).
    pub fn announce(&mut self, svc: &ServiceSnapshot) {
        for vip in svc.vips.iter().filter(|v| v.announce) {
            for ifindex in &vip.ifindexes {
                let Some(iface) = svc.interface(*ifindex) else {
                    continue;
                };
                let mac = EthernetAddress(vip.mac.unwrap_or(iface.mac));
                let ok = match vip.addr {
                    IpAddr::V4(a) => self.built.push(*ifindex, |buf| {
                        ArpRepr::gratuitous(mac, a).emit_frame(buf, EthernetAddress::BROADCAST)
                    }),
                    IpAddr::V6(a) => self.built.push(*ifindex, |buf| {
                        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        let flags = NeighborFlags::OVERRIDE;
                        wire::ndp::emit_neighbor_advert_frame(
                            buf,
                            mac,
                            EthernetAddress::from_ipv6_multicast(all_nodes),
                            a,
                            all_nodes,
                            a,
                            flags,
                        )
                    }),
                };
                if ok {
                    let counter = if vip.addr.is_ipv4() {
                        Counter::ArpReplies
                    } else {
                        Counter::NdAdverts
                    };
                    self.counters.add(counter, 1);
                }
            }
        }
    }

    fn classify(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
    ) -> Action {
        if meta.wire_len as usize > frame.len() {
            return Drop(DropReason::Oversize);
        }
        let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
            return Drop(DropReason::Malformed);
        };
        let l3 = eth.header_len();
        match eth.ethertype() {
            EtherType::Arp => self.arp(svc, meta, frame, l3),
            EtherType::Ipv4 => self.ipv4(now, svc, nh, meta, frame, l3),
            EtherType::Ipv6 => self.ipv6(now, svc, nh, meta, frame, l3),
            _ => Pass,
        }
    }

    // ---------------------------------------------------------------- ARP

    fn arp(&mut self, svc: &ServiceSnapshot, meta: &RxMeta, frame: &mut [u8], l3: usize) -> Action {
        let Ok(packet) = ArpPacket::new_checked(&frame[l3..]) else {
            return Pass;
        };
        let Ok(request) = ArpRepr::parse(&packet) else {
            return Pass;
        };
        if request.operation != ArpOperation::Request || request.is_gratuitous() {
            return Pass;
        }
        let target = Addr16::from_v4(request.target_protocol_addr);
        let Some(mac) = svc.answer_mac(target, meta.ifindex) else {
            return Pass;
        };
        let reply = ArpRepr::reply_to(&request, EthernetAddress(mac));
        // The reply is exactly as long as the request (Ethernet + 28 bytes),
        // written over it from the frame start (any VLAN tag goes away: the
        // kernel strips tags before packet sockets see frames anyway).
        match reply.emit_frame(frame, request.source_hardware_addr) {
            Ok(len) => {
                self.counters.add(Counter::ArpReplies, 1);
                Action::Answer {
                    ifindex: meta.ifindex,
                    len,
                }
            }
            Err(_) => Drop(DropReason::Malformed),
        }
    }

    // --------------------------------------------------------------- IPv4

    fn ipv4(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        l3: usize,
    ) -> Action {
        let Ok(packet) = Ipv4Packet::new_checked(&frame[l3..]) else {
            return Drop(DropReason::Malformed);
        };
        // The fixed part of the header as an array: its fields are read
        // without bounds checks. Present: `new_checked` saw the header.
        let Some(Ok(fixed)) = frame
            .get(l3..l3 + ipv4::HEADER_LEN)
            .map(<&[u8; ipv4::HEADER_LEN]>::try_from)
        else {
            return Drop(DropReason::Malformed);
        };
        let head = Ipv4Packet::new_unchecked(fixed);
        let header_len = head.header_len();
        let ip = Ip {
            v4: true,
            l3,
            l4: l3 + header_len,
            end: l3 + usize::from(head.total_len()),
            src: Addr16::from_v4(head.src_addr()),
            dst: Addr16::from_v4(head.dst_addr()),
            ttl: head.ttl(),
        };
        let protocol = head.protocol();
        let to_vip = svc.is_vip(ip.dst);
        if !to_vip && !may_concern_backend(svc, protocol) {
            return Pass;
        }
        // From here on the packet is (probably) ours: check it.
        let checksum_ok = if header_len == ipv4::HEADER_LEN {
            head.verify_checksum()
        } else {
            packet.verify_checksum()
        };
        let checks = if !checksum_ok {
            Some(DropReason::BadIpChecksum)
        } else if head.is_fragment() {
            Some(DropReason::Fragment)
        } else if header_len > ipv4::HEADER_LEN {
            Some(DropReason::IpOptions)
        } else {
            None
        };
        if to_vip {
            if let Some(reason) = checks {
                return Drop(reason);
            }
            return match protocol {
                IpProtocol::Tcp | IpProtocol::Udp => {
                    self.forward_to_vip(now, svc, nh, meta, frame, ip, protocol)
                }
                IpProtocol::Icmp => self.icmpv4_to_vip(svc, nh, meta, frame, ip),
                _ => Drop(DropReason::UnknownProtocol),
            };
        }
        self.backend_side(now, svc, nh, meta, frame, ip, protocol, checks)
    }

    // --------------------------------------------------------------- IPv6

    fn ipv6(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        l3: usize,
    ) -> Action {
        let Ok(packet) = Ipv6Packet::new_checked(&frame[l3..]) else {
            return Drop(DropReason::Malformed);
        };
        let mut ip = Ip {
            v4: false,
            l3,
            l4: l3 + ipv6::HEADER_LEN,
            end: l3 + packet.total_len(),
            src: Addr16::from_v6(packet.src_addr()),
            dst: Addr16::from_v6(packet.dst_addr()),
            ttl: packet.hop_limit(),
        };
        let next = packet.next_header();
        if next == IpProtocol::Icmpv6 {
            if let Some(action) = self.neighbour_solicit(svc, meta, frame, ip) {
                return action;
            }
        }
        let to_vip = svc.is_vip(ip.dst);
        if !to_vip && !may_concern_backend(svc, next) {
            return Pass;
        }
        let chain = match packet.chain() {
            Ok(chain) => chain,
            Err(_) if to_vip => return Drop(DropReason::Malformed),
            Err(_) => return Pass,
        };
        let protocol = chain.upper_protocol;
        let checks = if chain.is_fragment() {
            Some(DropReason::Fragment)
        } else if chain.extension_headers > 0 {
            Some(DropReason::IpOptions)
        } else {
            None
        };
        ip.l4 = l3 + chain.upper_offset;
        if to_vip {
            if let Some(reason) = checks {
                return Drop(reason);
            }
            return match protocol {
                IpProtocol::Tcp | IpProtocol::Udp => {
                    self.forward_to_vip(now, svc, nh, meta, frame, ip, protocol)
                }
                IpProtocol::Icmpv6 => self.icmpv6_to_vip(svc, nh, meta, frame, ip),
                _ => Drop(DropReason::UnknownProtocol),
            };
        }
        self.backend_side(now, svc, nh, meta, frame, ip, protocol, checks)
    }

    /// A neighbour solicitation for a VIP answered on this link: queue the
    /// advertisement. `None` when the packet is not one.
    fn neighbour_solicit(
        &mut self,
        svc: &ServiceSnapshot,
        meta: &RxMeta,
        frame: &[u8],
        ip: Ip,
    ) -> Option<Action> {
        let icmp = Icmpv6Packet::new_checked(frame.get(ip.l4..ip.end)?).ok()?;
        if icmp.msg_type() != Icmpv6Message::NeighborSolicit {
            return None;
        }
        let (target, _source_ll) = NdpRepr::parse_solicit(&icmp).ok()?;
        let our_mac = EthernetAddress(svc.answer_mac(Addr16::from_v6(target), meta.ifindex)?);
        let src = ip.src.to_ip();
        let dst = ip.dst.to_ip();
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
            return None;
        };
        // RFC 4861 7.1.1: hop limit 255 and a valid checksum, else drop.
        if ip.ttl != 255 || !icmp.verify_checksum(src, dst) {
            return Some(Drop(DropReason::BadL4Checksum));
        }
        let eth = EthernetFrame::new_unchecked(frame);
        let (dst_ip, dst_mac, flags) = if src.is_unspecified() {
            // From an address in DAD: answer to all nodes (RFC 4861 7.2.4).
            let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            (
                all,
                EthernetAddress::from_ipv6_multicast(all),
                NeighborFlags::OVERRIDE,
            )
        } else {
            (
                src,
                eth.src_addr(),
                NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            )
        };
        let queued = self.built.push(meta.ifindex, |buf| {
            wire::ndp::emit_neighbor_advert_frame(
                buf, our_mac, dst_mac, target, dst_ip, target, flags,
            )
        });
        if queued {
            self.counters.add(Counter::NdAdverts, 1);
        }
        Some(Consumed)
    }

    // ------------------------------------------------------ forward NAT

    /// TCP or UDP to a VIP: find or create the connection, rewrite to the
    /// backend.
    #[allow(clippy::too_many_arguments)]
    fn forward_to_vip(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
        protocol: IpProtocol,
    ) -> Action {
        let Some(l4) = parse_l4(frame, ip, protocol) else {
            return Drop(DropReason::Malformed);
        };
        let Some(service) = svc.service_for(ip.dst, l4.dst_port, l4.proto) else {
            return Drop(DropReason::NoService);
        };
        if ip.ttl <= 1 {
            return self.time_exceeded(meta, frame, ip, ip.dst);
        }
        let client = ClientEndpoint {
            addr: ip.src,
            port: l4.src_port,
            proto: l4.proto,
        };
        let flags = TcpFlags::from_bits(l4.flags);
        let backend = match self.conns.lookup_forward(&client, service.id) {
            Some(found) => match svc.backend(found.backend) {
                Some(b) => {
                    self.conns
                        .on_packet(found.id, Direction::Forward, flags, now);
                    b
                }
                None => {
                    if let Some(r) = self.conns.remove(found.id) {
                        release(&self.active, &r);
                    }
                    return Drop(DropReason::NoBackend);
                }
            },
            None => {
                let pick_up = self.mid_flow_pickup && service.scheduler.is_consistent();
                let Some(opening) = opening_of(l4.proto, flags, pick_up) else {
                    return Drop(DropReason::NoConnection);
                };
                if !meta.csum_not_ready && !l4_checksum_ok(frame, ip, l4.proto) {
                    return Drop(DropReason::BadL4Checksum);
                }
                match self.open(now, service, client, ip.dst, l4.dst_port, opening) {
                    Ok(b) => b,
                    Err(reason) => return Drop(reason),
                }
            }
        };
        let hop = match self.backend_hop(nh, backend) {
            Ok(hop) => hop,
            Err(reason) => return Drop(reason),
        };
        let to = Endpoint {
            addr: backend.addr,
            port: backend.port,
        };
        match translate(frame, ip, l4.proto, meta, Side::Dst, to, hop) {
            Some(()) => Action::Forward {
                ifindex: hop.ifindex,
                len: ip.end,
            },
            None => Drop(DropReason::Malformed),
        }
    }

    /// Picks a backend for a new connection and inserts it.
    fn open<'s>(
        &mut self,
        now: u64,
        service: &'s crate::snapshot::Service,
        client: ClientEndpoint,
        vip: Addr16,
        vip_port: u16,
        opening: Opening,
    ) -> Result<&'s Backend, DropReason> {
        let flow = FlowTuple {
            client: client.addr,
            client_port: client.port,
            vip,
            vip_port,
            proto: client.proto,
        };
        self.lc_scratch.clear();
        if service.scheduler == SchedulerKind::Lc {
            for b in &service.backends {
                self.lc_scratch.push(self.active.get(b.id));
            }
        }
        let worker = self.worker;
        let state = self
            .sched
            .entry(service.id)
            .or_insert_with(|| SchedState::starting_at(worker));
        let index = service
            .sched
            .pick(state, &flow, &self.lc_scratch)
            .ok_or(DropReason::NoBackend)?;
        let backend = service.backends.get(index).ok_or(DropReason::NoBackend)?;
        match self
            .conns
            .insert_as(opening, &client, service.id, backend.id, now)
        {
            Ok(inserted) => {
                if let Some(r) = inserted.released {
                    release(&self.active, &r);
                    let counter = match r.reason {
                        ReleaseReason::Evicted(_) => Counter::ConnEvicted,
                        _ => Counter::ConnExpired,
                    };
                    self.counters.add(counter, 1);
                }
                self.active.inc(backend.id);
                self.counters.add(Counter::ConnNew, 1);
                if opening == Opening::MidFlow {
                    self.counters.add(Counter::ConnPickedUp, 1);
                }
                Ok(backend)
            }
            Err(Refused::TableFull) => Err(DropReason::TableFull),
            Err(Refused::ReplyKeyTaken(_)) => Err(DropReason::ReplyKeyConflict),
            // Looked up just before: cannot exist. Treat as a miss.
            Err(Refused::Exists(_)) => Err(DropReason::NoConnection),
        }
    }

    // ------------------------------------------------------ reverse NAT

    /// A packet not to a VIP that may come from a backend: a TCP/UDP reply
    /// or an ICMP error about a flow we sent to a backend.
    #[allow(clippy::too_many_arguments)]
    fn backend_side(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
        protocol: IpProtocol,
        checks: Option<DropReason>,
    ) -> Action {
        match protocol {
            IpProtocol::Tcp | IpProtocol::Udp => {
                let Some(l4) = parse_l4(frame, ip, protocol) else {
                    return Pass;
                };
                let Some(backend_id) = svc.backend_id(ip.src, l4.src_port, l4.proto) else {
                    return Pass;
                };
                if nh.is_local(ip.dst) {
                    // A backend answering the node itself (a health check).
                    return Pass;
                }
                if let Some(reason) = checks {
                    return Drop(reason);
                }
                self.reply(now, svc, nh, meta, frame, ip, l4, backend_id)
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 => {
                self.icmp_error_from_backend(svc, nh, frame, ip, checks)
            }
            _ => Pass,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        now: u64,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
        l4: L4,
        backend_id: u32,
    ) -> Action {
        let client = ClientEndpoint {
            addr: ip.dst,
            port: l4.dst_port,
            proto: l4.proto,
        };
        let service = match self.conns.lookup_reply(&client, backend_id) {
            Some(found) => {
                let Some(service) = svc.service_by_id(found.service) else {
                    return Drop(DropReason::NoService);
                };
                if ip.ttl <= 1 {
                    return self.time_exceeded(meta, frame, ip, service.vip);
                }
                let flags = TcpFlags::from_bits(l4.flags);
                self.conns.on_packet(found.id, Direction::Reply, flags, now);
                service
            }
            // No connection here (another node opened it, e.g. the master
            // before a planned switchover): a backend that serves one
            // service names its VIP, so the reply can still be translated.
            // Nothing is created; the client's next packet does that.
            None => match svc.sole_service_of(backend_id) {
                Some(service) if ip.ttl > 1 => {
                    self.counters.add(Counter::RepliedWithoutConnection, 1);
                    service
                }
                _ => return Drop(DropReason::ReplyMiss),
            },
        };
        let hop = match self.client_hop(nh, ip.dst) {
            Ok(hop) => hop,
            Err(reason) => return Drop(reason),
        };
        let to = Endpoint {
            addr: service.vip,
            port: service.port,
        };
        match translate(frame, ip, l4.proto, meta, Side::Src, to, hop) {
            Some(()) => Action::Reply {
                ifindex: hop.ifindex,
                len: ip.end,
            },
            None => Drop(DropReason::Malformed),
        }
    }

    // ------------------------------------------------------------- ICMP

    fn icmpv4_to_vip(
        &mut self,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
    ) -> Action {
        let Ok(icmp) = Icmpv4Packet::new_checked(&frame[ip.l4..ip.end]) else {
            return Drop(DropReason::Malformed);
        };
        if !icmp.verify_checksum() {
            return Drop(DropReason::BadL4Checksum);
        }
        let msg = icmp.msg_type();
        if msg == Icmpv4Message::EchoRequest {
            return self.echo_reply(svc, meta, frame, ip);
        }
        if !msg.is_error() {
            return Drop(DropReason::UnknownProtocol);
        }
        self.icmp_error_to_vip(svc, nh, frame, ip)
    }

    fn icmpv6_to_vip(
        &mut self,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
    ) -> Action {
        let Ok(icmp) = Icmpv6Packet::new_checked(&frame[ip.l4..ip.end]) else {
            return Drop(DropReason::Malformed);
        };
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip.src.to_ip(), ip.dst.to_ip()) else {
            return Drop(DropReason::Malformed);
        };
        if !icmp.verify_checksum(src, dst) {
            return Drop(DropReason::BadL4Checksum);
        }
        let msg = icmp.msg_type();
        if msg == Icmpv6Message::EchoRequest {
            return self.echo_reply(svc, meta, frame, ip);
        }
        if !msg.is_error() {
            return Drop(DropReason::UnknownProtocol);
        }
        self.icmp_error_to_vip(svc, nh, frame, ip)
    }

    /// Turns an echo request to a VIP into the reply, in place, back out of
    /// the link it came from to the hop it came from.
    fn echo_reply(
        &mut self,
        svc: &ServiceSnapshot,
        meta: &RxMeta,
        frame: &mut [u8],
        ip: Ip,
    ) -> Action {
        let Some(mac) = svc.answer_mac(ip.dst, meta.ifindex) else {
            return Drop(DropReason::NoService);
        };
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        let back_to = eth.src_addr();
        eth.set_src_addr(EthernetAddress(mac));
        eth.set_dst_addr(back_to);
        if ip.v4 {
            let mut packet = Ipv4Packet::new_unchecked(&mut frame[ip.l3..ip.end]);
            packet.swap_addrs();
            packet.set_ttl(ORIGIN_TTL);
            let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[ip.l4..ip.end]);
            let old = u16::from_be_bytes([u8::from(Icmpv4Message::EchoRequest), icmp.msg_code()]);
            let new = u16::from_be_bytes([u8::from(Icmpv4Message::EchoReply), icmp.msg_code()]);
            icmp.set_msg_type(Icmpv4Message::EchoReply);
            icmp.set_checksum(checksum::update16(icmp.checksum(), old, new));
        } else {
            let mut packet = Ipv6Packet::new_unchecked(&mut frame[ip.l3..ip.end]);
            packet.swap_addrs();
            packet.set_hop_limit(ORIGIN_TTL);
            let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[ip.l4..ip.end]);
            let old = u16::from_be_bytes([u8::from(Icmpv6Message::EchoRequest), icmp.msg_code()]);
            let new = u16::from_be_bytes([u8::from(Icmpv6Message::EchoReply), icmp.msg_code()]);
            icmp.set_msg_type(Icmpv6Message::EchoReply);
            icmp.set_checksum(checksum::update16(icmp.checksum(), old, new));
        }
        self.counters.add(Counter::EchoReplies, 1);
        Action::Answer {
            ifindex: meta.ifindex,
            len: ip.end,
        }
    }

    /// An ICMP error sent to a VIP about a packet we sent to a client
    /// (quote: VIP:port -> client): goes to the connection's backend, with
    /// the outer destination and the quoted source translated.
    fn icmp_error_to_vip(
        &mut self,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        frame: &mut [u8],
        ip: Ip,
    ) -> Action {
        let Some(quote) = Quote::parse(frame, ip) else {
            return Drop(DropReason::Malformed);
        };
        if quote.src != ip.dst {
            return Drop(DropReason::IcmpNoConnection);
        }
        let Some(service) = svc.service_for(quote.src, quote.src_port, quote.proto) else {
            return Drop(DropReason::IcmpNoConnection);
        };
        let client = ClientEndpoint {
            addr: quote.dst,
            port: quote.dst_port,
            proto: quote.proto,
        };
        let Some(found) = self.conns.lookup_forward(&client, service.id) else {
            return Drop(DropReason::IcmpNoConnection);
        };
        let Some(backend) = svc.backend(found.backend) else {
            return Drop(DropReason::NoBackend);
        };
        if ip.ttl <= 1 {
            // Never an ICMP error about an ICMP error.
            return Drop(DropReason::TtlExpired);
        }
        let hop = match self.next_hop(nh, backend.addr) {
            Ok(hop) => hop,
            Err(reason) => return Drop(reason),
        };
        set_ip_dst(frame, ip, backend.addr);
        quote.set_src(frame, ip, backend.addr, backend.port);
        finish_icmp(frame, ip, hop);
        self.counters.add(Counter::IcmpErrorsTranslated, 1);
        Action::Forward {
            ifindex: hop.ifindex,
            len: ip.end,
        }
    }

    /// An ICMP error about a packet we sent to a backend (quote: client ->
    /// backend:port), from the backend or a router on its side: goes to the
    /// client with the outer source and the quoted destination translated
    /// to the VIP (as IPVS does, the outer source becomes the VIP).
    fn icmp_error_from_backend(
        &mut self,
        svc: &ServiceSnapshot,
        nh: &NextHopSnapshot,
        frame: &mut [u8],
        ip: Ip,
        checks: Option<DropReason>,
    ) -> Action {
        let Some(quote) = Quote::parse(frame, ip) else {
            return Pass;
        };
        let Some(backend_id) = svc.backend_id(quote.dst, quote.dst_port, quote.proto) else {
            return Pass;
        };
        if quote.src != ip.dst {
            return Pass;
        }
        if let Some(reason) = checks {
            return Drop(reason);
        }
        if !quote.checksum_ok {
            return Drop(DropReason::BadL4Checksum);
        }
        let client = ClientEndpoint {
            addr: quote.src,
            port: quote.src_port,
            proto: quote.proto,
        };
        let Some(found) = self.conns.lookup_reply(&client, backend_id) else {
            return Drop(DropReason::IcmpNoConnection);
        };
        let Some(service) = svc.service_by_id(found.service) else {
            return Drop(DropReason::NoService);
        };
        if ip.ttl <= 1 {
            return Drop(DropReason::TtlExpired);
        }
        let hop = match self.next_hop(nh, ip.dst) {
            Ok(hop) => hop,
            Err(reason) => return Drop(reason),
        };
        set_ip_src(frame, ip, service.vip);
        quote.set_dst(frame, ip, service.vip, service.port);
        finish_icmp(frame, ip, hop);
        self.counters.add(Counter::IcmpErrorsTranslated, 1);
        Action::Reply {
            ifindex: hop.ifindex,
            len: ip.end,
        }
    }

    /// TTL or hop limit ran out: queue a time-exceeded error from `source`
    /// back to where the packet came from, and drop it.
    fn time_exceeded(&mut self, meta: &RxMeta, frame: &[u8], ip: Ip, source: Addr16) -> Action {
        let eth = EthernetFrame::new_unchecked(frame);
        let (back_to, our_mac) = (eth.src_addr(), eth.dst_addr());
        let offending = &frame[ip.l3..ip.end];
        let queued = self.built.push(meta.ifindex, |buf| {
            let (head, rest) = buf.split_at_mut(wire::ethernet::HEADER_LEN);
            let mut out = EthernetFrame::new_unchecked(head);
            out.set_dst_addr(back_to);
            out.set_src_addr(our_mac);
            let n = match source.to_ip() {
                IpAddr::V4(src) => {
                    out.set_ethertype(EtherType::Ipv4);
                    icmpv4::emit_error_v4(rest, Icmpv4Message::TimeExceeded, 0, src, offending)?
                }
                IpAddr::V6(src) => {
                    out.set_ethertype(EtherType::Ipv6);
                    icmpv6::emit_error_v6(rest, Icmpv6Message::TimeExceeded, 0, src, 0, offending)?
                }
            };
            Ok(wire::ethernet::HEADER_LEN + n)
        });
        if queued {
            self.counters.add(Counter::IcmpErrorsSent, 1);
        }
        Drop(DropReason::TtlExpired)
    }

    /// The next hop of `backend`, from the per-backend cache when it was
    /// filled from this next-hop snapshot.
    #[inline]
    fn backend_hop(
        &mut self,
        nh: &NextHopSnapshot,
        backend: &Backend,
    ) -> Result<NextHop, DropReason> {
        let i = backend.id as usize;
        if let Some(Some((stamp, hop))) = self.backend_hops.get(i) {
            if *stamp == nh.stamp() {
                return Ok(*hop);
            }
        }
        let hop = self.next_hop(nh, backend.addr)?;
        if i < crate::counters::MAX_BACKEND_IDS {
            if self.backend_hops.len() <= i {
                // Grows once per new backend id, not per packet.
                self.backend_hops.resize(i + 1, None);
            }
            self.backend_hops[i] = Some((nh.stamp(), hop));
        }
        Ok(hop)
    }

    /// The next hop of a reply's destination, from [`Pipeline::client_hops`]
    /// when it was filled from this next-hop snapshot.
    #[inline]
    fn client_hop(&mut self, nh: &NextHopSnapshot, dst: Addr16) -> Result<NextHop, DropReason> {
        let slot = hop_slot(&dst);
        let cached = self.client_hops[slot];
        if cached.stamp == nh.stamp() && cached.dst == dst {
            return Ok(cached.hop);
        }
        let hop = self.next_hop(nh, dst)?;
        self.client_hops[slot] = CachedHop {
            stamp: nh.stamp(),
            dst,
            hop,
        };
        Ok(hop)
    }

    fn next_hop(&mut self, nh: &NextHopSnapshot, dst: Addr16) -> Result<NextHop, DropReason> {
        match nh.lookup(dst) {
            Ok(hop) => Ok(hop),
            Err(NextHopMiss::NoRoute) => Err(DropReason::NoRoute),
            Err(NextHopMiss::Unresolved { ifindex, addr }) => {
                if self.misses.len() < MAX_MISSES && !self.misses.contains(&(ifindex, addr)) {
                    self.misses.push((ifindex, addr));
                    self.counters.add(Counter::NeighbourRequests, 1);
                }
                Err(DropReason::NeighbourMiss)
            }
        }
    }
}

/// The [`Pipeline::client_hops`] slot of `dst`: a multiplicative hash of
/// the low 8 bytes (all of an IPv4 address, the interface id of an IPv6
/// one).
#[inline]
fn hop_slot(dst: &Addr16) -> usize {
    let mut low = [0u8; 8];
    low.copy_from_slice(&dst.0[8..]);
    let h = u64::from_le_bytes(low).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as usize % HOP_CACHE
}

/// Whether a packet not addressed to a VIP can still be dataplane traffic:
/// TCP/UDP replies from backends and ICMP errors about backend flows. Only
/// when the service set has backends at all.
#[inline]
fn may_concern_backend(svc: &ServiceSnapshot, protocol: IpProtocol) -> bool {
    !svc.services.is_empty()
        && matches!(
            protocol,
            IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Icmp | IpProtocol::Icmpv6
        )
}

/// How a client's packet without a connection entry opens one; `None`:
/// it opens nothing (a lone RST, a SYN+ACK, a segment without ACK, or a
/// mid-flow ACK unless `pick_up`). Mid-flow pickup is for consistent
/// schedulers only ([`SchedulerKind::is_consistent`]): every node picks
/// the backend the flow already has, so the connection goes on; rr, wrr
/// and lc would pick some other backend, which could only reset it.
fn opening_of(proto: L4Proto, flags: TcpFlags, pick_up: bool) -> Option<Opening> {
    if proto == L4Proto::Udp {
        return Some(Opening::First);
    }
    let syn = flags.contains(TcpFlags::SYN);
    let ack = flags.contains(TcpFlags::ACK);
    if syn && !ack {
        return Some(Opening::First);
    }
    let mid_flow = ack && !syn && !flags.contains(TcpFlags::RST);
    (mid_flow && pick_up).then_some(Opening::MidFlow)
}

/// Drops `r`'s connection from the per-backend counts.
fn release(active: &BackendGauges, r: &Released) {
    active.dec(r.backend);
}

/// Offset of the checksum field in a TCP or UDP header.
fn l4_checksum_at(proto: L4Proto) -> usize {
    match proto {
        L4Proto::Tcp => 16,
        L4Proto::Udp => 6,
    }
}

/// Reads the TCP or UDP header; `None` if it is truncated or its length
/// fields are impossible.
#[inline]
fn parse_l4(frame: &[u8], ip: Ip, protocol: IpProtocol) -> Option<L4> {
    let seg = frame.get(ip.l4..ip.end)?;
    let (proto, flags) = match protocol {
        IpProtocol::Tcp => {
            let offset = usize::from(*seg.get(12)? >> 4) * 4;
            if offset < 20 || offset > seg.len() {
                return None;
            }
            (L4Proto::Tcp, seg[13])
        }
        IpProtocol::Udp => {
            let len = usize::from(u16::from_be_bytes([*seg.get(4)?, *seg.get(5)?]));
            if len < 8 || len != seg.len() {
                return None;
            }
            (L4Proto::Udp, 0)
        }
        _ => return None,
    };
    Some(L4 {
        proto,
        src_port: u16::from_be_bytes([seg[0], seg[1]]),
        dst_port: u16::from_be_bytes([seg[2], seg[3]]),
        flags,
    })
}

/// The destination address in the frame (after any rewrite).
fn ip_dst_now(frame: &[u8], ip: Ip) -> IpAddr {
    if ip.v4 {
        IpAddr::V4(Ipv4Packet::new_unchecked(&frame[ip.l3..ip.end]).dst_addr())
    } else {
        IpAddr::V6(Ipv6Packet::new_unchecked(&frame[ip.l3..ip.end]).dst_addr())
    }
}

fn ip_src_now(frame: &[u8], ip: Ip) -> IpAddr {
    if ip.v4 {
        IpAddr::V4(Ipv4Packet::new_unchecked(&frame[ip.l3..ip.end]).src_addr())
    } else {
        IpAddr::V6(Ipv6Packet::new_unchecked(&frame[ip.l3..ip.end]).src_addr())
    }
}

/// Full verification of a TCP/UDP checksum. A UDP checksum of 0 over IPv4
/// means "none" and passes.
fn l4_checksum_ok(frame: &[u8], ip: Ip, proto: L4Proto) -> bool {
    let seg = &frame[ip.l4..ip.end];
    if proto == L4Proto::Udp && ip.v4 && seg[6] == 0 && seg[7] == 0 {
        return true;
    }
    let pseudo = pseudo_l4(frame, ip, proto);
    checksum::combine(&[pseudo, checksum::sum(seg)]) == 0xffff
}

/// The pseudo-header sum of the packet's L4 segment, with the addresses as
/// they are in the frame now (after any rewrite).
fn pseudo_l4(frame: &[u8], ip: Ip, proto: L4Proto) -> u16 {
    let src = ip_src_now(frame, ip);
    let dst = ip_dst_now(frame, ip);
    let len = (ip.end - ip.l4) as u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, proto as u8, len),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(s, d, proto as u8, len),
        // Same family by construction.
        _ => 0,
    }
}

/// Rewrites the IP destination, updating the IPv4 header checksum (for
/// the ICMP translations, which recompute their own checksum).
fn set_ip_dst(frame: &mut [u8], ip: Ip, to: Addr16) {
    match to.to_ip() {
        IpAddr::V4(a) => Ipv4Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_dst_addr(a),
        IpAddr::V6(a) => Ipv6Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_dst_addr(a),
    }
}

fn set_ip_src(frame: &mut [u8], ip: Ip, to: Addr16) {
    match to.to_ip() {
        IpAddr::V4(a) => Ipv4Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_src_addr(a),
        IpAddr::V6(a) => Ipv6Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_src_addr(a),
    }
}

/// Which endpoint of a packet NAT replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Forward NAT: the destination (VIP:port) becomes the backend's.
    Dst,
    /// Reverse NAT: the source (backend) becomes the VIP:port.
    Src,
}

/// An address and port a NAT rewrite writes.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    addr: Addr16,
    port: u16,
}

/// The NAT rewrite of one side plus, for frames whose checksum the kernel
/// left to the NIC, the full L4 checksum. `None` only if the L4 header is
/// missing, which `parse_l4` has already ruled out.
#[inline(always)]
fn translate(
    frame: &mut [u8],
    ip: Ip,
    proto: L4Proto,
    meta: &RxMeta,
    side: Side,
    to: Endpoint,
    hop: NextHop,
) -> Option<()> {
    nat(frame, ip, proto, side, to, hop)?;
    if meta.csum_not_ready {
        fill_l4_checksum(frame, ip, proto);
    }
    Some(())
}

/// The whole rewrite of a NATed TCP/UDP packet, in place: the `side`
/// address and port become `to`, the TTL or hop limit drops by one, the
/// MACs become the next hop's. The L4 checksum gets one incremental update
/// for address and port together, the IPv4 header checksum one for address
/// and TTL together (RFC 1624; the same values as updating field by
/// field). The caller has checked `ip.ttl > 1` and that the L4 header is
/// in the frame (`parse_l4`); `None` (nothing written) if it is not.
#[inline(always)]
fn nat(
    frame: &mut [u8],
    ip: Ip,
    proto: L4Proto,
    side: Side,
    to: Endpoint,
    hop: NextHop,
) -> Option<()> {
    let csum_at = l4_checksum_at(proto);
    let seg = frame.get_mut(ip.l4..ip.l4 + csum_at + 2)?;
    let (old, port_at) = match side {
        Side::Dst => (ip.dst, 2),
        Side::Src => (ip.src, 0),
    };
    let old_port = u16::from_be_bytes([seg[port_at], seg[port_at + 1]]);
    seg[port_at..port_at + 2].copy_from_slice(&to.port.to_be_bytes());
    let ttl = ip.ttl.saturating_sub(1);
    let addr_delta = if ip.v4 {
        let h: &mut [u8; 20] = frame.get_mut(ip.l3..ip.l3 + 20)?.try_into().ok()?;
        let at = if side == Side::Dst { 16 } else { 12 };
        h[at..at + 4].copy_from_slice(&to.addr.0[12..]);
        let delta = checksum::delta32(v4_word(&old), v4_word(&to.addr));
        // TTL shares its 16-bit word with the protocol number.
        let ttl_delta = checksum::delta16(
            u16::from_be_bytes([ip.ttl, h[9]]),
            u16::from_be_bytes([ttl, h[9]]),
        );
        h[8] = ttl;
        let csum = checksum::update_by(u16::from_be_bytes([h[10], h[11]]), delta + ttl_delta);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        delta
    } else {
        let h: &mut [u8; 40] = frame.get_mut(ip.l3..ip.l3 + 40)?.try_into().ok()?;
        let at = if side == Side::Dst { 24 } else { 8 };
        h[at..at + 16].copy_from_slice(&to.addr.0);
        h[7] = ttl;
        checksum::delta128(&old.0, &to.addr.0)
    };
    let delta = addr_delta + checksum::delta16(old_port, to.port);
    let seg = frame.get_mut(ip.l4 + csum_at..ip.l4 + csum_at + 2)?;
    let csum = u16::from_be_bytes([seg[0], seg[1]]);
    let csum = match proto {
        L4Proto::Tcp => checksum::update_by(csum, delta),
        L4Proto::Udp => checksum::udp_update_by(csum, delta),
    };
    seg.copy_from_slice(&csum.to_be_bytes());
    let macs = frame.get_mut(..12)?;
    macs[..6].copy_from_slice(&hop.dst_mac);
    macs[6..].copy_from_slice(&hop.src_mac);
    Some(())
}

/// The IPv4 address of a v4-mapped [`Addr16`] as a number.
#[inline]
fn v4_word(a: &Addr16) -> u32 {
    u32::from_be_bytes([a.0[12], a.0[13], a.0[14], a.0[15]])
}

/// Computes the L4 checksum in full, for a frame whose checksum the kernel
/// left to the NIC (`csum_not_ready`), after the rewrite.
fn fill_l4_checksum(frame: &mut [u8], ip: Ip, proto: L4Proto) {
    let at = ip.l4 + l4_checksum_at(proto);
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let pseudo = pseudo_l4(frame, ip, proto);
    let sum = checksum::sum(&frame[ip.l4..ip.end]);
    let mut csum = !checksum::combine(&[pseudo, sum]);
    if proto == L4Proto::Udp {
        csum = checksum::udp_finish(csum);
    }
    frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
}

/// The end of a translated ICMP error's rewrite: TTL and MACs; the ICMP
/// checksum is computed in full (errors are rare, and the quote changed in
/// several places).
fn finish_icmp(frame: &mut [u8], ip: Ip, hop: NextHop) {
    decrement_ttl(frame, ip);
    set_macs(frame, hop);
    if ip.v4 {
        Icmpv4Packet::new_unchecked(&mut frame[ip.l4..ip.end]).fill_checksum();
    } else {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip_src_now(frame, ip), ip_dst_now(frame, ip))
        else {
            return;
        };
        Icmpv6Packet::new_unchecked(&mut frame[ip.l4..ip.end]).fill_checksum(src, dst);
    }
}

fn decrement_ttl(frame: &mut [u8], ip: Ip) {
    let ttl = ip.ttl.saturating_sub(1);
    if ip.v4 {
        Ipv4Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_ttl(ttl);
    } else {
        Ipv6Packet::new_unchecked(&mut frame[ip.l3..ip.end]).set_hop_limit(ttl);
    }
}

fn set_macs(frame: &mut [u8], hop: NextHop) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_src_addr(EthernetAddress(hop.src_mac));
    eth.set_dst_addr(EthernetAddress(hop.dst_mac));
}

/// The TCP/UDP packet quoted in an ICMP error: where it starts and its
/// endpoints.
#[derive(Debug, Clone, Copy)]
struct Quote {
    /// Offset of the quoted IP header in the frame.
    at: usize,
    proto: L4Proto,
    src: Addr16,
    src_port: u16,
    dst: Addr16,
    dst_port: u16,
    /// The outer ICMP checksum verifies (errors from the backend side are
    /// not checked before this point).
    checksum_ok: bool,
}

impl Quote {
    fn parse(frame: &[u8], ip: Ip) -> Option<Quote> {
        let icmp_bytes = frame.get(ip.l4..ip.end)?;
        let at = ip.l4 + 8;
        if ip.v4 {
            let icmp = Icmpv4Packet::new_checked(icmp_bytes).ok()?;
            if !icmp.msg_type().is_error() {
                return None;
            }
            let checksum_ok = icmp.verify_checksum();
            let q = Ipv4Quote::new_checked(icmp.data()).ok()?;
            if !q.has_ports() {
                return None;
            }
            let proto = L4Proto::from_ip_proto(u8::from(q.protocol()))?;
            Some(Quote {
                at,
                proto,
                src: Addr16::from_v4(q.src_addr()),
                src_port: q.src_port(),
                dst: Addr16::from_v4(q.dst_addr()),
                dst_port: q.dst_port(),
                checksum_ok,
            })
        } else {
            let icmp = Icmpv6Packet::new_checked(icmp_bytes).ok()?;
            if !icmp.msg_type().is_error() {
                return None;
            }
            let (IpAddr::V6(s), IpAddr::V6(d)) = (ip.src.to_ip(), ip.dst.to_ip()) else {
                return None;
            };
            let checksum_ok = icmp.verify_checksum(s, d);
            let q = Ipv6Quote::new_checked(icmp.data()).ok()?;
            let proto = L4Proto::from_ip_proto(u8::from(q.protocol()))?;
            Some(Quote {
                at,
                proto,
                src: Addr16::from_v6(q.src_addr()),
                src_port: q.src_port()?,
                dst: Addr16::from_v6(q.dst_addr()),
                dst_port: q.dst_port()?,
                checksum_ok,
            })
        }
    }

    /// Rewrites the quoted source endpoint (forward translation).
    fn set_src(&self, frame: &mut [u8], ip: Ip, addr: Addr16, port: u16) {
        let bytes = &mut frame[self.at..ip.end];
        match addr.to_ip() {
            IpAddr::V4(a) => {
                let mut q = Ipv4Quote::new_unchecked(bytes);
                q.set_src_addr(a);
                q.set_src_port(port);
            }
            IpAddr::V6(a) => {
                // Parsed by `Quote::parse` already; cannot fail here.
                if let Ok(mut q) = Ipv6Quote::new_checked(bytes) {
                    q.set_src_addr(a);
                    q.set_src_port(port);
                }
            }
        }
    }

    /// Rewrites the quoted destination endpoint (reverse translation).
    fn set_dst(&self, frame: &mut [u8], ip: Ip, addr: Addr16, port: u16) {
        let bytes = &mut frame[self.at..ip.end];
        match addr.to_ip() {
            IpAddr::V4(a) => {
                let mut q = Ipv4Quote::new_unchecked(bytes);
                q.set_dst_addr(a);
                q.set_dst_port(port);
            }
            IpAddr::V6(a) => {
                // Parsed by `Quote::parse` already; cannot fail here.
                if let Ok(mut q) = Ipv6Quote::new_checked(bytes) {
                    q.set_dst_addr(a);
                    q.set_dst_port(port);
                }
            }
        }
    }
}

/// Fixed pool of frames the pipeline builds during one batch. Allocated
/// once; a full pool refuses new frames (the caller counts nothing was
/// sent: the triggering packet's own counter still shows it).
struct BuiltPool {
    buf: Box<[u8]>,
    frames: Vec<(u32, usize)>,
}

impl BuiltPool {
    fn new() -> BuiltPool {
        BuiltPool {
            buf: vec![0u8; BUILT_SLOT * BUILT_SLOTS].into_boxed_slice(),
            frames: Vec::with_capacity(BUILT_SLOTS),
        }
    }

    /// Builds one frame into the next slot with `emit`, which returns the
    /// frame length. Returns whether a frame was queued.
    fn push(&mut self, ifindex: u32, emit: impl FnOnce(&mut [u8]) -> wire::Result<usize>) -> bool {
        let slot = self.frames.len();
        if slot >= BUILT_SLOTS {
            return false;
        }
        let buf = &mut self.buf[slot * BUILT_SLOT..(slot + 1) * BUILT_SLOT];
        buf.fill(0);
        match emit(buf) {
            Ok(len) if len <= BUILT_SLOT => {
                self.frames.push((ifindex, len));
                true
            }
            _ => false,
        }
    }

    fn frames(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, (ifindex, len))| (*ifindex, &self.buf[i * BUILT_SLOT..i * BUILT_SLOT + len]))
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        self.frames.clear();
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
