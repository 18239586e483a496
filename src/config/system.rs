//! Checks of a configuration against the system it is meant to run on.
//!
//! Owns: [`SystemView`], the plain data a caller fills in (from netlink, or
//! by hand in tests), and the checks against it (`[vrrp]`'s in
//! `system/vrrp.rs`, `[bgp]`'s in `system/bgp.rs`). Must not: read the
//! system itself. `vipgate check` must never touch the machine, so this
//! module only compares data.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use super::error::ErrorKind;
use super::reader::{At, Ctx};
use super::schema::{Draft, ServiceDraft};
use super::suggest::did_you_mean_suffix;

mod bgp;
mod vrrp;

/// The interfaces of the machine the configuration is checked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemView {
    pub interfaces: Vec<SystemInterface>,
}

/// One kernel link with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInterface {
    pub name: String,
    pub addresses: Vec<InterfaceAddress>,
}

/// An address on an interface with its connected prefix, e.g. 198.18.0.1/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Why an `address/prefix` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddressError(pub String);

impl fmt::Display for InterfaceAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid interface address \"{}\": expected ADDRESS/PREFIX",
            self.0
        )
    }
}

impl std::error::Error for InterfaceAddressError {}

impl SystemView {
    pub fn new(interfaces: Vec<SystemInterface>) -> Self {
        SystemView { interfaces }
    }

    pub fn interface(&self, name: &str) -> Option<&SystemInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The BGP identifier used when `[bgp] router_id` is not set: the first
    /// IPv4 address, in interface order, that is neither loopback nor
    /// unspecified.
    pub fn default_router_id(&self) -> Option<Ipv4Addr> {
        self.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .find_map(|a| match a.address {
                IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
                _ => None,
            })
    }

    /// The interface that carries `address` itself, if any.
    pub fn owner_of(&self, address: IpAddr) -> Option<&SystemInterface> {
        self.interfaces
            .iter()
            .find(|i| i.addresses.iter().any(|a| a.address == address))
    }
}

impl SystemInterface {
    pub fn new(name: impl Into<String>, addresses: Vec<InterfaceAddress>) -> Self {
        SystemInterface {
            name: name.into(),
            addresses,
        }
    }

    /// The address whose connected prefix holds `address`, if any.
    pub fn subnet_holding(&self, address: IpAddr) -> Option<&InterfaceAddress> {
        self.addresses.iter().find(|a| a.contains(address))
    }
}

impl InterfaceAddress {
    /// `None` if `prefix_len` is longer than the address (32 or 128 bits).
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= max_prefix(address)).then_some(InterfaceAddress {
            address,
            prefix_len,
        })
    }

    /// Whether `other` lies in this address's connected prefix.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.address, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => same_prefix(
                u128::from(u32::from(a)) << 96,
                u128::from(u32::from(b)) << 96,
                self.prefix_len,
            ),
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                same_prefix(u128::from(a), u128::from(b), self.prefix_len)
            }
            _ => false,
        }
    }

    /// The prefix itself, e.g. 198.18.0.0/24 for 198.18.0.1/24.
    pub fn network(&self) -> String {
        let net = match self.address {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        };
        format!("{net}/{}", self.prefix_len)
    }
}

fn max_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// Whether the top `len` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, len: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    a & mask == b & mask
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Parses "198.18.0.1/24" or "2001:db8::1/64".
impl FromStr for InterfaceAddress {
    type Err = InterfaceAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || InterfaceAddressError(text.to_string());
        let (addr, len) = text.split_once('/').ok_or_else(err)?;
        let address: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix_len: u8 = len.parse().map_err(|_| err())?;
        InterfaceAddress::new(address, prefix_len).ok_or_else(err)
    }
}

/// Checks a draft against `view`; every problem goes to `ctx`.
pub(crate) fn check(ctx: &Ctx, draft: &Draft, view: &SystemView) {
    check_interfaces_exist(ctx, draft, view);
    for service in &draft.services {
        check_vip_not_local(ctx, service, view);
        check_backends_reachable(ctx, draft, service, view);
    }
    vrrp::check(ctx, draft, view);
    bgp::check(ctx, draft, view);
    check_health_sources(ctx, draft, view);
}

