//! The candidates in the gateway namespace: vipgate (`vipgate run` with a
//! generated config), the kernel's nftables DNAT, a raw AF_PACKET
//! reflector, the same reflector on AF_XDP (an experiment, in
//! [`crate::xdp`]), and "direct" (no gateway at all: the generator sends
//! on its own link to the sink).
//!
//! Owns what it arms in the gateway namespace (the daemon process, the
//! nftables tables `vgbench`/`vgbrefl`, `ip_forward`, the reflector
//! thread) and disarms it on drop, so that only one candidate is ever
//! armed and an idle one costs the next one nothing. Processes are ended
//! by pid. It must not touch the other namespaces.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use vipgate::netns::NetNs;
use vipgate_dataplane::io::afpacket::{AfPacket, AfPacketConfig, Interface, RingConfig};
use vipgate_dataplane::io::{PacketIo, Verdict};

use crate::topo::{addr, stopped, sysctl, Port, Topology};
use crate::wire::Target;

/// A gateway under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Candidate {
    /// vipgate's userspace NAT (AF_PACKET backend).
    Vipgate,
    /// Linux nftables DNAT (conntrack), kernel forwarding.
    Nft,
    /// AF_PACKET receive, MAC rewrite, send: the I/O path without NAT.
    Reflector,
    /// The reflector with AF_XDP (copy mode) I/O: an experiment, not in
    /// --quick (bench/src/xdp.rs).
    #[value(name = "xdp-reflector")]
    #[serde(rename = "xdp-reflector")]
    XdpReflector,
    /// No gateway: generator and sink on one link.
    Direct,
}

impl Candidate {
    pub fn label(self) -> &'static str {
        match self {
            Candidate::Vipgate => "vipgate",
            Candidate::Nft => "nft DNAT",
            Candidate::Reflector => "reflector",
            Candidate::XdpReflector => "xdp-reflector",
            Candidate::Direct => "direct",
        }
    }
}

/// How to run vipgate.
#[derive(Debug, Clone)]
pub struct VipgateOpts {
    pub binary: PathBuf,
    pub workers: u16,
    pub conn_capacity: u32,
}

/// An armed candidate; dropping it disarms.
pub enum Armed {
    Vipgate(Daemon),
    /// Held for its `Drop` (removes the rules).
    Nft(#[allow(dead_code)] NftDnat),
    Reflector(Reflector),
    XdpReflector(crate::xdp::XdpReflector),
    Direct,
}

impl Armed {
    pub fn arm(topo: &Topology, cand: Candidate, opts: &VipgateOpts) -> Result<Armed> {
        Ok(match cand {
            Candidate::Vipgate => Armed::Vipgate(Daemon::start(topo, opts)?),
            Candidate::Nft => Armed::Nft(NftDnat::arm(&topo.gw)?),
            Candidate::Reflector => Armed::Reflector(Reflector::start(topo)?),
            Candidate::XdpReflector => {
                Armed::XdpReflector(crate::xdp::XdpReflector::start(topo, Rewrite::of(topo))?)
            }
            Candidate::Direct => Armed::Direct,
        })
    }

    pub fn candidate(&self) -> Candidate {
        match self {
            Armed::Vipgate(_) => Candidate::Vipgate,
            Armed::Nft(_) => Candidate::Nft,
            Armed::Reflector(_) => Candidate::Reflector,
            Armed::XdpReflector(_) => Candidate::XdpReflector,
            Armed::Direct => Candidate::Direct,
        }
    }

    /// The processes this candidate runs (left out of the foreign load).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Armed::Vipgate(d) => vec![d.pid()],
            _ => Vec::new(),
        }
    }

    /// Datagrams the gateway says it forwarded so far (vipgate's
    /// `forwarded` counters, the reflector's own count; the kernel keeps
    /// none per rule here).
    pub fn forwarded(&self) -> Option<u64> {
        match self {
            Armed::Vipgate(d) => d.counter("forwarded"),
            Armed::Reflector(r) => Some(r.forwarded.load(Ordering::Relaxed)),
            Armed::XdpReflector(r) => Some(r.counters.forwarded.load(Ordering::Relaxed)),
            Armed::Nft(_) | Armed::Direct => None,
        }
    }

    /// The generator link and the frames' addressing for this candidate.
    pub fn target<'t>(&self, topo: &'t Topology) -> (&'t Port, Target) {
        if let Armed::Direct = self {
            return (
                &topo.d0,
                Target {
                    src_mac: topo.d0.mac,
                    dst_mac: topo.d1.mac,
                    dst_ip: addr::DIRECT_SINK,
                    dst_port: addr::UDP_PORT,
                },
            );
        }
        (
            &topo.c0,
            Target {
                src_mac: topo.c0.mac,
                dst_mac: topo.vg_cli.mac,
                dst_ip: addr::VIP,
                dst_port: addr::UDP_PORT,
            },
        )
    }
}

// ------------------------------------------------------------------ vipgate

