//! TCP segment headers (RFC 9293).
//!
//! Owns: the TCP header layout, its flags and its checksum (with the
//! pseudo-header of either IP version). Must not touch: connection state
//! (the connection table's) and the IP header.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::BitOr;

use super::{read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result};
use crate::checksum;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// The eight TCP flag bits (byte 13 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// A view of a TCP segment. The buffer must be exactly the segment (the IP
/// payload): the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps bytes from the network: 20 bytes at least, a data offset of 5
    /// or more ([`Error::Malformed`]) and within the buffer
    /// ([`Error::Truncated`]).
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
        if self.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if self.header_len() > len {
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

    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }

    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }

    pub fn ece(&self) -> bool {
        self.flags().contains(TcpFlags::ECE)
    }

    pub fn cwr(&self) -> bool {
        self.flags().contains(TcpFlags::CWR)
    }

    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The option bytes (empty without options).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Length of the whole segment (for the pseudo-header).
    pub fn segment_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Whether the checksum is right, given the pseudo-header sum (from
    /// `Ipv4Packet::pseudo_header_sum(len)` or the `checksum` module).
    pub fn verify_checksum_with(&self, pseudo_header: u16) -> bool {
        checksum::combine(&[pseudo_header, checksum::sum(self.buffer.as_ref())]) == 0xffff
    }

    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.verify_checksum_with(pseudo_v4(src, dst, self.segment_len()))
    }

    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.verify_checksum_with(pseudo_v6(src, dst, self.segment_len()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Rewrites the source port and updates the checksum incrementally.
    pub fn set_src_port(&mut self, port: u16) {
        self.rewrite16(field::SRC_PORT, port);
    }

    /// Rewrites the destination port and updates the checksum
    /// incrementally.
    pub fn set_dst_port(&mut self, port: u16) {
        self.rewrite16(field::DST_PORT, port);
    }

    fn rewrite16(&mut self, at: usize, value: u16) {
        let old = read_u16(self.buffer.as_ref(), at);
        write_u16(self.buffer.as_mut(), at, value);
        self.set_checksum(checksum::update16(self.checksum(), old, value));
    }

    /// Updates the checksum for an address change in the pseudo-header
    /// (`old` and `new` both 4 or both 16 bytes), after the IP layer
    /// rewrote the address.
    pub fn adjust_checksum_for_address(&mut self, old: &[u8], new: &[u8]) {
        self.set_checksum(checksum::update_addr(self.checksum(), old, new));
    }

    /// Raw setter (no checksum update).
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Raw setter (no checksum update).
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Raw: header length in bytes (a multiple of 4).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFFSET] = ((len / 4) as u8) << 4;
    }

    /// Raw setter (no checksum update).
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Raw setter (no checksum update).
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, value);
    }

    /// Raw setter (no checksum update).
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the whole segment.
    pub fn fill_checksum_with(&mut self, pseudo_header: u16) {
        self.set_checksum(0);
        let data = checksum::sum(self.buffer.as_ref());
        self.set_checksum(!checksum::combine(&[pseudo_header, data]));
    }

    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_checksum_with(pseudo_v4(src, dst, self.segment_len()));
    }

    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.fill_checksum_with(pseudo_v6(src, dst, self.segment_len()));
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u16 {
    checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp.into(), len as u32)
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u16 {
    checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp.into(), len as u32)
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
    fn parses_captured_syn() {
        let tcp = TcpPacket::new_checked(&TCPV4_SYN[34..]).expect("fixture");
        assert_eq!(tcp.src_port(), 53658);
        assert_eq!(tcp.dst_port(), 9);
        assert_eq!(tcp.seq_number(), 4_102_730_734);
        assert_eq!(tcp.header_len(), 40);
        assert_eq!(tcp.flags(), TcpFlags::SYN);
        assert!(tcp.syn() && !tcp.ack() && !tcp.fin() && !tcp.rst());
        assert!(!tcp.psh() && !tcp.urg() && !tcp.ece() && !tcp.cwr());
        assert_eq!(tcp.window_len(), 64480);
        assert_eq!(tcp.ack_number(), 0);
        assert_eq!(tcp.options().len(), 20);
        assert_eq!(&tcp.options()[..4], &[2, 4, 0x04, 0xd8], "MSS 1240");
        assert!(tcp.payload().is_empty());
        assert!(tcp.verify_checksum_v4(IP_A, IP_B));
        assert!(!tcp.verify_checksum_v4(IP_B, Ipv4Addr::new(198, 18, 0, 3)));
        let ip = Ipv4Packet::new_checked(&TCPV4_SYN[14..]).expect("fixture");
        assert!(tcp.verify_checksum_with(ip.pseudo_header_sum(tcp.segment_len())));
    }

    #[test]
    fn parses_captured_rst_ack() {
        let syn = TcpPacket::new_checked(&TCPV4_SYN[34..]).expect("fixture");
        let rst = TcpPacket::new_checked(&TCPV4_RST_ACK[34..]).expect("fixture");
        assert_eq!(rst.flags(), TcpFlags::RST | TcpFlags::ACK);
        assert!(rst.rst() && rst.ack());
        assert_eq!(rst.src_port(), 9);
        assert_eq!(rst.dst_port(), syn.src_port());
        assert_eq!(rst.ack_number(), syn.seq_number().wrapping_add(1));
        assert_eq!(rst.header_len(), 20);
        assert!(rst.verify_checksum_v4(IP_B, IP_A));
    }

    #[test]
    fn captured_v6_segments_verify() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let syn = TcpPacket::new_checked(&TCPV6_SYN[54..]).expect("fixture");
        assert!(syn.syn());
        assert!(syn.verify_checksum_v6(a, b));
        let rst = TcpPacket::new_checked(&TCPV6_RST_ACK[54..]).expect("fixture");
        assert!(rst.verify_checksum_v6(b, a));
        let ip = Ipv6Packet::new_checked(&TCPV6_SYN[14..]).expect("fixture");
        assert!(syn.verify_checksum_with(ip.pseudo_header_sum(IpProtocol::Tcp, syn.segment_len())));
    }

    #[test]
    fn rejects_bad_data_offset() {
        let seg = &TCPV4_SYN[34..];
        assert_eq!(
            TcpPacket::new_checked(&seg[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&seg[..39]).err(),
            Some(Error::Truncated)
        );
        let mut low = seg.to_vec();
        low[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&low[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn nat_rewrite_keeps_checksums() {
        // DNAT the captured SYN: 198.18.0.2:9 -> 198.18.1.2:8080.
        let mut frame = TCPV4_SYN;
        let backend = Ipv4Addr::new(198, 18, 1, 2);
        let mut ip = Ipv4Packet::new_checked(&mut frame[14..]).expect("fixture");
        ip.set_dst_addr(backend);
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).expect("fixture");
        tcp.adjust_checksum_for_address(&IP_B.octets(), &backend.octets());
        tcp.set_dst_port(8080);
        assert!(tcp.verify_checksum_v4(IP_A, backend));
        let incremental = tcp.checksum();
        tcp.fill_checksum_v4(IP_A, backend);
        assert_eq!(tcp.checksum(), incremental);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn build_and_fill() {
        // Rebuild the captured RST byte for byte from its fields.
        let mut seg = [0u8; 20];
        let mut tcp = TcpPacket::new_unchecked(&mut seg[..]);
        let captured = TcpPacket::new_checked(&TCPV4_RST_ACK[34..]).expect("fixture");
        tcp.set_src_port(captured.src_port());
        tcp.set_dst_port(captured.dst_port());
        tcp.set_seq_number(captured.seq_number());
        tcp.set_ack_number(captured.ack_number());
        tcp.set_header_len(20);
        tcp.set_flags(captured.flags());
        tcp.set_window_len(captured.window_len());
        tcp.set_urgent_at(0);
        tcp.fill_checksum_v4(IP_B, IP_A);
        assert_eq!(&seg[..], &TCPV4_RST_ACK[34..]);
    }

    proptest! {
        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(tcp) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (tcp.options(), tcp.payload(), tcp.flags(), tcp.verify_checksum_v4(IP_A, IP_B));
            }
        }

        #[test]
        fn port_and_address_rewrites_equal_recompute(sport in any::<u16>(), dport in any::<u16>(), addr in any::<[u8; 16]>()) {
            let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
            let new_dst = Ipv6Addr::from(addr);
            let mut seg = TCPV6_SYN[54..].to_vec();
            let mut tcp = TcpPacket::new_checked(&mut seg[..]).expect("fixture");
            tcp.set_src_port(sport);
            tcp.set_dst_port(dport);
            tcp.adjust_checksum_for_address(&b.octets(), &new_dst.octets());
            prop_assert!(tcp.verify_checksum_v6(a, new_dst));
            let incremental = tcp.checksum();
            tcp.fill_checksum_v6(a, new_dst);
            prop_assert_eq!(incremental, tcp.checksum());
        }
    }
}
