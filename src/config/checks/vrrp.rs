//! Checks of `[vrrp]` that combine several values: the keys of one
//! instance with each other (version, interval, families, auth_pass,
//! checksum, tracks), instances with each other (names, virtual routers,
//! VIPs), with the services and interfaces of the file, and sync groups.
//!
//! Must not: look at the system (`system.rs`). A combination is checked in
//! the table that wrote one of its keys, so a bad `[vrrp]` default is
//! reported once, at `[vrrp]`, and not again for every instance that
//! inherits it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::duration::format_duration;
use super::super::error::ErrorKind;
use super::super::model::{is_link_local, VipMode, VrrpChecksum, VrrpVersion};
use super::super::reader::{At, Ctx};
use super::super::schema::{
    Draft, InterfaceDraft, Setting, SyncGroupDraft, VrrpDraft, VrrpInstanceDraft,
};
use super::super::suggest::did_you_mean_suffix;
use super::super::tree::Span;
use super::{first_at, FirstSeen};

/// Longest version 3 interval: 4095 centiseconds (a 12-bit field).
const MAX_V3_INTERVAL: Duration = Duration::from_millis(40_950);
const MAX_V2_INTERVAL: Duration = Duration::from_secs(255);

pub(super) fn check(ctx: &Ctx, draft: &Draft) {
    let vrrp = &draft.vrrp;
    check_interval(
        ctx,
        "vrrp",
        &vrrp.defaults.version,
        &vrrp.defaults.advert_interval,
    );
    check_checksum_version(ctx, "vrrp", &vrrp.defaults.version, &vrrp.defaults.checksum);
    for instance in &vrrp.instances {
        check_instance(ctx, draft, instance);
    }
    check_instance_names(ctx, &vrrp.instances);
    check_virtual_routers(ctx, &vrrp.instances);
    check_vip_owners(ctx, &vrrp.instances);
    check_sync_groups(ctx, vrrp);
}

fn check_instance(ctx: &Ctx, draft: &Draft, instance: &VrrpInstanceDraft) {
    let path = format!("vrrp.instance[{}]", instance.index);
    let st = &instance.settings;
    check_interval(ctx, &path, &st.version, &st.advert_interval);
    check_checksum_version(ctx, &path, &st.version, &st.checksum);
    check_auth_pass(ctx, &path, instance);
    check_virtual_mac(ctx, &path, instance);
    if let Some(family) = check_vip_family(ctx, &path, instance) {
        check_family_uses(ctx, &path, instance, family);
    }
    check_owner_tracks(ctx, &path, instance);
    check_track_services(ctx, &path, draft, instance);
    check_dataplane_interface(ctx, &path, &draft.interfaces, instance);
}

/// " (set in [vrrp])", " (the default)" or "" for a value written in the
/// table at hand.
fn origin<T>(setting: &Setting<T>) -> &'static str {
    match &setting.at {
        _ if setting.own => "",
        Some(At { span: Some(_), .. }) => " (set in [vrrp])",
        _ => " (the default)",
    }
}

fn version_number(version: &Setting<VrrpVersion>) -> Option<u8> {
    version.value().map(|v| v.number())
}

/// v3: 10 ms..=40.95 s in whole centiseconds; v2: 1..=255 whole seconds.
fn check_interval(
    ctx: &Ctx,
    path: &str,
    version: &Setting<VrrpVersion>,
    interval: &Setting<Duration>,
) {
    let (Some(v), Some(d)) = (version.value(), interval.value()) else {
        return;
    };
    let needs = format!("version {}{}", v.number(), origin(version));
    let Some((problem, help)) = interval_problem(*v, *d, &needs) else {
        return;
    };
    let (span, key) = match (interval.own_at(), version.own_at()) {
        (Some(i), _) => (i.span.clone(), "advert_interval"),
        (None, Some(v)) => (v.span.clone(), "version"),
        (None, None) => return,
    };
    ctx.report(
        ErrorKind::Conflict,
        span,
        &format!("{path}.{key}"),
        format!(
            "advert_interval {}{} {problem}",
            format_duration(*d),
            origin(interval)
        ),
        help,
    );
}

