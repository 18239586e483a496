//! UDP datagram headers (RFC 768; over IPv6, RFC 8200 section 8.1).
//!
//! Owns: the UDP header layout and its checksum, including the two UDP
//! rules (a computed 0 is sent as `0xffff`; over IPv4 a stored 0 means "no
//! checksum" and stays 0 through NAT). Must not touch: the IP header, and
//! the decision whether a zero checksum is acceptable (IPv4 only: the
//! caller's, which knows the IP version).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{read_u16, write_u16, Error, IpProtocol, Result};
use crate::checksum;

/// Length of the header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram. After [`Self::new_checked`], the buffer holds
/// at least the header and the `len` bytes the length field announces;
/// [`Self::payload`] and the checksum stop at `len`.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps bytes from the network: 8 bytes at least
    /// ([`Error::Truncated`]), a length field of 8 or more
    /// ([`Error::Malformed`]) and within the buffer ([`Error::Truncated`]).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload (clippy's
    /// companion of [`Self::len`]).
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The stored checksum; 0 means "not computed" (allowed over IPv4
    /// only).
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The datagram bytes covered by the checksum: up to the length field,
    /// bounded by the buffer.
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).min(b.len())]
    }

    /// The bytes after the header, up to the length field.
    pub fn payload(&self) -> &[u8] {
        let datagram = self.datagram();
        &datagram[HEADER_LEN.min(datagram.len())..]
    }

    /// Whether the checksum is right, given the pseudo-header sum (for
    /// the length [`Self::len`]). A stored 0 ("no checksum") is not
    /// special-cased here: over IPv4 the caller accepts `checksum() == 0`
    /// before calling this; over IPv6 a 0 is an error (RFC 8200 8.1).
    pub fn verify_checksum_with(&self, pseudo_header_sum: u16) -> bool {
        checksum::combine(&[pseudo_header_sum, checksum::sum(self.datagram())]) == 0xffff
    }

    /// [`Self::verify_checksum_with`] the IPv4 pseudo-header; true for a
    /// zero ("no checksum") field.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || self.verify_checksum_with(pseudo_v4(src, dst, self.len()))
    }

    /// [`Self::verify_checksum_with`] the IPv6 pseudo-header; false for a
    /// zero field (mandatory over IPv6).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.checksum() != 0 && self.verify_checksum_with(pseudo_v6(src, dst, self.len()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Rewrites the source port and updates the checksum incrementally
    /// (a zero checksum stays zero).
    pub fn set_src_port(&mut self, port: u16) {
        self.rewrite16(field::SRC_PORT, port);
    }

    /// Rewrites the destination port; like [`Self::set_src_port`].
    pub fn set_dst_port(&mut self, port: u16) {
        self.rewrite16(field::DST_PORT, port);
    }

    fn rewrite16(&mut self, at: usize, value: u16) {
        let old = read_u16(self.buffer.as_ref(), at);
        write_u16(self.buffer.as_mut(), at, value);
        self.set_checksum(checksum::udp_update16(self.checksum(), old, value));
    }

    /// Updates the checksum for an address change in the pseudo-header
    /// (`old` and `new` both 4 or both 16 bytes), after the IP layer
    /// rewrote the address. A zero checksum stays zero.
    pub fn adjust_checksum_for_address(&mut self, old: &[u8], new: &[u8]) {
        self.set_checksum(checksum::udp_update_addr(self.checksum(), old, new));
    }

    /// Raw setter (no checksum update).
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the datagram (up to the
    /// length field); a computed 0 is stored as `0xffff`.
    pub fn fill_checksum_with(&mut self, pseudo_header_sum: u16) {
        self.set_checksum(0);
        let data = checksum::sum(self.datagram());
        let csum = !checksum::combine(&[pseudo_header_sum, data]);
        self.set_checksum(checksum::udp_finish(csum));
    }

    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_checksum_with(pseudo_v4(src, dst, self.len()));
    }

    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.fill_checksum_with(pseudo_v6(src, dst, self.len()));
    }

    /// The bytes after the header, up to the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len()).min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: u16) -> u16 {
    checksum::pseudo_header_v4(src, dst, IpProtocol::Udp.into(), u32::from(len))
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, len: u16) -> u16 {
    checksum::pseudo_header_v6(src, dst, IpProtocol::Udp.into(), u32::from(len))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::ipv4::Ipv4Packet;
    use super::super::ipv6::Ipv6Packet;
    use super::*;
    use proptest::prelude::*;

    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    #[test]
    fn parses_captured_v4_datagram() {
        let ip = Ipv4Packet::new_checked(&UDPV4[14..]).expect("fixture");
        let udp = UdpPacket::new_checked(ip.payload()).expect("fixture");
        assert_eq!(udp.src_port(), 0xe86b);
        assert_eq!(udp.dst_port(), 9);
        assert_eq!(udp.len(), 16);
        assert!(!udp.is_empty());
        assert_eq!(udp.checksum(), 0xdde1);
        assert_eq!(udp.payload(), b"vipgate\n");
        assert!(udp.verify_checksum_with(ip.pseudo_header_sum(16)));
        assert!(udp.verify_checksum_v4(IP_A, IP_B));
        assert!(!udp.verify_checksum_v4(IP_A, Ipv4Addr::new(198, 18, 0, 3)));
    }

    #[test]
    fn parses_captured_v6_datagram() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let ip = Ipv6Packet::new_checked(&UDPV6[14..]).expect("fixture");
        let udp = UdpPacket::new_checked(ip.payload()).expect("fixture");
        assert_eq!(udp.src_port(), 0xbcf8);
        assert_eq!(udp.dst_port(), 9);
        assert_eq!(udp.payload(), b"vipgate\n");
        assert!(udp.verify_checksum_v6(a, b));
        assert!(udp.verify_checksum_with(ip.pseudo_header_sum(IpProtocol::Udp, 16)));
        let mut zero = UDPV6[54..].to_vec();
        zero[6..8].fill(0);
        let udp = UdpPacket::new_checked(&zero[..]).expect("length ok");
        assert!(!udp.verify_checksum_v6(a, b), "zero is invalid over IPv6");
    }

    #[test]
    fn rejects_bad_lengths() {
        let dgram = &UDPV4[34..];
        let check = |b: &[u8]| UdpPacket::new_checked(b).err();
        assert_eq!(check(&dgram[..7]), Some(Error::Truncated));
        assert_eq!(check(&dgram[..15]), Some(Error::Truncated), "len > buffer");
        let mut short = dgram.to_vec();
        short[5] = 7;
        assert_eq!(check(&short), Some(Error::Malformed));
        // Bytes beyond the length field (trailer) are outside the payload
        // and the checksum.
        let mut long = dgram.to_vec();
        long.extend_from_slice(&[0xab; 5]);
        let udp = UdpPacket::new_checked(&long[..]).expect("trailer ok");
        assert_eq!(udp.payload(), b"vipgate\n");
        assert!(udp.verify_checksum_v4(IP_A, IP_B));
    }

    #[test]
    fn zero_checksum_rules() {
        let mut dgram = UDPV4[34..].to_vec();
        dgram[6..8].fill(0);
        let mut udp = UdpPacket::new_checked(&mut dgram[..]).expect("fixture");
        assert!(udp.verify_checksum_v4(IP_A, IP_B), "no checksum over IPv4");
        udp.set_dst_port(8080);
        udp.adjust_checksum_for_address(&IP_B.octets(), &[198, 18, 1, 2]);
        assert_eq!(udp.checksum(), 0, "none stays none");
        assert_eq!(udp.dst_port(), 8080);
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the payload's last word so that the checksum comes out 0.
        let mut dgram = UDPV4[34..].to_vec();
        dgram[14..16].fill(0);
        let mut udp = UdpPacket::new_checked(&mut dgram[..]).expect("fixture");
        udp.fill_checksum_v4(IP_A, IP_B);
        // Adding the checksum value to the last word makes the sum 0xffff
        // with a checksum of 0.
        let fix = udp.checksum();
        write_u16(udp.payload_mut(), 6, fix);
        udp.fill_checksum_v4(IP_A, IP_B);
        assert_eq!(udp.checksum(), 0xffff);
        assert!(udp.verify_checksum_v4(IP_A, IP_B));
        // An incremental update landing on 0 also stores 0xffff.
        let old = udp.src_port();
        udp.set_src_port(old.wrapping_add(1));
        udp.set_src_port(old);
        assert_eq!(udp.checksum(), 0xffff);
    }

    #[test]
    fn build_and_fill_matches_capture() {
        let mut dgram = [0u8; 16];
        let mut udp = UdpPacket::new_unchecked(&mut dgram[..]);
        udp.set_src_port(0xe86b);
        udp.set_dst_port(9);
        udp.set_len(16);
        udp.payload_mut().copy_from_slice(b"vipgate\n");
        udp.fill_checksum_v4(IP_A, IP_B);
        assert_eq!(&dgram[..], &UDPV4[34..]);
    }

    proptest! {
        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(udp) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (udp.src_port(), udp.dst_port(), udp.checksum(), udp.verify_checksum_v4(IP_A, IP_B));
                prop_assert_eq!(udp.payload().len() + HEADER_LEN, usize::from(udp.len()));
            }
        }

        #[test]
        fn rewrites_equal_recompute(sport in any::<u16>(), dport in any::<u16>(), a4 in any::<u32>(), a6 in any::<[u8; 16]>()) {
            let new4 = Ipv4Addr::from(a4);
            let mut dgram = UDPV4[34..].to_vec();
            let mut udp = UdpPacket::new_checked(&mut dgram[..]).expect("fixture");
            udp.set_src_port(sport);
            udp.set_dst_port(dport);
            udp.adjust_checksum_for_address(&IP_B.octets(), &new4.octets());
            prop_assert!(udp.verify_checksum_v4(IP_A, new4));
            let incremental = udp.checksum();
            udp.fill_checksum_v4(IP_A, new4);
            prop_assert_eq!(incremental, udp.checksum());

            let (a, new6) = (v6("2001:db8::1"), Ipv6Addr::from(a6));
            let mut dgram = UDPV6[54..].to_vec();
            let mut udp = UdpPacket::new_checked(&mut dgram[..]).expect("fixture");
            udp.set_dst_port(dport);
            udp.adjust_checksum_for_address(&v6("2001:db8::2").octets(), &new6.octets());
            prop_assert!(udp.verify_checksum_v6(a, new6));
            let incremental = udp.checksum();
            udp.fill_checksum_v6(a, new6);
            prop_assert_eq!(incremental, udp.checksum());
        }
    }
}
