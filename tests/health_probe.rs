//! The health-check engine against real servers in a network namespace:
//! nginx from Debian (HTTP, and HTTPS with a self-signed certificate made
//! here with rcgen), the lab's own backend (`vipgate lab serve`: HTTP and
//! UDP), a UDP echo and a TCP listener that record who probed them, and
//! command checks run inside the namespace.
//!
//! ```text
//!  ns vgt-<pid>-hc<n>
//!    lo   198.18.50.1/32  servers          198.18.50.7/32  second source address
//!    bh0  198.18.99.1/24 ── bh1 (no address: 198.18.99.99 never answers)
//! ```
//!
//! Needs root (and nginx for the nginx test); prints SKIPPED with the
//! reason otherwise. Each test makes its own namespace, removed on drop
//! with every process it started (ended by PID).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vipgate::health::{check_once, CheckKind, CheckResult, CheckSpec, Checker, TlsOptions};
use vipgate::netns::NetNs;
use vipgate::privileges::is_root;

const SERVER: &str = "198.18.50.1";
const SOURCE: &str = "198.18.50.7";
const BLACKHOLE: &str = "198.18.99.99";
const NGINX: &str = "/usr/sbin/nginx";
const NGINX_BODY: &str = "hello vipgate\n";

static LABS: AtomicUsize = AtomicUsize::new(0);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

fn at(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

fn skip_reason(needs_nginx: bool) -> Option<&'static str> {
    if !is_root() {
        return Some("needs root for network namespaces");
    }
    if needs_nginx && !Path::new(NGINX).exists() {
        return Some("nginx not installed (apt-get install nginx)");
    }
    None
}

/// One namespace with the addresses above, a scratch directory and the
/// processes started in it; all removed / ended by PID on drop.
struct Lab {
    ns: NetNs,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let name = format!("vgt-{}-hc{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let ns = NetNs::create(&name).expect("creating the namespace");
        let lab = Lab {
            ns,
            dir,
            children: Vec::new(),
        };
        lab.ip(&["addr", "add", &format!("{SERVER}/32"), "dev", "lo"]);
        lab.ip(&["addr", "add", &format!("{SOURCE}/32"), "dev", "lo"]);
        lab.ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
        lab.ip(&["link", "set", "bh0", "up"]);
        lab.ip(&["link", "set", "bh1", "up"]);
        lab.ip(&["addr", "add", "198.18.99.1/24", "dev", "bh0"]);
        lab
    }

    fn ip(&self, args: &[&str]) {
        let out = self
            .ns
            .command("ip")
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self, mut cmd: Command) -> usize {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a server");
        self.children.push(child);
        self.children.len() - 1
    }

