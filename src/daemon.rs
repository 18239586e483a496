//! The gateway daemon: `vipgate run --config FILE`.
//!
//! Owns the start sequence (validate, resolve links, build snapshots, change
//! the system, open packet I/O, start workers), the control plane loop
//! (neighbour resolution, route and neighbour mirroring, status requests,
//! signals) and the shutdown that puts every system change back.
//!
//! Start is all or nothing: the configuration is validated against the
//! system before anything changes, and every change is a guard on one
//! [`SystemChanges`] stack, so a failure at any step (or a signal) restores
//! what was done so far, in reverse order.
//!
//! BGP ([`crate::bgp`]): the speaker starts right after the control socket,
//! before any system change (a refused listener stops the start having
//! changed nothing), and announces nothing until the dataplane runs; then
//! `ecmp` mode announces the serviceable VIPs and `vrrp` mode follows the
//! VIP states the VRRP thread publishes. Shutdown withdraws every route
//! first (bounded), lets the dataplane forward [`WITHDRAW_SETTLE`] longer
//! while the routers move away, then VRRP resigns and its grace runs, then
//! the workers stop.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use vipgate_dataplane::conntrack::{ConnTableConfig, Timeouts};
use vipgate_dataplane::counters::{Counter, DropReason};
use vipgate_dataplane::flow::{Addr16, L4Proto};
use vipgate_dataplane::io::afpacket::{self, AfPacket, AfPacketConfig};
use vipgate_dataplane::io::memory::MemIo;
use vipgate_dataplane::pipeline::{Pipeline, PipelineConfig};
use vipgate_dataplane::sched::{
    endpoint_key, SchedBackend, SchedOptions, SchedTable, SchedulerKind,
};
use vipgate_dataplane::snapshot::{
    Backend, Interface, NextHopSnapshot, Published, Route, Service, ServiceSnapshot, Vip,
};
use vipgate_dataplane::worker::{self, Tables, WorkerEvent, WorkerHandle};

use crate::bgp::{self, Bgp};
use crate::config::{
    self, AnnounceMode, Config, InterfaceRole, IoBackend, Protocol, Scheduler, VipMode,
};
use crate::control::{ControlServer, Handler};
use crate::netlink::{Family, Link, RouteSocket, RtNetlink};
use crate::privileges;
use crate::sys::{self, IngressFilter, NftIngressGuard, Offload, OffloadGuard, SystemChanges};
use crate::vrrp::{
    self,
    instance::VipState,
    run::{Request, VrrpRuntime},
};

/// How often routes and neighbours are mirrored from the kernel even
/// without a miss.
const MIRROR_EVERY: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<()> {
    privileges::require_daemon()?;
    let mut nl = RtNetlink::open().context("opening rtnetlink")?;
    let view = system_view(&mut nl)?;
    let config = config::load_and_validate(path, &view).map_err(|e| anyhow!("{e}"))?;
    info!(node = %config.node.name, config = %path.display(), "configuration valid");
    let links = resolve_links(&mut nl, &config)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers(stop.clone())?;
    let mut changes = SystemChanges::new();
    let outcome = run_with(&config, &links, nl, &mut changes, &stop);
    for change in changes.describe() {
        debug!(%change, "restoring");
    }
    if let Err(errors) = changes.restore_all() {
        for e in &errors {
            warn!(error = %e, "could not restore a system change");
        }
        if outcome.is_ok() {
            bail!(
                "{} system change(s) could not be restored (see the log)",
                errors.len()
            );
        }
    }
    info!("stopped; system changes restored");
    outcome
}

