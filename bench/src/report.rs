//! Summaries and output: median/min/max over repetitions, ratios between
//! candidates, the tables printed at the end, the progress line, and the
//! JSON file.
//!
//! Owns nothing but the output directory's `results.json`; the charts are
//! written by [`crate::svg`].

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

/// Median, min and max of one figure over repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// One line of a result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub case: String,
    pub candidate: String,
    pub metric: String,
    pub unit: String,
    pub stat: Stat,
}

/// A ratio of two candidates' medians.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: String,
    pub case: String,
    pub metric: String,
    pub numerator: String,
    pub denominator: String,
    pub value: f64,
}

/// Everything a run produced.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    /// Free-form notes per scenario (skipped parts, missing scenarios).
    pub notes: Vec<String>,
    /// Raw figures per scenario.
    pub raw: serde_json::Map<String, Value>,
}

impl Report {
    pub fn add(
        &mut self,
        scenario: &str,
        case: &str,
        cand: &str,
        metric: &str,
        unit: &str,
        values: &[f64],
    ) {
        if let Some(stat) = Stat::of(values) {
            self.rows.push(Row {
                scenario: scenario.into(),
                case: case.into(),
                candidate: cand.into(),
                metric: metric.into(),
                unit: unit.into(),
                stat,
            });
        }
    }

    pub fn find(&self, scenario: &str, case: &str, cand: &str, metric: &str) -> Option<Stat> {
        self.rows
            .iter()
            .find(|r| {
                r.scenario == scenario
                    && r.case == case
                    && r.candidate == cand
                    && r.metric == metric
            })
            .map(|r| r.stat)
    }

    /// Adds the ratio of `a`'s median to `b`'s, if both exist.
    pub fn ratio(
        &mut self,
        scenario: &str,
        case: &str,
        metric: &str,
        a: &str,
        b: &str,
    ) -> Option<f64> {
        let (x, y) = (
            self.find(scenario, case, a, metric)?,
            self.find(scenario, case, b, metric)?,
        );
        if y.median == 0.0 {
            return None;
        }
        let value = x.median / y.median;
        self.ratios.push(Ratio {
            scenario: scenario.into(),
            case: case.into(),
            metric: metric.into(),
            numerator: a.into(),
            denominator: b.into(),
            value,
        });
        Some(value)
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("note: {text}");
        self.notes.push(text);
    }

    /// The table of one scenario, as printed.
    pub fn table(&self, scenario: &str) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "{:<14} {:<12} {:<34} {:>12} {:>12} {:>12} {:>3}\n",
            "case", "candidate", "metric", "median", "min", "max", "n"
        );
        for r in rows {
            let metric = format!("{} ({})", r.metric, r.unit);
            out.push_str(&format!(
                "{:<14} {:<12} {:<34} {:>12} {:>12} {:>12} {:>3}\n",
                r.case,
                r.candidate,
                metric,
                fmt(r.stat.median),
                fmt(r.stat.min),
                fmt(r.stat.max),
                r.stat.n
            ));
        }
        for q in self.ratios.iter().filter(|q| q.scenario == scenario) {
            out.push_str(&format!(
                "ratio {:<14} {:<34} {} / {} = {:.2}\n",
                q.case, q.metric, q.numerator, q.denominator, q.value
            ));
        }
        out
    }

    /// Writes `results.json` with the machine description and options.
    pub fn write_json(
        &self,
        dir: &Path,
        machine: &impl Serialize,
        options: &impl Serialize,
    ) -> Result<()> {
        let doc = serde_json::json!({
            "machine": machine,
            "options": options,
            "rows": self.rows,
            "ratios": self.ratios,
            "notes": self.notes,
            "raw": self.raw,
        });
        let path = dir.join("results.json");
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A number for the table: no more digits than it deserves.
pub fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A progress line on stderr: rewritten in place on a terminal, one line
/// per step otherwise (CI logs).
pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Announces the next step.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 24;
        let filled = (self.done * width / self.total).min(width);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
        let t = self.start.elapsed().as_secs();
        let line = format!(
            "[{bar}] {:>3}/{} {:>2}m{:02}s  {what}",
            self.done.min(self.total),
            self.total,
            t / 60,
            t % 60
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Candidate order for repetition `rep`: rotated so that no candidate is
/// always first (or always after the same one).
pub fn rotated<T: Clone>(items: &[T], rep: usize) -> Vec<T> {
    let n = items.len().max(1);
    let mut v = items.to_vec();
    v.rotate_left(rep % n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).expect("stat");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).expect("stat");
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn ratios_use_medians() {
        let mut r = Report::default();
        r.add("forward", "64 B", "a", "ns", "ns", &[100.0, 300.0, 200.0]);
        r.add("forward", "64 B", "b", "ns", "ns", &[400.0]);
        assert_eq!(r.ratio("forward", "64 B", "ns", "a", "b"), Some(0.5));
        assert_eq!(r.ratio("forward", "64 B", "ns", "a", "missing"), None);
        assert!(r.table("forward").contains("a / b = 0.50"));
    }

    #[test]
    fn rotation_alternates_order() {
        assert_eq!(rotated(&[1, 2, 3], 0), vec![1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), vec![2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 4), vec![2, 3, 1]);
    }
}
