//! Health checks: `[health]` (defaults), `[service.health]` (the service's
//! check) and `[service.backend.health]` (one backend's), plus the
//! service's health policy keys in `[[service]]` (`quorum`, `hysteresis`,
//! `hold_down`, `sorry_server`).
//!
//! Owns: reading those tables into [`CheckSettings`], each inheriting the
//! table above it key by key, the checks of how one table's keys combine
//! (a key that the check type does not use, a timeout longer than the
//! interval), and building a backend's [`HealthCheckConfig`]. Must not:
//! compare services with each other or look at the system.
//!
//! A combination error is reported in the table that wrote the key at
//! fault, once, not in every backend that inherits it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;

use super::super::duration::format_duration;
use super::super::model::*;
use super::super::reader::{At, Section};
use super::super::tree::Value;
use super::{checked_address, read_port, Setting};

/// The keys of a check table; `[health]`, `[service.health]` and
/// `[service.backend.health]` accept the same ones.
pub(crate) const CHECK_KEYS: &[&str] = &[
    "type",
    "interval",
    "timeout",
    "rise",
    "fall",
    "retries",
    "retry_delay",
    "startup_delay",
    "jitter",
    "source",
    "inhibit_on_failure",
    "port",
    "path",
    "host",
    "expect_status",
    "body_contains",
    "body_sha256",
    "tls_verify",
    "server_name",
    "payload",
    "expect",
    "command",
];

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_RISE_FALL: u32 = 100;
const MAX_RETRIES: u32 = 10;
const MAX_PAYLOAD: usize = 1400;
const MAX_TEXT: usize = 1024;

/// Defaults (keepalived's checkers use 1 s connect timeouts and `retry 1`;
/// vipgate asks for 3 failures to fail and 2 passes to recover, so one lost
/// probe never moves traffic).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);

/// One check table's keys, resolved with inheritance.
#[derive(Clone)]
pub(crate) struct CheckSettings {
    pub kind: Setting<CheckType>,
    pub interval: Setting<Duration>,
    pub timeout: Setting<Duration>,
    pub rise: Setting<u32>,
    pub fall: Setting<u32>,
    pub retries: Setting<u32>,
    pub retry_delay: Setting<Duration>,
    pub startup_delay: Setting<Duration>,
    pub jitter: Setting<Duration>,
    pub source: Setting<Option<IpAddr>>,
    pub inhibit_on_failure: Setting<bool>,
    pub port: Setting<Option<NonZeroU16>>,
    pub path: Setting<String>,
    pub host: Setting<Option<String>>,
    pub expect_status: Setting<Vec<(u16, u16)>>,
    pub body_contains: Setting<Option<String>>,
    pub body_sha256: Setting<Option<[u8; 32]>>,
    pub tls_verify: Setting<bool>,
    pub server_name: Setting<Option<String>>,
    pub payload: Setting<Option<Vec<u8>>>,
    pub expect: Setting<Option<Vec<u8>>>,
    pub command: Setting<Option<String>>,
}

/// A sorry server as written: the port is `None` for the service port.
type SorryServer = (IpAddr, Option<NonZeroU16>);

/// `[[service]]`'s health policy keys as read.
pub(crate) struct ServiceHealthDraft {
    pub quorum: Option<At<u32>>,
    pub hysteresis: Option<At<u32>>,
    pub hold_down: Option<At<Duration>>,
    /// `Some(None)`: absent. The port is `None` when not written (the
    /// service port).
    pub sorry_server: Option<Option<At<SorryServer>>>,
}

