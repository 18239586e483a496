//! Integration tests of `src/vrrp/socket.rs` and `src/vrrp/wire.rs`
//! against the real kernel and Debian's keepalived 2.2.
//!
//! - Two `VrrpSocket`s on the ends of a veth pair exchange adverts built by
//!   `wire::emit`: v3 and v2 over IPv4 multicast, v3 over IPv6 multicast
//!   (link-local source), v3 over IPv4 unicast; the receiver parses them
//!   with the received TTL.
//! - keepalived receives vipgate's adverts (priority 200) for five
//!   instances (v3 IPv4, v3 IPv6, v2 with PASS authentication, v3 unicast,
//!   plus one control instance vipgate does not advertise) and must stay
//!   BACKUP for the four and log no complaint, while the control instance
//!   becomes MASTER (so a silent keepalived cannot pass the test).
//! - vipgate's sockets receive keepalived's own adverts and parse them.
//!
//! Needs root (namespaces, raw sockets); the keepalived tests also need
//! the keepalived binary. Each test prints why and passes without doing
//! anything otherwise. Namespaces are named `vgt-<pid>-<tag>` and removed
//! by their `NetNs` guards; keepalived is ended by PID by a guard. Only
//! 198.18.0.0/15, 2001:db8::/32 and link-local addresses are used.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vipgate::netns::NetNs;
use vipgate::privileges::is_root;
use vipgate::vrrp::socket::{poll_readable, Family, Received, SocketConfig, VrrpSocket};
use vipgate::vrrp::wire::{self, Advert, Auth, ChecksumMode, Version, MCAST_V4, MCAST_V6};

const PSEUDO: ChecksumMode = ChecksumMode::PseudoHeader;
/// Receive buffer: IPv4 header with options and the longest advert.
const BUF_LEN: usize = 60 + wire::MAX_LEN;

fn keepalived_path() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/keepalived",
        "/sbin/keepalived",
        "/usr/local/sbin/keepalived",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        eprintln!("skipping: keepalived is not installed (apt-get install keepalived)");
    }
    found
}

fn ns_name(tag: &str) -> String {
    format!("vgt-{}-{tag}", std::process::id())
}

/// One end of the veth pair.
struct End {
    ns: NetNs,
    ifname: &'static str,
    ifindex: u32,
    v4: Ipv4Addr,
    link_local: Ipv6Addr,
}

impl End {
    fn socket(&self, family: Family, multicast: bool) -> VrrpSocket {
        let source = match family {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(self.link_local),
        };
        let cfg = SocketConfig {
            ifindex: self.ifindex,
            ifname: self.ifname.to_string(),
            family,
            source,
            multicast,
        };
        self.ns.run(|| VrrpSocket::open(&cfg)).unwrap().unwrap()
    }
}

