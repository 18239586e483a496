//! Gratuitous ARP and unsolicited neighbour advertisements of a new master
//! (RFC 5798 section 6.4.1: "for each IPv4 address associated with the
//! virtual router, broadcast a gratuitous ARP request"; for IPv6, an
//! unsolicited Neighbor Advertisement with the Override flag to ff02::1).
//!
//! Also the whole frame of a multicast advert of an instance with
//! `virtual_mac = true`: RFC 5798 section 7.3 has the master send its
//! periodic adverts from the virtual router MAC "to enable bridge learning",
//! which a kernel IP socket cannot do (it sends from the link's MAC).
//!
//! Owns building those frames; the VRRP thread sends them through a
//! [`crate::sys::packet::PacketSender`] on the instance's link. Must not:
//! decide when to announce (the instance does).

use std::net::{IpAddr, Ipv6Addr};

use vipgate_dataplane::wire::arp::ArpRepr;
use vipgate_dataplane::wire::ethernet::{EtherType, EthernetRepr};
use vipgate_dataplane::wire::ipv4::Ipv4Repr;
use vipgate_dataplane::wire::ipv6::Ipv6Repr;
use vipgate_dataplane::wire::IpProtocol;

use crate::config::VrrpInstanceConfig;
use vipgate_dataplane::wire::ethernet::EthernetAddress;
use vipgate_dataplane::wire::ndp::{self, NeighborFlags};

/// Longest announcement frame (an NA with its link-layer option is 86).
pub const MAX_FRAME: usize = 128;

/// Longest advert frame: Ethernet, IPv6 and the largest VRRP message.
pub const MAX_ADVERT_FRAME: usize = 14 + 40 + super::wire::MAX_LEN;

/// IP protocol number of VRRP.
const PROTO_VRRP: u8 = 112;
/// TTL / hop limit of every advert (RFC 5798 section 5.1.1.3 / 5.1.2.3).
const VRRP_TTL: u8 = 255;
/// Precedence "internetwork control", as the kernel socket sets it.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

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

/// The frame of a multicast advert `vrrp` (a message from
/// `wire::emit`, checksum included) from `src` to the VRRP group `group`,
/// with Ethernet source `mac`; returns its length. `None` when `group` is
/// not the VRRP group of its family (unicast adverts go through the
/// kernel, which resolves the peer's MAC) or `src` is of the other family.
pub fn advert_frame(
    buf: &mut [u8; MAX_ADVERT_FRAME],
    mac: [u8; 6],
    src: IpAddr,
    group: IpAddr,
    vrrp: &[u8],
) -> Option<usize> {
    let (dst_mac, ethertype, ip_len) = match group {
        IpAddr::V4(g) if g == super::wire::MCAST_V4 => {
            let o = g.octets();
            // RFC 1112 section 6.4: 01-00-5E and the group's low 23 bits.
            let dst = [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]];
            (EthernetAddress(dst), EtherType::Ipv4, 20)
        }
        IpAddr::V6(g) if g == super::wire::MCAST_V6 => {
            (EthernetAddress::from_ipv6_multicast(g), EtherType::Ipv6, 40)
        }
        _ => return None,
    };
    let len = 14 + ip_len + vrrp.len();
    let frame = buf.get_mut(..len)?;
    EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: dst_mac,
        ethertype,
    }
    .emit(frame)
    .ok()?;
    let protocol = IpProtocol::from(PROTO_VRRP);
    match (src, group) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => Ipv4Repr {
            src_addr,
            dst_addr,
            protocol,
            payload_len: vrrp.len(),
            ttl: VRRP_TTL,
            tos: TOS_INTERNETWORK_CONTROL,
            ident: 0,
            dont_frag: false,
        }
        .emit(&mut frame[14..])
        .ok()?,
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => Ipv6Repr {
            src_addr,
            dst_addr,
            next_header: protocol,
            payload_len: vrrp.len(),
            hop_limit: VRRP_TTL,
            traffic_class: TOS_INTERNETWORK_CONTROL,
            flow_label: 0,
        }
        .emit(&mut frame[14..])
        .ok()?,
        _ => return None,
    }
    frame[14 + ip_len..].copy_from_slice(vrrp);
    Some(len)
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

    fn unhex(hex: &str) -> Vec<u8> {
        let hex: String = hex.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex literal"))
            .collect()
    }

    /// The VRRP payloads are keepalived's (tests/fixtures/vrrp/v3_ipv4.txt
    /// and v3_ipv6.txt); the expected frames were decoded with tshark
    /// (text2pcap, `ip.check_checksum:TRUE`): IP header checksum 0x1484
    /// good, VRRP checksums good, source 00:00:5e:00:01:33 / :02:34.
    /// keepalived's own headers differ only in the IPv4 ident (1) and the
    /// IPv6 flow label, which the kernel fills in for it.
    #[test]
    fn adverts_leave_from_the_virtual_mac_as_whole_frames() {
        let mut buf = [0; MAX_ADVERT_FRAME];
        let payload = unhex("31339602006404d1c6120064c6120065");
        let src: IpAddr = "198.18.0.1".parse().expect("literal");
        let group = IpAddr::V4(super::super::wire::MCAST_V4);
        let n = advert_frame(&mut buf, virtual_mac(51, false), src, group, &payload);
        let want = unhex(
            "01005e000012 00005e000133 0800
             45c00024 00000000 ff701484 c6120001 e0000012
             31339602006404d1c6120064c6120065",
        );
        assert_eq!(n, Some(want.len()));
        assert_eq!(&buf[..want.len()], &want[..]);

        let payload = unhex("3134960100640d3320010db8000000000000000000000052");
        let src: IpAddr = "fe80::ff:fe00:a".parse().expect("literal");
        let group = IpAddr::V6(super::super::wire::MCAST_V6);
        let n = advert_frame(&mut buf, virtual_mac(52, true), src, group, &payload);
        let want = unhex(
            "333300000012 00005e000234 86dd
             6c000000 001870ff fe80000000000000000000fffe00000a
             ff020000000000000000000000000012
             3134960100640d3320010db8000000000000000000000052",
        );
        assert_eq!(n, Some(want.len()));
        assert_eq!(&buf[..want.len()], &want[..]);
    }

    /// Unicast adverts and mixed families are not framed here.
    #[test]
    fn only_the_vrrp_group_is_framed() {
        let mut buf = [0; MAX_ADVERT_FRAME];
        let v4: IpAddr = "198.18.0.1".parse().expect("literal");
        let peer: IpAddr = "198.18.0.2".parse().expect("literal");
        let v6: IpAddr = "fe80::1".parse().expect("literal");
        let g4 = IpAddr::V4(super::super::wire::MCAST_V4);
        assert_eq!(advert_frame(&mut buf, MAC, v4, peer, &[0; 16]), None);
        assert_eq!(advert_frame(&mut buf, MAC, v6, g4, &[0; 16]), None);
    }

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(7, true), [0, 0, 0x5e, 0, 2, 7]);
    }
}
