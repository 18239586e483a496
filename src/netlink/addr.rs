//! Interface addresses: dump, add, delete.
//!
//! Owns the RTM_*ADDR messages and the [`Addr`] summary. IPv6 addresses are
//! added with IFA_F_NODAD so they are usable at once (vipgate configures
//! addresses it owns; duplicate detection is VRRP's job, not the kernel's).
//! Does not manage address lifetimes, labels or flags beyond that.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{check_prefix, RtNetlink};

/// One address on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Addr {
    /// Reads an RTM_NEWADDR reply. The interface's own address is IFA_LOCAL
    /// when present (on point-to-point links IFA_ADDRESS is the peer's).
    fn from_message(msg: &AddressMessage) -> Option<Addr> {
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        Some(Addr {
            index: msg.header.index,
            addr: local.or(address)?,
            prefix_len: msg.header.prefix_len,
        })
    }
}

impl RtNetlink {
    /// Every address of every interface, both families.
    pub fn addrs(&mut self) -> io::Result<Vec<Addr>> {
        let replies = self.socket.dump(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        Ok(replies
            .iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewAddress(a) => Addr::from_message(a),
                _ => None,
            })
            .collect())
    }

    /// Adds `addr/prefix_len` to interface `index` (fails if present).
    pub fn add_addr(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let op = format!("add address {addr}/{prefix_len} on ifindex {index}");
        check_prefix(&op, addr, prefix_len)?;
        self.socket.request(
            &op,
            RouteNetlinkMessage::NewAddress(address_message(index, addr, prefix_len)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `addr/prefix_len` from interface `index`.
    pub fn del_addr(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let op = format!("delete address {addr}/{prefix_len} on ifindex {index}");
        check_prefix(&op, addr, prefix_len)?;
        self.socket.request(
            &op,
            RouteNetlinkMessage::DelAddress(address_message(index, addr, prefix_len)),
            0,
        )
    }
}

/// The body iproute2 sends for `ip addr add ADDR/LEN dev IFACE [nodad]`:
/// IFA_LOCAL and IFA_ADDRESS both set to the address, NODAD for IPv6.
fn address_message(index: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    if addr.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::socket::encode;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};

    const SEQ: u32 = 0x6b05_e4b6;
    const ADD_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

    /// `ip addr add 198.18.0.1/24 dev vgt0` (ifindex 3), captured with
    /// `strace -e trace=sendmsg -e write=3` on iproute2 6.x, kernel 6.18.
    const ADD_V4: [u8; 40] = [
        0x28, 0x00, 0x00, 0x00, 0x14, 0x00, 0x05, 0x06, 0xb6, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x18, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0xc6, 0x12,
        0x00, 0x01, 0x08, 0x00, 0x01, 0x00, 0xc6, 0x12, 0x00, 0x01,
    ];

    /// `ip -6 addr add 2001:db8::1/64 dev vgt0 nodad`, same capture.
    const ADD_V6_NODAD: [u8; 64] = [
        0x40, 0x00, 0x00, 0x00, 0x14, 0x00, 0x05, 0x06, 0xb6, 0xe4, 0x05, 0x6b, 0x00, 0x00, 0x00,
        0x00, 0x0a, 0x40, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x20, 0x01,
        0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x14,
        0x00, 0x01, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01,
    ];

    /// The kernel's RTM_NEWADDR for 198.18.0.1/24 on vgt0 in reply to
    /// `ip -4 addr show dev vgt0` (strace -e read=3), label and cacheinfo
    /// included.
    const DUMP_V4: [u8; 80] = [
        0x50, 0x00, 0x00, 0x00, 0x14, 0x00, 0x22, 0x00, 0xb7, 0xe4, 0x05, 0x6b, 0x03, 0x37, 0x00,
        0x00, 0x02, 0x18, 0x80, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0xc6, 0x12,
        0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0xc6, 0x12, 0x00, 0x01, 0x09, 0x00, 0x03, 0x00, 0x76,
        0x67, 0x74, 0x30, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x08, 0x00, 0x80, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x06, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x23, 0x58, 0x10,
        0x00, 0x23, 0x58, 0x10, 0x00,
    ];

    fn add_request(addr: IpAddr, prefix_len: u8) -> Vec<u8> {
        let msg = RouteNetlinkMessage::NewAddress(address_message(3, addr, prefix_len));
        encode(msg, ADD_FLAGS, SEQ)
    }

    #[test]
    fn add_v4_matches_iproute2() {
        assert_eq!(add_request("198.18.0.1".parse().unwrap(), 24), ADD_V4);
    }

    #[test]
    fn add_v6_nodad_matches_iproute2() {
        assert_eq!(
            add_request("2001:db8::1".parse().unwrap(), 64),
            ADD_V6_NODAD
        );
    }

    #[test]
    fn kernel_address_reply_parses() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&DUMP_V4).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = msg.payload else {
            panic!("not RTM_NEWADDR: {msg:?}");
        };
        let expected = Addr {
            index: 3,
            addr: "198.18.0.1".parse().unwrap(),
            prefix_len: 24,
        };
        assert_eq!(Addr::from_message(&a), Some(expected));
    }

    #[test]
    fn local_wins_over_peer_address() {
        let mut msg = address_message(7, "198.18.0.1".parse().unwrap(), 32);
        msg.attributes = vec![
            AddressAttribute::Address("198.18.0.2".parse().unwrap()),
            AddressAttribute::Local("198.18.0.1".parse().unwrap()),
        ];
        let addr = Addr::from_message(&msg).unwrap();
        assert_eq!(addr.addr, "198.18.0.1".parse::<IpAddr>().unwrap());
    }
}
