//! The bench's test frames: Ethernet + IPv4 + UDP with an 18-byte bench
//! header in the payload, and the flow numbering.
//!
//! Owns the frame layout and the mapping from flow number to client
//! endpoint. Frame sizes follow RFC 2544: the size counts the 4-byte FCS
//! the link adds, so a 64-byte frame is 60 bytes handed to the link.
//!
//! Bench header (payload bytes 0..18, big endian):
//! `tag u16 | flow u32 | seq u32 | sent_ns u64` — `tag` names the
//! measurement (the sink ignores stragglers of an earlier one), `seq`
//! counts the datagrams of one flow from 0, `sent_ns` is the generator's
//! clock (nanoseconds since the harness's start, CLOCK_MONOTONIC through
//! `Instant`) when it built the frame.

use std::net::Ipv4Addr;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const HEADER_LEN: usize = 18;
/// Smallest frame that holds the bench header: 60 bytes + FCS.
pub const MIN_FRAME: usize = 64;
/// Largest frame for a 1500-byte MTU: 1514 bytes + FCS.
pub const MAX_FRAME: usize = 1518;
const FCS: usize = 4;
/// Client endpoints per source address.
pub const PORTS_PER_ADDR: u32 = 50_000;
const FIRST_PORT: u16 = 10_000;

/// Where the frames go.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
}

/// The client endpoint of flow `flow`: 198.19.0.1 onward, ports
/// 10000..60000 (2^32 flows fit well inside 198.19.0.0/16 × ports).
pub fn flow_endpoint(flow: u32) -> (Ipv4Addr, u16) {
    let host = 1 + flow / PORTS_PER_ADDR;
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + host);
    (ip, FIRST_PORT + (flow % PORTS_PER_ADDR) as u16)
}

/// Bytes handed to the link for a frame of `size` (FCS included).
pub fn link_len(size: usize) -> usize {
    size.clamp(MIN_FRAME, MAX_FRAME) - FCS
}

/// The decoded bench header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchHeader {
    pub tag: u16,
    pub flow: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl BenchHeader {
    pub fn parse(payload: &[u8]) -> Option<BenchHeader> {
        let h = payload.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&h[10..18]);
        Some(BenchHeader {
            tag: u16::from_be_bytes([h[0], h[1]]),
            flow: u32_at(2),
            seq: u32_at(6),
            sent_ns: u64::from_be_bytes(ns),
        })
    }

    fn emit(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.tag.to_be_bytes());
        out[2..6].copy_from_slice(&self.flow.to_be_bytes());
        out[6..10].copy_from_slice(&self.seq.to_be_bytes());
        out[10..18].copy_from_slice(&self.sent_ns.to_be_bytes());
    }
}

/// Writes a whole frame of `buf.len()` bytes (at least 60) for `h`. The
/// payload after the bench header must be zero (it adds nothing to the
/// checksum): callers allocate zeroed buffers and reuse them.
pub fn write_frame(buf: &mut [u8], t: &Target, h: &BenchHeader) {
    let len = buf.len();
    let (src_ip, src_port) = flow_endpoint(h.flow);
    // Ethernet.
    buf[0..6].copy_from_slice(&t.dst_mac);
    buf[6..12].copy_from_slice(&t.src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // IPv4: no options, DF, TTL 64, UDP.
    let ip_len = (len - ETH_LEN) as u16;
    let ip = &mut buf[ETH_LEN..ETH_LEN + IPV4_LEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&0u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&t.dst_ip.octets());
    let ip_csum = !fold(sum(ip));
    ip[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    // UDP.
    let l4 = ETH_LEN + IPV4_LEN;
    let udp_len = (len - l4) as u16;
    let udp = &mut buf[l4..];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&t.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    h.emit(&mut udp[UDP_LEN..UDP_LEN + HEADER_LEN]);
    let pseudo = sum(&src_ip.octets()) + sum(&t.dst_ip.octets()) + 17 + u32::from(udp_len);
    // Only the headers and the bench header are non-zero.
    let mut c = !fold(pseudo + sum(&udp[..UDP_LEN + HEADER_LEN]));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

/// One's-complement sum of 16-bit words (odd byte padded), not folded.
fn sum(bytes: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = chunks.remainder() {
        s += u32::from(*b) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(198, 18, 10, 10),
            dst_port: 7000,
        }
    }

    /// A 60-byte frame, byte for byte. The checksums (0xa48e IPv4, 0xa718
    /// UDP) were checked with tshark 4.0: these bytes through `text2pcap`,
    /// then `tshark -o ip.check_checksum:TRUE -o udp.check_checksum:TRUE
    /// -V` reports "Header checksum status: Good" and "Checksum Status:
    /// Good".
    #[test]
    fn minimum_frame_bytes() {
        let mut buf = vec![0u8; link_len(64)];
        let h = BenchHeader {
            tag: 0x8001,
            flow: 1,
            seq: 2,
            sent_ns: 3,
        };
        write_frame(&mut buf, &target(), &h);
        let expected: [u8; 60] = [
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // ethernet
            0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xa4, 0x8e, // ip
            198, 19, 0, 1, 198, 18, 10, 10, //
            0x27, 0x11, 0x1b, 0x58, 0x00, 0x1a, 0xa7, 0x18, // udp
            0x80, 0x01, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // bench header
        ];
        assert_eq!(buf, expected);
        assert_eq!(fold(sum(&buf[14..34])), 0xffff, "IPv4 header checksum");
        let pseudo = sum(&buf[26..34]) + 17 + 26;
        assert_eq!(fold(pseudo + sum(&buf[34..])), 0xffff, "UDP checksum");
    }

    #[test]
    fn large_frame_checksum_holds() {
        let mut buf = vec![0u8; link_len(1500)];
        assert_eq!(buf.len(), 1496);
        let h = BenchHeader {
            tag: 7,
            flow: 123_456,
            seq: 99,
            sent_ns: u64::MAX - 5,
        };
        write_frame(&mut buf, &target(), &h);
        let pseudo = sum(&buf[26..34]) + 17 + (1496 - 34) as u32;
        assert_eq!(fold(pseudo + sum(&buf[34..])), 0xffff);
        assert_eq!(BenchHeader::parse(&buf[42..]), Some(h));
    }

    #[test]
    fn flows_map_to_distinct_endpoints() {
        assert_eq!(flow_endpoint(0), (Ipv4Addr::new(198, 19, 0, 1), 10_000));
        assert_eq!(
            flow_endpoint(49_999),
            (Ipv4Addr::new(198, 19, 0, 1), 59_999)
        );
        assert_eq!(
            flow_endpoint(50_000),
            (Ipv4Addr::new(198, 19, 0, 2), 10_000)
        );
        assert_eq!(flow_endpoint(1_000_000).0, Ipv4Addr::new(198, 19, 0, 21));
    }

    #[test]
    fn short_payload_is_not_a_header() {
        assert_eq!(BenchHeader::parse(&[0; 17]), None);
    }
}
