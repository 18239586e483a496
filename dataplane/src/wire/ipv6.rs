//! IPv6 fixed headers (RFC 8200) and the extension header chain.
//!
//! Owns: the 40-byte header layout, [`Ipv6Repr`], and the bounded walk
//! over extension headers to the upper-layer header ([`walk_chain`]). Must
//! not touch: the upper layer's checksum (IPv6 has no header checksum, and
//! L4 views own theirs) and reassembly.

use std::net::Ipv6Addr;

use super::{read_u16, read_u32, write_u16, Error, IpProtocol, Result};
use crate::checksum;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Most extension headers [`walk_chain`] follows before it gives up with
/// [`Error::ExtensionChainTooLong`]. Real traffic uses at most a few; a
/// long chain is an attack on middleboxes (RFC 7112).
pub const MAX_EXTENSION_HEADERS: usize = 8;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

/// A view of an IPv6 packet. After [`Self::new_checked`], the buffer holds
/// the fixed header and at least `payload_len` bytes after it.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps bytes from the network. Rejects version != 6
    /// ([`Error::Malformed`]) and a buffer shorter than 40 bytes plus the
    /// payload length ([`Error::Truncated`]). Jumbograms (payload length 0
    /// with a Jumbo Payload option) are not supported: their payload reads
    /// as empty.
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
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if len < self.total_len() {
            return Err(Error::Truncated);
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
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Header plus payload length.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The fixed header's next header (the first extension header, or the
    /// upper layer). See [`Self::chain`] for the upper layer.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(field::SRC.start))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(field::DST.start))
    }

    fn addr(&self, at: usize) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        out
    }

    /// Everything after the fixed header up to `payload_len`, bounded by
    /// the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        &b[HEADER_LEN.min(end)..end]
    }

    /// Walks the extension headers to the upper layer. Offsets in the
    /// result count from the start of this packet.
    pub fn chain(&self) -> Result<Ipv6Chain> {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        walk_chain(self.next_header(), &b[..end], HEADER_LEN)
    }

    /// The upper-layer pseudo-header sum (RFC 8200 section 8.1) for
    /// `protocol` and an upper-layer length of `len`.
    #[inline]
    pub fn pseudo_header_sum(&self, protocol: IpProtocol, len: usize) -> u16 {
        checksum::pseudo_header_v6(
            self.src_addr(),
            self.dst_addr(),
            protocol.into(),
            len as u32,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Rewrites the source address. IPv6 has no header checksum; the L4
    /// checksum is the caller's (`TcpPacket::adjust_checksum_for_address`).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Rewrites the destination address; like [`Self::set_src_addr`].
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Swaps source and destination (pseudo-header sums are unchanged).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let b = self.buffer.as_mut();
        for i in 0..16 {
            b.swap(field::SRC.start + i, field::DST.start + i);
        }
    }

    /// Version 6, traffic class and flow label.
    #[inline]
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[..4].copy_from_slice(&word.to_be_bytes());
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    #[inline]
    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.into();
    }

    /// Everything after the fixed header up to `payload_len`, bounded by
    /// the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len().min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

/// Where the upper layer is, as found by [`walk_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Chain {
    /// The upper-layer protocol: TCP, UDP, ICMPv6..., or where the walk
    /// stopped: `Esp` (opaque), `Ipv6NoNxt`, an unknown value, or, for a
    /// non-first fragment, the fragment header's next header.
    pub upper_protocol: IpProtocol,
    /// Offset of the upper-layer header (or, for a non-first fragment, of
    /// the fragment data) from the start of the packet.
    pub upper_offset: usize,
    /// Present when the chain has a fragment header.
    pub fragment: Option<Ipv6Fragment>,
    /// Number of extension headers walked.
    pub extension_headers: u8,
}

