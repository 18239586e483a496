//! The `[bgp]` section: the speaker's own keys, `[bgp.drain]`, the peer
//! defaults, `[[bgp.peer]]` and `[[bgp.announce]]`.
//!
//! Owns: reading those tables into a [`BgpDraft`] (one value at a time:
//! ranges, address kinds, community syntax) and building the [`BgpConfig`]
//! from a clean draft. Must not: compare peers or prefixes with each other,
//! with the services or with `[vrrp]`, or check how a peer's keys combine
//! (families with next hops, iBGP with local_pref...): that is `checks.rs`.
//!
//! The peer keys written under `[bgp]` itself are defaults: a peer that does
//! not set one inherits it, and its [`Setting`] remembers whether the value
//! was written in the peer, so an error points at the line that made it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::super::duration::format_duration;
use super::super::model::*;
use super::super::reader::{At, Reserved, Section};
use super::super::suggest::did_you_mean_suffix;
use super::super::tree::{Span, Table};
use super::{checked_name, or_default, Setting};

const BGP_KEYS: &[&str] = &[
    "local_as",
    "router_id",
    "listen",
    "mode",
    "hold_time",
    "connect_retry",
    "reconnect_delay",
    "ttl_security",
    "communities",
    "large_communities",
    "med",
    "prepend",
    "drain",
    "peer",
    "announce",
];
const BGP_RESERVED: &[Reserved] = &[
    Reserved {
        key: "neighbor",
        message: "vipgate calls BGP neighbours peers",
        help: "write each neighbour as a [[bgp.peer]] with address and remote_as",
    },
    Reserved {
        key: "neighbour",
        message: "vipgate calls BGP neighbours peers",
        help: "write each neighbour as a [[bgp.peer]] with address and remote_as",
    },
];
const DRAIN_KEYS: &[&str] = &["delay", "prepend", "med"];
const PEER_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "remote_as",
    "local_address",
    "passive",
    "hold_time",
    "connect_retry",
    "reconnect_delay",
    "md5_password",
    "ttl_security",
    "families",
    "med",
    "local_pref",
    "communities",
    "large_communities",
    "prepend",
    "next_hop_v6",
];
const PEER_RESERVED: &[Reserved] = &[
    Reserved {
        key: "peer_as",
        message: "the peer's AS is called remote_as",
        help: "write remote_as = 64500",
    },
    Reserved {
        key: "local_as",
        message: "local_as is set once for the speaker, in [bgp]",
        help: "move local_as to [bgp] (one AS per node)",
    },
];
const ANNOUNCE_KEYS: &[&str] = &["prefix", "communities", "large_communities", "med"];

const AS_HELP: &str = "use an AS number from 1 to 4294967295 (not 23456, AS_TRANS)";
const COMMUNITIES_EXAMPLE: &str = "[\"65000:100\"]";
const LARGE_EXAMPLE: &str = "[\"65000:1:2\"]";
const FAMILIES_EXAMPLE: &str = "[\"ipv4-unicast\", \"ipv6-unicast\"]";

/// `[bgp]` as read.
pub(crate) struct BgpDraft {
    /// Where `[bgp]` starts; `None` when the file has no `[bgp]`.
    pub span: Option<Span>,
    /// `None` when absent (or invalid, reported).
    pub local_as: Option<At<u32>>,
    pub router_id: Option<At<Ipv4Addr>>,
    pub listen: Option<At<SocketAddr>>,
    /// `listen` is written (`listen` is `None` if its value was invalid).
    pub listen_given: bool,
    pub mode: Option<At<AnnounceMode>>,
    pub drain: DrainConfig,
    /// The values peers inherit; `own` means written in `[bgp]`.
    pub defaults: PeerSettings,
    pub peers: Vec<BgpPeerDraft>,
    pub announce: Vec<AnnounceDraft>,
}

