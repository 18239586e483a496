//! The `[vrrp]` section: its defaults, `[[vrrp.instance]]` with
//! `[[vrrp.instance.track]]`, and `[[vrrp.sync_group]]`.
//!
//! Owns: reading those tables into a [`VrrpDraft`] (one value at a time,
//! plus the keys of one track, which only make sense together) and building
//! the [`VrrpConfig`] from a clean draft. Must not: compare instances or
//! groups with each other, or check how an instance's keys combine
//! (version with interval, family with peers...): that is `checks.rs`.
//!
//! The keys under `[vrrp]` itself are defaults: an instance that does not
//! set one inherits it, and a [`Setting`] remembers whether the value was
//! written in the table at hand, so a combination error points at the line
//! that made it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::duration::format_duration;
use super::super::error::ErrorKind;
use super::super::model::*;
use super::super::reader::{At, Reserved, Section};
use super::super::tree::{Span, Table};
use super::{checked_ifname, checked_name, or_default, Setting};

/// The keys `[vrrp]` sets for every instance and an instance may override.
const SETTING_KEYS: [&str; 11] = [
    "version",
    "advert_interval",
    "preempt",
    "preempt_delay",
    "garp_repeat",
    "garp_delay",
    "garp_refresh",
    "resign_grace",
    "notify",
    "checksum",
    "vip_mode",
];
const VRRP_KEYS: &[&str] = &[
    "version",
    "advert_interval",
    "preempt",
    "preempt_delay",
    "garp_repeat",
    "garp_delay",
    "garp_refresh",
    "resign_grace",
    "notify",
    "checksum",
    "vip_mode",
    "instance",
    "sync_group",
];
const INSTANCE_KEYS: &[&str] = &[
    "name",
    "interface",
    "vrid",
    "priority",
    "vips",
    "version",
    "advert_interval",
    "preempt",
    "preempt_delay",
    "garp_repeat",
    "garp_delay",
    "garp_refresh",
    "resign_grace",
    "notify",
    "checksum",
    "vip_mode",
    "unicast_source",
    "unicast_peers",
    "auth_pass",
    "virtual_mac",
    "track",
];
const INSTANCE_RESERVED: &[Reserved] = &[Reserved {
    key: "sync_group",
    message: "an instance does not name its sync group",
    help: "list the instance in a [[vrrp.sync_group]] with instances = [\"vip1\", ...]",
}];
const TRACK_KINDS: [&str; 4] = ["interface", "file", "script", "service"];
const SCRIPT_KEYS: [&str; 4] = ["interval", "timeout", "rise", "fall"];
const TRACK_KEYS: &[&str] = &[
    "interface",
    "file",
    "script",
    "service",
    "weight",
    "interval",
    "timeout",
    "rise",
    "fall",
];
const SYNC_GROUP_KEYS: &[&str] = &["name", "instances"];

const VIPS_EXAMPLE: &str = "[\"198.18.10.10\"]";
const PEERS_EXAMPLE: &str = "[\"198.18.0.3\"]";
/// Advert interval bounds before the version is known: v3's 10 ms to v2's
/// 255 s (`checks.rs` applies the version's own range).
const MIN_ADVERT_INTERVAL: Duration = Duration::from_millis(10);
const MAX_ADVERT_INTERVAL: Duration = Duration::from_secs(255);
const MAX_DELAY: Duration = Duration::from_secs(3600);
const MAX_GARP_REFRESH: Duration = Duration::from_secs(86_400);
const MAX_TRACK_WEIGHT: i32 = 254;
const MAX_RISE_FALL: u32 = 1000;

/// `[vrrp]` as read.
pub(crate) struct VrrpDraft {
    /// The values instances inherit; `own` means written in `[vrrp]`.
    pub defaults: VrrpSettings,
    pub instances: Vec<VrrpInstanceDraft>,
    pub sync_groups: Vec<SyncGroupDraft>,
}

