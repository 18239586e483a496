//! Immutable tables the control plane publishes to the workers.
//!
//! Two snapshots, swapped independently because they change at different
//! rates: [`ServiceSnapshot`] (VIPs, services, backends, scheduler tables;
//! changes with configuration and health) and [`NextHopSnapshot`] (routes and
//! neighbour MACs mirrored from the kernel; changes whenever a neighbour is
//! learnt). Workers see them through [`Published`], which they read between
//! batches with a per-worker cache so the packet path touches no shared
//! written cache line unless a new snapshot was published.
//!
//! Identity that outlives a snapshot: service ids and backend ids are
//! assigned by the control plane, never reused during the daemon's life, so
//! connection entries stay meaningful across snapshot swaps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::flow::{Addr16, L4Proto};
use crate::sched::{SchedTable, SchedulerKind};

/// A fast, non-keyed hasher for small fixed-size keys (FxHash). Safe here:
/// keys are configuration (VIPs, backends), not attacker-chosen flow data.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// Backend ids below this are also kept in an array indexed by id.
const DENSE_IDS: usize = 1 << 16;

/// A backend endpoint as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id of the endpoint (address, port, protocol), unique for the
    /// daemon's life (see module doc): the same endpoint in two services
    /// has one id, so a reply names one backend. Assigned densely from 0
    /// (per-backend gauges are indexed by it).
    pub id: u32,
    pub addr: Addr16,
    pub port: u16,
    pub weight: u32,
}

/// One VIP:port:protocol service.
#[derive(Debug)]
pub struct Service {
    /// Stable id, unique for the daemon's life.
    pub id: u32,
    pub name: String,
    pub vip: Addr16,
    pub port: u16,
    pub proto: L4Proto,
    pub scheduler: SchedulerKind,
    /// Backends in scheduler order; `sched` indexes into this.
    pub backends: Vec<Backend>,
    pub sched: SchedTable,
}

/// A dataplane interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// A VIP address the dataplane answers ARP/ND and echo requests for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    /// Interfaces on which it is answered (all client-facing links).
    pub ifindexes: Vec<u32>,
    /// The MAC it is answered with and announced from: a VRRP virtual MAC
    /// (RFC 5798 section 7.3), or `None` for the link's own.
    pub mac: Option<[u8; 6]>,
    /// Worker 0 announces it (gratuitous ARP / unsolicited NA) when the VIP
    /// set changes. `false` for a VRRP instance's VIPs: the instance
    /// announces them itself, with its own repeat, delay and refresh.
    pub announce: bool,
}

/// Where a backend reply comes from: which backend id and which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub addr: Addr16,
    pub port: u16,
    pub proto: L4Proto,
}

/// Services, backends, VIPs: everything configuration and health decide.
#[derive(Debug, Default)]
pub struct ServiceSnapshot {
    pub generation: u64,
    pub services: Vec<Service>,
    pub vips: Vec<Vip>,
    pub interfaces: Vec<Interface>,
    /// (VIP, port, protocol) -> index into `services`.
    by_vip: EndpointMap,
    by_id: FxHashMap<u32, usize>,
    /// Service ids below [`DENSE_IDS`] -> index into `services` (`NONE`
    /// where there is none), so replies find their service without
    /// hashing.
    by_id_dense: Vec<u32>,
    /// (backend address, port, protocol) -> backend id.
    by_backend: EndpointMap,
    backends_by_id: FxHashMap<u32, Backend>,
    /// The same backends indexed by id (ids are dense from 0), so the
    /// packet path finds a connection's backend without hashing.
    backends_dense: Vec<Option<Backend>>,
    /// Every VIP address (of a service or of `vips`), port and protocol 0.
    vip_addrs: EndpointMap,
    /// VIPs this node answers for (ARP, ND, echo), with their links and
    /// MAC override.
    answered: FxHashMap<Addr16, (Vec<u32>, Option<[u8; 6]>)>,
    /// Backend id -> index of the one service it serves (`NONE` when it
    /// serves several).
    sole_service: FxHashMap<u32, u32>,
}