fn run_with(
    config: &Config,
    links: &[Link],
    mut nl: RtNetlink,
    changes: &mut SystemChanges,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    // VRRP VIPs start inactive: an instance starts as backup.
    let vip_states: HashMap<IpAddr, VipState> = config
        .vrrp
        .instances
        .iter()
        .flat_map(|i| i.vips.iter().map(|v| (*v, VipState::Inactive)))
        .collect();
    let snapshot = build_services(config, links, 1, &vip_states)?;
    let all_links = nl.links().context("listing links")?;
    let addrs = nl.addrs().context("listing addresses")?;
    let vrrp_plan = vrrp::run::plan(config, &all_links, &addrs)?;
    let mut vips: Vec<IpAddr> = config.services.iter().map(|s| s.vip).collect();
    vips.extend(vip_states.keys().copied());
    vips.sort();
    vips.dedup();
    let services = Arc::new(Published::new(snapshot));
    let nexthops = Arc::new(Published::new(read_nexthops(&mut nl, links, 1)?));
    let tables = Tables {
        services: services.clone(),
        nexthops: nexthops.clone(),
    };
    let memory_io = config.dataplane.io == IoBackend::Memory;
    let workers = worker_count(config);
    // Everything that allocates or can be refused comes before the first
    // system change: connection tables, then the control socket (a second
    // daemon on the same socket stops here, having changed nothing).
    let mut pipelines = Vec::with_capacity(workers);
    for id in 0..workers {
        let pipeline = Pipeline::new(&PipelineConfig {
            worker: id,
            conn: conn_config(config, id),
            expire_budget: 256,
        })
        .map_err(|e| anyhow!("dataplane.conn_capacity / timeouts: {e}"))?;
        pipelines.push(pipeline);
    }
    let state = Arc::new(StatusState {
        node: config.node.name.clone(),
        started: Instant::now(),
        vrrp: OnceLock::new(),
        bgp: OnceLock::new(),
        services: services.clone(),
        workers: pipelines
            .iter()
            .map(|p| (p.counters(), p.backend_gauges()))
            .collect(),
    });
    let control = start_control(&config.node.control_socket, state.clone())?;
    // The speaker binds its listener now (a refused bind changes nothing)
    // but announces only once the dataplane runs.
    let bgp = start_bgp(config, &mut nl)?;
    if let Some(b) = &bgp {
        let _ = state.bgp.set(b.clone());
    }
    if !memory_io {
        prepare_system(config, links, &vips, changes)?;
    }
    let (events_tx, events) = mpsc::sync_channel(1024);
    let mut handles = Vec::with_capacity(workers);
    let cores = vipgate_dataplane::io::sys::allowed_cpus();
    let group = (std::process::id() & 0xffff) as u16;
    for (id, pipeline) in pipelines.into_iter().enumerate() {
        let core = cores.get(id % cores.len().max(1)).copied();
        let handle = if memory_io {
            worker::spawn(
                id,
                core,
                MemIo::new(),
                pipeline,
                tables.clone(),
                events_tx.clone(),
            )?
        } else {
            let io = AfPacket::open(&af_packet_config(config, links, group, &vips))
                .with_context(|| format!("opening AF_PACKET sockets for worker {id}"))?;
            worker::spawn(id, core, io, pipeline, tables.clone(), events_tx.clone())?
        };
        handles.push(handle);
    }
    drop(events_tx);
    info!(
        workers,
        io = if memory_io { "memory" } else { "af_packet" },
        services = config.services.len(),
        "dataplane running"
    );
    resolve_backends(&mut nl, &services.load());
    if let Some(b) = bgp
        .as_deref()
        .filter(|_| config.bgp.mode == AnnounceMode::Ecmp)
    {
        b.set_policy(bgp::Policy::new(config, &bgp::route_attrs(&config.bgp)?).wanted_ecmp(config));
    }
    let vrrp = if vrrp_plan.instances.is_empty() {
        None
    } else {
        let counters = state.workers.iter().map(|(c, _)| c.clone()).collect();
        let publish = publisher(config, links, services.clone(), counters, bgp.clone());
        let runtime = vrrp::run::spawn(vrrp_plan, publish)?;
        let _ = state.vrrp.set(runtime.shared());
        info!(instances = config.vrrp.instances.len(), "VRRP running");
        Some(runtime)
    };
    let result = control_loop(
        &mut nl,
        links,
        &nexthops,
        &events,
        &handles,
        Protocols {
            vrrp: vrrp.as_ref(),
            bgp: bgp.as_deref(),
        },
        stop,
    );
    // Routes first: withdraw everything (bounded) while the dataplane
    // forwards, give the routers WITHDRAW_SETTLE to move their traffic,
    // then VRRP's planned switchover (masters resign and the workers keep
    // forwarding through the grace period), then the workers stop.
    if let Some(b) = bgp {
        b.shutdown();
        std::thread::sleep(WITHDRAW_SETTLE);
    }
    if let Some(v) = vrrp {
        v.shutdown();
    }
    for h in handles {
        let id = h.id;
        if let Err(e) = h.join() {
            warn!(worker = id, error = %e, "worker stopped with an error");
        }
    }
    // Dropping the server removes its socket file.
    drop(control);
    result
}

