//! The checks that need nothing but a TCP connection and plain bytes (TCP
//! connect, HTTP without TLS) as small state machines on one epoll set of
//! the checker thread, instead of one tokio task each.
//!
//! Most of a health check's cost is the kernel's work of one TCP
//! connection; what is left to the checker is per-check bookkeeping, and
//! a tokio task per check spends it on a task allocation, a timer-wheel
//! entry, wakers, and a registration with tokio's epoll that is added and
//! removed again (EPOLL_CTL_DEL) for every connection. Here a probe is an
//! entry in a vector: its socket is added to this module's epoll set once
//! (edge-triggered, readable and writable) and leaves it by being closed,
//! its timeout is an entry in a heap, and the set itself is one file
//! descriptor in tokio's reactor, drained with one `epoll_wait` per
//! wake-up. TLS, UDP and command checks stay tokio tasks
//! ([`super::probe`]); both paths share the socket set-up, the HTTP
//! response reader and the retry rule, so a check's results and reasons
//! do not depend on the path it takes.
//!
//! Owns: the probe sockets (closed with RST when a probe ends or is
//! dropped) and the epoll set. Must not: count results or decide health.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use rustix::event::epoll::{Event, EventFlags};
use socket2::Socket;

use super::probe::{self, HttpPlan, Outcome, Prepared, Response};
use super::{CheckKind, CheckResult, TargetId};
use crate::sys::epoll::AsyncEpoll;

/// Events taken from the set per `epoll_wait`; more are read by calling it
/// again.
const EVENTS: usize = 256;
/// Idle sockets kept for the next probes. A thousand checks a second of
/// under a millisecond each keep a few connections open at a time.
const POOL: usize = 32;
/// `owners` entry of a socket no probe holds.
const NO_PROBE: Token = Token::MAX;

/// A probe's handle: its index in the entries and the entry's generation.
pub(super) type Token = u64;

/// What a probe finished with: the scheduler's slot key and the result.
pub(super) type Finished = (u64, CheckResult);

/// All plain TCP and HTTP probes of the checker thread.
pub(super) struct Probes {
    epoll: AsyncEpoll,
    entries: Vec<Entry>,
    /// Indexes of empty entries.
    free: Vec<u32>,
    /// (deadline, token) of every probe: its timeout or the end of its
    /// retry delay. Kept exact (an ended probe's entry is removed), so the
    /// thread wakes only for a deadline that is due.
    deadlines: BTreeSet<(Instant, Token)>,
    events: Vec<Event>,
    finished: VecDeque<Finished>,
    /// File descriptor → the probe holding that socket (the sockets'
    /// events carry their descriptor, so a pooled socket changes hands
    /// without an EPOLL_CTL_MOD).
    owners: Vec<Token>,
    /// Disconnected sockets, still in the set, for the next probes of the
    /// same family and source address.
    pool: Vec<(PoolKey, Socket)>,
}

/// Sockets are interchangeable within a family and source address.
type PoolKey = (bool, Option<IpAddr>);

#[derive(Default)]
struct Entry {
    /// Bumped when the entry is emptied, so an old token finds nothing.
    generation: u32,
    probe: Option<Probe>,
}

struct Probe {
    /// The scheduler's slot key, handed back with the result.
    key: u64,
    id: TargetId,
    prepared: Arc<Prepared>,
    /// Started so far, the current one included.
    attempts: u32,
    /// Of the current attempt.
    started: Instant,
    /// The current attempt's timeout, or the end of the retry delay.
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    /// Waiting out the retry delay.
    Retry,
    Connecting(Socket),
    /// HTTP: `sent` bytes of the request are out.
    Sending {
        socket: Socket,
        sent: usize,
    },
    /// HTTP: the response so far.
    Reading {
        socket: Socket,
        response: Response,
    },
}

/// Whether this module runs the check (else it is a tokio task).
pub(super) fn handles(prepared: &Prepared) -> bool {
    match (&prepared.spec.kind, &prepared.http) {
        (CheckKind::Tcp { .. }, _) => true,
        (CheckKind::Http { .. }, Some(plan)) => plan.tls.is_none(),
        _ => false,
    }
}

