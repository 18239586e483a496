//! Health checks in a running daemon: what a backend's death, recovery
//! and flapping do to new connections, open connections, the sorry server,
//! the BGP announcement (BIRD as the upstream router) and VRRP priority.
//!
//! ```text
//!  ns C: client + BIRD (AS 65000)     ns G: vipgate (AS 65001)        ns S: backends
//!  c0 198.18.0.2/24  ──────────────── vg-cli 198.18.0.1/24
//!  VIP route learnt over BGP          vg-srv 198.18.20.1/24 ───────── s0 198.18.20.2/24
//!                                                                     :80 :81 :82 (+ :90 sorry)
//! ```
//!
//! The client reaches the VIP 198.18.10.10 only through the route BIRD
//! learns from vipgate, so a withdrawal shows as an unreachable VIP. Every
//! backend is `vipgate lab serve` on one port, in its own process, so one
//! can be killed by PID. Needs root and BIRD 2; prints SKIPPED otherwise.
//! Namespaces `vgh<pid>-<tag>-{c,g,s}` and every process are removed /
//! ended by PID on every path (Drop).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vipgate::lab::serve::port_of_answer;
use vipgate::netns::NetNs;

mod common;
use common::{end, run, skip_reason_bird as skip_reason, wait_for};

const VIP: &str = "198.18.10.10";
/// Check interval and fall/rise of the test config: a backend is removed
/// within FALL x INTERVAL (+ timeout) of its death.
const INTERVAL: Duration = Duration::from_millis(300);
const FALL: u32 = 2;

const BIRD_CONF: &str = r#"router id 198.18.0.2;
log "{DIR}/bird.log" all;
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { export all; }; }
protocol bgp g1 {
  local as 65000;
  neighbor 198.18.0.1 as 65001;
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  ipv4 { import all; export none; };
}
"#;

struct Lab {
    c: String,
    g: String,
    s: String,
    dir: PathBuf,
    bird_sock: String,
    daemon: Option<Child>,
    bird: Option<Child>,
    /// Backend servers by port.
    servers: BTreeMap<u16, Child>,
    /// Other processes (the flapping loop).
    others: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.daemon.iter_mut().chain(self.bird.iter_mut()) {
            end(c);
        }
        for c in self.servers.values_mut().chain(self.others.iter_mut()) {
            end(c);
        }
        for ns in [&self.c, &self.g, &self.s] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let base = format!("vgh{}-{tag}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{base}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let lab = Lab {
            c: format!("{base}-c"),
            g: format!("{base}-g"),
            s: format!("{base}-s"),
            bird_sock: dir.join("bird.ctl").display().to_string(),
            dir,
            daemon: None,
            bird: None,
            servers: BTreeMap::new(),
            others: Vec::new(),
        };
        for ns in [&lab.c, &lab.g, &lab.s] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let (c, g, s) = (lab.c.clone(), lab.g.clone(), lab.s.clone());
        for (a, dev_a, b, dev_b) in [(&c, "c0", &g, "vg-cli"), (&s, "s0", &g, "vg-srv")] {
            run(
                "ip",
                &[
                    "-n", a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns",
                    b,
                ],
            );
            run("ip", &["-n", a, "link", "set", dev_a, "up"]);
            run("ip", &["-n", b, "link", "set", dev_b, "up"]);
        }
        for (ns, dev, addr) in [
            (&c, "c0", "198.18.0.2/24"),
            (&g, "vg-cli", "198.18.0.1/24"),
            (&g, "vg-srv", "198.18.20.1/24"),
            (&s, "s0", "198.18.20.2/24"),
        ] {
            run("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
        }
        run(
            "ip",
            &["-n", &s, "route", "add", "default", "via", "198.18.20.1"],
        );
        lab
    }

