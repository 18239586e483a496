//! The VRRP thread: runs [`Node`] on real sockets and real time.
//!
//! Owns: the raw VRRP sockets (one per link and family), the packet
//! sockets that send gratuitous ARP / NA, tracking (link events, files,
//! scripts), notify hooks, kernel-mode VIP addresses, and the status and
//! commands the control socket reaches it with. Must not: build dataplane
//! snapshots (it hands VIP states to the daemon's `publish` callback) or
//! decide protocol behaviour (that is [`super::instance`]).
//!
//! Start is all or nothing: [`plan`] resolves every link and address
//! before anything opens, and [`spawn`] opens every socket before the
//! thread starts; a failure leaves nothing behind. Stop resigns every
//! master (priority 0) and keeps the thread, and so the dataplane's
//! forwarding, alive until the longest grace period has passed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::announce;
use super::instance::{Action, Drop, Garp, Instance, InstanceConfig, Transition, VipState};
use super::node::{Node, TrackKey};
use super::socket::{self, Family, SocketConfig, VrrpSocket};
use super::wire::{self, AdvertError, Auth, ChecksumMode, Version};
use crate::config::{Config, TrackKind, VipMode, VrrpChecksum, VrrpVersion};
use crate::control::EventRing;
use crate::netlink::{Addr, Link, RouteSocket, RtNetlink};
use crate::sys::packet::PacketSender;

/// Longest the thread sleeps: bounds how late a command or a stop is seen.
const TICK: Duration = Duration::from_millis(10);
/// Files and links are re-read at least this often.
const RESCAN: Duration = Duration::from_secs(1);
/// Status is rebuilt at most this often (it costs more than the protocol
/// with hundreds of instances).
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Transitions kept for `status` and `vrrp events`.
const EVENTS_KEPT: usize = 256;
/// Notify hooks running at once; more are skipped with a warning.
const MAX_HOOKS: usize = 32;
/// `RTNLGRP_LINK`.
const RTNLGRP_LINK: u32 = 1;

/// One instance, resolved against the system.
#[derive(Debug, Clone)]
pub struct Planned {
    pub cfg: InstanceConfig,
    pub ifindex: u32,
    pub ifname: String,
    /// Source MAC of the announcements: the virtual MAC with
    /// `virtual_mac = true`, else the link's.
    pub mac: [u8; 6],
    /// `virtual_mac = true`: multicast adverts leave from `mac` too.
    pub virtual_mac: bool,
    pub mode: VipMode,
    pub checksum: ChecksumMode,
    pub tracks: Vec<(TrackKey, i32)>,
    pub notify: Option<String>,
    pub garp_repeat: u32,
}

/// Everything the VRRP thread runs, resolved before anything starts.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub instances: Vec<Planned>,
    pub groups: Vec<Vec<String>>,
    pub scripts: Vec<Script>,
    pub files: Vec<(TrackKey, std::path::PathBuf)>,
    /// Link name of every `interface:` track.
    pub links: Vec<(TrackKey, String)>,
    /// `service:NAME` tracks and their start state (the daemon sets it
    /// from its Services before the VRRP thread runs; health changes
    /// follow as `Request::Track`).
    pub services: Vec<(TrackKey, bool)>,
}

