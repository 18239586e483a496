//! The services as the dataplane and the routers see them, from everything
//! that moves them: VRRP VIP states, backend health, operator drains, and
//! each service's quorum.
//!
//! Owns: [`Services`], the one place that turns those inputs into the
//! published [`ServiceSnapshot`], the BGP routes the policy wants, and the
//! `service:NAME` objects VRRP instances track. Every input change goes
//! through it under one lock, so the snapshot, the routes and the tracking
//! never disagree. Must not: run checks, talk to the kernel, or block on
//! the VRRP thread (tracking changes are sent without waiting).
//!
//! What a backend's state does to a new snapshot:
//!
//! | state                                | in the snapshot          | its connections |
//! |--------------------------------------|--------------------------|-----------------|
//! | healthy                              | configured weight        | continue        |
//! | drained by the operator              | weight 0                 | continue        |
//! | failed, `inhibit_on_failure = true`  | weight 0                 | continue        |
//! | failed                               | left out                 | dropped         |
//!
//! A service counts as *usable* while its healthy, undrained weight reaches
//! the quorum ([`ServiceHealth`]: hysteresis, hold-down). While it is not,
//! its sorry server (if any) takes every new connection. A service *can
//! serve* while it is usable or has a sorry server: that decides BGP
//! announcement and its `service:NAME` VRRP tracking.
//!
//! Scheduler tables are cached per service and rebuilt only when the
//! service's backend weights change, so a VIP move or a change in another
//! service does not rebuild Maglev tables.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use vipgate_dataplane::counters::{Counter, WorkerCounters};
use vipgate_dataplane::flow::{Addr16, L4Proto};
use vipgate_dataplane::sched::{endpoint_key, SchedBackend, SchedOptions, SchedTable};
use vipgate_dataplane::snapshot::{Backend, Interface, Published, Service, ServiceSnapshot, Vip};

use super::{role_of, scheduler_kind};
use crate::bgp::{self, Bgp};
use crate::config::{Config, InterfaceRole, Protocol, ServiceConfig, VipMode};
use crate::health::{ServiceHealth, ServicePolicy};
use crate::netlink::Link;
use crate::vrrp::{self, instance::VipState};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::wire::Prefix;

/// Longest a snapshot change waits for every worker to use it.
const SNAPSHOT_ACK_WAIT: Duration = Duration::from_millis(60);

/// One backend's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendState {
    /// The last health verdict (unchecked backends are always healthy).
    pub healthy: bool,
    /// `vipgate backend drain`.
    pub drained: bool,
}

/// Everything that decides a snapshot, besides the configuration.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// VIPs of VRRP instances (absent: always active).
    pub vip_states: HashMap<IpAddr, VipState>,
    /// Per service, per backend, in configuration order.
    pub backends: Vec<Vec<BackendState>>,
    /// Per service: usable (quorum reached).
    pub usable: Vec<bool>,
}

impl Inputs {
    /// The start: VRRP VIPs inactive (instances start as backup), every
    /// backend healthy (until a check says otherwise), services usable
    /// when their configured weights reach the quorum.
    pub fn start(config: &Config) -> Inputs {
        let vip_states = config
            .vrrp
            .instances
            .iter()
            .flat_map(|i| i.vips.iter().map(|v| (*v, VipState::Inactive)))
            .collect();
        let backends: Vec<Vec<BackendState>> = config
            .services
            .iter()
            .map(|s| {
                let up = BackendState {
                    healthy: true,
                    drained: false,
                };
                vec![up; s.backends.len()]
            })
            .collect();
        let usable = config
            .services
            .iter()
            .zip(&backends)
            .map(|(s, b)| healthy_weight(s, b) >= u64::from(s.health.quorum.max(1)))
            .collect();
        Inputs {
            vip_states,
            backends,
            usable,
        }
    }
}

/// Sum of the configured weights of healthy, undrained backends.
pub fn healthy_weight(service: &ServiceConfig, states: &[BackendState]) -> u64 {
    ServiceHealth::healthy_weight(
        service
            .backends
            .iter()
            .zip(states)
            .map(|(b, st)| (st.healthy && !st.drained, u32::from(b.weight))),
    )
}

