//! The vipgate schema: which sections and keys exist, their types, ranges and
//! defaults, and the checks that concern one value at a time.
//!
//! Owns: reading the tree into a [`Draft`] (every field optional, with
//! spans, so later checks can point at it) and turning a clean draft into a
//! [`Config`]. Must not: compare entries with each other (that is
//! `checks.rs`) or look at the system (`system.rs`).

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ErrorKind;
use super::model::*;
use super::reader::{At, Ctx, Section};
use super::tree::{Span, Table};

mod bgp;
mod health;
mod setting;
mod vrrp;

pub(crate) use bgp::{AnnounceDraft, BgpDraft, BgpPeerDraft, Families};
pub(crate) use health::{CheckSettings, ServiceHealthDraft};
pub(crate) use setting::Setting;
pub(crate) use vrrp::{SyncGroupDraft, VrrpDraft, VrrpInstanceDraft};

const ROOT_KEYS: &[&str] = &[
    "node",
    "interface",
    "dataplane",
    "service",
    "vrrp",
    "bgp",
    "health",
];
const NODE_KEYS: &[&str] = &["name", "control_socket"];
const INTERFACE_KEYS: &[&str] = &["name", "role"];
const DATAPLANE_KEYS: &[&str] = &[
    "workers",
    "io",
    "rx_ring",
    "rx_coalesce",
    "ring_block_size",
    "ring_blocks",
    "ring_frame_size",
    "ring_block_timeout",
    "conn_capacity",
    "timeouts",
    "disable_offloads",
    "mid_flow_pickup",
];
const TIMEOUT_KEYS: &[&str] = &["tcp_syn", "tcp_established", "tcp_closing", "udp"];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "vip",
    "port",
    "protocol",
    "scheduler",
    "maglev_table_size",
    "forwarding",
    "backend",
    "health",
    "quorum",
    "hysteresis",
    "hold_down",
    "sorry_server",
];
const BACKEND_KEYS: &[&str] = &["address", "port", "weight", "health"];

/// Longest control socket path: `sun_path` is 108 bytes with the final NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
const MAX_NAME: usize = 63;

/// The configuration as read, before cross-entry checks.
pub(crate) struct Draft {
    pub node: Option<NodeConfig>,
    pub interfaces: Vec<InterfaceDraft>,
    pub dataplane: DataplaneConfig,
    pub services: Vec<ServiceDraft>,
    pub vrrp: VrrpDraft,
    pub bgp: BgpDraft,
}

pub(crate) struct InterfaceDraft {
    pub index: usize,
    pub span: Option<Span>,
    pub name: Option<At<String>>,
    pub role: Option<At<InterfaceRole>>,
}

pub(crate) struct ServiceDraft {
    pub index: usize,
    pub span: Option<Span>,
    pub name: Option<At<String>>,
    pub vip: Option<At<IpAddr>>,
    pub port: Option<At<NonZeroU16>>,
    pub protocol: Option<At<Protocol>>,
    pub scheduler: Option<At<Scheduler>>,
    /// `None` when the value was invalid; span `None` when defaulted.
    pub maglev_table_size: Option<At<u32>>,
    pub forwarding: Option<At<Forwarding>>,
    /// `[[service.backend]]` entries in the file, valid or not.
    pub declared_backends: usize,
    pub backends: Vec<BackendDraft>,
    pub health: ServiceHealthDraft,
}

pub(crate) struct BackendDraft {
    pub index: usize,
    pub address: Option<At<IpAddr>>,
    pub port: BackendPort,
    pub weight: Option<At<u16>>,
    /// The resolved check settings ([health], [service.health], own).
    pub health: CheckSettings,
}

/// A backend's `port`: absent means the service port.
pub(crate) enum BackendPort {
    ServicePort,
    Given(At<NonZeroU16>),
    Invalid,
}