/// What is wrong with `interval` for `version` (`needs` names it), and
/// the fix.
fn interval_problem(
    version: VrrpVersion,
    interval: Duration,
    needs: &str,
) -> Option<(String, String)> {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    match version {
        VrrpVersion::V3 if interval > MAX_V3_INTERVAL => Some((
            format!("is longer than the 40s950ms that {needs} can carry"),
            "use 10ms to 40s950ms (version 3 counts centiseconds in 12 bits), or version = 2 for longer intervals".to_string(),
        )),
        VrrpVersion::V3 if ms % 10 != 0 => Some((
            format!("is not a whole number of centiseconds, as {needs} needs"),
            format!(
                "use a multiple of 10ms, e.g. advert_interval = \"{}\"",
                format_duration(Duration::from_millis((ms + 5) / 10 * 10))
            ),
        )),
        VrrpVersion::V2 if ms % 1000 != 0 || interval > MAX_V2_INTERVAL => Some((
            format!("is not a whole number of seconds, as {needs} needs"),
            "use 1s to 255s, or version = 3 for sub-second adverts".to_string(),
        )),
        _ => None,
    }
}

/// `checksum = "rfc9568"` changes only the IPv4 version 3 checksum.
/// Written explicitly where it means nothing it is an error (the operator
/// expects an effect there will not be); inherited from `[vrrp]` it is
/// ignored, so one default can serve instances of both families.
fn check_checksum_version(
    ctx: &Ctx,
    path: &str,
    version: &Setting<VrrpVersion>,
    checksum: &Setting<VrrpChecksum>,
) {
    let Some(c) = checksum.own_at() else { return };
    if c.value != VrrpChecksum::Rfc9568 || version.value() != Some(&VrrpVersion::V2) {
        return;
    }
    ctx.report(
        ErrorKind::Conflict,
        c.span.clone(),
        &format!("{path}.checksum"),
        format!(
            "checksum \"rfc9568\" has no meaning with version 2{}",
            origin(version)
        ),
        "remove checksum: the version 2 checksum never covers a pseudo-header",
    );
}

fn check_auth_pass(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft) {
    let (Some(pass), Some(3)) = (
        &instance.auth_pass,
        version_number(&instance.settings.version),
    ) else {
        return;
    };
    ctx.report(
        ErrorKind::Conflict,
        pass.span.clone(),
        &format!("{path}.auth_pass"),
        format!(
            "auth_pass needs version 2, this instance runs version 3{}, which has no authentication",
            origin(&instance.settings.version)
        ),
        "remove auth_pass, or set version = 2 (IPv4 only) to match routers that still use it",
    );
}

/// The virtual MAC is claimed by the dataplane; kernel-mode VIPs would need
/// a macvlan per instance (keepalived's use_vmac), which vipgate does not
/// create.
fn check_virtual_mac(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft) {
    let Some(vmac) = instance.virtual_mac.as_ref().filter(|v| v.value) else {
        return;
    };
    let kernel = matches!(
        instance.settings.vip_mode.at.as_ref().map(|a| a.value),
        Some(VipMode::Kernel)
    );
    if !kernel {
        return;
    }
    ctx.report(
        ErrorKind::Conflict,
        vmac.span.clone(),
        &format!("{path}.virtual_mac"),
        format!(
            "virtual_mac needs vip_mode = \"dataplane\"; this instance uses vip_mode = \"kernel\"{}",
            origin(&instance.settings.vip_mode)
        ),
        "remove virtual_mac (the link's own MAC is used), or set vip_mode = \"dataplane\"",
    );
}

fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// All VIPs of one family; returns it (`true` for IPv6) when they are.
fn check_vip_family(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft) -> Option<bool> {
    let vips = instance.vips.as_ref()?;
    let first = vips.first()?;
    let v6 = first.value.is_ipv6();
    let Some((i, other)) = vips
        .iter()
        .enumerate()
        .find(|(_, a)| a.value.is_ipv6() != v6)
    else {
        return Some(v6);
    };
    ctx.report(
        ErrorKind::Conflict,
        other.span.clone(),
        &format!("{path}.vips[{i}]"),
        format!(
            "vips mix address families: {} is {} but {} is {}",
            other.value,
            family(other.value),
            first.value,
            family(first.value)
        ),
        "split into two instances, one per family (put both in one [[vrrp.sync_group]] to move them together)",
    );
    None
}

