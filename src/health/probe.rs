//! One check of one backend, with kernel sockets or a child process: TCP
//! connect, HTTP(S) GET, UDP request/reply, command. Each attempt honours
//! the spec's timeout and source address; a check makes up to
//! `1 + retries` attempts and reports the last one.
//!
//! HTTPS, UDP and command checks run here as tokio tasks; TCP and plain
//! HTTP checks run on the checker thread's epoll set (`super::epoll`) and
//! share from here the socket set-up (`new_socket`, `start_connect`),
//! the sans-IO HTTP `Response` reader and the retry rule (`settle`).
//!
//! Owns: the probe sockets (closed with RST once the answer is in, so a
//! thousand checks a second leave no TIME_WAIT behind on either side) and
//! the command's process group (killed on timeout and when the check is
//! dropped). Must not: count successes or decide health ([`super::state`]).
//! Nothing read from the network reaches an `unwrap`.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use super::epoll;
use super::http::{self, ChunkError, Chunked, Framing};
use super::tls::{self, TlsConfigs};
use super::{CheckKind, CheckResult, CheckSpec, TargetId, MAX_BODY, MAX_HEAD};

/// Largest UDP payload a check sends (IPv4's limit).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// The first read of a response: room for a health endpoint's usual head
/// and short body (nginx's 200 is ~250 bytes) while staying below malloc's
/// large-chunk size (1 KiB), whose allocation would first consolidate the
/// allocator's free lists on every check.
const FIRST_READ: usize = 896;
/// How long a killed command gets to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// What an attempt found: `Ok(reason)` healthy, `Err(reason)` not.
pub(super) type Outcome = Result<String, String>;

/// A check ready to run: the spec and what can be computed once (the
/// HTTP request bytes, the TLS connector and server name).
#[derive(Debug)]
pub(super) struct Prepared {
    pub spec: CheckSpec,
    pub http: Option<HttpPlan>,
}

#[derive(Debug)]
pub(super) struct HttpPlan {
    pub request: Vec<u8>,
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub needs_body: bool,
}

impl Prepared {
    pub fn new(spec: CheckSpec, tls: &TlsConfigs) -> io::Result<Prepared> {
        let http = match &spec.kind {
            CheckKind::Http {
                target,
                tls: options,
                host,
                path,
                body_contains,
                body_sha256,
                ..
            } => {
                let header = host
                    .clone()
                    .unwrap_or_else(|| http::default_host(*target, options.is_some()));
                let tls = match options {
                    Some(o) => {
                        let connector = tls.config(o).map_err(io::Error::other)?;
                        Some((connector, tls::server_name(o, host.as_deref(), *target)))
                    }
                    None => None,
                };
                Some(HttpPlan {
                    request: http::request(path, &header),
                    tls,
                    needs_body: body_contains.is_some() || body_sha256.is_some(),
                })
            }
            _ => None,
        };
        Ok(Prepared { spec, http })
    }
}

/// Runs one check of `spec` on a current-thread runtime of its own and
/// returns its result (for the CLI and tests; the [`super::Checker`]
/// runs checks on its own thread, the same way: TCP and plain HTTP checks
/// on an epoll set of `super::epoll`, the others as tokio tasks). Blocks
/// for up to `(1 + retries) × (timeout + retry_delay)`.
pub fn check_once(spec: &CheckSpec) -> io::Result<CheckResult> {
    spec.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let prepared = Arc::new(Prepared::new(spec.clone(), &TlsConfigs::default())?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The path the checker thread would take, so what is tested here is
    // what runs there.
    if epoll::handles(&prepared) {
        return runtime.block_on(epoll::run_one(prepared));
    }
    Ok(runtime.block_on(run(&prepared, 0)))
}

/// One check: attempts with retries; the result is the last attempt's.
pub(super) async fn run(prepared: &Prepared, id: TargetId) -> CheckResult {
    let spec = &prepared.spec;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let started = Instant::now();
        let outcome = attempt(prepared).await;
        let at = Instant::now();
        let Some((ok, reason)) = settle(outcome, attempts, spec.retries) else {
            tokio::time::sleep(spec.retry_delay).await;
            continue;
        };
        return CheckResult {
            id,
            ok,
            reason,
            latency: at.saturating_duration_since(started),
            at,
        };
    }
}

