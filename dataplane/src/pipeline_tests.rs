//! Tests of the pipeline: frames built here, processed, and the output
//! checked field by field, with every checksum verified by full
//! recomputation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::sched::{endpoint_key, SchedBackend, SchedOptions, SchedTable, SchedulerKind};
use crate::snapshot::{Interface, Route, Service, Vip};

const CLIENT_IF: u32 = 1;
const BACKEND_IF: u32 = 2;
const GW_CLI_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
const GW_SRV_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb1];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn a16(s: &str) -> Addr16 {
    Addr16::from_ip(ip(s))
}

const VIP4: &str = "198.18.10.10";
const VIP6: &str = "2001:db8:10::10";
const CLIENT4: &str = "198.18.0.2";
const CLIENT6: &str = "2001:db8::2";
const BACKEND4: &str = "198.18.20.2";
const BACKEND6: &str = "2001:db8:20::2";

#[allow(clippy::too_many_arguments)]
fn service(
    id: u32,
    name: &str,
    vip: &str,
    port: u16,
    proto: L4Proto,
    kind: SchedulerKind,
    backend: &str,
    first_id: u32,
) -> Service {
    let backends: Vec<Backend> = [80u16, 81, 82]
        .iter()
        .enumerate()
        .map(|(i, p)| Backend {
            id: first_id + i as u32,
            addr: a16(backend),
            port: *p,
            weight: 1,
        })
        .collect();
    let sched: Vec<SchedBackend> = backends
        .iter()
        .map(|b| SchedBackend::new(endpoint_key(b.addr, b.port), b.weight))
        .collect();
    Service {
        id,
        name: name.into(),
        vip: a16(vip),
        port,
        proto,
        scheduler: kind,
        sched: SchedTable::build(kind, &sched, &SchedOptions::default()).unwrap(),
        backends,
    }
}

fn services() -> ServiceSnapshot {
    services_answered_on(&[CLIENT_IF])
}

/// The test services, with both VIPs answered (ARP, ND, echo) on `links`.
/// No links is what a VRRP backup publishes: forward the VIPs' traffic
/// (ECMP may still send some here) but answer nothing for them.
fn services_answered_on(links: &[u32]) -> ServiceSnapshot {
    let services = vec![
        service(
            1,
            "web",
            VIP4,
            80,
            L4Proto::Tcp,
            SchedulerKind::Maglev,
            BACKEND4,
            0,
        ),
        service(
            2,
            "web6",
            VIP6,
            80,
            L4Proto::Tcp,
            SchedulerKind::Maglev,
            BACKEND6,
            3,
        ),
        service(
            3,
            "udp",
            VIP4,
            7,
            L4Proto::Udp,
            SchedulerKind::Rr,
            BACKEND4,
            6,
        ),
    ];
    let vips = vec![
        Vip {
            mac: None,
            announce: true,
            addr: ip(VIP4),
            ifindexes: links.to_vec(),
        },
        Vip {
            mac: None,
            announce: true,
            addr: ip(VIP6),
            ifindexes: links.to_vec(),
        },
    ];
    let interfaces = vec![
        Interface {
            ifindex: CLIENT_IF,
            name: "vg-cli".into(),
            mac: GW_CLI_MAC,
            mtu: 1500,
        },
        Interface {
            ifindex: BACKEND_IF,
            name: "vg-srv".into(),
            mac: GW_SRV_MAC,
            mtu: 1500,
        },
    ];
    ServiceSnapshot::new(1, services, vips, interfaces, Vec::new())
}

fn nexthops(with_client: bool) -> NextHopSnapshot {
    nexthops_with(with_client, &[])
}

fn nexthops_with(with_client: bool, extra: &[IpAddr]) -> NextHopSnapshot {
    let routes = vec![
        Route::new(ip("198.18.0.0"), 24, CLIENT_IF, None),
        Route::new(ip("198.18.20.0"), 24, BACKEND_IF, None),
        Route::new(ip("2001:db8::"), 64, CLIENT_IF, None),
        Route::new(ip("2001:db8:20::"), 64, BACKEND_IF, None),
    ];
    let mut neigh = vec![
        (BACKEND_IF, ip(BACKEND4), BACKEND_MAC),
        (BACKEND_IF, ip(BACKEND6), BACKEND_MAC),
    ];
    if with_client {
        neigh.push((CLIENT_IF, ip(CLIENT4), CLIENT_MAC));
        neigh.push((CLIENT_IF, ip(CLIENT6), CLIENT_MAC));
    }
    for a in extra {
        neigh.push((CLIENT_IF, *a, CLIENT_MAC));
    }
    NextHopSnapshot::new(
        1,
        routes,
        neigh,
        [(CLIENT_IF, GW_CLI_MAC), (BACKEND_IF, GW_SRV_MAC)],
    )
}

struct Bench {
    p: Pipeline,
    svc: ServiceSnapshot,
    nh: NextHopSnapshot,
    now: u64,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            p: Pipeline::new(&PipelineConfig::default()).unwrap(),
            svc: services(),
            nh: nexthops(true),
            now: 1000,
        }
    }

    /// Runs one frame; returns the verdict and the frame as it is after.
    fn run(&mut self, ifindex: u32, mut frame: Vec<u8>) -> (Verdict, Vec<u8>) {
        self.run_meta(
            RxMeta {
                ifindex,
                wire_len: frame.len() as u32,
                csum_not_ready: false,
            },
            &mut frame,
        )
    }

    fn run_meta(&mut self, meta: RxMeta, frame: &mut [u8]) -> (Verdict, Vec<u8>) {
        let v = self.p.process(self.now, &self.svc, &self.nh, &meta, frame);
        let out = match v {
            Verdict::Tx { len, .. } => frame[..len].to_vec(),
            Verdict::Drop => Vec::new(),
        };
        (v, out)
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.p.counters().drops(r)
    }

    fn count(&self, c: Counter) -> u64 {
        self.p.counters().get(c)
    }
}

// ------------------------------------------------------------- builders

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4_packet(src: &str, dst: &str, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20 + l4.len()];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = proto;
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        panic!()
    };
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(l4);
    p
}

fn ipv6_packet(src: &str, dst: &str, next: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + l4.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = hop;
    let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
        panic!()
    };
    p[8..24].copy_from_slice(&s.octets());
    p[24..40].copy_from_slice(&d.octets());
    p[40..].copy_from_slice(l4);
    p
}