/// The peer keys `[bgp]` sets for every peer, resolved for one table.
#[derive(Clone)]
pub(crate) struct PeerSettings {
    pub hold_time: Setting<Duration>,
    pub connect_retry: Setting<Duration>,
    pub reconnect_delay: Setting<Duration>,
    pub ttl_security: Setting<bool>,
    pub communities: Setting<Vec<Community>>,
    pub large_communities: Setting<Vec<LargeCommunity>>,
    /// `Some(None)`: no MED.
    pub med: Setting<Option<u32>>,
    pub prepend: Setting<u8>,
}

/// `[[bgp.peer]]` as read.
pub(crate) struct BgpPeerDraft {
    pub index: usize,
    pub span: Option<Span>,
    /// Defaults to the address as written (with the address's span).
    pub name: Option<At<String>>,
    pub address: Option<At<IpAddr>>,
    /// Span `None` when defaulted.
    pub port: Option<At<u16>>,
    pub remote_as: Option<At<u32>>,
    pub local_address: Option<At<IpAddr>>,
    pub passive: Option<At<bool>>,
    pub md5_password: Option<At<String>>,
    pub families: Families,
    pub local_pref: Option<At<u32>>,
    pub next_hop_v6: Option<At<Ipv6Addr>>,
    pub settings: PeerSettings,
}

/// A peer's `families`: absent means the family of its address.
pub(crate) enum Families {
    OfAddress,
    Given(Vec<At<AddressFamily>>),
    Invalid,
}

/// `[[bgp.announce]]` as read.
pub(crate) struct AnnounceDraft {
    pub index: usize,
    pub prefix: Option<At<IpPrefix>>,
    /// Empty when absent; `None` when invalid (reported).
    pub communities: Option<Vec<Community>>,
    pub large_communities: Option<Vec<LargeCommunity>>,
    pub med: Option<At<u32>>,
}

impl PeerSettings {
    /// The built-in defaults (see the model docs).
    fn builtin() -> Self {
        PeerSettings {
            hold_time: Setting::builtin(DEFAULT_HOLD_TIME),
            connect_retry: Setting::builtin(DEFAULT_CONNECT_RETRY),
            reconnect_delay: Setting::builtin(DEFAULT_RECONNECT_DELAY),
            ttl_security: Setting::builtin(false),
            communities: Setting::builtin(Vec::new()),
            large_communities: Setting::builtin(Vec::new()),
            med: Setting::builtin(None),
            prepend: Setting::builtin(0),
        }
    }
}

impl Families {
    /// The families the peer carries, given its address.
    pub(crate) fn resolve(&self, address: Option<IpAddr>) -> Option<Vec<AddressFamily>> {
        match self {
            Families::OfAddress => address.map(|a| vec![AddressFamily::of(a)]),
            Families::Given(list) => Some(list.iter().map(|f| f.value).collect()),
            Families::Invalid => None,
        }
    }
}

impl BgpDraft {
    fn absent() -> Self {
        BgpDraft {
            span: None,
            local_as: None,
            router_id: None,
            listen: None,
            listen_given: false,
            mode: Some(At {
                value: AnnounceMode::Ecmp,
                span: None,
            }),
            drain: DrainConfig::default(),
            defaults: PeerSettings::builtin(),
            peers: Vec::new(),
            announce: Vec::new(),
        }
    }
}

/// Reads `[bgp]`; an absent section means no BGP.
pub(super) fn read(root: &Section) -> BgpDraft {
    let mut draft = BgpDraft::absent();
    let Some((table, span)) = root.table("bgp") else {
        return draft;
    };
    let s = Section::open(
        root.ctx,
        table,
        "bgp".into(),
        "[bgp]",
        span.clone(),
        BGP_KEYS,
        BGP_RESERVED,
    );
    draft.span = span.or(Some(0..0));
    draft.local_as = read_as(&s, "local_as", "64512");
    draft.router_id = read_router_id(&s);
    draft.listen = read_listen(&s);
    draft.listen_given = s.has("listen");
    draft.mode = or_default(&s, "mode", s.choice("mode"), AnnounceMode::Ecmp);
    read_drain(&s, &mut draft.drain);
    draft.defaults = read_settings(&s, &draft.defaults);
    draft.peers = s
        .tables("peer", "[[bgp.peer]]")
        .into_iter()
        .map(|(i, t, sp)| read_peer(&s, &draft.defaults, i, t, sp))
        .collect();
    if !draft.peers.is_empty() {
        s.require("local_as", "64512");
    }
    draft.announce = s
        .tables("announce", "[[bgp.announce]]")
        .into_iter()
        .map(|(i, t, sp)| read_announce(&s, i, t, sp))
        .collect();
    draft
}