impl CheckSettings {
    /// The built-in defaults: no check.
    pub(crate) fn builtin() -> Self {
        CheckSettings {
            kind: Setting::builtin(CheckType::None),
            interval: Setting::builtin(DEFAULT_INTERVAL),
            timeout: Setting::builtin(DEFAULT_TIMEOUT),
            rise: Setting::builtin(DEFAULT_RISE),
            fall: Setting::builtin(DEFAULT_FALL),
            retries: Setting::builtin(0),
            retry_delay: Setting::builtin(DEFAULT_RETRY_DELAY),
            startup_delay: Setting::builtin(Duration::ZERO),
            jitter: Setting::builtin(Duration::ZERO),
            source: Setting::builtin(None),
            inhibit_on_failure: Setting::builtin(false),
            port: Setting::builtin(None),
            path: Setting::builtin("/".to_string()),
            host: Setting::builtin(None),
            expect_status: Setting::builtin(vec![(200, 299)]),
            body_contains: Setting::builtin(None),
            body_sha256: Setting::builtin(None),
            tls_verify: Setting::builtin(false),
            server_name: Setting::builtin(None),
            payload: Setting::builtin(None),
            expect: Setting::builtin(None),
            command: Setting::builtin(None),
        }
    }

    /// The same values, as seen from a table that wrote none of them.
    pub(crate) fn inherited(&self) -> Self {
        CheckSettings {
            kind: self.kind.inherited(),
            interval: self.interval.inherited(),
            timeout: self.timeout.inherited(),
            rise: self.rise.inherited(),
            fall: self.fall.inherited(),
            retries: self.retries.inherited(),
            retry_delay: self.retry_delay.inherited(),
            startup_delay: self.startup_delay.inherited(),
            jitter: self.jitter.inherited(),
            source: self.source.inherited(),
            inhibit_on_failure: self.inhibit_on_failure.inherited(),
            port: self.port.inherited(),
            path: self.path.inherited(),
            host: self.host.inherited(),
            expect_status: self.expect_status.inherited(),
            body_contains: self.body_contains.inherited(),
            body_sha256: self.body_sha256.inherited(),
            tls_verify: self.tls_verify.inherited(),
            server_name: self.server_name.inherited(),
            payload: self.payload.inherited(),
            expect: self.expect.inherited(),
            command: self.command.inherited(),
        }
    }
}

/// Reads `[health]`; absent means the built-in defaults.
pub(crate) fn read_defaults(root: &Section) -> CheckSettings {
    let builtin = CheckSettings::builtin();
    match read_table(root, "health".into(), "[health]", &builtin) {
        Some(s) => s,
        None => builtin,
    }
}

/// Reads the `health` table under `parent` (a service or backend), each
/// key inheriting from `base`; `None` when there is no such table.
pub(crate) fn read_check(
    parent: &Section,
    title: &'static str,
    base: &CheckSettings,
) -> Option<CheckSettings> {
    let path = format!("{}.health", parent.path);
    read_table(parent, path, title, base)
}

fn read_table(
    parent: &Section,
    path: String,
    title: &'static str,
    base: &CheckSettings,
) -> Option<CheckSettings> {
    let (table, span) = parent.table("health")?;
    let s = Section::open(parent.ctx, table, path, title, span, CHECK_KEYS, &[]);
    let settings = read_settings(&s, base);
    check_combination(&s, &settings, title == "[health]");
    Some(settings)
}

/// `key` from `s` when written there, else `base`'s value.
fn setting<T: Clone>(
    s: &Section,
    key: &str,
    base: &Setting<T>,
    read: impl FnOnce() -> Option<At<T>>,
) -> Setting<T> {
    Setting::read_or_inherit(s, key, base, read)
}

fn some<T>(at: Option<At<T>>) -> Option<At<Option<T>>> {
    at.map(|a| At {
        value: Some(a.value),
        span: a.span,
    })
}

