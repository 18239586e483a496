//! One BGP connection's finite state machine (RFC 4271 section 8), sans-IO.
//!
//! Owns: the six states, the ConnectRetry, Hold, Keepalive and IdleHold
//! (reconnect backoff) timers, OPEN negotiation (4-octet AS, families, hold
//! time), the NOTIFICATION for every error, and queuing UPDATEs while
//! Established. Like quinn-proto, it reads no clock and opens no socket:
//!
//! ```text
//! caller ──handle_event(now, Event)──► Session ──poll_transmit()──► Connect / Bytes / Close
//!        ──handle_timeout(now)───────►         ──poll_event()─────► Established / Down / RouteUpdate
//!                                              ──poll_timeout()───► next deadline
//! ```
//!
//! One `Session` is one TCP connection's FSM for one configured peer. A
//! transport that accepts a connection while its own outgoing one is open
//! runs a second, passive `Session` and, once both have the peer's OPEN,
//! asks [`collision_winner`] which to keep and calls
//! [`Session::close_for_collision`] on the other (RFC 4271 6.8).
//!
//! Must not touch: sockets, clocks, the Adj-RIB-Out (the caller decides what
//! to announce and re-announces after [`SessionEvent::Established`] or a
//! route refresh), configuration files.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::wire::error_code::*;
use crate::wire::{
    AsSegment, Capability, Community, DecodeContext, Family, Framer, LargeCommunity, Message,
    MpNextHop, NotificationRepr, OpenRepr, Origin, PathAttributes, Prefix, UpdateRepr,
    MAX_MESSAGE_LEN,
};

/// Hold time while waiting for the peer's OPEN (RFC 4271 8: "4 minutes").
const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Most prefixes per UPDATE we build (keeps every UPDATE under 4096).
const PREFIXES_PER_UPDATE: usize = 150;

/// What a session is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS number.
    pub local_as: u32,
    /// The AS the peer must announce (equal to `local_as`: iBGP).
    pub peer_as: u32,
    /// Our BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Hold time we propose, seconds: 0 (no keepalives) or >= 3.
    pub hold_time: u16,
    /// ConnectRetry time (RFC 4271 suggests 120 s).
    pub connect_retry: Duration,
    /// First delay before an automatic restart after an error; doubles up
    /// to `max_idle_hold`, back to the first after an Established session.
    pub idle_hold: Duration,
    /// Longest delay before an automatic restart.
    pub max_idle_hold: Duration,
    /// Passive: never connect, wait for the peer (RFC 4271 8.1.1 option).
    pub passive: bool,
    /// Families we offer and announce.
    pub families: Vec<Family>,
}

impl SessionConfig {
    /// Defaults: hold 90 s, connect retry 120 s, restart after 5 s up to
    /// 120 s, active, IPv4 and IPv6 unicast.
    pub fn new(local_as: u32, peer_as: u32, bgp_id: Ipv4Addr) -> Self {
        SessionConfig {
            local_as,
            peer_as,
            bgp_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(120),
            idle_hold: Duration::from_secs(5),
            max_idle_hold: Duration::from_secs(120),
            passive: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        }
    }
}

/// RFC 4271 section 8.2.2 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not trying; waits for a start (or the IdleHold timer).
    Idle,
    /// Waiting for our outgoing TCP connection.
    Connect,
    /// Waiting for the peer to connect (or ConnectRetry to try again).
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

/// Input from the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Start the session (RFC 4271 event 1, or 5 when passive).
    ManualStart,
    /// Stop: send Cease if a connection is up, go Idle, no restart.
    ManualStop,
    /// The TCP connection is up (ours completed, or the peer's accepted).
    TcpConnected,
    /// The TCP connection failed or was closed by the peer.
    TcpFailed,
    /// Bytes read from the connection, any split.
    BytesReceived(&'a [u8]),
}

/// What the caller must do on the transport, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Open a TCP connection to the peer (port 179).
    Connect,
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Close the connection after writing what came before.
    Close,
}

/// Why a session left OpenSent, OpenConfirm or Established (or gave up
/// connecting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (decoding error, hold timer, FSM error).
    NotificationSent(NotificationRepr),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(NotificationRepr),
    /// The TCP connection failed or closed.
    TcpFailed,
    /// [`Event::ManualStop`].
    ManualStop,
    /// Closed by [`Session::close_for_collision`].
    Collision,
}

/// What the session tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session reached Established with this peer OPEN.
    Established(OpenRepr),
    /// The session went to Idle.
    Down(DownReason),
    /// An UPDATE from the peer (already RFC 7606 checked).
    RouteUpdate(UpdateRepr),
    /// The peer asked for our routes again (RFC 2918).
    RouteRefreshRequested(Family),
}

