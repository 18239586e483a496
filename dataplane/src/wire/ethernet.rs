//! Ethernet II frames with at most one 802.1Q tag.
//!
//! Owns: MAC addresses, the EtherType, the VLAN tag and where the L3
//! header starts. Must not touch: L3 bytes (other views own them). Frames
//! with two tags (QinQ) show the inner tag's TPID (0x8100) as their
//! EtherType, which callers treat as unknown.

use std::fmt;
use std::str::FromStr;

use super::{enum_with_unknown, read_u16, write_u16, Error, Result};

enum_with_unknown! {
    /// EtherType values this dataplane meets.
    pub enum EtherType(u16) {
        Ipv4 = 0x0800,
        Arp = 0x0806,
        /// An 802.1Q tag follows (C-tag TPID).
        Vlan = 0x8100,
        Ipv6 = 0x86dd,
    }
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// The address in the first six bytes of `bytes`, or `None` when
    /// there are fewer.
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let six: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(EthernetAddress(six))
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (broadcast included).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The MAC an IPv6 multicast group maps to: 33:33 and the group's low
    /// 32 bits (RFC 2464 section 7).
    #[inline]
    pub fn from_ipv6_multicast(group: std::net::Ipv6Addr) -> Self {
        let o = group.octets();
        EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), hex digits in any case.
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or(Error::Malformed)?;
            if part.is_empty() || part.len() > 2 {
                return Err(Error::Malformed);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| Error::Malformed)?;
        }
        match parts.next() {
            None => Ok(EthernetAddress(out)),
            Some(_) => Err(Error::Malformed),
        }
    }
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// A view of an Ethernet II frame (FCS not included).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checks (for emitting into a sized buffer).
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps bytes from the network: the header, and the tag if the
    /// EtherType says one follows, must be present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that accessors cannot panic.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.has_vlan() && len < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// Whether an 802.1Q tag follows the addresses.
    #[inline]
    pub fn has_vlan(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE) == u16::from(EtherType::Vlan)
    }

    /// The tag control information (PCP, DEI, VID) if tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        self.has_vlan()
            .then(|| read_u16(self.buffer.as_ref(), field::TCI))
    }

    /// The 12-bit VLAN ID if tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The EtherType of the payload: the one after the tag when tagged.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(self.ethertype_raw())
    }

    /// [`Self::ethertype`] as the raw value, for a fast compare.
    #[inline]
    pub fn ethertype_raw(&self) -> u16 {
        let at = if self.has_vlan() {
            field::INNER_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        read_u16(self.buffer.as_ref(), at)
    }

    /// Offset of the L3 header: 14, or 18 when tagged.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.has_vlan() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The L3 bytes (may include Ethernet padding: L3 views bound
    /// themselves by their length fields).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType of an untagged frame (raw, for emitting).
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype.into());
    }

    /// Swaps source and destination addresses (to answer in place).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, src) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(src);
        self.set_src_addr(dst);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// The meaning of an Ethernet header, for building untagged frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    /// The payload's EtherType (after the tag, if any, when parsed).
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Self {
        EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Bytes [`Self::emit`] writes.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes an untagged header into the first 14 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let mut frame = EthernetFrame::new_unchecked(header);
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0a]);
    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0b]);

    /// [`ICMPV4_ECHO_REQUEST`] with an 802.1Q tag (PCP 5, VID 100) inserted
    /// after the addresses. Derived, not captured: the capture kernel has
    /// no CONFIG_VLAN_8021Q.
    fn tagged_echo_request() -> Vec<u8> {
        let mut v = ICMPV4_ECHO_REQUEST[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0xa0, 0x64]);
        v.extend_from_slice(&ICMPV4_ECHO_REQUEST[12..]);
        v
    }

    #[test]
    fn parses_captured_untagged_frame() {
        let frame = EthernetFrame::new_checked(&ICMPV4_ECHO_REQUEST[..]).expect("fixture");
        assert_eq!(frame.dst_addr(), MAC_B);
        assert_eq!(frame.src_addr(), MAC_A);
        assert!(!frame.has_vlan());
        assert_eq!(frame.vlan_id(), None);
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload()[0], 0x45);
        let arp = EthernetFrame::new_checked(&ARP_REQUEST[..]).expect("fixture");
        assert_eq!(arp.ethertype(), EtherType::Arp);
        assert!(arp.dst_addr().is_broadcast());
        let v6 = EthernetFrame::new_checked(&NDP_NEIGHBOR_SOLICIT[..]).expect("fixture");
        assert_eq!(v6.ethertype(), EtherType::Ipv6);
        assert!(v6.dst_addr().is_multicast());
    }

    #[test]
    fn parses_tagged_frame() {
        let bytes = tagged_echo_request();
        let frame = EthernetFrame::new_checked(&bytes[..]).expect("tagged");
        assert!(frame.has_vlan());
        assert_eq!(frame.vlan_tci(), Some(0xa064));
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.payload(), &ICMPV4_ECHO_REQUEST[14..]);
    }

    #[test]
    fn rejects_short_frames() {
        assert_eq!(
            EthernetFrame::new_checked(&ICMPV4_ECHO_REQUEST[..13]).err(),
            Some(Error::Truncated)
        );
        let bytes = tagged_echo_request();
        assert_eq!(
            EthernetFrame::new_checked(&bytes[..17]).err(),
            Some(Error::Truncated)
        );
        assert!(EthernetFrame::new_checked(&bytes[..18]).is_ok());
    }

    #[test]
    fn emit_matches_capture_and_swap() {
        let repr = EthernetRepr {
            src_addr: MAC_B,
            dst_addr: MAC_A,
            ethertype: EtherType::Ipv4,
        };
        let mut header = [0u8; 14];
        repr.emit(&mut header).expect("14 bytes");
        assert_eq!(header, ICMPV4_ECHO_REPLY[..14]);
        assert_eq!(repr.emit(&mut [0u8; 13]), Err(Error::BufferTooSmall));

        let mut request = ICMPV4_ECHO_REQUEST;
        let mut frame = EthernetFrame::new_checked(&mut request[..]).expect("fixture");
        frame.swap_addrs();
        assert_eq!(EthernetRepr::parse(&frame), repr);
    }

    #[test]
    fn address_text() {
        assert_eq!(MAC_A.to_string(), "02:00:00:00:00:0a");
        assert_eq!(format!("{:?}", MAC_B), "02:00:00:00:00:0b");
        assert_eq!("02:00:00:00:00:0A".parse(), Ok(MAC_A));
        assert_eq!("02-00-00-00-00-0b".parse(), Ok(MAC_B));
        assert!("02:00:00:00:00".parse::<EthernetAddress>().is_err());
        assert!("02:00:00:00:00:0b:01".parse::<EthernetAddress>().is_err());
        assert!("02:00:00:00:00:0g".parse::<EthernetAddress>().is_err());
        assert!("02:00:00:00::0b".parse::<EthernetAddress>().is_err());
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3]), None);
        let group = "ff02::1:ff00:2".parse().expect("literal");
        assert_eq!(
            EthernetAddress::from_ipv6_multicast(group),
            EthernetAddress::from_bytes(&NDP_NEIGHBOR_SOLICIT[..6]).expect("6 bytes")
        );
    }

    proptest! {
        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(frame) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.vlan_id());
                prop_assert!(frame.payload().len() + frame.header_len() == bytes.len());
            }
        }
    }
}
