//! Microbenchmarks of the in-memory NAT pipeline ([`Pipeline::process`]),
//! the three cases of issue 6 §5, each in ns per packet:
//!
//! - `pipeline/established/*`: a client's ACK on an established
//!   connection (client -> VIP, forward NAT to the backend);
//! - `pipeline/reply/*`: the backend's ACK on an established connection
//!   (backend -> client, reverse NAT);
//! - `pipeline/new_flow/<scheduler>`: a client's SYN that creates a
//!   connection (scheduler pick, full L4 checksum check, insert).
//!
//! The established and reply cases run 4096 flows in a table of 2^13
//! (dense: the index fits in cache and TLB) and of 2^18 (the default
//! capacity: the same flows scattered over 4 MB of index), and 262144 flows
//! in a 2^20 table. New flows are SYNs from 65536 distinct client endpoints
//! into a 2^20 table that already held (and expired) the same number, so
//! the index pages are mapped; the summary also shows a fresh table, where
//! the first touch of each index page is part of the cost.
//!
//! Every measured packet is first copied from a pristine 66-byte template
//! (14 Ethernet + 20 IPv4 + 20 TCP + 12 payload) into one scratch buffer,
//! as `MemIo`'s replay and the RX ring copy do: the figures include that
//! copy; the summary's "copy only" rows show it alone.
//!
//! Run: `cargo bench -p vipgate-dataplane --bench pipeline` (`-- --quick`
//! for a short run). After criterion's report, `main` prints a summary of
//! medians over passes of the whole frame set (ns per packet) and the
//! connection table's memory per connection (computed, and measured as
//! resident set growth). `VIPGATE_BENCH_COMPARE=<passes>` prints only min
//! and median of the 4096-flow cases over that many passes: for comparing
//! two builds on a noisy machine (the minimum moves least).
//!
//! Touches no kernel object; allocates only outside the timed loops.

#[path = "../../benches/common/summary.rs"]
mod summary;

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use vipgate_dataplane::conntrack::{ConnTable, ConnTableConfig, Timeouts};
use vipgate_dataplane::sched::SchedulerKind;

use common::{established, from_client, Established, Frame, Gateway, SYN};
use summary::{Mode, Summary};

/// Capacity of the large tables (the daemon's default `conn_capacity`).
const BIG_TABLE: usize = 1 << 20;
/// Flows of the small established set.
const SMALL_FLOWS: usize = 4096;
/// Flows of the large established set.
const LARGE_FLOWS: usize = 1 << 18;
/// SYNs per pass of the new-flow benchmark.
const NEW_FLOWS: usize = 1 << 16;
/// Virtual time of the established replays (ms).
const NOW: u64 = 2000;
/// Passes per summary row.
const SUMMARY_PASSES: usize = 31;

/// The established sets: name, flows, table capacity.
const SETS: [(&str, usize, usize); 3] = [
    ("4096_flows/2^13_table", SMALL_FLOWS, 1 << 13),
    ("4096_flows/2^18_table", SMALL_FLOWS, 1 << 18),
    ("262144_flows/2^20_table", LARGE_FLOWS, BIG_TABLE),
];

const SCHEDULERS: [(&str, SchedulerKind); 5] = [
    ("maglev", SchedulerKind::Maglev),
    ("rr", SchedulerKind::Rr),
    ("wrr", SchedulerKind::Wrr),
    ("lc", SchedulerKind::Lc),
    ("sh", SchedulerKind::Sh),
];

// ----------------------------------------------------------- new flows

/// A 2^20 table and SYNs from `NEW_FLOWS` distinct clients; between passes
/// the clock jumps past the SYN_SENT timeout and every connection expires,
/// so each pass creates them all again.
struct NewFlows {
    gw: Gateway,
    syns: Vec<Frame>,
    now: u64,
}

impl NewFlows {
    /// `warm`: one pass is run and expired first, so the table's pages
    /// are mapped.
    fn new(kind: SchedulerKind, warm: bool) -> NewFlows {
        let mut s = NewFlows {
            gw: Gateway::new(
                common::pipeline(BIG_TABLE, Timeouts::default()),
                common::services(kind),
                common::nexthops(&common::clients(NEW_FLOWS)),
            ),
            syns: (0..NEW_FLOWS).map(|i| from_client(i, SYN)).collect(),
            now: 1000,
        };
        if warm {
            s.pass(NEW_FLOWS);
            s.expire_all();
        }
        s
    }

    /// The first `n` SYNs; asserts that each opened a connection.
    fn pass(&mut self, n: usize) -> usize {
        let tx = self.gw.replay(self.now, &self.syns[..n]);
        assert_eq!(tx, n, "every SYN is forwarded");
        tx
    }

    /// Moves past the SYN_SENT timeout and expires every connection.
    fn expire_all(&mut self) {
        self.now += Timeouts::default().syn_sent.as_millis() as u64 + 1;
        while !self.gw.p.conns().is_empty() {
            self.gw.p.expire(self.now);
        }
    }
}

// ------------------------------------------------------------ criterion

/// One packet per criterion iteration, cycling through `frames`.
fn per_packet(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    gw: &mut Gateway,
    frames: &[Frame],
) {
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            let f = &frames[i];
            i = if i + 1 == frames.len() { 0 } else { i + 1 };
            gw.one(NOW, f)
        })
    });
}

fn bench_established(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for (name, flows, capacity) in SETS {
        let Established {
            mut gw,
            forward,
            reply,
            ..
        } = established(flows, capacity, NOW);
        per_packet(&mut g, &format!("established/{name}"), &mut gw, &forward);
        per_packet(&mut g, &format!("reply/{name}"), &mut gw, &reply);
    }
    g.finish();
}