/// A health check's `source` must be an address of this node; reported
/// once per line that set it.
fn check_health_sources(ctx: &Ctx, draft: &Draft, view: &SystemView) {
    let mut reported = std::collections::HashSet::new();
    for s in &draft.services {
        for b in &s.backends {
            let Some(at) = &b.health.source.at else {
                continue;
            };
            let Some(source) = at.value else { continue };
            let line = at.span.as_ref().map_or(0, |sp| sp.start);
            if !reported.insert(line) {
                continue;
            }
            let field = format!("service[{}].backend[{}].health.source", s.index, b.index);
            let address = At {
                value: source,
                span: at.span.clone(),
            };
            bgp::check_own(ctx, &field, &address, view);
        }
    }
}

fn check_interfaces_exist(ctx: &Ctx, draft: &Draft, view: &SystemView) {
    for iface in &draft.interfaces {
        if let Some(name) = &iface.name {
            check_link(ctx, &format!("interface[{}].name", iface.index), name, view);
        }
    }
}

/// Reports a link the system does not have; returns whether it exists.
fn check_link(ctx: &Ctx, field: &str, name: &At<String>, view: &SystemView) -> bool {
    if view.interface(&name.value).is_some() {
        return true;
    }
    let existing: Vec<&str> = view.interfaces.iter().map(|i| i.name.as_str()).collect();
    let list = if existing.is_empty() {
        "this system reports no interfaces".to_string()
    } else {
        format!("existing: {}", existing.join(", "))
    };
    ctx.report(
        ErrorKind::System,
        name.span.clone(),
        field,
        format!("interface \"{}\" does not exist; {list}", name.value),
        format!(
            "fix the name, or create the link before starting vipgate{}",
            did_you_mean_suffix(&name.value, existing.iter().copied())
        ),
    );
    false
}

fn check_vip_not_local(ctx: &Ctx, service: &ServiceDraft, view: &SystemView) {
    let Some(vip) = &service.vip else { return };
    let Some(owner) = view.owner_of(vip.value) else {
        return;
    };
    ctx.report(
        ErrorKind::System,
        vip.span.clone(),
        &format!("service[{}].vip", service.index),
        format!("vip {} is an address of interface \"{}\"", vip.value, owner.name),
        format!(
            "the kernel would answer for it instead of the backends: use an address no interface carries, or remove it from {}",
            owner.name
        ),
    );
}

/// The configured interfaces that carry backend traffic and exist on the
/// system.
fn backend_links<'v>(draft: &Draft, view: &'v SystemView) -> Vec<&'v SystemInterface> {
    draft
        .interfaces
        .iter()
        .filter(|i| i.role.as_ref().is_some_and(|r| r.value.carries_backends()))
        .filter_map(|i| i.name.as_ref())
        .filter_map(|name| view.interface(&name.value))
        .collect()
}

fn check_backends_reachable(ctx: &Ctx, draft: &Draft, service: &ServiceDraft, view: &SystemView) {
    let backend_links = backend_links(draft, view);
    if backend_links.is_empty() {
        // Missing links already have their own error.
        return;
    }
    for backend in &service.backends {
        let Some(address) = &backend.address else {
            continue;
        };
        let field = format!(
            "service[{}].backend[{}].address",
            service.index, backend.index
        );
        if let Some(owner) = view.owner_of(address.value) {
            report_backend_is_local(ctx, &field, address, owner);
        } else if !backend_links
            .iter()
            .any(|l| l.subnet_holding(address.value).is_some())
        {
            report_unreachable(ctx, draft, view, &field, address, &backend_links);
        }
    }
}

fn report_backend_is_local(ctx: &Ctx, field: &str, address: &At<IpAddr>, owner: &SystemInterface) {
    ctx.report(
        ErrorKind::System,
        address.span.clone(),
        field,
        format!(
            "backend {} is an address of this gateway (interface \"{}\")",
            address.value, owner.name
        ),
        "use the address of a real server behind the gateway",
    );
}

