//! `vipgate lab run --scenario ecmp`: an upstream router in front of two
//! gateways that both announce the VIPs over BGP; the router installs one
//! multipath route per VIP and hashes client flows over both gateways.
//! And `--scenario ecmp-timing`: how long a VIP state change on one
//! gateway takes to reach the router's kernel FIB.
//!
//! Owns the ECMP topology (five namespaces, veth links, the router's
//! sysctls, the backend host's reply routing), the processes it starts
//! (the router: `vipgate lab router` or BIRD with `--router bird`; two
//! `vipgate run`; the web servers), the phases, the route-event watcher of
//! the timing scenario, and the reports. Touches nothing outside its
//! namespaces and `/run/vipgate/lab/<name>/`; only 198.18.0.0/15 and
//! 2001:db8::/32.
//!
//! ```text
//!  <lab>-cli   c0 198.18.0.2 ── r-cli 198.18.0.1   <lab>-rtr (AS 65000, multipath,
//!                                                   L4 hash, forwarding)
//!  <lab>-gwa   vg-cli 198.18.1.2 ── r-a 198.18.1.1 ─┘│
//!  <lab>-gwb   vg-cli 198.18.2.2 ── r-b 198.18.2.1 ──┘
//!  (AS 65001)  vg-srv 198.18.20.1 (gw-a), .20.4 (gw-b) ── s-a / s-b  <lab>-srv 198.18.20.2
//!                                                                   web80 web81 web82
//!  VIPs 198.18.10.10 (udp/7 echo, tcp/80) and 2001:db8:10::10 (tcp/80), Maglev
//! ```
//!
//! The backend host has its address on both links (one per gateway). NAT
//! needs each reply back through the gateway that holds the flow: an
//! nftables rule marks a flow's conntrack entry with the link its last
//! packet came in on (1: gw-a, 2: gw-b), and policy routing sends each
//! reply out through that link (`fwmark 1 -> table 1`, default via gw-a).
//! The same rules record which source ports arrived through which gateway
//! (nft sets), which is how the scenario counts flows per gateway.
//!
//! Phases: the router's FIB; the split of new flows per gateway; the same
//! 48 flows sent through each gateway alone (the other one drained) land
//! on the same backends (Maglev); then a UDP probe of 8 flows at 500 pps
//! each while gw-a is (a) drained with `vipgate drain` (planned: nothing
//! lost), (b) frozen with SIGSTOP (its flows are lost until the router's
//! hold timer, 3 s, expires), (c) killed with SIGKILL (its flows are lost
//! until the router sees the TCP session close; 16 kept-alive TCP
//! connections opened before the kill must each answer one more request
//! after it: gw-b picks up gw-a's mid-flow).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

mod timing;

use super::failover::Gw;
use super::ip_out;
use super::probe::{gaps, sleep_unless_interrupted, Flow, Gap, KeptConnections, Probe};
use super::scenario::{http_request, udp_request_from};
use crate::netlink::{Family, RtNetlink};
use crate::netns::NetNs;

/// One gateway's configuration; see the file for the placeholders.
pub const GW_TEMPLATE: &str = include_str!("ecmp-gw.toml");
/// The built-in router's configuration (`vipgate lab router`).
pub const ROUTER_CONFIG: &str = include_str!("ecmp-router.toml");

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
/// What the timing scenario announces with `vipgate route announce`.
const OPERATOR_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 11, 0), 24);
const ECHO_PORT: u16 = 7;
/// New flows of each protocol in the split phase.
const SPLIT_FLOWS: u16 = 64;
/// Source ports of the split phase's UDP flows (outside the ephemeral
/// range, so no other socket holds them).
const SPLIT_PORTS: u16 = 22_000;
/// Flows (fixed source ports from here) sent through each gateway alone.
const MAGLEV_FLOWS: u16 = 48;
const MAGLEV_PORTS: u16 = 20_000;
/// Probe flows (half hashed to each gateway when the router says so),
/// each at [`FLOW_RATE`]; source ports from [`PROBE_PORTS`].
const PROBE_FLOWS: usize = 8;
const FLOW_RATE: u32 = 500;
const PROBE_PORTS: u16 = 21_000;
/// The drain delay of the ecmp scenario (GRACEFUL_SHUTDOWN, then withdrawn).
const DRAIN_DELAY: &str = "2s";
/// The timing scenario's: long, so undrain follows a drain, not a withdrawal.
const TIMING_DRAIN_DELAY: &str = "60s";
/// The BGP hold time of every session in the lab (seconds).
const HOLD_SECONDS: u64 = 3;
/// Longest wait for a FIB state.
const FIB_WAIT: Duration = Duration::from_secs(10);
/// Probe traffic before and after each event.
const SETTLE: Duration = Duration::from_millis(700);

/// Which router the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Router {
    /// `vipgate lab router`: vipgate's BGP speaker mirroring the received
    /// routes into the kernel FIB (needs nothing but vipgate).
    Builtin,
    /// BIRD 2 with `merge paths` and the RFC 8326 import policy.
    Bird,
}

impl Router {
    fn label(self) -> &'static str {
        match self {
            Router::Builtin => "builtin",
            Router::Bird => "bird",
        }
    }
}

/// One gateway's links and addresses.
struct Side {
    /// The router's end of the gateway's client link.
    router_if: &'static str,
    router_v4: Ipv4Addr,
    router_v6: Ipv6Addr,
    /// The gateway's vg-cli: the next hop it announces.
    gw_v4: Ipv4Addr,
    gw_v6: Ipv6Addr,
    /// The backend host's end of the gateway's backend link.
    srv_if: &'static str,
    gw_srv_v4: Ipv4Addr,
    gw_srv_v6: Ipv6Addr,
    /// Conntrack mark and routing table of its flows on the backend host.
    mark: u32,
}

fn side(gw: Gw) -> Side {
    let n = match gw {
        Gw::A => 1,
        Gw::B => 2,
    };
    Side {
        router_if: match gw {
            Gw::A => "r-a",
            Gw::B => "r-b",
        },
        router_v4: Ipv4Addr::new(198, 18, n as u8, 1),
        router_v6: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 1),
        gw_v4: Ipv4Addr::new(198, 18, n as u8, 2),
        gw_v6: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 2),
        srv_if: match gw {
            Gw::A => "s-a",
            Gw::B => "s-b",
        },
        gw_srv_v4: Ipv4Addr::new(198, 18, 20, [1, 4][gw.index()]),
        gw_srv_v6: Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, 0, [1, 4][gw.index()]),
        mark: u32::from(n),
    }
}

fn other(gw: Gw) -> Gw {
    match gw {
        Gw::A => Gw::B,
        Gw::B => Gw::A,
    }
}

/// The gateway whose next hop is `hop`.
fn gw_of(hop: IpAddr) -> Option<Gw> {
    Gw::BOTH.into_iter().find(|g| {
        let s = side(*g);
        hop == IpAddr::V4(s.gw_v4) || hop == IpAddr::V6(s.gw_v6)
    })
}

fn hops(gws: &[Gw]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = gws.iter().map(|g| IpAddr::V4(side(*g).gw_v4)).collect();
    out.sort();
    out
}

