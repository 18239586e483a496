//! BGP from a real daemon (and from `vipgate route speak`) to BIRD 2 as
//! the upstream router, in network namespaces.
//!
//! ```text
//!   ns G: vipgate (AS 65001)  g0 198.18.1.2/24 ── r0 198.18.1.1/24  ns R: BIRD (AS 65000),
//!                                                                    kernel export into R's FIB
//! ```
//!
//! Needs root and BIRD 2 (`bird`, `birdc`); prints SKIPPED with the reason
//! otherwise. Namespaces `vgb<pid>-<tag>-{r,g}` and every process are
//! removed / ended by PID on every path (Drop).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{end, run, skip_reason_bird as skip_reason, wait_for};

const VIP: &str = "198.18.10.10/32";

/// Two namespaces, BIRD in R, files in `dir`; all removed on drop.
struct Lab {
    r: String,
    g: String,
    dir: PathBuf,
    children: Vec<Child>,
    bird_sock: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            end(c);
        }
        for ns in [&self.r, &self.g] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const BIRD_CONF: &str = r#"router id 198.18.1.1;
log "{DIR}/bird.log" all;
protocol device { scan time 1; }
protocol kernel k4 { ipv4 { export all; }; merge paths on; }
protocol kernel k6 { ipv6 { export all; }; merge paths on; }
protocol bgp g1 {
  local as 65000;
  neighbor 198.18.1.2 as 65001;
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  ipv4 { import all; export none; };
  ipv6 { import all; export none; };
}
"#;

impl Lab {
    fn new(tag: &str) -> Lab {
        let base = format!("vgb{}-{tag}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{base}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let mut lab = Lab {
            r: format!("{base}-r"),
            g: format!("{base}-g"),
            bird_sock: dir.join("bird.ctl").display().to_string(),
            dir,
            children: Vec::new(),
        };
        for ns in [&lab.r, &lab.g] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let (r, g) = (lab.r.clone(), lab.g.clone());
        run(
            "ip",
            &[
                "-n", &r, "link", "add", "r0", "type", "veth", "peer", "name", "g0", "netns", &g,
            ],
        );
        run("ip", &["-n", &r, "link", "set", "r0", "up"]);
        run("ip", &["-n", &g, "link", "set", "g0", "up"]);
        run(
            "ip",
            &["-n", &r, "addr", "add", "198.18.1.1/24", "dev", "r0"],
        );
        run(
            "ip",
            &["-n", &g, "addr", "add", "198.18.1.2/24", "dev", "g0"],
        );
        for (ns, dev, a) in [
            (&r, "r0", "2001:db8:1::1/64"),
            (&g, "g0", "2001:db8:1::2/64"),
        ] {
            run("ip", &["-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
        }
        lab.start_bird();
        lab
    }

    fn start_bird(&mut self) {
        let child = common::start_bird(&self.r, &self.dir, BIRD_CONF, &self.bird_sock);
        self.children.push(child);
    }

    fn birdc(&self, args: &[&str]) -> String {
        common::birdc(&self.bird_sock, args)
    }

    /// Waits for the session, or panics with both logs.
    fn wait_established(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.established() {
            assert!(
                Instant::now() < deadline,
                "no session in BIRD within 30 s\nvipgate: {}{}\nBIRD: {}",
                self.log("run"),
                self.log("route"),
                std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "g1"])
            .lines()
            .any(|l| l.starts_with("g1") && l.contains("Established"))
    }

    /// BIRD's full view of `prefix` ("" when it has no route).
    fn bird_route(&self, prefix: &str) -> String {
        let out = self.birdc(&["show", "route", prefix, "all"]);
        if out.contains(prefix) {
            out
        } else {
            String::new()
        }
    }

    /// R's kernel FIB entry for `dst`.
    fn fib(&self, dst: &str) -> String {
        run("ip", &["-n", &self.r, "route", "show", dst])
    }

    fn fib6(&self, dst: &str) -> String {
        run("ip", &["-n", &self.r, "-6", "route", "show", dst])
    }

    /// Start `vipgate ARGS` in G; its index in `children`.
    fn spawn_vipgate(&mut self, args: &[&str], stdin: Stdio, stdout: Stdio) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{}.log", args[0]))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.g])
            .arg(env!("CARGO_BIN_EXE_vipgate"))
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("start vipgate");
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `vipgate ARGS --socket S` against the daemon; its stdout, or the
    /// error text.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        common::vipgate_cli(&self.dir.join("ctl.sock"), args)
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let text = self
            .cli(args)
            .unwrap_or_else(|e| panic!("vipgate {args:?}: {e}\n{}", self.log("run")));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }
}

fn daemon_config(dir: &std::path::Path) -> String {
    format!(
        r#"
[node]
name = "gw"
control_socket = "{dir}/ctl.sock"

[[interface]]
name = "g0"

[dataplane]
io = "memory"
workers = 1
conn_capacity = 1024

[[service]]
name = "web"
vip = "198.18.10.10"
port = 80
  [[service.backend]]
  address = "198.18.1.9"

[[service]]
name = "web6"
vip = "2001:db8:10::10"
port = 80
  [[service.backend]]
  address = "2001:db8:1::9"

[bgp]
local_as = 65001
router_id = "198.18.1.2"
communities = ["65001:10"]
[bgp.drain]
delay = "2s"
med = 500
[[bgp.peer]]
name = "upstream"
address = "198.18.1.1"
remote_as = 65000
families = ["ipv4-unicast", "ipv6-unicast"]
med = 77
"#,
        dir = dir.display()
    )
}

#[test]
fn daemon_announces_drains_and_withdraws_on_sigterm() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("d");
    let file = lab.dir.join("gw.toml");
    std::fs::write(&file, daemon_config(&lab.dir)).expect("config");
    let file = file.display().to_string();
    let daemon = lab.spawn_vipgate(&["run", "--config", &file], Stdio::null(), Stdio::null());
    let long = Duration::from_secs(30);
    lab.wait_established();

