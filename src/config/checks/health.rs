//! Health checks compared with the services they belong to: the quorum
//! against the backends' weights, address families of probe sources and
//! sorry servers.

use std::collections::HashSet;
use std::net::IpAddr;

use super::super::error::ErrorKind;
use super::super::reader::Ctx;
use super::super::schema::{Draft, ServiceDraft};

pub(super) fn check(ctx: &Ctx, draft: &Draft) {
    let mut reported = HashSet::new();
    for service in &draft.services {
        check_quorum(ctx, service);
        check_sorry_server(ctx, service);
        check_sources(ctx, service, &mut reported);
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn check_quorum(ctx: &Ctx, s: &ServiceDraft) {
    let (Some(quorum), Some(hysteresis)) = (&s.health.quorum, &s.health.hysteresis) else {
        return;
    };
    let weights: Option<u64> = s
        .backends
        .iter()
        .map(|b| b.weight.as_ref().map(|w| u64::from(w.value)))
        .sum();
    let field = format!("service[{}]", s.index);
    // With the default quorum, a service whose backends are all at weight
    // 0 is drained on purpose: not an error, just not usable.
    let written = quorum.span.is_some() || hysteresis.span.is_some();
    let needed = u64::from(quorum.value) + u64::from(hysteresis.value);
    if let Some(total) = weights.filter(|t| written && needed > *t) {
        ctx.report(
            ErrorKind::Conflict,
            quorum.span.clone().or(s.span.clone()),
            &format!("{field}.quorum"),
            format!(
                "quorum {} + hysteresis {} is more than the backends' total weight {total}: the service could never count as up",
                quorum.value, hysteresis.value
            ),
            format!("use a quorum of at most {} (minus hysteresis), or add backends", total.max(1)),
        );
    }
    if hysteresis.value >= quorum.value && hysteresis.value > 0 {
        ctx.report(
            ErrorKind::Conflict,
            hysteresis.span.clone(),
            &format!("{field}.hysteresis"),
            format!(
                "hysteresis {} is not below quorum {}: the service could never count as down",
                hysteresis.value, quorum.value
            ),
            format!(
                "use a hysteresis from 0 to {}",
                quorum.value.saturating_sub(1)
            ),
        );
    }
}

fn check_sorry_server(ctx: &Ctx, s: &ServiceDraft) {
    let (Some(Some(sorry)), Some(vip)) = (&s.health.sorry_server, &s.vip) else {
        return;
    };
    let addr = sorry.value.0;
    if addr.is_ipv4() != vip.value.is_ipv4() {
        ctx.report(
            ErrorKind::Conflict,
            sorry.span.clone(),
            &format!("service[{}].sorry_server", s.index),
            format!(
                "sorry_server {addr} is {} but the VIP {} is {}",
                family(addr),
                vip.value,
                family(vip.value)
            ),
            "use a sorry server of the VIP's family (the dataplane does not translate between families)",
        );
    }
}

/// A probe source must be of the backend's family. A source inherited by
/// many backends is reported once, at the line that set it.
fn check_sources(ctx: &Ctx, s: &ServiceDraft, reported: &mut HashSet<usize>) {
    for b in &s.backends {
        let (Some(addr), Some(source)) = (&b.address, &b.health.source.at) else {
            continue;
        };
        let Some(src) = source.value else { continue };
        if src.is_ipv4() == addr.value.is_ipv4() {
            continue;
        }
        let at = source.span.as_ref().map_or(0, |sp| sp.start);
        if !reported.insert(at) {
            continue;
        }
        ctx.report(
            ErrorKind::Conflict,
            source.span.clone(),
            &format!("service[{}].backend[{}].health.source", s.index, b.index),
            format!(
                "health check source {src} is {} but backend {} is {}",
                family(src),
                addr.value,
                family(addr.value)
            ),
            "set source in the service's or backend's [health] table to an address of the backend's family",
        );
    }
}
