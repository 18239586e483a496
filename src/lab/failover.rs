//! `vipgate lab run --scenario failover`: two gateways in active-active
//! VRRP in front of one backend host, and a probe stream through both VIPs
//! while one gateway fails and comes back.
//!
//! Owns the failover topology (four namespaces, two bridges, policy
//! routing on the backend host), the two daemons and the backend server it
//! starts, the probe stream and the report. Builds links with `ip` (bridge
//! ports and policy rules are beyond the lab's netlink helpers). Touches
//! nothing outside its namespaces; only 198.18.0.0/15.
//!
//! ```text
//!            <lab>-cli: br0 198.18.0.2/24 (client)
//!            ports a0 ──────────────┐     ┌────────── b0
//!  <lab>-gwa vg-cli 198.18.0.1      │     │   <lab>-gwb vg-cli 198.18.0.3
//!  (vipgate) vg-srv 198.18.20.1     │     │   (vipgate) vg-srv 198.18.20.4
//!            ports a1 ──────────────┘     └────────── b1
//!            <lab>-srv: br0 198.18.20.2/24 + .3/24 (backend, web80-82)
//!
//!  vip1 198.18.10.10 + vip1-gw 198.18.20.254: gw-a 150, gw-b 100
//!  vip2 198.18.10.11 + vip2-gw 198.18.20.253: gw-a 100, gw-b 150
//!  backend: from .2 via .254 (table 1), from .3 via .253 (table 2)
//! ```
//!
//! Phases, each measured with a 1 kpps UDP echo stream per VIP: (a)
//! SIGKILL of gw-a's daemon, restart, preemption (with the vipgate pair,
//! 8 kept-alive TCP connections to vip1 must answer after the failover
//! and after the preemption: each new master picks them up mid-flow); (b) gw-a's client link
//! down, up, preemption; (c) `vrrp resign vip1` on gw-a (no loss
//! expected), `vrrp resume`, preemption.
//!
//! `--scenario failover-compare` runs the same topology twice in one go
//! with a 10 kpps stream per VIP: first with the vipgate pair, then with a
//! keepalived pair and kernel NAT (see `keepalived.rs`), each after a
//! no-event baseline, and prints both tables side by side.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::keepalived::{self, Keepalived};
use super::probe::{
    achieved_rate, fmt_rate, gaps, payload, sleep_unless_interrupted, udp_rcvbuf_errors, Flow, Gap,
    KeptConnections, Probe,
};
use crate::netns::NetNs;

/// One gateway's configuration; see the file for the placeholders.
pub const GW_TEMPLATE: &str = include_str!("failover-gw.toml");

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The two VIPs, in report order.
pub const VIPS: [(&str, Ipv4Addr); 2] = [
    ("vip1", Ipv4Addr::new(198, 18, 10, 10)),
    ("vip2", Ipv4Addr::new(198, 18, 10, 11)),
];
/// The backend host's address for each VIP's services.
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 20, 2), Ipv4Addr::new(198, 18, 20, 3)];
/// The backend link's VIPs the backend host routes each address's replies
/// through.
const BACKEND_GWS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 18, 20, 254),
    Ipv4Addr::new(198, 18, 20, 253),
];
/// The UDP echo service port on each VIP.
const ECHO_PORT: u16 = 7;
/// Probe rate per VIP of `--scenario failover` (1 kpps).
const PROBE_RATE: u32 = 1_000;
/// Probe rate per VIP of `--scenario failover-compare` (10 kpps).
const COMPARE_RATE: u32 = 10_000;
/// The no-event baseline of the comparison.
const BASELINE: Duration = Duration::from_secs(2);
/// An unplanned loss window longer than this fails the phase.
const WINDOW_LIMIT: Duration = Duration::from_secs(3);
/// How long a wait for a VRRP state lasts at most.
const STATE_WAIT: Duration = Duration::from_secs(8);
/// Probe traffic before and after each event.
const SETTLE: Duration = Duration::from_millis(600);

/// Which VRRP implementation and dataplane the two gateways run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// vipgate: VRRP and the userspace NAT dataplane in one daemon.
    Vipgate,
    /// keepalived 2.2 with kernel VIPs, and the kernel's NAT (nftables
    /// DNAT, conntrack) forwarding.
    Keepalived,
}

impl Pair {
    fn label(self) -> &'static str {
        match self {
            Pair::Vipgate => "vipgate",
            Pair::Keepalived => "keepalived",
        }
    }
}

/// The two gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gw {
    A,
    B,
}

impl Gw {
    pub const BOTH: [Gw; 2] = [Gw::A, Gw::B];

    pub fn label(self) -> &'static str {
        match self {
            Gw::A => "gw-a",
            Gw::B => "gw-b",
        }
    }

    pub(super) fn suffix(self) -> &'static str {
        match self {
            Gw::A => "gwa",
            Gw::B => "gwb",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// (vip1, vip2) priorities: each gateway prefers one VIP.
    fn priorities(self) -> (u8, u8) {
        match self {
            Gw::A => (150, 100),
            Gw::B => (100, 150),
        }
    }

    fn client_addr(self) -> &'static str {
        match self {
            Gw::A => "198.18.0.1/24",
            Gw::B => "198.18.0.3/24",
        }
    }

    fn backend_addr(self) -> &'static str {
        match self {
            Gw::A => "198.18.20.1/24",
            Gw::B => "198.18.20.4/24",
        }
    }

    /// The gateway each instance should end on.
    fn preferred(instance: &str) -> Gw {
        if instance.starts_with("vip1") {
            Gw::A
        } else {
            Gw::B
        }
    }
}

/// The configuration of gateway `gw`.
pub fn gateway_config(gw: Gw, socket: &Path, workers: u16) -> String {
    let (p1, p2) = gw.priorities();
    GW_TEMPLATE
        .replace("@NODE@", gw.label())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@WORKERS@", &workers.to_string())
        .replace("@VIP1_PRIORITY@", &p1.to_string())
        .replace("@VIP2_PRIORITY@", &p2.to_string())
}

/// Namespace names of a failover lab (for `lab down`).
pub fn namespace_names(name: &str) -> Vec<String> {
    ["cli", "gwa", "gwb", "srv"]
        .iter()
        .map(|s| format!("{name}-{s}"))
        .collect()
}

