//! Microbenchmarks of the BGP wire format (`vipgate_routing::wire`):
//! `Message::encode` and `Message::decode` of the messages a session
//! exchanges, header included.
//!
//! Cases (`bgp/{encode,decode}/<case>`):
//!
//! - `keepalive`;
//! - `open`: encode vipgate's OPEN (MP IPv4 and IPv6 unicast, route
//!   refresh, 4-octet AS); decode BIRD 2's captured OPEN
//!   (`tests/fixtures/bird_open.bin`);
//! - `update_v4_1_prefix`, `update_v6_1_prefix`: one /32 (/128 in
//!   MP_REACH_NLRI) with ORIGIN, AS_PATH, NEXT_HOP, MED, a community and a
//!   large community; decode reads BIRD's captured UPDATEs with the same
//!   attributes (`bird_update_v4.bin`, `bird_update_v6.bin`);
//! - `update_v4_150_prefixes`: 150 /32s, the most the speaker puts in one
//!   UPDATE; `update_v4_800_prefixes`: 800 /32s, near the 4096-octet limit;
//!   `update_v6_150_prefixes`: 150 /128s in MP_REACH_NLRI;
//!   `withdraw_v4_150_prefixes`: 150 /32s withdrawn. Decode reads what
//!   encode wrote.
//!
//! The session is eBGP with 4-octet ASNs on both sides. Run:
//! `cargo bench -p vipgate-routing --bench wire`; after criterion's report
//! the summary gives the median ns per message and, for the many-prefix
//! UPDATEs, per prefix. Touches nothing but memory.

#[path = "../../benches/common/summary.rs"]
mod summary;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use vipgate_routing::wire::{
    AsSegment, Capability, Community, DecodeContext, Family, LargeCommunity, Message, MpNextHop,
    OpenRepr, Origin, PathAttributes, Prefix, UpdateRepr, MAX_MESSAGE_LEN,
};

use summary::{Mode, Summary};

const BIRD_OPEN: &[u8] = include_bytes!("../tests/fixtures/bird_open.bin");
const BIRD_KEEPALIVE: &[u8] = include_bytes!("../tests/fixtures/bird_keepalive.bin");
const BIRD_UPDATE_V4: &[u8] = include_bytes!("../tests/fixtures/bird_update_v4.bin");
const BIRD_UPDATE_V6: &[u8] = include_bytes!("../tests/fixtures/bird_update_v6.bin");

const LOCAL_AS: u32 = 4_200_000_001;
/// Samples per summary row.
const SUMMARY_SAMPLES: usize = 31;

/// The session: eBGP, 4-octet ASNs negotiated.
const CTX: DecodeContext = DecodeContext {
    four_octet_as: true,
    ibgp: false,
};

/// One benchmarked message: what encode writes, what decode reads, and
/// how many prefixes it carries.
struct Case {
    name: &'static str,
    message: Message,
    wire: Vec<u8>,
    prefixes: usize,
}

impl Case {
    /// Decode reads `message`'s own encoding.
    fn own(name: &'static str, message: Message, prefixes: usize) -> Case {
        let wire = encode(&message);
        assert_eq!(decode(&wire), message, "{name} round-trips");
        Case {
            name,
            message,
            wire,
            prefixes,
        }
    }

    /// Decode reads `captured` bytes (a BIRD fixture) instead.
    fn captured(name: &'static str, message: Message, captured: &[u8], prefixes: usize) -> Case {
        decode(captured);
        Case {
            name,
            wire: captured.to_vec(),
            ..Case::own(name, message, prefixes)
        }
    }
}

fn encode(m: &Message) -> Vec<u8> {
    // Fixed, valid messages below 4096 octets (checked by `Case::own`).
    m.encode(&CTX, MAX_MESSAGE_LEN)
        .expect("valid message encodes")
}

fn decode(bytes: &[u8]) -> Message {
    // Own encodings and BIRD fixtures (checked when the case is built).
    Message::decode(bytes, &CTX).expect("valid message decodes")
}

