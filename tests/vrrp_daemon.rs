//! The VRRP thread of a real daemon on real links: tracking (file, link
//! events, script), notify hooks, kernel VIP mode, operator commands and a
//! clean stop. One node alone on its link (the interop tests put keepalived
//! next to it).
//!
//! Needs root (prints SKIPPED otherwise). Builds namespace `vgd<pid>` with
//! two veth pairs, removes it and ends the daemon by PID on every path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vipgate::privileges::is_root;

fn vipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vipgate"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, its files and the daemon; all removed on drop.
struct Node {
    ns: String,
    dir: PathBuf,
    daemon: Option<Child>,
    /// Namespaces a test added (removed on drop too).
    others: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.others.iter().chain([&self.ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn new(tag: &str) -> Node {
        let ns = format!("vgd{}{tag}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{ns}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let node = Node {
            ns: ns.clone(),
            dir,
            daemon: None,
            others: Vec::new(),
        };
        ip(&["netns", "add", &ns]);
        for (a, b) in [("t0", "t1"), ("t2", "t3")] {
            ip(&[
                "-n", &ns, "link", "add", a, "type", "veth", "peer", "name", b,
            ]);
            ip(&["-n", &ns, "link", "set", a, "up"]);
            ip(&["-n", &ns, "link", "set", b, "up"]);
        }
        ip(&["-n", &ns, "addr", "add", "198.18.0.2/24", "dev", "t0"]);
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn start(&mut self, config: &str) {
        let file = self.path("gw.toml");
        std::fs::write(&file, config).expect("write config");
        let log = std::fs::File::create(self.path("daemon.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_vipgate"))
            .args(["run", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vipgate");
        self.daemon = Some(child);
    }

    fn socket(&self) -> PathBuf {
        self.path("ctl.sock")
    }

    fn status(&self) -> Option<Value> {
        let out = vipgate()
            .args(["status", "--json", "--socket"])
            .arg(self.socket())
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn instance(&self) -> Option<Value> {
        self.status()?["vrrp"]["instances"].get(0).cloned()
    }

    /// Polls the instance until `pred` holds (or panics after `within`).
    fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.instance() {
                if pred(&i) {
                    return i;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{what}: not within {within:?}; instance now: {i:#}\n{}",
                        self.log()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("{what}: no status within {within:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn vip_on_link(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-4", "addr", "show", "dev", "t0"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains("198.18.10.10/32")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

fn state(i: &Value) -> &str {
    i["state"].as_str().unwrap_or("?")
}

fn config(dir: &Path) -> String {
    format!(
        r#"
[node]
name = "gw"
control_socket = "{dir}/ctl.sock"

[[interface]]
name = "t0"

[dataplane]
io = "memory"
workers = 1
conn_capacity = 1024

[[service]]
name = "web"
vip = "198.18.10.10"
port = 80
  [[service.backend]]
  address = "198.18.0.9"

[vrrp]
advert_interval = "100ms"
resign_grace = "500ms"
vip_mode = "kernel"
notify = "{dir}/hook.sh"

[[vrrp.instance]]
name = "vip1"
interface = "t0"
vrid = 51
priority = 100
vips = ["198.18.10.10"]

  [[vrrp.instance.track]]
  file = "{dir}/track"

  [[vrrp.instance.track]]
  interface = "t2"

  [[vrrp.instance.track]]
  script = "test -e {dir}/ok"
  interval = "100ms"
  weight = 20
"#,
        dir = dir.display()
    )
}

#[test]
fn tracking_notify_kernel_vips_and_clean_stop() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (network namespaces)");
        return;
    }
    let mut node = Node::new("t");
    let dir = node.dir.clone();
    std::fs::write(node.path("track"), "0\n").expect("track file");
    let hook = node.path("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$@\" >> {}/notified\n", dir.display()),
    )
    .expect("hook");
    Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .expect("chmod");
    node.start(&config(&dir));

    // Alone on the link: master after the master down interval, the VIP
    // on the link (kernel mode), the hook told.
    let i = node.wait_for("master", Duration::from_secs(10), |i| state(i) == "MASTER");
    assert_eq!(i["last_transition"]["reason"], "master_down_timer");
    assert_eq!(i["effective_priority"], 100, "script not up yet: no bonus");
    assert!(node.vip_on_link(), "kernel mode: VIP on t0 while master");

    // Script track with weight +20: up once the file exists.
    std::fs::write(node.path("ok"), "").expect("ok file");
    node.wait_for("script bonus", Duration::from_secs(5), |i| {
        i["effective_priority"] == 120
    });

    // File track with weight 0: FAULT while it does not say 0.
    std::fs::write(node.path("track"), "1\n").expect("track file");
    let i = node.wait_for("fault from file", Duration::from_secs(5), |i| {
        state(i) == "FAULT"
    });
    assert_eq!(i["last_transition"]["reason"], "fault");
    assert_eq!(
        i["counters"]["priority_zero_tx"], 1,
        "a leaving master sends priority 0"
    );
    assert!(!node.vip_on_link(), "no VIP in FAULT");
    std::fs::write(node.path("track"), "0\n").expect("track file");
    node.wait_for("master again", Duration::from_secs(6), |i| {
        state(i) == "MASTER"
    });

    // Interface track: t2 loses its carrier when its peer goes down
    // (rtnetlink link event).
    ip(&["-n", &node.ns, "link", "set", "t3", "down"]);
    node.wait_for("fault from link", Duration::from_secs(3), |i| {
        state(i) == "FAULT"
    });
    ip(&["-n", &node.ns, "link", "set", "t3", "up"]);
    node.wait_for("master after link", Duration::from_secs(6), |i| {
        state(i) == "MASTER"
    });

    // Operator: resign (stays backup alone), resume (master again).
    let out = vipgate()
        .args(["vrrp", "resign", "vip1", "--socket"])
        .arg(node.socket())
        .output()
        .expect("resign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let i = node.wait_for("resigned", Duration::from_secs(3), |i| {
        state(i) == "BACKUP" && i["resigned"] == true
    });
    assert_eq!(i["effective_priority"], 0);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(state(&node.instance().expect("status")), "BACKUP");
    let out = vipgate()
        .args(["vrrp", "resume", "vip1", "--socket"])
        .arg(node.socket())
        .output()
        .expect("resume");
    assert!(out.status.success());
    node.wait_for("resumed", Duration::from_secs(3), |i| state(i) == "MASTER");
    let out = vipgate()
        .args(["vrrp", "resign", "nope", "--socket"])
        .arg(node.socket())
        .output()
        .expect("resign unknown");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VRRP instance named"));

    // SIGTERM: resigns, waits out the grace, removes the VIP and exits 0.
    let mut daemon = node.daemon.take().expect("daemon");
    let pid = daemon.id() as i32;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}\n{}", node.log());
    assert!(!node.vip_on_link(), "VIP removed on exit");
    assert!(!node.socket().exists(), "control socket removed");

    // Every transition reached the hook, with its reason.
    let notified = std::fs::read_to_string(node.path("notified")).expect("hook ran");
    for line in [
        "vip1 INIT BACKUP startup",
        "vip1 BACKUP MASTER master_down_timer",
        "vip1 MASTER FAULT fault",
        "vip1 FAULT BACKUP fault_cleared",
        "vip1 MASTER BACKUP resigned",
    ] {
        assert!(notified.contains(line), "hook missed {line:?}:\n{notified}");
    }
}

#[test]
fn clients_learn_the_virtual_mac_from_the_dataplane() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (network namespaces)");
        return;
    }
    let mut node = Node::new("m");
    // t1 becomes the client's link, in a namespace of its own.
    let cli = format!("{}-cli", node.ns);
    let _ = Command::new("ip").args(["netns", "del", &cli]).status();
    ip(&["netns", "add", &cli]);
    node.others.push(cli.clone());
    ip(&["-n", &node.ns, "link", "set", "t1", "netns", &cli]);
    ip(&["-n", &cli, "addr", "add", "198.18.0.3/24", "dev", "t1"]);
    ip(&["-n", &cli, "link", "set", "t1", "up"]);
    ip(&["-n", &cli, "route", "add", "198.18.10.10/32", "dev", "t1"]);
    let dir = node.dir.clone();
    node.start(&format!(
        r#"
[node]
name = "gw"
control_socket = "{dir}/ctl.sock"

[[interface]]
name = "t0"

[dataplane]
workers = 1
conn_capacity = 1024

[[service]]
name = "web"
vip = "198.18.10.10"
port = 80
  [[service.backend]]
  address = "198.18.0.9"

[vrrp]
advert_interval = "100ms"

[[vrrp.instance]]
name = "vip1"
interface = "t0"
vrid = 51
priority = 100
vips = ["198.18.10.10"]
virtual_mac = true
"#,
        dir = dir.display()
    ));
    node.wait_for("master", Duration::from_secs(10), |i| state(i) == "MASTER");
    // The dataplane answers the client's ARP (and ping) with the VMAC.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &cli,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "198.18.10.10",
        ])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping through the VMAC: {}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        node.log()
    );
    let neigh = Command::new("ip")
        .args(["-n", &cli, "neigh", "show", "198.18.10.10"])
        .output()
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(
        neigh.contains("00:00:5e:00:01:33"),
        "client learnt {neigh:?} for the VIP, not the VRRP virtual MAC"
    );
    // The periodic adverts leave from the virtual MAC too (RFC 5798
    // section 7.3), well-formed as tshark reads them.
    let adverts = Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", &cli, "tshark", "-i", "t1", "-c", "3",
        ])
        .args([
            "-a",
            "duration:5",
            "-f",
            "ip proto 112",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .args(["-T", "fields", "-e", "eth.src", "-e", "vrrp.virt_rtr_id"])
        .args(["-e", "ip.checksum.status", "-e", "vrrp.checksum.status"])
        .output()
        .expect("tshark");
    let adverts = String::from_utf8_lossy(&adverts.stdout);
    let lines: Vec<&str> = adverts.lines().collect();
    assert!(!lines.is_empty(), "no adverts seen on the client's link");
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            fields,
            ["00:00:5e:00:01:33", "51", "1", "1"],
            "advert source MAC, VRID, IP and VRRP checksum status (1 = good)"
        );
    }
}
