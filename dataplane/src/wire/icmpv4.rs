//! ICMP for IPv4 (RFC 792), the IPv4 packet an error quotes, and error
//! builders (RFC 1122 section 3.2.2, RFC 1812 section 4.3.2).
//!
//! Owns: the ICMPv4 header layout and checksum, [`Ipv4Quote`] (reading and
//! rewriting the quoted addresses and ports with incremental updates of the
//! quoted checksums), and [`emit_error_v4`]. Must not touch: the decision
//! to answer or to send an error, rate limiting (the caller's), and the
//! outer IP header of a received message (an `Ipv4Packet`'s).

use std::net::Ipv4Addr;

use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::{
    enum_with_unknown, read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result,
};
use crate::checksum;

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Largest IP packet an error message may be (RFC 1812 section
/// 4.3.2.3): the quote is cut to fit.
pub const MAX_ERROR_LEN: usize = 576;

mod field {
    pub const TYPE: usize = 0;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
}

enum_with_unknown! {
    /// ICMPv4 message types.
    pub enum Icmpv4Message(u8) {
        EchoReply = 0,
        DstUnreachable = 3,
        SourceQuench = 4,
        Redirect = 5,
        EchoRequest = 8,
        TimeExceeded = 11,
        ParamProblem = 12,
    }
}

impl Icmpv4Message {
    /// An error message (RFC 1122 section 3.2.2: destination unreachable,
    /// redirect, source quench, time exceeded, parameter problem). Its data
    /// quotes the offending datagram: see [`Ipv4Quote`].
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Icmpv4Message::DstUnreachable
                | Icmpv4Message::SourceQuench
                | Icmpv4Message::Redirect
                | Icmpv4Message::TimeExceeded
                | Icmpv4Message::ParamProblem
        )
    }
}

/// Destination unreachable code "fragmentation needed and DF set"; the
/// next-hop MTU goes in the low 16 bits of the rest of header (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// A view of an ICMPv4 message. The buffer must be exactly the message
/// (the IP payload): the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps bytes from the network: the 8-byte header must be present.
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

    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE + 1]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the checksum over the whole message is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }

    /// Identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Bytes 4..8 (unused for most errors; the next-hop MTU for
    /// "fragmentation needed", the pointer for parameter problem, the
    /// gateway for redirect).
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    /// The bytes after the 8-byte header: the quote of an error (see
    /// [`Ipv4Quote`]), the data of an echo.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Raw setter (no checksum update).
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Raw setter (no checksum update).
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE + 1] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Rewrites the echo identifier and updates the checksum
    /// incrementally (the NAT's "port" for echo).
    pub fn set_echo_ident(&mut self, ident: u16) {
        let old = self.echo_ident();
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
        self.set_checksum(checksum::update16(self.checksum(), old, ident));
    }

    /// Raw setter (no checksum update).
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Raw setter (no checksum update).
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Turns an echo request into its reply in place: type 0, code 0,
    /// checksum updated incrementally. Identifier, sequence number and
    /// data stay (RFC 792). The IP addresses are the caller's to swap.
    pub fn make_echo_reply(&mut self) {
        let old = read_u16(self.buffer.as_ref(), field::TYPE);
        let new = u16::from(u8::from(Icmpv4Message::EchoReply)) << 8;
        write_u16(self.buffer.as_mut(), field::TYPE, new);
        self.set_checksum(checksum::update16(self.checksum(), old, new));
    }

    /// Computes and stores the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(csum);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The header of an error message: what to send, without the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4ErrorMessage {
    pub msg: Icmpv4Message,
    pub code: u8,
    /// Bytes 4..8 of the ICMP header (0, or the MTU, pointer, gateway).
    pub rest_of_header: u32,
}

impl Icmpv4ErrorMessage {
    /// "Fragmentation needed and DF set" with the next-hop MTU (RFC 1191).
    pub fn frag_needed(mtu: u16) -> Self {
        Icmpv4ErrorMessage {
            msg: Icmpv4Message::DstUnreachable,
            code: CODE_FRAG_NEEDED,
            rest_of_header: u32::from(mtu),
        }
    }

