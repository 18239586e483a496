//! Network-namespace lab for the routing integration tests: namespaces
//! with a per-run prefix (`vgt-<pid>-...`), veth links inside them, child
//! processes ended by PID, everything removed on drop (also after a
//! failed assertion). Addresses: 198.18.0.0/15 and 2001:db8::/32 only.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A lab of namespaces and processes, torn down on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Scratch directory for configs, sockets and logs.
    pub dir: PathBuf,
}

impl Lab {
    /// A lab, or None (with the reason printed) when not root or `ip` is
    /// missing.
    pub fn new(tag: &str) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root for network namespaces");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            println!("skipped: iproute2 (ip) not installed");
            return None;
        }
        // Tests of one binary run in parallel in one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("vgt-{}-{tag}{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("lab directory");
        Some(Lab {
            prefix,
            namespaces: vec![],
            children: vec![],
            dir,
        })
    }

    /// Create namespace `<prefix>-<name>` with loopback up; its full name.
    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up, created inside
    /// the namespaces (never in the host's).
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        run(
            "ip",
            &[
                "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
        run("ip", &["-n", a, "link", "set", a_if, "up"]);
        run("ip", &["-n", b, "link", "set", b_if, "up"]);
    }

    /// `ip -n ns <args>`, which must succeed.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Add an address (IPv6 without DAD so it is usable at once).
    pub fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip(ns, &["addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip(ns, &["addr", "add", cidr, "dev", dev]);
        }
    }

    /// Start `program args` inside `ns`; ended by PID on drop.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .spawn()
            .expect("spawn in namespace");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// End the child with `pid` (SIGTERM, then SIGKILL after 3 s).
    pub fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let child = self.children.remove(i);
            end(child);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.drain(..) {
            end(child);
        }
        for ns in self.namespaces.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn end(mut child: Child) {
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
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

/// Run a command that must succeed; its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `f` on a new thread inside namespace `ns`; threads `f` starts stay
/// in that namespace (so a Speaker made there lives there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("namespace file");
        // SAFETY: setns(2) with a valid namespace fd; it moves only this
        // thread, which the caller made for this purpose.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Poll `check` every 100 ms until it returns Some, or panic after
/// `timeout` with `what` and the last value seen by `show`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// BIRD 2's daemon and client are installed.
pub fn has_bird() -> bool {
    let ok = |p: &str| Command::new(p).arg("--version").output().is_ok();
    ok("bird") && ok("birdc")
}

/// A BIRD daemon of the lab, driven with `birdc`.
pub struct Bird {
    /// Its control socket.
    pub sock: String,
}

impl Bird {
    /// Start BIRD in `ns` with `config` (written to the lab's directory),
    /// in the foreground as the lab's child; wait until it answers.
    pub fn start(lab: &mut Lab, ns: &str, config: &str) -> Bird {
        let conf = lab.dir.join("bird.conf");
        std::fs::write(&conf, config).expect("write bird.conf");
        let bird = Bird {
            sock: lab.dir.join("bird.ctl").display().to_string(),
        };
        let pidfile = lab.dir.join("bird.pid").display().to_string();
        let conf = conf.display().to_string();
        lab.spawn(
            ns,
            "bird",
            &["-c", &conf, "-s", &bird.sock, "-P", &pidfile, "-f"],
        );
        wait_for(Duration::from_secs(10), "BIRD control socket", || {
            bird.cmd(&["show", "status"])
                .contains("Daemon is up")
                .then_some(())
        });
        bird
    }

    /// One birdc command; its stdout.
    pub fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("birdc runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// BIRD's `protocol` is Established.
    pub fn established(&self, protocol: &str) -> bool {
        self.cmd(&["show", "protocols", protocol])
            .lines()
            .any(|l| l.starts_with(protocol) && l.contains("Established"))
    }
}
