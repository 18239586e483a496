//! Routes of the main table: dump, add, delete, and single-address look-up;
//! multipath routes (RTA_MULTIPATH) installed by a BGP router, and route
//! change notifications.
//!
//! Owns the RTM_*ROUTE messages and the [`Route`] / [`RouteHit`] /
//! [`PathRoute`] summaries. Routes vipgate adds with [`RtNetlink::add_route`]
//! carry `proto static` so operators (and a later clean-up pass) can tell
//! them from kernel and DHCP routes; [`RtNetlink::replace_path_route`]
//! (the lab's router) writes `proto bgp`. Policy tables and metrics are not
//! handled.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{check_prefix, invalid_input, NetlinkError, RtNetlink};

/// The kernel's main routing table (RT_TABLE_MAIN).
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;
/// rtnetlink multicast group of IPv4 route changes (RTNLGRP_IPV4_ROUTE).
pub const RTNLGRP_IPV4_ROUTE: u32 = 7;
/// rtnetlink multicast group of IPv6 route changes (RTNLGRP_IPV6_ROUTE).
pub const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// `rtm_protocol` of BGP routes (RTPROT_BGP): what `ip route` shows as
/// `proto bgp`.
pub const PROTO_BGP: u8 = 186;

/// IP version, for calls that list one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// One unicast route of the main table. A default route has `dst` 0.0.0.0
/// or :: and `prefix_len` 0. Multipath routes show neither gateway nor oif.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
}

/// A unicast route with every next hop: one for a plain route, several
/// for a multipath (ECMP) route. What a BGP router installs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// Gateways, sorted; empty for an on-link route.
    pub next_hops: Vec<IpAddr>,
    /// `rtm_protocol` (e.g. [`PROTO_BGP`], 12 for BIRD).
    pub protocol: u8,
    pub table: u32,
}

/// A route change read from [`RTNLGRP_IPV4_ROUTE`] / [`RTNLGRP_IPV6_ROUTE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// RTM_NEWROUTE: added or replaced; the route as it is now.
    Added(PathRoute),
    /// RTM_DELROUTE: the route that was removed.
    Removed(PathRoute),
}

/// Reads a route notification; `None` for other messages and for routes
/// that are not unicast.
pub fn parse_route_event(msg: &RouteNetlinkMessage) -> Option<RouteEvent> {
    match msg {
        RouteNetlinkMessage::NewRoute(r) => PathRoute::from_message(r).map(RouteEvent::Added),
        RouteNetlinkMessage::DelRoute(r) => PathRoute::from_message(r).map(RouteEvent::Removed),
        _ => None,
    }
}

/// Where the kernel would send a packet to one address (RTM_GETROUTE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteHit {
    /// Output interface (the loopback's index for a local address).
    pub oif: u32,
    /// Next hop, if the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// Source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
}

/// Attributes shared by [`Route`] and [`RouteHit`].
#[derive(Default)]
struct RouteAttrs {
    dst: Option<IpAddr>,
    gateway: Option<IpAddr>,
    prefsrc: Option<IpAddr>,
    oif: Option<u32>,
    table: Option<u32>,
}

impl RouteAttrs {
    fn of(msg: &RouteMessage) -> RouteAttrs {
        let mut attrs = RouteAttrs::default();
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => attrs.dst = ip_of(a),
                RouteAttribute::Gateway(a) => attrs.gateway = ip_of(a),
                RouteAttribute::PrefSource(a) => attrs.prefsrc = ip_of(a),
                RouteAttribute::Oif(index) => attrs.oif = Some(*index),
                RouteAttribute::Table(table) => attrs.table = Some(*table),
                _ => {}
            }
        }
        attrs
    }
}

impl Route {
    /// Reads an RTM_NEWROUTE reply of `family`; `None` for other kinds.
    fn from_message(msg: &RouteMessage, family: Family) -> Option<Route> {
        if msg.header.address_family != family.address_family()
            || msg.header.kind != RouteType::Unicast
        {
            return None;
        }
        let attrs = RouteAttrs::of(msg);
        Some(Route {
            dst: attrs.dst.unwrap_or(family.unspecified()),
            prefix_len: msg.header.destination_prefix_length,
            gateway: attrs.gateway,
            oif: attrs.oif,
            table: attrs.table.unwrap_or(u32::from(msg.header.table)),
        })
    }
}