    // ecmp policy: the VIP with a usable backend, in BIRD and R's FIB.
    wait_for(long, "VIP in R's kernel FIB", || {
        lab.fib("198.18.10.10")
            .contains("via 198.18.1.2")
            .then_some(())
    });
    let r = lab.bird_route(VIP);
    assert!(
        r.contains("(65001,10)") && r.contains("BGP.med: 77"),
        "the peer's own MED and [bgp]'s community: {r}"
    );
    let peers = lab.cli_json(&["bgp", "peers", "--json"]);
    let p = &peers["peers"][0];
    assert_eq!(p["name"], "upstream");
    assert_eq!(p["state"], "Established");
    assert_eq!(p["prefixes_sent"], 2);
    assert!(lab.cli(&["bgp", "peers"]).unwrap().contains("Established"));

    // Operator routes: announce, list (Adj-RIB-Out), kept apart from policy.
    let out = lab.cli(&[
        "route",
        "announce",
        "198.18.11.0/24",
        "--med",
        "7",
        "--community",
        "65000:42",
        "--large-community",
        "65001:1:2",
    ]);
    assert!(out.unwrap().contains("announced"));
    wait_for(long, "operator route in BIRD", || {
        let r = lab.bird_route("198.18.11.0/24");
        // The operator's MED replaces the peer's; the peer's community is
        // added to the operator's.
        (r.contains("(65000,42)")
            && r.contains("(65001,10)")
            && r.contains("(65001, 1, 2)")
            && r.contains("BGP.med: 7"))
        .then_some(())
    });
    let rib = lab.cli_json(&["route", "list", "--peer", "198.18.1.1", "--json"]);
    let prefixes: Vec<&str> = rib["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["prefix"].as_str())
        .collect();
    assert_eq!(
        prefixes,
        ["198.18.10.10/32", "198.18.11.0/24", "2001:db8:10::10/128"],
        "{rib:#}"
    );
    assert!(lab.cli(&["route", "list"]).unwrap().contains("med 7"));
    let e = lab.cli(&["route", "withdraw", VIP]).unwrap_err();
    assert!(
        e.contains("was not announced with `vipgate route announce`"),
        "{e}"
    );
    let status = lab.cli_json(&["status", "--json"]);
    assert_eq!(status["bgp"]["announced"].as_array().map(Vec::len), Some(3));
    assert!(lab.cli(&["status"]).unwrap().contains("bgp mode ecmp"));
    lab.cli_json(&["route", "withdraw", "198.18.11.0/24", "--json"]);
    wait_for(long, "operator route gone from BIRD", || {
        lab.bird_route("198.18.11.0/24").is_empty().then_some(())
    });
    assert!(!lab.bird_route(VIP).is_empty(), "the policy route stays");

    // Drain: GRACEFUL_SHUTDOWN and the drain MED, then withdrawn after 2 s.
    let drain = lab.cli_json(&["drain", "--json"]);
    assert_eq!(drain["withdraw_in_ms"], 2000);
    let drained_at = Instant::now();
    wait_for(long, "GRACEFUL_SHUTDOWN in BIRD", || {
        let r = lab.bird_route(VIP);
        (r.contains("(65535,0)") && r.contains("BGP.med: 500")).then_some(())
    });
    wait_for(long, "drained VIP withdrawn", || {
        lab.bird_route(VIP).is_empty().then_some(())
    });
    assert!(
        drained_at.elapsed() >= Duration::from_millis(1500),
        "withdrawn after the delay, not at once ({:?})",
        drained_at.elapsed()
    );
    assert_eq!(
        lab.cli_json(&["status", "--json"])["bgp"]["drain"],
        "drained"
    );
    lab.cli(&["undrain"]).expect("undrain");
    wait_for(long, "VIP back without the drain community", || {
        let r = lab.bird_route(VIP);
        (!r.is_empty() && !r.contains("(65535,0)")).then_some(())
    });
    wait_for(long, "VIP back in R's FIB", || {
        lab.fib("198.18.10.10")
            .contains("via 198.18.1.2")
            .then_some(())
    });

    // SIGTERM: the route leaves BIRD while the daemon still runs.
    let pid = lab.children[daemon].id().to_string();
    run("kill", &["-TERM", &pid]);
    let mut seen_gone_alive = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let gone = lab.bird_route(VIP).is_empty();
        match lab.children[daemon].try_wait().expect("try_wait") {
            Some(code) => break code,
            None if gone => seen_gone_alive = true,
            None => {}
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "daemon exit: {code:?}\n{}", lab.log("run"));
    assert!(
        seen_gone_alive,
        "route withdrawn before the daemon exited\n{}",
        lab.log("run")
    );
    assert!(lab.fib("198.18.10.10").is_empty());
    assert!(lab.fib6("2001:db8:10::10").is_empty());
}

/// Reads `route speak`'s answers on a thread (bounded waits).
struct Speak {
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
}

impl Speak {
    fn say(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to route speak");
        stdin.flush().expect("flush");
        self.answers
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no answer to {line:?}"))
    }
}

#[test]
fn route_speak_drives_announcements_from_stdin() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("s");
    let file = lab.dir.join("speak.toml");
    std::fs::write(
        &file,
        "[bgp]\nlocal_as = 65001\n[[bgp.peer]]\naddress = \"198.18.1.1\"\nremote_as = 65000\n",
    )
    .expect("config");
    let file = file.display().to_string();
    let i = lab.spawn_vipgate(
        &["route", "speak", "--config", &file],
        Stdio::piped(),
        Stdio::piped(),
    );
    let child = &mut lab.children[i];
    let stdout = child.stdout.take().expect("stdout");
    let (tx, answers) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut speak = Speak {
        stdin: child.stdin.take(),
        answers,
    };
    let long = Duration::from_secs(30);
    lab.wait_established();

