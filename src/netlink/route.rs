//! Routes of the main table: dump, add, delete, and single-address look-up.
//!
//! Owns the RTM_*ROUTE messages and the [`Route`] / [`RouteHit`] summaries.
//! Routes vipgate adds carry `proto static` so operators (and a later
//! clean-up pass) can tell them from kernel and DHCP routes. Multipath
//! routes, policy tables and metrics are not handled yet.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{check_prefix, invalid_input, NetlinkError, RtNetlink};

/// The kernel's main routing table (RT_TABLE_MAIN).
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

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
