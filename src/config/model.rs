//! The validated configuration: plain typed data, no spans, no TOML.
//!
//! Owns: the [`Config`] types, their defaults and the names of the enum
//! values as written in the file. Must not: read files, report errors, or
//! depend on other vipgate modules (the dataplane maps these enums to its
//! own types).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

/// `[node] control_socket` when not given.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/vipgate/control.sock";
/// `maglev_table_size` when not given: the prime the Maglev paper uses.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
/// Largest accepted `maglev_table_size` (bounds memory per service).
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 16_777_213;
/// A Maglev table must have at least this many entries per backend, so
/// each backend's share stays within about 1% of its weight.
pub const MAGLEV_ENTRIES_PER_BACKEND: u32 = 100;
/// Most backends one service may have (the dataplane indexes them as `u16`).
pub const MAX_BACKENDS: usize = u16::MAX as usize;
/// `[dataplane] conn_capacity` when not given (entries per worker).
pub const DEFAULT_CONN_CAPACITY: u32 = 1 << 20;
/// Largest accepted `conn_capacity` per worker.
pub const MAX_CONN_CAPACITY: u32 = 1 << 27;
/// Largest accepted `[dataplane] workers`.
pub const MAX_WORKERS: u16 = 1024;

/// A whole vipgate configuration after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeConfig,
    /// Dataplane interfaces in file order; names are unique.
    pub interfaces: Vec<InterfaceConfig>,
    pub dataplane: DataplaneConfig,
    /// Services in file order; names and (vip, port, protocol) are unique.
    pub services: Vec<ServiceConfig>,
    /// `[vrrp]`: empty when the file has no VRRP section (every service VIP
    /// is then always served by this node).
    pub vrrp: VrrpConfig,
    /// `[bgp]`: no peers when the file has no BGP section (nothing is
    /// announced).
    pub bgp: BgpConfig,
}

/// `[node]`: this daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node name, 1..=63 of `A-Z a-z 0-9 - _ .`.
    pub name: String,
    /// Absolute path of the control socket, short enough for `sun_path`.
    pub control_socket: PathBuf,
}

/// `[[interface]]`: one link the dataplane opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Kernel link name (1..=15 bytes).
    pub name: String,
    pub role: InterfaceRole,
}

/// Which traffic a dataplane interface carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceRole {
    /// Clients reach VIPs through it.
    Client,
    /// Backends are reached through it.
    Backend,
    /// Both (the default).
    Both,
}

/// `[dataplane]`: workers, packet I/O and connection tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Worker threads; 0 means one per online core. At most [`MAX_WORKERS`].
    pub workers: u16,
    pub io: IoBackend,
    /// AF_PACKET ring geometry; ignored by [`IoBackend::Memory`].
    pub ring: RingConfig,
    /// Connection table entries per worker.
    pub conn_capacity: u32,
    pub timeouts: ConnTimeouts,
    /// Turn GRO/LRO/TSO off on dataplane links at start, restore on exit.
    pub disable_offloads: bool,
    /// A client's TCP ACK with no connection opens one on Maglev and
    /// source-hash services (flows an ECMP rehash or a failover moved here).
    pub mid_flow_pickup: bool,
}

/// Packet I/O backend of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoBackend {
    /// AF_PACKET RX rings (TPACKET_V2 or V3, `rx_ring`) with fanout.
    AfPacket,
    /// In-memory queues (tests and benchmarks; touches no link).
    Memory,
}

/// AF_PACKET RX ring layout and geometry (per ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// `rx_ring`: TPACKET_V2 (a frame is handed over as soon as it is
    /// written) or TPACKET_V3 (blocks, handed over when full or after
    /// `block_timeout`).
    pub version: RxRing,
    /// Bytes per block: a power of two, at least 4096.
    pub block_size: u32,
    /// Blocks per ring, at least 1.
    pub blocks: u32,
    /// Bytes per frame slot: a multiple of 16, 128..=block_size.
    pub frame_size: u32,
    /// The kernel retires a partly filled block after this long (whole
    /// milliseconds, at least 1ms). TPACKET_V3 only.
    pub block_timeout: Duration,
    /// `rx_coalesce`: TPACKET_V2 only (zero with V3). After a poll that
    /// found frames, the worker lets more gather this long before it takes
    /// the next batch; zero hands every frame over at once.
    pub coalesce: Duration,
}

/// `rx_ring`: the AF_PACKET RX ring layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RxRing {
    V2,
    V3,
}