/// An AS number: 1..=4294967295 and not AS_TRANS.
fn read_as(s: &Section, key: &str, example: &str) -> Option<At<u32>> {
    let n = s.int_in(key, example, 1u32, u32::MAX, AS_HELP)?;
    if n.value != AS_TRANS {
        return Some(n);
    }
    s.invalid(
        key,
        &n.span,
        format!("{key} 23456 is AS_TRANS, which stands in for 4-octet AS numbers and is no AS of its own"),
        format!("use the real AS number, e.g. {key} = {example}"),
    );
    None
}

fn read_router_id(s: &Section) -> Option<At<Ipv4Addr>> {
    let text = s.string("router_id", "\"198.18.0.2\"")?;
    let problem = match text.value.parse::<IpAddr>() {
        Ok(IpAddr::V4(id)) if !id.is_unspecified() => {
            return Some(At {
                value: id,
                span: text.span,
            })
        }
        Ok(IpAddr::V4(_)) => "is zero, which RFC 6286 forbids",
        Ok(IpAddr::V6(_)) => "is an IPv6 address; a BGP identifier is 32 bits",
        Err(_) => "is not an IPv4 address",
    };
    s.invalid(
        "router_id",
        &text.span,
        format!("router_id \"{}\" {problem}", text.value),
        "write the identifier as a non-zero IPv4 address, usually one of this node's, e.g. router_id = \"198.18.0.2\"".to_string(),
    );
    None
}

/// `"ADDRESS:PORT"`, `"[V6]:PORT"` or a bare address (port 179).
fn read_listen(s: &Section) -> Option<At<SocketAddr>> {
    let text = s.string("listen", "\"0.0.0.0:179\"")?;
    let parsed = text.value.parse::<SocketAddr>().ok().or_else(|| {
        let ip = text.value.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, DEFAULT_BGP_PORT))
    });
    let (message, help) = match parsed {
        Some(addr) if addr.port() != 0 && !addr.ip().is_multicast() => {
            return Some(At {
                value: addr,
                span: text.span,
            })
        }
        Some(addr) if addr.port() == 0 => (
            format!("listen \"{}\" has port 0", text.value),
            format!(
                "use the BGP port: listen = \"{}\"",
                SocketAddr::new(addr.ip(), DEFAULT_BGP_PORT)
            ),
        ),
        Some(_) => (
            format!("listen \"{}\" is a multicast address", text.value),
            "listen on an address of this node, or on \"0.0.0.0:179\" / \"[::]:179\"".to_string(),
        ),
        None => (
            format!("listen \"{}\" is not ADDRESS:PORT", text.value),
            "write e.g. listen = \"0.0.0.0:179\", \"[::]:179\" (IPv4 and IPv6) or \"198.18.0.2\" (port 179)".to_string(),
        ),
    };
    s.invalid("listen", &text.span, message, help);
    None
}

fn read_drain(bgp: &Section, drain: &mut DrainConfig) {
    let Some((table, span)) = bgp.table("drain") else {
        return;
    };
    let s = Section::open(
        bgp.ctx,
        table,
        "bgp.drain".into(),
        "[bgp.drain]",
        span,
        DRAIN_KEYS,
        &[],
    );
    if let Some(d) = s.duration("delay", "\"30s\"", Duration::ZERO, MAX_DRAIN_DELAY) {
        drain.delay = d.value;
    }
    if let Some(p) = read_prepend(&s) {
        drain.prepend = p.value;
    }
    if let Some(m) = read_med(&s, "med") {
        drain.med = Some(m.value);
    }
}