/// Reads the whole document; every problem goes to `ctx`.
pub(crate) fn read(ctx: &Ctx, root: &Table) -> Draft {
    let root = Section::open(ctx, root, String::new(), "", Some(0..0), ROOT_KEYS, &[]);
    let node = read_node(&root);
    let interfaces = read_interfaces(&root);
    let dataplane = read_dataplane(&root);
    let health = health::read_defaults(&root);
    let services = read_services(&root, &health);
    let vrrp = vrrp::read(&root);
    let bgp = bgp::read(&root);
    Draft {
        node,
        interfaces,
        dataplane,
        services,
        vrrp,
        bgp,
    }
}

/// `got` when the key is present (possibly `None` if invalid), else the
/// default without a span.
fn or_default<T>(s: &Section, key: &str, got: Option<At<T>>, default: T) -> Option<At<T>> {
    if s.has(key) {
        got
    } else {
        Some(At {
            value: default,
            span: None,
        })
    }
}

fn read_node(root: &Section) -> Option<NodeConfig> {
    if !root.has("node") {
        root.ctx.report(
            ErrorKind::Missing,
            Some(0..0),
            "node",
            "missing section [node]",
            "add a [node] section with name = \"gw-a\"",
        );
        return None;
    }
    let (table, span) = root.table("node")?;
    let s = Section::open(
        root.ctx,
        table,
        "node".into(),
        "[node]",
        span,
        NODE_KEYS,
        &[],
    );
    s.require("name", "\"gw-a\"");
    let name = s
        .string("name", "\"gw-a\"")
        .and_then(|n| checked_name(&s, "name", n));
    let socket = s.string("control_socket", "\"/run/vipgate/control.sock\"");
    let control_socket = match socket {
        Some(path) => checked_socket_path(&s, path)?,
        None if s.has("control_socket") => return None,
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    Some(NodeConfig {
        name: name?.value,
        control_socket,
    })
}

/// A node or service name: 1..=63 of `A-Z a-z 0-9 - _ .`.
fn checked_name(s: &Section, key: &str, name: At<&str>) -> Option<At<String>> {
    let ok_chars = name
        .value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name.value.is_empty() && name.value.len() <= MAX_NAME && ok_chars {
        return Some(At {
            value: name.value.to_string(),
            span: name.span,
        });
    }
    s.invalid(
        key,
        &name.span,
        format!("invalid name \"{}\"", name.value),
        format!("use 1 to {MAX_NAME} of the characters A-Z a-z 0-9 - _ ., e.g. {key} = \"web-1\""),
    );
    None
}

fn checked_socket_path(s: &Section, path: At<&str>) -> Option<PathBuf> {
    let problem = if !path.value.starts_with('/') {
        Some("is not an absolute path")
    } else if path.value.ends_with('/') {
        Some("names a directory")
    } else if path.value.len() > MAX_SOCKET_PATH {
        Some("is longer than the 107 bytes a unix socket path may have")
    } else {
        None
    };
    let Some(problem) = problem else {
        return Some(PathBuf::from(path.value));
    };
    s.invalid(
        "control_socket",
        &path.span,
        format!("control_socket \"{}\" {problem}", path.value),
        format!("use an absolute file path such as \"{DEFAULT_CONTROL_SOCKET}\""),
    );
    None
}

fn read_interfaces(root: &Section) -> Vec<InterfaceDraft> {
    let tables = root.tables("interface", "[[interface]]");
    if tables.is_empty() && !root.has("interface") {
        root.ctx.report(
            ErrorKind::Missing,
            Some(0..0),
            "interface",
            "no dataplane interface",
            "add an [[interface]] section with name = \"eth0\" for each link the dataplane uses",
        );
    }
    tables
        .into_iter()
        .map(|(index, table, span)| read_interface(root, index, table, span))
        .collect()
}

fn read_interface(
    root: &Section,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> InterfaceDraft {
    let path = format!("interface[{index}]");
    let s = Section::open(
        root.ctx,
        table,
        path,
        "[[interface]]",
        span.clone(),
        INTERFACE_KEYS,
        &[],
    );
    s.require("name", "\"eth0\"");
    let name = s
        .string("name", "\"eth0\"")
        .and_then(|n| checked_ifname(&s, "name", n));
    let role = or_default(&s, "role", s.choice("role"), InterfaceRole::Both);
    InterfaceDraft {
        index,
        span,
        name,
        role,
    }
}

/// A Linux link name: 1..=15 bytes, no '/', ':' or white space, not "." or "..".
fn checked_ifname(s: &Section, key: &str, name: At<&str>) -> Option<At<String>> {
    let n = name.value;
    let bad_char = n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !n.is_empty() && n.len() <= MAX_IFNAME && !bad_char && n != "." && n != ".." {
        return Some(At {
            value: n.to_string(),
            span: name.span,
        });
    }
    s.invalid(
        key,
        &name.span,
        format!("\"{n}\" is not a valid Linux interface name"),
        format!("use 1 to {MAX_IFNAME} bytes without '/', ':' or spaces, as `ip link` shows it"),
    );
    None
}

fn read_dataplane(root: &Section) -> DataplaneConfig {
    let mut dp = DataplaneConfig::default();
    let Some((table, span)) = root.table("dataplane") else {
        return dp;
    };
    let s = Section::open(
        root.ctx,
        table,
        "dataplane".into(),
        "[dataplane]",
        span,
        DATAPLANE_KEYS,
        &[],
    );
    let workers_help = format!("use 0 for one worker per online core, or 1 to {MAX_WORKERS}");
    if let Some(w) = s.int_in("workers", "0", 0, MAX_WORKERS, &workers_help) {
        dp.workers = w.value;
    }
    if let Some(io) = s.choice("io") {
        dp.io = io.value;
    }
    read_ring(&s, &mut dp.ring);
    let cap_help = format!("use 1 to {MAX_CONN_CAPACITY} connection entries per worker");
    if let Some(c) = s.int_in("conn_capacity", "1048576", 1, MAX_CONN_CAPACITY, &cap_help) {
        dp.conn_capacity = c.value;
    }
    if let Some(b) = s.boolean("disable_offloads") {
        dp.disable_offloads = b.value;
    }
    if let Some(b) = s.boolean("mid_flow_pickup") {
        dp.mid_flow_pickup = b.value;
    }
    read_timeouts(&s, &mut dp.timeouts);
    dp
}

fn read_ring(s: &Section, ring: &mut RingConfig) {
    if let Some(v) = s.choice("rx_ring") {
        ring.version = v.value;
    }
    let block = s.int_in(
        "ring_block_size",
        "262144",
        4096u32,
        1 << 30,
        "use a power of two from 4096 to 1073741824 bytes",
    );
    if let Some(b) = block {
        if b.value.is_power_of_two() {
            ring.block_size = b.value;
        } else {
            let up = b.value.next_power_of_two();
            s.invalid(
                "ring_block_size",
                &b.span,
                format!("ring_block_size {} is not a power of two", b.value),
                format!("use {} or {up}", up / 2),
            );
        }
    }
    if let Some(n) = s.int_in(
        "ring_blocks",
        "64",
        1,
        65_536,
        "use 1 to 65536 blocks per ring",
    ) {
        ring.blocks = n.value;
    }
    read_frame_size(s, ring);
    let timeout = s.duration(
        "ring_block_timeout",
        "\"1ms\"",
        Duration::from_millis(1),
        Duration::from_secs(60),
    );
    if let Some(t) = timeout {
        ring.block_timeout = t.value;
    }
    read_rx_coalesce(s, ring);
}

/// Largest `rx_coalesce`: beyond it a V3 ring does the same with fewer
/// wake-ups (the dataplane refuses more, too).
const MAX_RX_COALESCE: Duration = Duration::from_millis(1);

/// `rx_coalesce`: a TPACKET_V2 setting; with V3 it is off.
fn read_rx_coalesce(s: &Section, ring: &mut RingConfig) {
    let text = s.string("rx_coalesce", "\"50us\"");
    let v3 = ring.version == RxRing::V3;
    if v3 {
        ring.coalesce = Duration::ZERO;
    }
    let Some(text) = text else {
        return;
    };
    let help = "write microseconds, e.g. rx_coalesce = \"50us\", from \"0\" (off) to \"1000us\"";
    match parse_coalesce(text.value) {
        None => s.invalid(
            "rx_coalesce",
            &text.span,
            format!("invalid duration \"{}\"", text.value),
            help.to_string(),
        ),
        Some(d) if d > MAX_RX_COALESCE => s.invalid(
            "rx_coalesce",
            &text.span,
            format!("rx_coalesce {}us is out of range", d.as_micros()),
            format!("{help}; beyond 1ms, rx_ring = \"v3\" takes fewer wake-ups"),
        ),
        Some(d) if v3 && !d.is_zero() => s.invalid(
            "rx_coalesce",
            &text.span,
            "rx_coalesce applies to rx_ring = \"v2\" only (a v3 ring hands over blocks)"
                .to_string(),
            "add rx_ring = \"v2\" to [dataplane], or remove rx_coalesce".to_string(),
        ),
        Some(d) => ring.coalesce = d,
    }
}

/// `"50us"`, `"0"`, or a duration in the usual units (`"1ms"`).
fn parse_coalesce(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if let Some(digits) = text.strip_suffix("us") {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits.parse().ok().map(Duration::from_micros);
        }
        return None;
    }
    super::duration::parse_duration(text).ok()
}

fn read_frame_size(s: &Section, ring: &mut RingConfig) {
    let Some(f) = s.int_in(
        "ring_frame_size",
        "2048",
        128u32,
        1 << 30,
        "use a multiple of 16 from 128 bytes up to ring_block_size",
    ) else {
        return;
    };
    if f.value % 16 != 0 {
        let down = f.value / 16 * 16;
        s.invalid(
            "ring_frame_size",
            &f.span,
            format!("ring_frame_size {} is not a multiple of 16", f.value),
            format!("use {} or {}", down.max(128), down + 16),
        );
    } else if f.value > ring.block_size {
        s.invalid(
            "ring_frame_size",
            &f.span,
            format!(
                "ring_frame_size {} is larger than ring_block_size {}",
                f.value, ring.block_size
            ),
            "use a frame size of at most ring_block_size, or raise ring_block_size".to_string(),
        );
    } else {
        ring.frame_size = f.value;
    }
}

fn read_timeouts(dp: &Section, timeouts: &mut ConnTimeouts) {
    let Some((table, span)) = dp.table("timeouts") else {
        return;
    };
    let s = Section::open(
        dp.ctx,
        table,
        "dataplane.timeouts".into(),
        "[dataplane.timeouts]",
        span,
        TIMEOUT_KEYS,
        &[],
    );
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(7 * 86_400));
    let fields: [(&str, &str, &mut Duration); 4] = [
        ("tcp_syn", "\"60s\"", &mut timeouts.tcp_syn),
        ("tcp_established", "\"900s\"", &mut timeouts.tcp_established),
        ("tcp_closing", "\"120s\"", &mut timeouts.tcp_closing),
        ("udp", "\"300s\"", &mut timeouts.udp),
    ];
    for (key, example, slot) in fields {
        if let Some(d) = s.duration(key, example, min, max) {
            *slot = d.value;
        }
    }
}