/// `lab run --scenario failover`.
pub fn run(name: &str, workers: u16) -> Result<ExitCode> {
    let reports = run_pair(name, workers, Pair::Vipgate, PROBE_RATE, false)?;
    print_summary(&reports);
    if reports.iter().all(|r| r.ok) {
        println!("lab {name}: PASS: both VIPs served throughout except for the windows above; preferred masters at the end");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab {name}: FAIL (see above)");
        Ok(ExitCode::FAILURE)
    }
}

/// Builds the lab with `pair`, runs the phases with a `rate` stream per
/// VIP, tears the lab down; the reports.
/// `baseline`: a no-event phase first.
fn run_pair(
    name: &str,
    workers: u16,
    pair: Pair,
    rate: u32,
    baseline: bool,
) -> Result<Vec<Report>> {
    let mut lab = FailoverLab::up(name, workers, pair, rate)?;
    println!("{}", lab.describe());
    let outcome = scenario(&mut lab, baseline);
    if super::interrupted() {
        drop(lab);
        bail!("interrupted; the lab was torn down");
    }
    drop(lab);
    outcome
}

/// `lab run --scenario failover-compare`: the vipgate pair, then the
/// keepalived pair, each with a baseline and the three phases at 10 kpps
/// per VIP; both tables side by side.
pub fn run_compare(name: &str, workers: u16) -> Result<ExitCode> {
    let mut all = Vec::new();
    for pair in [Pair::Vipgate, Pair::Keepalived] {
        println!(
            "\n=============== {} pair, {} kpps per VIP ===============",
            pair.label(),
            COMPARE_RATE / 1000
        );
        let reports = run_pair(name, workers, pair, COMPARE_RATE, true)?;
        print_summary(&reports);
        all.push(reports);
    }
    let keepalived = all.pop().unwrap_or_default();
    let vipgate = all.pop().unwrap_or_default();
    print_comparison(&vipgate, &keepalived);
    // The verdict is vipgate's; keepalived's problems are part of the
    // figure (printed above), as long as all its phases ran.
    let keepalived_ran = keepalived.len() == 5 && keepalived.iter().all(|r| r.sent > 0);
    if vipgate.iter().all(|r| r.ok) && keepalived_ran {
        println!("lab {name}: PASS: the vipgate pair served both VIPs throughout except for the windows above, its planned resign lost nothing; the keepalived pair ran every phase");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab {name}: FAIL (see above)");
        Ok(ExitCode::FAILURE)
    }
}

// ------------------------------------------------------------- the lab

/// The running failover lab. Dropping it ends its processes by pid and
/// deletes its namespaces.
pub struct FailoverLab {
    name: String,
    client: NetNs,
    gws: [NetNs; 2],
    backend: NetNs,
    dir: PathBuf,
    workers: u16,
    pair: Pair,
    /// Probe datagrams per second per VIP.
    rate: u32,
    backend_proc: Option<Child>,
    daemons: [Option<Child>; 2],
    keepaliveds: [Option<Keepalived>; 2],
}

