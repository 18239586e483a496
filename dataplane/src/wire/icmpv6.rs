//! ICMPv6 (RFC 4443), the IPv6 packet an error quotes, and error builders.
//!
//! Owns: the ICMPv6 header layout and its checksum (with the IPv6
//! pseudo-header), [`Ipv6Quote`] (reading and rewriting the quoted
//! addresses and ports with incremental updates of the quoted upper-layer
//! checksum), and [`emit_error_v6`] with the RFC 4443 section 2.4(e)
//! suppression rules. Must not touch: Neighbor Discovery bodies
//! ([`super::ndp`]), the decision to send, rate limiting, and the outer
//! IPv6 header of a received message.

use std::net::Ipv6Addr;

use super::ipv6::{self, Ipv6Chain, Ipv6Packet, Ipv6Repr};
use super::{
    enum_with_unknown, read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result,
};
use crate::checksum;

/// Length of the ICMPv6 header (type, code, checksum, 4 bytes of body).
pub const HEADER_LEN: usize = 8;

/// Largest IPv6 packet an error message may be (RFC 4443 section
/// 2.4(c): the minimum IPv6 MTU); the quote is cut to fit.
pub const MAX_ERROR_LEN: usize = 1280;

mod field {
    pub const TYPE: usize = 0;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
}

enum_with_unknown! {
    /// ICMPv6 message types.
    pub enum Icmpv6Message(u8) {
        DstUnreachable = 1,
        PktTooBig = 2,
        TimeExceeded = 3,
        ParamProblem = 4,
        EchoRequest = 128,
        EchoReply = 129,
        RouterSolicit = 133,
        RouterAdvert = 134,
        NeighborSolicit = 135,
        NeighborAdvert = 136,
        Redirect = 137,
    }
}

impl Icmpv6Message {
    /// An error message: types 0..=127 (RFC 4443 section 2.1). Its data
    /// quotes the offending packet: see [`Ipv6Quote`].
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

/// Parameter problem code "unrecognized IPv6 option encountered".
pub const CODE_UNRECOGNIZED_OPTION: u8 = 2;

/// A view of an ICMPv6 message. The buffer must be exactly the message
/// (the upper-layer bytes): the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps bytes from the network: 8 bytes at least.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn msg_type(&self) -> Icmpv6Message {
        Icmpv6Message::from(self.buffer.as_ref()[field::TYPE])
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE + 1]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the checksum (message plus pseudo-header) is right.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let data = checksum::sum(self.buffer.as_ref());
        checksum::combine(&[self.pseudo_header(src, dst), data]) == 0xffff
    }

    fn pseudo_header(&self, src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
        let len = self.buffer.as_ref().len() as u32;
        checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6.into(), len)
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Bytes 4..8: the MTU of packet too big, the pointer of parameter
    /// problem, flags of NDP messages, 0 otherwise.
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    /// The bytes after the 8-byte header: the quote of an error, the data
    /// of an echo, the body of an NDP message after its first word.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Raw setter (no checksum update).
    pub fn set_msg_type(&mut self, value: Icmpv6Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Raw setter (no checksum update).
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE + 1] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Raw setter (no checksum update).
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Rewrites the echo identifier, updating the checksum incrementally.
    pub fn set_echo_ident(&mut self, ident: u16) {
        let old = self.echo_ident();
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
        self.set_checksum(checksum::update16(self.checksum(), old, ident));
    }

    /// Raw setter (no checksum update).
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Turns an echo request into its reply in place: type 129, code 0,
    /// checksum updated incrementally (swapping the IPv6 addresses leaves
    /// the pseudo-header sum unchanged).
    pub fn make_echo_reply(&mut self) {
        let old = read_u16(self.buffer.as_ref(), field::TYPE);
        let new = u16::from(u8::from(Icmpv6Message::EchoReply)) << 8;
        write_u16(self.buffer.as_mut(), field::TYPE, new);
        self.set_checksum(checksum::update16(self.checksum(), old, new));
    }

    /// Updates the checksum for an outer IPv6 address change (16 bytes
    /// each), after the IP layer rewrote the address.
    pub fn adjust_checksum_for_address(&mut self, old: &[u8], new: &[u8]) {
        self.set_checksum(checksum::update_addr(self.checksum(), old, new));
    }

    /// Computes and stores the checksum over the message and the
    /// pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let data = checksum::sum(self.buffer.as_ref());
        let csum = !checksum::combine(&[self.pseudo_header(src, dst), data]);
        self.set_checksum(csum);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The header of an error message: what to send, without the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6ErrorMessage {
    pub msg: Icmpv6Message,
    pub code: u8,
    /// Bytes 4..8 (the MTU for packet too big, the pointer for parameter
    /// problem, else 0).
    pub rest_of_header: u32,
}