fn read_settings(s: &Section, b: &CheckSettings) -> CheckSettings {
    let count = |key: &str, example: &str, min: u32, max: u32| {
        let help = format!("use {min} to {max}");
        s.int_in(key, example, min, max, &help)
    };
    CheckSettings {
        kind: setting(s, "type", &b.kind, || s.choice("type")),
        interval: setting(s, "interval", &b.interval, || {
            s.duration("interval", "\"2s\"", MIN_INTERVAL, MAX_INTERVAL)
        }),
        timeout: setting(s, "timeout", &b.timeout, || {
            s.duration("timeout", "\"1s\"", MIN_TIMEOUT, MAX_INTERVAL)
        }),
        rise: setting(s, "rise", &b.rise, || count("rise", "2", 1, MAX_RISE_FALL)),
        fall: setting(s, "fall", &b.fall, || count("fall", "3", 1, MAX_RISE_FALL)),
        retries: setting(s, "retries", &b.retries, || {
            count("retries", "0", 0, MAX_RETRIES)
        }),
        retry_delay: setting(s, "retry_delay", &b.retry_delay, || {
            s.duration("retry_delay", "\"200ms\"", Duration::ZERO, MAX_INTERVAL)
        }),
        startup_delay: setting(s, "startup_delay", &b.startup_delay, || {
            s.duration("startup_delay", "\"0s\"", Duration::ZERO, MAX_INTERVAL)
        }),
        jitter: setting(s, "jitter", &b.jitter, || {
            s.duration("jitter", "\"200ms\"", Duration::ZERO, MAX_INTERVAL)
        }),
        source: setting(s, "source", &b.source, || {
            some(
                s.ip("source", "\"198.18.0.1\"")
                    .and_then(|a| checked_address(s, "source", a)),
            )
        }),
        inhibit_on_failure: setting(s, "inhibit_on_failure", &b.inhibit_on_failure, || {
            s.boolean("inhibit_on_failure")
        }),
        port: setting(s, "port", &b.port, || some(read_port(s, "port"))),
        path: setting(s, "path", &b.path, || read_path(s)),
        host: setting(s, "host", &b.host, || {
            some(read_text(s, "host", "\"www.example.com\"", false))
        }),
        expect_status: setting(s, "expect_status", &b.expect_status, || read_status(s)),
        body_contains: setting(s, "body_contains", &b.body_contains, || {
            some(read_text(s, "body_contains", "\"ok\"", true))
        }),
        body_sha256: setting(s, "body_sha256", &b.body_sha256, || some(read_sha256(s))),
        tls_verify: setting(s, "tls_verify", &b.tls_verify, || s.boolean("tls_verify")),
        server_name: setting(s, "server_name", &b.server_name, || {
            some(read_text(s, "server_name", "\"www.example.com\"", false))
        }),
        payload: setting(s, "payload", &b.payload, || some(read_bytes(s, "payload"))),
        expect: setting(s, "expect", &b.expect, || some(read_bytes(s, "expect"))),
        command: setting(s, "command", &b.command, || {
            some(read_text(
                s,
                "command",
                "\"/usr/local/bin/check-web\"",
                true,
            ))
        }),
    }
}

fn read_path(s: &Section) -> Option<At<String>> {
    let path = s.string("path", "\"/health\"")?;
    if path.value.starts_with('/')
        && !path
            .value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Some(At {
            value: path.value.to_string(),
            span: path.span,
        });
    }
    s.invalid(
        "path",
        &path.span,
        format!("path \"{}\" is not an absolute URL path", path.value),
        "start with / and leave out spaces, e.g. path = \"/health\"".to_string(),
    );
    None
}

/// A string of 1..=MAX_TEXT bytes; without spaces unless `spaces`.
fn read_text(s: &Section, key: &str, example: &str, spaces: bool) -> Option<At<String>> {
    let text = s.string(key, example)?;
    let v = text.value;
    let bad = v
        .chars()
        .any(|c| c.is_control() || (!spaces && c.is_whitespace()));
    if !v.trim().is_empty() && v.len() <= MAX_TEXT && !bad {
        return Some(At {
            value: v.to_string(),
            span: text.span,
        });
    }
    let what = if spaces { "" } else { ", spaces" };
    s.invalid(
        key,
        &text.span,
        format!(
            "{key} \"{}\" is empty, too long or has control characters{what}",
            v.escape_default()
        ),
        format!("use 1 to {MAX_TEXT} printable characters, e.g. {key} = {example}"),
    );
    None
}

