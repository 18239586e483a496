//! The sans-IO core of health checking: per-backend rise/fall counting and
//! check schedule ([`TargetState`]), and the service-level verdict with
//! quorum, hysteresis and hold-down ([`ServiceHealth`]).
//!
//! Nothing here reads a clock, opens a socket or draws from the system's
//! randomness: callers pass `now` and a seed, so tests run on virtual time
//! and are reproducible. Owns: counters, the schedule with its jitter, the
//! current verdicts and the reasons for them. Must not: probe anything
//! (that is [`super::probe`]) or know what a verdict is used for (the
//! daemon feeds it to the scheduler, VRRP and BGP).

use std::time::{Duration, Instant};

use super::{CheckResult, CheckSpec, TargetId, TargetStatus, Transition};

/// Largest jitter accepted, as a fraction of the interval.
pub const MAX_JITTER: f64 = 0.5;

/// The part of a [`CheckSpec`] the state machine needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub interval: Duration,
    /// Consecutive successes that make an unhealthy backend healthy (≥ 1).
    pub rise: u32,
    /// Consecutive failures that make a healthy backend unhealthy (≥ 1).
    pub fall: u32,
    pub startup_delay: Duration,
    /// Fraction of the interval, clamped to `0.0..=MAX_JITTER`.
    pub jitter: f64,
    pub initially_healthy: bool,
}

impl From<&CheckSpec> for Timing {
    fn from(spec: &CheckSpec) -> Timing {
        Timing {
            interval: spec.interval,
            rise: spec.rise,
            fall: spec.fall,
            startup_delay: spec.startup_delay,
            jitter: spec.jitter,
            initially_healthy: spec.initially_healthy,
        }
    }
}

impl Timing {
    fn rise(&self) -> u32 {
        self.rise.max(1)
    }

    fn fall(&self) -> u32 {
        self.fall.max(1)
    }

    fn jitter(&self) -> f64 {
        if self.jitter.is_finite() {
            self.jitter.clamp(0.0, MAX_JITTER)
        } else {
            0.0
        }
    }
}

/// One backend's health: the verdict, the counters behind it and when the
/// next check is due.
///
/// The schedule is fixed-rate: a check is due one (jittered) interval after
/// the previous one *started*, or at once when the previous one took
/// longer than that, so `fall × interval` bounds the detection time of a
/// backend that refuses connections. Two checks of one backend never run
/// at the same time.
#[derive(Debug, Clone)]
pub struct TargetState {
    id: TargetId,
    timing: Timing,
    healthy: bool,
    /// When the verdict last changed (or the state was made).
    since: Instant,
    consecutive_ok: u32,
    consecutive_fail: u32,
    checks: u64,
    failures: u64,
    /// Start of the running check, if one runs.
    running: Option<Instant>,
    next_due: Instant,
    last: Option<CheckResult>,
    rng: SplitMix64,
}

impl TargetState {
    /// A backend nothing is known about yet: healthy or not as
    /// `timing.initially_healthy` says, first check after the start-up
    /// delay plus a random part of up to `jitter × interval` (so the first
    /// checks of many backends do not fire together).
    pub fn new(id: TargetId, timing: Timing, now: Instant, seed: u64) -> TargetState {
        let mut rng = SplitMix64::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let spread = timing.interval.mul_f64(timing.jitter() * rng.next_unit());
        TargetState {
            id,
            timing,
            healthy: timing.initially_healthy,
            since: now,
            consecutive_ok: 0,
            consecutive_fail: 0,
            checks: 0,
            failures: 0,
            running: None,
            next_due: now + timing.startup_delay + spread,
            last: None,
            rng,
        }
    }

    pub fn id(&self) -> TargetId {
        self.id
    }