/// Namespace names of an ECMP lab (for `lab down`).
pub fn namespace_names(name: &str) -> Vec<String> {
    ["cli", "rtr", "gwa", "gwb", "srv"]
        .iter()
        .map(|s| format!("{name}-{s}"))
        .collect()
}

/// The configuration of gateway `gw`. `timing`: mode "vrrp" with one VRRP
/// instance per VIP (each gateway is alone on its link to the router, so
/// master of both), and a long drain delay.
pub fn gateway_config(gw: Gw, socket: &Path, workers: u16, timing: bool) -> String {
    let s = side(gw);
    let vrrp = "\n[vrrp]\nadvert_interval = \"100ms\"\nresign_grace = \"1s\"\n\n\
                [[vrrp.instance]]\nname = \"vip\"\ninterface = \"vg-cli\"\nvrid = 51\n\
                vips = [\"198.18.10.10\"]\n\n\
                [[vrrp.instance]]\nname = \"vip6\"\ninterface = \"vg-cli\"\nvrid = 52\n\
                vips = [\"2001:db8:10::10\"]\n";
    GW_TEMPLATE
        .replace("@NODE@", gw.label())
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@WORKERS@", &workers.to_string())
        .replace("@ROUTER_ID@", &s.gw_v4.to_string())
        .replace("@ROUTER@", &s.router_v4.to_string())
        .replace("@MODE@", if timing { "vrrp" } else { "ecmp" })
        .replace(
            "@DRAIN_DELAY@",
            if timing {
                TIMING_DRAIN_DELAY
            } else {
                DRAIN_DELAY
            },
        )
        .replace("@VRRP@", if timing { vrrp } else { "" })
}

/// BIRD 2's configuration as the lab's router: the same sessions as the
/// built-in router, `merge paths` into the kernel, and the RFC 8326 import
/// policy (GRACEFUL_SHUTDOWN: local preference 0).
pub fn bird_config(dir: &Path) -> String {
    let mut out = format!(
        "router id 198.18.0.1;\n\
         log \"{dir}/bird.log\" all;\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths yes; }}\n\
         protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths yes; }}\n\
         filter rfc8326_import {{\n  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;\n  accept;\n}}\n\
         template bgp lab_gateway {{\n  local as 65000;\n  passive on;\n  hold time {HOLD_SECONDS};\n  \
         keepalive time 1;\n  error wait time 1, 5;\n  \
         ipv4 {{ import filter rfc8326_import; export none; }};\n  \
         ipv6 {{ import filter rfc8326_import; export none; }};\n}}\n",
        dir = dir.display()
    );
    for gw in Gw::BOTH {
        out += &format!(
            "protocol bgp {} from lab_gateway {{ neighbor {} as 65001; }}\n",
            gw.label().replace('-', "_"),
            side(gw).gw_v4
        );
    }
    out
}

fn bird_installed() -> bool {
    let ok = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    ok("bird") && ok("birdc")
}

// ------------------------------------------------------------- entry points

/// `lab run --scenario ecmp`.
pub fn run(name: &str, workers: u16, router: Router) -> Result<ExitCode> {
    let lab = EcmpLab::up(name, workers, router, false)?;
    println!("{}", lab.describe());
    let outcome = phases(&lab);
    if super::interrupted() {
        drop(lab);
        bail!("interrupted; the lab was torn down");
    }
    drop(lab);
    let results = outcome?;
    println!("\nsummary");
    for r in &results {
        println!("  {:<60} {}", r.label, if r.ok { "ok" } else { "FAIL" });
    }
    if results.iter().all(|r| r.ok) {
        println!("lab {name}: PASS: one multipath route, flows on both gateways, the same backend through either, no loss on the planned drain");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab {name}: FAIL (see above)");
        Ok(ExitCode::FAILURE)
    }
}

/// `lab run --scenario ecmp-timing`.
pub fn run_timing(name: &str, workers: u16, router: Router, repeat: u32) -> Result<ExitCode> {
    let lab = EcmpLab::up(name, workers, router, true)?;
    println!("{}", lab.describe());
    let outcome = timing::run(&lab, repeat.clamp(1, 100));
    if super::interrupted() {
        drop(lab);
        bail!("interrupted; the lab was torn down");
    }
    drop(lab);
    let rows = outcome?;
    timing::print(router, &rows);
    if rows.iter().all(|r| r.missed == 0 && !r.samples.is_empty()) {
        println!("lab {name}: PASS: every trigger reached the router's FIB");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lab {name}: FAIL: some triggers did not reach the FIB (see above)");
        Ok(ExitCode::FAILURE)
    }
}

// ------------------------------------------------------------- the lab

/// The running ECMP lab. Dropping it ends its processes by pid and deletes
/// its namespaces.
pub struct EcmpLab {
    name: String,
    client: NetNs,
    router: NetNs,
    gws: [NetNs; 2],
    backend: NetNs,
    dir: PathBuf,
    workers: u16,
    router_kind: Router,
    timing: bool,
    backend_proc: Option<Child>,
    router_proc: Option<Child>,
    /// The gateways' daemons (a phase kills one while others read the lab).
    daemons: [RefCell<Option<Child>>; 2],
    /// A gateway stopped with SIGSTOP (continued before it is ended).
    frozen: [Cell<bool>; 2],
}

impl EcmpLab {
    fn up(name: &str, workers: u16, router: Router, timing: bool) -> Result<EcmpLab> {
        super::check_name(name)?;
        if router == Router::Bird && !bird_installed() {
            bail!(
                "--router bird needs BIRD 2 (bird, birdc), which is not installed here \
                 (apt-get install bird2); the built-in router (--router builtin) needs nothing"
            );
        }
        let dir = super::lab_dir(name);
        if dir.exists()
            || NetNs::list_named()?
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        {
            bail!("a lab named {name} is already up; run `vipgate lab down --name {name}` first");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = (|| -> Result<[NetNs; 5]> {
            let n = namespace_names(name);
            Ok([
                NetNs::create(&n[0])?,
                NetNs::create(&n[1])?,
                NetNs::create(&n[2])?,
                NetNs::create(&n[3])?,
                NetNs::create(&n[4])?,
            ])
        })();
        let [client, rtr, gwa, gwb, backend] = match made {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.context("creating the lab's namespaces"));
            }
        };
        let mut lab = EcmpLab {
            name: name.into(),
            client,
            router: rtr,
            gws: [gwa, gwb],
            backend,
            dir,
            workers,
            router_kind: router,
            timing,
            backend_proc: None,
            router_proc: None,
            daemons: [RefCell::new(None), RefCell::new(None)],
            frozen: [Cell::new(false), Cell::new(false)],
        };
        lab.wire().context("building the ECMP lab network")?;
        lab.backend_rules()?;
        let child = super::start_web_servers(
            &lab.backend,
            &lab.dir.join("backend.log"),
            &[],
            &[IpAddr::V4(BACKEND)],
        )?;
        lab.record(child.id())?;
        lab.backend_proc = Some(child);
        lab.start_router()?;
        for gw in Gw::BOTH {
            lab.start_gateway(gw)?;
        }
        let both = hops(&Gw::BOTH);
        if lab
            .wait_fib(IpAddr::V4(VIP), 32, &both, FIB_WAIT * 3)
            .is_none()
        {
            bail!(
                "the router did not install {VIP} via both gateways within {} s (logs in {})",
                FIB_WAIT.as_secs() * 3,
                lab.dir.display()
            );
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

    fn record(&self, pid: u32) -> Result<()> {
        let path = self.dir.join("pids");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("{pid}\n"));
        fs::write(&path, text)?;
        Ok(())
    }

