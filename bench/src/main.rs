//! vipgate-bench: vipgate's throughput benchmarking harness.
//!
//! Builds its own network namespaces (generator, gateway, sink), pins the
//! roles to cores, and measures vipgate against the Linux kernel's
//! nftables DNAT and a raw AF_PACKET reflector: CPU of the gateway core
//! per forwarded packet, highest lossless rate, flows, workers, latency,
//! TCP connections per second, and failover (through vipgate's own labs).
//! Prints tables with median/min/max over repetitions and ratios, writes
//! `results.json` and SVG charts. See bench/README.md.
//!
//! The binary owns its namespaces and the processes it starts and removes
//! them on every path (Ctrl-C included). It touches nothing else; it uses
//! only 198.18.0.0/15.

#![deny(unsafe_code)]

mod cps;
mod cpu;
mod gateway;
mod gen;
mod lab;
mod measure;
mod report;
mod scenarios;
mod sink;
mod svg;
mod sys;
mod topo;
mod wire;
mod xdp;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use gateway::VipgateOpts;
use measure::Bench;
use report::{Progress, Report};
use scenarios::{Ctx, Plan, Scenario};

/// vipgate's benchmark harness (root; Linux; 2 or more cores).
#[derive(Parser, Debug, serde::Serialize)]
#[command(version, about)]
struct Cli {
    /// Scenarios to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Smoke run in under 2 minutes: 1 repetition, short runs, smaller
    /// flow counts, no failover. Asserts only that every candidate
    /// forwards, never a speed.
    #[arg(long)]
    quick: bool,
    /// Directory for results.json, the charts and the lab logs.
    #[arg(long, default_value = "target/vipgate-bench")]
    out: PathBuf,
    /// The vipgate binary (default: `vipgate` beside this binary).
    #[arg(long)]
    vipgate: Option<PathBuf>,
    /// Repetitions per candidate.
    #[arg(long)]
    reps: Option<usize>,
    /// Offered rate of the CPU measurements (datagrams/s).
    #[arg(long)]
    rate: Option<u64>,
    /// Length of one CPU measurement (seconds).
    #[arg(long)]
    secs: Option<f64>,
    /// Frame sizes (bytes, FCS included, RFC 2544).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Flow counts of the flows scenario.
    #[arg(long, value_delimiter = ',')]
    flow_counts: Vec<u32>,
    /// Probes of each highest-lossless-rate search (0: no search).
    #[arg(long)]
    probes: Option<u32>,
    /// Before each CPU measurement, wait up to this many seconds for other
    /// processes to go (nearly) idle (not in --quick).
    #[arg(long, default_value_t = 20)]
    quiet_wait: u64,
    /// Remove namespaces left by earlier runs that were killed, then exit.
    #[arg(long)]
    cleanup: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vipgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if !vipgate::privileges::is_root() {
        bail!("needs root (network namespaces, AF_PACKET, nftables)");
    }
    if cli.cleanup {
        let removed = topo::sweep_stale()?;
        println!(
            "removed {} stale namespace(s): {}",
            removed.len(),
            removed.join(" ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let plan = plan_of(&cli);
    let binary = vipgate_binary(cli.vipgate.as_deref())?;
    let chosen: Vec<Scenario> = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        let mut s = cli.scenarios.clone();
        s.sort();
        s.dedup();
        s
    };
    fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    topo::watch_signals()?;
    let _ = topo::sweep_stale();
    let cores = topo::Cores::pick()?;
    let clock = cpu::CoreClock::new(cores.gateway)?;
    let machine = cpu::Machine::describe(clock.source(), &binary.display().to_string());
    eprintln!("vipgate-bench: {}", machine.one_line());
    eprintln!(
        "cores: generator + sink on {}, gateway on {}; scenarios: {}",
        cores.load,
        cores.gateway,
        chosen
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let topo = topo::Topology::up(cores)?;
    eprintln!("namespaces {}-gen, -gw, -snk", topo.prefix);
    let mut bench = Bench::new(topo)?;
    bench.quiet_wait = std::time::Duration::from_secs(if plan.quick { 0 } else { cli.quiet_wait });
    let mut report = Report::default();
    let mut progress = Progress::new(chosen.iter().map(|s| plan.steps(*s)).sum());
    let mut cx = Ctx {
        bench: &mut bench,
        plan: &plan,
        vipgate: VipgateOpts {
            binary: binary.clone(),
            workers: 1,
            conn_capacity: 1 << 20,
        },
        report: &mut report,
        progress: &mut progress,
        out: cli.out.clone(),
        latency: BTreeMap::new(),
        flows_chart: Vec::new(),
        timeline: Vec::new(),
    };
    let mut failed = None;
    for s in &chosen {
        let r = match s {
            Scenario::Forward => scenarios::forward(&mut cx),
            Scenario::Flows => scenarios::flows(&mut cx),
            Scenario::Workers => scenarios::workers(&mut cx),
            Scenario::Latency => scenarios::latency(&mut cx),
            Scenario::Cps => scenarios::cps(&mut cx),
            Scenario::Failover => scenarios::failover(&mut cx),
        };
        if let Err(e) = r {
            failed = Some(e.context(format!("scenario {}", s.name())));
            break;
        }
    }
    let charts = write_charts(&cli.out, &cx)?;
    progress.finish();
    drop(bench);
    let targets = targets(&report);
    print_tables(&report, &chosen, &machine, &targets);
    report.raw.insert("charts".into(), json!(charts));
    report.raw.insert("targets".into(), json!(targets));
    report.raw.insert("plan".into(), json!(plan));
    report.raw.insert("cores".into(), json!(cores));
    report.write_json(&cli.out, &machine, &cli)?;
    println!(
        "\nresults: {}/results.json; charts: {}",
        cli.out.display(),
        charts.join(", ")
    );
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_of(cli: &Cli) -> Plan {
    let mut p = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(r) = cli.reps {
        p.reps = r.max(1);
    }
    if let Some(r) = cli.rate {
        p.rate = r.max(1);
    }
    if let Some(s) = cli.secs {
        p.secs = s.clamp(0.1, 60.0);
    }
    if !cli.sizes.is_empty() {
        p.sizes = cli
            .sizes
            .iter()
            .map(|s| (*s).clamp(wire::MIN_FRAME, wire::MAX_FRAME))
            .collect();
    }
    if !cli.flow_counts.is_empty() {
        p.flow_counts = cli
            .flow_counts
            .iter()
            .map(|n| (*n).clamp(1, 16_000_000))
            .collect();
    }
    if let Some(n) = cli.probes {
        p.lossless_probes = n.min(12);
    }
    p
}

/// `--vipgate`, else `vipgate` beside this binary, else the release and
/// debug builds of the workspace.
fn vipgate_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--vipgate {}: no such file", p.display());
    }
    let beside = std::env::current_exe()?.with_file_name("vipgate");
    let candidates = [
        beside,
        PathBuf::from("target/release/vipgate"),
        PathBuf::from("target/debug/vipgate"),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(fs::canonicalize(c)?);
        }
    }
    bail!("no vipgate binary found beside this one or under target/: build it (cargo build --release -p vipgate) or pass --vipgate")
}

fn write_charts(out: &Path, cx: &Ctx) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        fs::write(out.join(name), text)?;
        written.push(name.to_string());
        Ok(())
    };
    let fwd: Vec<(String, Vec<(String, f64)>)> = cx
        .plan
        .sizes
        .iter()
        .map(|s| {
            let case = format!("{s} B");
            let bars = ["vipgate", "nft DNAT", "reflector", "xdp-reflector"]
                .iter()
                .filter_map(|c| {
                    cx.report
                        .find("forward", &case, c, "gateway CPU per packet")
                        .map(|st| (c.to_string(), st.median))
                })
                .collect();
            (case, bars)
        })
        .filter(|(_, b): &(String, Vec<(String, f64)>)| !b.is_empty())
        .collect();
    if !fwd.is_empty() {
        put(
            "forward_cpu.svg",
            svg::bar_chart(
                "Gateway-core CPU per forwarded packet (median)",
                "ns per packet",
                &fwd,
            ),
        )?;
    }
    if !cx.flows_chart.is_empty() {
        put(
            "rate_vs_flows.svg",
            svg::line_chart(
                "vipgate: rate against concurrent flows",
                "concurrent flows",
                "kpps",
                &scenarios::flows_series(&cx.flows_chart),
                true,
            ),
        )?;
    }
    if !cx.latency.is_empty() {
        put(
            "latency_cdf.svg",
            svg::line_chart(
                "One-way latency CDF at a fixed load",
                "latency (µs, log)",
                "share of datagrams",
                &scenarios::latency_series(&cx.latency),
                true,
            ),
        )?;
    }
    if !cx.timeline.is_empty() {
        put(
            "failover_timeline.svg",
            svg::timeline(
                "Failover: events and vip1 loss windows per phase",
                &cx.timeline,
            ),
        )?;
    }
    Ok(written)
}