/// How long the dataplane keeps forwarding after the BGP withdrawals on
/// shutdown, for the routers to stop sending traffic here.
const WITHDRAW_SETTLE: Duration = Duration::from_secs(1);

/// Starts the BGP speaker when `[bgp]` has peers (routes come later).
fn start_bgp(config: &Config, nl: &mut RtNetlink) -> Result<Option<Arc<Bgp>>> {
    if config.bgp.peers.is_empty() {
        return Ok(None);
    }
    // Refuse attributes the speaker cannot send before anything starts.
    bgp::route_attrs(&config.bgp)?;
    let view = system_view(nl)?;
    Ok(Some(Arc::new(Bgp::start(
        &config.bgp,
        Some(&view),
        Some(config.bgp.mode),
    )?)))
}

/// Longest a VIP move waits for every worker to use the new snapshot.
const SNAPSHOT_ACK_WAIT: Duration = Duration::from_millis(60);

/// A socket that hears link and route changes (`RTNLGRP_LINK`,
/// `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`).
fn route_events() -> std::io::Result<RouteSocket> {
    let mut sock = RouteSocket::open()?;
    for group in [1, 7, 11] {
        sock.join_group(group)?;
    }
    Ok(sock)
}

/// Rebuilds and publishes the service snapshot whenever VRRP moves a VIP,
/// and returns once every worker handles packets with it (or after
/// [`SNAPSHOT_ACK_WAIT`]): the VRRP thread sends gratuitous ARPs only then,
/// so clients that move find the VIP's services in place.
fn publisher(
    config: &Config,
    links: &[Link],
    services: Arc<Published<ServiceSnapshot>>,
    workers: Vec<Arc<vipgate_dataplane::counters::WorkerCounters>>,
    bgp: Option<Arc<Bgp>>,
) -> vrrp::run::Publish {
    // `vrrp` mode: announce what this node masters, once the snapshot is
    // in place; withdraw what it no longer masters.
    let policy = bgp
        .filter(|_| config.bgp.mode == AnnounceMode::Vrrp)
        .and_then(|b| {
            let attrs = bgp::route_attrs(&config.bgp).ok()?;
            Some((b, bgp::Policy::new(config, &attrs)))
        });
    let config = config.clone();
    let links = links.to_vec();
    let mut generation = 1;
    Box::new(move |states| {
        generation += 1;
        match build_services(&config, &links, generation, states) {
            Ok(snapshot) => services.store(snapshot),
            Err(e) => {
                warn!(error = %e, "could not rebuild the service snapshot");
                return;
            }
        }
        let deadline = Instant::now() + SNAPSHOT_ACK_WAIT;
        while workers
            .iter()
            .any(|w| w.get(Counter::ServiceGeneration) < generation)
        {
            if Instant::now() >= deadline {
                debug!(generation, "not every worker took the new snapshot in time");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some((bgp, policy)) = &policy {
            bgp.set_policy(policy.wanted_vrrp(states));
        }
    })
}

/// The control-plane protocols the control loop watches and ticks.
struct Protocols<'a> {
    vrrp: Option<&'a VrrpRuntime>,
    bgp: Option<&'a Bgp>,
}

/// Resolves neighbour misses, mirrors the kernel's routes and neighbours,
/// and watches the workers, until a signal arrives.
fn control_loop(
    nl: &mut RtNetlink,
    links: &[Link],
    nexthops: &Published<NextHopSnapshot>,
    events: &Receiver<WorkerEvent>,
    workers: &[WorkerHandle],
    protocols: Protocols<'_>,
    stop: &AtomicBool,
) -> Result<()> {
    let Protocols { vrrp, bgp } = protocols;
    let mut generation = 1;
    let mut last_mirror = Instant::now();
    let mut asked: HashMap<(u32, Addr16), Instant> = HashMap::new();
    // Link and route changes re-mirror at once (a link that comes back
    // must be routable before VRRP makes this node master again), not only
    // every MIRROR_EVERY.
    let mut changes = match route_events() {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "not watching link and route events; mirroring every second only");
            None
        }
    };
    let mut notifications = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut refresh = false;
        if let Some(sock) = changes.as_mut() {
            while matches!(vrrp::socket::poll_readable(&[sock.as_raw_fd()], Duration::ZERO), Ok(r) if !r.is_empty())
            {
                notifications.clear();
                // ENOBUFS (events lost) means re-reading, which follows.
                let _ = sock.recv_notifications(&mut notifications);
                refresh = true;
            }
        }
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(WorkerEvent::NeighbourMiss { ifindex, addr }) => {
                let again = asked
                    .get(&(ifindex, addr))
                    .is_none_or(|t| t.elapsed() > Duration::from_millis(500));
                if again {
                    asked.insert((ifindex, addr), Instant::now());
                    if let Err(e) = nl.request_resolution(ifindex, addr.to_ip()) {
                        debug!(ifindex, addr = %addr.to_ip(), error = %e, "neighbour resolution request failed");
                    }
                    refresh = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(w) = workers.iter().find(|w| w.is_finished()) {
            bail!("worker {} stopped unexpectedly", w.id);
        }
        if vrrp.is_some_and(|v| v.is_finished()) {
            bail!("the VRRP thread stopped unexpectedly");
        }
        if let Some(b) = bgp {
            b.tick(Instant::now());
        }
        if !asked.is_empty() && last_mirror.elapsed() > Duration::from_millis(50) {
            refresh = true;
        }
        if refresh || last_mirror.elapsed() >= MIRROR_EVERY {
            generation += 1;
            match read_nexthops(nl, links, generation) {
                Ok(snapshot) => {
                    asked.retain(|(ifindex, addr), t| {
                        t.elapsed() < Duration::from_secs(3)
                            && !snapshot.has_neighbour(*ifindex, *addr)
                    });
                    nexthops.store(snapshot);
                }
                Err(e) => warn!(error = %e, "could not read routes and neighbours"),
            }
            last_mirror = Instant::now();
        }
    }
    info!("signal received, shutting down");
    Ok(())
}