/// A tracked script with rise/fall.
#[derive(Debug, Clone)]
pub struct Script {
    pub key: TrackKey,
    pub command: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// Resolves the `[vrrp]` configuration against the system's links and
/// addresses. Changes nothing.
pub fn plan(config: &Config, links: &[Link], addrs: &[Addr]) -> Result<Plan> {
    let mut plan = Plan::default();
    for c in &config.vrrp.instances {
        let link = links
            .iter()
            .find(|l| l.name == c.interface)
            .ok_or_else(|| {
                anyhow!(
                    "vrrp instance {:?}: no link named {:?}",
                    c.name,
                    c.interface
                )
            })?;
        let v6 = c.is_v6();
        let primary = match c.unicast_source {
            Some(a) => a,
            None => primary_address(addrs, link.index, v6).ok_or_else(|| {
                anyhow!(
                    "vrrp instance {:?}: link {} has no {} address to send adverts from; \
                     add one or set unicast_source",
                    c.name,
                    c.interface,
                    if v6 { "IPv6 link-local" } else { "IPv4" }
                )
            })?,
        };
        let version = match c.version {
            VrrpVersion::V2 => Version::V2,
            VrrpVersion::V3 => Version::V3,
        };
        let auth = match &c.auth_pass {
            Some(p) => Auth::simple(p.as_bytes()),
            None => Auth::None,
        };
        // Like keepalived: an instance is in FAULT while its own link is
        // down or has no carrier.
        let own = format!("interface:{}", c.interface);
        plan.links.push((own.clone(), c.interface.clone()));
        let mut tracks = vec![(own, 0)];
        for t in &c.tracks {
            let key = track_key(&t.kind);
            match &t.kind {
                TrackKind::Interface { name } => plan.links.push((key.clone(), name.clone())),
                TrackKind::File { path } => plan.files.push((key.clone(), path.clone())),
                TrackKind::Script {
                    command,
                    interval,
                    timeout,
                    rise,
                    fall,
                } => plan.scripts.push(Script {
                    key: key.clone(),
                    command: command.clone(),
                    interval: *interval,
                    timeout: *timeout,
                    rise: *rise,
                    fall: *fall,
                }),
                TrackKind::Service { .. } => {
                    // Up until the daemon's Services says otherwise (it
                    // fills in the start state before the thread runs).
                    plan.services.push((key.clone(), true));
                }
            }
            tracks.push((key, t.weight));
        }
        plan.instances.push(Planned {
            cfg: InstanceConfig {
                name: c.name.clone(),
                vrid: c.vrid,
                version,
                priority: c.priority,
                interval_cs: (c.advert_interval.as_millis() / 10).clamp(1, 0xfff * 100) as u16,
                preempt: c.preempt,
                preempt_delay: c.preempt_delay,
                vips: c.vips.clone(),
                primary,
                unicast_peers: c.unicast_peers.clone(),
                auth,
                garp: Garp {
                    delay: c.garp.delay,
                    refresh: c.garp.refresh,
                },
                resign_grace: c.resign_grace,
            },
            ifindex: link.index,
            ifname: link.name.clone(),
            mac: announce::claimed_mac(c).unwrap_or(link.mac),
            virtual_mac: announce::claimed_mac(c).is_some(),
            mode: c.vip_mode,
            checksum: match c.checksum {
                VrrpChecksum::PseudoHeader => ChecksumMode::PseudoHeader,
                VrrpChecksum::Rfc9568 => ChecksumMode::NoPseudoHeader,
            },
            tracks,
            notify: c.notify.clone(),
            garp_repeat: c.garp.repeat,
        });
    }
    dedup(&mut plan.links);
    dedup(&mut plan.files);
    dedup(&mut plan.services);
    plan.scripts.dedup_by(|a, b| a.key == b.key);
    plan.groups = config
        .vrrp
        .sync_groups
        .iter()
        .map(|g| g.instances.clone())
        .collect();
    Ok(plan)
}

fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

/// The name a tracked object has in status and in [`Node`].
pub fn track_key(kind: &TrackKind) -> TrackKey {
    match kind {
        TrackKind::Interface { name } => format!("interface:{name}"),
        TrackKind::File { path } => format!("file:{}", path.display()),
        TrackKind::Script { command, .. } => format!("script:{command}"),
        TrackKind::Service { name } => format!("service:{name}"),
    }
}

/// The adverts' source: the link's first IPv4 address, or its IPv6
/// link-local address (RFC 5798 section 5.1.2.1).
fn primary_address(addrs: &[Addr], ifindex: u32, v6: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .filter(|a| a.index == ifindex)
        .map(|a| a.addr)
        .find(|a| match a {
            IpAddr::V4(_) => !v6,
            IpAddr::V6(x) => v6 && x.is_unicast_link_local(),
        })
}

// ------------------------------------------------------------ the thread

/// What the control socket asks of the VRRP thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Resign(String),
    Resume(String),
    /// A tracked object (`service:NAME`) is up or down.
    Track(String, bool),
}

/// A request with the channel its answer goes back on.
type Envelope = (Request, mpsc::SyncSender<Result<Value, String>>);

/// Shared between the VRRP thread and the control socket.
pub struct Shared {
    status: Mutex<Value>,
    events: EventRing,
    requests: Mutex<Sender<Envelope>>,
}

impl Shared {
    /// Every instance, as `vipgate status` shows it.
    pub fn status(&self) -> Value {
        self.status.lock().map(|s| s.clone()).unwrap_or(Value::Null)
    }

