//! Start and stop of the daemon against a real lab: a second daemon that
//! cannot start changes nothing and the first keeps forwarding; a stopped
//! daemon leaves no nftables table and restores its sysctls.
//!
//! Needs root (prints SKIPPED otherwise). Each test builds its own lab with
//! `vipgate lab up --name ...` and removes it with `lab down` on every path.

use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vipgate::privileges::is_root;

fn vipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipgate"))
}

/// A lab that is torn down on drop.
struct LabGuard {
    name: String,
}

impl LabGuard {
    fn up(name: &str) -> LabGuard {
        let _ = vipgate().args(["lab", "down", "--name", name]).output();
        let guard = LabGuard { name: name.into() };
        let out = vipgate()
            .args(["lab", "up", "--name", name, "--workers", "1"])
            .output()
            .expect("run vipgate lab up");
        assert!(out.status.success(), "lab up: {}", text(&out));
        guard
    }

    fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.name)
    }

    fn dir(&self) -> String {
        format!("/run/vipgate/lab/{}", self.name)
    }

    fn in_ns(&self, which: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(which)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn http_ok(&self) -> bool {
        let out = self.in_ns("cli", &["curl", "-s", "-m", "3", "http://198.18.10.10/"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("vhost web")
    }

    fn vipgate_tables(&self) -> Vec<String> {
        let out = self.in_ns("gw", &["nft", "list", "tables"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("vipgate_"))
            .map(str::to_string)
            .collect()
    }

    fn daemon_pid(&self) -> i32 {
        let pids = std::fs::read_to_string(format!("{}/pids", self.dir())).expect("pids file");
        pids.lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("daemon pid")
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = vipgate()
            .args(["lab", "down", "--name", &self.name])
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 10_000)
}

#[test]
fn a_second_daemon_fails_cleanly_and_the_first_keeps_forwarding() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let lab = LabGuard::up(&name("st"));
    assert!(lab.http_ok(), "the lab forwards before the test");
    let before = lab.vipgate_tables();
    assert_eq!(before.len(), 1, "{before:?}");
    let config = format!("{}/lab.toml", lab.dir());
    let exe = env!("CARGO_BIN_EXE_vipgate");
    let started = Instant::now();
    let out = lab.in_ns("gw", &[exe, "run", "--config", &config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("control socket"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        lab.vipgate_tables(),
        before,
        "the failed start changed nothing"
    );
    for _ in 0..5 {
        assert!(lab.http_ok(), "the first daemon still forwards");
    }
}

#[test]
fn sigterm_removes_every_system_change() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let lab = LabGuard::up(&name("sg"));
    assert!(lab.http_ok());
    assert_eq!(lab.vipgate_tables().len(), 1);
    let forwarding = |lab: &LabGuard| {
        let out = lab.in_ns("gw", &["cat", "/proc/sys/net/ipv4/conf/vg-cli/forwarding"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(forwarding(&lab), "0");
    // veth has TSO on by default; the daemon turns it off on its links and
    // must turn it back on when it stops.
    let tso = |lab: &LabGuard| {
        let out = lab.in_ns("gw", &["ethtool", "-k", "vg-cli"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("tcp-segmentation-offload:"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(tso(&lab).contains(": off"), "{}", tso(&lab));
    let pid = lab.daemon_pid();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The process is our child's child; it may linger as a zombie until
    // `lab down` reaps it, so check its state rather than its existence.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "daemon still running: {state}"
    );
    assert!(lab.vipgate_tables().is_empty(), "nft table left behind");
    assert!(tso(&lab).contains(": on"), "TSO restored: {}", tso(&lab));
    assert!(
        !std::path::Path::new(&format!("{}/control.sock", lab.dir())).exists(),
        "control socket left behind"
    );
    let log = std::fs::read_to_string(format!("{}/daemon.log", lab.dir())).unwrap_or_default();
    assert!(log.contains("system changes restored"), "{log}");
}
