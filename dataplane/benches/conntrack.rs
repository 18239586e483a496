//! Microbenchmarks of connection-table expiry: what one expired connection
//! costs, and what expiry adds per packet when it runs between batches of
//! traffic as the worker loop does.
//!
//! - `conntrack_expiry/table/<n>_in_<capacity>`: [`ConnTable::expire`]
//!   alone releasing due connections (SYN_SENT, inserted at one time),
//!   ns per released connection; `n` = 65536 in the default 2^18 table
//!   and 262144 in 2^20 (most entries and index slots then miss the cache).
//! - `conntrack_expiry/pipeline/65536_in_2^18`: the same through
//!   [`Pipeline::expire`], the worker's call: at most 256 per call (the
//!   default budget), plus the per-backend gauge and the counters.
//! - `conntrack_expiry/alongside_traffic/<variant>`: ns per packet of a
//!   worker loop over 4096 established flows (2^18 table, client and
//!   backend ACKs interleaved), batches of 32 packets, the clock 1 ms
//!   further each batch: `no_expire` calls no expiry at all;
//!   `expire_0_due` calls [`Pipeline::expire`] after each batch with
//!   nothing due (the common case: one check per state list);
//!   `expire_1_due` and `expire_8_due` have that many embryonic
//!   connections (inserted 100 ms earlier, SYN_SENT timeout 100 ms) come
//!   due per batch. The difference to `expire_0_due`, times 32 and divided
//!   by the due count, is the cost of one expired connection amid traffic.
//!
//! Run: `cargo bench -p vipgate-dataplane --bench conntrack`; the summary
//! after criterion's report has the medians. Filling the tables is never
//! timed. Touches no kernel object.

#[path = "../../benches/common/summary.rs"]
mod summary;

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use vipgate_dataplane::conntrack::{ClientEndpoint, ConnTable, ConnTableConfig, Timeouts};
use vipgate_dataplane::flow::{Addr16, L4Proto};

use common::{established_with, from_client, Frame, Gateway, SYN};
use summary::{Mode, Summary};

/// Packets per batch in the worker-loop cases.
const BATCH: usize = 32;
/// Established flows of the worker-loop cases.
const FLOWS: usize = 4096;
/// SYN_SENT timeout of the worker-loop cases (ms).
const SYN_TIMEOUT_MS: u64 = 100;
/// Samples per summary row.
const SUMMARY_SAMPLES: usize = 21;

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

// --------------------------------------------------- expiry of a table

/// A table and `n` client endpoints to fill it with.
struct Table {
    t: ConnTable,
    clients: Vec<ClientEndpoint>,
    now: u64,
}

impl Table {
    fn new(n: usize, capacity: usize) -> Table {
        let config = ConnTableConfig {
            capacity,
            ..ConnTableConfig::default()
        };
        let clients = (0..n)
            .map(|i| {
                let (addr, port) = common::client(i);
                ClientEndpoint {
                    addr: Addr16::from_v4(addr),
                    port,
                    proto: L4Proto::Tcp,
                }
            })
            .collect();
        Table {
            // Fixed, valid capacity.
            t: ConnTable::new(&config).expect("valid table config"),
            clients,
            now: 1000,
        }
    }

    /// Inserts every client (SYN_SENT) and moves the clock past their
    /// deadline.
    fn fill(&mut self) {
        for (i, c) in self.clients.iter().enumerate() {
            // Fits: the table is empty and large enough.
            let ok = self.t.insert(c, 1, (i % 3) as u32, self.now).is_ok();
            assert!(ok, "insert {i}");
        }
        self.now += Timeouts::default().syn_sent.as_millis() as u64;
    }

    /// Fills the table, then times releasing every connection.
    fn fill_and_expire(&mut self) -> (Duration, usize) {
        self.fill();
        let start = Instant::now();
        let done = self.t.expire(self.now, usize::MAX, |r| {
            std::hint::black_box(r);
        });
        let spent = start.elapsed();
        assert_eq!(done, self.clients.len());
        (spent, done)
    }
}

