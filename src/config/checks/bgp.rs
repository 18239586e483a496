//! Checks of `[bgp]` that combine several values: the keys of one peer with
//! each other and with `[bgp]` (iBGP/eBGP, families and next hops, passive
//! sessions and `listen`), peers with each other (names, endpoints), and
//! the announcements with the services and with `[vrrp]` (`mode = "vrrp"`).
//!
//! Must not: look at the system (`system/bgp.rs`). A peer setting
//! inherited from `[bgp]` is never an error of the peer: a combination is
//! reported in the table that wrote one of its keys.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::super::error::ErrorKind;
use super::super::model::{AddressFamily, AnnounceMode, IpPrefix};
use super::super::reader::{At, Ctx};
use super::super::schema::{AnnounceDraft, BgpDraft, BgpPeerDraft, Draft, Families};
use super::super::tree::Span;
use super::{first_at, FirstSeen};

pub(super) fn check(ctx: &Ctx, draft: &Draft) {
    let bgp = &draft.bgp;
    if bgp.span.is_none() {
        return;
    }
    if bgp.peers.is_empty() {
        ctx.report(
            ErrorKind::Missing,
            bgp.span.clone(),
            "bgp.peer",
            "[bgp] has no [[bgp.peer]]: nothing would be announced",
            "add a [[bgp.peer]] with address and remote_as for each upstream router, or remove [bgp]",
        );
    }
    for peer in &bgp.peers {
        check_peer(ctx, bgp, peer);
    }
    check_peer_names(ctx, &bgp.peers);
    check_peer_endpoints(ctx, &bgp.peers);
    for announce in &bgp.announce {
        check_announce(ctx, draft, announce);
    }
    check_announce_duplicates(ctx, &bgp.announce);
    if bgp.mode.as_ref().map(|m| m.value) == Some(AnnounceMode::Vrrp) {
        check_vrrp_mode(ctx, draft);
    }
}

