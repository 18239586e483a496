//! One VRRP virtual router: the state machine of RFC 5798 section 6.4
//! (version 3) and RFC 3768 section 6.4 (version 2), with keepalived's
//! additions operators rely on (Fault, preempt delay, resign with a grace
//! period, a lower-priority master made to back off at once).
//!
//! Sans-IO: an [`Instance`] never reads a clock or touches a socket. The
//! caller passes `now` to every entry point, asks [`Instance::poll_timeout`]
//! when to call [`Instance::handle_timeout`], and drains
//! [`Instance::poll_action`] after each call. Received adverts arrive
//! already parsed and checked by [`super::wire`] (TTL, version, checksum,
//! length); this module applies the checks that need the instance's
//! configuration (unicast peers, v2 interval and authentication).
//!
//! Owns: state, timers, the effective priority, counters, the last
//! transition. Must not: know interfaces, sockets, the dataplane or other
//! instances (sync groups and tracking live in [`super::node`]).

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::wire::{Advert, Auth, Version};

/// Priority of the address owner (RFC 5798 section 5.2.4).
pub const OWNER_PRIORITY: u8 = 255;
/// Priority a master sends when it stops being master.
pub const RESIGN_PRIORITY: u8 = 0;
/// At most one warning of each kind per instance per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What an instance is configured with (the daemon derives it from
/// `[[vrrp.instance]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub vrid: u8,
    pub version: Version,
    /// 1..=255.
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: whole seconds × 100).
    pub interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub vips: Vec<IpAddr>,
    /// This router's address on the link, the adverts' source: it breaks
    /// ties between equal priorities (RFC 5798 section 6.4.3).
    pub primary: IpAddr,
    /// Empty: multicast. Otherwise adverts from other sources are dropped.
    pub unicast_peers: Vec<IpAddr>,
    pub auth: Auth,
    pub garp: Garp,
    pub resign_grace: Duration,
}

/// Gratuitous ARP / unsolicited NA schedule of a new master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garp {
    /// A second burst this long after becoming master (zero: none).
    pub delay: Duration,
    /// A burst every this long while master (zero: none).
    pub refresh: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A tracked object with weight 0 is down (or a sync-group member is).
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a transition happened (status and notify hooks show the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Started as backup.
    Startup,
    /// Priority 255: master from the start.
    AddressOwner,
    /// No advert from a master for the master down interval.
    MasterDown,
    /// The master sent priority 0; took over after the skew time.
    MasterResigned,
    /// An advert with a higher priority (or equal, from a higher address).
    HigherPriority,
    /// `vipgate vrrp resign` or shutdown.
    Resigned,
    /// A tracked object with weight 0 went down.
    Fault,
    /// Every tracked object with weight 0 is up again.
    FaultCleared,
    /// Another member of the sync group moved.
    SyncGroup,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::AddressOwner => "address_owner",
            Reason::MasterDown => "master_down_timer",
            Reason::MasterResigned => "master_resigned",
            Reason::HigherPriority => "higher_priority_advert",
            Reason::Resigned => "resigned",
            Reason::Fault => "fault",
            Reason::FaultCleared => "fault_cleared",
            Reason::SyncGroup => "sync_group",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

/// What the node does with the instance's VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VipState {
    /// Answer ARP/ND for them and forward their traffic.
    Active,
    /// Stop answering, keep forwarding what still arrives (planned
    /// switchover: until the grace period ends).
    Draining,
    /// Neither.
    Inactive,
}

/// Something the caller must carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advert to the multicast group, or to every unicast peer.
    Send(Advert),
    /// Send a burst of gratuitous ARPs / unsolicited NAs for the VIPs.
    Announce,
    Vips(VipState),
    Transition(Transition),
    /// Log this (rate-limited here: at most one per kind a minute).
    Warn(Warning),
}

