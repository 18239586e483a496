//! ARP (RFC 826) packets, parsed and built for Ethernet/IPv4 only.
//!
//! Owns: the ARP packet layout, [`ArpRepr`] with replies and gratuitous
//! announcements (RFC 5227 section 3). Must not touch: the neighbour table
//! and the decision to answer (the caller's).

use std::net::Ipv4Addr;

use super::ethernet::{self, EtherType, EthernetAddress, EthernetRepr};
use super::{enum_with_unknown, read_u16, write_u16, Error, Result};

enum_with_unknown! {
    /// ARP operation codes.
    pub enum ArpOperation(u16) {
        Request = 1,
        Reply = 2,
    }
}

/// Hardware type for Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;
/// Length of the fixed part (before the addresses).
pub const FIXED_LEN: usize = 8;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = 28;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
}

/// A view of an ARP packet of any hardware/protocol address sizes.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps bytes from the network: the fixed part and all four
    /// addresses (sized by the length fields) must be present.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < FIXED_LEN || len < FIXED_LEN + 2 * self.addrs_len_half() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn addrs_len_half(&self) -> usize {
        usize::from(self.hardware_len()) + usize::from(self.protocol_len())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    pub fn source_hardware_addr(&self) -> &[u8] {
        let at = field::SHA;
        &self.buffer.as_ref()[at..at + usize::from(self.hardware_len())]
    }

    pub fn source_protocol_addr(&self) -> &[u8] {
        let at = field::SHA + usize::from(self.hardware_len());
        &self.buffer.as_ref()[at..at + usize::from(self.protocol_len())]
    }

    pub fn target_hardware_addr(&self) -> &[u8] {
        let at = field::SHA + self.addrs_len_half();
        &self.buffer.as_ref()[at..at + usize::from(self.hardware_len())]
    }

    pub fn target_protocol_addr(&self) -> &[u8] {
        let at = field::SHA + self.addrs_len_half() + usize::from(self.hardware_len());
        &self.buffer.as_ref()[at..at + usize::from(self.protocol_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value.into());
    }

    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    pub fn set_operation(&mut self, value: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, value.into());
    }

    /// Writes the four addresses; their lengths must match the length
    /// fields already set.
    fn set_addrs(&mut self, sha: &[u8], spa: &[u8], tha: &[u8], tpa: &[u8]) {
        let mut at = field::SHA;
        let buf = self.buffer.as_mut();
        for part in [sha, spa, tha, tpa] {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }
}

/// An Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an Ethernet/IPv4 ARP packet; other address kinds are
    /// [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self> {
        if packet.hardware_type() != HARDWARE_ETHERNET
            || packet.protocol_type() != EtherType::Ipv4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hardware_addr: mac(packet.source_hardware_addr())?,
            source_protocol_addr: ipv4(packet.source_protocol_addr())?,
            target_hardware_addr: mac(packet.target_hardware_addr())?,
            target_protocol_addr: ipv4(packet.target_protocol_addr())?,
        })
    }

    /// The reply to `request` from the owner of `request.target_protocol_addr`
    /// whose MAC is `hardware_addr`. The caller has checked that `request`
    /// is a request for one of its addresses.
    pub fn reply_to(request: &ArpRepr, hardware_addr: EthernetAddress) -> Self {
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: hardware_addr,
            source_protocol_addr: request.target_protocol_addr,
            target_hardware_addr: request.source_hardware_addr,
            target_protocol_addr: request.source_protocol_addr,
        }
    }

    /// A gratuitous ARP announcing `protocol_addr` at `hardware_addr`: a
    /// request whose sender and target IP are the address and whose target
    /// MAC is zero (RFC 5227 ARP Announcement, as Linux sends it).
    pub fn gratuitous(hardware_addr: EthernetAddress, protocol_addr: Ipv4Addr) -> Self {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: hardware_addr,
            source_protocol_addr: protocol_addr,
            target_hardware_addr: EthernetAddress::default(),
            target_protocol_addr: protocol_addr,
        }
    }

    /// Whether this announces its sender's own address.
    pub fn is_gratuitous(&self) -> bool {
        self.source_protocol_addr == self.target_protocol_addr
    }

    pub const fn buffer_len(&self) -> usize {
        ETHERNET_IPV4_LEN
    }

    /// Writes the 28-byte packet into the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let bytes = buf
            .get_mut(..ETHERNET_IPV4_LEN)
            .ok_or(Error::BufferTooSmall)?;
        let mut packet = ArpPacket::new_unchecked(bytes);
        packet.set_hardware_type(HARDWARE_ETHERNET);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_addrs(
            &self.source_hardware_addr.0,
            &self.source_protocol_addr.octets(),
            &self.target_hardware_addr.0,
            &self.target_protocol_addr.octets(),
        );
        Ok(())
    }

    /// Writes an Ethernet frame (14-byte header to `dst_addr` from the
    /// sender's MAC, then the packet, no padding) and returns its length.
    /// Replies go to the requester's MAC, announcements to broadcast.
    pub fn emit_frame(&self, buf: &mut [u8], dst_addr: EthernetAddress) -> Result<usize> {
        let len = ethernet::HEADER_LEN + ETHERNET_IPV4_LEN;
        let frame = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        EthernetRepr {
            src_addr: self.source_hardware_addr,
            dst_addr,
            ethertype: EtherType::Arp,
        }
        .emit(frame)?;
        self.emit(&mut frame[ethernet::HEADER_LEN..])?;
        Ok(len)
    }
}