/// The keys of [`SETTING_KEYS`], resolved for one table.
#[derive(Clone)]
pub(crate) struct VrrpSettings {
    pub version: Setting<VrrpVersion>,
    pub advert_interval: Setting<Duration>,
    pub preempt: Setting<bool>,
    pub preempt_delay: Setting<Duration>,
    pub garp_repeat: Setting<u32>,
    pub garp_delay: Setting<Duration>,
    pub garp_refresh: Setting<Duration>,
    pub resign_grace: Setting<Duration>,
    /// `Some(None)`: no command.
    pub notify: Setting<Option<String>>,
    pub checksum: Setting<VrrpChecksum>,
    pub vip_mode: Setting<VipMode>,
}

/// `[[vrrp.instance]]` as read.
pub(crate) struct VrrpInstanceDraft {
    pub index: usize,
    pub span: Option<Span>,
    pub name: Option<At<String>>,
    pub interface: Option<At<String>>,
    pub vrid: Option<At<u8>>,
    pub priority: Option<At<u8>>,
    /// `None` when absent or invalid; otherwise 1..=255 valid addresses.
    pub vips: Option<Vec<At<IpAddr>>>,
    pub settings: VrrpSettings,
    /// `None` when absent (or invalid, reported).
    pub unicast_source: Option<At<IpAddr>>,
    /// Empty when absent (or invalid, reported).
    pub unicast_peers: Vec<At<IpAddr>>,
    pub auth_pass: Option<At<String>>,
    pub virtual_mac: Option<At<bool>>,
    pub tracks: Vec<TrackDraft>,
}

/// `[[vrrp.instance.track]]` as read.
pub(crate) struct TrackDraft {
    pub index: usize,
    /// `None` unless exactly one kind was given and it was valid; the span
    /// is the kind's value.
    pub kind: Option<At<TrackKind>>,
    pub weight: Option<At<i32>>,
}

/// `[[vrrp.sync_group]]` as read.
pub(crate) struct SyncGroupDraft {
    pub index: usize,
    pub span: Option<Span>,
    pub name: Option<At<String>>,
    /// `None` when absent, empty or invalid.
    pub instances: Option<Vec<At<String>>>,
}

impl VrrpSettings {
    /// The built-in defaults (see the model docs).
    fn builtin() -> Self {
        let garp = GarpConfig::default();
        VrrpSettings {
            version: Setting::builtin(VrrpVersion::V3),
            advert_interval: Setting::builtin(DEFAULT_ADVERT_INTERVAL),
            preempt: Setting::builtin(true),
            preempt_delay: Setting::builtin(Duration::ZERO),
            garp_repeat: Setting::builtin(garp.repeat),
            garp_delay: Setting::builtin(garp.delay),
            garp_refresh: Setting::builtin(garp.refresh),
            resign_grace: Setting::builtin(DEFAULT_RESIGN_GRACE),
            notify: Setting::builtin(None),
            checksum: Setting::builtin(VrrpChecksum::PseudoHeader),
            vip_mode: Setting::builtin(VipMode::Dataplane),
        }
    }
}

/// Reads `[vrrp]`; an absent section is an empty one.
pub(super) fn read(root: &Section) -> VrrpDraft {
    let empty = VrrpDraft {
        defaults: VrrpSettings::builtin(),
        instances: Vec::new(),
        sync_groups: Vec::new(),
    };
    let Some((table, span)) = root.table("vrrp") else {
        return empty;
    };
    let s = Section::open(
        root.ctx,
        table,
        "vrrp".into(),
        "[vrrp]",
        span,
        VRRP_KEYS,
        &[],
    );
    let defaults = read_settings(&s, &empty.defaults);
    let instances = s
        .tables("instance", "[[vrrp.instance]]")
        .into_iter()
        .map(|(i, t, sp)| read_instance(&s, &defaults, i, t, sp))
        .collect();
    let sync_groups = s
        .tables("sync_group", "[[vrrp.sync_group]]")
        .into_iter()
        .map(|(i, t, sp)| read_sync_group(&s, i, t, sp))
        .collect();
    VrrpDraft {
        defaults,
        instances,
        sync_groups,
    }
}

/// `key` from `s` when written there, else `base`'s value.
fn setting<T: Clone>(
    s: &Section,
    key: &str,
    base: &Setting<T>,
    read: impl FnOnce() -> Option<At<T>>,
) -> Setting<T> {
    debug_assert!(SETTING_KEYS.contains(&key));
    Setting::read_or_inherit(s, key, base, read)
}

