//! Microbenchmarks of the in-memory NAT pipeline ([`Pipeline::process`]).
//!
//! Run with `cargo bench -p vipgate-dataplane --bench pipeline` (release
//! profile). Measures, per packet:
//!
//! - **established**: TCP ACKs of connections that went through
//!   SYN / SYN-ACK / ACK first, forward (client -> VIP) and reverse
//!   (backend -> client) interleaved, for 4096 flows in a table of 2^13
//!   (dense: the index fits in cache and TLB) and of 2^18 (the default
//!   capacity: the same 4096 flows are scattered over 4 MB of index), and
//!   for 262144 live flows in a 2^20 table.
//! - **new flows**: SYNs from distinct client endpoints into a fresh table
//!   of 2^20 entries, per scheduler (maglev, rr, lc).
//! - **copy only**: the frame reset alone, so it can be subtracted.
//!
//! Every measured packet is first copied from a pristine template into one
//! scratch buffer (66-byte frames: 14 Ethernet + 20 IPv4 + 20 TCP + 12
//! payload), as the replay mode of `MemIo` and the RX ring copy do; the
//! "established"/"new" figures include that copy, "copy only" shows it.
//!
//! Besides criterion's own output, `main` prints a summary of medians over
//! repeated passes (ns per packet) and the connection table's memory per
//! connection: computed (`bytes_per_connection`, `memory_bytes`) and measured
//! (resident set growth when a table is built).
//!
//! Touches no kernel object; allocates only outside the timed loops.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use vipgate_dataplane::checksum;
use vipgate_dataplane::conntrack::{ConnTable, ConnTableConfig};
use vipgate_dataplane::flow::{Addr16, L4Proto};
use vipgate_dataplane::io::{RxMeta, Verdict};
use vipgate_dataplane::pipeline::{Pipeline, PipelineConfig};
use vipgate_dataplane::sched::{
    endpoint_key, SchedBackend, SchedOptions, SchedTable, SchedulerKind,
};
use vipgate_dataplane::snapshot::{
    Backend, Interface, NextHopSnapshot, Route, Service, ServiceSnapshot, Vip,
};

const CLIENT_IF: u32 = 1;
const BACKEND_IF: u32 = 2;
const GW_CLI_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
const GW_SRV_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb1];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const VIP_PORT: u16 = 80;
const BACKEND_PORTS: [u16; 3] = [80, 81, 82];
const PAYLOAD: [u8; 12] = *b"bench-frame!";

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

/// Capacity of the "large" tables (the daemon's default `conn_capacity`).
const BIG_TABLE: usize = 1 << 20;
/// Flows of the small established set.
const SMALL_FLOWS: usize = 4096;
/// Flows of the large established set.
const LARGE_FLOWS: usize = 1 << 18;
/// SYNs per pass of the new-flow benchmark.
const NEW_FLOWS: usize = 1 << 16;
/// Passes the summary takes the median of.
const SUMMARY_SAMPLES: usize = 31;

// ------------------------------------------------------------- fixtures