/// Datagram bytes: a string, `\xNN` escapes allowed by TOML's `\u00NN`.
fn read_bytes(s: &Section, key: &str) -> Option<At<Vec<u8>>> {
    let text = s.string(key, "\"ping\\n\"")?;
    let bytes = text.value.as_bytes().to_vec();
    if !bytes.is_empty() && bytes.len() <= MAX_PAYLOAD {
        return Some(At {
            value: bytes,
            span: text.span,
        });
    }
    s.invalid(
        key,
        &text.span,
        format!("{key} has {} bytes", bytes.len()),
        format!("use 1 to {MAX_PAYLOAD} bytes, e.g. {key} = \"ping\\n\""),
    );
    None
}

fn read_sha256(s: &Section) -> Option<At<[u8; 32]>> {
    let text = s.string("body_sha256", "\"e3b0c442...\"")?;
    let hex = text.value.trim();
    let mut out = [0u8; 32];
    let ok = hex.len() == 64
        && hex.is_ascii()
        && out.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if ok {
        return Some(At {
            value: out,
            span: text.span,
        });
    }
    s.invalid(
        "body_sha256",
        &text.span,
        "body_sha256 is not a SHA-256 digest in hex".to_string(),
        "write the 64 hex digits `sha256sum` prints for the expected body".to_string(),
    );
    None
}

/// `expect_status = [200, "300-399"]`.
fn read_status(s: &Section) -> Option<At<Vec<(u16, u16)>>> {
    const EXAMPLE: &str = "[200, \"300-399\"]";
    let items = s.array("expect_status", EXAMPLE)?;
    let mut ranges = Vec::with_capacity(items.value.len());
    for (i, item) in items.value.iter().enumerate() {
        let range = match &item.value {
            Value::Integer(n) => u16::try_from(*n).ok().map(|n| (n, n)),
            Value::String(t) => t.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            }),
            _ => None,
        };
        match range {
            Some((lo, hi)) if (100..=599).contains(&lo) && lo <= hi && hi <= 599 => {
                ranges.push((lo, hi))
            }
            _ => s.invalid(
                &format!("expect_status[{i}]"),
                &item.span,
                "not an HTTP status code or range of them".to_string(),
                format!("use codes from 100 to 599 or \"low-high\" ranges, e.g. expect_status = {EXAMPLE}"),
            ),
        }
    }
    if ranges.is_empty() && items.value.is_empty() {
        s.invalid(
            "expect_status",
            &items.span,
            "expect_status is empty: no answer could pass".to_string(),
            format!("list the accepted codes, e.g. expect_status = {EXAMPLE}"),
        );
    }
    (ranges.len() == items.value.len() && !ranges.is_empty()).then_some(At {
        value: ranges,
        span: items.span,
    })
}

/// Keys that only some check types use, and those types.
const TYPED_KEYS: &[(&str, &[CheckType])] = &[
    (
        "port",
        &[
            CheckType::Tcp,
            CheckType::Http,
            CheckType::Https,
            CheckType::Udp,
        ],
    ),
    ("path", &[CheckType::Http, CheckType::Https]),
    ("host", &[CheckType::Http, CheckType::Https]),
    ("expect_status", &[CheckType::Http, CheckType::Https]),
    ("body_contains", &[CheckType::Http, CheckType::Https]),
    ("body_sha256", &[CheckType::Http, CheckType::Https]),
    ("tls_verify", &[CheckType::Https]),
    ("server_name", &[CheckType::Https]),
    ("payload", &[CheckType::Udp]),
    ("expect", &[CheckType::Udp]),
    ("command", &[CheckType::Command]),
];

