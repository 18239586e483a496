//! The checker thread: one dedicated thread with a tokio current-thread
//! runtime runs every check of every backend.
//!
//! A binary heap of due times says which check starts next; a running
//! TCP or plain HTTP check is a state machine on the thread's own epoll
//! set ([`super::epoll`]), any other check (HTTPS, UDP, command) one task
//! in a `JoinSet`; a finished check goes through its
//! [`TargetState`], whose transitions go to the daemon over a channel and
//! whose status is copied into a shared table for `vipgate status`. No
//! thread or timer per backend: a thousand backends cost a heap of a
//! thousand entries and at most a thousand probes.
//!
//! Owns: the thread, its runtime, the targets' states. Must not: block
//! (the daemon's control loop reads transitions without waiting).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as async_mpsc;
use tokio::task::{AbortHandle, JoinError, JoinSet};

use super::epoll::{self, Probes};
use super::probe::{self, Prepared};
use super::state::{TargetState, Timing};
use super::tls::TlsConfigs;
use super::{CheckResult, CheckSpec, TargetStatus, Transition};

/// Checks due within this much of each other start in one wake-up of the
/// thread (up to this much early): with a thousand backends a second the
/// thread then wakes for timers at most 1 / COALESCE times a second
/// instead of once per check.
const COALESCE: Duration = Duration::from_millis(5);

/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const USER_HZ: u64 = 100;

/// What the daemon asks of the checker thread.
enum Control {
    /// New targets; the reply says when they are in place.
    Replace(Vec<Arc<Prepared>>, mpsc::SyncSender<()>),
    Shutdown,
}

/// Runs all checks on one dedicated thread with a tokio current-thread
/// runtime. Dropping it stops the thread and kills running command checks.
#[derive(Debug)]
pub struct Checker {
    control: async_mpsc::UnboundedSender<Control>,
    transitions: Mutex<mpsc::Receiver<Transition>>,
    status: Arc<Mutex<Vec<TargetStatus>>>,
    tls: TlsConfigs,
    thread: Option<JoinHandle<()>>,
    /// The checker thread's id in /proc/self/task.
    tid: Option<u32>,
}

impl Checker {
    /// Validates the targets and starts checking them. Target `i` of
    /// `targets` is [`super::TargetId`] `i` in results and transitions.
    /// The thread is created in the caller's network namespace.
    pub fn start(targets: Vec<CheckSpec>) -> io::Result<Checker> {
        Checker::start_seeded(targets, random_seed())
    }

    /// As [`Checker::start`], with the seed of the jitter given.
    pub fn start_seeded(targets: Vec<CheckSpec>, seed: u64) -> io::Result<Checker> {
        let tls = TlsConfigs::default();
        let prepared = prepare(targets, &tls)?;
        let now = Instant::now();
        let states: Vec<TargetState> = prepared
            .iter()
            .enumerate()
            .map(|(i, p)| TargetState::new(i, Timing::from(&p.spec), now, seed))
            .collect();
        let status = Arc::new(Mutex::new(states.iter().map(TargetState::status).collect()));
        let (control, control_rx) = async_mpsc::unbounded_channel();
        let (transitions_tx, transitions) = mpsc::channel();
        let shared = status.clone();
        let scheduler =
            move |probes| Scheduler::new(prepared, states, shared, transitions_tx, seed, probes);
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("vipgate-health".into())
            .spawn(move || checker_thread(scheduler, control_rx, ready_tx))?;
        let tid = match ready.recv() {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("health checker thread ended at start")),
        };
        Ok(Checker {
            control,
            transitions: Mutex::new(transitions),
            status,
            tls,
            thread: Some(thread),
            tid,
        })
    }

    /// Transitions since the last call (non-blocking).
    pub fn transitions(&self) -> Vec<Transition> {
        let rx = lock(&self.transitions);
        rx.try_iter().collect()
    }

    /// Waits up to `timeout` for the next transition.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Transition> {
        let rx = lock(&self.transitions);
        rx.recv_timeout(timeout).ok()
    }

    /// Current view per target, indexed by target id.
    pub fn status(&self) -> Vec<TargetStatus> {
        lock(&self.status).clone()
    }

    /// Replaces the set of targets (config reload). A new target whose spec
    /// equals an old one's keeps that one's state, counters and schedule
    /// (and a check it has running); the others start afresh. Target ids
    /// are the indexes into `targets` from now on. Transitions not yet read
    /// keep their old ids.
    pub fn replace(&self, targets: Vec<CheckSpec>) -> io::Result<()> {
        let prepared = prepare(targets, &self.tls)?;
        let (done_tx, done) = mpsc::sync_channel(1);
        self.control
            .send(Control::Replace(prepared, done_tx))
            .map_err(|_| stopped())?;
        done.recv().map_err(|_| stopped())
    }

    /// Whether the checker thread has ended (it only does when told to or
    /// on a bug).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// CPU time the checker thread has used, from
    /// `/proc/self/task/<tid>/schedstat` (nanoseconds; or `stat` in ticks
    /// where schedstat is missing).
    pub fn thread_cpu_time(&self) -> io::Result<Duration> {
        let tid = self
            .tid
            .ok_or_else(|| io::Error::other("checker thread id unknown"))?;
        thread_cpu_time(tid)
    }

    /// The checker thread's id (a directory in /proc/self/task).
    pub fn thread_id(&self) -> Option<u32> {
        self.tid
    }

    /// Stops checking: running checks are dropped (command checks killed by
    /// process group) and the thread is joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped() -> io::Error {
    io::Error::other("health checker thread has stopped")
}

