//! The bench network: three namespaces, their links, addresses, routes,
//! sysctls, receive-packet steering, and tearing them down.
//!
//! Owns the namespaces `vgb<pid>-gen`, `vgb<pid>-gw` and `vgb<pid>-snk`
//! (removed when the [`Topology`] is dropped, also after Ctrl-C: the
//! signal only sets [`stopped`], every loop checks it and unwinds through
//! the drops) and the stop flag. It must not touch anything outside these
//! namespaces; it uses only 198.18.0.0/15.
//!
//! ```text
//!  <p>-gen (generator, cps client)   <p>-gw (candidate gateway)     <p>-snk (sink, backends)
//!  c0 198.18.0.2/24 (+.10-.41) ───── vg-cli 198.18.0.1/24
//!                                    vg-srv 198.18.20.1/24 ──────── s0 198.18.20.2/24
//!  d0 198.18.30.1/24 ───────────────────────────────────────────── d1 198.18.30.2/24 (no gateway)
//!                                                                  lo 198.18.10.10/32 (VIP, for the reflector)
//! ```
//!
//! Cores: the generator and the sink run on the load core, the gateway on
//! the gateway core alone. RPS sends the receive processing of vg-cli and
//! vg-srv to the gateway core (so the kernel's own forwarding runs there
//! too: veth receives on the sender's CPU otherwise) and that of c0, s0,
//! d0 and d1 to the load core.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use vipgate::netlink::RtNetlink;
use vipgate::netns::NetNs;
use vipgate::sys::{Offload, OffloadGuard};

/// Addresses of the bench network.
pub mod addr {
    use std::net::Ipv4Addr;

    pub const GEN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const GW_CLI: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const GW_SRV: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
    pub const SINK: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
    pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
    pub const DIRECT_GEN: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 1);
    pub const DIRECT_SINK: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 2);
    /// UDP port of the forwarding service on the VIP and on the sink.
    pub const UDP_PORT: u16 = 7000;
    /// TCP port of the cps service on the VIP and on the backend.
    pub const TCP_PORT: u16 = 80;
    /// Extra client addresses on c0 for the cps scenario.
    pub const CPS_CLIENTS: u8 = 32;
    pub fn cps_client(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + i % CPS_CLIENTS)
    }
}

/// Set by SIGINT/SIGTERM: every loop of the harness stops early.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the SIGINT/SIGTERM handlers that set the stop flag.
pub fn watch_signals() -> Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    vipgate::daemon::install_signal_handlers(flag.clone())
}

/// Whether the run was asked to stop.
pub fn stopped() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: &'static str,
    pub index: u32,
    pub mac: [u8; 6],
}

/// Which core does what.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Cores {
    /// Generator and sink (and the cps client and backend).
    pub load: usize,
    /// The gateway, alone.
    pub gateway: usize,
}

impl Cores {
    /// The last allowed core for the gateway, the first for the load.
    pub fn pick() -> Result<Cores> {
        let cpus = vipgate_dataplane::io::sys::allowed_cpus();
        match (cpus.first(), cpus.last()) {
            (Some(&load), Some(&gateway)) if load != gateway => Ok(Cores { load, gateway }),
            _ => bail!("the bench needs at least 2 CPUs (allowed: {cpus:?})"),
        }
    }
}

/// The running bench network. Dropping it deletes the namespaces.
pub struct Topology {
    pub prefix: String,
    pub cores: Cores,
    /// Scratch directory for configs and logs, removed on drop.
    pub dir: PathBuf,
    pub c0: Port,
    pub d0: Port,
    pub vg_cli: Port,
    pub vg_srv: Port,
    pub s0: Port,
    pub d1: Port,
    pub gen: NetNs,
    pub gw: NetNs,
    pub sink: NetNs,
}

impl Topology {
    /// Builds the network with namespace prefix `vgb<pid>`.
    pub fn up(cores: Cores) -> Result<Topology> {
        let prefix = format!("vgb{}", std::process::id());
        let dir = PathBuf::from("/run/vipgate-bench").join(&prefix);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let gen = NetNs::create(&format!("{prefix}-gen"))?;
        let gw = NetNs::create(&format!("{prefix}-gw"))?;
        let sink = NetNs::create(&format!("{prefix}-snk"))?;
        let placeholder = |name| Port {
            name,
            index: 0,
            mac: [0; 6],
        };
        let mut topo = Topology {
            prefix,
            cores,
            dir,
            c0: placeholder("c0"),
            d0: placeholder("d0"),
            vg_cli: placeholder("vg-cli"),
            vg_srv: placeholder("vg-srv"),
            s0: placeholder("s0"),
            d1: placeholder("d1"),
            gen,
            gw,
            sink,
        };
        topo.wire().context("building the bench network")?;
        topo.tune().context("tuning the bench network")?;
        Ok(topo)
    }