/// Asks the kernel to resolve every backend's next hop now, so the first
/// connections do not wait for a miss.
fn resolve_backends(nl: &mut RtNetlink, snapshot: &ServiceSnapshot) {
    let mut done = std::collections::HashSet::new();
    for b in snapshot.services.iter().flat_map(|s| &s.backends) {
        let addr = b.addr.to_ip();
        if !done.insert(addr) {
            continue;
        }
        match nl.route_get(addr) {
            Ok(Some(hit)) => {
                let hop = hit.gateway.unwrap_or(addr);
                if let Err(e) = nl.request_resolution(hit.oif, hop) {
                    debug!(backend = %addr, error = %e, "resolution request failed");
                }
            }
            Ok(None) => warn!(backend = %addr, "no route to backend"),
            Err(e) => debug!(backend = %addr, error = %e, "route lookup failed"),
        }
    }
}

/// Sets `stop` on the first SIGINT or SIGTERM (watched on its own thread).
pub fn install_signal_handlers(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("vipgate-signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                stop.store(true, Ordering::Relaxed);
            })
        })?;
    Ok(())
}

/// The control socket, served on its own thread; dropping it stops serving.
struct ControlThread {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_control(path: &Path, state: Arc<StatusState>) -> Result<ControlThread> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = rt
        .block_on(async { ControlServer::bind(path) })
        .with_context(|| format!("control socket {}", path.display()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vipgate-control".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = server.serve(state) => {}
                    _ = rx => {}
                }
            })
        })?;
    info!(socket = %path.display(), "control socket ready");
    Ok(ControlThread {
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// What `vipgate status` reads.
struct StatusState {
    node: String,
    started: Instant,
    /// Set once the VRRP thread runs.
    vrrp: OnceLock<Arc<vrrp::run::Shared>>,
    /// Set once the BGP speaker runs.
    bgp: OnceLock<Arc<Bgp>>,
    services: Arc<Published<ServiceSnapshot>>,
    workers: Vec<(
        Arc<vipgate_dataplane::counters::WorkerCounters>,
        Arc<vipgate_dataplane::counters::BackendGauges>,
    )>,
}

impl StatusState {
    fn bgp(&self) -> Result<&Bgp> {
        self.bgp
            .get()
            .map(|b| &**b)
            .ok_or_else(|| anyhow!("this daemon runs no BGP speaker ([bgp] has no peer)"))
    }
}

/// `route.*`, `bgp.peers`, `drain`, `undrain`.
fn bgp_command(bgp: &Bgp, cmd: &str, request: &Value) -> Result<Value> {
    match cmd {
        "route.announce" => {
            let (prefix, attrs) = bgp::route_from_request(request)?;
            bgp.operator_announce(prefix, attrs);
            Ok(json!({ "prefix": prefix.to_string() }))
        }
        "route.withdraw" => {
            let text = request["prefix"]
                .as_str()
                .ok_or_else(|| anyhow!("missing \"prefix\""))?;
            let prefix = bgp::parse_prefix(text)?;
            if !bgp.operator_withdraw(&prefix) {
                bail!("{prefix} was not announced with `vipgate route announce`");
            }
            Ok(json!({ "prefix": prefix.to_string() }))
        }
        "route.list" => {
            let peer = match request["peer"].as_str() {
                Some(p) => Some(
                    p.parse::<IpAddr>()
                        .map_err(|_| anyhow!("invalid peer address {p:?}"))?,
                ),
                None => None,
            };
            Ok(bgp.rib_json(peer))
        }
        "bgp.peers" => Ok(bgp.peers_json()),
        "drain" => {
            let delay = bgp.drain(Instant::now());
            Ok(json!({ "withdraw_in_ms": delay.as_millis() as u64 }))
        }
        "undrain" => {
            bgp.undrain();
            Ok(json!({}))
        }
        other => bail!("unknown BGP command {other:?}"),
    }
}

impl Handler for StatusState {
    fn handle(&self, cmd: &str, request: &Value) -> Result<Value> {
        let instance = || {
            request["instance"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{cmd}: missing \"instance\""))
        };
        let vrrp = || {
            self.vrrp
                .get()
                .ok_or_else(|| anyhow!("this daemon runs no VRRP instance"))
        };
        match cmd {
            "status" => Ok(self.status()),
            "vrrp.resign" => vrrp()?.request(Request::Resign(instance()?)),
            "vrrp.resume" => vrrp()?.request(Request::Resume(instance()?)),
            "vrrp.events" => {
                let after = request["after"].as_u64().unwrap_or(0);
                Ok(json!({ "events": vrrp()?.events_after(after) }))
            }
            "route.announce" | "route.withdraw" | "route.list" | "bgp.peers" | "drain"
            | "undrain" => bgp_command(self.bgp()?, cmd, request),
            other => bail!(
                "unknown command {other:?}; known: status, vrrp.resign, vrrp.resume, vrrp.events, \
                 route.announce, route.withdraw, route.list, bgp.peers, drain, undrain"
            ),
        }
    }
}

impl StatusState {
    fn status(&self) -> Value {
        let snapshot = self.services.load();
        let services: Vec<Value> = snapshot
            .services
            .iter()
            .map(|s| {
                let backends: Vec<Value> = s
                    .backends
                    .iter()
                    .map(|b| {
                        let per_worker: Vec<u32> =
                            self.workers.iter().map(|(_, g)| g.get(b.id)).collect();
                        json!({
                            "address": b.addr.to_ip().to_string(),
                            "port": b.port,
                            "weight": b.weight,
                            "connections": per_worker.iter().map(|n| u64::from(*n)).sum::<u64>(),
                            "connections_per_worker": per_worker,
                        })
                    })
                    .collect();
                json!({
                    "name": s.name,
                    "vip": s.vip.to_ip().to_string(),
                    "port": s.port,
                    "protocol": s.proto.as_str(),
                    "scheduler": s.scheduler.as_str(),
                    "backends": backends,
                })
            })
            .collect();
        let workers: Vec<Value> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, (c, _))| {
                let counters: BTreeMap<&str, u64> =
                    Counter::ALL.iter().map(|k| (k.name(), c.get(*k))).collect();
                let drops: BTreeMap<&str, u64> = DropReason::ALL
                    .iter()
                    .map(|r| (r.name(), c.drops(*r)))
                    .collect();
                json!({ "worker": i, "counters": counters, "drops": drops })
            })
            .collect();
        json!({
            "node": self.node,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "generation": snapshot.generation,
            "services": services,
            "vrrp": self.vrrp.get().map_or(Value::Null, |v| v.status()),
            "bgp": self.bgp.get().map_or(Value::Null, |b| b.status_json(Instant::now())),
            "workers": workers,
        })
    }
}

