//! VRRP interoperability with Debian's keepalived 2.2 in network namespaces.
//!
//! Each test builds its own pair of namespaces (`vgt-<pid>-<tag>-vg` and
//! `-ka`) joined by one veth (`vg0` <-> `ka0`), runs `vipgate run` with
//! `io = "memory"` and `vip_mode = "kernel"` in the first and keepalived in
//! the second, both in the same virtual router, and watches vipgate through
//! its control socket, keepalived through its log, and both through the VIP
//! on their links. Malformed and foreign adverts come from python3 raw
//! sockets (IP protocol 112) in the keepalived namespace.
//!
//! Owns: this file only; it changes nothing outside the namespaces and the
//! scratch directory it creates, and removes both, and ends every process it
//! started by PID, on every path (the `Lab` drop guard).
//!
//! Needs root and /usr/sbin/keepalived; prints SKIPPED otherwise. Only
//! 198.18.0.0/15 and 2001:db8::/32 are used. Every wait polls with a
//! deadline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use vipgate::privileges::is_root;

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const VRID: u8 = 51;
const VG4: &str = "198.18.0.1";
const KA4: &str = "198.18.0.2";
/// A third address on the keepalived link: neither router's.
const STRANGER4: &str = "198.18.0.3";
const VIP4: &str = "198.18.10.10";
const VIP6: &str = "2001:db8:10::10";
const POLL: Duration = Duration::from_millis(20);
const STARTUP: Duration = Duration::from_secs(10);

/// keepalived 2.2.7 (keepalived/vrrp/vrrp.c, tag v2.2.7) logs these when it
/// rejects or distrusts a received advert; any of them in its log means it
/// did not like something on the wire. Matched lowercase.
///
/// - vrrp_in_chk / vrrp_check_packet: "IPv4 VRRP packet too short",
///   "vrrp packet too %s, length", "invalid TTL/HL", "wrong version",
///   "Invalid auth type", "received a %d auth, expecting",
///   "received an invalid passwd", "advertisement interval mismatch",
///   "Invalid packet type", "received an unexpected ip number count",
///   "ip_tot_len mismatch", "Invalid VRRPv3 checksum",
///   "Invalid VRRPv2 checksum", "Expected %sicast packet but received",
///   "expected %u VIPs but received", "not present in MASTER advert",
///   "not a unicast peer", "TTL/HL %d not in range", "IPSEC-AH : invalid";
/// - checksum tracing: "Checksum ERROR";
/// - state machine: "equal priority advert received from remote host with
///   our IP address", "CONFIGURATION ERROR".
const KEEPALIVED_COMPLAINTS: &[&str] = &[
    "packet too short",
    "vrrp packet too ",
    "invalid ttl",
    "not in range",
    "wrong version",
    "invalid auth type",
    "auth, expecting",
    "invalid passwd",
    "interval mismatch",
    "invalid packet type",
    "unexpected ip number count",
    "ip_tot_len mismatch",
    "checksum error",
    "invalid vrrpv3 checksum",
    "invalid vrrpv2 checksum",
    "icast packet but received",
    "vips but received",
    "not present in master advert",
    "not a unicast peer",
    "ipsec-ah : invalid",
    "with our ip address",
    "configuration error",
];

/// Sends raw VRRP payloads (IP protocol 112): `send.py SRC DST TTL HEX...`.
/// The kernel builds the IP header; the TTL is set for unicast and
/// multicast, and multicast loopback is off so keepalived in the sending
/// namespace never sees what is meant for vipgate.
const SENDER: &str = r#"
import socket, sys
src, dst, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
for h in sys.argv[4:]:
    s.sendto(bytes.fromhex(h), (dst, 0))
"#;

/// Why this machine cannot run the tests, if it cannot.
fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root");
    }
    if !Path::new(KEEPALIVED).exists() {
        return Some("needs /usr/sbin/keepalived (apt-get install keepalived)");
    }
    if Command::new("python3").arg("-V").output().is_err() {
        return Some("needs python3");
    }
    None
}

macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a PID this test started; no memory is shared.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` runs and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

// ------------------------------------------------------------------ routers

/// One virtual router as both daemons are configured.
#[derive(Clone, Copy)]
struct Router {
    version: u8,
    /// Advert interval in milliseconds (v2: whole seconds).
    interval_ms: u32,
    v6: bool,
    unicast: bool,
    auth_pass: Option<&'static str>,
}

impl Router {
    fn v3() -> Router {
        Router {
            version: 3,
            interval_ms: 100,
            v6: false,
            unicast: false,
            auth_pass: None,
        }
    }

    fn vip(&self) -> &'static str {
        if self.v6 {
            VIP6
        } else {
            VIP4
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }

    /// RFC 5798 Master_Down_Interval of a backup with `priority`.
    fn master_down(&self, priority: u8) -> Duration {
        let skew = self.interval() * (256 - u32::from(priority)) / 256;
        self.interval() * 3 + skew
    }

    fn vipgate_config(&self, dir: &Path, priority: u8) -> String {
        let (vip, backend) = if self.v6 {
            (VIP6, "2001:db8::9")
        } else {
            (VIP4, "198.18.0.9")
        };
        let mut extra = String::new();
        if self.unicast {
            extra += &format!("unicast_source = \"{VG4}\"\nunicast_peers = [\"{KA4}\"]\n");
        }
        if let Some(pass) = self.auth_pass {
            extra += &format!("auth_pass = \"{pass}\"\n");
        }
        format!(
            r#"[node]
name = "vg"
control_socket = "{socket}"

[[interface]]
name = "vg0"
role = "both"

[dataplane]
io = "memory"
workers = 1

[[service]]
name = "web"
vip = "{vip}"
port = 80

  [[service.backend]]
  address = "{backend}"

[vrrp]
version = {version}
advert_interval = "{interval}ms"
vip_mode = "kernel"
resign_grace = "200ms"
garp_repeat = 1
garp_delay = "0s"

[[vrrp.instance]]
name = "vi"
interface = "vg0"
vrid = {VRID}
priority = {priority}
vips = ["{vip}"]
{extra}"#,
            socket = dir.join("control.sock").display(),
            version = self.version,
            interval = self.interval_ms,
        )
    }

    fn keepalived_config(&self, tag: &str, priority: u8) -> String {
        let mut extra = String::new();
        if self.v6 {
            extra += "  native_ipv6\n";
        }
        if self.unicast {
            extra += &format!("  unicast_src_ip {KA4}\n  unicast_peer {{\n    {VG4}\n  }}\n");
        }
        if let Some(pass) = self.auth_pass {
            extra +=
                &format!("  authentication {{\n    auth_type PASS\n    auth_pass {pass}\n  }}\n");
        }
        let prefix = if self.v6 { 128 } else { 32 };
        format!(
            r#"global_defs {{
  router_id {tag}
  vrrp_garp_master_delay 0
}}
vrrp_instance VI {{
  state BACKUP
  interface ka0
  virtual_router_id {VRID}
  priority {priority}
  advert_int {interval}
  version {version}
{extra}  virtual_ipaddress {{
    {vip}/{prefix}
  }}
}}
"#,
            interval = f64::from(self.interval_ms) / 1000.0,
            version = self.version,
            vip = self.vip(),
        )
    }
}

// --------------------------------------------------------------------- lab

/// A process this test started, ended by PID on drop of the lab.
struct Proc {
    child: Child,
    /// Files holding PIDs of its children (keepalived's VRRP process).
    child_pidfiles: Vec<PathBuf>,
}

/// Two namespaces joined by a veth, the daemons in them, and a scratch
/// directory; all of it removed on drop.
struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    vipgate: Option<Proc>,
    keepalived: Option<Proc>,
    /// Generation of keepalived runs, for distinct log files.
    ka_runs: u32,
    router: Router,
}

impl Lab {
    fn new(tag: &str, router: Router) -> Lab {
        let prefix = format!("vgt-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let mut lab = Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            vipgate: None,
            keepalived: None,
            ka_runs: 0,
            router,
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).expect("scratch directory");
        for side in ["vg", "ka"] {
            let name = lab.ns(side);
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            lab.namespaces.push(name.clone());
            // No duplicate address detection: link-local addresses are
            // usable at once, so IPv6 VRRP need not wait for them.
            run(Command::new("ip")
                .args(["netns", "exec", &name, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ]));
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        let (vg, ka) = (lab.ns("vg"), lab.ns("ka"));
        ip(&[
            "-n", &vg, "link", "add", "vg0", "type", "veth", "peer", "name", "ka0", "netns", &ka,
        ]);
        for (ns, link, v4, v6) in [
            (&vg, "vg0", VG4, "2001:db8::1"),
            (&ka, "ka0", KA4, "2001:db8::2"),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", link]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                link,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        ip(&[
            "-n",
            &ka,
            "addr",
            "add",
            &format!("{STRANGER4}/24"),
            "dev",
            "ka0",
        ]);
        lab.wait("link-local addresses on both links", STARTUP, || {
            let ready = [(&vg, "vg0"), (&ka, "ka0")].iter().all(|(ns, link)| {
                let out = ip(&["-n", ns, "-6", "addr", "show", "dev", link, "scope", "link"]);
                out.contains("fe80::") && !out.contains("tentative")
            });
            ready.then_some(())
        });
        lab
    }

    fn ns(&self, side: &str) -> String {
        format!("{}-{side}", self.prefix)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn ka_log_name(&self) -> String {
        format!("keepalived-{}.log", self.ka_runs)
    }

    /// Everything that helps to understand a failure.
    fn dump(&self) -> String {
        let status = self
            .status()
            .map(|s| serde_json::to_string_pretty(&s["vrrp"]).unwrap_or_default())
            .unwrap_or_else(|e| format!("(no status: {e})"));
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "\n--- vipgate status ---\n{status}\n--- vipgate log ---\n{}\n--- keepalived log ---\n{}\n--- addresses ---\n{}{}",
            tail(self.log("vipgate.log")),
            tail(self.log(&self.ka_log_name())),
            self.addrs("vg"),
            self.addrs("ka"),
        )
    }

    /// Polls `probe` every POLL until it gives a value or `limit` passes.
    fn wait<T>(&self, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}{}",
                    self.dump()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    // ------------------------------------------------------------ vipgate

    fn start_vipgate(&mut self, priority: u8) {
        let config = self.dir.join("vipgate.toml");
        std::fs::write(&config, self.router.vipgate_config(&self.dir, priority)).expect("config");
        let log = File::create(self.dir.join("vipgate.log")).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("vg"),
                env!("CARGO_BIN_EXE_vipgate"),
                "run",
            ])
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn vipgate");
        self.vipgate = Some(Proc {
            child,
            child_pidfiles: Vec::new(),
        });
        self.wait("vipgate's control socket and VRRP status", STARTUP, || {
            assert!(self.vipgate_running(), "vipgate exited{}", self.dump());
            self.instance().ok().filter(|i| i.is_object())
        });
    }

    fn vipgate_running(&self) -> bool {
        self.vipgate.as_ref().is_some_and(|p| alive(p.child.id()))
    }

    fn vipgate_pid(&self) -> u32 {
        self.vipgate.as_ref().expect("vipgate started").child.id()
    }

    fn status(&self) -> Result<Value, String> {
        vipgate::control::request(&self.socket(), &json!({"cmd": "status"}))
            .map_err(|e| format!("{e:#}"))
    }

    /// The status of the one VRRP instance.
    fn instance(&self) -> Result<Value, String> {
        self.status().map(|s| s["vrrp"]["instances"][0].clone())
    }

    fn wait_vg_state(&self, state: &str, limit: Duration) -> Value {
        self.wait(&format!("vipgate {state}"), limit, || {
            self.instance().ok().filter(|i| i["state"] == state)
        })
    }

    fn vipgate_cli(&self, args: &[&str]) -> String {
        let socket = self.socket();
        run(Command::new(env!("CARGO_BIN_EXE_vipgate"))
            .args(args)
            .arg("--socket")
            .arg(&socket))
    }

    /// The VRRP events so far (`vipgate vrrp events`, one JSON per line).
    fn events(&self) -> Vec<Value> {
        self.vipgate_cli(&["vrrp", "events"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?}: {e}")))
            .collect()
    }

    // --------------------------------------------------------- keepalived

    fn start_keepalived(&mut self, priority: u8) {
        self.ka_runs += 1;
        let tag = format!("ka{}", self.ka_runs);
        let config = self.dir.join(format!("{tag}.conf"));
        let text = self.router.keepalived_config(&self.prefix, priority);
        std::fs::write(&config, text).expect("keepalived config");
        let pidfile = self.dir.join(format!("{tag}.pid"));
        let vrrp_pidfile = self.dir.join(format!("{tag}-vrrp.pid"));
        let log = File::create(self.dir.join(self.ka_log_name())).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("ka"),
                KEEPALIVED,
                "-n",
                "-l",
                "-D",
            ])
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(&pidfile)
            .arg("-r")
            .arg(&vrrp_pidfile)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn keepalived");
        self.keepalived = Some(Proc {
            child,
            child_pidfiles: vec![vrrp_pidfile],
        });
        self.wait("keepalived's VRRP instance", STARTUP, || {
            self.ka_state().is_some().then_some(())
        });
    }

    fn keepalived_pid(&self) -> u32 {
        self.keepalived
            .as_ref()
            .expect("keepalived started")
            .child
            .id()
    }

    /// keepalived's state from its log: the last "(VI) Entering X STATE".
    fn ka_state(&self) -> Option<String> {
        let log = self.log(&self.ka_log_name());
        log.lines()
            .rev()
            .filter(|l| l.contains("(VI) Entering "))
            .find_map(|l| {
                let rest = &l[l.find("(VI) Entering ")? + "(VI) Entering ".len()..];
                Some(rest.split_whitespace().next()?.to_string())
            })
    }

    fn wait_ka_state(&self, state: &str, limit: Duration) {
        self.wait(&format!("keepalived {state}"), limit, || {
            (self.ka_state().as_deref() == Some(state)).then_some(())
        });
    }

    /// Fails on any line of every keepalived log of this lab that shows a
    /// complaint about a received advert.
    fn assert_keepalived_content(&self) {
        for run in 1..=self.ka_runs {
            let log = self.log(&format!("keepalived-{run}.log"));
            let bad: Vec<&str> = log
                .lines()
                .filter(|l| {
                    let l = l.to_lowercase();
                    KEEPALIVED_COMPLAINTS.iter().any(|p| l.contains(p))
                })
                .collect();
            assert!(
                bad.is_empty(),
                "keepalived complained about vipgate's adverts:\n{}{}",
                bad.join("\n"),
                self.dump()
            );
        }
    }

    /// Stops keepalived with SIGTERM (it sends priority 0) and waits for it.
    fn stop_keepalived(&mut self) {
        let mut proc = self.keepalived.take().expect("keepalived started");
        signal(proc.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STARTUP;
        while matches!(proc.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(
            !matches!(proc.child.try_wait(), Ok(None)),
            "keepalived did not stop on SIGTERM{}",
            self.dump()
        );
        end(&mut proc);
    }

    // ----------------------------------------------------------- addresses

    fn addrs(&self, side: &str) -> String {
        let link = if side == "vg" { "vg0" } else { "ka0" };
        Command::new("ip")
            .args(["-n", &self.ns(side), "-o", "addr", "show", "dev", link])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Whether the VIP is configured on `side`'s link.
    fn has_vip(&self, side: &str) -> bool {
        let prefix = if self.router.v6 { 128 } else { 32 };
        let want = format!(" {}/{prefix} ", self.router.vip());
        self.addrs(side).contains(&want)
    }

    /// Waits until exactly `side` holds the VIP.
    fn wait_vip_on(&self, side: &str, limit: Duration) {
        let other = if side == "vg" { "ka" } else { "vg" };
        self.wait(&format!("the VIP on {side} only"), limit, || {
            (self.has_vip(side) && !self.has_vip(other)).then_some(())
        });
    }

    /// Sends raw VRRP payloads from the keepalived namespace.
    fn send_raw(&self, src: &str, dst: &str, ttl: u8, payloads: &[Vec<u8>]) {
        let script = self.dir.join("send.py");
        std::fs::write(&script, SENDER).expect("sender script");
        let hex: Vec<String> = payloads
            .iter()
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns("ka"), "python3"])
            .arg(&script)
            .args([src, dst, &ttl.to_string()])
            .args(&hex));
    }
}

/// Ends `proc` and what it started: SIGTERM, a bounded wait, then SIGKILL.
fn end(proc: &mut Proc) {
    let children: Vec<u32> = proc
        .child_pidfiles
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
        .collect();
    if matches!(proc.child.try_wait(), Ok(None)) {
        signal(proc.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(proc.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }
    for pid in children {
        let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.contains("keepalived"));
        if ours && alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for proc in [self.vipgate.as_mut(), self.keepalived.as_mut()]
            .into_iter()
            .flatten()
        {
            end(proc);
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ adverts

/// The Internet checksum of `parts` laid end to end (each of even length
/// except the last).
fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A VRRPv3 IPv4 advert from `src` to `dst` with the pseudo-header checksum.
fn advert_v3(src: &str, dst: &str, vrid: u8, priority: u8, vips: &[&str]) -> Vec<u8> {
    let mut p = vec![0x31, vrid, priority, vips.len() as u8, 0x00, 10, 0, 0];
    for v in vips {
        let a: std::net::Ipv4Addr = v.parse().expect("IPv4 literal");
        p.extend_from_slice(&a.octets());
    }
    let s: std::net::Ipv4Addr = src.parse().expect("IPv4 literal");
    let d: std::net::Ipv4Addr = dst.parse().expect("IPv4 literal");
    let len = (p.len() as u16).to_be_bytes();
    let pseudo = [&s.octets()[..], &d.octets(), &[0, 112], &len].concat();
    let sum = inet_checksum(&[&pseudo, &p]);
    p[6..8].copy_from_slice(&sum.to_be_bytes());
    p
}

#[test]
fn crafted_advert_checksum_verifies() {
    // VRRPv3 from 198.18.0.2 to 224.0.0.18, VRID 51, priority 100, 10 cs,
    // VIP 198.18.10.10; checksum summed independently over the words
    // c612 0002 e000 0012 0070 000c (pseudo-header) 3133 6401 000a c612 0a0a.
    let p = advert_v3(KA4, "224.0.0.18", 51, 100, &[VIP4]);
    assert_eq!(
        p,
        [0x31, 51, 100, 1, 0x00, 0x0a, 0xf4, 0x00, 198, 18, 10, 10],
        "{p:02x?}"
    );
}

fn counter(instance: &Value, name: &str) -> u64 {
    instance["counters"][name].as_u64().unwrap_or(0)
}

fn drops(instance: &Value) -> Vec<(String, u64)> {
    instance["counters"]["dropped"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until vipgate has received `more` adverts beyond `from`.
fn wait_rx_grows(lab: &Lab, from: u64, more: u64, limit: Duration) -> Value {
    lab.wait("vipgate receiving adverts", limit, || {
        lab.instance()
            .ok()
            .filter(|i| counter(i, "adverts_rx") >= from + more)
    })
}

// ------------------------------------------------------------------- tests

/// Cases 1, 3 (vipgate preempts keepalived), 4 (vipgate resigns, resumes)
/// and 8.
#[test]
fn vipgate_preempts_keepalived_and_resigns_to_it() {
    skip_unless_ready!();
    let router = Router::v3();
    let mut lab = Lab::new("pre", router);
    lab.start_keepalived(100);
    lab.wait_ka_state("MASTER", STARTUP);
    lab.wait_vip_on("ka", STARTUP);

    lab.start_vipgate(150);
    let master_down = router.master_down(150);
    lab.wait_vg_state("MASTER", master_down * 4);
    lab.wait_ka_state("BACKUP", master_down * 4);
    lab.wait_vip_on("vg", Duration::from_secs(2));
    let i = lab.instance().expect("status");
    assert_eq!(i["master"], VG4, "{i}");
    assert_eq!(i["effective_priority"], 150, "{i}");
    let tx = counter(&i, "adverts_tx");
    std::thread::sleep(router.interval() * 5);
    let i = lab.instance().expect("status");
    assert!(
        counter(&i, "adverts_tx") >= tx + 2,
        "adverts keep going: {i}"
    );
    assert_eq!(lab.ka_state().as_deref(), Some("BACKUP"));
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));
    let json = lab.vipgate_cli(&["status", "--json"]);
    let doc: Value = serde_json::from_str(&json).expect("status --json is JSON");
    assert_eq!(doc["vrrp"]["instances"][0]["state"], "MASTER", "{json}");

    // Planned resign: priority 0, keepalived takes over after its skew time,
    // well within three advert intervals.
    lab.vipgate_cli(&["vrrp", "resign", "vi"]);
    lab.wait(
        "the VIP on keepalived's link",
        Duration::from_secs(2),
        || lab.has_vip("ka").then_some(()),
    );
    let seen_ms = unix_ms();
    lab.wait_vip_on("ka", Duration::from_secs(2));
    lab.wait_ka_state("MASTER", Duration::from_secs(1));
    let resigned = lab
        .events()
        .into_iter()
        .rev()
        .find(|e| e["reason"] == "resigned" && e["to"] == "BACKUP")
        .unwrap_or_else(|| panic!("no resign event{}", lab.dump()));
    let took = seen_ms.saturating_sub(resigned["unix_ms"].as_u64().unwrap_or(0));
    let limit = router.interval() * 3;
    eprintln!("keepalived master {took} ms after vipgate's resign");
    assert!(
        u128::from(took) < limit.as_millis(),
        "keepalived took over {took} ms after the resign (limit {limit:?}){}",
        lab.dump()
    );
    let i = lab.wait(
        "vipgate to see keepalived master",
        Duration::from_secs(2),
        || lab.instance().ok().filter(|i| i["master"] == KA4),
    );
    assert_eq!(i["state"], "BACKUP", "{i}");
    assert!(counter(&i, "priority_zero_tx") >= 1, "{i}");

    // Resume: vipgate preempts again.
    lab.vipgate_cli(&["vrrp", "resume", "vi"]);
    lab.wait_vg_state("MASTER", master_down * 4);
    lab.wait_ka_state("BACKUP", Duration::from_secs(2));
    lab.wait_vip_on("vg", Duration::from_secs(2));
    let i = lab.instance().expect("status");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));
    lab.assert_keepalived_content();
}

/// Cases 2, 3 (keepalived preempts vipgate), 4 (keepalived stops with
/// priority 0) and 8.
#[test]
fn keepalived_preempts_vipgate_and_resigns_to_it() {
    skip_unless_ready!();
    let router = Router::v3();
    let mut lab = Lab::new("rev", router);
    lab.start_vipgate(100);
    lab.wait_vg_state("MASTER", router.master_down(100) * 4);
    lab.wait_vip_on("vg", Duration::from_secs(2));

    lab.start_keepalived(150);
    lab.wait_ka_state("MASTER", router.master_down(150) * 4);
    lab.wait_vg_state("BACKUP", Duration::from_secs(2));
    lab.wait_vip_on("ka", Duration::from_secs(2));
    let i = lab.wait(
        "vipgate to name keepalived master",
        Duration::from_secs(2),
        || lab.instance().ok().filter(|i| i["master"] == KA4),
    );
    assert_eq!(i["last_transition"]["to"], "BACKUP", "{i}");
    let rx = counter(&i, "adverts_rx");
    let tx = counter(&i, "adverts_tx");
    let i = wait_rx_grows(&lab, rx, 5, Duration::from_secs(2));
    assert_eq!(i["state"], "BACKUP", "{i}");
    assert_eq!(i["master"], KA4, "{i}");
    assert_eq!(counter(&i, "adverts_tx"), tx, "a backup sends nothing: {i}");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));

    // keepalived stops: it sends priority 0 and vipgate takes over after
    // its skew time, not its master down interval.
    let stopped_ms = unix_ms();
    signal(lab.keepalived_pid(), libc::SIGTERM);
    let i = lab.wait_vg_state("MASTER", Duration::from_secs(2));
    assert_eq!(i["last_transition"]["reason"], "master_resigned", "{i}");
    assert!(counter(&i, "priority_zero_rx") >= 1, "{i}");
    let event = lab
        .events()
        .into_iter()
        .rev()
        .find(|e| e["to"] == "MASTER")
        .unwrap_or_else(|| panic!("no MASTER event{}", lab.dump()));
    let took = event["unix_ms"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(stopped_ms);
    let limit = router.interval() * 3;
    eprintln!("vipgate master {took} ms after keepalived's SIGTERM");
    assert!(
        u128::from(took) < limit.as_millis(),
        "vipgate took over {took} ms after keepalived's SIGTERM (limit {limit:?}){}",
        lab.dump()
    );
    lab.stop_keepalived();
    lab.wait_vip_on("vg", Duration::from_secs(2));
    lab.assert_keepalived_content();
}

/// Case 5: VRRPv2 at 1 s with simple-text authentication, both ways of
/// who wins, and 8.
#[test]
fn vrrp_v2_with_auth_pass_agrees_with_keepalived() {
    skip_unless_ready!();
    let router = Router {
        version: 2,
        interval_ms: 1000,
        auth_pass: Some("vgtpass"),
        ..Router::v3()
    };
    let mut lab = Lab::new("v2", router);
    lab.start_keepalived(100);
    lab.start_vipgate(150);
    let limit = router.master_down(100) * 2;
    lab.wait_vg_state("MASTER", limit);
    lab.wait_ka_state("BACKUP", limit);
    lab.wait_vip_on("vg", Duration::from_secs(3));
    let i = lab.instance().expect("status");
    assert_eq!(i["version"], 2, "{i}");
    assert_eq!(i["master"], VG4, "{i}");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));

    // Reverse roles: keepalived at 200 preempts; vipgate follows it.
    lab.stop_keepalived();
    lab.start_keepalived(200);
    lab.wait_ka_state("MASTER", router.master_down(200) * 2);
    lab.wait_vip_on("ka", Duration::from_secs(3));
    let i = lab.wait(
        "vipgate backing up keepalived",
        Duration::from_secs(3),
        || {
            lab.instance()
                .ok()
                .filter(|i| i["state"] == "BACKUP" && i["master"] == KA4)
        },
    );
    let i = wait_rx_grows(&lab, counter(&i, "adverts_rx"), 2, Duration::from_secs(4));
    assert_eq!(i["state"], "BACKUP", "{i}");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));
    lab.assert_keepalived_content();
}

/// Case 6: unicast peers both sides; an advert from a third address is
/// dropped as unknown_peer; and 8.
#[test]
fn unicast_peers_elect_and_reject_a_stranger() {
    skip_unless_ready!();
    let router = Router {
        unicast: true,
        ..Router::v3()
    };
    let mut lab = Lab::new("uni", router);
    lab.start_keepalived(100);
    lab.start_vipgate(150);
    let limit = router.master_down(100) * 4;
    lab.wait_vg_state("MASTER", limit);
    lab.wait_ka_state("BACKUP", limit);
    lab.wait_vip_on("vg", Duration::from_secs(2));
    let i = lab.instance().expect("status");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));

    // A valid advert with a higher priority, but from a stranger.
    let advert = advert_v3(STRANGER4, VG4, VRID, 250, &[VIP4]);
    lab.send_raw(STRANGER4, VG4, 255, &[advert.clone(), advert]);
    let i = lab.wait("unknown_peer counted", Duration::from_secs(2), || {
        lab.instance()
            .ok()
            .filter(|i| i["counters"]["dropped"]["unknown_peer"] == 2)
    });
    assert_eq!(i["state"], "MASTER", "{i}");
    assert_eq!(i["master"], VG4, "{i}");

    // Roles reversed: vipgate resigns, keepalived's unicast adverts make
    // vipgate a backup of 198.18.0.2.
    lab.vipgate_cli(&["vrrp", "resign", "vi"]);
    lab.wait_ka_state("MASTER", Duration::from_secs(2));
    lab.wait_vip_on("ka", Duration::from_secs(2));
    let i = lab.wait(
        "vipgate to name keepalived master",
        Duration::from_secs(2),
        || lab.instance().ok().filter(|i| i["master"] == KA4),
    );
    wait_rx_grows(&lab, counter(&i, "adverts_rx"), 3, Duration::from_secs(2));
    lab.assert_keepalived_content();
}

/// Case 7: VRRPv3 over IPv6 (ff02::12, link-local sources), both ways; 8.
#[test]
fn ipv6_elects_with_keepalived() {
    skip_unless_ready!();
    let router = Router {
        v6: true,
        ..Router::v3()
    };
    let mut lab = Lab::new("v6", router);
    lab.start_keepalived(100);
    lab.start_vipgate(150);
    let limit = router.master_down(100) * 4;
    lab.wait_vg_state("MASTER", limit);
    lab.wait_ka_state("BACKUP", limit);
    lab.wait_vip_on("vg", Duration::from_secs(2));
    let i = lab.instance().expect("status");
    let master = i["master"].as_str().unwrap_or("").to_string();
    assert!(master.starts_with("fe80::"), "link-local master: {i}");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));

    lab.vipgate_cli(&["vrrp", "resign", "vi"]);
    lab.wait_ka_state("MASTER", Duration::from_secs(2));
    lab.wait_vip_on("ka", Duration::from_secs(2));
    let i = lab.wait(
        "vipgate to name keepalived master",
        Duration::from_secs(2),
        || {
            lab.instance().ok().filter(|i| {
                i["master"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("fe80::") && *m != master)
            })
        },
    );
    let i = wait_rx_grows(&lab, counter(&i, "adverts_rx"), 3, Duration::from_secs(2));
    assert_eq!(i["state"], "BACKUP", "{i}");
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));
    lab.vipgate_cli(&["vrrp", "resume", "vi"]);
    lab.wait_vg_state("MASTER", router.master_down(150) * 4);
    lab.wait_vip_on("vg", Duration::from_secs(2));
    lab.assert_keepalived_content();
}

/// Case 9: malformed adverts at vipgate are dropped under their reason; the
/// daemon keeps running and stays master.
#[test]
fn malformed_adverts_are_counted_and_survived() {
    skip_unless_ready!();
    let router = Router::v3();
    let mut lab = Lab::new("bad", router);
    lab.start_keepalived(100);
    lab.start_vipgate(150);
    let limit = router.master_down(100) * 4;
    lab.wait_vg_state("MASTER", limit);
    lab.wait_ka_state("BACKUP", limit);
    let group = "224.0.0.18";
    let good = advert_v3(KA4, group, VRID, 1, &[VIP4]);

    // Control: a well-formed advert (priority 1, ignored by a master) is
    // received and not dropped, so the packets below differ from a valid
    // one only in the defect they carry.
    let before = lab.instance().expect("status");
    lab.send_raw(KA4, group, 255, std::slice::from_ref(&good));
    let i = wait_rx_grows(
        &lab,
        counter(&before, "adverts_rx"),
        1,
        Duration::from_secs(2),
    );
    assert!(drops(&i).is_empty(), "{:?}", drops(&i));

    let mut bad_checksum = good.clone();
    bad_checksum[6] ^= 0xff;
    let mut version1 = good.clone();
    version1[0] = 0x11;
    let truncated = good[..6].to_vec();
    let wrong_vrid = advert_v3(KA4, group, VRID + 1, 200, &[VIP4]);
    let mut huge_count = good.clone();
    huge_count[3] = 255;
    let cases: [(&str, u8, Vec<u8>); 5] = [
        ("bad_ttl", 64, good.clone()),
        ("bad_checksum", 255, bad_checksum),
        ("bad_version", 255, version1),
        ("truncated", 255, truncated),
        ("bad_length", 255, huge_count),
    ];
    let mut seen: Vec<(String, u64)> = Vec::new();
    for (reason, ttl, payload) in cases {
        lab.send_raw(KA4, group, ttl, &[payload]);
        let i = lab.wait(&format!("{reason} counted"), Duration::from_secs(2), || {
            lab.instance()
                .ok()
                .filter(|i| i["counters"]["dropped"][reason] == 1)
        });
        seen.push((reason.to_string(), 1));
        seen.sort();
        assert_eq!(
            drops(&i),
            seen,
            "{reason}: only the case's own reason grows"
        );
        assert!(
            lab.vipgate_running(),
            "vipgate died on {reason}{}",
            lab.dump()
        );
        assert_eq!(i["state"], "MASTER", "{reason}: {i}");
    }
    let unknown_before = lab.status().expect("status")["vrrp"]["unknown_vrid"]
        .as_u64()
        .unwrap_or(0);
    lab.send_raw(KA4, group, 255, &[wrong_vrid]);
    lab.wait("unknown_vrid counted", Duration::from_secs(2), || {
        lab.status()
            .ok()
            .filter(|s| s["vrrp"]["unknown_vrid"].as_u64() == Some(unknown_before + 1))
    });

    // Still master and advertising, keepalived still a quiet backup.
    let tx = counter(&lab.instance().expect("status"), "adverts_tx");
    let i = lab.wait(
        "adverts after the malformed ones",
        Duration::from_secs(2),
        || {
            lab.instance()
                .ok()
                .filter(|i| counter(i, "adverts_tx") >= tx + 3)
        },
    );
    assert_eq!(i["state"], "MASTER", "{i}");
    assert!(lab.vipgate_running(), "vipgate died{}", lab.dump());
    assert!(alive(lab.vipgate_pid()));
    assert_eq!(lab.ka_state().as_deref(), Some("BACKUP"));
    assert!(lab.has_vip("vg") && !lab.has_vip("ka"), "{}", lab.dump());
    lab.assert_keepalived_content();
}