/// A misconfiguration seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The advert's address list differs from ours (dropped and counted,
    /// as keepalived's vrrp_check_packet does; RFC 5798 section 6.4.3
    /// leaves the check to the implementation).
    AddressListMismatch { from: IpAddr },
    /// The advert's interval differs from ours (v2: dropped, RFC 3768
    /// section 7.1; v3: the backup adopts the master's).
    IntervalMismatch { from: IpAddr, theirs_cs: u16 },
    /// Another router's advert was dropped for a reason only this instance
    /// can see (unicast source not a peer, authentication).
    Dropped { from: IpAddr, reason: Drop },
}

/// Adverts dropped by the instance's own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Unicast instance: the source is not a configured peer.
    UnknownPeer,
    /// Version 2: the interval differs from ours.
    IntervalMismatch,
    /// Version 2: authentication differs from ours.
    AuthMismatch,
    /// Version or address family not this instance's.
    WrongVersion,
    /// Our own advert looped back.
    OwnAdvert,
    /// The advert's addresses are not exactly ours.
    AddressListMismatch,
}

impl Drop {
    pub const ALL: [Drop; 6] = [
        Drop::UnknownPeer,
        Drop::IntervalMismatch,
        Drop::AuthMismatch,
        Drop::WrongVersion,
        Drop::OwnAdvert,
        Drop::AddressListMismatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::UnknownPeer => "unknown_peer",
            Drop::IntervalMismatch => "interval_mismatch",
            Drop::AuthMismatch => "auth_mismatch",
            Drop::WrongVersion => "wrong_version",
            Drop::OwnAdvert => "own_advert",
            Drop::AddressListMismatch => "address_list_mismatch",
        }
    }
}

/// Per-instance counters (status shows them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    pub became_master: u64,
    /// v3 adverts whose interval differs from ours (accepted; a backup
    /// adopts the master's).
    pub interval_mismatch: u64,
    /// Indexed by `Drop as usize`.
    pub dropped: [u64; Drop::ALL.len()],
}

/// One virtual router.
#[derive(Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    state: State,
    /// Tracking adjustment (sum of weights), set by the node.
    adjust: i32,
    /// A tracked object with weight 0 (or a sync-group peer) is down.
    fault: bool,
    /// Resigned by the operator: never becomes master until resumed.
    resigned: bool,
    /// The master's interval as learnt from its adverts (v3), else ours.
    master_interval_cs: u16,
    master: Option<IpAddr>,
    /// Adver timer in Master, master down timer in Backup.
    timer: Option<Instant>,
    garp_second: Option<Instant>,
    garp_refresh: Option<Instant>,
    drain_until: Option<Instant>,
    /// A lower-priority master was first seen; preempt when this passes.
    preempt_at: Option<Instant>,
    /// The last advert was a priority-0 one: the backup timer runs the
    /// skew time only.
    master_resigned: bool,
    vips: VipState,
    last: Option<Transition>,
    counters: Counters,
    warned: [Option<Instant>; 3],
    actions: VecDeque<Action>,
}

impl Instance {
    pub fn new(cfg: InstanceConfig) -> Instance {
        let interval = cfg.interval_cs;
        Instance {
            cfg,
            state: State::Initialize,
            adjust: 0,
            fault: false,
            resigned: false,
            master_interval_cs: interval,
            master: None,
            timer: None,
            garp_second: None,
            garp_refresh: None,
            drain_until: None,
            preempt_at: None,
            master_resigned: false,
            vips: VipState::Inactive,
            last: None,
            counters: Counters::default(),
            warned: [None; 3],
            actions: VecDeque::new(),
        }
    }