    /// Links, addresses, routes, sysctls and policy rules.
    fn wire(&self) -> Result<()> {
        use super::ip;
        let (cli, rtr, srv) = (
            self.ns_name("cli"),
            self.ns_name("rtr"),
            self.ns_name("srv"),
        );
        for ns in [
            &self.client,
            &self.router,
            &self.gws[0],
            &self.gws[1],
            &self.backend,
        ] {
            ns.run(super::no_dad)??;
        }
        sysctls(
            &self.router,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
                // Replies of a drained gateway still come in on its link.
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
            ],
        )?;
        l4_hash(&self.router)?;
        sysctls(
            &self.backend,
            &[
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
            ],
        )?;
        ip(
            &rtr,
            &format!("link add r-cli type veth peer name c0 netns {cli}"),
        )?;
        ip(&cli, "addr add 198.18.0.2/24 dev c0")?;
        ip(&cli, "addr add 2001:db8::2/64 dev c0 nodad")?;
        ip(&cli, "link set c0 up")?;
        ip(&cli, "route add default via 198.18.0.1")?;
        ip(&cli, "-6 route add default via 2001:db8::1")?;
        ip(&rtr, "addr add 198.18.0.1/24 dev r-cli")?;
        ip(&rtr, "addr add 2001:db8::1/64 dev r-cli nodad")?;
        ip(&rtr, "link set r-cli up")?;
        for gw in Gw::BOTH {
            self.wire_gateway(gw, &rtr, &srv)?;
        }
        // Without a mark (none of the lab's traffic): through gw-a.
        ip(&srv, "route add default via 198.18.20.1 dev s-a")?;
        ip(&srv, "-6 route add default via 2001:db8:20::1 dev s-a")?;
        // Wire-sized frames from the hosts that send TCP (a TSO/GSO
        // super-frame would reach a dataplane as one frame); the router
        // only forwards what it gets.
        no_offloads(&self.client, &["c0"])?;
        no_offloads(&self.backend, &["s-a", "s-b"])?;
        Ok(())
    }

    fn wire_gateway(&self, gw: Gw, rtr: &str, srv: &str) -> Result<()> {
        use super::ip;
        let g = self.gw_ns(gw);
        let s = side(gw);
        ip(
            &g,
            &format!(
                "link add vg-cli type veth peer name {} netns {rtr}",
                s.router_if
            ),
        )?;
        ip(
            &g,
            &format!(
                "link add vg-srv type veth peer name {} netns {srv}",
                s.srv_if
            ),
        )?;
        ip(&g, &format!("addr add {}/24 dev vg-cli", s.gw_v4))?;
        ip(&g, &format!("addr add {}/64 dev vg-cli nodad", s.gw_v6))?;
        ip(&g, &format!("addr add {}/24 dev vg-srv", s.gw_srv_v4))?;
        ip(&g, &format!("addr add {}/64 dev vg-srv nodad", s.gw_srv_v6))?;
        ip(&g, "link set vg-cli up")?;
        ip(&g, "link set vg-srv up")?;
        ip(&g, &format!("route add default via {}", s.router_v4))?;
        ip(&g, &format!("-6 route add default via {}", s.router_v6))?;
        ip(
            rtr,
            &format!("addr add {}/24 dev {}", s.router_v4, s.router_if),
        )?;
        ip(
            rtr,
            &format!("addr add {}/64 dev {} nodad", s.router_v6, s.router_if),
        )?;
        ip(rtr, &format!("link set {} up", s.router_if))?;
        // The backend address on this link too, reachable from the gateway.
        ip(srv, &format!("addr add {BACKEND}/32 dev {}", s.srv_if))?;
        ip(
            srv,
            &format!("addr add 2001:db8:20::2/128 dev {} nodad", s.srv_if),
        )?;
        ip(srv, &format!("link set {} up", s.srv_if))?;
        ip(
            srv,
            &format!("route add {}/32 dev {}", s.gw_srv_v4, s.srv_if),
        )?;
        ip(
            srv,
            &format!("-6 route add {}/128 dev {}", s.gw_srv_v6, s.srv_if),
        )?;
        let (m, dev) = (s.mark, s.srv_if);
        ip(
            srv,
            &format!("route add default via {} dev {dev} table {m}", s.gw_srv_v4),
        )?;
        ip(
            srv,
            &format!(
                "-6 route add default via {} dev {dev} table {m}",
                s.gw_srv_v6
            ),
        )?;
        ip(srv, &format!("rule add fwmark {m} table {m}"))?;
        ip(srv, &format!("-6 rule add fwmark {m} table {m}"))?;
        Ok(())
    }

    /// The backend host's nftables: conntrack mark by arrival link, the
    /// reply's routing mark from it, and the source ports seen per link.
    fn backend_rules(&self) -> Result<()> {
        let mut rules = String::from("table inet vglab_ecmp {\n");
        for set in ["udp_a", "tcp_a", "udp_b", "tcp_b"] {
            rules += &format!("  set {set} {{ type inet_service; flags dynamic; size 65535; }}\n");
        }
        rules += "  chain pre {\n    type filter hook prerouting priority mangle; policy accept;\n";
        for gw in Gw::BOTH {
            let s = side(gw);
            let t = ["a", "b"][gw.index()];
            rules += &format!(
                "    iifname \"{dev}\" ct mark set {m}\n    \
                 iifname \"{dev}\" udp dport {{ 80, 81, 82 }} add @udp_{t} {{ udp sport }}\n    \
                 iifname \"{dev}\" tcp dport {{ 80, 81, 82 }} add @tcp_{t} {{ tcp sport }}\n",
                dev = s.srv_if,
                m = s.mark
            );
        }
        rules +=
            "  }\n  chain out {\n    type route hook output priority mangle; policy accept;\n    \
                  meta mark set ct mark\n  }\n}\n";
        nft(&self.backend, &self.ns_name("srv"), &rules)
    }

    fn start_router(&mut self) -> Result<()> {
        let log_path = self.dir.join("router.log");
        let log = fs::File::create(&log_path)?;
        let mut command = match self.router_kind {
            Router::Builtin => {
                let config = self.dir.join("router.toml");
                fs::write(&config, ROUTER_CONFIG)?;
                let mut c = self.router.command(std::env::current_exe()?);
                c.args(["lab", "router", "--config"]).arg(&config);
                c
            }
            Router::Bird => {
                let config = self.dir.join("bird.conf");
                fs::write(&config, bird_config(&self.dir))?;
                let mut c = self.router.command("bird");
                c.arg("-c")
                    .arg(&config)
                    .arg("-s")
                    .arg(self.dir.join("bird.ctl"))
                    .arg("-P")
                    .arg(self.dir.join("bird.pid"))
                    .arg("-f");
                c
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the lab's router")?;
        self.record(child.id())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = self.router.run(|| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, 179)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })?;
            if listening {
                self.router_proc = Some(child);
                return Ok(());
            }
            if let Ok(Some(code)) = child.try_wait() {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the lab's router exited ({code}) during start:\n{text}");
            }
            if Instant::now() > deadline {
                super::stop_child(&mut child);
                bail!(
                    "the lab's router did not listen on port 179 within 10 s (see {})",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_gateway(&mut self, gw: Gw) -> Result<()> {
        let config = self.dir.join(format!("{}.toml", gw.label()));
        let text = gateway_config(gw, &self.socket(gw), self.workers, self.timing);
        fs::write(&config, text)?;
        let log = self.dir.join(format!("{}.log", gw.label()));
        let child = super::start_daemon(
            &self.gws[gw.index()],
            &config,
            &log,
            &self.socket(gw),
            gw.label(),
        )?;
        self.record(child.id())?;
        *self.daemons[gw.index()].borrow_mut() = Some(child);
        Ok(())
    }

    /// The next hops of the router's route to `dst/len` (empty: none).
    fn fib(&self, dst: IpAddr, len: u8) -> Vec<IpAddr> {
        let routes =
            RtNetlink::open_in(&self.router).and_then(|mut nl| nl.path_routes(Family::of(dst)));
        routes
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.dst == dst && r.prefix_len == len))
            .map(|r| r.next_hops)
            .unwrap_or_default()
    }

    /// Waits until the router's route to `dst/len` has exactly `want` as
    /// next hops (empty: no route); the time it took.
    fn wait_fib(
        &self,
        dst: IpAddr,
        len: u8,
        want: &[IpAddr],
        within: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within && !super::interrupted() {
            if self.fib(dst, len) == want {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// `ip -n <router> ARGS`, for display.
    fn fib_text(&self, args: &str) -> String {
        ip_out(&self.ns_name("rtr"), args)
            .unwrap_or_else(|e| format!("({e:#})"))
            .trim_end()
            .to_string()
    }

    fn request(&self, gw: Gw, request: &Value) -> Result<Value> {
        crate::control::request(&self.socket(gw), request)
            .with_context(|| format!("{} {}", gw.label(), request["cmd"]))
    }

    /// `conn_new` summed over `gw`'s workers (0 when it does not answer).
    fn conn_new(&self, gw: Gw) -> u64 {
        self.counter(gw, "conn_new")
    }

    /// Counter `name` summed over `gw`'s workers (0 if it cannot tell).
    fn counter(&self, gw: Gw, name: &str) -> u64 {
        let status = self
            .request(gw, &json!({"cmd": "status"}))
            .unwrap_or(Value::Null);
        super::worker_counter(&status, name)
    }

    /// Source ports of `proto` ("udp", "tcp") the backend host saw arrive
    /// through `gw`.
    fn seen(&self, gw: Gw, proto: &str) -> BTreeSet<u16> {
        let set = format!("{proto}_{}", ["a", "b"][gw.index()]);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name("srv"),
                "nft",
                "-j",
                "list",
                "set",
            ])
            .args(["inet", "vglab_ecmp", &set])
            .stdin(Stdio::null())
            .output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .map(|v| set_elements(&v))
            .unwrap_or_default()
    }

    fn forget_seen(&self) -> Result<()> {
        let mut rules = String::new();
        for set in ["udp_a", "tcp_a", "udp_b", "tcp_b"] {
            rules += &format!("flush set inet vglab_ecmp {set}\n");
        }
        nft(&self.backend, &self.ns_name("srv"), &rules)
    }

    /// The gateway the router hashes a UDP flow from `port` to the echo
    /// service onto (`ip route get ... iif r-cli ipproto udp sport ...`).
    fn predicted(&self, port: u16) -> Option<Gw> {
        let out = ip_out(
            &self.ns_name("rtr"),
            &format!(
                "route get {VIP} from {CLIENT} iif r-cli ipproto udp sport {port} dport {ECHO_PORT}"
            ),
        )
        .ok()?;
        word_after(&out, "via").and_then(|h| gw_of(h.parse().ok()?))
    }

    /// SIGSTOP / SIGCONT / SIGKILL to `gw`'s daemon.
    fn freeze(&self, gw: Gw, frozen: bool) {
        if let Some(c) = &*self.daemons[gw.index()].borrow() {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            super::send_signal(c.id() as i32, signal);
            self.frozen[gw.index()].set(frozen);
        }
    }

    /// SIGKILL to `gw`'s daemon; returns once it is reaped.
    fn kill(&self, gw: Gw) {
        if let Some(mut c) = self.daemons[gw.index()].borrow_mut().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn describe(&self) -> String {
        let router = match self.router_kind {
            Router::Builtin => {
                "vipgate lab router (built-in: vipgate's BGP speaker into the kernel FIB)"
            }
            Router::Bird => "BIRD 2 (merge paths, RFC 8326 import policy)",
        };
        let mode = if self.timing {
            "mode vrrp (each gateway masters its own VRRP instance of each VIP)"
        } else {
            "mode ecmp"
        };
        format!(
            "lab {n}: namespaces {n}-cli (client), {n}-rtr (router), {n}-gwa (gw-a), {n}-gwb (gw-b), {n}-srv (backend)\n\
             router: {router}, AS 65000, L4 multipath hash; gateways AS 65001, {mode}, hold time {HOLD_SECONDS} s\n\
             VIPs {VIP} (udp/7, tcp/80) and {VIP6} (tcp/80), Maglev over web80/81/82; logs and configs in {}\n\
             router FIB: {}",
            self.dir.display(),
            self.fib_text(&format!("route show {VIP}")).replace('\n', "\n            "),
            n = self.name,
        )
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        for gw in Gw::BOTH {
            if self.frozen[gw.index()].get() {
                self.freeze(gw, false);
            }
        }
        // SIGTERM to everything at once (the daemons withdraw, the router
        // removes its routes), then wait, then SIGKILL.
        let mut children: Vec<Child> = self
            .daemons
            .iter_mut()
            .filter_map(|d| d.get_mut().take())
            .chain(self.router_proc.take())
            .chain(self.backend_proc.take())
            .collect();
        for c in &children {
            super::terminate_pid(c.id() as i32);
        }
        super::reap_by(&mut children, Instant::now() + Duration::from_secs(6));
        // The NetNs values delete their namespaces when dropped after this.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sysctls(ns: &NetNs, settings: &[(&str, &str)]) -> Result<()> {
    for (key, value) in settings {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        ns.run(move || fs::write(&path, value))?
            .with_context(|| format!("sysctl {key}"))?;
    }
    Ok(())
}

/// Client flows split over the gateways by their 5-tuple. Policy 1 (L4)
/// would do on a router whose packets come from the wire; in the lab the
/// client's packets arrive over a veth still carrying the sending socket's
/// random flow hash, which policy 1 uses as is. Policy 3 with the 5-tuple
/// as its fields (kernel 5.12 and later) hashes the headers, as a router
/// does, so `ip route get ... sport` predicts the path; policy 1 where 3
/// is not available.
fn l4_hash(router: &NetNs) -> Result<()> {
    // src ip | dst ip | ip proto | src port | dst port
    const FIVE_TUPLE: &str = "0x37";
    for v in ["ipv4", "ipv6"] {
        let custom = sysctls(
            router,
            &[
                (&format!("net/{v}/fib_multipath_hash_fields"), FIVE_TUPLE),
                (&format!("net/{v}/fib_multipath_hash_policy"), "3"),
            ],
        );
        if custom.is_err() {
            sysctls(
                router,
                &[(&format!("net/{v}/fib_multipath_hash_policy"), "1")],
            )?;
        }
    }
    Ok(())
}

fn no_offloads(ns: &NetNs, links: &[&str]) -> Result<()> {
    use crate::sys::{Offload, OffloadGuard};
    for link in links {
        let link = link.to_string();
        ns.run(move || {
            OffloadGuard::disable(&link, &[Offload::Tso, Offload::Gso, Offload::Gro])
                .map(std::mem::forget)
        })??;
    }
    Ok(())
}

/// `nft -f -` with `rules` in namespace `ns`.
fn nft(ns: &NetNs, ns_name: &str, rules: &str) -> Result<()> {
    super::nft_apply(ns, ns_name, rules, "for the backend host's reply routing")
}

/// The word after `key` in `text`.
fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(str::to_string)
}

/// The port numbers of `nft -j list set`'s output (elements are plain
/// numbers, or `{"elem": {"val": N}}` with timeouts).
fn set_elements(doc: &Value) -> BTreeSet<u16> {
    let sets = doc["nftables"].as_array().cloned().unwrap_or_default();
    sets.iter()
        .filter_map(|e| e["set"]["elem"].as_array().cloned())
        .flatten()
        .filter_map(|e| e.as_u64().or_else(|| e["elem"]["val"].as_u64()))
        .filter_map(|n| u16::try_from(n).ok())
        .collect()
}

// ------------------------------------------------------------- phases

/// One phase's outcome.
struct Outcome {
    label: &'static str,
    ok: bool,
}

/// Prints a `RESULT phase=...` line from key=value pairs.
fn result_line(phase: &str, pairs: &[(&str, String)]) {
    let rest: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT phase={phase} {}", rest.join(" "));
}

fn phases(lab: &EcmpLab) -> Result<Vec<Outcome>> {
    let mut out = vec![fib_phase(lab)];
    type Step = fn(&EcmpLab) -> Result<Outcome>;
    let steps: [Step; 2] = [split_phase, maglev_phase];
    for step in steps {
        if super::interrupted() {
            return Ok(out);
        }
        out.push(step(lab)?);
    }
    let flows = probe_flows(lab);
    let probed: [ProbeStep; 3] = [drain_phase, freeze_phase, kill_phase];
    for step in probed {
        if super::interrupted() {
            return Ok(out);
        }
        out.push(step(lab, &flows)?);
    }
    Ok(out)
}

type ProbeStep = fn(&EcmpLab, &[u16]) -> Result<Outcome>;

/// The router's FIB: one route per VIP with both gateways as next hops.
fn fib_phase(lab: &EcmpLab) -> Outcome {
    println!("\n(fib) the router's kernel FIB");
    let v4 = lab.fib(IpAddr::V4(VIP), 32);
    let want6: Vec<IpAddr> = {
        let mut h: Vec<IpAddr> = Gw::BOTH
            .iter()
            .map(|g| IpAddr::V6(side(*g).gw_v6))
            .collect();
        h.sort();
        h
    };
    let v6_wait = lab.wait_fib(IpAddr::V6(VIP6), 128, &want6, FIB_WAIT);
    let v6 = lab.fib(IpAddr::V6(VIP6), 128);
    println!(
        "  {}",
        lab.fib_text(&format!("route show {VIP}"))
            .replace('\n', "\n  ")
    );
    println!(
        "  {}",
        lab.fib_text(&format!("-6 route show {VIP6}"))
            .replace('\n', "\n  ")
    );
    let ok = v4 == hops(&Gw::BOTH) && v6_wait.is_some();
    result_line(
        "fib",
        &[
            ("router", lab.router_kind.label().into()),
            ("next_hops", v4.len().to_string()),
            ("next_hops_v6", v6.len().to_string()),
            ("ok", ok.to_string()),
        ],
    );
    Outcome {
        label: "(fib) one multipath route per VIP, both gateways as next hops",
        ok,
    }
}

/// New flows from the client: how many each gateway carried.
fn split_phase(lab: &EcmpLab) -> Result<Outcome> {
    println!(
        "\n(split) {SPLIT_FLOWS} new TCP connections and {SPLIT_FLOWS} new UDP flows to {VIP}"
    );
    lab.forget_seen()?;
    let before = Gw::BOTH.map(|g| lab.conn_new(g));
    let (failed, ports) = lab.client.run(|| {
        let mut failed = 0;
        let mut ports = BTreeMap::new();
        for i in 0..SPLIT_FLOWS {
            if http_request(SocketAddr::from((VIP, 80))).is_err() {
                failed += 1;
            }
            let port = SPLIT_PORTS + i;
            match udp_request_from(SocketAddr::from((VIP, ECHO_PORT)), port, u32::from(i)) {
                Ok(text) => {
                    ports.insert(port, super::serve::port_of_answer(&text));
                }
                Err(_) => failed += 1,
            }
        }
        (failed, ports)
    })?;
    let conn_new = Gw::BOTH.map(|g| lab.conn_new(g).saturating_sub(before[g.index()]));
    let mut per_gw = [0usize; 2];
    for gw in Gw::BOTH {
        let (tcp, udp) = (lab.seen(gw, "tcp").len(), lab.seen(gw, "udp").len());
        per_gw[gw.index()] = tcp + udp;
        println!(
            "  {}: {tcp:>3} TCP + {udp:>3} UDP flows seen by the backend host through it; \
             its dataplane counted {} new connections",
            gw.label(),
            conn_new[gw.index()]
        );
    }
    let udp_seen = Gw::BOTH.map(|g| lab.seen(g, "udp"));
    let predicted_right = ports
        .keys()
        .filter(|p| {
            lab.predicted(**p)
                .is_some_and(|g| udp_seen[g.index()].contains(p))
        })
        .count();
    println!(
        "  the router's hash (ip route get ... sport) predicted the gateway of {predicted_right} of {} UDP flows",
        ports.len()
    );
    let mut per_backend: BTreeMap<u16, usize> = BTreeMap::new();
    for p in ports.values().flatten() {
        *per_backend.entry(*p).or_default() += 1;
    }
    println!("  UDP answers per backend: {per_backend:?}; failed requests: {failed}");
    let ok = failed == 0 && per_gw.iter().all(|n| *n > 0);
    result_line(
        "split",
        &[
            ("flows", (2 * SPLIT_FLOWS).to_string()),
            ("gwa", per_gw[0].to_string()),
            ("gwb", per_gw[1].to_string()),
            ("conn_new_gwa", conn_new[0].to_string()),
            ("conn_new_gwb", conn_new[1].to_string()),
            ("predicted", format!("{predicted_right}/{}", ports.len())),
            ("failed", failed.to_string()),
            ("ok", ok.to_string()),
        ],
    );
    Ok(Outcome {
        label: "(split) new flows on both gateways",
        ok,
    })
}

/// `vipgate drain` / `undrain` on `gw`; waits until the router's FIB shows
/// `after`; the time that took.
fn set_drain(lab: &EcmpLab, gw: Gw, drain: bool, after: &[Gw]) -> Result<Option<Duration>> {
    let cmd = if drain { "drain" } else { "undrain" };
    lab.request(gw, &json!({ "cmd": cmd }))?;
    Ok(lab.wait_fib(IpAddr::V4(VIP), 32, &hops(after), FIB_WAIT))
}

/// The same flows through each gateway alone pick the same backends.
fn maglev_phase(lab: &EcmpLab) -> Result<Outcome> {
    println!(
        "\n(maglev) {MAGLEV_FLOWS} UDP flows (source ports {MAGLEV_PORTS}-{}) through each gateway alone (the other one drained)",
        MAGLEV_PORTS + MAGLEV_FLOWS - 1
    );
    let mut answers: [Vec<Option<u16>>; 2] = [Vec::new(), Vec::new()];
    let mut through = [0usize; 2];
    let mut problems = Vec::new();
    for gw in Gw::BOTH {
        let away = other(gw);
        if set_drain(lab, away, true, &[gw])?.is_none() {
            problems.push(format!(
                "draining {} did not leave only {} in the FIB",
                away.label(),
                gw.label()
            ));
        }
        lab.forget_seen()?;
        answers[gw.index()] = lab.client.run(|| {
            (0..MAGLEV_FLOWS)
                .map(|i| {
                    let target = SocketAddr::from((VIP, ECHO_PORT));
                    udp_request_from(target, MAGLEV_PORTS + i, u32::from(i))
                        .ok()
                        .and_then(|t| super::serve::port_of_answer(&t))
                })
                .collect()
        })?;
        let seen = lab.seen(gw, "udp");
        through[gw.index()] = (0..MAGLEV_FLOWS)
            .filter(|i| seen.contains(&(MAGLEV_PORTS + i)))
            .count();
        if set_drain(lab, away, false, &Gw::BOTH)?.is_none() {
            problems.push(format!(
                "undraining {} did not bring both gateways back",
                away.label()
            ));
        }
    }
    let same = answers[0]
        .iter()
        .zip(&answers[1])
        .filter(|(a, b)| a.is_some() && a == b)
        .count();
    for gw in Gw::BOTH {
        let mut per: BTreeMap<u16, usize> = BTreeMap::new();
        for p in answers[gw.index()].iter().flatten() {
            *per.entry(*p).or_default() += 1;
        }
        println!(
            "  through {} alone ({} of {MAGLEV_FLOWS} seen arriving from it): answers per backend {per:?}",
            gw.label(),
            through[gw.index()]
        );
    }
    println!("  same backend through either gateway: {same} of {MAGLEV_FLOWS} flows");
    for p in &problems {
        println!("  PROBLEM: {p}");
    }
    let n = usize::from(MAGLEV_FLOWS);
    let ok = problems.is_empty() && same == n && through == [n, n];
    result_line(
        "maglev",
        &[
            ("flows", n.to_string()),
            ("same", same.to_string()),
            ("through_gwa", through[0].to_string()),
            ("through_gwb", through[1].to_string()),
            ("ok", ok.to_string()),
        ],
    );
    Ok(Outcome {
        label: "(maglev) the same backend for a flow through either gateway",
        ok,
    })
}

/// Source ports for the probe: half hashed to each gateway when the
/// router's `ip route get` says so, else consecutive ports.
fn probe_flows(lab: &EcmpLab) -> Vec<u16> {
    let mut picked: [Vec<u16>; 2] = [Vec::new(), Vec::new()];
    for port in PROBE_PORTS..PROBE_PORTS + 200 {
        if let Some(gw) = lab.predicted(port) {
            if picked[gw.index()].len() < PROBE_FLOWS / 2 {
                picked[gw.index()].push(port);
            }
        }
        if picked.iter().all(|p| p.len() == PROBE_FLOWS / 2) {
            break;
        }
    }
    let [mut a, b] = picked;
    a.extend(b);
    if a.len() < PROBE_FLOWS {
        return (PROBE_PORTS..PROBE_PORTS + PROBE_FLOWS as u16).collect();
    }
    a.sort();
    a
}

/// A probe phase in progress.
struct Phase<'a> {
    lab: &'a EcmpLab,
    key: &'static str,
    label: &'static str,
    ports: Vec<u16>,
    probe: Probe,
    /// The gateway each flow used before the first event (from the
    /// backend's view).
    initial: Vec<Option<Gw>>,
    events: Vec<(Duration, String)>,
    problems: Vec<String>,
    fib: Option<Duration>,
}

impl<'a> Phase<'a> {
    fn start(
        lab: &'a EcmpLab,
        key: &'static str,
        label: &'static str,
        ports: &[u16],
    ) -> Result<Phase<'a>> {
        println!("\n{label}");
        lab.forget_seen()?;
        let flows: Vec<Flow> = ports
            .iter()
            .map(|p| Flow {
                target: SocketAddr::from((VIP, ECHO_PORT)),
                source_port: *p,
            })
            .collect();
        let probe = Probe::start(&lab.client, FLOW_RATE, &flows)?;
        let mut phase = Phase {
            lab,
            key,
            label,
            ports: ports.to_vec(),
            probe,
            initial: Vec::new(),
            events: Vec::new(),
            problems: Vec::new(),
            fib: None,
        };
        phase.event(format!(
            "probe started: {} UDP flows at {FLOW_RATE} pps each",
            ports.len()
        ));
        sleep_unless_interrupted(SETTLE);
        let seen = Gw::BOTH.map(|g| lab.seen(g, "udp"));
        phase.initial = ports
            .iter()
            .map(|p| match (seen[0].contains(p), seen[1].contains(p)) {
                (true, false) => Some(Gw::A),
                (false, true) => Some(Gw::B),
                _ => None,
            })
            .collect();
        let on = |gw: Gw| phase.initial.iter().filter(|g| **g == Some(gw)).count();
        let (a, b) = (on(Gw::A), on(Gw::B));
        phase.event(format!(
            "flows through gw-a: {a}, through gw-b: {b} (seen by the backend host)"
        ));
        Ok(phase)
    }

    fn event(&mut self, what: impl Into<String>) {
        let at = self.probe.started.elapsed();
        let what = what.into();
        println!("  +{:>6.3}s  {what}", at.as_secs_f64());
        self.events.push((at, what));
    }

    /// Waits until the VIP's route has exactly `gws`; logs the time since
    /// `since` (and keeps it as the phase's FIB time when `measure`).
    fn wait_fib(
        &mut self,
        gws: &[Gw],
        since: Instant,
        what: &str,
        within: Duration,
        measure: bool,
    ) {
        let names: Vec<&str> = gws.iter().map(|g| g.label()).collect();
        match self.lab.wait_fib(IpAddr::V4(VIP), 32, &hops(gws), within) {
            Some(_) => {
                let took = since.elapsed();
                if measure {
                    self.fib = Some(took);
                }
                self.event(format!(
                    "router FIB: {VIP} via {} ({} ms after {what})",
                    names.join(" + "),
                    took.as_millis()
                ));
            }
            None => self.problems.push(format!(
                "the router's FIB did not show {VIP} via {} within {} s after {what}",
                names.join(" + "),
                within.as_secs()
            )),
        }
    }

    /// Stops the probe, prints per-flow losses; `lossless`: any loss is a
    /// problem, else only loss on flows that stayed on gw-b.
    fn finish(mut self, lossless: bool) -> Outcome {
        let start = self.probe.started;
        let traces = self.probe.stop();
        let mut lost = [0usize; 2];
        let mut window = [Duration::ZERO; 2];
        for (i, t) in traces.iter().enumerate() {
            let (replies, late) = timely(&t.sent, &t.replies);
            if late > 0 {
                println!(
                    "  flow :{}: {late} replies came more than {} ms late (counted as lost)",
                    self.ports.get(i).copied().unwrap_or(0),
                    LATE.as_millis()
                );
            }
            let g: Vec<Gap> = gaps(start, &t.sent, &replies);
            let n: usize = g.iter().map(|x| x.lost).sum();
            let w = g.iter().filter_map(|x| x.window).max();
            let via = self.initial.get(i).copied().flatten();
            let label = via.map_or("?", Gw::label);
            println!(
                "  flow :{} via {label}: {} sent, lost {n}{}",
                self.ports.get(i).copied().unwrap_or(0),
                t.sent.len(),
                w.map_or(String::new(), |w| format!(", window {} ms", w.as_millis()))
            );
            if g.iter().any(|x| x.window.is_none()) {
                self.problems
                    .push(format!("flow {i}: datagrams lost with no reply after them"));
            }
            let k = via.map_or(1, Gw::index);
            lost[k] += n;
            window[k] = window[k].max(w.unwrap_or_default());
        }
        let total = lost[0] + lost[1];
        if lossless && total > 0 {
            self.problems
                .push(format!("planned: {total} datagrams lost"));
        }
        if !lossless && lost[1] > 0 {
            self.problems
                .push(format!("{} datagrams lost on flows through gw-b", lost[1]));
        }
        if self.initial.iter().any(Option::is_none) {
            self.problems
                .push("a flow was not seen through exactly one gateway before the event".into());
        }
        for p in &self.problems {
            println!("  PROBLEM: {p}");
        }
        let ok = self.problems.is_empty();
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| d.as_millis().to_string());
        result_line(
            self.key,
            &[
                ("planned", lossless.to_string()),
                ("lost", total.to_string()),
                ("lost_gwa", lost[0].to_string()),
                ("lost_gwb", lost[1].to_string()),
                ("window_gwa_ms", window[0].as_millis().to_string()),
                ("window_gwb_ms", window[1].as_millis().to_string()),
                ("fib_ms", ms(self.fib)),
                ("ok", ok.to_string()),
            ],
        );
        Outcome {
            label: self.label,
            ok,
        }
    }
}