impl Icmpv6ErrorMessage {
    /// Packet too big with the next-hop MTU.
    pub fn pkt_too_big(mtu: u32) -> Self {
        Icmpv6ErrorMessage {
            msg: Icmpv6Message::PktTooBig,
            code: 0,
            rest_of_header: mtu,
        }
    }

    /// Writes an IPv6 packet from `src` to the offending packet's source
    /// (traffic class 0, flow label 0, hop limit 64) carrying this error
    /// and as much of `offending_ip_packet` (up to its payload length) as
    /// fits in [`MAX_ERROR_LEN`] and in `buf`; returns the IPv6 packet's
    /// length.
    ///
    /// Errors: [`Error::IcmpErrorSuppressed`] when RFC 4443 section 2.4(e)
    /// forbids it (see [`error_suppressed_v6`]); [`Error::BufferTooSmall`]
    /// when `buf` cannot hold the offending fixed header and 8 more bytes;
    /// [`Error::Unsupported`] when `self.msg` is not an error type; the
    /// offending packet's parse error.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, offending_ip_packet: &[u8]) -> Result<usize> {
        if !self.msg.is_error() {
            return Err(Error::Unsupported);
        }
        let offending = Ipv6Packet::new_checked(offending_ip_packet)?;
        if error_suppressed_v6(&offending, self.msg, self.code) {
            return Err(Error::IcmpErrorSuppressed);
        }
        let whole = &offending.as_bytes()[..offending.total_len()];
        let overhead = ipv6::HEADER_LEN + HEADER_LEN;
        let minimum = whole.len().min(ipv6::HEADER_LEN + 8);
        if buf.len() < overhead + minimum {
            return Err(Error::BufferTooSmall);
        }
        let quote_len = whole.len().min(buf.len().min(MAX_ERROR_LEN) - overhead);
        let dst = offending.src_addr();
        let repr = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: HEADER_LEN + quote_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        repr.emit(buf)?;
        let mut icmp =
            Icmpv6Packet::new_unchecked(&mut buf[ipv6::HEADER_LEN..overhead + quote_len]);
        icmp.set_msg_type(self.msg);
        icmp.set_msg_code(self.code);
        icmp.set_rest_of_header(self.rest_of_header);
        icmp.data_mut().copy_from_slice(&whole[..quote_len]);
        icmp.fill_checksum(src, dst);
        Ok(overhead + quote_len)
    }
}

/// [`Icmpv6ErrorMessage::emit`] for `msg`, `code` and `rest_of_header`.
pub fn emit_error_v6(
    buf: &mut [u8],
    msg: Icmpv6Message,
    code: u8,
    src: Ipv6Addr,
    rest_of_header: u32,
    offending_ip_packet: &[u8],
) -> Result<usize> {
    let error = Icmpv6ErrorMessage {
        msg,
        code,
        rest_of_header,
    };
    error.emit(buf, src, offending_ip_packet)
}

