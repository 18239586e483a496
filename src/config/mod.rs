//! The vipgate configuration file: schema, parsing and validation.
//!
//! Owns: reading a TOML file into a typed [`Config`], and reporting every
//! problem as `FILE:LINE:COL: FIELD: WHAT; FIX` ([`ConfigErrors`]). The
//! checks against the machine use a [`SystemView`] the caller fills in;
//! this module never touches the system (`vipgate check` relies on that).
//! Must not: depend on other vipgate modules, start anything, or log.
//!
//! Layout:
//! - `tree`: TOML text to a tree that keeps spans;
//! - `reader`: typed reads from the tree, collecting errors;
//! - `schema`: sections, keys, types, ranges, defaults (one value at a time);
//! - `checks`: entries compared with each other (duplicates, families...);
//! - `system`: the configuration against a [`SystemView`];
//! - `model`: the validated [`Config`] types; `error`: the error types;
//! - `duration`: `"900s"`-style durations; `suggest`: "did you mean".
//!
//! The schema, with defaults (see `configs/*.toml` for commented examples):
//!
//! ```toml
//! [node]
//! name = "gw-a"                                  # required
//! control_socket = "/run/vipgate/control.sock"
//!
//! [[interface]]                                  # at least one
//! name = "eth0"                                  # required
//! role = "both"                                  # client | backend | both
//!
//! [dataplane]                                    # optional section
//! workers = 0                                    # 0 = one per online core
//! io = "af_packet"                               # af_packet | memory
//! rx_ring = "v3"                                 # v2: per frame | v3: blocks
//! rx_coalesce = "0"                              # v2 only: "50us", 0..=1000us
//! ring_block_size = 262144                       # power of two >= 4096
//! ring_blocks = 64
//! ring_frame_size = 2048                         # multiple of 16
//! ring_block_timeout = "1ms"
//! conn_capacity = 1048576                        # per worker
//! disable_offloads = true
//! mid_flow_pickup = true                         # maglev/sh: a TCP ACK without a connection opens one
//! [dataplane.timeouts]
//! tcp_syn = "60s"
//! tcp_established = "900s"
//! tcp_closing = "120s"
//! udp = "300s"
//!
//! [[service]]                                    # at least one
//! name = "web"                                   # required
//! vip = "198.18.1.10"                            # required, IPv4 or IPv6
//! port = 80                                      # required
//! protocol = "tcp"                               # tcp | udp
//! scheduler = "maglev"                           # rr | wrr | lc | sh | maglev
//! maglev_table_size = 65537                      # prime; maglev and sh only
//! forwarding = "nat"                             # only nat for now
//! quorum = 1                                     # healthy backend weight needed to count as up
//! hysteresis = 0                                 # up at quorum + h, down below quorum - h
//! hold_down = "0s"                               # down at least this long before up again
//! sorry_server = "198.18.2.9:8080"               # optional; takes clients while no backend is usable
//!   [service.health]                             # the check of every backend; keys as [health]
//!   [[service.backend]]                          # at least one per service
//!   address = "198.18.2.2"                       # required
//!   port = 8080                                  # default: the service port
//!   weight = 1                                   # 0..=65535, 0 = drain
//!     [service.backend.health]                   # this backend's own check; keys as [health]
//!
//! [health]                                       # optional; defaults for every check
//! type = "none"                                  # none | tcp | http | https | udp | command
//! interval = "2s"                                # 100ms..=1h
//! timeout = "1s"                                 # per attempt; at most interval
//! rise = 2                                       # passes to become healthy, 1..=100
//! fall = 3                                       # failures to become failed, 1..=100
//! retries = 0                                    # extra attempts inside one check, 0..=10
//! retry_delay = "200ms"
//! startup_delay = "0s"                           # healthy until the first check after this
//! jitter = "0s"                                  # at most interval / 2
//! source = "198.18.2.1"                          # optional probe source address
//! inhibit_on_failure = false                     # true: weight 0 instead of removal
//! port = 8080                                    # tcp/http/https/udp; default: the backend port
//! path = "/"                                     # http/https
//! host = "www.example"                           # http/https Host header; default: the address
//! expect_status = [200, "300-399"]               # http/https; default ["200-299"]
//! body_contains = "ok"                           # http/https, optional
//! body_sha256 = "e3b0..."                        # http/https, optional, 64 hex digits
//! tls_verify = false                             # https: check the certificate
//! server_name = "www.example"                    # https: SNI; default: host
//! payload = "ping"                               # udp, required
//! expect = "pong"                                # udp: reply must start with this
//! command = "/usr/local/bin/check-web"           # command, required; /bin/sh -c, exit 0 = pass
//!
//! [vrrp]                                         # optional; defaults for every instance
//! version = 3                                    # 3 (RFC 5798) | 2 (RFC 3768, IPv4 only)
//! advert_interval = "1s"                         # v3: 10ms..=40s950ms by 10ms; v2: 1s..=255s
//! preempt = true
//! preempt_delay = "0s"
//! garp_repeat = 5                                # 1..=100
//! garp_delay = "5s"                              # second burst; "0s" = none
//! garp_refresh = "0s"                            # "0s" = off
//! resign_grace = "3s"                            # 0s..=60s
//! notify = "/usr/local/bin/vrrp-notify"          # optional; "" = none
//! checksum = "pseudo-header"                     # pseudo-header | rfc9568 (IPv4 v3 only)
//! vip_mode = "dataplane"                         # dataplane | kernel
//!   [[vrrp.instance]]                            # any [vrrp] key may be overridden
//!   name = "vip1"                                # required, unique
//!   interface = "eth0"                           # required; dataplane mode: a client-side [[interface]]
//!   vrid = 51                                    # required, 1..=255
//!   priority = 100                               # 1..=255 (255: address owner)
//!   vips = ["198.18.1.10"]                       # required, 1..=255, one family
//!   unicast_source = "198.18.0.1"                # optional, an address of interface
//!   unicast_peers = []                           # non-empty: unicast instead of multicast
//!   auth_pass = "secret"                         # optional, version 2 only, 1..=8 bytes
//!   virtual_mac = false                          # true: answer as 00-00-5E-00-01-{vrid} (dataplane mode)
//!     [[vrrp.instance.track]]                    # one of interface | file | script | service
//!     interface = "eth1"
//!     weight = 0                                 # -254..=254; 0 = FAULT while down
//!     # script only: interval = "2s", timeout = interval, rise = 1, fall = 1
//!   [[vrrp.sync_group]]
//!   name = "g1"                                  # required, unique
//!   instances = ["vip1"]                         # required; an instance in one group at most
//!
//! [bgp]                                          # optional; needs a [[bgp.peer]]
//! local_as = 64512                               # required with peers; 1..=4294967295, not 23456
//! router_id = "198.18.0.2"                       # default: first non-loopback IPv4 address
//! listen = "0.0.0.0:179"                         # optional; passive peers need it ("[::]:179": both families)
//! mode = "ecmp"                                  # ecmp | vrrp (announce while VRRP master of the VIP)
//! hold_time = "90s"                              # peer defaults from here: "0s" or 3s..=65535s
//! connect_retry = "10s"                          # ConnectRetry and connect timeout, 1s..
//! reconnect_delay = "5s"                         # first wait after a failure (doubles to 120s)
//! ttl_security = false                           # GTSM (RFC 5082), directly connected peers
//! communities = []                               # ["65000:100"]
//! large_communities = []                         # ["65000:1:2"]
//! med = 0                                        # optional; 0..=4294967295
//! prepend = 0                                    # 0..=16, eBGP peers only
//! [bgp.drain]                                    # adds GRACEFUL_SHUTDOWN 65535:0 (RFC 8326)
//! delay = "30s"                                  # withdraw after; 0s..=1h
//! prepend = 0                                    # 0..=16 while draining
//! med = 1000                                     # optional, while draining
//!   [[bgp.peer]]                                 # any peer default above may be overridden
//!   name = "upstream"                            # unique; default: the address
//!   address = "198.18.0.254"                     # required; (address, port) unique
//!   remote_as = 64500                            # required; = local_as: iBGP
//!   port = 179                                   # not with passive
//!   local_address = "198.18.0.2"                 # optional; the peer's family, this node's
//!   passive = false                              # true: wait on [bgp] listen
//!   md5_password = "secret"                      # optional, TCP MD5 (RFC 2385), 1..=80 bytes
//!   families = ["ipv4-unicast"]                  # default: the address's; + "ipv6-unicast"
//!   next_hop_v6 = "2001:db8::2"                  # optional; default: from the link towards the peer
//!   local_pref = 100                             # optional, iBGP only
//!   [[bgp.announce]]                             # optional; default: every service VIP /32, /128
//!   prefix = "198.18.10.0/24"                    # required; covers a service VIP
//!   communities = []                             # added to the peer's
//!   large_communities = []
//!   med = 10                                     # optional; replaces the peer's
//! ```
//!
//! An unknown key is an error, with a "did you mean" where one is close.