/// `[dataplane.timeouts]`: idle time after which a connection entry expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeouts {
    /// TCP before the handshake completes.
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    pub udp: Duration,
}

/// `[[service]]`: one VIP:port/protocol and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Unique name, 1..=63 of `A-Z a-z 0-9 - _ .`.
    pub name: String,
    pub vip: IpAddr,
    pub port: NonZeroU16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// A prime; used only when [`Scheduler::uses_maglev_table`].
    pub maglev_table_size: u32,
    pub forwarding: Forwarding,
    /// 1..=[`MAX_BACKENDS`]; (address, port) unique; same address family
    /// as `vip`.
    pub backends: Vec<BackendConfig>,
    /// When the service counts as able to serve, and its sorry server.
    pub health: ServiceHealthConfig,
}

/// `[[service.backend]]`: one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: IpAddr,
    pub port: NonZeroU16,
    /// 0 drains the backend: no new connections, existing ones continue.
    pub weight: u16,
    /// `None`: not checked, always healthy.
    pub health: Option<HealthCheckConfig>,
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How a service picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// `rr`: round robin, weights other than 0 ignored.
    RoundRobin,
    /// `wrr`: weighted round robin.
    WeightedRoundRobin,
    /// `lc`: weighted least connections (per worker).
    LeastConnections,
    /// `sh`: weighted source address hash (over a Maglev table).
    SourceHash,
    /// `maglev`: weighted Maglev consistent hashing (the default); every
    /// node picks the same backend for a flow.
    Maglev,
}

/// How packets reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Forwarding {
    /// Destination NAT (LVS-NAT): replies must come back through vipgate.
    Nat,
}

impl Config {
    pub fn interface(&self, name: &str) -> Option<&InterfaceConfig> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl InterfaceRole {
    pub fn carries_clients(self) -> bool {
        matches!(self, InterfaceRole::Client | InterfaceRole::Both)
    }

    pub fn carries_backends(self) -> bool {
        matches!(self, InterfaceRole::Backend | InterfaceRole::Both)
    }
}

impl DataplaneConfig {
    /// Number of workers to start on a machine with `online_cores` cores.
    pub fn worker_count(&self, online_cores: usize) -> usize {
        match self.workers {
            0 => online_cores.max(1),
            n => usize::from(n),
        }
    }
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: 0,
            io: IoBackend::AfPacket,
            ring: RingConfig::default(),
            conn_capacity: DEFAULT_CONN_CAPACITY,
            timeouts: ConnTimeouts::default(),
            disable_offloads: true,
            mid_flow_pickup: true,
        }
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            version: RxRing::V3,
            block_size: 1 << 18,
            blocks: 64,
            frame_size: 2048,
            block_timeout: Duration::from_millis(1),
            coalesce: Duration::ZERO,
        }
    }
}

impl Default for ConnTimeouts {
    /// The IPVS defaults.
    fn default() -> Self {
        ConnTimeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(900),
            tcp_closing: Duration::from_secs(120),
            udp: Duration::from_secs(300),
        }
    }
}

impl ServiceConfig {
    pub fn vip_endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port.get())
    }
}

impl BackendConfig {
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port.get())
    }

    pub fn is_drained(&self) -> bool {
        self.weight == 0
    }
}

impl Scheduler {
    /// Whether the scheduler builds a Maglev lookup table of
    /// `maglev_table_size` entries (maglev, and sh which hashes the source
    /// address into one).
    pub fn uses_maglev_table(self) -> bool {
        matches!(self, Scheduler::Maglev | Scheduler::SourceHash)
    }
}

impl Protocol {
    /// IANA protocol number (the IPv4 protocol / IPv6 next-header value).
    pub fn ip_protocol_number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// A closed set of names that a config value must be one of.
pub(crate) trait Choice: Copy + 'static {
    /// What the value is, for messages: "scheduler".
    const WHAT: &'static str;
    /// All accepted values, in the order the error message lists them.
    const ALL: &'static [Self];
    /// Names that are known but not implemented yet.
    const NOT_YET: &'static [&'static str] = &[];
    fn name(self) -> &'static str;

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

