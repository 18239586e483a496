//! The short table of medians every vipgate microbenchmark prints after
//! criterion's own report.
//!
//! Shared by the bench targets of the workspace's three packages (each
//! includes this file with `#[path]`): `dataplane/benches/*.rs`,
//! `routing/benches/wire.rs` and the root package's `benches/vrrp.rs`.
//!
//! Criterion reports a slope over many back-to-back iterations; the table
//! here times whole samples (each at least [`MIN_SAMPLE`] long, or one pass
//! of a frame set) and prints the median with the 10th and 90th percentile,
//! so a noisy machine shows as a wide spread instead of a shifted estimate.
//!
//! Owns the sampling and the printing only; what is measured belongs to the
//! bench that calls it. Must not touch criterion's configuration beyond
//! [`criterion`].

#![allow(dead_code)] // Each bench uses a different part.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// Shortest sample of [`Summary::time`]: long enough that the clock's
/// resolution and the call overhead vanish.
pub const MIN_SAMPLE: Duration = Duration::from_millis(2);

/// How the bench binary was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench`: criterion measures, the summary follows.
    Full,
    /// `cargo bench -- --quick`: criterion's quick mode and a summary of
    /// few samples.
    Quick,
    /// `cargo test --benches` (no `--bench` argument): criterion runs each
    /// benchmark once; no summary.
    Test,
}

impl Mode {
    /// From the command line; `VIPGATE_BENCH_QUICK=1` also selects
    /// [`Mode::Quick`], and `VIPGATE_BENCH_SUMMARY=0` turns the summary
    /// off (for profiling) by selecting [`Mode::Test`] for it.
    pub fn from_args() -> Mode {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let env_is = |name: &str, value: &str| std::env::var(name).as_deref() == Ok(value);
        if !has("--bench") || env_is("VIPGATE_BENCH_SUMMARY", "0") {
            Mode::Test
        } else if has("--quick") || env_is("VIPGATE_BENCH_QUICK", "1") {
            Mode::Quick
        } else {
            Mode::Full
        }
    }

    /// Whether the summary runs.
    pub fn summary(self) -> bool {
        self != Mode::Test
    }

    /// Samples per summary row: `full` normally, a third of it (at least 3)
    /// in quick mode.
    pub fn samples(self, full: usize) -> usize {
        match self {
            Mode::Quick => (full / 3).max(3),
            _ => full,
        }
    }
}

/// The criterion configuration of vipgate's benches: `warm_up` and
/// `measurement` time per benchmark, 20 samples, then the command line
/// (which may say `--quick`, a filter, `--sample-size`...).
/// `VIPGATE_BENCH_QUICK=1` makes every benchmark 0.25 s of warm-up and
/// 0.5 s of 10 samples instead: the way to a quick run of
/// `cargo bench --workspace`, whose library targets refuse `-- --quick`.
pub fn criterion(warm_up: Duration, measurement: Duration) -> Criterion {
    let c = Criterion::default();
    let c = if std::env::var("VIPGATE_BENCH_QUICK").as_deref() == Ok("1") {
        c.warm_up_time(Duration::from_millis(250))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c.warm_up_time(warm_up)
            .measurement_time(measurement)
            .sample_size(20)
    };
    c.configure_from_args()
}

/// One printed row: median and spread of per-item costs.
struct Row {
    name: String,
    median: f64,
    p10: f64,
    p90: f64,
}

/// A titled table of rows, printed by [`Summary::print`].
pub struct Summary {
    title: String,
    unit: &'static str,
    samples: usize,
    rows: Vec<Row>,
}

impl Summary {
    /// An empty table whose rows are `unit` (e.g. "ns per packet") over
    /// `samples` samples each.
    pub fn new(title: &str, unit: &'static str, samples: usize) -> Summary {
        Summary {
            title: title.to_string(),
            unit,
            samples: samples.max(1),
            rows: Vec::new(),
        }
    }

    /// Samples per row.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Adds a row from per-item costs measured by the caller.
    pub fn push(&mut self, name: &str, mut samples: Vec<f64>) {
        if samples.is_empty() {
            return;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        self.rows.push(Row {
            name: name.to_string(),
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        });
    }

    /// Adds a row for `f`, one item per call: each sample repeats `f` for
    /// at least [`MIN_SAMPLE`] and divides. Calibrating the repeat count
    /// warms up.
    pub fn time<R>(&mut self, name: &str, f: impl FnMut() -> R) {
        self.time_n(name, 1, f);
    }

    /// [`Summary::time`] for an `f` that handles `items` items per call.
    pub fn time_n<R>(&mut self, name: &str, items: usize, mut f: impl FnMut() -> R) {
        let reps = calibrate(&mut f);
        let per = (reps * items.max(1) as u64) as f64;
        let samples = (0..self.samples)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..reps {
                    black_box(f());
                }
                start.elapsed().as_nanos() as f64 / per
            })
            .collect();
        self.push(name, samples);
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(4);
        println!(
            "\n{}: {}, median of {} samples (p10, p90)",
            self.title, self.unit, self.samples
        );
        println!(
            "  {:<width$} {:>10} {:>10} {:>10}",
            "case", "median", "p10", "p90"
        );
        for r in &self.rows {
            println!(
                "  {:<width$} {:>10} {:>10} {:>10}",
                r.name,
                fmt(r.median),
                fmt(r.p10),
                fmt(r.p90)
            );
        }
    }
}

/// How many calls of `f` take at least [`MIN_SAMPLE`] (the calibration
/// runs double as a warm-up).
fn calibrate<R>(f: &mut impl FnMut() -> R) -> u64 {
    let mut reps = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..reps {
            black_box(f());
        }
        if start.elapsed() >= MIN_SAMPLE || reps >= 1 << 30 {
            return reps;
        }
        reps *= 2;
    }
}

/// Three significant digits, at least one decimal below 100.
fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Nanoseconds per item of one call of `f` that handles `items` items.
pub fn ns_per_item<R>(items: usize, f: impl FnOnce() -> R) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_nanos() as f64 / items.max(1) as f64
}