    /// SIGKILL by PID and reap.
    fn kill(&mut self, i: usize) {
        let c = &mut self.children[i];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// One check from inside the namespace.
    fn check(&self, spec: &CheckSpec) -> CheckResult {
        self.ns
            .run(|| check_once(spec))
            .expect("entering the namespace")
            .expect("a valid spec")
    }

    /// A checker whose thread (and probes) live in the namespace.
    fn checker(&self, specs: Vec<CheckSpec>) -> Checker {
        self.ns
            .run(|| Checker::start(specs))
            .expect("entering the namespace")
            .expect("starting the checker")
    }

    /// Waits until a TCP connect to `target` succeeds.
    fn wait_listening(&self, target: SocketAddr) {
        let spec = tcp(target);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.check(&spec);
            if r.ok {
                return;
            }
            assert!(Instant::now() < deadline, "{target} never listened: {r:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ss` lines of the namespace's TCP sockets in TIME_WAIT.
    fn time_wait(&self) -> String {
        self.tcp_sockets("time-wait")
    }

    /// `ss` lines of the namespace's TCP sockets in `state`.
    fn tcp_sockets(&self, state: &str) -> String {
        let out = self
            .ns
            .command("ss")
            .args(["-Htan", "state", state])
            .output()
            .expect("running ss");
        assert!(out.status.success(), "ss failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `vipgate lab serve` on `port` of SERVER (HTTP and UDP).
    fn lab_server(&mut self, port: u16) -> usize {
        let mut cmd = self.ns.command(env!("CARGO_BIN_EXE_vipgate"));
        cmd.args([
            "lab",
            "serve",
            "--ports",
            &port.to_string(),
            "--addresses",
            SERVER,
        ]);
        let i = self.spawn(cmd);
        self.wait_listening(at(SERVER, port));
        i
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                end(c);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespace goes with `self.ns`.
    }
}

/// SIGTERM by PID (nginx then stops its workers), SIGKILL after 3 s.
fn end(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn quick(kind: CheckKind) -> CheckSpec {
    let mut spec = CheckSpec::new(kind);
    spec.timeout = Duration::from_secs(2);
    spec
}

fn tcp(target: SocketAddr) -> CheckSpec {
    quick(CheckKind::Tcp { target })
}

fn http(target: SocketAddr, path: &str) -> CheckSpec {
    quick(CheckKind::http(target, path))
}

fn with_http(
    mut spec: CheckSpec,
    f: impl FnOnce(
        &mut Option<TlsOptions>,
        &mut Option<String>,
        &mut Vec<(u16, u16)>,
        &mut Option<String>,
        &mut Option<[u8; 32]>,
    ),
) -> CheckSpec {
    if let CheckKind::Http {
        tls,
        host,
        expect_status,
        body_contains,
        body_sha256,
        ..
    } = &mut spec.kind
    {
        f(tls, host, expect_status, body_contains, body_sha256);
    }
    spec
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

fn assert_result(r: &CheckResult, ok: bool, reason: &str) {
    assert_eq!((r.ok, r.reason.as_str()), (ok, reason), "{r:?}");
}

const NGINX_CONF: &str = r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {DIR}/nginx.pid;
error_log {DIR}/error.log;
events { worker_connections 64; }
http {
    log_format probe '$remote_addr $request_uri $status $http_host';
    access_log {DIR}/access.log probe;
    client_body_temp_path {DIR}/body;
    proxy_temp_path {DIR}/proxy;
    fastcgi_temp_path {DIR}/fastcgi;
    uwsgi_temp_path {DIR}/uwsgi;
    scgi_temp_path {DIR}/scgi;
    server {
        listen {SERVER}:8080;
        listen {SERVER}:8443 ssl;
        ssl_certificate {DIR}/cert.pem;
        ssl_certificate_key {DIR}/key.pem;
        location = / { default_type text/plain; return 200 "hello vipgate\n"; }
        location = /down { return 503; }
        location = /moved { return 301 /; }
    }
}
"#;

/// nginx on SERVER:8080 (HTTP) and :8443 (HTTPS, self-signed for
/// backend.test), its access log recording the client address and Host.
fn start_nginx(lab: &mut Lab) {
    let dir = lab.dir.display().to_string();
    let cert = rcgen::generate_simple_self_signed(vec!["backend.test".to_string()])
        .expect("a self-signed certificate");
    std::fs::write(lab.dir.join("cert.pem"), cert.cert.pem()).expect("cert.pem");
    std::fs::write(lab.dir.join("key.pem"), cert.signing_key.serialize_pem()).expect("key.pem");
    let conf = NGINX_CONF
        .replace("{DIR}", &dir)
        .replace("{SERVER}", SERVER);
    let path = lab.dir.join("nginx.conf");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .expect("nginx.conf");
    let mut cmd = lab.ns.command(NGINX);
    cmd.arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&lab.dir)
        .arg("-e")
        .arg(lab.dir.join("error.log"));
    lab.spawn(cmd);
    lab.wait_listening(at(SERVER, 8080));
    lab.wait_listening(at(SERVER, 8443));
}

#[test]
fn http_and_https_checks_against_nginx() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new();
    start_nginx(&mut lab);
    let site = at(SERVER, 8080);

    assert_result(&lab.check(&http(site, "/")), true, "status 200");
    assert_result(&lab.check(&http(site, "/down")), false, "status 503");
    assert_result(&lab.check(&http(site, "/moved")), false, "status 301");
    let redirect_ok = with_http(http(site, "/moved"), |_, _, s, _, _| s.push((300, 399)));
    assert_result(&lab.check(&redirect_ok), true, "status 301");
    let expect_503 = with_http(http(site, "/down"), |_, _, s, _, _| s.push((503, 503)));
    assert_result(&lab.check(&expect_503), true, "status 503");

    let contains =
        |text: &str| with_http(http(site, "/"), |_, _, _, c, _| *c = Some(text.to_string()));
    assert_result(
        &lab.check(&contains("vipgate")),
        true,
        "status 200, body matches",
    );
    assert_result(
        &lab.check(&contains("nope")),
        false,
        "status 200, body lacks \"nope\"",
    );
    let digest = |d: [u8; 32]| with_http(http(site, "/"), |_, _, _, _, s| *s = Some(d));
    let good = sha256(NGINX_BODY.as_bytes());
    assert_result(&lab.check(&digest(good)), true, "status 200, body matches");
    assert_result(
        &lab.check(&digest(sha256(b"something else"))),
        false,
        "status 200, body sha256 differs",
    );

    // The source address and Host header reach the server.
    let mut from = with_http(http(site, "/"), |_, h, _, _, _| {
        *h = Some("backend.test".into())
    });
    from.source = Some(ip(SOURCE));
    assert!(lab.check(&from).ok);
    let log = std::fs::read_to_string(lab.dir.join("access.log")).expect("access log");
    assert!(
        log.lines()
            .any(|l| l == format!("{SOURCE} / 200 backend.test")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l == format!("{SERVER} / 200 {SERVER}:8080")),
        "{log}"
    );

    // HTTPS: a self-signed certificate passes without verification and
    // fails with it (it is in no CA store).
    let tls = |verify: bool, path: &str| {
        with_http(http(at(SERVER, 8443), path), |t, _, _, c, _| {
            *t = Some(TlsOptions {
                server_name: Some("backend.test".into()),
                verify,
            });
            *c = Some("hello".into());
        })
    };
    assert_result(
        &lab.check(&tls(false, "/")),
        true,
        "status 200, body matches",
    );
    assert_result(&lab.check(&tls(false, "/down")), false, "status 503");
    let verified = lab.check(&tls(true, "/"));
    assert!(!verified.ok);
    assert!(
        verified.reason.starts_with("tls: invalid peer certificate"),
        "{verified:?}"
    );
    // Plain HTTP to the TLS port: nginx answers 400.
    assert_result(
        &lab.check(&http(at(SERVER, 8443), "/")),
        false,
        "status 400",
    );
    // TLS to the plain port: the handshake fails.
    let wrong = with_http(http(site, "/"), |t, _, _, _, _| {
        *t = Some(TlsOptions {
            server_name: None,
            verify: false,
        })
    });
    let r = lab.check(&wrong);
    assert!(!r.ok && r.reason.starts_with("tls: "), "{r:?}");

    // Every probe closed with RST: neither nginx nor the checker (both in
    // this namespace) holds a connection in TIME_WAIT.
    assert_eq!(lab.time_wait(), "", "sockets left in TIME_WAIT");
}

/// How a [`KeepAliveServer`] connection ended after the response.
#[derive(Debug, PartialEq, Eq)]
enum ClientClose {
    Reset,
    Fin,
    Nothing,
}

/// A backend that answers each connection's request with `response` and
/// then never closes: it waits (up to 5 s) for the client to, recording
/// the request and how the connection ended.
struct KeepAliveServer {
    seen: Arc<Mutex<Vec<(String, ClientClose)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAliveServer {
    fn start(lab: &Lab, port: u16, response: &'static [u8], connections: usize) -> Self {
        let listener = lab
            .ns
            .run(|| TcpListener::bind(at(SERVER, port)))
            .expect("entering the namespace")
            .expect("TCP bind");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            let _ = listener.set_nonblocking(true);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut accepted = 0;
            while accepted < connections && Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                accepted += 1;
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let request = read_head(&mut conn);
                let _ = conn.write_all(response);
                let mut byte = [0u8; 1];
                let end = match std::io::Read::read(&mut conn, &mut byte) {
                    Ok(0) => ClientClose::Fin,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => ClientClose::Reset,
                    _ => ClientClose::Nothing,
                };
                record.lock().unwrap().push((request, end));
            }
        });
        KeepAliveServer {
            seen,
            thread: Some(thread),
        }
    }

    /// The requests and connection ends, once all connections are done.
    fn finish(mut self) -> Vec<(String, ClientClose)> {
        if let Some(t) = self.thread.take() {
            t.join().expect("the server thread");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Reads up to the blank line ending a request head (bounded).
fn read_head(conn: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match std::io::Read::read(conn, &mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn framed_responses_end_the_check_with_rst_without_waiting_for_close() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::new();
    let length: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nup\n";
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nup\n\r\n0\r\n\r\n";
    for (port, response) in [(8101, length), (8102, chunked)] {
        let server = KeepAliveServer::start(&lab, port, response, 2);
        // The server never closes: a check that waited for its FIN would
        // end in the timeout instead.
        let mut status_only = http(at(SERVER, port), "/health");
        status_only.timeout = Duration::from_secs(3);
        assert_result(&lab.check(&status_only), true, "status 200");
        let body = with_http(status_only, |_, _, _, c, _| *c = Some("up".into()));
        assert_result(&lab.check(&body), true, "status 200, body matches");
        let seen = server.finish();
        assert_eq!(seen.len(), 2);
        for (request, end) in &seen {
            assert!(
                request.starts_with("GET /health HTTP/1.1\r\n"),
                "{request:?}"
            );
            assert!(
                !request.to_ascii_lowercase().contains("connection:"),
                "{request:?}"
            );
            assert_eq!(*end, ClientClose::Reset, "port {port}");
        }
    }
    assert_eq!(lab.time_wait(), "", "sockets left in TIME_WAIT");
}

#[test]
fn lab_server_http_udp_and_kill_then_restart() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let mut lab = Lab::new();
    let port = 9001;
    let server = lab.lab_server(port);
    let web = at(SERVER, port);

    let body = with_http(http(web, "/health"), |_, _, _, c, _| {
        *c = Some(format!("port {port}"))
    });
    assert_result(&lab.check(&body), true, "status 200, body matches");
    let answer = format!("vhost web{port} port {port}\n");
    let digest = with_http(http(web, "/"), |_, _, _, _, d| {
        *d = Some(sha256(answer.as_bytes()))
    });
    assert_result(&lab.check(&digest), true, "status 200, body matches");

    let udp = |expect: Option<&str>| {
        quick(CheckKind::Udp {
            target: web,
            payload: b"are you there".to_vec(),
            expect: expect.map(|e| e.as_bytes().to_vec()),
        })
    };
    let n = answer.len() + "are you there".len();
    assert_result(&lab.check(&udp(None)), true, &format!("reply of {n} bytes"));
    assert_result(
        &lab.check(&udp(Some(&format!("vhost web{port}")))),
        true,
        &format!("reply of {n} bytes"),
    );
    assert_result(
        &lab.check(&udp(Some("vhost web1"))),
        false,
        &format!("reply of {n} bytes does not match"),
    );

    // Checked every 200 ms, fall 3, rise 2.
    let mut spec = tcp(web);
    spec.interval = Duration::from_millis(200);
    spec.timeout = Duration::from_millis(500);
    spec.jitter = 0.0;
    spec.rise = 2;
    spec.fall = 3;
    let mut udp_spec = udp(Some("vhost"));
    udp_spec.interval = spec.interval;
    udp_spec.timeout = spec.timeout;
    udp_spec.jitter = 0.0;
    udp_spec.fall = 3;
    let checker = lab.checker(vec![spec.clone(), udp_spec]);
    let healthy = |c: &Checker| {
        let s = c.status();
        s.iter().all(|t| t.healthy && t.consecutive_ok >= 2)
    };
    wait_until(Duration::from_secs(5), "both checks passing", || {
        healthy(&checker)
    });
    assert!(
        checker.transitions().is_empty(),
        "initially healthy: no transition"
    );

    lab.kill(server);
    let killed = Instant::now();
    let mut down = Vec::new();
    while down.len() < 2 && killed.elapsed() < Duration::from_secs(5) {
        down.extend(checker.recv_timeout(Duration::from_millis(50)));
    }
    let took = killed.elapsed();
    down.sort_by_key(|t| t.id);
    assert_eq!(down.len(), 2, "{down:?}");
    assert!(!down[0].healthy && !down[1].healthy);
    assert_eq!(down[0].reason, "connect refused (3 consecutive failures)");
    assert_eq!(down[1].reason, "port unreachable (3 consecutive failures)");
    // fall × interval, plus one interval for where in its period the kill
    // fell, plus slack for a loaded machine.
    assert!(
        took <= Duration::from_millis(3 * 200 + 200 + 400),
        "{took:?}"
    );
    // At least two intervals between the first and the third failure
    // (a check may start up to 5 ms early, batched with others).
    assert!(took >= Duration::from_millis(2 * 200 - 20), "{took:?}");
    let status = checker.status();
    assert!(status.iter().all(|s| !s.healthy && s.consecutive_fail >= 3));

    let restarted = Instant::now();
    lab.lab_server(port);
    let mut up = Vec::new();
    while up.len() < 2 && restarted.elapsed() < Duration::from_secs(5) {
        up.extend(checker.recv_timeout(Duration::from_millis(50)));
    }
    up.sort_by_key(|t| t.id);
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up[0].healthy && up[1].healthy);
    assert_eq!(up[0].reason, "connected (2 consecutive successes)");
    let status = checker.status();
    assert!(status.iter().all(|s| s.healthy));
    // At least 2 passing, 3 failing, 2 passing again.
    assert!(status[0].checks >= 7, "{status:?}");
    checker.shutdown();
}

/// A UDP echo and a TCP listener in the namespace that record the
/// address each probe came from.
struct Recorders {
    stop: Arc<AtomicBool>,
    udp_from: Arc<Mutex<Vec<SocketAddr>>>,
    tcp_from: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Recorders {
    fn start(lab: &Lab, port: u16) -> Recorders {
        let (udp, tcp) = lab
            .ns
            .run(|| {
                (
                    UdpSocket::bind(at(SERVER, port)),
                    TcpListener::bind(at(SERVER, port)),
                )
            })
            .expect("entering the namespace");
        let (udp, tcp) = (udp.expect("UDP bind"), tcp.expect("TCP bind"));
        let stop = Arc::new(AtomicBool::new(false));
        let udp_from = Arc::new(Mutex::new(Vec::new()));
        let tcp_from = Arc::new(Mutex::new(Vec::new()));
        let (s, from) = (stop.clone(), udp_from.clone());
        let echo = std::thread::spawn(move || {
            let _ = udp.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    from.lock().unwrap().push(peer);
                    let _ = udp.send_to(&buf[..n], peer);
                }
            }
        });
        let (s, from) = (stop.clone(), tcp_from.clone());
        let accept = std::thread::spawn(move || {
            let _ = tcp.set_nonblocking(true);
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((_, peer)) => from.lock().unwrap().push(peer),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Recorders {
            stop,
            udp_from,
            tcp_from,
            threads: vec![echo, accept],
        }
    }
}

impl Drop for Recorders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn source_address_echo_and_blackhole_timeouts() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::new();
    let port = 9100;
    let rec = Recorders::start(&lab, port);
    let target = at(SERVER, port);

    let echo = |source: Option<&str>, expect: &[u8]| {
        let mut s = quick(CheckKind::Udp {
            target,
            payload: b"ping 1".to_vec(),
            expect: Some(expect.to_vec()),
        });
        s.source = source.map(ip);
        s
    };
    assert_result(
        &lab.check(&echo(Some(SOURCE), b"ping")),
        true,
        "reply of 6 bytes",
    );
    assert_result(&lab.check(&echo(None, b"ping 1")), true, "reply of 6 bytes");
    assert_result(
        &lab.check(&echo(None, b"pong")),
        false,
        "reply of 6 bytes does not match",
    );
    let mut from_source = tcp(target);
    from_source.source = Some(ip(SOURCE));
    assert_result(&lab.check(&from_source), true, "connected");
    // A source address the namespace does not have.
    let mut foreign = tcp(target);
    foreign.source = Some(ip("198.18.77.77"));
    assert_result(&lab.check(&foreign), false, "bind address not available");
    // Nothing on this port: refused / unreachable at once.
    let r = lab.check(&tcp(at(SERVER, port + 1)));
    assert_result(&r, false, "connect refused");
    assert!(r.latency < Duration::from_millis(500));
    let closed = quick(CheckKind::Udp {
        target: at(SERVER, port + 1),
        payload: b"x".to_vec(),
        expect: None,
    });
    assert_result(&lab.check(&closed), false, "port unreachable");

    let wait_recorded = |v: &Arc<Mutex<Vec<SocketAddr>>>, n: usize| {
        wait_until(Duration::from_secs(2), "the server to record", || {
            v.lock().unwrap().len() >= n
        })
    };
    wait_recorded(&rec.udp_from, 3);
    wait_recorded(&rec.tcp_from, 1);
    assert_eq!(rec.tcp_from.lock().unwrap()[0].ip(), ip(SOURCE));
    // A checker's probes reuse their sockets (disconnected between
    // checks): every check must still be a connection of its own, from a
    // new port and from the source address.
    let mut repeated = tcp(target);
    repeated.source = Some(ip(SOURCE));
    repeated.interval = Duration::from_millis(20);
    repeated.jitter = 0.0;
    let checker = lab.checker(vec![repeated]);
    wait_recorded(&rec.tcp_from, 13);
    let status = checker.status();
    checker.shutdown();
    assert!(status[0].healthy && status[0].failures == 0, "{status:?}");
    let probes: Vec<SocketAddr> = rec.tcp_from.lock().unwrap().drain(1..).collect();
    assert!(probes.iter().all(|a| a.ip() == ip(SOURCE)), "{probes:?}");
    let mut ports: Vec<u16> = probes.iter().map(|a| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), probes.len(), "a port used twice: {probes:?}");
    let udp_ips: Vec<IpAddr> = rec
        .udp_from
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.ip())
        .collect();
    assert_eq!(udp_ips, vec![ip(SOURCE), ip(SERVER), ip(SERVER)]);

    // 198.18.99.99 is on bh0's link but nobody answers: every kind of
    // probe runs into its timeout.
    let hole = at(BLACKHOLE, 80);
    let timed = |mut s: CheckSpec| {
        s.timeout = Duration::from_millis(300);
        s
    };
    let udp_hole = quick(CheckKind::Udp {
        target: hole,
        payload: b"x".to_vec(),
        expect: None,
    });
    for spec in [timed(tcp(hole)), timed(http(hole, "/")), timed(udp_hole)] {
        let r = lab.check(&spec);
        assert_result(&r, false, "timeout after 300ms");
        assert!(
            r.latency >= Duration::from_millis(300) && r.latency < Duration::from_secs(1),
            "{r:?}"
        );
    }
    // Retries: three attempts, 100 ms apart.
    let mut retried = timed(tcp(hole));
    retried.retries = 2;
    retried.retry_delay = Duration::from_millis(100);
    let started = Instant::now();
    assert_result(
        &lab.check(&retried),
        false,
        "timeout after 300ms (3 attempts)",
    );
    assert!(started.elapsed() >= Duration::from_millis(3 * 300 + 2 * 100));

    // A reload that drops a target ends its running check: the probe's
    // socket closes at once. A target kept keeps its running check, whose
    // result arrives under the new index.
    let slow = |mut s: CheckSpec| {
        s.timeout = Duration::from_millis(1500);
        s.interval = Duration::from_secs(30);
        s.jitter = 0.0;
        s
    };
    let connecting = || lab.tcp_sockets("syn-sent").lines().count();
    let checker = lab.checker(vec![slow(tcp(hole)), slow(http(hole, "/"))]);
    wait_until(Duration::from_secs(1), "both probes connecting", || {
        connecting() == 2
    });
    let mut other = quick(CheckKind::Command {
        argv: vec!["/bin/true".into()],
        env: Vec::new(),
    });
    other.interval = Duration::from_secs(30);
    checker
        .replace(vec![other, slow(http(hole, "/"))])
        .expect("replacing the targets");
    assert_eq!(connecting(), 1, "the dropped probe's socket is closed");
    wait_until(Duration::from_secs(3), "the kept probe's timeout", || {
        checker.status()[1].last.is_some()
    });
    let kept = checker.status()[1].clone();
    assert_eq!(kept.id, 1);
    // The neighbour entry of the hole may have failed by now.
    let reason = kept.last.map(|l| l.reason).unwrap_or_default();
    assert!(
        reason == "timeout after 1.5s" || reason == "connect host unreachable",
        "{reason}"
    );
    assert_eq!(connecting(), 0);
    checker.shutdown();
}

#[test]
fn command_checks_run_in_the_checkers_namespace() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    if !Path::new("/usr/bin/curl").exists() {
        println!("SKIPPED: curl not installed");
        return;
    }
    let mut lab = Lab::new();
    let port = 9200;
    let server = lab.lab_server(port);
    let curl = |url: String| {
        let mut s = quick(CheckKind::Command {
            argv: vec![
                "/usr/bin/curl".into(),
                "-sf".into(),
                "-m".into(),
                "1".into(),
                url,
            ],
            env: Vec::new(),
        });
        s.interval = Duration::from_millis(200);
        s.timeout = Duration::from_secs(2);
        s.jitter = 0.0;
        s.rise = 1;
        s.fall = 2;
        s
    };
    // curl exits 7 when it cannot connect.
    assert_result(
        &lab.check(&curl(format!("http://{SERVER}:{}/", port + 1))),
        false,
        "exit 7",
    );
    let checker = lab.checker(vec![curl(format!("http://{SERVER}:{port}/"))]);
    wait_until(Duration::from_secs(5), "a passing curl check", || {
        checker.status()[0].consecutive_ok >= 2
    });
    lab.kill(server);
    let t = checker
        .recv_timeout(Duration::from_secs(5))
        .expect("a transition after the kill");
    assert!(!t.healthy);
    assert_eq!(t.reason, "exit 7 (2 consecutive failures)");
    checker.shutdown();
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