impl FailoverLab {
    fn up(name: &str, workers: u16, pair: Pair, rate: u32) -> Result<FailoverLab> {
        super::check_name(name)?;
        let dir = super::lab_dir(name);
        if dir.exists()
            || NetNs::list_named()?
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        {
            bail!("a lab named {name} is already up; run `vipgate lab down --name {name}` first");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = (|| -> Result<(NetNs, [NetNs; 2], NetNs)> {
            let names = namespace_names(name);
            Ok((
                NetNs::create(&names[0])?,
                [NetNs::create(&names[1])?, NetNs::create(&names[2])?],
                NetNs::create(&names[3])?,
            ))
        })();
        let (client, gws, backend) = match made {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.context("creating the lab's namespaces"));
            }
        };
        let mut lab = FailoverLab {
            name: name.into(),
            client,
            gws,
            backend,
            dir,
            workers,
            pair,
            rate,
            backend_proc: None,
            daemons: [None, None],
            keepaliveds: [None, None],
        };
        lab.wire().context("building the failover lab network")?;
        if pair == Pair::Keepalived {
            lab.kernel_nat()?;
        }
        lab.start_backend()?;
        if rate > PROBE_RATE {
            lab.backend_realtime();
        }
        for gw in Gw::BOTH {
            lab.start_daemon(gw)?;
        }
        Ok(lab)
    }

    fn ns_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    fn gw_ns(&self, gw: Gw) -> String {
        self.ns_name(gw.suffix())
    }

    fn socket(&self, gw: Gw) -> PathBuf {
        self.dir.join(format!("{}.sock", gw.label()))
    }

    /// Runs `ip -n NS ARGS`.
    fn ip(&self, ns: &str, args: &str) -> Result<()> {
        super::ip(ns, args)
    }

    /// Bridges, veth links, addresses, routes and policy rules.
    fn wire(&self) -> Result<()> {
        let cli = self.ns_name("cli");
        let srv = self.ns_name("srv");
        // A fixed MAC: a bridge otherwise takes its lowest port's, and a
        // port going down (phase b) would change the host's address.
        for (ns, mac) in [(&cli, "02:00:c6:12:00:02"), (&srv, "02:00:c6:12:14:02")] {
            self.ip(
                ns,
                &format!("link add br0 address {mac} type bridge stp_state 0 mcast_snooping 0"),
            )?;
        }
        for gw in Gw::BOTH {
            let ns = self.gw_ns(gw);
            let p = match gw {
                Gw::A => "a",
                Gw::B => "b",
            };
            self.ip(
                &ns,
                &format!("link add vg-cli type veth peer name {p}0 netns {cli}"),
            )?;
            self.ip(
                &ns,
                &format!("link add vg-srv type veth peer name {p}1 netns {srv}"),
            )?;
            self.ip(&cli, &format!("link set {p}0 master br0 up"))?;
            self.ip(&srv, &format!("link set {p}1 master br0 up"))?;
            self.ip(&ns, &format!("addr add {} dev vg-cli", gw.client_addr()))?;
            self.ip(&ns, &format!("addr add {} dev vg-srv", gw.backend_addr()))?;
            self.ip(&ns, "link set vg-cli up")?;
            self.ip(&ns, "link set vg-srv up")?;
        }
        self.ip(&cli, &format!("addr add {CLIENT}/24 dev br0"))?;
        self.ip(&cli, "link set br0 up")?;
        // The VIPs are on the client's link: it resolves them itself, and
        // the VRRP master's dataplane answers.
        for (_, vip) in VIPS {
            self.ip(&cli, &format!("route add {vip}/32 dev br0 scope link"))?;
        }
        for (i, (addr, via)) in BACKENDS.iter().zip(BACKEND_GWS).enumerate() {
            let table = i + 1;
            self.ip(&srv, &format!("addr add {addr}/24 dev br0"))?;
            self.ip(&srv, &format!("rule add from {addr} table {table}"))?;
            if i == 0 {
                self.ip(&srv, "link set br0 up")?;
            }
            self.ip(
                &srv,
                &format!("route add default via {via} dev br0 onlink table {table}"),
            )?;
        }
        // A VIP moves with a gratuitous ARP: let it replace a fresh
        // neighbour entry at once (locktime defaults to 1 s).
        for ns in [&self.client, &self.backend] {
            ns.run(|| fs::write("/proc/sys/net/ipv4/neigh/br0/locktime", "0"))??;
        }
        Ok(())
    }

    fn start_backend(&mut self) -> Result<()> {
        let addresses = BACKENDS.map(std::net::IpAddr::V4);
        let child = super::start_web_servers(
            &self.backend,
            &self.dir.join("backend.log"),
            &addresses,
            &addresses,
        )?;
        self.record(child.id())?;
        self.backend_proc = Some(child);
        Ok(())
    }

    /// net.ipv4.ip_forward in `gw`'s namespace.
    fn set_forwarding(&self, gw: Gw, on: bool) -> Result<()> {
        let value = if on { "1" } else { "0" };
        self.gws[gw.index()]
            .run(|| fs::write("/proc/sys/net/ipv4/ip_forward", value))?
            .with_context(|| format!("ip_forward={value} on {}", gw.label()))
    }

    /// keepalived pair only: which gateway the client's and the backend's
    /// neighbour entries send each VIP's traffic to (the kernel forwards
    /// on both gateways, so this, not the VRRP state, decides the path).
    fn print_neighbours(&self) {
        if self.pair != Pair::Keepalived {
            return;
        }
        let macs: Vec<(String, &str)> = Gw::BOTH
            .iter()
            .flat_map(|gw| {
                ["vg-cli", "vg-srv"].map(|dev| (self.mac_of(&self.gw_ns(*gw), dev), gw.label()))
            })
            .collect();
        let who = |mac: Option<String>| {
            mac.and_then(|m| macs.iter().find(|(g, _)| *g == m).map(|(_, l)| *l))
                .unwrap_or("?")
        };
        let (cli, srv) = (self.ns_name("cli"), self.ns_name("srv"));
        let parts: Vec<String> = VIPS
            .iter()
            .map(|(n, a)| (*n, *a, &cli))
            .chain([
                ("vip1-gw", BACKEND_GWS[0], &srv),
                ("vip2-gw", BACKEND_GWS[1], &srv),
            ])
            .map(|(n, a, ns)| format!("{n}->{}", who(self.neighbour_mac(ns, a))))
            .collect();
        println!(
            "  neighbour entries (client, backend): {}",
            parts.join(", ")
        );
    }

    /// `ip -n NS -o link show DEV`'s MAC.
    fn mac_of(&self, ns: &str, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        word_after(&out, "link/ether").unwrap_or_default()
    }

    fn neighbour_mac(&self, ns: &str, addr: Ipv4Addr) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", ns, "neigh", "show", &addr.to_string()])
            .output()
            .ok()?;
        word_after(&String::from_utf8_lossy(&out.stdout), "lladdr")
    }

    /// The keepalived pair's forwarding: kernel NAT in both gateways.
    fn kernel_nat(&self) -> Result<()> {
        let services: Vec<_> = VIPS
            .iter()
            .zip(BACKENDS)
            .map(|((_, vip), backend)| {
                (
                    std::net::SocketAddrV4::new(*vip, ECHO_PORT),
                    std::net::SocketAddrV4::new(backend, 80),
                )
            })
            .collect();
        let ruleset = keepalived::nat_ruleset(&services);
        for gw in Gw::BOTH {
            keepalived::kernel_nat(&self.gws[gw.index()], &self.gw_ns(gw), &ruleset)
                .with_context(|| format!("kernel NAT on {}", gw.label()))?;
        }
        Ok(())
    }

    /// At 10 kpps on two cores the backend's echo threads can wait for a
    /// core longer than their socket buffer lasts (~18 ms): SCHED_FIFO 1
    /// for the backend process (its threads block in recv between
    /// datagrams). A failure is only reported.
    fn backend_realtime(&self) {
        let Some(pid) = self.backend_proc.as_ref().map(Child::id) else {
            return;
        };
        let ok = Command::new("chrt")
            .args(["-a", "-f", "-p", "1", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!(
                "note: chrt -f 1 on the backend server failed; its socket drops are counted below"
            );
        }
    }

    /// Starts `gw`'s VRRP daemon (vipgate or keepalived).
    fn start_daemon(&mut self, gw: Gw) -> Result<()> {
        match self.pair {
            Pair::Vipgate => self.start_vipgate(gw),
            Pair::Keepalived => self.start_keepalived(gw),
        }
    }

    /// Starts keepalived in `gw`'s namespace; returns once its VRRP
    /// process runs.
    fn start_keepalived(&mut self, gw: Gw) -> Result<()> {
        let config_path = self.dir.join(format!("{}.conf", gw.label()));
        fs::write(
            &config_path,
            keepalived::config(gw.label(), gw.priorities()),
        )?;
        let k = Keepalived::start(&self.gw_ns(gw), &config_path, &self.dir, gw.label())
            .with_context(|| format!("starting {}'s keepalived", gw.label()))?;
        self.record(k.pid())?;
        self.keepaliveds[gw.index()] = Some(k);
        Ok(())
    }

    /// Starts `vipgate run` in `gw`'s namespace and waits until it answers.
    fn start_vipgate(&mut self, gw: Gw) -> Result<()> {
        let config_path = self.dir.join(format!("{}.toml", gw.label()));
        fs::write(
            &config_path,
            gateway_config(gw, &self.socket(gw), self.workers),
        )?;
        let log_path = self.dir.join(format!("{}.log", gw.label()));
        let child = super::start_daemon(
            &self.gws[gw.index()],
            &config_path,
            &log_path,
            &self.socket(gw),
            gw.label(),
        )?;
        self.record(child.id())?;
        self.daemons[gw.index()] = Some(child);
        Ok(())
    }

    /// SIGKILL for `gw`'s daemon (no resign, no restore); waits for it.
    /// keepalived: both of its processes.
    fn kill_daemon(&mut self, gw: Gw) {
        if let Some(mut child) = self.daemons[gw.index()].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut k) = self.keepaliveds[gw.index()].take() {
            k.crash();
        }
    }

    fn record(&self, pid: u32) -> Result<()> {
        let path = self.dir.join("pids");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("{pid}\n"));
        fs::write(&path, text)?;
        Ok(())
    }

    fn request(&self, gw: Gw, request: &Value) -> Result<Value> {
        crate::control::request(&self.socket(gw), request)
    }

    fn status(&self, gw: Gw) -> Option<Value> {
        self.request(gw, &json!({"cmd": "status"})).ok()
    }

    /// Instance name -> state on each gateway ("-" when it does not answer).
    fn states(&self) -> BTreeMap<String, [String; 2]> {
        let mut out: BTreeMap<String, [String; 2]> = BTreeMap::new();
        for gw in Gw::BOTH {
            for (name, state) in self.gw_states(gw) {
                let entry = out
                    .entry(name)
                    .or_insert_with(|| ["-".to_string(), "-".to_string()]);
                entry[gw.index()] = state;
            }
        }
        out
    }

    /// (instance, state) of `gw`: vipgate's status, or keepalived's log
    /// while it runs ("MASTER", "BACKUP", "FAULT").
    fn gw_states(&self, gw: Gw) -> Vec<(String, String)> {
        if self.pair == Pair::Keepalived {
            return self.keepaliveds[gw.index()]
                .as_ref()
                .map(|k| k.states().into_iter().collect())
                .unwrap_or_default();
        }
        let Some(status) = self.status(gw) else {
            return Vec::new();
        };
        let instances = status["vrrp"]["instances"].as_array().cloned();
        instances
            .unwrap_or_default()
            .iter()
            .map(|inst| {
                let name = inst["name"].as_str().unwrap_or("?").to_string();
                let state = inst["state"].as_str().unwrap_or("?").to_string();
                (name, state)
            })
            .collect()
    }

    /// "vip1 gw-a, vip1-gw gw-a, ...": who masters what; "none" or "both"
    /// when not exactly one gateway does.
    fn masters_line(&self) -> (String, bool) {
        let mut parts = Vec::new();
        let mut preferred = true;
        let states = self.states();
        for (name, s) in &states {
            let masters: Vec<&str> = Gw::BOTH
                .iter()
                .filter(|g| s[g.index()] == "MASTER")
                .map(|g| g.label())
                .collect();
            let who = match masters.as_slice() {
                [one] => one.to_string(),
                [] => "none".to_string(),
                _ => "BOTH".to_string(),
            };
            preferred &= masters == [Gw::preferred(name).label()];
            parts.push(format!("{name} {who}"));
        }
        preferred &= states.len() == 4;
        (parts.join(", "), preferred)
    }

    /// Dataplane drops and ring drops per reason, summed over workers.
    fn drops(&self, gw: Gw) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Some(status) = self.status(gw) else {
            return out;
        };
        for w in status["workers"].as_array().cloned().unwrap_or_default() {
            let counters = w["drops"].as_object().into_iter().flatten().chain(
                w["counters"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "rx_ring_drops" | "tx_errors" | "kernel_passed")
                    }),
            );
            for (k, v) in counters {
                *out.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        out
    }

    /// Connections `gw`'s dataplane picked up mid-flow (0 if it cannot
    /// tell).
    fn picked_up(&self, gw: Gw) -> u64 {
        self.status(gw)
            .map_or(0, |s| super::worker_counter(&s, "conn_picked_up"))
    }

    /// Waits until `gw` reports `instance` as MASTER; the time it took.
    fn wait_master(&self, gw: Gw, instance: &str) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < STATE_WAIT && !super::interrupted() {
            let state = self.states().get(instance).map(|s| s[gw.index()].clone());
            if state.as_deref() == Some("MASTER") {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn describe(&self) -> String {
        let pair = match self.pair {
            Pair::Vipgate => String::new(),
            Pair::Keepalived => format!(
                "\ngateways: keepalived 2.2 ({KA}) with kernel VIPs, same VRIDs, priorities, \
                 100 ms adverts, sync groups and tracked links; forwarding and NAT by the kernel \
                 (nftables DNAT VIP:7/udp -> backend:80, ip_forward=1; LVS/IPVS is not \
                 available here: no ip_vs module)",
                KA = keepalived::KEEPALIVED
            ),
        };
        let text = format!(
            "lab {n}: namespaces {n}-cli (client), {n}-gwa (gw-a), {n}-gwb (gw-b), {n}-srv (backend)\n\
             vip1 198.18.10.10 (gw-a 150 / gw-b 100), vip2 198.18.10.11 (gw-a 100 / gw-b 150), \
             adverts every 100 ms; backend-side VIPs .20.254 / .20.253 follow them\n\
             logs and configs in {}",
            self.dir.display(),
            n = self.name,
        );
        text + &pair
    }
}

impl Drop for FailoverLab {
    fn drop(&mut self) {
        // SIGTERM to everything at once (the daemons resign and drain for
        // their grace period in parallel), then wait, then SIGKILL.
        let mut children: Vec<Child> = self
            .daemons
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.backend_proc.take())
            .collect();
        for c in &children {
            super::terminate_pid(c.id() as i32);
        }
        // keepalived: SIGTERM, wait, both processes SIGKILLed if needed.
        for k in self.keepaliveds.iter_mut().filter_map(Option::take) {
            drop(k);
        }
        super::reap_by(&mut children, Instant::now() + Duration::from_secs(6));
        // The NetNs values delete their namespaces when dropped after this.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------- phases

/// One phase's measurements.
struct Report {
    pair: Pair,
    label: &'static str,
    planned: bool,
    /// The sender's achieved rate per VIP (datagrams per second).
    rate: f64,
    /// Datagrams the client's and the backend's kernels dropped for full
    /// socket buffers (the lab hosts, not the gateways).
    host_drops: u64,
    /// (time from the stream's start, what happened).
    events: Vec<(Duration, String)>,
    /// Per VIP: datagrams sent and the gaps.
    sent: usize,
    gaps: [Vec<Gap>; 2],
    masters: Vec<(String, String)>,
    ok: bool,
    problems: Vec<String>,
}

impl Report {
    fn lost(&self, vip: usize) -> usize {
        self.gaps[vip].iter().map(|g| g.lost).sum()
    }

    /// The longest window of a gap that began with or after the phase's
    /// first event (the stream's start is not one).
    fn longest(&self, vip: usize) -> Option<Duration> {
        self.gaps[vip]
            .iter()
            .filter(|g| !self.before_event(g))
            .filter_map(|g| g.window)
            .max()
    }

    /// Datagrams lost in gaps that began before the phase's first event:
    /// the path was broken by what came before (reported, not a window).
    fn lost_before_event(&self, vip: usize) -> usize {
        self.gaps[vip]
            .iter()
            .filter(|g| self.before_event(g))
            .map(|g| g.lost)
            .sum()
    }

    fn before_event(&self, g: &Gap) -> bool {
        match self.events.get(1) {
            Some((first, _)) => g.at + Duration::from_millis(50) < *first,
            None => false,
        }
    }
}

/// A phase in progress: the probe and the log of events.
struct Phase {
    label: &'static str,
    planned: bool,
    /// Any loss fails the phase: vipgate's planned resign, and the
    /// no-event baseline.
    lossless: bool,
    probe: Probe,
    events: Vec<(Duration, String)>,
    masters: Vec<(String, String)>,
    problems: Vec<String>,
    /// Drop counters of each gateway at the start.
    drops_before: [BTreeMap<String, u64>; 2],
    /// UDP socket-buffer drops of the client and the backend host at the
    /// start.
    rcvbuf_before: [u64; 2],
}

impl Phase {
    fn start(lab: &FailoverLab, label: &'static str, planned: bool) -> Result<Phase> {
        println!("\n{label}");
        let flows = VIPS.map(|(_, vip)| Flow::to(SocketAddr::from((vip, ECHO_PORT))));
        let probe = Probe::start(&lab.client, lab.rate, &flows)?;
        let mut phase = Phase {
            label,
            planned,
            lossless: planned && lab.pair == Pair::Vipgate,
            probe,
            events: Vec::new(),
            masters: Vec::new(),
            problems: Vec::new(),
            drops_before: Gw::BOTH.map(|g| lab.drops(g)),
            rcvbuf_before: [&lab.client, &lab.backend].map(udp_rcvbuf_errors),
        };
        phase.event(format!(
            "probe stream started ({} per VIP)",
            fmt_rate(f64::from(lab.rate))
        ));
        Ok(phase)
    }

    fn event(&mut self, what: impl Into<String>) {
        let at = self.probe.started.elapsed();
        let what = what.into();
        println!("  +{:>6.3}s  {what}", at.as_secs_f64());
        self.events.push((at, what));
    }

    fn snapshot(&mut self, lab: &FailoverLab, when: &str) {
        let (line, _) = lab.masters_line();
        println!("  masters {when}: {line}");
        self.masters.push((when.to_string(), line));
        lab.print_neighbours();
    }

    fn wait_master(&mut self, lab: &FailoverLab, gw: Gw, instance: &str, since: &str) {
        match lab.wait_master(gw, instance) {
            Some(t) => self.event(format!(
                "{} masters {instance} (status; {} ms after {since})",
                gw.label(),
                t.as_millis()
            )),
            None => self.problems.push(format!(
                "{} did not become master of {instance} within {} s after {since}",
                gw.label(),
                STATE_WAIT.as_secs()
            )),
        }
    }

    fn settle(&self) {
        sleep_unless_interrupted(SETTLE);
    }

    fn finish(mut self, lab: &FailoverLab) -> Report {
        let (line, preferred) = lab.masters_line();
        println!("  masters at the end: {line}");
        self.masters.push(("at the end".into(), line));
        lab.print_neighbours();
        if !preferred {
            self.problems
                .push("the VIPs did not end on their preferred gateways".into());
        }
        let start = self.probe.started;
        let max = self.probe.max;
        let traces = self.probe.stop();
        for gw in Gw::BOTH {
            let before = &self.drops_before[gw.index()];
            let grown: Vec<String> = lab
                .drops(gw)
                .into_iter()
                .filter_map(|(k, v)| {
                    // A restarted daemon counts from zero.
                    let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
                    (d > 0).then(|| format!("{k} {d}"))
                })
                .collect();
            if !grown.is_empty() {
                println!("  {} dataplane drops: {}", gw.label(), grown.join(", "));
            }
        }
        let rcvbuf = [&lab.client, &lab.backend]
            .map(udp_rcvbuf_errors)
            .iter()
            .zip(self.rcvbuf_before)
            .map(|(now, before)| now.saturating_sub(before))
            .collect::<Vec<_>>();
        if rcvbuf.iter().any(|n| *n > 0) {
            println!(
                "  UDP socket-buffer drops (lab hosts, not the gateways): client {}, backend {}",
                rcvbuf[0], rcvbuf[1]
            );
        }
        let sent = traces.first().map_or(0, |t| t.sent.len());
        let rate = traces.first().map_or(0.0, |t| achieved_rate(&t.sent));
        if sent >= max {
            self.problems.push(format!(
                "the probe stream hit its cap of {max} datagrams; the phase ran too long"
            ));
        }
        let gaps = [0, 1].map(|i| {
            traces
                .get(i)
                .map(|t| gaps(start, &t.sent, &t.replies))
                .unwrap_or_default()
        });
        for (i, (vip, _)) in VIPS.iter().enumerate() {
            for g in &gaps[i] {
                match g.window {
                    None => self.problems.push(format!(
                        "{vip}: {} datagrams from +{:.3}s got no reply, none after them",
                        g.lost,
                        g.at.as_secs_f64()
                    )),
                    Some(w) if w > WINDOW_LIMIT => self.problems.push(format!(
                        "{vip}: loss window {} ms is over {} s",
                        w.as_millis(),
                        WINDOW_LIMIT.as_secs()
                    )),
                    Some(_) => {}
                }
            }
        }
        let mut report = Report {
            pair: lab.pair,
            label: self.label,
            planned: self.planned,
            rate,
            host_drops: rcvbuf.iter().sum(),
            events: self.events,
            sent,
            gaps,
            masters: self.masters,
            ok: false,
            problems: self.problems,
        };
        if self.lossless {
            for (i, (vip, _)) in VIPS.iter().enumerate() {
                // A planned switchover is judged from its first event on:
                // what was lost before it (a ring overrun while the
                // machine is busy) is reported above, not the switchover's.
                let (what, lost) = if report.planned {
                    let lost = report.lost(i) - report.lost_before_event(i);
                    ("planned switchover", lost)
                } else {
                    ("no-event baseline (the probe itself)", report.lost(i))
                };
                if lost > 0 {
                    report
                        .problems
                        .push(format!("{vip}: {what} lost {lost} datagrams"));
                }
            }
        }
        if sent == 0 {
            report.problems.push("the probe sent nothing".into());
        }
        report.ok = report.problems.is_empty();
        print_report(&report);
        report
    }
}

/// The word after `key` in `text`.
fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(str::to_string)
}

fn scenario(lab: &mut FailoverLab, baseline: bool) -> Result<Vec<Report>> {
    // Both gateways start as backup; wait for the preferred masters.
    for (instance, gw) in [("vip1", Gw::A), ("vip2", Gw::B)] {
        if lab.wait_master(gw, instance).is_none() {
            bail!(
                "{} did not become master of {instance} after start",
                gw.label()
            );
        }
    }
    // Let the client resolve both VIPs before measuring.
    warm_up(lab)?;
    let mut reports = Vec::new();
    type Step = fn(&mut FailoverLab) -> Result<Report>;
    let mut steps: Vec<Step> = Vec::new();
    if baseline {
        steps.push(phase_baseline);
    }
    steps.push(phase_kill);
    if lab.pair == Pair::Keepalived {
        steps.push(phase_crash);
    }
    steps.extend([phase_link_down as Step, phase_resign]);
    for step in steps {
        if super::interrupted() {
            break;
        }
        reports.push(step(lab)?);
    }
    Ok(reports)
}

fn warm_up(lab: &FailoverLab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = lab.client.run(move || {
        VIPS.iter().all(|(_, vip)| {
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 512];
            while Instant::now() < deadline {
                let _ = s.send_to(payload(0, 0).as_bytes(), (*vip, ECHO_PORT));
                if s.recv(&mut buf).is_ok() {
                    return true;
                }
            }
            false
        })
    })?;
    if !answered {
        bail!("the VIPs did not answer the client's UDP echo before the first phase");
    }
    Ok(())
}