    fn wire(&mut self) -> Result<()> {
        let mut gw = RtNetlink::open_in(&self.gw)?;
        let mut gen = RtNetlink::open_in(&self.gen)?;
        let mut snk = RtNetlink::open_in(&self.sink)?;
        gw.add_veth("vg-cli", "c0")?;
        gw.add_veth("vg-srv", "s0")?;
        gen.add_veth("d0", "d1")?;
        let c0 = port(&mut gw, "c0")?.index;
        gw.move_link_to_netns(c0, &self.gen)?;
        let s0 = port(&mut gw, "s0")?.index;
        gw.move_link_to_netns(s0, &self.sink)?;
        let d1 = port(&mut gen, "d1")?.index;
        gen.move_link_to_netns(d1, &self.sink)?;
        self.vg_cli = port(&mut gw, "vg-cli")?;
        self.vg_srv = port(&mut gw, "vg-srv")?;
        self.c0 = port(&mut gen, "c0")?;
        self.d0 = port(&mut gen, "d0")?;
        self.s0 = port(&mut snk, "s0")?;
        self.d1 = port(&mut snk, "d1")?;
        let v4 = IpAddr::V4;
        gw.add_addr(self.vg_cli.index, v4(addr::GW_CLI), 24)?;
        gw.add_addr(self.vg_srv.index, v4(addr::GW_SRV), 24)?;
        gen.add_addr(self.c0.index, v4(addr::GEN), 24)?;
        for i in 0..addr::CPS_CLIENTS {
            gen.add_addr(self.c0.index, v4(addr::cps_client(i)), 24)?;
        }
        gen.add_addr(self.d0.index, v4(addr::DIRECT_GEN), 24)?;
        snk.add_addr(self.s0.index, v4(addr::SINK), 24)?;
        snk.add_addr(self.d1.index, v4(addr::DIRECT_SINK), 24)?;
        snk.add_addr(1, v4(addr::VIP), 32)?;
        gw.set_link_up(self.vg_cli.index, true)?;
        gw.set_link_up(self.vg_srv.index, true)?;
        gen.set_link_up(self.c0.index, true)?;
        gen.set_link_up(self.d0.index, true)?;
        snk.set_link_up(self.s0.index, true)?;
        snk.set_link_up(self.d1.index, true)?;
        // Permanent neighbours on every hop: no ARP in any measurement,
        // and a gateway never drops a first packet while it resolves.
        gw.add_permanent_neighbour(self.vg_cli.index, v4(addr::GEN), self.c0.mac)?;
        for i in 0..addr::CPS_CLIENTS {
            gw.add_permanent_neighbour(self.vg_cli.index, v4(addr::cps_client(i)), self.c0.mac)?;
        }
        gw.add_permanent_neighbour(self.vg_srv.index, v4(addr::SINK), self.s0.mac)?;
        gen.add_permanent_neighbour(self.c0.index, v4(addr::GW_CLI), self.vg_cli.mac)?;
        snk.add_permanent_neighbour(self.s0.index, v4(addr::GW_SRV), self.vg_srv.mac)?;
        gen.add_route(
            v4(addr::VIP),
            32,
            Some(v4(addr::GW_CLI)),
            Some(self.c0.index),
        )?;
        snk.add_route(
            v4(Ipv4Addr::UNSPECIFIED),
            0,
            Some(v4(addr::GW_SRV)),
            Some(self.s0.index),
        )?;
        Ok(())
    }

