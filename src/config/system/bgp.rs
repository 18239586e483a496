//! `[bgp]` against the [`SystemView`]: a router id can be derived, the
//! addresses a session uses (`local_address`, `listen`, `next_hop_v6`) are
//! this node's, a next hop exists for every family a session carries, and
//! GTSM peers are directly connected.
//!
//! Must not: read the system (the caller fills in the view).

use std::net::IpAddr;

use super::super::error::ErrorKind;
use super::super::model::{is_link_local, AddressFamily};
use super::super::reader::{At, Ctx};
use super::super::schema::{BgpPeerDraft, Draft, Families};
use super::{SystemInterface, SystemView};

pub(super) fn check(ctx: &Ctx, draft: &Draft, view: &SystemView) {
    let bgp = &draft.bgp;
    if bgp.span.is_none() {
        return;
    }
    if bgp.router_id.is_none() && !bgp.peers.is_empty() && view.default_router_id().is_none() {
        ctx.report(
            ErrorKind::System,
            bgp.span.clone(),
            "bgp.router_id",
            "no router_id, and this system has no IPv4 address (other than loopback) to take it from",
            "set router_id = \"198.18.0.2\" in [bgp]: a non-zero IPv4 address unique among the routers",
        );
    }
    if let Some(listen) = &bgp.listen {
        let ip = listen.value.ip();
        if !ip.is_unspecified() {
            check_own(
                ctx,
                "bgp.listen",
                &At {
                    value: ip,
                    span: listen.span.clone(),
                },
                view,
            );
        }
    }
    for peer in &bgp.peers {
        check_peer(ctx, peer, view);
    }
}

/// Reports `address` if no interface of the system carries it.
pub(super) fn check_own(ctx: &Ctx, field: &str, address: &At<IpAddr>, view: &SystemView) -> bool {
    if view.owner_of(address.value).is_some() {
        return true;
    }
    let key = field.rsplit('.').next().unwrap_or(field);
    let same_family: Vec<String> = own_addresses(view)
        .filter(|a| a.is_ipv4() == address.value.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    let help = match same_family.first() {
        Some(first) => format!(
            "use an address of this node ({}), e.g. {key} = \"{first}\", or add {} to a link",
            same_family.join(", "),
            address.value
        ),
        None => format!("add {} to a link of this node", address.value),
    };
    ctx.report(
        ErrorKind::System,
        address.span.clone(),
        field,
        format!("{key} {} is not an address of this system", address.value),
        help,
    );
    false
}

/// The system's addresses other than loopback and link-local, in order.
fn own_addresses(view: &SystemView) -> impl Iterator<Item = IpAddr> + '_ {
    view.interfaces
        .iter()
        .flat_map(|i| i.addresses.iter().map(|a| a.address))
        .filter(|a| !a.is_loopback() && !is_link_local(*a))
}

fn check_peer(ctx: &Ctx, peer: &BgpPeerDraft, view: &SystemView) {
    let path = format!("bgp.peer[{}]", peer.index);
    let Some(address) = &peer.address else { return };
    if let Some(owner) = view.owner_of(address.value) {
        ctx.report(
            ErrorKind::System,
            address.span.clone(),
            &format!("{path}.address"),
            format!(
                "peer {} is an address of this node (interface \"{}\")",
                address.value, owner.name
            ),
            "use the address of the upstream router",
        );
        return;
    }
    let local_ok = match &peer.local_address {
        Some(local) => check_own(ctx, &format!("{path}.local_address"), local, view),
        None => true,
    };
    if let Some(next_hop) = &peer.next_hop_v6 {
        let at = At {
            value: IpAddr::V6(next_hop.value),
            span: next_hop.span.clone(),
        };
        check_own(ctx, &format!("{path}.next_hop_v6"), &at, view);
    }
    let link = link_towards(peer, address.value, view);
    check_ttl_security(ctx, &path, peer, address, view);
    if local_ok {
        check_next_hops(ctx, &path, peer, address.value, link);
    }
}

