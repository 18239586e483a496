//! The command line as an operator meets it: `vipgate check` on the
//! shipped examples and on a broken file, and the one-line errors when
//! privileges are missing.

use std::path::Path;
use std::process::{Command, Output};

fn vipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipgate"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_every_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = vipgate()
            .args(["check", "--no-system", "--config"])
            .arg(&path)
            .output()
            .expect("run vipgate");
        assert!(out.status.success(), "{}: {}", path.display(), text(&out));
        assert!(text(&out).contains(": ok ("), "{}", text(&out));
        seen += 1;
    }
    assert!(seen >= 3, "expected the shipped examples, saw {seen}");
}

#[test]
fn check_rejects_a_broken_config_with_file_line_field_and_fix() {
    let dir = std::env::temp_dir().join(format!("vipgate-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"gw\"\n\n[[interface]]\nname = \"eth0\"\n\n[[service]]\nname = \"web\"\n\
         vip = \"198.18.10.10\"\nport = 80\nscheduler = \"maglve\"\n\n  [[service.backend]]\n  \
         address = \"198.18.20.2\"\n  weight = 70000\n",
    )
    .expect("write");
    let out = vipgate()
        .args(["check", "--no-system", "--config"])
        .arg(&path)
        .output()
        .expect("run vipgate");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    let file = path.display().to_string();
    assert!(
        t.contains(&format!("{file}:11:")) && t.contains("service[0].scheduler"),
        "{t}"
    );
    assert!(t.contains("maglev"), "a fix is suggested: {t}");
    assert!(
        t.contains(&format!("{file}:15:")) && t.contains("weight"),
        "{t}"
    );
}

/// Runs `args` as the unprivileged user `nobody` (needs root and setpriv).
fn as_nobody(args: &[&str]) -> Option<Output> {
    // SAFETY-free check of the effective uid through /proc.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let euid_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !euid_root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs root and setpriv");
        return None;
    }
    // The test binary's target dir may not be readable by nobody: copy.
    let copy = std::env::temp_dir().join(format!("vipgate-nobody-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_vipgate"), &copy).ok()?;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(args)
        .output()
        .ok();
    let _ = std::fs::remove_file(&copy);
    out
}

#[test]
fn missing_privileges_give_one_line_naming_the_capabilities() {
    let Some(out) = as_nobody(&["run", "--config", "/nonexistent.toml"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("CAP_NET_RAW"),
        "{err}"
    );

    let Some(out) = as_nobody(&["lab", "run"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("root"), "{err}");
}