#![forbid(unsafe_code)]

mod checks;
mod duration;
mod error;
mod model;
mod reader;
mod schema;
mod suggest;
mod system;
mod tree;

use std::path::Path;

pub use duration::{format_duration, parse_duration, DurationError};
pub use error::{ConfigError, ConfigErrors, ErrorKind, Location};
pub use model::*;
pub use system::{InterfaceAddress, InterfaceAddressError, SystemInterface, SystemView};

use reader::Ctx;
use tree::Value;

/// Reads `path` and validates it, including against `system`.
///
/// Errors name the file as `path` is written, so pass the path the operator
/// gave. Never touches the system beyond reading `path`.
pub fn load_and_validate(
    path: impl AsRef<Path>,
    system: &SystemView,
) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => validate_str(&source, &origin, Some(system)),
        Err(e) => Err(read_error(&origin, &e)),
    }
}

/// Validates configuration text; `origin` is the file name used in errors.
/// With `system = None` the checks against the machine are skipped (useful
/// to check a config meant for another host).
pub fn validate_str(
    source: &str,
    origin: &str,
    system: Option<&SystemView>,
) -> Result<Config, ConfigErrors> {
    let ctx = Ctx::new(origin, source);
    let root = match tree::parse(source) {
        Ok(root) => root,
        Err(e) => {
            report_syntax(&ctx, e);
            return Err(ConfigErrors::new(origin, ctx.into_errors()));
        }
    };
    let Value::Table(table) = &root.value else {
        ctx.report(
            ErrorKind::Syntax,
            None,
            "",
            "the document is not a TOML table",
            "write key = value pairs and [sections]",
        );
        return Err(ConfigErrors::new(origin, ctx.into_errors()));
    };
    let draft = schema::read(&ctx, table);
    checks::check(&ctx, &draft);
    if let Some(view) = system {
        system::check(&ctx, &draft, view);
    }
    if ctx.has_errors() {
        return Err(ConfigErrors::new(origin, ctx.into_errors()));
    }
    match schema::build(draft) {
        Some(config) => Ok(config),
        None => {
            ctx.report(
                ErrorKind::InvalidValue,
                None,
                "",
                "internal error: a field was neither valid nor reported",
                "please report this with the config file",
            );
            Err(ConfigErrors::new(origin, ctx.into_errors()))
        }
    }
}