fn pseudo(src: &str, dst: &str, proto: u8, len: usize) -> u16 {
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, proto, len as u32),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(s, d, proto, len as u32),
        _ => panic!("mixed families"),
    }
}

fn tcp_segment(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20 + payload.len()];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..].copy_from_slice(payload);
    let c = !checksum::combine(&[pseudo(src, dst, 6, t.len()), checksum::sum(&t)]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

fn udp_datagram(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    payload: &[u8],
    with_csum: bool,
) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload.len()];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    let len = u.len() as u16;
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u[8..].copy_from_slice(payload);
    if with_csum {
        let c = checksum::udp_finish(!checksum::combine(&[
            pseudo(src, dst, 17, u.len()),
            checksum::sum(&u),
        ]));
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

fn is_v4(s: &str) -> bool {
    ip(s).is_ipv4()
}

fn tcp_frame(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, ttl: u8) -> Vec<u8> {
    let seg = tcp_segment(src, sport, dst, dport, flags, b"hello");
    if is_v4(src) {
        eth(
            GW_CLI_MAC,
            CLIENT_MAC,
            0x0800,
            &ipv4_packet(src, dst, 6, ttl, &seg),
        )
    } else {
        eth(
            GW_CLI_MAC,
            CLIENT_MAC,
            0x86dd,
            &ipv6_packet(src, dst, 6, ttl, &seg),
        )
    }
}

fn from_backend(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0..6].copy_from_slice(&GW_SRV_MAC);
    frame[6..12].copy_from_slice(&BACKEND_MAC);
    frame
}

fn udp_frame(src: &str, sport: u16, dst: &str, dport: u16, with_csum: bool) -> Vec<u8> {
    let d = udp_datagram(src, sport, dst, dport, b"ping", with_csum);
    eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x0800,
        &ipv4_packet(src, dst, 17, 64, &d),
    )
}

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

// ------------------------------------------------------------ checkers

/// A parsed output frame with every checksum verified in full.
#[derive(Debug)]
struct Out {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    proto: u8,
    l4: Vec<u8>,
}

impl Out {
    fn sport(&self) -> u16 {
        u16::from_be_bytes([self.l4[0], self.l4[1]])
    }
    fn dport(&self) -> u16 {
        u16::from_be_bytes([self.l4[2], self.l4[3]])
    }
}

fn parse_out(f: &[u8]) -> Out {
    let mut dst_mac = [0; 6];
    let mut src_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    let et = u16::from_be_bytes([f[12], f[13]]);
    let p = &f[14..];
    let (src, dst, ttl, proto, l4) = if et == 0x0800 {
        let hl = usize::from(p[0] & 15) * 4;
        assert_eq!(checksum::checksum(&p[..hl]), 0, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let s = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
        let d = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
        (s, d, p[8], p[9], p[hl..total].to_vec())
    } else {
        assert_eq!(et, 0x86dd);
        let len = usize::from(u16::from_be_bytes([p[4], p[5]]));
        let s: [u8; 16] = p[8..24].try_into().unwrap();
        let d: [u8; 16] = p[24..40].try_into().unwrap();
        (
            IpAddr::V6(Ipv6Addr::from(s)),
            IpAddr::V6(Ipv6Addr::from(d)),
            p[7],
            p[6],
            p[40..40 + len].to_vec(),
        )
    };
    let ps = |proto: u8| pseudo(&src.to_string(), &dst.to_string(), proto, l4.len());
    match proto {
        6 => assert_eq!(
            checksum::combine(&[ps(6), checksum::sum(&l4)]),
            0xffff,
            "TCP checksum"
        ),
        17 if !(src.is_ipv4() && l4[6] == 0 && l4[7] == 0) => assert_eq!(
            checksum::combine(&[ps(17), checksum::sum(&l4)]),
            0xffff,
            "UDP checksum"
        ),
        1 => assert_eq!(checksum::checksum(&l4), 0, "ICMP checksum"),
        58 => assert_eq!(
            checksum::combine(&[ps(58), checksum::sum(&l4)]),
            0xffff,
            "ICMPv6 checksum"
        ),
        _ => {}
    }
    Out {
        dst_mac,
        src_mac,
        src,
        dst,
        ttl,
        proto,
        l4,
    }
}

fn tx_on(v: Verdict) -> u32 {
    match v {
        Verdict::Tx { ifindex, .. } => ifindex,
        Verdict::Drop => panic!("expected Tx, got Drop"),
    }
}

// ---------------------------------------------------------------- tests

fn round_trip(client: &str, vip: &str, backend: &str) {
    let mut b = Bench::new();
    let (v, out) = b.run(CLIENT_IF, tcp_frame(client, 40000, vip, 80, SYN, 64));
    assert_eq!(tx_on(v), BACKEND_IF);
    let o = parse_out(&out);
    assert_eq!((o.src, o.dst), (ip(client), ip(backend)));
    assert_eq!(o.sport(), 40000);
    let bport = o.dport();
    assert!([80, 81, 82].contains(&bport));
    assert_eq!(o.ttl, 63);
    assert_eq!((o.dst_mac, o.src_mac), (BACKEND_MAC, GW_SRV_MAC));
    assert_eq!(&o.l4[20..], b"hello");

    let reply = from_backend(tcp_frame(backend, bport, client, 40000, SYN_ACK, 64));
    let (v, out) = b.run(BACKEND_IF, reply);
    assert_eq!(tx_on(v), CLIENT_IF);
    let o = parse_out(&out);
    assert_eq!((o.src, o.dst), (ip(vip), ip(client)));
    assert_eq!((o.sport(), o.dport()), (80, 40000));
    assert_eq!((o.dst_mac, o.src_mac), (CLIENT_MAC, GW_CLI_MAC));

    // The rest of the flow sticks to the backend.
    for _ in 0..5 {
        let (_, out) = b.run(CLIENT_IF, tcp_frame(client, 40000, vip, 80, ACK, 64));
        assert_eq!(parse_out(&out).dport(), bport);
    }
    assert_eq!(b.count(Counter::ConnNew), 1);
    assert_eq!(b.count(Counter::Forwarded), 6);
    assert_eq!(b.count(Counter::Replied), 1);
    assert_eq!(b.p.conns().len(), 1);
}

#[test]
fn tcp_round_trip_v4() {
    round_trip(CLIENT4, VIP4, BACKEND4);
}

#[test]
fn tcp_round_trip_v6() {
    round_trip(CLIENT6, VIP6, BACKEND6);
}

#[test]
fn udp_round_trip_keeps_a_zero_checksum_zero() {
    for with_csum in [true, false] {
        let mut b = Bench::new();
        let (v, out) = b.run(CLIENT_IF, udp_frame(CLIENT4, 5000, VIP4, 7, with_csum));
        assert_eq!(tx_on(v), BACKEND_IF);
        let o = parse_out(&out);
        assert_eq!(o.proto, 17);
        assert_eq!(o.l4[6..8] == [0, 0], !with_csum);
        let bport = o.dport();
        let reply = from_backend(udp_frame(BACKEND4, bport, CLIENT4, 5000, with_csum));
        let (v, out) = b.run(BACKEND_IF, reply);
        assert_eq!(tx_on(v), CLIENT_IF);
        let o = parse_out(&out);
        assert_eq!((o.src, o.sport()), (ip(VIP4), 7));
    }
}

#[test]
fn rr_spreads_udp_flows_over_all_backends() {
    let mut b = Bench::new();
    let mut seen = std::collections::BTreeSet::new();
    for port in 0..6 {
        let (_, out) = b.run(CLIENT_IF, udp_frame(CLIENT4, 6000 + port, VIP4, 7, true));
        seen.insert(parse_out(&out).dport());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![80, 81, 82]);
}

#[test]
fn tcp_without_connection_needs_a_syn_or_an_ack() {
    let mut b = Bench::new();
    let no_flags = 0;
    for flags in [
        0x04, /* RST */
        0x14, /* RST+ACK */
        SYN_ACK, 0x01, /* FIN */
        no_flags,
    ] {
        let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40001, VIP4, 80, flags, 64));
        assert_eq!(v, Verdict::Drop, "flags {flags:#x}");
    }
    assert_eq!(b.drops(DropReason::NoConnection), 5);
    assert_eq!(b.p.conns().len(), 0);
}

