//! Fixtures shared by the dataplane benches: one TCP service (VIP
//! 198.18.10.10:80, three backends on 198.18.20.2:80-82), its snapshots,
//! 66-byte Ethernet/IPv4/TCP frames from clients and backends, and a
//! pipeline with established connections to replay.
//!
//! Owns no measurement (the bench files do). Touches no kernel object;
//! allocates only while building fixtures.

#![allow(dead_code)] // Each bench uses a different part.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use vipgate_dataplane::checksum;
use vipgate_dataplane::conntrack::{ConnTableConfig, Timeouts};
use vipgate_dataplane::flow::{Addr16, L4Proto};
use vipgate_dataplane::io::{RxMeta, Verdict};
use vipgate_dataplane::pipeline::{Pipeline, PipelineConfig};
use vipgate_dataplane::sched::{
    endpoint_key, SchedBackend, SchedOptions, SchedTable, SchedulerKind,
};
use vipgate_dataplane::snapshot::{
    Backend, Interface, NextHopSnapshot, Route, Service, ServiceSnapshot, Vip,
};

pub const CLIENT_IF: u32 = 1;
pub const BACKEND_IF: u32 = 2;
const GW_CLI_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
const GW_SRV_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const VIP_PORT: u16 = 80;
const BACKEND_PORTS: [u16; 3] = [80, 81, 82];
const PAYLOAD: [u8; 12] = *b"bench-frame!";

pub const SYN: u8 = 0x02;
pub const SYN_ACK: u8 = 0x12;
pub const ACK: u8 = 0x10;

/// Client ports per client address.
const PORTS_PER_CLIENT: usize = 16384;

// ------------------------------------------------------------ snapshots

/// One TCP service on the VIP with three backends, scheduled by `kind`.
pub fn services(kind: SchedulerKind) -> ServiceSnapshot {
    let backends: Vec<Backend> = BACKEND_PORTS
        .iter()
        .enumerate()
        .map(|(i, port)| Backend {
            id: i as u32,
            addr: Addr16::from_v4(BACKEND),
            port: *port,
            weight: 1,
        })
        .collect();
    let sched: Vec<SchedBackend> = backends
        .iter()
        .map(|b| SchedBackend::new(endpoint_key(b.addr, b.port), b.weight))
        .collect();
    let service = Service {
        id: 1,
        name: "web".into(),
        vip: Addr16::from_v4(VIP),
        port: VIP_PORT,
        proto: L4Proto::Tcp,
        scheduler: kind,
        // Fixed, valid input: three weighted backends.
        sched: SchedTable::build(kind, &sched, &SchedOptions::default()).expect("valid table"),
        backends,
    };
    let vips = vec![Vip {
        mac: None,
        announce: true,
        addr: IpAddr::V4(VIP),
        ifindexes: vec![CLIENT_IF],
    }];
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
    ServiceSnapshot::new(1, vec![service], vips, interfaces, Vec::new())
}

/// Routes to both /16s and one neighbour per client address (clients
/// spread over 198.18.0.0/16).
pub fn nexthops(clients: &[Ipv4Addr]) -> NextHopSnapshot {
    let routes = vec![
        Route::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
            16,
            CLIENT_IF,
            None,
        ),
        Route::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 20, 0)),
            24,
            BACKEND_IF,
            None,
        ),
    ];
    let mut neigh = vec![(BACKEND_IF, IpAddr::V4(BACKEND), BACKEND_MAC)];
    neigh.extend(
        clients
            .iter()
            .map(|c| (CLIENT_IF, IpAddr::V4(*c), CLIENT_MAC)),
    );
    NextHopSnapshot::new(
        1,
        routes,
        neigh,
        [(CLIENT_IF, GW_CLI_MAC), (BACKEND_IF, GW_SRV_MAC)],
    )
}

/// Client endpoint `i`: 16384 ports per address, addresses from
/// 198.18.0.2 up.
pub fn client(i: usize) -> (Ipv4Addr, u16) {
    let host = 2 + (i / PORTS_PER_CLIENT) as u32;
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host);
    (addr, 10_000 + (i % PORTS_PER_CLIENT) as u16)
}

/// The distinct addresses of clients `0..n`.
pub fn clients(n: usize) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = (0..n).map(|i| client(i).0).collect();
    v.dedup();
    v
}

// --------------------------------------------------------------- frames

/// A received frame and its metadata.
pub struct Frame {
    pub meta: RxMeta,
    pub bytes: Vec<u8>,
}