/// Implements `name()`, `Display` and [`Choice`] from one name table.
macro_rules! named {
    ($ty:ty, $what:literal, [$($variant:path => $name:literal),+ $(,)?] $(, not_yet: $not_yet:expr)?) => {
        impl $ty {
            /// The name as written in the config file.
            pub fn name(self) -> &'static str {
                match self { $($variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl Choice for $ty {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($variant),+];
            $(const NOT_YET: &'static [&'static str] = $not_yet;)?
            fn name(self) -> &'static str {
                <$ty>::name(self)
            }
        }
    };
}

named!(InterfaceRole, "interface role", [
    InterfaceRole::Client => "client",
    InterfaceRole::Backend => "backend",
    InterfaceRole::Both => "both",
]);
named!(IoBackend, "io backend", [
    IoBackend::AfPacket => "af_packet",
    IoBackend::Memory => "memory",
], not_yet: &["af_xdp"]);
named!(RxRing, "rx ring", [RxRing::V2 => "v2", RxRing::V3 => "v3"]);
named!(Protocol, "protocol", [Protocol::Tcp => "tcp", Protocol::Udp => "udp"]);
named!(Scheduler, "scheduler", [
    Scheduler::RoundRobin => "rr",
    Scheduler::WeightedRoundRobin => "wrr",
    Scheduler::LeastConnections => "lc",
    Scheduler::SourceHash => "sh",
    Scheduler::Maglev => "maglev",
]);
named!(Forwarding, "forwarding method", [Forwarding::Nat => "nat"], not_yet: &["dr", "tunnel"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::from_name(s.name()), Some(*s));
        }
        assert_eq!(Scheduler::from_name("mglev"), None);
        assert_eq!(Scheduler::Maglev.to_string(), "maglev");
        assert_eq!(IoBackend::from_name("af_packet"), Some(IoBackend::AfPacket));
        assert_eq!(Forwarding::NOT_YET, &["dr", "tunnel"]);
    }

    #[test]
    fn worker_count_zero_means_one_per_core() {
        let mut dp = DataplaneConfig::default();
        assert_eq!(dp.worker_count(8), 8);
        assert_eq!(dp.worker_count(0), 1);
        dp.workers = 3;
        assert_eq!(dp.worker_count(8), 3);
    }

    #[test]
    fn prefixes_contain_their_vips() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = IpPrefix::new(ip("198.18.10.0"), 24).unwrap();
        assert!(net.contains(ip("198.18.10.10")) && net.contains(ip("198.18.10.255")));
        assert!(!net.contains(ip("198.18.11.1")) && !net.contains(ip("2001:db8::1")));
        assert_eq!(net.to_string(), "198.18.10.0/24");
        assert!(IpPrefix::new(ip("198.18.10.1"), 24).is_none(), "host bits");
        assert!(IpPrefix::new(ip("198.18.10.0"), 33).is_none());
        assert_eq!(
            IpPrefix::truncating(ip("198.18.10.77"), 20)
                .unwrap()
                .to_string(),
            "198.18.0.0/20"
        );
        let host = IpPrefix::host(ip("2001:db8:10::10"));
        assert!(host.is_host() && !host.is_ipv4() && host.prefix_len() == 128);
        assert!(host.contains(ip("2001:db8:10::10")) && !host.contains(ip("2001:db8:10::11")));
        let v6 = IpPrefix::new(ip("2001:db8:10::"), 48).unwrap();
        assert!(v6.contains(ip("2001:db8:10:ffff::1")) && !v6.contains(ip("2001:db8:11::1")));
        let all = IpPrefix::new(ip("0.0.0.0"), 0).unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
    }

    #[test]
    fn families_and_modes_by_name() {
        assert_eq!(
            AddressFamily::from_name("ipv6-unicast"),
            Some(AddressFamily::Ipv6Unicast)
        );
        assert_eq!(AddressFamily::of("198.18.0.1".parse().unwrap()).afi(), 1);
        assert_eq!(AnnounceMode::default(), AnnounceMode::Ecmp);
        assert_eq!(AnnounceMode::Vrrp.to_string(), "vrrp");
        assert_eq!(BgpConfig::default().peers.len(), 0);
    }

    #[test]
    fn roles() {
        assert!(InterfaceRole::Both.carries_clients() && InterfaceRole::Both.carries_backends());
        assert!(!InterfaceRole::Client.carries_backends());
        assert!(!InterfaceRole::Backend.carries_clients());
    }
}