/// (0) no event: the probe itself must lose nothing.
fn phase_baseline(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(lab, "(0) baseline: no event", false)?;
    p.lossless = true;
    sleep_unless_interrupted(BASELINE);
    p.event("baseline over");
    Ok(p.finish(lab))
}

/// (a) SIGKILL of gw-a's daemon, restart, preemption.
fn phase_kill(lab: &mut FailoverLab) -> Result<Report> {
    let label = match lab.pair {
        Pair::Vipgate => "(a) gw-a's daemon killed with SIGKILL",
        Pair::Keepalived => "(a) gw-a's keepalived killed with SIGKILL (kernel forwards on)",
    };
    kill_and_restart(lab, label, false)
}

/// (a+) keepalived only: SIGKILL of gw-a's keepalived with forwarding
/// turned off at once, as when the daemon that dies is also the
/// dataplane (vipgate's case in (a)); forwarding back on, restart.
fn phase_crash(lab: &mut FailoverLab) -> Result<Report> {
    let label = "(a+) gw-a's keepalived SIGKILL + ip_forward=0 (dataplane dies too)";
    kill_and_restart(lab, label, true)
}

fn kill_and_restart(
    lab: &mut FailoverLab,
    label: &'static str,
    forwarding_off: bool,
) -> Result<Report> {
    let daemon = lab.pair.label();
    let mut p = Phase::start(lab, label, false)?;
    p.settle();
    // vipgate: established TCP connections to vip1 go on across the
    // failover and the preemption back (each new master picks them up
    // mid-flow on the backend Maglev gives them).
    let mut tcp = match lab.pair {
        Pair::Vipgate => Some(KeptConnections::open(
            &lab.client,
            SocketAddr::from((VIPS[0].1, 80)),
            KEPT_CONNECTIONS,
        )?),
        Pair::Keepalived => None,
    };
    let picked_before = Gw::BOTH.map(|g| lab.picked_up(g));
    p.event(format!("gw-a: SIGKILL to {daemon}"));
    lab.kill_daemon(Gw::A);
    if forwarding_off {
        lab.set_forwarding(Gw::A, false)?;
        p.event("gw-a: keepalived reaped, ip_forward=0");
    } else {
        p.event(format!("gw-a: {daemon} reaped"));
    }
    p.wait_master(lab, Gw::B, "vip1", "the reaping");
    p.settle();
    p.snapshot(lab, "after the failure");
    let after_failover = tcp.as_mut().map(|t| t.request_all());
    if forwarding_off {
        lab.set_forwarding(Gw::A, true)?;
        p.event("gw-a: ip_forward=1");
    }
    p.event(format!("gw-a: {daemon} restarting"));
    let restarted = lab.start_daemon(Gw::A);
    match restarted {
        Ok(()) => {
            p.event(match lab.pair {
                Pair::Vipgate => "gw-a: vipgate answers on its control socket",
                Pair::Keepalived => "gw-a: keepalived's VRRP process runs",
            });
            p.wait_master(lab, Gw::A, "vip1", "the restart");
        }
        Err(e) => p.problems.push(format!(
            "gw-a's daemon did not restart after SIGKILL: {e:#}"
        )),
    }
    p.settle();
    if let (Some(t), Some(failed)) = (tcp.as_mut(), after_failover) {
        let after_preemption = t.request_all();
        // gw-a restarted with an empty table: its count is all new.
        let picked = [
            lab.picked_up(Gw::A),
            lab.picked_up(Gw::B).saturating_sub(picked_before[1]),
        ];
        println!(
            "  TCP: {KEPT_CONNECTIONS} connections to vip1 kept open: answered after the failover {}, \
             after the preemption {}; picked up mid-flow by gw-b {}, by the restarted gw-a {}",
            KEPT_CONNECTIONS - failed.len(),
            KEPT_CONNECTIONS - after_preemption.len(),
            picked[1],
            picked[0]
        );
        for (when, failed) in [("failover", &failed), ("preemption", &after_preemption)] {
            if !failed.is_empty() {
                p.problems.push(format!(
                    "TCP connections that did not go on after the {when}: {}",
                    failed.join(", ")
                ));
            }
        }
        println!(
            "RESULT phase=a_tcp connections={KEPT_CONNECTIONS} failed_after_failover={} \
             failed_after_preemption={} picked_up_gwb={} picked_up_gwa={}",
            failed.len(),
            after_preemption.len(),
            picked[1],
            picked[0]
        );
    }
    Ok(p.finish(lab))
}