/// A 66-byte Ethernet/IPv4/TCP frame with valid checksums.
fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
) -> Vec<u8> {
    let tcp_len = 20 + PAYLOAD.len();
    let mut f = vec![0u8; 14 + 20 + tcp_len];
    f[0..6].copy_from_slice(&macs.0);
    f[6..12].copy_from_slice(&macs.1);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..].copy_from_slice(&PAYLOAD);
    let pseudo = checksum::pseudo_header_v4(src.0, dst.0, 6, tcp_len as u32);
    let c = !checksum::combine(&[pseudo, checksum::sum(t)]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

/// Client `i` -> VIP:80 with TCP `flags`.
pub fn from_client(i: usize, flags: u8) -> Frame {
    let f = tcp_frame((GW_CLI_MAC, CLIENT_MAC), client(i), (VIP, VIP_PORT), flags);
    frame(CLIENT_IF, f)
}

/// Backend port `backend_port` -> client `i` with TCP `flags`.
pub fn from_backend(i: usize, backend_port: u16, flags: u8) -> Frame {
    let f = tcp_frame(
        (GW_SRV_MAC, BACKEND_MAC),
        (BACKEND, backend_port),
        client(i),
        flags,
    );
    frame(BACKEND_IF, f)
}

fn frame(ifindex: u32, bytes: Vec<u8>) -> Frame {
    Frame {
        meta: RxMeta {
            ifindex,
            wire_len: bytes.len() as u32,
            csum_not_ready: false,
        },
        bytes,
    }
}

// ------------------------------------------------------------- pipeline

/// A pipeline whose table holds `capacity` connections with `timeouts`.
pub fn pipeline(capacity: usize, timeouts: Timeouts) -> Pipeline {
    let config = PipelineConfig {
        conn: ConnTableConfig {
            capacity,
            timeouts,
            ..ConnTableConfig::default()
        },
        ..PipelineConfig::default()
    };
    // Fixed, valid capacity (at most 2^20) and timeouts (at most 900 s).
    Pipeline::new(&config).expect("valid pipeline config")
}

/// A pipeline, its snapshots and one scratch buffer that every replayed
/// frame is first copied into (as `MemIo`'s replay and the RX ring copy
/// do), so the templates stay pristine.
pub struct Gateway {
    pub p: Pipeline,
    pub svc: ServiceSnapshot,
    pub nh: NextHopSnapshot,
    scratch: Vec<u8>,
}

impl Gateway {
    pub fn new(p: Pipeline, svc: ServiceSnapshot, nh: NextHopSnapshot) -> Gateway {
        Gateway {
            p,
            svc,
            nh,
            scratch: vec![0; 128],
        }
    }

    /// Copies `frame` into the scratch buffer and processes it; true if it
    /// is to be transmitted.
    #[inline]
    pub fn one(&mut self, now: u64, frame: &Frame) -> bool {
        let buf = &mut self.scratch[..frame.bytes.len()];
        buf.copy_from_slice(&frame.bytes);
        let v = self.p.process(now, &self.svc, &self.nh, &frame.meta, buf);
        matches!(black_box(v), Verdict::Tx { .. })
    }

    /// [`Gateway::one`] for each of `frames`; returns how many are to be
    /// transmitted.
    #[inline(never)]
    pub fn replay(&mut self, now: u64, frames: &[Frame]) -> usize {
        frames.iter().map(|f| usize::from(self.one(now, f))).sum()
    }

    /// The copy into the scratch buffer alone, for each of `frames`.
    #[inline(never)]
    pub fn copy_only(&mut self, frames: &[Frame]) -> usize {
        let mut n = 0;
        for f in frames {
            let buf = &mut self.scratch[..f.bytes.len()];
            buf.copy_from_slice(&f.bytes);
            n += usize::from(black_box(&*buf)[0]);
        }
        n
    }

    /// Runs client `i`'s handshake (SYN, SYN-ACK, ACK) at `now`; returns
    /// the backend port its flow went to.
    pub fn handshake(&mut self, i: usize, now: u64) -> u16 {
        let syn = from_client(i, SYN);
        let buf = &mut self.scratch[..syn.bytes.len()];
        buf.copy_from_slice(&syn.bytes);
        let v = self.p.process(now, &self.svc, &self.nh, &syn.meta, buf);
        assert!(matches!(v, Verdict::Tx { .. }), "SYN {i} not forwarded");
        let backend_port = u16::from_be_bytes([buf[36], buf[37]]);
        let syn_ack = from_backend(i, backend_port, SYN_ACK);
        assert!(self.one(now, &syn_ack), "SYN-ACK {i} not reversed");
        assert!(self.one(now, &from_client(i, ACK)), "ACK {i} not forwarded");
        backend_port
    }
}

/// A gateway with established connections and the frames to replay.
pub struct Established {
    pub gw: Gateway,
    /// Each flow's client ACK (client -> VIP).
    pub forward: Vec<Frame>,
    /// Each flow's backend ACK (backend -> client).
    pub reply: Vec<Frame>,
    /// Both, interleaved per flow.
    pub both: Vec<Frame>,
}

/// `flows` connections through SYN, SYN-ACK and ACK at `now` in a table
/// of `capacity`, Maglev over three backends, default timeouts.
pub fn established(flows: usize, capacity: usize, now: u64) -> Established {
    established_with(flows, capacity, Timeouts::default(), now)
}

/// [`established`] with `timeouts`.
pub fn established_with(
    flows: usize,
    capacity: usize,
    timeouts: Timeouts,
    now: u64,
) -> Established {
    let mut gw = Gateway::new(
        pipeline(capacity, timeouts),
        services(SchedulerKind::Maglev),
        nexthops(&clients(flows)),
    );
    let mut forward = Vec::with_capacity(flows);
    let mut reply = Vec::with_capacity(flows);
    let mut both = Vec::with_capacity(2 * flows);
    for i in 0..flows {
        let backend_port = gw.handshake(i, now);
        forward.push(from_client(i, ACK));
        reply.push(from_backend(i, backend_port, ACK));
        both.push(from_client(i, ACK));
        both.push(from_backend(i, backend_port, ACK));
    }
    assert_eq!(gw.p.conns().len(), flows);
    Established {
        gw,
        forward,
        reply,
        both,
    }
}