/// How one table's keys combine. `defaults`: the `[health]` table, whose
/// keys for other check types are defaults for later tables, not errors.
fn check_combination(s: &Section, c: &CheckSettings, defaults: bool) {
    let Some(kind) = c.kind.value().copied() else {
        return;
    };
    if !defaults {
        for (key, types) in TYPED_KEYS {
            if s.has(key) && !types.contains(&kind) {
                let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
                s.invalid(
                    key,
                    &s.key_span(key),
                    format!(
                        "{key} applies to {} checks, and this check is type = \"{}\"",
                        names.join(" and "),
                        kind.name()
                    ),
                    format!("remove {key}, or set type to {}", names.join(" or ")),
                );
            }
        }
    }
    let type_own = c.kind.own;
    let need = |key: &str, missing: bool, example: &str| {
        if type_own && missing {
            s.invalid(
                key,
                &c.kind.own_at().and_then(|a| a.span.clone()),
                format!("a {} check needs {key}", kind.name()),
                format!("add {key} = {example}"),
            );
        }
    };
    match kind {
        CheckType::Udp => need(
            "payload",
            c.payload.value().is_some_and(|p| p.is_none()),
            "\"ping\\n\"",
        ),
        CheckType::Command => need(
            "command",
            c.command.value().is_some_and(|p| p.is_none()),
            "\"/usr/local/bin/check-web\"",
        ),
        _ => {}
    }
    check_timing(s, c);
}

fn check_timing(s: &Section, c: &CheckSettings) {
    let (Some(interval), Some(timeout), Some(jitter)) =
        (c.interval.value(), c.timeout.value(), c.jitter.value())
    else {
        return;
    };
    let own = |set: &Setting<Duration>| set.own_at().and_then(|a| a.span.clone());
    if timeout > interval && (c.timeout.own || c.interval.own) {
        let (key, span) = match own(&c.timeout) {
            Some(span) => ("timeout", Some(span)),
            None => ("interval", own(&c.interval)),
        };
        s.invalid(
            key,
            &span,
            format!(
                "timeout {} is longer than interval {}",
                format_duration(*timeout),
                format_duration(*interval)
            ),
            format!(
                "use a timeout of at most {}, or a longer interval",
                format_duration(*interval)
            ),
        );
    }
    if *jitter > *interval / 2 && (c.jitter.own || c.interval.own) {
        let (key, span) = match own(&c.jitter) {
            Some(span) => ("jitter", Some(span)),
            None => ("interval", own(&c.interval)),
        };
        s.invalid(
            key,
            &span,
            format!(
                "jitter {} is more than half of interval {}",
                format_duration(*jitter),
                format_duration(*interval)
            ),
            format!("use a jitter of at most {}", format_duration(*interval / 2)),
        );
    }
}

/// Reads `quorum`, `hysteresis`, `hold_down` and `sorry_server` of a
/// `[[service]]`.
pub(crate) fn read_service_health(s: &Section) -> ServiceHealthDraft {
    let quorum = s.int_in(
        "quorum",
        "1",
        1u32,
        u32::MAX,
        "use the sum of healthy backend weights the service needs, at least 1",
    );
    let hysteresis = s.int_in(
        "hysteresis",
        "0",
        0u32,
        u32::MAX,
        "use 0, or a weight margin smaller than quorum",
    );
    let hold_down = s.duration("hold_down", "\"10s\"", Duration::ZERO, MAX_INTERVAL);
    let builtin = |value| Some(At { value, span: None });
    ServiceHealthDraft {
        quorum: if s.has("quorum") {
            quorum
        } else {
            builtin(DEFAULT_QUORUM)
        },
        hysteresis: if s.has("hysteresis") {
            hysteresis
        } else {
            builtin(0)
        },
        hold_down: if s.has("hold_down") {
            hold_down
        } else {
            Some(At {
                value: Duration::ZERO,
                span: None,
            })
        },
        sorry_server: match s.has("sorry_server") {
            false => Some(None),
            true => read_sorry_server(s).map(Some),
        },
    }
}