impl Ipv6Chain {
    /// Part of a fragmented packet (a fragment header with offset != 0 or M
    /// set; an "atomic fragment", offset 0 and M clear, is not).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.fragment
            .is_some_and(|f| f.offset != 0 || f.more_fragments)
    }

    /// Whether the bytes at `upper_offset` are the upper-layer header
    /// (not a non-first fragment).
    #[inline]
    pub fn has_upper_header(&self) -> bool {
        self.fragment.is_none_or(|f| f.offset == 0)
    }
}

/// The fragment header's fields (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset of this fragment's data in bytes (the field times 8).
    pub offset: u16,
    /// The M flag.
    pub more_fragments: bool,
    pub ident: u32,
    /// Offset of the fragment header from the start of the packet.
    pub header_offset: usize,
}

/// Walks the extension headers of `packet` (the bytes of an IPv6 packet,
/// bounded by its payload length), starting with header type `first` at
/// `offset`. Follows Hop-by-Hop (first position only), Routing,
/// Destination Options, Fragment and AH; stops at ESP, No Next Header, a
/// non-first fragment, or any other value (the upper layer). At most
/// [`MAX_EXTENSION_HEADERS`] headers; each moves at least 8 bytes, so the
/// walk ends.
pub fn walk_chain(first: IpProtocol, packet: &[u8], offset: usize) -> Result<Ipv6Chain> {
    let mut chain = Ipv6Chain {
        upper_protocol: first,
        upper_offset: offset,
        fragment: None,
        extension_headers: 0,
    };
    loop {
        let at = chain.upper_offset;
        let len = match chain.upper_protocol {
            IpProtocol::HopByHop if chain.extension_headers > 0 => return Err(Error::Malformed),
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                (usize::from(*packet.get(at + 1).ok_or(Error::Truncated)?) + 1) * 8
            }
            IpProtocol::Ah => (usize::from(*packet.get(at + 1).ok_or(Error::Truncated)?) + 2) * 4,
            IpProtocol::Ipv6Frag => 8,
            _ => return Ok(chain),
        };
        if usize::from(chain.extension_headers) >= MAX_EXTENSION_HEADERS {
            return Err(Error::ExtensionChainTooLong);
        }
        let header = packet.get(at..at + len).ok_or(Error::Truncated)?;
        if chain.upper_protocol == IpProtocol::Ipv6Frag {
            if chain.fragment.is_some() {
                return Err(Error::Malformed);
            }
            chain.fragment = Some(parse_fragment(header, at));
        }
        chain.extension_headers += 1;
        chain.upper_protocol = IpProtocol::from(header[0]);
        chain.upper_offset = at + len;
        if !chain.has_upper_header() {
            return Ok(chain);
        }
    }
}

/// Reads an 8-byte fragment header found at `at`.
fn parse_fragment(header: &[u8], at: usize) -> Ipv6Fragment {
    let off_flags = read_u16(header, 2);
    Ipv6Fragment {
        offset: off_flags & 0xfff8,
        more_fragments: off_flags & 1 != 0,
        ident: read_u32(header, 4),
        header_offset: at,
    }
}

