//! The scenarios: `forward`, `flows`, `workers`, `latency`, `cps` and
//! `failover`. Each compares its candidates in one run, in repetitions
//! whose candidate order rotates, and adds its rows, ratios and raw
//! figures to the [`Report`].
//!
//! Owns the order of the measurements and what is summarised; the
//! measuring itself is [`crate::measure`]'s. Every candidate is armed for
//! its own measurement only and disarmed right after.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::cpu::rss_bytes;
use crate::gateway::{Armed, Candidate, VipgateOpts};
use crate::gen::Load;
use crate::measure::{Bench, Lossless, Sample};
use crate::report::{rotated, Progress, Report};
use crate::svg::{Series, TimelineRow};
use crate::topo::stopped;

/// The scenarios by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Forward,
    Flows,
    Workers,
    Latency,
    Cps,
    Failover,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Forward,
        Scenario::Flows,
        Scenario::Workers,
        Scenario::Latency,
        Scenario::Cps,
        Scenario::Failover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Forward => "forward",
            Scenario::Flows => "flows",
            Scenario::Workers => "workers",
            Scenario::Latency => "latency",
            Scenario::Cps => "cps",
            Scenario::Failover => "failover",
        }
    }
}

/// How much of everything to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    /// Offered rate of the CPU measurements, datagrams/s.
    pub rate: u64,
    /// Length of a CPU measurement.
    pub secs: f64,
    pub sizes: Vec<usize>,
    /// Concurrent flows of forward, workers and latency.
    pub flows: u32,
    pub flow_counts: Vec<u32>,
    /// Rate at which `flows` fills the connection table.
    pub fill_rate: u64,
    pub lossless_probes: u32,
    pub probe_secs: f64,
    pub lossless_start: f64,
    pub latency_rate: u64,
    pub cps_secs: f64,
    pub cps_clients: usize,
    pub failover_limit_secs: u64,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            reps: 3,
            rate: 200_000,
            secs: 3.0,
            sizes: vec![64, 1500],
            flows: 1024,
            flow_counts: vec![1_000, 100_000, 1_000_000],
            fill_rate: 200_000,
            lossless_probes: 7,
            probe_secs: 1.0,
            lossless_start: 100_000.0,
            latency_rate: 20_000,
            cps_secs: 5.0,
            cps_clients: 64,
            failover_limit_secs: 1200,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            reps: 1,
            rate: 50_000,
            secs: 0.5,
            sizes: vec![64, 1500],
            flows: 256,
            flow_counts: vec![1_000, 10_000],
            fill_rate: 50_000,
            lossless_probes: 2,
            probe_secs: 0.25,
            lossless_start: 50_000.0,
            latency_rate: 10_000,
            cps_secs: 1.0,
            cps_clients: 4,
            failover_limit_secs: 0,
        }
    }

    fn load(&self, flows: u32, size: usize) -> Load {
        Load {
            rate: self.rate,
            count: (self.rate as f64 * self.secs) as u64,
            max_time: Duration::from_secs_f64(self.secs * 3.0 + 2.0),
            flows,
            first_flow: 0,
            new_flow_share: 0.0,
            frame_size: size,
        }
    }

    /// The forward and latency candidates: the AF_XDP experiment is left
    /// out of --quick (CI), whose cost must not grow.
    pub fn forward_candidates(&self) -> Vec<Candidate> {
        let mut c = vec![Candidate::Vipgate, Candidate::Nft, Candidate::Reflector];
        if !self.quick {
            c.push(Candidate::XdpReflector);
        }
        c
    }

    fn probe(&self) -> Duration {
        Duration::from_secs_f64(self.probe_secs)
    }

    /// Progress steps of `scenario`.
    pub fn steps(&self, s: Scenario) -> usize {
        match s {
            Scenario::Forward => self.sizes.len() * self.reps * self.forward_candidates().len(),
            Scenario::Flows => self.flow_counts.len() * self.reps,
            Scenario::Workers => 2 * self.reps,
            Scenario::Latency => (1 + self.forward_candidates().len()) * self.reps,
            Scenario::Cps => 2 * self.reps,
            Scenario::Failover => 2,
        }
    }
}

