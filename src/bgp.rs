//! BGP in the daemon: the `[bgp]` section mapped onto the routing crate's
//! speaker, the announcement policy, operator routes, drain, and the
//! standalone `vipgate route speak`.
//!
//! Owns:
//! - [`speaker_config`] / [`route_attrs`] / [`peer_export`]: `[bgp]` to
//!   a [`SpeakerConfig`], the attributes every announced route starts
//!   from, and what each peer adds to them (its own MED, communities,
//!   prepend, local preference);
//! - [`Policy`]: which configured prefixes are announced, given which VIPs
//!   qualify (the services on them can serve, see `daemon::services`; in
//!   `vrrp` mode also VRRP mastership)
//!   mode); an aggregate is announced while any VIP it covers qualifies;
//! - [`Routes`]: the sans-IO table of policy routes, operator routes
//!   (`vipgate route announce`) and the drain state, and what follows from
//!   them; [`Bgp`]: that table driving a running [`Speaker`];
//! - [`speak`]: the ExaBGP-like stdin/stdout speaker with no daemon.
//!
//! Operator routes and policy routes are two separate tables. A prefix is
//! announced while either holds it; when both do, the operator's
//! attributes are sent. A policy withdrawal never removes an operator
//! route, and `vipgate route withdraw` removes only the operator route (a
//! prefix the policy still wants stays announced, with the policy's
//! attributes).
//!
//! Drain (`vipgate drain`): every route gets GRACEFUL_SHUTDOWN (RFC 8326)
//! plus `[bgp.drain]` prepend/MED at once, and everything (operator routes
//! too) is withdrawn `[bgp.drain] delay` later; the dataplane keeps
//! forwarding. `vipgate undrain` announces everything again without the
//! drain attributes. Routes changed meanwhile are kept and take effect on
//! undrain.
//!
//! Must not touch: the dataplane, VRRP state (it is told VIP states), the
//! routing crate's internals (only [`SpeakerHandle`]).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tracing::{info, warn};

use vipgate_routing::rib::{DrainPolicy, NextHop, PeerExport, RouteAttrs};
use vipgate_routing::speaker::{PeerConfig, PeerStatus, Speaker, SpeakerConfig, SpeakerHandle};
use vipgate_routing::wire::{Community, Family, LargeCommunity, Prefix};

use crate::config::{self, AddressFamily, AnnounceMode, BgpConfig, Config, IpPrefix};
use crate::vrrp::instance::VipState;

// ------------------------------------------------------------ config mapping

/// `[bgp]` as the speaker's configuration. From `system` (this machine's
/// addresses): the router id when `[bgp] router_id` is not set
/// ([`config::SystemView::default_router_id`]) and the next hops of the
/// other family ([`cross_family_next_hops`]).
pub fn speaker_config(
    bgp: &BgpConfig,
    system: Option<&config::SystemView>,
) -> Result<SpeakerConfig> {
    let local_as = bgp
        .local_as
        .ok_or_else(|| anyhow!("[bgp] local_as is required with peers"))?;
    let default_router_id = system.and_then(config::SystemView::default_router_id);
    let router_id = bgp.router_id.or(default_router_id).ok_or_else(|| {
        anyhow!(
            "[bgp] router_id is not set and this machine has no IPv4 address to use; set router_id"
        )
    })?;
    let peers = bgp
        .peers
        .iter()
        .map(|p| {
            let mut out = peer_config(p);
            let (v4, v6) = cross_family_next_hops(p, system);
            out.next_hop_ipv4 = v4;
            out.next_hop_ipv6 = out.next_hop_ipv6.or(v6);
            out
        })
        .collect();
    Ok(SpeakerConfig {
        local_as,
        router_id,
        listen: bgp.listen,
        peers,
        drain: DrainPolicy {
            extra_prepend: bgp.drain.prepend,
            med: bgp.drain.med,
        },
    })
}

/// Next hops for the family the session's own address cannot give: on an
/// IPv4 session carrying IPv6 unicast, the first global IPv6 address of
/// the interface whose subnet holds the peer (and the reverse). `None`
/// where there is none; the routing crate then does not send that
/// family's routes to the peer (and counts them as unresolved).
pub fn cross_family_next_hops(
    p: &config::BgpPeerConfig,
    system: Option<&config::SystemView>,
) -> (Option<Ipv4Addr>, Option<std::net::Ipv6Addr>) {
    let Some(link) = system.and_then(|s| {
        s.interfaces
            .iter()
            .find(|i| i.subnet_holding(p.address).is_some())
    }) else {
        return (None, None);
    };
    let v4 = link.addresses.iter().find_map(|a| match a.address {
        IpAddr::V4(x) if !x.is_loopback() => Some(x),
        _ => None,
    });
    let v6 = link.addresses.iter().find_map(|a| match a.address {
        // Not link-local (fe80::/10): a next hop must be global.
        IpAddr::V6(x) if !x.is_unicast_link_local() && !x.is_loopback() => Some(x),
        _ => None,
    });
    match p.address {
        IpAddr::V4(_) if p.carries(AddressFamily::Ipv6Unicast) => (None, v6),
        IpAddr::V6(_) if p.carries(AddressFamily::Ipv4Unicast) => (v4, None),
        _ => (None, None),
    }
}

