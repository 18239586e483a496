//! Every VRRP instance of this node, with sync groups and tracking.
//!
//! Sans-IO like [`super::instance`]: the daemon's VRRP thread feeds it
//! received adverts (by link), timeouts and tracked-object changes, and
//! carries out the actions it returns, each tagged with the instance it
//! concerns.
//!
//! Owns: which instance a received advert is for (link, family, VRID),
//! the weights and states of tracked objects, and sync groups (members
//! change state together: one master makes all master, one pushed back to
//! backup makes all backup, one in fault puts all in fault). Must not: open
//! sockets, read clocks, run scripts or look at links itself.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use super::instance::{Action, Instance, InstanceConfig, Reason, State};
use super::wire::Advert;

/// A tracked object, named by kind and target, e.g. `interface:eth1`,
/// `file:/run/x`, `script:check-nginx`, `service:web`.
pub type TrackKey = String;

/// Instances of one node.
#[derive(Debug, Default)]
pub struct Node {
    slots: Vec<Slot>,
    groups: Vec<Vec<usize>>,
    by_vrid: HashMap<(u32, bool, u8), usize>,
    by_name: HashMap<String, usize>,
    /// Tracked objects and whether they are up.
    tracks: HashMap<TrackKey, bool>,
    /// Adverts for a VRID no instance of this link and family runs
    /// (ignored, as keepalived does, but counted).
    pub unknown_vrid: u64,
    actions: VecDeque<(usize, Action)>,
}

#[derive(Debug)]
struct Slot {
    inst: Instance,
    ifindex: u32,
    group: Option<usize>,
    tracks: Vec<(TrackKey, i32)>,
}