/// The checks that need the instance's family.
fn check_family_uses(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft, v6: bool) {
    let st = &instance.settings;
    let fam = if v6 { "IPv6" } else { "IPv4" };
    if v6 && st.version.value() == Some(&VrrpVersion::V2) {
        report_v6_with_v2(ctx, path, instance);
    }
    if let Some(c) = st
        .checksum
        .own_at()
        .filter(|c| v6 && c.value == VrrpChecksum::Rfc9568)
    {
        ctx.report(
            ErrorKind::Conflict,
            c.span.clone(),
            &format!("{path}.checksum"),
            "checksum \"rfc9568\" has no meaning for IPv6 vips".to_string(),
            "remove checksum: IPv6 checksums always cover the pseudo-header, RFC 9568 changes only IPv4",
        );
    }
    if let Some(source) = instance
        .unicast_source
        .as_ref()
        .filter(|s| s.value.is_ipv6() != v6)
    {
        ctx.report(
            ErrorKind::Conflict,
            source.span.clone(),
            &format!("{path}.unicast_source"),
            format!(
                "unicast_source {} is {} but the vips are {fam}",
                source.value,
                family(source.value)
            ),
            format!("use an {fam} address of the instance's interface"),
        );
    }
    check_peers(ctx, path, instance, v6);
}

fn report_v6_with_v2(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft) {
    let version = &instance.settings.version;
    let span = version
        .own_at()
        .map(|v| v.span.clone())
        .unwrap_or_else(|| instance.vips.as_ref().and_then(|v| v.first()?.span.clone()));
    let key = if version.own { "version" } else { "vips[0]" };
    ctx.report(
        ErrorKind::Conflict,
        span,
        &format!("{path}.{key}"),
        format!(
            "IPv6 vips need VRRP version 3, this instance runs version 2{}",
            origin(version)
        ),
        "use version = 3 in this instance (version 2 carries IPv4 only)",
    );
}

/// Peers of the instance's family, each once, none the router itself.
fn check_peers(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft, v6: bool) {
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let source = instance.unicast_source.as_ref().map(|s| s.value);
    let mut seen = FirstSeen::new();
    for (i, peer) in instance.unicast_peers.iter().enumerate() {
        let field = format!("{path}.unicast_peers[{i}]");
        let (kind, message, help) = if peer.value.is_ipv6() != v6 {
            (
                ErrorKind::Conflict,
                format!(
                    "unicast peer {} is {} but the vips are {fam}",
                    peer.value,
                    family(peer.value)
                ),
                format!(
                    "list {fam} peers only ({} peers belong to an {} instance)",
                    family(peer.value),
                    family(peer.value)
                ),
            )
        } else if Some(peer.value) == source {
            (
                ErrorKind::Conflict,
                format!(
                    "unicast peer {} is this router's own unicast_source",
                    peer.value
                ),
                "list the other routers of the virtual router only".to_string(),
            )
        } else if let Some(first) = seen.earlier(peer.value, &peer.span) {
            (
                ErrorKind::Duplicate,
                format!(
                    "unicast peer {} is listed twice{}",
                    peer.value,
                    first_at(ctx, &first)
                ),
                "remove one of them".to_string(),
            )
        } else {
            continue;
        };
        ctx.report(kind, peer.span.clone(), &field, message, help);
    }
}

/// Priority 255 means "owns the addresses"; its priority cannot move.
fn check_owner_tracks(ctx: &Ctx, path: &str, instance: &VrrpInstanceDraft) {
    if instance.priority.as_ref().map(|p| p.value) != Some(255) {
        return;
    }
    for track in &instance.tracks {
        let Some(weight) = track.weight.as_ref().filter(|w| w.value != 0) else {
            continue;
        };
        ctx.report(
            ErrorKind::Conflict,
            weight.span.clone(),
            &format!("{path}.track[{}].weight", track.index),
            format!(
                "weight {} would move the priority of an address owner (priority 255), which stays 255",
                weight.value
            ),
            "use weight = 0 (FAULT while down), or a priority of 254 or less",
        );
    }
}

fn check_track_services(ctx: &Ctx, path: &str, draft: &Draft, instance: &VrrpInstanceDraft) {
    let names: Vec<&str> = draft
        .services
        .iter()
        .filter_map(|s| s.name.as_ref().map(|n| n.value.as_str()))
        .collect();
    for track in &instance.tracks {
        let Some(kind) = &track.kind else { continue };
        let super::super::model::TrackKind::Service { name } = &kind.value else {
            continue;
        };
        if names.contains(&name.as_str()) {
            continue;
        }
        let list = if names.is_empty() {
            "the file has no services".to_string()
        } else {
            format!("existing: {}", names.join(", "))
        };
        ctx.report(
            ErrorKind::InvalidValue,
            kind.span.clone(),
            &format!("{path}.track[{}].service", track.index),
            format!("service \"{name}\" does not exist; {list}"),
            format!(
                "name a [[service]] of this file{}",
                did_you_mean_suffix(name, names.iter().copied())
            ),
        );
    }
}