/// Criterion's `iter_custom` over whole fill-and-expire rounds: at least
/// `iters` released, the time scaled to exactly `iters`.
fn rounds(iters: u64, mut round: impl FnMut() -> (Duration, usize)) -> Duration {
    let (mut spent, mut done) = (Duration::ZERO, 0u64);
    while done < iters {
        let (t, n) = round();
        spent += t;
        done += n as u64;
    }
    spent.mul_f64(iters as f64 / done as f64)
}

/// A pipeline with `n` SYN_SENT connections to expire through
/// [`vipgate_dataplane::pipeline::Pipeline::expire`].
struct PipelineExpiry {
    gw: Gateway,
    syns: Vec<Frame>,
    now: u64,
}

impl PipelineExpiry {
    fn new(n: usize, capacity: usize) -> PipelineExpiry {
        PipelineExpiry {
            gw: Gateway::new(
                common::pipeline(capacity, Timeouts::default()),
                common::services(vipgate_dataplane::sched::SchedulerKind::Maglev),
                common::nexthops(&common::clients(n)),
            ),
            syns: (0..n).map(|i| from_client(i, SYN)).collect(),
            now: 1000,
        }
    }

    /// Time to release every connection after a fill; returns it and the
    /// count.
    fn fill_and_expire(&mut self) -> (Duration, usize) {
        let n = self.gw.replay(self.now, &self.syns);
        assert_eq!(n, self.syns.len());
        self.now += Timeouts::default().syn_sent.as_millis() as u64;
        let start = Instant::now();
        while !self.gw.p.conns().is_empty() {
            self.gw.p.expire(self.now);
        }
        (start.elapsed(), n)
    }
}

fn bench_table(g: &mut Group<'_>) {
    for (name, n, capacity) in [
        ("table/65536_in_2^18", 1 << 16, 1 << 18),
        ("table/262144_in_2^20", 1 << 18, 1 << 20),
    ] {
        let mut t = Table::new(n, capacity);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| rounds(iters, || t.fill_and_expire()))
        });
    }
    let mut p = PipelineExpiry::new(1 << 16, 1 << 18);
    g.bench_function("pipeline/65536_in_2^18", |b| {
        b.iter_custom(|iters| rounds(iters, || p.fill_and_expire()))
    });
}

// ------------------------------------------- expiry amid traffic

/// The worker-loop cases: established traffic, batches, expiry.
struct Alongside {
    gw: Gateway,
    traffic: Vec<Frame>,
    /// SYNs of background clients that will come due during the traffic.
    background: Vec<Frame>,
    /// Next traffic frame.
    at: usize,
    now: u64,
}

impl Alongside {
    fn new() -> Alongside {
        let timeouts = Timeouts {
            syn_sent: Duration::from_millis(SYN_TIMEOUT_MS),
            ..Timeouts::default()
        };
        let s = established_with(FLOWS, 1 << 18, timeouts, 1000);
        // Background clients follow the established ones: at most 8 per
        // batch for 256 batches.
        let background = (FLOWS..FLOWS + 8 * 256)
            .map(|i| from_client(i, SYN))
            .collect();
        Alongside {
            gw: s.gw,
            traffic: s.both,
            background,
            at: 0,
            now: 1000,
        }
    }

    /// `packets` packets in batches of [`BATCH`]; with `due = Some(k)`,
    /// [`Pipeline::expire`] after each batch and `k` connections due at
    /// each (inserted, untimed, one timeout earlier).
    fn run(&mut self, packets: u64, due: Option<usize>) -> Duration {
        let mut left = packets as usize;
        let mut spent = Duration::ZERO;
        while left > 0 {
            let batches = left.div_ceil(BATCH).min(256);
            if let Some(k) = due.filter(|&k| k > 0) {
                self.plant(batches, k);
            }
            let start = Instant::now();
            for _ in 0..batches {
                let n = left.min(BATCH);
                self.batch(n);
                if due.is_some() {
                    self.gw.p.expire(self.now);
                }
                self.now += 1;
                left -= n;
            }
            spent += start.elapsed();
        }
        assert_eq!(self.gw.p.conns().len(), FLOWS, "background all expired");
        spent
    }

