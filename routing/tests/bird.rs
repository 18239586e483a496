//! Interop with BIRD 2 as the upstream router (root and `bird` needed;
//! skipped with the reason printed otherwise).
//!
//! ```text
//!   ns G1: speaker S1 (198.18.1.2, MD5)  ──┐
//!          speaker Sbad (198.18.1.3, wrong MD5 password)
//!                                          ns R: BIRD, AS 65000, merge paths
//!   ns G2: speaker S2 (198.18.2.2, GTSM,  ──┘    into R's kernel FIB
//!          also listening: collisions)
//! ```
//!
//! Both gateways (AS 65001) announce the VIP 198.18.10.10/32; R's kernel
//! must hold one multipath route with both next hops; a withdrawal leaves
//! one; S1 announces 2001:db8:10::10/128 over MP-BGP on its IPv4 session
//! with a configured IPv6 next hop; a drain shows the GRACEFUL_SHUTDOWN
//! community in BIRD; the wrong MD5 password never establishes; shutdown
//! withdraws and BIRD logs the Cease.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{has_bird, in_netns, wait_for, Bird, Lab};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::session::State;
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig};
use vipgate_routing::wire::Prefix;

const VIP: &str = "198.18.10.10/32";
const VIP6: &str = "2001:db8:10::10/128";

