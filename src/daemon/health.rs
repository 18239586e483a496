//! Health checking in the daemon: the configured checks turned into
//! [`CheckSpec`]s, their verdicts fed to [`Services`], transitions logged
//! once and kept as control-socket events.
//!
//! Owns: the [`Checker`] thread and the map from its targets to (service,
//! backend). Must not: decide what a verdict does to the dataplane or the
//! routes (that is [`Services`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::services::Services;
use crate::config::{BackendConfig, CheckConfig, Config, HealthCheckConfig};
use crate::control::EventRing;
use crate::health::{CheckKind, CheckSpec, Checker, TargetStatus, TlsOptions};

/// Events kept for `vipgate backend events`.
const EVENTS_KEPT: usize = 1000;

/// The running checks.
pub struct HealthChecks {
    checker: Checker,
    /// Target id -> (service index, backend index).
    targets: Vec<(usize, usize)>,
    events: EventRing,
}

/// The probe of one backend.
pub fn check_spec(backend: &BackendConfig, h: &HealthCheckConfig) -> CheckSpec {
    let at = |port: std::num::NonZeroU16| std::net::SocketAddr::new(backend.address, port.get());
    let kind = match &h.check {
        CheckConfig::Tcp { port } => CheckKind::Tcp { target: at(*port) },
        CheckConfig::Http(c) => CheckKind::Http {
            target: at(c.port),
            tls: c.tls.then(|| TlsOptions {
                server_name: c.server_name.clone(),
                verify: c.tls_verify,
            }),
            host: c.host.clone(),
            path: c.path.clone(),
            expect_status: c.expect_status.clone(),
            body_contains: c.body_contains.clone(),
            body_sha256: c.body_sha256,
        },
        CheckConfig::Udp {
            port,
            payload,
            expect,
        } => CheckKind::Udp {
            target: at(*port),
            payload: payload.clone(),
            expect: expect.clone(),
        },
        CheckConfig::Command { command } => CheckKind::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), command.clone()],
            env: vec![
                (
                    "VIPGATE_BACKEND_ADDRESS".into(),
                    backend.address.to_string(),
                ),
                ("VIPGATE_BACKEND_PORT".into(), backend.port.to_string()),
            ],
        },
    };
    let jitter = if h.interval.is_zero() {
        0.0
    } else {
        (h.jitter.as_secs_f64() / h.interval.as_secs_f64()).min(0.5)
    };
    CheckSpec {
        kind,
        interval: h.interval,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
        retries: h.retries,
        retry_delay: h.retry_delay,
        startup_delay: h.startup_delay,
        jitter,
        source: h.source,
        // keepalived's and HAProxy's rule: alive until proven dead, so a
        // restart does not withdraw every VIP for rise x interval.
        initially_healthy: true,
    }
}

impl HealthChecks {
    /// Starts checking every backend that has a check; `None` when none has.
    pub fn start(config: &Config) -> Result<Option<HealthChecks>> {
        let mut targets = Vec::new();
        let mut specs = Vec::new();
        for (i, s) in config.services.iter().enumerate() {
            for (j, b) in s.backends.iter().enumerate() {
                if let Some(h) = &b.health {
                    targets.push((i, j));
                    specs.push(check_spec(b, h));
                }
            }
        }
        if specs.is_empty() {
            return Ok(None);
        }
        let count = specs.len();
        ensure_descriptors(count);
        let checker = Checker::start(specs).context("starting health checks")?;
        info!(backends = count, "health checks running");
        Ok(Some(HealthChecks {
            checker,
            targets,
            events: EventRing::new(EVENTS_KEPT),
        }))
    }

    pub fn is_finished(&self) -> bool {
        self.checker.is_finished()
    }

    /// Hands every verdict change since the last call to `services`.
    pub fn poll(&self, services: &Services) {
        for t in self.checker.transitions() {
            let Some(&(i, j)) = self.targets.get(t.id) else {
                continue;
            };
            let config = services.config();
            let (s, b) = (&config.services[i], &config.services[i].backends[j]);
            if t.healthy {
                info!(service = %s.name, backend = %b.endpoint(), reason = %t.reason, "backend healthy");
            } else {
                warn!(service = %s.name, backend = %b.endpoint(), reason = %t.reason, "backend failed");
            }
            self.event(json!({
                "service": s.name,
                "backend": b.endpoint().to_string(),
                "healthy": t.healthy,
                "reason": t.reason,
            }));
            services.set_health(i, j, t.healthy, t.at);
        }
    }

    /// Records an event (also used for operator drains).
    pub fn event(&self, event: Value) {
        self.events.push(event);
    }

    /// Events with a sequence number above `after`, oldest first.
    pub fn events_after(&self, after: u64) -> Vec<Value> {
        self.events.after(after)
    }

    /// The checker's view of (service, backend), as status JSON.
    pub fn status_of(&self, now: Instant) -> Vec<((usize, usize), Value)> {
        self.checker
            .status()
            .into_iter()
            .filter_map(|st| {
                let key = *self.targets.get(st.id)?;
                Some((key, target_json(&st, now)))
            })
            .collect()
    }
}

/// Checks in flight hold a few descriptors each (probe socket, TLS, a
/// command's pipes): raise the soft RLIMIT_NOFILE towards the hard limit
/// when the default (often 1024) may not cover them, and say so if even
/// the hard limit may not.
fn ensure_descriptors(checks: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let want = (checks as u64).saturating_mul(4).saturating_add(512);
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let raised = limit.maximum.map_or(want, |max| max.min(want.max(current)));
    limit.current = Some(raised);
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => info!(
            from = current,
            to = raised,
            checks,
            "raised the open-files limit for health checks"
        ),
        Err(e) => {
            warn!(error = %e, current, checks, "could not raise the open-files limit; checks may fail with EMFILE")
        }
    }
    if raised < want {
        warn!(
            limit = raised,
            wanted = want,
            checks,
            "the open-files hard limit may be too low for this many checks"
        );
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn target_json(st: &TargetStatus, now: Instant) -> Value {
    let last = st.last.as_ref().map(|r| {
        json!({
            "ok": r.ok,
            "reason": r.reason,
            "latency_ms": ms(r.latency),
            "age_ms": ms(now.saturating_duration_since(r.at)),
        })
    });
    json!({
        "healthy": st.healthy,
        "for_ms": ms(now.saturating_duration_since(st.since)),
        "last": last,
        "consecutive_ok": st.consecutive_ok,
        "consecutive_fail": st.consecutive_fail,
        "checks": st.checks,
        "failures": st.failures,
    })
}