/// The weight a backend gets in the snapshot; `None`: left out.
pub fn weight_in_use(
    service: &ServiceConfig,
    i: usize,
    st: BackendState,
    usable: bool,
) -> Option<u32> {
    let b = &service.backends[i];
    let inhibit = b.health.as_ref().is_some_and(|h| h.inhibit_on_failure);
    if !st.healthy && !inhibit {
        return None;
    }
    let sorry_takes_over = !usable && service.health.sorry_server.is_some();
    if !st.healthy || st.drained || sorry_takes_over {
        return Some(0);
    }
    Some(u32::from(b.weight))
}

/// Whether the service can take clients: usable, or a sorry server.
fn can_serve(service: &ServiceConfig, usable: bool) -> bool {
    usable || service.health.sorry_server.is_some()
}

/// Scheduler tables by service index, with the backend list each was
/// built from.
#[derive(Default)]
pub struct TableCache {
    tables: HashMap<usize, (Vec<SchedBackend>, SchedTable)>,
}

impl TableCache {
    fn get(&mut self, i: usize, s: &ServiceConfig, sched: Vec<SchedBackend>) -> Result<SchedTable> {
        if let Some((built, table)) = self.tables.get(&i) {
            if *built == sched {
                return Ok(table.clone());
            }
        }
        let options = SchedOptions {
            maglev_size: s.maglev_table_size,
        };
        let table = SchedTable::build(scheduler_kind(s.scheduler), &sched, &options)
            .map_err(|e| anyhow!("service {:?}: {e}", s.name))?;
        self.tables.insert(i, (sched, table.clone()));
        Ok(table)
    }
}

/// Builds the service snapshot from the configuration and `inputs`: ids,
/// scheduler tables, VIPs answered on the client-facing links. An
/// inactive VIP's services are left out (their backends stay known as
/// retired, so replies of connections that are still open are
/// translated); a draining VIP keeps its services but is no longer
/// answered for.
pub fn build_services(
    config: &Config,
    links: &[Link],
    generation: u64,
    inputs: &Inputs,
    cache: &mut TableCache,
) -> Result<ServiceSnapshot> {
    let mut endpoint_ids: HashMap<(Addr16, u16, L4Proto), u32> = HashMap::new();
    let mut id_of = |addr: Addr16, port: u16, proto: L4Proto| {
        let next = endpoint_ids.len() as u32;
        *endpoint_ids.entry((addr, port, proto)).or_insert(next)
    };
    let mut services = Vec::new();
    let mut retired = Vec::new();
    let state_of = |vip: &IpAddr| {
        inputs
            .vip_states
            .get(vip)
            .copied()
            .unwrap_or(VipState::Active)
    };
    for (i, s) in config.services.iter().enumerate() {
        let proto = match s.protocol {
            Protocol::Tcp => L4Proto::Tcp,
            Protocol::Udp => L4Proto::Udp,
        };
        let usable = inputs.usable.get(i).copied().unwrap_or(true);
        let mut backends = Vec::new();
        let mut sched = Vec::new();
        let mut push = |addr: Addr16, port: u16, weight: u32| {
            backends.push(Backend {
                id: id_of(addr, port, proto),
                addr,
                port,
                weight,
            });
            sched.push(SchedBackend::new(endpoint_key(addr, port), weight));
        };
        for (j, b) in s.backends.iter().enumerate() {
            let st = inputs.backends.get(i).and_then(|v| v.get(j)).copied();
            let st = st.unwrap_or(BackendState {
                healthy: true,
                drained: false,
            });
            if let Some(weight) = weight_in_use(s, j, st, usable) {
                push(Addr16::from_ip(b.address), b.port.get(), weight);
            }
        }
        if let Some(sorry) = s.health.sorry_server.filter(|_| !usable) {
            push(Addr16::from_ip(sorry.ip()), sorry.port(), 1);
        }
        let table = cache.get(i, s, sched)?;
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
            scheduler: scheduler_kind(s.scheduler),
            backends,
            sched: table,
        });
    }
    let vips = answered_vips(config, links, &state_of);
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

/// The VIPs the dataplane answers for, and on which links.
fn answered_vips(
    config: &Config,
    links: &[Link],
    state_of: &dyn Fn(&IpAddr) -> VipState,
) -> Vec<Vip> {
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
            announce: !vrrp_links.contains_key(&addr),
        });
    }
    vips
}