/// `[vrrp]` and its `[[vrrp.instance]]` / `[[vrrp.sync_group]]` entries.
///
/// Keys under `[vrrp]` itself are defaults for every instance (`version`,
/// `advert_interval`, `preempt`, `preempt_delay`, `garp_*`,
/// `resign_grace`, `notify`, `checksum`, `vip_mode`); an instance may
/// override each of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpConfig {
    /// In file order; names unique; (interface, family, vrid) unique; a VIP
    /// belongs to at most one instance.
    pub instances: Vec<VrrpInstanceConfig>,
    /// Every member names an instance; an instance is in at most one group.
    pub sync_groups: Vec<SyncGroupConfig>,
}

/// `[[vrrp.instance]]`: one virtual router (RFC 5798 / RFC 3768).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstanceConfig {
    /// Unique name, 1..=63 of `A-Z a-z 0-9 - _ .` (used by `vipgate vrrp
    /// resign NAME` and in status).
    pub name: String,
    /// Kernel link the adverts go out on and the VIPs live on.
    pub interface: String,
    /// 1..=255.
    pub vrid: u8,
    /// 1..=255; 255 means this node owns the addresses (RFC 5798 5.2.4).
    pub priority: u8,
    pub version: VrrpVersion,
    /// v3: 10 ms..=40.95 s in whole centiseconds; v2: 1..=255 whole seconds.
    pub advert_interval: Duration,
    /// Default true: a higher-priority backup takes over from a master.
    pub preempt: bool,
    /// Wait this long before preempting a lower-priority master (0: at once).
    pub preempt_delay: Duration,
    /// 1..=255 addresses, all of one family (IPv6 needs version 3).
    pub vips: Vec<IpAddr>,
    pub vip_mode: VipMode,
    /// IPv4 with version 3 only; ignored otherwise.
    pub checksum: VrrpChecksum,
    /// Source of the adverts; default: the interface's first address of the
    /// family (IPv6: its link-local address). Required to be on the
    /// interface.
    pub unicast_source: Option<IpAddr>,
    /// When non-empty, adverts go to these addresses instead of the
    /// multicast group, and adverts from other sources are dropped.
    pub unicast_peers: Vec<IpAddr>,
    /// Version 2 simple-text authentication (at most 8 bytes).
    pub auth_pass: Option<String>,
    /// Answer with 00-00-5E-00-01-{vrid} (IPv4) / 00-00-5E-00-02-{vrid}.
    pub virtual_mac: bool,
    pub garp: GarpConfig,
    /// After a planned resign (or SIGTERM), keep forwarding VIP traffic that
    /// still arrives for this long. Default 3 s.
    pub resign_grace: Duration,
    /// Command run on every transition as `COMMAND INSTANCE OLD NEW REASON`.
    pub notify: Option<String>,
    pub tracks: Vec<TrackConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VrrpVersion {
    V2,
    V3,
}

/// Where a master's VIPs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VipMode {
    /// The userspace dataplane answers ARP/ND for them and forwards their
    /// services (the default).
    Dataplane,
    /// Added to and removed from the interface through rtnetlink, as
    /// keepalived does, for nodes that forward in the kernel.
    Kernel,
}

/// IPv4 VRRPv3 checksum: with the pseudo-header (RFC 5798 as keepalived and
/// FRR implement it, the default) or without (RFC 9568 section 5.2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VrrpChecksum {
    PseudoHeader,
    Rfc9568,
}

/// Gratuitous ARP / unsolicited NA when becoming master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpConfig {
    /// Announcements per burst (default 5, 1..=100).
    pub repeat: u32,
    /// A second burst this long after becoming master (default 5 s; 0 off).
    pub delay: Duration,
    /// A burst every this long while master (default 0: off).
    pub refresh: Duration,
}

/// One thing an instance watches; its state moves the effective priority
/// by `weight`, or (weight 0) puts the instance in FAULT while down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub kind: TrackKind,
    /// -254..=254. Positive: added while up. Negative: added while down.
    /// 0: the instance is in FAULT while down.
    pub weight: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    /// Link up with carrier (rtnetlink link events).
    Interface { name: String },
    /// Up while the file's first line is the integer 0.
    File { path: PathBuf },
    /// Up after `rise` consecutive exits with status 0, down after `fall`
    /// failures (non-zero exit or running longer than `timeout`).
    Script {
        command: String,
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
    },
    /// Up while the service has at least one healthy backend (fed by
    /// health checking; until that exists, while it has any backend with
    /// weight above 0).
    Service { name: String },
}

/// `[[vrrp.sync_group]]`: instances that change state together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConfig {
    pub name: String,
    pub instances: Vec<String>,
}