/// Whether RFC 4443 section 2.4(e) forbids sending error `msg`/`code`
/// about `packet`: it is an ICMPv6 error (e.1); it went to a multicast
/// address, except for packet too big and parameter problem code 2 (e.2);
/// its source is unspecified, multicast or loopback (e.5). A packet whose
/// extension headers cannot be walked is not taken for an ICMPv6 error.
/// Link-layer multicast and broadcast (e.3, e.4) are the caller's to
/// check.
pub fn error_suppressed_v6<T: AsRef<[u8]>>(
    packet: &Ipv6Packet<T>,
    msg: Icmpv6Message,
    code: u8,
) -> bool {
    let src = packet.src_addr();
    let src_not_a_host = src.is_unspecified() || src.is_multicast() || src.is_loopback();
    let multicast_exempt = msg == Icmpv6Message::PktTooBig
        || (msg == Icmpv6Message::ParamProblem && code == CODE_UNRECOGNIZED_OPTION);
    let to_group = packet.dst_addr().is_multicast() && !multicast_exempt;
    src_not_a_host || to_group || is_icmpv6_error(packet)
}

fn is_icmpv6_error<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> bool {
    let Ok(chain) = packet.chain() else {
        return false;
    };
    chain.upper_protocol == IpProtocol::Icmpv6
        && chain.has_upper_header()
        && packet
            .as_bytes()
            .get(chain.upper_offset)
            .is_some_and(|&t| Icmpv6Message::from(t).is_error())
}

/// The meaning of an ICMPv6 message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Repr {
    EchoRequest {
        ident: u16,
        seq_no: u16,
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
    },
    /// An error; its data is an [`Ipv6Quote`].
    Error(Icmpv6ErrorMessage),
    /// Any other type (NDP included: see [`super::ndp::NdpRepr`]).
    Other {
        msg: Icmpv6Message,
        code: u8,
    },
}

impl Icmpv6Repr {
    /// Reads a checked message's header (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv6Packet<T>) -> Self {
        let (ident, seq_no) = (packet.echo_ident(), packet.echo_seq_no());
        match packet.msg_type() {
            Icmpv6Message::EchoRequest => Icmpv6Repr::EchoRequest { ident, seq_no },
            Icmpv6Message::EchoReply => Icmpv6Repr::EchoReply { ident, seq_no },
            msg if msg.is_error() => Icmpv6Repr::Error(Icmpv6ErrorMessage {
                msg,
                code: packet.msg_code(),
                rest_of_header: packet.rest_of_header(),
            }),
            msg => Icmpv6Repr::Other {
                msg,
                code: packet.msg_code(),
            },
        }
    }
}

/// Offsets in the quoted fixed header.
mod quote_field {
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const NEXT_HEADER: usize = 6;
}

/// Offsets in the quoted upper-layer header.
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;
const ICMP_ECHO_IDENT: usize = 4;