impl ServiceSnapshot {
    /// Builds the lookup indexes. `retired` lists backends that left the
    /// configuration but may still have live connections: replies from them
    /// must still be translated until those connections end.
    pub fn new(
        generation: u64,
        services: Vec<Service>,
        vips: Vec<Vip>,
        interfaces: Vec<Interface>,
        retired: Vec<(Backend, L4Proto)>,
    ) -> Self {
        let mut s = ServiceSnapshot {
            generation,
            vips,
            interfaces,
            ..Default::default()
        };
        let backends = retired.len() + services.iter().map(|s| s.backends.len()).sum::<usize>();
        s.by_backend = EndpointMap::with_capacity(backends);
        s.by_vip = EndpointMap::with_capacity(services.len());
        s.vip_addrs = EndpointMap::with_capacity(services.len() + s.vips.len());
        for (b, proto) in retired {
            s.by_backend.insert(b.addr, b.port, proto as u8, b.id);
            s.backends_by_id.insert(b.id, b);
        }
        for (i, svc) in services.iter().enumerate() {
            // Fits: a snapshot never holds 2^32 services.
            let index = i as u32;
            s.by_vip.insert(svc.vip, svc.port, svc.proto as u8, index);
            s.by_id.insert(svc.id, i);
            let id = svc.id as usize;
            if id < DENSE_IDS {
                if s.by_id_dense.len() <= id {
                    s.by_id_dense.resize(id + 1, NONE);
                }
                s.by_id_dense[id] = index;
            }
            s.vip_addrs.insert(svc.vip, 0, 0, 0);
            for b in &svc.backends {
                s.by_backend.insert(b.addr, b.port, svc.proto as u8, b.id);
                s.backends_by_id.insert(b.id, b.clone());
                s.sole_service
                    .entry(b.id)
                    .and_modify(|e| {
                        if *e != index {
                            *e = NONE
                        }
                    })
                    .or_insert(index);
            }
        }
        for (id, b) in &s.backends_by_id {
            let i = *id as usize;
            if i < DENSE_IDS {
                if s.backends_dense.len() <= i {
                    s.backends_dense.resize(i + 1, None);
                }
                s.backends_dense[i] = Some(b.clone());
            }
        }
        for v in &s.vips {
            s.vip_addrs.insert(Addr16::from_ip(v.addr), 0, 0, 0);
            s.answered
                .insert(Addr16::from_ip(v.addr), (v.ifindexes.clone(), v.mac));
        }
        s.services = services;
        s
    }

    #[inline]
    pub fn service_for(&self, vip: Addr16, port: u16, proto: L4Proto) -> Option<&Service> {
        let i = self.by_vip.get(&vip, port, proto as u8)?;
        self.services.get(i as usize)
    }

    #[inline]
    pub fn service_by_id(&self, id: u32) -> Option<&Service> {
        match self.by_id_dense.get(id as usize) {
            Some(&i) => self.services.get(i as usize),
            None => self.by_id.get(&id).map(|i| &self.services[*i]),
        }
    }

    /// The only service backend `id` serves in this snapshot, if it serves
    /// exactly one (then a reply from it can be translated without a
    /// connection entry).
    pub fn sole_service_of(&self, id: u32) -> Option<&Service> {
        match self.sole_service.get(&id) {
            Some(&i) if i != NONE => self.services.get(i as usize),
            _ => None,
        }
    }

    #[inline]
    pub fn is_vip(&self, addr: Addr16) -> bool {
        self.vip_addrs.get(&addr, 0, 0).is_some()
    }

    /// Whether this node answers ARP/ND and echo requests for `addr` on
    /// `ifindex`.
    #[inline]
    pub fn answers_on(&self, addr: Addr16, ifindex: u32) -> bool {
        self.answered
            .get(&addr)
            .is_some_and(|(links, _)| links.contains(&ifindex))
    }

    /// The MAC this node answers for `addr` with on `ifindex`: the VIP's
    /// virtual MAC if it has one, else the link's own; `None` if it does
    /// not answer for it there.
    pub fn answer_mac(&self, addr: Addr16, ifindex: u32) -> Option<[u8; 6]> {
        let (links, mac) = self.answered.get(&addr)?;
        if !links.contains(&ifindex) {
            return None;
        }
        mac.or_else(|| self.interface(ifindex).map(|i| i.mac))
    }