    // ------------------------------------------------------------ reading

    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn vip_state(&self) -> VipState {
        self.vips
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn last_transition(&self) -> Option<Transition> {
        self.last
    }
    pub fn is_resigned(&self) -> bool {
        self.resigned
    }
    pub fn is_faulted(&self) -> bool {
        self.fault
    }
    /// The current master's address (ours when master), if known.
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.cfg.primary),
            _ => self.master,
        }
    }
    /// The interval in use: ours as master, the master's as backup (v3).
    pub fn interval_cs(&self) -> u16 {
        match self.state {
            State::Master => self.cfg.interval_cs,
            _ => self.master_interval_cs,
        }
    }

    /// The priority this router advertises and elects with: the configured
    /// one moved by tracking weights, kept within 1..=254 (an owner's 255
    /// never moves; a resigned router has 0).
    pub fn effective_priority(&self) -> u8 {
        if self.resigned {
            return RESIGN_PRIORITY;
        }
        let base = self.cfg.priority;
        if base == OWNER_PRIORITY {
            return base;
        }
        (i32::from(base) + self.adjust).clamp(1, 254) as u8
    }

    /// RFC 5798 section 6.1: Skew_Time, from the master's interval (v3) or
    /// whole seconds (v2).
    pub fn skew_time(&self) -> Duration {
        let p = 256 - u64::from(self.effective_priority());
        match self.cfg.version {
            Version::V3 => cs(p * u64::from(self.master_interval_cs) / 256),
            Version::V2 => Duration::from_millis(p * 1000 / 256),
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        3 * cs(u64::from(self.master_interval_cs)) + self.skew_time()
    }

    /// When [`Instance::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timer,
            self.garp_second,
            self.garp_refresh,
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ------------------------------------------------------------- events

    /// Leaves Initialize (RFC 5798 section 6.4.1).
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.fault {
            self.enter_fault(now, Reason::Fault);
        } else if self.effective_priority() == OWNER_PRIORITY {
            self.become_master(now, Reason::AddressOwner);
        } else {
            self.become_backup(now, Reason::Startup);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.drain_until.is_some_and(|t| t <= now) {
            self.drain_until = None;
            if self.state != State::Master {
                self.set_vips(VipState::Inactive);
            }
        }
        if self.garp_second.is_some_and(|t| t <= now) {
            self.garp_second = None;
            self.actions.push_back(Action::Announce);
        }
        if self.garp_refresh.is_some_and(|t| t <= now) {
            self.garp_refresh = Some(now + self.cfg.garp.refresh);
            self.actions.push_back(Action::Announce);
        }
        if self.timer.is_some_and(|t| t <= now) {
            match self.state {
                State::Master => {
                    self.send_advert(self.effective_priority());
                    self.timer = Some(now + cs(u64::from(self.cfg.interval_cs)));
                }
                State::Backup if self.may_become_master() => {
                    let reason = if self.master_resigned {
                        Reason::MasterResigned
                    } else {
                        Reason::MasterDown
                    };
                    self.become_master(now, reason);
                }
                _ => self.timer = None,
            }
        }
    }

    /// An advert for this instance's VRID from `src`, already checked by
    /// the wire layer.
    pub fn handle_advert(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if let Err(drop) = self.accept(src, advert) {
            self.counters.dropped[drop as usize] += 1;
            let warning = match drop {
                Drop::OwnAdvert => None,
                Drop::AddressListMismatch => Some((0, Warning::AddressListMismatch { from: src })),
                _ => Some((
                    2,
                    Warning::Dropped {
                        from: src,
                        reason: drop,
                    },
                )),
            };
            if let Some((kind, w)) = warning {
                self.warn(now, kind, w);
            }
            return;
        }
        self.counters.adverts_rx += 1;
        if advert.priority == RESIGN_PRIORITY {
            self.counters.priority_zero_rx += 1;
        }
        match self.state {
            State::Backup => self.backup_rx(now, src, advert),
            State::Master => self.master_rx(now, src, advert),
            State::Initialize | State::Fault => {}
        }
    }

    /// Sets the tracking adjustment and fault flag (from the node, after
    /// any tracked object or sync-group member changed).
    pub fn set_tracking(&mut self, now: Instant, adjust: i32, fault: bool) {
        self.adjust = adjust;
        let was = self.fault;
        self.fault = fault;
        match (was, fault, self.state) {
            (false, true, State::Backup | State::Master) => self.enter_fault(now, Reason::Fault),
            (true, false, State::Fault) => {
                if self.effective_priority() == OWNER_PRIORITY && !self.resigned {
                    self.become_master(now, Reason::FaultCleared);
                } else {
                    self.become_backup(now, Reason::FaultCleared);
                }
            }
            _ => {}
        }
    }

    /// Planned switchover: as master, advertise priority 0 and keep
    /// forwarding for the grace period; never become master until
    /// [`Instance::resume`]. Returns when the grace period ends (now if
    /// this router was not master).
    pub fn resign(&mut self, now: Instant) -> Instant {
        self.resigned = true;
        self.preempt_at = None;
        if self.state != State::Master {
            return self.drain_until.unwrap_or(now);
        }
        self.send_advert(RESIGN_PRIORITY);
        self.transition(now, State::Backup, Reason::Resigned);
        self.master = None;
        self.timer = None;
        self.garp_second = None;
        self.garp_refresh = None;
        self.drain_for(now, self.cfg.resign_grace)
    }

    /// Stops answering for the VIPs but keeps forwarding their traffic for
    /// `grace` (inactive at once when zero); returns when that ends.
    fn drain_for(&mut self, now: Instant, grace: Duration) -> Instant {
        if grace.is_zero() {
            self.set_vips(VipState::Inactive);
        } else {
            self.set_vips(VipState::Draining);
            self.drain_until = Some(now + grace);
        }
        now + grace
    }

    /// Undoes [`Instance::resign`]: contends again as a backup (and takes
    /// over after the master down interval if the master is gone or, with
    /// preempt, has a lower priority).
    pub fn resume(&mut self, now: Instant) {
        if !self.resigned {
            return;
        }
        self.resigned = false;
        if self.state == State::Backup {
            self.timer = Some(now + self.master_down_interval());
        }
    }

    /// Sync group: move with another member.
    pub fn follow(&mut self, now: Instant, to: State) {
        match to {
            State::Master if self.state == State::Backup && !self.resigned && !self.fault => {
                self.become_master(now, Reason::SyncGroup)
            }
            State::Backup if self.state == State::Master => {
                self.send_advert(RESIGN_PRIORITY);
                self.become_backup(now, Reason::SyncGroup)
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------- internals

    /// The checks that need this instance's configuration.
    fn accept(&self, src: IpAddr, advert: &Advert) -> Result<(), Drop> {
        if src == self.cfg.primary {
            return Err(Drop::OwnAdvert);
        }
        if advert.version != self.cfg.version || src.is_ipv6() != self.cfg.primary.is_ipv6() {
            return Err(Drop::WrongVersion);
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&src) {
            return Err(Drop::UnknownPeer);
        }
        if self.cfg.version == Version::V2 {
            if advert.auth != self.cfg.auth {
                return Err(Drop::AuthMismatch);
            }
            if advert.interval_cs != self.cfg.interval_cs {
                return Err(Drop::IntervalMismatch);
            }
        }
        let same = advert.addrs.len() == self.cfg.vips.len()
            && self.cfg.vips.iter().all(|a| advert.addrs.contains(a));
        if !same {
            return Err(Drop::AddressListMismatch);
        }
        Ok(())
    }

    fn backup_rx(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        self.master_resigned = advert.priority == RESIGN_PRIORITY;
        if self.master_resigned {
            // RFC 5798 6.4.2: take over after the skew time.
            self.master = Some(src);
            self.timer = Some(now + self.skew_time());
            return;
        }
        let ours = self.effective_priority();
        let lower = advert.priority < ours;
        if lower && self.cfg.preempt && !self.resigned {
            // Preempt: let the master down timer run out, after the
            // preempt delay if one is configured.
            let at = *self.preempt_at.get_or_insert(now + self.cfg.preempt_delay);
            if at <= now {
                return;
            }
        } else {
            self.preempt_at = None;
        }
        self.adopt_interval(now, src, advert);
        self.master = Some(src);
        self.timer = Some(now + self.master_down_interval());
    }

    fn master_rx(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if advert.priority == RESIGN_PRIORITY {
            // Another router resigned: make sure the backups hear a master.
            self.send_advert(self.effective_priority());
            self.timer = Some(now + cs(u64::from(self.cfg.interval_cs)));
            return;
        }
        let ours = self.effective_priority();
        let theirs_wins = advert.priority > ours
            || (advert.priority == ours && addr_greater(src, self.cfg.primary));
        if theirs_wins {
            self.adopt_interval(now, src, advert);
            self.master = Some(src);
            self.become_backup(now, Reason::HigherPriority);
        } else {
            // A lower-priority master (split brain, or one that just
            // started): answer at once so it backs off within one advert,
            // as keepalived does.
            self.send_advert(ours);
            self.timer = Some(now + cs(u64::from(self.cfg.interval_cs)));
        }
    }

    fn adopt_interval(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if advert.interval_cs != self.cfg.interval_cs {
            self.counters.interval_mismatch += 1;
            self.warn(
                now,
                1,
                Warning::IntervalMismatch {
                    from: src,
                    theirs_cs: advert.interval_cs,
                },
            );
        }
        if self.cfg.version == Version::V3 && advert.interval_cs > 0 {
            self.master_interval_cs = advert.interval_cs;
        }
    }

    fn may_become_master(&self) -> bool {
        !self.resigned && !self.fault
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.send_advert(self.effective_priority());
        self.actions.push_back(Action::Announce);
        self.set_vips(VipState::Active);
        self.drain_until = None;
        self.preempt_at = None;
        self.master_resigned = false;
        self.master = None;
        self.master_interval_cs = self.cfg.interval_cs;
        self.timer = Some(now + cs(u64::from(self.cfg.interval_cs)));
        self.garp_second = (!self.cfg.garp.delay.is_zero()).then(|| now + self.cfg.garp.delay);
        self.garp_refresh = (!self.cfg.garp.refresh.is_zero()).then(|| now + self.cfg.garp.refresh);
        self.counters.became_master += 1;
        self.transition(now, State::Master, reason);
    }

    fn become_backup(&mut self, now: Instant, reason: Reason) {
        if self.state == State::Master {
            // Another master exists (we heard it): until its gratuitous
            // ARPs have moved the clients, keep forwarding what still
            // arrives here, as after a resign.
            self.drain_for(now, self.cfg.resign_grace);
        }
        self.garp_second = None;
        self.garp_refresh = None;
        self.preempt_at = None;
        self.timer = Some(now + self.master_down_interval());
        self.transition(now, State::Backup, reason);
    }

    fn enter_fault(&mut self, now: Instant, reason: Reason) {
        if self.state == State::Master {
            // Tell the backups now rather than after the master down
            // interval (keepalived does the same).
            self.send_advert(RESIGN_PRIORITY);
        }
        self.set_vips(VipState::Inactive);
        self.drain_until = None;
        self.timer = None;
        self.garp_second = None;
        self.garp_refresh = None;
        self.preempt_at = None;
        self.master = None;
        self.transition(now, State::Fault, reason);
    }

    fn transition(&mut self, now: Instant, to: State, reason: Reason) {
        let t = Transition {
            at: now,
            from: self.state,
            to,
            reason,
        };
        self.state = to;
        self.last = Some(t);
        self.actions.push_back(Action::Transition(t));
    }

    fn set_vips(&mut self, to: VipState) {
        if self.vips != to {
            self.vips = to;
            self.actions.push_back(Action::Vips(to));
        }
    }

    fn send_advert(&mut self, priority: u8) {
        self.counters.adverts_tx += 1;
        if priority == RESIGN_PRIORITY {
            self.counters.priority_zero_tx += 1;
        }
        self.actions.push_back(Action::Send(Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.cfg.interval_cs,
            addrs: self.cfg.vips.clone(),
            auth: self.cfg.auth.clone(),
        }));
    }

    fn warn(&mut self, now: Instant, kind: usize, w: Warning) {
        let due = self.warned[kind].is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            self.warned[kind] = Some(now);
            self.actions.push_back(Action::Warn(w));
        }
    }
}

fn cs(centiseconds: u64) -> Duration {
    Duration::from_millis(centiseconds * 10)
}

/// RFC 5798 section 6.4.3: the higher primary address wins a tie, compared
/// as unsigned integers in network byte order.
fn addr_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn cfg(priority: u8, primary: u8) -> InstanceConfig {
        InstanceConfig {
            name: "vip1".into(),
            vrid: 51,
            version: Version::V3,
            priority,
            interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, 10))],
            primary: ip(primary),
            unicast_peers: vec![],
            auth: Auth::None,
            garp: Garp {
                delay: Duration::from_secs(5),
                refresh: Duration::ZERO,
            },
            resign_grace: Duration::from_secs(3),
        }
    }

    fn advert(priority: u8, interval_cs: u16) -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority,
            interval_cs,
            addrs: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, 10))],
            auth: Auth::None,
        }
    }

    fn actions(i: &mut Instance) -> Vec<Action> {
        std::iter::from_fn(|| i.poll_action()).collect()
    }

    fn sent_priorities(a: &[Action]) -> Vec<u8> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(ad) => Some(ad.priority),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn timers_follow_rfc_5798_section_6_1() {
        let i = Instance::new(cfg(100, 1));
        // Skew = (256 - 100) * 100 cs / 256 = 60.9 cs -> 60 cs.
        assert_eq!(i.skew_time(), Duration::from_millis(600));
        assert_eq!(i.master_down_interval(), Duration::from_millis(3600));
        let mut v2 = cfg(100, 1);
        v2.version = Version::V2;
        let i = Instance::new(v2);
        // v2: skew = (256 - 100) / 256 s = 609 ms.
        assert_eq!(i.skew_time(), Duration::from_millis(609));
        assert_eq!(i.master_down_interval(), Duration::from_millis(3609));
    }

    #[test]
    fn backup_becomes_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(100, 1));
        i.start(t0);
        assert_eq!(i.state(), State::Backup);
        assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(3600)));
        i.handle_timeout(t0 + Duration::from_millis(3599));
        assert_eq!(i.state(), State::Backup);
        i.handle_timeout(t0 + Duration::from_millis(3600));
        assert_eq!(i.state(), State::Master);
        let a = actions(&mut i);
        assert_eq!(sent_priorities(&a), vec![100]);
        assert!(a.contains(&Action::Announce));
        assert!(a.contains(&Action::Vips(VipState::Active)));
        assert_eq!(
            i.last_transition().map(|t| t.reason),
            Some(Reason::MasterDown)
        );
    }

    #[test]
    fn owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(255, 1));
        i.start(t0);
        assert_eq!(i.state(), State::Master);
        assert_eq!(
            i.last_transition().map(|t| t.reason),
            Some(Reason::AddressOwner)
        );
    }

    #[test]
    fn master_sends_every_interval() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(255, 1));
        i.start(t0);
        actions(&mut i);
        for k in 1..=5 {
            let t = t0 + Duration::from_secs(k);
            assert_eq!(i.poll_timeout(), Some(t));
            i.handle_timeout(t);
            let a = actions(&mut i);
            assert_eq!(sent_priorities(&a), vec![255]);
            // The second GARP burst comes 5 s after becoming master.
            assert_eq!(a.contains(&Action::Announce), k == 5);
        }
    }

    #[test]
    fn backup_adopts_the_masters_interval_v3() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(100, 1));
        i.start(t0);
        i.handle_advert(t0, ip(2), &advert(200, 10));
        // 3 * 10 cs + (156 * 10 / 256 = 6 cs) = 36 cs.
        assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(360)));
        assert_eq!(i.counters().interval_mismatch, 1);
        assert_eq!(i.master(), Some(ip(2)));
    }

    #[test]
    fn v2_drops_interval_and_auth_mismatches() {
        let t0 = Instant::now();
        let mut c = cfg(100, 1);
        c.version = Version::V2;
        c.auth = Auth::Simple(*b"secret\0\0");
        let mut i = Instance::new(c);
        i.start(t0);
        let mut a = advert(200, 100);
        a.version = Version::V2;
        a.auth = Auth::Simple(*b"secret\0\0");
        i.handle_advert(t0, ip(2), &a);
        assert_eq!(i.counters().adverts_rx, 1);
        let mut bad = a.clone();
        bad.interval_cs = 200;
        i.handle_advert(t0, ip(2), &bad);
        let mut bad = a.clone();
        bad.auth = Auth::None;
        i.handle_advert(t0, ip(2), &bad);
        let mut bad = a;
        bad.version = Version::V3;
        i.handle_advert(t0, ip(2), &bad);
        let d = &i.counters().dropped;
        assert_eq!(d[Drop::IntervalMismatch as usize], 1);
        assert_eq!(d[Drop::AuthMismatch as usize], 1);
        assert_eq!(d[Drop::WrongVersion as usize], 1);
        assert_eq!(i.counters().adverts_rx, 1);
    }

    #[test]
    fn priority_zero_makes_the_backup_take_over_after_skew_time() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(100, 1));
        i.start(t0);
        i.handle_advert(t0, ip(2), &advert(200, 100));
        i.handle_advert(t0, ip(2), &advert(0, 100));
        assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(600)));
        i.handle_timeout(t0 + Duration::from_millis(600));
        assert_eq!(i.state(), State::Master);
        assert_eq!(
            i.last_transition().map(|t| t.reason),
            Some(Reason::MasterResigned)
        );
    }

    #[test]
    fn preempt_discards_lower_priority_adverts_and_nopreempt_does_not() {
        for preempt in [true, false] {
            let t0 = Instant::now();
            let mut c = cfg(150, 1);
            c.preempt = preempt;
            let mut i = Instance::new(c);
            i.start(t0);
            let mut t = t0;
            // A lower-priority master advertising every second.
            for _ in 0..10 {
                t += Duration::from_secs(1);
                i.handle_timeout(t);
                if i.state() == State::Master {
                    break;
                }
                i.handle_advert(t, ip(2), &advert(100, 100));
            }
            assert_eq!(i.state() == State::Master, preempt, "preempt {preempt}");
        }
    }

    #[test]
    fn preempt_delay_holds_back_preemption() {
        let t0 = Instant::now();
        let mut c = cfg(150, 1);
        c.preempt_delay = Duration::from_secs(10);
        let mut i = Instance::new(c);
        i.start(t0);
        let mut t = t0;
        let mut became = None;
        for _ in 0..30 {
            t += Duration::from_secs(1);
            i.handle_timeout(t);
            if i.state() == State::Master {
                became = Some(t - t0);
                break;
            }
            i.handle_advert(t, ip(2), &advert(100, 100));
        }
        let after = became.expect("preempts eventually");
        // First lower advert at 1 s, delay 10 s, then the master down
        // interval (3 s + skew 0.41 s) from the last accepted advert.
        assert!(
            after >= Duration::from_secs(11),
            "preempted after {after:?}"
        );
        assert!(
            after <= Duration::from_secs(15),
            "preempted after {after:?}"
        );
    }

    #[test]
    fn master_yields_to_higher_priority_and_to_equal_priority_from_higher_address() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(255, 5));
        i.cfg.priority = 100;
        i.start(t0);
        i.handle_timeout(t0 + Duration::from_secs(4));
        assert_eq!(i.state(), State::Master);
        // Equal priority from a lower address: we stay and answer at once.
        actions(&mut i);
        i.handle_advert(t0, ip(4), &advert(100, 100));
        assert_eq!(i.state(), State::Master);
        assert_eq!(sent_priorities(&actions(&mut i)), vec![100]);
        // Equal priority from a higher address: we yield.
        let t1 = t0 + Duration::from_secs(5);
        i.handle_advert(t1, ip(6), &advert(100, 100));
        assert_eq!(i.state(), State::Backup);
        // The new master's GARPs take a moment: keep forwarding meanwhile.
        assert!(actions(&mut i).contains(&Action::Vips(VipState::Draining)));
        i.handle_timeout(t1 + Duration::from_secs(3));
        assert!(actions(&mut i).contains(&Action::Vips(VipState::Inactive)));
        assert_eq!(
            i.last_transition().map(|t| t.reason),
            Some(Reason::HigherPriority)
        );
    }

    #[test]
    fn resign_sends_priority_zero_and_drains_for_the_grace_period() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(255, 1));
        i.start(t0);
        actions(&mut i);
        let until = i.resign(t0);
        assert_eq!(until, t0 + Duration::from_secs(3));
        let a = actions(&mut i);
        assert_eq!(sent_priorities(&a), vec![0]);
        assert!(a.contains(&Action::Vips(VipState::Draining)));
        assert_eq!(i.state(), State::Backup);
        assert_eq!(i.effective_priority(), 0);
        i.handle_timeout(until);
        assert!(actions(&mut i).contains(&Action::Vips(VipState::Inactive)));
        // Resigned: never master, even with nobody else around.
        i.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(i.state(), State::Backup);
        i.resume(t0 + Duration::from_secs(60));
        i.handle_timeout(t0 + Duration::from_secs(65));
        assert_eq!(i.state(), State::Master);
    }

    #[test]
    fn fault_releases_and_recovers_as_backup() {
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(150, 1));
        i.start(t0);
        i.handle_timeout(t0 + Duration::from_secs(4));
        assert_eq!(i.state(), State::Master);
        actions(&mut i);
        i.set_tracking(t0, 0, true);
        assert_eq!(i.state(), State::Fault);
        let a = actions(&mut i);
        assert_eq!(sent_priorities(&a), vec![0]);
        assert!(a.contains(&Action::Vips(VipState::Inactive)));
        assert_eq!(i.poll_timeout(), None);
        i.set_tracking(t0, 0, false);
        assert_eq!(i.state(), State::Backup);
        assert_eq!(
            i.last_transition().map(|t| t.reason),
            Some(Reason::FaultCleared)
        );
    }

    #[test]
    fn tracking_weights_move_the_effective_priority_within_bounds() {
        let mut i = Instance::new(cfg(100, 1));
        i.set_tracking(Instant::now(), -50, false);
        assert_eq!(i.effective_priority(), 50);
        i.set_tracking(Instant::now(), -500, false);
        assert_eq!(i.effective_priority(), 1);
        i.set_tracking(Instant::now(), 500, false);
        assert_eq!(i.effective_priority(), 254);
    }

    #[test]
    fn unicast_instance_drops_strangers_and_mismatches_are_rate_limited() {
        let t0 = Instant::now();
        let mut c = cfg(100, 1);
        c.unicast_peers = vec![ip(2)];
        let mut i = Instance::new(c);
        i.start(t0);
        actions(&mut i);
        i.handle_advert(t0, ip(3), &advert(200, 100));
        i.handle_advert(t0, ip(1), &advert(200, 100));
        let d = &i.counters().dropped;
        assert_eq!(d[Drop::UnknownPeer as usize], 1);
        assert_eq!(d[Drop::OwnAdvert as usize], 1);
        let mut other = advert(200, 100);
        other.addrs = vec![ip(99)];
        for k in 0..5 {
            i.handle_advert(t0 + Duration::from_secs(k), ip(2), &other);
        }
        assert_eq!(i.counters().dropped[Drop::AddressListMismatch as usize], 5);
        assert_eq!(i.counters().adverts_rx, 0);
        let warnings = actions(&mut i)
            .into_iter()
            .filter(|a| matches!(a, Action::Warn(Warning::AddressListMismatch { .. })))
            .count();
        assert_eq!(warnings, 1);
    }
}
