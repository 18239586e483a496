//! Neighbor Discovery (RFC 4861): Neighbor Solicitation and Neighbor
//! Advertisement with their link-layer address options, and a builder
//! for whole advertisement frames (the VIP responder's answers and
//! unsolicited announcements).
//!
//! Owns: the NS/NA body layout and options. Must not touch: the neighbour
//! cache, the decision to answer, and the validity checks that need the
//! IPv6 header (RFC 4861 sections 7.1.1 and 7.1.2: hop limit 255, the
//! ICMPv6 checksum, no source link-layer option from the unspecified
//! address, no solicited flag to a multicast destination): those are the
//! caller's, which has the IPv6 header.

use std::net::Ipv6Addr;
use std::ops::BitOr;

use super::ethernet::{self, EtherType, EthernetAddress, EthernetRepr};
use super::icmpv6::{Icmpv6Message, Icmpv6Packet};
use super::ipv6::{self, Ipv6Repr};
use super::{Error, IpProtocol, Result};

/// Length of an NS or NA body without options (ICMPv6 header, flags or
/// reserved word, target address).
pub const MESSAGE_LEN: usize = 24;

/// Length of an Ethernet link-layer address option.
pub const LL_OPTION_LEN: usize = 8;

/// Option type: source link-layer address.
pub const OPTION_SOURCE_LL: u8 = 1;
/// Option type: target link-layer address.
pub const OPTION_TARGET_LL: u8 = 2;

/// Hop limit of every NDP packet (RFC 4861 section 7.1).
pub const HOP_LIMIT: u8 = 255;

const TARGET: core::ops::Range<usize> = 8..24;
const FLAGS: usize = 4;

/// The flags of a Neighbor Advertisement (first byte of its first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighborFlags(pub u8);

impl NeighborFlags {
    pub const ROUTER: NeighborFlags = NeighborFlags(0x80);
    pub const SOLICITED: NeighborFlags = NeighborFlags(0x40);
    pub const OVERRIDE: NeighborFlags = NeighborFlags(0x20);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: NeighborFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for NeighborFlags {
    type Output = NeighborFlags;
    fn bitor(self, rhs: NeighborFlags) -> NeighborFlags {
        NeighborFlags(self.0 | rhs.0)
    }
}

/// A Neighbor Solicitation or Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpRepr {
    NeighborSolicit {
        target_addr: Ipv6Addr,
        source_ll_addr: Option<EthernetAddress>,
    },
    NeighborAdvert {
        flags: NeighborFlags,
        target_addr: Ipv6Addr,
        target_ll_addr: Option<EthernetAddress>,
    },
}

impl NdpRepr {
    /// Parses an NS or NA message. [`Error::Unsupported`] for other types,
    /// [`Error::Malformed`] for a non-zero code, a multicast target or an
    /// option of length 0, [`Error::Truncated`] for a short body or an
    /// option past the end. Unknown options are skipped. The checksum and
    /// hop limit are not checked: see the module doc.
    pub fn parse<T: AsRef<[u8]>>(icmp: &Icmpv6Packet<T>) -> Result<Self> {
        let msg = icmp.msg_type();
        if !matches!(
            msg,
            Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert
        ) {
            return Err(Error::Unsupported);
        }
        if icmp.msg_code() != 0 {
            return Err(Error::Malformed);
        }
        let bytes = icmp.as_bytes();
        let body = bytes.get(..MESSAGE_LEN).ok_or(Error::Truncated)?;
        let mut target = [0u8; 16];
        target.copy_from_slice(&body[TARGET]);
        let target_addr = Ipv6Addr::from(target);
        if target_addr.is_multicast() {
            return Err(Error::Malformed);
        }
        if msg == Icmpv6Message::NeighborSolicit {
            let source_ll_addr = find_ll_option(&bytes[MESSAGE_LEN..], OPTION_SOURCE_LL)?;
            return Ok(NdpRepr::NeighborSolicit {
                target_addr,
                source_ll_addr,
            });
        }
        Ok(NdpRepr::NeighborAdvert {
            flags: NeighborFlags(body[FLAGS] & 0xe0),
            target_addr,
            target_ll_addr: find_ll_option(&bytes[MESSAGE_LEN..], OPTION_TARGET_LL)?,
        })
    }

    /// [`Self::parse`] for a solicitation: its target and source
    /// link-layer address; [`Error::Unsupported`] for anything else. The
    /// caller checks the hop limit (255) and the checksum.
    pub fn parse_solicit(
        icmp: &Icmpv6Packet<&[u8]>,
    ) -> Result<(Ipv6Addr, Option<EthernetAddress>)> {
        match Self::parse(icmp)? {
            NdpRepr::NeighborSolicit {
                target_addr,
                source_ll_addr,
            } => Ok((target_addr, source_ll_addr)),
            NdpRepr::NeighborAdvert { .. } => Err(Error::Unsupported),
        }
    }

