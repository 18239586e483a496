//! Typed zero-copy views over packet bytes, in the style of smoltcp's
//! `wire` module.
//!
//! Owns: the layout of Ethernet II (with one optional 802.1Q tag), ARP,
//! IPv4, IPv6 (with its extension header chain), TCP, UDP, ICMPv4, ICMPv6
//! and NDP; reading and writing their fields in place; a few builders
//! (ARP and NDP answers, ICMP echo replies and error messages). Must not
//! touch: NAT decisions, connection state, counters, I/O, clocks.
//!
//! Conventions, the same in every file:
//! - A view `XxxPacket<T: AsRef<[u8]>>` wraps a buffer. `new_checked`
//!   validates lengths and the fields that other accessors rely on, and is
//!   the only constructor for bytes from the network; after it succeeds no
//!   accessor can panic. `new_unchecked` is for buffers the caller sized
//!   itself (emitting); accessors may panic on a short buffer there.
//! - Accessors are one big-endian read at a fixed offset. Setters exist only
//!   for `T: AsMut<[u8]>`. Setters of fields the NAT rewrites (addresses,
//!   ports, TTL, echo identifiers) keep the covering checksum valid with an
//!   RFC 1624 incremental update, and say so; the others are raw and meant
//!   for building, followed by `fill_checksum`.
//! - A view's buffer is exactly its protocol's bytes: build an L4 view from
//!   the L3 view's `payload()`, which is bounded by the L3 length field
//!   (so Ethernet padding never reaches a checksum).
//! - `XxxRepr` types hold a parsed meaning, with `parse` and `emit`.
//! - Nothing here allocates.
//!
//! Fixtures: the tests at the bottom of each file use frames captured with
//! tcpdump on a veth pair between network namespaces (198.18.0.0/15,
//! 2001:db8::/32); each array says which command produced it. The capture
//! set-up was: namespaces A, R (forwarding) and C; A `vA`
//! 02:00:00:00:00:0a 198.18.0.1/24 2001:db8::1/64, R `vRA`
//! 02:00:00:00:00:0b 198.18.0.2/24 2001:db8::2/64 and `vRC` 198.18.1.1/24
//! 2001:db8:1::1/64, C `vC` 198.18.1.2/24 2001:db8:1::2/64; MTU 1280, TX
//! checksum offload off (`ethtool -K <dev> tx off`, so checksums on the
//! wire are final), DAD off; `tcpdump -i vA -w all.pcap` in A.

use std::fmt;

pub mod arp;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use icmpv4::{Icmpv4ErrorMessage, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Ipv4Quote};
pub use icmpv6::{Icmpv6ErrorMessage, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, Ipv6Quote};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Chain, Ipv6Fragment, Ipv6Packet, Ipv6Repr};
pub use ndp::{NdpRepr, NeighborFlags};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;

/// Why bytes could not be viewed, parsed or emitted. Each variant is a
/// drop reason the pipeline can count.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field says.
    Truncated,
    /// A field holds a value the protocol forbids (wrong version, a header
    /// length below the minimum, a length field below the header length).
    Malformed,
    /// Well formed, but not a kind this code handles (ARP for another link
    /// type, an ICMP type without the asked-for body).
    Unsupported,
    /// The checksum does not verify.
    Checksum,
    /// The IPv6 extension header chain is longer than
    /// [`ipv6::MAX_EXTENSION_HEADERS`].
    ExtensionChainTooLong,
    /// The output buffer is too small for what is to be emitted.
    BufferTooSmall,
    /// RFC 1122 section 3.2.2 or RFC 4443 section 2.4(e) forbid sending an
    /// ICMP error about this packet (it is itself an ICMP error, a non-first
    /// fragment, or addressed to or from a multicast or unspecified
    /// address).
    IcmpErrorSuppressed,
}

impl Error {
    /// A short stable name, for counters and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Malformed => "malformed",
            Error::Unsupported => "unsupported",
            Error::Checksum => "checksum",
            Error::ExtensionChainTooLong => "extension_chain_too_long",
            Error::BufferTooSmall => "buffer_too_small",
            Error::IcmpErrorSuppressed => "icmp_error_suppressed",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Result of every fallible operation in [`crate::wire`].
pub type Result<T> = core::result::Result<T, Error>;

/// Declares a field enum with an `Unknown(raw)` catch-all and lossless
/// conversions from and to the raw value, as smoltcp does. Build values
/// with `From<raw>` so that known values never end up in `Unknown`.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$meta:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$meta])* $variant, )+
            /// A value this enum does not name.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
pub(crate) use enum_with_unknown;

enum_with_unknown! {
    /// IP protocol numbers (IPv4 protocol, IPv6 next header), IANA
    /// "Assigned Internet Protocol Numbers".
    pub enum IpProtocol(u8) {
        /// IPv6 Hop-by-Hop Options (an extension header).
        HopByHop = 0,
        Icmp = 1,
        Igmp = 2,
        Tcp = 6,
        Udp = 17,
        /// IPv6 Routing header.
        Ipv6Route = 43,
        /// IPv6 Fragment header.
        Ipv6Frag = 44,
        /// Encapsulating Security Payload: opaque, ends header parsing.
        Esp = 50,
        /// Authentication Header.
        Ah = 51,
        Icmpv6 = 58,
        /// IPv6 No Next Header.
        Ipv6NoNxt = 59,
        /// IPv6 Destination Options.
        Ipv6Opts = 60,
        Sctp = 132,
    }
}

/// Big-endian u16 at `at`. Callers have checked the length.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Big-endian u32 at `at`. Callers have checked the length.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Test helpers shared by the wire tests: the captured frames that more
/// than one protocol's tests read.
#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips() {
        for raw in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(raw)), raw);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }

    #[test]
    fn error_names_are_distinct() {
        let all = [
            Error::Truncated,
            Error::Malformed,
            Error::Unsupported,
            Error::Checksum,
            Error::ExtensionChainTooLong,
            Error::BufferTooSmall,
            Error::IcmpErrorSuppressed,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(Error::Truncated.to_string(), "truncated");
    }
}
