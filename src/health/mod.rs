//! Backend health checking: TCP connect, HTTP(S) GET, UDP request/reply
//! and command checks, with rise/fall, retries, start-up delay and jitter,
//! and the service-level verdict (quorum, hysteresis, hold-down) that the
//! daemon feeds to BGP and VRRP.
//!
//! Split as elsewhere in vipgate: [`state`] is the sans-IO core (counting,
//! schedule, service verdict; no clocks, no sockets), `http` the sans-IO
//! wire format, [`probe`] runs one check with kernel sockets or a child
//! process, `epoll` runs the TCP and plain HTTP checks as state machines
//! on one epoll set (the common case, kept cheapest: see its module
//! docs), and [`Checker`] is the thin shell: one dedicated thread with a
//! tokio current-thread runtime that starts due checks, feeds their
//! results to the state and hands the transitions to the daemon.
//!
//! Owns: the checks' sockets and child processes (ended by process group
//! on timeout and on shutdown), the per-backend verdicts. Must not: touch
//! the dataplane, VRRP, BGP or the configuration; the daemon builds
//! [`CheckSpec`]s from the config and acts on [`Transition`]s.

#![deny(unsafe_code)]

mod epoll;
mod http;
pub mod probe;
mod runner;
pub mod state;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use probe::check_once;
pub use runner::Checker;
pub use state::{ServiceHealth, ServicePolicy, ServiceTransition, TargetState, Timing};

/// Index into the targets vector given to [`Checker::start`].
pub type TargetId = usize;

/// Largest HTTP response body read for a check.
pub const MAX_BODY: usize = 1 << 20;
/// Largest HTTP response head (status line and headers).
pub const MAX_HEAD: usize = 16 << 10;

/// What to probe and how often. Built by the daemon from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Between the starts of two checks of one backend.
    pub interval: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
    /// Extra attempts inside one check before it counts as a failure.
    pub retries: u32,
    /// Between those attempts.
    pub retry_delay: Duration,
    /// Before the first check.
    pub startup_delay: Duration,
    /// 0.0..=0.5, fraction of the interval: spreads the first checks and
    /// each interval.
    pub jitter: f64,
    /// Bind address for probes (None: the kernel chooses). Not used by
    /// command checks.
    pub source: Option<IpAddr>,
    /// State before the first verdict (keepalived: alive until proven
    /// dead).
    pub initially_healthy: bool,
}

impl CheckSpec {
    /// A check with HAProxy's defaults: every 2 s, 1 s timeout, rise 2,
    /// fall 3, no retries, 10 % jitter, healthy until proven otherwise.
    pub fn new(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            kind,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            retries: 0,
            retry_delay: Duration::from_millis(500),
            startup_delay: Duration::ZERO,
            jitter: 0.1,
            source: None,
            initially_healthy: true,
        }
    }

    /// Checks what the types allow but a check cannot use.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.interval.is_zero() {
            return Err(SpecError::ZeroInterval);
        }
        if self.timeout.is_zero() {
            return Err(SpecError::ZeroTimeout);
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(SpecError::ZeroThreshold);
        }
        if !(0.0..=state::MAX_JITTER).contains(&self.jitter) {
            return Err(SpecError::Jitter(self.jitter));
        }
        if let (Some(source), Some(target)) = (self.source, self.kind.target()) {
            if source.is_ipv4() != target.is_ipv4() {
                return Err(SpecError::SourceFamily {
                    address: source,
                    target,
                });
            }
        }
        self.kind.validate()
    }
}

/// The kinds of check.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Connect, then close.
    Tcp { target: SocketAddr },
    /// HTTP/1.1 GET (HTTPS with `tls`).
    Http {
        target: SocketAddr,
        tls: Option<TlsOptions>,
        /// Host header (and TLS server name when `tls.server_name` is not
        /// set); default the target address.
        host: Option<String>,
        path: String,
        /// Inclusive ranges; empty means 200..=299.
        expect_status: Vec<(u16, u16)>,
        body_contains: Option<String>,
        body_sha256: Option<[u8; 32]>,
    },
    /// Send `payload`, wait for one reply.
    Udp {
        target: SocketAddr,
        payload: Vec<u8>,
        /// The reply must start with this; None: any reply.
        expect: Option<Vec<u8>>,
    },
    /// Exit status 0 is healthy (keepalived's MISC_CHECK). Runs in its own
    /// process group, killed as a group on timeout.
    Command {
        argv: Vec<String>,
        /// Added to the daemon's environment.
        env: Vec<(String, String)>,
    },
}