impl PathRoute {
    /// Any unicast route message of either family.
    fn from_message(msg: &RouteMessage) -> Option<PathRoute> {
        let family = match msg.header.address_family {
            AddressFamily::Inet => Family::V4,
            AddressFamily::Inet6 => Family::V6,
            _ => return None,
        };
        if msg.header.kind != RouteType::Unicast {
            return None;
        }
        let attrs = RouteAttrs::of(msg);
        let mut next_hops: Vec<IpAddr> = attrs.gateway.into_iter().collect();
        for attr in &msg.attributes {
            if let RouteAttribute::MultiPath(hops) = attr {
                next_hops.extend(hops.iter().filter_map(|h| {
                    h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        _ => None,
                    })
                }));
            }
        }
        next_hops.sort();
        next_hops.dedup();
        Some(PathRoute {
            dst: attrs.dst.unwrap_or(family.unspecified()),
            prefix_len: msg.header.destination_prefix_length,
            next_hops,
            protocol: u8::from(msg.header.protocol),
            table: attrs.table.unwrap_or(u32::from(msg.header.table)),
        })
    }
}

impl RouteHit {
    fn from_message(msg: &RouteMessage) -> Option<RouteHit> {
        let attrs = RouteAttrs::of(msg);
        Some(RouteHit {
            oif: attrs.oif?,
            gateway: attrs.gateway,
            prefsrc: attrs.prefsrc,
        })
    }
}

impl RtNetlink {
    /// Unicast routes of the main table for one family.
    pub fn routes(&mut self, family: Family) -> io::Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family.address_family();
        let replies = self
            .socket
            .dump("dump routes", RouteNetlinkMessage::GetRoute(msg))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Route::from_message(r, family),
                _ => None,
            })
            .filter(|r| r.table == MAIN_TABLE)
            .collect())
    }

    /// Adds `dst/prefix_len` to the main table, via `gateway` and/or out of
    /// interface `oif` (at least one of them). Fails if the route exists.
    pub fn add_route(
        &mut self,
        dst: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> io::Result<()> {
        let op = route_op("add", dst, prefix_len, gateway, oif);
        check_route(&op, dst, prefix_len, gateway)?;
        if gateway.is_none() && oif.is_none() {
            return Err(invalid_input(&op, "needs a gateway or an interface"));
        }
        let msg = route_message(RouteChange::Add, dst, prefix_len, gateway, oif);
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes the first main-table route matching `dst/prefix_len` and,
    /// when given, `gateway` and `oif`.
    pub fn del_route(
        &mut self,
        dst: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> io::Result<()> {
        let op = route_op("delete", dst, prefix_len, gateway, oif);
        check_route(&op, dst, prefix_len, gateway)?;
        let msg = route_message(RouteChange::Delete, dst, prefix_len, gateway, oif);
        self.socket
            .request(&op, RouteNetlinkMessage::DelRoute(msg), 0)
    }

    /// Unicast routes of the main table for one family with all their
    /// next hops (multipath routes included).
    pub fn path_routes(&mut self, family: Family) -> io::Result<Vec<PathRoute>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family.address_family();
        let replies = self
            .socket
            .dump("dump routes", RouteNetlinkMessage::GetRoute(msg))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => PathRoute::from_message(r),
                _ => None,
            })
            .filter(|r| r.table == MAIN_TABLE && Family::of(r.dst) == family)
            .collect())
    }

    /// Installs `dst/prefix_len` in the main table with `proto bgp` and
    /// one equal-weight next hop per gateway (RTA_MULTIPATH, even for one),
    /// replacing whatever route of that prefix was there in one step, as
    /// `ip route replace DST proto bgp nexthop via A nexthop via B` does.
    /// The kernel finds each gateway's interface.
    pub fn replace_path_route(
        &mut self,
        dst: IpAddr,
        prefix_len: u8,
        gateways: &[IpAddr],
    ) -> io::Result<()> {
        let mut op = format!("replace route {dst}/{prefix_len}");
        for g in gateways {
            op += &format!(" nexthop via {g}");
        }
        check_prefix(&op, dst, prefix_len)?;
        if gateways.is_empty() {
            return Err(invalid_input(&op, "needs at least one gateway"));
        }
        if gateways.iter().any(|g| Family::of(*g) != Family::of(dst)) {
            return Err(invalid_input(
                &op,
                "gateway and destination differ in family",
            ));
        }
        let msg = multipath_message(dst, prefix_len, gateways);
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Asks the kernel how it would route a packet to `dst`, as
    /// `ip route get` does; `None` if the destination is unreachable.
    pub fn route_get(&mut self, dst: IpAddr) -> io::Result<Option<RouteHit>> {
        let op = format!("get route to {dst}");
        match self
            .socket
            .get(&op, RouteNetlinkMessage::GetRoute(route_get_message(dst)))
        {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => RouteHit::from_message(r),
                _ => None,
            })),
            Err(e) if is_unreachable(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn is_unreachable(err: &io::Error) -> bool {
    matches!(
        NetlinkError::errno_of(err),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
    )
}

fn route_op(verb: &str, dst: IpAddr, len: u8, gw: Option<IpAddr>, oif: Option<u32>) -> String {
    let mut op = format!("{verb} route {dst}/{len}");
    if let Some(gw) = gw {
        op += &format!(" via {gw}");
    }
    if let Some(oif) = oif {
        op += &format!(" dev ifindex {oif}");
    }
    op
}

fn check_route(op: &str, dst: IpAddr, prefix_len: u8, gateway: Option<IpAddr>) -> io::Result<()> {
    check_prefix(op, dst, prefix_len)?;
    match gateway {
        Some(gw) if Family::of(gw) != Family::of(dst) => Err(invalid_input(
            op,
            "gateway and destination differ in family",
        )),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteChange {
    Add,
    Delete,
}

/// The body iproute2 sends for `ip route add|del DST/LEN [via GW] [dev IF]`,
/// except that additions say `proto static` instead of `proto boot`.
fn route_message(
    change: RouteChange,
    dst: IpAddr,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
) -> RouteMessage {
    let family = Family::of(dst);
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.address_family();
    msg.header.destination_prefix_length = prefix_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.scope = route_scope(change, family, gateway);
    if change == RouteChange::Add {
        msg.header.protocol = RouteProtocol::Static;
        msg.header.kind = RouteType::Unicast;
    }
    if prefix_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(dst)));
    }
    if let Some(gw) = gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    msg
}

