//! `vipgate lab run --scenario ecmp` and `--scenario ecmp-timing` through
//! the real binary: an upstream router (the built-in `vipgate lab router`,
//! then BIRD 2) in front of two gateways that announce the VIPs over BGP.
//! Checked from the scenario's `RESULT` / `TIMING` lines: one multipath
//! route with both gateways as next hops (IPv4 and IPv6), new flows on
//! both gateways, the same backend for the same flow through either
//! gateway, a drain that loses nothing, a SIGSTOP and a SIGKILL that take
//! gw-a out of the router's FIB without touching gw-b's flows; every
//! timing trigger reaching the FIB.
//!
//! Owns only the labs it creates (`ec<pid % 10000>`, `et<pid % 10000>`),
//! which the binary tears down on every path; a leftover from a crashed
//! run is removed first with `vipgate lab down`. Needs root (prints
//! "SKIPPED" otherwise); the BIRD test needs BIRD 2.

use std::process::{Command, Output};
use std::sync::Mutex;

use vipgate::privileges::is_root;

/// One lab at a time: the phases measure loss and time.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn vipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipgate"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr (tail)\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The key=value pairs of the first line starting with `prefix`.
fn pairs(stdout: &str, prefix: &str) -> Option<Vec<(String, String)>> {
    stdout.lines().find(|l| l.starts_with(prefix)).map(|l| {
        l.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// `key` of `RESULT phase=<phase> ...` as a number (or a failed test).
fn num(stdout: &str, phase: &str, key: &str) -> u64 {
    let p = pairs(stdout, &format!("RESULT phase={phase} "))
        .unwrap_or_else(|| panic!("no RESULT line for phase {phase}:\n{stdout}"));
    p.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("phase {phase}: no number {key}:\n{stdout}"))
}

fn ok(stdout: &str, phase: &str) -> bool {
    pairs(stdout, &format!("RESULT phase={phase} "))
        .is_some_and(|p| p.iter().any(|(k, v)| k == "ok" && v == "true"))
}

fn no_namespaces_left(name: &str) {
    if let Ok(list) = Command::new("ip").args(["netns", "list"]).output() {
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.lines().any(|l| l.starts_with(&format!("{name}-"))),
            "namespaces left behind:\n{list}"
        );
    }
}

fn bird_installed() -> bool {
    ["bird", "birdc"]
        .iter()
        .all(|p| Command::new(p).arg("--version").output().is_ok())
}

/// Runs the ecmp scenario with `router`; checks every phase.
fn ecmp_scenario(router: &str, tag: &str) {
    let name = format!("{tag}{}", std::process::id() % 10000);
    let _ = vipgate().args(["lab", "down", "--name", &name]).output();
    let out = vipgate()
        .args(["lab", "run", "--scenario", "ecmp", "--name", &name])
        .args(["--workers", "1", "--router", router])
        .output()
        .expect("running vipgate lab run --scenario ecmp");
    no_namespaces_left(&name);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let all = text(&out);
    // The router's FIB: both gateways as next hops, IPv4 and IPv6.
    assert_eq!(num(&stdout, "fib", "next_hops"), 2, "{all}");
    assert_eq!(num(&stdout, "fib", "next_hops_v6"), 2, "{all}");
    // New flows land on both gateways, every request answered, and the
    // gateways' own counters agree with what the backend saw.
    assert!(num(&stdout, "split", "gwa") > 0, "{all}");
    assert!(num(&stdout, "split", "gwb") > 0, "{all}");
    assert_eq!(num(&stdout, "split", "failed"), 0, "{all}");
    // (At least: an HTTP request retried after a lost SYN is one more.)
    assert!(
        num(&stdout, "split", "conn_new_gwa") + num(&stdout, "split", "conn_new_gwb") >= 128,
        "{all}"
    );
    // The same 48 flows through either gateway alone: the same backends.
    assert_eq!(num(&stdout, "maglev", "same"), 48, "{all}");
    assert_eq!(num(&stdout, "maglev", "through_gwa"), 48, "{all}");
    assert_eq!(num(&stdout, "maglev", "through_gwb"), 48, "{all}");
    // A planned drain loses nothing.
    assert_eq!(num(&stdout, "drain", "lost"), 0, "{all}");
    assert!(ok(&stdout, "drain"), "{all}");
    // Freeze: gw-a leaves the FIB after the hold time (3 s) and its flows
    // lose about that long; gw-b's flows lose nothing.
    let freeze_fib = num(&stdout, "freeze", "fib_ms");
    assert!((1_000..=4_500).contains(&freeze_fib), "{all}");
    assert_eq!(num(&stdout, "freeze", "lost_gwb"), 0, "{all}");
    // Kill: the router sees the session close; gw-a's next hop goes at
    // once (well under the hold time), gw-b's flows lose nothing.
    assert!(num(&stdout, "kill", "fib_ms") < 2_000, "{all}");
    assert_eq!(num(&stdout, "kill", "lost_gwb"), 0, "{all}");
    // TCP connections gw-a carried go on through gw-b, which picks them up
    // mid-flow on the same backends.
    assert!(num(&stdout, "kill_tcp", "through_gwa") > 0, "{all}");
    assert_eq!(num(&stdout, "kill_tcp", "failed"), 0, "{all}");
    assert!(
        num(&stdout, "kill_tcp", "picked_up") >= num(&stdout, "kill_tcp", "through_gwa"),
        "{all}"
    );
    assert!(out.status.success(), "{all}");
    assert!(stdout.contains(&format!("lab {name}: PASS")), "{all}");
}

#[test]
fn ecmp_scenario_with_the_builtin_router() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIPPED: needs root (network namespaces)");
        return;
    }
    ecmp_scenario("builtin", "ec");
}