fn bench_new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for (name, kind) in SCHEDULERS {
        let mut s = NewFlows::new(kind, true);
        g.bench_function(format!("new_flow/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut left = iters as usize;
                let mut spent = Duration::ZERO;
                while left > 0 {
                    let n = left.min(NEW_FLOWS);
                    let start = Instant::now();
                    s.pass(n);
                    spent += start.elapsed();
                    s.expire_all();
                    left -= n;
                }
                spent
            })
        });
    }
    g.finish();
}

// -------------------------------------------------------------- summary

/// ns per packet of `passes` passes over `frames` (after 3 unmeasured).
fn passes(gw: &mut Gateway, frames: &[Frame], passes: usize) -> Vec<f64> {
    for _ in 0..3 {
        gw.replay(NOW, frames);
    }
    (0..passes)
        .map(|_| summary::ns_per_item(frames.len(), || gw.replay(NOW, frames)))
        .collect()
}

/// Per set, the cases take turns pass by pass, so that a disturbance of the
/// machine hits them alike.
fn summary_established(t: &mut Summary) {
    let n = t.samples();
    for (name, flows, capacity) in SETS {
        let Established {
            mut gw,
            forward,
            reply,
            both,
        } = established(flows, capacity, NOW);
        let cases = [
            ("established (client ACK)", &forward),
            ("reply (backend ACK)", &reply),
            ("both interleaved", &both),
        ];
        let mut samples = vec![Vec::with_capacity(n); cases.len() + 1];
        for round in 0..n + 3 {
            for ((_, frames), v) in cases.iter().zip(&mut samples) {
                let ns = summary::ns_per_item(frames.len(), || gw.replay(NOW, frames));
                // Rounds 0-2 warm up.
                if round >= 3 {
                    v.push(ns);
                }
            }
            let copy = summary::ns_per_item(both.len(), || gw.copy_only(&both));
            if round >= 3 {
                samples[cases.len()].push(copy);
            }
        }
        let names = cases.iter().map(|(case, _)| *case).chain(["copy only"]);
        for (case, v) in names.zip(samples) {
            t.push(&format!("{case}, {name}"), v);
        }
    }
}

fn summary_new_flows(t: &mut Summary) {
    let n = t.samples() / 3;
    for (name, kind) in SCHEDULERS {
        let mut s = NewFlows::new(kind, true);
        let samples = (0..n.max(3))
            .map(|_| {
                let ns = summary::ns_per_item(NEW_FLOWS, || s.pass(NEW_FLOWS));
                s.expire_all();
                ns
            })
            .collect();
        t.push(&format!("new_flow (SYN), 2^20 table, {name}"), samples);
    }
    let fresh = (0..n.max(3))
        .map(|_| {
            let mut s = NewFlows::new(SchedulerKind::Maglev, false);
            summary::ns_per_item(NEW_FLOWS, || s.pass(NEW_FLOWS))
        })
        .collect();
    t.push("new_flow (SYN), fresh 2^20 table, maglev", fresh);
}

// ------------------------------------------------------------- memory

/// Resident set size of this process in bytes (Linux), if readable.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory() {
    println!("\nconnection table memory");
    println!(
        "  bytes_per_connection()                      {} B",
        ConnTable::bytes_per_connection()
    );
    let before = rss_bytes();
    let config = ConnTableConfig {
        capacity: BIG_TABLE,
        ..ConnTableConfig::default()
    };
    // Fixed, valid capacity.
    let table = ConnTable::new(&config).expect("valid table config");
    let after = rss_bytes();
    let cap = table.capacity() as f64;
    println!(
        "  memory_bytes() / capacity (2^20)            {:.2} B",
        table.memory_bytes() as f64 / cap
    );
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  RSS growth / capacity (2^20, unfilled)      {:.2} B",
            a.saturating_sub(b) as f64 / cap
        );
    }
    drop(black_box(table));
}

// ------------------------------------------------------------- compare

/// `VIPGATE_BENCH_COMPARE=<passes>`: min and median ns per packet of the
/// 4096-flow cases over `passes` passes each.
fn compare(passes_each: usize) {
    for (name, flows, capacity) in &SETS[..2] {
        let mut s = established(*flows, *capacity, NOW);
        for (case, frames) in [
            ("established", &s.forward),
            ("reply", &s.reply),
            ("both", &s.both),
        ] {
            let mut v = passes(&mut s.gw, frames, passes_each.max(1));
            v.sort_by(f64::total_cmp);
            println!(
                "compare {case:<11} {name}: min {:.1} median {:.1} ns/packet",
                v[0],
                v[v.len() / 2]
            );
        }
    }
}

fn main() {
    if let Some(n) = std::env::var("VIPGATE_BENCH_COMPARE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        compare(n);
        return;
    }
    let mode = Mode::from_args();
    if mode.summary() {
        // First, while no large table was freed yet: the resident set
        // growth is only meaningful before the allocator holds free pages.
        memory();
    }
    let mut c = summary::criterion(Duration::from_millis(500), Duration::from_secs(2));
    bench_established(&mut c);
    bench_new_flows(&mut c);
    c.final_summary();
    if mode.summary() {
        let mut t = Summary::new("pipeline", "ns per packet", mode.samples(SUMMARY_PASSES));
        summary_established(&mut t);
        summary_new_flows(&mut t);
        t.print();
    }
}