/// A lock whose data stays consistent even if a holder panicked (every
/// writer replaces whole entries).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn prepare(targets: Vec<CheckSpec>, tls: &TlsConfigs) -> io::Result<Vec<Arc<Prepared>>> {
    targets
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            spec.validate().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("health check {i}: {e}"),
                )
            })?;
            Prepared::new(spec, tls).map(Arc::new)
        })
        .collect()
}

/// A seed for the jitter from std's per-process random hash keys.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The thread's body: builds the runtime and the probes' epoll set in it,
/// then the scheduler, and runs it until told to stop.
fn checker_thread(
    scheduler: impl FnOnce(Probes) -> Scheduler,
    control: async_mpsc::UnboundedReceiver<Control>,
    ready: mpsc::SyncSender<io::Result<Option<u32>>>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let probes = {
        let _in_runtime = runtime.enter();
        Probes::new()
    };
    let probes = match probes {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(own_tid()));
    runtime.block_on(scheduler(probes).run(control));
}

/// This thread's id, from the /proc/thread-self link ("<pid>/task/<tid>").
fn own_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

fn thread_cpu_time(tid: u32) -> io::Result<Duration> {
    let task = format!("/proc/self/task/{tid}");
    if let Ok(s) = std::fs::read_to_string(format!("{task}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Ok(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(format!("{task}/stat"))?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Ok(Duration::from_millis((u + s) * 1000 / USER_HZ)),
        _ => Err(io::Error::other(format!("cannot parse {task}/stat"))),
    }
}

/// One target on the checker thread.
struct Slot {
    /// Never reused: tells a running check's result where it belongs
    /// after the targets were replaced.
    key: u64,
    prepared: Arc<Prepared>,
    state: TargetState,
    running: Option<Running>,
}

/// Where a slot's running check is.
enum Running {
    Task(AbortHandle),
    Probe(epoll::Token),
}

/// The checker thread's loop state.
struct Scheduler {
    slots: Vec<Slot>,
    /// Slot key → index in `slots`.
    index: HashMap<u64, usize>,
    next_key: u64,
    /// (due, key); entries whose due time no longer matches their slot's
    /// are stale and skipped.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// TCP and plain HTTP checks.
    probes: Probes,
    /// The other checks (HTTPS, UDP, command).
    running: JoinSet<(u64, CheckResult)>,
    /// Task → slot key, to find the slot of a check that panicked.
    tasks: HashMap<tokio::task::Id, u64>,
    status: Arc<Mutex<Vec<TargetStatus>>>,
    transitions: mpsc::Sender<Transition>,
    seed: u64,
}

impl Scheduler {
    fn new(
        prepared: Vec<Arc<Prepared>>,
        states: Vec<TargetState>,
        status: Arc<Mutex<Vec<TargetStatus>>>,
        transitions: mpsc::Sender<Transition>,
        seed: u64,
        probes: Probes,
    ) -> Scheduler {
        let mut s = Scheduler {
            slots: Vec::new(),
            index: HashMap::new(),
            next_key: 0,
            due: BinaryHeap::new(),
            probes,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            status,
            transitions,
            seed,
        };
        for (prepared, state) in prepared.into_iter().zip(states) {
            let key = s.new_key();
            s.push_slot(Slot {
                key,
                prepared,
                state,
                running: None,
            });
        }
        s
    }

    fn new_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn push_slot(&mut self, slot: Slot) {
        self.index.insert(slot.key, self.slots.len());
        if let Some(due) = slot.state.due() {
            self.due.push(Reverse((due, slot.key)));
        }
        self.slots.push(slot);
    }

    async fn run(mut self, mut control: async_mpsc::UnboundedReceiver<Control>) {
        loop {
            let now = Instant::now();
            self.start_due(now);
            self.probes.expire(now);
            self.probes_finished();
            let next_start = self.due.peek().map(|Reverse((at, _))| *at);
            let wake = match (next_start, self.probes.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Replace(targets, done)) => {
                        self.replace(targets, Instant::now());
                        let _ = done.send(());
                    }
                    Some(Control::Shutdown) | None => break,
                },
                () = self.probes.ready() => {
                    self.probes.poll();
                    self.probes_finished();
                }
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.task_finished(done);
                }
                () = sleep_until(wake) => {}
            }
        }
        // Dropping the tasks drops their probes: sockets close, command
        // checks' process groups are killed.
        self.running.shutdown().await;
    }

    /// Starts every check due by `now` + [`COALESCE`].
    fn start_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.due.peek() {
            if at > now + COALESCE {
                break;
            }
            self.due.pop();
            let Some(&i) = self.index.get(&key) else {
                continue;
            };
            if self.slots[i].state.due() != Some(at) {
                continue;
            }
            // An early start counts as on time, so the schedule does not
            // drift by the coalescing.
            self.start(i, at.max(now));
        }
    }

    /// Starts slot `i`'s check now, on the schedule as of `scheduled`.
    fn start(&mut self, i: usize, scheduled: Instant) {
        let slot = &mut self.slots[i];
        slot.state.begin(scheduled);
        let prepared = slot.prepared.clone();
        let key = slot.key;
        if epoll::handles(&prepared) {
            // May finish at once (a connect refused on the spot): the
            // result is picked up with the other probes' results. The
            // clock is read per probe, not once per batch of starts, for
            // the latency it reports.
            let token = self.probes.start(key, i, prepared, Instant::now());
            self.slots[i].running = Some(Running::Probe(token));
        } else {
            let abort = self.running.spawn(async move {
                let result = probe::run(&prepared, i).await;
                (key, result)
            });
            self.tasks.insert(abort.id(), key);
            self.slots[i].running = Some(Running::Task(abort));
        }
        // Only these two fields change: no copy of the last result.
        if let Some(entry) = lock(&self.status).get_mut(i) {
            entry.running = true;
            entry.next_due = None;
        }
    }

    fn probes_finished(&mut self) {
        while let Some((key, result)) = self.probes.next_finished() {
            self.finished(key, result);
        }
    }

    fn task_finished(&mut self, done: Result<(tokio::task::Id, (u64, CheckResult)), JoinError>) {
        let (key, result) = match done {
            Ok((task, (key, result))) => {
                self.tasks.remove(&task);
                (key, result)
            }
            Err(e) => {
                let Some(key) = self.tasks.remove(&e.id()) else {
                    return;
                };
                if e.is_cancelled() {
                    return;
                }
                let result = CheckResult {
                    id: 0,
                    ok: false,
                    reason: "internal: the check panicked".into(),
                    latency: Duration::ZERO,
                    at: Instant::now(),
                };
                (key, result)
            }
        };
        self.finished(key, result);
    }

    fn finished(&mut self, key: u64, result: CheckResult) {
        let Some(&i) = self.index.get(&key) else {
            return;
        };
        let slot = &mut self.slots[i];
        slot.running = None;
        let transition = slot.state.finish(CheckResult { id: i, ..result });
        if let Some(due) = slot.state.due() {
            self.due.push(Reverse((due, key)));
        }
        self.publish(i);
        if let Some(t) = transition {
            let _ = self.transitions.send(t);
        }
    }

    fn publish(&self, i: usize) {
        let status = self.slots[i].state.status();
        let mut table = lock(&self.status);
        if let Some(entry) = table.get_mut(i) {
            *entry = status;
        }
    }

    /// New targets: equal specs keep their slot (state, schedule, running
    /// check), the rest start afresh; slots no longer wanted are dropped
    /// and their checks aborted.
    fn replace(&mut self, targets: Vec<Arc<Prepared>>, now: Instant) {
        let mut old: Vec<Option<Slot>> = self.slots.drain(..).map(Some).collect();
        self.index.clear();
        for (i, prepared) in targets.into_iter().enumerate() {
            let kept = old
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| s.prepared.spec == prepared.spec))
                .and_then(Option::take);
            let slot = match kept {
                Some(mut slot) => {
                    slot.state.set_id(i);
                    slot
                }
                None => Slot {
                    key: self.new_key(),
                    state: TargetState::new(i, Timing::from(&prepared.spec), now, self.seed),
                    prepared,
                    running: None,
                },
            };
            self.push_slot(slot);
        }
        for gone in old.into_iter().flatten() {
            match gone.running {
                Some(Running::Task(abort)) => abort.abort(),
                Some(Running::Probe(token)) => self.probes.abort(token),
                None => {}
            }
        }
        let table: Vec<TargetStatus> = self.slots.iter().map(|s| s.state.status()).collect();
        *lock(&self.status) = table;
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckKind;

    /// Command checks: the runner's scheduling without any network.
    fn command(script: &str, initially_healthy: bool) -> CheckSpec {
        let mut spec = CheckSpec::new(CheckKind::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: Vec::new(),
        });
        spec.interval = Duration::from_millis(50);
        spec.timeout = Duration::from_secs(5);
        spec.rise = 2;
        spec.fall = 2;
        spec.jitter = 0.0;
        spec.initially_healthy = initially_healthy;
        spec
    }

    fn wait_for(checker: &Checker, what: &str, f: impl Fn(&[TargetStatus]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if f(&checker.status()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}: {:#?}", checker.status());
    }

    #[test]
    fn transitions_status_and_replace() {
        let up = command("exit 0", false);
        let down = command("exit 3", true);
        let checker = Checker::start_seeded(vec![up.clone(), down.clone()], 1).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 2 && Instant::now() < deadline {
            seen.extend(checker.recv_timeout(Duration::from_millis(100)));
        }
        seen.sort_by_key(|t| t.id);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].healthy && seen[0].reason == "exit 0 (2 consecutive successes)");
        assert!(!seen[1].healthy && seen[1].reason == "exit 3 (2 consecutive failures)");
        let status = checker.status();
        assert!(status[0].healthy && !status[1].healthy);
        assert_eq!(
            status[1].last.as_ref().map(|l| l.reason.as_str()),
            Some("exit 3")
        );
        // Swap the order and add one: the known specs keep their state.
        let new = command("exit 0", false);
        let mut other = new.clone();
        other.rise = 5;
        // Its first check waits, so the status read right after replace()
        // sees it fresh even on a busy machine (a 50 ms command check could
        // otherwise finish in between).
        other.startup_delay = Duration::from_millis(500);
        checker.replace(vec![down, other, up]).unwrap();
        let status = checker.status();
        assert_eq!(status.len(), 3);
        assert!(!status[0].healthy && status[0].checks >= 2);
        assert!(!status[1].healthy && status[1].checks == 0);
        assert!(status[2].healthy && status[2].checks >= 2);
        assert!(checker.transitions().len() <= 1);
        wait_for(&checker, "the new target's rise", |s| s[1].healthy);
        let t = checker.transitions();
        assert!(t.iter().any(|t| t.id == 1 && t.healthy), "{t:?}");
        assert!(checker.thread_cpu_time().is_ok());
        assert!(!checker.is_finished());
        checker.shutdown();
    }

    #[test]
    fn shutdown_kills_a_running_command_check() {
        let dir = std::env::temp_dir().join(format!("vgt-{}-hc-shutdown", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!(
            "echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 30",
            pidfile.display()
        );
        let checker = Checker::start(vec![command(&script, true)]).unwrap();
        wait_for(&checker, "the command to run", |s| s[0].running);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        assert!(std::fs::metadata(&stat).is_ok());
        checker.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
        // Killed; as our own child it may stay a zombie until reaped.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let gone = std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "));
            if gone {
                break;
            }
            assert!(Instant::now() < deadline, "sleep survived the shutdown");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn invalid_targets_are_refused_with_their_index() {
        let mut bad = command("exit 0", true);
        bad.jitter = 0.9;
        let err = Checker::start(vec![command("exit 0", true), bad]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().starts_with("health check 1: jitter"),
            "{err}"
        );
    }

    #[test]
    fn a_checker_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Checker>();
    }

    #[test]
    fn reads_a_thread_cpu_time() {
        let tid = own_tid().unwrap();
        // Spin long enough for the scheduler to account some time.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let t = thread_cpu_time(tid).unwrap();
        assert!(t > Duration::ZERO);
    }
}
