//! IPv4 headers (RFC 791).
//!
//! Owns: the IPv4 header layout, its checksum, fragment fields, and
//! [`Ipv4Repr`] for building option-less headers. Must not touch: the
//! payload's own checksum (an L4 view's job; see
//! `TcpPacket::adjust_checksum_for_address`) and reassembly.

use std::net::Ipv4Addr;

use super::{read_u16, write_u16, Error, IpProtocol, Result};
use crate::checksum;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet. After [`Self::new_checked`], the buffer holds
/// the whole header and at least `total_len` bytes; bytes past
/// `total_len` (Ethernet padding) are outside [`Self::payload`].
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps bytes from the network. Rejects version != 4 and IHL < 5
    /// ([`Error::Malformed`]), total length below the header length
    /// ([`Error::Malformed`]), and a buffer shorter than the header or the
    /// total length ([`Error::Truncated`]). The checksum is not verified
    /// here: see [`Self::verify_checksum`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 || self.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        // total <= len and header_len <= total, so the header is inside.
        let total = usize::from(self.total_len());
        if total > len {
            return Err(Error::Truncated);
        }
        if total < self.header_len() {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, padding included.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Whether the header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }

    /// The option bytes (empty without options).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The whole TOS byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_and_offset() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field times 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & OFFSET_MASK) << 3
    }

    /// Part of a fragmented datagram: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Offset zero: the L4 header is here (fragmented or not).
    #[inline]
    pub fn is_first_fragment(&self) -> bool {
        self.flags_and_offset() & OFFSET_MASK == 0
    }

    #[inline]
    fn flags_and_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.protocol_raw())
    }

    /// [`Self::protocol`] as the raw number.
    #[inline]
    pub fn protocol_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        let len = self.header_len();
        // The common header without options, summed at a fixed length
        // (unrolled, no loop).
        if let (HEADER_LEN, Some(header)) = (len, b.get(..HEADER_LEN)) {
            return checksum::sum(header) == 0xffff;
        }
        checksum::sum(&b[..len]) == 0xffff
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// The L4 bytes: from the header end to `total_len`, bounded by the
    /// buffer (so it never panics, even on an unchecked view of a header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        let start = self.header_len().min(end);
        &b[start..end]
    }

    /// The pseudo-header sum for this packet's payload (RFC 768/793),
    /// with the payload length `len`.
    #[inline]
    pub fn pseudo_header_sum(&self, len: usize) -> u16 {
        checksum::pseudo_header_v4(
            self.src_addr(),
            self.dst_addr(),
            self.protocol_raw(),
            len as u32,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Rewrites the source address and updates the header checksum
    /// incrementally. The L4 checksum is the caller's (see
    /// `TcpPacket::adjust_checksum_for_address`).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.src_addr());
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
        self.update_checksum32(old, u32::from(addr));
    }

    /// Rewrites the destination address; like [`Self::set_src_addr`].
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.dst_addr());
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
        self.update_checksum32(old, u32::from(addr));
    }

    /// Sets the TTL and updates the header checksum incrementally.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = read_u16(self.buffer.as_ref(), field::TTL);
        self.buffer.as_mut()[field::TTL] = ttl;
        let new = read_u16(self.buffer.as_ref(), field::TTL);
        let csum = checksum::update16(self.header_checksum(), old, new);
        self.set_header_checksum(csum);
    }

    /// Swaps source and destination; the checksum stays valid (the sum
    /// does not depend on word order).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let b = self.buffer.as_mut();
        for i in 0..4 {
            b.swap(field::SRC.start + i, field::DST.start + i);
        }
    }

    #[inline]
    fn update_checksum32(&mut self, old: u32, new: u32) {
        let csum = checksum::update32(self.header_checksum(), old, new);
        self.set_header_checksum(csum);
    }

    /// Raw: version 4 and the header length in bytes (a multiple of 4).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    /// Raw setter (no checksum update).
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Raw setter (no checksum update).
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Raw setter (no checksum update).
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Raw: DF, MF and the offset in bytes (a multiple of 8).
    #[inline]
    pub fn set_flags_and_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut value = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            value |= FLAG_DF;
        }
        if more_frags {
            value |= FLAG_MF;
        }
        write_u16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    /// Raw setter (no checksum update).
    #[inline]
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    #[inline]
    pub fn set_header_checksum(&mut self, csum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, csum);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_header_checksum(0);
        let len = self.header_len();
        let csum = checksum::checksum(&self.buffer.as_ref()[..len]);
        self.set_header_checksum(csum);
    }

    /// The L4 bytes, bounded like [`Self::payload`].
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The meaning of an option-less IPv4 header, for building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    /// Length of the L4 bytes that follow the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Reads the header fields of a checked packet (options and fragment
    /// offset are not represented; the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        }
    }

    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with its checksum into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let total = HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| Error::Malformed)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.set_header_len(HEADER_LEN);
        packet.set_tos(self.tos);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.set_flags_and_offset(self.dont_frag, false, 0);
        packet.buffer[field::TTL] = self.ttl;
        packet.set_protocol(self.protocol);
        packet.buffer[field::SRC].copy_from_slice(&self.src_addr.octets());
        packet.buffer[field::DST].copy_from_slice(&self.dst_addr.octets());
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn parses_captured_echo_request() {
        let packet = Ipv4Packet::new_checked(&ICMPV4_ECHO_REQUEST[14..]).expect("fixture");
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert!(!packet.has_options());
        assert_eq!(packet.tos(), 0);
        assert_eq!(packet.total_len(), 52);
        assert_eq!(packet.ident(), 0xcd6a);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert!(!packet.is_fragment());
        assert!(packet.is_first_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Icmp);
        assert_eq!(packet.header_checksum(), 0xe136);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), IP_A);
        assert_eq!(packet.dst_addr(), IP_B);
        assert_eq!(packet.payload().len(), 32);
        assert_eq!(packet.payload()[0], 8);
    }

    #[test]
    fn captured_last_fragment() {
        let packet = Ipv4Packet::new_checked(&IPV4_LAST_FRAGMENT[14..]).expect("fixture");
        assert!(packet.is_fragment());
        assert!(!packet.is_first_fragment());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 1256);
        assert_eq!(packet.total_len(), 32);
        assert!(packet.verify_checksum());
        // A first fragment: MF set, offset 0.
        let mut first = IPV4_LAST_FRAGMENT;
        let mut packet = Ipv4Packet::new_checked(&mut first[14..]).expect("fixture");
        packet.set_flags_and_offset(false, true, 0);
        assert!(packet.is_fragment());
        assert!(packet.is_first_fragment());
        assert!(packet.more_frags());
    }

    #[test]
    fn payload_excludes_ethernet_padding() {
        // The RST is 54 bytes: 40 of IP in a frame the NIC would pad to 60.
        let mut padded = TCPV4_RST_ACK.to_vec();
        padded.extend_from_slice(&[0xee; 6]);
        let packet = Ipv4Packet::new_checked(&padded[14..]).expect("padded");
        assert_eq!(packet.payload(), &TCPV4_RST_ACK[34..]);
    }

    #[test]
    fn rejects_bad_headers() {
        let ip = &ICMPV4_ECHO_REQUEST[14..];
        let check = |bytes: &[u8]| Ipv4Packet::new_checked(bytes).err();
        assert_eq!(check(&ip[..19]), Some(Error::Truncated));
        assert_eq!(
            check(&ip[..51]),
            Some(Error::Truncated),
            "total_len > buffer"
        );
        let mut v6 = ip.to_vec();
        v6[0] = 0x65;
        assert_eq!(check(&v6), Some(Error::Malformed), "version");
        let mut short_ihl = ip.to_vec();
        short_ihl[0] = 0x44;
        assert_eq!(check(&short_ihl), Some(Error::Malformed), "ihl < 5");
        let mut long_ihl = ip.to_vec();
        long_ihl[0] = 0x4f; // 60-byte header in a 52-byte packet
        assert_eq!(
            check(&long_ihl),
            Some(Error::Malformed),
            "total_len < header"
        );
        assert_eq!(
            check(&long_ihl[..40]),
            Some(Error::Truncated),
            "header > buffer"
        );
        let mut small_total = ip.to_vec();
        small_total[3] = 19;
        assert_eq!(check(&small_total), Some(Error::Malformed));
    }

    #[test]
    fn options_are_recognised() {
        // The echo request with a 4-byte Router Alert option appended to
        // the header (derived from the capture).
        let ip = &ICMPV4_ECHO_REQUEST[14..];
        let mut bytes = vec![0x46];
        bytes.extend_from_slice(&ip[1..20]);
        bytes.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        bytes.extend_from_slice(&ip[20..]);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_total_len(56);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).expect("valid");
        assert!(packet.has_options());
        assert_eq!(packet.options(), &[0x94, 0x04, 0, 0]);
        assert_eq!(packet.payload(), &ip[20..]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn nat_setters_keep_checksum() {
        let mut bytes = ICMPV4_ECHO_REQUEST;
        let mut packet = Ipv4Packet::new_checked(&mut bytes[14..]).expect("fixture");
        packet.set_dst_addr(Ipv4Addr::new(198, 19, 255, 254));
        assert!(packet.verify_checksum());
        packet.set_src_addr(Ipv4Addr::new(198, 18, 7, 9));
        assert!(packet.verify_checksum());
        packet.set_ttl(63);
        assert!(packet.verify_checksum());
        assert_eq!(packet.ttl(), 63);
        let incremental = packet.header_checksum();
        packet.fill_checksum();
        assert_eq!(packet.header_checksum(), incremental);
        packet.swap_addrs();
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(198, 19, 255, 254));
    }

    #[test]
    fn repr_emit_matches_capture() {
        // R's echo reply header: tos 0, ident 0xd33f, no DF, ttl 64.
        let packet = Ipv4Packet::new_checked(&ICMPV4_ECHO_REPLY[14..]).expect("fixture");
        let repr = Ipv4Repr::parse(&packet);
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: IP_B,
                dst_addr: IP_A,
                protocol: IpProtocol::Icmp,
                payload_len: 32,
                ttl: 64,
                tos: 0,
                ident: 0xd33f,
                dont_frag: false,
            }
        );
        let mut header = [0u8; 20];
        repr.emit(&mut header).expect("room");
        assert_eq!(header, ICMPV4_ECHO_REPLY[14..34]);
        assert_eq!(repr.emit(&mut [0u8; 19]), Err(Error::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.verify_checksum(), packet.frag_offset());
                prop_assert!(packet.payload().len() + packet.header_len() == usize::from(packet.total_len()));
            }
        }

        #[test]
        fn set_addr_equals_recompute(src in any::<u32>(), dst in any::<u32>(), ttl in any::<u8>()) {
            let mut bytes = ICMPV4_TIME_EXCEEDED;
            let mut packet = Ipv4Packet::new_checked(&mut bytes[14..]).expect("fixture");
            packet.set_src_addr(Ipv4Addr::from(src));
            packet.set_dst_addr(Ipv4Addr::from(dst));
            packet.set_ttl(ttl);
            let incremental = packet.header_checksum();
            packet.fill_checksum();
            prop_assert_eq!(incremental, packet.header_checksum());
        }
    }
}