fn family_name(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn check_peer(ctx: &Ctx, bgp: &BgpDraft, peer: &BgpPeerDraft) {
    let path = format!("bgp.peer[{}]", peer.index);
    if let Some(address) = &peer.address {
        check_local_address(ctx, &path, peer, address.value);
        check_families(ctx, &path, peer, address.value);
        check_passive(ctx, &path, bgp, peer, address.value);
    }
    check_ibgp_keys(ctx, &path, bgp, peer);
}

fn check_local_address(ctx: &Ctx, path: &str, peer: &BgpPeerDraft, address: IpAddr) {
    let Some(local) = &peer.local_address else {
        return;
    };
    let (kind, message, help) = if local.value.is_ipv4() != address.is_ipv4() {
        (
            ErrorKind::Conflict,
            format!(
                "local_address {} is {} but the peer address {address} is {}",
                local.value,
                family_name(local.value),
                family_name(address)
            ),
            format!(
                "a session has one address family: use an {} address of this node",
                family_name(address)
            ),
        )
    } else if local.value == address {
        (
            ErrorKind::Conflict,
            format!("local_address {} is the peer's own address", local.value),
            "use this node's address on the link towards the peer".to_string(),
        )
    } else {
        return;
    };
    ctx.report(
        kind,
        local.span.clone(),
        &format!("{path}.local_address"),
        message,
        help,
    );
}

/// No family twice; `next_hop_v6` only where IPv6 routes are carried.
fn check_families(ctx: &Ctx, path: &str, peer: &BgpPeerDraft, address: IpAddr) {
    if let Families::Given(list) = &peer.families {
        let mut seen = FirstSeen::new();
        for (i, family) in list.iter().enumerate() {
            if let Some(first) = seen.earlier(family.value, &family.span) {
                ctx.report(
                    ErrorKind::Duplicate,
                    family.span.clone(),
                    &format!("{path}.families[{i}]"),
                    format!(
                        "family {} is listed twice{}",
                        family.value,
                        first_at(ctx, &first)
                    ),
                    "remove one of them",
                );
            }
        }
    }
    let (Some(next_hop), Some(families)) =
        (&peer.next_hop_v6, peer.families.resolve(Some(address)))
    else {
        return;
    };
    if !families.contains(&AddressFamily::Ipv6Unicast) {
        ctx.report(
            ErrorKind::Conflict,
            next_hop.span.clone(),
            &format!("{path}.next_hop_v6"),
            format!(
                "next_hop_v6 {} is set but the session carries no ipv6-unicast routes",
                next_hop.value
            ),
            "remove next_hop_v6, or add \"ipv6-unicast\" to families",
        );
    }
}

/// A passive peer needs a listening socket of its family, and has no port
/// to connect to.
fn check_passive(ctx: &Ctx, path: &str, bgp: &BgpDraft, peer: &BgpPeerDraft, address: IpAddr) {
    let Some(passive) = peer.passive.as_ref().filter(|p| p.value) else {
        return;
    };
    if let Some(port) = peer.port.as_ref().filter(|p| p.span.is_some()) {
        ctx.report(
            ErrorKind::Conflict,
            port.span.clone(),
            &format!("{path}.port"),
            format!(
                "port {} is where vipgate connects to, but a passive peer is never connected to",
                port.value
            ),
            "remove port (the peer connects to [bgp] listen), or remove passive",
        );
    }
    let (message, help) = match &bgp.listen {
        None if bgp.listen_given => return,
        None => (
            "passive = true waits for the peer to connect, but [bgp] has no listen".to_string(),
            format!(
                "add listen = \"{}\" to [bgp], or remove passive",
                if address.is_ipv4() {
                    "0.0.0.0:179"
                } else {
                    "[::]:179"
                }
            ),
        ),
        Some(listen) if !listen_accepts(listen.value, address) => (
            format!(
                "passive = true waits for an {} connection, but [bgp] listen {} accepts {} only",
                family_name(address),
                listen.value,
                family_name(listen.value.ip())
            ),
            "listen on \"[::]:179\" (IPv4 and IPv6), or on an address of the peer's family"
                .to_string(),
        ),
        Some(_) => return,
    };
    ctx.report(
        ErrorKind::Conflict,
        passive.span.clone(),
        &format!("{path}.passive"),
        message,
        help,
    );
}

/// `[::]` takes both families (vipgate clears IPV6_V6ONLY on it); any
/// other address takes its own family.
fn listen_accepts(listen: SocketAddr, peer: IpAddr) -> bool {
    match listen.ip() {
        IpAddr::V6(a) if a.is_unspecified() => true,
        ip => ip.is_ipv4() == peer.is_ipv4(),
    }
}

/// `local_pref` is an iBGP attribute; a peer's own `prepend` would make an
/// iBGP peer drop the path (its own AS in it).
fn check_ibgp_keys(ctx: &Ctx, path: &str, bgp: &BgpDraft, peer: &BgpPeerDraft) {
    let (Some(local_as), Some(remote_as)) = (&bgp.local_as, &peer.remote_as) else {
        return;
    };
    let ibgp = local_as.value == remote_as.value;
    if let Some(pref) = peer.local_pref.as_ref().filter(|_| !ibgp) {
        ctx.report(
            ErrorKind::Conflict,
            pref.span.clone(),
            &format!("{path}.local_pref"),
            format!(
                "local_pref is sent to iBGP peers only; this peer is eBGP (remote_as {} and local_as {})",
                remote_as.value, local_as.value
            ),
            "remove local_pref, and steer an eBGP peer with med or prepend",
        );
    }
    let own_prepend = peer.settings.prepend.own_at().filter(|p| p.value > 0);
    if let Some(prepend) = own_prepend.filter(|_| ibgp) {
        ctx.report(
            ErrorKind::Conflict,
            prepend.span.clone(),
            &format!("{path}.prepend"),
            format!(
                "prepend {} on an iBGP peer (remote_as {} is local_as): the peer would see its own AS in the path and drop the route",
                prepend.value, remote_as.value
            ),
            "remove prepend, and steer an iBGP peer with local_pref or med",
        );
    }
}

fn check_peer_names(ctx: &Ctx, peers: &[BgpPeerDraft]) {
    let mut seen = FirstSeen::new();
    for peer in peers {
        let Some(name) = &peer.name else { continue };
        if let Some(first) = seen.earlier(name.value.as_str(), &name.span) {
            ctx.report(
                ErrorKind::Duplicate,
                name.span.clone(),
                &format!("bgp.peer[{}].name", peer.index),
                format!(
                    "peer name \"{}\" is used twice{}",
                    name.value,
                    first_at(ctx, &first)
                ),
                "give each [[bgp.peer]] its own name (the default name is the address)",
            );
        }
    }
}

/// One session per (address, port).
fn check_peer_endpoints(ctx: &Ctx, peers: &[BgpPeerDraft]) {
    let mut seen: HashMap<SocketAddr, &BgpPeerDraft> = HashMap::new();
    for peer in peers {
        let (Some(address), Some(port)) = (&peer.address, &peer.port) else {
            continue;
        };
        let endpoint = SocketAddr::new(address.value, port.value);
        let Some(first) = seen.get(&endpoint) else {
            seen.insert(endpoint, peer);
            continue;
        };
        let first_name = first.name.as_ref().map_or("?", |n| n.value.as_str());
        ctx.report(
            ErrorKind::Duplicate,
            address.span.clone(),
            &format!("bgp.peer[{}].address", peer.index),
            format!(
                "peer {endpoint} is already configured as \"{first_name}\" (line {})",
                ctx.line_of(&first.span).unwrap_or(1)
            ),
            "one session per peer: merge the two [[bgp.peer]] entries",
        );
    }
}

/// The service VIPs of the file, each once, with the first service's index
/// and the span of its `vip`.
fn service_vips(draft: &Draft) -> Vec<(IpAddr, usize, Option<Span>)> {
    let mut vips: Vec<(IpAddr, usize, Option<Span>)> = Vec::new();
    for service in &draft.services {
        let Some(vip) = &service.vip else { continue };
        if vips.iter().all(|(v, _, _)| *v != vip.value) {
            vips.push((vip.value, service.index, vip.span.clone()));
        }
    }
    vips
}

/// A prefix covers a service VIP, and some peer carries its family.
fn check_announce(ctx: &Ctx, draft: &Draft, announce: &AnnounceDraft) {
    let Some(prefix) = &announce.prefix else {
        return;
    };
    let field = format!("bgp.announce[{}].prefix", announce.index);
    if !service_vips(draft)
        .iter()
        .any(|(vip, _, _)| prefix.value.contains(*vip))
    {
        ctx.report(
            ErrorKind::Conflict,
            prefix.span.clone(),
            &field,
            format!(
                "prefix {} covers no service vip: it announces nothing of ours",
                prefix.value
            ),
            "announce the vip of a [[service]] (e.g. prefix = \"198.18.10.10/32\") or an aggregate that covers some",
        );
        return;
    }
    check_announce_family(ctx, &draft.bgp, &field, prefix);
}

fn check_announce_family(ctx: &Ctx, bgp: &BgpDraft, field: &str, prefix: &At<IpPrefix>) {
    let family = AddressFamily::of(prefix.value.address());
    let families: Option<Vec<Vec<AddressFamily>>> = bgp
        .peers
        .iter()
        .map(|p| p.families.resolve(p.address.as_ref().map(|a| a.value)))
        .collect();
    let Some(families) = families.filter(|f| !f.is_empty()) else {
        return;
    };
    if families.iter().any(|f| f.contains(&family)) {
        return;
    }
    ctx.report(
        ErrorKind::Conflict,
        prefix.span.clone(),
        field,
        format!(
            "no [[bgp.peer]] carries {family}: prefix {} would reach no router",
            prefix.value
        ),
        format!("add \"{family}\" to the families of a peer, or remove this [[bgp.announce]]"),
    );
}

fn check_announce_duplicates(ctx: &Ctx, announce: &[AnnounceDraft]) {
    let mut seen = FirstSeen::new();
    for a in announce {
        let Some(prefix) = &a.prefix else { continue };
        if let Some(first) = seen.earlier(prefix.value, &prefix.span) {
            ctx.report(
                ErrorKind::Duplicate,
                prefix.span.clone(),
                &format!("bgp.announce[{}].prefix", a.index),
                format!(
                    "prefix {} is announced twice{}",
                    prefix.value,
                    first_at(ctx, &first)
                ),
                "merge the two [[bgp.announce]] entries",
            );
        }
    }
}

/// `mode = "vrrp"` announces a VIP while this node masters the instance
/// holding it, so every announced VIP needs one.
fn check_vrrp_mode(ctx: &Ctx, draft: &Draft) {
    let bgp = &draft.bgp;
    let mode_span = bgp.mode.as_ref().and_then(|m| m.span.clone());
    let instances = &draft.vrrp.instances;
    if instances.is_empty() {
        ctx.report(
            ErrorKind::Conflict,
            mode_span,
            "bgp.mode",
            "mode \"vrrp\" announces a VIP while this node is VRRP master for it, but the file has no [[vrrp.instance]]",
            "add a [vrrp] section with a [[vrrp.instance]] holding the VIPs, or use mode = \"ecmp\"",
        );
        return;
    }
    let held = |vip: IpAddr| {
        instances
            .iter()
            .filter_map(|i| i.vips.as_ref())
            .any(|vips| vips.iter().any(|v| v.value == vip))
    };
    let mode_line = ctx
        .line_of(&mode_span)
        .map_or(String::new(), |l| format!(" (line {l})"));
    for (vip, index, span) in announced_vips(draft) {
        if held(vip) {
            continue;
        }
        ctx.report(
            ErrorKind::Conflict,
            span,
            &format!("service[{index}].vip"),
            format!("vip {vip} is announced in BGP mode \"vrrp\"{mode_line} but belongs to no [[vrrp.instance]]"),
            format!("add \"{vip}\" to the vips of the [[vrrp.instance]] that should carry it, or use mode = \"ecmp\""),
        );
    }
}

/// The service VIPs `[bgp]` announces: all of them, or those an
/// `[[bgp.announce]]` prefix covers.
fn announced_vips(draft: &Draft) -> Vec<(IpAddr, usize, Option<Span>)> {
    let announce = &draft.bgp.announce;
    let prefixes: Vec<IpPrefix> = announce
        .iter()
        .filter_map(|a| a.prefix.as_ref().map(|p| p.value))
        .collect();
    service_vips(draft)
        .into_iter()
        .filter(|(vip, _, _)| announce.is_empty() || prefixes.iter().any(|p| p.contains(*vip)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_v6_listen_takes_both_families() {
        let v4: IpAddr = "198.18.0.254".parse().unwrap();
        let v6: IpAddr = "2001:db8::fe".parse().unwrap();
        let any6: SocketAddr = "[::]:179".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:179".parse().unwrap();
        let one6: SocketAddr = "[2001:db8::2]:179".parse().unwrap();
        assert!(listen_accepts(any6, v4) && listen_accepts(any6, v6));
        assert!(listen_accepts(any4, v4) && !listen_accepts(any4, v6));
        assert!(listen_accepts(one6, v6) && !listen_accepts(one6, v4));
    }
}