/// A client's ACK with no connection (its flow came from another node
/// after an ECMP rehash or a failover) is picked up on a Maglev service:
/// the same backend a SYN of that flow gets, so the connection goes on.
#[test]
fn mid_flow_acks_are_picked_up_on_the_backend_the_flow_has() {
    for (port, flags) in (41000..41032).zip([ACK, 0x11 /* FIN+ACK */].into_iter().cycle()) {
        let mut first = Bench::new();
        let (_, out) = first.run(CLIENT_IF, tcp_frame(CLIENT4, port, VIP4, 80, SYN, 64));
        let chosen = parse_out(&out).dport();
        let mut other = Bench::new();
        let (v, out) = other.run(CLIENT_IF, tcp_frame(CLIENT4, port, VIP4, 80, flags, 64));
        assert_eq!(tx_on(v), BACKEND_IF);
        assert_eq!(parse_out(&out).dport(), chosen, "client port {port}");
        assert_eq!(other.count(Counter::ConnPickedUp), 1);
        assert_eq!(other.count(Counter::ConnNew), 1);
        // The backend's answer finds it and goes back from the VIP.
        let reply = tcp_frame(BACKEND4, chosen, CLIENT4, port, ACK, 64);
        let (v, out) = other.run(BACKEND_IF, from_backend(reply));
        assert_eq!(tx_on(v), CLIENT_IF);
        assert_eq!(parse_out(&out).src, ip(VIP4));
    }
}

/// `mid_flow_pickup = false`: only a SYN opens a connection, even on Maglev.
#[test]
fn mid_flow_pickup_can_be_turned_off() {
    let mut b = Bench::new();
    b.p = Pipeline::new(&PipelineConfig {
        mid_flow_pickup: false,
        ..PipelineConfig::default()
    })
    .unwrap();
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40001, VIP4, 80, ACK, 64));
    assert_eq!(v, Verdict::Drop);
    assert_eq!(b.drops(DropReason::NoConnection), 1);
    assert_eq!(b.count(Counter::ConnPickedUp), 0);
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40001, VIP4, 80, SYN, 64));
    assert_eq!(tx_on(v), BACKEND_IF);
}

/// rr, wrr and lc would pick some other backend for a picked-up flow:
/// there, only a SYN opens a connection.
#[test]
fn mid_flow_acks_are_dropped_on_non_consistent_schedulers() {
    let mut b = Bench::new();
    let old = std::mem::take(&mut b.svc);
    let rr = service(
        1,
        "web",
        VIP4,
        80,
        L4Proto::Tcp,
        SchedulerKind::Rr,
        BACKEND4,
        0,
    );
    b.svc = ServiceSnapshot::new(
        2,
        vec![rr],
        old.vips.clone(),
        old.interfaces.clone(),
        vec![],
    );
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40001, VIP4, 80, ACK, 64));
    assert_eq!(v, Verdict::Drop);
    assert_eq!(b.drops(DropReason::NoConnection), 1);
    assert_eq!(b.count(Counter::ConnPickedUp), 0);
}

#[test]
fn reply_without_connection_from_a_one_service_backend_is_translated() {
    // What the new master of a planned switchover sees: replies to
    // connections the old master opened.
    for (client, vip, backend) in [(CLIENT4, VIP4, BACKEND4), (CLIENT6, VIP6, BACKEND6)] {
        let mut b = Bench::new();
        let reply = from_backend(tcp_frame(backend, 81, client, 40000, ACK, 64));
        let (v, out) = b.run(BACKEND_IF, reply);
        assert_eq!(tx_on(v), CLIENT_IF);
        let o = parse_out(&out);
        assert_eq!((o.src, o.dst), (ip(vip), ip(client)));
        assert_eq!((o.sport(), o.dport()), (80, 40000));
        assert_eq!(o.ttl, 63);
        assert_eq!(b.count(Counter::RepliedWithoutConnection), 1);
        assert_eq!(b.count(Counter::Replied), 1);
        assert_eq!(b.p.conns().len(), 0, "nothing is created");
        assert_eq!(b.drops(DropReason::ReplyMiss), 0);
    }
}

#[test]
fn a_backend_answering_the_node_itself_is_left_to_the_kernel() {
    // A health check's answer: from a backend endpoint to one of the
    // node's own addresses. Translating it would send it to a "client".
    for own in ["198.18.20.1", "2001:db8:20::1"] {
        let mut b = Bench::new();
        b.nh = nexthops(true).with_local_addresses([ip(own)]);
        let backend = if own.contains(':') {
            BACKEND6
        } else {
            BACKEND4
        };
        let answer = from_backend(tcp_frame(backend, 81, own, 40000, SYN_ACK, 64));
        let (v, out) = b.run(BACKEND_IF, answer);
        assert_eq!(v, Verdict::Drop, "{own}: not sent by the dataplane");
        assert!(out.is_empty());
        assert_eq!(b.count(Counter::KernelPassed), 1, "{own}: the kernel's");
        assert_eq!(b.count(Counter::Replied), 0);
        assert_eq!(b.drops(DropReason::ReplyMiss), 0);
    }
}