impl CheckKind {
    /// A plain HTTP GET of `path` expecting 2xx.
    pub fn http(target: SocketAddr, path: &str) -> CheckKind {
        CheckKind::Http {
            target,
            tls: None,
            host: None,
            path: path.to_string(),
            expect_status: Vec::new(),
            body_contains: None,
            body_sha256: None,
        }
    }

    /// The address probed, if the check probes one.
    pub fn target(&self) -> Option<SocketAddr> {
        match self {
            CheckKind::Tcp { target }
            | CheckKind::Http { target, .. }
            | CheckKind::Udp { target, .. } => Some(*target),
            CheckKind::Command { .. } => None,
        }
    }

    /// "tcp", "http", "https", "udp" or "command".
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { tls: None, .. } => "http",
            CheckKind::Http { tls: Some(_), .. } => "https",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Command { .. } => "command",
        }
    }

    fn validate(&self) -> Result<(), SpecError> {
        match self {
            CheckKind::Tcp { .. } => Ok(()),
            CheckKind::Http {
                tls,
                host,
                path,
                expect_status,
                ..
            } => {
                http::validate(path, host.as_deref(), expect_status)?;
                match tls {
                    Some(t) => tls::validate(t),
                    None => Ok(()),
                }
            }
            CheckKind::Udp { payload, .. } if payload.len() > probe::MAX_UDP_PAYLOAD => {
                Err(SpecError::UdpPayload(payload.len()))
            }
            CheckKind::Udp { .. } => Ok(()),
            CheckKind::Command { argv, .. } if argv.is_empty() => Err(SpecError::EmptyCommand),
            CheckKind::Command { .. } => Ok(()),
        }
    }
}

/// TLS for an HTTPS check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// SNI and the name the certificate must carry; default the Host
    /// header's name, else the target address.
    pub server_name: Option<String>,
    /// false: accept any certificate, self-signed included (keepalived's
    /// SSL_GET). true: verify against the system's CA store.
    pub verify: bool,
}

/// A check spec a check cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("interval must be more than zero")]
    ZeroInterval,
    #[error("timeout must be more than zero")]
    ZeroTimeout,
    #[error("rise and fall must be at least 1")]
    ZeroThreshold,
    #[error("jitter {0} is outside 0.0..=0.5")]
    Jitter(f64),
    #[error("source address {address} and target {target} are of different families")]
    SourceFamily { address: IpAddr, target: SocketAddr },
    #[error("HTTP path {0:?} must start with '/' and contain no spaces or control characters")]
    HttpPath(String),
    #[error("HTTP host {0:?} contains spaces or control characters")]
    HttpHost(String),
    #[error("expected status range {0}..={1} is not within 100..=599")]
    StatusRange(u16, u16),
    #[error("TLS server name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("UDP payload of {0} bytes is too long")]
    UdpPayload(usize),
    #[error("command is empty")]
    EmptyCommand,
}

/// A backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Healthy,
    Unhealthy,
}

impl Verdict {
    pub fn of(healthy: bool) -> Verdict {
        if healthy {
            Verdict::Healthy
        } else {
            Verdict::Unhealthy
        }
    }
}

/// One finished check (after retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub id: TargetId,
    pub ok: bool,
    /// e.g. "connect refused", "status 503", "timeout after 1s", "exit 2".
    pub reason: String,
    /// Of the last attempt.
    pub latency: Duration,
    pub at: Instant,
}

/// A backend's health changed (logged once by the daemon, sent as a
/// control-socket event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub id: TargetId,
    pub healthy: bool,
    /// The last check's reason and the count that decided, e.g.
    /// "connect refused (3 consecutive failures)".
    pub reason: String,
    pub at: Instant,
}

impl Transition {
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.healthy)
    }
}

/// The current view of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub id: TargetId,
    pub healthy: bool,
    /// When the verdict last changed (or checking started).
    pub since: Instant,
    pub last: Option<CheckResult>,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    /// Checks done (each after its retries).
    pub checks: u64,
    /// Of those, failed.
    pub failures: u64,
    /// A check is running now.
    pub running: bool,
    /// When the next check starts (None while one runs).
    pub next_due: Option<Instant>,
}

impl TargetStatus {
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.healthy)
    }
}