    /// Renumbers the target (the set of targets was replaced and this one
    /// kept its state).
    pub fn set_id(&mut self, id: TargetId) {
        self.id = id;
        if let Some(last) = self.last.as_mut() {
            last.id = id;
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// When the next check should start; `None` while one runs.
    pub fn due(&self) -> Option<Instant> {
        match self.running {
            Some(_) => None,
            None => Some(self.next_due),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// A check started at `now`.
    pub fn begin(&mut self, now: Instant) {
        self.running = Some(now);
    }

    /// A check finished (after its retries) at `result.at`. Returns the
    /// transition when this result changed the verdict: to unhealthy on
    /// exactly the `fall`-th consecutive failure, to healthy on exactly the
    /// `rise`-th consecutive success.
    pub fn finish(&mut self, result: CheckResult) -> Option<Transition> {
        let now = result.at;
        let started = self.running.take().unwrap_or(now);
        let period = self.jittered_interval();
        self.next_due = (started + period).max(now);
        self.checks = self.checks.saturating_add(1);
        let transition = if result.ok {
            self.count_success(&result)
        } else {
            self.count_failure(&result)
        };
        self.last = Some(result);
        if let Some(t) = &transition {
            self.since = t.at;
        }
        transition
    }

    fn count_success(&mut self, result: &CheckResult) -> Option<Transition> {
        self.consecutive_fail = 0;
        self.consecutive_ok = self.consecutive_ok.saturating_add(1);
        if self.healthy || self.consecutive_ok < self.timing.rise() {
            return None;
        }
        self.healthy = true;
        let n = self.consecutive_ok;
        Some(self.transition(
            result,
            format!("{} ({n} consecutive successes)", result.reason),
        ))
    }

    fn count_failure(&mut self, result: &CheckResult) -> Option<Transition> {
        self.consecutive_ok = 0;
        self.consecutive_fail = self.consecutive_fail.saturating_add(1);
        self.failures = self.failures.saturating_add(1);
        if !self.healthy || self.consecutive_fail < self.timing.fall() {
            return None;
        }
        self.healthy = false;
        let n = self.consecutive_fail;
        Some(self.transition(
            result,
            format!("{} ({n} consecutive failures)", result.reason),
        ))
    }

    fn transition(&self, result: &CheckResult, reason: String) -> Transition {
        Transition {
            id: self.id,
            healthy: self.healthy,
            reason,
            at: result.at,
        }
    }

    /// The interval times a uniform factor in `1 ± jitter`.
    fn jittered_interval(&mut self) -> Duration {
        let jitter = self.timing.jitter();
        if jitter == 0.0 {
            return self.timing.interval;
        }
        let factor = 1.0 + jitter * (2.0 * self.rng.next_unit() - 1.0);
        self.timing.interval.mul_f64(factor)
    }

    /// What the operator sees.
    pub fn status(&self) -> TargetStatus {
        TargetStatus {
            id: self.id,
            healthy: self.healthy,
            since: self.since,
            last: self.last.clone(),
            consecutive_ok: self.consecutive_ok,
            consecutive_fail: self.consecutive_fail,
            checks: self.checks,
            failures: self.failures,
            running: self.running.is_some(),
            next_due: self.due(),
        }
    }
}

/// How a service's backends add up to "this node can serve it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePolicy {
    /// Healthy weight the service needs (0 is taken as 1: a service with no
    /// healthy backend is never usable).
    pub quorum: u32,
    /// Up when the healthy weight is ≥ quorum + hysteresis, down when it
    /// is < quorum − hysteresis (keepalived's quorum_up/quorum_down rule).
    pub hysteresis: u32,
    /// After the service went down it stays down at least this long before
    /// it may come back up.
    pub hold_down: Duration,
}

impl Default for ServicePolicy {
    fn default() -> ServicePolicy {
        ServicePolicy {
            quorum: 1,
            hysteresis: 0,
            hold_down: Duration::ZERO,
        }
    }
}

impl ServicePolicy {
    fn up_at(&self) -> u64 {
        u64::from(self.quorum.max(1)) + u64::from(self.hysteresis)
    }

    /// Below this the service goes down; never below 1, so that zero
    /// healthy weight always means down whatever the hysteresis.
    fn down_below(&self) -> u64 {
        u64::from(self.quorum.max(1).saturating_sub(self.hysteresis).max(1))
    }
}

/// A service's usable/unusable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTransition {
    pub usable: bool,
    /// Healthy weight at the change.
    pub weight: u64,
    pub reason: String,
    pub at: Instant,
}

/// The service-level verdict the daemon uses for BGP and VRRP: whether the
/// healthy backends' weights reach the quorum, with hysteresis and a
/// hold-down so that a flapping backend cannot flap the service.
///
/// Going down is never delayed: a service that cannot serve must stop
/// attracting traffic at once. Coming back up waits until `hold_down` has
/// passed since the service went down, so the service flips at most once
/// down and once up per `hold_down`. Call [`ServiceHealth::update`] when a
/// backend's verdict or weight changes and [`ServiceHealth::poll`] at
/// [`ServiceHealth::poll_timeout`].
#[derive(Debug, Clone)]
pub struct ServiceHealth {
    policy: ServicePolicy,
    usable: bool,
    weight: u64,
    since: Instant,
    /// When the service last went down.
    went_down: Option<Instant>,
}

impl ServiceHealth {
    pub fn new(policy: ServicePolicy, initially_usable: bool, now: Instant) -> ServiceHealth {
        ServiceHealth {
            policy,
            usable: initially_usable,
            weight: 0,
            since: now,
            went_down: None,
        }
    }

    /// Sum of the weights of the healthy backends, from `(healthy, weight)`
    /// pairs (a drained or zero-weight backend counts nothing).
    pub fn healthy_weight(backends: impl IntoIterator<Item = (bool, u32)>) -> u64 {
        backends
            .into_iter()
            .filter(|(healthy, _)| *healthy)
            .map(|(_, w)| u64::from(w))
            .sum()
    }

    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Healthy weight last passed to [`ServiceHealth::update`].
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// When the verdict last changed.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn policy(&self) -> &ServicePolicy {
        &self.policy
    }

    /// The healthy weight is now `weight`.
    pub fn update(&mut self, weight: u64, now: Instant) -> Option<ServiceTransition> {
        self.weight = weight;
        self.poll(now)
    }

    /// Re-evaluates with the last weight (a held-back rise may be due).
    pub fn poll(&mut self, now: Instant) -> Option<ServiceTransition> {
        if self.usable && self.weight < self.policy.down_below() {
            self.went_down = Some(now);
            let reason = format!(
                "healthy weight {} below {}",
                self.weight,
                self.policy.down_below()
            );
            return Some(self.flip(false, reason, now));
        }
        if !self.usable && self.weight >= self.policy.up_at() && self.hold_over(now) {
            let reason = format!(
                "healthy weight {} reaches {}",
                self.weight,
                self.policy.up_at()
            );
            return Some(self.flip(true, reason, now));
        }
        None
    }

    /// When [`ServiceHealth::poll`] should run again: the end of the
    /// hold-down while it holds back a rise, otherwise never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held_up = !self.usable && self.weight >= self.policy.up_at();
        match self.went_down {
            Some(down) if held_up => Some(down + self.policy.hold_down),
            _ => None,
        }
    }