impl Config {
    pub fn vrrp_instance(&self, name: &str) -> Option<&VrrpInstanceConfig> {
        self.vrrp.instances.iter().find(|i| i.name == name)
    }
}

impl VrrpInstanceConfig {
    /// Whether the instance carries IPv6 addresses (all VIPs share a family).
    pub fn is_v6(&self) -> bool {
        self.vips.first().is_some_and(|a| a.is_ipv6())
    }
}

/// `priority` of an instance when not given.
pub const DEFAULT_VRRP_PRIORITY: u8 = 100;
/// `advert_interval` when not given.
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// `resign_grace` when not given.
pub const DEFAULT_RESIGN_GRACE: Duration = Duration::from_secs(3);
/// Longest accepted `resign_grace`.
pub const MAX_RESIGN_GRACE: Duration = Duration::from_secs(60);
/// Most VIPs one instance may carry (the advert's 8-bit address count).
pub const MAX_VRRP_VIPS: usize = 255;
/// Longest version 2 `auth_pass` (the advert's authentication data field).
pub const MAX_AUTH_PASS: usize = 8;
/// `interval` of a script track when not given.
pub const DEFAULT_TRACK_SCRIPT_INTERVAL: Duration = Duration::from_secs(2);

impl VrrpVersion {
    /// The number written in the config file and in the advert header.
    pub fn number(self) -> u8 {
        match self {
            VrrpVersion::V2 => 2,
            VrrpVersion::V3 => 3,
        }
    }
}

impl Default for GarpConfig {
    /// 5 announcements, a second burst after 5 s, no periodic refresh.
    fn default() -> Self {
        GarpConfig {
            repeat: 5,
            delay: Duration::from_secs(5),
            refresh: Duration::ZERO,
        }
    }
}

impl TrackKind {
    /// The key that selects this kind in `[[vrrp.instance.track]]`.
    pub fn key(&self) -> &'static str {
        match self {
            TrackKind::Interface { .. } => "interface",
            TrackKind::File { .. } => "file",
            TrackKind::Script { .. } => "script",
            TrackKind::Service { .. } => "service",
        }
    }
}

named!(VipMode, "vip_mode", [
    VipMode::Dataplane => "dataplane",
    VipMode::Kernel => "kernel",
]);
named!(VrrpChecksum, "checksum", [
    VrrpChecksum::PseudoHeader => "pseudo-header",
    VrrpChecksum::Rfc9568 => "rfc9568",
]);

/// `[bgp]`: the BGP speaker, its `[[bgp.peer]]`s and what it announces.
///
/// Keys under `[bgp]` itself that are also peer keys (`hold_time`,
/// `ttl_security`, `communities`, `large_communities`, `med`, `prepend`)
/// are defaults for every peer; a peer that sets one replaces the default
/// (lists are replaced, not merged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpConfig {
    /// This speaker's AS (4-octet, not 0 or 23456). Always `Some` when
    /// there are peers.
    pub local_as: Option<u32>,
    /// BGP identifier; `None`: the first non-loopback IPv4 address of the
    /// machine at start ([`super::SystemView::default_router_id`]).
    pub router_id: Option<Ipv4Addr>,
    /// Accept incoming sessions (from configured peers only) on this
    /// address; `None`: no listening socket, passive peers need one.
    pub listen: Option<SocketAddr>,
    pub mode: AnnounceMode,
    pub drain: DrainConfig,
    /// In file order; names unique; (address, port) unique.
    pub peers: Vec<BgpPeerConfig>,
    /// `[[bgp.announce]]`; empty: every service VIP as a host route (see
    /// [`Config::bgp_announcements`]). Each covers a service VIP.
    pub announce: Vec<AnnounceConfig>,
}

/// When a VIP (or an aggregate covering it) is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AnnounceMode {
    /// `ecmp` (the default): while the dataplane is up and the VIP's
    /// service has a usable backend, on every node at once, so the routers
    /// spread flows over all of them. An aggregate: while one VIP it covers
    /// is announceable.
    #[default]
    Ecmp,
    /// `vrrp`: while this node is master of the VRRP instance holding the
    /// VIP (every announced VIP belongs to one). An aggregate: while this
    /// node masters one instance holding a VIP it covers.
    Vrrp,
}