fn services(kind: SchedulerKind) -> ServiceSnapshot {
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

/// Routes to both /16s; the clients of the large sets spread over
/// 198.18.0.0/16, so their neighbour entries are many: one per client.
fn nexthops(clients: &[Ipv4Addr]) -> NextHopSnapshot {
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
fn client(i: usize) -> (Ipv4Addr, u16) {
    let host = 2 + (i / 16384) as u32;
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host);
    (addr, 10_000 + (i % 16384) as u16)
}

fn clients(n: usize) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = (0..n).map(|i| client(i).0).collect();
    v.dedup();
    v
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

fn from_client(i: usize, flags: u8) -> (RxMeta, Vec<u8>) {
    let f = tcp_frame((GW_CLI_MAC, CLIENT_MAC), client(i), (VIP, VIP_PORT), flags);
    (meta(CLIENT_IF, &f), f)
}

fn from_backend(i: usize, backend_port: u16, flags: u8) -> (RxMeta, Vec<u8>) {
    let f = tcp_frame(
        (GW_SRV_MAC, BACKEND_MAC),
        (BACKEND, backend_port),
        client(i),
        flags,
    );
    (meta(BACKEND_IF, &f), f)
}

fn meta(ifindex: u32, frame: &[u8]) -> RxMeta {
    RxMeta {
        ifindex,
        wire_len: frame.len() as u32,
        csum_not_ready: false,
    }
}

fn pipeline(capacity: usize) -> Pipeline {
    let config = PipelineConfig {
        conn: ConnTableConfig {
            capacity,
            ..ConnTableConfig::default()
        },
        ..PipelineConfig::default()
    };
    // Fixed, valid capacity (at most 2^20).
    Pipeline::new(&config).expect("valid pipeline config")
}

/// One pipeline with its snapshots and a frame set to replay.
struct Setup {
    p: Pipeline,
    svc: ServiceSnapshot,
    nh: NextHopSnapshot,
    frames: Vec<(RxMeta, Vec<u8>)>,
    scratch: Vec<u8>,
}

impl Setup {
    /// Copies each template into the scratch buffer and processes it.
    /// Returns how many were transmitted.
    #[inline(never)]
    fn pass(&mut self, now: u64) -> usize {
        let mut tx = 0;
        for (meta, frame) in &self.frames {
            let buf = &mut self.scratch[..frame.len()];
            buf.copy_from_slice(frame);
            let v = self.p.process(now, &self.svc, &self.nh, meta, buf);
            tx += usize::from(matches!(black_box(v), Verdict::Tx { .. }));
        }
        tx
    }

    /// The frame reset alone.
    #[inline(never)]
    fn copy_pass(&mut self) -> usize {
        let mut n = 0;
        for (_, frame) in &self.frames {
            let buf = &mut self.scratch[..frame.len()];
            buf.copy_from_slice(frame);
            n += usize::from(black_box(&*buf)[0]);
        }
        n
    }
}

/// `flows` established connections (SYN, SYN-ACK, ACK processed), and the
/// ACKs of each in both directions, interleaved, as the frame set.
fn established(flows: usize, capacity: usize) -> Setup {
    let mut s = Setup {
        p: pipeline(capacity),
        svc: services(SchedulerKind::Maglev),
        nh: nexthops(&clients(flows)),
        frames: Vec::with_capacity(2 * flows),
        scratch: vec![0; 128],
    };
    for i in 0..flows {
        let (m, mut syn) = from_client(i, SYN);
        let v = s.p.process(1000, &s.svc, &s.nh, &m, &mut syn);
        assert!(matches!(v, Verdict::Tx { .. }), "SYN {i} not forwarded");
        let backend_port = u16::from_be_bytes([syn[36], syn[37]]);
        let (m, mut syn_ack) = from_backend(i, backend_port, SYN_ACK);
        let v = s.p.process(1001, &s.svc, &s.nh, &m, &mut syn_ack);
        assert!(matches!(v, Verdict::Tx { .. }), "SYN-ACK {i} not reversed");
        let (m, mut ack) = from_client(i, ACK);
        let v = s.p.process(1002, &s.svc, &s.nh, &m, &mut ack);
        assert!(matches!(v, Verdict::Tx { .. }), "ACK {i} not forwarded");
        s.frames.push(from_client(i, ACK));
        s.frames.push(from_backend(i, backend_port, ACK));
    }
    assert_eq!(s.p.conns().len(), flows);
    s
}

/// A fresh 2^20 table and `NEW_FLOWS` SYNs from distinct clients.
fn new_flows(kind: SchedulerKind) -> Setup {
    Setup {
        p: pipeline(BIG_TABLE),
        svc: services(kind),
        nh: nexthops(&clients(NEW_FLOWS)),
        frames: (0..NEW_FLOWS).map(|i| from_client(i, SYN)).collect(),
        scratch: vec![0; 128],
    }
}

// ------------------------------------------------------------ criterion

fn bench_established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    for (name, flows, capacity) in [
        ("4096_flows_2^13_table", SMALL_FLOWS, 1 << 13),
        ("4096_flows", SMALL_FLOWS, 1 << 18),
        ("262144_flows", LARGE_FLOWS, BIG_TABLE),
    ] {
        let mut s = established(flows, capacity);
        g.throughput(Throughput::Elements(s.frames.len() as u64));
        g.bench_function(format!("{name}/process+copy"), |b| {
            b.iter(|| assert_eq!(s.pass(2000), s.frames.len()))
        });
        g.bench_function(format!("{name}/copy_only"), |b| b.iter(|| s.copy_pass()));
    }
    g.finish();
}