impl Probes {
    /// An empty set. Needs the checker thread's tokio runtime.
    pub fn new() -> io::Result<Probes> {
        Ok(Probes {
            epoll: AsyncEpoll::new()?,
            entries: Vec::new(),
            free: Vec::new(),
            deadlines: BTreeSet::new(),
            events: Vec::with_capacity(EVENTS),
            finished: VecDeque::new(),
            owners: Vec::new(),
            pool: Vec::new(),
        })
    }

    /// Starts a check of `prepared` (which [`handles`] must accept); its
    /// result comes out of [`Probes::next_finished`] with `key`.
    pub fn start(
        &mut self,
        key: u64,
        id: TargetId,
        prepared: Arc<Prepared>,
        now: Instant,
    ) -> Token {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry::default());
                // The checker holds one entry per target: far below 2^32.
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let entry = &mut self.entries[index as usize];
        let token = (u64::from(entry.generation) << 32) | u64::from(index);
        entry.probe = Some(Probe {
            key,
            id,
            prepared,
            attempts: 0,
            started: now,
            deadline: now,
            phase: Phase::Retry,
        });
        self.attempt(token, now);
        token
    }

    /// Drops a running check: its socket closes, no result comes.
    pub fn abort(&mut self, token: Token) {
        if self.probe(token).is_some() {
            self.release(token);
        }
    }

    /// The next result of a check that ended, oldest first.
    pub fn next_finished(&mut self) -> Option<Finished> {
        self.finished.pop_front()
    }

    /// The earliest deadline of a probe.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Ends the attempts whose timeout passed and starts the retries whose
    /// delay did.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(probe) = self.probe(token) else {
                continue;
            };
            if let Phase::Retry = probe.phase {
                self.attempt(token, now);
            } else {
                let timeout = probe.prepared.spec.timeout;
                self.settle(token, Err(format!("timeout after {timeout:?}")), now);
            }
        }
    }

    /// Waits until the set has events (or may have: a spurious wake-up
    /// finds none).
    pub async fn ready(&self) {
        self.epoll.ready().await;
    }

    /// Takes the set's events and moves their probes on. The clock is read
    /// per event, for the latency a probe reports.
    pub fn poll(&mut self) {
        loop {
            if self.epoll.take_ready(&mut self.events).is_err() {
                // EINTR: the next wake-up reads them.
                return;
            }
            let n = self.events.len();
            for i in 0..n {
                let Event { flags, data } = self.events[i];
                let owner = usize::try_from(data.u64())
                    .ok()
                    .and_then(|fd| self.owners.get(fd));
                if let Some(&token) = owner {
                    self.advance(token, flags, Instant::now());
                }
            }
            if n < EVENTS {
                return;
            }
        }
    }

    fn probe(&mut self, token: Token) -> Option<&mut Probe> {
        let entry = self
            .entries
            .get_mut((token & u64::from(u32::MAX)) as usize)?;
        if u64::from(entry.generation) != token >> 32 {
            return None;
        }
        entry.probe.as_mut()
    }

    /// Empties the token's entry; its socket (if any) closes.
    fn release(&mut self, token: Token) -> Option<Probe> {
        let index = (token & u64::from(u32::MAX)) as u32;
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        let probe = entry.probe.take()?;
        self.deadlines.remove(&(probe.deadline, token));
        Some(probe)
    }

    /// Moves the probe's deadline to `at`.
    fn set_deadline(&mut self, token: Token, at: Instant) {
        let Some(probe) = self.probe(token) else {
            return;
        };
        let old = std::mem::replace(&mut probe.deadline, at);
        self.deadlines.remove(&(old, token));
        self.deadlines.insert((at, token));
    }

    /// Starts the next attempt: a new connection.
    fn attempt(&mut self, token: Token, now: Instant) {
        let Some(probe) = self.probe(token) else {
            return;
        };
        probe.attempts += 1;
        probe.started = now;
        let deadline = now + probe.prepared.spec.timeout;
        let target = probe.prepared.spec.kind.target();
        let source = probe.prepared.spec.source;
        let Some(target) = target else {
            self.settle(token, Err("internal: no target".into()), now);
            return;
        };
        let socket = match self.connect(target, source) {
            Ok(socket) => socket,
            Err(reason) => return self.settle(token, Err(reason), now),
        };
        let fd = usize::try_from(socket.as_raw_fd()).unwrap_or(usize::MAX);
        if let Some(owner) = self.owners.get_mut(fd) {
            *owner = token;
        } else if fd < i32::MAX as usize {
            self.owners.resize(fd, NO_PROBE);
            self.owners.push(token);
        }
        if let Some(probe) = self.probe(token) {
            probe.phase = Phase::Connecting(socket);
        }
        self.set_deadline(token, deadline);
    }

    /// A socket whose connect to `target` has started, in the set: a
    /// pooled one if there is one, else a new one.
    fn connect(&mut self, target: SocketAddr, source: Option<IpAddr>) -> Result<Socket, String> {
        let key = (target.is_ipv6(), source);
        if let Some(i) = self.pool.iter().position(|(k, _)| *k == key) {
            let (_, socket) = self.pool.swap_remove(i);
            probe::start_connect(&socket, target)?;
            return Ok(socket);
        }
        let socket = probe::new_socket(target, source)?;
        probe::start_connect(&socket, target)?;
        // Edge-triggered: each change of readiness is reported once. The
        // socket stays in the set while pooled and leaves it when closed.
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        let fd = u64::try_from(socket.as_raw_fd()).unwrap_or(u64::MAX);
        self.epoll
            .add(&socket, fd, flags)
            .map_err(|e| probe::io_reason("epoll", &e))?;
        Ok(socket)
    }

    /// Keeps the socket of a connection that ended cleanly for the next
    /// probe, or closes it (RST) when the pool is full.
    ///
    /// `connect(AF_UNSPEC)` is the kernel's disconnect: it sends the RST a
    /// zero-linger close would, purges the queues, releases the local port
    /// and leaves the socket unconnected, so the next `connect` starts a
    /// new connection from a new port, the same SYN on the wire as from a
    /// new socket. Reading SO_ERROR then clears the ECONNRESET the
    /// disconnect leaves behind, which would otherwise be reported as the
    /// next connect's error. A reused socket saves its probe the socket,
    /// setsockopt, EPOLL_CTL_ADD and close calls and the kernel the socket's
    /// allocation and release.
    fn recycle(&mut self, socket: Socket, key: PoolKey) {
        if self.pool.len() >= POOL {
            return;
        }
        if rustix::net::connect_unspec(&socket).is_err() || socket.take_error().is_err() {
            return;
        }
        if let Some(owner) = usize::try_from(socket.as_raw_fd())
            .ok()
            .and_then(|fd| self.owners.get_mut(fd))
        {
            *owner = NO_PROBE;
        }
        self.pool.push((key, socket));
    }

    /// Moves a probe on after its socket reported `flags`.
    fn advance(&mut self, token: Token, flags: EventFlags, now: Instant) {
        let Some(probe) = self.probe(token) else {
            return;
        };
        let prepared = probe.prepared.clone();
        let phase = std::mem::replace(&mut probe.phase, Phase::Retry);
        match step(phase, flags, prepared.http.as_ref(), &prepared) {
            Step::Wait(phase) => {
                if let Some(probe) = self.probe(token) {
                    probe.phase = phase;
                }
            }
            Step::Done(outcome, reusable) => {
                if let (Some(socket), Some(target)) = (reusable, prepared.spec.kind.target()) {
                    self.recycle(socket, (target.is_ipv6(), prepared.spec.source));
                }
                self.settle(token, outcome, now);
            }
        }
    }

    /// An attempt ended with `outcome`: the check ends, or waits for its
    /// next attempt.
    fn settle(&mut self, token: Token, outcome: Outcome, now: Instant) {
        let Some(probe) = self.probe(token) else {
            return;
        };
        // Closes the attempt's socket (with RST) now, not at the retry.
        probe.phase = Phase::Retry;
        let spec = &probe.prepared.spec;
        match probe::settle(outcome, probe.attempts, spec.retries) {
            Some((ok, reason)) => {
                let started = probe.started;
                if let Some(probe) = self.release(token) {
                    let result = CheckResult {
                        id: probe.id,
                        ok,
                        reason,
                        latency: now.saturating_duration_since(started),
                        at: now,
                    };
                    self.finished.push_back((probe.key, result));
                }
            }
            None => {
                let at = now + spec.retry_delay;
                self.set_deadline(token, at);
            }
        }
    }
}