fn read_prepend(s: &Section) -> Option<At<u8>> {
    let help = format!("use 0 to {MAX_PREPEND} extra copies of local_as in the AS path");
    s.int_in("prepend", "2", 0u8, MAX_PREPEND, &help)
}

fn read_med(s: &Section, key: &str) -> Option<At<u32>> {
    let help = "use 0 to 4294967295 (lower is preferred)";
    s.int_in(key, "100", 0u32, u32::MAX, help)
}

/// `key` from `s` when written there, else `base`'s value.
fn setting<T: Clone>(
    s: &Section,
    key: &str,
    base: &Setting<T>,
    read: impl FnOnce() -> Option<At<T>>,
) -> Setting<T> {
    Setting::read_or_inherit(s, key, base, read)
}

fn read_settings(s: &Section, base: &PeerSettings) -> PeerSettings {
    PeerSettings {
        hold_time: setting(s, "hold_time", &base.hold_time, || read_hold_time(s)),
        connect_retry: setting(s, "connect_retry", &base.connect_retry, || {
            s.duration(
                "connect_retry",
                "\"10s\"",
                Duration::from_secs(1),
                MAX_HOLD_TIME,
            )
        }),
        reconnect_delay: setting(s, "reconnect_delay", &base.reconnect_delay, || {
            let (min, max) = (Duration::from_millis(100), MAX_RECONNECT_DELAY);
            s.duration("reconnect_delay", "\"5s\"", min, max)
        }),
        ttl_security: setting(s, "ttl_security", &base.ttl_security, || {
            s.boolean("ttl_security")
        }),
        communities: setting(s, "communities", &base.communities, || {
            read_list(s, "communities", COMMUNITIES_EXAMPLE, parse_community)
        }),
        large_communities: setting(s, "large_communities", &base.large_communities, || {
            read_list(s, "large_communities", LARGE_EXAMPLE, parse_large_community)
        }),
        med: setting(s, "med", &base.med, || {
            read_med(s, "med").map(|m| At {
                value: Some(m.value),
                span: m.span,
            })
        }),
        prepend: setting(s, "prepend", &base.prepend, || read_prepend(s)),
    }
}

/// 0 or 3..=65535 whole seconds (RFC 4271 section 4.2).
fn read_hold_time(s: &Section) -> Option<At<Duration>> {
    let d = s.duration("hold_time", "\"90s\"", Duration::ZERO, MAX_HOLD_TIME)?;
    let problem = if d.value.subsec_nanos() != 0 {
        "is not a whole number of seconds"
    } else if !d.value.is_zero() && d.value < MIN_HOLD_TIME {
        "is shorter than the 3s RFC 4271 allows"
    } else {
        return Some(d);
    };
    s.invalid(
        "hold_time",
        &d.span,
        format!("hold_time {} {problem}", format_duration(d.value)),
        "use \"0s\" (no keepalives) or 3s to 65535s in whole seconds, e.g. hold_time = \"90s\""
            .to_string(),
    );
    None
}

/// A list of strings each parsed by `parse` (which returns the problem
/// and the fix); `None` (reported) if any fails.
fn read_list<T>(
    s: &Section,
    key: &str,
    example: &str,
    parse: fn(&str) -> Result<T, (String, String)>,
) -> Option<At<Vec<T>>> {
    let list = s.strings(key, example)?;
    let mut values = Vec::with_capacity(list.value.len());
    for (i, text) in list.value.iter().enumerate() {
        match parse(text.value) {
            Ok(v) => values.push(v),
            Err((problem, help)) => s.invalid(
                &format!("{key}[{i}]"),
                &text.span,
                format!("\"{}\" {problem}", text.value),
                help,
            ),
        }
    }
    (values.len() == list.value.len()).then_some(At {
        value: values,
        span: list.span,
    })
}