/// One target of issue 6 §6 against the measured figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Target {
    target: String,
    measured: String,
    /// Some(true) met, Some(false) not met, None not measured.
    met: Option<bool>,
}

fn targets(r: &Report) -> Vec<Target> {
    let med = |s: &str, case: &str, c: &str, m: &str| r.find(s, case, c, m).map(|x| x.median);
    let cpu = "gateway CPU per packet";
    let mut out = Vec::new();
    let (vg, nft, refl) = (
        med("forward", "64 B", "vipgate", cpu),
        med("forward", "64 B", "nft DNAT", cpu),
        med("forward", "64 B", "reflector", cpu),
    );
    out.push(match (vg, nft) {
        (Some(a), Some(b)) => Target {
            target: "vipgate's gateway CPU per packet ≤ ½ of nftables DNAT's (64 B)".into(),
            measured: format!("{a:.0} ns vs {b:.0} ns = {:.2}×", a / b),
            met: Some(a <= 0.5 * b),
        },
        _ => not_measured("vipgate's gateway CPU per packet ≤ ½ of nftables DNAT's (64 B)"),
    });
    out.push(match (vg, refl) {
        (Some(a), Some(b)) => Target {
            target: "NAT work within 15% of the raw reflector (64 B)".into(),
            measured: format!("{a:.0} ns vs {b:.0} ns = {:.2}×", a / b),
            met: Some(a <= 1.15 * b),
        },
        _ => not_measured("NAT work within 15% of the raw reflector (64 B)"),
    });
    let flows: Vec<&crate::report::Row> = r
        .rows
        .iter()
        .filter(|x| x.scenario == "flows" && x.metric == cpu)
        .collect();
    out.push(match (flows.first(), flows.last()) {
        (Some(a), Some(b)) if flows.len() > 1 => Target {
            target:
                "throughput within 10% from the fewest to the most flows (gateway CPU per packet)"
                    .into(),
            measured: format!(
                "{} {:.0} ns, {} {:.0} ns = {:.2}×",
                a.case,
                a.stat.median,
                b.case,
                b.stat.median,
                b.stat.median / a.stat.median
            ),
            met: Some(b.stat.median <= 1.1 * a.stat.median),
        },
        _ => not_measured("throughput within 10% from 1k to 1M flows"),
    });
    let mem: Vec<&crate::report::Row> = r
        .rows
        .iter()
        .filter(|x| {
            x.scenario == "flows" && x.metric == "RSS over the smallest case per connection"
        })
        .collect();
    out.push(match mem.last() {
        Some(m) => Target {
            target: "64 B or less per connection".into(),
            measured: format!(
                "{:.1} B of daemon RSS per connection at {} (over the smallest case's daemon)",
                m.stat.median, m.case
            ),
            met: Some(m.stat.median <= 64.0),
        },
        None => not_measured("64 B or less per connection"),
    });
    out.push(
        match med("failover", "(c) vip1", "vipgate", "probes lost") {
            Some(n) if n.is_finite() => Target {
                target: "planned failover with 0 lost probes".into(),
                measured: format!("{n:.0} lost (vipgate, phase c, vip1)"),
                met: Some(n == 0.0),
            },
            _ => not_measured("planned failover with 0 lost probes"),
        },
    );
    out
}

fn not_measured(t: &str) -> Target {
    Target {
        target: t.into(),
        measured: "not measured in this run".into(),
        met: None,
    }
}

fn print_tables(r: &Report, chosen: &[Scenario], machine: &cpu::Machine, targets: &[Target]) {
    println!("\nvipgate-bench results · {}", machine.one_line());
    for s in chosen {
        let t = r.table(s.name());
        if !t.is_empty() {
            println!("\n== {} ==\n{t}", s.name());
        }
    }
    println!("\n== targets (issue 6 §6) ==");
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        println!("{verdict:>8}  {}: {}", t.target, t.measured);
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
