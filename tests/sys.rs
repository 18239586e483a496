//! Root-only tests of src/sys/ against the real kernel: the nftables ingress
//! table and the offload guard, each in network namespaces of its own.
//!
//! Layout: a "node" namespace with `vgt-dp` (198.18.0.1/24, 2001:db8::1/64)
//! and VIPs 198.18.0.100 and 2001:db8::100 on `lo`; a "client" namespace
//! with the veth peer `vgt-cl` (198.18.0.2/24, 2001:db8::2/64) routing the
//! VIPs via the node. The namespaces are unnamed (each made by a thread
//! with unshare(CLONE_NEWNET)) and vanish with their threads, on every path.
//! `ip` and `ethtool -K` only set the lab up; `nft` and `ethtool -k` only
//! look.

// The binary crate uses the rest of the module; this test uses part of it.
#[allow(dead_code, unused_imports)]
use vipgate::sys;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use sys::{
    BackendEndpoint, IngressFilter, L4Protocol, NftIngressGuard, Offload, OffloadGuard,
    OffloadState, Offloads, SysError, SystemChange,
};
use vipgate::privileges::is_root;

const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP2_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const BACKEND_PORT: u16 = 8053;
/// The longest any one job in a namespace may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Skips the test (returns) with a message unless running as root.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (network namespaces, nftables, ethtool)");
            return;
        }
    };
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a fresh network namespace that runs jobs sent to it.
/// Commands it starts inherit its namespace.
struct NetnsThread {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
    tid: i32,
}

impl NetnsThread {
    fn spawn(name: &str) -> Self {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // SAFETY: unshare and gettid only affect the calling thread.
                #[allow(unsafe_code)]
                let (rc, tid) = unsafe { (libc::unshare(libc::CLONE_NEWNET), libc::gettid()) };
                let _ = ready.send(if rc == 0 {
                    Ok(tid)
                } else {
                    Err(std::io::Error::last_os_error())
                });
                // Ends when the NetnsThread is dropped (sender gone).
                while let Ok(job) = inbox.recv() {
                    job();
                }
            })
            .expect("spawn namespace thread");
        let tid = started
            .recv_timeout(JOB_TIMEOUT)
            .expect("namespace thread started")
            .expect("unshare(CLONE_NEWNET)");
        Self {
            jobs: Some(jobs),
            handle: Some(handle),
            tid,
        }
    }

    /// Runs `f` in the namespace and returns its result; a panic in `f`
    /// becomes a panic here.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(result);
        });
        self.jobs
            .as_ref()
            .expect("sender lives until drop")
            .send(job)
            .expect("namespace thread alive");
        match rx.recv_timeout(JOB_TIMEOUT).expect("job finished in time") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs a command, panicking with its output if it fails.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ping with a bounded wait; true when answered.
