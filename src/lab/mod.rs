//! `vipgate lab`: the original experiment, built in network namespaces on
//! this machine, with vipgate's dataplane in the middle.
//!
//! Owns the lab topology (namespaces, veth links, addresses, routes), the
//! processes it starts (the daemon in the gateway namespace, the web
//! servers in the backend namespace), the scenarios that send client
//! traffic through the VIP, and tearing all of it down. It must not touch
//! anything outside the namespaces it creates, and uses only 198.18.0.0/15
//! and 2001:db8::/32.
//!
//! ```text
//!  <lab>-cli                 <lab>-gw (vipgate run)                 <lab>-srv
//!  c0 198.18.0.2/24  ──── vg-cli 198.18.0.1/24                      s0 198.18.20.2/24
//!     2001:db8::2/64         2001:db8::1/64                            2001:db8:20::2/64
//!                            vg-srv 198.18.20.1/24  ───────────────    web80 web81 web82
//!                                   2001:db8:20::1/64                  (HTTP + UDP)
//!  VIPs 198.18.10.10 (tcp/80, udp/7) and 2001:db8:10::10 (tcp/80), routed via the gateway.
//! ```
//!
//! `lab up` leaves everything running and records the process ids under
//! `/run/vipgate/lab/<name>/`; `lab down` ends those processes by pid and
//! deletes the namespaces. `lab run` does up, the scenario, and down, on
//! every path.

mod ecmp;
mod failover;
mod keepalived;
mod probe;
pub mod router;
mod scenario;
pub mod serve;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

use crate::netlink::RtNetlink;
use crate::netns::NetNs;
use crate::privileges;

/// The lab's configuration, embedded so the lab needs only the binary.
pub const LAB_CONFIG: &str = include_str!("../../configs/lab.toml");

/// Set by SIGINT/SIGTERM while a lab runs: scenarios stop early and the lab
/// is torn down as on any other path.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether the lab was asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

fn watch_signals() -> Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    crate::daemon::install_signal_handlers(flag.clone())
}

/// Backend ports of the web servers (the original experiment's 80, 81, 82).
pub const BACKEND_PORTS: [u16; 3] = [80, 81, 82];

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build the lab, run a scenario through the dataplane, tear it down.
    /// Exits 0 only if every backend answered through the VIPs.
    Run {
        #[arg(long, default_value = "smoke")]
        scenario: scenario::Scenario,
        /// Lab name: prefix of its namespaces.
        #[arg(long, default_value = "vglab")]
        name: String,
        /// Requests per VIP and protocol.
        #[arg(long, default_value_t = 30)]
        requests: u32,
        /// Dataplane workers of the gateway.
        #[arg(long, default_value_t = 2)]
        workers: u16,
        /// The upstream router of `--scenario ecmp` and `ecmp-timing`.
        #[arg(long, value_enum, default_value_t = ecmp::Router::Builtin)]
        router: ecmp::Router,
        /// Rounds of every trigger in `--scenario ecmp-timing`.
        #[arg(long, default_value_t = 10)]
        repeat: u32,
    },
    /// Build the lab and leave it running (see `lab down`).
    Up {
        #[arg(long, default_value = "vglab")]
        name: String,
        #[arg(long, default_value_t = 2)]
        workers: u16,
    },
    /// Stop the lab's processes and delete its namespaces.
    Down {
        #[arg(long, default_value = "vglab")]
        name: String,
    },
    /// The backend host's web servers (started by the lab).
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',', default_values_t = BACKEND_PORTS)]
        ports: Vec<u16>,
        /// Bind to these addresses instead of `[::]`.
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<std::net::IpAddr>,
    },
    /// The ECMP lab's upstream router: holds the BGP sessions of FILE's
    /// [bgp] (the `route speak` format, usually passive peers), announces
    /// nothing, and installs the best paths of what the peers announce into
    /// this namespace's kernel FIB, one multipath route per prefix (`proto
    /// bgp`); removes them on SIGTERM/SIGINT.
    #[command(hide = true)]
    Router {
        #[arg(long, short)]
        config: PathBuf,
    },
}

