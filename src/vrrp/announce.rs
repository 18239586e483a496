//! Gratuitous ARP and unsolicited neighbour advertisements of a new master
//! (RFC 5798 section 6.4.1: "for each IPv4 address associated with the
//! virtual router, broadcast a gratuitous ARP request"; for IPv6, an
//! unsolicited Neighbor Advertisement with the Override flag to ff02::1).
//!
//! Owns building those frames; the VRRP thread sends them through a
//! [`crate::sys::packet::PacketSender`] on the instance's link. Must not:
//! decide when to announce (the instance does).

use std::net::{IpAddr, Ipv6Addr};

use vipgate_dataplane::wire::arp::ArpRepr;

use crate::config::VrrpInstanceConfig;
use vipgate_dataplane::wire::ethernet::EthernetAddress;
use vipgate_dataplane::wire::ndp::{self, NeighborFlags};

/// Longest announcement frame (an NA with its link-layer option is 86).
pub const MAX_FRAME: usize = 128;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The announcement frame for `vip` from `mac`, written into `buf`;
/// returns its length.
pub fn frame(buf: &mut [u8; MAX_FRAME], mac: [u8; 6], vip: IpAddr) -> Option<usize> {
    let mac = EthernetAddress(mac);
    match vip {
        IpAddr::V4(a) => ArpRepr::gratuitous(mac, a)
            .emit_frame(buf, EthernetAddress::BROADCAST)
            .ok(),
        IpAddr::V6(a) => ndp::emit_neighbor_advert_frame(
            buf,
            mac,
            EthernetAddress::from_ipv6_multicast(ALL_NODES),
            a,
            ALL_NODES,
            a,
            NeighborFlags::OVERRIDE,
        )
        .ok(),
    }
}

/// The virtual MAC `inst` answers with, if it has `virtual_mac = true`
/// (dataplane mode only, which `vipgate check` enforces).
pub fn claimed_mac(inst: &VrrpInstanceConfig) -> Option<[u8; 6]> {
    inst.virtual_mac
        .then(|| virtual_mac(inst.vrid, inst.is_v6()))
}

/// The virtual router MAC of RFC 5798 section 7.3: 00-00-5E-00-01-{VRID}
/// for IPv4, 00-00-5E-00-02-{VRID} for IPv6.
pub fn virtual_mac(vrid: u8, v6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_for_the_vip() {
        let mut buf = [0; MAX_FRAME];
        let vip = Ipv4Addr::new(198, 18, 10, 10);
        let n = frame(&mut buf, MAC, IpAddr::V4(vip)).expect("fits");
        assert_eq!(n, 42);
        assert_eq!(&buf[..6], &[0xff; 6]);
        assert_eq!(&buf[6..12], &MAC);
        assert_eq!(&buf[12..14], &[0x08, 0x06]);
        // Sender and target protocol addresses are both the VIP.
        assert_eq!(&buf[28..32], &vip.octets());
        assert_eq!(&buf[38..42], &vip.octets());
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_override() {
        let mut buf = [0; MAX_FRAME];
        let vip: Ipv6Addr = "2001:db8:10::10".parse().expect("literal");
        let n = frame(&mut buf, MAC, IpAddr::V6(vip)).expect("fits");
        assert_eq!(n, 86);
        assert_eq!(&buf[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        // ICMPv6 type 136, Override flag, target = VIP.
        assert_eq!(buf[54], 136);
        assert_eq!(buf[58] & 0x20, 0x20);
        assert_eq!(&buf[62..78], &vip.octets());
    }

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(7, true), [0, 0, 0x5e, 0, 2, 7]);
    }
}