/// What the scenarios share.
pub struct Ctx<'a> {
    pub bench: &'a mut Bench,
    pub plan: &'a Plan,
    pub vipgate: VipgateOpts,
    pub report: &'a mut Report,
    pub progress: &'a mut Progress,
    pub out: PathBuf,
    /// Latency histograms per candidate (latency scenario), for the CDF.
    pub latency: BTreeMap<String, Histogram<u64>>,
    /// (flows, lossless kpps, gateway capacity kpps) for the flows chart.
    pub flows_chart: Vec<(u32, f64, f64)>,
    pub timeline: Vec<TimelineRow>,
}

impl Ctx<'_> {
    fn arm(&mut self, cand: Candidate) -> Result<Armed> {
        Armed::arm(&self.bench.topo, cand, &self.vipgate)
    }

    /// Arms `cand` and warms it up; an optional candidate (the AF_XDP
    /// experiment) that fails either is noted as skipped, with the reason,
    /// and `None` comes back instead of an error.
    fn arm_warm(&mut self, cand: Candidate, skipped: &mut Vec<Candidate>) -> Result<Option<Armed>> {
        let optional = cand == Candidate::XdpReflector;
        let armed = self
            .arm(cand)
            .and_then(|a| self.warm_up(&a, self.plan.flows, 20_000).map(|_| a));
        match armed {
            Ok(a) => Ok(Some(a)),
            Err(e) if optional && !stopped() => {
                self.report
                    .note(format!("{}: skipped: {e:#}", cand.label()));
                skipped.push(cand);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Warm-up that must deliver something: a candidate that forwards
    /// nothing is a broken run, not a slow one.
    fn warm_up(&mut self, armed: &Armed, flows: u32, rate: u64) -> Result<Sample> {
        let w = self.bench.warm_up(armed, flows, rate)?;
        if w.received == 0 && !stopped() {
            bail!(
                "{} forwarded nothing in the warm-up ({} sent); see {}",
                armed.candidate().label(),
                w.sent.sent,
                self.bench.topo.dir.join("vipgate.log").display()
            );
        }
        Ok(w)
    }

    fn lossless(&mut self, armed: &Armed, load: &Load) -> Result<Option<Lossless>> {
        if self.plan.lossless_probes == 0 {
            return Ok(None);
        }
        let (probe, n, start) = (
            self.plan.probe(),
            self.plan.lossless_probes,
            self.plan.lossless_start,
        );
        self.bench.lossless(armed, load, probe, n, start).map(Some)
    }
}

fn interrupted() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

fn values<T>(
    items: &[(String, String, T)],
    case: &str,
    cand: &str,
    f: impl Fn(&T) -> f64,
) -> Vec<f64> {
    items
        .iter()
        .filter(|(c, k, _)| c == case && k == cand)
        .map(|(_, _, t)| f(t))
        .collect()
}

/// Like [`values`] for samples, leaving out noisy ones when the case has
/// any clean one.
fn clean_values(
    items: &[(String, String, Sample)],
    case: &str,
    cand: &str,
    f: impl Fn(&Sample) -> f64,
) -> Vec<f64> {
    let mine: Vec<&Sample> = items
        .iter()
        .filter(|(c, k, _)| c == case && k == cand)
        .map(|(_, _, s)| s)
        .collect();
    let any_clean = mine.iter().any(|s| !s.noisy);
    mine.into_iter()
        .filter(|s| !any_clean || !s.noisy)
        .map(f)
        .collect()
}

// ------------------------------------------------------------------ forward

/// Gateway-core CPU per forwarded packet and the highest lossless rate:
/// vipgate, nftables DNAT, the raw reflector; per frame size.
pub fn forward(cx: &mut Ctx) -> Result<()> {
    let cands = cx.plan.forward_candidates();
    let mut skipped = Vec::new();
    let mut samples: Vec<(String, String, Sample)> = Vec::new();
    let mut lossless: Vec<(String, String, Lossless)> = Vec::new();
    for &size in &cx.plan.sizes.clone() {
        let case = format!("{size} B");
        for rep in 0..cx.plan.reps {
            for cand in rotated(&cands, rep) {
                cx.progress.step(&format!(
                    "forward {case} rep {}/{}: {}",
                    rep + 1,
                    cx.plan.reps,
                    cand.label()
                ));
                if skipped.contains(&cand) {
                    continue;
                }
                let Some(armed) = cx.arm_warm(cand, &mut skipped)? else {
                    continue;
                };
                let load = cx.plan.load(cx.plan.flows, size);
                let (s, _) = cx.bench.run_quiet(&armed, &load, 3)?;
                samples.push((case.clone(), cand.label().into(), s));
                if let Some(l) = cx.lossless(&armed, &load)? {
                    lossless.push((case.clone(), cand.label().into(), l));
                }
                drop(armed);
                interrupted()?;
            }
        }
        summarize_forward(cx.report, &case, &cands, &samples, &lossless);
    }
    note_noisy(cx.report, "forward", samples.iter().map(|s| &s.2));
    cx.report.raw.insert(
        "forward".into(),
        json!({ "samples": tagged(&samples), "lossless": tagged(&lossless) }),
    );
    Ok(())
}

fn summarize_forward(
    report: &mut Report,
    case: &str,
    cands: &[Candidate],
    samples: &[(String, String, Sample)],
    lossless: &[(String, String, Lossless)],
) {
    for c in cands {
        let k = c.label();
        let ns = clean_values(samples, case, k, |s| s.gateway_ns_per_packet);
        report.add("forward", case, k, "gateway CPU per packet", "ns", &ns);
        let lost = clean_values(samples, case, k, |s| s.lost as f64);
        report.add(
            "forward",
            case,
            k,
            "lost at the fixed rate",
            "datagrams",
            &lost,
        );
        let l = values(lossless, case, k, |l| l.rate / 1e3);
        report.add("forward", case, k, "highest lossless rate", "kpps", &l);
    }
    let m = "gateway CPU per packet";
    report.ratio("forward", case, m, "vipgate", "nft DNAT");
    report.ratio("forward", case, m, "vipgate", "reflector");
    if cands.contains(&Candidate::XdpReflector) {
        report.ratio("forward", case, m, "xdp-reflector", "nft DNAT");
        report.ratio("forward", case, m, "xdp-reflector", "reflector");
    }
    report.ratio(
        "forward",
        case,
        "highest lossless rate",
        "vipgate",
        "nft DNAT",
    );
}

fn note_noisy<'a>(report: &mut Report, scenario: &str, samples: impl Iterator<Item = &'a Sample>) {
    let (mut n, mut noisy) = (0, 0);
    for s in samples {
        n += 1;
        noisy += usize::from(s.noisy);
    }
    if noisy > 0 {
        report.note(format!(
            "{scenario}: {noisy} of {n} samples had other processes using more than 3% of a core during them (after up to 3 tries each; left out of the medians where the case had a clean sample); see foreign_ms in the JSON"
        ));
    }
}

fn tagged<T: serde::Serialize>(items: &[(String, String, T)]) -> serde_json::Value {
    items
        .iter()
        .map(|(case, cand, t)| json!({ "case": case, "candidate": cand, "figures": t }))
        .collect()
}

// -------------------------------------------------------------------- flows

/// vipgate as the number of concurrent flows grows: CPU per packet,
/// highest lossless rate, resident memory per connection.
pub fn flows(cx: &mut Ctx) -> Result<()> {
    let counts = cx.plan.flow_counts.clone();
    let mut samples: Vec<(String, String, Sample)> = Vec::new();
    let mut lossless: Vec<(String, String, Lossless)> = Vec::new();
    let mut memory: Vec<(String, String, serde_json::Value)> = Vec::new();
    for rep in 0..cx.plan.reps {
        for n in rotated(&counts, rep) {
            let case = flows_case(n);
            cx.progress
                .step(&format!("flows {case} rep {}/{}", rep + 1, cx.plan.reps));
            // A table just large enough: its memory over its entries is
            // then close to the entry size once full.
            let saved = cx.vipgate.conn_capacity;
            cx.vipgate.conn_capacity = (n + PREWARM_FLOWS).next_power_of_two().max(1024);
            let armed = cx.arm(Candidate::Vipgate);
            cx.vipgate.conn_capacity = saved;
            let armed = armed?;
            let Armed::Vipgate(daemon) = &armed else {
                bail!("flows: vipgate not armed");
            };
            // Pre-warm on other flows so that ring pages touched for the
            // first time do not count as connection memory.
            cx.warm_up(&armed, PREWARM_FLOWS, cx.plan.fill_rate)?;
            let mut cycle = cx.plan.load(PREWARM_FLOWS, 64);
            cycle.count = PREWARM_PACKETS;
            cycle.rate = cx.plan.fill_rate;
            cx.bench.run(&armed, &cycle)?;
            let rss0 = rss_bytes(daemon.pid()).unwrap_or(0);
            let active0 = daemon.counter("conn_active").unwrap_or(0);
            let fill = cx.bench.fill(&armed, PREWARM_FLOWS, n, cx.plan.fill_rate)?;
            let active = daemon.counter("conn_active").unwrap_or(0);
            let rss1 = rss_bytes(daemon.pid()).unwrap_or(0);
            let added = active.saturating_sub(active0);
            let per_conn = rss1.saturating_sub(rss0) as f64 / added.max(1) as f64;
            memory.push((
                case.clone(),
                "vipgate".into(),
                json!({ "conn_active": active, "conn_added": added, "rss_before": rss0, "rss_after": rss1,
                        "conn_capacity": (n + PREWARM_FLOWS).next_power_of_two().max(1024),
                        "bytes_per_connection": per_conn, "fill": fill }),
            ));
            let mut load = cx.plan.load(n, 64);
            load.first_flow = PREWARM_FLOWS;
            let (s, _) = cx.bench.run_quiet(&armed, &load, 3)?;
            samples.push((case.clone(), "vipgate".into(), s));
            if let Some(l) = cx.lossless(&armed, &load)? {
                lossless.push((case.clone(), "vipgate".into(), l));
            }
            drop(armed);
            interrupted()?;
        }
    }
    // The table is allocated (and written) when the daemon starts, so its
    // memory shows in the RSS before the fill. The smallest table's daemon
    // is the baseline: RSS above it over the connections is what a
    // connection costs, table slot and index included.
    let baseline = memory
        .iter()
        .filter_map(|m| m.2["rss_before"].as_f64())
        .fold(f64::INFINITY, f64::min);
    for m in &mut memory {
        let after = m.2["rss_after"].as_f64().unwrap_or(f64::NAN);
        let added = m.2["conn_added"].as_f64().unwrap_or(f64::NAN);
        m.2["bytes_per_connection_over_smallest"] = json!((after - baseline) / added.max(1.0));
    }
    for &n in &counts {
        let case = flows_case(n);
        let ns = clean_values(&samples, &case, "vipgate", |s| s.gateway_ns_per_packet);
        cx.report.add(
            "flows",
            &case,
            "vipgate",
            "gateway CPU per packet",
            "ns",
            &ns,
        );
        let l = values(&lossless, &case, "vipgate", |l| l.rate / 1e3);
        cx.report.add(
            "flows",
            &case,
            "vipgate",
            "highest lossless rate",
            "kpps",
            &l,
        );
        let b = values(&memory, &case, "vipgate", |m| {
            m["bytes_per_connection"].as_f64().unwrap_or(f64::NAN)
        });
        cx.report.add(
            "flows",
            &case,
            "vipgate",
            "RSS growth per new connection",
            "B",
            &b,
        );
        let t = values(&memory, &case, "vipgate", |m| {
            m["bytes_per_connection_over_smallest"]
                .as_f64()
                .unwrap_or(f64::NAN)
        });
        cx.report.add(
            "flows",
            &case,
            "vipgate",
            "RSS over the smallest case per connection",
            "B",
            &t,
        );
        let a = values(&memory, &case, "vipgate", |m| {
            m["conn_active"].as_f64().unwrap_or(f64::NAN)
        });
        cx.report.add(
            "flows",
            &case,
            "vipgate",
            "connections in the table",
            "",
            &a,
        );
        let med = |v: &[f64]| crate::report::Stat::of(v).map_or(0.0, |s| s.median);
        let cap = med(&ns);
        cx.flows_chart
            .push((n, med(&l), if cap > 0.0 { 1e6 / cap } else { 0.0 }));
    }
    if let (Some(first), Some(last)) = (counts.first(), counts.last()) {
        let m = "gateway CPU per packet";
        let (a, b) = (flows_case(*last), flows_case(*first));
        if let (Some(x), Some(y)) = (
            cx.report.find("flows", &a, "vipgate", m),
            cx.report.find("flows", &b, "vipgate", m),
        ) {
            cx.report.ratios.push(crate::report::Ratio {
                scenario: "flows".into(),
                case: format!("{a} vs {b}"),
                metric: m.into(),
                numerator: a.clone(),
                denominator: b.clone(),
                value: x.median / y.median,
            });
        }
    }
    note_noisy(cx.report, "flows", samples.iter().map(|s| &s.2));
    cx.report.raw.insert(
        "flows".into(),
        json!({ "samples": tagged(&samples), "lossless": tagged(&lossless), "memory": tagged(&memory) }),
    );
    Ok(())
}

/// Flows of the flows scenario's pre-warm (not counted).
const PREWARM_FLOWS: u32 = 1000;
/// Datagrams of the pre-warm: enough to cycle vipgate's RX rings (64
/// blocks of 256 KiB, ~160 bytes per 64-byte frame) once.
const PREWARM_PACKETS: u64 = 150_000;

fn flows_case(n: u32) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M flows", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k flows", n / 1000)
    } else {
        format!("{n} flows")
    }
}