fn peer_config(p: &config::BgpPeerConfig) -> PeerConfig {
    let mut out = PeerConfig::new(p.address, p.remote_as);
    out.port = p.port;
    out.local_address = p.local_address;
    // Validated: 0 or 3..=65535 whole seconds.
    out.hold_time = u16::try_from(p.hold_time.as_secs()).unwrap_or(u16::MAX);
    out.connect_retry = p.connect_retry;
    out.idle_hold = p.reconnect_delay;
    out.passive = p.passive;
    out.md5_password = p.md5_password.clone();
    out.ttl_security = p.ttl_security;
    out.families = p
        .families
        .iter()
        .map(|f| match f {
            AddressFamily::Ipv4Unicast => Family::Ipv4Unicast,
            AddressFamily::Ipv6Unicast => Family::Ipv6Unicast,
        })
        .collect();
    out.next_hop_ipv6 = p.next_hop_v6;
    out.export = peer_export(p);
    out
}

/// The attributes every policy route starts from: next-hop self. Each
/// peer adds its own `med`, `communities`, `large_communities`, `prepend`
/// and (iBGP) `local_pref` as it is sent ([`peer_export`]), so peers may
/// differ; a `[[bgp.announce]]` MED replaces the peer's, its communities
/// add to the peer's.
pub fn route_attrs(_bgp: &BgpConfig) -> Result<RouteAttrs> {
    Ok(RouteAttrs {
        next_hop: NextHop::Local,
        ..RouteAttrs::default()
    })
}

/// What one peer adds to every route it is sent.
pub fn peer_export(p: &config::BgpPeerConfig) -> PeerExport {
    PeerExport {
        med: p.med,
        local_pref: p.local_pref,
        communities: communities(&p.communities),
        large_communities: large_communities(&p.large_communities),
        // Validated: 0 for iBGP peers (and the session never prepends there).
        prepend: p.prepend,
    }
}

fn communities(c: &[config::Community]) -> Vec<Community> {
    c.iter().map(|(a, v)| Community::new(*a, *v)).collect()
}

fn large_communities(c: &[config::LargeCommunity]) -> Vec<LargeCommunity> {
    c.iter()
        .map(|(g, a, b)| LargeCommunity {
            global_admin: *g,
            local_data1: *a,
            local_data2: *b,
        })
        .collect()
}

fn prefix_of(p: IpPrefix) -> Prefix {
    // IpPrefix is validated the same way (length in range, no host bits).
    Prefix::new(p.address(), p.prefix_len()).unwrap_or(Prefix::host(p.address()))
}

// ------------------------------------------------------------ policy

/// The configured announcements and the VIPs each covers.
#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: AnnounceMode,
    entries: Vec<(Prefix, RouteAttrs, Vec<IpAddr>)>,
}

impl Policy {
    /// From `config` ([`Config::bgp_announcements`]), each entry with
    /// `base` ([`route_attrs`]) plus its own communities and MED.
    pub fn new(config: &Config, base: &RouteAttrs) -> Policy {
        let mut vips: Vec<IpAddr> = config.services.iter().map(|s| s.vip).collect();
        vips.extend(config.vrrp.instances.iter().flat_map(|i| i.vips.clone()));
        vips.sort();
        vips.dedup();
        let entries = config
            .bgp_announcements()
            .into_iter()
            .map(|a| {
                let mut attrs = base.clone();
                attrs.communities.extend(communities(&a.communities));
                attrs
                    .large_communities
                    .extend(large_communities(&a.large_communities));
                attrs.med = a.med.or(attrs.med);
                let covered = vips
                    .iter()
                    .copied()
                    .filter(|v| a.prefix.contains(*v))
                    .collect();
                (prefix_of(a.prefix), attrs, covered)
            })
            .collect();
        Policy {
            mode: config.bgp.mode,
            entries,
        }
    }

    /// The routes to announce when exactly the VIPs for which `qualifies`
    /// holds may be announced: each prefix covering one of them.
    pub fn wanted(&self, qualifies: impl Fn(IpAddr) -> bool) -> BTreeMap<Prefix, RouteAttrs> {
        self.entries
            .iter()
            .filter(|(_, _, vips)| vips.iter().any(|v| qualifies(*v)))
            .map(|(p, a, _)| (*p, a.clone()))
            .collect()
    }

    /// The routes of `self.mode` when the VIPs `serving` holds for can
    /// take clients: all of those in `ecmp` mode; in `vrrp` mode only
    /// those this node also masters (VRRP state Active in `states`).
    pub fn routes(
        &self,
        serving: impl Fn(IpAddr) -> bool,
        states: &std::collections::HashMap<IpAddr, VipState>,
    ) -> BTreeMap<Prefix, RouteAttrs> {
        match self.mode {
            AnnounceMode::Ecmp => self.wanted(serving),
            AnnounceMode::Vrrp => {
                self.wanted(|v| states.get(&v) == Some(&VipState::Active) && serving(v))
            }
        }
    }
}