fn attributes(next_hop: IpAddr) -> PathAttributes {
    let mut a = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(vec![AsSegment::Sequence(vec![LOCAL_AS])]),
        med: Some(50),
        communities: vec![Community::new(65000, 100)],
        large_communities: vec![LargeCommunity {
            global_admin: LOCAL_AS,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttributes::default()
    };
    match next_hop {
        IpAddr::V4(v4) => a.next_hop = Some(v4),
        IpAddr::V6(v6) => {
            a.mp_next_hop = Some(MpNextHop {
                global: v6,
                link_local: None,
            })
        }
    }
    a
}

/// `n` host prefixes: 198.18.(i / 256).(i % 256)/32.
fn v4_hosts(n: usize) -> Vec<Prefix> {
    (0..n)
        .map(|i| Prefix::host(IpAddr::V4(Ipv4Addr::new(198, 18, (i / 256) as u8, i as u8))))
        .collect()
}

/// `n` host prefixes: 2001:db8:10::i/128.
fn v6_hosts(n: usize) -> Vec<Prefix> {
    (0..n)
        .map(|i| {
            Prefix::host(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 0x10, 0, 0, 0, 0, i as u16,
            )))
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let nh4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let nh6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let announce = |prefixes: Vec<Prefix>, nh| {
        let n = prefixes.len();
        (
            Message::Update(UpdateRepr::announce(prefixes, attributes(nh))),
            n,
        )
    };
    let open = Message::Open(OpenRepr {
        my_as: LOCAL_AS,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(198, 18, 0, 1),
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::MultiProtocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(LOCAL_AS),
        ],
    });
    let (u4, _) = announce(v4_hosts(1), nh4);
    let (u6, _) = announce(v6_hosts(1), nh6);
    let (u4_150, n4_150) = announce(v4_hosts(150), nh4);
    let (u4_800, n4_800) = announce(v4_hosts(800), nh4);
    let (u6_150, n6_150) = announce(v6_hosts(150), nh6);
    let withdraw = Message::Update(UpdateRepr::withdraw(v4_hosts(150)));
    vec![
        Case::captured("keepalive", Message::Keepalive, BIRD_KEEPALIVE, 0),
        Case::captured("open", open, BIRD_OPEN, 0),
        Case::captured("update_v4_1_prefix", u4, BIRD_UPDATE_V4, 1),
        Case::captured("update_v6_1_prefix", u6, BIRD_UPDATE_V6, 1),
        Case::own("update_v4_150_prefixes", u4_150, n4_150),
        Case::own("update_v4_800_prefixes", u4_800, n4_800),
        Case::own("update_v6_150_prefixes", u6_150, n6_150),
        Case::own("withdraw_v4_150_prefixes", withdraw, 150),
    ]
}

fn bench(c: &mut Criterion, cases: &[Case]) {
    let mut g = c.benchmark_group("bgp");
    for case in cases {
        g.throughput(Throughput::Elements(case.prefixes.max(1) as u64));
        g.bench_function(format!("encode/{}", case.name), |b| {
            b.iter(|| encode(black_box(&case.message)))
        });
        g.bench_function(format!("decode/{}", case.name), |b| {
            b.iter(|| decode(black_box(&case.wire)))
        });
    }
    g.finish();
}

fn summary(mode: Mode, cases: &[Case]) {
    let samples = mode.samples(SUMMARY_SAMPLES);
    let mut per_message = Summary::new("bgp", "ns per message", samples);
    let mut per_prefix = Summary::new("bgp, UPDATEs with many prefixes", "ns per prefix", samples);
    for case in cases {
        let enc = format!("encode/{} ({} B)", case.name, encode(&case.message).len());
        let dec = format!("decode/{} ({} B)", case.name, case.wire.len());
        per_message.time(&enc, || encode(&case.message));
        per_message.time(&dec, || decode(&case.wire));
        if case.prefixes > 1 {
            per_prefix.time_n(&enc, case.prefixes, || encode(&case.message));
            per_prefix.time_n(&dec, case.prefixes, || decode(&case.wire));
        }
    }
    per_message.print();
    per_prefix.print();
}

fn main() {
    let mode = Mode::from_args();
    let cases = cases();
    let mut c = summary::criterion(Duration::from_millis(300), Duration::from_secs(1));
    bench(&mut c, &cases);
    c.final_summary();
    if mode.summary() {
        summary(mode, &cases);
    }
}