#[test]
fn reply_without_connection_is_a_reply_miss_when_the_backend_serves_two_services() {
    let mut b = Bench::new();
    // The same endpoints (same ids) behind a second service on port 8080.
    let mut services: Vec<Service> = std::mem::take(&mut b.svc).services;
    services.push(service(
        4,
        "web-alt",
        VIP4,
        8080,
        L4Proto::Tcp,
        SchedulerKind::Maglev,
        BACKEND4,
        0,
    ));
    b.svc = ServiceSnapshot::new(2, services, vec![], vec![], vec![]);
    let (v, _) = b.run(
        BACKEND_IF,
        from_backend(tcp_frame(BACKEND4, 81, CLIENT4, 40000, SYN_ACK, 64)),
    );
    assert_eq!(v, Verdict::Drop);
    assert_eq!(b.drops(DropReason::ReplyMiss), 1);
    assert_eq!(b.count(Counter::RepliedWithoutConnection), 0);
    // TTL 1 without a connection: no translation, no answer either.
    let (v, _) = b.run(
        BACKEND_IF,
        from_backend(tcp_frame(BACKEND6, 81, CLIENT6, 40000, ACK, 1)),
    );
    assert_eq!(v, Verdict::Drop);
}

#[test]
fn unknown_port_and_protocol_to_a_vip_are_dropped() {
    let mut b = Bench::new();
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40000, VIP4, 443, SYN, 64));
    assert_eq!(v, Verdict::Drop);
    assert_eq!(b.drops(DropReason::NoService), 1);
    let gre = eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x0800,
        &ipv4_packet(CLIENT4, VIP4, 47, 64, &[0; 8]),
    );
    assert_eq!(b.run(CLIENT_IF, gre).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::UnknownProtocol), 1);
}

#[test]
fn traffic_that_is_not_ours_is_left_to_the_kernel() {
    let mut b = Bench::new();
    let ssh = tcp_frame(CLIENT4, 40000, "198.18.0.1", 22, SYN, 64);
    assert_eq!(b.run(CLIENT_IF, ssh).0, Verdict::Drop);
    let lldp = eth([1, 0x80, 0xc2, 0, 0, 0xe], CLIENT_MAC, 0x88cc, &[0; 40]);
    assert_eq!(b.run(CLIENT_IF, lldp).0, Verdict::Drop);
    assert_eq!(b.count(Counter::KernelPassed), 2);
    assert_eq!(b.p.counters().total_drops(), 0);
}

#[test]
fn malformed_packets_to_a_vip_are_dropped_and_counted() {
    let mut b = Bench::new();
    // Bad IPv4 header checksum.
    let mut f = tcp_frame(CLIENT4, 1, VIP4, 80, SYN, 64);
    f[14 + 10] ^= 0xff;
    assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::BadIpChecksum), 1);
    // Bad TCP checksum on a SYN.
    let mut f = tcp_frame(CLIENT4, 2, VIP4, 80, SYN, 64);
    f[14 + 20 + 16] ^= 0xff;
    assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::BadL4Checksum), 1);
    // A fragment (MF set).
    let seg = tcp_segment(CLIENT4, 3, VIP4, 80, SYN, b"x");
    let mut p = ipv4_packet(CLIENT4, VIP4, 6, 64, &seg);
    p[6] = 0x20;
    let c = {
        p[10] = 0;
        p[11] = 0;
        checksum::checksum(&p[..20])
    };
    p[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        b.run(CLIENT_IF, eth(GW_CLI_MAC, CLIENT_MAC, 0x0800, &p)).0,
        Verdict::Drop
    );
    assert_eq!(b.drops(DropReason::Fragment), 1);
    // IPv4 options (a NOP word).
    let mut p = vec![0u8; 24 + seg.len()];
    p[0] = 0x46;
    p[2..4].copy_from_slice(&((24 + seg.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[198, 18, 0, 2]);
    p[16..20].copy_from_slice(&[198, 18, 10, 10]);
    p[20..24].copy_from_slice(&[1, 1, 1, 0]);
    let c = checksum::checksum(&p[..24]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[24..].copy_from_slice(&seg);
    assert_eq!(
        b.run(CLIENT_IF, eth(GW_CLI_MAC, CLIENT_MAC, 0x0800, &p)).0,
        Verdict::Drop
    );
    assert_eq!(b.drops(DropReason::IpOptions), 1);
    // IPv4 total length beyond the frame.
    let mut f = tcp_frame(CLIENT4, 4, VIP4, 80, SYN, 64);
    f.truncate(f.len() - 3);
    assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::Malformed), 1);
    // An oversize (truncated by the ring) frame.
    let mut f = tcp_frame(CLIENT4, 5, VIP4, 80, SYN, 64);
    let meta = RxMeta {
        ifindex: CLIENT_IF,
        wire_len: 9000,
        csum_not_ready: false,
    };
    assert_eq!(b.run_meta(meta, &mut f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::Oversize), 1);
    // And a good SYN still goes through afterwards.
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 6, VIP4, 80, SYN, 64));
    assert_eq!(tx_on(v), BACKEND_IF);
}

#[test]
fn ipv6_extension_headers_and_fragments_are_dropped() {
    let mut b = Bench::new();
    let seg = tcp_segment(CLIENT6, 1, VIP6, 80, SYN, b"x");
    // Hop-by-hop (8 bytes: next=TCP, len 0, PadN 4) then TCP.
    let mut ext = vec![6u8, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&seg);
    let f = eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x86dd,
        &ipv6_packet(CLIENT6, VIP6, 0, 64, &ext),
    );
    assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::IpOptions), 1);
    let mut frag = vec![6u8, 0, 0, 1, 0, 0, 0, 7]; // offset 0, M=1
    frag.extend_from_slice(&seg);
    let f = eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x86dd,
        &ipv6_packet(CLIENT6, VIP6, 44, 64, &frag),
    );
    assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::Fragment), 1);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_vip() {
    for (client, vip, proto) in [(CLIENT4, VIP4, 1u8), (CLIENT6, VIP6, 58)] {
        let mut b = Bench::new();
        let f = tcp_frame(client, 40000, vip, 80, SYN, 1);
        let original = f.clone();
        assert_eq!(b.run(CLIENT_IF, f).0, Verdict::Drop);
        assert_eq!(b.drops(DropReason::TtlExpired), 1);
        assert_eq!(b.count(Counter::IcmpErrorsSent), 1);
        let built = b.p.built_frames();
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].0, CLIENT_IF);
        let o = parse_out(built[0].1);
        assert_eq!((o.src, o.dst, o.proto), (ip(vip), ip(client), proto));
        assert_eq!(o.dst_mac, CLIENT_MAC);
        assert_eq!(o.l4[0], if proto == 1 { 11 } else { 3 });
        // The quote starts with the offending IP header as received.
        assert_eq!(&o.l4[8..28], &original[14..34]);
        assert_eq!(b.p.conns().len(), 0, "no state for an expired packet");
    }
}