impl LabCommand {
    /// What `vipgate` without arguments runs.
    pub fn default_run() -> LabCommand {
        LabCommand::Run {
            scenario: scenario::Scenario::Smoke,
            name: "vglab".into(),
            requests: 30,
            workers: 2,
            router: ecmp::Router::Builtin,
            repeat: 10,
        }
    }
}

pub fn main(command: LabCommand) -> Result<ExitCode> {
    match command {
        LabCommand::Serve { ports, addresses } => {
            serve::serve(&ports, &addresses).map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Router { config } => router::run(&config),
        LabCommand::Down { name } => {
            privileges::require_lab()?;
            let removed = down(&name)?;
            println!("lab {name}: {removed}");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Up { name, workers } => {
            privileges::require_lab()?;
            let lab = Lab::up(&name, workers)?;
            println!("{}", lab.describe());
            lab.keep();
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Run {
            scenario,
            name,
            requests,
            workers,
            router,
            repeat,
        } => {
            privileges::require_lab()?;
            watch_signals()?;
            if scenario == scenario::Scenario::Ecmp {
                return ecmp::run(&name, workers, router);
            }
            if scenario == scenario::Scenario::EcmpTiming {
                return ecmp::run_timing(&name, workers, router, repeat);
            }
            if scenario == scenario::Scenario::Failover {
                return failover::run(&name, workers);
            }
            if scenario == scenario::Scenario::FailoverCompare {
                return failover::run_compare(&name, workers);
            }
            let lab = Lab::up(&name, workers)?;
            println!("{}", lab.describe());
            let ok = scenario::run(scenario, &lab, requests);
            if interrupted() {
                drop(lab);
                bail!("interrupted; the lab was torn down");
            }
            let status = lab.daemon_status();
            drop(lab);
            match ok {
                Ok(true) => {
                    if let Some(s) = status {
                        println!("\ngateway status at the end:\n{s}");
                    }
                    println!("lab {name}: PASS: every backend answered through the VIPs");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(false) => {
                    if let Some(s) = status {
                        println!("\ngateway status at the end:\n{s}");
                    }
                    println!("lab {name}: FAIL: not every backend answered (see above)");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Addresses of the lab network.
pub mod net {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const GW_CLI_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const GW_SRV_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
    pub const BACKEND_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
    pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    pub const GW_CLI_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    pub const GW_SRV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, 0, 1);
    pub const BACKEND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, 0, 2);
    pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);

    pub fn v4(a: Ipv4Addr) -> IpAddr {
        IpAddr::V4(a)
    }
    pub fn v6(a: Ipv6Addr) -> IpAddr {
        IpAddr::V6(a)
    }
}

/// A running lab. Dropping it tears everything down (unless kept).
pub struct Lab {
    pub name: String,
    pub client: NetNs,
    pub gateway: NetNs,
    pub backend: NetNs,
    pub dir: PathBuf,
    pub socket: PathBuf,
    children: Vec<Child>,
    kept: bool,
}

fn lab_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/vipgate/lab").join(name)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 10
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("lab name {name:?}: use 1-10 of A-Z a-z 0-9 - _ (it prefixes namespace names)");
    }
    Ok(())
}

impl Lab {
    /// Builds the topology, starts the web servers and the daemon, and
    /// waits until the daemon answers on its control socket.
    pub fn up(name: &str, workers: u16) -> Result<Lab> {
        check_name(name)?;
        let dir = lab_dir(name);
        if dir.exists()
            || NetNs::list_named()?
                .iter()
                .any(|n| n.starts_with(&format!("{name}-")))
        {
            bail!("a lab named {name} is already up; run `vipgate lab down --name {name}` first");
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("control.sock");
        // Namespaces first, each owned (deleted on drop) until kept.
        let made = (|| -> Result<(NetNs, NetNs, NetNs)> {
            let client = NetNs::create(&format!("{name}-cli"))?;
            let gateway = NetNs::create(&format!("{name}-gw"))?;
            let backend = NetNs::create(&format!("{name}-srv"))?;
            Ok((client, gateway, backend))
        })();
        let (client, gateway, backend) = match made {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.context("creating the lab's namespaces"));
            }
        };
        let mut lab = Lab {
            name: name.into(),
            client,
            gateway,
            backend,
            dir,
            socket,
            children: Vec::new(),
            kept: false,
        };
        lab.wire().context("building the lab network")?;
        lab.start_backend()?;
        lab.start_daemon(workers)?;
        Ok(lab)
    }

    /// Links, addresses and routes.
    fn wire(&self) -> Result<()> {
        use net::*;
        for ns in [&self.client, &self.gateway, &self.backend] {
            ns.run(no_dad)??;
        }
        let mut gw = RtNetlink::open_in(&self.gateway)?;
        let mut cli = RtNetlink::open_in(&self.client)?;
        let mut srv = RtNetlink::open_in(&self.backend)?;
        gw.add_veth("vg-cli", "c0")?;
        gw.add_veth("vg-srv", "s0")?;
        let c0 = index(&mut gw, "c0")?;
        gw.move_link_to_netns(c0, &self.client)?;
        let s0 = index(&mut gw, "s0")?;
        gw.move_link_to_netns(s0, &self.backend)?;
        let vg_cli = index(&mut gw, "vg-cli")?;
        let vg_srv = index(&mut gw, "vg-srv")?;
        let c0 = index(&mut cli, "c0")?;
        let s0 = index(&mut srv, "s0")?;
        for (ns, ifname) in [
            (&self.gateway, "vg-cli"),
            (&self.gateway, "vg-srv"),
            (&self.client, "c0"),
            (&self.backend, "s0"),
        ] {
            let ifname = ifname.to_string();
            ns.run(move || no_dad_on(&ifname))??;
        }
        gw.add_addr(vg_cli, v4(GW_CLI_V4), 24)?;
        gw.add_addr(vg_cli, v6(GW_CLI_V6), 64)?;
        gw.add_addr(vg_srv, v4(GW_SRV_V4), 24)?;
        gw.add_addr(vg_srv, v6(GW_SRV_V6), 64)?;
        cli.add_addr(c0, v4(CLIENT_V4), 24)?;
        cli.add_addr(c0, v6(CLIENT_V6), 64)?;
        srv.add_addr(s0, v4(BACKEND_V4), 24)?;
        srv.add_addr(s0, v6(BACKEND_V6), 64)?;
        gw.set_link_up(vg_cli, true)?;
        gw.set_link_up(vg_srv, true)?;
        cli.set_link_up(c0, true)?;
        srv.set_link_up(s0, true)?;
        // The client reaches the VIPs through the gateway; the backend host
        // sends everything back through it (NAT needs the replies).
        cli.add_route(v4(VIP_V4), 32, Some(v4(GW_CLI_V4)), Some(c0))?;
        cli.add_route(v6(VIP_V6), 128, Some(v6(GW_CLI_V6)), Some(c0))?;
        srv.add_route("0.0.0.0".parse()?, 0, Some(v4(GW_SRV_V4)), Some(s0))?;
        srv.add_route("::".parse()?, 0, Some(v6(GW_SRV_V6)), Some(s0))?;
        // Wire-sized frames: no TSO/GSO on the hosts' ends (a super-frame
        // would reach the dataplane as one oversized frame). The daemon
        // turns offloads off on its own links itself.
        for (ns, ifname) in [(&self.client, "c0"), (&self.backend, "s0")] {
            let ifname = ifname.to_string();
            ns.run(move || {
                crate::sys::OffloadGuard::disable(
                    &ifname,
                    &[
                        crate::sys::Offload::Tso,
                        crate::sys::Offload::Gso,
                        crate::sys::Offload::Gro,
                    ],
                )
                .map(std::mem::forget)
            })??;
        }
        Ok(())
    }

    fn start_backend(&mut self) -> Result<()> {
        let exe = std::env::current_exe()?;
        let log = fs::File::create(self.dir.join("backend.log"))?;
        let child = self
            .backend
            .command(&exe)
            .args(["lab", "serve", "--ports", "80,81,82"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the lab's web servers")?;
        self.record(child)?;
        // Wait until port 80 accepts on the backend host.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = self.backend.run(|| {
                std::net::TcpStream::connect_timeout(
                    &(net::BACKEND_V4, 80).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            })?;
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the lab's web servers did not start (see {}/backend.log)",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_daemon(&mut self, workers: u16) -> Result<()> {
        let config = lab_config(&self.socket, workers);
        let config_path = self.dir.join("lab.toml");
        fs::write(&config_path, config)?;
        let exe = std::env::current_exe()?;
        let log = fs::File::create(self.dir.join("daemon.log"))?;
        let child = self
            .gateway
            .command(&exe)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the gateway daemon")?;
        self.record(child)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.daemon_status().is_some() {
                return Ok(());
            }
            if let Some(code) = self
                .children
                .last_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
                bail!("the gateway daemon exited ({code}) during start:\n{log}");
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway daemon did not answer within 20 s (see {}/daemon.log)",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn record(&mut self, child: Child) -> Result<()> {
        let line = format!("{}\n", child.id());
        self.children.push(child);
        let path = self.dir.join("pids");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&line);
        fs::write(&path, text)?;
        Ok(())
    }

    /// The daemon's status, rendered; `None` if it does not answer.
    pub fn daemon_status(&self) -> Option<String> {
        crate::control::request(&self.socket, &serde_json::json!({"cmd": "status"}))
            .ok()
            .map(|d| crate::cli::render_status(&d))
    }

    pub fn describe(&self) -> String {
        format!(
            "lab {name}: namespaces {name}-cli (client), {name}-gw (vipgate), {name}-srv (web80/81/82)\n\
             VIPs {}:80/tcp, {}:7/udp, [{}]:80/tcp; daemon log {}/daemon.log\n\
             status: vipgate status --socket {}",
            net::VIP_V4,
            net::VIP_V4,
            net::VIP_V6,
            self.dir.display(),
            self.socket.display(),
            name = self.name,
        )
    }

    /// Leaves the lab running for `lab down`.
    pub fn keep(mut self) {
        self.kept = true;
        self.children.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept {
            // Namespaces stay: disown them.
            for ns in [&mut self.client, &mut self.gateway, &mut self.backend] {
                ns.disown();
            }
            return;
        }
        for child in self.children.iter_mut().rev() {
            stop_child(child);
        }
        // The NetNs values delete their namespaces when dropped right after.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, wait up to 5 s (the daemon restores its changes), then SIGKILL.
fn stop_child(child: &mut Child) {
    terminate_pid(child.id() as i32);
    reap_by(
        std::slice::from_mut(child),
        Instant::now() + Duration::from_secs(5),
    );
}

/// Waits until `deadline` for each of `children` (already asked to stop)
/// to exit; SIGKILLs and reaps the ones still running then.
fn reap_by(children: &mut [Child], deadline: Instant) {
    for c in children {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(c.try_wait(), Ok(Some(_))) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn terminate_pid(pid: i32) {
    send_signal(pid, libc::SIGTERM);
}

/// kill(2) of a process the lab started.
fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal);
    }
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `lab down`: ends recorded processes by pid, deletes namespaces and the
/// lab directory. Says what it removed.
pub fn down(name: &str) -> Result<String> {
    check_name(name)?;
    let dir = lab_dir(name);
    let mut stopped = 0;
    if let Ok(text) = fs::read_to_string(dir.join("pids")) {
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        // The daemon (started last) first: it restores its changes.
        for pid in pids.iter().rev() {
            if pid_alive(*pid) && is_vipgate(*pid) {
                terminate_pid(*pid);
                let deadline = Instant::now() + Duration::from_secs(5);
                while pid_alive(*pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if pid_alive(*pid) {
                    send_signal(*pid, libc::SIGKILL);
                }
                stopped += 1;
            }
        }
    }
    let mut deleted = 0;
    let mut names = vec![
        format!("{name}-cli"),
        format!("{name}-gw"),
        format!("{name}-srv"),
    ];
    names.extend(failover::namespace_names(name));
    names.extend(ecmp::namespace_names(name));
    for ns in NetNs::list_named()? {
        if names.contains(&ns) {
            NetNs::open(&ns)?.delete_named()?;
            deleted += 1;
        }
    }
    let _ = fs::remove_dir_all(&dir);
    if stopped == 0 && deleted == 0 {
        return Ok("nothing to remove".into());
    }
    Ok(format!(
        "stopped {stopped} process(es), deleted {deleted} namespace(s)"
    ))
}

/// Only signal pids that still run vipgate (a recorded pid may be reused).
fn is_vipgate(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|c| c.contains("vipgate") || c.contains("lab"))
        .unwrap_or(false)
}

/// Worker counter `name` of a daemon's `status` answer, summed over its
/// workers (0 where the answer has none).
fn worker_counter(status: &serde_json::Value, name: &str) -> u64 {
    status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["counters"][name].as_u64().unwrap_or(0))
        .sum()
}

/// Runs `ip -n NS ARGS` (iproute2: bridge ports, policy rules and the
/// like, beyond the lab's netlink helpers).
fn ip(ns: &str, args: &str) -> Result<()> {
    ip_out(ns, args).map(drop)
}

/// `ip -n NS ARGS`'s output.
fn ip_out(ns: &str, args: &str) -> Result<String> {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nft -f -` with `rules` in namespace `ns` (named `ns_name` in errors);
/// `why` says what the rules are for when nft cannot be run.
fn nft_apply(ns: &NetNs, ns_name: &str, rules: &str, why: &str) -> Result<()> {
    use std::io::Write;
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running nft (nftables) {why}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f in {ns_name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts the lab's web servers (`vipgate lab serve`, ports 80-82) in
/// `ns`, bound to `addresses` (all: `[::]`), output in `log`; returns once
/// port 80 of every address in `check` accepts (10 s at most; the process
/// is ended otherwise).
fn start_web_servers(
    ns: &NetNs,
    log: &Path,
    addresses: &[std::net::IpAddr],
    check: &[std::net::IpAddr],
) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let out = fs::File::create(log)?;
    let mut command = ns.command(&exe);
    command.args(["lab", "serve", "--ports", "80,81,82"]);
    if !addresses.is_empty() {
        let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        command.arg("--addresses").arg(list.join(","));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting the lab's web servers")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let check = check.to_vec();
        let ok = ns.run(move || {
            check.iter().all(|a| {
                std::net::TcpStream::connect_timeout(&(*a, 80).into(), Duration::from_millis(200))
                    .is_ok()
            })
        })?;
        if ok {
            return Ok(child);
        }
        if Instant::now() > deadline {
            stop_child(&mut child);
            bail!(
                "the lab's web servers did not start (see {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `vipgate run --config CONFIG` in `ns` (output appended to
/// `log`) and returns once it answers on its control socket `socket` (20 s
/// at most; the process is ended otherwise). `label` names it in errors.
fn start_daemon(
    ns: &NetNs,
    config: &Path,
    log: &Path,
    socket: &Path,
    label: &str,
) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = ns
        .command(&exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {label}'s daemon"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = crate::control::request(socket, &serde_json::json!({"cmd": "status"}));
        if status.is_ok() {
            return Ok(child);
        }
        if let Ok(Some(code)) = child.try_wait() {
            let text = fs::read_to_string(log).unwrap_or_default();
            bail!("{label}'s daemon exited ({code}) during start:\n{text}");
        }
        if Instant::now() > deadline || interrupted() {
            stop_child(&mut child);
            bail!(
                "{label}'s daemon did not answer within 20 s (see {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn index(nl: &mut RtNetlink, name: &str) -> Result<u32> {
    Ok(nl
        .link_by_name(name)?
        .ok_or_else(|| anyhow!("link {name} not found after creating it"))?
        .index)
}

/// Turns duplicate address detection off for new links of the calling
/// thread's namespace, so IPv6 addresses work at once.
fn no_dad() -> Result<()> {
    for key in ["all", "default"] {
        fs::write(format!("/proc/sys/net/ipv6/conf/{key}/accept_dad"), "0")?;
    }
    Ok(())
}

fn no_dad_on(ifname: &str) -> Result<()> {
    fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "0")?;
    Ok(())
}

/// The lab config with this lab's control socket and worker count.
pub fn lab_config(socket: &Path, workers: u16) -> String {
    LAB_CONFIG
        .replace(
            "# control_socket = \"/run/vipgate/control.sock\"",
            &format!("control_socket = {:?}", socket.display().to_string()),
        )
        .replace("workers = 2", &format!("workers = {workers}"))
}
