//! Checks that compare entries of one configuration with each other.
//!
//! Owns: duplicates (interfaces, service names, VIP:port/protocol,
//! backends), address families, interface roles and Maglev table sizing;
//! `[vrrp]` in `checks/vrrp.rs`, `[bgp]` in `checks/bgp.rs`.
//! Must not: look at the system (`system.rs`) or re-check single values
//! (`schema.rs` did). Every check skips entries whose fields were invalid:
//! those already have their own error.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use super::error::ErrorKind;
use super::model::{InterfaceRole, MAGLEV_ENTRIES_PER_BACKEND};
use super::reader::{At, Ctx};
use super::schema::{next_prime, Draft, InterfaceDraft, ServiceDraft};
use super::tree::Span;

mod bgp;
mod health;
mod vrrp;

pub(crate) fn check(ctx: &Ctx, draft: &Draft) {
    check_interface_names(ctx, &draft.interfaces);
    if !draft.services.is_empty() {
        check_roles(ctx, &draft.interfaces);
    }
    check_service_names(ctx, &draft.services);
    check_service_endpoints(ctx, &draft.services);
    for service in &draft.services {
        check_backends(ctx, service);
        check_maglev_size(ctx, service);
    }
    vrrp::check(ctx, draft);
    bgp::check(ctx, draft);
    health::check(ctx, draft);
}

/// Remembers the first span of each key; returns the first span when `key`
/// was seen before.
struct FirstSeen<K> {
    seen: HashMap<K, Option<Span>>,
}

impl<K: Eq + Hash> FirstSeen<K> {
    fn new() -> Self {
        FirstSeen {
            seen: HashMap::new(),
        }
    }

    fn earlier(&mut self, key: K, span: &Option<Span>) -> Option<Option<Span>> {
        if let Some(first) = self.seen.get(&key) {
            return Some(first.clone());
        }
        self.seen.insert(key, span.clone());
        None
    }
}

fn first_at(ctx: &Ctx, span: &Option<Span>) -> String {
    ctx.line_of(span)
        .map_or(String::new(), |line| format!(" (first at line {line})"))
}

fn check_interface_names(ctx: &Ctx, interfaces: &[InterfaceDraft]) {
    let mut seen = FirstSeen::new();
    for iface in interfaces {
        let Some(name) = &iface.name else { continue };
        if let Some(first) = seen.earlier(name.value.as_str(), &name.span) {
            ctx.report(
                ErrorKind::Duplicate,
                name.span.clone(),
                &format!("interface[{}].name", iface.index),
                format!(
                    "interface \"{}\" is listed twice{}",
                    name.value,
                    first_at(ctx, &first)
                ),
                "remove this [[interface]] (one entry per link)",
            );
        }
    }
}

/// With services configured, some interface must face the clients and some
/// must face the backends.
fn check_roles(ctx: &Ctx, interfaces: &[InterfaceDraft]) {
    let roles: Option<Vec<InterfaceRole>> = interfaces
        .iter()
        .map(|i| i.role.as_ref().map(|r| r.value))
        .collect();
    let Some(roles) = roles.filter(|r| !r.is_empty()) else {
        return;
    };
    let span = interfaces.first().and_then(|i| i.span.clone());
    let missing = [
        (
            "client",
            roles.iter().any(|r| r.carries_clients()),
            "faces the clients",
        ),
        (
            "backend",
            roles.iter().any(|r| r.carries_backends()),
            "faces the backends",
        ),
    ];
    for (role, present, faces) in missing {
        if !present {
            ctx.report(
                ErrorKind::Conflict,
                span.clone(),
                "interface",
                format!("no interface carries {role} traffic"),
                format!("set role = \"{role}\" or \"both\" on the [[interface]] that {faces}"),
            );
        }
    }
}

fn check_service_names(ctx: &Ctx, services: &[ServiceDraft]) {
    let mut seen = FirstSeen::new();
    for service in services {
        let Some(name) = &service.name else { continue };
        if let Some(first) = seen.earlier(name.value.as_str(), &name.span) {
            ctx.report(
                ErrorKind::Duplicate,
                name.span.clone(),
                &format!("service[{}].name", service.index),
                format!(
                    "service name \"{}\" is used twice{}",
                    name.value,
                    first_at(ctx, &first)
                ),
                "give each [[service]] its own name",
            );
        }
    }
}

