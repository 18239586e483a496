//! Two vipgate speakers against each other in network namespaces (root;
//! skipped otherwise): both active and listening (so connections collide),
//! TCP MD5 on both sides, announce/withdraw/drain seen by the other side,
//! a dead peer that does not hold up the live one, and shutdown's Cease.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{in_netns, wait_for, Lab};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::session::State;
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig, SpeakerHandle};

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn speaker(ns: &str, local_as: u32, id: &str, peers: Vec<PeerConfig>) -> Speaker {
    let config = SpeakerConfig {
        local_as,
        router_id: id.parse().expect("router id"),
        listen: Some("0.0.0.0:179".parse().expect("listen")),
        peers,
        drain: Default::default(),
    };
    in_netns(ns, move || Speaker::new(config).expect("speaker starts"))
}

fn peer(address: &str, remote_as: u32) -> PeerConfig {
    let mut p = PeerConfig::new(addr(address), remote_as);
    p.hold_time = 9;
    p.idle_hold = Duration::from_millis(500);
    p.connect_retry = Duration::from_secs(2);
    p.md5_password = Some("vipgate-md5".into());
    p
}

fn status(h: &SpeakerHandle, peer: &str) -> vipgate_routing::speaker::PeerStatus {
    h.peers()
        .into_iter()
        .find(|p| p.address == addr(peer))
        .expect("peer in status")
}

/// User + system CPU time of this process (/proc/self/stat, in ticks of
/// 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("proc stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[test]
fn two_speakers_establish_exchange_routes_and_cease() {
    let Some(mut lab) = Lab::new("spk") else {
        return;
    };
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.veth(&a, "va", &b, "vb");
    lab.addr(&a, "va", "198.18.0.1/24");
    lab.addr(&b, "vb", "198.18.0.2/24");

    // a also has a peer that never answers: it must not hold up b.
    let mut dead = peer("198.18.0.99", 65009);
    dead.md5_password = None;
    let sa = speaker(
        &a,
        65001,
        "198.18.0.1",
        vec![peer("198.18.0.2", 65002), dead],
    );
    let sb = speaker(&b, 65002, "198.18.0.2", vec![peer("198.18.0.1", 65001)]);
    let (ha, hb) = (sa.handle(), sb.handle());
    ha.announce(
        "198.18.10.1/32".parse().expect("prefix"),
        RouteAttrs::default(),
    );
    hb.announce(
        "198.18.20.1/32".parse().expect("prefix"),
        RouteAttrs::default(),
    );

    let up = |h: &SpeakerHandle, p: &str| status(h, p).state == State::Established;
    wait_for(Duration::from_secs(20), "both sessions established", || {
        (up(&ha, "198.18.0.2") && up(&hb, "198.18.0.1")).then_some(())
    });
    wait_for(Duration::from_secs(5), "routes exchanged", || {
        let (sa, sb) = (status(&ha, "198.18.0.2"), status(&hb, "198.18.0.1"));
        (sa.prefixes_received == 1 && sb.prefixes_received == 1 && sa.prefixes_sent == 1)
            .then_some(())
    });
    assert_ne!(status(&ha, "198.18.0.99").state, State::Established);
    // A peer that is down is not spun on: announcements pending for it
    // cost nothing until it comes up.
    let cpu = cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds() - cpu;
    assert!(used < 0.3, "{used} s of CPU in 1 s while idle");
    let rib = ha.adj_rib_out(Some(addr("198.18.0.2")));
    assert_eq!(rib.len(), 1);
    assert_eq!(
        rib[0].2.next_hop,
        vipgate_routing::rib::NextHop::Address(addr("198.18.0.1")),
        "next-hop self is the session's local address"
    );
    assert!(ha.adj_rib_out(Some(addr("198.18.0.99"))).is_empty());

    // Withdraw reaches b.
    assert!(ha.withdraw("198.18.10.1/32".parse().expect("prefix")));
    wait_for(Duration::from_secs(5), "withdrawal seen by b", || {
        (status(&hb, "198.18.0.1").prefixes_received == 0).then_some(())
    });
    assert!(ha.adj_rib_out(None).is_empty());

    // Shutdown: Cease reaches b, which records it as the reason.
    assert!(ha.shutdown(), "shutdown finished in time");
    let err = wait_for(Duration::from_secs(5), "b sees the Cease", || {
        let s = status(&hb, "198.18.0.1");
        (s.state != State::Established).then_some(s.last_error)
    });
    let err = err.unwrap_or_default();
    assert!(err.contains("received NOTIFICATION"), "{err}");
    assert_eq!(status(&hb, "198.18.0.1").prefixes_received, 0);
    drop(sb);
    drop(sa);
}
