//! Helpers shared by the daemon integration tests (`tests/*_daemon.rs`):
//! running commands, waiting with a bound, ending processes by PID, and
//! the skip rule for tests that need root and BIRD.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vipgate::privileges::is_root;

/// Runs `program args`; its stdout, or a panic with its stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms until Some, or panics after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why a test that needs root and BIRD 2 cannot run here.
pub fn skip_reason_bird() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root for network namespaces");
    }
    let ok = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !(ok("bird") && ok("birdc")) {
        return Some("BIRD 2 (bird, birdc) not installed (apt-get install bird2)");
    }
    None
}

/// SIGTERM, then SIGKILL after 3 s.
pub fn end(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts BIRD 2 in namespace `ns` with `conf` (written to `dir`/bird.conf;
/// `{DIR}` in it becomes `dir`), its control socket at `sock`; returns
/// once BIRD answers there. The caller ends the child.
pub fn start_bird(ns: &str, dir: &Path, conf: &str, sock: &str) -> Child {
    let file = dir.join("bird.conf");
    std::fs::write(&file, conf.replace("{DIR}", &dir.display().to_string())).expect("bird.conf");
    let pid = dir.join("bird.pid").display().to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "bird", "-c"])
        .arg(&file)
        .args(["-s", sock, "-P", &pid, "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bird");
    wait_for(Duration::from_secs(10), "BIRD control socket", || {
        birdc(sock, &["show", "status"])
            .contains("Daemon is up")
            .then_some(())
    });
    child
}

/// `birdc -s SOCK ARGS`: its output.
pub fn birdc(sock: &str, args: &[&str]) -> String {
    let out = Command::new("birdc")
        .args(["-s", sock])
        .args(args)
        .output()
        .expect("birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vipgate ARGS --socket SOCKET` against a running daemon: its stdout,
/// or its stderr as the error.
pub fn vipgate_cli(socket: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_vipgate"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("vipgate cli");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