/// What the outcome of attempt number `attempts` (from 1) means for the
/// check: its verdict and reason, or None when another attempt follows.
pub(super) fn settle(outcome: Outcome, attempts: u32, retries: u32) -> Option<(bool, String)> {
    match outcome {
        Ok(reason) => Some((true, reason)),
        Err(_) if attempts <= retries => None,
        Err(reason) if attempts == 1 => Some((false, reason)),
        Err(reason) => Some((false, format!("{reason} ({attempts} attempts)"))),
    }
}

async fn attempt(p: &Prepared) -> Outcome {
    let spec = &p.spec;
    match (&spec.kind, &p.http) {
        (
            CheckKind::Http { target, .. },
            Some(
                plan @ HttpPlan {
                    tls: Some((connector, name)),
                    ..
                },
            ),
        ) => {
            // Boxed: a TLS session is kilobytes, which would otherwise be
            // part of (and copied with) every check's task.
            let check = Box::pin(https(*target, spec, plan, connector, name));
            timed(spec.timeout, check).await
        }
        (
            CheckKind::Udp {
                target,
                payload,
                expect,
            },
            _,
        ) => {
            let probe = udp(*target, spec.source, payload, expect.as_deref());
            timed(spec.timeout, probe).await
        }
        // Boxed: the process handles would otherwise size every task.
        (CheckKind::Command { argv, env }, _) => Box::pin(command(argv, env, spec.timeout)).await,
        // TCP and plain HTTP checks run on the epoll set.
        (kind, _) => Err(format!("internal: a {} check is not a task", kind.name())),
    }
}

async fn timed(timeout: Duration, probe: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout(timeout, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("timeout after {timeout:?}")),
    }
}

/// "connect refused", "recv host unreachable", ...
pub(super) fn io_reason(op: &str, e: &io::Error) -> String {
    use io::ErrorKind as K;
    let what = match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset => "reset",
        K::ConnectionAborted => "aborted",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::TimedOut => "timed out",
        K::PermissionDenied => "not permitted",
        K::UnexpectedEof => "closed early",
        _ => return format!("{op}: {e}"),
    };
    format!("{op} {what}")
}

/// A connected TCP stream from `source` (if any) that closes with RST.
async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = open(target, source)?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))
        .map_err(|e| io_reason("socket", &e))?;
    let ready = stream
        .ready(Interest::WRITABLE | Interest::ERROR)
        .await
        .map_err(|e| io_reason("connect", &e))?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(connect_failure(stream.take_error()));
    }
    Ok(stream)
}

/// A non-blocking TCP socket from `source` (if any) whose connect to
/// `target` has started, and that closes with RST.
///
/// Kept to the system calls a probe needs: socket (non-blocking and
/// close-on-exec in one call), setsockopt for the zero linger (before the
/// connect, so the RST close is set whatever happens next), the optional
/// bind, and connect. No getsockopt(SO_ERROR) after a connect that
/// worked: a connecting socket polls writable only once the handshake is
/// done and reports a failed connect with EPOLLERR/EPOLLHUP, so the error
/// is read only then.
pub(super) fn open(target: SocketAddr, source: Option<IpAddr>) -> Result<Socket, String> {
    let socket = new_socket(target, source)?;
    start_connect(&socket, target)?;
    Ok(socket)
}

/// A non-blocking TCP socket for `target`'s family, bound to `source` if
/// given, that closes with RST.
pub(super) fn new_socket(target: SocketAddr, source: Option<IpAddr>) -> Result<Socket, String> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(|e| io_reason("socket", &e))?;
    // Close with RST: no TIME_WAIT on either side for a probe connection.
    socket
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| io_reason("socket", &e))?;
    if let Some(source) = source {
        // SO_REUSEADDR: a port of an earlier probe still in TIME_WAIT (if
        // the backend closed first) may be bound again.
        socket
            .set_reuse_address(true)
            .map_err(|e| io_reason("socket", &e))?;
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| io_reason("bind", &e))?;
    }
    Ok(socket)
}

/// Starts a non-blocking connect of `socket` to `target`.
pub(super) fn start_connect(socket: &Socket, target: SocketAddr) -> Result<(), String> {
    match socket.connect(&target.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(io_reason("connect", &e)),
    }
}

/// Why a connect that polled an error or a hang-up failed, from the
/// socket's pending error (`take_error()` of the socket or stream).
pub(super) fn connect_failure(pending: io::Result<Option<io::Error>>) -> String {
    match pending {
        Ok(Some(e)) | Err(e) => io_reason("connect", &e),
        Ok(None) => "connect closed".into(),
    }
}