/// The body of `ip route replace DST/LEN proto bgp nexthop via G...`.
fn multipath_message(dst: IpAddr, prefix_len: u8, gateways: &[IpAddr]) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = Family::of(dst).address_family();
    msg.header.destination_prefix_length = prefix_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.scope = RouteScope::Universe;
    msg.header.protocol = RouteProtocol::Bgp;
    msg.header.kind = RouteType::Unicast;
    if prefix_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(dst)));
    }
    let hops = gateways
        .iter()
        .map(|g| {
            let mut hop = RouteNextHop::default();
            hop.attributes
                .push(RouteAttribute::Gateway(route_address(*g)));
            hop
        })
        .collect();
    msg.attributes.push(RouteAttribute::MultiPath(hops));
    msg
}

/// iproute2's scope choice: deletions match any scope (IPv4), on-link IPv4
/// routes are link-scoped, everything else is universe.
fn route_scope(change: RouteChange, family: Family, gateway: Option<IpAddr>) -> RouteScope {
    match (family, change, gateway) {
        (Family::V6, _, _) => RouteScope::Universe,
        (Family::V4, RouteChange::Delete, _) => RouteScope::NoWhere,
        (Family::V4, RouteChange::Add, None) => RouteScope::Link,
        (Family::V4, RouteChange::Add, Some(_)) => RouteScope::Universe,
    }
}

