//! `[vrrp]` against the [`SystemView`]: the links instances and tracks name
//! exist, and a `unicast_source` is an address of the instance's link.
//!
//! Must not: read the system (the caller fills in the view).

use super::super::error::ErrorKind;
use super::super::model::{TrackKind, VipMode};
use super::super::reader::{At, Ctx};
use super::super::schema::{Draft, VrrpInstanceDraft};
use super::{check_link, SystemView};

pub(super) fn check(ctx: &Ctx, draft: &Draft, view: &SystemView) {
    for instance in &draft.vrrp.instances {
        let path = format!("vrrp.instance[{}]", instance.index);
        if let Some(name) = &instance.interface {
            if !dataplane_link(draft, instance) {
                check_link(ctx, &format!("{path}.interface"), name, view);
            }
            check_unicast_source(ctx, &path, instance, &name.value, view);
        }
        for track in &instance.tracks {
            let Some(At {
                value: TrackKind::Interface { name },
                span,
            }) = &track.kind
            else {
                continue;
            };
            let field = format!("{path}.track[{}].interface", track.index);
            let at = At {
                value: name.clone(),
                span: span.clone(),
            };
            check_link(ctx, &field, &at, view);
        }
    }
}

/// Whether the instance's link is a configured `[[interface]]` (checked
/// as such), or must be one (vip_mode "dataplane": `checks.rs` reports it
/// when it is not, with a "did you mean"). Either way one error is enough.
fn dataplane_link(draft: &Draft, instance: &VrrpInstanceDraft) -> bool {
    let configured = instance.interface.as_ref().is_some_and(|name| {
        draft
            .interfaces
            .iter()
            .any(|i| i.name.as_ref().is_some_and(|n| n.value == name.value))
    });
    configured || instance.settings.vip_mode.value() == Some(&VipMode::Dataplane)
}

fn check_unicast_source(
    ctx: &Ctx,
    path: &str,
    instance: &VrrpInstanceDraft,
    link: &str,
    view: &SystemView,
) {
    let (Some(source), Some(iface)) = (&instance.unicast_source, view.interface(link)) else {
        return;
    };
    if iface.addresses.iter().any(|a| a.address == source.value) {
        return;
    }
    let same_family: Vec<String> = iface
        .addresses
        .iter()
        .filter(|a| a.address.is_ipv4() == source.value.is_ipv4())
        .map(|a| a.address.to_string())
        .collect();
    let help = match same_family.first() {
        Some(first) => format!(
            "use one of {}'s addresses ({}), e.g. unicast_source = \"{first}\", or add {} to it",
            link,
            same_family.join(", "),
            source.value
        ),
        None => format!("add {} to {link}, or remove unicast_source", source.value),
    };
    ctx.report(
        ErrorKind::System,
        source.span.clone(),
        &format!("{path}.unicast_source"),
        format!(
            "unicast_source {} is not an address of interface \"{link}\"",
            source.value
        ),
        help,
    );
}