    /// The backend id of a reply's source endpoint, if it is a backend.
    #[inline]
    pub fn backend_id(&self, addr: Addr16, port: u16, proto: L4Proto) -> Option<u32> {
        self.by_backend.get(&addr, port, proto as u8)
    }

    #[inline]
    pub fn backend(&self, id: u32) -> Option<&Backend> {
        match self.backends_dense.get(id as usize) {
            Some(slot) => slot.as_ref(),
            None => self.backends_by_id.get(&id),
        }
    }

    pub fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.ifindex == ifindex)
    }
}

/// "No service" in `by_id_dense` (no index reaches it: see `new`).
const NONE: u32 = u32::MAX;

/// A map from an endpoint (16-byte address, port, protocol number) to a
/// `u32`, for the lookups every packet makes: open addressing with linear
/// probing over a flat array, at most a quarter full, so a miss usually
/// costs one multiply and one slot read, and a hit one 24-byte compare.
/// Built once per snapshot; never changes afterwards. Later inserts of the
/// same key replace earlier ones (as `HashMap::insert` does).
#[derive(Debug, Clone, Default)]
struct EndpointMap {
    slots: Box<[EndpointSlot]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EndpointSlot {
    addr: [u8; 16],
    /// [`EndpointSlot::tail`] of the key; 0 marks an empty slot.
    tail: u32,
    value: u32,
}

impl EndpointSlot {
    /// Port, protocol and a "used" bit, packed so a slot compares in two
    /// words and an empty slot is all zeros.
    #[inline]
    fn tail(port: u16, proto: u8) -> u32 {
        (1 << 31) | (u32::from(port) << 8) | u32::from(proto)
    }
}

impl EndpointMap {
    /// Room for `n` keys at a load of at most 1/4.
    fn with_capacity(n: usize) -> EndpointMap {
        let len = (n * 4).next_power_of_two().max(8);
        EndpointMap {
            slots: vec![EndpointSlot::default(); len].into_boxed_slice(),
        }
    }

    #[inline]
    fn home(&self, addr: &[u8; 16], tail: u32) -> usize {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&addr[..8]);
        hi.copy_from_slice(&addr[8..]);
        let x = u64::from_le_bytes(lo) ^ u64::from_le_bytes(hi).rotate_left(23) ^ u64::from(tail);
        let p = u128::from(x) * 0x9e37_79b9_7f4a_7c15_u128;
        (p as u64 ^ (p >> 64) as u64) as usize & (self.slots.len() - 1)
    }

    fn insert(&mut self, addr: Addr16, port: u16, proto: u8, value: u32) {
        if self.slots.is_empty() {
            *self = EndpointMap::with_capacity(1);
        }
        let tail = EndpointSlot::tail(port, proto);
        let mask = self.slots.len() - 1;
        let mut pos = self.home(&addr.0, tail);
        // Bounded: `with_capacity` leaves most slots empty.
        for _ in 0..self.slots.len() {
            let slot = &mut self.slots[pos];
            if slot.tail == 0 || (slot.tail == tail && slot.addr == addr.0) {
                *slot = EndpointSlot {
                    addr: addr.0,
                    tail,
                    value,
                };
                return;
            }
            pos = (pos + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, addr: &Addr16, port: u16, proto: u8) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tail = EndpointSlot::tail(port, proto);
        let mask = self.slots.len() - 1;
        let mut pos = self.home(&addr.0, tail);
        for _ in 0..self.slots.len() {
            let slot = &self.slots[pos];
            if slot.tail == tail && slot.addr == addr.0 {
                return Some(slot.value);
            }
            if slot.tail == 0 {
                return None;
            }
            pos = (pos + 1) & mask;
        }
        None
    }
}

/// A route mirrored from the kernel's main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Prefix in the 16-byte form (IPv4 as `::ffff:0:0/96` + prefix).
    pub prefix: Addr16,
    /// Prefix length counted over the 16-byte form (IPv4 /24 is 96 + 24).
    pub len: u8,
    pub oif: u32,
    pub gateway: Option<Addr16>,
    /// IPv4 route: matches only IPv4 destinations (an IPv6 `::/0` must not
    /// swallow IPv4-mapped addresses, nor the reverse).
    pub v4: bool,
}