    /// Transitions with a sequence number above `after`, oldest first.
    pub fn events_after(&self, after: u64) -> Vec<Value> {
        self.events.after(after)
    }

    /// Hands a request to the VRRP thread without waiting for its answer
    /// (for callers that must not block on it, e.g. while holding a lock
    /// the VRRP thread may need).
    pub fn notify(&self, request: Request) {
        let (tx, _rx) = mpsc::sync_channel(1);
        if let Ok(requests) = self.requests.lock() {
            let _ = requests.send((request, tx));
        }
    }

    /// Carries out a request on the VRRP thread and waits for its answer.
    pub fn request(&self, request: Request) -> Result<Value> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.requests
            .lock()
            .map_err(|_| anyhow!("VRRP thread is gone"))?
            .send((request, tx))
            .map_err(|_| anyhow!("VRRP thread is gone"))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("VRRP thread did not answer"))?
            .map_err(|e| anyhow!(e))
    }
}

/// The running VRRP thread.
pub struct VrrpRuntime {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl VrrpRuntime {
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Resigns every master and returns once the grace periods are over
    /// (the dataplane keeps forwarding meanwhile).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::ops::Drop for VrrpRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Receives the VIP states after every change (VIPs of no instance are not
/// in the map).
pub type Publish = Box<dyn FnMut(&HashMap<IpAddr, VipState>) + Send>;

/// Opens every socket, then starts the thread.
pub fn spawn(plan: Plan, publish: Publish) -> Result<VrrpRuntime> {
    let io = Io::open(&plan)?;
    let mut node = Node::new();
    for p in &plan.instances {
        node.add_instance(p.cfg.clone(), p.ifindex, p.tracks.clone())
            .map_err(|e| anyhow!("{e}"))?;
    }
    for g in &plan.groups {
        let members: Vec<&str> = g.iter().map(String::as_str).collect();
        node.add_sync_group(&members).map_err(|e| anyhow!("{e}"))?;
    }
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        status: Mutex::new(Value::Array(vec![])),
        events: EventRing::new(EVENTS_KEPT),
        requests: Mutex::new(tx),
    });
    let stop = Arc::new(AtomicBool::new(false));
    // Every VRRP VIP starts inactive (instances start as backups); the map
    // always holds all of them, so a publish never mistakes one for a VIP
    // without VRRP (always active).
    let vip_states = plan
        .instances
        .iter()
        .flat_map(|p| p.cfg.vips.iter().map(|v| (*v, VipState::Inactive)))
        .collect();
    let scripts = plan
        .scripts
        .iter()
        .map(|_| ScriptState::default())
        .collect();
    let mut runner = Runner {
        node,
        plan,
        io,
        publish,
        vip_states,
        shared: shared.clone(),
        requests: rx,
        hooks: Vec::new(),
        scripts,
        wire_drops: HashMap::new(),
        kernel_vips: Vec::new(),
        status_due: true,
        status_urgent: true,
    };
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("vipgate-vrrp".into())
        .spawn(move || runner.run(&thread_stop))
        .context("starting the VRRP thread")?;
    Ok(VrrpRuntime {
        thread: Some(thread),
        stop,
        shared,
    })
}

/// Sockets of the thread.
struct Io {
    /// (ifindex, v6) -> socket.
    vrrp: Vec<((u32, bool), VrrpSocket)>,
    packet: HashMap<u32, PacketSender>,
    links: RouteSocket,
    nl: RtNetlink,
}

impl Io {
    fn open(plan: &Plan) -> Result<Io> {
        let mut vrrp: Vec<((u32, bool), VrrpSocket)> = Vec::new();
        let mut packet = HashMap::new();
        for p in &plan.instances {
            let key = (p.ifindex, p.cfg.primary.is_ipv6());
            let multicast = plan.instances.iter().any(|q| {
                (q.ifindex, q.cfg.primary.is_ipv6()) == key && q.cfg.unicast_peers.is_empty()
            });
            if !vrrp.iter().any(|(k, _)| *k == key) {
                let cfg = SocketConfig {
                    ifindex: p.ifindex,
                    ifname: p.ifname.clone(),
                    family: if key.1 { Family::V6 } else { Family::V4 },
                    source: p.cfg.primary,
                    multicast,
                };
                let s = VrrpSocket::open(&cfg)
                    .with_context(|| format!("opening the VRRP socket on {}", p.ifname))?;
                vrrp.push((key, s));
            }
            if let std::collections::hash_map::Entry::Vacant(e) = packet.entry(p.ifindex) {
                e.insert(
                    PacketSender::open(p.ifindex)
                        .with_context(|| format!("opening a packet socket on {}", p.ifname))?,
                );
            }
        }
        let mut links = RouteSocket::open().context("opening an rtnetlink event socket")?;
        links
            .join_group(RTNLGRP_LINK)
            .context("watching link events")?;
        let nl = RtNetlink::open().context("opening rtnetlink")?;
        Ok(Io {
            vrrp,
            packet,
            links,
            nl,
        })
    }
}

