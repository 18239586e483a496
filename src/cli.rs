//! Command line: `vipgate run | check | status | vrrp | route | bgp | drain |
//! undrain | lab`. With no arguments
//! vipgate runs the lab's smoke scenario (the main job's embedded default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::logging::{self, LogFormat};
use crate::{config, control, daemon, lab};

#[derive(Parser, Debug)]
#[command(
    name = "vipgate",
    version,
    about = "Multi-VIP ECMP gateway: userspace NAT dataplane with per-core connection tables",
    long_about = "Multi-VIP ECMP gateway: userspace NAT dataplane with per-core connection tables.\n\
                  Without a command, runs `vipgate lab run --scenario smoke` (needs root)."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway daemon until SIGINT/SIGTERM.
    Run {
        /// The configuration file (TOML; see configs/).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file without changing anything; exit 1 on
    /// error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Skip the checks against this machine's interfaces (for a file
        /// meant for another host).
        #[arg(long)]
        no_system: bool,
    },
    /// Show services, backends, connections and per-worker counters of the
    /// running daemon.
    Status {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
        /// Control socket of the daemon.
        #[arg(long, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// Operate VRRP instances of the running daemon.
    Vrrp {
        #[command(subcommand)]
        command: VrrpCommand,
        /// Control socket of the daemon.
        #[arg(long, global = true, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// Operator routes of the running daemon, and `route speak`: a
    /// standalone speaker driven from stdin.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
        /// Control socket of the daemon.
        #[arg(long, global = true, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// BGP sessions of the running daemon.
    Bgp {
        #[command(subcommand)]
        command: BgpCommand,
        /// Control socket of the daemon.
        #[arg(long, global = true, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// Planned drain: announce every route with GRACEFUL_SHUTDOWN (RFC
    /// 8326) now and withdraw it after [bgp.drain] delay; the dataplane
    /// keeps forwarding.
    Drain {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        /// Control socket of the daemon.
        #[arg(long, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// End a drain: announce everything again without the drain attributes.
    Undrain {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        /// Control socket of the daemon.
        #[arg(long, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// Backends of the running daemon: operator drain and health events.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
        /// Control socket of the daemon.
        #[arg(long, global = true, default_value_os_t = daemon::default_socket())]
        socket: PathBuf,
    },
    /// Build the lab in network namespaces on this machine and run a
    /// scenario through the dataplane.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
}

#[derive(Subcommand, Debug)]
enum VrrpCommand {
    /// Planned switchover: advertise priority 0 now, keep forwarding what
    /// still arrives for the instance's resign_grace, and stay backup until
    /// `vrrp resume` (the rest of its sync group resigns with it).
    Resign { instance: String },
    /// Undo `vrrp resign`: contend again (and, with preempt, take back
    /// mastership from a lower-priority master).
    Resume { instance: String },
    /// Print VRRP state changes as JSON lines (--follow keeps reading).
    Events {
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BackendCommand {
    /// New connections of SERVICE go to its other backends; those open to
    /// BACKEND (ADDRESS or ADDRESS:PORT) finish. Lasts until undrain or a
    /// restart.
    Drain {
        service: String,
        backend: String,
        #[arg(long)]
        json: bool,
    },
    /// Undo `backend drain`.
    Undrain {
        service: String,
        backend: String,
        #[arg(long)]
        json: bool,
    },
    /// Print health transitions and operator drains as JSON lines
    /// (--follow keeps reading).
    Events {
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCommand {
    /// Announce PREFIX to every peer (an operator route: kept apart from
    /// the routes the daemon's policy announces).
    Announce {
        /// ADDRESS/LENGTH, or a bare address for a host route.
        prefix: String,
        /// Next hop (default: self, the session's own address).
        #[arg(long)]
        next_hop: Option<String>,
        #[arg(long)]
        med: Option<u32>,
        /// ASN:VALUE; repeatable.
        #[arg(long = "community")]
        communities: Vec<String>,
        /// GLOBAL:LOCAL1:LOCAL2; repeatable.
        #[arg(long = "large-community")]
        large_communities: Vec<String>,
        /// Extra copies of the local AS in the AS path (0..=16).
        #[arg(long)]
        prepend: Option<u8>,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an operator route (routes of the policy stay).
    Withdraw {
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// The Adj-RIB-Out: what each peer was sent.
    List {
        /// Only this peer's routes.
        #[arg(long)]
        peer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Standalone speaker (no daemon): hold the sessions of FILE's [bgp]
    /// and read `announce PREFIX [next-hop ADDR] [med N] [community A:B]...
    /// [large-community A:B:C]... [prepend N]` / `withdraw PREFIX` lines
    /// from stdin, answering `done` or `error: ...`; EOF or SIGTERM
    /// withdraws everything and exits.
    Speak {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BgpCommand {
    /// Each peer: state, uptime, prefixes sent and received, last error.
    Peers {
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let command = cli.command.unwrap_or(Command::Lab {
        command: lab::LabCommand::default_run(),
    });
    let result = match command {
        Command::Run { config } => daemon::run(&config).map(|()| ExitCode::SUCCESS),
        Command::Check { config, no_system } => check(&config, no_system),
        Command::Status { json, socket } => status(&socket, json).map(|()| ExitCode::SUCCESS),
        Command::Vrrp { command, socket } => vrrp(&socket, command).map(|()| ExitCode::SUCCESS),
        Command::Route { command, socket } => route(&socket, command).map(|()| ExitCode::SUCCESS),
        Command::Bgp {
            command: BgpCommand::Peers { json },
            socket,
        } => bgp_peers(&socket, json).map(|()| ExitCode::SUCCESS),
        Command::Drain { json, socket } => drain(&socket, json, true).map(|()| ExitCode::SUCCESS),
        Command::Undrain { json, socket } => {
            drain(&socket, json, false).map(|()| ExitCode::SUCCESS)
        }
        Command::Backend { command, socket } => {
            backend(&socket, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Lab { command } => lab::main(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vipgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path, no_system: bool) -> Result<ExitCode> {
    let view = if no_system {
        None
    } else {
        let mut nl = crate::netlink::RtNetlink::open()?;
        Some(daemon::system_view(&mut nl)?)
    };
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(_) => {
            // Let the validator word the error (file, fix).
            let empty = config::SystemView::new(Vec::new());
            if let Err(e) = config::load_and_validate(path, view.as_ref().unwrap_or(&empty)) {
                eprintln!("{e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    match config::validate_str(&source, &path.display().to_string(), view.as_ref()) {
        Ok(c) => {
            let backends: usize = c.services.iter().map(|s| s.backends.len()).sum();
            let checked = c
                .services
                .iter()
                .flat_map(|s| &s.backends)
                .filter(|b| b.health.is_some())
                .count();
            println!(
                "{}: ok ({} service(s), {} backend(s) of which {} health-checked, {} interface(s), {} VRRP instance(s), {} BGP peer(s){})",
                path.display(),
                c.services.len(),
                backends,
                checked,
                c.interfaces.len(),
                c.vrrp.instances.len(),
                c.bgp.peers.len(),
                if no_system {
                    "; system checks skipped"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(socket: &Path, raw: bool) -> Result<()> {
    let data = control::request(socket, &json!({"cmd": "status"}))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print!("{}", render_status(&data));
    }
    Ok(())
}

fn backend(socket: &Path, command: BackendCommand) -> Result<()> {
    let (cmd, service, backend, json) = match command {
        BackendCommand::Drain {
            service,
            backend,
            json,
        } => ("backend.drain", service, backend, json),
        BackendCommand::Undrain {
            service,
            backend,
            json,
        } => ("backend.undrain", service, backend, json),
        BackendCommand::Events { follow } => {
            return follow_events(socket, "backend.events", follow)
        }
    };
    let r = control::request(
        socket,
        &json!({"cmd": cmd, "service": service, "backend": backend}),
    )?;
    if json {
        println!("{r}");
    } else {
        let note = if r["changed"] == json!(true) {
            ""
        } else {
            " (already)"
        };
        println!(
            "{service} {}: {}{note}",
            r["backend"].as_str().unwrap_or(&backend),
            r["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Prints the events of `cmd` as JSON lines; with `follow`, keeps polling.
fn follow_events(socket: &Path, cmd: &str, follow: bool) -> Result<()> {
    let mut after = 0;
    loop {
        let r = control::request(socket, &json!({"cmd": cmd, "after": after}))?;
        for e in r["events"].as_array().into_iter().flatten() {
            println!("{e}");
            after = after.max(e["seq"].as_u64().unwrap_or(0));
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn vrrp(socket: &Path, command: VrrpCommand) -> Result<()> {
    match command {
        VrrpCommand::Resign { instance } => {
            let r = control::request(socket, &json!({"cmd": "vrrp.resign", "instance": instance}))?;
            println!(
                "{instance}: resigned; forwarding what still arrives for {} ms",
                r["grace_ms"]
            );
        }
        VrrpCommand::Resume { instance } => {
            control::request(socket, &json!({"cmd": "vrrp.resume", "instance": instance}))?;
            println!("{instance}: resumed");
        }
        VrrpCommand::Events { follow } => return follow_events(socket, "vrrp.events", follow),
    }
    Ok(())
}

/// The control request of a `route` command against the daemon (None:
/// `route speak`, which runs here).
fn route_request(command: &RouteCommand) -> Option<(Value, bool)> {
    Some(match command {
        RouteCommand::Announce {
            prefix,
            next_hop,
            med,
            communities,
            large_communities,
            prepend,
            json,
        } => (
            json!({
                "cmd": "route.announce", "prefix": prefix, "next_hop": next_hop, "med": med,
                "communities": communities, "large_communities": large_communities,
                "prepend": prepend,
            }),
            *json,
        ),
        RouteCommand::Withdraw { prefix, json } => {
            (json!({"cmd": "route.withdraw", "prefix": prefix}), *json)
        }
        RouteCommand::List { peer, json } => (json!({"cmd": "route.list", "peer": peer}), *json),
        RouteCommand::Speak { .. } => return None,
    })
}

fn route(socket: &Path, command: RouteCommand) -> Result<()> {
    if let RouteCommand::Speak { config } = &command {
        return speak(config);
    }
    let Some((request, raw)) = route_request(&command) else {
        return Ok(());
    };
    let data = control::request(socket, &request)?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    match command {
        RouteCommand::Announce { .. } => {
            println!("{}: announced", data["prefix"].as_str().unwrap_or("?"))
        }
        RouteCommand::Withdraw { .. } => {
            println!("{}: withdrawn", data["prefix"].as_str().unwrap_or("?"))
        }
        _ => print!("{}", render_rib(&data)),
    }
    Ok(())
}

fn speak(path: &Path) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    daemon::install_signal_handlers(stop.clone())?;
    // The system checks (own addresses, router id) when rtnetlink answers.
    let view = crate::netlink::RtNetlink::open()
        .ok()
        .and_then(|mut nl| daemon::system_view(&mut nl).ok());
    crate::bgp::speak(path, view.as_ref(), &stop)
}

fn bgp_peers(socket: &Path, raw: bool) -> Result<()> {
    let data = control::request(socket, &json!({"cmd": "bgp.peers"}))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print!("{}", render_peers(&data["peers"]));
    }
    Ok(())
}

fn drain(socket: &Path, raw: bool, on: bool) -> Result<()> {
    let cmd = if on { "drain" } else { "undrain" };
    let data = control::request(socket, &json!({ "cmd": cmd }))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else if on {
        println!(
            "draining: routes carry GRACEFUL_SHUTDOWN (65535:0) and are withdrawn in {} ms",
            data["withdraw_in_ms"]
        );
    } else {
        println!("undrained: routes announced again");
    }
    Ok(())
}

fn render_peers(peers: &Value) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<20} {:<28} {:<12} {:>8} {:>6} {:>6}  last error\n",
        "peer", "address", "state", "uptime", "sent", "rcvd"
    );
    for p in peers.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<12} {:>8} {:>6} {:>6}  {}",
            p["name"].as_str().unwrap_or(""),
            p["address"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["uptime_seconds"]
                .as_u64()
                .map_or("-".to_string(), |s| format!("{s}s")),
            p["prefixes_sent"].to_string(),
            p["prefixes_received"].to_string(),
            p["last_error"].as_str().unwrap_or("-"),
        );
    }
    out
}

/// One route's attributes on one line.
fn render_attrs(r: &Value) -> String {
    let mut parts = vec![format!(
        "next-hop {}",
        r["next_hop"].as_str().unwrap_or("?")
    )];
    for key in ["med", "local_pref", "prepend"] {
        if r[key].as_u64().is_some_and(|n| key != "prepend" || n > 0) {
            parts.push(format!("{} {}", key.replace('_', "-"), r[key]));
        }
    }
    for (key, name) in [
        ("communities", "community"),
        ("large_communities", "large-community"),
    ] {
        for c in r[key].as_array().into_iter().flatten() {
            parts.push(format!("{name} {}", c.as_str().unwrap_or("?")));
        }
    }
    parts.join(" ")
}

fn render_rib(d: &Value) -> String {
    use std::fmt::Write;
    let mut out = format!("{:<28} {:<44} attributes\n", "peer", "prefix");
    for r in d["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<28} {:<44} {}",
            r["peer"].as_str().unwrap_or("?"),
            r["prefix"].as_str().unwrap_or("?"),
            render_attrs(r)
        );
    }
    out
}

/// The BGP part of the human status view (nothing without a speaker).
fn render_bgp(out: &mut String, b: &Value) {
    use std::fmt::Write;
    if b.is_null() {
        return;
    }
    let _ = writeln!(
        out,
        "\nbgp mode {}  drain {}{}",
        b["mode"].as_str().unwrap_or("-"),
        b["drain"].as_str().unwrap_or("?"),
        b["withdraw_in_ms"]
            .as_u64()
            .map_or(String::new(), |ms| format!(" (withdraw in {ms} ms)"))
    );
    for line in render_peers(&b["peers"]).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "  announced:");
    for r in b["announced"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "    {:<44} ({}) {}",
            r["prefix"].as_str().unwrap_or("?"),
            r["source"].as_str().unwrap_or("?"),
            render_attrs(r)
        );
    }
}

/// The human view of a status document.
pub fn render_status(d: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  up {}s  config generation {}",
        d["node"].as_str().unwrap_or("?"),
        d["uptime_seconds"],
        d["generation"]
    );
    for s in d["services"].as_array().into_iter().flatten() {
        let vip = s["vip"].as_str().unwrap_or("?");
        let vip = if vip.contains(':') {
            format!("[{vip}]")
        } else {
            vip.to_string()
        };
        let mut notes = Vec::new();
        if s["active"] == json!(false) {
            notes.push("VIP not active here".to_string());
        }
        if s["usable"] == json!(false) {
            notes.push(format!(
                "NOT USABLE: healthy weight {} < quorum {}",
                s["healthy_weight"], s["quorum"]
            ));
        }
        if s["sorry_server_active"] == json!(true) {
            notes.push(format!(
                "sorry server {} takes new connections",
                s["sorry_server"].as_str().unwrap_or("?")
            ));
        }
        let _ = writeln!(
            out,
            "\nservice {}  {}:{}/{}  scheduler {}{}",
            s["name"].as_str().unwrap_or("?"),
            vip,
            s["port"],
            s["protocol"].as_str().unwrap_or("?"),
            s["scheduler"].as_str().unwrap_or("?"),
            if notes.is_empty() {
                String::new()
            } else {
                format!("  [{}]", notes.join("; "))
            }
        );
        let _ = writeln!(
            out,
            "  {:<30} {:>6} {:>6} {:>11}  {:<9} last check",
            "backend", "weight", "in use", "connections", "state"
        );
        for b in s["backends"].as_array().into_iter().flatten() {
            let addr = b["address"].as_str().unwrap_or("?");
            let ep = if addr.contains(':') {
                format!("[{addr}]:{}", b["port"])
            } else {
                format!("{addr}:{}", b["port"])
            };
            let in_use = match b["weight_in_use"].as_u64() {
                Some(w) => w.to_string(),
                None => "-".to_string(),
            };
            let last = &b["health"]["last"];
            let check = if last.is_null() {
                b["check"]
                    .as_str()
                    .map_or(String::new(), |c| format!("{c}: pending"))
            } else {
                format!(
                    "{}: {} in {} ms",
                    b["check"].as_str().unwrap_or("?"),
                    last["reason"].as_str().unwrap_or("?"),
                    last["latency_ms"]
                )
            };
            let _ = writeln!(
                out,
                "  {:<30} {:>6} {:>6} {:>11}  {:<9} {}",
                ep,
                b["weight"].to_string(),
                in_use,
                b["connections"].to_string(),
                b["state"].as_str().unwrap_or("?"),
                check
            );
        }
    }
    render_vrrp(&mut out, &d["vrrp"]);
    render_bgp(&mut out, &d["bgp"]);
    let workers = d["workers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\nper worker:");
    let names: Vec<String> = workers
        .first()
        .and_then(|w| w["counters"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let _ = write!(out, "  {:<24}", "counter");
    for w in &workers {
        let _ = write!(out, " {:>12}", format!("w{}", w["worker"]));
    }
    out.push('\n');
    for n in &names {
        let _ = write!(out, "  {:<24}", n);
        for w in &workers {
            let _ = write!(out, " {:>12}", w["counters"][n].to_string());
        }
        out.push('\n');
    }
    let drop_names: Vec<String> = workers
        .first()
        .and_then(|w| w["drops"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for n in &drop_names {
        let total: u64 = workers
            .iter()
            .map(|w| w["drops"][n].as_u64().unwrap_or(0))
            .sum();
        if total == 0 {
            continue;
        }
        let _ = write!(out, "  {:<24}", format!("drop {n}"));
        for w in &workers {
            let _ = write!(out, " {:>12}", w["drops"][n].to_string());
        }
        out.push('\n');
    }
    out
}

/// The VRRP part of the human status view (nothing without instances).
fn render_vrrp(out: &mut String, v: &Value) {
    use std::fmt::Write;
    let Some(instances) = v["instances"].as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nvrrp {:<16} {:<8} {:>4} {:>2} {:<7} {:>9} {:<24} {:>8}  last change",
        "instance", "link", "vrid", "v", "state", "prio/eff", "master", "interval"
    );
    for i in instances {
        let last = &i["last_transition"];
        let last = if last.is_null() {
            "-".to_string()
        } else {
            format!(
                "{} -> {} ({}) {:.1}s ago",
                last["from"].as_str().unwrap_or("?"),
                last["to"].as_str().unwrap_or("?"),
                last["reason"].as_str().unwrap_or("?"),
                last["seconds_ago"].as_f64().unwrap_or(0.0)
            )
        };
        let mut state = i["state"].as_str().unwrap_or("?").to_string();
        if i["resigned"].as_bool() == Some(true) {
            state.push('*');
        }
        let _ = writeln!(
            out,
            "     {:<16} {:<8} {:>4} {:>2} {:<7} {:>9} {:<24} {:>6}ms  {}",
            i["name"].as_str().unwrap_or("?"),
            i["interface"].as_str().unwrap_or("?"),
            i["vrid"].to_string(),
            i["version"].to_string(),
            state,
            format!("{}/{}", i["priority"], i["effective_priority"]),
            i["master"].as_str().unwrap_or("-"),
            i["advert_interval_ms"].to_string(),
            last
        );
        let c = &i["counters"];
        let dropped: Vec<String> = c["dropped"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "       vips {} ({})  adverts rx {} tx {}  prio0 rx {} tx {}  dropped: {}",
            i["vips"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            i["vip_state"].as_str().unwrap_or("?"),
            c["adverts_rx"],
            c["adverts_tx"],
            c["priority_zero_rx"],
            c["priority_zero_tx"],
            if dropped.is_empty() {
                "none".to_string()
            } else {
                dropped.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "     (* resigned: stays backup until `vipgate vrrp resume`)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vipgate").chain(args.iter().copied()))
    }

    #[test]
    fn route_announce_collects_repeated_communities() {
        let cli = parse(&[
            "route",
            "announce",
            "198.18.10.10/32",
            "--next-hop",
            "198.18.0.9",
            "--med",
            "5",
            "--community",
            "65000:1",
            "--community",
            "65000:2",
            "--large-community",
            "1:2:3",
            "--prepend",
            "2",
            "--json",
            "--socket",
            "/tmp/x.sock",
        ])
        .expect("parses");
        let Some(Command::Route { command, socket }) = cli.command else {
            panic!("route");
        };
        assert_eq!(socket, PathBuf::from("/tmp/x.sock"));
        let (request, raw) = route_request(&command).expect("a daemon request");
        assert!(raw);
        assert_eq!(request["cmd"], "route.announce");
        assert_eq!(request["communities"], json!(["65000:1", "65000:2"]));
        assert_eq!(request["large_communities"], json!(["1:2:3"]));
        // What the daemon makes of it.
        let (prefix, attrs) = crate::bgp::route_from_request(&request).expect("valid");
        assert_eq!(prefix.to_string(), "198.18.10.10/32");
        assert_eq!(
            (attrs.med, attrs.prepend, attrs.communities.len()),
            (Some(5), 2, 2)
        );
    }

    #[test]
    fn bgp_commands_parse_and_bad_values_are_refused() {
        assert!(parse(&["route", "list", "--peer", "198.18.0.254", "--json"]).is_ok());
        assert!(parse(&["route", "withdraw", "198.18.10.10/32"]).is_ok());
        assert!(parse(&["route", "speak", "--config", "f.toml"]).is_ok());
        assert!(parse(&["bgp", "peers", "--json"]).is_ok());
        assert!(parse(&["drain", "--json"]).is_ok());
        assert!(parse(&["undrain"]).is_ok());
        assert!(parse(&["route", "announce", "198.18.10.10/32", "--med", "-1"]).is_err());
        assert!(parse(&["route", "announce", "198.18.10.10/32", "--prepend", "300"]).is_err());
        assert!(parse(&["route", "announce"]).is_err());
    }

    #[test]
    fn status_shows_the_bgp_part() {
        let d = json!({
            "bgp": {"mode": "ecmp", "drain": "draining", "withdraw_in_ms": 1500,
                "peers": [{"name": "up", "address": "198.18.0.254", "state": "Established",
                    "uptime_seconds": 3, "prefixes_sent": 1, "prefixes_received": 0, "last_error": null}],
                "announced": [{"prefix": "198.18.10.10/32", "source": "policy", "next_hop": "self",
                    "med": null, "local_pref": null, "communities": ["65000:1"], "large_communities": [], "prepend": 0}]}
        });
        let text = render_status(&d);
        assert!(
            text.contains("bgp mode ecmp  drain draining (withdraw in 1500 ms)"),
            "{text}"
        );
        assert!(text.contains("Established"), "{text}");
        assert!(text.contains("198.18.10.10/32"), "{text}");
        assert!(
            text.contains("(policy) next-hop self community 65000:1"),
            "{text}"
        );
    }
}