/// Chart data of the flows scenario.
pub fn flows_series(points: &[(u32, f64, f64)]) -> Vec<Series> {
    vec![
        Series {
            name: "highest lossless rate".into(),
            points: points.iter().map(|p| (f64::from(p.0), p.1)).collect(),
        },
        Series {
            name: "1 / gateway CPU per packet".into(),
            points: points.iter().map(|p| (f64::from(p.0), p.2)).collect(),
        },
    ]
}

// ------------------------------------------------------------------ workers

/// vipgate with 1 worker (on the gateway core) against 2 (one per core;
/// on a 2-core machine the second shares the load core with the generator
/// and the sink).
pub fn workers(cx: &mut Ctx) -> Result<()> {
    let counts: [u16; 2] = [1, 2];
    let mut samples: Vec<(String, String, Sample)> = Vec::new();
    let mut lossless: Vec<(String, String, Lossless)> = Vec::new();
    for rep in 0..cx.plan.reps {
        for w in rotated(&counts, rep) {
            let cand = format!("{w} worker{}", if w == 1 { "" } else { "s" });
            cx.progress
                .step(&format!("workers {cand} rep {}/{}", rep + 1, cx.plan.reps));
            let saved = cx.vipgate.workers;
            cx.vipgate.workers = w;
            let armed = cx.arm(Candidate::Vipgate);
            cx.vipgate.workers = saved;
            let armed = armed?;
            cx.warm_up(&armed, cx.plan.flows, 20_000)?;
            let load = cx.plan.load(cx.plan.flows, 64);
            let (s, _) = cx.bench.run_quiet(&armed, &load, 3)?;
            samples.push(("64 B".into(), cand.clone(), s));
            if let Some(l) = cx.lossless(&armed, &load)? {
                lossless.push(("64 B".into(), cand, l));
            }
            drop(armed);
            interrupted()?;
        }
    }
    for cand in ["1 worker", "2 workers"] {
        let ns = clean_values(&samples, "64 B", cand, |s| s.gateway_ns_per_packet);
        cx.report
            .add("workers", "64 B", cand, "gateway CPU per packet", "ns", &ns);
        let all = clean_values(&samples, "64 B", cand, |s| s.all_cores_ns_per_packet);
        cx.report.add(
            "workers",
            "64 B",
            cand,
            "both cores' CPU per packet",
            "ns",
            &all,
        );
        let l = values(&lossless, "64 B", cand, |l| l.rate / 1e3);
        cx.report
            .add("workers", "64 B", cand, "highest lossless rate", "kpps", &l);
    }
    cx.report.ratio(
        "workers",
        "64 B",
        "highest lossless rate",
        "2 workers",
        "1 worker",
    );
    note_noisy(cx.report, "workers", samples.iter().map(|s| &s.2));
    cx.report.raw.insert(
        "workers".into(),
        json!({ "samples": tagged(&samples), "lossless": tagged(&lossless) }),
    );
    Ok(())
}