/// No two services may share vip, port and protocol.
fn check_service_endpoints(ctx: &Ctx, services: &[ServiceDraft]) {
    let mut seen: HashMap<(SocketAddr, &str), &ServiceDraft> = HashMap::new();
    for service in services {
        let (Some(vip), Some(port), Some(proto)) = (&service.vip, &service.port, &service.protocol)
        else {
            continue;
        };
        let endpoint = SocketAddr::new(vip.value, port.value.get());
        let key = (endpoint, proto.value.name());
        let Some(first) = seen.get(&key) else {
            seen.insert(key, service);
            continue;
        };
        let first_name = first.name.as_ref().map_or("?", |n| n.value.as_str());
        let line = ctx.line_of(&first.span).unwrap_or(1);
        ctx.report(
            ErrorKind::Duplicate,
            vip.span.clone(),
            &format!("service[{}].vip", service.index),
            format!(
                "{endpoint}/{} is already served by service \"{first_name}\" (line {line})",
                proto.value
            ),
            format!("change vip, port or protocol, or move these backends into service \"{first_name}\""),
        );
    }
}

fn check_backends(ctx: &Ctx, service: &ServiceDraft) {
    let mut seen = FirstSeen::new();
    let service_port = service.port.as_ref().map(|p| p.value);
    let vip = service.vip.as_ref();
    for backend in &service.backends {
        let Some(address) = &backend.address else {
            continue;
        };
        let field = format!(
            "service[{}].backend[{}].address",
            service.index, backend.index
        );
        if let Some(vip) = vip {
            check_backend_address(ctx, &field, address, vip);
        }
        let Some(port) = backend.port.resolve(service_port) else {
            continue;
        };
        let endpoint = SocketAddr::new(address.value, port.get());
        if let Some(first) = seen.earlier(endpoint, &address.span) {
            ctx.report(
                ErrorKind::Duplicate,
                address.span.clone(),
                &field,
                format!(
                    "backend {endpoint} is listed twice in this service{}",
                    first_at(ctx, &first)
                ),
                "remove this [[service.backend]], or give it another port",
            );
        }
    }
}

/// Same family as the VIP, and not the VIP itself.
fn check_backend_address(ctx: &Ctx, field: &str, address: &At<IpAddr>, vip: &At<IpAddr>) {
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    if address.value.is_ipv4() != vip.value.is_ipv4() {
        ctx.report(
            ErrorKind::Conflict,
            address.span.clone(),
            field,
            format!(
                "backend {} is {} but the service vip {} is {}",
                address.value,
                family(address.value),
                vip.value,
                family(vip.value)
            ),
            format!(
                "NAT does not translate between IPv4 and IPv6: use an {} backend, or a separate service with an {} vip",
                family(vip.value),
                family(address.value)
            ),
        );
    } else if address.value == vip.value {
        ctx.report(
            ErrorKind::Conflict,
            address.span.clone(),
            field,
            format!("backend {} is the service's own vip", address.value),
            "use the address of a real server behind the gateway",
        );
    }
}

/// `maglev_table_size` only with a scheduler that builds a Maglev table
/// (maglev, sh), and large enough for the number of backends.
fn check_maglev_size(ctx: &Ctx, service: &ServiceDraft) {
    let (Some(scheduler), Some(size)) = (&service.scheduler, &service.maglev_table_size) else {
        return;
    };
    let field = format!("service[{}].maglev_table_size", service.index);
    if !scheduler.value.uses_maglev_table() {
        if size.span.is_some() {
            ctx.report(
                ErrorKind::Conflict,
                size.span.clone(),
                &field,
                format!("maglev_table_size is set but scheduler \"{}\" does not use it", scheduler.value),
                "remove maglev_table_size (only maglev and sh use it), or set scheduler = \"maglev\"",
            );
        }
        return;
    }
    let backends = u32::try_from(service.declared_backends).unwrap_or(u32::MAX);
    let needed = backends.saturating_mul(MAGLEV_ENTRIES_PER_BACKEND);
    if size.value < needed {
        ctx.report(
            ErrorKind::InvalidValue,
            size.span.clone().or_else(|| service.span.clone()),
            &field,
            format!("maglev_table_size {} is too small for {backends} backends", size.value),
            format!(
                "use a prime of at least {needed} ({MAGLEV_ENTRIES_PER_BACKEND} entries per backend), e.g. maglev_table_size = {}",
                next_prime(needed)
            ),
        );
    }
}