// ------------------------------------------------------------ set-up steps

/// The links and addresses `vipgate check` compares the config against.
pub fn system_view(nl: &mut RtNetlink) -> Result<config::SystemView> {
    let links = nl.links().context("listing links")?;
    let addrs = nl.addrs().context("listing addresses")?;
    let interfaces = links
        .iter()
        .map(|l| {
            let addresses = addrs
                .iter()
                .filter(|a| a.index == l.index)
                .filter_map(|a| config::InterfaceAddress::new(a.addr, a.prefix_len))
                .collect();
            config::SystemInterface::new(l.name.clone(), addresses)
        })
        .collect();
    Ok(config::SystemView::new(interfaces))
}

fn resolve_links(nl: &mut RtNetlink, config: &Config) -> Result<Vec<Link>> {
    let mut out = Vec::new();
    for i in &config.interfaces {
        let link = nl
            .link_by_name(&i.name)?
            .ok_or_else(|| anyhow!("interface {:?} disappeared after the check", i.name))?;
        if !link.up {
            warn!(interface = %i.name, "interface is down");
        }
        out.push(link);
    }
    Ok(out)
}

fn role_of<'a>(config: &'a Config, link: &Link) -> Option<&'a InterfaceRole> {
    config
        .interfaces
        .iter()
        .find(|i| i.name == link.name)
        .map(|i| &i.role)
}