fn report_unreachable(
    ctx: &Ctx,
    draft: &Draft,
    view: &SystemView,
    field: &str,
    address: &At<IpAddr>,
    backend_links: &[&SystemInterface],
) {
    let subnets: Vec<String> = backend_links
        .iter()
        .flat_map(|l| {
            l.addresses
                .iter()
                .map(move |a| format!("{} {}", l.name, a.network()))
        })
        .collect();
    let subnets = if subnets.is_empty() {
        "they have no addresses".to_string()
    } else {
        subnets.join(", ")
    };
    ctx.report(
        ErrorKind::System,
        address.span.clone(),
        field,
        format!(
            "backend {} is not in the subnet of any backend-side interface ({subnets})",
            address.value
        ),
        reachability_help(draft, view, address.value),
    );
}

/// Names the link whose subnet holds `address`, if the system has one.
fn reachability_help(draft: &Draft, view: &SystemView, address: IpAddr) -> String {
    let holder = view
        .interfaces
        .iter()
        .find_map(|i| i.subnet_holding(address).map(|a| (i, a)));
    let Some((link, subnet)) = holder else {
        return "fix the address, or add the [[interface]] whose connected subnet holds it"
            .to_string();
    };
    let configured = draft
        .interfaces
        .iter()
        .any(|i| i.name.as_ref().is_some_and(|n| n.value == link.name));
    if configured {
        format!(
            "interface \"{}\" holds {} but does not carry backend traffic: set role = \"both\" or \"backend\" on it, or fix the address",
            link.name,
            subnet.network()
        )
    } else {
        format!(
            "add [[interface]] name = \"{}\" role = \"backend\" (its subnet {} holds this address), or fix the address",
            link.name,
            subnet.network()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> InterfaceAddress {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_their_hosts() {
        let a = addr("198.18.20.1/24");
        assert!(a.contains("198.18.20.2".parse().unwrap()));
        assert!(a.contains("198.18.20.255".parse().unwrap()));
        assert!(!a.contains("198.18.21.2".parse().unwrap()));
        assert!(!a.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(a.network(), "198.18.20.0/24");
        let v6 = addr("2001:db8:20::1/64");
        assert!(v6.contains("2001:db8:20::99".parse().unwrap()));
        assert!(!v6.contains("2001:db8:21::1".parse().unwrap()));
        assert_eq!(v6.network(), "2001:db8:20::/64");
        assert!(addr("198.18.0.1/0").contains("203.0.113.1".parse().unwrap()));
        assert_eq!(addr("198.18.0.1/0").network(), "0.0.0.0/0");
        assert!(addr("198.18.0.1/32").contains("198.18.0.1".parse().unwrap()));
        assert!(!addr("198.18.0.1/32").contains("198.18.0.2".parse().unwrap()));
    }

    #[test]
    fn parses_and_rejects_address_strings() {
        assert_eq!(addr("198.18.0.1/24").to_string(), "198.18.0.1/24");
        assert!("198.18.0.1".parse::<InterfaceAddress>().is_err());
        assert!("198.18.0.1/33".parse::<InterfaceAddress>().is_err());
        assert!("2001:db8::1/129".parse::<InterfaceAddress>().is_err());
        assert!("2001:db8::1/128".parse::<InterfaceAddress>().is_ok());
        assert!("x/24".parse::<InterfaceAddress>().is_err());
    }

    #[test]
    fn view_lookups() {
        let view = SystemView::new(vec![
            SystemInterface::new("lo", vec![addr("127.0.0.1/8")]),
            SystemInterface::new("vg-srv", vec![addr("198.18.20.1/24")]),
        ]);
        assert_eq!(
            view.owner_of("198.18.20.1".parse().unwrap()).unwrap().name,
            "vg-srv"
        );
        assert!(view.owner_of("198.18.20.2".parse().unwrap()).is_none());
        assert!(view.interface("eth9").is_none());
    }
}