/// What the application attaches to a route it announces; the session adds
/// ORIGIN IGP, the AS_PATH (our AS on eBGP, plus `prepend` copies) and
/// LOCAL_PREF (iBGP only, default 100).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Next hop, of the prefix's family.
    pub next_hop: IpAddr,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF on iBGP (ignored on eBGP).
    pub local_pref: Option<u32>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITIES.
    pub large_communities: Vec<LargeCommunity>,
    /// Extra copies of our AS in front of the path.
    pub prepend: u8,
}

/// Why `announce`/`withdraw` refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Only Established sessions take UPDATEs.
    #[error("session is not established")]
    NotEstablished,
    /// The peer did not negotiate the prefix's family.
    #[error("family {0:?} not negotiated")]
    FamilyNotNegotiated(Family),
    /// The next hop is not of the prefix's family.
    #[error("next hop {0} is not of the prefix's family")]
    NextHopFamily(IpAddr),
    /// The prefix could not be encoded (e.g. multicast).
    #[error("cannot encode: {0}")]
    Encode(#[from] crate::wire::EncodeError),
}

/// Which of two colliding connections to keep (RFC 4271 6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// The connection we opened.
    Local,
    /// The connection the peer opened.
    Remote,
}

/// RFC 4271 6.8: the connection opened by the side with the higher BGP
/// identifier survives.
pub fn collision_winner(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Initiator {
    if u32::from(local_id) < u32::from(remote_id) {
        Initiator::Remote
    } else {
        Initiator::Local
    }
}

/// What was agreed with the peer's OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Negotiated {
    peer: OpenRepr,
    hold: Duration,
    keepalive: Duration,
    ctx: DecodeContext,
    families: Vec<Family>,
    max_len: usize,
}

/// One connection's BGP FSM. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    framer: Framer,
    negotiated: Option<Negotiated>,
    locally_initiated: bool,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    restart_at: Option<Instant>,
    next_idle_hold: Duration,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    last_error: Option<DownReason>,
}

impl Session {
    /// A session in Idle; nothing happens before [`Event::ManualStart`].
    pub fn new(config: SessionConfig) -> Self {
        let next_idle_hold = config.idle_hold;
        Session {
            config,
            state: State::Idle,
            framer: Framer::new(),
            negotiated: None,
            locally_initiated: false,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            restart_at: None,
            next_idle_hold,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_error: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The peer's OPEN, from OpenConfirm on.
    pub fn peer_open(&self) -> Option<&OpenRepr> {
        self.negotiated.as_ref().map(|n| &n.peer)
    }

    /// Negotiated hold time, from OpenConfirm on.
    pub fn hold_time(&self) -> Option<Duration> {
        self.negotiated.as_ref().map(|n| n.hold)
    }

    /// Whether this connection was opened by us (for [`collision_winner`]).
    pub fn is_locally_initiated(&self) -> bool {
        self.locally_initiated
    }

    /// Why the session last went down.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// Feed one input.
    pub fn handle_event(&mut self, now: Instant, event: Event<'_>) {
        match event {
            Event::ManualStart => self.start(now),
            Event::ManualStop => self.manual_stop(),
            Event::TcpConnected => self.tcp_connected(now),
            Event::TcpFailed => self.tcp_failed(now),
            Event::BytesReceived(bytes) => self.bytes_received(now, bytes),
        }
    }

    /// Run the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.start(now);
        }
        if self.connect_retry_at.is_some_and(|t| t <= now) {
            self.connect_retry_expired(now);
        }
        if self.hold_at.is_some_and(|t| t <= now) {
            self.fail(now, NotificationRepr::new(HOLD_TIMER_EXPIRED, 0));
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.send_keepalive(now);
        }
    }