/// `vipgate run` in the gateway namespace.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    fn start(topo: &Topology, opts: &VipgateOpts) -> Result<Daemon> {
        let socket = topo.dir.join("vipgate.sock");
        let config = topo.dir.join("vipgate.toml");
        fs::write(&config, vipgate_config(&socket, opts))?;
        let log = fs::File::create(topo.dir.join("vipgate.log"))?;
        // One worker: the whole daemon on the gateway core. More: every
        // core (the workers pin themselves in order).
        let cores = if opts.workers <= 1 {
            topo.cores.gateway.to_string()
        } else {
            format!("{},{}", topo.cores.load, topo.cores.gateway)
        };
        let mut cmd = topo.gw.command("taskset");
        crate::sys::die_with_parent(&mut cmd);
        let child = cmd
            .arg("-c")
            .arg(&cores)
            .arg(&opts.binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} run", opts.binary.display()))?;
        let mut d = Daemon { child, socket };
        d.wait_ready(&topo.dir.join("vipgate.log"))?;
        Ok(d)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.status().is_some() {
                return Ok(());
            }
            if let Some(code) = self.child.try_wait()? {
                bail!(
                    "vipgate exited ({code}) during start:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline || stopped() {
                bail!("vipgate did not answer within 30 s (see {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status(&self) -> Option<Value> {
        vipgate::control::request(&self.socket, &json!({"cmd": "status"})).ok()
    }

    /// Sum of counter `name` over the workers.
    pub fn counter(&self, name: &str) -> Option<u64> {
        let s = self.status()?;
        Some(
            s["workers"]
                .as_array()?
                .iter()
                .filter_map(|w| w["counters"][name].as_u64())
                .sum(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon restores what it changed; SIGKILL after 10 s.
        let _ = crate::sys::signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's configuration: one UDP service (the forwarding tests)
/// and one TCP service (cps), each with one backend on the sink host.
pub fn vipgate_config(socket: &Path, opts: &VipgateOpts) -> String {
    format!(
        r#"# Generated by vipgate-bench.
[node]
name = "bench-gw"
control_socket = {socket:?}

[[interface]]
name = "vg-cli"
role = "client"

[[interface]]
name = "vg-srv"
role = "backend"

[dataplane]
workers = {workers}
conn_capacity = {cap}

[dataplane.timeouts]
udp = "300s"

[[service]]
name = "bench-udp"
vip = "{vip}"
port = {udp}
protocol = "udp"

  [[service.backend]]
  address = "{sink}"
  port = {udp}

[[service]]
name = "bench-tcp"
vip = "{vip}"
port = {tcp}
protocol = "tcp"

  [[service.backend]]
  address = "{sink}"
  port = {tcp}
"#,
        socket = socket.display().to_string(),
        workers = opts.workers,
        cap = opts.conn_capacity,
        vip = addr::VIP,
        sink = addr::SINK,
        udp = addr::UDP_PORT,
        tcp = addr::TCP_PORT,
    )
}

// ------------------------------------------------------------- nftables

/// Kernel forwarding with one nftables DNAT rule per service.
pub struct NftDnat {
    gw: NetNs,
}

impl NftDnat {
    fn arm(gw: &NetNs) -> Result<NftDnat> {
        let rules = format!(
            "table ip vgbench {{\n\
               chain pre {{\n\
                 type nat hook prerouting priority dstnat; policy accept;\n\
                 ip daddr {vip} udp dport {udp} dnat to {sink}:{udp}\n\
                 ip daddr {vip} tcp dport {tcp} dnat to {sink}:{tcp}\n\
               }}\n\
             }}\n",
            vip = addr::VIP,
            sink = addr::SINK,
            udp = addr::UDP_PORT,
            tcp = addr::TCP_PORT,
        );
        nft(gw, &rules)?;
        let armed = NftDnat {
            gw: gw.try_clone()?,
        };
        gw.run(|| sysctl("net/ipv4/ip_forward", "1"))??;
        Ok(armed)
    }
}

impl Drop for NftDnat {
    fn drop(&mut self) {
        let _ = self.gw.run(|| sysctl("net/ipv4/ip_forward", "0"));
        let _ = nft(&self.gw, "delete table ip vgbench\n");
    }
}

/// Runs `nft -f -` with `script` in `ns`.
pub fn nft(ns: &NetNs, script: &str) -> Result<()> {
    let mut child = Topology::command(ns, "nft")
        .args(["-f", "-"])
        .spawn()
        .context("running nft (nftables)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("nft stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

// ------------------------------------------------------------ reflector

/// vipgate-dataplane's AF_PACKET I/O with no NAT: a frame from the client
/// link to the VIP gets the sink's MAC as destination and the backend
/// link's as source and goes out of the backend link. The kernel's copy is
/// dropped at ingress as vipgate's daemon does (nftables netdev table).
pub struct Reflector {
    gw: NetNs,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub forwarded: Arc<AtomicU64>,
}

impl Reflector {
    fn start(topo: &Topology) -> Result<Reflector> {
        let rules = format!(
            "table netdev vgbrefl {{\n\
               chain in {{\n\
                 type filter hook ingress device \"vg-cli\" priority 0; policy accept;\n\
                 ip daddr {vip} drop\n\
               }}\n\
             }}\n",
            vip = addr::VIP
        );
        nft(&topo.gw, &rules)?;
        let gw = topo.gw.try_clone()?;
        let ifaces: Vec<Interface> = [&topo.vg_cli, &topo.vg_srv]
            .iter()
            .map(|p| Interface {
                ifindex: p.index,
                name: p.name.to_string(),
                extra_macs: Vec::new(),
            })
            .collect();
        let mut cfg = AfPacketConfig::new(ifaces, 0x7b00, vec![addr::VIP.into()]);
        // vipgate's default ring (configs/lab.toml).
        cfg.ring = RingConfig {
            block_size: 262_144,
            block_count: 64,
            frame_size: 2048,
            block_timeout: Duration::from_millis(1),
        };
        let io = match topo.gw.run(|| AfPacket::open(&cfg)) {
            Ok(Ok(io)) => io,
            Ok(Err(e)) | Err(e) => {
                let _ = nft(&topo.gw, "delete table netdev vgbrefl\n");
                return Err(e).context("opening the reflector's AF_PACKET sockets");
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let rewrite = Rewrite::of(topo);
        let (core, s, f) = (topo.cores.gateway, stop.clone(), forwarded.clone());
        let thread = std::thread::Builder::new()
            .name("bench-reflector".into())
            .spawn(move || {
                let _ = vipgate_dataplane::io::sys::pin_current_thread(core);
                reflect(io, rewrite, &s, &f);
            })?;
        Ok(Reflector {
            gw,
            stop,
            thread: Some(thread),
            forwarded,
        })
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = nft(&self.gw, "delete table netdev vgbrefl\n");
    }
}

/// The reflectors' per-frame work (AF_PACKET and AF_XDP share it).
#[derive(Debug, Clone, Copy)]
pub struct Rewrite {
    from: u32,
    out: u32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vip: [u8; 4],
}

impl Rewrite {
    /// vg-cli to vg-srv, toward the sink's MAC.
    pub fn of(topo: &Topology) -> Rewrite {
        Rewrite {
            from: topo.vg_cli.index,
            out: topo.vg_srv.index,
            src_mac: topo.vg_srv.mac,
            dst_mac: topo.s0.mac,
            vip: addr::VIP.octets(),
        }
    }

    /// The reflector's whole per-frame work.
    pub fn apply(&self, ifindex: u32, frame: &mut [u8]) -> Verdict {
        let to_vip = ifindex == self.from
            && frame.len() >= 34
            && frame[12..14] == [0x08, 0x00]
            && frame[30..34] == self.vip;
        if !to_vip {
            return Verdict::Drop;
        }
        frame[0..6].copy_from_slice(&self.dst_mac);
        frame[6..12].copy_from_slice(&self.src_mac);
        Verdict::Tx {
            ifindex: self.out,
            len: frame.len(),
        }
    }
}

fn reflect(mut io: AfPacket, rw: Rewrite, stop: &AtomicBool, forwarded: &AtomicU64) {
    // Same poll timeout as vipgate's workers.
    let timeout = Duration::from_millis(10);
    while !stop.load(Ordering::Relaxed) {
        let mut n = 0u64;
        let polled = io.poll_batch(timeout, &mut |meta, frame| {
            let v = rw.apply(meta.ifindex, frame);
            if let Verdict::Tx { .. } = v {
                n += 1;
            }
            v
        });
        if polled.is_err() {
            std::thread::sleep(timeout);
        }
        forwarded.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflector_rewrites_only_vip_frames_from_the_client_link() {
        let rw = Rewrite {
            from: 3,
            out: 4,
            src_mac: [2, 0, 0, 0, 0, 4],
            dst_mac: [2, 0, 0, 0, 0, 9],
            vip: [198, 18, 10, 10],
        };
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[30..34].copy_from_slice(&[198, 18, 10, 10]);
        let before = frame.clone();
        assert_eq!(
            rw.apply(3, &mut frame),
            Verdict::Tx {
                ifindex: 4,
                len: 60
            }
        );
        assert_eq!(&frame[0..12], &[2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 4]);
        assert_eq!(&frame[12..], &before[12..]);
        assert_eq!(rw.apply(4, &mut before.clone()), Verdict::Drop);
        let mut other = before.clone();
        other[33] = 11;
        assert_eq!(rw.apply(3, &mut other), Verdict::Drop);
    }

    #[test]
    fn generated_config_passes_vipgate_check() {
        let opts = VipgateOpts {
            binary: PathBuf::from("vipgate"),
            workers: 1,
            conn_capacity: 1 << 20,
        };
        let text = vipgate_config(Path::new("/run/vipgate-bench/x.sock"), &opts);
        // Parse with vipgate's own reader (schema only: the check of the
        // system's links needs the bench namespace).
        if let Err(e) = vipgate::config::validate_str(&text, "bench.toml", None) {
            panic!("generated config rejected: {e}");
        }
    }
}