/// Why [`Node::add_instance`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    DuplicateName(String),
    DuplicateVrid { ifindex: u32, vrid: u8 },
    UnknownInstance(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::DuplicateName(n) => write!(f, "two VRRP instances named {n:?}"),
            NodeError::DuplicateVrid { ifindex, vrid } => {
                write!(f, "two VRRP instances with VRID {vrid} on link {ifindex}")
            }
            NodeError::UnknownInstance(n) => write!(f, "no VRRP instance named {n:?}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl Node {
    pub fn new() -> Node {
        Node::default()
    }

    /// Adds an instance running on link `ifindex`, watching `tracks`
    /// (key, weight). Objects start up unless [`Node::set_track`] said
    /// otherwise before.
    pub fn add_instance(
        &mut self,
        cfg: InstanceConfig,
        ifindex: u32,
        tracks: Vec<(TrackKey, i32)>,
    ) -> Result<usize, NodeError> {
        if self.by_name.contains_key(&cfg.name) {
            return Err(NodeError::DuplicateName(cfg.name));
        }
        let key = (ifindex, cfg.primary.is_ipv6(), cfg.vrid);
        if self.by_vrid.contains_key(&key) {
            return Err(NodeError::DuplicateVrid {
                ifindex,
                vrid: cfg.vrid,
            });
        }
        let i = self.slots.len();
        self.by_vrid.insert(key, i);
        self.by_name.insert(cfg.name.clone(), i);
        for (k, _) in &tracks {
            self.tracks.entry(k.clone()).or_insert(true);
        }
        self.slots.push(Slot {
            inst: Instance::new(cfg),
            ifindex,
            group: None,
            tracks,
        });
        Ok(i)
    }

    /// Makes the named instances one sync group.
    pub fn add_sync_group(&mut self, members: &[&str]) -> Result<(), NodeError> {
        let g = self.groups.len();
        let mut ids = Vec::with_capacity(members.len());
        for m in members {
            let i = self.index(m)?;
            ids.push(i);
        }
        for &i in &ids {
            self.slots[i].group = Some(g);
        }
        self.groups.push(ids);
        Ok(())
    }

    pub fn index(&self, name: &str) -> Result<usize, NodeError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| NodeError::UnknownInstance(name.to_string()))
    }

    /// The instance for VRID `vrid` on link `ifindex` and family.
    pub fn lookup(&self, ifindex: u32, v6: bool, vrid: u8) -> Option<usize> {
        self.by_vrid.get(&(ifindex, v6, vrid)).copied()
    }

    pub fn instance(&self, i: usize) -> &Instance {
        &self.slots[i].inst
    }

    pub fn ifindex(&self, i: usize) -> u32 {
        self.slots[i].ifindex
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.slots.iter().map(|s| &s.inst)
    }

    /// The state of tracked object `key`, if any instance tracks it.
    pub fn track(&self, key: &str) -> Option<bool> {
        self.tracks.get(key).copied()
    }

    /// Tracked objects and their states.
    pub fn tracks(&self) -> impl Iterator<Item = (&TrackKey, bool)> {
        self.tracks.iter().map(|(k, up)| (k, *up))
    }

    /// Starts every instance (Initialize → Backup, or Master for owners).
    pub fn start(&mut self, now: Instant) {
        self.apply_tracking(now);
        for i in 0..self.slots.len() {
            self.slots[i].inst.start(now);
            self.drain(now, i);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.inst.poll_timeout())
            .min()
    }

    pub fn poll_action(&mut self) -> Option<(usize, Action)> {
        self.actions.pop_front()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].inst.poll_timeout().is_some_and(|t| t <= now) {
                self.slots[i].inst.handle_timeout(now);
                self.drain(now, i);
            }
        }
    }

    /// An advert received on link `ifindex` from `src`.
    pub fn handle_advert(&mut self, now: Instant, ifindex: u32, src: IpAddr, advert: &Advert) {
        let Some(&i) = self.by_vrid.get(&(ifindex, src.is_ipv6(), advert.vrid)) else {
            self.unknown_vrid += 1;
            return;
        };
        self.slots[i].inst.handle_advert(now, src, advert);
        self.drain(now, i);
    }

    /// A tracked object changed state.
    pub fn set_track(&mut self, now: Instant, key: &str, up: bool) {
        match self.tracks.get_mut(key) {
            Some(state) if *state == up => return,
            Some(state) => *state = up,
            None => {
                self.tracks.insert(key.to_string(), up);
            }
        }
        self.apply_tracking(now);
    }

    /// `vipgate vrrp resign NAME` (and shutdown): resigns the instance and
    /// the rest of its sync group. Returns when the last grace period ends.
    pub fn resign(&mut self, now: Instant, name: &str) -> Result<Instant, NodeError> {
        let i = self.index(name)?;
        let mut until = now;
        for m in self.members(i) {
            until = until.max(self.slots[m].inst.resign(now));
            self.drain(now, m);
        }
        Ok(until)
    }

    /// Resigns every instance (shutdown); returns when the grace ends.
    pub fn resign_all(&mut self, now: Instant) -> Instant {
        let mut until = now;
        for i in 0..self.slots.len() {
            until = until.max(self.slots[i].inst.resign(now));
            self.drain(now, i);
        }
        until
    }

    pub fn resume(&mut self, now: Instant, name: &str) -> Result<(), NodeError> {
        let i = self.index(name)?;
        for m in self.members(i) {
            self.slots[m].inst.resume(now);
            self.drain(now, m);
        }
        Ok(())
    }

    /// The instance and the other members of its group.
    fn members(&self, i: usize) -> Vec<usize> {
        match self.slots[i].group {
            Some(g) => self.groups[g].clone(),
            None => vec![i],
        }
    }

    /// Sum of weights and own fault of instance `i`, from track states.
    fn tracking_of(&self, i: usize) -> (i32, bool) {
        let mut adjust = 0;
        let mut fault = false;
        for (key, weight) in &self.slots[i].tracks {
            let up = self.tracks.get(key).copied().unwrap_or(true);
            match (*weight, up) {
                (0, false) => fault = true,
                (w, true) if w > 0 => adjust += w,
                (w, false) if w < 0 => adjust += w,
                _ => {}
            }
        }
        (adjust, fault)
    }

    fn apply_tracking(&mut self, now: Instant) {
        let own: Vec<(i32, bool)> = (0..self.slots.len()).map(|i| self.tracking_of(i)).collect();
        for i in 0..self.slots.len() {
            let (adjust, mut fault) = own[i];
            if let Some(g) = self.slots[i].group {
                fault |= self.groups[g].iter().any(|&m| own[m].1);
            }
            self.slots[i].inst.set_tracking(now, adjust, fault);
            self.drain(now, i);
        }
    }

    /// Moves instance `i`'s actions to the node queue and lets its sync
    /// group follow its transitions.
    fn drain(&mut self, now: Instant, i: usize) {
        let mut follow = None;
        while let Some(a) = self.slots[i].inst.poll_action() {
            if let Action::Transition(t) = &a {
                let own = !matches!(t.reason, Reason::SyncGroup | Reason::Fault);
                if own && matches!(t.to, State::Master | State::Backup) {
                    follow = Some(t.to);
                }
            }
            self.actions.push_back((i, a));
        }
        let (Some(to), Some(g)) = (follow, self.slots[i].group) else {
            return;
        };
        for m in self.groups[g].clone() {
            if m != i {
                self.slots[m].inst.follow(now, to);
                while let Some(a) = self.slots[m].inst.poll_action() {
                    self.actions.push_back((m, a));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Virtual-time tests: routers on one simulated link, adverts delivered
    //! after 1 ms, seeded random events.

    use super::*;
    use crate::vrrp::instance::{Garp, VipState};
    use crate::vrrp::wire::{Auth, Version};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const DELAY: Duration = Duration::from_millis(1);
    const TRACK: &str = "interface:eth0";
    const WEIGHT: &str = "script:weight";

    fn addr(r: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + r as u8))
    }

    fn config(name: &str, vrid: u8, priority: u8, r: usize, interval_cs: u16) -> InstanceConfig {
        InstanceConfig {
            name: name.into(),
            vrid,
            version: Version::V3,
            priority,
            interval_cs,
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, vrid))],
            primary: addr(r),
            unicast_peers: vec![],
            auth: Auth::None,
            garp: Garp {
                delay: Duration::ZERO,
                refresh: Duration::ZERO,
            },
            resign_grace: Duration::from_millis(500),
        }
    }

    struct Router {
        node: Node,
        priority: u8,
        alive: bool,
        faulted: bool,
        lowered: bool,
        resigned: bool,
    }

    struct Sim {
        now: Instant,
        routers: Vec<Router>,
        interval_cs: u16,
        in_flight: Vec<(Instant, usize, Advert)>,
        masters_since: Option<Instant>,
        worst_dual: Duration,
        vips_active: Vec<bool>,
    }

    impl Sim {
        fn new(priorities: &[u8], interval_cs: u16) -> Sim {
            let now = Instant::now();
            let mut s = Sim {
                now,
                routers: vec![],
                interval_cs,
                in_flight: vec![],
                masters_since: None,
                worst_dual: Duration::ZERO,
                vips_active: vec![false; priorities.len()],
            };
            for (r, &p) in priorities.iter().enumerate() {
                s.routers.push(Router {
                    node: s.node(r, p),
                    priority: p,
                    alive: true,
                    faulted: false,
                    lowered: false,
                    resigned: false,
                });
            }
            for r in 0..s.routers.len() {
                s.routers[r].node.start(now);
                s.collect(r);
            }
            s
        }

        fn node(&self, r: usize, priority: u8) -> Node {
            let mut n = Node::new();
            let tracks = vec![(TRACK.to_string(), 0), (WEIGHT.to_string(), -60)];
            n.add_instance(config("vi", 51, priority, r, self.interval_cs), 1, tracks)
                .expect("one instance");
            n
        }

        fn collect(&mut self, r: usize) {
            while let Some((_, a)) = self.routers[r].node.poll_action() {
                match a {
                    Action::Send(ad) => self.in_flight.push((self.now + DELAY, r, ad)),
                    Action::Vips(v) => self.vips_active[r] = v == VipState::Active,
                    _ => {}
                }
            }
        }

        fn masters(&self) -> Vec<usize> {
            (0..self.routers.len())
                .filter(|&r| {
                    self.routers[r].alive
                        && self.routers[r].node.instance(0).state() == State::Master
                })
                .collect()
        }

        /// Runs until `until`, checking that two masters never last longer
        /// than the master down interval.
        fn run(&mut self, until: Instant) {
            loop {
                let next_timer = (0..self.routers.len())
                    .filter(|&r| self.routers[r].alive)
                    .filter_map(|r| self.routers[r].node.poll_timeout())
                    .min();
                let next_packet = self.in_flight.iter().map(|p| p.0).min();
                let Some(next) = [next_timer, next_packet].into_iter().flatten().min() else {
                    self.now = until;
                    return;
                };
                if next > until {
                    self.now = until;
                    return;
                }
                self.now = next;
                let due: Vec<_> = {
                    let (due, rest) = self.in_flight.drain(..).partition(|p| p.0 <= next);
                    self.in_flight = rest;
                    due
                };
                for (_, from, ad) in due {
                    for r in 0..self.routers.len() {
                        if r != from && self.routers[r].alive {
                            self.routers[r].node.handle_advert(next, 1, addr(from), &ad);
                            self.collect(r);
                        }
                    }
                }
                for r in 0..self.routers.len() {
                    if self.routers[r].alive {
                        self.routers[r].node.handle_timeout(next);
                        self.collect(r);
                    }
                }
                self.check();
            }
        }

        fn check(&mut self) {
            if self.masters().len() > 1 {
                let since = *self.masters_since.get_or_insert(self.now);
                self.worst_dual = self.worst_dual.max(self.now - since);
            } else {
                self.masters_since = None;
            }
        }

        fn advance(&mut self, d: Duration) {
            let until = self.now + d;
            self.run(until);
        }

        fn event(&mut self, kind: u64, r: usize) {
            let now = self.now;
            let router = &mut self.routers[r];
            match kind {
                0 if router.alive => {
                    router.alive = false;
                    self.vips_active[r] = false;
                }
                0 => {
                    let p = router.priority;
                    self.routers[r].node = self.node(r, p);
                    let router = &mut self.routers[r];
                    router.alive = true;
                    router.faulted = false;
                    router.lowered = false;
                    router.resigned = false;
                    router.node.start(now);
                }
                1 if router.alive => {
                    router.faulted = !router.faulted;
                    router.node.set_track(now, TRACK, !router.faulted);
                }
                2 if router.alive => {
                    router.lowered = !router.lowered;
                    router.node.set_track(now, WEIGHT, !router.lowered);
                }
                3 if router.alive && !router.resigned => {
                    router.resigned = true;
                    router.node.resign(now, "vi").expect("exists");
                }
                3 if router.alive => {
                    router.resigned = false;
                    router.node.resume(now, "vi").expect("exists");
                }
                _ => {}
            }
            self.collect(r);
            self.check();
        }

        /// The priority the master must have once things settle: the
        /// highest effective priority among eligible routers.
        fn top_priority(&self) -> Option<u8> {
            (0..self.routers.len())
                .filter(|&r| {
                    let x = &self.routers[r];
                    x.alive && !x.faulted && !x.resigned
                })
                .map(|r| self.routers[r].node.instance(0).effective_priority())
                .max()
        }

        fn master_down_bound(&self) -> Duration {
            // 3 intervals + skew (below one interval) + delivery.
            4 * Duration::from_millis(u64::from(self.interval_cs) * 10) + 2 * DELAY
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn two_routers_elect_the_higher_priority_and_fail_over() {
        let mut s = Sim::new(&[100, 200], 100);
        s.advance(Duration::from_secs(5));
        assert_eq!(s.masters(), vec![1]);
        assert!(s.vips_active[1] && !s.vips_active[0]);
        s.event(0, 1); // kill the master
        let killed = s.now;
        s.advance(Duration::from_secs(5));
        assert_eq!(s.masters(), vec![0]);
        let took_over = s.routers[0]
            .node
            .instance(0)
            .last_transition()
            .expect("moved");
        let gap = took_over.at - killed;
        // Master down interval of priority 100 at 1 s: 3.609 s... with the
        // skew in whole centiseconds: 3.6 s after the last advert.
        assert!(gap <= Duration::from_millis(3600), "took {gap:?}");
        s.event(0, 1); // back: preempts
        s.advance(Duration::from_secs(5));
        assert_eq!(s.masters(), vec![1]);
        assert!(
            s.worst_dual <= DELAY * 2,
            "dual masters for {:?}",
            s.worst_dual
        );
    }

    #[test]
    fn resign_hands_over_after_skew_time_and_resume_takes_back() {
        let mut s = Sim::new(&[100, 200], 10);
        s.advance(Duration::from_secs(1));
        assert_eq!(s.masters(), vec![1]);
        let t = s.now;
        s.event(3, 1);
        assert!(!s.vips_active[1]);
        s.advance(Duration::from_millis(100));
        assert_eq!(s.masters(), vec![0]);
        let took = s.routers[0]
            .node
            .instance(0)
            .last_transition()
            .expect("moved");
        assert_eq!(took.reason, Reason::MasterResigned);
        // Skew time of priority 100 at 10 cs: 6 cs.
        assert!(
            took.at - t <= Duration::from_millis(61),
            "{:?}",
            took.at - t
        );
        s.event(3, 1);
        s.advance(Duration::from_secs(1));
        assert_eq!(s.masters(), vec![1]);
    }

    #[test]
    fn sync_group_members_move_together() {
        let now = Instant::now();
        let mut n = Node::new();
        n.add_instance(config("a", 1, 100, 0, 100), 1, vec![])
            .expect("a");
        let mut b = config("b", 2, 100, 0, 100);
        b.vips = vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2))];
        n.add_instance(b, 2, vec![(TRACK.into(), 0)]).expect("b");
        n.add_sync_group(&["a", "b"]).expect("group");
        n.start(now);
        n.handle_timeout(now + Duration::from_secs(4));
        assert_eq!(n.instance(0).state(), State::Master);
        assert_eq!(n.instance(1).state(), State::Master);
        // b's link goes down: the whole group faults.
        n.set_track(now + Duration::from_secs(5), TRACK, false);
        assert_eq!(n.instance(0).state(), State::Fault);
        assert_eq!(n.instance(1).state(), State::Fault);
        n.set_track(now + Duration::from_secs(6), TRACK, true);
        assert_eq!(n.instance(0).state(), State::Backup);
        // A higher-priority router on a's link: both go back to backup.
        n.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(n.instance(1).state(), State::Master);
        let mut ad = Advert {
            version: Version::V3,
            vrid: 1,
            priority: 200,
            interval_cs: 100,
            addrs: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1))],
            auth: Auth::None,
        };
        n.handle_advert(now + Duration::from_secs(11), 1, addr(9), &ad);
        assert_eq!(n.instance(0).state(), State::Backup);
        assert_eq!(n.instance(1).state(), State::Backup);
        // An advert for a VRID nobody runs is counted.
        ad.vrid = 77;
        n.handle_advert(now + Duration::from_secs(11), 1, addr(9), &ad);
        assert_eq!(n.unknown_vrid, 1);
        assert!(n.resign(now, "nope").is_err());
    }

    #[test]
    fn random_event_sequences_never_keep_two_masters_and_converge() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let n = 2 + rng.below(4) as usize;
            // Few distinct priorities, so ties (broken on the address) happen.
            let priorities: Vec<u8> = (0..n)
                .map(|_| [50, 100, 110, 160][rng.below(4) as usize])
                .collect();
            let interval = if rng.below(2) == 0 { 10 } else { 100 };
            let mut s = Sim::new(&priorities, interval);
            let step = Duration::from_millis(u64::from(interval) * 10);
            for _ in 0..20 {
                s.advance(step * (1 + rng.below(8) as u32));
                let kind = rng.below(4);
                let r = rng.below(n as u64) as usize;
                s.event(kind, r);
            }
            // Settle: nothing happens for many intervals.
            s.advance(step * 40);
            let bound = s.master_down_bound();
            assert!(
                s.worst_dual <= bound,
                "seed {seed}: two masters for {:?} (bound {bound:?}), priorities {priorities:?}",
                s.worst_dual
            );
            // Exactly one master, of the highest effective priority among
            // the eligible routers (a backup does not preempt a master of
            // equal priority, RFC 5798 6.4.2, so any of a tie may hold it).
            let masters = s.masters();
            let top = s.top_priority();
            match top {
                None => assert!(masters.is_empty(), "seed {seed}: masters {masters:?}"),
                Some(p) => {
                    assert_eq!(
                        masters.len(),
                        1,
                        "seed {seed}: masters {masters:?}, {priorities:?}"
                    );
                    let got = s.routers[masters[0]].node.instance(0).effective_priority();
                    assert_eq!(got, p, "seed {seed}: {priorities:?}, interval {interval}");
                }
            }
            for r in 0..n {
                assert_eq!(
                    s.vips_active[r],
                    masters.contains(&r),
                    "seed {seed}: router {r} VIP state"
                );
            }
        }
    }
}