    /// The earliest timer deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.restart_at,
            self.connect_retry_at,
            self.hold_at,
            self.keepalive_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next transport action.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Queue UPDATEs announcing `prefixes` with `attrs` (Established only).
    /// Prefixes of one family share UPDATEs, at most 150 per message.
    pub fn announce(&mut self, prefixes: &[Prefix], attrs: &Announcement) -> Result<(), SendError> {
        let n = self
            .negotiated
            .as_ref()
            .filter(|_| self.state == State::Established);
        let n = n.ok_or(SendError::NotEstablished)?;
        let ibgp = n.ctx.ibgp;
        let path_attrs = self.path_attributes(attrs, ibgp);
        let mut updates = Vec::new();
        for chunk in prefixes.chunks(PREFIXES_PER_UPDATE) {
            for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
                let of_family: Vec<Prefix> = chunk
                    .iter()
                    .copied()
                    .filter(|p| family_of(p) == family)
                    .collect();
                if of_family.is_empty() {
                    continue;
                }
                self.check_family(family)?;
                let mut pa = path_attrs.clone();
                set_next_hop(&mut pa, family, attrs.next_hop)?;
                updates.push(UpdateRepr::announce(of_family, pa));
            }
        }
        self.send_updates(updates)
    }

    /// Queue UPDATEs withdrawing `prefixes` (Established only).
    pub fn withdraw(&mut self, prefixes: &[Prefix]) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        let mut updates = Vec::new();
        for chunk in prefixes.chunks(PREFIXES_PER_UPDATE) {
            for p in chunk {
                self.check_family(family_of(p))?;
            }
            updates.push(UpdateRepr::withdraw(chunk.to_vec()));
        }
        self.send_updates(updates)
    }

    /// Queue an End-of-RIB marker (RFC 4724) for `family`.
    pub fn send_end_of_rib(&mut self, family: Family) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotEstablished);
        }
        self.check_family(family)?;
        let eor = UpdateRepr {
            end_of_rib: Some(family),
            ..Default::default()
        };
        self.send_updates(vec![eor])
    }

    /// Close this connection because the other one won the collision:
    /// Cease / Connection Collision Resolution, then Idle without restart.
    pub fn close_for_collision(&mut self) {
        let n = NotificationRepr::new(CEASE, CONNECTION_COLLISION_RESOLUTION);
        self.send_message(&Message::Notification(n));
        self.go_idle(DownReason::Collision, None);
    }

    // ---- transitions ----

    fn start(&mut self, now: Instant) {
        if self.state != State::Idle {
            return;
        }
        self.restart_at = None;
        self.connect_retry_at = Some(now + self.config.connect_retry);
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            self.transmits.push_back(Transmit::Connect);
        }
    }

    fn manual_stop(&mut self) {
        self.restart_at = None;
        if self.state == State::Idle {
            return;
        }
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            let n = NotificationRepr::new(CEASE, ADMINISTRATIVE_SHUTDOWN);
            self.send_message(&Message::Notification(n));
        }
        self.go_idle(DownReason::ManualStop, None);
    }

    fn tcp_connected(&mut self, now: Instant) {
        match self.state {
            State::Connect | State::Active => {
                self.locally_initiated = self.state == State::Connect;
                self.connect_retry_at = None;
                self.framer = Framer::new();
                let open = self.our_open();
                self.send_message(&Message::Open(open));
                self.hold_at = Some(now + OPEN_HOLD_TIME);
                self.state = State::OpenSent;
            }
            // A connection we cannot use (Idle, or one already running).
            _ => self.transmits.push_back(Transmit::Close),
        }
    }

    fn tcp_failed(&mut self, now: Instant) {
        match self.state {
            State::Connect | State::OpenSent => {
                // RFC 4271 8.2.2: back to Active, try again on ConnectRetry.
                self.hold_at = None;
                self.connect_retry_at = Some(now + self.config.connect_retry);
                self.state = State::Active;
            }
            State::OpenConfirm | State::Established => {
                self.go_idle(DownReason::TcpFailed, Some(now))
            }
            State::Idle | State::Active => {}
        }
    }

    fn connect_retry_expired(&mut self, now: Instant) {
        self.connect_retry_at = Some(now + self.config.connect_retry);
        match self.state {
            State::Connect => {
                // Drop the attempt and dial again.
                self.transmits.push_back(Transmit::Close);
                self.transmits.push_back(Transmit::Connect);
            }
            State::Active if !self.config.passive => {
                self.transmits.push_back(Transmit::Connect);
                self.state = State::Connect;
            }
            _ => {}
        }
    }

    fn bytes_received(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.framer.push(bytes);
        // Bounded by the bytes buffered: each round consumes >= 19 octets.
        loop {
            let frame = match self.framer.next_message() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.fail(now, e.notification()),
            };
            let ctx = self.negotiated.as_ref().map(|n| n.ctx).unwrap_or_default();
            match Message::decode(&frame, &ctx) {
                Ok(msg) => self.handle_message(now, msg),
                Err(e) => self.fail(now, e.notification()),
            }
            if self.state == State::Idle {
                return;
            }
        }
    }

    fn handle_message(&mut self, now: Instant, msg: Message) {
        match (self.state, msg) {
            (_, Message::Notification(n)) => {
                self.go_idle(DownReason::NotificationReceived(n), Some(now))
            }
            (State::OpenSent, Message::Open(open)) => self.open_received(now, open),
            (State::OpenConfirm, Message::Keepalive) => self.established(now),
            (State::Established, Message::Keepalive) => self.restart_hold_timer(now),
            (State::Established, Message::Update(update)) => {
                self.restart_hold_timer(now);
                self.events.push_back(SessionEvent::RouteUpdate(update));
            }
            (State::Established, Message::RouteRefresh { afi, safi: 1 }) => {
                let family = match afi {
                    1 => Family::Ipv4Unicast,
                    2 => Family::Ipv6Unicast,
                    _ => return,
                };
                self.events
                    .push_back(SessionEvent::RouteRefreshRequested(family));
            }
            // RFC 7313: an unknown AFI/SAFI in ROUTE-REFRESH is ignored.
            (State::Established, Message::RouteRefresh { .. }) => {}
            (state, _) => self.fail(now, NotificationRepr::new(FSM, fsm_subcode(state))),
        }
    }

    fn open_received(&mut self, now: Instant, open: OpenRepr) {
        if let Err(n) = self.check_open(&open) {
            return self.fail(now, n);
        }
        let negotiated = self.negotiate(open);
        self.framer
            .set_extended_messages(negotiated.max_len > MAX_MESSAGE_LEN);
        self.hold_at = (!negotiated.hold.is_zero()).then(|| now + negotiated.hold);
        self.negotiated = Some(negotiated);
        self.state = State::OpenConfirm;
        self.send_keepalive(now);
    }

    fn check_open(&self, open: &OpenRepr) -> Result<(), NotificationRepr> {
        if open.my_as != self.config.peer_as {
            let wire_as = u16::try_from(open.my_as).unwrap_or(crate::wire::AS_TRANS);
            let data = wire_as.to_be_bytes().to_vec();
            return Err(NotificationRepr::with_data(OPEN_MESSAGE, BAD_PEER_AS, data));
        }
        if open.bgp_id == self.config.bgp_id {
            return Err(NotificationRepr::new(OPEN_MESSAGE, BAD_BGP_IDENTIFIER));
        }
        Ok(())
    }

    fn negotiate(&self, peer: OpenRepr) -> Negotiated {
        let hold = Duration::from_secs(u64::from(self.config.hold_time.min(peer.hold_time)));
        let families = self
            .config
            .families
            .iter()
            .copied()
            .filter(|f| peer.has(&Capability::MultiProtocol(*f)) || no_mp_ipv4(&peer, *f))
            .collect();
        Negotiated {
            hold,
            keepalive: hold / 3,
            ctx: DecodeContext {
                four_octet_as: peer.four_octet_as().is_some(),
                ibgp: self.config.local_as == self.config.peer_as,
            },
            families,
            // We do not offer Extended Message (RFC 8654): 4096 both ways.
            max_len: MAX_MESSAGE_LEN,
            peer,
        }
    }

    fn established(&mut self, now: Instant) {
        self.restart_hold_timer(now);
        self.state = State::Established;
        self.next_idle_hold = self.config.idle_hold;
        if let Some(n) = &self.negotiated {
            self.events
                .push_back(SessionEvent::Established(n.peer.clone()));
        }
    }

    /// Send a NOTIFICATION for an error, close, go Idle and schedule a
    /// restart.
    fn fail(&mut self, now: Instant, notification: NotificationRepr) {
        self.send_message(&Message::Notification(notification.clone()));
        self.go_idle(DownReason::NotificationSent(notification), Some(now));
    }

    /// Close and go Idle; with `restart_from`, start again after the
    /// IdleHold delay, which doubles on each failure (reconnect backoff).
    fn go_idle(&mut self, reason: DownReason, restart_from: Option<Instant>) {
        self.transmits.push_back(Transmit::Close);
        self.state = State::Idle;
        self.negotiated = None;
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.restart_at = restart_from.map(|now| now + self.next_idle_hold);
        if restart_from.is_some() {
            self.next_idle_hold = (self.next_idle_hold * 2).min(self.config.max_idle_hold);
        }
        self.framer = Framer::new();
        self.last_error = Some(reason.clone());
        self.events.push_back(SessionEvent::Down(reason));
    }

    // ---- sending ----

    fn our_open(&self) -> OpenRepr {
        let mut capabilities: Vec<Capability> = self
            .config
            .families
            .iter()
            .map(|f| Capability::MultiProtocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(self.config.local_as));
        OpenRepr {
            my_as: self.config.local_as,
            hold_time: self.config.hold_time,
            bgp_id: self.config.bgp_id,
            capabilities,
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        self.send_message(&Message::Keepalive);
        self.restart_keepalive_timer(now);
    }

    fn send_updates(&mut self, updates: Vec<UpdateRepr>) -> Result<(), SendError> {
        let n = self.negotiated.as_ref().ok_or(SendError::NotEstablished)?;
        let mut encoded = Vec::with_capacity(updates.len());
        for u in updates {
            encoded.push(Message::Update(u).encode(&n.ctx, n.max_len)?);
        }
        self.transmits
            .extend(encoded.into_iter().map(Transmit::Bytes));
        Ok(())
    }

    fn send_message(&mut self, msg: &Message) {
        let (ctx, max) = self
            .negotiated
            .as_ref()
            .map_or((DecodeContext::default(), MAX_MESSAGE_LEN), |n| {
                (n.ctx, n.max_len)
            });
        // Our OPEN, KEEPALIVE and NOTIFICATION are far below 4096 octets and
        // built from valid values, so encoding cannot fail; if it ever did,
        // nothing is sent and the peer's hold timer ends the session.
        if let Ok(bytes) = msg.encode(&ctx, max) {
            self.transmits.push_back(Transmit::Bytes(bytes));
        }
    }

    fn restart_hold_timer(&mut self, now: Instant) {
        if let Some(n) = &self.negotiated {
            self.hold_at = (!n.hold.is_zero()).then(|| now + n.hold);
        }
    }

    fn restart_keepalive_timer(&mut self, now: Instant) {
        self.keepalive_at = self
            .negotiated
            .as_ref()
            .filter(|n| !n.keepalive.is_zero())
            .map(|n| now + n.keepalive);
    }

    fn check_family(&self, family: Family) -> Result<(), SendError> {
        let ok = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.families.contains(&family));
        ok.then_some(())
            .ok_or(SendError::FamilyNotNegotiated(family))
    }

    fn path_attributes(&self, a: &Announcement, ibgp: bool) -> PathAttributes {
        // iBGP: an empty AS_PATH and no prepends. Our AS in the path would
        // make the peer, which is in the same AS, drop the route as a loop
        // (FRR and BIRD do), and prepending only steers eBGP neighbours.
        let copies = if ibgp { 0 } else { 1 + usize::from(a.prepend) };
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(if copies == 0 {
                vec![]
            } else {
                vec![AsSegment::Sequence(vec![self.config.local_as; copies])]
            }),
            med: a.med,
            local_pref: ibgp.then(|| a.local_pref.unwrap_or(100)),
            communities: a.communities.clone(),
            large_communities: a.large_communities.clone(),
            ..Default::default()
        }
    }
}

