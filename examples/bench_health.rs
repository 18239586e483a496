//! CPU cost of health checking: N backends (default 1,000) checked every
//! second, with TCP connect checks and then with HTTP GET checks, measured
//! as the CPU time of the checker thread over the run, in % of one core,
//! split into user and system (kernel) time.
//!
//! Two set-ups, each in network namespaces made for the run and removed on
//! every path (`vgt-<pid>-hcb...`):
//!
//! - `local`: the N listeners (ports 20000.. of 198.18.60.1) in the
//!   checker's own namespace. Over loopback the kernel does the backend's
//!   half of every handshake in the checker thread's system calls, so this
//!   is an upper bound.
//! - `veth`: the listeners in a second namespace behind a veth pair
//!   (198.18.61.1 ── 198.18.61.2), the checker thread pinned to CPU 0 and
//!   the receive processing of both veth ends steered to CPU 1 (RPS), with
//!   the backends' server thread: as with real backends, where their half
//!   runs on other hosts and the gateway's receive path in the NIC's
//!   softirq. Needs 2 CPUs.
//!
//! The backends answer each HTTP request with a small 200 (Content-Length
//! framed) from a server thread of this process (its CPU is not counted).
//! Like nginx, they close after the answer only when the request says
//! `Connection: close`, and otherwise keep the connection until the
//! client closes it. Needs root; without it
//! prints SKIPPED and exits 0.
//!
//! ```text
//! cargo run --release --example bench_health -- [--backends 1000] [--seconds 20] [--interval-ms 1000] [--setup local|veth|both] [--kind tcp|http|both]
//! ```
//!
//! Prints one `RESULT setup=... kind=... cpu_pct=...` line per set-up and
//! kind.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vipgate::health::{CheckKind, CheckSpec, Checker, TargetStatus};
use vipgate::netns::NetNs;

const LOCAL_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 1);
const VETH_CHECKER: Ipv4Addr = Ipv4Addr::new(198, 18, 61, 1);
const VETH_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 61, 2);
const FIRST_PORT: u16 = 20000;
/// The answer to a keep-alive request, and to one with `Connection: close`.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
/// Checks spread over this long before the measurement starts.
const WARM_UP: Duration = Duration::from_secs(3);
/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/task/<tid>/stat.
const USER_HZ: f64 = 100.0;
/// In the veth set-up: the checker's CPU, and the one that gets the
/// backends and the receive processing.
const CHECKER_CPU: usize = 0;
const OTHER_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Local,
    Veth,
}