fn report_syntax(ctx: &Ctx, e: tree::SyntaxError) {
    let message = e
        .message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let help = if message.contains("duplicate key") {
        "remove or rename one of the two definitions"
    } else {
        "fix the TOML syntax at this position (see https://toml.io)"
    };
    ctx.report(
        ErrorKind::Syntax,
        e.span,
        "",
        format!("TOML syntax error: {message}"),
        help,
    );
}

fn read_error(origin: &str, e: &std::io::Error) -> ConfigErrors {
    let help = match e.kind() {
        std::io::ErrorKind::NotFound => "check the path given to --config",
        std::io::ErrorKind::PermissionDenied => {
            "make the file readable by the user running vipgate"
        }
        std::io::ErrorKind::InvalidData => "save the file as UTF-8 text",
        _ => "check that the path names a readable file",
    };
    let error = ConfigError {
        kind: ErrorKind::Io,
        origin: origin.to_string(),
        location: None,
        field: String::new(),
        message: format!("cannot read the file: {e}"),
        help: help.to_string(),
    };
    ConfigErrors::new(origin, vec![error])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
name = "gw"

[[interface]]
name = "eth0"

[[service]]
name = "web"
vip = "198.18.1.10"
port = 80

  [[service.backend]]
  address = "198.18.2.2"
"#;

    fn view() -> SystemView {
        let addr = |s: &str| s.parse::<InterfaceAddress>().expect("test address");
        SystemView::new(vec![
            SystemInterface::new("lo", vec![addr("127.0.0.1/8")]),
            SystemInterface::new("eth0", vec![addr("198.18.2.1/24")]),
        ])
    }

    fn errors(source: &str) -> Vec<String> {
        match validate_str(source, "t.toml", Some(&view())) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let config = validate_str(MINIMAL, "t.toml", Some(&view())).expect("valid");
        assert_eq!(
            config.node.control_socket,
            Path::new(DEFAULT_CONTROL_SOCKET)
        );
        assert_eq!(config.interfaces[0].role, InterfaceRole::Both);
        assert_eq!(config.dataplane, DataplaneConfig::default());
        let service = &config.services[0];
        assert_eq!(service.protocol, Protocol::Tcp);
        assert_eq!(service.scheduler, Scheduler::Maglev);
        assert_eq!(service.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
        assert_eq!(service.forwarding, Forwarding::Nat);
        let backend = &service.backends[0];
        assert_eq!(backend.health, None, "no check unless configured");
        assert_eq!(service.health, ServiceHealthConfig::default());
        assert_eq!(
            backend.port.get(),
            80,
            "backend port defaults to the service port"
        );
        assert_eq!(backend.weight, 1);
    }

    #[test]
    fn all_errors_are_reported_in_file_order() {
        let source = MINIMAL
            .replace("port = 80", "port = 0\nscheduler = \"mglev\"")
            .replace("name = \"gw\"", "name = \"gw\"\nnmae = 1");
        let errors = errors(&source);
        assert_eq!(
            errors,
            [
                "t.toml:4:1: node.nmae: unknown key \"nmae\" in [node]; expected one of name, control_socket (did you mean \"name\"?)",
                "t.toml:12:8: service[0].port: port 0 is not a usable port; use a port from 1 to 65535",
                "t.toml:13:13: service[0].scheduler: unknown scheduler \"mglev\"; expected one of rr, wrr, lc, sh, maglev (did you mean \"maglev\"?)",
            ]
        );
    }

    #[test]
    fn syntax_errors_point_at_the_position() {
        let errors = errors("[node]\nname = \"gw\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("t.toml:2:"), "{errors:?}");
        assert!(errors[0].contains("TOML syntax error"), "{errors:?}");
    }

    #[test]
    fn system_checks_are_skipped_without_a_view() {
        let source = MINIMAL.replace("eth0", "eth9");
        assert!(validate_str(&source, "t.toml", None).is_ok());
        let errors = errors(&source);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("interface \"eth9\" does not exist; existing: lo, eth0"));
        assert!(errors[0].contains("(did you mean \"eth0\"?)"));
    }

    #[test]
    fn an_empty_file_names_every_missing_section() {
        let errors = errors("");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("t.toml:1:1: node: missing section [node]"));
        assert!(errors[1].starts_with("t.toml:1:1: interface: no dataplane interface"));
        assert!(errors[2].starts_with("t.toml:1:1: service: no service"));
    }

    #[test]
    fn unreadable_files_are_an_error_without_position() {
        let err = load_and_validate("/nonexistent/vipgate.toml", &view()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err.errors()[0].kind, ErrorKind::Io);
        assert!(err
            .to_string()
            .starts_with("/nonexistent/vipgate.toml: cannot read the file"));
        assert!(err
            .to_string()
            .ends_with("/nonexistent/vipgate.toml: 1 error"));
    }

    proptest::proptest! {
        /// Whatever the text, validation returns (never panics) and every
        /// error has a position inside the file.
        #[test]
        fn never_panics_and_always_locates(source in "(\\[\\[?[a-z.]{0,12}\\]\\]?\n|[a-z_]{1,12} = (\"[a-z0-9.:/]{0,12}\"|-?[0-9]{1,6}|true|\\[\\])\n){0,12}") {
            if let Err(errors) = validate_str(&source, "p.toml", Some(&view())) {
                let lines = source.lines().count().max(1) + 1;
                for e in errors.iter() {
                    let at = e.location.expect("text errors have a position");
                    proptest::prop_assert!(at.line <= lines, "{e} beyond {lines}");
                    proptest::prop_assert!(!e.help.is_empty());
                }
            }
        }
    }
}