/// The meaning of a fixed IPv6 header, for building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: IpProtocol,
    /// Length of what follows the fixed header.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        let mut packet = Ipv6Packet::new_unchecked(header);
        packet.set_version_class_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    #[test]
    fn parses_captured_echo_request() {
        let packet = Ipv6Packet::new_checked(&ICMPV6_ECHO_REQUEST[14..]).expect("fixture");
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0);
        assert_eq!(packet.flow_label(), 0x51ce2);
        assert_eq!(packet.payload_len(), 32);
        assert_eq!(packet.next_header(), IpProtocol::Icmpv6);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), addr("2001:db8::1"));
        assert_eq!(packet.dst_addr(), addr("2001:db8::2"));
        assert_eq!(packet.payload().len(), 32);
        let chain = packet.chain().expect("no extension headers");
        assert_eq!(chain.upper_protocol, IpProtocol::Icmpv6);
        assert_eq!(chain.upper_offset, 40);
        assert_eq!(chain.fragment, None);
        assert_eq!(chain.extension_headers, 0);
        assert!(chain.has_upper_header());
    }

    #[test]
    fn walks_captured_hop_by_hop() {
        let packet = Ipv6Packet::new_checked(&MLDV2_REPORT[14..]).expect("fixture");
        assert_eq!(packet.next_header(), IpProtocol::HopByHop);
        let chain = packet.chain().expect("valid chain");
        assert_eq!(chain.upper_protocol, IpProtocol::Icmpv6);
        assert_eq!(chain.upper_offset, 48);
        assert_eq!(chain.extension_headers, 1);
        assert_eq!(packet.as_bytes()[48], 143, "MLDv2 report type");
    }

    #[test]
    fn walks_captured_last_fragment() {
        let packet = Ipv6Packet::new_checked(&IPV6_LAST_FRAGMENT[14..]).expect("fixture");
        assert_eq!(packet.next_header(), IpProtocol::Ipv6Frag);
        let chain = packet.chain().expect("valid chain");
        assert!(chain.is_fragment());
        assert!(!chain.has_upper_header());
        assert_eq!(chain.upper_offset, 48);
        assert_eq!(chain.upper_protocol, IpProtocol::Icmpv6);
        assert_eq!(
            chain.fragment,
            Some(Ipv6Fragment {
                offset: 1232,
                more_fragments: false,
                ident: 0x9976_0b2d,
                header_offset: 40,
            })
        );
    }

    /// Builds a packet from the captured UDP one with `headers` (each a
    /// (type, bytes) pair) inserted before the UDP header.
    fn with_extensions(headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let ip = &UDPV6[14..];
        let mut out = ip[..40].to_vec();
        let mut next = Vec::new();
        for (kind, _) in headers.iter().skip(1) {
            next.push(*kind);
        }
        next.push(17);
        out[6] = headers.first().map_or(17, |h| h.0);
        for ((_, bytes), nh) in headers.iter().zip(next) {
            let mut h = bytes.clone();
            h[0] = nh;
            out.extend_from_slice(&h);
        }
        out.extend_from_slice(&ip[40..]);
        let payload_len = (out.len() - 40) as u16;
        out[4..6].copy_from_slice(&payload_len.to_be_bytes());
        out
    }

    #[test]
    fn walks_routing_destination_fragment_ah() {
        let bytes = with_extensions(&[
            (0, vec![0, 0, 1, 4, 0, 0, 0, 0]), // hop-by-hop, PadN
            (60, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // dest opts, 16 bytes
            (43, vec![0, 0, 0, 0, 0, 0, 0, 0]), // routing type 0, no segments
            (44, vec![0, 0, 0, 0, 0, 0, 0, 7]), // atomic fragment
            (51, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]), // AH, 12 bytes
        ]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        let chain = packet.chain().expect("valid chain");
        assert_eq!(chain.upper_protocol, IpProtocol::Udp);
        assert_eq!(chain.upper_offset, 40 + 8 + 16 + 8 + 8 + 12);
        assert_eq!(chain.extension_headers, 5);
        assert!(!chain.is_fragment(), "atomic fragment");
        assert!(chain.has_upper_header());
        assert_eq!(chain.fragment.map(|f| f.ident), Some(7));
        assert_eq!(
            &bytes[chain.upper_offset + 2..chain.upper_offset + 4],
            &[0, 9]
        );
    }

    #[test]
    fn chain_errors() {
        // Hop-by-hop after the first position.
        let bytes = with_extensions(&[(60, vec![0; 8]), (0, vec![0; 8])]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(packet.chain(), Err(Error::Malformed));
        // Two fragment headers.
        let bytes = with_extensions(&[(44, vec![0; 8]), (44, vec![0; 8])]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(packet.chain(), Err(Error::Malformed));
        // Nine destination options headers.
        let nine: Vec<_> = (0..9).map(|_| (60, vec![0; 8])).collect();
        let bytes = with_extensions(&nine);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(packet.chain(), Err(Error::ExtensionChainTooLong));
        let eight: Vec<_> = (0..8).map(|_| (60, vec![0; 8])).collect();
        let bytes = with_extensions(&eight);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(
            packet.chain().map(|c| c.upper_protocol),
            Ok(IpProtocol::Udp)
        );
        // A header length beyond the payload.
        let mut bytes = with_extensions(&[(60, vec![0; 8])]);
        bytes[41] = 9;
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(packet.chain(), Err(Error::Truncated));
        // ESP stops the walk.
        let bytes = with_extensions(&[(50, vec![0; 8])]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).expect("built");
        assert_eq!(
            packet.chain().map(|c| (c.upper_protocol, c.upper_offset)),
            Ok((IpProtocol::Esp, 40))
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let ip = &UDPV6[14..];
        assert_eq!(
            Ipv6Packet::new_checked(&ip[..39]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&ip[..55]).err(),
            Some(Error::Truncated)
        );
        let mut v4 = ip.to_vec();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn setters_and_repr_emit() {
        // R's neighbour advertisement: traffic class 0, flow label 0,
        // hop limit 255.
        let packet = Ipv6Packet::new_checked(&NDP_NEIGHBOR_ADVERT[14..]).expect("fixture");
        let repr = Ipv6Repr::parse(&packet);
        assert_eq!(repr.hop_limit, 255);
        assert_eq!(repr.payload_len, 32);
        let mut header = [0u8; 40];
        repr.emit(&mut header).expect("room");
        assert_eq!(header, NDP_NEIGHBOR_ADVERT[14..54]);
        let flowed =
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&ICMPV6_ECHO_REPLY[14..]).expect("fixture"));
        flowed.emit(&mut header).expect("room");
        assert_eq!(header, ICMPV6_ECHO_REPLY[14..54]);

        let mut bytes = ICMPV6_ECHO_REQUEST;
        let mut packet = Ipv6Packet::new_checked(&mut bytes[14..]).expect("fixture");
        packet.set_src_addr(addr("2001:db8:ff::9"));
        packet.set_dst_addr(addr("2001:db8:ff::1"));
        packet.set_hop_limit(7);
        packet.swap_addrs();
        assert_eq!(packet.src_addr(), addr("2001:db8:ff::1"));
        assert_eq!(packet.dst_addr(), addr("2001:db8:ff::9"));
        assert_eq!(packet.hop_limit(), 7);
    }

    proptest! {
        #[test]
        fn new_checked_and_chain_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(packet) = Ipv6Packet::new_checked(&bytes[..]) {
                if let Ok(chain) = packet.chain() {
                    prop_assert!(chain.upper_offset <= packet.total_len());
                    prop_assert!(usize::from(chain.extension_headers) <= MAX_EXTENSION_HEADERS);
                }
            }
        }

        #[test]
        fn random_chains_terminate(
            kinds in proptest::collection::vec(prop_oneof![Just(0u8), Just(43), Just(44), Just(51), Just(60), Just(50), Just(59), Just(6), any::<u8>()], 1..20),
            lens in proptest::collection::vec(any::<u8>(), 20),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // A chain of random headers (random length bytes) over a
            // buffer of random content.
            let mut packet = vec![0u8; 40];
            for (i, kind) in kinds.iter().enumerate() {
                let next = kinds.get(i + 1).copied().unwrap_or(17);
                let _ = kind;
                let hlen = lens[i] % 4;
                packet.push(next);
                packet.push(hlen);
                packet.extend(std::iter::repeat_n(0, 6 + usize::from(hlen) * 8));
            }
            packet.extend_from_slice(&tail);
            let result = walk_chain(IpProtocol::from(kinds[0]), &packet, 40);
            if let Ok(chain) = result {
                prop_assert!(chain.upper_offset <= packet.len());
                prop_assert!(usize::from(chain.extension_headers) <= MAX_EXTENSION_HEADERS);
            }
        }
    }
}