#[test]
fn arp_for_a_vip_is_answered_and_other_arp_is_not() {
    let mut b = Bench::new();
    let arp = arp_request;
    let (v, out) = b.run(CLIENT_IF, arp([198, 18, 10, 10]));
    assert_eq!(tx_on(v), CLIENT_IF);
    assert_eq!(&out[0..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &GW_CLI_MAC);
    assert_eq!(&out[14 + 6..14 + 8], &[0, 2], "ARP reply");
    assert_eq!(&out[14 + 8..14 + 14], &GW_CLI_MAC, "sender MAC");
    assert_eq!(&out[14 + 14..14 + 18], &[198, 18, 10, 10], "sender IP");
    assert_eq!(&out[14 + 24..14 + 28], &[198, 18, 0, 2], "target IP");
    // Not on the backend link, not for the gateway's own address.
    assert_eq!(b.run(BACKEND_IF, arp([198, 18, 10, 10])).0, Verdict::Drop);
    assert_eq!(b.run(CLIENT_IF, arp([198, 18, 0, 1])).0, Verdict::Drop);
    assert_eq!(b.count(Counter::ArpReplies), 1);
}

#[test]
fn echo_requests_to_a_vip_are_answered() {
    let mut b = Bench::new();
    let f = echo_request_v4();
    let icmp = f[14 + 20..].to_vec();
    let (v, out) = b.run(CLIENT_IF, f);
    assert_eq!(tx_on(v), CLIENT_IF);
    let o = parse_out(&out);
    assert_eq!((o.src, o.dst, o.l4[0]), (ip(VIP4), ip(CLIENT4), 0));
    assert_eq!(&o.l4[4..], &icmp[4..]);

    let mut icmp6 = vec![128u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p'];
    let c = !checksum::combine(&[
        pseudo(CLIENT6, VIP6, 58, icmp6.len()),
        checksum::sum(&icmp6),
    ]);
    icmp6[2..4].copy_from_slice(&c.to_be_bytes());
    let f = eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x86dd,
        &ipv6_packet(CLIENT6, VIP6, 58, 64, &icmp6),
    );
    let (v, out) = b.run(CLIENT_IF, f);
    assert_eq!(tx_on(v), CLIENT_IF);
    let o = parse_out(&out);
    assert_eq!((o.src, o.dst, o.l4[0]), (ip(VIP6), ip(CLIENT6), 129));
    assert_eq!(b.count(Counter::EchoReplies), 2);
}

/// A neighbour solicitation from the client for `target`.
fn neighbour_solicit(target: Ipv6Addr) -> Vec<u8> {
    let mut ns = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&target.octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&CLIENT_MAC);
    let snm = "ff02::1:ff00:10";
    let c = !checksum::combine(&[pseudo(CLIENT6, snm, 58, ns.len()), checksum::sum(&ns)]);
    ns[2..4].copy_from_slice(&c.to_be_bytes());
    eth(
        [0x33, 0x33, 0xff, 0, 0, 0x10],
        CLIENT_MAC,
        0x86dd,
        &ipv6_packet(CLIENT6, snm, 58, 255, &ns),
    )
}

/// An ARP request from the client for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&CLIENT_MAC);
    p.extend_from_slice(&[198, 18, 0, 2]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    eth([0xff; 6], CLIENT_MAC, 0x0806, &p)
}

/// An ICMP echo request from the client to the IPv4 VIP.
fn echo_request_v4() -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    eth(
        GW_CLI_MAC,
        CLIENT_MAC,
        0x0800,
        &ipv4_packet(CLIENT4, VIP4, 1, 64, &icmp),
    )
}

#[test]
fn neighbour_solicitation_for_a_vip_is_answered() {
    let mut b = Bench::new();
    let target: Ipv6Addr = VIP6.parse().unwrap();
    assert_eq!(b.run(CLIENT_IF, neighbour_solicit(target)).0, Verdict::Drop);
    let built = b.p.built_frames();
    assert_eq!(built.len(), 1);
    let o = parse_out(built[0].1);
    assert_eq!((o.src, o.dst, o.ttl), (ip(VIP6), ip(CLIENT6), 255));
    assert_eq!(o.l4[0], 136);
    assert_eq!(o.l4[4] & 0x60, 0x60, "solicited + override");
    assert_eq!(&o.l4[8..24], &target.octets());
    assert_eq!(o.dst_mac, CLIENT_MAC);
    assert_eq!(b.count(Counter::NdAdverts), 1);
}

#[test]
fn a_virtual_mac_answers_and_announces_for_its_vips() {
    const VMAC4: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
    const VMAC6: [u8; 6] = [0, 0, 0x5e, 0, 2, 52];
    let mut b = Bench::new();
    let old = std::mem::take(&mut b.svc);
    let vips = old
        .vips
        .iter()
        .map(|v| Vip {
            mac: Some(if v.addr.is_ipv4() { VMAC4 } else { VMAC6 }),
            ..v.clone()
        })
        .collect();
    b.svc = ServiceSnapshot::new(2, old.services, vips, old.interfaces.clone(), vec![]);
    // ARP: Ethernet source and sender hardware address are the VMAC.
    let (v, out) = b.run(CLIENT_IF, arp_request([198, 18, 10, 10]));
    assert_eq!(tx_on(v), CLIENT_IF);
    assert_eq!(&out[6..12], &VMAC4);
    assert_eq!(&out[14 + 8..14 + 14], &VMAC4, "sender MAC");
    // ND: the target link-layer option and the frame come from the VMAC.
    let target: Ipv6Addr = VIP6.parse().unwrap();
    b.run(CLIENT_IF, neighbour_solicit(target));
    let built = b.p.built_frames();
    let o = parse_out(built[0].1);
    assert_eq!(o.src_mac, VMAC6);
    assert_eq!(&o.l4[26..32], &VMAC6, "target link-layer address option");
    b.p.clear_built();
    // Echo replies and announcements too.
    let (v, out) = b.run(CLIENT_IF, echo_request_v4());
    assert_eq!(tx_on(v), CLIENT_IF);
    assert_eq!(&out[6..12], &VMAC4);
    b.p.announce(&b.svc);
    let macs: Vec<[u8; 6]> =
        b.p.built_frames()
            .iter()
            .map(|(_, f)| f[6..12].try_into().unwrap())
            .collect();
    assert_eq!(macs, vec![VMAC4, VMAC6]);
}