impl Route {
    pub fn new(dst: IpAddr, prefix_len: u8, oif: u32, gateway: Option<IpAddr>) -> Self {
        let len = match dst {
            IpAddr::V4(_) => 96 + prefix_len.min(32),
            IpAddr::V6(_) => prefix_len.min(128),
        };
        Route {
            prefix: mask(Addr16::from_ip(dst), len),
            len,
            oif,
            gateway: gateway.map(Addr16::from_ip),
            v4: dst.is_ipv4(),
        }
    }

    #[inline]
    pub fn contains(&self, a: Addr16) -> bool {
        a.is_v4() == self.v4 && mask(a, self.len) == self.prefix
    }
}

fn mask(a: Addr16, len: u8) -> Addr16 {
    let v = u128::from_be_bytes(a.0);
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    };
    Addr16((v & m).to_be_bytes())
}

/// Where to send a frame for a destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Why there is no next hop yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopMiss {
    NoRoute,
    /// The neighbour (`addr` on `ifindex`) has no MAC yet.
    Unresolved {
        ifindex: u32,
        addr: Addr16,
    },
}

/// Source of [`NextHopSnapshot::stamp`].
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

/// Routes and neighbour MACs mirrored from the kernel.
#[derive(Debug, Default)]
pub struct NextHopSnapshot {
    pub generation: u64,
    /// Unique per snapshot built by [`NextHopSnapshot::new`] (0 for the
    /// empty default): what per-worker caches of lookups are keyed by.
    stamp: u64,
    /// Sorted longest prefix first.
    routes: Vec<Route>,
    neighbours: FxHashMap<(u32, Addr16), [u8; 6]>,
    macs: FxHashMap<u32, [u8; 6]>,
    /// The node's own addresses: a backend's packet to one of them is the
    /// kernel's (a health check's answer), not a reply to a client.
    local: Vec<Addr16>,
}

impl NextHopSnapshot {
    /// The same snapshot, knowing the node's own addresses.
    pub fn with_local_addresses(mut self, local: impl IntoIterator<Item = IpAddr>) -> Self {
        self.local = local.into_iter().map(Addr16::from_ip).collect();
        self
    }

    /// Whether `addr` is one of the node's own addresses.
    pub fn is_local(&self, addr: Addr16) -> bool {
        self.local.contains(&addr)
    }

    pub fn new(
        generation: u64,
        mut routes: Vec<Route>,
        neighbours: impl IntoIterator<Item = (u32, IpAddr, [u8; 6])>,
        interface_macs: impl IntoIterator<Item = (u32, [u8; 6])>,
    ) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        NextHopSnapshot {
            generation,
            stamp: NEXT_STAMP.fetch_add(1, Ordering::Relaxed),
            routes,
            neighbours: neighbours
                .into_iter()
                .map(|(i, a, m)| ((i, Addr16::from_ip(a)), m))
                .collect(),
            macs: interface_macs.into_iter().collect(),
            local: Vec::new(),
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// A number no other snapshot built in this process has (the empty
    /// default, which resolves nothing, has 0): a cache of [`Self::lookup`]
    /// results is valid while the stamp it was filled under is current.
    /// Unlike `generation`, it does not depend on the publisher counting.
    #[inline]
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Whether the MAC of `addr` on `ifindex` is known.
    pub fn has_neighbour(&self, ifindex: u32, addr: Addr16) -> bool {
        self.neighbours.contains_key(&(ifindex, addr))
    }

    /// Longest-prefix match, then the neighbour MAC of the gateway or of the
    /// destination itself on a connected route.
    #[inline]
    pub fn lookup(&self, dst: Addr16) -> Result<NextHop, NextHopMiss> {
        let route = self
            .routes
            .iter()
            .find(|r| r.contains(dst))
            .ok_or(NextHopMiss::NoRoute)?;
        let src_mac = *self.macs.get(&route.oif).ok_or(NextHopMiss::NoRoute)?;
        let hop = route.gateway.unwrap_or(dst);
        match self.neighbours.get(&(route.oif, hop)) {
            Some(mac) => Ok(NextHop {
                ifindex: route.oif,
                src_mac,
                dst_mac: *mac,
            }),
            None => Err(NextHopMiss::Unresolved {
                ifindex: route.oif,
                addr: hop,
            }),
        }
    }
}

/// A snapshot slot the control plane stores into and workers read from.
pub struct Published<T> {
    slot: Arc<ArcSwap<T>>,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Self {
        Published {
            slot: Arc::new(ArcSwap::from_pointee(value)),
        }
    }