fn family_of(p: &Prefix) -> Family {
    if p.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

/// A peer without any MP capability speaks IPv4 unicast (RFC 4760 8).
fn no_mp_ipv4(peer: &OpenRepr, family: Family) -> bool {
    family == Family::Ipv4Unicast
        && !peer
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::MultiProtocol(_)))
}

fn set_next_hop(pa: &mut PathAttributes, family: Family, nh: IpAddr) -> Result<(), SendError> {
    match (family, nh) {
        (Family::Ipv4Unicast, IpAddr::V4(v4)) => pa.next_hop = Some(v4),
        (Family::Ipv6Unicast, IpAddr::V6(v6)) => {
            pa.mp_next_hop = Some(MpNextHop {
                global: v6,
                link_local: None,
            })
        }
        _ => return Err(SendError::NextHopFamily(nh)),
    }
    Ok(())
}

/// RFC 6608 subcode for an unexpected message in `state`.
fn fsm_subcode(state: State) -> u8 {
    match state {
        State::OpenSent => FSM_UNEXPECTED_IN_OPEN_SENT,
        State::OpenConfirm => FSM_UNEXPECTED_IN_OPEN_CONFIRM,
        State::Established => FSM_UNEXPECTED_IN_ESTABLISHED,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A_AS: u32 = 4_200_000_001;
    const B_AS: u32 = 65002;
    const A_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn config_a() -> SessionConfig {
        SessionConfig::new(A_AS, B_AS, A_ID)
    }

    fn config_b() -> SessionConfig {
        let mut c = SessionConfig::new(B_AS, A_AS, B_ID);
        c.hold_time = 30;
        c.passive = true;
        c
    }

    /// Two sessions joined by one virtual TCP connection (quinn's `Pair`).
    struct Pair {
        now: Instant,
        a: Session,
        b: Session,
        connected: bool,
        /// Bytes from b are dropped (b "went silent").
        b_silent: bool,
        /// Every message each side wrote, in order.
        a_wrote: Vec<Vec<u8>>,
        b_wrote: Vec<Vec<u8>>,
        a_events: Vec<SessionEvent>,
        b_events: Vec<SessionEvent>,
    }

    impl Pair {
        fn new(a: SessionConfig, b: SessionConfig) -> Self {
            Pair {
                now: Instant::now(),
                a: Session::new(a),
                b: Session::new(b),
                connected: false,
                b_silent: false,
                a_wrote: vec![],
                b_wrote: vec![],
                a_events: vec![],
                b_events: vec![],
            }
        }

        fn start(&mut self) {
            self.b.handle_event(self.now, Event::ManualStart);
            self.a.handle_event(self.now, Event::ManualStart);
            self.drive();
        }

        /// Move bytes and transport actions until neither side has any.
        fn drive(&mut self) {
            for _ in 0..1000 {
                let moved = self.step_a() | self.step_b();
                self.a_events
                    .extend(std::iter::from_fn(|| self.a.poll_event()));
                self.b_events
                    .extend(std::iter::from_fn(|| self.b.poll_event()));
                if !moved {
                    return;
                }
            }
            panic!("pair did not settle");
        }

        fn step_a(&mut self) -> bool {
            let Some(t) = self.a.poll_transmit() else {
                return false;
            };
            match t {
                Transmit::Connect if self.b.state() == State::Active => {
                    self.connected = true;
                    self.b.handle_event(self.now, Event::TcpConnected);
                    self.a.handle_event(self.now, Event::TcpConnected);
                }
                Transmit::Connect => self.a.handle_event(self.now, Event::TcpFailed),
                Transmit::Bytes(bytes) => {
                    self.a_wrote.push(bytes.clone());
                    if self.connected {
                        self.b.handle_event(self.now, Event::BytesReceived(&bytes));
                    }
                }
                Transmit::Close => self.close(),
            }
            true
        }

        fn step_b(&mut self) -> bool {
            let Some(t) = self.b.poll_transmit() else {
                return false;
            };
            match t {
                Transmit::Connect => {}
                Transmit::Bytes(bytes) => {
                    self.b_wrote.push(bytes.clone());
                    if self.connected && !self.b_silent {
                        self.a.handle_event(self.now, Event::BytesReceived(&bytes));
                    }
                }
                Transmit::Close => self.close(),
            }
            true
        }

        fn close(&mut self) {
            if std::mem::replace(&mut self.connected, false) {
                self.a.handle_event(self.now, Event::TcpFailed);
                self.b.handle_event(self.now, Event::TcpFailed);
            }
        }

        /// Advance virtual time to `until`, firing timers in order.
        fn run_until(&mut self, until: Instant) {
            for _ in 0..100_000 {
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= until => {
                        self.now = self.now.max(t);
                        self.a.handle_timeout(self.now);
                        self.b.handle_timeout(self.now);
                        self.drive();
                    }
                    _ => {
                        self.now = until;
                        return;
                    }
                }
            }
            panic!("timers did not settle");
        }

        fn established(&self) -> bool {
            self.a.state() == State::Established && self.b.state() == State::Established
        }
    }

    fn announcement(next_hop: &str) -> Announcement {
        Announcement {
            next_hop: next_hop.parse().expect("test address"),
            med: Some(10),
            local_pref: None,
            communities: vec![Community::new(65000, 1)],
            large_communities: vec![],
            prepend: 0,
        }
    }

    fn prefix(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn received(events: &[SessionEvent]) -> Vec<UpdateRepr> {
        events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::RouteUpdate(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    fn message_type(bytes: &[u8]) -> u8 {
        bytes[18]
    }

    #[test]
    fn open_negotiation_with_four_octet_as_both_ways() {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        assert!(pair.established());
        // a's OPEN carries AS_TRANS in the 2-octet field, b learns 4200000001.
        let open_a = &pair.a_wrote[0];
        assert_eq!(
            u16::from_be_bytes([open_a[20], open_a[21]]),
            crate::wire::AS_TRANS
        );
        assert_eq!(pair.b.peer_open().map(|o| o.my_as), Some(A_AS));
        assert_eq!(pair.a.peer_open().map(|o| o.my_as), Some(B_AS));
        // Hold time is the smaller one, keepalive a third of it.
        assert_eq!(pair.a.hold_time(), Some(Duration::from_secs(30)));
        assert!(pair.a.is_locally_initiated() && !pair.b.is_locally_initiated());
        assert!(matches!(pair.a_events[0], SessionEvent::Established(_)));
        assert!(matches!(pair.b_events[0], SessionEvent::Established(_)));
    }

    #[test]
    fn keepalive_every_third_of_hold_time() {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        let before = pair.a_wrote.len();
        let start = pair.now;
        pair.run_until(start + Duration::from_secs(100));
        let keepalives = pair.a_wrote[before..]
            .iter()
            .filter(|m| message_type(m) == 4)
            .count();
        assert_eq!(keepalives, 10, "one per 10 s over 100 s");
        assert!(pair.established());
    }

    #[test]
    fn hold_timer_expires_when_peer_goes_silent() {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        pair.b_silent = true;
        let start = pair.now;
        pair.run_until(start + Duration::from_secs(29));
        assert_eq!(pair.a.state(), State::Established);
        pair.run_until(start + Duration::from_secs(31));
        let expected = NotificationRepr::new(HOLD_TIMER_EXPIRED, 0);
        assert_eq!(
            pair.a.last_error(),
            Some(&DownReason::NotificationSent(expected.clone()))
        );
        // b received the NOTIFICATION (a still talks) and went down too.
        assert_eq!(
            pair.b.last_error(),
            Some(&DownReason::NotificationReceived(expected))
        );
    }

    #[test]
    fn reconnects_with_backoff_after_an_error() {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        pair.b_silent = true;
        let start = pair.now;
        pair.run_until(start + Duration::from_secs(31));
        pair.b_silent = false;
        // a restarts 5 s after the failure (b, passive, restarts too).
        pair.run_until(start + Duration::from_secs(37));
        assert!(
            pair.established(),
            "{:?} {:?}",
            pair.a.state(),
            pair.b.state()
        );
    }

    #[test]
    fn announce_and_withdraw_keep_their_order() {
        let mut pair = Pair::new(config_a(), config_b());
        assert_eq!(
            pair.a
                .announce(&[prefix("198.18.10.1/32")], &announcement("198.18.0.1")),
            Err(SendError::NotEstablished)
        );
        pair.start();
        let nh4 = announcement("198.18.0.1");
        let nh6 = announcement("2001:db8::1");
        pair.a
            .announce(&[prefix("198.18.10.1/32")], &nh4)
            .expect("announce");
        pair.a
            .announce(&[prefix("2001:db8:10::1/128")], &nh6)
            .expect("announce");
        pair.a
            .withdraw(&[prefix("198.18.10.1/32")])
            .expect("withdraw");
        pair.a
            .announce(&[prefix("198.18.10.2/32")], &nh4)
            .expect("announce");
        pair.drive();
        let got = received(&pair.b_events);
        let summary: Vec<(Vec<Prefix>, Vec<Prefix>)> = got
            .iter()
            .map(|u| (u.announced.clone(), u.withdrawn.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec![prefix("198.18.10.1/32")], vec![]),
                (vec![prefix("2001:db8:10::1/128")], vec![]),
                (vec![], vec![prefix("198.18.10.1/32")]),
                (vec![prefix("198.18.10.2/32")], vec![]),
            ]
        );
        // eBGP: our AS in the path, no LOCAL_PREF, MED and community kept.
        let attrs = &got[0].attributes;
        assert_eq!(attrs.as_path, Some(vec![AsSegment::Sequence(vec![A_AS])]));
        assert_eq!((attrs.local_pref, attrs.med), (None, Some(10)));
        assert_eq!(attrs.communities, vec![Community::new(65000, 1)]);
        assert_eq!(
            got[1].attributes.mp_next_hop.map(|n| n.global),
            "2001:db8::1".parse().ok()
        );
    }

    #[test]
    fn ibgp_sends_local_pref_and_never_prepends() {
        let mut a = config_a();
        a.peer_as = A_AS;
        let mut b = config_b();
        b.local_as = A_AS;
        b.peer_as = A_AS;
        let mut pair = Pair::new(a, b);
        pair.start();
        let mut ann = announcement("198.18.0.1");
        ann.prepend = 2;
        pair.a
            .announce(&[prefix("198.18.10.1/32")], &ann)
            .expect("announce");
        pair.drive();
        let got = received(&pair.b_events);
        assert_eq!(got[0].treat_as_withdraw, None);
        assert_eq!(got[0].attributes.local_pref, Some(100));
        assert_eq!(got[0].attributes.as_path, Some(vec![]));
    }

    #[test]
    fn collision_keeps_the_connection_of_the_higher_identifier() {
        assert_eq!(collision_winner(A_ID, B_ID), Initiator::Remote);
        assert_eq!(collision_winner(B_ID, A_ID), Initiator::Local);
        // Both sides dial at once: connection 1 from a, connection 2 from b.
        let mut b_active = config_b();
        b_active.passive = false;
        let mut a_passive = config_a();
        a_passive.passive = true;
        let mut one = Pair::new(config_a(), config_b());
        let mut two = Pair::new(b_active, a_passive);
        one.start();
        two.start();
        // Each side now holds two sessions in OpenConfirm or later; each
        // decides with the helper and closes the loser.
        for (pair, a_side, b_side) in [(&mut one, true, false), (&mut two, false, true)] {
            let a_keeps = collision_winner(A_ID, B_ID);
            let b_keeps = collision_winner(B_ID, A_ID);
            let a_session_initiator = if a_side {
                Initiator::Local
            } else {
                Initiator::Remote
            };
            let b_session_initiator = if b_side {
                Initiator::Local
            } else {
                Initiator::Remote
            };
            if a_keeps != a_session_initiator {
                pair.a.close_for_collision();
            }
            if b_keeps != b_session_initiator {
                pair.b.close_for_collision();
            }
            pair.drive();
        }
        assert_eq!(one.a.state(), State::Idle);
        assert_eq!(one.b.state(), State::Idle);
        assert!(two.established());
        let cease = NotificationRepr::new(CEASE, CONNECTION_COLLISION_RESOLUTION);
        assert_eq!(one.a.last_error(), Some(&DownReason::Collision));
        assert!(matches!(
            one.b.last_error(),
            Some(DownReason::Collision) | Some(DownReason::NotificationReceived(_))
        ));
        assert!(one
            .a_wrote
            .iter()
            .any(|m| m[19..] == [cease.code, cease.subcode]));
    }

    /// A session in OpenSent: started and connected, our OPEN queued.
    fn open_sent() -> (Session, Instant) {
        let now = Instant::now();
        let mut s = Session::new(config_a());
        s.handle_event(now, Event::ManualStart);
        s.handle_event(now, Event::TcpConnected);
        while s.poll_transmit().is_some() {}
        assert_eq!(s.state(), State::OpenSent);
        (s, now)
    }

    fn peer_open(my_as: u32, hold_time: u16) -> Vec<u8> {
        let open = OpenRepr {
            my_as,
            hold_time,
            bgp_id: B_ID,
            capabilities: vec![Capability::FourOctetAs(my_as)],
        };
        Message::Open(open)
            .encode(&DecodeContext::default(), MAX_MESSAGE_LEN)
            .expect("test OPEN encodes")
    }

    /// Feed `bytes` into an OpenSent session; return the NOTIFICATION sent.
    fn notification_for(bytes: &[u8]) -> NotificationRepr {
        let (mut s, now) = open_sent();
        s.handle_event(now, Event::BytesReceived(bytes));
        assert_eq!(s.state(), State::Idle);
        let out: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
        assert_eq!(out.last(), Some(&Transmit::Close));
        let Some(Transmit::Bytes(sent)) = out.first() else {
            panic!("no NOTIFICATION sent: {out:?}");
        };
        match Message::decode(sent, &DecodeContext::default()) {
            Ok(Message::Notification(n)) => n,
            other => panic!("not a NOTIFICATION: {other:?}"),
        }
    }

    #[test]
    fn notification_paths() {
        let good = peer_open(B_AS, 90);
        let mut bad_marker = good.clone();
        bad_marker[0] = 0;
        assert_eq!(notification_for(&bad_marker), NotificationRepr::new(1, 1));
        let mut bad_length = good.clone();
        bad_length[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            notification_for(&bad_length),
            NotificationRepr::with_data(1, 2, 5000u16.to_be_bytes().into())
        );
        let mut version3 = good.clone();
        version3[19] = 3;
        assert_eq!(
            notification_for(&version3),
            NotificationRepr::with_data(2, 1, vec![0, 4])
        );
        assert_eq!(
            notification_for(&peer_open(65099, 90)),
            NotificationRepr::with_data(2, 2, 65099u16.to_be_bytes().into())
        );
        assert_eq!(
            notification_for(&peer_open(4_200_000_099, 90)),
            NotificationRepr::with_data(2, 2, 23456u16.to_be_bytes().into())
        );
        for hold in [1, 2] {
            assert_eq!(
                notification_for(&peer_open(B_AS, hold)),
                NotificationRepr::new(2, 6)
            );
        }
        let keepalive = Message::Keepalive
            .encode(&DecodeContext::default(), MAX_MESSAGE_LEN)
            .expect("encodes");
        assert_eq!(
            notification_for(&keepalive),
            NotificationRepr::new(FSM, FSM_UNEXPECTED_IN_OPEN_SENT)
        );
    }

    #[test]
    fn manual_stop_sends_cease_and_does_not_restart() {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        pair.a.handle_event(pair.now, Event::ManualStop);
        pair.drive();
        assert_eq!(pair.a.state(), State::Idle);
        assert_eq!(pair.a.poll_timeout(), None);
        assert_eq!(
            pair.b.last_error(),
            Some(&DownReason::NotificationReceived(NotificationRepr::new(
                6, 2
            )))
        );
    }

    /// A session in Established with b's keepalive read.
    fn established() -> (Session, Instant) {
        let mut pair = Pair::new(config_a(), config_b());
        pair.start();
        (pair.a, pair.now)
    }

    fn check_after_garbage(mut s: Session, now: Instant, bytes: &[u8]) {
        s.handle_event(now, Event::BytesReceived(bytes));
        let out: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
        match s.state() {
            State::Idle => {
                assert_eq!(out.last(), Some(&Transmit::Close));
                let down = std::iter::from_fn(|| s.poll_event())
                    .any(|e| matches!(e, SessionEvent::Down(_)));
                assert!(down);
            }
            State::OpenSent | State::OpenConfirm | State::Established => {}
            other => panic!("unexpected state {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (s, now) = open_sent();
            check_after_garbage(s, now, &bytes);
            let (s, now) = established();
            check_after_garbage(s, now, &bytes);
        }

        #[test]
        fn valid_header_with_arbitrary_body_never_panics(
            kind in 1u8..=5,
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![0xff; 16];
            bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
            bytes.push(kind);
            bytes.extend_from_slice(&body);
            let (s, now) = established();
            check_after_garbage(s, now, &bytes);
            let (s, now) = open_sent();
            check_after_garbage(s, now, &bytes);
        }
    }
}