    /// Writes an IPv4 packet from `src` to the offending packet's source
    /// carrying this error and as much of `offending_ip_packet` (up to its
    /// total length) as fits in [`MAX_ERROR_LEN`] and in `buf`; returns
    /// the IP packet's length. The IP header has TOS 0xc0 (precedence 6,
    /// RFC 1812 section 4.3.2.5, as Linux sends), ident 0, DF clear, TTL 64.
    ///
    /// Errors: [`Error::IcmpErrorSuppressed`] when RFC 1122 section 3.2.2
    /// forbids an error about this packet (see [`error_suppressed_v4`]);
    /// [`Error::BufferTooSmall`] when `buf` cannot hold the offending IP
    /// header and 8 bytes of its payload; [`Error::Unsupported`] when
    /// `self.msg` is not an error type; the offending packet's parse error.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, offending_ip_packet: &[u8]) -> Result<usize> {
        if !self.msg.is_error() {
            return Err(Error::Unsupported);
        }
        let offending = Ipv4Packet::new_checked(offending_ip_packet)?;
        if error_suppressed_v4(&offending) {
            return Err(Error::IcmpErrorSuppressed);
        }
        let whole = &offending.as_bytes()[..usize::from(offending.total_len())];
        let overhead = ipv4::HEADER_LEN + HEADER_LEN;
        let minimum = whole.len().min(offending.header_len() + 8);
        if buf.len() < overhead + minimum {
            return Err(Error::BufferTooSmall);
        }
        let quote_len = whole.len().min(buf.len().min(MAX_ERROR_LEN) - overhead);
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: offending.src_addr(),
            protocol: IpProtocol::Icmp,
            payload_len: HEADER_LEN + quote_len,
            ttl: 64,
            tos: 0xc0,
            ident: 0,
            dont_frag: false,
        };
        repr.emit(buf)?;
        let mut icmp =
            Icmpv4Packet::new_unchecked(&mut buf[ipv4::HEADER_LEN..overhead + quote_len]);
        icmp.set_msg_type(self.msg);
        icmp.set_msg_code(self.code);
        icmp.set_rest_of_header(self.rest_of_header);
        icmp.data_mut().copy_from_slice(&whole[..quote_len]);
        icmp.fill_checksum();
        Ok(overhead + quote_len)
    }
}

/// [`Icmpv4ErrorMessage::emit`] with a zero rest of header.
pub fn emit_error_v4(
    buf: &mut [u8],
    msg: Icmpv4Message,
    code: u8,
    src: Ipv4Addr,
    offending_ip_packet: &[u8],
) -> Result<usize> {
    let error = Icmpv4ErrorMessage {
        msg,
        code,
        rest_of_header: 0,
    };
    error.emit(buf, src, offending_ip_packet)
}

/// Whether RFC 1122 section 3.2.2 forbids an ICMP error about `packet`:
/// it is an ICMP error itself, a non-first fragment, addressed to a
/// multicast or the limited broadcast address, or from an address that is
/// not one host (unspecified, loopback, multicast, class E, broadcast).
/// A link-layer broadcast and a directed (subnet) broadcast are the
/// caller's to check: this view knows neither.
pub fn error_suppressed_v4<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> bool {
    let src = packet.src_addr();
    let dst = packet.dst_addr();
    let src_not_a_host =
        src.is_unspecified() || src.is_loopback() || src.is_multicast() || src.octets()[0] >= 240;
    let dst_group = dst.is_multicast() || dst.is_broadcast();
    let is_icmp_error = packet.protocol() == IpProtocol::Icmp
        && packet
            .payload()
            .first()
            .is_some_and(|&t| Icmpv4Message::from(t).is_error());
    !packet.is_first_fragment() || src_not_a_host || dst_group || is_icmp_error
}

/// The meaning of an ICMPv4 message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr {
    EchoRequest {
        ident: u16,
        seq_no: u16,
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
    },
    /// An error; its data is an [`Ipv4Quote`].
    Error(Icmpv4ErrorMessage),
    /// Any other type.
    Other {
        msg: Icmpv4Message,
        code: u8,
    },
}