fn read_settings(s: &Section, base: &VrrpSettings) -> VrrpSettings {
    let up_to =
        |key: &str, example: &str, max: Duration| s.duration(key, example, Duration::ZERO, max);
    VrrpSettings {
        version: setting(s, "version", &base.version, || read_version(s)),
        advert_interval: setting(s, "advert_interval", &base.advert_interval, || {
            let (min, max) = (MIN_ADVERT_INTERVAL, MAX_ADVERT_INTERVAL);
            s.duration("advert_interval", "\"1s\"", min, max)
        }),
        preempt: setting(s, "preempt", &base.preempt, || s.boolean("preempt")),
        preempt_delay: setting(s, "preempt_delay", &base.preempt_delay, || {
            up_to("preempt_delay", "\"0s\"", MAX_DELAY)
        }),
        garp_repeat: setting(s, "garp_repeat", &base.garp_repeat, || {
            let help = "use 1 to 100 gratuitous ARPs / unsolicited NAs per burst";
            s.int_in("garp_repeat", "5", 1, 100, help)
        }),
        garp_delay: setting(s, "garp_delay", &base.garp_delay, || {
            up_to("garp_delay", "\"5s\"", MAX_DELAY)
        }),
        garp_refresh: setting(s, "garp_refresh", &base.garp_refresh, || {
            up_to("garp_refresh", "\"0s\"", MAX_GARP_REFRESH)
        }),
        resign_grace: setting(s, "resign_grace", &base.resign_grace, || {
            up_to("resign_grace", "\"3s\"", MAX_RESIGN_GRACE)
        }),
        notify: setting(s, "notify", &base.notify, || read_notify(s)),
        checksum: setting(s, "checksum", &base.checksum, || s.choice("checksum")),
        vip_mode: setting(s, "vip_mode", &base.vip_mode, || s.choice("vip_mode")),
    }
}

fn read_version(s: &Section) -> Option<At<VrrpVersion>> {
    let help = "use version = 3 (RFC 5798, IPv4 and IPv6) or 2 (RFC 3768, IPv4 only)";
    let n = s.int_in("version", "3", 2u8, 3, help)?;
    let value = if n.value == 2 {
        VrrpVersion::V2
    } else {
        VrrpVersion::V3
    };
    Some(At {
        value,
        span: n.span,
    })
}

/// A command, or `""` for none (turns off a command inherited from `[vrrp]`).
fn read_notify(s: &Section) -> Option<At<Option<String>>> {
    let text = s.string("notify", "\"/usr/local/bin/vrrp-notify\"")?;
    let command = text.value.trim();
    Some(At {
        value: (!command.is_empty()).then(|| command.to_string()),
        span: text.span,
    })
}