#[test]
fn vips_answered_on_no_link_are_forwarded_but_not_answered() {
    // A VRRP backup: the VIPs' services work, but ARP, ND, echo and
    // announcements stay with the master.
    let mut b = Bench::new();
    b.svc = services_answered_on(&[]);
    assert!(!b.p.announce_if_changed(&b.svc));
    assert!(!b.p.has_built());
    assert_eq!(
        b.run(CLIENT_IF, arp_request([198, 18, 10, 10])).0,
        Verdict::Drop
    );
    assert_eq!(b.count(Counter::ArpReplies), 0);
    assert_eq!(b.count(Counter::KernelPassed), 1, "ARP left to the kernel");
    let target: Ipv6Addr = VIP6.parse().unwrap();
    assert_eq!(b.run(CLIENT_IF, neighbour_solicit(target)).0, Verdict::Drop);
    assert!(!b.p.has_built());
    assert_eq!(b.count(Counter::NdAdverts), 0);
    assert_eq!(b.run(CLIENT_IF, echo_request_v4()).0, Verdict::Drop);
    assert_eq!(b.count(Counter::EchoReplies), 0);
    assert_eq!(
        b.drops(DropReason::NoService),
        1,
        "echo to a VIP not answered here"
    );
    for (client, vip, backend) in [(CLIENT4, VIP4, BACKEND4), (CLIENT6, VIP6, BACKEND6)] {
        let (v, out) = b.run(CLIENT_IF, tcp_frame(client, 40000, vip, 80, SYN, 64));
        assert_eq!(tx_on(v), BACKEND_IF);
        let o = parse_out(&out);
        assert_eq!(o.dst, ip(backend));
        let reply = from_backend(tcp_frame(backend, o.dport(), client, 40000, SYN_ACK, 64));
        let (v, out) = b.run(BACKEND_IF, reply);
        assert_eq!(tx_on(v), CLIENT_IF);
        assert_eq!(parse_out(&out).src, ip(vip));
    }
}

#[test]
fn announce_sends_garp_and_unsolicited_na_once_per_vip_set() {
    let mut b = Bench::new();
    assert!(b.p.announce_if_changed(&b.svc));
    let built = b.p.built_frames();
    assert_eq!(built.len(), 2);
    assert_eq!(&built[0].1[12..14], &[8, 6]);
    assert_eq!(&built[0].1[14 + 14..14 + 18], &[198, 18, 10, 10]);
    let na = parse_out(built[1].1);
    assert_eq!(na.l4[0], 136);
    b.p.clear_built();
    assert!(!b.p.announce_if_changed(&b.svc));
}

/// A VIP its VRRP instance announces is left out (no duplicate GARPs),
/// and its coming and going does not re-announce the others.
#[test]
fn vips_announced_elsewhere_are_left_out() {
    let mut b = Bench::new();
    assert!(b.p.announce_if_changed(&b.svc));
    b.p.clear_built();
    let old = std::mem::take(&mut b.svc);
    let mut vips = old.vips.clone();
    vips.push(Vip {
        mac: None,
        addr: ip("198.18.10.11"),
        ifindexes: vec![CLIENT_IF],
        announce: false,
    });
    b.svc = ServiceSnapshot::new(2, old.services, vips, old.interfaces.clone(), vec![]);
    assert!(!b.p.announce_if_changed(&b.svc));
    assert!(b.p.built_frames().is_empty());
    let mut vips = b.svc.vips.clone();
    vips[0].announce = false;
    let old = std::mem::take(&mut b.svc);
    b.svc = ServiceSnapshot::new(3, old.services, vips, old.interfaces.clone(), vec![]);
    // Only the IPv6 VIP is left to announce: one NA.
    assert!(b.p.announce_if_changed(&b.svc));
    let built = b.p.built_frames();
    assert_eq!(built.len(), 1);
    assert_eq!(parse_out(built[0].1).l4[0], 136);
}