    pub fn store(&self, value: T) {
        self.slot.store(Arc::new(value));
    }

    pub fn load(&self) -> Arc<T> {
        self.slot.load_full()
    }

    /// A per-worker reader: reads the shared slot's pointer but only takes a
    /// reference count when a new snapshot was published.
    pub fn reader(&self) -> SnapshotReader<T> {
        SnapshotReader {
            cache: arc_swap::Cache::new(Arc::clone(&self.slot)),
        }
    }
}

/// See [`Published::reader`].
pub struct SnapshotReader<T> {
    cache: arc_swap::Cache<Arc<ArcSwap<T>>, Arc<T>>,
}

impl<T> SnapshotReader<T> {
    #[inline]
    pub fn current(&mut self) -> &Arc<T> {
        self.cache.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr16 {
        Addr16::from_ip(s.parse().unwrap())
    }

    #[test]
    fn longest_prefix_wins_and_gateway_is_resolved() {
        let nh = NextHopSnapshot::new(
            1,
            vec![
                Route::new(
                    "0.0.0.0".parse().unwrap(),
                    0,
                    2,
                    Some("198.18.0.254".parse().unwrap()),
                ),
                Route::new("198.18.20.0".parse().unwrap(), 24, 3, None),
                Route::new("198.18.0.0".parse().unwrap(), 24, 2, None),
            ],
            [
                (2, "198.18.0.254".parse().unwrap(), [2, 0, 0, 0, 0, 0xfe]),
                (3, "198.18.20.2".parse().unwrap(), [2, 0, 0, 0, 0, 2]),
            ],
            [(2, [2, 0, 0, 0, 0, 1]), (3, [2, 0, 0, 0, 0, 3])],
        );
        let hop = nh.lookup(a("198.18.20.2")).unwrap();
        assert_eq!((hop.ifindex, hop.dst_mac[5], hop.src_mac[5]), (3, 2, 3));
        let hop = nh.lookup(a("198.19.1.1")).unwrap();
        assert_eq!((hop.ifindex, hop.dst_mac[5]), (2, 0xfe));
        assert_eq!(
            nh.lookup(a("198.18.0.7")),
            Err(NextHopMiss::Unresolved {
                ifindex: 2,
                addr: a("198.18.0.7")
            })
        );
        assert_eq!(nh.lookup(a("2001:db8::1")), Err(NextHopMiss::NoRoute));
    }

    #[test]
    fn v4_default_route_does_not_match_v6() {
        let r = Route::new("0.0.0.0".parse().unwrap(), 0, 1, None);
        assert!(r.contains(a("203.0.113.1")));
        assert!(!r.contains(a("2001:db8::1")));
        let r6 = Route::new("::".parse().unwrap(), 0, 1, None);
        assert!(r6.contains(a("2001:db8::1")));
        assert!(!r6.contains(a("198.18.0.1")));
    }

    #[test]
    fn endpoint_map_finds_every_key_and_only_those() {
        let mut m = EndpointMap::with_capacity(300);
        let key = |i: u32| {
            let addr = if i.is_multiple_of(2) {
                a(&format!("198.18.{}.{}", i / 256, i % 256))
            } else {
                a(&format!("2001:db8::{i:x}"))
            };
            (
                addr,
                (i % 7) as u16,
                if i.is_multiple_of(3) { 6 } else { 17 },
            )
        };
        for i in 0..300 {
            let (addr, port, proto) = key(i);
            m.insert(addr, port, proto, i);
        }
        for i in 0..300 {
            let (addr, port, proto) = key(i);
            assert_eq!(m.get(&addr, port, proto), Some(i));
            assert_eq!(m.get(&addr, port + 7, proto), None);
            assert_eq!(m.get(&addr, port, 1), None);
        }
        assert_eq!(m.get(&a("198.18.200.1"), 0, 6), None);
        // A later insert of the same key wins, as with HashMap::insert.
        let (addr, port, proto) = key(5);
        m.insert(addr, port, proto, 99);
        assert_eq!(m.get(&addr, port, proto), Some(99));
        assert_eq!(EndpointMap::default().get(&addr, port, proto), None);
    }

    fn svc(id: u32, vip: &str, port: u16, backend: (u32, &str)) -> Service {
        let b = Backend {
            id: backend.0,
            addr: a(backend.1),
            port: 8080,
            weight: 1,
        };
        let sched = crate::sched::SchedBackend::new(crate::sched::endpoint_key(b.addr, b.port), 1);
        Service {
            id,
            name: format!("s{id}"),
            vip: a(vip),
            port,
            proto: L4Proto::Tcp,
            scheduler: SchedulerKind::Rr,
            sched: SchedTable::build(
                SchedulerKind::Rr,
                &[sched],
                &crate::sched::SchedOptions::default(),
            )
            .unwrap(),
            backends: vec![b],
        }
    }

    #[test]
    fn service_lookups_by_endpoint_and_id() {
        // Ids below and above the dense range, and a VIP without services.
        let snap = ServiceSnapshot::new(
            1,
            vec![
                svc(3, "198.18.10.10", 80, (0, "198.18.20.2")),
                svc(100_000, "2001:db8:10::10", 443, (1, "2001:db8:20::2")),
            ],
            vec![Vip {
                mac: None,
                announce: true,
                addr: "198.18.10.11".parse().unwrap(),
                ifindexes: Vec::new(),
            }],
            Vec::new(),
            vec![(
                Backend {
                    id: 7,
                    addr: a("198.18.20.9"),
                    port: 8080,
                    weight: 0,
                },
                L4Proto::Tcp,
            )],
        );
        let found = |vip: &str, port| snap.service_for(a(vip), port, L4Proto::Tcp).map(|s| s.id);
        assert_eq!(found("198.18.10.10", 80), Some(3));
        assert_eq!(found("2001:db8:10::10", 443), Some(100_000));
        assert_eq!(found("198.18.10.10", 443), None);
        assert_eq!(
            snap.service_for(a("198.18.10.10"), 80, L4Proto::Udp)
                .map(|s| s.id),
            None
        );
        assert_eq!(snap.service_by_id(3).map(|s| s.id), Some(3));
        assert_eq!(snap.service_by_id(100_000).map(|s| s.id), Some(100_000));
        for missing in [0, 2, 4, 99_999, u32::MAX] {
            assert!(snap.service_by_id(missing).is_none(), "{missing}");
        }
        for vip in ["198.18.10.10", "2001:db8:10::10", "198.18.10.11"] {
            assert!(snap.is_vip(a(vip)), "{vip}");
        }
        assert!(!snap.is_vip(a("198.18.20.2")));
        assert!(!snap.answers_on(a("198.18.10.11"), 1));
        assert_eq!(
            snap.backend_id(a("198.18.20.2"), 8080, L4Proto::Tcp),
            Some(0)
        );
        assert_eq!(
            snap.backend_id(a("198.18.20.9"), 8080, L4Proto::Tcp),
            Some(7)
        );
        assert_eq!(snap.backend_id(a("198.18.20.2"), 8080, L4Proto::Udp), None);
        assert_eq!(snap.backend(7).map(|b| b.weight), Some(0));
        let empty = ServiceSnapshot::default();
        assert!(!empty.is_vip(a("198.18.10.10")));
        assert!(empty.service_by_id(0).is_none());
    }

    #[test]
    fn every_next_hop_snapshot_has_its_own_stamp() {
        let x = NextHopSnapshot::new(1, Vec::new(), [], []);
        let y = NextHopSnapshot::new(1, Vec::new(), [], []);
        assert_ne!(x.stamp(), y.stamp());
        assert_ne!(x.stamp(), 0);
        assert_eq!(NextHopSnapshot::default().stamp(), 0);
    }
}