/// The link the session leaves on: the one holding `local_address`, else
/// the one whose connected subnet holds the peer.
fn link_towards<'v>(
    peer: &BgpPeerDraft,
    address: IpAddr,
    view: &'v SystemView,
) -> Option<&'v SystemInterface> {
    match &peer.local_address {
        Some(local) => view.owner_of(local.value),
        None => view
            .interfaces
            .iter()
            .find(|i| i.subnet_holding(address).is_some()),
    }
}

/// GTSM (TTL 255 both ways) only works with a directly connected peer.
fn check_ttl_security(
    ctx: &Ctx,
    path: &str,
    peer: &BgpPeerDraft,
    address: &At<IpAddr>,
    view: &SystemView,
) {
    if peer.settings.ttl_security.value() != Some(&true) {
        return;
    }
    let connected = view
        .interfaces
        .iter()
        .any(|i| i.subnet_holding(address.value).is_some());
    if connected {
        return;
    }
    let from = if peer.settings.ttl_security.own {
        ""
    } else {
        " (set in [bgp])"
    };
    ctx.report(
        ErrorKind::System,
        address.span.clone(),
        &format!("{path}.address"),
        format!(
            "ttl_security{from} needs a directly connected peer, and no link's subnet holds {}",
            address.value
        ),
        "set ttl_security = false for this peer, or peer with the router's address on a shared link",
    );
}

/// A session carrying the other family's routes needs a next hop of that
/// family: `next_hop_v6`, or an address of the link towards the peer.
fn check_next_hops(
    ctx: &Ctx,
    path: &str,
    peer: &BgpPeerDraft,
    address: IpAddr,
    link: Option<&SystemInterface>,
) {
    let Families::Given(families) = &peer.families else {
        return;
    };
    for (i, family) in families.iter().enumerate() {
        let needed = match family.value {
            AddressFamily::Ipv6Unicast => address.is_ipv4() && peer.next_hop_v6.is_none(),
            AddressFamily::Ipv4Unicast => address.is_ipv6(),
        };
        if needed && !has_next_hop(link, family.value) {
            let field = format!("{path}.families[{i}]");
            report_no_next_hop(ctx, &field, family, address, link);
        }
    }
}

fn has_next_hop(link: Option<&SystemInterface>, family: AddressFamily) -> bool {
    link.is_some_and(|l| {
        l.addresses
            .iter()
            .any(|a| family.holds(a.address) && !is_link_local(a.address))
    })
}

fn report_no_next_hop(
    ctx: &Ctx,
    field: &str,
    family: &At<AddressFamily>,
    address: IpAddr,
    link: Option<&SystemInterface>,
) {
    let (session, needs) = match family.value {
        AddressFamily::Ipv6Unicast => ("IPv4", "IPv6"),
        AddressFamily::Ipv4Unicast => ("IPv6", "IPv4"),
    };
    let (where_, fix_link) = match link {
        Some(l) => (
            format!(
                "link \"{}\" towards the peer has no global {needs} address",
                l.name
            ),
            format!("add an {needs} address to {}", l.name),
        ),
        None => (
            format!("no link's subnet holds {address} to take one from"),
            format!(
                "set local_address to this node's address on a link that has an {needs} address"
            ),
        ),
    };
    let help = match family.value {
        AddressFamily::Ipv6Unicast => {
            format!("set next_hop_v6 to an IPv6 address of this node, or {fix_link}")
        }
        AddressFamily::Ipv4Unicast => format!(
            "{fix_link}, or remove \"ipv4-unicast\" (IPv4 routes with an IPv6 next hop, RFC 8950, are not supported)"
        ),
    };
    ctx.report(
        ErrorKind::System,
        family.span.clone(),
        field,
        format!(
            "{} over an {session} session needs an {needs} next hop: {where_}",
            family.value
        ),
        help,
    );
}
