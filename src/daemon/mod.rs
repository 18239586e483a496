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
use vipgate_dataplane::sched::SchedulerKind;
use vipgate_dataplane::snapshot::{NextHopSnapshot, Published, Route, ServiceSnapshot};
use vipgate_dataplane::worker::{self, Tables, WorkerEvent, WorkerHandle};

mod health;
mod services;

pub use health::check_spec;
use health::HealthChecks;
pub use services::{build_services, BackendState, Inputs, Services, TableCache};

use crate::bgp::{self, Bgp};
use crate::config::{self, Config, InterfaceRole, IoBackend, Protocol, Scheduler, VipMode};
use crate::control::{ControlServer, Handler};
use crate::netlink::{Family, Link, RouteSocket, RtNetlink};
use crate::privileges;
use crate::sys::{self, IngressFilter, NftIngressGuard, Offload, OffloadGuard, SystemChanges};
use crate::vrrp::{
    self,
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
    // VRRP VIPs start inactive (an instance starts as backup), backends
    // healthy until a check says otherwise.
    let service_state = Arc::new(Services::new(config, links, Instant::now())?);
    let vip_states = Inputs::start(config).vip_states;
    let all_links = nl.links().context("listing links")?;
    let addrs = nl.addrs().context("listing addresses")?;
    let mut vrrp_plan = vrrp::run::plan(config, &all_links, &addrs)?;
    // Tracked services start as Services sees them (the one source; it
    // sends every change to the VRRP thread afterwards).
    for (key, up) in &mut vrrp_plan.services {
        if let Some(serving) = key
            .strip_prefix("service:")
            .and_then(|name| service_state.can_serve(name))
        {
            *up = serving;
        }
    }
    let mut vips: Vec<IpAddr> = config.services.iter().map(|s| s.vip).collect();
    vips.extend(vip_states.keys().copied());
    vips.sort();
    vips.dedup();
    let services = service_state.published();
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
            mid_flow_pickup: config.dataplane.mid_flow_pickup,
        })
        .map_err(|e| anyhow!("dataplane.conn_capacity / timeouts: {e}"))?;
        pipelines.push(pipeline);
    }
    let state = Arc::new(StatusState {
        node: config.node.name.clone(),
        started: Instant::now(),
        vrrp: OnceLock::new(),
        bgp: OnceLock::new(),
        health: OnceLock::new(),
        service_state: service_state.clone(),
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
        service_state.attach_bgp(b.clone())?;
    }
    if !memory_io {
        let local: Vec<IpAddr> = addrs.iter().map(|a| a.addr).collect();
        prepare_system(config, links, &vips, &local, changes)?;
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
    service_state.attach_workers(state.workers.iter().map(|(c, _)| c.clone()).collect());
    service_state.start_announcing();
    let vrrp = if vrrp_plan.instances.is_empty() {
        None
    } else {
        let publish = publisher(service_state.clone());
        let runtime = vrrp::run::spawn(vrrp_plan, publish)?;
        let _ = state.vrrp.set(runtime.shared());
        service_state.attach_vrrp(runtime.shared());
        info!(instances = config.vrrp.instances.len(), "VRRP running");
        Some(runtime)
    };
    // Checks start last: their verdicts change a running dataplane.
    let checks = HealthChecks::start(config)?.map(Arc::new);
    if let Some(c) = &checks {
        let _ = state.health.set(c.clone());
    }
    let result = control_loop(
        &mut nl,
        links,
        &nexthops,
        &events,
        &handles,
        Protocols {
            vrrp: vrrp.as_ref(),
            bgp: bgp.as_deref(),
            health: checks.as_deref().map(|c| (c, &*service_state)),
        },
        stop,
    );
    // From here on no verdict reaches the snapshot (the control loop
    // applied them); the checker stops when the last handle goes.
    drop(checks);
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

/// A socket that hears link and route changes (`RTNLGRP_LINK`,
/// `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`).
fn route_events() -> std::io::Result<RouteSocket> {
    let mut sock = RouteSocket::open()?;
    for group in [1, 7, 11] {
        sock.join_group(group)?;
    }
    Ok(sock)
}

/// VRRP moved VIPs: [`Services`] republishes, and returns once every
/// worker handles packets with the new snapshot (or after a bound): the
/// VRRP thread sends gratuitous ARPs only then, so clients that move find
/// the VIP's services in place. In `vrrp` mode the routes follow.
fn publisher(services: Arc<Services>) -> vrrp::run::Publish {
    Box::new(move |states| services.set_vip_states(states))
}

/// The control-plane protocols the control loop watches and ticks.
struct Protocols<'a> {
    vrrp: Option<&'a VrrpRuntime>,
    bgp: Option<&'a Bgp>,
    health: Option<(&'a HealthChecks, &'a Services)>,
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
    let Protocols { vrrp, bgp, health } = protocols;
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
        if let Some((checks, services)) = health {
            if checks.is_finished() {
                bail!("the health-check thread stopped unexpectedly");
            }
            checks.poll(services);
            services.tick(Instant::now());
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
    /// Set once health checks run (when a backend has a check).
    health: OnceLock<Arc<HealthChecks>>,
    service_state: Arc<Services>,
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
            "backend.drain" | "backend.undrain" => {
                self.backend_drain(cmd == "backend.drain", request)
            }
            "backend.events" => {
                let after = request["after"].as_u64().unwrap_or(0);
                let events = self.health.get().map(|h| h.events_after(after));
                Ok(json!({ "events": events.unwrap_or_default() }))
            }
            other => bail!(
                "unknown command {other:?}; known: status, vrrp.resign, vrrp.resume, vrrp.events, \
                 route.announce, route.withdraw, route.list, bgp.peers, drain, undrain, \
                 backend.drain, backend.undrain, backend.events"
            ),
        }
    }
}