// ------------------------------------------------------------------ latency

/// One-way latency at a fixed load, each candidate against the path with
/// no gateway.
pub fn latency(cx: &mut Ctx) -> Result<()> {
    let mut cands = vec![Candidate::Direct];
    cands.extend(cx.plan.forward_candidates());
    let mut skipped = Vec::new();
    let mut samples: Vec<(String, String, Sample)> = Vec::new();
    let case = format!("{} kpps", cx.plan.latency_rate / 1000);
    for rep in 0..cx.plan.reps {
        for cand in rotated(&cands, rep) {
            cx.progress.step(&format!(
                "latency rep {}/{}: {}",
                rep + 1,
                cx.plan.reps,
                cand.label()
            ));
            if skipped.contains(&cand) {
                continue;
            }
            let Some(armed) = cx.arm_warm(cand, &mut skipped)? else {
                continue;
            };
            let mut load = cx.plan.load(cx.plan.flows, 64);
            load.rate = cx.plan.latency_rate;
            load.count = (cx.plan.latency_rate as f64 * cx.plan.secs.max(1.0)) as u64;
            let (s, h) = cx.bench.run_quiet(&armed, &load, 3)?;
            let label = cand.label().to_string();
            match cx.latency.get_mut(&label) {
                Some(all) => {
                    let _ = all.add(&h);
                }
                None => {
                    cx.latency.insert(label.clone(), h);
                }
            }
            samples.push((case.clone(), label, s));
            drop(armed);
            interrupted()?;
        }
    }
    type Pick = fn(&Sample) -> f64;
    let picks: [(&str, Pick); 3] = [
        ("p50", |s| s.latency_ns.p50 as f64 / 1e3),
        ("p99", |s| s.latency_ns.p99 as f64 / 1e3),
        ("p99.9", |s| s.latency_ns.p999 as f64 / 1e3),
    ];
    for (name, pick) in picks {
        let direct = crate::report::Stat::of(&clean_values(&samples, &case, "direct", pick));
        for &c in &cands {
            let v = clean_values(&samples, &case, c.label(), pick);
            cx.report.add(
                "latency",
                &case,
                c.label(),
                &format!("{name} latency"),
                "µs",
                &v,
            );
            if let (Some(d), false) = (direct, c == Candidate::Direct) {
                let added: Vec<f64> = v.iter().map(|x| x - d.median).collect();
                cx.report.add(
                    "latency",
                    &case,
                    c.label(),
                    &format!("{name} added vs direct"),
                    "µs",
                    &added,
                );
            }
        }
    }
    note_noisy(cx.report, "latency", samples.iter().map(|s| &s.2));
    cx.report
        .raw
        .insert("latency".into(), json!({ "samples": tagged(&samples) }));
    Ok(())
}