/// `[bgp.drain]`: a planned drain (`vipgate drain`, before a shutdown).
/// Routes get the RFC 8326 GRACEFUL_SHUTDOWN community 65535:0, plus the
/// prepends and MED below, and are withdrawn `delay` later; the dataplane
/// keeps forwarding what still arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    /// 0..=3600 s; default 30 s.
    pub delay: Duration,
    /// Extra AS-path prepends while draining, 0..=16 (default 0); eBGP
    /// peers only (an iBGP peer would drop a path holding its own AS).
    pub prepend: u8,
    /// MED while draining; `None`: unchanged.
    pub med: Option<u32>,
}

/// `[[bgp.peer]]`: one BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeerConfig {
    /// Unique; default: the address as written. Shown by `vipgate bgp peers`.
    pub name: String,
    pub address: IpAddr,
    /// TCP port to connect to (default 179); unused by passive peers.
    pub port: u16,
    /// 1..=4294967295, not 23456 (AS_TRANS). Equal to `local_as`: iBGP.
    pub remote_as: u32,
    /// Source address of the session; same family as `address`, an address
    /// of this machine. `None`: chosen by the kernel.
    pub local_address: Option<IpAddr>,
    /// Proposed hold time: 0 (no keepalives) or 3..=65535 whole seconds;
    /// default 90 s.
    pub hold_time: Duration,
    /// ConnectRetry time (RFC 4271), also the connect timeout; default 10 s.
    pub connect_retry: Duration,
    /// First reconnect wait after a session fails (doubles on each failure
    /// up to 120 s); default 5 s.
    pub reconnect_delay: Duration,
    /// Wait for the peer to connect to [`BgpConfig::listen`], never connect.
    pub passive: bool,
    /// TCP MD5 signature key (RFC 2385), 1..=80 bytes.
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255, accept only TTL 255 (directly
    /// connected peers).
    pub ttl_security: bool,
    /// Non-empty, no duplicates; default: the family of `address`.
    pub families: Vec<AddressFamily>,
    /// MULTI_EXIT_DISC on routes to this peer; `None`: not sent.
    pub med: Option<u32>,
    /// LOCAL_PREF on routes to this peer; iBGP peers only. `None`: 100.
    pub local_pref: Option<u32>,
    /// Added to every route to this peer (with the announcement's own).
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Extra copies of `local_as` in the AS path, 0..=16; always 0 for
    /// iBGP peers (one would drop a path holding its own AS).
    pub prepend: u8,
    /// Next hop of IPv6 routes; default: the session's local address on an
    /// IPv6 session, an IPv6 address of the link towards the peer on an
    /// IPv4 session. An address of this machine.
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// A standard community `ASN:VALUE` (RFC 1997), written "65000:100".
pub type Community = (u16, u16);
/// A large community `GLOBAL:LOCAL1:LOCAL2` (RFC 8092), written "65000:1:2".
pub type LargeCommunity = (u32, u32, u32);

/// A multiprotocol AFI/SAFI pair a session carries (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    Ipv4Unicast,
    Ipv6Unicast,
}

/// `[[bgp.announce]]`: one prefix and the attributes it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// A VIP as /32 or /128, or an aggregate covering configured VIPs.
    pub prefix: IpPrefix,
    /// Added to the peer's communities.
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Replaces the peer's MED for this prefix.
    pub med: Option<u32>,
}

/// An IP prefix with no host bits set, e.g. 198.18.10.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    address: IpAddr,
    len: u8,
}

/// `[bgp] local_as` etc.: AS 23456, which stands in for 4-octet ASNs on
/// 2-octet sessions (RFC 6793) and is no AS of its own.
pub const AS_TRANS: u32 = 23_456;
/// `[[bgp.peer]] port` when not given.
pub const DEFAULT_BGP_PORT: u16 = 179;
/// `connect_retry` when not given (RFC 4271 suggests 120 s; a gateway
/// wants its routes back sooner).
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(10);
/// `reconnect_delay` when not given.
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// Longest `reconnect_delay` (the backoff's own ceiling).
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(120);
/// `hold_time` when not given (RFC 4271 suggests 90 s).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// Longest `hold_time` (the OPEN field is 16 bits of seconds).
pub const MAX_HOLD_TIME: Duration = Duration::from_secs(65_535);
/// Shortest non-zero `hold_time` (RFC 4271 section 4.2).
pub const MIN_HOLD_TIME: Duration = Duration::from_secs(3);
/// `[bgp.drain] delay` when not given.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(30);
/// Longest `[bgp.drain] delay`.
pub const MAX_DRAIN_DELAY: Duration = Duration::from_secs(3600);
/// Most AS-path prepends (`prepend`, `[bgp.drain] prepend`).
pub const MAX_PREPEND: u8 = 16;
/// Longest `md5_password` (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_MD5_PASSWORD: usize = 80;
/// The RFC 8326 GRACEFUL_SHUTDOWN community a drain adds.
pub const GRACEFUL_SHUTDOWN: Community = (65_535, 0);