impl StatusState {
    /// `vipgate backend drain|undrain SERVICE BACKEND`.
    fn backend_drain(&self, drain: bool, request: &Value) -> Result<Value> {
        let field = |k: &str| {
            request[k]
                .as_str()
                .ok_or_else(|| anyhow!("missing \"{k}\""))
        };
        let (service, backend) = (field("service")?, field("backend")?);
        let (i, j) = self.service_state.find_backend(service, backend)?;
        let changed = self.service_state.set_drained(i, j, drain, Instant::now());
        let endpoint = self.service_state.config().services[i].backends[j].endpoint();
        let what = if drain { "drained" } else { "undrained" };
        if changed {
            info!(service, backend = %endpoint, "backend {what} by the operator");
            if let Some(h) = self.health.get() {
                h.event(json!({ "service": service, "backend": endpoint.to_string(), "operator": what }));
            }
        }
        Ok(
            json!({ "service": service, "backend": endpoint.to_string(), "changed": changed, "state": what }),
        )
    }

    fn status(&self) -> Value {
        let snapshot = self.services.load();
        let now = Instant::now();
        let checks: HashMap<(usize, usize), Value> = self
            .health
            .get()
            .map(|h| h.status_of(now).into_iter().collect())
            .unwrap_or_default();
        let config = self.service_state.config();
        let mut rows = self.service_state.status();
        for (i, (row, s)) in rows.iter_mut().zip(&config.services).enumerate() {
            let proto = match s.protocol {
                Protocol::Tcp => L4Proto::Tcp,
                Protocol::Udp => L4Proto::Udp,
            };
            let live = snapshot.service_for(Addr16::from_ip(s.vip), s.port.get(), proto);
            row["name"] = json!(s.name);
            row["vip"] = json!(s.vip.to_string());
            row["port"] = json!(s.port.get());
            row["protocol"] = json!(s.protocol.name());
            row["scheduler"] = json!(s.scheduler.name());
            row["active"] = json!(live.is_some());
            let Some(backends) = row["backends"].as_array_mut() else {
                continue;
            };
            for (j, b) in backends.iter_mut().enumerate() {
                let endpoint = config.services[i].backends[j].endpoint();
                let id = live.and_then(|l| {
                    l.backends.iter().find(|x| {
                        x.addr == Addr16::from_ip(endpoint.ip()) && x.port == endpoint.port()
                    })
                });
                let per_worker: Vec<u32> = match id {
                    Some(x) => self.workers.iter().map(|(_, g)| g.get(x.id)).collect(),
                    None => vec![0; self.workers.len()],
                };
                b["connections"] = json!(per_worker.iter().map(|n| u64::from(*n)).sum::<u64>());
                b["connections_per_worker"] = json!(per_worker);
                b["health"] = checks.get(&(i, j)).cloned().unwrap_or(Value::Null);
            }
        }
        let services = rows;
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

pub(crate) fn role_of<'a>(config: &'a Config, link: &Link) -> Option<&'a InterfaceRole> {
    config
        .interfaces
        .iter()
        .find(|i| i.name == link.name)
        .map(|i| &i.role)
}

pub(crate) fn scheduler_kind(s: Scheduler) -> SchedulerKind {
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
    let local = nl.addrs()?.into_iter().map(|a| a.addr);
    Ok(NextHopSnapshot::new(generation, routes, neighbours, macs).with_local_addresses(local))
}

/// Sysctls, offloads and the nft ingress guard, each pushed on `changes`.
fn prepare_system(
    config: &Config,
    links: &[Link],
    vips: &[IpAddr],
    local: &[IpAddr],
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
        let endpoints = s.backends.iter().map(|b| b.endpoint());
        for at in endpoints.chain(s.health.sorry_server) {
            backends.push(sys::BackendEndpoint {
                addr: at.ip(),
                proto: match s.protocol {
                    Protocol::Tcp => sys::L4Protocol::Tcp,
                    Protocol::Udp => sys::L4Protocol::Udp,
                },
                port: at.port(),
            });
        }
    }
    let filter = IngressFilter {
        table: format!("vipgate_{}", std::process::id()),
        interfaces: links.iter().map(|l| l.name.clone()).collect(),
        vips: vips.to_vec(),
        backends,
        local: local.to_vec(),
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
    cfg.rx_ring = match r.version {
        config::RxRing::V2 => afpacket::RingVersion::V2,
        config::RxRing::V3 => afpacket::RingVersion::V3,
    };
    cfg.rx_coalesce = r.coalesce;
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
pub(crate) mod tests {
    use super::*;

    /// A link for snapshot tests (also used by `services` tests).
    pub(crate) fn link(index: u32, name: &str) -> Link {
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
        let inputs = Inputs::start(&config);
        let s = build_services(&config, &links, 1, &inputs, &mut TableCache::default())
            .expect("builds");
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