/// TCP connections phase (a) keeps open across the failure (vipgate pair).
const KEPT_CONNECTIONS: usize = 8;

/// (b) gw-a's client link down, then up.
fn phase_link_down(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(lab, "(b) gw-a's client link down, then up", false)?;
    let ns = lab.gw_ns(Gw::A);
    p.settle();
    lab.ip(&ns, "link set vg-cli down")?;
    p.event("gw-a: ip link set vg-cli down");
    p.wait_master(lab, Gw::B, "vip1", "link down");
    p.settle();
    p.snapshot(lab, "with the link down");
    lab.ip(&ns, "link set vg-cli up")?;
    p.event("gw-a: ip link set vg-cli up");
    p.wait_master(lab, Gw::A, "vip1", "link up");
    p.settle();
    Ok(p.finish(lab))
}

/// (c) planned: `vrrp resign vip1` on gw-a, then `vrrp resume vip1`.
/// keepalived has no resign command: SIGTERM (it sends priority 0 for
/// every instance it masters and removes its VIPs), then a restart, as
/// operators hand over with it.
fn phase_resign(lab: &mut FailoverLab) -> Result<Report> {
    if lab.pair == Pair::Keepalived {
        return phase_keepalived_stop(lab);
    }
    let mut p = Phase::start(
        lab,
        "(c) planned: vrrp resign vip1 on gw-a, then resume",
        true,
    )?;
    p.settle();
    let r = lab.request(Gw::A, &json!({"cmd": "vrrp.resign", "instance": "vip1"}));
    match r {
        Ok(v) => p.event(format!(
            "gw-a: vrrp resign vip1 (grace {} ms)",
            v["grace_ms"]
        )),
        Err(e) => p.problems.push(format!("vrrp resign vip1 failed: {e:#}")),
    }
    p.wait_master(lab, Gw::B, "vip1", "the resign");
    p.settle();
    p.snapshot(lab, "after the resign");
    match lab.request(Gw::A, &json!({"cmd": "vrrp.resume", "instance": "vip1"})) {
        Ok(_) => p.event("gw-a: vrrp resume vip1"),
        Err(e) => p.problems.push(format!("vrrp resume vip1 failed: {e:#}")),
    }
    p.wait_master(lab, Gw::A, "vip1", "the resume");
    p.settle();
    Ok(p.finish(lab))
}