fn ping_once(addr: IpAddr) -> bool {
    Command::new("ping")
        .args(["-n", "-q", "-c", "1", "-W", "1", &addr.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Answered at least once in three tries (the first may wait on ARP/ND).
fn answers_ping(addr: IpAddr) -> bool {
    (0..3).any(|_| ping_once(addr))
}

/// Sends a UDP datagram from the backend endpoint to the node's address
/// (where nothing listens); true when the kernel answered with ICMP port
/// unreachable, false when nothing came back within the wait.
fn kernel_answers_backend_udp() -> bool {
    let socket = UdpSocket::bind((CLIENT_V4, BACKEND_PORT)).expect("bind backend endpoint");
    socket.connect((NODE_V4, 9)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        socket.send(b"reply").expect("send");
        match socket.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => continue,
        }
    }
    false
}

/// The node and client namespaces joined by a veth pair, addressed as in
/// the module comment.
fn lab() -> (NetnsThread, NetnsThread) {
    let node = NetnsThread::spawn("vgt-node");
    let client = NetnsThread::spawn("vgt-client");
    let client_tid = client.tid.to_string();
    node.run(move || {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip", "link", "add", "vgt-dp", "type", "veth", "peer", "name", "vgt-cl",
        ]);
        sh(&["ip", "link", "set", "vgt-cl", "netns", &client_tid]);
        sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "vgt-dp"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "vgt-dp",
            "nodad",
        ]);
        sh(&["ip", "addr", "add", "198.18.0.100/32", "dev", "lo"]);
        sh(&["ip", "addr", "add", "198.18.0.101/32", "dev", "lo"]);
        sh(&["ip", "-6", "addr", "add", "2001:db8::100/128", "dev", "lo"]);
        sh(&["ip", "link", "set", "vgt-dp", "up"]);
    });
    client.run(|| {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&["ip", "addr", "add", "198.18.0.2/24", "dev", "vgt-cl"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "vgt-cl",
            "nodad",
        ]);
        sh(&["ip", "link", "set", "vgt-cl", "up"]);
        sh(&["ip", "route", "add", "198.18.0.100/31", "via", "198.18.0.1"]);
        sh(&[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8::100/128",
            "via",
            "2001:db8::1",
        ]);
    });
    (node, client)
}

/// What the client sees of the node: VIP v4, VIP2 v4, VIP v6, node v4,
/// node v6 answering ping, and the kernel answering backend replies.
#[derive(Debug, PartialEq, Eq)]
struct Reachability {
    vip_v4: bool,
    vip2_v4: bool,
    vip_v6: bool,
    node_v4: bool,
    node_v6: bool,
    backend_udp: bool,
}

fn probe(client: &NetnsThread) -> Reachability {
    client.run(|| Reachability {
        vip_v4: answers_ping(VIP_V4.into()),
        vip2_v4: answers_ping(VIP2_V4.into()),
        vip_v6: answers_ping(VIP_V6.into()),
        node_v4: answers_ping(NODE_V4.into()),
        node_v6: answers_ping(NODE_V6.into()),
        backend_udp: kernel_answers_backend_udp(),
    })
}

fn table_name() -> String {
    format!("vgt_{}", std::process::id())
}

fn filter(vips: &[IpAddr]) -> IngressFilter {
    IngressFilter {
        table: table_name(),
        interfaces: vec!["vgt-dp".into()],
        vips: vips.to_vec(),
        backends: vec![
            BackendEndpoint {
                addr: CLIENT_V4.into(),
                proto: L4Protocol::Udp,
                port: BACKEND_PORT,
            },
            BackendEndpoint {
                addr: CLIENT_V4.into(),
                proto: L4Protocol::Tcp,
                port: 80,
            },
        ],
        local: Vec::new(),
    }
}

