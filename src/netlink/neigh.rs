//! The neighbour table (ARP and NDP): dump, look-up, resolution requests,
//! permanent entries, deletion, and decoding of RTNLGRP_NEIGH events.
//!
//! Owns the RTM_*NEIGH messages and the [`Neighbour`] summary. It asks the
//! kernel to resolve addresses but never sends ARP or NDP itself, and it
//! does not watch the table: the daemon joins [`RTNLGRP_NEIGH`] on its own
//! [`RouteSocket`](super::RouteSocket) and feeds what it reads to
//! [`parse_neighbour_event`].
//!
//! Resolution: `ip neigh add ... nud incomplete` is refused by the kernel,
//! so [`RtNetlink::request_resolution`] sends what Cilium does for its next
//! hops (netlink `NeighSet` with `NUD_NONE` and `NTF_USE`): RTM_NEWNEIGH
//! with NLM_F_CREATE | NLM_F_REPLACE and NTF_USE. The kernel's `neigh_add`
//! then creates the entry if missing and calls `neigh_event_send()`, as if a
//! packet were waiting: a new or FAILED entry goes INCOMPLETE and is
//! solicited at once, a STALE one goes DELAY then PROBE, a REACHABLE one is
//! left alone. The state in the request is ignored with NTF_USE; we send
//! NUD_NONE rather than iproute2's default NUD_PERMANENT because a new entry
//! asked for as permanent is exempt from garbage collection.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
    NeighbourState as NudState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{format_mac, NetlinkError, RtNetlink};

/// rtnetlink multicast group of neighbour changes (RTNLGRP_NEIGH).
pub const RTNLGRP_NEIGH: u32 = 3;

/// State of a neighbour entry (the kernel's NUD_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighbourState {
    /// Solicitation sent, no answer yet.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Usable, but not confirmed recently.
    Stale,
    /// Waiting before probing a stale entry.
    Delay,
    /// Probing a stale entry.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed (e.g. point-to-point).
    Noarp,
    /// Set by an administrator; never expires.
    Permanent,
    /// Just created, nothing done yet.
    None,
    /// A combination or value this code does not know.
    Other(u16),
}

impl NeighbourState {
    /// Whether the entry holds a link-layer address the kernel would use.
    pub fn is_usable(self) -> bool {
        matches!(
            self,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        )
    }

    fn from_nud(nud: NudState) -> NeighbourState {
        match nud {
            NudState::Incomplete => NeighbourState::Incomplete,
            NudState::Reachable => NeighbourState::Reachable,
            NudState::Stale => NeighbourState::Stale,
            NudState::Delay => NeighbourState::Delay,
            NudState::Probe => NeighbourState::Probe,
            NudState::Failed => NeighbourState::Failed,
            NudState::Noarp => NeighbourState::Noarp,
            NudState::Permanent => NeighbourState::Permanent,
            NudState::None => NeighbourState::None,
            other => NeighbourState::Other(u16::from(other)),
        }
    }
}

/// One entry of the neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// Link-layer address; `None` while unresolved (or not Ethernet-sized).
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

impl Neighbour {
    /// Reads an RTM_NEWNEIGH / RTM_DELNEIGH body; `None` for non-IP
    /// families (bridge FDB entries share these messages) or no address.
    fn from_message(msg: &NeighbourMessage) -> Option<Neighbour> {
        let mut addr = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    addr = Some(IpAddr::V4(*v4));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    addr = Some(IpAddr::V6(*v6));
                }
                NeighbourAttribute::LinkLocalAddress(bytes) => {
                    mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                }
                _ => {}
            }
        }
        Some(Neighbour {
            ifindex: msg.header.ifindex,
            addr: addr?,
            mac,
            state: NeighbourState::from_nud(msg.header.state),
        })
    }
}