/// (c) for keepalived: SIGTERM on gw-a, then restart.
fn phase_keepalived_stop(lab: &mut FailoverLab) -> Result<Report> {
    let mut p = Phase::start(
        lab,
        "(c) planned: keepalived SIGTERM on gw-a (priority 0), then restart",
        true,
    )?;
    p.settle();
    let mut stopping = lab.keepaliveds[Gw::A.index()].take();
    if let Some(k) = &stopping {
        k.terminate();
    }
    p.event("gw-a: SIGTERM to keepalived");
    p.wait_master(lab, Gw::B, "vip1", "the SIGTERM");
    match stopping.as_mut().map(|k| k.stop(Duration::from_secs(5))) {
        Some(true) => p.event("gw-a: keepalived exited"),
        _ => p
            .problems
            .push("gw-a's keepalived did not exit within 5 s of SIGTERM".into()),
    }
    drop(stopping);
    p.settle();
    p.snapshot(lab, "after the stop");
    p.event("gw-a: keepalived restarting");
    match lab.start_daemon(Gw::A) {
        Ok(()) => {
            p.event("gw-a: keepalived's VRRP process runs");
            p.wait_master(lab, Gw::A, "vip1", "the restart");
        }
        Err(e) => p
            .problems
            .push(format!("gw-a's keepalived did not restart: {e:#}")),
    }
    p.settle();
    Ok(p.finish(lab))
}