/// In `vip_mode = "dataplane"` the dataplane answers for the VIPs, so the
/// instance's link must be one of its interfaces, facing the clients.
fn check_dataplane_interface(
    ctx: &Ctx,
    path: &str,
    interfaces: &[InterfaceDraft],
    instance: &VrrpInstanceDraft,
) {
    let (Some(name), Some(VipMode::Dataplane)) =
        (&instance.interface, instance.settings.vip_mode.value())
    else {
        return;
    };
    let mode = origin(&instance.settings.vip_mode);
    let configured = interfaces
        .iter()
        .find(|i| i.name.as_ref().is_some_and(|n| n.value == name.value));
    let client_sides = interfaces
        .iter()
        .filter(|i| i.role.as_ref().is_some_and(|r| r.value.carries_clients()))
        .filter_map(|i| i.name.as_ref().map(|n| n.value.as_str()));
    let (message, help) = match configured.map(|i| i.role.as_ref().map(|r| r.value)) {
        None => (
            format!("interface \"{}\" is not a dataplane [[interface]], but vip_mode \"dataplane\"{mode} serves the VIPs from the dataplane", name.value),
            format!(
                "add [[interface]] name = \"{}\" role = \"client\", or set vip_mode = \"kernel\"{}",
                name.value,
                did_you_mean_suffix(&name.value, client_sides)
            ),
        ),
        Some(Some(role)) if !role.carries_clients() => (
            format!("interface \"{}\" has role \"{role}\", but vip_mode \"dataplane\"{mode} needs the clients to reach the VIPs there", name.value),
            format!("set role = \"both\" on [[interface]] \"{}\", or run the instance on the client-side interface", name.value),
        ),
        _ => return,
    };
    ctx.report(
        ErrorKind::Conflict,
        name.span.clone(),
        &format!("{path}.interface"),
        message,
        help,
    );
}

fn check_instance_names(ctx: &Ctx, instances: &[VrrpInstanceDraft]) {
    let mut seen = FirstSeen::new();
    for instance in instances {
        let Some(name) = &instance.name else { continue };
        if let Some(first) = seen.earlier(name.value.as_str(), &name.span) {
            ctx.report(
                ErrorKind::Duplicate,
                name.span.clone(),
                &format!("vrrp.instance[{}].name", instance.index),
                format!(
                    "instance name \"{}\" is used twice{}",
                    name.value,
                    first_at(ctx, &first)
                ),
                "give each [[vrrp.instance]] its own name",
            );
        }
    }
}

fn instance_name(instance: &VrrpInstanceDraft) -> &str {
    instance.name.as_ref().map_or("?", |n| n.value.as_str())
}

/// One virtual router per (interface, family, vrid).
fn check_virtual_routers(ctx: &Ctx, instances: &[VrrpInstanceDraft]) {
    let mut seen: HashMap<(&str, bool, u8), &VrrpInstanceDraft> = HashMap::new();
    for instance in instances {
        let (Some(iface), Some(vrid), Some(first_vip)) = (
            &instance.interface,
            &instance.vrid,
            instance.vips.as_ref().and_then(|v| v.first()),
        ) else {
            continue;
        };
        let v6 = first_vip.value.is_ipv6();
        let key = (iface.value.as_str(), v6, vrid.value);
        let Some(first) = seen.get(&key) else {
            seen.insert(key, instance);
            continue;
        };
        ctx.report(
            ErrorKind::Duplicate,
            vrid.span.clone(),
            &format!("vrrp.instance[{}].vrid", instance.index),
            format!(
                "vrid {} for {} on \"{}\" is already used by instance \"{}\" (line {})",
                vrid.value,
                family(first_vip.value),
                iface.value,
                instance_name(first),
                ctx.line_of(&first.span).unwrap_or(1)
            ),
            "give each virtual router on a link its own vrid (per address family), the same on all its routers",
        );
    }
}

/// A VIP, with its link when it is link-local (those are per link).
type VipKey<'d> = (IpAddr, Option<&'d str>);

