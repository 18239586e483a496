//! The `failover` scenario: runs vipgate's own failover labs
//! (`vipgate lab run --scenario failover-compare`, and `--scenario ecmp`
//! where the binary has it) and collects their figures: the `COMPARE`
//! lines for the table, the events and loss windows for the timeline.
//!
//! Owns the lab child process (ended by pid on timeout or Ctrl-C; the lab
//! tears its namespaces down on SIGTERM) and its log file.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::svg::TimelineRow;
use crate::topo::stopped;

/// What a lab run printed, parsed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LabRun {
    pub scenario: String,
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// `COMPARE k=v ...` lines (failover-compare) and `RESULT ...` lines.
    pub compare: Vec<BTreeMap<String, String>>,
    pub results: Vec<String>,
    #[serde(skip)]
    pub timeline: Vec<TimelineRow>,
    pub log: String,
}

/// Whether `vipgate lab run` knows `scenario`.
pub fn has_scenario(binary: &Path, scenario: &str) -> bool {
    Command::new(binary)
        .args(["lab", "run", "--help"])
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines()
                .filter(|l| l.contains("possible values") || l.trim_start().starts_with("- "))
                .any(|l| {
                    l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .any(|w| w == scenario)
                })
        })
        .unwrap_or(false)
}

/// Runs `vipgate lab run --scenario <scenario>` with lab name `name`,
/// at most `limit` long; stdout and stderr go to `log`.
pub fn run(
    binary: &Path,
    scenario: &str,
    name: &str,
    limit: Duration,
    log: &Path,
) -> Result<LabRun> {
    let file = fs::File::create(log)?;
    let start = Instant::now();
    let mut cmd = Command::new(binary);
    crate::sys::die_with_parent(&mut cmd);
    let mut child = cmd
        .args(["lab", "run", "--scenario", scenario, "--name", name])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {} lab run", binary.display()))?;
    let mut code = None;
    loop {
        if let Some(status) = child.try_wait()? {
            code = status.code();
            break;
        }
        if start.elapsed() > limit || stopped() {
            // SIGTERM: the lab tears its namespaces down; SIGKILL after 60 s.
            let _ = crate::sys::signal(child.id(), libc::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(60);
            while Instant::now() < grace {
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut run = parse(&text);
    run.scenario = scenario.into();
    run.exit_code = code;
    run.seconds = start.elapsed().as_secs_f64();
    run.log = log.display().to_string();
    Ok(run)
}

/// Parses a lab's output.
pub fn parse(text: &str) -> LabRun {
    let mut run = LabRun::default();
    let mut pair = "vipgate".to_string();
    let mut row: Option<TimelineRow> = None;
    let mut vip = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("COMPARE ") {
            run.compare.push(key_values(rest));
        } else if line.starts_with("RESULT ") {
            run.results.push(line.to_string());
        } else if line.starts_with("===============") {
            pair = line
                .trim_matches(|c| c == '=' || c == ' ')
                .split(" pair")
                .next()
                .unwrap_or("?")
                .to_string();
        } else if is_phase_label(line) {
            run.timeline.extend(row.take());
            row = Some(TimelineRow {
                label: format!("{pair}: {}", shorten(line)),
                ..TimelineRow::default()
            });
        } else if let Some(r) = row.as_mut() {
            let t = line.trim_start();
            if let Some((v, rest)) = t.split_once(':').filter(|(v, _)| v.starts_with("vip")) {
                if rest.trim_start().starts_with("lost") {
                    vip = v.to_string();
                }
            }
            if let Some((at, rest)) = t.strip_prefix('+').and_then(|s| s.split_once("s ")) {
                let Ok(at) = at.trim().parse::<f64>() else {
                    continue;
                };
                if let Some(gap) = parse_gap(rest) {
                    // Only the VIP that moves draws on the timeline.
                    if vip == "vip1" {
                        r.losses.push((at, gap.1, gap.0));
                    }
                } else if line.starts_with("  +") {
                    r.events.push((at, rest.trim().to_string()));
                }
            }
        }
    }
    run.timeline.extend(row);
    run
}

/// A phase heading: "(a) ...", "(a+) ...", "(0) ..." at the start of a
/// line (not the comparison table's "(cells: ...)" note).
fn is_phase_label(line: &str) -> bool {
    line.strip_prefix('(')
        .and_then(|rest| rest.split_once(") "))
        .is_some_and(|(key, _)| {
            !key.is_empty()
                && key.len() <= 3
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
        })
}

/// "<lost> lost  window <w> ms  after: ..." → (lost, window seconds).
fn parse_gap(rest: &str) -> Option<(u64, f64)> {
    let mut words = rest.split_whitespace();
    let lost: u64 = words.next()?.parse().ok()?;
    if words.next()? != "lost" || words.next()? != "window" {
        return None;
    }
    let w = words.next()?;
    let secs = if w == "NO" {
        0.0
    } else {
        w.parse::<f64>().ok()? / 1e3
    };
    Some((lost, secs))
}

pub fn key_values(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn shorten(label: &str) -> String {
    let mut s: String = label.chars().take(40).collect();
    if label.chars().count() > 40 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
=============== vipgate pair, 10 kpps per VIP ===============

(a) SIGKILL of gw-a's daemon
  +  0.000s  probe stream started (10 kpps per VIP)
  +  1.002s  gw-a daemon killed
  vip1: lost 3000
    +1.010s   3000 lost  window      300 ms  after: gw-a daemon killed
  vip2: lost 0
RESULT phase=a planned=false vip1_lost=3000 vip2_lost=0 ok=true
COMPARE phase=a vip=vip1 vipgate_lost=3000 vipgate_window_ms=300 keepalived_lost=0
";

    #[test]
    fn parses_compare_lines_events_and_windows() {
        let run = parse(SAMPLE);
        assert_eq!(run.compare.len(), 1);
        assert_eq!(run.compare[0]["vipgate_window_ms"], "300");
        assert_eq!(run.results.len(), 1);
        assert_eq!(run.timeline.len(), 1);
        let row = &run.timeline[0];
        assert!(row.label.starts_with("vipgate: (a) SIGKILL"));
        assert_eq!(row.events.len(), 2);
        assert_eq!(row.losses, vec![(1.010, 0.3, 3000)]);
    }

    #[test]
    fn phase_labels() {
        assert!(is_phase_label("(a+) gw-a's keepalived SIGKILL"));
        assert!(is_phase_label("(0) baseline: no event"));
        assert!(!is_phase_label("(cells: datagrams lost / longest window)"));
        assert!(!is_phase_label("  (a) indented"));
    }

    #[test]
    fn gap_lines() {
        assert_eq!(
            parse_gap("12 lost  window 77 ms  after: x"),
            Some((12, 0.077))
        );
        assert_eq!(parse_gap("probe stream started"), None);
    }
}