fn read_instance(
    vrrp: &Section,
    defaults: &VrrpSettings,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> VrrpInstanceDraft {
    let s = Section::open(
        vrrp.ctx,
        table,
        format!("vrrp.instance[{index}]"),
        "[[vrrp.instance]]",
        span.clone(),
        INSTANCE_KEYS,
        INSTANCE_RESERVED,
    );
    s.require("name", "\"vip1\"");
    s.require("interface", "\"eth0\"");
    s.require("vrid", "51");
    s.require("vips", VIPS_EXAMPLE);
    let tracks = s
        .tables("track", "[[vrrp.instance.track]]")
        .into_iter()
        .map(|(i, t, sp)| read_track(&s, i, t, sp))
        .collect();
    VrrpInstanceDraft {
        index,
        span,
        name: s
            .string("name", "\"vip1\"")
            .and_then(|n| checked_name(&s, "name", n)),
        interface: s
            .string("interface", "\"eth0\"")
            .and_then(|n| checked_ifname(&s, "interface", n)),
        vrid: s.int_in(
            "vrid",
            "51",
            1u8,
            255,
            "use a virtual router id from 1 to 255, the same on every router of this virtual router",
        ),
        priority: read_priority(&s),
        vips: read_vips(&s),
        settings: read_settings(&s, defaults),
        unicast_source: s
            .ip("unicast_source", "\"198.18.0.1\"")
            .and_then(|a| checked_vrrp_address(&s, "unicast_source", a)),
        unicast_peers: read_peers(&s),
        auth_pass: read_auth_pass(&s),
        virtual_mac: or_default(&s, "virtual_mac", s.boolean("virtual_mac"), false),
        tracks,
    }
}

fn read_priority(s: &Section) -> Option<At<u8>> {
    let help = "use 1 to 254, or 255 only on the router whose interface owns the VIPs";
    or_default(
        s,
        "priority",
        s.int_in("priority", "100", 1u8, 255, help),
        DEFAULT_VRRP_PRIORITY,
    )
}

fn read_vips(s: &Section) -> Option<Vec<At<IpAddr>>> {
    let list = s.ips("vips", VIPS_EXAMPLE)?;
    let count = list.value.len();
    if count == 0 || count > MAX_VRRP_VIPS {
        let problem = if count == 0 {
            "vips is empty".to_string()
        } else {
            format!("{count} vips, at most {MAX_VRRP_VIPS} fit in one advert")
        };
        let help = if count == 0 {
            format!("list the addresses this virtual router carries, e.g. vips = {VIPS_EXAMPLE}")
        } else {
            "split the addresses over several instances".to_string()
        };
        s.invalid("vips", &list.span, problem, help);
        return None;
    }
    checked_list(s, "vips", list.value)
}

fn read_peers(s: &Section) -> Vec<At<IpAddr>> {
    s.ips("unicast_peers", PEERS_EXAMPLE)
        .and_then(|list| checked_list(s, "unicast_peers", list.value))
        .unwrap_or_default()
}

/// Every address of a list through [`checked_vrrp_address`]; `None` if
/// any fails.
fn checked_list(s: &Section, key: &str, list: Vec<At<IpAddr>>) -> Option<Vec<At<IpAddr>>> {
    let count = list.len();
    let ok: Vec<At<IpAddr>> = list
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| checked_vrrp_address(s, &format!("{key}[{i}]"), a))
        .collect();
    (ok.len() == count).then_some(ok)
}

/// A unicast address. Unlike a service VIP, an IPv6 link-local address is
/// fine here: RFC 5798 section 5.2.9 wants one as the first IPv6 VIP, and
/// IPv6 adverts come from one.
fn checked_vrrp_address(s: &Section, key: &str, addr: At<IpAddr>) -> Option<At<IpAddr>> {
    let problem = match addr.value {
        a if a.is_unspecified() => "the unspecified address",
        a if a.is_loopback() => "a loopback address",
        a if a.is_multicast() => "a multicast address",
        IpAddr::V4(a) if a.is_broadcast() => "the broadcast address",
        _ => return Some(addr),
    };
    s.invalid(
        key,
        &addr.span,
        format!("{} is {problem}", addr.value),
        "use a unicast address, e.g. 198.18.10.10 or 2001:db8::10".to_string(),
    );
    None
}

fn read_auth_pass(s: &Section) -> Option<At<String>> {
    s.secret(
        "auth_pass",
        MAX_AUTH_PASS,
        |len| format!("auth_pass is {len} bytes long; version 2 authentication carries 1 to {MAX_AUTH_PASS}"),
        format!("use a password of 1 to {MAX_AUTH_PASS} bytes (keepalived cuts longer ones), or remove auth_pass"),
    )
}

fn read_track(inst: &Section, index: usize, table: &Table, span: Option<Span>) -> TrackDraft {
    let s = Section::open(
        inst.ctx,
        table,
        format!("{}.track[{index}]", inst.path),
        "[[vrrp.instance.track]]",
        span,
        TRACK_KEYS,
        &[],
    );
    let help = "use -254 to 254: added to the priority while up (positive) or down (negative), or 0 to go to FAULT while down";
    let weight = or_default(
        &s,
        "weight",
        s.int_in("weight", "-20", -MAX_TRACK_WEIGHT, MAX_TRACK_WEIGHT, help),
        0,
    );
    TrackDraft {
        index,
        kind: read_track_kind(&s),
        weight,
    }
}

