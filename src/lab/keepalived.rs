//! The keepalived pair of `vipgate lab run --scenario failover-compare`:
//! the same two gateways, VRIDs, priorities, 100 ms adverts and sync groups
//! as the vipgate pair, with keepalived 2.2 doing VRRP (kernel VIPs,
//! `virtual_ipaddress`) and the kernel doing the NAT (nftables DNAT of each
//! VIP's echo service to its backend address, `ip_forward` on).
//!
//! Owns keepalived's configuration for one gateway, the kernel NAT rules of
//! a gateway namespace, and the keepalived processes: started in the
//! gateway's namespace, ended by PID (the parent and its VRRP child), on
//! every path. Touches nothing outside the lab's namespaces and directory;
//! only 198.18.0.0/15. LVS (IPVS) is not used: the lab's kernel has no
//! `ip_vs` module.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian's keepalived.
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// One VRRP instance of a gateway, as in `failover-gw.toml`.
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    pub name: &'static str,
    pub interface: &'static str,
    pub vrid: u8,
    pub vip: Ipv4Addr,
    /// Index of the VIP pair (0: vip1's, 1: vip2's) for the priority.
    pub pair: usize,
}

/// The four instances, in the order of `failover-gw.toml`.
pub const INSTANCES: [Instance; 4] = [
    Instance {
        name: "vip1",
        interface: "vg-cli",
        vrid: 51,
        vip: Ipv4Addr::new(198, 18, 10, 10),
        pair: 0,
    },
    Instance {
        name: "vip1-gw",
        interface: "vg-srv",
        vrid: 61,
        vip: Ipv4Addr::new(198, 18, 20, 254),
        pair: 0,
    },
    Instance {
        name: "vip2",
        interface: "vg-cli",
        vrid: 52,
        vip: Ipv4Addr::new(198, 18, 10, 11),
        pair: 1,
    },
    Instance {
        name: "vip2-gw",
        interface: "vg-srv",
        vrid: 62,
        vip: Ipv4Addr::new(198, 18, 20, 253),
        pair: 1,
    },
];

/// keepalived's configuration of one gateway: VRRPv3, adverts every
/// 100 ms, preemption (keepalived's default), both links tracked, the
/// vip1 and vip2 sync groups, kernel VIPs. `priorities` are (vip1's pair,
/// vip2's pair). GARP: keepalived's defaults (5 at once, 5 more after 5 s).
pub fn config(router_id: &str, priorities: (u8, u8)) -> String {
    let mut out = format!("global_defs {{\n  router_id {router_id}\n  vrrp_version 3\n}}\n");
    for (group, members) in [("vip1-pair", "vip1 vip1-gw"), ("vip2-pair", "vip2 vip2-gw")] {
        out += &format!("vrrp_sync_group {group} {{\n  group {{\n    {members}\n  }}\n}}\n");
    }
    for i in INSTANCES {
        let priority = if i.pair == 0 {
            priorities.0
        } else {
            priorities.1
        };
        out += &format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface {ifname}\n  \
             virtual_router_id {vrid}\n  priority {priority}\n  advert_int 0.1\n  \
             track_interface {{\n    vg-cli\n    vg-srv\n  }}\n  \
             virtual_ipaddress {{\n    {vip}/32 dev {ifname}\n  }}\n}}\n",
            name = i.name,
            ifname = i.interface,
            vrid = i.vrid,
            vip = i.vip,
        );
    }
    out
}

/// The nftables ruleset of a gateway: DNAT of each `(vip, port)` to its
/// `(backend, port)` (conntrack undoes it on the replies).
pub fn nat_ruleset(services: &[(SocketAddrV4, SocketAddrV4)]) -> String {
    let mut out = String::from(
        "table ip vgcompare {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for (vip, backend) in services {
        out += &format!(
            "    ip daddr {} udp dport {} dnat to {backend}\n",
            vip.ip(),
            vip.port()
        );
    }
    out += "  }\n}\n";
    out
}

