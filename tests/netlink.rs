//! Integration tests of `src/netns.rs` and `src/netlink/` against the real
//! kernel: namespaces, a veth pair between two of them, addresses, routes,
//! route look-ups, neighbour resolution and neighbour events.
//!
//! Needs root (CAP_SYS_ADMIN for namespaces, CAP_NET_ADMIN for links);
//! every test prints a message and passes without doing anything otherwise.
//! Namespaces are named `vgt-<pid>-<tag>` and removed by their `NetNs`
//! guard on every path, a failing assertion included; each test checks
//! `/run/netns` afterwards. Only 198.18.0.0/15 and 2001:db8::/32 are used.
//!
//! The vipgate package is a binary crate, so the modules are included by
//! path rather than imported.

use vipgate::{netlink, netns};

use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use netlink::{
    parse_neighbour_event, Family, NeighbourState, NetlinkError, RouteSocket, RtNetlink,
    RTNLGRP_NEIGH,
};
use netns::NetNs;
use vipgate::privileges::is_root;

/// How long the kernel gets to resolve a neighbour on a veth.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

fn ns_name(tag: &str) -> String {
    format!("vgt-{}-{tag}", std::process::id())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Asserts that none of `names` is left under /run/netns.
fn assert_gone(names: &[String]) {
    let left = netns::list_named().unwrap();
    for name in names {
        assert!(!left.contains(name), "{name} left in /run/netns: {left:?}");
    }
}

/// The inode of a namespace, to compare namespaces.
fn ns_inode(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn netns_lifecycle() {
    if !is_root() {
        return;
    }
    let names = [ns_name("life"), ns_name("kept"), ns_name("panic")];
    netns_lifecycle_steps(&names);
    // Also after the panic inside the steps, every name must be gone.
    assert_gone(&names);
}

fn netns_lifecycle_steps(names: &[String]) {
    let ns = NetNs::create(&names[0]).unwrap();
    assert!(netns::list_named().unwrap().contains(&names[0]));
    let dup = NetNs::create(&names[0]).unwrap_err();
    assert_eq!(dup.kind(), io::ErrorKind::AlreadyExists, "{dup}");

    // run() and command() act inside; the caller's namespace is unchanged.
    let own = NetNs::current().unwrap();
    let inside = ns
        .run(|| NetNs::current().map(|n| ns_inode(n.path())))
        .unwrap()
        .unwrap();
    assert_eq!(inside, ns_inode(ns.path()));
    assert_ne!(inside, ns_inode(own.path()));
    assert_eq!(
        ns_inode(NetNs::current().unwrap().path()),
        ns_inode(own.path())
    );
    let out = ns
        .command("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&out.stdout);
    assert_eq!(link.trim(), format!("net:[{inside}]"));

    // lo is up in a created namespace.
    let mut rtnl = RtNetlink::open_in(&ns).unwrap();
    let lo = rtnl.link_by_name("lo").unwrap().unwrap();
    assert!(lo.up && lo.index == 1, "{lo:?}");

    // open() does not own: dropping it leaves the namespace.
    drop(NetNs::open(&names[0]).unwrap());
    assert!(netns::list_named().unwrap().contains(&names[0]));
    ns.delete().unwrap();
    assert_gone(&names[..1]);

    // keep() leaves it for someone else; delete_named removes it.
    NetNs::create(&names[1]).unwrap().keep();
    assert!(netns::list_named().unwrap().contains(&names[1]));
    assert!(NetNs::list_named().unwrap().contains(&names[1]));
    let mut kept = NetNs::open(&names[1]).unwrap();
    kept.disown();
    kept.delete_named().unwrap();
    assert_gone(&names[1..2]);
    assert!(netns::delete_named(&names[1]).is_err(), "already gone");

    // A panic while the guard is alive still removes the namespace.
    let name = names[2].clone();
    let caught = std::panic::catch_unwind(move || {
        let _ns = NetNs::create(&name).unwrap();
        panic!("deliberate");
    });
    assert!(caught.is_err());
    assert_gone(names);
}

/// Two namespaces joined by a veth pair: `a` (vgta) and `b` (vgtb).
struct Pair {
    a: NetNs,
    b: NetNs,
    rtnl_a: RtNetlink,
    rtnl_b: RtNetlink,
    ifindex_a: u32,
    ifindex_b: u32,
    mac_b: [u8; 6],
}

impl Pair {
    fn build(tag: &str) -> Pair {
        let a = NetNs::create(&ns_name(&format!("{tag}a"))).unwrap();
        let b = NetNs::create(&ns_name(&format!("{tag}b"))).unwrap();
        let mut rtnl_a = RtNetlink::open_in(&a).unwrap();
        let mut rtnl_b = RtNetlink::open_in(&b).unwrap();
        rtnl_a.add_veth("vgta", "vgtb").unwrap();
        let peer = rtnl_a.link_by_name("vgtb").unwrap().unwrap();
        rtnl_a.move_link_to_netns(peer.index, &b).unwrap();
        assert_eq!(rtnl_a.link_by_name("vgtb").unwrap(), None);
        let link_a = rtnl_a.link_by_name("vgta").unwrap().unwrap();
        let link_b = rtnl_b.link_by_name("vgtb").unwrap().unwrap();
        rtnl_a.set_link_up(link_a.index, true).unwrap();
        rtnl_b.set_link_up(link_b.index, true).unwrap();
        Pair {
            ifindex_a: link_a.index,
            ifindex_b: link_b.index,
            mac_b: link_b.mac,
            a,
            b,
            rtnl_a,
            rtnl_b,
        }
    }

    fn names(&self) -> Vec<String> {
        [&self.a, &self.b]
            .iter()
            .filter_map(|ns| ns.name().map(str::to_string))
            .collect()
    }

    fn address(&mut self) {
        let (a, b) = (self.ifindex_a, self.ifindex_b);
        self.rtnl_a.add_addr(a, ip("198.18.0.1"), 24).unwrap();
        self.rtnl_b.add_addr(b, ip("198.18.0.2"), 24).unwrap();
        self.rtnl_a.add_addr(a, ip("2001:db8::1"), 64).unwrap();
        self.rtnl_b.add_addr(b, ip("2001:db8::2"), 64).unwrap();
    }
}

#[test]
fn veth_addresses_and_routes() {
    if !is_root() {
        return;
    }
    let mut pair = Pair::build("rt");
    let names = pair.names();
    pair.address();
    let a = pair.ifindex_a;
    let rtnl = &mut pair.rtnl_a;

    let addrs = rtnl.addrs().unwrap();
    assert!(addrs
        .iter()
        .any(|x| x.index == a && x.addr == ip("198.18.0.1") && x.prefix_len == 24));
    let again = rtnl.add_addr(a, ip("198.18.0.1"), 24).unwrap_err();
    assert_eq!(
        NetlinkError::errno_of(&again),
        Some(libc::EEXIST),
        "{again}"
    );

    rtnl.add_route(ip("198.19.0.0"), 24, Some(ip("198.18.0.2")), None)
        .unwrap();
    rtnl.add_route(ip("2001:db8:1::"), 48, Some(ip("2001:db8::2")), Some(a))
        .unwrap();
    let v4 = rtnl.routes(Family::V4).unwrap();
    assert!(
        v4.iter()
            .any(|r| r.dst == ip("198.19.0.0") && r.gateway == Some(ip("198.18.0.2"))),
        "{v4:?}"
    );

    let hit = rtnl.route_get(ip("198.19.0.5")).unwrap().unwrap();
    assert_eq!((hit.oif, hit.gateway), (a, Some(ip("198.18.0.2"))));
    assert_eq!(hit.prefsrc, Some(ip("198.18.0.1")));
    let hit6 = rtnl.route_get(ip("2001:db8:1::5")).unwrap().unwrap();
    assert_eq!((hit6.oif, hit6.gateway), (a, Some(ip("2001:db8::2"))));
    assert_eq!(
        rtnl.route_get(ip("198.18.200.1")).unwrap(),
        None,
        "no default route"
    );

    rtnl.del_route(ip("198.19.0.0"), 24, Some(ip("198.18.0.2")), None)
        .unwrap();
    assert_eq!(rtnl.route_get(ip("198.19.0.5")).unwrap(), None);
    rtnl.del_addr(a, ip("198.18.0.1"), 24).unwrap();
    assert!(!rtnl
        .addrs()
        .unwrap()
        .iter()
        .any(|x| x.addr == ip("198.18.0.1")));

    rtnl.del_link(a).unwrap();
    assert_eq!(
        pair.rtnl_b.link_by_name("vgtb").unwrap(),
        None,
        "peer goes with it"
    );
    drop(pair);
    assert_gone(&names);
}

#[test]
fn neighbours_resolve_and_notify() {
    if !is_root() {
        return;
    }
    let mut pair = Pair::build("nb");
    let names = pair.names();
    pair.address();
    let (a, mac_b) = (pair.ifindex_a, pair.mac_b);
    let mut events = pair
        .a
        .run(|| -> io::Result<RouteSocket> {
            let mut socket = RouteSocket::open()?;
            socket.join_group(RTNLGRP_NEIGH)?;
            Ok(socket)
        })
        .unwrap()
        .unwrap();

    for peer in [ip("198.18.0.2"), ip("2001:db8::2")] {
        pair.rtnl_a.request_resolution(a, peer).unwrap();
        let n = wait_resolved(&mut pair.rtnl_a, a, peer);
        assert_eq!(n.mac, Some(mac_b), "{n:?}");
        assert!(n.state.is_usable(), "{n:?}");
    }
    let table = pair.rtnl_a.neighbours().unwrap();
    for peer in [ip("198.18.0.2"), ip("2001:db8::2")] {
        assert!(
            table.iter().any(|n| n.addr == peer && n.mac == Some(mac_b)),
            "{table:?}"
        );
    }
    assert_event_seen(&mut events, a, ip("198.18.0.2"), mac_b);

    // Nobody owns .3: the entry exists and is being resolved (or failed).
    pair.rtnl_a.request_resolution(a, ip("198.18.0.3")).unwrap();
    let n = pair.rtnl_a.neighbour(a, ip("198.18.0.3")).unwrap().unwrap();
    assert!(
        matches!(n.state, NeighbourState::Incomplete | NeighbourState::Failed),
        "{n:?}"
    );
    assert_eq!(n.mac, None);

    permanent_entries(&mut pair.rtnl_a, a);
    drop(events);
    drop(pair);
    assert_gone(&names);
}

fn permanent_entries(rtnl: &mut RtNetlink, ifindex: u32) {
    let mac = [0x02, 0, 0, 0, 0, 0x99];
    let addr = ip("198.18.0.9");
    rtnl.add_permanent_neighbour(ifindex, addr, mac).unwrap();
    let n = rtnl.neighbour(ifindex, addr).unwrap().unwrap();
    assert_eq!((n.state, n.mac), (NeighbourState::Permanent, Some(mac)));
    let dup = rtnl
        .add_permanent_neighbour(ifindex, addr, mac)
        .unwrap_err();
    assert_eq!(NetlinkError::errno_of(&dup), Some(libc::EEXIST), "{dup}");
    rtnl.del_neighbour(ifindex, addr).unwrap();
    assert_eq!(rtnl.neighbour(ifindex, addr).unwrap(), None);
    assert!(rtnl.del_neighbour(ifindex, addr).is_err());
}

/// Polls the entry until it has a MAC, for at most [`RESOLVE_DEADLINE`].
fn wait_resolved(rtnl: &mut RtNetlink, ifindex: u32, addr: IpAddr) -> netlink::Neighbour {
    let deadline = Instant::now() + RESOLVE_DEADLINE;
    loop {
        let n = rtnl.neighbour(ifindex, addr).unwrap();
        match n {
            Some(n) if n.mac.is_some() => return n,
            _ if Instant::now() > deadline => panic!("{addr} not resolved: {n:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reads notifications (a few datagrams at most) until `addr` shows up
/// resolved.
fn assert_event_seen(events: &mut RouteSocket, ifindex: u32, addr: IpAddr, mac: [u8; 6]) {
    let mut seen = Vec::new();
    for _ in 0..64 {
        let mut msgs = Vec::new();
        if !events.recv_notifications(&mut msgs).unwrap() {
            break;
        }
        for (added, n) in msgs.iter().filter_map(parse_neighbour_event) {
            if added && n.ifindex == ifindex && n.addr == addr && n.mac == Some(mac) {
                return;
            }
            seen.push(n);
        }
    }
    panic!("no event for {addr} resolved; saw {seen:?}");
}