// ------------------------------------------------------------- output

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

/// The event a gap belongs to: the last one before it began (with 50 ms
/// of slack for datagrams in flight).
fn cause(events: &[(Duration, String)], at: Duration) -> &str {
    events
        .iter()
        .rev()
        .find(|(t, _)| *t <= at + Duration::from_millis(50))
        .map_or("?", |(_, what)| what.as_str())
}

fn print_report(r: &Report) {
    println!(
        "  {} datagrams sent per VIP (sender achieved {})",
        r.sent,
        fmt_rate(r.rate)
    );
    if r.host_drops > 0 {
        println!(
            "  of the losses, {} were socket-buffer drops on the client or backend host",
            r.host_drops
        );
    }
    for (i, (vip, _)) in VIPS.iter().enumerate() {
        if r.gaps[i].is_empty() {
            println!("  {vip}: lost 0");
            continue;
        }
        println!("  {vip}: lost {}", r.lost(i));
        for g in &r.gaps[i] {
            println!(
                "    +{:.3}s  {:>5} lost  window {:>8}  after: {}",
                g.at.as_secs_f64(),
                g.lost,
                g.window
                    .map_or("NO REPLY AFTER".into(), |w| format!("{} ms", w.as_millis())),
                cause(&r.events, g.at)
            );
        }
        if r.lost_before_event(i) > 0 {
            println!(
                "    {} of them before the phase's first event (left over from before; not in the window)",
                r.lost_before_event(i)
            );
        }
    }
    for p in &r.problems {
        println!("  PROBLEM: {p}");
    }
    let pair = match r.pair {
        Pair::Vipgate => "",
        Pair::Keepalived => "pair=keepalived ",
    };
    println!(
        "RESULT {pair}phase={} planned={} vip1_lost={} vip2_lost={} vip1_lost_before_event={} \
         vip2_lost_before_event={} ok={}",
        phase_key(r.label),
        r.planned,
        r.lost(0),
        r.lost(1),
        r.lost_before_event(0),
        r.lost_before_event(1),
        r.ok
    );
}