    /// Sysctls, offloads and RPS.
    fn tune(&self) -> Result<()> {
        let gw_links = ["vg-cli", "vg-srv"];
        self.gw.run(|| -> Result<()> {
            sysctl("net/ipv4/ip_forward", "0")?;
            no_rp_filter(&gw_links)?;
            // Like a NIC with receive checksum offload: conntrack does not
            // verify every checksum in software (vipgate verifies a flow's
            // first packet in full and no other).
            let _ = sysctl("net/netfilter/nf_conntrack_checksum", "0");
            offloads_off(&gw_links)
        })??;
        self.sink.run(|| -> Result<()> {
            sysctl("net/ipv4/ip_forward", "0")?;
            no_rp_filter(&["s0", "d1"])?;
            sysctl("net/ipv4/tcp_max_syn_backlog", "8192")?;
            sysctl("net/core/somaxconn", "8192")?;
            offloads_off(&["s0", "d1"])
        })??;
        self.gen.run(|| -> Result<()> {
            sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
            offloads_off(&["c0", "d0"])
        })??;
        let gw_mask = format!("{:x}", 1u64 << self.cores.gateway);
        let load_mask = format!("{:x}", 1u64 << self.cores.load);
        self.rps(&self.gw, &[("vg-cli", &gw_mask), ("vg-srv", &gw_mask)])?;
        self.rps(&self.sink, &[("s0", &load_mask), ("d1", &load_mask)])?;
        self.rps(&self.gen, &[("c0", &load_mask), ("d0", &load_mask)])?;
        Ok(())
    }

    /// Writes `rps_cpus` of each link. sysfs shows the links of the
    /// namespace it was mounted in, so this goes through `ip netns exec`,
    /// which mounts a fresh /sys for the namespace.
    fn rps(&self, ns: &NetNs, masks: &[(&str, &str)]) -> Result<()> {
        let script: String = masks
            .iter()
            .map(|(link, mask)| {
                format!("echo {mask} > /sys/class/net/{link}/queues/rx-0/rps_cpus;")
            })
            .collect();
        Topology::sh_in(ns, &script, "setting RPS")
    }

    /// Runs `sh -ec script` through `ip netns exec`, which mounts a /sys of
    /// namespace `ns` (sysfs otherwise shows the links of the namespace it
    /// was mounted in). A failure is "`what` in NAME: stderr".
    pub fn sh_in(ns: &NetNs, script: &str, what: &str) -> Result<()> {
        let name = ns.name().ok_or_else(|| anyhow!("unnamed netns"))?;
        let out = Command::new("ip")
            .args(["netns", "exec", name, "sh", "-ec", script])
            .stdin(Stdio::null())
            .output()
            .context("running ip netns exec (iproute2)")?;
        if !out.status.success() {
            bail!(
                "{what} in {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A `Command` run in namespace `ns` (for nft).
    pub fn command(ns: &NetNs, program: &str) -> Command {
        let mut c = ns.command(program);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The NetNs fields delete their namespaces right after this.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn port(nl: &mut RtNetlink, name: &'static str) -> Result<Port> {
    let link = nl
        .link_by_name(name)?
        .ok_or_else(|| anyhow!("link {name} not found after creating it"))?;
    Ok(Port {
        name,
        index: link.index,
        mac: link.mac,
    })
}

/// Writes `/proc/sys/<key>` of the calling thread's namespace.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    fs::write(&path, value).with_context(|| format!("writing {value:?} to {path}"))
}

fn no_rp_filter(links: &[&str]) -> Result<()> {
    for key in ["all", "default"].iter().chain(links) {
        sysctl(&format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
    }
    Ok(())
}

/// Wire-sized frames on every bench link: no GRO (veth would take the NAPI
/// path and aggregate), no TSO/GSO. The namespaces go away with the links,
/// so there is nothing to restore.
fn offloads_off(links: &[&str]) -> Result<()> {
    for link in links {
        OffloadGuard::disable(link, &[Offload::Tso, Offload::Gso, Offload::Gro])
            .map(std::mem::forget)
            .map_err(|e| anyhow!("offloads of {link}: {e}"))?;
    }
    Ok(())
}

/// Removes namespaces `vgb<pid>-*` left by runs whose process is gone
/// (a run killed with SIGKILL cannot clean up). Returns what it removed.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in NetNs::list_named()? {
        let Some(pid) = name
            .strip_prefix("vgb")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        vipgate::netns::delete_named(&name)?;
        let _ = fs::remove_dir_all(PathBuf::from("/run/vipgate-bench").join(format!("vgb{pid}")));
        removed.push(name);
    }
    Ok(removed)
}