/// Runs `args` in `ns`, panicking with its output if it fails.
fn run(ns: &NetNs, args: &[&str]) -> String {
    let out = ns.command(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair: `va` 198.18.0.1/24 in A, `vb`
/// 198.18.0.2/24 in B, both with an IPv6 link-local address (no DAD).
fn veth_pair(tag: &str) -> (End, End) {
    let a = NetNs::create(&ns_name(&format!("{tag}-a"))).unwrap();
    let b = NetNs::create(&ns_name(&format!("{tag}-b"))).unwrap();
    for ns in [&a, &b] {
        run(ns, &["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        run(ns, &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
    }
    let b_name = b.name().unwrap().to_string();
    run(
        &a,
        &[
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b_name,
        ],
    );
    let (va, vb) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    for (ns, ifname, v4) in [(&a, "va", va), (&b, "vb", vb)] {
        run(
            ns,
            &["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname],
        );
        run(ns, &["ip", "link", "set", ifname, "up"]);
    }
    // Link-local addresses appear once both ends are up (carrier).
    (end(a, "va", va), end(b, "vb", vb))
}

fn end(ns: NetNs, ifname: &'static str, v4: Ipv4Addr) -> End {
    let link = run(&ns, &["ip", "-o", "link", "show", ifname]);
    let ifindex = link.split(':').next().unwrap().trim().parse().unwrap();
    let link_local = wait_link_local(&ns, ifname);
    End {
        ns,
        ifname,
        ifindex,
        v4,
        link_local,
    }
}

fn wait_link_local(ns: &NetNs, ifname: &str) -> Ipv6Addr {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = run(
            ns,
            &[
                "ip", "-o", "-6", "addr", "show", "dev", ifname, "scope", "link",
            ],
        );
        let addr = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1);
        if let Some(addr) = addr.and_then(|a| a.split('/').next()) {
            if !out.contains("tentative") {
                return addr.parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no link-local address on {ifname}");
}

fn advert(version: Version, vrid: u8, priority: u8, interval_cs: u16, addrs: &[&str]) -> Advert {
    Advert {
        version,
        vrid,
        priority,
        interval_cs,
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        auth: Auth::None,
    }
}

fn send(sock: &VrrpSocket, advert: &Advert, src: IpAddr, dst: IpAddr) {
    let mut buf = [0u8; wire::MAX_LEN];
    let n = wire::emit(advert, src, dst, PSEUDO, &mut buf).unwrap();
    sock.send(dst, &buf[..n]).unwrap();
}

/// The next datagram on `sock`, waiting at most 3 seconds.
fn recv_one(sock: &VrrpSocket, buf: &mut [u8]) -> Received {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(got) = sock.recv(buf).unwrap() {
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "nothing received within 3 s");
        poll_readable(&[sock.fd()], left).unwrap();
    }
}

/// Sends `advert` from `from` to `dst` and checks that `to` receives
/// exactly it, with TTL 255, the right addresses and interface.
fn exchange(from: (&VrrpSocket, IpAddr), to: (&VrrpSocket, u32), dst: IpAddr, advert: &Advert) {
    send(from.0, advert, from.1, dst);
    let mut buf = [0u8; BUF_LEN];
    let got = recv_one(to.0, &mut buf);
    assert_eq!(
        (got.src, got.dst, got.ttl, got.ifindex),
        (from.1, dst, 255, to.1)
    );
    let parsed = wire::parse(
        &buf[..got.len],
        got.src,
        got.dst,
        got.ttl,
        PSEUDO,
        advert.version,
    );
    assert_eq!(parsed.as_ref(), Ok(advert));
}

#[test]
fn sockets_exchange_adverts_over_a_veth_pair() {
    if !is_root() {
        return;
    }
    let (a, b) = veth_pair("sock");
    let (a4, b4) = (a.socket(Family::V4, true), b.socket(Family::V4, true));
    let (a6, b6) = (a.socket(Family::V6, true), b.socket(Family::V6, true));
    let (src4, src6) = (IpAddr::V4(a.v4), IpAddr::V6(a.link_local));
    let (group4, group6) = (IpAddr::V4(MCAST_V4), IpAddr::V6(MCAST_V6));

    let v3 = advert(Version::V3, 61, 200, 100, &["198.18.1.1", "198.18.1.2"]);
    exchange((&a4, src4), (&b4, b.ifindex), group4, &v3);
    let v2 = Advert {
        auth: Auth::simple(b"pw"),
        ..advert(Version::V2, 62, 100, 300, &["198.18.1.3"])
    };
    exchange((&a4, src4), (&b4, b.ifindex), group4, &v2);
    let v6 = advert(Version::V3, 63, 254, 5, &["2001:db8::63", "2001:db8::64"]);
    exchange((&a6, src6), (&b6, b.ifindex), group6, &v6);
    let unicast = advert(Version::V3, 64, 1, 4095, &["198.18.1.4"]);
    exchange((&a4, src4), (&b4, b.ifindex), IpAddr::V4(b.v4), &unicast);
    // And back, unicast over IPv6 link-local.
    let back = advert(Version::V3, 65, 0, 100, &["2001:db8::65"]);
    exchange(
        (&b6, IpAddr::V6(b.link_local)),
        (&a6, a.ifindex),
        IpAddr::V6(a.link_local),
        &back,
    );

    // Multicast loop is off: the senders saw none of their own adverts.
    let mut buf = [0u8; BUF_LEN];
    assert_eq!(a4.recv(&mut buf).unwrap(), None);
    assert_eq!(b6.recv(&mut buf).unwrap(), None);
    // Nothing else queued on the receivers either.
    assert_eq!(b4.recv(&mut buf).unwrap(), None);
    assert_eq!(a6.recv(&mut buf).unwrap(), None);
}

#[test]
fn unicast_only_socket_ignores_the_group() {
    if !is_root() {
        return;
    }
    let (a, b) = veth_pair("ucast");
    let a4 = a.socket(Family::V4, true);
    let b4 = b.socket(Family::V4, false);
    let v3 = advert(Version::V3, 66, 100, 100, &["198.18.1.6"]);
    send(&a4, &v3, IpAddr::V4(a.v4), IpAddr::V4(MCAST_V4));
    // The unicast one arrives; the multicast one sent before it does not.
    exchange(
        (&a4, IpAddr::V4(a.v4)),
        (&b4, b.ifindex),
        IpAddr::V4(b.v4),
        &v3,
    );
    let mut buf = [0u8; BUF_LEN];
    assert_eq!(b4.recv(&mut buf).unwrap(), None);
}

/// keepalived running in a namespace; ended by PID (SIGTERM, then SIGKILL
/// of it and its VRRP child) on drop, with its scratch directory removed.
struct Keepalived {
    child: Child,
    dir: PathBuf,
}

impl Keepalived {
    fn start(binary: &Path, ns: &NetNs, tag: &str, config: &str) -> Keepalived {
        let dir = std::env::temp_dir().join(ns_name(tag));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keepalived.conf"), config).unwrap();
        let log = fs::File::create(dir.join("log")).unwrap();
        let child = ns
            .command(binary)
            .args([
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--log-detail",
                "--vrrp",
                "--use-file",
            ])
            .arg(dir.join("keepalived.conf"))
            .arg("--pid")
            .arg(dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(dir.join("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Keepalived { child, dir }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn signal(pid: u32, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let vrrp_child = fs::read_to_string(self.dir.join("vrrp.pid")).ok();
        Keepalived::signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The VRRP child normally exits with its parent; make sure.
        if let Some(pid) = vrrp_child.and_then(|p| p.trim().parse::<u32>().ok()) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                Keepalived::signal(pid, "-KILL");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// keepalived as BACKUP (priority 100) of the four instances vipgate
/// advertises, plus instance 56 that nobody else advertises.
fn backup_config() -> String {
    let instance = |name: &str, vrid: u8, version: u8, interval: &str, extra: &str, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n    state BACKUP\n    interface vb\n    version {version}\n    \
             virtual_router_id {vrid}\n    priority 100\n    advert_int {interval}\n{extra}    \
             virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
        )
    };
    let pass = "    authentication {\n        auth_type PASS\n        auth_pass secret1\n    }\n";
    let unicast = "    unicast_src_ip 198.18.0.2\n    unicast_peer {\n        198.18.0.1\n    }\n";
    [
        "global_defs {\n    router_id vgt-backup\n}\n".to_string(),
        instance(
            "V51",
            51,
            3,
            "0.2",
            "",
            "198.18.0.100/32\n        198.18.0.101/32",
        ),
        instance("V52", 52, 3, "0.2", "    native_ipv6\n", "2001:db8::52/128"),
        instance("V53", 53, 2, "1", pass, "198.18.0.103/32"),
        instance("V55", 55, 3, "0.2", unicast, "198.18.0.106/32"),
        instance("V56", 56, 3, "0.2", "", "198.18.0.107/32"),
    ]
    .concat()
}

/// Words in keepalived 2.2's log messages about adverts it refused.
const COMPLAINTS: [&str; 9] = [
    "invalid",
    "mismatch",
    "wrong",
    "too short",
    "too long",
    "unexpected",
    "expect",
    "error",
    "bad",
];

#[test]
fn keepalived_stays_backup_under_vipgate_adverts() {
    if !is_root() {
        return;
    }
    let Some(keepalived) = keepalived_path() else {
        return;
    };
    let (a, b) = veth_pair("kabk");
    let (a4, a6) = (a.socket(Family::V4, true), a.socket(Family::V6, true));
    let (src4, src6) = (IpAddr::V4(a.v4), IpAddr::V6(a.link_local));
    let (group4, group6) = (IpAddr::V4(MCAST_V4), IpAddr::V6(MCAST_V6));
    let v51 = advert(Version::V3, 51, 200, 20, &["198.18.0.100", "198.18.0.101"]);
    let v52 = advert(Version::V3, 52, 200, 20, &["2001:db8::52"]);
    let v53 = Advert {
        auth: Auth::simple(b"secret1"),
        ..advert(Version::V2, 53, 200, 100, &["198.18.0.103"])
    };
    let v55 = advert(Version::V3, 55, 200, 20, &["198.18.0.106"]);

    let ka = Keepalived::start(&keepalived, &b.ns, "kabk", &backup_config());
    // 6 s: keepalived's master down interval is ~0.7 s for the v3
    // instances and ~3.6 s for v2 (3 x 1 s + skew).
    let start = Instant::now();
    for tick in 0u32..60 {
        if tick % 2 == 0 {
            send(&a4, &v51, src4, group4);
            send(&a6, &v52, src6, group6);
            send(&a4, &v55, src4, IpAddr::V4(b.v4));
        }
        if tick % 10 == 0 {
            send(&a4, &v53, src4, group4);
        }
        let next = start + Duration::from_millis(100 * u64::from(tick + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let log = ka.log();
    drop(ka);
    for name in ["V51", "V52", "V53", "V55"] {
        assert!(
            log.contains(&format!("({name}) Entering BACKUP STATE")),
            "{name} not BACKUP:\n{log}"
        );
        assert!(
            !log.contains(&format!("({name}) Entering MASTER STATE")),
            "{name} became MASTER:\n{log}"
        );
    }
    assert!(
        log.contains("(V56) Entering MASTER STATE"),
        "control instance V56 not MASTER:\n{log}"
    );
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| COMPLAINTS.iter().any(|w| l.to_lowercase().contains(w)))
        .collect();
    assert!(
        complaints.is_empty(),
        "keepalived complained: {complaints:#?}\n{log}"
    );
}

/// keepalived as MASTER of one v3 IPv4, one v3 IPv6 and one v2 instance.
fn master_config() -> String {
    "global_defs {\n    router_id vgt-master\n}\n\
     vrrp_instance V71 {\n    state MASTER\n    interface vb\n    version 3\n    virtual_router_id 71\n    \
     priority 150\n    advert_int 0.2\n    virtual_ipaddress {\n        198.18.0.171/32\n    }\n}\n\
     vrrp_instance V72 {\n    state MASTER\n    interface vb\n    version 3\n    virtual_router_id 72\n    \
     priority 150\n    advert_int 0.2\n    native_ipv6\n    virtual_ipaddress {\n        2001:db8::72/128\n    }\n}\n\
     vrrp_instance V73 {\n    state MASTER\n    interface vb\n    version 2\n    virtual_router_id 73\n    \
     priority 150\n    advert_int 1\n    authentication {\n        auth_type PASS\n        auth_pass abc\n    }\n    \
     virtual_ipaddress {\n        198.18.0.173/32\n    }\n}\n"
        .to_string()
}

#[test]
fn vipgate_parses_live_keepalived_adverts() {
    if !is_root() {
        return;
    }
    let Some(keepalived) = keepalived_path() else {
        return;
    };
    let (a, b) = veth_pair("kams");
    let (a4, a6) = (a.socket(Family::V4, true), a.socket(Family::V6, true));
    let ka = Keepalived::start(&keepalived, &b.ns, "kams", &master_config());
    let mut want = vec![
        advert(Version::V3, 71, 150, 20, &["198.18.0.171"]),
        advert(Version::V3, 72, 150, 20, &["2001:db8::72"]),
        Advert {
            auth: Auth::simple(b"abc"),
            ..advert(Version::V2, 73, 150, 100, &["198.18.0.173"])
        },
    ];
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; BUF_LEN];
    while !want.is_empty() && Instant::now() < deadline {
        poll_readable(&[a4.fd(), a6.fd()], Duration::from_millis(200)).unwrap();
        for sock in [&a4, &a6] {
            while let Some(got) = sock.recv(&mut buf).unwrap() {
                let payload = &buf[..got.len];
                let version = if payload.first() == Some(&0x21) {
                    Version::V2
                } else {
                    Version::V3
                };
                let parsed = wire::parse(payload, got.src, got.dst, got.ttl, PSEUDO, version);
                let parsed =
                    parsed.unwrap_or_else(|e| panic!("{e} on {payload:02x?} from {}", got.src));
                let expect_src = if got.src.is_ipv4() {
                    IpAddr::V4(b.v4)
                } else {
                    IpAddr::V6(b.link_local)
                };
                assert_eq!(got.src, expect_src);
                want.retain(|w| *w != parsed);
            }
        }
    }
    assert!(
        want.is_empty(),
        "never received from keepalived: {want:?}\n{}",
        ka.log()
    );
}
