//! Interop with FRR 8.4 (zebra + bgpd) as the upstream router (root and
//! FRR needed; skipped with the reason printed otherwise).
//!
//! ```text
//!   ns G1: speaker S1, AS 65001, IPv4 session    ──┐   ns R: zebra + bgpd, AS 64500
//!          198.18.1.2 (VIP6 via 2001:db8:1::2)     ├── maximum-paths 8,
//!   ns G2: speaker S2, AS 65002, an IPv4 session ──┘   as-path multipath-relax,
//!          198.18.2.2 and an IPv6 session              RFC 8326 policy on import
//!          2001:db8:2::2                               zebra programs R's FIB
//! ```
//!
//! FRR runs in its own namespace with its own config, PID files and
//! sockets in the lab's directory (zebra `-z`/`--vty_socket`, bgpd the
//! same, `-P 0`: no TCP vty), in the foreground, ended by PID. Checked in
//! bgpd (`vtysh --vty_socket`) and in R's kernel FIB: both sessions
//! Established; the VIP /32 is one multipath route with both gateways as
//! next hops; a withdrawal leaves one, a re-announcement restores both; a
//! drain of S1 shows community graceful-shutdown in bgpd, which then
//! prefers S2's path and the FIB keeps only G2; the IPv6 /128 from both
//! (MP-BGP over IPv4 with a configured next hop, and native IPv6) is one
//! multipath route; shutdown withdraws everything and bgpd records the
//! Cease.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{in_netns, run, wait_for, Lab};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig};
use vipgate_routing::wire::{Family, Prefix};

const VIP: &str = "198.18.10.10/32";
const VIP6: &str = "2001:db8:10::10/128";
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";

/// bgpd's configuration. RFC 8326 section 4.1's receiver policy: routes
/// with GRACEFUL_SHUTDOWN get LOCAL_PREF 0 (eBGP in FRR also needs some
/// import policy: `bgp ebgp-requires-policy`).
const BGPD_CONF: &str = r#"hostname r
router bgp 64500
 bgp router-id 198.18.1.1
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 timers bgp 3 9
 neighbor 198.18.1.2 remote-as 65001
 neighbor 198.18.1.2 timers connect 2
 neighbor 198.18.2.2 remote-as 65002
 neighbor 198.18.2.2 timers connect 2
 neighbor 2001:db8:2::2 remote-as 65002
 neighbor 2001:db8:2::2 timers connect 2
 address-family ipv4 unicast
  maximum-paths 8
  neighbor 198.18.1.2 activate
  neighbor 198.18.1.2 route-map GW-IN in
  neighbor 198.18.1.2 route-map NONE out
  neighbor 198.18.2.2 activate
  neighbor 198.18.2.2 route-map GW-IN in
  neighbor 198.18.2.2 route-map NONE out
 exit-address-family
 address-family ipv6 unicast
  maximum-paths 8
  neighbor 198.18.1.2 activate
  neighbor 198.18.1.2 route-map GW-IN in
  neighbor 198.18.1.2 route-map NONE out
  neighbor 2001:db8:2::2 activate
  neighbor 2001:db8:2::2 route-map GW-IN in
  neighbor 2001:db8:2::2 route-map NONE out
 exit-address-family
exit
bgp community-list standard GSHUT seq 5 permit graceful-shutdown
route-map GW-IN permit 10
 match community GSHUT
 set local-preference 0
exit
route-map GW-IN permit 20
exit
route-map NONE deny 10
exit
"#;

/// FRR's daemons as installed by Debian's `frr` package.
fn has_frr() -> bool {
    let vtysh = Command::new("vtysh").arg("--help").output().is_ok();
    vtysh && Path::new(ZEBRA).exists() && Path::new(BGPD).exists()
}

/// zebra and bgpd running in one namespace.
struct Frr {
    /// Sockets, PID files and logs (owned by the `frr` user zebra runs as).
    run_dir: PathBuf,
}