/// Builds the service snapshot: ids, scheduler tables, VIPs answered on
/// the client-facing links.
/// Builds the service snapshot. `vip_states` holds the state of every VIP
/// a VRRP instance owns (absent: always active): an inactive VIP's services
/// are left out (their backends stay known, so replies of connections that
/// are still open are translated), a draining VIP keeps its services but is
/// no longer answered for.
pub fn build_services(
    config: &Config,
    links: &[Link],
    generation: u64,
    vip_states: &HashMap<IpAddr, VipState>,
) -> Result<ServiceSnapshot> {
    let mut endpoint_ids: HashMap<(Addr16, u16, L4Proto), u32> = HashMap::new();
    let mut services = Vec::new();
    let mut retired = Vec::new();
    let state_of = |vip: &IpAddr| vip_states.get(vip).copied().unwrap_or(VipState::Active);
    for (i, s) in config.services.iter().enumerate() {
        let proto = match s.protocol {
            Protocol::Tcp => L4Proto::Tcp,
            Protocol::Udp => L4Proto::Udp,
        };
        let kind = scheduler_kind(s.scheduler);
        let mut backends = Vec::new();
        let mut sched = Vec::new();
        for b in &s.backends {
            let addr = Addr16::from_ip(b.address);
            let port = b.port.get();
            let next = endpoint_ids.len() as u32;
            let id = *endpoint_ids.entry((addr, port, proto)).or_insert(next);
            backends.push(Backend {
                id,
                addr,
                port,
                weight: u32::from(b.weight),
            });
            sched.push(SchedBackend::new(
                endpoint_key(addr, port),
                u32::from(b.weight),
            ));
        }
        let options = SchedOptions {
            maglev_size: s.maglev_table_size,
        };
        let table = SchedTable::build(kind, &sched, &options)
            .map_err(|e| anyhow!("service {:?}: {e}", s.name))?;
        if state_of(&s.vip) == VipState::Inactive {
            retired.extend(backends.into_iter().map(|b| (b, proto)));
            continue;
        }
        services.push(Service {
            id: i as u32 + 1,
            name: s.name.clone(),
            vip: Addr16::from_ip(s.vip),
            port: s.port.get(),
            proto,
            scheduler: kind,
            backends,
            sched: table,
        });
    }
    let client_links: Vec<u32> = links
        .iter()
        .filter(|l| {
            matches!(
                role_of(config, l),
                Some(InterfaceRole::Client) | Some(InterfaceRole::Both)
            )
        })
        .map(|l| l.index)
        .collect();
    // A VRRP VIP is answered on its instance's link (when the dataplane
    // opens it), not on every client link; kernel-mode VIPs are the
    // kernel's to answer.
    let mut vrrp_links: HashMap<IpAddr, (Vec<u32>, Option<[u8; 6]>)> = HashMap::new();
    for inst in &config.vrrp.instances {
        let on = match inst.vip_mode {
            VipMode::Kernel => Vec::new(),
            VipMode::Dataplane => links
                .iter()
                .filter(|l| l.name == inst.interface)
                .map(|l| l.index)
                .collect(),
        };
        let mac = vrrp::announce::claimed_mac(inst);
        for v in &inst.vips {
            vrrp_links.insert(*v, (on.clone(), mac));
        }
    }
    let mut vips: Vec<Vip> = Vec::new();
    let vrrp_vips = config
        .vrrp
        .instances
        .iter()
        .flat_map(|i| i.vips.iter().copied());
    for addr in config.services.iter().map(|s| s.vip).chain(vrrp_vips) {
        if vips.iter().any(|v| v.addr == addr) {
            continue;
        }
        let (links_of, mac) = vrrp_links
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| (client_links.clone(), None));
        let ifindexes = match state_of(&addr) {
            VipState::Inactive => continue,
            VipState::Draining => Vec::new(),
            VipState::Active => links_of,
        };
        vips.push(Vip {
            addr,
            ifindexes,
            mac,
        });
    }
    let interfaces = links
        .iter()
        .map(|l| Interface {
            ifindex: l.index,
            name: l.name.clone(),
            mac: l.mac,
            mtu: l.mtu,
        })
        .collect();
    Ok(ServiceSnapshot::new(
        generation, services, vips, interfaces, retired,
    ))
}