async fn udp(
    target: SocketAddr,
    source: Option<IpAddr>,
    payload: &[u8],
    expect: Option<&[u8]>,
) -> Outcome {
    let local = source.unwrap_or(match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .map_err(|e| io_reason("bind", &e))?;
    // Connected: only the target's replies are received, and an ICMP port
    // unreachable comes back as ECONNREFUSED.
    socket
        .connect(target)
        .await
        .map_err(|e| io_reason("connect", &e))?;
    socket
        .send(payload)
        .await
        .map_err(|e| udp_reason("send", &e))?;
    let mut reply = vec![0u8; expect.map_or(0, <[u8]>::len).max(2048)];
    let n = socket
        .recv(&mut reply)
        .await
        .map_err(|e| udp_reason("recv", &e))?;
    match expect {
        Some(prefix) if !reply[..n].starts_with(prefix) => {
            Err(format!("reply of {n} bytes does not match"))
        }
        _ => Ok(format!("reply of {n} bytes")),
    }
}

fn udp_reason(op: &str, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        return "port unreachable".into();
    }
    io_reason(op, e)
}

/// An HTTPS check: connect, TLS handshake, then the HTTP exchange.
async fn https(
    target: SocketAddr,
    spec: &CheckSpec,
    plan: &HttpPlan,
    connector: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> Outcome {
    let stream = connect(target, spec.source).await?;
    let tls = TlsConnector::from(connector.clone())
        .connect(name.clone(), stream)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    exchange(tls, spec, plan).await
}

/// Sends the request and judges the response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    spec: &CheckSpec,
    plan: &HttpPlan,
) -> Outcome {
    stream
        .write_all(&plan.request)
        .await
        .map_err(|e| io_reason("send", &e))?;
    let mut response = Response::new();
    loop {
        let n = read_more(&mut stream, response.buf()).await?;
        if let Some(outcome) = response.advance(n, spec, plan) {
            return outcome;
        }
    }
}

/// Appends what the stream has to `buf`; 0 at the end of the stream. A
/// TLS peer that closes without close_notify ends the stream too.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, String> {
    match stream.read_buf(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(io_reason("recv", &e)),
    }
}

/// One HTTP response being read and judged, sans-IO: the caller appends
/// what it reads (from a TLS session or a plain socket) to [`Self::buf`]
/// and calls [`Self::advance`] after each read, until an outcome comes
/// back. Reads stop at the end of the framed body: the server may keep
/// the connection open.
pub(super) struct Response {
    buf: Vec<u8>,
    state: ReadState,
}

enum ReadState {
    Head,
    /// `buf` holds the body so far (the head is drained).
    Body {
        status: u16,
        framing: Framing,
    },
    /// `buf` holds undecoded bytes, `body` the decoded body so far.
    Chunked {
        status: u16,
        decoder: Chunked,
        body: Vec<u8>,
    },
}

impl Response {
    pub fn new() -> Response {
        Response {
            buf: Vec::with_capacity(FIRST_READ),
            state: ReadState::Head,
        }
    }