/// An ICMP error quoting `inner` (an IP packet), sent from `src` to `dst`.
fn icmp4_error(src: &str, dst: &str, typ: u8, code: u8, inner: &[u8]) -> Vec<u8> {
    let mut icmp = vec![typ, code, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(&inner[..inner.len().min(28 + 20)]);
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(src, dst, 1, 64, &icmp)
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut b = Bench::new();
    let (_, out) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40000, VIP4, 80, SYN, 64));
    let bport = parse_out(&out).dport();
    // A router on the client side says the client is unreachable, quoting
    // our reply VIP:80 -> client:40000.
    let quoted = ipv4_packet(
        VIP4,
        CLIENT4,
        6,
        60,
        &tcp_segment(VIP4, 80, CLIENT4, 40000, SYN_ACK, b""),
    );
    let err = icmp4_error("198.18.0.254", VIP4, 3, 1, &quoted);
    let (v, out) = b.run(CLIENT_IF, eth(GW_CLI_MAC, CLIENT_MAC, 0x0800, &err));
    assert_eq!(tx_on(v), BACKEND_IF);
    let o = parse_out(&out);
    assert_eq!(
        (o.src, o.dst, o.proto),
        (ip("198.18.0.254"), ip(BACKEND4), 1)
    );
    let q = &o.l4[8..];
    assert_eq!(
        checksum::checksum(&q[..20]),
        0,
        "quoted IPv4 header checksum"
    );
    assert_eq!(
        &q[12..16],
        &[198, 18, 20, 2],
        "quoted source is the backend"
    );
    assert_eq!(
        u16::from_be_bytes([q[20], q[21]]),
        bport,
        "quoted source port"
    );
    let quoted_tcp = &q[20..];
    let ps = pseudo(BACKEND4, CLIENT4, 6, quoted_tcp.len());
    assert_eq!(
        checksum::combine(&[ps, checksum::sum(quoted_tcp)]),
        0xffff,
        "quoted TCP checksum"
    );

    // The backend says port unreachable about client:40000 -> backend:bport.
    let quoted = ipv4_packet(
        CLIENT4,
        BACKEND4,
        6,
        63,
        &tcp_segment(CLIENT4, 40000, BACKEND4, bport, ACK, b""),
    );
    let err = icmp4_error(BACKEND4, CLIENT4, 3, 3, &quoted);
    let (v, out) = b.run(
        BACKEND_IF,
        from_backend(eth(GW_CLI_MAC, CLIENT_MAC, 0x0800, &err)),
    );
    assert_eq!(tx_on(v), CLIENT_IF);
    let o = parse_out(&out);
    assert_eq!((o.src, o.dst), (ip(VIP4), ip(CLIENT4)));
    let q = &o.l4[8..];
    assert_eq!(
        &q[16..20],
        &[198, 18, 10, 10],
        "quoted destination is the VIP"
    );
    assert_eq!(u16::from_be_bytes([q[22], q[23]]), 80);
    assert_eq!(b.count(Counter::IcmpErrorsTranslated), 2);

    // An error about a flow we do not know.
    let quoted = ipv4_packet(
        VIP4,
        CLIENT4,
        6,
        60,
        &tcp_segment(VIP4, 80, CLIENT4, 40999, SYN_ACK, b""),
    );
    let err = icmp4_error("198.18.0.254", VIP4, 3, 1, &quoted);
    assert_eq!(
        b.run(CLIENT_IF, eth(GW_CLI_MAC, CLIENT_MAC, 0x0800, &err))
            .0,
        Verdict::Drop
    );
    assert_eq!(b.drops(DropReason::IcmpNoConnection), 1);
}

#[test]
fn unresolved_next_hop_is_reported_and_counted() {
    let mut b = Bench::new();
    b.nh = nexthops(false);
    let (_, out) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 40000, VIP4, 80, SYN, 64));
    let bport = parse_out(&out).dport();
    let reply = from_backend(tcp_frame(BACKEND4, bport, CLIENT4, 40000, SYN_ACK, 64));
    assert_eq!(b.run(BACKEND_IF, reply.clone()).0, Verdict::Drop);
    assert_eq!(b.run(BACKEND_IF, reply).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::NeighbourMiss), 2);
    let misses: Vec<_> = b.p.take_neighbour_misses().collect();
    assert_eq!(
        misses,
        vec![(CLIENT_IF, a16(CLIENT4))],
        "asked once per batch"
    );
}

#[test]
fn checksum_not_ready_frames_get_a_full_checksum() {
    let mut b = Bench::new();
    let mut f = tcp_frame(CLIENT4, 40000, VIP4, 80, SYN, 64);
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum only.
    let ps = pseudo(CLIENT4, VIP4, 6, 25);
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&ps.to_be_bytes());
    let meta = RxMeta {
        ifindex: CLIENT_IF,
        wire_len: f.len() as u32,
        csum_not_ready: true,
    };
    let (v, out) = b.run_meta(meta, &mut f);
    assert_eq!(tx_on(v), BACKEND_IF);
    let bport = parse_out(&out).dport(); // verifies the checksum in full
                                         // And the reply, whose source the NAT rewrites.
    let mut f = from_backend(tcp_frame(BACKEND4, bport, CLIENT4, 40000, SYN_ACK, 64));
    let ps = pseudo(BACKEND4, CLIENT4, 6, 25);
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&ps.to_be_bytes());
    let meta = RxMeta {
        ifindex: BACKEND_IF,
        wire_len: f.len() as u32,
        csum_not_ready: true,
    };
    let (v, out) = b.run_meta(meta, &mut f);
    assert_eq!(tx_on(v), CLIENT_IF);
    parse_out(&out);
}

#[test]
fn table_full_refuses_new_connections_and_counts() {
    let mut b = Bench::new();
    b.p = Pipeline::new(&PipelineConfig {
        conn: ConnTableConfig {
            capacity: 4,
            ..ConnTableConfig::default()
        },
        ..PipelineConfig::default()
    })
    .unwrap();
    // Establish four connections (SYN, SYN-ACK, ACK).
    for port in 0..4u16 {
        let (_, out) = b.run(
            CLIENT_IF,
            tcp_frame(CLIENT4, 1000 + port, VIP4, 80, SYN, 64),
        );
        let bport = parse_out(&out).dport();
        b.run(
            BACKEND_IF,
            from_backend(tcp_frame(
                BACKEND4,
                bport,
                CLIENT4,
                1000 + port,
                SYN_ACK,
                64,
            )),
        );
        b.run(
            CLIENT_IF,
            tcp_frame(CLIENT4, 1000 + port, VIP4, 80, ACK, 64),
        );
    }
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 2000, VIP4, 80, SYN, 64));
    assert_eq!(v, Verdict::Drop);
    assert_eq!(b.drops(DropReason::TableFull), 1);
    // Established flows are untouched.
    let (v, _) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 1000, VIP4, 80, ACK, 64));
    assert_eq!(tx_on(v), BACKEND_IF);
}

#[test]
fn connections_expire_and_backend_gauges_follow() {
    let mut b = Bench::new();
    for port in 0..9u16 {
        b.run(CLIENT_IF, udp_frame(CLIENT4, 7000 + port, VIP4, 7, true));
    }
    let gauges = b.p.backend_gauges();
    let total: u32 = (6..9).map(|id| gauges.get(id)).sum();
    assert_eq!(total, 9);
    b.p.expire(b.now + 299_000);
    assert_eq!(b.p.conns().len(), 9, "UDP timeout is 300 s");
    b.p.expire(b.now + 301_000);
    assert_eq!(b.p.conns().len(), 0);
    assert_eq!(b.count(Counter::ConnExpired), 9);
    assert_eq!((6..9).map(|id| gauges.get(id)).sum::<u32>(), 0);
}