struct Args {
    backends: u16,
    seconds: u64,
    interval: Duration,
    setups: Vec<Setup>,
    kinds: Vec<&'static str>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backends: 1000,
        seconds: 20,
        interval: Duration::from_secs(1),
        setups: vec![Setup::Local, Setup::Veth],
        kinds: vec!["tcp", "http"],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--backends" => args.backends = value.parse().map_err(bad)?,
            "--seconds" => args.seconds = value.parse().map_err(bad)?,
            "--interval-ms" => args.interval = Duration::from_millis(value.parse().map_err(bad)?),
            "--setup" => {
                args.setups = match value.as_str() {
                    "local" => vec![Setup::Local],
                    "veth" => vec![Setup::Veth],
                    "both" => vec![Setup::Local, Setup::Veth],
                    _ => return Err(format!("--setup local, veth or both, not {value}")),
                }
            }
            "--kind" => {
                args.kinds = match value.as_str() {
                    "tcp" => vec!["tcp"],
                    "http" => vec!["http"],
                    "both" => vec!["tcp", "http"],
                    _ => return Err(format!("--kind tcp, http or both, not {value}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.backends == 0 || args.backends > 40000 || args.seconds == 0 || args.interval.is_zero() {
        return Err("backends 1..=40000, seconds and interval above zero".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    if !vipgate::privileges::is_root() {
        println!("SKIPPED: needs root for network namespaces");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_health: {e}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    println!(
        "health check CPU: {} backends, every {:?}, {} s per kind, one checker thread",
        args.backends, args.interval, args.seconds
    );
    for &setup in &args.setups {
        if let Err(e) = run(&args, setup) {
            eprintln!("bench_health: {setup:?}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Namespaces of one set-up; removed on drop (the NetNs handles own them).
struct Topology {
    checker: NetNs,
    /// The backends' namespace when it is not the checker's.
    backends: Option<NetNs>,
    server: Ipv4Addr,
}

impl Topology {
    fn backends_ns(&self) -> &NetNs {
        self.backends.as_ref().unwrap_or(&self.checker)
    }
}

fn ip(ns: &NetNs, args: &[&str]) -> Result<(), String> {
    let out = ns
        .command("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn build(setup: Setup) -> Result<Topology, String> {
    let pid = std::process::id();
    let checker = NetNs::create(&format!("vgt-{pid}-hcbc")).map_err(|e| e.to_string())?;
    if setup == Setup::Local {
        ip(
            &checker,
            &["addr", "add", &format!("{LOCAL_SERVER}/32"), "dev", "lo"],
        )?;
        return Ok(Topology {
            checker,
            backends: None,
            server: LOCAL_SERVER,
        });
    }
    let backends = NetNs::create(&format!("vgt-{pid}-hcbb")).map_err(|e| e.to_string())?;
    let other = backends.name().unwrap_or_default().to_string();
    ip(
        &checker,
        &[
            "link", "add", "c0", "type", "veth", "peer", "name", "b0", "netns", &other,
        ],
    )?;
    ip(
        &checker,
        &["addr", "add", &format!("{VETH_CHECKER}/24"), "dev", "c0"],
    )?;
    ip(&checker, &["link", "set", "c0", "up"])?;
    ip(
        &backends,
        &["addr", "add", &format!("{VETH_SERVER}/24"), "dev", "b0"],
    )?;
    ip(&backends, &["link", "set", "b0", "up"])?;
    let mask = format!("{:x}", 1u64 << OTHER_CPU);
    for (ns, dev) in [(&checker, "c0"), (&backends, "b0")] {
        steer_rx(ns, dev, &mask)?;
    }
    Ok(Topology {
        checker,
        backends: Some(backends),
        server: VETH_SERVER,
    })
}

/// RPS: receive processing of `dev` on the CPUs of `mask`. sysfs shows a
/// namespace's devices only when mounted from inside it, which `ip netns
/// exec` does.
fn steer_rx(ns: &NetNs, dev: &str, mask: &str) -> Result<(), String> {
    let name = ns.name().unwrap_or_default();
    let file = format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus");
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            name,
            "sh",
            "-c",
            &format!("echo {mask} > {file}"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "setting {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn run(args: &Args, setup: Setup) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if setup == Setup::Veth && cpus < 2 {
        println!("RESULT setup=veth SKIPPED: needs 2 CPUs");
        return Ok(());
    }
    let topo = build(setup)?;
    let pin = (setup == Setup::Veth).then_some((CHECKER_CPU, OTHER_CPU));
    let server = Server::start(
        topo.backends_ns(),
        topo.server,
        args.backends,
        pin.map(|p| p.1),
    )?;
    for &kind in &args.kinds {
        measure(&topo, args, setup, kind, pin.map(|p| p.0))?;
    }
    drop(server);
    Ok(())
}

fn spec(kind: &str, server: Ipv4Addr, port: u16, interval: Duration) -> CheckSpec {
    let target = SocketAddr::new(IpAddr::V4(server), port);
    let kind = match kind {
        "tcp" => CheckKind::Tcp { target },
        _ => CheckKind::http(target, "/health"),
    };
    let mut s = CheckSpec::new(kind);
    s.interval = interval;
    s.timeout = Duration::from_secs(1);
    s.jitter = 0.1;
    s
}

/// The calling thread on `cpu` only (threads it starts inherit this).
fn pin_to(cpu: usize) -> Result<(), String> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

fn measure(
    topo: &Topology,
    args: &Args,
    setup: Setup,
    kind: &str,
    pin: Option<usize>,
) -> Result<(), String> {
    let specs = (0..args.backends)
        .map(|i| spec(kind, topo.server, FIRST_PORT + i, args.interval))
        .collect();
    let checker = topo
        .checker
        .run(|| {
            if let Some(cpu) = pin {
                pin_to(cpu)?;
            }
            Checker::start(specs).map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())??;
    std::thread::sleep(WARM_UP);
    let (cpu0, wall0, before) = (cpu(&checker)?, Instant::now(), checker.status());
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (cpu1, wall, after) = (cpu(&checker)?, wall0.elapsed(), checker.status());
    checker.shutdown();
    let sum = |s: &[TargetStatus], f: fn(&TargetStatus) -> u64| s.iter().map(f).sum::<u64>();
    let checks = sum(&after, |s| s.checks) - sum(&before, |s| s.checks);
    let failures = sum(&after, |s| s.failures) - sum(&before, |s| s.failures);
    let unhealthy = after.iter().filter(|s| !s.healthy).count();
    let mut latencies: Vec<Duration> = after
        .iter()
        .filter_map(|s| s.last.as_ref().map(|l| l.latency))
        .collect();
    latencies.sort();
    let pct = |p: usize| {
        latencies
            .get(latencies.len().saturating_sub(1) * p / 100)
            .copied()
    };
    let of_core = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    let used = cpu1.total.saturating_sub(cpu0.total);
    println!(
        "RESULT setup={} kind={kind} backends={} checks_per_s={:.0} cpu_pct={:.2} user_pct={:.2} \
         sys_pct={:.2} cpu_us_per_check={:.1} failures={failures} unhealthy={unhealthy} \
         latency_p50_us={} latency_p99_us={}",
        format!("{setup:?}").to_lowercase(),
        args.backends,
        checks as f64 / wall.as_secs_f64(),
        of_core(used),
        of_core(cpu1.user.saturating_sub(cpu0.user)),
        of_core(cpu1.system.saturating_sub(cpu0.system)),
        used.as_secs_f64() * 1e6 / checks.max(1) as f64,
        pct(50).map_or(0, |d| d.as_micros()),
        pct(99).map_or(0, |d| d.as_micros()),
    );
    Ok(())
}

/// CPU time of the checker thread: total (schedstat, nanoseconds) and its
/// user/system split (stat, in ticks).
struct CpuTimes {
    total: Duration,
    user: Duration,
    system: Duration,
}

fn cpu(checker: &Checker) -> Result<CpuTimes, String> {
    let total = checker
        .thread_cpu_time()
        .map_err(|e| format!("reading the checker thread's CPU time: {e}"))?;
    let tid = checker.thread_id().ok_or("checker thread id unknown")?;
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .map_err(|e| e.to_string())?;
    // After the command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<Duration, String> {
        let t: f64 = fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or("cannot parse the thread's stat")?;
        Ok(Duration::from_secs_f64(t / USER_HZ))
    };
    Ok(CpuTimes {
        total,
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

/// The soft limit up to the hard one: listeners, server connections and
/// probe sockets add up to a few per backend.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// N listeners in a namespace, served by one thread with its own runtime
/// until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(
        ns: &NetNs,
        address: Ipv4Addr,
        count: u16,
        cpu: Option<usize>,
    ) -> Result<Server, String> {
        let listeners = ns
            .run(|| {
                (0..count)
                    .map(|i| {
                        let l = TcpListener::bind(SocketAddr::new(
                            IpAddr::V4(address),
                            FIRST_PORT + i,
                        ))?;
                        l.set_nonblocking(true)?;
                        Ok(l)
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("binding the backends: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-backends".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = pin_to(cpu) {
                        eprintln!("bench_health: {e}");
                    }
                }
                serve(listeners, flag)
            })
            .map_err(|e| e.to_string())?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listeners: Vec<TcpListener>, stop: Arc<AtomicBool>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        for l in listeners {
            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                continue;
            };
            tokio::spawn(async move {
                while let Ok((conn, _)) = l.accept().await {
                    tokio::spawn(answer(conn));
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Answers each request head on `conn` with a 200 (nothing: a TCP check),
/// as nginx does: closes after the answer when the request said
/// `Connection: close`, otherwise keeps the connection for the next request
/// until the client closes it (a check's RST).
async fn answer(mut conn: tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let mut seen = 0;
    loop {
        match conn.read(&mut buf[seen..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen += n,
        }
        let Some(end) = buf[..seen].windows(4).position(|w| w == b"\r\n\r\n") else {
            if seen == buf.len() {
                return;
            }
            continue;
        };
        let close = wants_close(&buf[..end]);
        let response = if close { RESPONSE_CLOSE } else { RESPONSE };
        if conn.write_all(response).await.is_err() || close {
            return;
        }
        buf.copy_within(end + 4..seen, 0);
        seen -= end + 4;
    }
}

/// Whether a request head asks the server to close after the response.
fn wants_close(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        line.len() >= 17
            && line[..11].eq_ignore_ascii_case(b"connection:")
            && line[11..]
                .to_ascii_lowercase()
                .trim_ascii()
                .starts_with(b"close")
    })
}
