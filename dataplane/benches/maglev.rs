//! Microbenchmark of the weighted Maglev table build
//! ([`MaglevTable::build`]), the cost of every snapshot that changes a
//! Maglev service's backends or weights.
//!
//! Cases (`maglev_build/<M>/<backends>`): the default table size M = 65537
//! with 3, 100 and 1000 backends of weight 1, 100 backends of weights 1-10,
//! and M = 655373 with 1000 backends. The Maglev paper (NSDI 2016) gives
//! 1.8 ms for M = 65537 and 22.6 ms for M = 655373. 1000 backends in 65537
//! slots is below the 100 slots per backend the paper recommends
//! ([`MaglevTable::is_undersized`]); it is measured because it is the
//! largest figure of that kind.
//!
//! Backend keys are [`endpoint_key`]s of 198.18.x.y:80, as the daemon
//! derives them. Run: `cargo bench -p vipgate-dataplane --bench maglev`;
//! the summary after criterion's report is the median over builds, in µs.
//!
//! Touches nothing but memory; each build allocates its table.

#[path = "../../benches/common/summary.rs"]
mod summary;

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use vipgate_dataplane::flow::Addr16;
use vipgate_dataplane::sched::{endpoint_key, MaglevTable, SchedBackend, DEFAULT_MAGLEV_SIZE};

use summary::{Mode, Summary};

/// The paper's larger table size (a prime).
const LARGE_SIZE: u32 = 655_373;
/// Builds per summary row.
const SUMMARY_BUILDS: usize = 31;

/// One case: name, table size, backend count, weights vary 1-10.
const CASES: [(&str, u32, usize, bool); 5] = [
    ("65537/3_backends", DEFAULT_MAGLEV_SIZE, 3, false),
    ("65537/100_backends", DEFAULT_MAGLEV_SIZE, 100, false),
    (
        "65537/100_backends_weights_1-10",
        DEFAULT_MAGLEV_SIZE,
        100,
        true,
    ),
    ("65537/1000_backends", DEFAULT_MAGLEV_SIZE, 1000, false),
    ("655373/1000_backends", LARGE_SIZE, 1000, false),
];

/// `n` backends 198.18.(i / 250).(i % 250 + 1):80, weight 1 or 1 + i % 10.
fn backends(n: usize, weighted: bool) -> Vec<SchedBackend> {
    (0..n)
        .map(|i| {
            let addr = Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8);
            let weight = if weighted { 1 + (i % 10) as u32 } else { 1 };
            SchedBackend::new(endpoint_key(Addr16::from_v4(addr), 80), weight)
        })
        .collect()
}

fn build(size: u32, backends: &[SchedBackend]) -> MaglevTable {
    // Fixed, valid input: prime sizes, distinct keys, at most 1000 backends.
    MaglevTable::build(size, backends).expect("valid Maglev input")
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for (name, size, n, weighted) in CASES {
        let b = backends(n, weighted);
        g.bench_function(name, |bench| bench.iter(|| build(size, black_box(&b))));
    }
    g.finish();
}

fn summary(mode: Mode) {
    let mut t = Summary::new("maglev_build", "µs per build", mode.samples(SUMMARY_BUILDS));
    for (name, size, n, weighted) in CASES {
        let b = backends(n, weighted);
        let table = build(size, &b);
        let counts = table.entry_counts(n);
        let (min, max) = (counts.iter().min(), counts.iter().max());
        println!(
            "  {name}: slots per backend {}..{}, undersized: {}",
            min.unwrap_or(&0),
            max.unwrap_or(&0),
            table.is_undersized()
        );
        build(size, &b);
        let samples = (0..t.samples())
            .map(|_| summary::ns_per_item(1, || build(size, &b)) / 1000.0)
            .collect();
        t.push(name, samples);
    }
    t.print();
}

fn main() {
    let mode = Mode::from_args();
    let mut c = summary::criterion(Duration::from_millis(500), Duration::from_secs(2));
    bench_build(&mut c);
    c.final_summary();
    if mode.summary() {
        summary(mode);
    }
}