    /// A lab with servers on `serve`, BIRD, and the daemon with backends
    /// `backends` (and `extra_service` in its [[service]]), ready.
    fn running(tag: &str, serve: &[u16], extra_service: &str, backends: &[u16]) -> Lab {
        let mut lab = Lab::new(tag);
        for p in serve {
            lab.serve(*p);
        }
        lab.start_bird();
        lab.start_daemon(extra_service, backends);
        lab.wait_ready();
        lab
    }

    fn start_bird(&mut self) {
        let child = common::start_bird(&self.c, &self.dir, BIRD_CONF, &self.bird_sock);
        self.bird = Some(child);
    }

    fn birdc(&self, args: &[&str]) -> String {
        common::birdc(&self.bird_sock, args)
    }

    /// The client's kernel route to the VIP ("" when none).
    fn fib(&self) -> String {
        run("ip", &["-n", &self.c, "route", "show", VIP])
    }

    fn serve(&mut self, port: u16) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.s])
            .arg(env!("CARGO_BIN_EXE_vipgate"))
            .args(["lab", "serve", "--ports", &port.to_string()])
            .args(["--addresses", "198.18.20.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        self.servers.insert(port, child);
    }

    fn kill_server(&mut self, port: u16) {
        if let Some(mut c) = self.servers.remove(&port) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_daemon(&mut self, extra_service: &str, ports: &[u16]) {
        let dir = self.dir.display();
        let mut backends = String::new();
        for p in ports {
            backends.push_str(&format!(
                "  [[service.backend]]\n  address = \"198.18.20.2\"\n  port = {p}\n"
            ));
        }
        let config = format!(
            r#"
[node]
name = "gw"
control_socket = "{dir}/ctl.sock"
[[interface]]
name = "vg-cli"
role = "client"
[[interface]]
name = "vg-srv"
role = "backend"
[dataplane]
workers = 1
conn_capacity = 4096
[health]
interval = "{interval}ms"
timeout = "200ms"
rise = 2
fall = {FALL}
[[service]]
name = "web"
vip = "{VIP}"
port = 80
{extra_service}
  [service.health]
  type = "http"
  body_contains = "vhost"
{backends}
[vrrp]
advert_interval = "100ms"
[[vrrp.instance]]
name = "vip1"
interface = "vg-cli"
vrid = 51
priority = 150
vips = ["{VIP}"]
  [[vrrp.instance.track]]
  service = "web"
  weight = -50
[bgp]
local_as = 65001
router_id = "198.18.0.1"
[[bgp.peer]]
address = "198.18.0.2"
remote_as = 65000
hold_time = "9s"
"#,
            interval = INTERVAL.as_millis()
        );
        let file = self.dir.join("gw.toml");
        std::fs::write(&file, config).expect("config");
        let log = std::fs::File::create(self.dir.join("run.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.g])
            .arg(env!("CARGO_BIN_EXE_vipgate"))
            .arg("run")
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info,netlink_packet_route=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vipgate");
        self.daemon = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        common::vipgate_cli(&self.dir.join("ctl.sock"), args)
    }

    fn status(&self) -> Value {
        let text = self
            .cli(&["status", "--json"])
            .unwrap_or_else(|e| panic!("status: {e}\n{}", self.log()));
        serde_json::from_str(&text).expect("status JSON")
    }

    /// Waits for the daemon to run, the VIP to be served (VRRP master),
    /// and BIRD's route to the VIP in the client's FIB.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st: Value = self
                .cli(&["status", "--json"])
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let master = st["vrrp"]["instances"][0]["state"] == "MASTER";
            if master && self.fib().contains("via 198.18.0.1") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in 30 s: VRRP {}, client FIB {:?}\nBGP {}\nBIRD {}\nlog:\n{}",
                st["vrrp"]["instances"][0]["state"],
                self.fib(),
                st["bgp"],
                self.birdc(&["show", "protocols", "all", "g1"]),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn client(&self) -> NetNs {
        NetNs::open(&self.c).expect("client ns")
    }

    /// One HTTP request through the VIP: the backend port that answered.
    fn request(&self) -> Option<u16> {
        let ns = self.client();
        ns.run(|| {
            let mut s = connect()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            read_port(&mut s)
        })
        .ok()
        .flatten()
    }

    /// `n` requests: answers per backend port, and failures under key 0.
    fn spread(&self, n: usize) -> BTreeMap<u16, u32> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            *seen.entry(self.request().unwrap_or(0)).or_insert(0) += 1;
        }
        seen
    }

    fn backend(&self, st: &Value, port: u16) -> Value {
        st["services"][0]["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["port"] == port).cloned())
            .unwrap_or(Value::Null)
    }
}

fn connect() -> Option<TcpStream> {
    let vip: SocketAddr = format!("{VIP}:80").parse().ok()?;
    let s = TcpStream::connect_timeout(&vip, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

fn read_port(s: &mut TcpStream) -> Option<u16> {
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    port_of_answer(body)
}

#[test]
fn a_dead_backend_leaves_new_connections_and_comes_back_after_rise() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::running("d", &[80, 81, 82], "", &[80, 81, 82]);
    let before = lab.spread(30);
    assert_eq!(
        before.keys().copied().collect::<Vec<_>>(),
        [80, 81, 82],
        "every backend answers and nothing fails: {before:?}\n{}",
        lab.log()
    );

    // Connections opened now to every backend; the request is sent only
    // after the death of :81, so the ones to :80 and :82 must still work.
    let ns = lab.client();
    let open: Vec<TcpStream> = ns
        .run(|| (0..12).filter_map(|_| connect()).collect())
        .expect("connect");
    assert_eq!(open.len(), 12);

    lab.kill_server(81);
    let died = Instant::now();
    wait_for(Duration::from_secs(10), "backend :81 marked failed", || {
        (lab.backend(&lab.status(), 81)["state"] == "failed").then_some(())
    });
    let took = died.elapsed();
    // Within fall x interval, plus one timeout and scheduling slack.
    let bound = INTERVAL * (FALL + 1) + Duration::from_millis(700);
    assert!(took <= bound, "removed after {took:?}, more than {bound:?}");

    let st = lab.status();
    let b81 = lab.backend(&st, 81);
    assert_eq!(b81["weight_in_use"], Value::Null, "left the service: {b81}");
    assert_eq!(b81["health"]["healthy"], false);
    assert!(
        b81["health"]["last"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "a reason is shown: {b81}"
    );
    let text = lab.cli(&["status"]).expect("status text");
    assert!(text.contains("failed"), "{text}");

    let mut answered = BTreeMap::new();
    for mut s in open {
        let got = s
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .ok()
            .and_then(|()| read_port(&mut s));
        *answered.entry(got.unwrap_or(0)).or_insert(0) += 1;
    }
    assert!(!answered.contains_key(&81), "{answered:?}");
    assert!(
        answered.keys().any(|p| *p == 80 || *p == 82),
        "connections to live backends answer: {answered:?}"
    );
    let after = lab.spread(30);
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        [80, 82],
        "no new connection to :81, none fails: {after:?}"
    );

    lab.serve(81);
    wait_for(Duration::from_secs(10), "backend :81 healthy again", || {
        (lab.backend(&lab.status(), 81)["state"] == "healthy").then_some(())
    });
    let back = lab.spread(30);
    assert!(back.contains_key(&81) && !back.contains_key(&0), "{back:?}");

    let events = lab.cli(&["backend", "events"]).expect("events");
    let lines: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let for81: Vec<bool> = lines
        .iter()
        .filter(|e| e["backend"] == "198.18.20.2:81")
        .filter_map(|e| e["healthy"].as_bool())
        .collect();
    assert_eq!(for81, [false, true], "logged once each way: {events}");
    assert_eq!(
        lab.log().matches("backend failed").count(),
        1,
        "one log line per transition"
    );
}

#[test]
fn operator_drain_moves_new_connections_and_keeps_open_ones() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::running("o", &[80, 81], "", &[80, 81]);
    let ns = lab.client();
    let open: Vec<TcpStream> = ns
        .run(|| (0..8).filter_map(|_| connect()).collect())
        .expect("connect");
    let out = lab
        .cli(&["backend", "drain", "web", "198.18.20.2:80"])
        .expect("drain");
    assert!(out.contains("drained"), "{out}");
    let err = lab
        .cli(&["backend", "drain", "web", "198.18.20.7"])
        .expect_err("unknown backend");
    assert!(err.contains("198.18.20.2:80, 198.18.20.2:81"), "{err}");
    assert_eq!(lab.backend(&lab.status(), 80)["state"], "drained");
    let after = lab.spread(20);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), [81], "{after:?}");
    let mut answered = BTreeMap::new();
    for mut s in open {
        let got = s
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .ok()
            .and_then(|()| read_port(&mut s));
        *answered.entry(got.unwrap_or(0)).or_insert(0) += 1;
    }
    assert!(
        !answered.contains_key(&0),
        "open connections to the drained backend finish: {answered:?}"
    );
    lab.cli(&["backend", "undrain", "web", "198.18.20.2:80"])
        .expect("undrain");
    let back = lab.spread(20);
    assert!(back.contains_key(&80), "{back:?}");
}