impl Icmpv4Repr {
    /// Reads a checked message's header (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv4Packet<T>) -> Self {
        let (ident, seq_no) = (packet.echo_ident(), packet.echo_seq_no());
        match packet.msg_type() {
            Icmpv4Message::EchoRequest => Icmpv4Repr::EchoRequest { ident, seq_no },
            Icmpv4Message::EchoReply => Icmpv4Repr::EchoReply { ident, seq_no },
            msg if msg.is_error() => Icmpv4Repr::Error(Icmpv4ErrorMessage {
                msg,
                code: packet.msg_code(),
                rest_of_header: packet.rest_of_header(),
            }),
            msg => Icmpv4Repr::Other {
                msg,
                code: packet.msg_code(),
            },
        }
    }
}

/// Offsets inside the quoted IPv4 header.
mod quote_field {
    pub const VER_IHL: usize = 0;
    pub const FLG_OFF: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Offsets in the quoted L4 header.
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;
const ICMP_ECHO_IDENT: usize = 4;

/// A view of the IPv4 packet quoted in an ICMP error (the error's
/// [`Icmpv4Packet::data`]). The quote is usually cut short: its total
/// length field is not checked against the buffer. After
/// [`Self::new_checked`], the whole quoted header and 8 bytes after it
/// are present.
#[derive(Debug, Clone)]
pub struct Ipv4Quote<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Quote<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Quote { buffer }
    }

    /// Wraps a quote from the network: version 4, IHL >= 5
    /// ([`Error::Malformed`]), the header and 8 more bytes present
    /// ([`Error::Truncated`]).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let quote = Self::new_unchecked(buffer);
        let len = quote.buffer.as_ref().len();
        if len < ipv4::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let b = quote.buffer.as_ref();
        if b[quote_field::VER_IHL] >> 4 != 4 || quote.header_len() < ipv4::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if quote.header_len() + 8 > len {
            return Err(Error::Truncated);
        }
        Ok(quote)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The quoted header's length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[quote_field::VER_IHL] & 0x0f) * 4
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[quote_field::PROTOCOL])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr(quote_field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr(quote_field::DST))
    }

    fn addr(&self, at: usize) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[at], b[at + 1], b[at + 2], b[at + 3]]
    }

    /// The quoted header checksum.
    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), quote_field::CHECKSUM)
    }

    /// The quoted packet is part of a fragmented datagram (MF set or a
    /// non-zero offset), like `Ipv4Packet::is_fragment`.
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), quote_field::FLG_OFF) & 0x3fff != 0
    }

    /// Offset zero: the bytes after the quoted header are its L4 header.
    pub fn is_first_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), quote_field::FLG_OFF) & 0x1fff == 0
    }

    /// Whether [`Self::src_port`] and [`Self::dst_port`] mean ports: TCP or
    /// UDP, and not a non-first fragment.
    pub fn has_ports(&self) -> bool {
        self.is_first_fragment() && matches!(self.protocol(), IpProtocol::Tcp | IpProtocol::Udp)
    }

    /// The first two bytes after the quoted header: the source port for
    /// TCP and UDP when [`Self::has_ports`].
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.header_len())
    }

    /// Bytes 2..4 after the quoted header: the destination port for TCP
    /// and UDP when [`Self::has_ports`].
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.header_len() + 2)
    }

    /// The quoted echo identifier, when the quote is a first fragment of
    /// an ICMP echo request or reply.
    pub fn echo_ident(&self) -> Option<u16> {
        self.quoted_echo()
            .then(|| read_u16(self.buffer.as_ref(), self.header_len() + ICMP_ECHO_IDENT))
    }

    fn quoted_echo(&self) -> bool {
        let kind = Icmpv4Message::from(self.buffer.as_ref()[self.header_len()]);
        self.is_first_fragment()
            && self.protocol() == IpProtocol::Icmp
            && matches!(kind, Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply)
    }

    /// The bytes after the quoted header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Where the quoted TCP or UDP checksum lies, if inside the quote.
    fn l4_checksum_at(&self) -> Option<usize> {
        if !self.is_first_fragment() {
            return None;
        }
        let at = match self.protocol() {
            IpProtocol::Tcp => self.header_len() + TCP_CHECKSUM,
            IpProtocol::Udp => self.header_len() + UDP_CHECKSUM,
            _ => return None,
        };
        (at + 2 <= self.buffer.as_ref().len()).then_some(at)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Quote<T> {
    /// Rewrites the quoted source address; updates the quoted header
    /// checksum and, when inside the quote, the quoted TCP/UDP checksum
    /// (incrementally; a zero UDP checksum stays zero). The outer ICMP
    /// checksum is the caller's (`Icmpv4Packet::fill_checksum`).
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.rewrite_addr(quote_field::SRC, addr);
    }

    /// Rewrites the quoted destination address; like [`Self::set_src_addr`].
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.rewrite_addr(quote_field::DST, addr);
    }

    fn rewrite_addr(&mut self, at: usize, addr: Ipv4Addr) {
        let old = self.addr(at);
        let new = addr.octets();
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&new);
        let csum = checksum::update_addr(self.header_checksum(), &old, &new);
        write_u16(self.buffer.as_mut(), quote_field::CHECKSUM, csum);
        self.update_l4_checksum(&old, &new);
    }

    /// Rewrites the quoted source port and, when inside the quote, the
    /// quoted TCP/UDP checksum. Does nothing unless [`Self::has_ports`].
    pub fn set_src_port(&mut self, port: u16) {
        let at = self.header_len();
        self.rewrite_port(at, port);
    }

    /// Rewrites the quoted destination port; like [`Self::set_src_port`].
    pub fn set_dst_port(&mut self, port: u16) {
        let at = self.header_len() + 2;
        self.rewrite_port(at, port);
    }

    fn rewrite_port(&mut self, at: usize, port: u16) {
        if !self.has_ports() {
            return;
        }
        let old = read_u16(self.buffer.as_ref(), at);
        write_u16(self.buffer.as_mut(), at, port);
        self.update_l4_checksum(&old.to_be_bytes(), &port.to_be_bytes());
    }

    fn update_l4_checksum(&mut self, old: &[u8], new: &[u8]) {
        let Some(at) = self.l4_checksum_at() else {
            return;
        };
        let csum = read_u16(self.buffer.as_ref(), at);
        let csum = if self.protocol() == IpProtocol::Udp {
            checksum::udp_update_addr(csum, old, new)
        } else {
            checksum::update_addr(csum, old, new)
        };
        write_u16(self.buffer.as_mut(), at, csum);
    }

    /// Rewrites the quoted echo identifier and the quoted ICMP checksum
    /// (incrementally). Does nothing unless [`Self::echo_ident`] is `Some`.
    pub fn set_echo_ident(&mut self, ident: u16) {
        let Some(old) = self.echo_ident() else {
            return;
        };
        let hl = self.header_len();
        write_u16(self.buffer.as_mut(), hl + ICMP_ECHO_IDENT, ident);
        let csum = read_u16(self.buffer.as_ref(), hl + ICMP_CHECKSUM);
        write_u16(
            self.buffer.as_mut(),
            hl + ICMP_CHECKSUM,
            checksum::update16(csum, old, ident),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::tcp::TcpPacket;
    use super::super::udp::UdpPacket;
    use super::*;
    use proptest::prelude::*;

    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const IP_C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

    fn icmp(frame: &[u8]) -> Icmpv4Packet<&[u8]> {
        Icmpv4Packet::new_checked(&frame[34..]).expect("fixture")
    }

    #[test]
    fn message_types() {
        for raw in 0..=255u8 {
            assert_eq!(u8::from(Icmpv4Message::from(raw)), raw);
        }
        let errors: Vec<u8> = (0..=255u8)
            .filter(|&t| Icmpv4Message::from(t).is_error())
            .collect();
        assert_eq!(errors, [3, 4, 5, 11, 12]);
    }

    #[test]
    fn parses_captured_echo() {
        let request = icmp(&ICMPV4_ECHO_REQUEST);
        assert_eq!(request.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(request.msg_code(), 0);
        assert_eq!(request.checksum(), 0x65da);
        assert!(request.verify_checksum());
        assert_eq!(request.echo_ident(), 0x2129);
        assert_eq!(request.echo_seq_no(), 1);
        assert_eq!(request.data().len(), 24);
        assert_eq!(
            Icmpv4Repr::parse(&request),
            Icmpv4Repr::EchoRequest {
                ident: 0x2129,
                seq_no: 1
            }
        );
        assert_eq!(
            Icmpv4Repr::parse(&icmp(&ICMPV4_ECHO_REPLY)),
            Icmpv4Repr::EchoReply {
                ident: 0x2129,
                seq_no: 1
            }
        );
    }

    #[test]
    fn echo_reply_in_place_matches_kernel() {
        let mut bytes = ICMPV4_ECHO_REQUEST;
        let mut packet = Icmpv4Packet::new_checked(&mut bytes[34..]).expect("fixture");
        packet.make_echo_reply();
        assert!(packet.verify_checksum());
        assert_eq!(&bytes[34..], &ICMPV4_ECHO_REPLY[34..]);
    }

    #[test]
    fn echo_ident_rewrite_keeps_checksum() {
        let mut bytes = ICMPV4_ECHO_REQUEST;
        let mut packet = Icmpv4Packet::new_checked(&mut bytes[34..]).expect("fixture");
        packet.set_echo_ident(0xbeef);
        assert!(packet.verify_checksum());
        let incremental = packet.checksum();
        packet.fill_checksum();
        assert_eq!(packet.checksum(), incremental);
    }

    #[test]
    fn parses_captured_errors_and_quotes() {
        let te = icmp(&ICMPV4_TIME_EXCEEDED);
        assert!(te.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&te),
            Icmpv4Repr::Error(Icmpv4ErrorMessage {
                msg: Icmpv4Message::TimeExceeded,
                code: 0,
                rest_of_header: 0
            })
        );
        let quote = Ipv4Quote::new_checked(te.data()).expect("fixture");
        assert_eq!(quote.src_addr(), IP_A);
        assert_eq!(quote.dst_addr(), IP_C);
        assert_eq!(quote.protocol(), IpProtocol::Icmp);
        assert_eq!(quote.header_len(), 20);
        assert!(!quote.has_ports());
        assert_eq!(quote.echo_ident(), Some(0x212b));

        let unreach = icmp(&ICMPV4_PORT_UNREACHABLE);
        assert!(unreach.verify_checksum());
        assert_eq!(unreach.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(unreach.msg_code(), 3);
        let quote = Ipv4Quote::new_checked(unreach.data()).expect("fixture");
        assert_eq!(quote.protocol(), IpProtocol::Udp);
        assert!(quote.has_ports());
        assert!(!quote.is_fragment());
        assert_eq!((quote.src_port(), quote.dst_port()), (0xe86b, 9));
        assert_eq!(quote.echo_ident(), None);
        assert_eq!(quote.payload(), &UDPV4[34..]);
    }

    #[test]
    fn quote_rejects_bad_headers() {
        let data = &ICMPV4_PORT_UNREACHABLE[42..];
        let check = |b: &[u8]| Ipv4Quote::new_checked(b).err();
        assert_eq!(check(&data[..19]), Some(Error::Truncated));
        assert_eq!(
            check(&data[..27]),
            Some(Error::Truncated),
            "needs 8 bytes of L4"
        );
        assert_eq!(check(&data[..28]), None);
        let mut v6 = data.to_vec();
        v6[0] = 0x65;
        assert_eq!(check(&v6), Some(Error::Malformed));
        let mut ihl = data.to_vec();
        ihl[0] = 0x44;
        assert_eq!(check(&ihl), Some(Error::Malformed));
        ihl[0] = 0x47; // 28-byte header: 8 L4 bytes would need 36
        assert_eq!(check(&ihl[..35]), Some(Error::Truncated));
    }

    /// The UDP port unreachable with the quote translated as a NAT would
    /// (the quoted packet's destination becomes the backend), checked
    /// against a full recomputation of every quoted checksum.
    #[test]
    fn quote_translation_keeps_quoted_checksums() {
        let mut bytes = ICMPV4_PORT_UNREACHABLE;
        let mut packet = Icmpv4Packet::new_checked(&mut bytes[34..]).expect("fixture");
        let mut quote = Ipv4Quote::new_checked(packet.data_mut()).expect("fixture");
        quote.set_dst_addr(IP_C);
        quote.set_dst_port(8080);
        quote.set_src_addr(Ipv4Addr::new(198, 19, 0, 7));
        quote.set_src_port(4000);
        let ip = Ipv4Packet::new_checked(quote.as_bytes()).expect("whole quote");
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).expect("whole quote");
        assert!(udp.verify_checksum_v4(Ipv4Addr::new(198, 19, 0, 7), IP_C));
        assert_eq!((udp.src_port(), udp.dst_port()), (4000, 8080));
        packet.fill_checksum();
        assert!(packet.verify_checksum());
    }

    #[test]
    fn quoted_tcp_checksum_only_when_inside() {
        // A quote of the captured SYN: whole, and cut to 28 bytes (ports
        // only; the checksum at offset 36 is outside).
        let syn = &TCPV4_SYN[14..];
        let mut whole = syn.to_vec();
        let mut quote = Ipv4Quote::new_checked(&mut whole[..]).expect("whole");
        assert!(quote.has_ports());
        quote.set_dst_addr(IP_C);
        quote.set_dst_port(80);
        let tcp = TcpPacket::new_checked(&whole[20..]).expect("whole");
        assert!(tcp.verify_checksum_v4(IP_A, IP_C));
        let mut cut = syn[..28].to_vec();
        let mut quote = Ipv4Quote::new_checked(&mut cut[..]).expect("cut");
        quote.set_dst_addr(IP_C);
        quote.set_dst_port(80);
        assert_eq!(&cut[..28], &whole[..28]);
    }

    #[test]
    fn quoted_echo_ident_rewrite() {
        let mut bytes = ICMPV4_TIME_EXCEEDED;
        let mut quote = Ipv4Quote::new_checked(&mut bytes[42..]).expect("fixture");
        quote.set_echo_ident(0x7777);
        quote.set_src_port(1); // not TCP/UDP: no change
        assert_eq!(quote.echo_ident(), Some(0x7777));
        let inner = Icmpv4Packet::new_checked(&bytes[62..]).expect("whole echo quoted");
        assert!(inner.verify_checksum());
        assert_eq!(inner.echo_ident(), 0x7777);
    }

    #[test]
    fn emit_time_exceeded_matches_kernel() {
        let offending = &ICMPV4_ECHO_REQUEST_TTL1[14..];
        let mut buf = [0u8; 1500];
        let len =
            emit_error_v4(&mut buf, Icmpv4Message::TimeExceeded, 0, IP_B, offending).expect("emit");
        assert_eq!(len, ICMPV4_TIME_EXCEEDED.len() - 14);
        // The kernel numbers its packets; this code sends ident 0.
        let mut ip = Ipv4Packet::new_checked(&mut buf[..len]).expect("emitted");
        assert_eq!(ip.ident(), 0);
        ip.set_ident(0xd341);
        ip.fill_checksum();
        assert_eq!(&buf[..len], &ICMPV4_TIME_EXCEEDED[14..]);
    }

    #[test]
    fn emit_port_unreachable_matches_kernel() {
        let mut buf = [0u8; 576];
        let len = emit_error_v4(
            &mut buf,
            Icmpv4Message::DstUnreachable,
            3,
            IP_B,
            &UDPV4[14..],
        )
        .expect("emit");
        let mut ip = Ipv4Packet::new_checked(&mut buf[..len]).expect("emitted");
        ip.set_ident(0xd344);
        ip.fill_checksum();
        assert_eq!(&buf[..len], &ICMPV4_PORT_UNREACHABLE[14..]);
    }

    #[test]
    fn emit_frag_needed_cuts_quote_to_576() {
        // A 1300-byte UDP datagram built from the captured one.
        let mut big = vec![0u8; 1300];
        big[..36].copy_from_slice(&UDPV4[14..50]);
        let mut ip = Ipv4Packet::new_unchecked(&mut big[..]);
        ip.set_total_len(1300);
        ip.fill_checksum();
        let mut buf = [0u8; 2000];
        let error = Icmpv4ErrorMessage::frag_needed(1280);
        let len = error.emit(&mut buf, IP_B, &big).expect("emit");
        assert_eq!(len, MAX_ERROR_LEN);
        let ip = Ipv4Packet::new_checked(&buf[..len]).expect("emitted");
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), IP_A);
        assert!(!ip.dont_frag());
        let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("emitted");
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.rest_of_header(), 1280);
        assert_eq!(icmp.data(), &big[..548]);
        // A small buffer cuts the quote further, down to header + 8.
        let len = error.emit(&mut buf[..56], IP_B, &big).expect("emit");
        assert_eq!(len, 56);
        assert_eq!(
            error.emit(&mut buf[..55], IP_B, &big),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn suppressed_errors() {
        let mut buf = [0u8; 576];
        let emit = |buf: &mut [u8], packet: &[u8]| {
            emit_error_v4(buf, Icmpv4Message::DstUnreachable, 1, IP_B, packet)
        };
        // About an ICMP error.
        assert_eq!(
            emit(&mut buf, &ICMPV4_PORT_UNREACHABLE[14..]),
            Err(Error::IcmpErrorSuppressed)
        );
        // About an echo request: allowed.
        assert!(emit(&mut buf, &ICMPV4_ECHO_REQUEST[14..]).is_ok());
        // About a non-first fragment.
        assert_eq!(
            emit(&mut buf, &IPV4_LAST_FRAGMENT[14..]),
            Err(Error::IcmpErrorSuppressed)
        );
        for (at, addr) in [
            (12, [0, 0, 0, 0]),
            (12, [127, 0, 0, 1]),
            (12, [224, 0, 0, 5]),
            (12, [255, 255, 255, 255]),
            (12, [240, 0, 0, 1]),
            (16, [224, 0, 0, 5]),
            (16, [255, 255, 255, 255]),
        ] {
            let mut packet = UDPV4[14..].to_vec();
            packet[at..at + 4].copy_from_slice(&addr);
            assert_eq!(
                emit(&mut buf, &packet),
                Err(Error::IcmpErrorSuppressed),
                "{addr:?}"
            );
        }
        assert_eq!(
            emit_error_v4(&mut buf, Icmpv4Message::EchoReply, 0, IP_B, &UDPV4[14..]),
            Err(Error::Unsupported)
        );
        assert_eq!(emit(&mut buf, &UDPV4[14..40]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.msg_code(), packet.verify_checksum(), packet.rest_of_header());
                let _ = (packet.echo_ident(), packet.echo_seq_no(), packet.data(), Icmpv4Repr::parse(&packet));
            }
            let mut copy = bytes.clone();
            if let Ok(mut quote) = Ipv4Quote::new_checked(&mut copy[..]) {
                let _ = (quote.src_addr(), quote.dst_addr(), quote.protocol(), quote.src_port(), quote.dst_port());
                let _ = (quote.is_fragment(), quote.has_ports(), quote.echo_ident(), quote.payload());
                quote.set_src_addr(IP_A);
                quote.set_dst_port(1);
                quote.set_echo_ident(2);
            }
            let mut buf = [0u8; 600];
            let _ = emit_error_v4(&mut buf, Icmpv4Message::TimeExceeded, 0, IP_B, &bytes);
        }

        #[test]
        fn quote_rewrites_equal_recompute(src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(), tcp in any::<bool>()) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut whole = if tcp { TCPV4_SYN[14..].to_vec() } else { UDPV4[14..].to_vec() };
            let mut quote = Ipv4Quote::new_checked(&mut whole[..]).expect("fixture");
            quote.set_src_addr(src);
            quote.set_dst_addr(dst);
            quote.set_src_port(sport);
            quote.set_dst_port(dport);
            let mut ip = Ipv4Packet::new_checked(&mut whole[..]).expect("fixture");
            let header_incremental = ip.header_checksum();
            ip.fill_checksum();
            prop_assert_eq!(header_incremental, ip.header_checksum());
            let l4 = ip.payload_mut();
            if tcp {
                let mut seg = TcpPacket::new_checked(l4).expect("fixture");
                let incremental = seg.checksum();
                seg.fill_checksum_v4(src, dst);
                prop_assert_eq!(incremental, seg.checksum());
            } else {
                let mut dgram = UdpPacket::new_checked(l4).expect("fixture");
                let incremental = dgram.checksum();
                dgram.fill_checksum_v4(src, dst);
                prop_assert_eq!(incremental, dgram.checksum());
            }
        }
    }
}
