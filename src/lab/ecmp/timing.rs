//! The timing scenario of the ECMP lab (`vipgate lab run --scenario
//! ecmp-timing`): rounds of VIP state changes on gw-a (drain, undrain,
//! operator route withdraw/announce, VRRP resign/resume), each timed from
//! the request on gw-a's control socket to the first matching rtnetlink
//! route event in the router's namespace.
//!
//! Owns the route-event watcher (its own rtnetlink socket in the router's
//! namespace, on its own thread, ended on drop), the triggers and the
//! figure. Must not touch the topology (the parent module's [`EcmpLab`]).

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{hops, EcmpLab, Gw, Router, FIB_WAIT, OPERATOR_PREFIX, VIP};
use crate::lab::probe::sleep_unless_interrupted;
use crate::netlink::{parse_route_event, RouteEvent, RouteSocket, RTNLGRP_IPV4_ROUTE};
use crate::netns::NetNs;

/// A route event of the router's namespace, stamped on arrival.
#[derive(Debug, Clone)]
struct Stamped {
    at: Instant,
    wall: SystemTime,
    event: RouteEvent,
}

/// Watches the router namespace's IPv4 route events on its own thread.
struct Watcher {
    events: Arc<Mutex<Vec<Stamped>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(router: &NetNs) -> Result<Watcher> {
        let mut socket = router.run(|| -> std::io::Result<RouteSocket> {
            let mut s = RouteSocket::open()?;
            s.join_group(RTNLGRP_IPV4_ROUTE)?;
            Ok(s)
        })??;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, stopped) = (events.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("vipgate-lab-fib".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let fd = socket.as_raw_fd();
                    match crate::vrrp::socket::poll_readable(&[fd], Duration::from_millis(100)) {
                        Ok(r) if !r.is_empty() => {}
                        Ok(_) => continue,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    }
                    batch.clear();
                    // ENOBUFS (events lost): that trigger's wait times out.
                    if socket.recv_notifications(&mut batch).is_err() {
                        continue;
                    }
                    let (at, wall) = (Instant::now(), SystemTime::now());
                    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
                    list.extend(
                        batch
                            .iter()
                            .filter_map(parse_route_event)
                            .map(|event| Stamped { at, wall, event }),
                    );
                }
            })?;
        Ok(Watcher {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The first event after `since` that `matches`, waiting up to
    /// `within`.
    fn wait(
        &self,
        since: Instant,
        within: Duration,
        matches: impl Fn(&RouteEvent) -> bool,
    ) -> Option<Stamped> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !crate::lab::interrupted() {
            let found = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|s| s.at >= since && matches(&s.event))
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the timing scenario does to gw-a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Drain,
    Undrain,
    Withdraw,
    Announce,
    Resign,
    Resume,
}

impl Trigger {
    const ALL: [Trigger; 6] = [
        Trigger::Drain,
        Trigger::Undrain,
        Trigger::Withdraw,
        Trigger::Announce,
        Trigger::Resign,
        Trigger::Resume,
    ];

    fn key(self) -> &'static str {
        match self {
            Trigger::Drain => "drain",
            Trigger::Undrain => "undrain",
            Trigger::Withdraw => "route-withdraw",
            Trigger::Announce => "route-announce",
            Trigger::Resign => "vrrp-resign",
            Trigger::Resume => "vrrp-resume",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Trigger::Drain => "vipgate drain (GRACEFUL_SHUTDOWN)",
            Trigger::Undrain => "vipgate undrain",
            Trigger::Withdraw => "vipgate route withdraw 198.18.11.0/24",
            Trigger::Announce => "vipgate route announce 198.18.11.0/24",
            Trigger::Resign => "vipgate vrrp resign vip (MASTER -> BACKUP)",
            Trigger::Resume => "vipgate vrrp resume vip (BACKUP -> MASTER)",
        }
    }

    /// What the router's FIB shows afterwards.
    fn change(self) -> &'static str {
        match self {
            Trigger::Drain | Trigger::Resign => "next hop removed",
            Trigger::Undrain | Trigger::Resume => "next hop added",
            Trigger::Withdraw => "route removed",
            Trigger::Announce => "route added",
        }
    }

    fn request(self) -> Value {
        let operator = format!("{}/{}", OPERATOR_PREFIX.0, OPERATOR_PREFIX.1);
        match self {
            Trigger::Drain => json!({"cmd": "drain"}),
            Trigger::Undrain => json!({"cmd": "undrain"}),
            Trigger::Withdraw => json!({"cmd": "route.withdraw", "prefix": operator}),
            Trigger::Announce => json!({"cmd": "route.announce", "prefix": operator}),
            Trigger::Resign => json!({"cmd": "vrrp.resign", "instance": "vip"}),
            Trigger::Resume => json!({"cmd": "vrrp.resume", "instance": "vip"}),
        }
    }

    /// The VRRP state the trigger leads to, for the transition-to-FIB time.
    fn vrrp_state(self) -> Option<&'static str> {
        match self {
            Trigger::Resign => Some("BACKUP"),
            Trigger::Resume => Some("MASTER"),
            _ => None,
        }
    }

    /// The route event that shows the trigger in the FIB.
    fn shows(self, event: &RouteEvent) -> bool {
        let vip_via = |r: &crate::netlink::PathRoute, gws: &[Gw]| {
            r.dst == IpAddr::V4(VIP) && r.prefix_len == 32 && r.next_hops == hops(gws)
        };
        let operator = |r: &crate::netlink::PathRoute| {
            r.dst == IpAddr::V4(OPERATOR_PREFIX.0) && r.prefix_len == OPERATOR_PREFIX.1
        };
        match (self, event) {
            (Trigger::Drain | Trigger::Resign, RouteEvent::Added(r)) => vip_via(r, &[Gw::B]),
            (Trigger::Undrain | Trigger::Resume, RouteEvent::Added(r)) => vip_via(r, &Gw::BOTH),
            (Trigger::Withdraw, RouteEvent::Removed(r)) => operator(r),
            (Trigger::Announce, RouteEvent::Added(r)) => operator(r),
            _ => false,
        }
    }
}