impl Frr {
    /// Start zebra, then bgpd, in `ns`; both are the lab's children.
    fn start(lab: &mut Lab, ns: &str) -> Frr {
        let run_dir = lab.dir.join("frr");
        std::fs::create_dir_all(&run_dir).expect("FRR run directory");
        // zebra drops to the frr user (its vty group check refuses root).
        run("chown", &["frr:frr", &run_dir.display().to_string()]);
        let zebra_conf = lab.dir.join("zebra.conf");
        let bgpd_conf = lab.dir.join("bgpd.conf");
        std::fs::write(&zebra_conf, "hostname r\n").expect("write zebra.conf");
        std::fs::write(&bgpd_conf, BGPD_CONF).expect("write bgpd.conf");
        let frr = Frr { run_dir };
        let zserv = frr.path("zserv.api");
        let vty = frr.run_dir.display().to_string();
        let common = |daemon: &str, conf: &Path| -> Vec<String> {
            vec![
                "-f".into(),
                conf.display().to_string(),
                "-i".into(),
                frr.path(&format!("{daemon}.pid")),
                "-z".into(),
                zserv.clone(),
                "--vty_socket".into(),
                vty.clone(),
                "-P".into(),
                "0".into(),
                "--log".into(),
                format!("file:{}", frr.path(&format!("{daemon}.log"))),
            ]
        };
        let zebra_args = common("zebra", &zebra_conf);
        lab.spawn(ns, ZEBRA, &as_strs(&zebra_args));
        wait_for(Duration::from_secs(10), "zebra's API socket", || {
            Path::new(&zserv).exists().then_some(())
        });
        // bgpd stays root (-S): it reads its config from the lab directory.
        let mut bgpd_args = common("bgpd", &bgpd_conf);
        bgpd_args.push("-S".into());
        lab.spawn(ns, BGPD, &as_strs(&bgpd_args));
        wait_for(Duration::from_secs(10), "bgpd answering vtysh", || {
            frr.vtysh("show bgp summary")
                .contains("local AS number 64500")
                .then_some(())
        });
        frr
    }

    fn path(&self, name: &str) -> String {
        self.run_dir.join(name).display().to_string()
    }

    /// One vtysh command against this FRR; its stdout.
    fn vtysh(&self, command: &str) -> String {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.run_dir)
            .args(["-c", command])
            .output()
            .expect("vtysh runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn established(&self, neighbor: &str) -> bool {
        self.vtysh(&format!("show bgp neighbors {neighbor}"))
            .contains("BGP state = Established")
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

fn speaker(ns: &str, local_as: u32, id: &str, peers: Vec<PeerConfig>) -> Speaker {
    let config = SpeakerConfig {
        local_as,
        router_id: id.parse().expect("router id"),
        listen: None,
        peers,
        drain: Default::default(),
    };
    in_netns(ns, move || Speaker::new(config).expect("speaker starts"))
}

fn peer(local: &str, router: &str, families: Vec<Family>) -> PeerConfig {
    let mut p = PeerConfig::new(router.parse().expect("addr"), 64500);
    p.local_address = Some(local.parse::<IpAddr>().expect("addr"));
    p.idle_hold = Duration::from_secs(1);
    p.connect_retry = Duration::from_secs(2);
    p.families = families;
    p
}

/// The lines of `show bgp <afi> unicast <prefix>` about the path learned
/// from `neighbor`: from its "from" line through its "Last update:" line.
fn path_from(show: &str, neighbor: &str) -> Option<String> {
    let head = format!("{neighbor} from {neighbor} ");
    let mut lines = show
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&head));
    let first = lines.next()?;
    let mut path = vec![first];
    for l in lines {
        path.push(l);
        if l.trim_start().starts_with("Last update:") {
            break;
        }
    }
    Some(path.join("\n"))
}

