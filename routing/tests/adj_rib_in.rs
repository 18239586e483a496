//! The Adj-RIB-In through a real speaker (root; skipped otherwise): a
//! router speaker R (AS 65000, passive, listening) and two gateway
//! speakers G1, G2 (AS 65001) in network namespaces. What the gateways
//! announce shows in R's [`SpeakerHandle::adj_rib_in`] with their next
//! hops, a change wakes [`SpeakerHandle::wait_rib_in`], the decision
//! ([`best_paths`]) keeps both gateways as equal-cost paths, drops a
//! draining one (RFC 8326), and a gateway that shuts down leaves nothing
//! behind in R.
//!
//! ```text
//!   ns G1: 198.18.1.2 ── 198.18.1.1 ┐
//!                                   ns R (r1, r2)
//!   ns G2: 198.18.2.2 ── 198.18.2.1 ┘
//! ```

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{in_netns, wait_for, Lab};
use vipgate_routing::rib::{NextHop, RouteAttrs};
use vipgate_routing::rib_in::{best_paths, DecisionPolicy};
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig, SpeakerHandle};
use vipgate_routing::wire::Prefix;

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

fn speaker(ns: &str, local_as: u32, id: &str, listen: bool, peers: Vec<PeerConfig>) -> Speaker {
    let config = SpeakerConfig {
        local_as,
        router_id: id.parse().expect("router id"),
        listen: listen.then(|| "0.0.0.0:179".parse().expect("listen")),
        peers,
        drain: Default::default(),
    };
    in_netns(ns, move || Speaker::new(config).expect("speaker starts"))
}

fn peer(address: &str, remote_as: u32, passive: bool) -> PeerConfig {
    let mut p = PeerConfig::new(addr(address), remote_as);
    p.hold_time = 9;
    p.passive = passive;
    p.idle_hold = Duration::from_millis(500);
    p.connect_retry = Duration::from_secs(2);
    p
}

const POLICY: DecisionPolicy = DecisionPolicy {
    local_as: 65000,
    graceful_shutdown: true,
};

/// R's best next hops for `p` (empty: none).
fn best(r: &SpeakerHandle, p: &str) -> Vec<IpAddr> {
    best_paths(&r.adj_rib_in(None), &POLICY)
        .remove(&prefix(p))
        .unwrap_or_default()
}

#[test]
fn received_routes_reach_the_decision_and_leave_with_their_session() {
    let Some(mut lab) = Lab::new("rin") else {
        return;
    };
    let r = lab.netns("r");
    let g1 = lab.netns("g1");
    let g2 = lab.netns("g2");
    lab.veth(&r, "r1", &g1, "g1");
    lab.veth(&r, "r2", &g2, "g2");
    lab.addr(&r, "r1", "198.18.1.1/24");
    lab.addr(&g1, "g1", "198.18.1.2/24");
    lab.addr(&r, "r2", "198.18.2.1/24");
    lab.addr(&g2, "g2", "198.18.2.2/24");

    let router = speaker(
        &r,
        65000,
        "198.18.0.1",
        true,
        vec![
            peer("198.18.1.2", 65001, true),
            peer("198.18.2.2", 65001, true),
        ],
    );
    let gw1 = speaker(
        &g1,
        65001,
        "198.18.1.2",
        false,
        vec![peer("198.18.1.1", 65000, false)],
    );
    let gw2 = speaker(
        &g2,
        65001,
        "198.18.2.2",
        false,
        vec![peer("198.18.2.1", 65000, false)],
    );
    let rh = router.handle();
    let vip = "198.18.10.10/32";
    let before = rh.rib_in_generation();
    for g in [&gw1, &gw2] {
        g.handle().announce(prefix(vip), RouteAttrs::default());
    }
    // The router is told: the generation moves and a waiter wakes.
    assert!(rh.wait_rib_in(before, Duration::from_secs(20)) > before);
    let long = Duration::from_secs(20);
    let both = vec![addr("198.18.1.2"), addr("198.18.2.2")];
    wait_for(long, "both gateways' routes in R", || {
        (best(&rh, vip) == both).then_some(())
    });
    let from_g1 = rh.adj_rib_in(Some(addr("198.18.1.2")));
    assert_eq!(from_g1.len(), 1, "{from_g1:?}");
    assert_eq!(from_g1[0].next_hop(), Some(addr("198.18.1.2")));
    assert!(!from_g1[0].ibgp);
    let seen = rh.rib_in_generation();
    assert_eq!(
        rh.wait_rib_in(seen, Duration::from_millis(100)),
        seen,
        "nothing changed: the wait times out"
    );

    // An operator route with another next hop from G1 only.
    let hop = RouteAttrs {
        next_hop: NextHop::Address(addr("198.18.1.9")),
        ..Default::default()
    };
    gw1.handle().announce(prefix("198.18.11.0/24"), hop);
    wait_for(long, "G1's second route in R", || {
        (best(&rh, "198.18.11.0/24") == [addr("198.18.1.9")]).then_some(())
    });

    // G1 drains: GRACEFUL_SHUTDOWN makes G2 the only best path.
    gw1.handle().set_drain(true);
    wait_for(long, "only G2 left while G1 drains", || {
        (best(&rh, vip) == [addr("198.18.2.2")]).then_some(())
    });
    gw1.handle().set_drain(false);
    wait_for(long, "both again after the undrain", || {
        (best(&rh, vip) == both).then_some(())
    });

    // G1 shuts down (withdraw, Cease): its routes leave R.
    assert!(gw1.handle().shutdown());
    wait_for(long, "G1's routes gone from R", || {
        rh.adj_rib_in(Some(addr("198.18.1.2")))
            .is_empty()
            .then_some(())
    });
    assert_eq!(best(&rh, vip), [addr("198.18.2.2")]);
    assert!(best(&rh, "198.18.11.0/24").is_empty());
    drop(gw2);
    wait_for(long, "nothing left in R", || {
        rh.adj_rib_in(None).is_empty().then_some(())
    });
    drop(gw1);
    drop(router);
}