    /// `k` background SYNs per ms for `batches` ms, then the clock moves
    /// to their first deadline.
    fn plant(&mut self, batches: usize, k: usize) {
        let start = self.now;
        for b in 0..batches {
            let syns = &self.background[b * k..(b + 1) * k];
            let n = self.gw.replay(start + b as u64, syns);
            assert_eq!(n, k);
        }
        self.now = start + SYN_TIMEOUT_MS;
    }

    #[inline(never)]
    fn batch(&mut self, n: usize) {
        for _ in 0..n {
            let f = &self.traffic[self.at];
            self.at = if self.at + 1 == self.traffic.len() {
                0
            } else {
                self.at + 1
            };
            std::hint::black_box(self.gw.one(self.now, f));
        }
    }
}

/// The worker-loop variants: name, due per batch (`None`: no expiry call).
const ALONGSIDE: [(&str, Option<usize>); 4] = [
    ("no_expire", None),
    ("expire_0_due", Some(0)),
    ("expire_1_due", Some(1)),
    ("expire_8_due", Some(8)),
];

fn bench_alongside(g: &mut Group<'_>) {
    let mut s = Alongside::new();
    for (name, due) in ALONGSIDE {
        g.bench_function(format!("alongside_traffic/{name}"), |b| {
            b.iter_custom(|iters| s.run(iters, due))
        });
    }
}

// -------------------------------------------------------------- summary

fn summary(mode: Mode) {
    let n = mode.samples(SUMMARY_SAMPLES);
    let mut t = Summary::new("conntrack_expiry", "ns per expired connection", n);
    for (name, flows, capacity) in [
        ("table, 65536 in 2^18", 1 << 16, 1 << 18),
        ("table, 262144 in 2^20", 1 << 18, 1 << 20),
    ] {
        let mut table = Table::new(flows, capacity);
        let samples = (0..n)
            .map(|_| {
                let (spent, done) = table.fill_and_expire();
                spent.as_nanos() as f64 / done as f64
            })
            .collect();
        t.push(name, samples);
    }
    let mut p = PipelineExpiry::new(1 << 16, 1 << 18);
    let samples = (0..n)
        .map(|_| {
            let (spent, done) = p.fill_and_expire();
            spent.as_nanos() as f64 / done as f64
        })
        .collect();
    t.push("Pipeline::expire, 65536 in 2^18", samples);
    t.print();

    let mut t = Summary::new(
        "conntrack_expiry/alongside_traffic (4096 flows, batches of 32)",
        "ns per packet",
        n,
    );
    // The variants take turns, sample by sample, so that a disturbance of
    // the machine hits them alike.
    let mut s = Alongside::new();
    let packets = (256 * BATCH) as u64;
    let mut samples = vec![Vec::with_capacity(n); ALONGSIDE.len()];
    for round in 0..=n {
        for ((_, due), v) in ALONGSIDE.iter().zip(&mut samples) {
            let ns = s.run(packets, *due).as_nanos() as f64 / packets as f64;
            // Round 0 warms up.
            if round > 0 {
                v.push(ns);
            }
        }
    }
    for ((name, _), v) in ALONGSIDE.iter().zip(samples) {
        t.push(name, v);
    }
    t.print();
}

fn main() {
    let mode = Mode::from_args();
    let mut c: Criterion = summary::criterion(Duration::from_millis(500), Duration::from_secs(2));
    {
        let mut g = c.benchmark_group("conntrack_expiry");
        g.throughput(Throughput::Elements(1));
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        bench_table(&mut g);
        g.finish();
        let mut g = c.benchmark_group("conntrack_expiry");
        g.throughput(Throughput::Elements(1));
        bench_alongside(&mut g);
        g.finish();
    }
    c.final_summary();
    if mode.summary() {
        summary(mode);
    }
}