/// "65000:100": two numbers of 0..=65535.
pub(crate) fn parse_community(text: &str) -> Result<Community, (String, String)> {
    let parts: Vec<&str> = text.split(':').collect();
    let &[high, low] = parts.as_slice() else {
        return Err((
            "is not a community ASN:VALUE".to_string(),
            format!("write communities as two numbers, e.g. communities = {COMMUNITIES_EXAMPLE} (large communities go in large_communities)"),
        ));
    };
    let part = |p: &str| -> Result<u16, (String, String)> {
        match p.trim().parse::<u64>() {
            Ok(n) => u16::try_from(n).map_err(|_| {
                (
                    format!("has {n}, above 65535"),
                    format!("each half of a community is 0 to 65535; for 32-bit values use large_communities = [\"{high}:{low}:0\"]"),
                )
            }),
            Err(_) => Err((
                format!("has \"{p}\", not a number"),
                format!("write communities as two numbers, e.g. communities = {COMMUNITIES_EXAMPLE}"),
            )),
        }
    };
    Ok((part(high)?, part(low)?))
}

/// "65000:1:2": three numbers of 0..=4294967295.
pub(crate) fn parse_large_community(text: &str) -> Result<LargeCommunity, (String, String)> {
    let parts: Vec<&str> = text.split(':').collect();
    let &[global, one, two] = parts.as_slice() else {
        return Err((
            "is not a large community GLOBAL:LOCAL1:LOCAL2".to_string(),
            format!("write large communities as three numbers, e.g. large_communities = {LARGE_EXAMPLE}"),
        ));
    };
    let part = |p: &str| -> Result<u32, (String, String)> {
        match p.trim().parse::<u64>() {
            Ok(n) => u32::try_from(n).map_err(|_| {
                (
                    format!("has {n}, above 4294967295"),
                    "each part of a large community is 0 to 4294967295".to_string(),
                )
            }),
            Err(_) => Err((
                format!("has \"{p}\", not a number"),
                format!("write large communities as three numbers, e.g. large_communities = {LARGE_EXAMPLE}"),
            )),
        }
    };
    Ok((part(global)?, part(one)?, part(two)?))
}

fn read_peer(
    bgp: &Section,
    defaults: &PeerSettings,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> BgpPeerDraft {
    let s = Section::open(
        bgp.ctx,
        table,
        format!("bgp.peer[{index}]"),
        "[[bgp.peer]]",
        span.clone(),
        PEER_KEYS,
        PEER_RESERVED,
    );
    s.require("address", "\"198.18.0.254\"");
    s.require("remote_as", "64500");
    let address = s
        .ip("address", "\"198.18.0.254\"")
        .and_then(|a| checked_peer_address(&s, "address", a));
    let name = match s.string("name", "\"upstream-1\"") {
        Some(n) => checked_name(&s, "name", n),
        None if s.has("name") => None,
        None => address.as_ref().map(|a| At {
            value: a.value.to_string(),
            span: a.span.clone(),
        }),
    };
    BgpPeerDraft {
        index,
        span,
        name,
        address,
        port: or_default(&s, "port", read_port(&s), DEFAULT_BGP_PORT),
        remote_as: read_as(&s, "remote_as", "64500"),
        local_address: s
            .ip("local_address", "\"198.18.0.2\"")
            .and_then(|a| checked_peer_address(&s, "local_address", a)),
        passive: or_default(&s, "passive", s.boolean("passive"), false),
        md5_password: read_md5(&s),
        families: read_families(&s),
        local_pref: s.int_in(
            "local_pref",
            "100",
            0u32,
            u32::MAX,
            "use 0 to 4294967295 (higher is preferred)",
        ),
        next_hop_v6: read_next_hop_v6(&s),
        settings: read_settings(&s, defaults),
    }
}

fn read_port(s: &Section) -> Option<At<u16>> {
    let help = "use the port the peer listens on, 1 to 65535 (BGP: 179)";
    s.int_in("port", "179", 1u16, u16::MAX, help)
}

/// A peer (or session source) address: unicast, and not IPv6 link-local
/// (that would need an interface scope, which a peer cannot name).
fn checked_peer_address(s: &Section, key: &str, addr: At<IpAddr>) -> Option<At<IpAddr>> {
    let problem = match addr.value {
        a if a.is_unspecified() => "the unspecified address",
        a if a.is_multicast() => "a multicast address",
        IpAddr::V4(a) if a.is_broadcast() => "the broadcast address",
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            "an IPv6 link-local address (a session to one needs an interface scope, which vipgate does not take)"
        }
        _ => return Some(addr),
    };
    s.invalid(
        key,
        &addr.span,
        format!("{key} {} is {problem}", addr.value),
        "use a unicast address, e.g. 198.18.0.254 or 2001:db8::fe".to_string(),
    );
    None
}

