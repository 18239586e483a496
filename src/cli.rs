//! Command line: `vipgate run | check | status | lab`. With no arguments
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
            println!(
                "{}: ok ({} service(s), {} backend(s), {} interface(s), {} VRRP instance(s), {} BGP peer(s){})",
                path.display(),
                c.services.len(),
                backends,
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
        VrrpCommand::Events { follow } => {
            let mut after = 0;
            loop {
                let r = control::request(socket, &json!({"cmd": "vrrp.events", "after": after}))?;
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
    }
    Ok(())
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
        let _ = writeln!(
            out,
            "\nservice {}  {}:{}/{}  scheduler {}",
            s["name"].as_str().unwrap_or("?"),
            vip,
            s["port"],
            s["protocol"].as_str().unwrap_or("?"),
            s["scheduler"].as_str().unwrap_or("?"),
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>6} {:>12}",
            "backend", "weight", "connections"
        );
        for b in s["backends"].as_array().into_iter().flatten() {
            let addr = b["address"].as_str().unwrap_or("?");
            let ep = if addr.contains(':') {
                format!("[{addr}]:{}", b["port"])
            } else {
                format!("{addr}:{}", b["port"])
            };
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>12}",
                ep,
                b["weight"].to_string(),
                b["connections"].to_string()
            );
        }
    }
    render_vrrp(&mut out, &d["vrrp"]);
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