/// A VIP belongs to one instance. Link-local addresses are per link.
fn check_vip_owners(ctx: &Ctx, instances: &[VrrpInstanceDraft]) {
    let mut seen: HashMap<VipKey, (&VrrpInstanceDraft, Option<Span>)> = HashMap::new();
    for instance in instances {
        let Some(vips) = &instance.vips else { continue };
        let iface = instance.interface.as_ref().map(|i| i.value.as_str());
        for (i, vip) in vips.iter().enumerate() {
            let link = is_link_local(vip.value).then_some(iface).flatten();
            let Some((first, first_span)) = seen.get(&(vip.value, link)) else {
                seen.insert((vip.value, link), (instance, vip.span.clone()));
                continue;
            };
            let (message, help) = if std::ptr::eq(*first, instance) {
                (
                    format!(
                        "vip {} is listed twice in this instance{}",
                        vip.value,
                        first_at(ctx, first_span)
                    ),
                    "remove one of them".to_string(),
                )
            } else {
                (
                    format!(
                        "vip {} already belongs to instance \"{}\"{}",
                        vip.value,
                        instance_name(first),
                        first_at(ctx, first_span)
                    ),
                    "list each address in one instance only".to_string(),
                )
            };
            ctx.report(
                ErrorKind::Duplicate,
                vip.span.clone(),
                &format!("vrrp.instance[{}].vips[{i}]", instance.index),
                message,
                help,
            );
        }
    }
}

fn check_sync_groups(ctx: &Ctx, vrrp: &VrrpDraft) {
    let names: Vec<&str> = vrrp
        .instances
        .iter()
        .filter_map(|i| i.name.as_ref().map(|n| n.value.as_str()))
        .collect();
    let mut group_names = FirstSeen::new();
    let mut member_of: HashMap<&str, &SyncGroupDraft> = HashMap::new();
    for group in &vrrp.sync_groups {
        let path = format!("vrrp.sync_group[{}]", group.index);
        if let Some(name) = &group.name {
            if let Some(first) = group_names.earlier(name.value.as_str(), &name.span) {
                ctx.report(
                    ErrorKind::Duplicate,
                    name.span.clone(),
                    &format!("{path}.name"),
                    format!(
                        "sync group name \"{}\" is used twice{}",
                        name.value,
                        first_at(ctx, &first)
                    ),
                    "give each [[vrrp.sync_group]] its own name",
                );
            }
        }
        for (i, member) in group.instances.iter().flatten().enumerate() {
            let field = format!("{path}.instances[{i}]");
            check_member(ctx, &field, &names, member, group, &mut member_of);
        }
    }
}

/// A member names an instance that no group (this one included) lists yet.
fn check_member<'d>(
    ctx: &Ctx,
    field: &str,
    names: &[&str],
    member: &'d At<String>,
    group: &'d SyncGroupDraft,
    member_of: &mut HashMap<&'d str, &'d SyncGroupDraft>,
) {
    let name = member.value.as_str();
    let (kind, message, help) = if !names.contains(&name) {
        let list = if names.is_empty() {
            "the file has no [[vrrp.instance]]".to_string()
        } else {
            format!("existing: {}", names.join(", "))
        };
        (
            ErrorKind::InvalidValue,
            format!("instance \"{name}\" does not exist; {list}"),
            format!(
                "fix the name, or add a [[vrrp.instance]] named \"{name}\"{}",
                did_you_mean_suffix(name, names.iter().copied())
            ),
        )
    } else if let Some(first) = member_of.get(name) {
        let group_name = first.name.as_ref().map_or("?", |n| n.value.as_str());
        let line = ctx.line_of(&first.span).unwrap_or(1);
        let message = if std::ptr::eq(*first, group) {
            format!("instance \"{name}\" is listed twice in this sync group")
        } else {
            format!("instance \"{name}\" is already in sync group \"{group_name}\" (line {line})")
        };
        (
            ErrorKind::Duplicate,
            message,
            "an instance follows one sync group: list it once, or merge the groups".to_string(),
        )
    } else {
        member_of.insert(name, group);
        return;
    };
    ctx.report(kind, member.span.clone(), field, message, help);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(version: VrrpVersion, ms: u64) -> bool {
        interval_problem(version, Duration::from_millis(ms), "v").is_none()
    }

    #[test]
    fn interval_bounds_per_version() {
        assert!(ok(VrrpVersion::V3, 10) && ok(VrrpVersion::V3, 40_950));
        assert!(!ok(VrrpVersion::V3, 40_960) && !ok(VrrpVersion::V3, 15));
        assert!(ok(VrrpVersion::V2, 1_000) && ok(VrrpVersion::V2, 255_000));
        assert!(!ok(VrrpVersion::V2, 1_500) && !ok(VrrpVersion::V2, 256_000));
        assert!(!ok(VrrpVersion::V2, 100));
    }

    #[test]
    fn centisecond_fix_rounds_to_the_nearest_step() {
        let (_, help) = interval_problem(VrrpVersion::V3, Duration::from_millis(1_004), "v")
            .expect("not whole centiseconds");
        assert!(help.ends_with("advert_interval = \"1s\""), "{help}");
    }
}