fn read_md5(s: &Section) -> Option<At<String>> {
    s.secret(
        "md5_password",
        MAX_MD5_PASSWORD,
        |len| {
            format!(
                "md5_password is {len} bytes long; a TCP MD5 key is 1 to {MAX_MD5_PASSWORD} bytes"
            )
        },
        format!("use the key the peer has, 1 to {MAX_MD5_PASSWORD} bytes, or remove md5_password"),
    )
}

fn read_families(s: &Section) -> Families {
    if !s.has("families") {
        return Families::OfAddress;
    }
    let Some(list) = s.strings("families", FAMILIES_EXAMPLE) else {
        return Families::Invalid;
    };
    if list.value.is_empty() {
        s.invalid(
            "families",
            &list.span,
            "families is empty: the session would carry no routes".to_string(),
            format!("list what the session carries, e.g. families = {FAMILIES_EXAMPLE}, or remove families for the peer address's family"),
        );
        return Families::Invalid;
    }
    let count = list.value.len();
    let families: Vec<At<AddressFamily>> = list
        .value
        .into_iter()
        .enumerate()
        .filter_map(|(i, text)| read_family(s, i, text))
        .collect();
    if families.len() == count {
        Families::Given(families)
    } else {
        Families::Invalid
    }
}

fn read_family(s: &Section, i: usize, text: At<&str>) -> Option<At<AddressFamily>> {
    if let Some(value) = AddressFamily::from_name(text.value) {
        return Some(At {
            value,
            span: text.span,
        });
    }
    let names = AddressFamily::ALL.iter().map(|f| f.name());
    s.invalid(
        &format!("families[{i}]"),
        &text.span,
        format!("unknown address family \"{}\"", text.value),
        format!(
            "expected ipv4-unicast or ipv6-unicast{}",
            did_you_mean_suffix(text.value, names)
        ),
    );
    None
}

fn read_next_hop_v6(s: &Section) -> Option<At<Ipv6Addr>> {
    let addr = s.ip("next_hop_v6", "\"2001:db8::2\"")?;
    let problem = match addr.value {
        IpAddr::V4(_) => "is an IPv4 address",
        a if a.is_unspecified() || a.is_multicast() || a.is_loopback() => {
            "is not a unicast address a router can forward to"
        }
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            "is link-local; the global next hop of MP_REACH_NLRI must not be"
        }
        IpAddr::V6(a) => {
            return Some(At {
                value: a,
                span: addr.span,
            })
        }
    };
    s.invalid(
        "next_hop_v6",
        &addr.span,
        format!("next_hop_v6 {} {problem}", addr.value),
        "use a global IPv6 address of this node on the link towards the peer, e.g. next_hop_v6 = \"2001:db8::2\"".to_string(),
    );
    None
}