#[test]
fn ecmp_scenario_with_bird() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIPPED: needs root (network namespaces)");
        return;
    }
    if !bird_installed() {
        println!("SKIPPED: BIRD 2 (bird, birdc) not installed (apt-get install bird2)");
        return;
    }
    ecmp_scenario("bird", "eb");
}

#[test]
fn bird_router_without_bird_says_how_to_get_it() {
    if !is_root() {
        println!("SKIPPED: needs root (the lab checks privileges first)");
        return;
    }
    let empty = std::env::temp_dir().join(format!("vgt-{}-nopath", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let out = vipgate()
        .args(["lab", "run", "--scenario", "ecmp", "--name", "enobird"])
        .args(["--router", "bird"])
        .env("PATH", &empty)
        .output()
        .expect("running vipgate");
    let _ = std::fs::remove_dir_all(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains("BIRD 2") && stderr.contains("apt-get install bird2"),
        "{}",
        text(&out)
    );
    no_namespaces_left("enobird");
}

#[test]
fn timing_scenario_reaches_the_fib_for_every_trigger() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIPPED: needs root (network namespaces)");
        return;
    }
    let name = format!("et{}", std::process::id() % 10000);
    let _ = vipgate().args(["lab", "down", "--name", &name]).output();
    let out = vipgate()
        .args(["lab", "run", "--scenario", "ecmp-timing", "--name", &name])
        .args(["--workers", "1", "--repeat", "2"])
        .output()
        .expect("running vipgate lab run --scenario ecmp-timing");
    no_namespaces_left(&name);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let all = text(&out);
    let rows: Vec<Vec<(String, String)>> = stdout
        .lines()
        .filter(|l| l.starts_with("TIMING "))
        .filter_map(|l| pairs(l, "TIMING "))
        .collect();
    assert_eq!(rows.len(), 8, "{all}");
    for row in &rows {
        let get = |k: &str| row.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("n").as_deref(), Some("2"), "{row:?}\n{all}");
        assert_eq!(get("missed").as_deref(), Some("0"), "{row:?}\n{all}");
        let median: f64 = get("median_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{row:?}"));
        // Everything but a resume (VRRP's master-down wait) is far under
        // a second; a resume under two.
        let limit = if get("trigger").as_deref() == Some("vrrp-resume") {
            2_000.0
        } else {
            1_000.0
        };
        assert!(median < limit, "{row:?}\n{all}");
    }
    assert!(out.status.success(), "{all}");
}