#[test]
fn all_backends_down_withdraws_the_vip_and_lowers_vrrp_priority() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::running("w", &[80, 81], "", &[80, 81]);
    assert_eq!(
        lab.status()["vrrp"]["instances"][0]["effective_priority"],
        150
    );
    lab.kill_server(80);
    lab.kill_server(81);
    wait_for(Duration::from_secs(10), "VIP route withdrawn", || {
        lab.fib().trim().is_empty().then_some(())
    });
    let st = lab.status();
    assert_eq!(st["services"][0]["usable"], false, "{}", st["services"]);
    // The VRRP thread publishes its status at a bounded rate.
    wait_for(
        Duration::from_secs(5),
        "tracked service down, priority lowered by 50",
        || {
            let vrrp = &lab.status()["vrrp"];
            (vrrp["tracks"]["service:web"] == false
                && vrrp["instances"][0]["effective_priority"] == 100)
                .then_some(())
        },
    );
    lab.serve(80);
    wait_for(Duration::from_secs(10), "VIP announced again", || {
        lab.fib().contains("via 198.18.0.1").then_some(())
    });
    wait_for(Duration::from_secs(5), "priority back to 150", || {
        (lab.status()["vrrp"]["instances"][0]["effective_priority"] == 150).then_some(())
    });
}