/// A view of the IPv6 packet quoted in an ICMPv6 error (the error's
/// [`Icmpv6Packet::data`]). The quote is often cut short: its payload
/// length is not checked against the buffer. After [`Self::new_checked`]
/// the fixed header and every extension header are present; the
/// upper-layer header may be cut, so its accessors return `Option` and
/// its setters do nothing when their field is absent.
///
/// Checksums: the quoted TCP, UDP or ICMPv6 checksum covers the
/// pseudo-header with the quoted addresses; a Routing header (whose final
/// destination is the pseudo-header's) is not accounted for.
#[derive(Debug, Clone)]
pub struct Ipv6Quote<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Quote<T> {
    /// For a quote already checked (the pipeline re-wraps a checked quote
    /// mutably). Accessors of a quote whose chain cannot be walked see no
    /// upper layer; a buffer shorter than 40 bytes may panic.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Quote { buffer }
    }

    /// Wraps a quote from the network: the 40-byte header
    /// ([`Error::Truncated`]), version 6 ([`Error::Malformed`]) and an
    /// extension header chain that [`ipv6::walk_chain`] can walk within
    /// the quote (its errors).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let quote = Self::new_unchecked(buffer);
        let b = quote.buffer.as_ref();
        if b.len() < ipv6::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        quote.chain()?;
        Ok(quote)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Walks the quoted extension headers (offsets from the quote's
    /// start). Never fails after [`Self::new_checked`].
    pub fn chain(&self) -> Result<Ipv6Chain> {
        let b = self.buffer.as_ref();
        let first = IpProtocol::from(*b.get(quote_field::NEXT_HEADER).ok_or(Error::Truncated)?);
        ipv6::walk_chain(first, b, ipv6::HEADER_LEN)
    }

    /// The upper-layer protocol (see [`Ipv6Chain::upper_protocol`]);
    /// `Ipv6NoNxt` when the chain cannot be walked.
    pub fn protocol(&self) -> IpProtocol {
        self.chain()
            .map_or(IpProtocol::Ipv6NoNxt, |c| c.upper_protocol)
    }

    /// Part of a fragmented packet (see [`Ipv6Chain::is_fragment`]).
    pub fn is_fragment(&self) -> bool {
        self.chain().is_ok_and(|c| c.is_fragment())
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(quote_field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(quote_field::DST))
    }

    fn addr(&self, at: usize) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        out
    }

    /// The bytes after the quoted extension headers: the upper-layer
    /// header, or a non-first fragment's data (see [`Self::chain`]).
    /// Empty when the chain cannot be walked.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        self.chain()
            .ok()
            .and_then(|c| b.get(c.upper_offset..))
            .unwrap_or(&[])
    }

    /// The upper-layer protocol and the offset of its header, when the
    /// header is in the quote (not a non-first fragment).
    fn upper(&self) -> Option<(IpProtocol, usize)> {
        let chain = self.chain().ok()?;
        chain
            .has_upper_header()
            .then_some((chain.upper_protocol, chain.upper_offset))
    }

    /// Offset of the upper-layer field `at..at + 2` when the upper layer
    /// is one of `protocols`, its header is here, and the field is inside
    /// the quote.
    fn upper_field(&self, protocols: &[IpProtocol], at: usize) -> Option<usize> {
        let (protocol, offset) = self.upper()?;
        let field = offset + at;
        let inside = field + 2 <= self.buffer.as_ref().len();
        (protocols.contains(&protocol) && inside).then_some(field)
    }

    fn port_at(&self, at: usize) -> Option<usize> {
        self.upper_field(&[IpProtocol::Tcp, IpProtocol::Udp], at)
    }

    /// The quoted TCP/UDP source port, when present.
    pub fn src_port(&self) -> Option<u16> {
        self.port_at(0).map(|at| read_u16(self.buffer.as_ref(), at))
    }

    /// The quoted TCP/UDP destination port, when present.
    pub fn dst_port(&self) -> Option<u16> {
        self.port_at(2).map(|at| read_u16(self.buffer.as_ref(), at))
    }

    /// The quoted echo identifier, for a quoted echo request or reply.
    pub fn echo_ident(&self) -> Option<u16> {
        let at = self.upper_field(&[IpProtocol::Icmpv6], ICMP_ECHO_IDENT)?;
        let kind = Icmpv6Message::from(self.buffer.as_ref()[at - ICMP_ECHO_IDENT]);
        matches!(kind, Icmpv6Message::EchoRequest | Icmpv6Message::EchoReply)
            .then(|| read_u16(self.buffer.as_ref(), at))
    }

    /// Where the quoted upper-layer checksum is, and whether it is UDP's,
    /// if inside the quote.
    fn l4_checksum_at(&self) -> Option<(usize, bool)> {
        let (protocol, _) = self.upper()?;
        let at = match protocol {
            IpProtocol::Tcp => TCP_CHECKSUM,
            IpProtocol::Udp => UDP_CHECKSUM,
            IpProtocol::Icmpv6 => ICMP_CHECKSUM,
            _ => return None,
        };
        let field = self.upper_field(&[protocol], at)?;
        Some((field, protocol == IpProtocol::Udp))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Quote<T> {
    /// Rewrites the quoted source address and, when inside the quote, the
    /// quoted TCP/UDP/ICMPv6 checksum (incrementally; a zero UDP checksum
    /// stays zero). The outer ICMPv6 checksum is the caller's
    /// (`Icmpv6Packet::fill_checksum`).
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.rewrite_addr(quote_field::SRC, addr);
    }

    /// Rewrites the quoted destination address; like [`Self::set_src_addr`].
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.rewrite_addr(quote_field::DST, addr);
    }

    fn rewrite_addr(&mut self, at: usize, addr: Ipv6Addr) {
        let old = self.addr(at);
        let new = addr.octets();
        self.buffer.as_mut()[at..at + 16].copy_from_slice(&new);
        self.update_l4_checksum(&old, &new);
    }

    /// Rewrites the quoted source port and, when inside the quote, the
    /// quoted checksum. Does nothing when [`Self::src_port`] is `None`.
    pub fn set_src_port(&mut self, port: u16) {
        if let Some(at) = self.port_at(0) {
            self.rewrite16(at, port);
        }
    }

    /// Rewrites the quoted destination port; like [`Self::set_src_port`].
    pub fn set_dst_port(&mut self, port: u16) {
        if let Some(at) = self.port_at(2) {
            self.rewrite16(at, port);
        }
    }

    /// Rewrites the quoted echo identifier and the quoted ICMPv6
    /// checksum. Does nothing when [`Self::echo_ident`] is `None`.
    pub fn set_echo_ident(&mut self, ident: u16) {
        if self.echo_ident().is_some() {
            if let Some(at) = self.upper_field(&[IpProtocol::Icmpv6], ICMP_ECHO_IDENT) {
                self.rewrite16(at, ident);
            }
        }
    }

    fn rewrite16(&mut self, at: usize, value: u16) {
        let old = read_u16(self.buffer.as_ref(), at);
        write_u16(self.buffer.as_mut(), at, value);
        self.update_l4_checksum(&old.to_be_bytes(), &value.to_be_bytes());
    }

    fn update_l4_checksum(&mut self, old: &[u8], new: &[u8]) {
        let Some((at, udp)) = self.l4_checksum_at() else {
            return;
        };
        let csum = read_u16(self.buffer.as_ref(), at);
        let csum = if udp {
            checksum::udp_update_addr(csum, old, new)
        } else {
            checksum::update_addr(csum, old, new)
        };
        write_u16(self.buffer.as_mut(), at, csum);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::tcp::TcpPacket;
    use super::super::udp::UdpPacket;
    use super::*;
    use proptest::prelude::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    fn icmp(frame: &[u8]) -> Icmpv6Packet<&[u8]> {
        Icmpv6Packet::new_checked(&frame[54..]).expect("fixture")
    }

    #[test]
    fn message_types() {
        for raw in 0..=255u8 {
            assert_eq!(u8::from(Icmpv6Message::from(raw)), raw);
        }
        assert!(Icmpv6Message::PktTooBig.is_error());
        assert!(Icmpv6Message::Unknown(127).is_error());
        assert!(!Icmpv6Message::EchoRequest.is_error());
        assert!(!Icmpv6Message::NeighborSolicit.is_error());
    }

    #[test]
    fn parses_captured_echo() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let request = icmp(&ICMPV6_ECHO_REQUEST);
        assert_eq!(request.msg_type(), Icmpv6Message::EchoRequest);
        assert_eq!(request.msg_code(), 0);
        assert_eq!(request.checksum(), 0x39f5);
        assert!(request.verify_checksum(a, b));
        assert!(!request.verify_checksum(b, v6("2001:db8::3")));
        assert_eq!((request.echo_ident(), request.echo_seq_no()), (0x2132, 1));
        assert_eq!(request.data().len(), 24);
        assert_eq!(
            Icmpv6Repr::parse(&request),
            Icmpv6Repr::EchoRequest {
                ident: 0x2132,
                seq_no: 1
            }
        );
        assert!(icmp(&ICMPV6_ECHO_REPLY).verify_checksum(b, a));
    }

    #[test]
    fn echo_reply_in_place_matches_kernel() {
        let mut bytes = ICMPV6_ECHO_REQUEST;
        let mut packet = Icmpv6Packet::new_checked(&mut bytes[54..]).expect("fixture");
        packet.make_echo_reply();
        assert_eq!(&bytes[54..], &ICMPV6_ECHO_REPLY[54..]);
    }

    #[test]
    fn outer_address_and_ident_rewrites() {
        let (a, b, c) = (v6("2001:db8::1"), v6("2001:db8::2"), v6("2001:db8:1::2"));
        let mut bytes = ICMPV6_ECHO_REQUEST;
        let mut packet = Icmpv6Packet::new_checked(&mut bytes[54..]).expect("fixture");
        packet.adjust_checksum_for_address(&b.octets(), &c.octets());
        packet.set_echo_ident(0x4242);
        assert!(packet.verify_checksum(a, c));
        let incremental = packet.checksum();
        packet.fill_checksum(a, c);
        assert_eq!(packet.checksum(), incremental);
    }

    #[test]
    fn parses_captured_errors_and_quotes() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let unreach = icmp(&ICMPV6_PORT_UNREACHABLE);
        assert!(unreach.verify_checksum(b, a));
        assert_eq!(
            Icmpv6Repr::parse(&unreach),
            Icmpv6Repr::Error(Icmpv6ErrorMessage {
                msg: Icmpv6Message::DstUnreachable,
                code: 4,
                rest_of_header: 0
            })
        );
        let quote = Ipv6Quote::new_checked(unreach.data()).expect("fixture");
        assert_eq!(quote.src_addr(), a);
        assert_eq!(quote.dst_addr(), b);
        assert_eq!(quote.protocol(), IpProtocol::Udp);
        assert!(!quote.is_fragment());
        assert_eq!(quote.src_port(), Some(0xbcf8));
        assert_eq!(quote.dst_port(), Some(9));
        assert_eq!(quote.echo_ident(), None);
        assert_eq!(quote.payload(), &UDPV6[54..]);

        let te = icmp(&ICMPV6_TIME_EXCEEDED);
        assert!(te.verify_checksum(b, a));
        assert_eq!(te.msg_type(), Icmpv6Message::TimeExceeded);
        let quote = Ipv6Quote::new_checked(te.data()).expect("fixture");
        assert_eq!(quote.protocol(), IpProtocol::Icmpv6);
        assert_eq!(quote.src_port(), None);
        assert_eq!(quote.echo_ident(), Some(0x2134));
    }

    #[test]
    fn quote_rejects_and_cuts() {
        let data = &ICMPV6_PORT_UNREACHABLE[62..];
        assert_eq!(
            Ipv6Quote::new_checked(&data[..39]).err(),
            Some(Error::Truncated)
        );
        let mut v4 = data.to_vec();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Quote::new_checked(&v4[..]).err(),
            Some(Error::Malformed)
        );
        // Cut inside the UDP header: the source port is there, the
        // destination port is not.
        let mut cut = data[..43].to_vec();
        let mut quote = Ipv6Quote::new_checked(&mut cut[..]).expect("header present");
        assert_eq!(quote.src_port(), Some(0xbcf8));
        assert_eq!(quote.dst_port(), None);
        quote.set_dst_port(1);
        quote.set_echo_ident(1);
        assert_eq!(&cut[..], &data[..43], "nothing written");
        // A quoted non-first fragment has no ports.
        let mut frag = IPV6_LAST_FRAGMENT[14..].to_vec();
        let mut quote = Ipv6Quote::new_checked(&mut frag[..]).expect("fixture");
        assert!(quote.is_fragment());
        assert_eq!(quote.src_port(), None);
        assert_eq!(quote.echo_ident(), None);
        quote.set_src_port(1);
        assert_eq!(&frag[..], &IPV6_LAST_FRAGMENT[14..], "nothing written");
        // A chain cut inside an extension header.
        let hbh = &MLDV2_REPORT[14..];
        assert_eq!(
            Ipv6Quote::new_checked(&hbh[..44]).err(),
            Some(Error::Truncated)
        );
        assert!(Ipv6Quote::new_checked(&hbh[..48]).is_ok());
    }

    #[test]
    fn quote_translation_keeps_quoted_checksums() {
        let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let (vip, backend) = (v6("2001:db8:ff::1"), v6("2001:db8:1::2"));
        let mut bytes = ICMPV6_PORT_UNREACHABLE;
        let mut packet = Icmpv6Packet::new_checked(&mut bytes[54..]).expect("fixture");
        let mut quote = Ipv6Quote::new_checked(packet.data_mut()).expect("fixture");
        quote.set_dst_addr(backend);
        quote.set_dst_port(8080);
        quote.set_src_addr(vip);
        quote.set_src_port(4000);
        let udp = UdpPacket::new_checked(quote.payload()).expect("whole");
        assert!(udp.verify_checksum_v6(vip, backend));
        packet.fill_checksum(b, a);
        assert!(packet.verify_checksum(b, a));

        // The quoted echo request: the quoted ICMPv6 checksum follows both
        // the address and the identifier.
        let mut bytes = ICMPV6_TIME_EXCEEDED;
        let mut quote = Ipv6Quote::new_checked(&mut bytes[62..]).expect("fixture");
        quote.set_dst_addr(backend);
        quote.set_echo_ident(0x5555);
        let inner = Icmpv6Packet::new_checked(&bytes[102..]).expect("whole");
        assert_eq!(inner.echo_ident(), 0x5555);
        assert!(inner.verify_checksum(a, backend));
    }

    #[test]
    fn emit_errors_match_kernel() {
        let b = v6("2001:db8::2");
        for (offending, captured, msg, code) in [
            (
                &ICMPV6_ECHO_REQUEST_HLIM1[14..],
                &ICMPV6_TIME_EXCEEDED[14..],
                Icmpv6Message::TimeExceeded,
                0,
            ),
            (
                &UDPV6[14..],
                &ICMPV6_PORT_UNREACHABLE[14..],
                Icmpv6Message::DstUnreachable,
                4,
            ),
        ] {
            let mut buf = [0u8; 1500];
            let len = emit_error_v6(&mut buf, msg, code, b, 0, offending).expect("emit");
            assert_eq!(len, captured.len());
            // Linux sets a flow label; this code sends 0. The label is not
            // in the pseudo-header, so only those 3 bytes differ.
            assert_eq!(&buf[..1], &captured[..1]);
            assert_eq!(&buf[1..4], &[0, 0, 0]);
            assert_eq!(&buf[4..len], &captured[4..]);
        }
    }

    #[test]
    fn emit_pkt_too_big_cuts_quote_to_1280() {
        let mut big = vec![0u8; 1500];
        big[..56].copy_from_slice(&UDPV6[14..]);
        let mut ip = Ipv6Packet::new_unchecked(&mut big[..]);
        ip.set_payload_len(1460);
        let mut buf = [0u8; 2000];
        let me = v6("2001:db8::2");
        let error = Icmpv6ErrorMessage::pkt_too_big(1280);
        let len = error.emit(&mut buf, me, &big).expect("emit");
        assert_eq!(len, MAX_ERROR_LEN);
        let ip = Ipv6Packet::new_checked(&buf[..len]).expect("emitted");
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.dst_addr(), v6("2001:db8::1"));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("emitted");
        assert!(icmp.verify_checksum(me, v6("2001:db8::1")));
        assert_eq!(icmp.rest_of_header(), 1280);
        assert_eq!(icmp.data(), &big[..1232]);
        assert_eq!(error.emit(&mut buf[..96], me, &big).map(|_| ()), Ok(()));
        assert_eq!(
            error.emit(&mut buf[..95], me, &big),
            Err(Error::BufferTooSmall)
        );
        // Packet too big is allowed about a multicast destination.
        let mut group = big.clone();
        group[24] = 0xff;
        assert!(error.emit(&mut buf, me, &group).is_ok());
        assert_eq!(
            emit_error_v6(&mut buf, Icmpv6Message::DstUnreachable, 4, me, 0, &group),
            Err(Error::IcmpErrorSuppressed)
        );
        assert!(emit_error_v6(&mut buf, Icmpv6Message::ParamProblem, 2, me, 0, &group).is_ok());
    }

    #[test]
    fn suppressed_errors() {
        let me = v6("2001:db8::2");
        let mut buf = [0u8; 1280];
        let mut emit = |packet: &[u8]| {
            emit_error_v6(&mut buf, Icmpv6Message::DstUnreachable, 4, me, 0, packet)
        };
        assert_eq!(
            emit(&ICMPV6_PORT_UNREACHABLE[14..]),
            Err(Error::IcmpErrorSuppressed)
        );
        assert!(emit(&ICMPV6_ECHO_REQUEST[14..]).is_ok());
        assert_eq!(
            emit(&MLDV2_REPORT[14..]),
            Err(Error::IcmpErrorSuppressed),
            "to ff02::16"
        );
        for src in ["::", "::1", "ff02::1"] {
            let mut packet = UDPV6[14..].to_vec();
            packet[8..24].copy_from_slice(&v6(src).octets());
            assert_eq!(emit(&packet), Err(Error::IcmpErrorSuppressed), "{src}");
        }
        assert_eq!(emit(&UDPV6[14..50]), Err(Error::Truncated));
        assert_eq!(
            emit_error_v6(&mut buf, Icmpv6Message::EchoReply, 0, me, 0, &UDPV6[14..]),
            Err(Error::Unsupported)
        );
    }

    proptest! {
        #[test]
        fn views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let (a, b) = (v6("2001:db8::1"), v6("2001:db8::2"));
            if let Ok(packet) = Icmpv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.msg_code(), packet.verify_checksum(a, b), packet.rest_of_header());
                let _ = (packet.echo_ident(), packet.echo_seq_no(), packet.data(), Icmpv6Repr::parse(&packet));
            }
            let mut copy = bytes.clone();
            if let Ok(mut quote) = Ipv6Quote::new_checked(&mut copy[..]) {
                let _ = (quote.src_addr(), quote.dst_addr(), quote.protocol(), quote.src_port(), quote.dst_port());
                let _ = (quote.is_fragment(), quote.echo_ident(), quote.payload());
                quote.set_src_addr(a);
                quote.set_dst_port(1);
                quote.set_echo_ident(2);
            }
            let mut buf = [0u8; 1300];
            let _ = emit_error_v6(&mut buf, Icmpv6Message::TimeExceeded, 0, b, 0, &bytes);
        }

        #[test]
        fn quote_rewrites_equal_recompute(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), sport in any::<u16>(), dport in any::<u16>(), tcp in any::<bool>()) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut whole = if tcp { TCPV6_SYN[14..].to_vec() } else { UDPV6[14..].to_vec() };
            let mut quote = Ipv6Quote::new_checked(&mut whole[..]).expect("fixture");
            quote.set_src_addr(src);
            quote.set_dst_addr(dst);
            quote.set_src_port(sport);
            quote.set_dst_port(dport);
            let l4 = &mut whole[40..];
            if tcp {
                let mut seg = TcpPacket::new_checked(l4).expect("fixture");
                let incremental = seg.checksum();
                seg.fill_checksum_v6(src, dst);
                prop_assert_eq!(incremental, seg.checksum());
            } else {
                let mut dgram = UdpPacket::new_checked(l4).expect("fixture");
                let incremental = dgram.checksum();
                dgram.fill_checksum_v6(src, dst);
                prop_assert_eq!(incremental, dgram.checksum());
            }
        }
    }
}