impl Default for DrainConfig {
    /// Withdraw 30 s after the drain starts, no prepends, MED unchanged.
    fn default() -> Self {
        DrainConfig {
            delay: DEFAULT_DRAIN_DELAY,
            prepend: 0,
            med: None,
        }
    }
}

impl BgpConfig {
    pub fn peer(&self, name: &str) -> Option<&BgpPeerConfig> {
        self.peers.iter().find(|p| p.name == name)
    }
}

impl BgpPeerConfig {
    /// Whether the session is iBGP (same AS on both ends).
    pub fn is_ibgp(&self, local_as: u32) -> bool {
        self.remote_as == local_as
    }

    pub fn carries(&self, family: AddressFamily) -> bool {
        self.families.contains(&family)
    }
}

impl Config {
    /// What `[bgp]` announces: the `[[bgp.announce]]` entries, or when
    /// there are none, each distinct service VIP as a host route without
    /// attributes of its own, in file order.
    pub fn bgp_announcements(&self) -> Vec<AnnounceConfig> {
        if !self.bgp.announce.is_empty() {
            return self.bgp.announce.clone();
        }
        let mut out: Vec<AnnounceConfig> = Vec::new();
        for vip in self.services.iter().map(|s| s.vip) {
            let prefix = IpPrefix::host(vip);
            if out.iter().all(|a| a.prefix != prefix) {
                out.push(AnnounceConfig {
                    prefix,
                    communities: Vec::new(),
                    large_communities: Vec::new(),
                    med: None,
                });
            }
        }
        out
    }
}

impl AddressFamily {
    /// The unicast family of `address`.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => AddressFamily::Ipv4Unicast,
            IpAddr::V6(_) => AddressFamily::Ipv6Unicast,
        }
    }

    /// RFC 4760 AFI (1: IPv4, 2: IPv6); the SAFI is 1 (unicast) for both.
    pub fn afi(self) -> u16 {
        match self {
            AddressFamily::Ipv4Unicast => 1,
            AddressFamily::Ipv6Unicast => 2,
        }
    }

    /// Whether `address` belongs to this family.
    pub fn holds(self, address: IpAddr) -> bool {
        Self::of(address) == self
    }
}

impl IpPrefix {
    /// `None` if `len` is longer than the address or host bits are set.
    pub fn new(address: IpAddr, len: u8) -> Option<Self> {
        let prefix = IpPrefix { address, len };
        (len <= prefix.max_len() && prefix.network_bits() == bits(address)).then_some(prefix)
    }

    /// The /32 or /128 of `address`.
    pub fn host(address: IpAddr) -> Self {
        let len = if address.is_ipv4() { 32 } else { 128 };
        IpPrefix { address, len }
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_host(&self) -> bool {
        self.len == self.max_len()
    }

    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    /// Whether `address` lies in the prefix.
    pub fn contains(&self, address: IpAddr) -> bool {
        if address.is_ipv4() != self.address.is_ipv4() {
            return false;
        }
        IpPrefix {
            address,
            len: self.len,
        }
        .network_bits()
            == bits(self.address)
    }

    /// `address` with the bits after `len` cleared, as a prefix: the fix
    /// for "198.18.10.5/24".
    pub fn truncating(address: IpAddr, len: u8) -> Option<Self> {
        let prefix = IpPrefix { address, len };
        if len > prefix.max_len() {
            return None;
        }
        let net = prefix.network_bits();
        let address = match address {
            // The top 32 bits: an IPv4 address is left-aligned in 128.
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((net >> 96) as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(net)),
        };
        Some(IpPrefix { address, len })
    }

    fn max_len(&self) -> u8 {
        if self.address.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The address left-aligned in 128 bits with the host bits cleared.
    fn network_bits(&self) -> u128 {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len.min(128)))
            .unwrap_or(0);
        bits(self.address) & mask
    }
}

/// The address left-aligned in 128 bits (IPv4 in the top 32).
fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

