//! Links: dump, look-up, veth creation, up/down, MTU, MAC, namespace moves.
//!
//! Owns the RTM_*LINK messages vipgate sends and the [`Link`] summary it
//! reads back. Does not create other link kinds (bonds and macvlans come
//! with the work that needs them).

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{invalid_input, NetlinkError, RtNetlink};
use crate::netns::NetNs;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Hardware address; all zero for links without a 6-byte address.
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Lower layer up (IFF_LOWER_UP): up and the carrier is present, e.g.
    /// both ends of a veth are up. The kernel derives operstate from the
    /// same condition.
    pub carrier: bool,
}

impl Link {
    /// Reads a link out of an RTM_NEWLINK reply; `None` if it has no name.
    fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(bytes) => {
                    if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                        link.mac = mac;
                    }
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

impl RtNetlink {
    /// All links of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.socket.dump(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies.iter().filter_map(link_of).collect())
    }

    /// The link called `name`, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let op = format!("get link {name}");
        check_ifname(&op, name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(&op, msg)
    }

    /// The link with interface index `index`, if there is one.
    pub fn link(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(&format!("get link ifindex {index}"), msg)
    }

    fn get_link(&mut self, op: &str, msg: LinkMessage) -> io::Result<Option<Link>> {
        match self.socket.get(op, RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(replies.iter().find_map(link_of)),
            Err(e) if NetlinkError::errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair `name` <-> `peer_name`, both down, both here.
    pub fn add_veth(&mut self, name: &str, peer_name: &str) -> io::Result<()> {
        let op = format!("add veth {name} peer {peer_name}");
        check_ifname(&op, name)?;
        check_ifname(&op, peer_name)?;
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewLink(veth_message(name, peer_name)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sets IFF_UP (`up`) or clears it.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        let state = if up { "up" } else { "down" };
        self.set_link(&format!("set link ifindex {index} {state}"), msg)
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(&format!("set link ifindex {index} mtu {mtu}"), msg)
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let op = format!(
            "set link ifindex {index} address {}",
            super::format_mac(&mac)
        );
        self.set_link(&op, msg)
    }

    /// Moves the link into `netns` (IFLA_NET_NS_FD). Its index may change
    /// there; look it up by name in the target namespace afterwards.
    pub fn move_link_to_netns(&mut self, index: u32, netns: &NetNs) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        let target = netns.name().unwrap_or("(unnamed)");
        self.set_link(&format!("move link ifindex {index} to netns {target}"), msg)
    }

    /// Deletes the link (for a veth, both ends go).
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.socket.request(
            &format!("delete link ifindex {index}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }

    fn set_link(&mut self, op: &str, msg: LinkMessage) -> io::Result<()> {
        self.socket
            .request(op, RouteNetlinkMessage::SetLink(msg), 0)
    }
}

fn link_of(msg: &RouteNetlinkMessage) -> Option<Link> {
    match msg {
        RouteNetlinkMessage::NewLink(link) => Link::from_message(link),
        _ => None,
    }
}

/// RTM_NEWLINK body for `ip link add NAME type veth peer name PEER`.
fn veth_message(name: &str, peer_name: &str) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_string()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

fn check_ifname(op: &str, name: &str) -> io::Result<()> {
    let bad = name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if bad {
        return Err(invalid_input(
            op,
            &format!("invalid interface name {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::socket::encode;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

    /// `ip link add vgt2 type veth peer name vgt3`, captured with
    /// `strace -e trace=sendmsg -e write=3` (iproute2 6.1, kernel 6.18).
    const ADD_VETH: [u8; 92] = [
        0x5c, 0x00, 0x00, 0x00, 0x10, 0x00, 0x05, 0x06, 0xb5, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x09, 0x00, 0x03, 0x00, 0x76, 0x67, 0x74, 0x32, 0x00, 0x00, 0x00, 0x00, 0x30,
        0x00, 0x12, 0x00, 0x08, 0x00, 0x01, 0x00, 0x76, 0x65, 0x74, 0x68, 0x24, 0x00, 0x02, 0x00,
        0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x03, 0x00, 0x76, 0x67, 0x74, 0x33, 0x00, 0x00,
        0x00, 0x00,
    ];

    /// netlink-packet-route NUL-terminates IFLA_INFO_KIND ("veth\0", 9
    /// bytes, padded to 12) where iproute2 sends the bare 8-byte "veth";
    /// the kernel accepts both (NLA_STRING). Rewrite the capture that way.
    fn iproute2_veth_with_nul_terminated_kind() -> Vec<u8> {
        let mut expected = ADD_VETH.to_vec();
        expected[0] += 4; // nlmsg_len
        expected[44] += 4; // IFLA_LINKINFO nla_len
        expected[48] += 1; // IFLA_INFO_KIND nla_len: 8 -> 9
        expected.splice(56..56, [0u8; 4]);
        expected
    }

    #[test]
    fn add_veth_matches_iproute2() {
        let msg = RouteNetlinkMessage::NewLink(veth_message("vgt2", "vgt3"));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        assert_eq!(
            encode(msg, flags, 0x6b05_e4b5),
            iproute2_veth_with_nul_terminated_kind()
        );
    }

    #[test]
    fn link_reply_summary() {
        let mut msg = veth_message("vgt2", "vgt3");
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        msg.attributes.push(LinkAttribute::Mtu(1500));
        msg.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 0x0a]));
        let link = Link::from_message(&msg).unwrap();
        assert_eq!(link.name, "vgt2");
        assert_eq!(
            (link.index, link.mtu, link.up, link.carrier),
            (7, 1500, true, true)
        );
        assert_eq!(link.mac, [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(Link::from_message(&LinkMessage::default()), None);
    }

    #[test]
    fn interface_names_are_checked() {
        for good in ["lo", "veth0", "vgt-12345-a0b1", "a.b_c-d"] {
            assert!(check_ifname("t", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "sixteen-chars-xx"] {
            assert!(check_ifname("t", bad).is_err(), "{bad}");
        }
    }
}