/// A reply later than this after its request counts as lost: a frozen
/// gateway answers what waited in its ring when it is continued, seconds
/// late.
const LATE: Duration = Duration::from_secs(1);

/// `replies` without those more than [`LATE`] after their request, and
/// how many were dropped so.
fn timely(sent: &[Instant], replies: &[Option<Instant>]) -> (Vec<Option<Instant>>, usize) {
    let mut late = 0;
    let out = replies
        .iter()
        .zip(sent)
        .map(|(r, s)| match r {
            Some(r) if r.saturating_duration_since(*s) > LATE => {
                late += 1;
                None
            }
            other => *other,
        })
        .collect();
    (out, late)
}

/// (a) planned: drain gw-a, wait past the withdrawal, undrain.
fn drain_phase(lab: &EcmpLab, ports: &[u16]) -> Result<Outcome> {
    let mut p = Phase::start(
        lab,
        "drain",
        "(a) planned: vipgate drain on gw-a, then undrain",
        ports,
    )?;
    let t = Instant::now();
    lab.request(Gw::A, &json!({"cmd": "drain"}))?;
    p.event(format!(
        "gw-a: vipgate drain (GRACEFUL_SHUTDOWN now, withdrawal after {DRAIN_DELAY})"
    ));
    p.wait_fib(&[Gw::B], t, "the drain", FIB_WAIT, true);
    sleep_unless_interrupted(Duration::from_secs(2) + SETTLE);
    let status = lab.request(Gw::A, &json!({"cmd": "status"}))?;
    let drain = status["bgp"]["drain"].as_str().unwrap_or("?").to_string();
    p.event(format!(
        "gw-a: drain delay over, drain state {drain:?} (routes withdrawn)"
    ));
    if drain != "drained" {
        p.problems.push(format!(
            "gw-a's drain state is {drain:?} after the delay, not \"drained\""
        ));
    }
    let t = Instant::now();
    lab.request(Gw::A, &json!({"cmd": "undrain"}))?;
    p.event("gw-a: vipgate undrain");
    p.wait_fib(&Gw::BOTH, t, "the undrain", FIB_WAIT, false);
    sleep_unless_interrupted(SETTLE);
    Ok(p.finish(true))
}