fn read_track_kind(s: &Section) -> Option<At<TrackKind>> {
    let given: Vec<&str> = TRACK_KINDS.into_iter().filter(|k| s.has(k)).collect();
    let script_only: Vec<&str> = SCRIPT_KEYS.into_iter().filter(|k| s.has(k)).collect();
    let (&kind, rest) = given.split_first().or_else(|| {
        report_no_track_kind(s);
        None
    })?;
    if let Some(&second) = rest.first() {
        report_two_track_kinds(s, kind, second);
        return None;
    }
    if kind != "script" {
        for key in script_only {
            report_script_only(s, key, kind);
        }
    }
    match kind {
        "interface" => {
            let name = s.string("interface", "\"eth1\"")?;
            let name = checked_ifname(s, "interface", name)?;
            Some(map_at(name, |name| TrackKind::Interface { name }))
        }
        "file" => read_track_file(s),
        "script" => read_track_script(s),
        _ => {
            let name = s.string("service", "\"web\"")?;
            let name = checked_name(s, "service", name)?;
            Some(map_at(name, |name| TrackKind::Service { name }))
        }
    }
}

fn map_at<T, U>(at: At<T>, f: impl FnOnce(T) -> U) -> At<U> {
    At {
        value: f(at.value),
        span: at.span,
    }
}

fn report_no_track_kind(s: &Section) {
    s.ctx.report(
        ErrorKind::Missing,
        s.span.clone(),
        &s.path,
        "the track does not say what to watch",
        "add one of interface = \"eth1\", file = \"/run/vrrp-ok\", script = \"/usr/local/bin/check\" or service = \"web\"",
    );
}

fn report_two_track_kinds(s: &Section, first: &str, second: &str) {
    let span = s.key_span(second);
    s.ctx.report(
        ErrorKind::Conflict,
        span,
        &s.field(second),
        format!("one track watches one thing, this one sets both {first} and {second}"),
        format!("move {second} into its own [[vrrp.instance.track]]"),
    );
}

fn report_script_only(s: &Section, key: &str, kind: &str) {
    s.ctx.report(
        ErrorKind::Conflict,
        s.key_span(key),
        &s.field(key),
        format!("{key} applies to script tracks only, not to {kind} tracks"),
        format!("remove {key}"),
    );
}

fn read_track_file(s: &Section) -> Option<At<TrackKind>> {
    let path = s.string("file", "\"/run/vrrp-ok\"")?;
    if path.value.starts_with('/') && !path.value.ends_with('/') {
        let path = map_at(path, PathBuf::from);
        return Some(map_at(path, |path| TrackKind::File { path }));
    }
    s.invalid(
        "file",
        &path.span,
        format!("file \"{}\" is not an absolute file path", path.value),
        "use an absolute path such as \"/run/vrrp-ok\"".to_string(),
    );
    None
}

fn read_track_script(s: &Section) -> Option<At<TrackKind>> {
    let command = s.string("script", "\"/usr/local/bin/check-web\"")?;
    let min = Duration::from_millis(100);
    let interval = or_default(
        s,
        "interval",
        s.duration("interval", "\"2s\"", min, MAX_DELAY),
        DEFAULT_TRACK_SCRIPT_INTERVAL,
    );
    let timeout = s.duration("timeout", "\"2s\"", min, MAX_DELAY);
    let count = |key: &str| {
        let help = format!("use 1 to {MAX_RISE_FALL} consecutive results");
        or_default(s, key, s.int_in(key, "1", 1u32, MAX_RISE_FALL, &help), 1)
    };
    let (rise, fall) = (count("rise"), count("fall"));
    if command.value.trim().is_empty() {
        s.invalid(
            "script",
            &command.span,
            "script is empty".to_string(),
            "write the command to run, e.g. script = \"/usr/local/bin/check-web --quiet\""
                .to_string(),
        );
        return None;
    }
    let interval = interval?.value;
    let timeout = checked_timeout(s, timeout, interval, s.has("timeout"))?;
    Some(At {
        value: TrackKind::Script {
            command: command.value.trim().to_string(),
            interval,
            timeout,
            rise: rise?.value,
            fall: fall?.value,
        },
        span: command.span,
    })
}