    /// The buffer to read into, with room for at least one more read.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        if self.buf.len() == self.buf.capacity() {
            // Doubles: a large body costs a few reads more, not a copy per
            // read.
            self.buf.reserve(self.buf.capacity().max(FIRST_READ));
        }
        &mut self.buf
    }

    /// After a read of `n` bytes into [`Self::buf`] (0: the stream
    /// ended): the check's outcome once the response decides it.
    pub fn advance(&mut self, n: usize, spec: &CheckSpec, plan: &HttpPlan) -> Option<Outcome> {
        let eof = n == 0;
        if let ReadState::Head = self.state {
            let head = match http::parse_head(&self.buf) {
                Ok(Some(head)) => head,
                Ok(None) if eof => return Some(Err("closed before the response head".into())),
                Ok(None) if self.buf.len() > MAX_HEAD => {
                    return Some(Err(format!("response head over {MAX_HEAD} bytes")))
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(format!("bad response: {e}"))),
            };
            let CheckKind::Http { expect_status, .. } = &spec.kind else {
                return Some(Err("internal: not an HTTP check".into()));
            };
            if !http::status_expected(head.status, expect_status) {
                return Some(Err(format!("status {}", head.status)));
            }
            if !plan.needs_body {
                return Some(Ok(format!("status {}", head.status)));
            }
            self.buf.drain(..head.len);
            self.state = match head.framing {
                Framing::Length(n) if n > MAX_BODY as u64 => return Some(Err(too_long())),
                Framing::Chunked => ReadState::Chunked {
                    status: head.status,
                    decoder: Chunked::new(),
                    body: Vec::new(),
                },
                framing => ReadState::Body {
                    status: head.status,
                    framing,
                },
            };
            // What came with the head may hold the whole body already.
            return self.body(false, spec);
        }
        self.body(eof, spec)
    }

    fn body(&mut self, eof: bool, spec: &CheckSpec) -> Option<Outcome> {
        match &mut self.state {
            ReadState::Head => None,
            &mut ReadState::Body {
                status,
                framing: Framing::Length(n),
            } => {
                // At most MAX_BODY (checked above).
                let n = usize::try_from(n).unwrap_or(MAX_BODY);
                if self.buf.len() >= n {
                    self.buf.truncate(n);
                    Some(judge(status, &self.buf, spec))
                } else if eof {
                    Some(Err("closed inside the body".into()))
                } else {
                    None
                }
            }
            &mut ReadState::Body { status, .. } => {
                if self.buf.len() > MAX_BODY {
                    Some(Err(too_long()))
                } else if eof {
                    Some(judge(status, &self.buf, spec))
                } else {
                    None
                }
            }
            ReadState::Chunked {
                status,
                decoder,
                body,
            } => match decoder.feed(&self.buf, body, MAX_BODY) {
                Ok(true) => Some(judge(*status, body, spec)),
                Ok(false) if eof => Some(Err("closed inside the body".into())),
                Ok(false) => {
                    self.buf.clear();
                    None
                }
                Err(ChunkError::TooLong) => Some(Err(too_long())),
                Err(ChunkError::Http(e)) => Some(Err(format!("bad response: {e}"))),
            },
        }
    }
}

fn too_long() -> String {
    format!("body over {MAX_BODY} bytes")
}

/// Judges a whole body against the check's substring and digest.
fn judge(status: u16, body: &[u8], spec: &CheckSpec) -> Outcome {
    let CheckKind::Http {
        body_contains,
        body_sha256,
        ..
    } = &spec.kind
    else {
        return Err("internal: not an HTTP check".into());
    };
    if let Some(text) = body_contains {
        if !http::contains(body, text.as_bytes()) {
            return Err(format!("status {status}, body lacks {text:?}"));
        }
    }
    if let Some(digest) = body_sha256 {
        let got = ring::digest::digest(&ring::digest::SHA256, body);
        if got.as_ref() != digest {
            return Err(format!("status {status}, body sha256 differs"));
        }
    }
    Ok(format!("status {status}, body matches"))
}

/// Runs `argv` in its own process group; exit 0 is healthy. On timeout the
/// whole group is killed.
async fn command(argv: &[String], env: &[(String, String)], timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = ProcessGroup::of(child.id());
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            group.disarm();
            exit_outcome(status)
        }
        Ok(Err(e)) => Err(format!("wait: {e}")),
        Err(_) => {
            drop(group);
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
            Err(format!("timeout after {timeout:?} (killed)"))
        }
    }
}

fn exit_outcome(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok("exit 0".into()),
        (Some(code), _) => Err(format!("exit {code}")),
        (None, Some(signal)) => Err(format!("killed by signal {signal}")),
        (None, None) => Err(format!("ended: {status}")),
    }
}