/// (b) gw-a frozen (SIGSTOP): lost until the router's hold timer expires;
/// then continued (it reconnects and announces again).
fn freeze_phase(lab: &EcmpLab, ports: &[u16]) -> Result<Outcome> {
    let mut p = Phase::start(
        lab,
        "freeze",
        "(b) gw-a's daemon frozen with SIGSTOP, then continued",
        ports,
    )?;
    let t = Instant::now();
    lab.freeze(Gw::A, true);
    p.event("gw-a: SIGSTOP (dataplane and BGP stop; the TCP session stays open)");
    let within = Duration::from_secs(HOLD_SECONDS) + FIB_WAIT;
    p.wait_fib(&[Gw::B], t, "the SIGSTOP (hold time 3 s)", within, true);
    sleep_unless_interrupted(SETTLE);
    let t = Instant::now();
    lab.freeze(Gw::A, false);
    p.event("gw-a: SIGCONT");
    p.wait_fib(
        &Gw::BOTH,
        t,
        "the SIGCONT (reconnect after 5 s)",
        FIB_WAIT * 2,
        false,
    );
    sleep_unless_interrupted(SETTLE);
    Ok(p.finish(false))
}

/// (c) gw-a killed (SIGKILL): lost until the router sees the session close.
fn kill_phase(lab: &EcmpLab, ports: &[u16]) -> Result<Outcome> {
    let mut p = Phase::start(lab, "kill", "(c) gw-a's daemon killed with SIGKILL", ports)?;
    let mut tcp = KeptAcrossKill::open(lab)?;
    let picked_before = lab.counter(Gw::B, "conn_picked_up");
    let t = Instant::now();
    lab.kill(Gw::A);
    p.event(format!(
        "gw-a: SIGKILL; the process was gone {} ms later (its BGP connection closes as it exits)",
        t.elapsed().as_millis()
    ));
    p.wait_fib(&[Gw::B], t, "the SIGKILL", FIB_WAIT, true);
    sleep_unless_interrupted(SETTLE);
    let tcp_ok = tcp.after_the_kill(lab, picked_before);
    let mut outcome = p.finish(false);
    outcome.ok &= tcp_ok;
    Ok(outcome)
}