/// Installs `ruleset` in namespace `ns` and turns IPv4 forwarding on there.
pub fn kernel_nat(ns: &crate::netns::NetNs, ns_name: &str, ruleset: &str) -> Result<()> {
    ns.run(|| fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
        .context("net.ipv4.ip_forward=1 in a gateway namespace")?;
    super::nft_apply(ns, ns_name, ruleset, "for kernel NAT")
}

/// One keepalived (parent and VRRP child) in a gateway namespace. Dropping
/// it ends both by PID.
pub struct Keepalived {
    child: Child,
    vrrp_pidfile: PathBuf,
    log: PathBuf,
    /// Where this run's lines start in the (appended) log.
    log_from: u64,
    reaped: bool,
}

impl Keepalived {
    /// Starts keepalived in namespace `ns_name` with `config`; `tag` names
    /// its files in `dir`. Returns once its VRRP child runs.
    pub fn start(ns_name: &str, config: &Path, dir: &Path, tag: &str) -> Result<Keepalived> {
        if !Path::new(KEEPALIVED).exists() {
            bail!("{KEEPALIVED} is missing (apt-get install keepalived)");
        }
        let log = dir.join(format!("{tag}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let log_from = file.metadata()?.len();
        let vrrp_pidfile = dir.join(format!("{tag}-vrrp.pid"));
        let _ = fs::remove_file(&vrrp_pidfile);
        // `ip netns exec` execs keepalived in place (same PID) with the
        // namespace's /sys mounted, as the interop tests run it.
        let child = Command::new("ip")
            .args(["netns", "exec", ns_name, KEEPALIVED, "-n", "-l", "-D"])
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(dir.join(format!("{tag}.pid")))
            .arg("-r")
            .arg(&vrrp_pidfile)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting keepalived")?;
        let mut k = Keepalived {
            child,
            vrrp_pidfile,
            log,
            log_from,
            reaped: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while k.vrrp_pid().is_none() {
            if !k.running() {
                bail!(
                    "keepalived exited during start:\n{}",
                    fs::read_to_string(&k.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("keepalived's VRRP process did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(k)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The VRRP child's PID, if it runs and is keepalived.
    fn vrrp_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(&self.vrrp_pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        cmdline.contains("keepalived").then_some(pid)
    }

    /// Whether the parent still runs.
    pub fn running(&mut self) -> bool {
        !self.reaped && matches!(self.child.try_wait(), Ok(None))
    }

    /// Instance name -> the state it last entered ("MASTER", "BACKUP",
    /// "FAULT"), from this run's log lines "(vip1) Entering MASTER STATE".
    pub fn states(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Ok(mut f) = fs::File::open(&self.log) else {
            return out;
        };
        let mut text = String::new();
        if f.seek(SeekFrom::Start(self.log_from)).is_err() || f.read_to_string(&mut text).is_err() {
            return out;
        }
        for line in text.lines() {
            if let Some((name, state)) = parse_transition(line) {
                out.insert(name.to_string(), state.to_string());
            }
        }
        out
    }

    /// A daemon crash: SIGSTOP to the parent (so it cannot respawn its
    /// child), SIGKILL to the VRRP child, SIGKILL to the parent; reaps.
    /// Neither sends priority 0 nor removes its VIPs.
    pub fn crash(&mut self) {
        if self.reaped {
            return;
        }
        let parent = self.pid().to_string();
        let _ = signal("-STOP", &[&parent]);
        match self.vrrp_pid() {
            Some(c) => {
                let _ = signal("-KILL", &[&c.to_string(), &parent]);
            }
            None => {
                let _ = signal("-KILL", &[&parent]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// SIGTERM without waiting (see [`Keepalived::stop`]).
    pub fn terminate(&self) {
        if !self.reaped {
            let _ = signal("-TERM", &[&self.pid().to_string()]);
        }
    }

    /// SIGTERM (keepalived sends priority 0 and removes its VIPs), then
    /// waits up to `limit`; a crash if it does not exit by then. Whether it
    /// exited on its own.
    pub fn stop(&mut self, limit: Duration) -> bool {
        if self.reaped {
            return true;
        }
        let _ = signal("-TERM", &[&self.pid().to_string()]);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                // The VRRP child exits before its parent; make sure.
                if let Some(c) = self.vrrp_pid() {
                    let _ = signal("-KILL", &[&c.to_string()]);
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.crash();
        false
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// `kill SIG PID...` through /bin/kill (no unsafe here).
fn signal(sig: &str, pids: &[&str]) -> Result<()> {
    let status = Command::new("kill")
        .arg(sig)
        .args(pids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kill {sig} {pids:?} failed");
    }
    Ok(())
}

/// ("vip1", "MASTER") from a keepalived log line
/// "... (vip1) Entering MASTER STATE".
fn parse_transition(line: &str) -> Option<(&str, &str)> {
    let at = line.find(") Entering ")?;
    let name = &line[line[..at].rfind('(')? + 1..at];
    let state = line[at + ") Entering ".len()..].split_whitespace().next()?;
    Some((name, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_parse_from_keepalived_log_lines() {
        assert_eq!(
            parse_transition("Tue Nov 24 21:00:00 2026: (vip1-gw) Entering MASTER STATE"),
            Some(("vip1-gw", "MASTER"))
        );
        assert_eq!(
            parse_transition("(vip2) Entering BACKUP STATE (init)"),
            Some(("vip2", "BACKUP"))
        );
        assert_eq!(parse_transition("(vip2) Sending gratuitous ARP"), None);
    }

    #[test]
    fn config_mirrors_the_vipgate_gateway() {
        let text = config("gw-a", (150, 100));
        for needle in [
            "vrrp_version 3",
            "vrrp_instance vip1 {",
            "virtual_router_id 61",
            "advert_int 0.1",
            "198.18.20.253/32 dev vg-srv",
            "vip1 vip1-gw",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert_eq!(text.matches("priority 150").count(), 2);
        assert_eq!(text.matches("priority 100").count(), 2);
    }

    #[test]
    fn nat_ruleset_has_one_dnat_per_service() {
        let r = nat_ruleset(&[(
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, 10), 7),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 20, 2), 80),
        )]);
        assert!(r.contains("ip daddr 198.18.10.10 udp dport 7 dnat to 198.18.20.2:80"));
    }
}
