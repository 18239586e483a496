//! The BGP speaker: many peers at once over tokio TCP, each a
//! [`Session`] with its [`AdjRibOut`], driven by one shared
//! [`DesiredRoutes`] table.
//!
//! Owns: the speaker's thread and its single-threaded tokio runtime, one
//! task per peer, the accept loop, reconnects (the session's IdleHold
//! backoff and ConnectRetry timer; a peer's task never waits on another's),
//! connection collisions (RFC 4271 6.8) between an accepted and an outgoing
//! connection, each peer's [`AdjRibIn`], and the status the daemon and CLI
//! read ([`SpeakerHandle::peers`], [`SpeakerHandle::adj_rib_out`],
//! [`SpeakerHandle::adj_rib_in`], with [`SpeakerHandle::wait_rib_in`] to
//! wake up when a peer's Adj-RIB-In changes).
//!
//! Why a thread of its own: the daemon's other parts need not be async to
//! use the speaker; [`SpeakerHandle`] is a plain, cloneable, blocking-free
//! handle (announce and withdraw only edit a `watch` value). The runtime
//! is current-thread: BGP for a few peers is far below one core, and one
//! thread keeps each peer's order of events simple.
//!
//! A peer task holds a primary session (configured active or passive) and,
//! only while a collision is being resolved, a secondary passive session on
//! a connection the peer opened. Once both have the peer's OPEN,
//! [`collision_winner`] picks one; an Established session always wins
//! over a new connection. A secondary that wins becomes the primary; when
//! it later goes down, a fresh primary with the peer's configuration
//! starts after the IdleHold delay.
//!
//! Must not touch: the wire format (in `wire`), the FSM (in `session`),
//! announcement policy (the daemon decides what is in [`DesiredRoutes`]),
//! the decision process over received routes (in `rib_in`, for the caller).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::rib::{AdjRibOut, DesiredRoutes, DrainPolicy, NextHopSelf, PeerExport, RouteAttrs};
use crate::rib_in::{AdjRibIn, ReceivedRoute};
use crate::session::{
    collision_winner, DownReason, Event, Initiator, Session, SessionConfig, SessionEvent, State,
    Transmit,
};
use crate::transport::{self, SocketSecurity};
use crate::wire::{Family, Prefix, UpdateRepr};

/// How long [`SpeakerHandle::shutdown`] waits for withdrawals and Cease
/// to be written.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer task waits for its last bytes to reach the socket.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest reconnect delay (the IdleHold backoff doubles up to this).
const MAX_IDLE_HOLD: Duration = Duration::from_secs(120);

/// The speaker's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to accept connections from peers (usually port 179); None:
    /// active sessions only.
    pub listen: Option<SocketAddr>,
    /// The peers.
    pub peers: Vec<PeerConfig>,
    /// What a drain adds besides GRACEFUL_SHUTDOWN.
    pub drain: DrainPolicy,
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's BGP port (179).
    pub port: u16,
    /// The peer's AS (equal to ours: iBGP).
    pub remote_as: u32,
    /// Source address of our connections.
    pub local_address: Option<IpAddr>,
    /// Proposed hold time, seconds: 0 or >= 3.
    pub hold_time: u16,
    /// Only accept connections from the peer, never connect.
    pub passive: bool,
    /// TCP MD5 password (RFC 2385), at most 80 bytes.
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): TTL 255 both ways.
    pub ttl_security: bool,
    /// Families to offer and announce.
    pub families: Vec<Family>,
    /// IPv4 next hop for next-hop-self routes; needed on an IPv6 session.
    pub next_hop_ipv4: Option<Ipv4Addr>,
    /// IPv6 next hop for next-hop-self routes; needed on an IPv4 session.
    pub next_hop_ipv6: Option<Ipv6Addr>,
    /// ConnectRetry time, also the connect timeout.
    pub connect_retry: Duration,
    /// First reconnect delay after an error (doubles up to 120 s).
    pub idle_hold: Duration,
    /// Attributes added to every route this peer is sent.
    pub export: PeerExport,
}