// ------------------------------------------------------------ route table

/// Where a drain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    Off,
    /// Announced with GRACEFUL_SHUTDOWN until `withdraw_at`.
    Draining {
        withdraw_at: Instant,
    },
    /// Everything withdrawn until undrain.
    Drained,
}

/// Policy routes, operator routes and the drain state. Sans-IO: callers
/// pass `now`.
#[derive(Clone, Debug)]
pub struct Routes {
    policy: BTreeMap<Prefix, RouteAttrs>,
    operator: BTreeMap<Prefix, RouteAttrs>,
    drain: Drain,
    delay: Duration,
}

impl Routes {
    pub fn new(drain_delay: Duration) -> Routes {
        Routes {
            policy: BTreeMap::new(),
            operator: BTreeMap::new(),
            drain: Drain::Off,
            delay: drain_delay,
        }
    }

    /// Replace the policy's routes.
    pub fn set_policy(&mut self, routes: BTreeMap<Prefix, RouteAttrs>) {
        self.policy = routes;
    }

    pub fn operator_announce(&mut self, prefix: Prefix, attrs: RouteAttrs) {
        self.operator.insert(prefix, attrs);
    }

    /// False if the operator had not announced `prefix`.
    pub fn operator_withdraw(&mut self, prefix: &Prefix) -> bool {
        self.operator.remove(prefix).is_some()
    }

    /// Start a drain (a second drain keeps the first one's deadline).
    pub fn drain(&mut self, now: Instant) {
        if self.drain == Drain::Off {
            self.drain = Drain::Draining {
                withdraw_at: now + self.delay,
            };
        }
    }

    pub fn undrain(&mut self) {
        self.drain = Drain::Off;
    }

    /// Moves a drain whose delay is over to Drained; true if it did.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.drain {
            Drain::Draining { withdraw_at } if now >= withdraw_at => {
                self.drain = Drain::Drained;
                true
            }
            _ => false,
        }
    }

    pub fn drain_state(&self) -> Drain {
        self.drain
    }

    /// What must be announced now: operator routes over policy routes,
    /// nothing once drained.
    pub fn announced(&self) -> BTreeMap<Prefix, RouteAttrs> {
        if self.drain == Drain::Drained {
            return BTreeMap::new();
        }
        let mut out = self.policy.clone();
        out.extend(self.operator.iter().map(|(p, a)| (*p, a.clone())));
        out
    }

    /// Which table a prefix comes from, as shown by `status`.
    fn source(&self, prefix: &Prefix) -> &'static str {
        match (
            self.operator.contains_key(prefix),
            self.policy.contains_key(prefix),
        ) {
            (true, true) => "operator+policy",
            (true, false) => "operator",
            _ => "policy",
        }
    }
}

// ------------------------------------------------------------ runtime

/// A running speaker driven by a [`Routes`] table.
pub struct Bgp {
    speaker: Mutex<Option<Speaker>>,
    handle: SpeakerHandle,
    state: Mutex<State>,
    names: Vec<(IpAddr, String)>,
    mode: Option<AnnounceMode>,
}

