//! Figure: 10,000 VIP prefixes announced to BIRD 2, time until all are in
//! BIRD's table and in the router namespace's kernel FIB (BIRD exports to
//! the kernel), then the same for withdrawing them. Target: under 1 s.
//!
//! ```text
//!   ns G: Speaker, AS 65001, 198.18.1.2 ── ns R: BIRD, AS 65000, 198.18.1.1,
//!                                               kernel protocol exports all
//! ```
//!
//! One session, set up before the clock starts. Each run announces the
//! 10,000 /32s of 198.18.128.0 .. 198.18.167.15 with one
//! `SpeakerHandle::announce` call each, as fast as the loop goes (the
//! handle has no batch call), and polls `birdc show route count` and
//! `ip -n R route show proto bird` until they are all there; then
//! withdraws them the same way. Three runs; medians printed.
//!
//! Run as root: `cargo run --release -p vipgate-routing --example bench_bird_10k`
//! (prints why and exits when not root or BIRD is missing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{has_bird, in_netns, wait_for, Bird, Lab};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig, SpeakerHandle};
use vipgate_routing::wire::Prefix;

const COUNT: usize = 10_000;
const RUNS: usize = 3;
/// No run may take longer than this to converge.
const DEADLINE: Duration = Duration::from_secs(60);

const BIRD_CONF: &str = r#"router id 198.18.1.1;
protocol device { scan time 10; }
protocol kernel k4 { ipv4 { export all; }; }
protocol bgp g1 {
  local as 65000;
  neighbor 198.18.1.2 as 65001;
  hold time 90;
  connect delay time 1;
  connect retry time 2;
  ipv4 { import all; export none; };
}
"#;

/// Times of one run, from the first announce (or withdraw) call.
#[derive(Clone, Copy, Debug)]
struct Times {
    /// The 10,000 handle calls returned.
    calls: Duration,
    /// The speaker's Adj-RIB-Out holds all (or none) of them: queued on
    /// the session.
    sent: Duration,
    /// BIRD's table holds all (or none) of them.
    bird: Duration,
    /// R's kernel FIB holds all (or none) of them.
    fib: Duration,
}

fn main() {
    if !has_bird() {
        println!("skipped: BIRD 2 (bird, birdc) not installed (apt-get install bird2)");
        return;
    }
    let Some(mut lab) = Lab::new("bench") else {
        return;
    };
    let r = lab.netns("r");
    let g = lab.netns("g");
    lab.veth(&r, "r1", &g, "g1");
    lab.addr(&r, "r1", "198.18.1.1/24");
    lab.addr(&g, "g1", "198.18.1.2/24");
    let bird = Bird::start(&mut lab, &r, BIRD_CONF);
    let speaker = start_speaker(&g);
    let h = speaker.handle();
    wait_for(Duration::from_secs(30), "g1 Established in BIRD", || {
        bird.established("g1").then_some(())
    });

    let prefixes = vips();
    let mut up = vec![];
    let mut down = vec![];
    for run in 1..=RUNS {
        let t = measure(
            &lab,
            &r,
            &bird,
            &h,
            || {
                for p in &prefixes {
                    h.announce(*p, RouteAttrs::default());
                }
            },
            COUNT,
        );
        println!("run {run}: announce {COUNT}: {}", show(t));
        up.push(t);
        let t = measure(
            &lab,
            &r,
            &bird,
            &h,
            || {
                for p in &prefixes {
                    h.withdraw(*p);
                }
            },
            0,
        );
        println!("run {run}: withdraw {COUNT}: {}", show(t));
        down.push(t);
    }
    println!("median announce: {}", show(median(&up)));
    println!("median withdraw: {}", show(median(&down)));
    print_poll_cost(&lab, &r, &bird, &h, &prefixes);
    drop(speaker);
}

/// What one poll costs with the full table: the resolution of the figures.
fn print_poll_cost(lab: &Lab, r: &str, bird: &Bird, h: &SpeakerHandle, prefixes: &[Prefix]) {
    for p in prefixes {
        h.announce(*p, RouteAttrs::default());
    }
    wait_for(DEADLINE, "all routes in R's FIB", || {
        (fib_count(lab, r) == COUNT).then_some(())
    });
    let start = Instant::now();
    let in_bird = bird_count(bird);
    let birdc = start.elapsed();
    let start = Instant::now();
    let in_fib = fib_count(lab, r);
    let ip = start.elapsed();
    println!(
        "one poll with {in_fib} routes in the FIB and {in_bird:?} in BIRD: birdc {:.1} ms, ip route {:.1} ms",
        ms(birdc),
        ms(ip)
    );
}

fn start_speaker(ns: &str) -> Speaker {
    let mut peer = PeerConfig::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 65000);
    peer.local_address = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)));
    peer.idle_hold = Duration::from_secs(1);
    peer.connect_retry = Duration::from_secs(2);
    let config = SpeakerConfig {
        local_as: 65001,
        router_id: Ipv4Addr::new(198, 18, 1, 2),
        listen: None,
        peers: vec![peer],
        drain: Default::default(),
    };
    in_netns(ns, move || Speaker::new(config).expect("speaker starts"))
}

/// 198.18.128.0/32 and the next 9,999 addresses, inside 198.18.128.0/17.
fn vips() -> Vec<Prefix> {
    let first = u32::from(Ipv4Addr::new(198, 18, 128, 0));
    (0..COUNT as u32)
        .map(|i| {
            let addr = Ipv4Addr::from(first + i);
            format!("{addr}/32").parse().expect("a /32 is a prefix")
        })
        .collect()
}

/// Run `change`, then poll until the speaker's Adj-RIB-Out, then BIRD,
/// then R's FIB hold `want` routes (each stage follows the one before, so
/// each is polled only after the one before is done: the cheap polls are
/// not slowed by the costly `ip route` dump).
fn measure(
    lab: &Lab,
    r: &str,
    bird: &Bird,
    h: &SpeakerHandle,
    change: impl FnOnce(),
    want: usize,
) -> Times {
    let start = Instant::now();
    change();
    let calls = start.elapsed();
    let sent = poll(start, || {
        h.peers().first().map(|p| p.prefixes_sent) == Some(want)
    });
    let bird = poll(start, || bird_count(bird) == Some(want));
    let fib = poll(start, || fib_count(lab, r) == want);
    Times {
        calls,
        sent,
        bird,
        fib,
    }
}

/// Poll `done` until true; the time since `start` then.
fn poll(start: Instant, mut done: impl FnMut() -> bool) -> Duration {
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "no convergence within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// Routes in BIRD's master4 table ("N of N routes for N networks").
fn bird_count(bird: &Bird) -> Option<usize> {
    let out = bird.cmd(&["show", "route", "count"]);
    let line = out.lines().find(|l| l.contains("routes for"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Routes BIRD installed in R's kernel.
fn fib_count(lab: &Lab, r: &str) -> usize {
    lab.ip(r, &["-4", "route", "show", "proto", "bird"])
        .lines()
        .count()
}

fn median(times: &[Times]) -> Times {
    let pick = |f: fn(&Times) -> Duration| {
        let mut v: Vec<Duration> = times.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    Times {
        calls: pick(|t| t.calls),
        sent: pick(|t| t.sent),
        bird: pick(|t| t.bird),
        fib: pick(|t| t.fib),
    }
}

fn show(t: Times) -> String {
    format!(
        "calls {:.1} ms, sent {:.1} ms, in BIRD's table {:.1} ms, in R's kernel FIB {:.1} ms",
        ms(t.calls),
        ms(t.sent),
        ms(t.bird),
        ms(t.fib)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