fn bird_conf(log: &Path) -> String {
    format!(
        r#"router id 198.18.1.1;
log "{log}" all;
protocol device {{ scan time 1; }}
protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths on; }}
protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths on; }}
template bgp vgtpeer {{
  local as 65000;
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
protocol bgp g1 from vgtpeer {{ neighbor 198.18.1.2 as 65001; password "vipgate-md5"; }}
protocol bgp g1bad from vgtpeer {{ neighbor 198.18.1.3 as 65001; password "right-password"; }}
protocol bgp g2 from vgtpeer {{ neighbor 198.18.2.2 as 65001; ttl security on; }}
"#,
        log = log.display()
    )
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

fn speaker(ns: &str, id: &str, peer: PeerConfig, listen: bool) -> Speaker {
    let config = SpeakerConfig {
        local_as: 65001,
        router_id: id.parse().expect("router id"),
        listen: listen.then(|| "0.0.0.0:179".parse().expect("listen")),
        peers: vec![peer],
        drain: Default::default(),
    };
    in_netns(ns, move || Speaker::new(config).expect("speaker starts"))
}

fn peer(local: &str, router: &str) -> PeerConfig {
    let mut p = PeerConfig::new(router.parse().expect("addr"), 65000);
    p.local_address = Some(local.parse::<IpAddr>().expect("addr"));
    p.idle_hold = Duration::from_secs(1);
    p.connect_retry = Duration::from_secs(2);
    p
}

#[test]
fn bird_learns_multipath_vip_drain_md5_and_cease() {
    if !has_bird() {
        println!("skipped: BIRD 2 (bird, birdc) not installed (apt-get install bird2)");
        return;
    }
    let Some(mut lab) = Lab::new("bird") else {
        return;
    };
    let r = lab.netns("r");
    let g1 = lab.netns("g1");
    let g2 = lab.netns("g2");
    lab.veth(&r, "r1", &g1, "g1");
    lab.veth(&r, "r2", &g2, "g2");
    lab.addr(&r, "r1", "198.18.1.1/24");
    lab.addr(&r, "r1", "2001:db8:1::1/64");
    lab.addr(&g1, "g1", "198.18.1.2/24");
    lab.addr(&g1, "g1", "198.18.1.3/24");
    lab.addr(&g1, "g1", "2001:db8:1::2/64");
    lab.addr(&r, "r2", "198.18.2.1/24");
    lab.addr(&g2, "g2", "198.18.2.2/24");

    let log = lab.dir.join("bird.log");
    let bird = Bird::start(&mut lab, &r, &bird_conf(&log));

    let mut p1 = peer("198.18.1.2", "198.18.1.1");
    p1.md5_password = Some("vipgate-md5".into());
    p1.next_hop_ipv6 = Some("2001:db8:1::2".parse().expect("addr"));
    let s1 = speaker(&g1, "198.18.1.2", p1, false);
    let mut bad = peer("198.18.1.3", "198.18.1.1");
    bad.md5_password = Some("wrong-password".into());
    let sbad = speaker(&g1, "198.18.1.3", bad, false);
    let started = std::time::Instant::now();
    let mut p2 = peer("198.18.2.2", "198.18.2.1");
    p2.ttl_security = true;
    let s2 = speaker(&g2, "198.18.2.2", p2, true);
    let (h1, h2) = (s1.handle(), s2.handle());

    wait_for(
        Duration::from_secs(30),
        "g1 and g2 Established in BIRD",
        || (bird.established("g1") && bird.established("g2")).then_some(()),
    );

    // The VIP from both gateways: one multipath route in R's kernel.
    h1.announce(prefix(VIP), RouteAttrs::default());
    h2.announce(prefix(VIP), RouteAttrs::default());
    h1.announce(prefix(VIP6), RouteAttrs::default());
    let route = |dst: &str| lab.ip(&r, &["route", "show", dst]);
    let route6 = |dst: &str| lab.ip(&r, &["-6", "route", "show", dst]);
    wait_for(
        Duration::from_secs(15),
        "multipath VIP route in R's FIB",
        || {
            let r = route("198.18.10.10");
            (r.contains("nexthop via 198.18.1.2") && r.contains("nexthop via 198.18.2.2"))
                .then_some(())
        },
    );
    println!("R's FIB: {}", route("198.18.10.10"));
    wait_for(Duration::from_secs(15), "IPv6 VIP in R's FIB", || {
        route6("2001:db8:10::10")
            .contains("via 2001:db8:1::2")
            .then_some(())
    });

    // A withdrawal removes one next hop.
    assert!(h2.withdraw(prefix(VIP)));
    wait_for(Duration::from_secs(15), "one next hop left", || {
        let r = route("198.18.10.10");
        (r.contains("via 198.18.1.2") && !r.contains("198.18.2.2")).then_some(())
    });

    // Drain: BIRD shows GRACEFUL_SHUTDOWN on S1's route.
    h1.set_drain(true);
    wait_for(
        Duration::from_secs(15),
        "community (65535,0) in BIRD",
        || {
            bird.cmd(&["show", "route", "all", "198.18.10.10/32"])
                .contains("(65535,0)")
                .then_some(())
        },
    );

    // The wrong MD5 password never got a session up, in at least 4 s
    // (Sbad reconnects every 2 s; BIRD's segments to it are dropped).
    while started.elapsed() < Duration::from_secs(4) {
        assert!(!bird.established("g1bad"), "wrong MD5 password established");
        std::thread::sleep(Duration::from_millis(200));
    }
    let bad_state = sbad.handle().peers()[0].clone();
    assert_ne!(bad_state.state, State::Established, "{bad_state:?}");
    let bad_error = bad_state.last_error.as_deref().unwrap_or_default();
    assert!(bad_error.starts_with("connect"), "{bad_state:?}");
    println!("speaker with the wrong MD5 password: {bad_state:?}");

    // Shutdown withdraws (the FIB loses the routes) and sends Cease.
    assert!(h1.shutdown(), "shutdown finished in time");
    wait_for(
        Duration::from_secs(15),
        "VIP routes gone from R's FIB",
        || {
            (route("198.18.10.10").trim().is_empty() && route6("2001:db8:10::10").trim().is_empty())
                .then_some(())
        },
    );
    wait_for(Duration::from_secs(10), "BIRD logs the Cease", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .any(|l| l.contains("g1:") && l.contains("Received: Administrative shutdown"))
            .then_some(())
    });
    drop((s1, s2, sbad));
}