/// TCP connections the kill phase keeps across the SIGKILL.
const KEPT_CONNECTIONS: usize = 16;

/// Connections opened before gw-a is killed, each asked once more after
/// it: the ones gw-a carried must go on through gw-b, which has never seen
/// their SYN (mid-flow pickup: Maglev gives gw-b the backend the flow
/// already has).
struct KeptAcrossKill {
    tcp: KeptConnections,
    /// Each connection's source port and the gateway it went through.
    through: Vec<(u16, Option<Gw>)>,
}

impl KeptAcrossKill {
    fn open(lab: &EcmpLab) -> Result<KeptAcrossKill> {
        let tcp =
            KeptConnections::open(&lab.client, SocketAddr::from((VIP, 80)), KEPT_CONNECTIONS)?;
        let seen = Gw::BOTH.map(|g| lab.seen(g, "tcp"));
        let through = tcp
            .ports()
            .into_iter()
            .map(|port| {
                let gw = Gw::BOTH
                    .into_iter()
                    .find(|g| seen[g.index()].contains(&port));
                (port, gw)
            })
            .collect();
        Ok(KeptAcrossKill { tcp, through })
    }

    /// One more request on every connection; prints and reports whether
    /// all of them were answered.
    fn after_the_kill(&mut self, lab: &EcmpLab, picked_before: u64) -> bool {
        let on_a = self
            .through
            .iter()
            .filter(|(_, g)| *g == Some(Gw::A))
            .count();
        let failed = self.tcp.request_all();
        let picked = lab
            .counter(Gw::B, "conn_picked_up")
            .saturating_sub(picked_before);
        let n = self.through.len();
        println!(
            "  TCP: {n} connections open across the kill, {on_a} of them through gw-a; \
             answered after it: {}; gw-b picked up {picked} mid-flow",
            n - failed.len()
        );
        if !failed.is_empty() {
            println!(
                "  TCP connections that did not go on: {}",
                failed.join(", ")
            );
        }
        // Every connection gw-a carried reached gw-b without a SYN.
        let ok = failed.is_empty() && on_a > 0 && picked >= on_a as u64;
        result_line(
            "kill_tcp",
            &[
                ("connections", n.to_string()),
                ("through_gwa", on_a.to_string()),
                ("failed", failed.len().to_string()),
                ("picked_up", picked.to_string()),
                ("ok", ok.to_string()),
            ],
        );
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_configs_validate_in_both_modes() {
        use crate::config::{validate_str, SystemInterface, SystemView};
        for timing in [false, true] {
            for gw in Gw::BOTH {
                let s = side(gw);
                let a = |t: String| t.parse().expect("test address");
                let lo = SystemInterface::new("lo", vec![a("127.0.0.1/8".into())]);
                let cli = SystemInterface::new(
                    "vg-cli",
                    vec![a(format!("{}/24", s.gw_v4)), a(format!("{}/64", s.gw_v6))],
                );
                let srv = SystemInterface::new(
                    "vg-srv",
                    vec![
                        a(format!("{}/24", s.gw_srv_v4)),
                        a(format!("{}/64", s.gw_srv_v6)),
                    ],
                );
                let view = SystemView::new(vec![lo, cli, srv]);
                let text = gateway_config(gw, Path::new("/run/vipgate/lab/x/gw.sock"), 1, timing);
                assert!(!text.contains('@'), "a placeholder is left");
                if let Err(e) = validate_str(&text, "gw.toml", Some(&view)) {
                    panic!(
                        "{} (timing {timing}) does not validate:\n{e}\n{text}",
                        gw.label()
                    );
                }
            }
        }
    }

    #[test]
    fn router_config_is_a_speak_file() {
        let dir = std::env::temp_dir().join(format!("vgt-{}-ecmp-router", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("router.toml");
        fs::write(&path, ROUTER_CONFIG).expect("write");
        let bgp = crate::bgp::load_speak_config(&path, None);
        let _ = fs::remove_dir_all(&dir);
        let bgp = bgp.expect("the router's config loads");
        assert_eq!(bgp.peers.len(), 2);
        assert!(bgp.peers.iter().all(|p| p.passive));
    }

    #[test]
    fn bird_config_merges_paths_and_honours_graceful_shutdown() {
        let c = bird_config(Path::new("/run/vipgate/lab/x"));
        assert_eq!(c.matches("merge paths yes").count(), 2);
        assert!(c.contains("(65535, 0) ~ bgp_community then bgp_local_pref = 0"));
        assert!(c.contains("protocol bgp gw_a from lab_gateway { neighbor 198.18.1.2 as 65001; }"));
        assert!(c.contains("hold time 3;"));
    }

    #[test]
    fn addresses_map_back_to_gateways() {
        assert_eq!(gw_of("198.18.2.2".parse().expect("addr")), Some(Gw::B));
        assert_eq!(gw_of("2001:db8:1::2".parse().expect("addr")), Some(Gw::A));
        assert_eq!(gw_of("198.18.0.2".parse().expect("addr")), None);
        assert_eq!(hops(&[Gw::B, Gw::A]), hops(&Gw::BOTH));
        let out = "198.18.10.10 from 198.18.0.2 via 198.18.2.2 dev r-b table main \n    cache iif r-cli \n";
        assert_eq!(word_after(out, "via").as_deref(), Some("198.18.2.2"));
    }

    #[test]
    fn nft_set_elements_parse() {
        let doc: Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
                {"set": {"family": "inet", "name": "udp_a", "table": "vglab_ecmp",
                 "type": "inet_service", "flags": ["dynamic"], "elem": [21000, 21003,
                 {"elem": {"val": 22001, "timeout": 60}}]}}]}"#,
        )
        .expect("json");
        assert_eq!(set_elements(&doc), BTreeSet::from([21000, 21003, 22001]));
        assert!(set_elements(&Value::Null).is_empty());
    }

    #[test]
    fn late_replies_count_as_lost() {
        let t0 = Instant::now();
        let sent: Vec<Instant> = (0..4).map(|i| t0 + Duration::from_millis(i)).collect();
        let replies = vec![
            Some(sent[0] + Duration::from_millis(1)),
            Some(sent[1] + LATE + Duration::from_millis(1)),
            None,
        ];
        let (kept, late) = timely(&sent, &replies);
        assert_eq!(late, 1);
        assert_eq!(kept, vec![replies[0], None, None]);
    }
}