/// Where an event leaves a probe.
enum Step {
    /// In this phase until the next event.
    Wait(Phase),
    /// The attempt's outcome, with its socket if the connection ended
    /// cleanly (it may serve the next probe).
    Done(Outcome, Option<Socket>),
}

/// One probe's step on an event.
fn step(phase: Phase, flags: EventFlags, plan: Option<&HttpPlan>, prepared: &Prepared) -> Step {
    let failed = |op: &str, e: &io::Error| Step::Done(Err(probe::io_reason(op, e)), None);
    let mut phase = phase;
    loop {
        phase = match phase {
            Phase::Retry => return Step::Wait(Phase::Retry),
            Phase::Connecting(socket) => {
                if flags.intersects(EventFlags::ERR | EventFlags::HUP) {
                    let reason = probe::connect_failure(socket.take_error());
                    return Step::Done(Err(reason), None);
                }
                if !flags.contains(EventFlags::OUT) {
                    return Step::Wait(Phase::Connecting(socket));
                }
                match plan {
                    // A TCP check: connected is healthy.
                    None => return Step::Done(Ok("connected".into()), Some(socket)),
                    Some(_) => Phase::Sending { socket, sent: 0 },
                }
            }
            Phase::Sending { socket, mut sent } => {
                let Some(plan) = plan else {
                    return Step::Done(Err("internal: no HTTP plan".into()), None);
                };
                while sent < plan.request.len() {
                    match socket.send(&plan.request[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Step::Wait(Phase::Sending { socket, sent })
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return failed("send", &e),
                    }
                }
                Phase::Reading {
                    socket,
                    response: Response::new(),
                }
            }
            Phase::Reading {
                socket,
                mut response,
            } => {
                let Some(plan) = plan else {
                    return Step::Done(Err("internal: no HTTP plan".into()), None);
                };
                // Edge-triggered: read until the socket has nothing more.
                loop {
                    match read_into(&socket, response.buf()) {
                        Ok(n) => {
                            if let Some(outcome) = response.advance(n, &prepared.spec, plan) {
                                return Step::Done(outcome, Some(socket));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Step::Wait(Phase::Reading { socket, response })
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return failed("recv", &e),
                    }
                }
            }
        };
    }
}

/// Appends what `socket` has (up to `buf`'s spare room) to `buf`.
fn read_into(socket: &Socket, buf: &mut Vec<u8>) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(buf.capacity().max(len + 1), 0);
    let mut reader: &Socket = socket;
    let read = reader.read(&mut buf[len..]);
    buf.truncate(len + *read.as_ref().unwrap_or(&0));
    read
}

/// Runs one check of `prepared` (which [`handles`] must accept) on a set of
/// its own: [`super::check_once`]'s way to the same code the checker
/// thread runs.
pub(super) async fn run_one(prepared: Arc<Prepared>) -> io::Result<CheckResult> {
    let mut probes = Probes::new()?;
    probes.start(0, 0, prepared, Instant::now());
    loop {
        if let Some((_, result)) = probes.next_finished() {
            return Ok(result);
        }
        let wake = probes.next_deadline();
        tokio::select! {
            () = probes.ready() => probes.poll(),
            () = super::runner::sleep_until(wake) => probes.expire(Instant::now()),
        }
    }
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.entries.iter().filter(|e| e.probe.is_some()).count();
        f.debug_struct("Probes").field("running", &running).finish()
    }
}