fn mac(bytes: &[u8]) -> Result<EthernetAddress> {
    EthernetAddress::from_bytes(bytes).ok_or(Error::Truncated)
}

fn ipv4(bytes: &[u8]) -> Result<Ipv4Addr> {
    let four: [u8; 4] = bytes.try_into().map_err(|_| Error::Truncated)?;
    Ok(Ipv4Addr::from(four))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0a]);
    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0b]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn parse(frame: &[u8]) -> ArpRepr {
        let packet = ArpPacket::new_checked(&frame[14..]).expect("fixture");
        ArpRepr::parse(&packet).expect("fixture")
    }

    #[test]
    fn parses_captured_request_and_reply() {
        let packet = ArpPacket::new_checked(&ARP_REQUEST[14..]).expect("fixture");
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::Ipv4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(packet.source_hardware_addr(), &MAC_A.0);
        assert_eq!(packet.target_protocol_addr(), &IP_B.octets());
        let request = parse(&ARP_REQUEST);
        assert_eq!(
            request,
            ArpRepr {
                operation: ArpOperation::Request,
                source_hardware_addr: MAC_A,
                source_protocol_addr: IP_A,
                target_hardware_addr: EthernetAddress::default(),
                target_protocol_addr: IP_B,
            }
        );
        assert!(!request.is_gratuitous());
        assert_eq!(parse(&ARP_REPLY).operation, ArpOperation::Reply);
    }

    #[test]
    fn reply_is_byte_identical_to_kernel() {
        let request = parse(&ARP_REQUEST);
        let reply = ArpRepr::reply_to(&request, MAC_B);
        assert_eq!(reply, parse(&ARP_REPLY));
        let mut buf = [0u8; 64];
        let len = reply
            .emit_frame(&mut buf, request.source_hardware_addr)
            .expect("room");
        assert_eq!(&buf[..len], &ARP_REPLY[..]);
    }

    #[test]
    fn gratuitous_is_byte_identical_to_kernel() {
        let new_mac = EthernetAddress([2, 0, 0, 0, 0, 0x0e]);
        let garp = ArpRepr::gratuitous(new_mac, IP_B);
        assert!(garp.is_gratuitous());
        assert_eq!(garp, parse(&ARP_GRATUITOUS));
        let mut buf = [0u8; 42];
        let len = garp
            .emit_frame(&mut buf, EthernetAddress::BROADCAST)
            .expect("room");
        assert_eq!(&buf[..len], &ARP_GRATUITOUS[..]);
        assert_eq!(
            garp.emit_frame(&mut [0u8; 41], EthernetAddress::BROADCAST),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(
            ArpPacket::new_checked(&ARP_REQUEST[14..41]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            ArpPacket::new_checked(&ARP_REQUEST[14..21]).err(),
            Some(Error::Truncated)
        );
        let mut other = ARP_REQUEST;
        other[15] = 6; // hardware type 6 (IEEE 802)
        let packet = ArpPacket::new_checked(&other[14..]).expect("length ok");
        assert_eq!(ArpRepr::parse(&packet), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn new_checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = ArpPacket::new_checked(&bytes[..]) {
                let _ = (packet.source_hardware_addr(), packet.source_protocol_addr());
                let _ = (packet.target_hardware_addr(), packet.target_protocol_addr());
                let _ = ArpRepr::parse(&packet);
            }
        }
    }
}