struct State {
    routes: Routes,
    /// What the speaker was last told to announce.
    pushed: BTreeMap<Prefix, RouteAttrs>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bgp {
    /// Binds the listener (if any) and starts the speaker's thread;
    /// nothing is announced yet. `mode`: None for `route speak`.
    pub fn start(
        bgp: &BgpConfig,
        system: Option<&config::SystemView>,
        mode: Option<AnnounceMode>,
    ) -> Result<Bgp> {
        let cfg = speaker_config(bgp, system)?;
        let speaker = Speaker::new(cfg).map_err(|e| anyhow!("BGP speaker: {e}"))?;
        info!(peers = bgp.peers.len(), "BGP speaker running");
        Ok(Bgp {
            handle: speaker.handle(),
            speaker: Mutex::new(Some(speaker)),
            state: Mutex::new(State {
                routes: Routes::new(bgp.drain.delay),
                pushed: BTreeMap::new(),
            }),
            names: bgp
                .peers
                .iter()
                .map(|p| (p.address, p.name.clone()))
                .collect(),
            mode,
        })
    }

    /// Edit the table and hand the difference to the speaker.
    fn edit<R>(&self, f: impl FnOnce(&mut Routes) -> R) -> R {
        let mut st = lock(&self.state);
        let out = f(&mut st.routes);
        self.push(&mut st);
        out
    }

    fn push(&self, st: &mut State) {
        let want = st.routes.announced();
        // Drain attributes first, so re-sent routes carry them.
        self.handle.set_drain(st.routes.drain_state() != Drain::Off);
        for prefix in st.pushed.keys() {
            if !want.contains_key(prefix) {
                self.handle.withdraw(*prefix);
            }
        }
        for (prefix, attrs) in &want {
            if st.pushed.get(prefix) != Some(attrs) {
                self.handle.announce(*prefix, attrs.clone());
            }
        }
        st.pushed = want;
    }

    /// The policy's routes now (withdrawals take effect at once).
    pub fn set_policy(&self, routes: BTreeMap<Prefix, RouteAttrs>) {
        self.edit(|r| r.set_policy(routes));
    }

    pub fn operator_announce(&self, prefix: Prefix, attrs: RouteAttrs) {
        self.edit(|r| r.operator_announce(prefix, attrs));
    }

    pub fn operator_withdraw(&self, prefix: &Prefix) -> bool {
        self.edit(|r| r.operator_withdraw(prefix))
    }

    /// Start a drain; returns the delay before withdrawal.
    pub fn drain(&self, now: Instant) -> Duration {
        self.edit(|r| {
            r.drain(now);
            match r.drain_state() {
                Drain::Draining { withdraw_at } => withdraw_at.saturating_duration_since(now),
                _ => Duration::ZERO,
            }
        })
    }

    pub fn undrain(&self) {
        self.edit(Routes::undrain);
    }

    /// Withdraws a drained table when its delay is over.
    pub fn tick(&self, now: Instant) {
        let mut st = lock(&self.state);
        if st.routes.tick(now) {
            info!("drain delay over: routes withdrawn");
            self.push(&mut st);
        }
    }

    /// Withdraw everything, Cease, stop (bounded, see the routing crate).
    pub fn shutdown(&self) {
        if let Some(speaker) = lock(&self.speaker).take() {
            if !self.handle.shutdown() {
                warn!("BGP speaker did not finish withdrawing in time");
            }
            drop(speaker);
        }
    }

    fn name_of(&self, addr: IpAddr) -> &str {
        self.names
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or("", |(_, n)| n.as_str())
    }

    /// `vipgate bgp peers`.
    pub fn peers_json(&self) -> Value {
        let peers: Vec<Value> = self
            .handle
            .peers()
            .iter()
            .map(|p| peer_json(p, self.name_of(p.address)))
            .collect();
        json!({ "peers": peers })
    }

    /// `vipgate route list [--peer ADDR]`: the Adj-RIB-Out.
    pub fn rib_json(&self, peer: Option<IpAddr>) -> Value {
        let routes: Vec<Value> = self
            .handle
            .adj_rib_out(peer)
            .iter()
            .map(|(peer, prefix, attrs)| {
                let mut v = attrs_json(attrs);
                v["peer"] = json!(peer.to_string());
                v["prefix"] = json!(prefix.to_string());
                v
            })
            .collect();
        json!({ "routes": routes })
    }

    /// The BGP part of `vipgate status`.
    pub fn status_json(&self, now: Instant) -> Value {
        let st = lock(&self.state);
        let announced: Vec<Value> = st
            .routes
            .announced()
            .iter()
            .map(|(prefix, attrs)| {
                let mut v = attrs_json(attrs);
                v["prefix"] = json!(prefix.to_string());
                v["source"] = json!(st.routes.source(prefix));
                v
            })
            .collect();
        let (drain, withdraw_in) = match st.routes.drain_state() {
            Drain::Off => ("off", None),
            Drain::Draining { withdraw_at } => (
                "draining",
                Some(withdraw_at.saturating_duration_since(now).as_millis() as u64),
            ),
            Drain::Drained => ("drained", None),
        };
        json!({
            "mode": self.mode.map(|m| m.to_string()),
            "drain": drain,
            "withdraw_in_ms": withdraw_in,
            "announced": announced,
            "peers": self.peers_json()["peers"],
        })
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn peer_json(p: &PeerStatus, name: &str) -> Value {
    json!({
        "name": name,
        "address": p.address.to_string(),
        "state": format!("{:?}", p.state),
        "uptime_seconds": p.uptime.map(|d| d.as_secs()),
        "prefixes_sent": p.prefixes_sent,
        "prefixes_received": p.prefixes_received,
        "last_error": p.last_error,
    })
}

fn attrs_json(a: &RouteAttrs) -> Value {
    json!({
        "next_hop": match a.next_hop {
            NextHop::Local => "self".to_string(),
            NextHop::Address(x) => x.to_string(),
        },
        "med": a.med,
        "local_pref": a.local_pref,
        "communities": a.communities.iter().map(|c| format!("{}:{}", c.0 >> 16, c.0 & 0xffff)).collect::<Vec<_>>(),
        "large_communities": a.large_communities.iter().map(|c| format!("{}:{}:{}", c.global_admin, c.local_data1, c.local_data2)).collect::<Vec<_>>(),
        "prepend": a.prepend,
    })
}

// ------------------------------------------------------------ requests

/// An operator route as the control socket carries it:
/// `{"prefix", "next_hop"?, "med"?, "communities"?: ["A:B"],
/// "large_communities"?: ["A:B:C"], "prepend"?}`.
pub fn route_from_request(request: &Value) -> Result<(Prefix, RouteAttrs)> {
    let prefix = parse_prefix(
        request["prefix"]
            .as_str()
            .ok_or_else(|| anyhow!("missing \"prefix\""))?,
    )?;
    let mut attrs = RouteAttrs::default();
    if let Some(nh) = request["next_hop"].as_str() {
        attrs.next_hop = parse_next_hop(&prefix, nh)?;
    }
    if let Some(med) = request.get("med").filter(|v| !v.is_null()) {
        let med = med
            .as_u64()
            .ok_or_else(|| anyhow!("med must be a number"))?;
        attrs.med = Some(u32::try_from(med).map_err(|_| anyhow!("med {med} is above 4294967295"))?);
    }
    for c in strings(&request["communities"]) {
        attrs.communities.push(parse_community(c)?);
    }
    for c in strings(&request["large_communities"]) {
        attrs.large_communities.push(parse_large_community(c)?);
    }
    if let Some(n) = request.get("prepend").filter(|v| !v.is_null()) {
        attrs.prepend = parse_prepend(&n.to_string())?;
    }
    Ok((prefix, attrs))
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// `198.18.10.10/32`, `2001:db8::10/128`, or a bare address (host route).
pub fn parse_prefix(s: &str) -> Result<Prefix> {
    s.parse::<Prefix>().map_err(|_| {
        anyhow!("invalid prefix {s:?}; write ADDRESS/LENGTH with no host bits set, e.g. 198.18.10.10/32")
    })
}

fn parse_next_hop(prefix: &Prefix, s: &str) -> Result<NextHop> {
    if s == "self" {
        return Ok(NextHop::Local);
    }
    let addr: IpAddr = s
        .parse()
        .map_err(|_| anyhow!("invalid next hop {s:?}; an IP address or \"self\""))?;
    if addr.is_ipv4() != prefix.is_ipv4() {
        bail!("next hop {addr} is not of the family of {prefix}");
    }
    Ok(NextHop::Address(addr))
}

/// `A:B`, each 0..=65535.
pub fn parse_community(s: &str) -> Result<Community> {
    let bad = || anyhow!("invalid community {s:?}; write ASN:VALUE, each 0..=65535");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    Ok(Community::new(
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
    ))
}

/// `A:B:C`, each 0..=4294967295.
pub fn parse_large_community(s: &str) -> Result<LargeCommunity> {
    let bad = || {
        anyhow!("invalid large community {s:?}; write GLOBAL:LOCAL1:LOCAL2, each 0..=4294967295")
    };
    let parts: Vec<&str> = s.split(':').collect();
    let [g, a, b] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(LargeCommunity {
        global_admin: g.parse().map_err(|_| bad())?,
        local_data1: a.parse().map_err(|_| bad())?,
        local_data2: b.parse().map_err(|_| bad())?,
    })
}

fn parse_prepend(s: &str) -> Result<u8> {
    s.parse::<u8>()
        .ok()
        .filter(|n| *n <= config::MAX_PREPEND)
        .ok_or_else(|| anyhow!("invalid prepend {s:?}; 0..={}", config::MAX_PREPEND))
}

/// One `route speak` input line.
#[derive(Debug, PartialEq, Eq)]
pub enum SpeakLine {
    Announce(Prefix, RouteAttrs),
    Withdraw(Prefix),
    /// Blank or `#` comment: no answer.
    Nothing,
}

/// `announce PREFIX [next-hop ADDR] [med N] [community A:B]...
/// [large-community A:B:C]... [prepend N]` or `withdraw PREFIX`.
pub fn parse_speak_line(line: &str) -> Result<SpeakLine> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next().filter(|w| !w.starts_with('#')) else {
        return Ok(SpeakLine::Nothing);
    };
    let prefix = parse_prefix(
        words
            .next()
            .ok_or_else(|| anyhow!("{verb}: missing PREFIX"))?,
    )?;
    match verb {
        "withdraw" => match words.next() {
            None => Ok(SpeakLine::Withdraw(prefix)),
            Some(w) => bail!("withdraw takes only a PREFIX, not {w:?}"),
        },
        "announce" => {
            let mut attrs = RouteAttrs::default();
            while let Some(key) = words.next() {
                let value = words
                    .next()
                    .ok_or_else(|| anyhow!("{key}: missing value"))?;
                match key {
                    "next-hop" => attrs.next_hop = parse_next_hop(&prefix, value)?,
                    "med" => {
                        attrs.med = Some(value.parse().map_err(|_| {
                            anyhow!("invalid med {value:?}; 0..=4294967295")
                        })?)
                    }
                    "community" => attrs.communities.push(parse_community(value)?),
                    "large-community" => attrs
                        .large_communities
                        .push(parse_large_community(value)?),
                    "prepend" => attrs.prepend = parse_prepend(value)?,
                    other => bail!(
                        "unknown attribute {other:?}; expected next-hop, med, community, large-community, prepend"
                    ),
                }
            }
            Ok(SpeakLine::Announce(prefix, attrs))
        }
        other => bail!("unknown command {other:?}; expected announce or withdraw"),
    }
}

// ------------------------------------------------------------ route speak

/// Top-level keys a `route speak` file may hold.
const SPEAK_SECTIONS: &[&str] = &["bgp"];

/// Reads a `[bgp]`-only file for `route speak`: the daemon's parser and
/// checks, with `[node]`, `[[interface]]` and `[[service]]` (which the
/// daemon needs and a speaker does not) supplied after the file's own
/// text so positions in errors stay the file's. `mode` and
/// `[[bgp.announce]]` are refused: stdin says what is announced.
pub fn load_speak_config(path: &Path, view: Option<&config::SystemView>) -> Result<BgpConfig> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path).with_context(|| {
        format!("{origin}: cannot read the file (check the path given to --config)")
    })?;
    if let Ok(toml::Value::Table(t)) = source.parse::<toml::Value>() {
        if let Some(k) = t.keys().find(|k| !SPEAK_SECTIONS.contains(&k.as_str())) {
            bail!("{origin}: [{k}]: `vipgate route speak` reads only the [bgp] section; remove [{k}] (or use `vipgate run` for a full configuration)");
        }
        let bgp = t.get("bgp").and_then(toml::Value::as_table);
        let Some(bgp) = bgp else {
            bail!("{origin}: no [bgp] section; `vipgate route speak` needs [bgp] with local_as and a [[bgp.peer]]");
        };
        for k in ["mode", "announce"] {
            if bgp.contains_key(k) {
                bail!("{origin}: bgp.{k}: `vipgate route speak` announces what stdin says; remove {k}");
            }
        }
        if bgp.get("peer").is_none() {
            bail!("{origin}: bgp.peer: no [[bgp.peer]]; add one with address and remote_as");
        }
    }
    // The synthetic sections come last: the file's line numbers stand.
    let filler = "\n\n[node]\nname = \"route-speak\"\n[[interface]]\nname = \"lo\"\n\
                  [[service]]\nname = \"route-speak\"\nvip = \"198.18.0.1\"\nport = 1\n\
                  [[service.backend]]\naddress = \"198.18.0.2\"\n";
    let text = format!("{source}{filler}");
    match config::validate_str(&text, &origin, view) {
        Ok(c) => Ok(c.bgp),
        Err(errors) => {
            let ours: Vec<String> = errors
                .iter()
                .filter(|e| e.field.is_empty() || e.field.starts_with("bgp"))
                .map(ToString::to_string)
                .collect();
            if ours.is_empty() {
                // Only the filler failed (e.g. no `lo`): the [bgp] part is fine.
                let c = config::validate_str(&text, &origin, None).map_err(|e| anyhow!("{e}"))?;
                return Ok(c.bgp);
            }
            bail!("{}\n{origin}: {} error(s)", ours.join("\n"), ours.len())
        }
    }
}

/// `vipgate route speak --config FILE`: holds the sessions, answers each
/// stdin line with `done` or `error: ...`; EOF or `stop` (SIGTERM,
/// SIGINT) withdraws everything and returns.
pub fn speak(path: &Path, view: Option<&config::SystemView>, stop: &AtomicBool) -> Result<()> {
    let bgp = load_speak_config(path, view)?;
    let speaker = Bgp::start(&bgp, view, None)?;
    let (tx, lines) = mpsc::channel::<String>();
    // The reader thread ends at EOF; it is not joined (stdin reads cannot
    // be interrupted), the process exits after us.
    std::thread::Builder::new()
        .name("vipgate-speak-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    let mut out = std::io::stdout();
    while !stop.load(Ordering::Relaxed) {
        let line = match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let answer = match parse_speak_line(&line) {
            Ok(SpeakLine::Nothing) => continue,
            Ok(SpeakLine::Announce(p, a)) => {
                speaker.operator_announce(p, a);
                "done".to_string()
            }
            Ok(SpeakLine::Withdraw(p)) => {
                if speaker.operator_withdraw(&p) {
                    "done".to_string()
                } else {
                    format!("error: {p} is not announced")
                }
            }
            Err(e) => format!("error: {e:#}"),
        };
        std::io::Write::write_all(&mut out, format!("{answer}\n").as_bytes())?;
        std::io::Write::flush(&mut out)?;
    }
    info!("route speak: withdrawing and stopping");
    speaker.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn med(n: u32) -> RouteAttrs {
        RouteAttrs {
            med: Some(n),
            ..Default::default()
        }
    }

    #[test]
    fn operator_and_policy_routes_are_separate() {
        let mut r = Routes::new(Duration::from_secs(5));
        r.set_policy([(p("198.18.10.10/32"), med(1))].into());
        r.operator_announce(p("198.18.10.10/32"), med(7));
        r.operator_announce(p("198.18.11.0/24"), med(8));
        assert_eq!(
            r.announced()[&p("198.18.10.10/32")],
            med(7),
            "operator wins"
        );
        // A policy withdrawal leaves operator routes.
        r.set_policy(BTreeMap::new());
        assert_eq!(r.announced().len(), 2);
        // An operator withdrawal leaves the policy's route (its attributes).
        r.set_policy([(p("198.18.10.10/32"), med(1))].into());
        assert!(r.operator_withdraw(&p("198.18.10.10/32")));
        assert!(!r.operator_withdraw(&p("198.18.10.10/32")));
        assert_eq!(r.announced()[&p("198.18.10.10/32")], med(1));
        assert_eq!(r.source(&p("198.18.10.10/32")), "policy");
    }

    #[test]
    fn drain_withdraws_after_the_delay_and_undrain_restores() {
        let t0 = Instant::now();
        let mut r = Routes::new(Duration::from_secs(5));
        r.set_policy([(p("198.18.10.10/32"), med(1))].into());
        r.drain(t0);
        assert!(!r.tick(t0 + Duration::from_secs(4)));
        assert_eq!(r.announced().len(), 1, "still announced while draining");
        r.drain(t0 + Duration::from_secs(4));
        assert!(
            r.tick(t0 + Duration::from_secs(5)),
            "second drain keeps the deadline"
        );
        assert!(r.announced().is_empty());
        r.undrain();
        assert_eq!(r.drain_state(), Drain::Off);
        assert_eq!(r.announced().len(), 1);
    }

    #[test]
    fn speak_lines_parse_and_errors_say_why() {
        let line = "announce 198.18.10.10/32 next-hop 198.18.0.9 med 5 community 65000:1 community 65000:2 large-community 1:2:3 prepend 2";
        let SpeakLine::Announce(prefix, a) = parse_speak_line(line).unwrap() else {
            panic!("announce");
        };
        assert_eq!(prefix, p("198.18.10.10/32"));
        assert_eq!(a.next_hop, NextHop::Address("198.18.0.9".parse().unwrap()));
        assert_eq!(a.med, Some(5));
        assert_eq!(
            a.communities,
            vec![Community::new(65000, 1), Community::new(65000, 2)]
        );
        assert_eq!(a.large_communities.len(), 1);
        assert_eq!(a.prepend, 2);
        assert_eq!(
            parse_speak_line("withdraw 2001:db8::10/128").unwrap(),
            SpeakLine::Withdraw(p("2001:db8::10/128"))
        );
        assert_eq!(parse_speak_line("  # note").unwrap(), SpeakLine::Nothing);
        for (bad, why) in [
            ("announce 198.18.10.10/24", "no host bits"),
            ("announce 198.18.10.10/32 med", "missing value"),
            ("announce 198.18.10.10/32 colour 1", "unknown attribute"),
            ("announce 198.18.10.10/32 next-hop 2001:db8::1", "family"),
            (
                "announce 198.18.10.10/32 community 70000:1",
                "invalid community",
            ),
            ("announce 198.18.10.10/32 prepend 17", "invalid prepend"),
            ("withdraw", "missing PREFIX"),
            ("flap 198.18.10.10/32", "unknown command"),
        ] {
            let e = parse_speak_line(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn requests_carry_the_cli_attributes() {
        let (prefix, a) = route_from_request(&json!({
            "prefix": "198.18.10.10", "med": 9, "communities": ["65000:1"],
            "large_communities": ["1:2:3"], "prepend": 1, "next_hop": "self"
        }))
        .unwrap();
        assert_eq!(prefix, p("198.18.10.10/32"));
        assert_eq!((a.med, a.prepend, a.next_hop), (Some(9), 1, NextHop::Local));
        assert!(route_from_request(&json!({})).is_err());
        assert!(route_from_request(&json!({"prefix": "198.18.10.10/32", "med": -1})).is_err());
    }

    const BGP: &str = r#"
[node]
name = "gw"
[[interface]]
name = "eth0"
[[service]]
name = "web"
vip = "198.18.10.10"
port = 80
  [[service.backend]]
  address = "198.18.2.2"
[[service]]
name = "idle"
vip = "198.18.10.11"
port = 80
  [[service.backend]]
  address = "198.18.2.2"
  weight = 0
[bgp]
local_as = 64512
router_id = "198.18.0.1"
med = 3
communities = ["65000:7"]
[[bgp.peer]]
address = "198.18.0.254"
remote_as = 64500
[[bgp.announce]]
prefix = "198.18.10.0/24"
med = 10
[[bgp.announce]]
prefix = "198.18.10.11/32"
"#;

    #[test]
    fn ecmp_policy_announces_serving_vips_and_their_aggregates() {
        let config = config::validate_str(BGP, "t.toml", None).expect("valid");
        let base = route_attrs(&config.bgp).unwrap();
        assert_eq!(base.med, None, "the peer's MED is added per peer");
        let policy = Policy::new(&config, &base);
        let serving: IpAddr = "198.18.10.10".parse().unwrap();
        let wanted = policy.routes(|v| v == serving, &Default::default());
        // The /24 covers the serving 198.18.10.10; the idle VIP's /32
        // does not serve.
        assert_eq!(
            wanted.keys().copied().collect::<Vec<_>>(),
            vec![p("198.18.10.0/24")]
        );
        let agg = &wanted[&p("198.18.10.0/24")];
        assert_eq!(agg.med, Some(10), "the announcement's MED");
        let peer = peer_export(&config.bgp.peers[0]);
        assert_eq!(peer.med, Some(3));
        let sent = peer.apply(agg);
        assert_eq!(
            sent.med,
            Some(10),
            "the announcement's MED replaces the peer's"
        );
        assert_eq!(sent.communities, vec![Community::new(65000, 7)]);
        assert!(policy.wanted(|_| false).is_empty());
        let sc = speaker_config(&config.bgp, None).unwrap();
        assert_eq!(sc.router_id, "198.18.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(sc.peers[0].hold_time, 90);
    }

    #[test]
    fn ipv6_next_hop_of_an_ipv4_session_comes_from_the_link_towards_the_peer() {
        let source = BGP.replace(
            "remote_as = 64500\n",
            "remote_as = 64500\nfamilies = [\"ipv4-unicast\", \"ipv6-unicast\"]\n",
        );
        let config = config::validate_str(&source, "t.toml", None).expect("valid");
        let addr = |s: &str| s.parse::<config::InterfaceAddress>().expect("test address");
        let view = config::SystemView::new(vec![
            config::SystemInterface::new("lo", vec![addr("127.0.0.1/8")]),
            config::SystemInterface::new(
                "eth1",
                vec![addr("198.18.5.2/24"), addr("2001:db8:5::2/64")],
            ),
            config::SystemInterface::new(
                "eth0",
                vec![
                    addr("fe80::1/64"),
                    addr("198.18.0.2/24"),
                    addr("2001:db8::2/64"),
                ],
            ),
        ]);
        let sc = speaker_config(&config.bgp, Some(&view)).unwrap();
        assert_eq!(
            sc.peers[0].next_hop_ipv6,
            Some("2001:db8::2".parse().unwrap())
        );
        assert_eq!(sc.peers[0].next_hop_ipv4, None);
        // Without the view (or a link towards the peer): none.
        let sc = speaker_config(&config.bgp, None).unwrap();
        assert_eq!(sc.peers[0].next_hop_ipv6, None);
    }

    #[test]
    fn vrrp_policy_follows_mastership_of_serving_vips() {
        let config = config::validate_str(BGP, "t.toml", None).expect("valid");
        let mut policy = Policy::new(&config, &RouteAttrs::default());
        policy.mode = AnnounceMode::Vrrp;
        let vip: IpAddr = "198.18.10.11".parse().unwrap();
        for (state, n) in [
            (VipState::Active, 2),
            (VipState::Draining, 0),
            (VipState::Inactive, 0),
        ] {
            let states = [(vip, state)].into();
            assert_eq!(policy.routes(|_| true, &states).len(), n, "{state:?}");
            assert!(policy.routes(|_| false, &states).is_empty(), "not serving");
        }
    }

    #[test]
    fn each_peer_gets_its_own_attributes() {
        let two = BGP.to_string()
            + "[[bgp.peer]]\naddress = \"198.18.0.253\"\nremote_as = 64501\nmed = 4\nprepend = 2\n";
        let config = config::validate_str(&two, "t.toml", None).expect("valid");
        let sc = speaker_config(&config.bgp, None).unwrap();
        assert_eq!(sc.peers[0].export.med, Some(3), "[bgp] med inherited");
        assert_eq!(
            (sc.peers[1].export.med, sc.peers[1].export.prepend),
            (Some(4), 2)
        );
        assert_eq!(
            sc.peers[0].export.communities,
            sc.peers[1].export.communities
        );
    }

    #[test]
    fn speak_files_hold_bgp_only() {
        let dir = std::env::temp_dir().join(format!("vgt-speak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("speak.toml");
        let write = |s: &str| std::fs::write(&file, s).unwrap();
        write("[bgp]\nlocal_as = 64512\nrouter_id = \"198.18.0.1\"\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n");
        let bgp = load_speak_config(&file, None).expect("valid");
        assert_eq!(bgp.peers.len(), 1);
        write("[bgp]\nlocal_as = 64512\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 0\n");
        let e = load_speak_config(&file, None).unwrap_err().to_string();
        assert!(e.contains(":5:") && e.contains("remote_as"), "{e}");
        write("[node]\nname = \"x\"\n[bgp]\nlocal_as = 1\n");
        let e = load_speak_config(&file, None).unwrap_err().to_string();
        assert!(e.contains("reads only the [bgp] section"), "{e}");
        write("[bgp]\nlocal_as = 1\nmode = \"vrrp\"\n");
        assert!(load_speak_config(&file, None)
            .unwrap_err()
            .to_string()
            .contains("remove mode"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