/// `sorry_server = "198.18.20.9"`, `"198.18.20.9:8080"` or
/// `"[2001:db8::9]:8080"`; `None` when invalid (reported).
fn read_sorry_server(s: &Section) -> Option<At<SorryServer>> {
    const EXAMPLE: &str = "\"198.18.20.9:8080\"";
    let text = s.string("sorry_server", EXAMPLE)?;
    let parsed = match text.value.parse::<SocketAddr>() {
        Ok(sa) => NonZeroU16::new(sa.port()).map(|p| (sa.ip(), Some(p))),
        Err(_) => text.value.parse::<IpAddr>().ok().map(|ip| (ip, None)),
    };
    let Some((ip, port)) = parsed else {
        s.invalid(
            "sorry_server",
            &text.span,
            format!("\"{}\" is not an address or address:port", text.value),
            format!("write e.g. sorry_server = {EXAMPLE} (IPv6: \"[2001:db8::9]:8080\"); without a port, the service port"),
        );
        return None;
    };
    let at = At {
        value: ip,
        span: text.span.clone(),
    };
    let checked = checked_address(s, "sorry_server", at)?;
    Some(At {
        value: (checked.value, port),
        span: text.span,
    })
}

/// A backend's check from resolved settings; `Some(None)` when the type is
/// `none`; `None` if a value is missing (reported earlier).
pub(crate) fn build_check(
    c: &CheckSettings,
    backend_port: NonZeroU16,
) -> Option<Option<HealthCheckConfig>> {
    let port = c.port.value()?.unwrap_or(backend_port);
    let check = match c.kind.value()? {
        CheckType::None => return Some(None),
        CheckType::Tcp => CheckConfig::Tcp { port },
        CheckType::Http | CheckType::Https => CheckConfig::Http(HttpCheckConfig {
            port,
            tls: *c.kind.value()? == CheckType::Https,
            tls_verify: *c.tls_verify.value()?,
            server_name: c.server_name.value()?.clone(),
            path: c.path.value()?.clone(),
            host: c.host.value()?.clone(),
            expect_status: c.expect_status.value()?.clone(),
            body_contains: c.body_contains.value()?.clone(),
            body_sha256: *c.body_sha256.value()?,
        }),
        CheckType::Udp => CheckConfig::Udp {
            port,
            payload: c.payload.value()?.clone()?,
            expect: c.expect.value()?.clone(),
        },
        CheckType::Command => CheckConfig::Command {
            command: c.command.value()?.clone()?,
        },
    };
    Some(Some(HealthCheckConfig {
        check,
        interval: *c.interval.value()?,
        timeout: *c.timeout.value()?,
        rise: *c.rise.value()?,
        fall: *c.fall.value()?,
        retries: *c.retries.value()?,
        retry_delay: *c.retry_delay.value()?,
        startup_delay: *c.startup_delay.value()?,
        jitter: *c.jitter.value()?,
        source: *c.source.value()?,
        inhibit_on_failure: *c.inhibit_on_failure.value()?,
    }))
}

/// The service's policy from a clean draft.
pub(crate) fn build_service_health(
    d: ServiceHealthDraft,
    service_port: NonZeroU16,
) -> Option<ServiceHealthConfig> {
    let sorry_server = match d.sorry_server? {
        None => None,
        Some(at) => {
            let (ip, port) = at.value;
            Some(SocketAddr::new(ip, port.unwrap_or(service_port).get()))
        }
    };
    Some(ServiceHealthConfig {
        quorum: d.quorum?.value,
        hysteresis: d.hysteresis?.value,
        hold_down: d.hold_down?.value,
        sorry_server,
    })
}