/// The rules of our table's only chain, as `nft -j` shows them, after
/// checking that the chain hooks netdev ingress on vgt-dp.
fn listed_rules() -> Vec<serde_json::Value> {
    let out = sh(&["nft", "-j", "list", "ruleset"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("nft -j prints JSON");
    let items = json["nftables"].as_array().expect("nftables array").clone();
    let table = table_name();
    let tables: Vec<_> = items.iter().filter(|i| i.get("table").is_some()).collect();
    assert_eq!(tables.len(), 1, "only our table: {out}");
    assert_eq!(tables[0]["table"]["family"], "netdev");
    assert_eq!(tables[0]["table"]["name"], table.as_str());
    let chains: Vec<_> = items.iter().filter_map(|i| i.get("chain")).collect();
    assert_eq!(chains.len(), 1, "{out}");
    let chain = chains[0];
    assert_eq!(chain["hook"], "ingress");
    // nft 1.0.6 leaves the device out of its JSON; the text form has it.
    let text = sh(&["nft", "list", "table", "netdev", &table]);
    assert!(
        text.contains("hook ingress device \"vgt-dp\" priority -500;")
            || text.contains("hook ingress devices = { vgt-dp } priority -500;"),
        "{text}"
    );
    assert_eq!(chain["prio"], -500);
    assert_eq!(chain["policy"], "accept");
    assert_eq!(chain["type"], "filter");
    items
        .iter()
        .filter_map(|i| i.get("rule"))
        .inspect(|r| assert_eq!(r["chain"], chain["name"]))
        .cloned()
        .collect()
}

/// The rule's expressions, compact, for substring checks.
fn exprs(rule: &serde_json::Value) -> String {
    rule["expr"].to_string()
}

fn counter_packets(rule: &serde_json::Value) -> u64 {
    rule["expr"]
        .as_array()
        .and_then(|e| e.iter().find_map(|x| x["counter"]["packets"].as_u64()))
        .expect("rule has a counter")
}

fn no_tables() -> bool {
    let out = sh(&["nft", "-j", "list", "tables"]);
    !out.contains("\"table\"")
}

#[test]
fn nft_ingress_guard_hides_vip_and_backend_traffic_from_the_kernel() {
    require_root!();
    let (node, client) = lab();
    let all_answer = Reachability {
        vip_v4: true,
        vip2_v4: true,
        vip_v6: true,
        node_v4: true,
        node_v6: true,
        backend_udp: true,
    };
    assert_eq!(probe(&client), all_answer, "lab works before the guard");

    let guard = node.run(|| {
        let guard = NftIngressGuard::install(&filter(&[VIP_V4.into(), VIP_V6.into()]))
            .expect("install nft guard");
        let rules = listed_rules();
        assert_eq!(rules.len(), 4, "{rules:?}");
        // VIPs in address order, then backends in (addr, proto, port) order.
        let r: Vec<String> = rules.iter().map(exprs).collect();
        assert!(
            r[0].contains("\"daddr\"") && r[0].contains("198.18.0.100"),
            "{}",
            r[0]
        );
        assert!(
            r[1].contains("\"daddr\"") && r[1].contains("2001:db8::100"),
            "{}",
            r[1]
        );
        assert!(
            r[2].contains("\"saddr\"") && r[2].contains("198.18.0.2"),
            "{}",
            r[2]
        );
        assert!(
            r[2].contains("\"tcp\"") && r[2].contains("\"sport\"") && r[2].contains(":80}"),
            "{}",
            r[2]
        );
        assert!(
            r[3].contains("\"udp\"") && r[3].contains(&BACKEND_PORT.to_string()),
            "{}",
            r[3]
        );
        assert!(r.iter().all(|e| e.contains("\"drop\"")), "{r:?}");
        assert!(rules.iter().all(|r| counter_packets(r) == 0));
        guard
    });

    let seen = probe(&client);
    assert_eq!(
        seen,
        Reachability {
            vip_v4: false,
            vip2_v4: true,
            vip_v6: false,
            node_v4: true,
            node_v6: true,
            backend_udp: false,
        },
        "VIPs and backend replies hidden, node addresses answer"
    );

    let guard = node.run(move || {
        let rules = listed_rules();
        assert!(
            counter_packets(&rules[0]) >= 3,
            "v4 VIP pings counted: {rules:?}"
        );
        assert!(counter_packets(&rules[1]) >= 3, "v6 VIP pings counted");
        assert_eq!(counter_packets(&rules[2]), 0, "no TCP from the backend");
        assert!(counter_packets(&rules[3]) >= 2, "backend UDP counted");
        // A second daemon with the same table name is refused, and the
        // first table stays.
        let e = NftIngressGuard::install(&filter(&[])).expect_err("table exists");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(listed_rules().len(), 4);
        let missing = IngressFilter {
            table: "vgt_other".into(),
            interfaces: vec!["vgt-nope".into()],
            ..Default::default()
        };
        assert!(matches!(
            NftIngressGuard::install(&missing),
            Err(SysError::NoSuchInterface { .. })
        ));
        let mut guard = guard;
        guard
            .update(&filter(&[VIP2_V4.into()]))
            .expect("update nft guard");
        let rules = listed_rules();
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert!(exprs(&rules[0]).contains("198.18.0.101"));
        guard
    });

    let seen = probe(&client);
    assert_eq!(
        seen,
        Reachability {
            vip_v4: true,
            vip2_v4: false,
            vip_v6: true,
            node_v4: true,
            node_v6: true,
            backend_udp: false,
        },
        "after update only the new VIP is hidden"
    );

    node.run(move || {
        let mut guard = guard;
        guard.restore().expect("delete table");
        assert!(no_tables(), "table deleted");
        guard.restore().expect("second restore is a no-op");
        drop(guard);
        assert!(no_tables());
    });
    assert_eq!(
        probe(&client),
        all_answer,
        "everything answers after restore"
    );

    // Drop alone also removes the table.
    node.run(|| {
        let guard = NftIngressGuard::install(&filter(&[VIP_V4.into()])).expect("install");
        assert!(!no_tables());
        drop(guard);
        assert!(no_tables(), "drop deleted the table");
    });
}

/// `ethtool -k` as feature name -> "on"/"off" (with " [fixed]" kept).
fn ethtool_k(ifname: &str) -> Vec<(String, String)> {
    sh(&["ethtool", "-k", ifname])
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn ethtool_value(features: &[(String, String)], name: &str) -> String {
    features
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("ethtool -k lists {name}"))
}

#[test]
fn offload_guard_turns_offloads_off_and_restores_them() {
    require_root!();
    if Command::new("ethtool").arg("--version").output().is_err() {
        eprintln!("skipped: ethtool(8) not installed (apt-get install ethtool)");
        return;
    }
    let (node, _client) = lab();
    node.run(|| {
        sh(&[
            "ethtool", "-K", "vgt-dp", "gro", "on", "tso", "on", "gso", "on",
        ]);
        let before = ethtool_k("vgt-dp");
        assert_eq!(ethtool_value(&before, "generic-receive-offload"), "on");
        assert_eq!(ethtool_value(&before, "tcp-segmentation-offload"), "on");
        let snapshot = Offloads::read("vgt-dp").expect("read offloads");
        assert_eq!(snapshot.state(Offload::Gro), OffloadState::On);

        let mut guard =
            OffloadGuard::disable("vgt-dp", &Offload::DATAPLANE).expect("disable offloads");
        let during = ethtool_k("vgt-dp");
        assert_eq!(ethtool_value(&during, "generic-receive-offload"), "off");
        assert_eq!(
            ethtool_value(&during, "generic-segmentation-offload"),
            "off"
        );
        assert_eq!(ethtool_value(&during, "tcp-segmentation-offload"), "off");
        // veth has no LRO: skipped and reported, not an error.
        assert!(
            guard.skipped().iter().any(|(o, _)| *o == Offload::Lro),
            "{:?}",
            guard.skipped()
        );
        assert!(guard.changed_features().contains(&"rx-gro"));
        let snapshot = Offloads::read("vgt-dp").expect("read offloads");
        assert_eq!(snapshot.state(Offload::Gro), OffloadState::Off);
        assert!(guard.describe().contains("rx-gro"));

        guard.restore().expect("restore offloads");
        assert_eq!(ethtool_k("vgt-dp"), before, "everything as before");
        guard.restore().expect("second restore is a no-op");

        // Drop restores too.
        let guard = OffloadGuard::disable("vgt-dp", &[Offload::Gro]).expect("disable gro");
        assert_eq!(
            ethtool_value(&ethtool_k("vgt-dp"), "generic-receive-offload"),
            "off"
        );
        drop(guard);
        assert_eq!(ethtool_k("vgt-dp"), before, "drop restored");

        assert!(matches!(
            OffloadGuard::disable("vgt-nope", &[Offload::Gro]),
            Err(SysError::NoSuchInterface { .. })
        ));
    });
}