fn scheduler_kind(s: Scheduler) -> SchedulerKind {
    match s {
        Scheduler::RoundRobin => SchedulerKind::Rr,
        Scheduler::WeightedRoundRobin => SchedulerKind::Wrr,
        Scheduler::LeastConnections => SchedulerKind::Lc,
        Scheduler::SourceHash => SchedulerKind::Sh,
        Scheduler::Maglev => SchedulerKind::Maglev,
    }
}

/// Routes of the main table through the dataplane links, and the
/// neighbours the kernel knows on them.
fn read_nexthops(nl: &mut RtNetlink, links: &[Link], generation: u64) -> Result<NextHopSnapshot> {
    const MAIN_TABLE: u32 = 254;
    let ours = |i: u32| links.iter().any(|l| l.index == i);
    let mut routes = Vec::new();
    for family in [Family::V4, Family::V6] {
        for r in nl.routes(family)? {
            let Some(oif) = r.oif else { continue };
            if r.table == MAIN_TABLE && ours(oif) {
                routes.push(Route::new(r.dst, r.prefix_len, oif, r.gateway));
            }
        }
    }
    let neighbours: Vec<(u32, IpAddr, [u8; 6])> = nl
        .neighbours()?
        .into_iter()
        .filter(|n| ours(n.ifindex) && n.state.is_usable())
        .filter_map(|n| n.mac.map(|m| (n.ifindex, n.addr, m)))
        .collect();
    let macs = links.iter().map(|l| (l.index, l.mac));
    Ok(NextHopSnapshot::new(generation, routes, neighbours, macs))
}

/// Sysctls, offloads and the nft ingress guard, each pushed on `changes`.
fn prepare_system(
    config: &Config,
    links: &[Link],
    vips: &[IpAddr],
    changes: &mut SystemChanges,
) -> Result<()> {
    for l in links {
        sys::apply_dataplane_sysctls(changes, &l.name)
            .with_context(|| format!("sysctls of {}", l.name))?;
        if config.dataplane.disable_offloads {
            let guard = OffloadGuard::disable(
                &l.name,
                &[Offload::Gro, Offload::Lro, Offload::Tso, Offload::Gso],
            )
            .with_context(|| format!("turning offloads off on {}", l.name))?;
            changes.push(guard);
        }
    }
    let mut backends = Vec::new();
    for s in &config.services {
        for b in &s.backends {
            backends.push(sys::BackendEndpoint {
                addr: b.address,
                proto: match s.protocol {
                    Protocol::Tcp => sys::L4Protocol::Tcp,
                    Protocol::Udp => sys::L4Protocol::Udp,
                },
                port: b.port.get(),
            });
        }
    }
    let filter = IngressFilter {
        table: format!("vipgate_{}", std::process::id()),
        interfaces: links.iter().map(|l| l.name.clone()).collect(),
        vips: vips.to_vec(),
        backends,
    };
    let guard =
        NftIngressGuard::install(&filter).context("installing the nftables ingress guard")?;
    changes.push(guard);
    Ok(())
}