impl PeerConfig {
    /// Defaults: port 179, hold 90 s, active, no MD5, no GTSM, IPv4 and
    /// IPv6 unicast, connect retry 10 s (RFC 4271 suggests 120 s; a
    /// gateway wants its routes back sooner), reconnect after 5 s.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        PeerConfig {
            address,
            port: 179,
            remote_as,
            local_address: None,
            hold_time: 90,
            passive: false,
            md5_password: None,
            ttl_security: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            next_hop_ipv4: None,
            next_hop_ipv6: None,
            connect_retry: Duration::from_secs(10),
            idle_hold: Duration::from_secs(5),
            export: PeerExport::default(),
        }
    }

    fn security(&self) -> SocketSecurity {
        SocketSecurity {
            md5_key: self.md5_password.as_ref().map(|p| p.as_bytes().to_vec()),
            ttl_security: self.ttl_security,
        }
    }

    fn session_config(&self, local_as: u32, router_id: Ipv4Addr, passive: bool) -> SessionConfig {
        SessionConfig {
            local_as,
            peer_as: self.remote_as,
            bgp_id: router_id,
            hold_time: self.hold_time,
            connect_retry: self.connect_retry,
            idle_hold: self.idle_hold,
            max_idle_hold: MAX_IDLE_HOLD.max(self.idle_hold),
            passive,
            families: self.families.clone(),
        }
    }
}

/// One peer as the CLI shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's address.
    pub address: IpAddr,
    /// FSM state of the peer's main session.
    pub state: State,
    /// Time since Established.
    pub uptime: Option<Duration>,
    /// Prefixes in the peer's Adj-RIB-Out.
    pub prefixes_sent: usize,
    /// Prefixes the peer announced to us (and did not withdraw).
    pub prefixes_received: usize,
    /// Why the session last went down or failed to connect.
    pub last_error: Option<String>,
}

/// Why the speaker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// A peer's configuration is unusable.
    #[error("peer {0}: {1}")]
    InvalidPeer(IpAddr, &'static str),
    /// The listening socket could not be set up.
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, io::Error),
    /// The runtime or its thread could not be created.
    #[error("speaker runtime: {0}")]
    Runtime(io::Error),
}

/// A running speaker; dropping it shuts it down (withdraw, Cease).
#[derive(Debug)]
pub struct Speaker {
    handle: SpeakerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The application's side of a [`Speaker`]: cloneable, usable from any
/// thread, never blocks on the network.
#[derive(Clone, Debug)]
pub struct SpeakerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    desired: watch::Sender<DesiredRoutes>,
    stop: watch::Sender<bool>,
    peers: Mutex<BTreeMap<IpAddr, PeerView>>,
    /// Bumped (under this lock) each time a peer's published Adj-RIB-In
    /// changes; `rib_in_cv` wakes [`SpeakerHandle::wait_rib_in`].
    rib_in_generation: Mutex<u64>,
    rib_in_cv: Condvar,
    done: Mutex<bool>,
    done_cv: Condvar,
}