/// The CDF of each candidate's merged latency histogram (µs, share).
pub fn latency_series(h: &BTreeMap<String, Histogram<u64>>) -> Vec<Series> {
    h.iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| Series {
            name: name.clone(),
            points: (0..=200)
                .map(|i| {
                    let q = 1.0 - 10f64.powf(-(i as f64) / 50.0);
                    let q = if i == 0 { 0.0 } else { q };
                    ((h.value_at_quantile(q) as f64 / 1e3).max(0.1), q)
                })
                .collect(),
        })
        .collect()
}

// ---------------------------------------------------------------------- cps

/// New TCP connections per second through the VIP to the real backend:
/// vipgate against nftables DNAT.
pub fn cps(cx: &mut Ctx) -> Result<()> {
    let cands = [Candidate::Vipgate, Candidate::Nft];
    let topo_core = cx.bench.topo.cores.load;
    let backend = crate::cps::Backend::start(&cx.bench.topo.sink, topo_core, 2)?;
    let mut runs: Vec<(String, String, serde_json::Value)> = Vec::new();
    let case = format!("{} clients", cx.plan.cps_clients);
    for rep in 0..cx.plan.reps {
        for cand in rotated(&cands, rep) {
            cx.progress.step(&format!(
                "cps rep {}/{}: {}",
                rep + 1,
                cx.plan.reps,
                cand.label()
            ));
            let armed = cx.arm(cand)?;
            let gen = cx.bench.topo.gen.try_clone()?;
            let mut warm = crate::cps::CpsRun::default();
            for _ in 0..5 {
                warm = crate::cps::run_clients(
                    &gen,
                    topo_core,
                    4,
                    Duration::from_millis(500),
                    10_000,
                )?;
                if warm.completed > 0 || stopped() {
                    break;
                }
            }
            if warm.completed == 0 && !stopped() {
                bail!(
                    "cps: no connection completed through {} in the warm-up",
                    cand.label()
                );
            }
            let r0 = cx.bench.clock.read()?;
            let run = crate::cps::run_clients(
                &gen,
                topo_core,
                cx.plan.cps_clients,
                Duration::from_secs_f64(cx.plan.cps_secs),
                10_000_000,
            )?;
            std::thread::sleep(Duration::from_millis(50));
            let r1 = cx.bench.clock.read()?;
            let busy = r0.busy_until(&r1);
            let per_conn = busy.as_nanos() as f64 / run.completed.max(1) as f64;
            runs.push((
                case.clone(),
                cand.label().into(),
                json!({ "run": run, "backend_served_total": backend.served.load(std::sync::atomic::Ordering::Relaxed),
                        "gateway_busy_ms": busy.as_secs_f64() * 1e3,
                        "gateway_ns_per_connection": per_conn,
                        "gateway_core_share": busy.as_secs_f64() / r0.wall_until(&r1).as_secs_f64() }),
            ));
            drop(armed);
            interrupted()?;
        }
    }
    drop(backend);
    for c in cands {
        let k = c.label();
        let f = |key: &'static str| {
            move |v: &serde_json::Value| v["run"][key].as_f64().unwrap_or(f64::NAN)
        };
        cx.report.add(
            "cps",
            &case,
            k,
            "connections per second",
            "1/s",
            &values(&runs, &case, k, f("cps")),
        );
        cx.report.add(
            "cps",
            &case,
            k,
            "failed connections",
            "",
            &values(&runs, &case, k, f("failed")),
        );
        let per = values(&runs, &case, k, |v| {
            v["gateway_ns_per_connection"].as_f64().unwrap_or(f64::NAN)
        });
        cx.report.add(
            "cps",
            &case,
            k,
            "gateway CPU per connection",
            "µs",
            &per.iter().map(|x| x / 1e3).collect::<Vec<_>>(),
        );
        let share = values(&runs, &case, k, |v| {
            v["gateway_core_share"].as_f64().unwrap_or(f64::NAN) * 100.0
        });
        cx.report
            .add("cps", &case, k, "gateway core busy", "%", &share);
    }
    cx.report.ratio(
        "cps",
        &case,
        "connections per second",
        "vipgate",
        "nft DNAT",
    );
    cx.report.ratio(
        "cps",
        &case,
        "gateway CPU per connection",
        "vipgate",
        "nft DNAT",
    );
    cx.report
        .raw
        .insert("cps".into(), json!({ "runs": tagged(&runs) }));
    Ok(())
}