fn worker_count(config: &Config) -> usize {
    match config.dataplane.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => usize::from(n),
    }
}

fn conn_config(config: &Config, worker: usize) -> ConnTableConfig {
    let t = &config.dataplane.timeouts;
    let closing = t.tcp_closing;
    ConnTableConfig {
        capacity: config.dataplane.conn_capacity as usize,
        timeouts: Timeouts {
            syn_sent: t.tcp_syn,
            syn_recv: t.tcp_syn,
            established: t.tcp_established,
            fin_wait: closing,
            close_wait: closing,
            last_ack: closing,
            time_wait: closing,
            close: closing.min(Duration::from_secs(10)),
            udp: t.udp,
        },
        hash_seed: random_seed() ^ worker as u64,
    }
}

fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok()
    {
        u64::from_ne_bytes(buf)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

fn af_packet_config(
    config: &Config,
    links: &[Link],
    group: u16,
    vips: &[IpAddr],
) -> AfPacketConfig {
    let interfaces = links
        .iter()
        .map(|l| afpacket::Interface {
            ifindex: l.index,
            name: l.name.clone(),
            extra_macs: virtual_macs_on(config, &l.name),
        })
        .collect();
    let mut cfg = AfPacketConfig::new(interfaces, group, vips.to_vec());
    let r = &config.dataplane.ring;
    cfg.ring.block_size = r.block_size;
    cfg.ring.block_count = r.blocks;
    cfg.ring.frame_size = r.frame_size;
    cfg.ring.block_timeout = r.block_timeout;
    cfg
}

/// The VRRP virtual MACs the dataplane claims on link `name`.
fn virtual_macs_on(config: &Config, name: &str) -> Vec<[u8; 6]> {
    let mut macs: Vec<[u8; 6]> = config
        .vrrp
        .instances
        .iter()
        .filter(|i| i.interface == name && i.vip_mode == VipMode::Dataplane)
        .filter_map(vrrp::announce::claimed_mac)
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// The socket path `vipgate status` uses when not given one.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/vipgate/control.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            up: true,
            carrier: true,
        }
    }

    #[test]
    fn lab_config_becomes_a_snapshot_with_endpoint_ids_and_client_vips() {
        let config = config::validate_str(crate::lab::LAB_CONFIG, "lab.toml", None).expect("valid");
        let links = [link(7, "vg-cli"), link(9, "vg-srv")];
        let s = build_services(&config, &links, 1, &HashMap::new()).expect("builds");
        assert_eq!(s.services.len(), 3);
        // One id per (address, port, protocol): web and echo-udp share
        // 198.18.20.2:80 but not the protocol.
        let mut ids: Vec<u32> = s
            .services
            .iter()
            .flat_map(|x| x.backends.iter().map(|b| b.id))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..9).collect::<Vec<_>>());
        let web = s
            .service_for(
                Addr16::from_ip("198.18.10.10".parse().unwrap()),
                80,
                L4Proto::Tcp,
            )
            .unwrap();
        assert_eq!(web.scheduler, SchedulerKind::Maglev);
        assert_eq!(s.vips.len(), 2);
        for v in &s.vips {
            assert_eq!(
                v.ifindexes,
                vec![7],
                "VIPs are answered on client links only"
            );
            assert!(s.answers_on(Addr16::from_ip(v.addr), 7));
            assert!(!s.answers_on(Addr16::from_ip(v.addr), 9));
        }
    }

    #[test]
    fn timeouts_map_onto_every_tcp_state() {
        let config = config::validate_str(crate::lab::LAB_CONFIG, "lab.toml", None).expect("valid");
        let c = conn_config(&config, 0);
        assert_eq!(c.timeouts.established, Duration::from_secs(900));
        assert_eq!(c.timeouts.syn_sent, config.dataplane.timeouts.tcp_syn);
        assert_eq!(c.timeouts.time_wait, config.dataplane.timeouts.tcp_closing);
        assert!(c.timeouts.close <= Duration::from_secs(10));
        assert_eq!(c.timeouts.udp, config.dataplane.timeouts.udp);
    }
}