#[test]
fn frr_learns_multipath_vip_drain_ipv6_and_cease() {
    if !has_frr() {
        println!("skipped: FRR (zebra, bgpd, vtysh) not installed (apt-get install frr)");
        return;
    }
    let Some(mut lab) = Lab::new("frr") else {
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
    lab.addr(&g1, "g1", "2001:db8:1::2/64");
    lab.addr(&r, "r2", "198.18.2.1/24");
    lab.addr(&r, "r2", "2001:db8:2::1/64");
    lab.addr(&g2, "g2", "198.18.2.2/24");
    lab.addr(&g2, "g2", "2001:db8:2::2/64");
    let frr = Frr::start(&mut lab, &r);

    let v4 = vec![Family::Ipv4Unicast];
    let mut p1 = peer(
        "198.18.1.2",
        "198.18.1.1",
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
    );
    p1.next_hop_ipv6 = Some("2001:db8:1::2".parse().expect("addr"));
    let s1 = speaker(&g1, 65001, "198.18.1.2", vec![p1]);
    let p2 = peer("198.18.2.2", "198.18.2.1", v4);
    let p2v6 = peer("2001:db8:2::2", "2001:db8:2::1", vec![Family::Ipv6Unicast]);
    let s2 = speaker(&g2, 65002, "198.18.2.2", vec![p2, p2v6]);
    let (h1, h2) = (s1.handle(), s2.handle());

    wait_for(
        Duration::from_secs(30),
        "three sessions Established in bgpd",
        || {
            ["198.18.1.2", "198.18.2.2", "2001:db8:2::2"]
                .iter()
                .all(|n| frr.established(n))
                .then_some(())
        },
    );

    // The VIP from both gateways: one multipath route in R's kernel.
    for h in [&h1, &h2] {
        h.announce(prefix(VIP), RouteAttrs::default());
        h.announce(prefix(VIP6), RouteAttrs::default());
    }
    let route = |dst: &str| lab.ip(&r, &["route", "show", dst]);
    let route6 = |dst: &str| lab.ip(&r, &["-6", "route", "show", dst]);
    let both =
        |r: &str| r.contains("nexthop via 198.18.1.2") && r.contains("nexthop via 198.18.2.2");
    wait_for(
        Duration::from_secs(15),
        "multipath VIP route in R's FIB",
        || both(&route("198.18.10.10")).then_some(()),
    );
    println!("R's FIB: {}", route("198.18.10.10"));
    println!("{}", frr.vtysh(&format!("show bgp ipv4 unicast {VIP}")));
    wait_for(
        Duration::from_secs(15),
        "multipath IPv6 VIP in R's FIB",
        || {
            let r = route6("2001:db8:10::10");
            (r.contains("via 2001:db8:1::2") && r.contains("via 2001:db8:2::2")).then_some(())
        },
    );
    println!("R's FIB: {}", route6("2001:db8:10::10"));

    // A withdrawal removes one next hop; announcing again restores it.
    assert!(h2.withdraw(prefix(VIP)));
    wait_for(Duration::from_secs(15), "one next hop left", || {
        let r = route("198.18.10.10");
        (r.contains("via 198.18.1.2") && !r.contains("198.18.2.2")).then_some(())
    });
    h2.announce(prefix(VIP), RouteAttrs::default());
    wait_for(Duration::from_secs(15), "both next hops again", || {
        both(&route("198.18.10.10")).then_some(())
    });

    // Drain S1: bgpd shows graceful-shutdown on S1's path, prefers S2's,
    // and R's FIB keeps only G2.
    h1.set_drain(true);
    // (bgpd shows the new attributes before its best-path run.)
    let show = wait_for(
        Duration::from_secs(15),
        "graceful-shutdown on S1's path, S2's best",
        || {
            let show = frr.vtysh(&format!("show bgp ipv4 unicast {VIP}"));
            let drained = path_from(&show, "198.18.1.2")
                .is_some_and(|p| p.contains("Community: graceful-shutdown"));
            let kept = path_from(&show, "198.18.2.2").is_some_and(|p| p.contains("best"));
            (drained && kept).then_some(show)
        },
    );
    println!("{show}");
    let drained = path_from(&show, "198.18.1.2").expect("S1's path");
    let kept = path_from(&show, "198.18.2.2").expect("S2's path");
    assert!(drained.contains("localpref 0"), "{drained}");
    assert!(!drained.contains("best"), "{drained}");
    assert!(kept.contains("best"), "{kept}");
    assert!(!kept.contains("graceful-shutdown"), "{kept}");
    wait_for(Duration::from_secs(15), "R's FIB only via G2", || {
        let r = route("198.18.10.10");
        (r.contains("via 198.18.2.2") && !r.contains("198.18.1.2")).then_some(())
    });
    h1.set_drain(false);
    wait_for(
        Duration::from_secs(15),
        "both next hops after undrain",
        || both(&route("198.18.10.10")).then_some(()),
    );

    // Shutdown withdraws (the FIB loses the routes) and sends Cease.
    assert!(h1.shutdown(), "S1's shutdown finished in time");
    assert!(h2.shutdown(), "S2's shutdown finished in time");
    wait_for(
        Duration::from_secs(15),
        "VIP routes gone from R's FIB",
        || {
            (route("198.18.10.10").trim().is_empty() && route6("2001:db8:10::10").trim().is_empty())
                .then_some(())
        },
    );
    let neighbor = wait_for(Duration::from_secs(10), "bgpd resets S1's session", || {
        let show = frr.vtysh("show bgp neighbors 198.18.1.2");
        show.contains("Last reset").then_some(show)
    });
    let reset = neighbor
        .lines()
        .find(|l| l.contains("Last reset"))
        .unwrap_or_default();
    assert!(
        reset.contains("Notification received (Cease/Administrative Shutdown)"),
        "{neighbor}"
    );
    println!("bgpd: {}", reset.trim());
    drop((s1, s2));
}
