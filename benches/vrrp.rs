//! Microbenchmarks of VRRP advertisement encode and decode
//! (`vipgate::vrrp::wire::{emit, parse}`), the work per advert sent or
//! received besides the socket.
//!
//! Cases (`vrrp/{encode,decode}/<case>`), each one advert:
//!
//! - `v3_ipv4_1_vip`: VRRPv3 over IPv4 to 224.0.0.18, one VIP, checksum
//!   with the IPv4 pseudo-header (keepalived's default);
//! - `v3_ipv4_16_vips`: the same with 16 VIPs;
//! - `v3_ipv6_1_vip`: VRRPv3 over IPv6 to ff02::12 from a link-local
//!   address, one VIP;
//! - `v2_ipv4_1_vip_pass`: VRRPv2 with simple-text authentication.
//!
//! Encode writes into a reused buffer; decode checks everything `parse`
//! checks (TTL, version, type, count, length, checksum, auth, interval) and
//! builds the `Advert`, whose address list is a `Vec` (one allocation).
//!
//! Run: `cargo bench -p vipgate --bench vrrp`; after criterion's report,
//! the summary gives the median ns per advert. Touches nothing but memory.

#[path = "common/summary.rs"]
mod summary;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::Criterion;
use vipgate::vrrp::wire::{self, Advert, Auth, ChecksumMode, Version, MAX_LEN, VRRP_TTL};

use summary::{Mode, Summary};

/// Samples per summary row.
const SUMMARY_SAMPLES: usize = 31;

/// One benchmarked advert with the IP addresses it travels between.
struct Case {
    name: &'static str,
    advert: Advert,
    src: IpAddr,
    dst: IpAddr,
    /// The encoded payload, for decode.
    payload: Vec<u8>,
}

impl Case {
    fn new(name: &'static str, advert: Advert, src: IpAddr, dst: IpAddr) -> Case {
        let mut buf = [0u8; MAX_LEN];
        // Fixed, valid adverts (the case list below).
        let n = wire::emit(&advert, src, dst, ChecksumMode::PseudoHeader, &mut buf)
            .expect("valid advert");
        let payload = buf[..n].to_vec();
        let case = Case {
            name,
            advert,
            src,
            dst,
            payload,
        };
        assert_eq!(case.decode(), case.advert, "{name} round-trips");
        case
    }

    fn encode(&self, buf: &mut [u8]) -> usize {
        // Valid advert, buffer of MAX_LEN: cannot fail (checked in `new`).
        wire::emit(
            black_box(&self.advert),
            self.src,
            self.dst,
            ChecksumMode::PseudoHeader,
            buf,
        )
        .unwrap_or(0)
    }

    fn decode(&self) -> Advert {
        let version = self.advert.version;
        // Encoded by `new` from a valid advert: parses (checked there).
        wire::parse(
            black_box(&self.payload),
            self.src,
            self.dst,
            VRRP_TTL,
            ChecksumMode::PseudoHeader,
            version,
        )
        .expect("own encoding parses")
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 10, last))
}

fn cases() -> Vec<Case> {
    let v3 = |addrs: Vec<IpAddr>| Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 100,
        addrs,
        auth: Auth::None,
    };
    let src4 = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
    let group4 = IpAddr::V4(wire::MCAST_V4);
    let src6 = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
    let vip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 10, 0, 0, 0, 10));
    vec![
        Case::new("v3_ipv4_1_vip", v3(vec![v4(10)]), src4, group4),
        Case::new(
            "v3_ipv4_16_vips",
            v3((10..26).map(v4).collect()),
            src4,
            group4,
        ),
        Case::new(
            "v3_ipv6_1_vip",
            v3(vec![vip6]),
            src6,
            IpAddr::V6(wire::MCAST_V6),
        ),
        Case::new(
            "v2_ipv4_1_vip_pass",
            Advert {
                version: Version::V2,
                vrid: 51,
                priority: 150,
                interval_cs: 100,
                addrs: vec![v4(10)],
                auth: Auth::simple(b"secret"),
            },
            src4,
            group4,
        ),
    ]
}

fn bench(c: &mut Criterion, cases: &[Case]) {
    let mut g = c.benchmark_group("vrrp");
    let mut buf = [0u8; MAX_LEN];
    for case in cases {
        g.bench_function(format!("encode/{}", case.name), |b| {
            b.iter(|| case.encode(&mut buf))
        });
        g.bench_function(format!("decode/{}", case.name), |b| {
            b.iter(|| case.decode())
        });
    }
    g.finish();
}

fn summary(mode: Mode, cases: &[Case]) {
    let mut t = Summary::new("vrrp", "ns per advert", mode.samples(SUMMARY_SAMPLES));
    let mut buf = [0u8; MAX_LEN];
    for case in cases {
        t.time(&format!("encode/{}", case.name), || case.encode(&mut buf));
        t.time(&format!("decode/{}", case.name), || case.decode());
    }
    t.print();
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