#[test]
fn least_connections_balances_per_worker() {
    let mut b = Bench::new();
    let mut svc = services();
    let lc = service(
        4,
        "lc",
        VIP4,
        8080,
        L4Proto::Tcp,
        SchedulerKind::Lc,
        BACKEND4,
        0,
    );
    svc.services.push(lc);
    b.svc = ServiceSnapshot::new(
        2,
        svc.services,
        svc.vips.clone(),
        svc.interfaces.clone(),
        Vec::new(),
    );
    let mut counts = std::collections::BTreeMap::new();
    for port in 0..30u16 {
        let (_, out) = b.run(
            CLIENT_IF,
            tcp_frame(CLIENT4, 3000 + port, VIP4, 8080, SYN, 64),
        );
        *counts.entry(parse_out(&out).dport()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
}

proptest! {
    /// Any bytes: never a panic, never a transmission of garbage to a
    /// backend without a valid header.
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), any::<u16>()]) {
        let mut b = Bench::new();
        let mut f = eth(GW_CLI_MAC, CLIENT_MAC, ethertype, &bytes);
        let meta = RxMeta { ifindex: CLIENT_IF, wire_len: f.len() as u32, csum_not_ready: false };
        let _ = b.run_meta(meta, &mut f);
        let mut f = f[..f.len().min(13)].to_vec();
        let _ = b.run_meta(RxMeta { ifindex: CLIENT_IF, wire_len: f.len() as u32, csum_not_ready: false }, &mut f);
    }

    /// Every truncation of a valid SYN is dropped or left to the kernel.
    #[test]
    fn truncated_syns_are_never_forwarded(cut in 0usize..79) {
        let mut b = Bench::new();
        let full = tcp_frame(CLIENT4, 40000, VIP4, 80, SYN, 64);
        let mut f = full[..cut.min(full.len() - 1)].to_vec();
        let meta = RxMeta { ifindex: CLIENT_IF, wire_len: f.len() as u32, csum_not_ready: false };
        let (v, _) = b.run_meta(meta, &mut f);
        prop_assert_eq!(v, Verdict::Drop);
    }

    /// NAT in both directions keeps every checksum valid, for any client
    /// endpoint, payload and family.
    #[test]
    fn nat_keeps_checksums_valid(c in any::<[u8; 4]>(), c6 in any::<[u16; 8]>(), port in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..64), v6 in any::<bool>(), udp in any::<bool>()) {
        let mut b = Bench::new();
        let client = if v6 {
            let mut seg = c6;
            seg[0] = 0x2001; seg[1] = 0xdb8; seg[2] = 0; seg[3] = 0;
            Ipv6Addr::from(seg).to_string()
        } else {
            Ipv4Addr::new(198, 18, 0, c[3]).to_string()
        };
        b.nh = nexthops_with(true, &[ip(&client)]);
        let (vip, backend, et) = if v6 { (VIP6, BACKEND6, 0x86dd) } else { (VIP4, BACKEND4, 0x0800) };
        let (vport, udp) = if v6 { (80, false) } else if udp { (7, true) } else { (80, false) };
        let build = |src: &str, sport: u16, dst: &str, dport: u16, flags: u8| {
            let l4 = if udp { udp_datagram(src, sport, dst, dport, &payload, true) } else { tcp_segment(src, sport, dst, dport, flags, &payload) };
            let proto = if udp { 17 } else { 6 };
            let p = if et == 0x0800 { ipv4_packet(src, dst, proto, 64, &l4) } else { ipv6_packet(src, dst, proto, 64, &l4) };
            eth(GW_CLI_MAC, CLIENT_MAC, et, &p)
        };
        let (v, out) = b.run(CLIENT_IF, build(&client, port, vip, vport, SYN));
        prop_assert_eq!(tx_on(v), BACKEND_IF);
        let o = parse_out(&out);
        prop_assert_eq!(o.dst, ip(backend));
        let (v, out) = b.run(BACKEND_IF, from_backend(build(backend, o.dport(), &client, port, SYN_ACK)));
        prop_assert_eq!(tx_on(v), CLIENT_IF);
        let o = parse_out(&out);
        prop_assert_eq!((o.src, o.sport()), (ip(vip), vport));
    }
}

#[test]
fn backend_next_hop_cache_follows_new_snapshots() {
    let mut b = Bench::new();
    let (_, out) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 41000, VIP4, 80, SYN, 64));
    assert_eq!(parse_out(&out).dst_mac, BACKEND_MAC);
    // The backend's MAC changes; the control plane publishes generation 2.
    let moved = [2, 0, 0, 0, 0, 0xb2];
    let routes = b.nh.routes().to_vec();
    b.nh = NextHopSnapshot::new(
        2,
        routes,
        [
            (BACKEND_IF, ip(BACKEND4), moved),
            (CLIENT_IF, ip(CLIENT4), CLIENT_MAC),
        ],
        [(CLIENT_IF, GW_CLI_MAC), (BACKEND_IF, GW_SRV_MAC)],
    );
    let (_, out) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 41000, VIP4, 80, ACK, 64));
    assert_eq!(parse_out(&out).dst_mac, moved);
}

#[test]
fn client_next_hop_cache_follows_new_snapshots() {
    let mut b = Bench::new();
    let (_, out) = b.run(CLIENT_IF, tcp_frame(CLIENT4, 41000, VIP4, 80, SYN, 64));
    let bport = parse_out(&out).dport();
    let reply = || from_backend(tcp_frame(BACKEND4, bport, CLIENT4, 41000, SYN_ACK, 64));
    let (_, out) = b.run(BACKEND_IF, reply());
    assert_eq!(parse_out(&out).dst_mac, CLIENT_MAC);
    // The client's MAC changes. The new snapshot even keeps generation 1:
    // the cache must not depend on the publisher counting generations.
    let moved = [2, 0, 0, 0, 0, 0xc2];
    let routes = b.nh.routes().to_vec();
    b.nh = NextHopSnapshot::new(
        1,
        routes.clone(),
        [
            (BACKEND_IF, ip(BACKEND4), BACKEND_MAC),
            (CLIENT_IF, ip(CLIENT4), moved),
        ],
        [(CLIENT_IF, GW_CLI_MAC), (BACKEND_IF, GW_SRV_MAC)],
    );
    let (_, out) = b.run(BACKEND_IF, reply());
    assert_eq!(parse_out(&out).dst_mac, moved);
    // And the neighbour is gone: a miss, reported, not a stale hit.
    b.nh = NextHopSnapshot::new(
        1,
        routes,
        [(BACKEND_IF, ip(BACKEND4), BACKEND_MAC)],
        [(CLIENT_IF, GW_CLI_MAC), (BACKEND_IF, GW_SRV_MAC)],
    );
    assert_eq!(b.run(BACKEND_IF, reply()).0, Verdict::Drop);
    assert_eq!(b.drops(DropReason::NeighbourMiss), 1);
}