#[test]
fn the_sorry_server_answers_when_every_backend_is_down() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::running(
        "s",
        &[80, 81, 90],
        "sorry_server = \"198.18.20.2:90\"",
        &[80, 81],
    );
    let before = lab.spread(10);
    assert!(!before.contains_key(&90), "{before:?}");
    lab.kill_server(80);
    lab.kill_server(81);
    wait_for(Duration::from_secs(10), "sorry server in use", || {
        (lab.status()["services"][0]["sorry_server_active"] == true).then_some(())
    });
    let during = lab.spread(10);
    assert_eq!(
        during.keys().copied().collect::<Vec<_>>(),
        [90],
        "{during:?}"
    );
    assert!(
        lab.fib().contains("via 198.18.0.1"),
        "a service with a sorry server stays announced"
    );
    wait_for(Duration::from_secs(5), "tracked service still up", || {
        (lab.status()["vrrp"]["tracks"]["service:web"] == true).then_some(())
    });
    lab.serve(81);
    wait_for(Duration::from_secs(10), "backend back", || {
        (lab.status()["services"][0]["sorry_server_active"] == false).then_some(())
    });
    let after = lab.spread(10);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), [81], "{after:?}");
}

#[test]
fn a_flapping_backend_does_not_flap_announcements_or_vrrp() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("f");
    for p in [80, 81] {
        lab.serve(p);
    }
    lab.start_bird();
    // :81 is checked by a command that passes while a file exists; a loop
    // toggles the file every 2 intervals (bounded: 40 toggles), so :81
    // fails and recovers again and again (rise = fall = 2).
    let flag = lab.dir.join("up81");
    let check = format!(
        "[service.backend.health]\n  type = \"command\"\n  command = \"test -e {}\"",
        flag.display()
    );
    let mut backends_cfg = String::new();
    backends_cfg.push_str("  [[service.backend]]\n  address = \"198.18.20.2\"\n  port = 80\n");
    backends_cfg.push_str(&format!(
        "  [[service.backend]]\n  address = \"198.18.20.2\"\n  port = 81\n  {check}\n"
    ));
    lab.start_daemon(&backends_cfg, &[]);
    lab.wait_ready();
    let period = INTERVAL * 2;
    let toggler = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 40); do touch {f}; sleep {p}; rm -f {f}; sleep {p}; done",
            f = flag.display(),
            p = period.as_secs_f64()
        ))
        .spawn()
        .expect("toggler");
    lab.others.push(toggler);
    let since = lab.birdc(&["show", "route", VIP, "all"]);
    let vrrp_before = lab.cli(&["vrrp", "events"]).expect("vrrp events");
    std::thread::sleep(Duration::from_secs(8));
    let events = lab.cli(&["backend", "events"]).expect("events");
    let flips = events.lines().filter(|l| l.contains(":81")).count();
    assert!(
        flips >= 4,
        "the backend itself flapped ({flips} transitions): {events}"
    );
    let st = lab.status();
    assert_eq!(st["services"][0]["usable"], true);
    assert_eq!(st["vrrp"]["instances"][0]["state"], "MASTER");
    assert_eq!(
        lab.cli(&["vrrp", "events"]).expect("vrrp events"),
        vrrp_before,
        "no VRRP transition while the backend flaps"
    );
    assert!(
        !lab.log().contains("service not usable"),
        "the service never went down, so its route was never withdrawn"
    );
    let now = lab.birdc(&["show", "route", VIP, "all"]);
    assert!(
        !now.is_empty() && now == since,
        "BIRD's route unchanged (same age stamp):\nbefore {since}\nafter {now}"
    );
}

