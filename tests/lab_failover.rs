//! `vipgate lab run --scenario failover` through the real binary: two
//! gateways in active-active VRRP, a 1 kpps UDP probe per VIP, SIGKILL,
//! link down and a planned resign of gw-a. And `--scenario
//! failover-compare`: the same at 10 kpps, then with a keepalived pair.
//!
//! Owns only the labs it creates (`fo<pid % 10000>`, `fc<pid % 10000>`),
//! which the binary tears
//! down on every path; a leftover from a crashed run is removed first with
//! `vipgate lab down`. Needs root; without it the test prints
//! "SKIPPED: needs root" and passes.

use std::process::{Command, Output};
use std::sync::Mutex;
use vipgate::privileges::is_root;

/// One lab at a time: the loss windows are timing measurements.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn vipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipgate"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `RESULT phase=X ...` line of phase `phase`, as key=value pairs.
fn result_of(stdout: &str, phase: &str) -> Option<Vec<(String, String)>> {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("RESULT phase={phase} ")))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn failover_scenario_passes_and_the_planned_resign_loses_nothing() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIPPED: needs root (network namespaces)");
        return;
    }
    let name = format!("fo{}", std::process::id() % 10000);
    let _ = vipgate().args(["lab", "down", "--name", &name]).output();
    let out = vipgate()
        .args(["lab", "run", "--scenario", "failover", "--name", &name])
        .args(["--workers", "1"])
        .output()
        .expect("running vipgate lab run --scenario failover");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // Nothing of the lab is left behind, whatever the outcome.
    let netns = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(list) = netns {
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.lines().any(|l| l.starts_with(&format!("{name}-"))),
            "namespaces left behind:\n{list}"
        );
    }
    for phase in ["a", "b", "c"] {
        assert!(
            result_of(&stdout, phase).is_some(),
            "no result for phase {phase}:\n{}",
            text(&out)
        );
    }
    // Established TCP connections go on across the unplanned failover and
    // the preemption back: each new master picks them up mid-flow.
    let tcp = result_of(&stdout, "a_tcp").expect("phase (a) keeps TCP connections");
    assert_eq!(
        (
            field(&tcp, "failed_after_failover"),
            field(&tcp, "failed_after_preemption")
        ),
        (Some("0"), Some("0")),
        "{}",
        text(&out)
    );
    assert_eq!(field(&tcp, "picked_up_gwb"), Some("8"), "{}", text(&out));
    let planned = result_of(&stdout, "c").expect("checked above");
    assert_eq!(field(&planned, "planned"), Some("true"));
    // Counted from the resign on (what a busy machine loses before it is
    // not the switchover's).
    for vip in ["vip1", "vip2"] {
        let count = |key: String| -> u64 {
            let value = field(&planned, &key).and_then(|v| v.parse().ok());
            value.unwrap_or_else(|| panic!("no {key}:\n{}", text(&out)))
        };
        let lost = count(format!("{vip}_lost")) - count(format!("{vip}_lost_before_event"));
        assert_eq!(
            lost,
            0,
            "the planned resign lost datagrams:\n{}",
            text(&out)
        );
    }
    assert!(out.status.success(), "{}", text(&out));
}

/// The `COMPARE phase=P vip=V ...` line, as key=value pairs.
fn compare_of(stdout: &str, phase: &str, vip: &str) -> Option<Vec<(String, String)>> {
    let head = format!("COMPARE phase={phase} vip={vip} ");
    stdout.lines().find(|l| l.starts_with(&head)).map(|l| {
        l.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

#[test]
fn failover_compare_runs_both_pairs_and_vipgate_resigns_without_loss() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIPPED: needs root (network namespaces)");
        return;
    }
    if !std::path::Path::new("/usr/sbin/keepalived").exists() {
        println!("SKIPPED: needs /usr/sbin/keepalived");
        return;
    }
    let name = format!("fc{}", std::process::id() % 10000);
    let _ = vipgate().args(["lab", "down", "--name", &name]).output();
    let out = vipgate()
        .args([
            "lab",
            "run",
            "--scenario",
            "failover-compare",
            "--name",
            &name,
        ])
        .args(["--workers", "1"])
        .output()
        .expect("running vipgate lab run --scenario failover-compare");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let netns = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(list) = netns {
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.lines().any(|l| l.starts_with(&format!("{name}-"))),
            "namespaces left behind:\n{list}"
        );
    }
    let keepalived_left = Command::new("pgrep")
        .args(["-f", &format!("/run/vipgate/lab/{name}/")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        keepalived_left.is_empty(),
        "processes left: {keepalived_left}"
    );
    for phase in ["0", "a", "a+", "b", "c"] {
        for vip in ["vip1", "vip2"] {
            assert!(
                compare_of(&stdout, phase, vip).is_some(),
                "no comparison of phase {phase} {vip}:\n{}",
                text(&out)
            );
        }
    }
    // The probe itself loses nothing without an event, and the vipgate
    // pair's planned resign loses nothing at 10 kpps.
    for vip in ["vip1", "vip2"] {
        let base = compare_of(&stdout, "0", vip).expect("checked above");
        assert_eq!(field(&base, "vipgate_lost"), Some("0"), "{}", text(&out));
        // Counted from the resign on: a datagram lost before it (a ring
        // overrun while the machine is busy) is not the switchover's.
        let planned = compare_of(&stdout, "c", vip).expect("checked above");
        let count = |key| -> u64 {
            let value = field(&planned, key).and_then(|v| v.parse().ok());
            value.unwrap_or_else(|| panic!("no {key} for {vip}:\n{}", text(&out)))
        };
        assert_eq!(
            count("vipgate_lost") - count("vipgate_lost_before_event"),
            0,
            "{}",
            text(&out)
        );
    }
    // SIGKILL of gw-a's vipgate moves vip1: a window, and not forever.
    let killed = compare_of(&stdout, "a", "vip1").expect("checked above");
    let window: u64 = field(&killed, "vipgate_window_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..3000).contains(&window), "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
}