    fn hold_over(&self, now: Instant) -> bool {
        self.went_down
            .is_none_or(|down| now >= down + self.policy.hold_down)
    }

    fn flip(&mut self, usable: bool, reason: String, now: Instant) -> ServiceTransition {
        self.usable = usable;
        self.since = now;
        ServiceTransition {
            usable: self.usable,
            weight: self.weight,
            reason,
            at: now,
        }
    }
}

/// SplitMix64: a small, seeded generator for jitter (no cryptographic
/// use; reproducible in tests).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        // 53 random bits: every value is exact in an f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn timing(rise: u32, fall: u32, initially_healthy: bool) -> Timing {
        Timing {
            interval: SECOND,
            rise,
            fall,
            startup_delay: Duration::ZERO,
            jitter: 0.0,
            initially_healthy,
        }
    }

    fn result(ok: bool, at: Instant) -> CheckResult {
        CheckResult {
            id: 7,
            ok,
            reason: if ok { "connected" } else { "connect refused" }.into(),
            latency: Duration::from_millis(1),
            at,
        }
    }

    /// Runs one check per interval with the given outcomes; returns the
    /// transitions with the index of the check that caused each.
    fn drive(
        state: &mut TargetState,
        start: Instant,
        outcomes: &[bool],
    ) -> Vec<(usize, Transition)> {
        let mut out = Vec::new();
        let mut now = start;
        for (i, &ok) in outcomes.iter().enumerate() {
            now = state.due().expect("not running").max(now);
            state.begin(now);
            let done = now + Duration::from_millis(2);
            if let Some(t) = state.finish(result(ok, done)) {
                out.push((i, t));
            }
        }
        out
    }

    #[test]
    fn falls_on_exactly_the_fall_th_failure() {
        let t0 = Instant::now();
        let mut s = TargetState::new(7, timing(2, 3, true), t0, 1);
        let ts = drive(
            &mut s,
            t0,
            &[false, false, true, false, false, false, false],
        );
        assert_eq!(ts.len(), 1, "{ts:?}");
        let (at, t) = &ts[0];
        assert_eq!(*at, 5);
        assert!(!t.healthy);
        assert_eq!(t.id, 7);
        assert_eq!(t.reason, "connect refused (3 consecutive failures)");
        let st = s.status();
        assert_eq!((st.consecutive_fail, st.checks, st.failures), (4, 7, 6));
        assert!(!st.healthy);
        assert_eq!(st.since, t.at);
    }

    #[test]
    fn rises_on_exactly_the_rise_th_success() {
        let t0 = Instant::now();
        let mut s = TargetState::new(0, timing(2, 3, false), t0, 1);
        assert!(!s.healthy());
        let ts = drive(&mut s, t0, &[true, false, true, true, true]);
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].0, 3);
        assert!(ts[0].1.healthy);
        assert_eq!(ts[0].1.reason, "connected (2 consecutive successes)");
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t0 = Instant::now();
        let mut s = TargetState::new(0, timing(0, 0, true), t0, 1);
        let ts = drive(&mut s, t0, &[false, true]);
        assert_eq!(ts.len(), 2);
    }

    #[test]
    fn a_flapping_backend_with_rise_and_fall_two_never_transitions() {
        let t0 = Instant::now();
        let flapping: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        for initially in [true, false] {
            for first_ok in [true, false] {
                let outcomes: Vec<bool> = flapping.iter().map(|ok| *ok == first_ok).collect();
                let mut s = TargetState::new(0, timing(2, 2, initially), t0, 3);
                assert!(drive(&mut s, t0, &outcomes).is_empty());
                assert_eq!(s.healthy(), initially);
                assert_eq!(s.status().checks, 1000);
            }
        }
    }

    #[test]
    fn schedule_is_fixed_rate_and_never_overlaps() {
        let t0 = Instant::now();
        let mut t = timing(1, 1, true);
        t.startup_delay = Duration::from_secs(5);
        let mut s = TargetState::new(0, t, t0, 1);
        assert_eq!(s.due(), Some(t0 + Duration::from_secs(5)));
        let start = t0 + Duration::from_secs(5);
        s.begin(start);
        assert_eq!(s.due(), None);
        assert!(s.status().running);
        // A fast check: next one interval after this one started.
        s.finish(result(true, start + Duration::from_millis(300)));
        assert_eq!(s.due(), Some(start + SECOND));
        // A check slower than the interval: the next starts at once.
        let start = start + SECOND;
        s.begin(start);
        let late = start + Duration::from_millis(2500);
        s.finish(result(true, late));
        assert_eq!(s.due(), Some(late));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_is_seeded() {
        let t0 = Instant::now();
        let mut t = timing(1, 1, true);
        t.jitter = 0.2;
        let mut s = TargetState::new(0, t, t0, 42);
        let first = s.due().unwrap() - t0;
        assert!(first <= Duration::from_millis(200), "{first:?}");
        let mut seen = std::collections::BTreeSet::new();
        let mut now = s.due().unwrap();
        for _ in 0..1000 {
            s.begin(now);
            s.finish(result(true, now));
            let gap = s.due().unwrap() - now;
            assert!(
                gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1200),
                "{gap:?}"
            );
            seen.insert(gap.as_millis() / 50);
            now = s.due().unwrap();
        }
        // Spread over the whole ±20 % band, not stuck at one value.
        assert!(seen.len() >= 8, "{seen:?}");
        let again = TargetState::new(0, t, t0, 42);
        assert_eq!(again.due().unwrap() - t0, first);
        // Out-of-range jitter is clamped, NaN is none.
        t.jitter = f64::NAN;
        assert_eq!(TargetState::new(0, t, t0, 42).due(), Some(t0));
        t.jitter = 7.0;
        let clamped = TargetState::new(0, t, t0, 42).due().unwrap() - t0;
        assert!(clamped <= Duration::from_millis(500));
    }

    #[test]
    fn first_checks_of_many_targets_are_spread() {
        let t0 = Instant::now();
        let mut t = timing(1, 1, true);
        t.jitter = 0.5;
        let mut per_10ms = [0u32; 51];
        for id in 0..1000 {
            let due = TargetState::new(id, t, t0, 9).due().unwrap() - t0;
            per_10ms[(due.as_millis() / 10) as usize] += 1;
        }
        // 1,000 first checks over 500 ms: about 20 per 10 ms, none
        // crowded.
        let busiest = per_10ms.iter().max().copied().unwrap_or(0);
        assert!(busiest < 50, "{per_10ms:?}");
        assert!(per_10ms[..50].iter().all(|&n| n > 0), "{per_10ms:?}");
    }

    #[test]
    fn renumbering_keeps_state() {
        let t0 = Instant::now();
        let mut s = TargetState::new(3, timing(1, 1, true), t0, 1);
        drive(&mut s, t0, &[false]);
        s.set_id(0);
        let st = s.status();
        assert_eq!((st.id, st.last.map(|l| l.id)), (0, Some(0)));
        assert!(!st.healthy);
    }

    fn policy(quorum: u32, hysteresis: u32, hold_down: Duration) -> ServicePolicy {
        ServicePolicy {
            quorum,
            hysteresis,
            hold_down,
        }
    }

    #[test]
    fn quorum_with_hysteresis() {
        let t0 = Instant::now();
        let mut s = ServiceHealth::new(policy(3, 1, Duration::ZERO), true, t0);
        assert_eq!(s.update(5, t0), None);
        assert_eq!(s.update(2, t0), None, "down only below quorum - hysteresis");
        let down = s.update(1, t0).unwrap();
        assert!(!down.usable);
        assert_eq!(down.reason, "healthy weight 1 below 2");
        assert_eq!(s.update(3, t0), None, "up only at quorum + hysteresis");
        let up = s.update(4, t0).unwrap();
        assert!(up.usable);
        assert_eq!(up.reason, "healthy weight 4 reaches 4");
        assert_eq!(s.since(), t0);
    }

    #[test]
    fn no_healthy_weight_is_always_down() {
        let t0 = Instant::now();
        // keepalived's rule alone would never go down here (1 - 1 = 0).
        let mut s = ServiceHealth::new(policy(1, 1, Duration::ZERO), true, t0);
        assert_eq!(s.update(1, t0), None);
        assert!(!s.update(0, t0).unwrap().usable);
        assert_eq!(s.update(1, t0), None);
        assert!(s.update(2, t0).unwrap().usable);
        // Quorum 0 is quorum 1.
        let mut s = ServiceHealth::new(policy(0, 0, Duration::ZERO), true, t0);
        assert!(!s.update(0, t0).unwrap().usable);
        assert!(s.update(1, t0).unwrap().usable);
    }

    #[test]
    fn hold_down_delays_coming_back_not_going_down() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        let mut s = ServiceHealth::new(policy(1, 0, hold), true, t0);
        assert!(!s.update(0, t0).unwrap().usable, "down at once");
        assert_eq!(s.update(1, t0 + SECOND), None);
        assert_eq!(s.poll_timeout(), Some(t0 + hold));
        assert_eq!(s.poll(t0 + hold - Duration::from_millis(1)), None);
        let up = s.poll(t0 + hold).unwrap();
        assert!(up.usable);
        assert_eq!(s.poll_timeout(), None);
        // Down again right away: allowed.
        assert!(!s.update(0, t0 + hold + SECOND).unwrap().usable);
        // Weight back and gone again inside the hold: nothing to wait for.
        assert_eq!(s.update(1, t0 + hold + 2 * SECOND), None);
        assert_eq!(s.update(0, t0 + hold + 3 * SECOND), None);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn healthy_weight_sums_healthy_backends() {
        let w =
            ServiceHealth::healthy_weight([(true, 10), (false, 50), (true, 0), (true, u32::MAX)]);
        assert_eq!(w, 10 + u64::from(u32::MAX));
    }

    /// A backend flapping every interval with rise = fall = 1 (so each
    /// flap is a transition) behind a service with a 10 s hold-down: the
    /// service flips at most once down and once up per 10 s.
    #[test]
    fn a_flapping_backend_cannot_flap_the_service_faster_than_the_hold_down() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        let mut backend = TargetState::new(0, timing(1, 1, true), t0, 1);
        let mut service = ServiceHealth::new(policy(1, 0, hold), true, t0);
        let mut flips = Vec::new();
        let mut now = t0;
        for i in 0..120 {
            now = backend.due().unwrap();
            if let Some(due) = service.poll_timeout().filter(|d| *d <= now) {
                flips.extend(service.poll(due));
            }
            backend.begin(now);
            if let Some(t) = backend.finish(result(i % 2 == 1, now)) {
                let w = ServiceHealth::healthy_weight([(t.healthy, 1)]);
                flips.extend(service.update(w, now));
            }
        }
        assert!(now - t0 >= Duration::from_secs(119));
        let ups: Vec<Instant> = flips.iter().filter(|f| f.usable).map(|f| f.at).collect();
        let downs: Vec<Instant> = flips.iter().filter(|f| !f.usable).map(|f| f.at).collect();
        assert!(ups.len() <= 12 && downs.len() <= 13, "{flips:?}");
        for up in &ups {
            let last_down = downs.iter().filter(|d| *d < up).max().unwrap();
            assert!(*up - *last_down >= hold);
        }
    }

    proptest! {
        /// Transitions happen exactly when a streak reaches its threshold:
        /// to unhealthy on the `fall`-th consecutive failure of a healthy
        /// backend, to healthy on the `rise`-th consecutive success of an
        /// unhealthy one, and at no other result.
        #[test]
        fn transitions_only_at_exact_streaks(
            outcomes in proptest::collection::vec(any::<bool>(), 0..200),
            rise in 1u32..6,
            fall in 1u32..6,
            initially in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let mut s = TargetState::new(0, timing(rise, fall, initially), t0, 5);
            let transitions = drive(&mut s, t0, &outcomes);
            let mut healthy = initially;
            let mut streak = 0u32;
            let mut next = transitions.iter().peekable();
            for (i, &ok) in outcomes.iter().enumerate() {
                let same = i > 0 && outcomes[i - 1] == ok;
                streak = if same { streak + 1 } else { 1 };
                let expect = if ok { !healthy && streak == rise } else { healthy && streak == fall };
                let got = next.next_if(|(at, _)| *at == i);
                prop_assert_eq!(got.is_some(), expect, "result {} ok={} streak {}", i, ok, streak);
                if let Some((_, t)) = got {
                    prop_assert_eq!(t.healthy, ok);
                    healthy = ok;
                }
            }
            prop_assert_eq!(s.healthy(), healthy);
        }

        /// Whatever the weights and times: an up flip comes at least
        /// `hold_down` after the last down flip, the service is down
        /// whenever no weight is healthy, and up whenever the weight
        /// reaches the quorum plus hysteresis and the hold-down is over.
        #[test]
        fn service_flips_respect_quorum_and_hold_down(
            steps in proptest::collection::vec((0u64..6, 0u64..3000), 1..100),
            quorum in 0u32..4,
            hysteresis in 0u32..3,
            hold_ms in 0u64..5000,
        ) {
            let t0 = Instant::now();
            let hold = Duration::from_millis(hold_ms);
            let p = policy(quorum, hysteresis, hold);
            let mut s = ServiceHealth::new(p, true, t0);
            let mut now = t0;
            let mut last_down: Option<Instant> = None;
            for (weight, gap) in steps {
                now += Duration::from_millis(gap);
                if let Some(due) = s.poll_timeout().filter(|d| *d <= now) {
                    if let Some(f) = s.poll(due) {
                        prop_assert!(f.usable);
                    }
                }
                if let Some(f) = s.update(weight, now) {
                    if f.usable {
                        prop_assert!(last_down.is_none_or(|d| now - d >= hold));
                    } else {
                        last_down = Some(now);
                    }
                }
                if weight == 0 {
                    prop_assert!(!s.usable());
                }
                let up_at = u64::from(quorum.max(1) + hysteresis);
                if weight >= up_at && last_down.is_none_or(|d| now - d >= hold) {
                    prop_assert!(s.usable());
                }
            }
        }
    }
}