fn read_services(root: &Section, health: &CheckSettings) -> Vec<ServiceDraft> {
    let tables = root.tables("service", "[[service]]");
    if tables.is_empty() && !root.has("service") {
        root.ctx.report(
            ErrorKind::Missing,
            Some(0..0),
            "service",
            "no service: vipgate would forward nothing",
            "add a [[service]] with name, vip and port, and a [[service.backend]] under it",
        );
    }
    tables
        .into_iter()
        .map(|(index, table, span)| read_service(root, health, index, table, span))
        .collect()
}

fn read_service(
    root: &Section,
    health: &CheckSettings,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> ServiceDraft {
    let path = format!("service[{index}]");
    let s = Section::open(
        root.ctx,
        table,
        path,
        "[[service]]",
        span.clone(),
        SERVICE_KEYS,
        &[],
    );
    s.require("name", "\"web\"");
    s.require("vip", "\"198.18.1.10\"");
    s.require("port", "80");
    let name = s
        .string("name", "\"web\"")
        .and_then(|n| checked_name(&s, "name", n));
    let vip = s
        .ip("vip", "\"198.18.1.10\"")
        .and_then(|v| checked_address(&s, "vip", v));
    let port = read_port(&s, "port");
    let protocol = or_default(&s, "protocol", s.choice("protocol"), Protocol::Tcp);
    let scheduler = or_default(&s, "scheduler", s.choice("scheduler"), Scheduler::Maglev);
    let maglev_table_size = or_default(
        &s,
        "maglev_table_size",
        read_maglev_size(&s),
        DEFAULT_MAGLEV_TABLE_SIZE,
    );
    let forwarding = or_default(&s, "forwarding", s.choice("forwarding"), Forwarding::Nat);
    let backend_tables = s.tables("backend", "[[service.backend]]");
    let declared_backends = backend_tables.len();
    if !s.has("backend") {
        report_no_backends(&s, &name);
    } else if declared_backends > MAX_BACKENDS {
        s.invalid(
            "backend",
            &span,
            format!("{declared_backends} backends, at most {MAX_BACKENDS} allowed per service"),
            "split the backends over several services".to_string(),
        );
    }
    let check =
        health::read_check(&s, "[service.health]", health).unwrap_or_else(|| health.inherited());
    let policy = health::read_service_health(&s);
    let backends = backend_tables
        .into_iter()
        .map(|(i, t, sp)| read_backend(&s, &check, i, t, sp))
        .collect();
    ServiceDraft {
        index,
        span,
        name,
        vip,
        port,
        protocol,
        scheduler,
        maglev_table_size,
        forwarding,
        declared_backends,
        backends,
        health: policy,
    }
}

fn report_no_backends(s: &Section, name: &Option<At<String>>) {
    let which = name
        .as_ref()
        .map_or(String::new(), |n| format!(" \"{}\"", n.value));
    s.ctx.report(
        ErrorKind::Missing,
        s.span.clone(),
        &s.field("backend"),
        format!("service{which} has no backends"),
        "add a [[service.backend]] with address = \"198.18.20.2\" after this [[service]]",
    );
}

pub(crate) fn read_port(s: &Section, key: &str) -> Option<At<NonZeroU16>> {
    let help = "use a port from 1 to 65535";
    let port = s.int_in(key, "80", 0u16, u16::MAX, help)?;
    match NonZeroU16::new(port.value) {
        Some(value) => Some(At {
            value,
            span: port.span,
        }),
        None => {
            s.invalid(
                key,
                &port.span,
                format!("{key} 0 is not a usable port"),
                help.to_string(),
            );
            None
        }
    }
}

/// Checks that need only the size itself; the backend count is checked in
/// `checks.rs`.
fn read_maglev_size(s: &Section) -> Option<At<u32>> {
    let help =
        format!("use a prime from 2 to {MAX_MAGLEV_TABLE_SIZE}, e.g. {DEFAULT_MAGLEV_TABLE_SIZE}");
    let size = s.int_in(
        "maglev_table_size",
        "65537",
        0u32,
        MAX_MAGLEV_TABLE_SIZE,
        &help,
    )?;
    if is_prime(size.value) {
        return Some(size);
    }
    s.invalid(
        "maglev_table_size",
        &size.span,
        format!("maglev_table_size {} is not prime", size.value),
        format!("use a prime such as {}", next_prime(size.value)),
    );
    None
}

/// A VIP or backend address must be a unicast address a host can own.
pub(crate) fn checked_address(s: &Section, key: &str, addr: At<IpAddr>) -> Option<At<IpAddr>> {
    let problem = match addr.value {
        a if a.is_unspecified() => Some("the unspecified address"),
        a if a.is_loopback() => Some("a loopback address"),
        a if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("an IPv6 link-local address"),
        _ => None,
    };
    let Some(problem) = problem else {
        return Some(addr);
    };
    s.invalid(
        key,
        &addr.span,
        format!("{key} {} is {problem}", addr.value),
        "use a unicast address that a host can own, e.g. 198.18.1.10 or 2001:db8::10".to_string(),
    );
    None
}

fn read_backend(
    svc: &Section,
    check: &CheckSettings,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> BackendDraft {
    let path = format!("{}.backend[{index}]", svc.path);
    let s = Section::open(
        svc.ctx,
        table,
        path,
        "[[service.backend]]",
        span,
        BACKEND_KEYS,
        &[],
    );
    s.require("address", "\"198.18.20.2\"");
    let address = s
        .ip("address", "\"198.18.20.2\"")
        .and_then(|a| checked_address(&s, "address", a));
    let port = match s.has("port") {
        false => BackendPort::ServicePort,
        true => read_port(&s, "port").map_or(BackendPort::Invalid, BackendPort::Given),
    };
    let weight_help = "use 1 to 65535 to weight the backend, or 0 to drain it";
    let weight = or_default(
        &s,
        "weight",
        s.int_in("weight", "1", 0u16, u16::MAX, weight_help),
        1,
    );
    let health = health::read_check(&s, "[service.backend.health]", check)
        .unwrap_or_else(|| check.inherited());
    BackendDraft {
        index,
        address,
        port,
        weight,
        health,
    }
}

impl BackendPort {
    /// The port connections go to, given the service port.
    pub(crate) fn resolve(&self, service_port: Option<NonZeroU16>) -> Option<NonZeroU16> {
        match self {
            BackendPort::ServicePort => service_port,
            BackendPort::Given(p) => Some(p.value),
            BackendPort::Invalid => None,
        }
    }
}

pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2u64..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// The smallest prime >= n (at least 2).
pub(crate) fn next_prime(n: u32) -> u32 {
    (n.max(2)..=u32::MAX)
        .find(|&c| is_prime(c))
        .unwrap_or(u32::MAX)
}

/// Builds the typed config from a draft that produced no errors; `None` if
/// a field is missing all the same (a bug: every missing field reports).
pub(crate) fn build(draft: Draft) -> Option<Config> {
    let interfaces = draft
        .interfaces
        .into_iter()
        .map(|i| {
            Some(InterfaceConfig {
                name: i.name?.value,
                role: i.role?.value,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let services = draft
        .services
        .into_iter()
        .map(build_service)
        .collect::<Option<Vec<_>>>()?;
    Some(Config {
        node: draft.node?,
        interfaces,
        dataplane: draft.dataplane,
        services,
        vrrp: vrrp::build(draft.vrrp)?,
        bgp: bgp::build(draft.bgp)?,
    })
}

fn build_service(s: ServiceDraft) -> Option<ServiceConfig> {
    let port = s.port?.value;
    let backends = s
        .backends
        .into_iter()
        .map(|b| {
            let backend_port = b.port.resolve(Some(port))?;
            Some(BackendConfig {
                address: b.address?.value,
                port: backend_port,
                weight: b.weight?.value,
                health: health::build_check(&b.health, backend_port)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ServiceConfig {
        name: s.name?.value,
        vip: s.vip?.value,
        port,
        protocol: s.protocol?.value,
        scheduler: s.scheduler?.value,
        maglev_table_size: s.maglev_table_size?.value,
        forwarding: s.forwarding?.value,
        backends,
        health: health::build_service_health(s.health, port)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(3) && is_prime(65_537) && is_prime(251));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(65_536) && !is_prime(65_535));
        assert!(is_prime(MAX_MAGLEV_TABLE_SIZE));
        assert!(is_prime(DEFAULT_MAGLEV_TABLE_SIZE));
        assert_eq!(next_prime(65_536), 65_537);
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(500), 503);
    }

    #[test]
    fn rx_ring_is_read_and_unknown_layouts_are_named() {
        let config = |ring: &str| {
            format!(
                "[node]\nname = \"gw\"\n[[interface]]\nname = \"eth0\"\n[dataplane]\n\
                 rx_ring = \"{ring}\"\n[[service]]\nname = \"web\"\nvip = \"198.18.1.10\"\n\
                 port = 80\n[[service.backend]]\naddress = \"198.18.2.2\"\n"
            )
        };
        for (name, version) in [("v2", RxRing::V2), ("v3", RxRing::V3)] {
            let parsed = crate::config::validate_str(&config(name), "t.toml", None);
            assert_eq!(parsed.expect("valid").dataplane.ring.version, version);
        }
        let errors = crate::config::validate_str(&config("v4"), "t.toml", None).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["t.toml:6:11: dataplane.rx_ring: unknown rx ring \"v4\"; expected one of v2, v3 (did you mean \"v2\"?)"]
        );
    }

    fn with_coalesce(lines: &str) -> String {
        format!(
            "[node]\nname = \"gw\"\n[[interface]]\nname = \"eth0\"\n[dataplane]\n{lines}\n\
             [[service]]\nname = \"web\"\nvip = \"198.18.1.10\"\n\
             port = 80\n[[service.backend]]\naddress = \"198.18.2.2\"\n"
        )
    }

    fn coalesce_errors(lines: &str) -> Vec<String> {
        let errors = crate::config::validate_str(&with_coalesce(lines), "t.toml", None);
        errors
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn mid_flow_pickup_defaults_on_and_takes_a_boolean() {
        let read = |lines: &str| crate::config::validate_str(&with_coalesce(lines), "t.toml", None);
        assert!(read("").expect("valid").dataplane.mid_flow_pickup);
        let off = read("mid_flow_pickup = false").expect("valid");
        assert!(!off.dataplane.mid_flow_pickup);
        let errors = coalesce_errors("mid_flow_pickup = \"no\"");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("t.toml:6:19: dataplane.mid_flow_pickup:"),
            "{errors:?}"
        );
    }

    #[test]
    fn rx_coalesce_is_read_in_microseconds_for_v2() {
        let us = Duration::from_micros;
        for (text, want) in [
            ("50us", us(50)),
            ("0", us(0)),
            ("1ms", us(1000)),
            ("0us", us(0)),
        ] {
            let lines = format!("rx_ring = \"v2\"\nrx_coalesce = \"{text}\"");
            let parsed = crate::config::validate_str(&with_coalesce(&lines), "t.toml", None);
            assert_eq!(parsed.expect(text).dataplane.ring.coalesce, want, "{text}");
        }
        let v3 = crate::config::validate_str(&with_coalesce("rx_ring = \"v3\""), "t.toml", None);
        assert_eq!(v3.expect("v3").dataplane.ring.coalesce, Duration::ZERO);
        let off = "rx_ring = \"v3\"\nrx_coalesce = \"0\"";
        let v3_off = crate::config::validate_str(&with_coalesce(off), "t.toml", None);
        assert_eq!(
            v3_off.expect("v3, 0").dataplane.ring.coalesce,
            Duration::ZERO
        );
    }

    #[test]
    fn rx_coalesce_out_of_range_or_with_v3_is_named() {
        assert_eq!(
            coalesce_errors("rx_ring = \"v2\"\nrx_coalesce = \"1001us\""),
            [
                "t.toml:7:15: dataplane.rx_coalesce: rx_coalesce 1001us is out of range; \
              write microseconds, e.g. rx_coalesce = \"50us\", from \"0\" (off) to \"1000us\"; \
              beyond 1ms, rx_ring = \"v3\" takes fewer wake-ups"
            ]
        );
        assert_eq!(
            coalesce_errors("rx_ring = \"v2\"\nrx_coalesce = \"50\""),
            [
                "t.toml:7:15: dataplane.rx_coalesce: invalid duration \"50\"; \
              write microseconds, e.g. rx_coalesce = \"50us\", from \"0\" (off) to \"1000us\""
            ]
        );
        assert_eq!(
            coalesce_errors("rx_ring = \"v3\"\nrx_coalesce = \"50us\""),
            ["t.toml:7:15: dataplane.rx_coalesce: rx_coalesce applies to rx_ring = \"v2\" only \
              (a v3 ring hands over blocks); add rx_ring = \"v2\" to [dataplane], or remove rx_coalesce"]
        );
    }
}