fn bench_new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flows");
    g.throughput(Throughput::Elements(NEW_FLOWS as u64));
    g.sample_size(10);
    for (name, kind) in [
        ("maglev", SchedulerKind::Maglev),
        ("rr", SchedulerKind::Rr),
        ("lc", SchedulerKind::Lc),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || new_flows(kind),
                |mut s| {
                    assert_eq!(s.pass(1000), NEW_FLOWS);
                    s
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

// -------------------------------------------------------------- summary

/// Median, 10th and 90th percentile of `samples` (ns per packet).
fn quantiles(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn time_per_packet(packets: usize, f: impl FnOnce() -> usize) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_nanos() as f64 / packets as f64
}

fn row(name: &str, samples: Vec<f64>) {
    let (median, p10, p90) = quantiles(samples);
    println!("  {name:<44} {median:>8.1} {p10:>8.1} {p90:>8.1}");
}

fn summary() {
    println!("\nsummary: ns per packet over {SUMMARY_SAMPLES} passes (median, p10, p90)");
    println!("  {:<44} {:>8} {:>8} {:>8}", "case", "median", "p10", "p90");
    for (name, flows, capacity) in [
        ("established, 4096 flows, 2^13 table", SMALL_FLOWS, 1 << 13),
        ("established, 4096 flows, 2^18 table", SMALL_FLOWS, 1 << 18),
        (
            "established, 262144 flows, 2^20 table",
            LARGE_FLOWS,
            BIG_TABLE,
        ),
    ] {
        let mut s = established(flows, capacity);
        let n = s.frames.len();
        for _ in 0..3 {
            s.pass(2000);
        }
        let mut both = Vec::new();
        let mut copy = Vec::new();
        for _ in 0..SUMMARY_SAMPLES {
            both.push(time_per_packet(n, || s.pass(2000)));
            copy.push(time_per_packet(n, || s.copy_pass()));
        }
        let net: Vec<f64> = both.iter().zip(&copy).map(|(b, c)| b - c).collect();
        row(&format!("{name}: process+copy"), both);
        row(&format!("{name}: copy only"), copy);
        row(&format!("{name}: process (difference)"), net);
    }
    for (name, kind) in [
        ("maglev", SchedulerKind::Maglev),
        ("rr", SchedulerKind::Rr),
        ("lc", SchedulerKind::Lc),
        ("wrr", SchedulerKind::Wrr),
        ("sh", SchedulerKind::Sh),
    ] {
        let samples = (0..SUMMARY_SAMPLES / 3)
            .map(|_| {
                let mut s = new_flows(kind);
                time_per_packet(NEW_FLOWS, || s.pass(1000))
            })
            .collect();
        row(
            &format!("new flows (SYN, 2^20 table), {name}: process+copy"),
            samples,
        );
    }
}

// ------------------------------------------------------------- memory

/// Resident set size of this process in bytes (Linux), if readable.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory() {
    let per = ConnTable::bytes_per_connection();
    println!("\nconnection table memory");
    println!("  bytes_per_connection()                      {per} B");
    let before = rss_bytes();
    let config = ConnTableConfig {
        capacity: BIG_TABLE,
        ..ConnTableConfig::default()
    };
    // Fixed, valid capacity.
    let table = ConnTable::new(&config).expect("valid table config");
    let after = rss_bytes();
    let cap = table.capacity();
    println!(
        "  memory_bytes() / capacity (2^20)            {:.2} B",
        table.memory_bytes() as f64 / cap as f64
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  measured RSS growth / capacity (2^20)       {:.2} B",
            a.saturating_sub(b) as f64 / cap as f64
        );
    }
    drop(black_box(table));
}

/// `VIPGATE_BENCH_QUICK=<passes>`: only the established 4096-flow cases,
/// minimum and median ns per packet over that many passes (process +
/// copy). For comparing two builds on a noisy machine: the minimum moves
/// least.
fn quick(passes: usize) {
    for (name, capacity) in [("2^13", 1 << 13), ("2^18", 1 << 18)] {
        let mut s = established(SMALL_FLOWS, capacity);
        let n = s.frames.len();
        for _ in 0..10 {
            s.pass(2000);
        }
        let mut samples: Vec<f64> = (0..passes.max(1))
            .map(|_| time_per_packet(n, || s.pass(2000)))
            .collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "quick established 4096 flows {name}: min {:.1} median {:.1} ns/packet",
            samples[0],
            samples[samples.len() / 2]
        );
    }
}

fn main() {
    if let Some(passes) = std::env::var("VIPGATE_BENCH_QUICK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        quick(passes);
        return;
    }
    memory();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    bench_established(&mut c);
    bench_new_flows(&mut c);
    c.final_summary();
    // VIPGATE_BENCH_SUMMARY=0 skips the median summary (for profiling).
    if std::env::var("VIPGATE_BENCH_SUMMARY").as_deref() != Ok("0") {
        summary();
    }
}