    let prefix = "198.18.12.12/32";
    assert_eq!(
        speak.say(&format!("announce {prefix} med 9 community 65000:5")),
        "done"
    );
    wait_for(long, "spoken route in BIRD", || {
        let r = lab.bird_route(prefix);
        (r.contains("(65000,5)") && r.contains("via 198.18.1.2")).then_some(())
    });
    let e = speak.say("announce 198.18.12.12/24");
    assert!(e.starts_with("error: invalid prefix"), "{e}");
    assert!(speak
        .say("flap 198.18.12.12/32")
        .starts_with("error: unknown command"));
    assert_eq!(speak.say(&format!("withdraw {prefix}")), "done");
    wait_for(long, "spoken route withdrawn", || {
        lab.bird_route(prefix).is_empty().then_some(())
    });
    assert!(speak
        .say(&format!("withdraw {prefix}"))
        .starts_with("error:"));

    // EOF withdraws and exits.
    assert_eq!(speak.say(&format!("announce {prefix}")), "done");
    wait_for(long, "spoken route back", || {
        (!lab.bird_route(prefix).is_empty()).then_some(())
    });
    drop(speak.stdin.take());
    let code = wait_for(Duration::from_secs(10), "route speak exits at EOF", || {
        lab.children[i].try_wait().expect("try_wait")
    });
    assert!(code.success(), "{code:?}\n{}", lab.log("route"));
    wait_for(long, "route withdrawn at EOF", || {
        lab.bird_route(prefix).is_empty().then_some(())
    });