fn read_announce(bgp: &Section, index: usize, table: &Table, span: Option<Span>) -> AnnounceDraft {
    let s = Section::open(
        bgp.ctx,
        table,
        format!("bgp.announce[{index}]"),
        "[[bgp.announce]]",
        span,
        ANNOUNCE_KEYS,
        &[],
    );
    s.require("prefix", "\"198.18.10.10/32\"");
    AnnounceDraft {
        index,
        prefix: read_prefix(&s),
        communities: optional_list(&s, "communities", COMMUNITIES_EXAMPLE, parse_community),
        large_communities: optional_list(
            &s,
            "large_communities",
            LARGE_EXAMPLE,
            parse_large_community,
        ),
        med: read_med(&s, "med"),
    }
}

/// [`read_list`] where absent means empty.
fn optional_list<T>(
    s: &Section,
    key: &str,
    example: &str,
    parse: fn(&str) -> Result<T, (String, String)>,
) -> Option<Vec<T>> {
    if !s.has(key) {
        return Some(Vec::new());
    }
    read_list(s, key, example, parse).map(|l| l.value)
}

/// "198.18.10.0/24", or a bare address for its host route.
fn read_prefix(s: &Section) -> Option<At<IpPrefix>> {
    let text = s.string("prefix", "\"198.18.10.10/32\"")?;
    let (message, help) = match parse_prefix(text.value) {
        Ok(prefix) if prefix.prefix_len() > 0 => {
            return Some(At {
                value: prefix,
                span: text.span,
            })
        }
        Ok(_) => (
            format!("prefix {} is a default route", text.value),
            "announce the VIPs (/32, /128) or an aggregate that covers them, never a default route: the routers would send everything here".to_string(),
        ),
        Err(PrefixError::HostBits(net)) => (
            format!("prefix \"{}\" has bits set after the prefix length", text.value),
            format!("write the network: prefix = \"{net}\", or the VIP as a host route"),
        ),
        Err(PrefixError::TooLong(max)) => (
            format!("prefix \"{}\" is longer than {max} bits", text.value),
            format!("use a length of at most {max}, e.g. /{max} for one VIP"),
        ),
        Err(PrefixError::Syntax) => (
            format!("\"{}\" is not an IP prefix", text.value),
            "write ADDRESS/LENGTH, e.g. prefix = \"198.18.10.10/32\" or \"2001:db8:10::/64\""
                .to_string(),
        ),
    };
    s.invalid("prefix", &text.span, message, help);
    None
}

enum PrefixError {
    Syntax,
    /// The length is above 32 (IPv4) or 128 (IPv6).
    TooLong(u8),
    /// Host bits set; the network it probably means.
    HostBits(IpPrefix),
}

fn parse_prefix(text: &str) -> Result<IpPrefix, PrefixError> {
    let Some((addr, len)) = text.split_once('/') else {
        let addr = text.parse::<IpAddr>().map_err(|_| PrefixError::Syntax)?;
        return Ok(IpPrefix::host(addr));
    };
    let addr = addr.parse::<IpAddr>().map_err(|_| PrefixError::Syntax)?;
    let len = len.parse::<u8>().map_err(|_| PrefixError::Syntax)?;
    if let Some(prefix) = IpPrefix::new(addr, len) {
        return Ok(prefix);
    }
    match IpPrefix::truncating(addr, len) {
        Some(net) => Err(PrefixError::HostBits(net)),
        None => Err(PrefixError::TooLong(IpPrefix::host(addr).prefix_len())),
    }
}