/// `timeout` (default: the interval) may not exceed the interval: a new
/// run would start while the last one still counts.
fn checked_timeout(
    s: &Section,
    timeout: Option<At<Duration>>,
    interval: Duration,
    given: bool,
) -> Option<Duration> {
    let Some(t) = timeout else {
        return (!given).then_some(interval);
    };
    if t.value <= interval {
        return Some(t.value);
    }
    s.invalid(
        "timeout",
        &t.span,
        format!(
            "timeout {} is longer than the script's interval {}",
            format_duration(t.value),
            format_duration(interval)
        ),
        "use a timeout of at most the interval, or raise interval".to_string(),
    );
    None
}

fn read_sync_group(
    vrrp: &Section,
    index: usize,
    table: &Table,
    span: Option<Span>,
) -> SyncGroupDraft {
    let s = Section::open(
        vrrp.ctx,
        table,
        format!("vrrp.sync_group[{index}]"),
        "[[vrrp.sync_group]]",
        span.clone(),
        SYNC_GROUP_KEYS,
        &[],
    );
    s.require("name", "\"g1\"");
    s.require("instances", "[\"vip1\", \"vip1-v6\"]");
    let name = s
        .string("name", "\"g1\"")
        .and_then(|n| checked_name(&s, "name", n));
    let instances = s
        .strings("instances", "[\"vip1\", \"vip1-v6\"]")
        .and_then(|list| {
            if list.value.is_empty() {
                s.invalid(
                    "instances",
                    &list.span,
                    "the sync group has no instances".to_string(),
                    "list the [[vrrp.instance]] names that change state together, e.g. instances = [\"vip1\", \"vip1-v6\"]".to_string(),
                );
                return None;
            }
            Some(list.value.into_iter().map(|n| map_at(n, str::to_string)).collect())
        });
    SyncGroupDraft {
        index,
        span,
        name,
        instances,
    }
}

/// The typed `[vrrp]` from a draft without errors.
pub(super) fn build(draft: VrrpDraft) -> Option<VrrpConfig> {
    let instances = draft
        .instances
        .into_iter()
        .map(build_instance)
        .collect::<Option<Vec<_>>>()?;
    let sync_groups = draft
        .sync_groups
        .into_iter()
        .map(|g| {
            Some(SyncGroupConfig {
                name: g.name?.value,
                instances: g.instances?.into_iter().map(|n| n.value).collect(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(VrrpConfig {
        instances,
        sync_groups,
    })
}

fn build_instance(i: VrrpInstanceDraft) -> Option<VrrpInstanceConfig> {
    let st = i.settings;
    let value = |at: Option<At<Duration>>| at.map(|a| a.value);
    Some(VrrpInstanceConfig {
        name: i.name?.value,
        interface: i.interface?.value,
        vrid: i.vrid?.value,
        priority: i.priority?.value,
        version: st.version.at?.value,
        advert_interval: value(st.advert_interval.at)?,
        preempt: st.preempt.at?.value,
        preempt_delay: value(st.preempt_delay.at)?,
        vips: i.vips?.into_iter().map(|a| a.value).collect(),
        vip_mode: st.vip_mode.at?.value,
        checksum: st.checksum.at?.value,
        unicast_source: i.unicast_source.map(|a| a.value),
        unicast_peers: i.unicast_peers.into_iter().map(|a| a.value).collect(),
        auth_pass: i.auth_pass.map(|a| a.value),
        virtual_mac: i.virtual_mac?.value,
        garp: GarpConfig {
            repeat: st.garp_repeat.at?.value,
            delay: value(st.garp_delay.at)?,
            refresh: value(st.garp_refresh.at)?,
        },
        resign_grace: value(st.resign_grace.at)?,
        notify: st.notify.at?.value,
        tracks: i
            .tracks
            .into_iter()
            .map(|t| {
                Some(TrackConfig {
                    kind: t.kind?.value,
                    weight: t.weight?.value,
                })
            })
            .collect::<Option<Vec<_>>>()?,
    })
}