    // SIGTERM withdraws and exits too.
    let i = lab.spawn_vipgate(
        &["route", "speak", "--config", &file],
        Stdio::piped(),
        Stdio::null(),
    );
    lab.wait_established();
    let mut stdin = lab.children[i].stdin.take().expect("stdin");
    writeln!(stdin, "announce {prefix}").expect("write");
    wait_for(long, "route announced again", || {
        (!lab.bird_route(prefix).is_empty()).then_some(())
    });
    run("kill", &["-TERM", &lab.children[i].id().to_string()]);
    let code = wait_for(
        Duration::from_secs(10),
        "route speak exits on SIGTERM",
        || lab.children[i].try_wait().expect("try_wait"),
    );
    assert!(code.success(), "{code:?}\n{}", lab.log("route"));
    wait_for(long, "route withdrawn on SIGTERM", || {
        lab.bird_route(prefix).is_empty().then_some(())
    });
}

#[test]
fn vrrp_mode_announces_while_master() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("v");
    let file = lab.dir.join("gw.toml");
    let config = daemon_config(&lab.dir).replace(
        "[bgp]\n",
        "[vrrp]\nadvert_interval = \"100ms\"\nresign_grace = \"500ms\"\nvip_mode = \"kernel\"\n\
         [[vrrp.instance]]\nname = \"vip1\"\ninterface = \"g0\"\nvrid = 51\nvips = [\"198.18.10.10\"]\n\
         [bgp]\nmode = \"vrrp\"\n",
    )
    .replace(
        "[[service]]\nname = \"web6\"\nvip = \"2001:db8:10::10\"\nport = 80\n  [[service.backend]]\n  address = \"2001:db8:1::9\"\n",
        "",
    );
    std::fs::write(&file, config).expect("config");
    let file = file.display().to_string();
    let daemon = lab.spawn_vipgate(&["run", "--config", &file], Stdio::null(), Stdio::null());
    let long = Duration::from_secs(30);
    lab.wait_established();
    // Alone on the link: master after the down interval, then announced.
    wait_for(long, "VIP announced once master", || {
        (!lab.bird_route(VIP).is_empty()).then_some(())
    });
    let status = lab.cli_json(&["status", "--json"]);
    assert_eq!(
        status["vrrp"]["instances"][0]["state"], "MASTER",
        "{status:#}"
    );
    assert_eq!(status["bgp"]["mode"], "vrrp");
    // Resigning withdraws at once (the grace keeps forwarding only).
    let resigned = Instant::now();
    lab.cli(&["vrrp", "resign", "vip1"]).expect("resign");
    wait_for(long, "VIP withdrawn on resign", || {
        lab.bird_route(VIP).is_empty().then_some(())
    });
    assert!(
        resigned.elapsed() < Duration::from_secs(3),
        "withdrawn late: {:?}",
        resigned.elapsed()
    );
    lab.cli(&["vrrp", "resume", "vip1"]).expect("resume");
    wait_for(long, "VIP announced again after resume", || {
        (!lab.bird_route(VIP).is_empty()).then_some(())
    });
    end(&mut lab.children[daemon]);
    let code = lab.children[daemon].try_wait().expect("try_wait");
    assert!(
        code.is_some_and(|c| c.success()),
        "{code:?}\n{}",
        lab.log("run")
    );
}

#[test]
fn a_refused_listener_stops_the_start_having_changed_nothing() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new("l");
    // Something else holds the BGP port on the node's address.
    let holder = Command::new("ip")
        .args(["netns", "exec", &lab.g, "python3", "-c"])
        .arg(
            "import socket,time\ns=socket.socket()\ns.bind(('198.18.1.2',179))\ns.listen()\n\
             print('bound',flush=True)\ntime.sleep(60)",
        )
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut holder) = holder else {
        println!("SKIPPED: python3 not available to hold the port");
        return;
    };
    let mut ready = String::new();
    let stdout = holder.stdout.take().expect("stdout");
    lab.children.push(holder);
    BufReader::new(stdout)
        .read_line(&mut ready)
        .expect("holder output");
    assert_eq!(ready.trim(), "bound");
    let file = lab.dir.join("gw.toml");
    // The AF_PACKET dataplane: its system changes (sysctls, nftables)
    // come after the speaker, so none may be left behind.
    let config = daemon_config(&lab.dir)
        .replace("io = \"memory\"\n", "")
        .replace("[bgp]\n", "[bgp]\nlisten = \"198.18.1.2:179\"\n");
    std::fs::write(&file, config).expect("config");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.g])
        .arg(env!("CARGO_BIN_EXE_vipgate"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .expect("vipgate run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("listen on 198.18.1.2:179"), "{stderr}");
    assert!(!lab.dir.join("ctl.sock").exists(), "control socket removed");
    let tables = run("ip", &["netns", "exec", &lab.g, "nft", "list", "tables"]);
    assert!(!tables.contains("vipgate"), "{tables}");
}