/// One row of the figure: samples of one trigger.
pub(super) struct Row {
    key: String,
    label: String,
    change: &'static str,
    pub(super) samples: Vec<Duration>,
    pub(super) missed: usize,
}

impl Row {
    fn new(key: &str, label: &str, change: &'static str) -> Row {
        Row {
            key: key.into(),
            label: label.into(),
            change,
            samples: Vec::new(),
            missed: 0,
        }
    }
}

/// The median of `samples` (the lower middle one of an even count).
fn median(samples: &[Duration]) -> Option<Duration> {
    let mut s = samples.to_vec();
    s.sort();
    s.get(s.len().saturating_sub(1) / 2).copied()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `unix_ms` of gw-a's last VRRP transition of instance "vip" to
/// `state` with a sequence number above `after`.
fn vrrp_transition(lab: &EcmpLab, after: u64, state: &str) -> Option<u64> {
    let events = lab
        .request(Gw::A, &json!({"cmd": "vrrp.events", "after": after}))
        .ok()?;
    events["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["instance"] == "vip" && e["to"] == state)
        .and_then(|e| e["unix_ms"].as_u64())
}

/// The highest VRRP event sequence number of gw-a so far.
fn vrrp_seq(lab: &EcmpLab) -> u64 {
    lab.request(Gw::A, &json!({"cmd": "vrrp.events", "after": 0}))
        .ok()
        .and_then(|v| {
            v["events"]
                .as_array()?
                .iter()
                .filter_map(|e| e["seq"].as_u64())
                .max()
        })
        .unwrap_or(0)
}

/// `repeat` rounds of every trigger on gw-a; the rows of the figure.
pub(super) fn run(lab: &EcmpLab, repeat: u32) -> Result<Vec<Row>> {
    let watcher = Watcher::start(&lab.router)?;
    // The operator route exists before the first withdrawal.
    let t = Instant::now();
    lab.request(Gw::A, &Trigger::Announce.request())?;
    if watcher
        .wait(t, FIB_WAIT, |e| Trigger::Announce.shows(e))
        .is_none()
        && lab
            .fib(IpAddr::V4(OPERATOR_PREFIX.0), OPERATOR_PREFIX.1)
            .is_empty()
    {
        bail!("the router did not install the operator route 198.18.11.0/24");
    }
    let mut rows: Vec<Row> = Trigger::ALL
        .iter()
        .map(|t| Row::new(t.key(), t.label(), t.change()))
        .collect();
    let mut from_vrrp = [
        Row::new(
            "vrrp-backup-transition",
            "VRRP transition to BACKUP (event time, ms clock)",
            "next hop removed",
        ),
        Row::new(
            "vrrp-master-transition",
            "VRRP transition to MASTER (event time, ms clock)",
            "next hop added",
        ),
    ];
    println!(
        "\ntiming: each trigger on gw-a, {repeat} rounds; time from the request (control socket) to the router's FIB event"
    );
    for round in 0..repeat {
        for (i, trigger) in Trigger::ALL.iter().enumerate() {
            if crate::lab::interrupted() {
                return Ok(rows);
            }
            sleep_unless_interrupted(Duration::from_millis(300));
            let seq = vrrp_seq(lab);
            let t = Instant::now();
            lab.request(Gw::A, &trigger.request())?;
            let Some(seen) = watcher.wait(t, FIB_WAIT, |e| trigger.shows(e)) else {
                rows[i].missed += 1;
                println!(
                    "  round {round}: {}: no FIB change within {} s",
                    trigger.key(),
                    FIB_WAIT.as_secs()
                );
                continue;
            };
            rows[i].samples.push(seen.at.saturating_duration_since(t));
            if let Some(state) = trigger.vrrp_state() {
                let row = &mut from_vrrp[usize::from(state == "MASTER")];
                match vrrp_transition(lab, seq, state) {
                    Some(ms) => {
                        let delta = unix_ms(seen.wall).saturating_sub(ms);
                        row.samples.push(Duration::from_millis(delta));
                    }
                    None => row.missed += 1,
                }
            }
        }
        println!("  round {} of {repeat} done", round + 1);
    }
    rows.extend(from_vrrp);
    Ok(rows)
}

pub(super) fn print(router: Router, rows: &[Row]) {
    println!(
        "\nfigure: VIP state change on gw-a -> route change in the router's kernel FIB ({}), ms",
        router.label()
    );
    println!(
        "  {:<52} {:<17} {:>4} {:>8} {:>8} {:>8}",
        "trigger", "FIB change", "n", "median", "min", "max"
    );
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3));
    for r in rows {
        let (lo, hi) = (
            r.samples.iter().min().copied(),
            r.samples.iter().max().copied(),
        );
        println!(
            "  {:<52} {:<17} {:>4} {:>8} {:>8} {:>8}{}",
            r.label,
            r.change,
            r.samples.len(),
            ms(median(&r.samples)),
            ms(lo),
            ms(hi),
            if r.missed > 0 {
                format!("  ({} missed)", r.missed)
            } else {
                String::new()
            }
        );
        println!(
            "TIMING router={} trigger={} change={} n={} missed={} median_ms={} min_ms={} max_ms={}",
            router.label(),
            r.key,
            r.change.replace(' ', "-"),
            r.samples.len(),
            r.missed,
            ms(median(&r.samples)),
            ms(lo),
            ms(hi)
        );
    }
    println!(
        "  (vrrp resume includes VRRP's Master_Down_Interval, about 0.36 s at 100 ms adverts;\n   \
         the transition rows measure from the VRRP event's millisecond timestamp instead;\n   \
         backend loss is not a trigger yet: the daemon has no health checks)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_trigger_events() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), Some(ms(3)));
        assert_eq!(median(&[ms(4), ms(1), ms(3), ms(2)]), Some(ms(2)));
        assert_eq!(median(&[]), None);
        let route = |next: &[Gw]| crate::netlink::PathRoute {
            dst: IpAddr::V4(VIP),
            prefix_len: 32,
            next_hops: hops(next),
            protocol: crate::netlink::PROTO_BGP,
            table: 254,
        };
        assert!(Trigger::Drain.shows(&RouteEvent::Added(route(&[Gw::B]))));
        assert!(!Trigger::Drain.shows(&RouteEvent::Added(route(&Gw::BOTH))));
        assert!(!Trigger::Drain.shows(&RouteEvent::Removed(route(&[Gw::B]))));
        assert!(Trigger::Resume.shows(&RouteEvent::Added(route(&Gw::BOTH))));
        let op = crate::netlink::PathRoute {
            dst: IpAddr::V4(OPERATOR_PREFIX.0),
            prefix_len: 24,
            ..route(&[Gw::A])
        };
        assert!(Trigger::Withdraw.shows(&RouteEvent::Removed(op.clone())));
        assert!(Trigger::Announce.shows(&RouteEvent::Added(op)));
    }
}