/// Not a test: the figure "time from a backend's death to its removal
/// from the dataplane, and to the BGP withdrawal in the upstream router's
/// kernel FIB when it was the last one" for bench/README.md. Run with
/// `cargo test --release --test health_daemon -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_death_to_removal_and_withdrawal() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::running("m", &[80, 81], "", &[80, 81]);
    let (mut removal, mut withdrawal) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        lab.kill_server(81);
        let t0 = Instant::now();
        wait_for(Duration::from_secs(10), ":81 out", || {
            lab.backend(&lab.status(), 81)["weight_in_use"]
                .is_null()
                .then_some(())
        });
        removal.push(t0.elapsed());
        lab.kill_server(80);
        let t1 = Instant::now();
        wait_for(Duration::from_secs(10), "route gone", || {
            lab.fib().trim().is_empty().then_some(())
        });
        withdrawal.push(t1.elapsed());
        lab.serve(80);
        lab.serve(81);
        wait_for(Duration::from_secs(10), "route back", || {
            lab.fib().contains("via").then_some(())
        });
        wait_for(Duration::from_secs(10), "both healthy", || {
            let st = lab.status();
            (lab.backend(&st, 80)["state"] == "healthy"
                && lab.backend(&st, 81)["state"] == "healthy")
                .then_some(())
        });
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (rm, rmin, rmax) = median(&mut removal);
    let (wm, wmin, wmax) = median(&mut withdrawal);
    println!(
        "check interval {INTERVAL:?}, fall {FALL}, timeout 200ms (detection takes fall checks)\n\
         backend death -> out of the dataplane: median {rm:?} (min {rmin:?}, max {rmax:?}) over {} runs\n\
         last backend's death -> VIP route gone from BIRD's kernel FIB: median {wm:?} (min {wmin:?}, max {wmax:?})",
        removal.len()
    );
}