    fn ll_addr(&self) -> Option<EthernetAddress> {
        match *self {
            NdpRepr::NeighborSolicit { source_ll_addr, .. } => source_ll_addr,
            NdpRepr::NeighborAdvert { target_ll_addr, .. } => target_ll_addr,
        }
    }

    /// Length of the ICMPv6 message [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        MESSAGE_LEN + self.ll_addr().map_or(0, |_| LL_OPTION_LEN)
    }

    /// Writes the ICMPv6 message (header, body, link-layer option) into
    /// the start of `buf` with a zero checksum, and returns its length.
    /// Follow with `Icmpv6Packet::fill_checksum`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let bytes = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        bytes.fill(0);
        let (msg, flags, target, option) = match *self {
            NdpRepr::NeighborSolicit { target_addr, .. } => (
                Icmpv6Message::NeighborSolicit,
                0,
                target_addr,
                OPTION_SOURCE_LL,
            ),
            NdpRepr::NeighborAdvert {
                flags, target_addr, ..
            } => (
                Icmpv6Message::NeighborAdvert,
                flags.0,
                target_addr,
                OPTION_TARGET_LL,
            ),
        };
        bytes[0] = msg.into();
        bytes[FLAGS] = flags;
        bytes[TARGET].copy_from_slice(&target.octets());
        if let Some(mac) = self.ll_addr() {
            let opt = &mut bytes[MESSAGE_LEN..];
            opt[0] = option;
            opt[1] = 1;
            opt[2..8].copy_from_slice(&mac.0);
        }
        Ok(len)
    }
}

/// The Ethernet address in the first option of type `kind` in `options`.
fn find_ll_option(mut options: &[u8], kind: u8) -> Result<Option<EthernetAddress>> {
    let mut found = None;
    while !options.is_empty() {
        let header = options.get(..2).ok_or(Error::Truncated)?;
        let len = usize::from(header[1]) * 8;
        if len == 0 {
            return Err(Error::Malformed);
        }
        let option = options.get(..len).ok_or(Error::Truncated)?;
        if header[0] == kind && found.is_none() {
            found = EthernetAddress::from_bytes(&option[2..]);
        }
        options = &options[len..];
    }
    Ok(found)
}