#[derive(Clone, Debug)]
struct PeerView {
    status: PeerStatus,
    rib: Vec<(Prefix, RouteAttrs)>,
    /// The peer's Adj-RIB-In as last published.
    rib_in: Vec<ReceivedRoute>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves plain data; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Speaker {
    /// Check the configuration, bind the listener and start the speaker's
    /// thread with one task per peer.
    pub fn new(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        validate(&config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SpeakerError::Runtime)?;
        let listener = match config.listen {
            Some(addr) => {
                let _guard = runtime.enter();
                let peers: Vec<(IpAddr, SocketSecurity)> = config
                    .peers
                    .iter()
                    .map(|p| (p.address, p.security()))
                    .collect();
                Some(transport::listen(addr, &peers).map_err(|e| SpeakerError::Listen(addr, e))?)
            }
            None => None,
        };
        let shared = Arc::new(Shared::new(&config));
        let handle = SpeakerHandle {
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("vipgate-bgp".into())
            .spawn(move || {
                runtime.block_on(run(config, listener, shared.clone()));
                *lock(&shared.done) = true;
                shared.done_cv.notify_all();
            })
            .map_err(SpeakerError::Runtime)?;
        Ok(Speaker {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for the application.
    pub fn handle(&self) -> SpeakerHandle {
        self.handle.clone()
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if self.handle.shutdown() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Shared {
    fn new(config: &SpeakerConfig) -> Self {
        let peers = config
            .peers
            .iter()
            .map(|p| (p.address, PeerView::idle(p.address)))
            .collect();
        Shared {
            desired: watch::Sender::new(DesiredRoutes::new(config.drain)),
            stop: watch::Sender::new(false),
            peers: Mutex::new(peers),
            rib_in_generation: Mutex::new(0),
            rib_in_cv: Condvar::new(),
            done: Mutex::new(false),
            done_cv: Condvar::new(),
        }
    }
}

impl PeerView {
    fn idle(address: IpAddr) -> Self {
        PeerView {
            status: PeerStatus {
                address,
                state: State::Idle,
                uptime: None,
                prefixes_sent: 0,
                prefixes_received: 0,
                last_error: None,
            },
            rib: vec![],
            rib_in: vec![],
        }
    }
}

impl SpeakerHandle {
    /// Announce `prefix` to every peer (or change its attributes).
    pub fn announce(&self, prefix: Prefix, attrs: RouteAttrs) {
        self.shared
            .desired
            .send_modify(|d| d.announce(prefix, attrs));
    }

    /// Withdraw `prefix` from every peer; false if it was not announced.
    pub fn withdraw(&self, prefix: Prefix) -> bool {
        self.shared
            .desired
            .send_if_modified(|d| d.withdraw(&prefix))
    }

    /// Start or end the drain (RFC 8326) of every route.
    pub fn set_drain(&self, draining: bool) {
        self.shared.desired.send_if_modified(|d| {
            d.is_draining() != draining && {
                d.set_drain(draining);
                true
            }
        });
    }

    /// The routes the application asked for (drain not applied).
    pub fn desired(&self) -> DesiredRoutes {
        self.shared.desired.borrow().clone()
    }

    /// Every peer's status, by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let peers = lock(&self.shared.peers);
        peers.values().map(|v| v.status.clone()).collect()
    }

    /// What was sent to `peer` (or every peer), with resolved next hops.
    pub fn adj_rib_out(&self, peer: Option<IpAddr>) -> Vec<(IpAddr, Prefix, RouteAttrs)> {
        let peers = lock(&self.shared.peers);
        peers
            .iter()
            .filter(|(addr, _)| peer.is_none_or(|p| p == **addr))
            .flat_map(|(addr, v)| v.rib.iter().map(|(p, a)| (*addr, *p, a.clone())))
            .collect()
    }

    /// What `peer` (or every peer) announced to us and did not withdraw,
    /// by peer, then prefix. Empty for a peer whose session is down.
    pub fn adj_rib_in(&self, peer: Option<IpAddr>) -> Vec<ReceivedRoute> {
        let peers = lock(&self.shared.peers);
        peers
            .iter()
            .filter(|(addr, _)| peer.is_none_or(|p| p == **addr))
            .flat_map(|(_, v)| v.rib_in.iter().cloned())
            .collect()
    }

    /// The Adj-RIB-In generation: it grows each time any peer's published
    /// Adj-RIB-In changes (an UPDATE that changed it, a session that went
    /// down with routes).
    pub fn rib_in_generation(&self) -> u64 {
        *lock(&self.shared.rib_in_generation)
    }

    /// Blocks until the Adj-RIB-In generation differs from `seen`, or
    /// `timeout` passes; returns the generation then (equal to `seen` on a
    /// timeout). For a thread that mirrors received routes somewhere.
    pub fn wait_rib_in(&self, seen: u64, timeout: Duration) -> u64 {
        let generation = lock(&self.shared.rib_in_generation);
        let (generation, _) = self
            .shared
            .rib_in_cv
            .wait_timeout_while(generation, timeout, |g| *g == seen)
            .unwrap_or_else(|e| e.into_inner());
        *generation
    }

    /// Withdraw everything, send Cease to every peer, close; returns true
    /// when done, false after [`SHUTDOWN_TIMEOUT`].
    pub fn shutdown(&self) -> bool {
        self.shutdown_within(SHUTDOWN_TIMEOUT)
    }

    /// [`shutdown`](Self::shutdown) with another bound.
    pub fn shutdown_within(&self, timeout: Duration) -> bool {
        self.shared.stop.send_replace(true);
        let done = lock(&self.shared.done);
        let (done, _) = self
            .shared
            .done_cv
            .wait_timeout_while(done, timeout, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

fn validate(config: &SpeakerConfig) -> Result<(), SpeakerError> {
    let mut seen = BTreeSet::new();
    for p in &config.peers {
        let bad = |why| Err(SpeakerError::InvalidPeer(p.address, why));
        if !seen.insert(p.address.to_canonical()) {
            return bad("configured twice");
        }
        if matches!(p.hold_time, 1 | 2) {
            return bad("hold time must be 0 or at least 3 s");
        }
        if p.md5_password.as_ref().is_some_and(|k| k.len() > 80) {
            return bad("MD5 password longer than 80 bytes");
        }
        if p.families.is_empty() {
            return bad("no address family");
        }
        if p.passive && config.listen.is_none() {
            return bad("passive peer but the speaker does not listen");
        }
    }
    Ok(())
}

/// The speaker's thread: peer tasks and the accept loop until every peer
/// task has shut down.
async fn run(config: SpeakerConfig, listener: Option<TcpListener>, shared: Arc<Shared>) {
    let mut inboxes = HashMap::new();
    let mut tasks = JoinSet::new();
    for peer in &config.peers {
        let (tx, rx) = mpsc::unbounded_channel();
        inboxes.insert(peer.address.to_canonical(), tx.clone());
        let task = PeerTask::new(&config, peer.clone(), tx, rx, shared.clone());
        tasks.spawn(task.run());
    }
    let accept = listener.map(|l| tokio::spawn(accept_loop(l, inboxes)));
    while tasks.join_next().await.is_some() {}
    if let Some(a) = accept {
        a.abort();
    }
}

/// Hand each accepted connection to its peer's task; others are closed.
async fn accept_loop(
    listener: TcpListener,
    inboxes: HashMap<IpAddr, mpsc::UnboundedSender<Input>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                if let Some(tx) = inboxes.get(&from.ip().to_canonical()) {
                    let _ = tx.send(Input::Accepted(stream));
                }
            }
            // E.g. out of descriptors: do not spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What reaches a peer task from its helper tasks.
#[derive(Debug)]
enum Input {
    Accepted(TcpStream),
    Connected(u64, io::Result<TcpStream>),
    Read(u64, Vec<u8>),
    Closed(u64),
}

/// What woke a peer task.
enum Wake {
    Input(Input),
    Desired,
    Timer,
    Stop,
}

/// One connection's session and its socket tasks.
#[derive(Debug)]
struct Conn {
    session: Session,
    link: Option<Link>,
    connecting: Option<(u64, AbortHandle)>,
    initiator: Initiator,
    /// A passive session made for an accepted connection (collision).
    derived: bool,
}

#[derive(Debug)]
struct Link {
    id: u64,
    local: SocketAddr,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writer_task: JoinHandle<()>,
    reader: AbortHandle,
}

impl Conn {
    fn new(session: Session, derived: bool) -> Self {
        Conn {
            session,
            link: None,
            connecting: None,
            initiator: Initiator::Local,
            derived,
        }
    }

    fn close_link(&mut self, closing: &mut Vec<JoinHandle<()>>) {
        if let Some((_, task)) = self.connecting.take() {
            task.abort();
        }
        if let Some(link) = self.link.take() {
            // Dropping the sender lets the writer flush, then FIN.
            link.reader.abort();
            closing.push(link.writer_task);
        }
    }
}

struct PeerTask {
    cfg: PeerConfig,
    local_as: u32,
    router_id: Ipv4Addr,
    primary: Conn,
    secondary: Option<Conn>,
    restart_primary_at: Option<Instant>,
    rib: AdjRibOut,
    rib_dirty: bool,
    received: AdjRibIn,
    received_dirty: bool,
    established_at: Option<Instant>,
    last_error: Option<String>,
    next_id: u64,
    closing: Vec<JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
    desired: watch::Receiver<DesiredRoutes>,
    shared: Arc<Shared>,
}

impl PeerTask {
    fn new(
        config: &SpeakerConfig,
        cfg: PeerConfig,
        tx: mpsc::UnboundedSender<Input>,
        rx: mpsc::UnboundedReceiver<Input>,
        shared: Arc<Shared>,
    ) -> Self {
        let session =
            Session::new(cfg.session_config(config.local_as, config.router_id, cfg.passive));
        PeerTask {
            local_as: config.local_as,
            router_id: config.router_id,
            primary: Conn::new(session, false),
            secondary: None,
            restart_primary_at: None,
            rib: AdjRibOut::with_export(cfg.export.clone()),
            rib_dirty: true,
            received: AdjRibIn::new(),
            received_dirty: false,
            established_at: None,
            last_error: None,
            next_id: 0,
            closing: vec![],
            tx,
            rx,
            desired: shared.desired.subscribe(),
            cfg,
            shared,
        }
    }

    async fn run(mut self) {
        let mut stop = self.shared.stop.subscribe();
        self.primary
            .session
            .handle_event(Instant::now(), Event::ManualStart);
        loop {
            self.pump(Instant::now());
            self.publish();
            if *stop.borrow() {
                break;
            }
            let wake = self.wait(&mut stop).await;
            let now = Instant::now();
            match wake {
                Wake::Input(input) => self.on_input(now, input),
                Wake::Desired => self.sync_rib(),
                Wake::Timer => self.on_timeout(now),
                Wake::Stop => break,
            }
        }
        self.shutdown().await;
    }

    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> Wake {
        let deadline = self
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            // The task holds a sender, so the inbox never closes.
            Some(input) = self.rx.recv() => Wake::Input(input),
            Ok(()) = self.desired.changed() => Wake::Desired,
            () = sleep => Wake::Timer,
            _ = stop.changed() => Wake::Stop,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.primary.session.poll_timeout(),
            self.secondary
                .as_ref()
                .and_then(|c| c.session.poll_timeout()),
            self.restart_primary_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.restart_primary_at.is_some_and(|t| t <= now) {
            self.restart_primary_at = None;
            self.primary.session.handle_event(now, Event::ManualStart);
        }
        self.primary.session.handle_timeout(now);
        if let Some(c) = &mut self.secondary {
            c.session.handle_timeout(now);
        }
    }

    // ---- inputs ----

    fn on_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Accepted(stream) => self.accepted(now, stream),
            Input::Connected(id, result) => self.connected(now, id, result),
            Input::Read(id, bytes) => {
                if let Some(c) = self.conn_with_link(id) {
                    c.session.handle_event(now, Event::BytesReceived(&bytes));
                }
            }
            Input::Closed(id) => {
                let mut closing = vec![];
                if let Some(c) = self.conn_with_link(id) {
                    c.close_link(&mut closing);
                    c.session.handle_event(now, Event::TcpFailed);
                }
                self.closing.extend(closing);
            }
        }
    }

    fn accepted(&mut self, now: Instant, stream: TcpStream) {
        if transport::accepted(&stream, &self.cfg.security()).is_err() {
            return;
        }
        let state = self.primary.session.state();
        if matches!(state, State::Connect | State::Active) && self.primary.link.is_none() {
            if let Some((_, task)) = self.primary.connecting.take() {
                task.abort();
            }
            self.attach(Which::Primary, stream, Initiator::Remote);
            self.primary.session.handle_event(now, Event::TcpConnected);
        } else if matches!(state, State::OpenSent | State::OpenConfirm) && self.secondary.is_none()
        {
            let config = self.cfg.session_config(self.local_as, self.router_id, true);
            let mut conn = Conn::new(Session::new(config), true);
            conn.session.handle_event(now, Event::ManualStart);
            self.secondary = Some(conn);
            self.attach(Which::Secondary, stream, Initiator::Remote);
            if let Some(c) = &mut self.secondary {
                c.session.handle_event(now, Event::TcpConnected);
            }
        }
        // Otherwise (Idle, Established, a collision already running) the
        // stream is dropped: RFC 4271 refuses it.
    }

    fn connected(&mut self, now: Instant, id: u64, result: io::Result<TcpStream>) {
        let which = if self.primary.connecting.as_ref().is_some_and(|c| c.0 == id) {
            Which::Primary
        } else if self
            .secondary
            .as_ref()
            .is_some_and(|c| c.connecting.as_ref().is_some_and(|c| c.0 == id))
        {
            Which::Secondary
        } else {
            return; // A connect we gave up on.
        };
        match result {
            Ok(stream) => {
                self.attach(which, stream, Initiator::Local);
                if let Some(c) = self.conn(which) {
                    c.connecting = None;
                    c.session.handle_event(now, Event::TcpConnected);
                }
            }
            Err(e) => {
                self.last_error = Some(format!("connect: {e}"));
                if let Some(c) = self.conn(which) {
                    c.connecting = None;
                    c.session.handle_event(now, Event::TcpFailed);
                }
            }
        }
    }

    fn conn(&mut self, which: Which) -> Option<&mut Conn> {
        match which {
            Which::Primary => Some(&mut self.primary),
            Which::Secondary => self.secondary.as_mut(),
        }
    }

    fn conn_with_link(&mut self, id: u64) -> Option<&mut Conn> {
        let has = |c: &Conn| c.link.as_ref().is_some_and(|l| l.id == id);
        if has(&self.primary) {
            return Some(&mut self.primary);
        }
        self.secondary.as_mut().filter(|c| has(c))
    }

    /// Run `stream` under `which`'s session: a reader and a writer task.
    fn attach(&mut self, which: Which, stream: TcpStream, initiator: Initiator) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        self.next_id += 1;
        let id = self.next_id;
        let (mut read, mut write) = stream.into_split();
        let tx = self.tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Input::Read(id, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Input::Closed(id));
        });
        let (writer, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer_task = tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let link = Link {
            id,
            local,
            writer,
            writer_task,
            reader: reader.abort_handle(),
        };
        if let Some(c) = self.conn(which) {
            c.link = Some(link);
            c.initiator = initiator;
        }
    }

    // ---- driving the sessions ----

    /// Move transport actions and session events until nothing moves.
    fn pump(&mut self, now: Instant) {
        // Each round drains queues; later rounds only follow from events
        // (rib sends, collision closes), so a few rounds settle it.
        self.closing.retain(|t| !t.is_finished());
        for _ in 0..16 {
            let mut moved = self.flush(Which::Primary);
            moved |= self.flush(Which::Secondary);
            moved |= self.secondary_events(now);
            moved |= self.primary_events(now);
            moved |= self.resolve_collision();
            if !moved {
                return;
            }
        }
    }

    fn flush(&mut self, which: Which) -> bool {
        let mut moved = false;
        let mut closing = vec![];
        let mut connect = false;
        let mut timed_out = false;
        if let Some(c) = self.conn(which) {
            while let Some(t) = c.session.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Connect => connect = c.link.is_none() && c.connecting.is_none(),
                    Transmit::Bytes(bytes) => {
                        if let Some(link) = &c.link {
                            let _ = link.writer.send(bytes);
                        }
                    }
                    Transmit::Close => {
                        connect = false;
                        if c.connecting.is_some() {
                            // ConnectRetry ran out before the connect ended.
                            timed_out = true;
                        }
                        c.close_link(&mut closing);
                    }
                }
            }
        }
        self.closing.extend(closing);
        if timed_out {
            self.last_error = Some("connect: no answer within the connect retry time".into());
        }
        if connect {
            self.start_connect(which);
        }
        moved
    }

    fn start_connect(&mut self, which: Which) {
        self.next_id += 1;
        let id = self.next_id;
        let peer = SocketAddr::new(self.cfg.address, self.cfg.port);
        let (local, security, timeout) = (
            self.cfg.local_address,
            self.cfg.security(),
            self.cfg.connect_retry,
        );
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let result = transport::connect(peer, local, &security, timeout).await;
            let _ = tx.send(Input::Connected(id, result));
        });
        if let Some(c) = self.conn(which) {
            c.connecting = Some((id, task.abort_handle()));
        }
    }

    fn secondary_events(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(e) = self.secondary.as_mut().and_then(|c| c.session.poll_event()) {
            moved = true;
            // It may pass OpenConfirm within one read, before
            // `resolve_collision` saw it there: decide now.
            if let SessionEvent::Established(_) = e {
                if self.secondary_wins() {
                    self.promote_secondary();
                    self.on_established(now);
                } else if let Some(c) = &mut self.secondary {
                    c.session.close_for_collision();
                }
            }
            // A secondary's Down is handled by `resolve_collision`.
        }
        moved
    }

    fn primary_events(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(e) = self.primary.session.poll_event() {
            moved = true;
            match e {
                SessionEvent::Established(_) => self.on_established(now),
                SessionEvent::Down(reason) => self.on_down(now, reason),
                SessionEvent::RouteUpdate(u) => self.on_update(&u),
                SessionEvent::RouteRefreshRequested(family) => {
                    if let Err(e) = self.rib.refresh(family, &mut self.primary.session) {
                        self.last_error = Some(format!("route refresh: {e}"));
                    }
                }
            }
        }
        moved
    }

    fn on_established(&mut self, now: Instant) {
        let Some(local) = self.primary.link.as_ref().map(|l| l.local.ip()) else {
            return;
        };
        let nhs = NextHopSelf::from_session(local, self.cfg.next_hop_ipv4, self.cfg.next_hop_ipv6);
        let desired = self.desired.borrow_and_update();
        if let Err(e) = self
            .rib
            .established(nhs, &desired, &mut self.primary.session)
        {
            self.last_error = Some(format!("announce: {e}"));
        }
        drop(desired);
        self.rib_dirty = true;
        self.established_at = Some(now);
        self.forget_received();
        tracing::info!(peer = %self.cfg.address, local = %local, "BGP session established");
    }

    fn on_down(&mut self, now: Instant, reason: DownReason) {
        let why = describe(&reason);
        tracing::info!(peer = %self.cfg.address, reason = %why, "BGP session down");
        self.last_error = Some(why);
        self.rib.reset();
        self.rib_dirty = true;
        self.established_at = None;
        self.forget_received();
        if self.primary.derived && reason != DownReason::Collision {
            // Back to the configured (active or passive) session.
            let config = self
                .cfg
                .session_config(self.local_as, self.router_id, self.cfg.passive);
            let mut old =
                std::mem::replace(&mut self.primary, Conn::new(Session::new(config), false));
            old.close_link(&mut self.closing);
            self.restart_primary_at = Some(now + self.cfg.idle_hold);
        }
    }

    fn on_update(&mut self, u: &UpdateRepr) {
        self.received_dirty |= self.received.apply(u);
    }

    /// The session's routes are gone with it (RFC 4271 8.2.2: the Adj-RIB-In
    /// of a session that leaves Established is deleted).
    fn forget_received(&mut self) {
        self.received_dirty |= !self.received.is_empty();
        self.received.clear();
    }

    fn sync_rib(&mut self) {
        if self.primary.session.state() != State::Established {
            return;
        }
        let desired = self.desired.borrow_and_update();
        if let Err(e) = self.rib.sync(&desired, &mut self.primary.session) {
            self.last_error = Some(format!("announce: {e}"));
        }
        self.rib_dirty = true;
    }

    /// RFC 4271 6.8 between the primary and an accepted connection.
    fn resolve_collision(&mut self) -> bool {
        let Some(sec) = &mut self.secondary else {
            return false;
        };
        if sec.link.is_none() {
            let mut sec = self.secondary.take();
            if let Some(c) = &mut sec {
                c.close_link(&mut self.closing);
            }
            return true;
        }
        if sec.session.state() == State::Idle {
            return false; // Its Close is still queued.
        }
        if sec.session.peer_open().is_none() {
            // RFC 4271 6.8: a new connection loses to an Established one.
            if self.primary.session.state() != State::Established {
                return false;
            }
            sec.session.close_for_collision();
            return true;
        }
        if self.primary.session.peer_open().is_none() {
            return false;
        }
        if self.secondary_wins() {
            self.promote_secondary();
        } else if let Some(sec) = &mut self.secondary {
            sec.session.close_for_collision();
        }
        true
    }

    /// Both connections have the peer's OPEN (or the primary has none):
    /// whether the accepted one survives (RFC 4271 6.8).
    fn secondary_wins(&self) -> bool {
        match self.primary.session.peer_open() {
            Some(open) => collision_winner(self.router_id, open.bgp_id) != self.primary.initiator,
            None => true,
        }
    }

    /// The secondary becomes the primary; the old primary is closed.
    fn promote_secondary(&mut self) {
        let Some(sec) = self.secondary.take() else {
            return;
        };
        let mut old = std::mem::replace(&mut self.primary, sec);
        if old.session.state() != State::Idle {
            old.session.close_for_collision();
        }
        self.secondary = Some(old);
        // Whatever the old connection carried is gone with it.
        self.rib.reset();
        self.rib_dirty = true;
        self.established_at = None;
        self.forget_received();
    }

    fn publish(&mut self) {
        let status = PeerStatus {
            address: self.cfg.address,
            state: self.primary.session.state(),
            uptime: self.established_at.map(|t| t.elapsed()),
            prefixes_sent: self.rib.sent().len(),
            prefixes_received: self.received.len(),
            last_error: self.last_error.clone(),
        };
        let rib = std::mem::take(&mut self.rib_dirty).then(|| {
            self.rib
                .sent()
                .iter()
                .map(|(p, a)| (*p, a.clone()))
                .collect()
        });
        let ibgp = self.cfg.remote_as == self.local_as;
        let rib_in = std::mem::take(&mut self.received_dirty).then(|| {
            self.received
                .routes()
                .iter()
                .map(|(p, a)| ReceivedRoute {
                    peer: self.cfg.address,
                    ibgp,
                    prefix: *p,
                    attributes: a.clone(),
                })
                .collect()
        });
        let mut peers = lock(&self.shared.peers);
        let view = peers
            .entry(self.cfg.address)
            .or_insert_with(|| PeerView::idle(self.cfg.address));
        view.status = status;
        if let Some(rib) = rib {
            view.rib = rib;
        }
        if let Some(rib_in) = rib_in {
            view.rib_in = rib_in;
            // Bumped while `peers` is held: a reader that saw the new
            // generation reads the new table.
            *lock(&self.shared.rib_in_generation) += 1;
            self.shared.rib_in_cv.notify_all();
        }
    }

    /// Withdraw everything, Cease, and wait (bounded) for the bytes to be
    /// written.
    async fn shutdown(mut self) {
        let now = Instant::now();
        if self.primary.session.state() == State::Established {
            let empty = DesiredRoutes::default();
            let _ = self.rib.sync(&empty, &mut self.primary.session);
        }
        self.primary.session.handle_event(now, Event::ManualStop);
        if let Some(c) = &mut self.secondary {
            c.session.handle_event(now, Event::ManualStop);
        }
        self.restart_primary_at = None;
        self.pump(now);
        self.primary.close_link(&mut self.closing);
        if let Some(c) = &mut self.secondary {
            c.close_link(&mut self.closing);
        }
        self.rib.reset();
        self.rib_dirty = true;
        self.forget_received();
        self.publish();
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        for task in self.closing.drain(..) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Primary,
    Secondary,
}

fn describe(reason: &DownReason) -> String {
    match reason {
        DownReason::NotificationSent(n) => format!("sent NOTIFICATION {n}"),
        DownReason::NotificationReceived(n) => format!("received NOTIFICATION {n}"),
        DownReason::TcpFailed => "connection closed".into(),
        DownReason::ManualStop => "stopped".into(),
        DownReason::Collision => "connection collision".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: Vec<PeerConfig>) -> SpeakerConfig {
        SpeakerConfig {
            local_as: 65001,
            router_id: Ipv4Addr::new(198, 18, 0, 1),
            listen: None,
            peers,
            drain: DrainPolicy::default(),
        }
    }

    fn peer(addr: &str) -> PeerConfig {
        PeerConfig::new(addr.parse().expect("test address"), 65000)
    }

    fn rejected(peers: Vec<PeerConfig>) -> &'static str {
        match Speaker::new(config(peers)) {
            Err(SpeakerError::InvalidPeer(_, why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn unusable_peers_are_rejected_before_anything_starts() {
        let mut hold = peer("198.18.0.2");
        hold.hold_time = 2;
        assert!(rejected(vec![hold]).contains("hold time"));
        // 198.18.0.2 and its IPv4-mapped form are one peer.
        assert!(rejected(vec![peer("198.18.0.2"), peer("::ffff:198.18.0.2")]).contains("twice"));
        let mut md5 = peer("198.18.0.2");
        md5.md5_password = Some("x".repeat(81));
        assert!(rejected(vec![md5]).contains("MD5"));
        let mut passive = peer("198.18.0.2");
        passive.passive = true;
        assert!(rejected(vec![passive]).contains("listen"));
        let mut none = peer("198.18.0.2");
        none.families.clear();
        assert!(rejected(vec![none]).contains("family"));
    }

    #[test]
    fn handle_edits_the_desired_table_and_shuts_down() {
        // No peers and no listener: no socket is opened.
        let speaker = Speaker::new(config(vec![])).expect("starts");
        let h = speaker.handle();
        let vip: Prefix = "198.18.10.1/32".parse().expect("prefix");
        h.announce(vip, RouteAttrs::default());
        assert_eq!(h.desired().len(), 1);
        h.set_drain(true);
        assert!(h.desired().is_draining());
        assert!(h.withdraw(vip));
        assert!(!h.withdraw(vip));
        assert!(h.peers().is_empty() && h.adj_rib_out(None).is_empty());
        assert!(h.shutdown_within(Duration::from_secs(5)));
        // A second shutdown (and the drop) return at once.
        assert!(h.shutdown());
    }

    #[test]
    fn peer_config_maps_to_the_session() {
        let mut p = peer("198.18.0.2");
        p.hold_time = 30;
        p.idle_hold = Duration::from_secs(1);
        let s = p.session_config(65001, Ipv4Addr::new(198, 18, 0, 1), true);
        assert_eq!((s.local_as, s.peer_as, s.hold_time), (65001, 65000, 30));
        assert!(s.passive);
        assert_eq!(s.idle_hold, Duration::from_secs(1));
        assert_eq!(s.max_idle_hold, MAX_IDLE_HOLD);
        assert_eq!(
            p.security(),
            SocketSecurity {
                md5_key: None,
                ttl_security: false
            }
        );
    }
}