/// The body of `ip route get DST`: a host-length prefix, and
/// RTM_F_LOOKUP_TABLE so the reply names the table that matched.
fn route_get_message(dst: IpAddr) -> RouteMessage {
    let family = Family::of(dst);
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.address_family();
    msg.header.destination_prefix_length = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    msg.header.flags = RouteFlags::LookupTable;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(dst)));
    msg
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::socket::encode;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `ip route add 198.18.1.0/24 via 198.18.0.2`, captured with
    /// `strace -e trace=sendmsg -e write=3` (iproute2 6.x, kernel 6.18).
    const ADD_VIA: [u8; 44] = [
        0x2c, 0x00, 0x00, 0x00, 0x18, 0x00, 0x05, 0x06, 0xb6, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x18, 0x00, 0x00, 0xfe, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x01, 0x00, 0x08, 0x00, 0x05, 0x00, 0xc6, 0x12, 0x00, 0x02,
    ];
    /// Offset of rtm_protocol in ADD_VIA: iproute2 says boot (3), we say
    /// static (4); everything else is identical.
    const PROTOCOL_OFFSET: usize = 21;

    /// `ip -4 route get 198.18.1.5`: the request and the kernel's reply
    /// (strace -e write=3 -e read=3), with vgt0 = ifindex 3 at 198.18.0.1/24
    /// and 198.18.1.0/24 via 198.18.0.2.
    const GET_REQUEST: [u8; 36] = [
        0x24, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x01, 0x00, 0xb6, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x01, 0x05,
    ];
    const GET_REPLY: [u8; 112] = [
        0x70, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, 0xb6, 0xe4, 0x05, 0x6b, 0x07, 0x37, 0x00,
        0x00, 0x02, 0x20, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x08, 0x00,
        0x0f, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0xc6, 0x12, 0x01, 0x05, 0x08,
        0x00, 0x04, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x07, 0x00, 0xc6, 0x12, 0x00, 0x01,
        0x08, 0x00, 0x05, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x08, 0x00, 0x19, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x24, 0x00, 0x0c, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    const SEQ: u32 = 0x6b05_e4b6;

    /// `ip route replace 198.18.10.10/32 proto bgp nexthop via 198.18.1.2
    /// nexthop via 198.18.2.2` (strace -e write=3, iproute2 6.1, kernel
    /// 6.18).
    const REPLACE_MULTIPATH: [u8; 72] = [
        0x48, 0x00, 0x00, 0x00, 0x18, 0x00, 0x05, 0x05, 0x5f, 0x14, 0x06, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x20, 0x00, 0x00, 0xfe, 0xba, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x0a, 0x0a, 0x24, 0x00, 0x09, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0xc6, 0x12, 0x01, 0x02, 0x10, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0xc6, 0x12, 0x02, 0x02,
    ];
    const REPLACE_SEQ: u32 = 0x6b06_145f;
    /// The same for `ip -6 route replace 2001:db8:10::10/128 proto bgp
    /// nexthop via 2001:db8:1::2 nexthop via 2001:db8:2::2`.
    const REPLACE_MULTIPATH_V6: [u8; 108] = [
        0x6c, 0x00, 0x00, 0x00, 0x18, 0x00, 0x05, 0x05, 0x5f, 0x14, 0x06, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x0a, 0x80, 0x00, 0x00, 0xfe, 0xba, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00,
        0x01, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x3c, 0x00, 0x09, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x05, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00,
        0x05, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x02,
    ];

    /// What a process that joined RTNLGRP_IPV4_ROUTE read after the
    /// REPLACE_MULTIPATH route was added and then deleted (`ip route del
    /// 198.18.10.10/32`), with both links down (rtnh_flags LINKDOWN):
    /// RTM_NEWROUTE, then RTM_DELROUTE. Captured with a Python AF_NETLINK
    /// socket bound to the group.
    const EVENT_NEW: &str = "50000000180000066814066bb41f000002200000feba00011000000008000f00fe00000008000100c6120a0a24000900100010000300000008000500c6120102100010000500000008000500c6120202";
    const EVENT_DEL: &str = "50000000190000006814066bb51f000002200000feba00011000000008000f00fe00000008000100c6120a0a24000900100010000300000008000500c6120102100010000500000008000500c6120202";
    /// RTNLGRP_IPV6_ROUTE after REPLACE_MULTIPATH_V6 (links down).
    const EVENT_NEW_V6: &str = "a8000000180000016c14066b032000000a800000feba00010000000008000f00fe0000001400010020010db800100000000000000000001008000600000400003c0009001c001000030000001400050020010db80001000000000000000000021c001000050000001400050020010db800020000000000000000000224000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn event(bytes: &[u8]) -> Option<RouteEvent> {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            panic!("not a route message: {msg:?}");
        };
        parse_route_event(&inner)
    }

    #[test]
    fn replace_multipath_matches_iproute2() {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let gws = [ip("198.18.1.2"), ip("198.18.2.2")];
        let msg = multipath_message(ip("198.18.10.10"), 32, &gws);
        let bytes = encode(RouteNetlinkMessage::NewRoute(msg), flags, REPLACE_SEQ);
        assert_eq!(bytes, REPLACE_MULTIPATH);
        let gws = [ip("2001:db8:1::2"), ip("2001:db8:2::2")];
        let msg = multipath_message(ip("2001:db8:10::10"), 128, &gws);
        let bytes = encode(RouteNetlinkMessage::NewRoute(msg), flags, REPLACE_SEQ);
        assert_eq!(bytes, REPLACE_MULTIPATH_V6);
    }

    #[test]
    fn multipath_events_parse_with_every_next_hop() {
        let route = PathRoute {
            dst: ip("198.18.10.10"),
            prefix_len: 32,
            next_hops: vec![ip("198.18.1.2"), ip("198.18.2.2")],
            protocol: PROTO_BGP,
            table: MAIN_TABLE,
        };
        assert_eq!(
            event(&hex(EVENT_NEW)),
            Some(RouteEvent::Added(route.clone()))
        );
        assert_eq!(event(&hex(EVENT_DEL)), Some(RouteEvent::Removed(route)));
        let Some(RouteEvent::Added(v6)) = event(&hex(EVENT_NEW_V6)) else {
            panic!("not an added route");
        };
        assert_eq!((v6.dst, v6.prefix_len), (ip("2001:db8:10::10"), 128));
        assert_eq!(v6.next_hops, [ip("2001:db8:1::2"), ip("2001:db8:2::2")]);
        // A plain route's single gateway is its one next hop.
        let plain = route_message(
            RouteChange::Add,
            ip("198.18.1.0"),
            24,
            Some(ip("198.18.0.2")),
            None,
        );
        let parsed = PathRoute::from_message(&plain).unwrap();
        assert_eq!(parsed.next_hops, [ip("198.18.0.2")]);
        assert_eq!(parsed.protocol, 4);
        assert_eq!(
            parse_route_event(&RouteNetlinkMessage::GetRoute(plain)),
            None
        );
    }

    #[test]
    fn add_route_matches_iproute2_but_for_protocol() {
        let msg = route_message(
            RouteChange::Add,
            ip("198.18.1.0"),
            24,
            Some(ip("198.18.0.2")),
            None,
        );
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let bytes = encode(RouteNetlinkMessage::NewRoute(msg), flags, SEQ);
        let mut expected = ADD_VIA;
        expected[PROTOCOL_OFFSET] = 4; // RTPROT_STATIC
        assert_eq!(bytes, expected);
    }

    #[test]
    fn route_get_matches_iproute2() {
        let msg = RouteNetlinkMessage::GetRoute(route_get_message(ip("198.18.1.5")));
        assert_eq!(encode(msg, NLM_F_REQUEST, SEQ), GET_REQUEST);
    }

    #[test]
    fn route_get_reply_parses() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&GET_REPLY).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = msg.payload else {
            panic!("not RTM_NEWROUTE: {msg:?}");
        };
        let hit = RouteHit::from_message(&r).unwrap();
        assert_eq!(
            hit,
            RouteHit {
                oif: 3,
                gateway: Some(ip("198.18.0.2")),
                prefsrc: Some(ip("198.18.0.1")),
            }
        );
        let route = Route::from_message(&r, Family::V4).unwrap();
        assert_eq!(
            (route.dst, route.prefix_len, route.table),
            (ip("198.18.1.5"), 32, MAIN_TABLE)
        );
        assert_eq!(Route::from_message(&r, Family::V6), None);
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let msg = route_message(
            RouteChange::Add,
            ip("::"),
            0,
            Some(ip("2001:db8::1")),
            Some(4),
        );
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        let route = Route::from_message(&msg, Family::V6).unwrap();
        assert_eq!(route.dst, ip("::"));
        assert_eq!(route.gateway, Some(ip("2001:db8::1")));
        assert_eq!(route.oif, Some(4));
    }

    #[test]
    fn scopes_follow_iproute2() {
        let on_link = route_message(RouteChange::Add, ip("198.18.0.0"), 24, None, Some(3));
        assert_eq!(on_link.header.scope, RouteScope::Link);
        let del = route_message(RouteChange::Delete, ip("198.18.0.0"), 24, None, Some(3));
        assert_eq!(del.header.scope, RouteScope::NoWhere);
        assert_eq!(del.header.protocol, RouteProtocol::Unspec);
        let v6 = route_message(RouteChange::Add, ip("2001:db8::"), 64, None, Some(3));
        assert_eq!(v6.header.scope, RouteScope::Universe);
    }

    #[test]
    fn mixed_families_are_rejected() {
        let err = check_route("t", ip("198.18.0.0"), 24, Some(ip("2001:db8::1"))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(check_route("t", ip("198.18.0.0"), 33, None).is_err());
    }
}