/// Writes a whole Neighbor Advertisement frame: Ethernet from `src_mac`
/// to `dst_mac`, IPv6 from `src_ip` to `dst_ip` with hop limit 255, and
/// the advertisement of `target` with `flags` and a target link-layer
/// address option of `src_mac`, checksum filled. Returns the frame
/// length (86). For a solicited answer: `dst_ip`/`dst_mac` are the
/// solicitor's and `flags` include SOLICITED (unless the solicitation came
/// from `::`, then `dst_ip` is ff02::1, RFC 4861 section 7.2.4); for an
/// unsolicited announcement: ff02::1 and 33:33:00:00:00:01, OVERRIDE.
pub fn emit_neighbor_advert_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    target: Ipv6Addr,
    flags: NeighborFlags,
) -> Result<usize> {
    let advert = NdpRepr::NeighborAdvert {
        flags,
        target_addr: target,
        target_ll_addr: Some(src_mac),
    };
    let icmp_at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let len = icmp_at + advert.buffer_len();
    let frame = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    let eth = EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::Ipv6,
    };
    eth.emit(frame)?;
    let ip = Ipv6Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Icmpv6,
        payload_len: advert.buffer_len(),
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    ip.emit(&mut frame[ethernet::HEADER_LEN..])?;
    advert.emit(&mut frame[icmp_at..])?;
    let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[icmp_at..]);
    icmp.fill_checksum(src_ip, dst_ip);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::ipv6::Ipv6Packet;
    use super::*;
    use proptest::prelude::*;

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0a]);
    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0b]);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    fn icmp(frame: &[u8]) -> Icmpv6Packet<&[u8]> {
        Icmpv6Packet::new_checked(&frame[54..]).expect("fixture")
    }

    #[test]
    fn parses_captured_solicit() {
        let ip = Ipv6Packet::new_checked(&NDP_NEIGHBOR_SOLICIT[14..]).expect("fixture");
        assert_eq!(ip.hop_limit(), HOP_LIMIT);
        let packet = icmp(&NDP_NEIGHBOR_SOLICIT);
        assert!(packet.verify_checksum(ip.src_addr(), ip.dst_addr()));
        let repr = NdpRepr::parse(&packet).expect("fixture");
        assert_eq!(
            repr,
            NdpRepr::NeighborSolicit {
                target_addr: v6("2001:db8::2"),
                source_ll_addr: Some(MAC_A),
            }
        );
        assert_eq!(
            NdpRepr::parse_solicit(&packet),
            Ok((v6("2001:db8::2"), Some(MAC_A)))
        );
        let mut buf = [0u8; 32];
        assert_eq!(repr.emit(&mut buf), Ok(32));
        let mut built = Icmpv6Packet::new_unchecked(&mut buf[..]);
        built.fill_checksum(ip.src_addr(), ip.dst_addr());
        assert_eq!(&buf[..], &NDP_NEIGHBOR_SOLICIT[54..]);
    }

    #[test]
    fn parses_captured_adverts() {
        let repr = NdpRepr::parse(&icmp(&NDP_NEIGHBOR_ADVERT)).expect("fixture");
        let all = NeighborFlags::ROUTER | NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE;
        assert_eq!(
            repr,
            NdpRepr::NeighborAdvert {
                flags: all,
                target_addr: v6("2001:db8::2"),
                target_ll_addr: Some(MAC_B),
            }
        );
        assert_eq!(
            NdpRepr::parse_solicit(&icmp(&NDP_NEIGHBOR_ADVERT)),
            Err(Error::Unsupported)
        );
        let unsolicited = NdpRepr::parse(&icmp(&NDP_UNSOLICITED_ADVERT)).expect("fixture");
        let NdpRepr::NeighborAdvert { flags, .. } = unsolicited else {
            panic!("an advertisement");
        };
        assert!(
            flags.contains(NeighborFlags::OVERRIDE) && !flags.contains(NeighborFlags::SOLICITED)
        );
    }

    #[test]
    fn advert_frame_is_byte_identical_to_kernel() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let flags = NeighborFlags::ROUTER | NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE;
        let mut buf = [0u8; 100];
        let len = emit_neighbor_advert_frame(&mut buf, MAC_B, MAC_A, b, a, b, flags).expect("room");
        assert_eq!(&buf[..len], &NDP_NEIGHBOR_ADVERT[..]);

        let new_mac = EthernetAddress([2, 0, 0, 0, 0, 0x0e]);
        let all_nodes = v6("ff02::1");
        let group_mac = EthernetAddress::from_ipv6_multicast(all_nodes);
        let flags = NeighborFlags::ROUTER | NeighborFlags::OVERRIDE;
        let len = emit_neighbor_advert_frame(&mut buf, new_mac, group_mac, b, all_nodes, b, flags)
            .expect("room");
        assert_eq!(&buf[..len], &NDP_UNSOLICITED_ADVERT[..]);
        assert_eq!(
            emit_neighbor_advert_frame(&mut buf[..85], new_mac, group_mac, b, all_nodes, b, flags),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn rejects_bad_messages() {
        let parse =
            |bytes: &[u8]| NdpRepr::parse(&Icmpv6Packet::new_checked(bytes).expect("8 bytes"));
        let ns = &NDP_NEIGHBOR_SOLICIT[54..];
        assert_eq!(parse(&ns[..23]), Err(Error::Truncated));
        assert_eq!(
            parse(&ns[..24]).map(|r| r.buffer_len()),
            Ok(MESSAGE_LEN),
            "no options"
        );
        assert_eq!(parse(&ns[..26]), Err(Error::Truncated), "option cut");
        let mut zero_len = ns.to_vec();
        zero_len[25] = 0;
        assert_eq!(parse(&zero_len), Err(Error::Malformed));
        let mut code = ns.to_vec();
        code[1] = 1;
        assert_eq!(parse(&code), Err(Error::Malformed));
        let mut group = ns.to_vec();
        group[8] = 0xff;
        assert_eq!(parse(&group), Err(Error::Malformed));
        assert_eq!(parse(&ICMPV6_ECHO_REQUEST[54..]), Err(Error::Unsupported));
        // An unknown option before the source link-layer address is skipped.
        let mut unknown = ns[..24].to_vec();
        unknown.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
        unknown.extend_from_slice(&ns[24..]);
        assert_eq!(
            NdpRepr::parse_solicit(&Icmpv6Packet::new_checked(&unknown[..]).expect("len"))
                .map(|r| r.1),
            Ok(Some(MAC_A))
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(kind in prop_oneof![Just(135u8), Just(136u8)], rest in proptest::collection::vec(any::<u8>(), 7..80)) {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&rest);
            let packet = Icmpv6Packet::new_checked(&bytes[..]).expect("8 bytes");
            if let Ok(repr) = NdpRepr::parse(&packet) {
                let mut buf = [0u8; 32];
                let len = repr.emit(&mut buf).expect("fits");
                let again = NdpRepr::parse(&Icmpv6Packet::new_checked(&buf[..len]).expect("len"));
                prop_assert_eq!(again, Ok(repr));
            }
        }
    }
}
