//! `vipgate lab run --scenario failover` through the real binary: two
//! gateways in active-active VRRP, a 1 kpps UDP probe per VIP, SIGKILL,
//! link down and a planned resign of gw-a.
//!
//! Owns only the lab it creates (`fo<pid % 10000>`), which the binary tears
//! down on every path; a leftover from a crashed run is removed first with
//! `vipgate lab down`. Needs root; without it the test prints
//! "SKIPPED: needs root" and passes.

use std::process::{Command, Output};
use vipgate::privileges::is_root;

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
    let planned = result_of(&stdout, "c").expect("checked above");
    assert_eq!(field(&planned, "planned"), Some("true"));
    assert_eq!(
        (field(&planned, "vip1_lost"), field(&planned, "vip2_lost")),
        (Some("0"), Some("0")),
        "the planned resign lost datagrams:\n{}",
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
}