/// The typed `[bgp]` from a draft without errors.
pub(super) fn build(draft: BgpDraft) -> Option<BgpConfig> {
    let local_as = draft.local_as.as_ref().map(|a| a.value);
    let peers = draft
        .peers
        .into_iter()
        .map(|p| build_peer(p, local_as))
        .collect::<Option<Vec<_>>>()?;
    let announce = draft
        .announce
        .into_iter()
        .map(|a| {
            Some(AnnounceConfig {
                prefix: a.prefix?.value,
                communities: a.communities?,
                large_communities: a.large_communities?,
                med: a.med.map(|m| m.value),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(BgpConfig {
        local_as: draft.local_as.map(|a| a.value),
        router_id: draft.router_id.map(|r| r.value),
        listen: draft.listen.map(|l| l.value),
        mode: draft.mode?.value,
        drain: draft.drain,
        peers,
        announce,
    })
}

/// An iBGP peer gets no prepends: `checks.rs` refuses its own, and an
/// inherited `[bgp] prepend` is for eBGP peers.
fn build_peer(p: BgpPeerDraft, local_as: Option<u32>) -> Option<BgpPeerConfig> {
    let st = p.settings;
    let address = p.address?.value;
    let remote_as = p.remote_as?.value;
    let prepend = match local_as == Some(remote_as) {
        true => 0,
        false => st.prepend.at?.value,
    };
    Some(BgpPeerConfig {
        name: p.name?.value,
        address,
        port: p.port?.value,
        remote_as,
        local_address: p.local_address.map(|a| a.value),
        hold_time: st.hold_time.at?.value,
        connect_retry: st.connect_retry.at?.value,
        reconnect_delay: st.reconnect_delay.at?.value,
        passive: p.passive?.value,
        md5_password: p.md5_password.map(|m| m.value),
        ttl_security: st.ttl_security.at?.value,
        families: p.families.resolve(Some(address))?,
        med: st.med.at?.value,
        local_pref: p.local_pref.map(|l| l.value),
        communities: st.communities.at?.value,
        large_communities: st.large_communities.at?.value,
        prepend,
        next_hop_v6: p.next_hop_v6.map(|n| n.value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_parse_and_name_the_bad_part() {
        assert_eq!(parse_community("65000:100"), Ok((65_000, 100)));
        assert_eq!(parse_community("0:0"), Ok((0, 0)));
        assert_eq!(parse_community("65535:65535"), Ok((65_535, 65_535)));
        let (problem, help) = parse_community("65000:70000").unwrap_err();
        assert_eq!(problem, "has 70000, above 65535");
        assert!(
            help.contains("large_communities = [\"65000:70000:0\"]"),
            "{help}"
        );
        assert!(parse_community("65000").is_err());
        assert!(parse_community("65000:1:2").is_err());
        assert!(parse_community("a:1").unwrap_err().0.contains("\"a\""));
        assert!(parse_community("-1:1").is_err());
    }

    #[test]
    fn large_communities_parse() {
        assert_eq!(parse_large_community("65000:1:2"), Ok((65_000, 1, 2)));
        assert_eq!(
            parse_large_community("4294967295:0:4294967295"),
            Ok((u32::MAX, 0, u32::MAX))
        );
        assert!(parse_large_community("4294967296:0:0").is_err());
        assert!(parse_large_community("1:2").is_err());
    }

    #[test]
    fn prefixes_parse_and_suggest_the_network() {
        let p = |t: &str| parse_prefix(t).ok().map(|p| p.to_string());
        assert_eq!(p("198.18.10.10").as_deref(), Some("198.18.10.10/32"));
        assert_eq!(p("198.18.10.0/24").as_deref(), Some("198.18.10.0/24"));
        assert_eq!(p("2001:db8:10::/48").as_deref(), Some("2001:db8:10::/48"));
        assert_eq!(p("2001:db8:10::10").as_deref(), Some("2001:db8:10::10/128"));
        assert!(matches!(
            parse_prefix("198.18.10.0/33"),
            Err(PrefixError::TooLong(32))
        ));
        assert!(matches!(
            parse_prefix("2001:db8::/129"),
            Err(PrefixError::TooLong(128))
        ));
        assert!(p("198.18.10.0/x").is_none());
        match parse_prefix("198.18.10.5/24") {
            Err(PrefixError::HostBits(net)) => assert_eq!(net.to_string(), "198.18.10.0/24"),
            _ => panic!("host bits not spotted"),
        }
        match parse_prefix("2001:db8:10::10/64") {
            Err(PrefixError::HostBits(net)) => assert_eq!(net.to_string(), "2001:db8:10::/64"),
            _ => panic!("host bits not spotted"),
        }
    }
}