named!(AnnounceMode, "announce mode", [
    AnnounceMode::Ecmp => "ecmp",
    AnnounceMode::Vrrp => "vrrp",
]);
named!(AddressFamily, "address family", [
    AddressFamily::Ipv4Unicast => "ipv4-unicast",
    AddressFamily::Ipv6Unicast => "ipv6-unicast",
]);

/// Whether `address` is IPv6 link-local (fe80::/10).
pub fn is_link_local(address: IpAddr) -> bool {
    matches!(address, IpAddr::V6(a) if a.is_unicast_link_local())
}

/// `quorum` of a service when not given: one healthy backend's weight.
pub const DEFAULT_QUORUM: u32 = 1;

/// How one backend is health-checked: `[health]` gives defaults,
/// `[service.health]` the service's check, `[service.backend.health]` a
/// backend's own. A backend whose resolved `type` is `none` (the default)
/// is not checked and counts as healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub check: CheckConfig,
    /// Between two checks of the backend.
    pub interval: Duration,
    /// Per attempt; at most `interval`.
    pub timeout: Duration,
    /// Consecutive passed checks that make a failed backend healthy.
    pub rise: u32,
    /// Consecutive failed checks that make a healthy backend failed.
    pub fall: u32,
    /// Attempts after the first inside one check before it fails.
    pub retries: u32,
    pub retry_delay: Duration,
    /// Before the first check (the backend counts as healthy meanwhile).
    pub startup_delay: Duration,
    /// Each interval varies by up to this much, so checks of many
    /// backends spread out; at most half the interval.
    pub jitter: Duration,
    /// Source address of probes; `None`: the kernel's choice.
    pub source: Option<IpAddr>,
    /// A failed backend keeps its place with weight 0 (its connections
    /// continue) instead of leaving the service.
    pub inhibit_on_failure: bool,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckConfig {
    /// A TCP connection to the port is accepted.
    Tcp { port: NonZeroU16 },
    /// `GET path` answers with an expected status (and body).
    Http(HttpCheckConfig),
    /// A datagram to the port gets a reply (starting with `expect`).
    Udp {
        port: NonZeroU16,
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// A shell command (`/bin/sh -c`) exits 0; the backend's address and
    /// port are in `VIPGATE_BACKEND_ADDRESS` and `VIPGATE_BACKEND_PORT`.
    Command { command: String },
}

/// `type = "http"` or `"https"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheckConfig {
    pub port: NonZeroU16,
    pub tls: bool,
    /// `https` only: check the certificate against the system roots.
    pub tls_verify: bool,
    /// `https` only: SNI and certificate name; default: `host`.
    pub server_name: Option<String>,
    /// Starts with `/`.
    pub path: String,
    /// `Host` header; default: the backend address.
    pub host: Option<String>,
    /// Accepted status codes, inclusive ranges; default 200..=299.
    pub expect_status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    pub body_sha256: Option<[u8; 32]>,
}

/// A service's health policy: when it counts as able to serve (for BGP
/// and VRRP `service` tracking) and where it sends clients when it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealthConfig {
    /// Sum of the weights of healthy backends the service needs.
    pub quorum: u32,
    /// Up at `quorum + hysteresis`, down below `quorum - hysteresis`.
    pub hysteresis: u32,
    /// After going down, the service stays down at least this long.
    pub hold_down: Duration,
    /// Takes new connections while no backend is usable.
    pub sorry_server: Option<SocketAddr>,
}

impl Default for ServiceHealthConfig {
    fn default() -> Self {
        ServiceHealthConfig {
            quorum: DEFAULT_QUORUM,
            hysteresis: 0,
            hold_down: Duration::ZERO,
            sorry_server: None,
        }
    }
}

impl CheckConfig {
    /// The name as written after `type =`.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckConfig::Tcp { .. } => "tcp",
            CheckConfig::Http(h) if h.tls => "https",
            CheckConfig::Http(_) => "http",
            CheckConfig::Udp { .. } => "udp",
            CheckConfig::Command { .. } => "command",
        }
    }
}

/// `type` of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckType {
    None,
    Tcp,
    Http,
    Https,
    Udp,
    Command,
}

named!(CheckType, "health check type", [
    CheckType::None => "none",
    CheckType::Tcp => "tcp",
    CheckType::Http => "http",
    CheckType::Https => "https",
    CheckType::Udp => "udp",
    CheckType::Command => "command",
]);