struct Runner {
    node: Node,
    plan: Plan,
    io: Io,
    publish: Publish,
    vip_states: HashMap<IpAddr, VipState>,
    shared: Arc<Shared>,
    requests: Receiver<Envelope>,
    hooks: Vec<Child>,
    /// State of each of `plan.scripts`, same order.
    scripts: Vec<ScriptState>,
    /// Adverts the wire layer refused, per instance and reason.
    wire_drops: HashMap<usize, BTreeMap<&'static str, u64>>,
    /// Addresses added to links in kernel mode: (ifindex, addr).
    kernel_vips: Vec<(u32, IpAddr)>,
    status_due: bool,
    /// A transition happened: publish without waiting for STATUS_EVERY.
    status_urgent: bool,
}

#[derive(Debug, Default)]
struct ScriptState {
    child: Option<(Child, Instant)>,
    next: Option<Instant>,
    ok_run: u32,
    fail_run: u32,
}

impl Runner {
    fn run(&mut self, stop: &AtomicBool) {
        let now = Instant::now();
        self.rescan_links(now);
        self.rescan_files(now);
        for (key, up) in self.plan.services.clone() {
            self.node.set_track(now, &key, up);
        }
        self.node.start(now);
        self.carry_out();
        let mut rescan = now + RESCAN;
        let mut status_at = now;
        let mut until: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            if until.is_none() && stop.load(Ordering::Relaxed) {
                let end = self.node.resign_all(now);
                info!(
                    grace_ms = end.duration_since(now).as_millis() as u64,
                    "VRRP: resigned every instance for shutdown"
                );
                until = Some(end);
                self.carry_out();
            }
            if until.is_some_and(|u| now >= u) {
                self.node.handle_timeout(now);
                self.carry_out();
                break;
            }
            self.serve_requests(now);
            self.run_scripts(now);
            if now >= rescan {
                self.rescan_links(now);
                self.rescan_files(now);
                rescan = now + RESCAN;
            }
            let wake = self
                .node
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            let mut fds: Vec<RawFd> = self.io.vrrp.iter().map(|(_, s)| s.fd()).collect();
            fds.push(self.io.links.as_raw_fd());
            match socket::poll_readable(&fds, wake) {
                Ok(ready) => {
                    for i in ready {
                        if i == self.io.vrrp.len() {
                            self.link_event(Instant::now());
                        } else {
                            self.receive(i, &mut buf);
                        }
                    }
                }
                Err(e) => warn!(error = %e, "VRRP: poll failed"),
            }
            let now = Instant::now();
            self.node.handle_timeout(now);
            self.carry_out();
            self.reap_hooks();
            if self.status_due && (now >= status_at || self.status_urgent) {
                self.publish_status();
                status_at = now + STATUS_EVERY;
            }
        }
        self.remove_kernel_vips();
        self.publish_status();
    }

    /// Reads every waiting advert on socket `i`.
    fn receive(&mut self, i: usize, buf: &mut [u8]) {
        let ((ifindex, v6), _) = self.io.vrrp[i];
        loop {
            let got = match self.io.vrrp[i].1.recv(buf) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "VRRP: receive failed");
                    return;
                }
            };
            let now = Instant::now();
            let payload = &buf[..got.len.min(buf.len())];
            let Some(&vrid) = payload.get(1) else {
                continue;
            };
            let Some(idx) = self.node.lookup(ifindex, v6, vrid) else {
                self.node.unknown_vrid += 1;
                continue;
            };
            let p = &self.plan.instances[idx];
            match wire::parse(
                payload,
                got.src,
                got.dst,
                got.ttl,
                p.checksum,
                p.cfg.version,
            ) {
                Ok(advert) => {
                    self.node.handle_advert(now, ifindex, got.src, &advert);
                    self.status_due = true;
                }
                Err(e) => {
                    *self
                        .wire_drops
                        .entry(idx)
                        .or_default()
                        .entry(e.name())
                        .or_default() += 1;
                    self.status_due = true;
                }
            }
        }
    }

    /// Carries out the node's actions. VIP changes are published to the
    /// dataplane before any announcement goes out, so clients that move on
    /// a gratuitous ARP find the VIP's services already there.
    fn carry_out(&mut self) {
        let mut vips_changed = false;
        let mut announce = Vec::new();
        while let Some((i, action)) = self.node.poll_action() {
            self.status_due = true;
            match action {
                Action::Send(advert) => self.send(i, &advert),
                Action::Announce => announce.push(i),
                Action::Vips(state) => {
                    self.set_vips(i, state);
                    vips_changed = true;
                }
                Action::Transition(t) => self.transitioned(i, t),
                Action::Warn(w) => {
                    warn!(instance = %self.plan.instances[i].cfg.name, warning = ?w, "VRRP: misconfiguration seen on the wire")
                }
            }
        }
        if vips_changed {
            (self.publish)(&self.vip_states);
        }
        for i in announce {
            self.announce(i);
        }
    }

    fn send(&mut self, i: usize, advert: &wire::Advert) {
        let p = &self.plan.instances[i];
        let v6 = p.cfg.primary.is_ipv6();
        let Some((_, sock)) = self.io.vrrp.iter().find(|(k, _)| *k == (p.ifindex, v6)) else {
            return;
        };
        let group = if v6 {
            IpAddr::V6(wire::MCAST_V6)
        } else {
            IpAddr::V4(wire::MCAST_V4)
        };
        let dsts: Vec<IpAddr> = if p.cfg.unicast_peers.is_empty() {
            vec![group]
        } else {
            p.cfg.unicast_peers.clone()
        };
        // With a virtual MAC, multicast adverts leave from it (RFC 5798
        // section 7.3) as whole frames; everything else through the kernel.
        let vmac = self
            .io
            .packet
            .get(&p.ifindex)
            .filter(|_| p.virtual_mac)
            .map(|sender| (p.mac, sender));
        let mut buf = [0u8; wire::MAX_LEN];
        let mut frame = [0u8; announce::MAX_ADVERT_FRAME];
        for dst in dsts {
            let n = match wire::emit(advert, p.cfg.primary, dst, p.checksum, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    warn!(instance = %p.cfg.name, error = %e, "VRRP: cannot encode advert");
                    continue;
                }
            };
            let sent = match vmac.and_then(|(mac, sender)| {
                let len = announce::advert_frame(&mut frame, mac, p.cfg.primary, dst, &buf[..n])?;
                Some((sender, len))
            }) {
                Some((sender, len)) => sender.send(&frame[..len]),
                None => sock.send(dst, &buf[..n]),
            };
            if let Err(e) = sent {
                debug!(instance = %p.cfg.name, %dst, error = %e, "VRRP: sending an advert failed");
            }
        }
    }

    fn announce(&mut self, i: usize) {
        let p = &self.plan.instances[i];
        let Some(sender) = self.io.packet.get(&p.ifindex) else {
            return;
        };
        let mut buf = [0u8; announce::MAX_FRAME];
        for _ in 0..p.garp_repeat {
            for vip in &p.cfg.vips {
                if let Some(n) = announce::frame(&mut buf, p.mac, *vip) {
                    if let Err(e) = sender.send(&buf[..n]) {
                        debug!(instance = %p.cfg.name, error = %e, "VRRP: sending an announcement failed");
                    }
                }
            }
        }
    }

    fn set_vips(&mut self, i: usize, state: VipState) {
        let p = self.plan.instances[i].clone();
        for vip in &p.cfg.vips {
            self.vip_states.insert(*vip, state);
        }
        if p.mode != VipMode::Kernel {
            return;
        }
        // Kernel mode: the address is on the link only while Active.
        for vip in &p.cfg.vips {
            let prefix = if vip.is_ipv6() { 128 } else { 32 };
            let have = self.kernel_vips.contains(&(p.ifindex, *vip));
            if state == VipState::Active && !have {
                match self.io.nl.add_addr(p.ifindex, *vip, prefix) {
                    Ok(()) => self.kernel_vips.push((p.ifindex, *vip)),
                    Err(e) => {
                        warn!(instance = %p.cfg.name, %vip, error = %e, "VRRP: adding the VIP to the link failed")
                    }
                }
            } else if state != VipState::Active && have {
                if let Err(e) = self.io.nl.del_addr(p.ifindex, *vip, prefix) {
                    warn!(instance = %p.cfg.name, %vip, error = %e, "VRRP: removing the VIP from the link failed");
                }
                self.kernel_vips.retain(|x| *x != (p.ifindex, *vip));
            }
        }
    }

    fn remove_kernel_vips(&mut self) {
        for (ifindex, vip) in std::mem::take(&mut self.kernel_vips) {
            let prefix = if vip.is_ipv6() { 128 } else { 32 };
            if let Err(e) = self.io.nl.del_addr(ifindex, vip, prefix) {
                warn!(%vip, error = %e, "VRRP: removing the VIP from the link failed");
            }
        }
    }

    fn transitioned(&mut self, i: usize, t: Transition) {
        self.status_urgent = true;
        let p = &self.plan.instances[i];
        info!(
            instance = %p.cfg.name,
            from = %t.from,
            to = %t.to,
            reason = %t.reason,
            "VRRP: state change"
        );
        self.shared.events.push(json!({
            "instance": p.cfg.name,
            "from": t.from.name(),
            "to": t.to.name(),
            "reason": t.reason.name(),
        }));
        let Some(cmd) = &p.notify else {
            return;
        };
        if self.hooks.len() >= MAX_HOOKS {
            warn!(instance = %p.cfg.name, "VRRP: too many notify hooks still running; skipped one");
            return;
        }
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{cmd} \"$1\" \"$2\" \"$3\" \"$4\""))
            .arg("vipgate-notify")
            .args([
                p.cfg.name.as_str(),
                t.from.name(),
                t.to.name(),
                t.reason.name(),
            ])
            .stdin(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => self.hooks.push(child),
            Err(e) => warn!(instance = %p.cfg.name, error = %e, "VRRP: notify hook did not start"),
        }
    }

    fn reap_hooks(&mut self) {
        self.hooks
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    fn serve_requests(&mut self, now: Instant) {
        while let Ok((request, reply)) = self.requests.try_recv() {
            let result = match &request {
                Request::Resign(name) => self.node.resign(now, name).map(|until| {
                    json!({ "instance": name, "grace_ms": until.duration_since(now).as_millis() as u64 })
                }),
                Request::Resume(name) => self
                    .node
                    .resume(now, name)
                    .map(|()| json!({ "instance": name })),
                Request::Track(key, up) => {
                    if self.node.track(key) != Some(*up) {
                        info!(object = %key, up, "VRRP: tracked object changed");
                    }
                    self.node.set_track(now, key, *up);
                    self.carry_out();
                    let _ = reply.send(Ok(json!({})));
                    continue;
                }
            };
            if result.is_ok() {
                info!(?request, "VRRP: operator request");
            }
            self.carry_out();
            let _ = reply.send(result.map_err(|e| e.to_string()));
        }
    }

    // ----------------------------------------------------------- tracking

    fn link_event(&mut self, now: Instant) {
        let mut msgs = Vec::new();
        // One datagram is waiting (poll said so); ENOBUFS just means
        // re-reading, which rescan does anyway.
        let _ = self.io.links.recv_notifications(&mut msgs);
        self.rescan_links(now);
    }

    fn rescan_links(&mut self, now: Instant) {
        if self.plan.links.is_empty() {
            return;
        }
        let links = match self.io.nl.links() {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "VRRP: reading links failed");
                return;
            }
        };
        for (key, name) in self.plan.links.clone() {
            let up = links.iter().any(|l| l.name == name && l.up && l.carrier);
            self.track(now, &key, up);
        }
    }

    fn rescan_files(&mut self, now: Instant) {
        for (key, path) in self.plan.files.clone() {
            let up = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.lines().next().map(|l| l.trim() == "0"))
                .unwrap_or(false);
            self.track(now, &key, up);
        }
    }

    /// Starts due scripts and collects finished ones; rise/fall decide
    /// when a script's track changes. Runs every loop: allocates nothing
    /// unless a script finished.
    fn run_scripts(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for (i, (s, state)) in self.plan.scripts.iter().zip(&mut self.scripts).enumerate() {
            let mut result = None;
            if let Some((child, started)) = &mut state.child {
                match child.try_wait() {
                    Ok(Some(status)) => result = Some(status.success()),
                    Ok(None) if now.duration_since(*started) > s.timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        result = Some(false);
                    }
                    Ok(None) => {}
                    Err(_) => result = Some(false),
                }
                if result.is_some() {
                    state.child = None;
                }
            }
            if state.child.is_none() && state.next.is_none_or(|t| now >= t) {
                state.next = Some(now + s.interval);
                match Command::new("/bin/sh")
                    .arg("-c")
                    .arg(&s.command)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    Ok(child) => state.child = Some((child, now)),
                    Err(_) => result = Some(false),
                }
            }
            let Some(ok) = result else {
                continue;
            };
            let verdict = if ok {
                state.ok_run += 1;
                state.fail_run = 0;
                (state.ok_run >= s.rise).then_some(true)
            } else {
                state.fail_run += 1;
                state.ok_run = 0;
                (state.fail_run >= s.fall).then_some(false)
            };
            if let Some(up) = verdict {
                changed.push((i, up));
            }
        }
        for (i, up) in changed {
            let key = self.plan.scripts[i].key.clone();
            self.track(now, &key, up);
        }
    }

    fn track(&mut self, now: Instant, key: &str, up: bool) {
        if self.node.track(key) != Some(up) {
            info!(track = key, up, "VRRP: tracked object changed");
            self.status_due = true;
        }
        self.node.set_track(now, key, up);
    }

    // ------------------------------------------------------------- status

    fn publish_status(&mut self) {
        self.status_due = false;
        self.status_urgent = false;
        let now = Instant::now();
        let instances: Vec<Value> = (0..self.node.len())
            .map(|i| self.instance_status(i, now))
            .collect();
        let tracks: BTreeMap<&str, bool> =
            self.node.tracks().map(|(k, up)| (k.as_str(), up)).collect();
        let value = json!({
            "instances": instances,
            "tracks": tracks,
            "unknown_vrid": self.node.unknown_vrid,
        });
        if let Ok(mut s) = self.shared.status.lock() {
            *s = value;
        }
    }

    fn instance_status(&self, i: usize, now: Instant) -> Value {
        let inst: &Instance = self.node.instance(i);
        let p = &self.plan.instances[i];
        let c = inst.counters();
        let mut dropped: BTreeMap<&str, u64> = Drop::ALL
            .iter()
            .map(|d| (d.name(), c.dropped[*d as usize]))
            .collect();
        for e in AdvertError::ALL {
            dropped.insert(e.name(), 0);
        }
        if let Some(w) = self.wire_drops.get(&i) {
            for (k, v) in w {
                dropped.insert(k, *v);
            }
        }
        let last = inst.last_transition().map(|t| {
            json!({
                "from": t.from.name(),
                "to": t.to.name(),
                "reason": t.reason.name(),
                "seconds_ago": now.saturating_duration_since(t.at).as_secs_f64(),
            })
        });
        json!({
            "name": p.cfg.name,
            "interface": p.ifname,
            "vrid": p.cfg.vrid,
            "version": match p.cfg.version { Version::V2 => 2, Version::V3 => 3 },
            "state": inst.state().name(),
            "priority": p.cfg.priority,
            "effective_priority": inst.effective_priority(),
            "master": inst.master().map(|a| a.to_string()),
            "advert_interval_ms": u64::from(inst.interval_cs()) * 10,
            "vips": p.cfg.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            "vip_state": format!("{:?}", inst.vip_state()).to_lowercase(),
            "vip_mode": match p.mode { VipMode::Dataplane => "dataplane", VipMode::Kernel => "kernel" },
            "resigned": inst.is_resigned(),
            "fault": inst.is_faulted(),
            "last_transition": last,
            "counters": {
                "adverts_rx": c.adverts_rx,
                "adverts_tx": c.adverts_tx,
                "priority_zero_rx": c.priority_zero_rx,
                "priority_zero_tx": c.priority_zero_tx,
                "became_master": c.became_master,
                "interval_mismatch": c.interval_mismatch,
                "dropped": dropped,
            },
        })
    }
}