/// "a" of "(a) ...", "a+" of "(a+) ...".
fn phase_key(label: &str) -> &str {
    label
        .find(')')
        .and_then(|end| label.get(1..end))
        .unwrap_or("?")
}

/// "lost / window" of one VIP in one phase.
fn cell(r: Option<&Report>, vip: usize) -> String {
    match r {
        None => "-".into(),
        Some(r) => {
            let mark = if r.lost_before_event(vip) > 0 {
                "*"
            } else {
                ""
            };
            format!("{}{mark} / {}", r.lost(vip), fmt_ms(r.longest(vip)))
        }
    }
}

/// vipgate's window over keepalived's.
fn ratio(vg: Option<&Report>, ka: Option<&Report>, vip: usize) -> String {
    let w = |r: Option<&Report>| r.map(|r| r.longest(vip));
    match (w(vg), w(ka)) {
        (Some(Some(v)), Some(Some(k))) if !k.is_zero() => {
            format!("{:.2}", v.as_secs_f64() / k.as_secs_f64())
        }
        (Some(Some(_)), Some(None)) => "ka 0 lost".into(),
        (Some(None), Some(Some(_))) => "0.00".into(),
        _ => "-".into(),
    }
}

/// Both pairs' phases side by side; vipgate's (a) stands against
/// keepalived's (a) and (a+). Also `COMPARE ...` lines for scripts.
fn print_comparison(vipgate: &[Report], keepalived: &[Report]) {
    let find = |key: &str| vipgate.iter().find(|r| phase_key(r.label) == key);
    println!(
        "\ncomparison, vipgate pair vs keepalived pair, {} per VIP, adverts every 100 ms\n\
         (cells: datagrams lost / longest window = last reply before a gap to the first after it;\n \
         ratio = vipgate window / keepalived window; * = some lost before the phase's first event;\n \
         keepalived forwards with kernel NAT, no LVS: no ip_vs module)",
        fmt_rate(f64::from(COMPARE_RATE))
    );
    println!(
        "  {:<58} {:>16} {:>16} {:>9} {:>16} {:>16} {:>9}",
        "phase (keepalived's label)",
        "vip1 vipgate",
        "vip1 keepalived",
        "ratio",
        "vip2 vipgate",
        "vip2 keepalived",
        "ratio"
    );
    for ka in keepalived {
        let key = phase_key(ka.label);
        let vg = find(if key == "a+" { "a" } else { key });
        let ka = Some(ka);
        println!(
            "  {:<58} {:>16} {:>16} {:>9} {:>16} {:>16} {:>9}",
            ka.map_or("", |r| r.label),
            cell(vg, 0),
            cell(ka, 0),
            ratio(vg, ka, 0),
            cell(vg, 1),
            cell(ka, 1),
            ratio(vg, ka, 1)
        );
        for (i, (vip, _)) in VIPS.iter().enumerate() {
            let ms = |r: Option<&Report>| r.and_then(|r| r.longest(i)).map_or(0, |d| d.as_millis());
            println!(
                "COMPARE phase={key} vip={vip} vipgate_lost={} vipgate_window_ms={} keepalived_lost={} keepalived_window_ms={} vipgate_pps={:.0} keepalived_pps={:.0} vipgate_host_drops={} keepalived_host_drops={} vipgate_lost_before_event={} keepalived_lost_before_event={}",
                vg.map_or(0, |r| r.lost(i)),
                ms(vg),
                ka.map_or(0, |r| r.lost(i)),
                ms(ka),
                vg.map_or(0.0, |r| r.rate),
                ka.map_or(0.0, |r| r.rate),
                vg.map_or(0, |r| r.host_drops),
                ka.map_or(0, |r| r.host_drops),
                vg.map_or(0, |r| r.lost_before_event(i)),
                ka.map_or(0, |r| r.lost_before_event(i)),
            );
        }
    }
}

fn print_summary(reports: &[Report]) {
    println!("\nsummary (loss per VIP; window = last reply before a gap to the first after it)");
    let width = reports.iter().map(|r| r.label.len()).fold(44, usize::max);
    println!(
        "  {:<width$} {:>9} {:>10} {:>9} {:>10}  verdict",
        "phase", "vip1 lost", "vip1 win", "vip2 lost", "vip2 win"
    );
    for r in reports {
        println!(
            "  {:<width$} {:>9} {:>10} {:>9} {:>10}  {}",
            r.label,
            r.lost(0),
            fmt_ms(r.longest(0)),
            r.lost(1),
            fmt_ms(r.longest(1)),
            if r.ok { "ok" } else { "FAIL" }
        );
    }
    for r in reports {
        for (when, line) in &r.masters {
            println!(
                "  {} masters {when}: {line}",
                r.label.get(..3).unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_keys_read_well() {
        assert_eq!(phase_key("(a+) gw-a's keepalived"), "a+");
        assert_eq!(phase_key("(c) planned"), "c");
    }

    #[test]
    fn both_gateway_configs_validate() {
        use crate::config::{validate_str, SystemInterface, SystemView};
        for gw in Gw::BOTH {
            let lo = SystemInterface::new("lo", vec!["127.0.0.1/8".parse().expect("test address")]);
            let cli = SystemInterface::new(
                "vg-cli",
                vec![gw.client_addr().parse().expect("test address")],
            );
            let srv = SystemInterface::new(
                "vg-srv",
                vec![gw.backend_addr().parse().expect("test address")],
            );
            let view = SystemView::new(vec![lo, cli, srv]);
            let text = gateway_config(gw, Path::new("/run/vipgate/lab/x/gw.sock"), 1);
            assert!(!text.contains('@'), "a placeholder is left");
            let config = match validate_str(&text, "gw.toml", Some(&view)) {
                Ok(c) => c,
                Err(e) => panic!("{} does not validate:\n{e}", gw.label()),
            };
            assert_eq!(config.vrrp.instances.len(), 4);
            let (p1, _) = gw.priorities();
            assert_eq!(config.vrrp_instance("vip1").map(|i| i.priority), Some(p1));
        }
    }
}