/// The mutable part of [`Services`].
struct State {
    generation: u64,
    inputs: Inputs,
    health: Vec<ServiceHealth>,
    cache: TableCache,
    /// BGP routes follow the inputs only once the dataplane runs.
    announcing: bool,
    /// The policy routes last handed to the speaker.
    sent: BTreeMap<Prefix, RouteAttrs>,
}

/// What [`Services::announce`] may send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    All,
    WithdrawOnly,
}

/// The owner of the service inputs; see the module docs.
pub struct Services {
    config: Config,
    links: Vec<Link>,
    published: Arc<Published<ServiceSnapshot>>,
    workers: OnceLock<Vec<Arc<WorkerCounters>>>,
    bgp: OnceLock<(Arc<Bgp>, bgp::Policy)>,
    vrrp: OnceLock<Arc<vrrp::run::Shared>>,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock left consistent data (every change
    // is applied before the rebuild); keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Services {
    /// Builds the first snapshot (generation 1) from [`Inputs::start`].
    pub fn new(config: &Config, links: &[Link], now: Instant) -> Result<Services> {
        let inputs = Inputs::start(config);
        let mut cache = TableCache::default();
        let snapshot = build_services(config, links, 1, &inputs, &mut cache)?;
        let health = config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let policy = ServicePolicy {
                    quorum: s.health.quorum,
                    hysteresis: s.health.hysteresis,
                    hold_down: s.health.hold_down,
                };
                let mut h = ServiceHealth::new(policy, inputs.usable[i], now);
                h.update(healthy_weight(s, &inputs.backends[i]), now);
                h
            })
            .collect();
        Ok(Services {
            config: config.clone(),
            links: links.to_vec(),
            published: Arc::new(Published::new(snapshot)),
            workers: OnceLock::new(),
            bgp: OnceLock::new(),
            vrrp: OnceLock::new(),
            state: Mutex::new(State {
                generation: 1,
                inputs,
                health,
                cache,
                announcing: false,
                sent: BTreeMap::new(),
            }),
        })
    }

    pub fn published(&self) -> Arc<Published<ServiceSnapshot>> {
        self.published.clone()
    }

    /// Whether service `name` can serve now (usable, or it has a sorry
    /// server): what a VRRP `service:NAME` track follows. `None` for an
    /// unknown service.
    pub fn can_serve(&self, name: &str) -> Option<bool> {
        let i = self.config.services.iter().position(|s| s.name == name)?;
        let usable = lock(&self.state).inputs.usable[i];
        Some(can_serve(&self.config.services[i], usable))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The workers whose snapshot generation a change waits for.
    pub fn attach_workers(&self, workers: Vec<Arc<WorkerCounters>>) {
        let _ = self.workers.set(workers);
    }

    /// The speaker and policy routes go to (from [`Services::start_announcing`] on).
    pub fn attach_bgp(&self, bgp: Arc<Bgp>) -> Result<()> {
        let policy = bgp::Policy::new(&self.config, &bgp::route_attrs(&self.config.bgp)?);
        let _ = self.bgp.set((bgp, policy));
        Ok(())
    }

    /// The VRRP thread that tracks `service:NAME` objects.
    pub fn attach_vrrp(&self, shared: Arc<vrrp::run::Shared>) {
        let _ = self.vrrp.set(shared);
        let st = lock(&self.state);
        for (i, s) in self.config.services.iter().enumerate() {
            self.track(s, st.health[i].usable());
        }
    }

    /// The dataplane runs: announce what the inputs allow.
    pub fn start_announcing(&self) {
        let mut st = lock(&self.state);
        st.announcing = true;
        self.announce(&mut st, Phase::All);
    }

    /// VRRP moved VIPs: republish, and return once the workers use the new
    /// snapshot (the VRRP thread sends gratuitous ARPs only then).
    pub fn set_vip_states(&self, states: &HashMap<IpAddr, VipState>) {
        let mut st = lock(&self.state);
        for (vip, state) in states {
            st.inputs.vip_states.insert(*vip, *state);
        }
        self.republish(&mut st);
    }

    /// A health verdict for backend `backend` of service `service`.
    pub fn set_health(&self, service: usize, backend: usize, healthy: bool, now: Instant) {
        self.change(now, |inputs| {
            let slot = inputs.backends.get_mut(service)?.get_mut(backend)?;
            let changed = slot.healthy != healthy;
            slot.healthy = healthy;
            Some(changed)
        });
    }

    /// `vipgate backend drain|undrain`; false if it was already so.
    pub fn set_drained(&self, service: usize, backend: usize, drained: bool, now: Instant) -> bool {
        self.change(now, |inputs| {
            let slot = inputs.backends.get_mut(service)?.get_mut(backend)?;
            let changed = slot.drained != drained;
            slot.drained = drained;
            Some(changed)
        })
    }

    /// Re-evaluates services whose hold-down may have ended.
    pub fn tick(&self, now: Instant) {
        let mut st = lock(&self.state);
        let due = st
            .health
            .iter()
            .any(|h| h.poll_timeout().is_some_and(|t| t <= now));
        if due && self.update_usable(&mut st, now) {
            self.republish(&mut st);
        }
    }

    /// Applies `edit` (which says whether it changed anything), then the
    /// services' usability, then republishes.
    fn change(&self, now: Instant, edit: impl FnOnce(&mut Inputs) -> Option<bool>) -> bool {
        let mut st = lock(&self.state);
        if edit(&mut st.inputs) != Some(true) {
            return false;
        }
        self.update_usable(&mut st, now);
        self.republish(&mut st);
        true
    }

    /// Feeds every service's healthy weight to its [`ServiceHealth`];
    /// true if a service's usability changed (logged, tracked).
    fn update_usable(&self, st: &mut State, now: Instant) -> bool {
        let mut any = false;
        for (i, s) in self.config.services.iter().enumerate() {
            let weight = healthy_weight(s, &st.inputs.backends[i]);
            let Some(t) = st.health[i].update(weight, now) else {
                continue;
            };
            st.inputs.usable[i] = t.usable;
            any = true;
            if t.usable {
                info!(service = %s.name, reason = %t.reason, "service usable again");
            } else {
                warn!(service = %s.name, reason = %t.reason, sorry_server = ?s.health.sorry_server, "service not usable");
            }
            self.track(s, t.usable);
        }
        any
    }

    fn track(&self, s: &ServiceConfig, usable: bool) {
        if let Some(v) = self.vrrp.get() {
            let key = format!("service:{}", s.name);
            v.notify(vrrp::run::Request::Track(key, can_serve(s, usable)));
        }
    }

    fn republish(&self, st: &mut State) {
        let generation = st.generation + 1;
        let built = build_services(
            &self.config,
            &self.links,
            generation,
            &st.inputs,
            &mut st.cache,
        );
        // Withdrawals go out at once; announcements only once the workers
        // use the snapshot that serves them.
        self.announce(st, Phase::WithdrawOnly);
        match built {
            Ok(snapshot) => {
                st.generation = generation;
                self.published.store(snapshot);
                self.wait_for_workers(generation);
            }
            Err(e) => warn!(error = %e, "could not rebuild the service snapshot"),
        }
        self.announce(st, Phase::All);
    }

    fn wait_for_workers(&self, generation: u64) {
        let Some(workers) = self.workers.get() else {
            return;
        };
        let deadline = Instant::now() + SNAPSHOT_ACK_WAIT;
        while workers
            .iter()
            .any(|w| w.get(Counter::ServiceGeneration) < generation)
        {
            if Instant::now() >= deadline {
                debug!(generation, "not every worker took the new snapshot in time");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Hands the routes the policy wants to the speaker; in
    /// [`Phase::WithdrawOnly`] only the withdrawals (routes the policy no
    /// longer wants), keeping the rest as last sent.
    fn announce(&self, st: &mut State, phase: Phase) {
        let Some((bgp, policy)) = self.bgp.get() else {
            return;
        };
        if !st.announcing {
            return;
        }
        let serving = |vip: IpAddr| {
            self.config
                .services
                .iter()
                .enumerate()
                .any(|(i, s)| s.vip == vip && can_serve(s, st.inputs.usable[i]))
        };
        let routes = policy.routes(serving, &st.inputs.vip_states);
        let routes = match phase {
            Phase::All => routes,
            Phase::WithdrawOnly => {
                let kept: BTreeMap<_, _> = st
                    .sent
                    .iter()
                    .filter(|(p, _)| routes.contains_key(*p))
                    .map(|(p, a)| (*p, a.clone()))
                    .collect();
                if kept.len() == st.sent.len() {
                    return;
                }
                kept
            }
        };
        st.sent = routes.clone();
        bgp.set_policy(routes);
    }

    /// Finds backend `which` (`ADDRESS:PORT`, or `ADDRESS` when one backend
    /// of the service has it) of service `name`.
    pub fn find_backend(&self, name: &str, which: &str) -> Result<(usize, usize)> {
        let Some(i) = self.config.services.iter().position(|s| s.name == name) else {
            let names: Vec<&str> = self
                .config
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            bail!("no service {name:?}; services: {}", names.join(", "));
        };
        let s = &self.config.services[i];
        let list = || {
            s.backends
                .iter()
                .map(|b| b.endpoint().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hits: Vec<usize> = if let Ok(sa) = which.parse::<SocketAddr>() {
            s.backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.endpoint() == sa)
                .map(|(j, _)| j)
                .collect()
        } else if let Ok(ip) = which.parse::<IpAddr>() {
            s.backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.address == ip)
                .map(|(j, _)| j)
                .collect()
        } else {
            bail!("{which:?} is not ADDRESS or ADDRESS:PORT (IPv6: [2001:db8::2]:80)");
        };
        match hits.as_slice() {
            [j] => Ok((i, *j)),
            [] => bail!(
                "service {name} has no backend {which}; its backends: {}",
                list()
            ),
            _ => bail!(
                "service {name} has several backends at {which}; give ADDRESS:PORT ({})",
                list()
            ),
        }
    }

    /// Per service: usable, healthy weight, sorry server in use, and per
    /// backend its state and weight in use.
    pub fn status(&self) -> Vec<Value> {
        let st = lock(&self.state);
        self.config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let usable = st.inputs.usable[i];
                let backends: Vec<Value> = s
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        let bs = st.inputs.backends[i][j];
                        let state = match (b.health.is_some(), bs.healthy, bs.drained) {
                            (_, _, true) => "drained",
                            (false, _, _) => "unchecked",
                            (true, true, _) => "healthy",
                            (true, false, _) => "failed",
                        };
                        json!({
                            "address": b.address.to_string(),
                            "port": b.port.get(),
                            "weight": b.weight,
                            "weight_in_use": weight_in_use(s, j, bs, usable),
                            "healthy": bs.healthy,
                            "state": state,
                            "check": b.health.as_ref().map(|h| h.check.type_name()),
                        })
                    })
                    .collect();
                json!({
                    "usable": usable,
                    "can_serve": can_serve(s, usable),
                    "healthy_weight": st.health[i].weight(),
                    "quorum": s.health.quorum,
                    "sorry_server": s.health.sorry_server.map(|a| a.to_string()),
                    "sorry_server_active": s.health.sorry_server.is_some() && !usable,
                    "backends": backends,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::daemon::tests::link;

    const CONFIG: &str = r#"
[node]
name = "t"
[[interface]]
name = "vg-cli"
role = "client"
[[interface]]
name = "vg-srv"
role = "backend"
[[service]]
name = "web"
vip = "198.18.10.10"
port = 80
quorum = 2
sorry_server = "198.18.20.9:8080"
[service.health]
type = "tcp"
[[service.backend]]
address = "198.18.20.2"
[[service.backend]]
address = "198.18.20.3"
[[service.backend]]
address = "198.18.20.4"
[service.backend.health]
type = "tcp"
inhibit_on_failure = true
"#;

    fn setup() -> (Services, Instant) {
        let config = config::validate_str(CONFIG, "t.toml", None).expect("valid");
        let now = Instant::now();
        let links = [link(7, "vg-cli"), link(9, "vg-srv")];
        (Services::new(&config, &links, now).expect("builds"), now)
    }

    /// (address, weight) of the web service's backends in the snapshot.
    fn in_snapshot(s: &Services) -> Vec<(String, u32)> {
        let snap = s.published().load();
        snap.services[0]
            .backends
            .iter()
            .map(|b| (format!("{}:{}", b.addr.to_ip(), b.port), b.weight))
            .collect()
    }

    #[test]
    fn failed_backends_leave_inhibited_ones_stay_with_weight_zero() {
        let (s, now) = setup();
        assert_eq!(in_snapshot(&s).len(), 3);
        s.set_health(0, 0, false, now);
        assert_eq!(
            in_snapshot(&s),
            [("198.18.20.3:80".into(), 1), ("198.18.20.4:80".into(), 1)],
            "failed .2 left the service"
        );
        s.set_health(0, 2, false, now);
        assert_eq!(
            in_snapshot(&s),
            [
                ("198.18.20.3:80".into(), 0),
                ("198.18.20.4:80".into(), 0),
                ("198.18.20.9:8080".into(), 1)
            ],
            "inhibited .4 kept at weight 0; below quorum the sorry server takes over"
        );
        let status = s.status();
        assert_eq!(status[0]["backends"][0]["state"], "failed");
        assert_eq!(status[0]["backends"][0]["weight_in_use"], Value::Null);
        assert_eq!(status[0]["backends"][2]["weight_in_use"], 0);
        assert_eq!(status[0]["sorry_server_active"], true);
    }

    /// What a VRRP `service:` track starts from and follows.
    #[test]
    fn can_serve_follows_usable_and_the_sorry_server() {
        let (s, now) = setup();
        assert_eq!(s.can_serve("web"), Some(true));
        assert_eq!(s.can_serve("nope"), None);
        for j in 0..3 {
            s.set_health(0, j, false, now);
        }
        assert_eq!(s.status()[0]["usable"], false);
        assert_eq!(s.can_serve("web"), Some(true), "the sorry server serves");
        let no_sorry = CONFIG.replace("sorry_server = \"198.18.20.9:8080\"\n", "");
        let config = config::validate_str(&no_sorry, "t.toml", None).expect("valid");
        let links = [link(7, "vg-cli"), link(9, "vg-srv")];
        let s = Services::new(&config, &links, now).expect("builds");
        for j in 0..3 {
            s.set_health(0, j, false, now);
        }
        assert_eq!(s.can_serve("web"), Some(false));
    }

    #[test]
    fn below_quorum_the_sorry_server_takes_new_connections() {
        let (s, now) = setup();
        s.set_health(0, 0, false, now);
        assert_eq!(
            s.status()[0]["usable"],
            true,
            "weight 2 still meets quorum 2"
        );
        s.set_health(0, 1, false, now);
        let status = s.status();
        assert_eq!(status[0]["usable"], false);
        assert_eq!(status[0]["can_serve"], true, "a sorry server still serves");
        assert_eq!(
            in_snapshot(&s),
            [("198.18.20.4:80".into(), 0), ("198.18.20.9:8080".into(), 1)]
        );
        s.set_health(0, 0, true, now);
        assert_eq!(s.status()[0]["usable"], true);
        assert_eq!(
            in_snapshot(&s),
            [("198.18.20.2:80".into(), 1), ("198.18.20.4:80".into(), 1)],
            "sorry server gone again, .4 back at its weight"
        );
    }

    #[test]
    fn operator_drain_keeps_the_backend_at_weight_zero() {
        let (s, now) = setup();
        let (i, j) = s.find_backend("web", "198.18.20.3").expect("found");
        assert_eq!((i, j), (0, 1));
        assert!(s.set_drained(i, j, true, now));
        assert!(!s.set_drained(i, j, true, now), "already drained");
        assert_eq!(in_snapshot(&s)[1], ("198.18.20.3:80".into(), 0));
        assert_eq!(s.status()[0]["backends"][1]["state"], "drained");
        assert!(s.find_backend("web", "198.18.20.7").is_err());
        assert!(s.find_backend("nope", "198.18.20.3").is_err());
        assert!(s.find_backend("web", "198.18.20.3:81").is_err());
    }

    #[test]
    fn a_change_elsewhere_reuses_the_scheduler_table() {
        let config = config::validate_str(CONFIG, "t.toml", None).expect("valid");
        let links = [link(7, "vg-cli"), link(9, "vg-srv")];
        let mut cache = TableCache::default();
        let mut inputs = Inputs::start(&config);
        build_services(&config, &links, 1, &inputs, &mut cache).expect("builds");
        let before = cache.tables[&0].1.clone();
        inputs.backends[0][1].drained = false;
        build_services(&config, &links, 2, &inputs, &mut cache).expect("builds");
        assert!(cache.tables[&0].1.shares_table_with(&before));
        inputs.backends[0][1].drained = true;
        build_services(&config, &links, 3, &inputs, &mut cache).expect("builds");
        assert!(!cache.tables[&0].1.shares_table_with(&before));
    }
}