/// Decodes one message read from a socket that joined [`RTNLGRP_NEIGH`]:
/// `Some((true, n))` for an added or changed entry, `Some((false, n))` for
/// a removed one, `None` for anything else.
pub fn parse_neighbour_event(msg: &RouteNetlinkMessage) -> Option<(bool, Neighbour)> {
    match msg {
        RouteNetlinkMessage::NewNeighbour(m) => Some((true, Neighbour::from_message(m)?)),
        RouteNetlinkMessage::DelNeighbour(m) => Some((false, Neighbour::from_message(m)?)),
        _ => None,
    }
}

impl RtNetlink {
    /// The whole neighbour table, IPv4 and IPv6.
    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let replies = self.socket.dump(
            "dump neighbours",
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| parse_neighbour_event(m).map(|(_, n)| n))
            .collect())
    }

    /// The entry for `addr` on interface `ifindex`, if there is one.
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<Option<Neighbour>> {
        let op = format!("get neighbour {addr} dev ifindex {ifindex}");
        let msg = neighbour_message(ifindex, addr, NudState::None);
        match self.socket.get(&op, RouteNetlinkMessage::GetNeighbour(msg)) {
            Ok(replies) => Ok(replies
                .iter()
                .filter_map(|m| parse_neighbour_event(m).map(|(_, n)| n))
                .find(|n| n.ifindex == ifindex && n.addr == addr)),
            Err(e) if NetlinkError::errno_of(&e) == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the kernel resolve `addr` on `ifindex` now (see the module
    /// comment); poll [`RtNetlink::neighbour`] or watch events for the
    /// result.
    pub fn request_resolution(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        let op = format!("resolve neighbour {addr} dev ifindex {ifindex}");
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewNeighbour(resolution_message(ifindex, addr)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Adds `addr lladdr mac nud permanent` on `ifindex` (fails if an entry
    /// exists).
    pub fn add_permanent_neighbour(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        mac: [u8; 6],
    ) -> io::Result<()> {
        let op = format!(
            "add neighbour {addr} lladdr {} dev ifindex {ifindex}",
            format_mac(&mac)
        );
        let mut msg = neighbour_message(ifindex, addr, NudState::Permanent);
        msg.attributes
            .push(NeighbourAttribute::LinkLocalAddress(mac.to_vec()));
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes the entry for `addr` on `ifindex`.
    pub fn del_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> io::Result<()> {
        let op = format!("delete neighbour {addr} dev ifindex {ifindex}");
        let msg = neighbour_message(ifindex, addr, NudState::None);
        self.socket
            .request(&op, RouteNetlinkMessage::DelNeighbour(msg), 0)
    }
}

/// ndmsg for `addr` on `ifindex` with NDA_DST, as iproute2 builds it.
fn neighbour_message(ifindex: u32, addr: IpAddr, state: NudState) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.ifindex = ifindex;
    msg.header.state = state;
    let dst = match addr {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    };
    msg.attributes.push(NeighbourAttribute::Destination(dst));
    msg
}

/// `ip neigh replace ADDR dev IF use nud none`.
fn resolution_message(ifindex: u32, addr: IpAddr) -> NeighbourMessage {
    let mut msg = neighbour_message(ifindex, addr, NudState::None);
    msg.header.flags = NeighbourFlags::Use;
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::socket::{encode, Frames};
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};

    const SEQ: u32 = 0x6b05_e4b7;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `ip neigh replace 198.18.0.3 dev vgt0 use` (vgt0 = ifindex 3), from
    /// `strace -e trace=sendmsg -e write=3` (iproute2 6.1, kernel 6.18).
    /// iproute2 defaults the state to NUD_PERMANENT (0x80 at offset 24).
    const USE_REQUEST: [u8; 36] = [
        0x24, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x05, 0x05, 0xb7, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x80, 0x00, 0x01, 0x00, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x00, 0x03,
    ];
    const STATE_OFFSET: usize = 24;

    /// `ip neigh add 198.18.0.2 lladdr 02:00:00:00:00:0b dev vgt0 nud
    /// permanent`, same capture.
    const PERMANENT_REQUEST: [u8; 48] = [
        0x30, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x05, 0x06, 0xb7, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x0a, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x0b, 0x00, 0x00,
    ];

    /// The kernel's reply to `ip -4 neigh show dev vgt0` after the two
    /// requests above, 198.18.0.3 having no owner: one datagram with an
    /// INCOMPLETE entry, a PERMANENT one and NLMSG_DONE.
    const DUMP_REPLY: [u8; 160] = [
        0x40, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x22, 0x00, 0xb7, 0xe4, 0x05, 0x6b, 0x0b, 0x37, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x01, 0x00, 0xc6, 0x12, 0x00, 0x03, 0x08, 0x00, 0x04, 0x00, 0x04, 0x00, 0x00, 0x00, 0x14,
        0x00, 0x03, 0x00, 0x74, 0x17, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x4c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x22, 0x00, 0xb7, 0xe4, 0x05,
        0x6b, 0x0b, 0x37, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x80, 0x00,
        0x00, 0x01, 0x08, 0x00, 0x01, 0x00, 0xc6, 0x12, 0x00, 0x02, 0x0a, 0x00, 0x02, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0xb7, 0xe4,
        0x05, 0x6b, 0x0b, 0x37, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn resolution_request_matches_iproute2_but_for_state() {
        let msg = RouteNetlinkMessage::NewNeighbour(resolution_message(3, ip("198.18.0.3")));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut expected = USE_REQUEST;
        expected[STATE_OFFSET] = 0; // NUD_NONE
        assert_eq!(encode(msg, flags, SEQ), expected);
    }

    #[test]
    fn permanent_request_matches_iproute2() {
        let mut msg = neighbour_message(3, ip("198.18.0.2"), NudState::Permanent);
        msg.attributes
            .push(NeighbourAttribute::LinkLocalAddress(vec![
                2, 0, 0, 0, 0, 0x0b,
            ]));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let bytes = encode(RouteNetlinkMessage::NewNeighbour(msg), flags, SEQ);
        assert_eq!(bytes, PERMANENT_REQUEST);
    }

    #[test]
    fn kernel_dump_parses() {
        let mut found = Vec::new();
        for frame in Frames::new(&DUMP_REPLY) {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.unwrap()).unwrap();
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                found.push(parse_neighbour_event(&inner).unwrap());
            }
        }
        let incomplete = Neighbour {
            ifindex: 3,
            addr: ip("198.18.0.3"),
            mac: None,
            state: NeighbourState::Incomplete,
        };
        let permanent = Neighbour {
            ifindex: 3,
            addr: ip("198.18.0.2"),
            mac: Some([2, 0, 0, 0, 0, 0x0b]),
            state: NeighbourState::Permanent,
        };
        assert_eq!(found, vec![(true, incomplete), (true, permanent)]);
    }

    #[test]
    fn deletions_and_foreign_families_are_told_apart() {
        let msg = neighbour_message(4, ip("2001:db8::2"), NudState::Stale);
        let del = RouteNetlinkMessage::DelNeighbour(msg.clone());
        let (added, n) = parse_neighbour_event(&del).unwrap();
        assert!(!added);
        assert_eq!(
            (n.ifindex, n.addr, n.state),
            (4, ip("2001:db8::2"), NeighbourState::Stale)
        );
        // A bridge FDB entry (AF_BRIDGE, MAC only) is not a neighbour.
        let mut fdb = NeighbourMessage::default();
        fdb.header.family = AddressFamily::Bridge;
        fdb.attributes
            .push(NeighbourAttribute::LinkLocalAddress(vec![2, 0, 0, 0, 0, 1]));
        assert_eq!(
            parse_neighbour_event(&RouteNetlinkMessage::NewNeighbour(fdb)),
            None
        );
        let link = RouteNetlinkMessage::NewLink(Default::default());
        assert_eq!(parse_neighbour_event(&link), None);
    }

    #[test]
    fn unknown_state_combinations_are_kept() {
        assert_eq!(
            NeighbourState::from_nud(NudState::from(0x42)),
            NeighbourState::Other(0x42)
        );
        assert!(NeighbourState::Stale.is_usable());
        assert!(!NeighbourState::Incomplete.is_usable());
        assert!(!NeighbourState::Failed.is_usable());
    }
}