/// Kills a command's process group (its pid is the group id) when dropped,
/// unless disarmed after the command ended by itself.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    fn of(pid: Option<u32>) -> ProcessGroup {
        let pid = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        ProcessGroup(pid)
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (already gone) is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_spec(argv: &[&str], timeout: Duration) -> CheckSpec {
        let mut spec = CheckSpec::new(CheckKind::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("VIPGATE_TEST".into(), "yes".into())],
        });
        spec.timeout = timeout;
        spec
    }

    #[test]
    fn command_exit_status_decides() {
        let ok = check_once(&command_spec(
            &["/bin/sh", "-c", "exit 0"],
            Duration::from_secs(5),
        ));
        let ok = ok.unwrap();
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.reason, "exit 0");
        let bad = check_once(&command_spec(
            &["/bin/sh", "-c", "exit 2"],
            Duration::from_secs(5),
        ));
        assert_eq!(bad.unwrap().reason, "exit 2");
        let env = check_once(&command_spec(
            &["/bin/sh", "-c", "test \"$VIPGATE_TEST\" = yes"],
            Duration::from_secs(5),
        ));
        assert!(env.unwrap().ok);
        let missing = check_once(&command_spec(
            &["/nonexistent/check"],
            Duration::from_secs(5),
        ));
        let missing = missing.unwrap();
        assert!(!missing.ok);
        assert!(
            missing.reason.starts_with("cannot run /nonexistent/check"),
            "{missing:?}"
        );
    }

    #[test]
    fn command_timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("vgt-{}-hc-cmd", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        // The shell starts a child in the background and waits: both must
        // be gone after the timeout.
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let r = check_once(&command_spec(
            &["/bin/sh", "-c", &script],
            Duration::from_millis(300),
        ))
        .unwrap();
        assert!(!r.ok);
        assert_eq!(r.reason, "timeout after 300ms (killed)");
        assert!(started.elapsed() < Duration::from_secs(3));
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is killed with the group; it is reaped by init
        // (or this process's subreaper), so it may linger as a zombie.
        let gone = (0..50).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let done = state.map_or(true, |s| s.contains(") Z "));
            if !done {
                std::thread::sleep(Duration::from_millis(20));
            }
            done
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert!(gone, "sleep {pid} survived the check's timeout");
    }

    #[test]
    fn retries_report_the_attempt_count() {
        let mut spec = command_spec(&["/bin/false"], Duration::from_secs(5));
        spec.retries = 2;
        spec.retry_delay = Duration::from_millis(10);
        let r = check_once(&spec).unwrap();
        assert_eq!(r.reason, "exit 1 (3 attempts)");
    }

    /// Feeds `wire` to a [`Response`] in pieces of `piece` bytes, then the
    /// end of the stream if it is still undecided.
    fn read_response(spec: &CheckSpec, wire: &[u8], piece: usize) -> Outcome {
        let prepared = Prepared::new(spec.clone(), &TlsConfigs::default()).unwrap();
        let plan = prepared.http.as_ref().unwrap();
        let mut response = Response::new();
        for chunk in wire.chunks(piece) {
            response.buf().extend_from_slice(chunk);
            if let Some(outcome) = response.advance(chunk.len(), spec, plan) {
                return outcome;
            }
        }
        response
            .advance(0, spec, plan)
            .unwrap_or_else(|| Err("undecided at the end".into()))
    }

    #[test]
    fn the_response_reader_decides_the_same_whatever_the_reads() {
        let target = "198.18.0.1:80".parse().unwrap();
        let plain = CheckSpec::new(CheckKind::http(target, "/"));
        let mut body = plain.clone();
        if let CheckKind::Http { body_contains, .. } = &mut body.kind {
            *body_contains = Some("ok".into());
        }
        let cases: &[(&CheckSpec, &[u8], Outcome)] = &[
            (&plain, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Ok("status 200".into())),
            (&plain, b"HTTP/1.1 503 No\r\n\r\n", Err("status 503".into())),
            (&plain, b"HTTP/1.1 200 OK\r\nContent", Err("closed before the response head".into())),
            (&plain, b"SSH-2.0-OpenSSH\r\n\r\n", Err("bad response: bad status line".into())),
            (&body, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Ok("status 200, body matches".into())),
            (&body, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", Err("closed inside the body".into())),
            (&body, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", Err("status 200, body lacks \"ok\"".into())),
            (&body, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n", Ok("status 200, body matches".into())),
            (&body, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n", Err("closed inside the body".into())),
            (&body, b"HTTP/1.0 200 OK\r\n\r\nit is ok", Ok("status 200, body matches".into())),
            (&body, b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", Err(format!("body over {MAX_BODY} bytes"))),
        ];
        for (spec, wire, expected) in cases {
            for piece in 1..=wire.len() {
                let got = read_response(spec, wire, piece);
                assert_eq!(
                    &got,
                    expected,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
        // A head that never ends is cut off.
        let endless = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'X'; MAX_HEAD + 10]].concat();
        assert_eq!(
            read_response(&plain, &endless, 4096),
            Err(format!("response head over {MAX_HEAD} bytes"))
        );
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut spec = command_spec(&[], Duration::from_secs(1));
        assert_eq!(
            check_once(&spec).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        spec.kind = CheckKind::Tcp {
            target: "198.18.0.1:80".parse().unwrap(),
        };
        spec.source = Some("2001:db8::1".parse().unwrap());
        assert!(check_once(&spec).is_err());
    }
}