// ----------------------------------------------------------------- failover

/// The VRRP failover comparison (vipgate's `failover-compare` lab) and the
/// ECMP/BGP one when the vipgate binary has it.
pub fn failover(cx: &mut Ctx) -> Result<()> {
    if cx.plan.quick {
        cx.progress.step("failover: skipped in --quick");
        cx.progress.step("ecmp: skipped in --quick");
        cx.report
            .note("failover: skipped in --quick (the labs take minutes)");
        return Ok(());
    }
    let bin = cx.vipgate.binary.clone();
    let name = format!("vgbf{}", std::process::id() % 100_000);
    let limit = Duration::from_secs(cx.plan.failover_limit_secs);
    cx.progress
        .step("failover: vipgate lab run --scenario failover-compare");
    let vrrp = crate::lab::run(
        &bin,
        "failover-compare",
        &name,
        limit,
        &cx.out.join("failover-compare.log"),
    )?;
    if vrrp.compare.is_empty() {
        cx.report.note(format!(
            "failover: failover-compare printed no COMPARE lines (exit {:?}); see {}",
            vrrp.exit_code, vrrp.log
        ));
    }
    for c in &vrrp.compare {
        let get = |k: &str| {
            c.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let case = format!(
            "({}) {}",
            c.get("phase").map_or("?", String::as_str),
            c.get("vip").map_or("?", String::as_str)
        );
        for (cand, prefix) in [("vipgate", "vipgate"), ("keepalived", "keepalived")] {
            cx.report.add(
                "failover",
                &case,
                cand,
                "loss window",
                "ms",
                &[get(&format!("{prefix}_window_ms"))],
            );
            cx.report.add(
                "failover",
                &case,
                cand,
                "probes lost",
                "",
                &[get(&format!("{prefix}_lost"))],
            );
        }
    }
    cx.timeline.extend(vrrp.timeline.iter().cloned());
    cx.progress.step("failover: ecmp");
    let ecmp = if crate::lab::has_scenario(&bin, "ecmp") {
        let r = crate::lab::run(&bin, "ecmp", &name, limit, &cx.out.join("ecmp.log"))?;
        cx.timeline.extend(r.timeline.iter().map(|row| TimelineRow {
            label: format!("ecmp {}", row.label),
            ..row.clone()
        }));
        ecmp_rows(cx, &r);
        Some(r)
    } else {
        cx.report.note(
            "failover: the ECMP/BGP part is missing: this vipgate binary has no `lab run --scenario ecmp` yet",
        );
        None
    };
    cx.report
        .raw
        .insert("failover".into(), json!({ "vrrp": vrrp, "ecmp": ecmp }));
    Ok(())
}

/// The ECMP lab's probe phases (`RESULT phase=drain|freeze|kill ...`):
/// probes lost and gw-a's loss window, per phase, as table rows.
fn ecmp_rows(cx: &mut Ctx, run: &crate::lab::LabRun) {
    for line in &run.results {
        let kv = crate::lab::key_values(line.trim_start_matches("RESULT "));
        let Some(phase) = kv
            .get("phase")
            .filter(|p| ["drain", "freeze", "kill"].contains(&p.as_str()))
        else {
            continue;
        };
        let get = |k: &str| {
            kv.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let case = format!("ecmp {phase}");
        cx.report.add(
            "failover",
            &case,
            "vipgate",
            "loss window (gw-a)",
            "ms",
            &[get("window_gwa_ms")],
        );
        cx.report.add(
            "failover",
            &case,
            "vipgate",
            "probes lost",
            "",
            &[get("lost")],
        );
    }
}
