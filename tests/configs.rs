//! The configuration validator against real files and broken configs.
//!
//! - Every `configs/*.toml` parses and validates against a `SystemView`
//!   with the interfaces (and addresses) of the lab it is written for.
//! - A table of broken configs, each with the exact error lines it must
//!   produce (file:line:col, field path, message and fix).
//!
//! The configuration module is used through the vipgate library.

use vipgate::config;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{
    load_and_validate, validate_str, AddressFamily, AnnounceConfig, AnnounceMode, BgpConfig,
    BgpPeerConfig, Config, DrainConfig, GarpConfig, InterfaceAddress, InterfaceRole, IpPrefix,
    Protocol, Scheduler, SyncGroupConfig, SystemInterface, SystemView, TrackConfig, TrackKind,
    VipMode, VrrpChecksum, VrrpConfig, VrrpInstanceConfig, VrrpVersion,
};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn link(name: &str, addresses: &[&str]) -> SystemInterface {
    let addresses = addresses
        .iter()
        .map(|a| {
            a.parse::<InterfaceAddress>()
                .expect("test addresses are valid")
        })
        .collect();
    SystemInterface::new(name, addresses)
}

/// The links of the lab each example is written for (see the comment at the
/// top of each file). A new example must be added here.
fn lab_view(file_name: &str) -> Option<SystemView> {
    let lo = link("lo", &["127.0.0.1/8", "::1/128"]);
    let links = match file_name {
        "lab.toml" => vec![
            lo,
            link("vg-cli", &["198.18.0.1/24", "2001:db8::1/64"]),
            link("vg-srv", &["198.18.20.1/24", "2001:db8:20::1/64"]),
        ],
        "two-node-experiment.toml" => vec![
            lo,
            link("vg-cli", &["198.18.0.2/24", "2001:db8::2/64"]),
            link("vg-srv", &["198.18.20.1/24", "2001:db8:20::1/64"]),
        ],
        "minimal.toml" => vec![lo, link("eth0", &["198.18.2.1/24"])],
        _ => return None,
    };
    Some(SystemView::new(links))
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .expect("configs/ exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn load_example(name: &str) -> Config {
    let view = lab_view(name).expect("known example");
    match load_and_validate(configs_dir().join(name), &view) {
        Ok(config) => config,
        Err(errors) => panic!("{name} does not validate:\n{errors}"),
    }
}

#[test]
fn every_example_validates_against_its_lab() {
    let files = example_files();
    assert!(
        files.len() >= 3,
        "expected the examples in {:?}",
        configs_dir()
    );
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        let view = lab_view(name).unwrap_or_else(|| panic!("add the lab of {name} to lab_view()"));
        if let Err(errors) = load_and_validate(&path, &view) {
            panic!("{name} does not validate:\n{errors}");
        }
    }
}

#[test]
fn lab_mirrors_the_original_experiment() {
    let config = load_example("lab.toml");
    assert_eq!(
        config.interface("vg-cli").map(|i| i.role),
        Some(InterfaceRole::Client)
    );
    assert_eq!(
        config.interface("vg-srv").map(|i| i.role),
        Some(InterfaceRole::Backend)
    );
    assert_eq!(config.services.len(), 3);
    let web = &config.services[0];
    assert_eq!(web.vip_endpoint().to_string(), "198.18.10.10:80");
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.scheduler, Scheduler::Maglev);
    let backends: Vec<String> = web
        .backends
        .iter()
        .map(|b| b.endpoint().to_string())
        .collect();
    assert_eq!(
        backends,
        ["198.18.20.2:80", "198.18.20.2:81", "198.18.20.2:82"]
    );
    assert_eq!(config.dataplane.workers, 2);
    assert_eq!(
        config.dataplane.timeouts.tcp_established,
        Duration::from_secs(900)
    );
    assert_eq!(config.vrrp, VrrpConfig::default(), "the lab has no VRRP");
    assert_eq!(config.bgp, BgpConfig::default(), "the lab has no BGP");
}

#[test]
fn two_node_experiment_has_both_vips_ipv6_and_udp() {
    let config = load_example("two-node-experiment.toml");
    let vips: Vec<IpAddr> = config.services.iter().map(|s| s.vip).collect();
    for vip in ["198.18.10.10", "198.18.10.11", "2001:db8:10::10"] {
        assert!(vips.contains(&vip.parse().expect("vip")), "{vip} missing");
    }
    let dns = config.service("dns-vip1").expect("dns service");
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(dns.backends[0].port.get(), 5353);
    let v6 = config.service("web-v6").expect("v6 service");
    assert!(v6.backends.iter().all(|b| b.address.is_ipv6()));
    assert!(v6.backends[1].is_drained());
    assert_eq!(config.dataplane.timeouts.udp, Duration::from_secs(30));
}

#[test]
fn two_node_experiment_masters_one_vip_per_node() {
    let config = load_example("two-node-experiment.toml");
    let instances: Vec<(&str, u8, u8, IpAddr)> = config
        .vrrp
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.vrid, i.priority, i.vips[0]))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().expect("vip");
    assert_eq!(
        instances,
        [
            ("vip1", 51, 150, ip("198.18.10.10")),
            ("vip1-v6", 51, 150, ip("2001:db8:10::10")),
            ("vip2", 52, 100, ip("198.18.10.11")),
        ]
    );
    for instance in &config.vrrp.instances {
        assert_eq!(instance.interface, "vg-cli");
        assert!(config.services.iter().any(|s| s.vip == instance.vips[0]));
    }
    let vip1 = config.vrrp_instance("vip1").expect("vip1");
    assert_eq!(vip1.tracks[0].weight, -60);
    assert!(
        vip1.priority - 60 < 100,
        "losing vg-srv hands VIP 1 to gw-b"
    );
    assert_eq!(
        config.vrrp.sync_groups,
        [SyncGroupConfig {
            name: "vip1-both".into(),
            instances: vec!["vip1".into(), "vip1-v6".into()],
        }]
    );
}

#[test]
fn minimal_is_minimal() {
    let config = load_example("minimal.toml");
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.services[0].backends.len(), 1);
    let text = std::fs::read_to_string(configs_dir().join("minimal.toml")).expect("readable");
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    // [node] name, [[interface]] name, [[service]] name vip port,
    // [[service.backend]] address: nothing else.
    assert_eq!(keys, 10, "minimal.toml should hold only required keys");
}

#[test]
fn errors_name_the_file_as_given() {
    let dir = std::env::temp_dir().join(format!("vipgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[node]\nname = 7\n").expect("write temp file");
    let result = load_and_validate(&path, &broken_view());
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    let errors = result.expect_err("invalid");
    let text = errors.to_string();
    let first = format!(
        "{}:2:8: node.name: expected a string, found an integer (7); write name = \"gw-a\"",
        path.display()
    );
    assert!(text.lines().any(|l| l == first), "{text}");
    assert!(
        text.ends_with(&format!("{}: 3 errors", path.display())),
        "{text}"
    );
}

/// The system the broken configs are checked against: the lab links plus
/// an unconfigured `eth2` holding 198.18.30.0/24.
fn broken_view() -> SystemView {
    SystemView::new(vec![
        link("lo", &["127.0.0.1/8"]),
        link("vg-cli", &["198.18.0.1/24", "2001:db8::1/64"]),
        link("vg-srv", &["198.18.20.1/24", "2001:db8:20::1/64"]),
        link("eth2", &["198.18.30.1/24"]),
    ])
}

/// Lines 1-10 of every broken config: a valid node and the two lab links.
/// Line 11 is the first line of the case.
macro_rules! head {
    ($($rest:tt)*) => {
        concat!(
            "[node]\n",
            "name = \"gw\"\n",
            "\n",
            "[[interface]]\n",
            "name = \"vg-cli\"\n",
            "role = \"client\"\n",
            "\n",
            "[[interface]]\n",
            "name = \"vg-srv\"\n",
            "role = \"backend\"\n",
            $($rest)*
        )
    };
}

struct Case {
    what: &'static str,
    source: &'static str,
    /// Every error line, in order (the summary line is checked separately).
    expected: &'static [&'static str],
}

/// Lines 1-17 of every broken `[vrrp]` config: [`head!`], the service
/// "web" on 198.18.10.10:80, and the `[vrrp]` header on line 17. Line 18 is
/// the first line of the case.
macro_rules! vrrp {
    ($rest:literal) => {
        head!(
            "[[service]]\n",
            "name = \"web\"\n",
            "vip = \"198.18.10.10\"\n",
            "port = 80\n",
            "[[service.backend]]\n",
            "address = \"198.18.20.2\"\n",
            "[vrrp]\n",
            $rest
        )
    };
}

const CASES: &[Case] = &[
    Case {
        what: "misspelt scheduler",
        source: head!("[[service]]\nname = \"web\"\nvip = \"198.18.10.10\"\nport = 80\nscheduler = \"mglev\"\n[[service.backend]]\naddress = \"198.18.20.2\"\n"),
        expected: &[
            "b.toml:15:13: service[0].scheduler: unknown scheduler \"mglev\"; expected one of rr, wrr, lc, sh, maglev (did you mean \"maglev\"?)",
        ],
    },
    Case {
        what: "vrrp: virtual_mac needs the dataplane to claim it",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.10\"]\nvip_mode = \"kernel\"\nvirtual_mac = true\n"),
        expected: &[
            "b.toml:24:15: vrrp.instance[0].virtual_mac: virtual_mac needs vip_mode = \"dataplane\"; this instance uses vip_mode = \"kernel\"; remove virtual_mac (the link's own MAC is used), or set vip_mode = \"dataplane\"",
        ],
    },
    Case {
        what: "vrrp: unknown keys",
        source: vrrp!("advert_intreval = \"1s\"\n[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.10\"]\nprority = 150\nsync_group = \"g1\"\n[[vrrp.instance.track]]\ninterface = \"vg-srv\"\nwieght = -10\n"),
        expected: &[
            "b.toml:18:1: vrrp.advert_intreval: unknown key \"advert_intreval\" in [vrrp]; expected one of version, advert_interval, preempt, preempt_delay, garp_repeat, garp_delay, garp_refresh, resign_grace, notify, checksum, vip_mode, instance, sync_group (did you mean \"advert_interval\"?)",
            "b.toml:24:1: vrrp.instance[0].prority: unknown key \"prority\" in [[vrrp.instance]]; expected one of name, interface, vrid, priority, vips, version, advert_interval, preempt, preempt_delay, garp_repeat, garp_delay, garp_refresh, resign_grace, notify, checksum, vip_mode, unicast_source, unicast_peers, auth_pass, virtual_mac, track (did you mean \"priority\"?)",
            "b.toml:25:1: vrrp.instance[0].sync_group: an instance does not name its sync group; list the instance in a [[vrrp.sync_group]] with instances = [\"vip1\", ...]",
            "b.toml:28:1: vrrp.instance[0].track[0].wieght: unknown key \"wieght\" in [[vrrp.instance.track]]; expected one of interface, file, script, service, weight, interval, timeout, rise, fall (did you mean \"weight\"?)",
        ],
    },
    Case {
        what: "vrrp: missing keys and ranges",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\n[[vrrp.instance]]\nname = \"vip2\"\ninterface = \"vg-cli\"\nvrid = 0\npriority = 256\nvips = [\"198.18.10.11\"]\ngarp_repeat = 0\nresign_grace = \"2m\"\nversion = 4\n[[vrrp.instance.track]]\ninterface = \"vg-srv\"\nweight = 300\n"),
        expected: &[
            "b.toml:18:1: vrrp.instance[0].interface: missing key \"interface\" in [[vrrp.instance]]; add interface = \"eth0\"",
            "b.toml:18:1: vrrp.instance[0].vrid: missing key \"vrid\" in [[vrrp.instance]]; add vrid = 51",
            "b.toml:18:1: vrrp.instance[0].vips: missing key \"vips\" in [[vrrp.instance]]; add vips = [\"198.18.10.10\"]",
            "b.toml:23:8: vrrp.instance[1].vrid: vrid 0 is out of range 1..=255; use a virtual router id from 1 to 255, the same on every router of this virtual router",
            "b.toml:24:12: vrrp.instance[1].priority: priority 256 is out of range 1..=255; use 1 to 254, or 255 only on the router whose interface owns the VIPs",
            "b.toml:26:15: vrrp.instance[1].garp_repeat: garp_repeat 0 is out of range 1..=100; use 1 to 100 gratuitous ARPs / unsolicited NAs per burst",
            "b.toml:27:16: vrrp.instance[1].resign_grace: resign_grace 2m is out of range; use a duration from 0s to 1m",
            "b.toml:28:11: vrrp.instance[1].version: version 4 is out of range 2..=3; use version = 3 (RFC 5798, IPv4 and IPv6) or 2 (RFC 3768, IPv4 only)",
            "b.toml:31:10: vrrp.instance[1].track[0].weight: weight 300 is out of range -254..=254; use -254 to 254: added to the priority while up (positive) or down (negative), or 0 to go to FAULT while down",
        ],
    },
    Case {
        what: "vrrp: intervals per version",
        source: vrrp!("[[vrrp.instance]]\nname = \"a\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\"]\nadvert_interval = \"1005ms\"\n[[vrrp.instance]]\nname = \"b\"\ninterface = \"vg-cli\"\nvrid = 2\nvips = [\"198.18.10.2\"]\nadvert_interval = \"41s\"\n[[vrrp.instance]]\nname = \"c\"\ninterface = \"vg-cli\"\nvrid = 3\nvips = [\"198.18.10.3\"]\nversion = 2\nadvert_interval = \"1500ms\"\n[[vrrp.instance]]\nname = \"d\"\ninterface = \"vg-cli\"\nvrid = 4\nvips = [\"198.18.10.4\"]\nversion = 2\n"),
        expected: &[
            "b.toml:23:19: vrrp.instance[0].advert_interval: advert_interval 1s5ms is not a whole number of centiseconds, as version 3 (the default) needs; use a multiple of 10ms, e.g. advert_interval = \"1s10ms\"",
            "b.toml:29:19: vrrp.instance[1].advert_interval: advert_interval 41s is longer than the 40s950ms that version 3 (the default) can carry; use 10ms to 40s950ms (version 3 counts centiseconds in 12 bits), or version = 2 for longer intervals",
            "b.toml:36:19: vrrp.instance[2].advert_interval: advert_interval 1s500ms is not a whole number of seconds, as version 2 needs; use 1s to 255s, or version = 3 for sub-second adverts",
        ],
    },
    Case {
        what: "vrrp: a bad default is reported once, at [vrrp]",
        source: vrrp!("version = 2\nadvert_interval = \"100ms\"\n[[vrrp.instance]]\nname = \"a\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\"]\n[[vrrp.instance]]\nname = \"b\"\ninterface = \"vg-cli\"\nvrid = 2\nvips = [\"198.18.10.2\"]\n[[vrrp.instance]]\nname = \"c\"\ninterface = \"vg-cli\"\nvrid = 3\nvips = [\"198.18.10.3\"]\nversion = 3\n"),
        expected: &[
            "b.toml:19:19: vrrp.advert_interval: advert_interval 100ms is not a whole number of seconds, as version 2 needs; use 1s to 255s, or version = 3 for sub-second adverts",
        ],
    },
    Case {
        what: "vrrp: families, version 2, auth_pass, checksum",
        source: vrrp!("[[vrrp.instance]]\nname = \"mixed\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\", \"2001:db8:10::1\"]\n[[vrrp.instance]]\nname = \"v6v2\"\ninterface = \"vg-cli\"\nvrid = 2\nversion = 2\nvips = [\"2001:db8:10::2\"]\n[[vrrp.instance]]\nname = \"auth3\"\ninterface = \"vg-cli\"\nvrid = 3\nvips = [\"198.18.10.3\"]\nauth_pass = \"secret\"\n[[vrrp.instance]]\nname = \"auth-long\"\ninterface = \"vg-cli\"\nvrid = 4\nversion = 2\nvips = [\"198.18.10.4\"]\nauth_pass = \"123456789\"\n[[vrrp.instance]]\nname = \"sum6\"\ninterface = \"vg-cli\"\nvrid = 5\nvips = [\"2001:db8:10::5\"]\nchecksum = \"rfc9568\"\n[[vrrp.instance]]\nname = \"sum2\"\ninterface = \"vg-cli\"\nvrid = 6\nversion = 2\nvips = [\"198.18.10.6\"]\nchecksum = \"rfc9568\"\n"),
        expected: &[
            "b.toml:22:24: vrrp.instance[0].vips[1]: vips mix address families: 2001:db8:10::1 is IPv6 but 198.18.10.1 is IPv4; split into two instances, one per family (put both in one [[vrrp.sync_group]] to move them together)",
            "b.toml:27:11: vrrp.instance[1].version: IPv6 vips need VRRP version 3, this instance runs version 2; use version = 3 in this instance (version 2 carries IPv4 only)",
            "b.toml:34:13: vrrp.instance[2].auth_pass: auth_pass needs version 2, this instance runs version 3 (the default), which has no authentication; remove auth_pass, or set version = 2 (IPv4 only) to match routers that still use it",
            "b.toml:41:13: vrrp.instance[3].auth_pass: auth_pass is 9 bytes long; version 2 authentication carries 1 to 8; use a password of 1 to 8 bytes (keepalived cuts longer ones), or remove auth_pass",
            "b.toml:47:12: vrrp.instance[4].checksum: checksum \"rfc9568\" has no meaning for IPv6 vips; remove checksum: IPv6 checksums always cover the pseudo-header, RFC 9568 changes only IPv4",
            "b.toml:54:12: vrrp.instance[5].checksum: checksum \"rfc9568\" has no meaning with version 2; remove checksum: the version 2 checksum never covers a pseudo-header",
        ],
    },
    Case {
        what: "vrrp: duplicates across instances",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.10\", \"198.18.10.12\"]\n[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.11\", \"198.18.10.11\", \"198.18.10.12\"]\n[[vrrp.instance]]\nname = \"vip1-v6\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"2001:db8:10::10\"]\n"),
        expected: &[
            "b.toml:24:8: vrrp.instance[1].name: instance name \"vip1\" is used twice (first at line 19); give each [[vrrp.instance]] its own name",
            "b.toml:26:8: vrrp.instance[1].vrid: vrid 51 for IPv4 on \"vg-cli\" is already used by instance \"vip1\" (line 18); give each virtual router on a link its own vrid (per address family), the same on all its routers",
            "b.toml:27:25: vrrp.instance[1].vips[1]: vip 198.18.10.11 is listed twice in this instance (first at line 27); remove one of them",
            "b.toml:27:41: vrrp.instance[1].vips[2]: vip 198.18.10.12 already belongs to instance \"vip1\" (first at line 22); list each address in one instance only",
        ],
    },
    Case {
        what: "vrrp: bad addresses",
        source: vrrp!("[[vrrp.instance]]\nname = \"a\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = []\n[[vrrp.instance]]\nname = \"b\"\ninterface = \"vg-cli\"\nvrid = 2\nvips = [\"198.18.10.2/24\", \"224.0.0.18\", \"198.18.10.2:80\", \"vip\"]\nunicast_peers = \"198.18.0.3\"\n[[vrrp.instance]]\nname = \"c\"\ninterface = \"vg-cli\"\nvrid = 3\nvips = [7]\nunicast_source = \"198.18.0.255/24\"\n[[vrrp.instance]]\nname = \"d\"\ninterface = \"vg-cli\"\nvrid = 4\nvips = [\"224.0.0.18\"]\nunicast_peers = [\"255.255.255.255\"]\n"),
        expected: &[
            "b.toml:22:8: vrrp.instance[0].vips: vips is empty; list the addresses this virtual router carries, e.g. vips = [\"198.18.10.10\"]",
            "b.toml:27:9: vrrp.instance[1].vips[0]: \"198.18.10.2/24\" is not an IP address; write the bare address, without prefix length or port: \"198.18.10.2\"",
            "b.toml:27:41: vrrp.instance[1].vips[2]: \"198.18.10.2:80\" is not an IP address; write the bare address, without prefix length or port: \"198.18.10.2\"",
            "b.toml:27:59: vrrp.instance[1].vips[3]: \"vip\" is not an IP address; write IPv4 or IPv6 addresses, e.g. vips = [\"198.18.10.10\"]",
            "b.toml:28:17: vrrp.instance[1].unicast_peers: expected an array of strings, found a string (\"198.18.0.3\"); write unicast_peers = [\"198.18.0.3\"]",
            "b.toml:33:9: vrrp.instance[2].vips[0]: expected a string, found an integer (7); write vips = [\"198.18.10.10\"]",
            "b.toml:34:18: vrrp.instance[2].unicast_source: \"198.18.0.255/24\" is not an IP address; write the address without a prefix length: unicast_source = \"198.18.0.255\"",
            "b.toml:39:9: vrrp.instance[3].vips[0]: 224.0.0.18 is a multicast address; use a unicast address, e.g. 198.18.10.10 or 2001:db8::10",
            "b.toml:40:18: vrrp.instance[3].unicast_peers[0]: 255.255.255.255 is the broadcast address; use a unicast address, e.g. 198.18.10.10 or 2001:db8::10",
        ],
    },
    Case {
        what: "vrrp: unicast peers and source",
        source: vrrp!("[[vrrp.instance]]\nname = \"a\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\"]\nunicast_source = \"2001:db8::1\"\nunicast_peers = [\"198.18.0.3\", \"2001:db8::3\", \"198.18.0.3\"]\n[[vrrp.instance]]\nname = \"b\"\ninterface = \"vg-cli\"\nvrid = 2\nvips = [\"198.18.10.2\"]\nunicast_source = \"198.18.0.9\"\nunicast_peers = [\"198.18.0.9\"]\n"),
        expected: &[
            "b.toml:23:18: vrrp.instance[0].unicast_source: unicast_source 2001:db8::1 is IPv6 but the vips are IPv4; use an IPv4 address of the instance's interface",
            "b.toml:24:32: vrrp.instance[0].unicast_peers[1]: unicast peer 2001:db8::3 is IPv6 but the vips are IPv4; list IPv4 peers only (IPv6 peers belong to an IPv6 instance)",
            "b.toml:24:47: vrrp.instance[0].unicast_peers[2]: unicast peer 198.18.0.3 is listed twice (first at line 24); remove one of them",
            "b.toml:30:18: vrrp.instance[1].unicast_source: unicast_source 198.18.0.9 is not an address of interface \"vg-cli\"; use one of vg-cli's addresses (198.18.0.1), e.g. unicast_source = \"198.18.0.1\", or add 198.18.0.9 to it",
            "b.toml:31:18: vrrp.instance[1].unicast_peers[0]: unicast peer 198.18.0.9 is this router's own unicast_source; list the other routers of the virtual router only",
        ],
    },
    Case {
        what: "vrrp: sync groups",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\"]\n[[vrrp.instance]]\nname = \"vip2\"\ninterface = \"vg-cli\"\nvrid = 2\nvips = [\"198.18.10.2\"]\n[[vrrp.sync_group]]\nname = \"g1\"\ninstances = [\"vip1\", \"vip3\", \"vip1\"]\n[[vrrp.sync_group]]\nname = \"g1\"\ninstances = [\"vip1\"]\n[[vrrp.sync_group]]\nname = \"g2\"\ninstances = []\n[[vrrp.sync_group]]\nname = \"solo\"\ninstances = [\"vip2\"]\n"),
        expected: &[
            "b.toml:30:22: vrrp.sync_group[0].instances[1]: instance \"vip3\" does not exist; existing: vip1, vip2; fix the name, or add a [[vrrp.instance]] named \"vip3\" (did you mean \"vip1\"?)",
            "b.toml:30:30: vrrp.sync_group[0].instances[2]: instance \"vip1\" is listed twice in this sync group; an instance follows one sync group: list it once, or merge the groups",
            "b.toml:32:8: vrrp.sync_group[1].name: sync group name \"g1\" is used twice (first at line 29); give each [[vrrp.sync_group]] its own name",
            "b.toml:33:14: vrrp.sync_group[1].instances[0]: instance \"vip1\" is already in sync group \"g1\" (line 28); an instance follows one sync group: list it once, or merge the groups",
            "b.toml:36:13: vrrp.sync_group[2].instances: the sync group has no instances; list the [[vrrp.instance]] names that change state together, e.g. instances = [\"vip1\", \"vip1-v6\"]",
        ],
    },
    Case {
        what: "vrrp: tracks",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 1\nvips = [\"198.18.10.1\"]\n[[vrrp.instance.track]]\nweight = -10\n[[vrrp.instance.track]]\ninterface = \"vg-srv\"\nfile = \"/run/ok\"\n[[vrrp.instance.track]]\ninterface = \"vg-srv\"\ninterval = \"1s\"\n[[vrrp.instance.track]]\nservice = \"wbe\"\n[[vrrp.instance.track]]\nscript = \"/bin/check\"\ninterval = \"1s\"\ntimeout = \"2s\"\nrise = 0\n[[vrrp.instance.track]]\nfile = \"run/ok\"\n"),
        expected: &[
            "b.toml:23:1: vrrp.instance[0].track[0]: the track does not say what to watch; add one of interface = \"eth1\", file = \"/run/vrrp-ok\", script = \"/usr/local/bin/check\" or service = \"web\"",
            "b.toml:27:1: vrrp.instance[0].track[1].file: one track watches one thing, this one sets both interface and file; move file into its own [[vrrp.instance.track]]",
            "b.toml:30:1: vrrp.instance[0].track[2].interval: interval applies to script tracks only, not to interface tracks; remove interval",
            "b.toml:32:11: vrrp.instance[0].track[3].service: service \"wbe\" does not exist; existing: web; name a [[service]] of this file (did you mean \"web\"?)",
            "b.toml:36:11: vrrp.instance[0].track[4].timeout: timeout 2s is longer than the script's interval 1s; use a timeout of at most the interval, or raise interval",
            "b.toml:37:8: vrrp.instance[0].track[4].rise: rise 0 is out of range 1..=1000; use 1 to 1000 consecutive results",
            "b.toml:39:8: vrrp.instance[0].track[5].file: file \"run/ok\" is not an absolute file path; use an absolute path such as \"/run/vrrp-ok\"",
        ],
    },
    Case {
        what: "vrrp: the address owner's priority cannot move",
        source: vrrp!("[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 1\npriority = 255\nvips = [\"198.18.10.1\"]\n[[vrrp.instance.track]]\ninterface = \"vg-srv\"\nweight = -20\n[[vrrp.instance.track]]\nservice = \"web\"\n"),
        expected: &[
            "b.toml:26:10: vrrp.instance[0].track[0].weight: weight -20 would move the priority of an address owner (priority 255), which stays 255; use weight = 0 (FAULT while down), or a priority of 254 or less",
        ],
    },
    Case {
        what: "vrrp: interfaces against the system and the dataplane",
        source: vrrp!("[[vrrp.instance]]\nname = \"a\"\ninterface = \"vg-clj\"\nvrid = 1\nvips = [\"198.18.10.1\"]\n[[vrrp.instance]]\nname = \"b\"\ninterface = \"eth2\"\nvrid = 2\nvips = [\"198.18.10.2\"]\n[[vrrp.instance]]\nname = \"c\"\ninterface = \"vg-srv\"\nvrid = 3\nvips = [\"198.18.10.3\"]\nunicast_source = \"198.18.0.1\"\n[[vrrp.instance.track]]\ninterface = \"vg-svr\"\n[[vrrp.instance]]\nname = \"d\"\ninterface = \"eth2\"\nvip_mode = \"kernel\"\nvrid = 4\nvips = [\"198.18.30.4\"]\nunicast_source = \"198.18.30.1\"\n[[vrrp.instance]]\nname = \"e\"\ninterface = \"eht2\"\nvip_mode = \"kernel\"\nvrid = 5\nvips = [\"198.18.30.5\"]\n"),
        expected: &[
            "b.toml:20:13: vrrp.instance[0].interface: interface \"vg-clj\" is not a dataplane [[interface]], but vip_mode \"dataplane\" (the default) serves the VIPs from the dataplane; add [[interface]] name = \"vg-clj\" role = \"client\", or set vip_mode = \"kernel\" (did you mean \"vg-cli\"?)",
            "b.toml:25:13: vrrp.instance[1].interface: interface \"eth2\" is not a dataplane [[interface]], but vip_mode \"dataplane\" (the default) serves the VIPs from the dataplane; add [[interface]] name = \"eth2\" role = \"client\", or set vip_mode = \"kernel\"",
            "b.toml:30:13: vrrp.instance[2].interface: interface \"vg-srv\" has role \"backend\", but vip_mode \"dataplane\" (the default) needs the clients to reach the VIPs there; set role = \"both\" on [[interface]] \"vg-srv\", or run the instance on the client-side interface",
            "b.toml:33:18: vrrp.instance[2].unicast_source: unicast_source 198.18.0.1 is not an address of interface \"vg-srv\"; use one of vg-srv's addresses (198.18.20.1), e.g. unicast_source = \"198.18.20.1\", or add 198.18.0.1 to it",
            "b.toml:35:13: vrrp.instance[2].track[0].interface: interface \"vg-svr\" does not exist; existing: lo, vg-cli, vg-srv, eth2; fix the name, or create the link before starting vipgate (did you mean \"vg-srv\"?)",
            "b.toml:45:13: vrrp.instance[4].interface: interface \"eht2\" does not exist; existing: lo, vg-cli, vg-srv, eth2; fix the name, or create the link before starting vipgate (did you mean \"eth2\"?)",
        ],
    },
];

/// Lines 1-16 of every broken `[bgp]` config: [`head!`], the service
/// "web" on 198.18.10.10:80, and the `[bgp]` header on line 17. Line 18 is
/// the first line of the case.
macro_rules! bgp {
    ($rest:literal) => {
        head!(
            "[[service]]\n",
            "name = \"web\"\n",
            "vip = \"198.18.10.10\"\n",
            "port = 80\n",
            "[[service.backend]]\n",
            "address = \"198.18.20.2\"\n",
            "[bgp]\n",
            $rest
        )
    };
}

const BGP_CASES: &[Case] = &[
    Case {
        what: "bgp: unknown keys and other speakers' words",
        source: bgp!("local_as = 64512\nneighbor = \"198.18.0.254\"\nhold_tme = \"90s\"\n[bgp.drain]\ndealy = \"1s\"\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\npeer_as = 64500\nlocal_as = 1\nremote-as = 1\n[[bgp.announce]]\nprefix = \"198.18.10.10/32\"\ncomunities = []\n"),
        expected: &[
            "b.toml:19:1: bgp.neighbor: vipgate calls BGP neighbours peers; write each neighbour as a [[bgp.peer]] with address and remote_as",
            "b.toml:20:1: bgp.hold_tme: unknown key \"hold_tme\" in [bgp]; expected one of local_as, router_id, listen, mode, hold_time, connect_retry, reconnect_delay, ttl_security, communities, large_communities, med, prepend, drain, peer, announce (did you mean \"hold_time\"?)",
            "b.toml:22:1: bgp.drain.dealy: unknown key \"dealy\" in [bgp.drain]; expected one of delay, prepend, med (did you mean \"delay\"?)",
            "b.toml:26:1: bgp.peer[0].peer_as: the peer's AS is called remote_as; write remote_as = 64500",
            "b.toml:27:1: bgp.peer[0].local_as: local_as is set once for the speaker, in [bgp]; move local_as to [bgp] (one AS per node)",
            "b.toml:28:1: bgp.peer[0].remote-as: unknown key \"remote-as\" in [[bgp.peer]]; expected one of name, address, port, remote_as, local_address, passive, hold_time, connect_retry, reconnect_delay, md5_password, ttl_security, families, med, local_pref, communities, large_communities, prepend, next_hop_v6 (did you mean \"remote_as\"?)",
            "b.toml:31:1: bgp.announce[0].comunities: unknown key \"comunities\" in [[bgp.announce]]; expected one of prefix, communities, large_communities, med (did you mean \"communities\"?)",
        ],
    },
    Case {
        what: "bgp: missing keys and ranges",
        source: bgp!("mode = \"ecmpp\"\nrouter_id = \"2001:db8::1\"\nlisten = \"0.0.0.0:0\"\n[bgp.drain]\ndelay = \"2h\"\nprepend = 17\n[[bgp.peer]]\nname = \"a b\"\n[[bgp.peer]]\naddress = \"198.18.0.253\"\nremote_as = 23456\nport = 0\nhold_time = \"2s\"\nmd5_password = \"\"\n[[bgp.peer]]\naddress = \"198.18.0.252\"\nremote_as = 0\nhold_time = \"1500ms\"\nlocal_pref = -1\n"),
        expected: &[
            "b.toml:17:1: bgp.local_as: missing key \"local_as\" in [bgp]; add local_as = 64512",
            "b.toml:18:8: bgp.mode: unknown announce mode \"ecmpp\"; expected one of ecmp, vrrp (did you mean \"ecmp\"?)",
            "b.toml:19:13: bgp.router_id: router_id \"2001:db8::1\" is an IPv6 address; a BGP identifier is 32 bits; write the identifier as a non-zero IPv4 address, usually one of this node's, e.g. router_id = \"198.18.0.2\"",
            "b.toml:20:10: bgp.listen: listen \"0.0.0.0:0\" has port 0; use the BGP port: listen = \"0.0.0.0:179\"",
            "b.toml:22:9: bgp.drain.delay: delay 2h is out of range; use a duration from 0s to 1h",
            "b.toml:23:11: bgp.drain.prepend: prepend 17 is out of range 0..=16; use 0 to 16 extra copies of local_as in the AS path",
            "b.toml:24:1: bgp.peer[0].address: missing key \"address\" in [[bgp.peer]]; add address = \"198.18.0.254\"",
            "b.toml:24:1: bgp.peer[0].remote_as: missing key \"remote_as\" in [[bgp.peer]]; add remote_as = 64500",
            "b.toml:25:8: bgp.peer[0].name: invalid name \"a b\"; use 1 to 63 of the characters A-Z a-z 0-9 - _ ., e.g. name = \"web-1\"",
            "b.toml:28:13: bgp.peer[1].remote_as: remote_as 23456 is AS_TRANS, which stands in for 4-octet AS numbers and is no AS of its own; use the real AS number, e.g. remote_as = 64500",
            "b.toml:29:8: bgp.peer[1].port: port 0 is out of range 1..=65535; use the port the peer listens on, 1 to 65535 (BGP: 179)",
            "b.toml:30:13: bgp.peer[1].hold_time: hold_time 2s is shorter than the 3s RFC 4271 allows; use \"0s\" (no keepalives) or 3s to 65535s in whole seconds, e.g. hold_time = \"90s\"",
            "b.toml:31:16: bgp.peer[1].md5_password: md5_password is 0 bytes long; a TCP MD5 key is 1 to 80 bytes; use the key the peer has, 1 to 80 bytes, or remove md5_password",
            "b.toml:34:13: bgp.peer[2].remote_as: remote_as 0 is out of range 1..=4294967295; use an AS number from 1 to 4294967295 (not 23456, AS_TRANS)",
            "b.toml:35:13: bgp.peer[2].hold_time: hold_time 1s500ms is not a whole number of seconds; use \"0s\" (no keepalives) or 3s to 65535s in whole seconds, e.g. hold_time = \"90s\"",
            "b.toml:36:14: bgp.peer[2].local_pref: local_pref -1 is out of range 0..=4294967295; use 0 to 4294967295 (higher is preferred)",
        ],
    },
    Case {
        what: "bgp: communities, families, addresses and prefixes",
        source: bgp!("local_as = 64512\ncommunities = [\"65000:70000\", \"65000\"]\nlarge_communities = [\"1:2\", \"1:2:4294967296\"]\n[[bgp.peer]]\naddress = \"224.0.0.5\"\nremote_as = 64500\n[[bgp.peer]]\naddress = \"fe80::1\"\nremote_as = 64500\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\nfamilies = [\"ipv4-unicast\", \"ipv6-multicast\"]\nnext_hop_v6 = \"198.18.0.1\"\n[[bgp.peer]]\naddress = \"198.18.0.250\"\nremote_as = 64500\nfamilies = []\nrouter_id = \"0.0.0.0\"\n[[bgp.announce]]\nprefix = \"198.18.10.5/24\"\n[[bgp.announce]]\nprefix = \"0.0.0.0/0\"\n[[bgp.announce]]\nprefix = \"198.18.10.10/33\"\ncommunities = [\"x:1\"]\n"),
        expected: &[
            "b.toml:19:16: bgp.communities[0]: \"65000:70000\" has 70000, above 65535; each half of a community is 0 to 65535; for 32-bit values use large_communities = [\"65000:70000:0\"]",
            "b.toml:19:31: bgp.communities[1]: \"65000\" is not a community ASN:VALUE; write communities as two numbers, e.g. communities = [\"65000:100\"] (large communities go in large_communities)",
            "b.toml:20:22: bgp.large_communities[0]: \"1:2\" is not a large community GLOBAL:LOCAL1:LOCAL2; write large communities as three numbers, e.g. large_communities = [\"65000:1:2\"]",
            "b.toml:20:29: bgp.large_communities[1]: \"1:2:4294967296\" has 4294967296, above 4294967295; each part of a large community is 0 to 4294967295",
            "b.toml:22:11: bgp.peer[0].address: address 224.0.0.5 is a multicast address; use a unicast address, e.g. 198.18.0.254 or 2001:db8::fe",
            "b.toml:25:11: bgp.peer[1].address: address fe80::1 is an IPv6 link-local address (a session to one needs an interface scope, which vipgate does not take); use a unicast address, e.g. 198.18.0.254 or 2001:db8::fe",
            "b.toml:30:29: bgp.peer[2].families[1]: unknown address family \"ipv6-multicast\"; expected ipv4-unicast or ipv6-unicast (did you mean \"ipv6-unicast\"?)",
            "b.toml:31:15: bgp.peer[2].next_hop_v6: next_hop_v6 198.18.0.1 is an IPv4 address; use a global IPv6 address of this node on the link towards the peer, e.g. next_hop_v6 = \"2001:db8::2\"",
            "b.toml:35:12: bgp.peer[3].families: families is empty: the session would carry no routes; list what the session carries, e.g. families = [\"ipv4-unicast\", \"ipv6-unicast\"], or remove families for the peer address's family",
            "b.toml:36:1: bgp.peer[3].router_id: unknown key \"router_id\" in [[bgp.peer]]; expected one of name, address, port, remote_as, local_address, passive, hold_time, connect_retry, reconnect_delay, md5_password, ttl_security, families, med, local_pref, communities, large_communities, prepend, next_hop_v6",
            "b.toml:38:10: bgp.announce[0].prefix: prefix \"198.18.10.5/24\" has bits set after the prefix length; write the network: prefix = \"198.18.10.0/24\", or the VIP as a host route",
            "b.toml:40:10: bgp.announce[1].prefix: prefix 0.0.0.0/0 is a default route; announce the VIPs (/32, /128) or an aggregate that covers them, never a default route: the routers would send everything here",
            "b.toml:42:10: bgp.announce[2].prefix: prefix \"198.18.10.10/33\" is longer than 32 bits; use a length of at most 32, e.g. /32 for one VIP",
            "b.toml:43:16: bgp.announce[2].communities[0]: \"x:1\" has \"x\", not a number; write communities as two numbers, e.g. communities = [\"65000:100\"]",
        ],
    },
    Case {
        what: "bgp: peers against each other",
        source: bgp!("local_as = 64512\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n[[bgp.peer]]\nname = \"198.18.0.254\"\naddress = \"198.18.0.253\"\nremote_as = 64500\n[[bgp.peer]]\nname = \"second\"\naddress = \"198.18.0.254\"\nremote_as = 64501\n[[bgp.peer]]\nname = \"other-port\"\naddress = \"198.18.0.254\"\nport = 1179\nremote_as = 64501\n"),
        expected: &[
            "b.toml:23:8: bgp.peer[1].name: peer name \"198.18.0.254\" is used twice (first at line 20); give each [[bgp.peer]] its own name (the default name is the address)",
            "b.toml:28:11: bgp.peer[2].address: peer 198.18.0.254:179 is already configured as \"198.18.0.254\" (line 19); one session per peer: merge the two [[bgp.peer]] entries",
        ],
    },
    Case {
        what: "bgp: iBGP and eBGP keys, families and local addresses",
        source: bgp!("local_as = 64512\nprepend = 2\n[[bgp.peer]]\nname = \"ebgp\"\naddress = \"198.18.0.254\"\nremote_as = 64500\nlocal_pref = 200\nlocal_address = \"2001:db8::1\"\n[[bgp.peer]]\nname = \"ibgp\"\naddress = \"198.18.0.253\"\nremote_as = 64512\nlocal_pref = 200\nprepend = 1\n[[bgp.peer]]\nname = \"ibgp-inherits\"\naddress = \"198.18.0.252\"\nremote_as = 64512\nnext_hop_v6 = \"2001:db8::1\"\nfamilies = [\"ipv4-unicast\", \"ipv4-unicast\"]\n"),
        expected: &[
            "b.toml:24:14: bgp.peer[0].local_pref: local_pref is sent to iBGP peers only; this peer is eBGP (remote_as 64500 and local_as 64512); remove local_pref, and steer an eBGP peer with med or prepend",
            "b.toml:25:17: bgp.peer[0].local_address: local_address 2001:db8::1 is IPv6 but the peer address 198.18.0.254 is IPv4; a session has one address family: use an IPv4 address of this node",
            "b.toml:31:11: bgp.peer[1].prepend: prepend 1 on an iBGP peer (remote_as 64512 is local_as): the peer would see its own AS in the path and drop the route; remove prepend, and steer an iBGP peer with local_pref or med",
            "b.toml:36:15: bgp.peer[2].next_hop_v6: next_hop_v6 2001:db8::1 is set but the session carries no ipv6-unicast routes; remove next_hop_v6, or add \"ipv6-unicast\" to families",
            "b.toml:37:29: bgp.peer[2].families[1]: family ipv4-unicast is listed twice (first at line 37); remove one of them",
        ],
    },
    Case {
        what: "bgp: passive sessions",
        source: bgp!("local_as = 64512\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\npassive = true\nport = 1179\n[[bgp.peer]]\naddress = \"2001:db8::fe\"\nremote_as = 64500\npassive = true\n"),
        expected: &[
            "b.toml:22:11: bgp.peer[0].passive: passive = true waits for the peer to connect, but [bgp] has no listen; add listen = \"0.0.0.0:179\" to [bgp], or remove passive",
            "b.toml:23:8: bgp.peer[0].port: port 1179 is where vipgate connects to, but a passive peer is never connected to; remove port (the peer connects to [bgp] listen), or remove passive",
            "b.toml:27:11: bgp.peer[1].passive: passive = true waits for the peer to connect, but [bgp] has no listen; add listen = \"[::]:179\" to [bgp], or remove passive",
        ],
    },
    Case {
        what: "bgp: listen family",
        source: bgp!("local_as = 64512\nlisten = \"198.18.0.1\"\n[[bgp.peer]]\naddress = \"2001:db8::fe\"\nremote_as = 64500\npassive = true\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\npassive = true\n"),
        expected: &[
            "b.toml:23:11: bgp.peer[0].passive: passive = true waits for an IPv6 connection, but [bgp] listen 198.18.0.1:179 accepts IPv4 only; listen on \"[::]:179\" (IPv4 and IPv6), or on an address of the peer's family",
        ],
    },
    Case {
        what: "bgp: announcements",
        source: bgp!("local_as = 64512\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n[[bgp.announce]]\nprefix = \"198.18.10.0/24\"\n[[bgp.announce]]\nprefix = \"198.18.99.0/24\"\n[[bgp.announce]]\nprefix = \"198.18.10.0/24\"\n[[bgp.announce]]\nprefix = \"2001:db8:10::10/128\"\n[[service]]\nname = \"web6\"\nvip = \"2001:db8:10::10\"\nport = 80\n[[service.backend]]\naddress = \"2001:db8:20::2\"\n"),
        expected: &[
            "b.toml:25:10: bgp.announce[1].prefix: prefix 198.18.99.0/24 covers no service vip: it announces nothing of ours; announce the vip of a [[service]] (e.g. prefix = \"198.18.10.10/32\") or an aggregate that covers some",
            "b.toml:27:10: bgp.announce[2].prefix: prefix 198.18.10.0/24 is announced twice (first at line 23); merge the two [[bgp.announce]] entries",
            "b.toml:29:10: bgp.announce[3].prefix: no [[bgp.peer]] carries ipv6-unicast: prefix 2001:db8:10::10/128 would reach no router; add \"ipv6-unicast\" to the families of a peer, or remove this [[bgp.announce]]",
        ],
    },
    Case {
        what: "bgp: mode vrrp without [vrrp]",
        source: bgp!("local_as = 64512\nmode = \"vrrp\"\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n"),
        expected: &[
            "b.toml:19:8: bgp.mode: mode \"vrrp\" announces a VIP while this node is VRRP master for it, but the file has no [[vrrp.instance]]; add a [vrrp] section with a [[vrrp.instance]] holding the VIPs, or use mode = \"ecmp\"",
        ],
    },
    Case {
        what: "bgp: mode vrrp with a VIP outside every instance",
        source: bgp!("local_as = 64512\nmode = \"vrrp\"\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n[[service]]\nname = \"web2\"\nvip = \"198.18.10.11\"\nport = 80\n[[service.backend]]\naddress = \"198.18.20.2\"\n[[service]]\nname = \"dns2\"\nvip = \"198.18.10.11\"\nport = 53\nprotocol = \"udp\"\n[[service.backend]]\naddress = \"198.18.20.2\"\n[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.10\"]\n"),
        expected: &[
            "b.toml:25:7: service[1].vip: vip 198.18.10.11 is announced in BGP mode \"vrrp\" (line 19) but belongs to no [[vrrp.instance]]; add \"198.18.10.11\" to the vips of the [[vrrp.instance]] that should carry it, or use mode = \"ecmp\"",
        ],
    },
    Case {
        what: "bgp: mode vrrp counts only what [[bgp.announce]] covers",
        source: bgp!("local_as = 64512\nmode = \"vrrp\"\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\n[[bgp.announce]]\nprefix = \"198.18.10.10\"\n[[service]]\nname = \"web2\"\nvip = \"198.18.10.11\"\nport = 80\n[[service.backend]]\naddress = \"198.18.20.2\"\n[[vrrp.instance]]\nname = \"vip1\"\ninterface = \"vg-cli\"\nvrid = 51\nvips = [\"198.18.10.10\"]\n"),
        expected: &[],
    },
    Case {
        what: "bgp: a section without peers",
        source: bgp!("local_as = 64512\n"),
        expected: &[
            "b.toml:17:1: bgp.peer: [bgp] has no [[bgp.peer]]: nothing would be announced; add a [[bgp.peer]] with address and remote_as for each upstream router, or remove [bgp]",
        ],
    },
    Case {
        what: "bgp: against the system",
        source: bgp!("local_as = 64512\nlisten = \"198.18.0.9:179\"\nttl_security = true\n[[bgp.peer]]\naddress = \"198.18.0.1\"\nremote_as = 64500\n[[bgp.peer]]\naddress = \"198.18.0.254\"\nremote_as = 64500\nlocal_address = \"198.18.0.9\"\nnext_hop_v6 = \"2001:db8::9\"\nfamilies = [\"ipv4-unicast\", \"ipv6-unicast\"]\n[[bgp.peer]]\naddress = \"198.18.30.254\"\nremote_as = 64500\nfamilies = [\"ipv4-unicast\", \"ipv6-unicast\"]\n[[bgp.peer]]\naddress = \"198.18.99.1\"\nremote_as = 64500\n[[bgp.peer]]\naddress = \"2001:db8:99::1\"\nremote_as = 64500\nttl_security = false\nfamilies = [\"ipv6-unicast\", \"ipv4-unicast\"]\n"),
        expected: &[
            "b.toml:19:10: bgp.listen: listen 198.18.0.9 is not an address of this system; use an address of this node (198.18.0.1, 198.18.20.1, 198.18.30.1), e.g. listen = \"198.18.0.1\", or add 198.18.0.9 to a link",
            "b.toml:22:11: bgp.peer[0].address: peer 198.18.0.1 is an address of this node (interface \"vg-cli\"); use the address of the upstream router",
            "b.toml:27:17: bgp.peer[1].local_address: local_address 198.18.0.9 is not an address of this system; use an address of this node (198.18.0.1, 198.18.20.1, 198.18.30.1), e.g. local_address = \"198.18.0.1\", or add 198.18.0.9 to a link",
            "b.toml:28:15: bgp.peer[1].next_hop_v6: next_hop_v6 2001:db8::9 is not an address of this system; use an address of this node (2001:db8::1, 2001:db8:20::1), e.g. next_hop_v6 = \"2001:db8::1\", or add 2001:db8::9 to a link",
            "b.toml:33:29: bgp.peer[2].families[1]: ipv6-unicast over an IPv4 session needs an IPv6 next hop: link \"eth2\" towards the peer has no global IPv6 address; set next_hop_v6 to an IPv6 address of this node, or add an IPv6 address to eth2",
            "b.toml:35:11: bgp.peer[3].address: ttl_security (set in [bgp]) needs a directly connected peer, and no link's subnet holds 198.18.99.1; set ttl_security = false for this peer, or peer with the router's address on a shared link",
            "b.toml:41:29: bgp.peer[4].families[1]: ipv4-unicast over an IPv6 session needs an IPv4 next hop: no link's subnet holds 2001:db8:99::1 to take one from; set local_address to this node's address on a link that has an IPv4 address, or remove \"ipv4-unicast\" (IPv4 routes with an IPv6 next hop, RFC 8950, are not supported)",
        ],
    },
];

#[test]
fn broken_bgp_configs_produce_the_expected_errors() {
    let failures: Vec<String> = BGP_CASES
        .iter()
        .filter_map(|case| {
            check_case(case)
                .err()
                .map(|e| format!("--- {}:\n{e}", case.what))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_case(case: &Case) -> Result<(), String> {
    let got: Vec<String> = match validate_str(case.source, "b.toml", Some(&broken_view())) {
        Ok(_) => vec![],
        Err(errors) => {
            let summary = errors.summary();
            let want = format!(
                "b.toml: {} error{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            if summary != want {
                return Err(format!("summary {summary:?}, want {want:?}"));
            }
            errors.iter().map(ToString::to_string).collect()
        }
    };
    if got == case.expected {
        return Ok(());
    }
    Err(format!(
        "got:\n{}\nwant:\n{}",
        got.join("\n"),
        case.expected.join("\n")
    ))
}

#[test]
fn broken_configs_produce_the_expected_errors() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| {
            check_case(case)
                .err()
                .map(|e| format!("--- {}:\n{e}", case.what))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `[vrrp]` key, inherited and overridden, against the model values.
const FULL_VRRP: &str = head!(
    "[[service]]\n",
    "name = \"web\"\n",
    "vip = \"198.18.10.10\"\n",
    "port = 80\n",
    "[[service.backend]]\n",
    "address = \"198.18.20.2\"\n",
    r#"
[vrrp]
version = 3
advert_interval = "100ms"
preempt = false
preempt_delay = "10s"
garp_repeat = 3
garp_delay = "0s"
garp_refresh = "1m"
resign_grace = "5s"
notify = " /usr/local/bin/vrrp-notify --quiet "
checksum = "rfc9568"
vip_mode = "dataplane"

[[vrrp.instance]]
name = "vip1"
interface = "vg-cli"
vrid = 51
priority = 150
vips = ["198.18.10.10", "198.18.10.12"]
unicast_source = "198.18.0.1"
unicast_peers = ["198.18.0.3", "198.18.0.4"]
virtual_mac = true

  [[vrrp.instance.track]]
  interface = "vg-srv"
  weight = -60

  [[vrrp.instance.track]]
  file = "/run/vrrp-ok"
  weight = 10

  [[vrrp.instance.track]]
  script = "/usr/local/bin/check-web --quiet"
  interval = "5s"
  timeout = "3s"
  rise = 2
  fall = 3

  [[vrrp.instance.track]]
  script = "/bin/true"

  [[vrrp.instance.track]]
  service = "web"
  weight = -5

[[vrrp.instance]]
name = "vip1-v6"
interface = "vg-cli"
vrid = 51
vips = ["fe80::1", "2001:db8:10::10"]
advert_interval = "1s"
preempt = true
notify = ""

[[vrrp.instance]]
name = "legacy"
interface = "eth2"
vip_mode = "kernel"
vrid = 7
priority = 255
version = 2
advert_interval = "3s"
auth_pass = "secret"
garp_repeat = 1
resign_grace = "0s"
vips = ["198.18.30.10"]

  [[vrrp.instance.track]]
  interface = "eth2"

[[vrrp.sync_group]]
name = "vip1-both"
instances = ["vip1", "vip1-v6"]

[[vrrp.sync_group]]
name = "solo"
instances = ["legacy"]
"#
);

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|a| a.parse().expect("test address"))
        .collect()
}

#[test]
fn a_full_vrrp_section_parses_into_the_model() {
    let config = match validate_str(FULL_VRRP, "full.toml", Some(&broken_view())) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let secs = Duration::from_secs;
    let script = |command: &str, interval, timeout, rise, fall| TrackKind::Script {
        command: command.into(),
        interval,
        timeout,
        rise,
        fall,
    };
    let track = |kind, weight| TrackConfig { kind, weight };
    let vip1 = VrrpInstanceConfig {
        name: "vip1".into(),
        interface: "vg-cli".into(),
        vrid: 51,
        priority: 150,
        version: VrrpVersion::V3,
        advert_interval: Duration::from_millis(100),
        preempt: false,
        preempt_delay: secs(10),
        vips: ips(&["198.18.10.10", "198.18.10.12"]),
        vip_mode: VipMode::Dataplane,
        checksum: VrrpChecksum::Rfc9568,
        unicast_source: Some(ips(&["198.18.0.1"])[0]),
        unicast_peers: ips(&["198.18.0.3", "198.18.0.4"]),
        auth_pass: None,
        virtual_mac: true,
        garp: GarpConfig {
            repeat: 3,
            delay: Duration::ZERO,
            refresh: secs(60),
        },
        resign_grace: secs(5),
        notify: Some("/usr/local/bin/vrrp-notify --quiet".into()),
        tracks: vec![
            track(
                TrackKind::Interface {
                    name: "vg-srv".into(),
                },
                -60,
            ),
            track(
                TrackKind::File {
                    path: "/run/vrrp-ok".into(),
                },
                10,
            ),
            track(
                script("/usr/local/bin/check-web --quiet", secs(5), secs(3), 2, 3),
                0,
            ),
            track(script("/bin/true", secs(2), secs(2), 1, 1), 0),
            track(TrackKind::Service { name: "web".into() }, -5),
        ],
    };
    let vip1_v6 = VrrpInstanceConfig {
        name: "vip1-v6".into(),
        priority: 100,
        advert_interval: secs(1),
        preempt: true,
        vips: ips(&["fe80::1", "2001:db8:10::10"]),
        unicast_source: None,
        unicast_peers: vec![],
        virtual_mac: false,
        notify: None,
        tracks: vec![],
        ..vip1.clone()
    };
    let legacy = VrrpInstanceConfig {
        name: "legacy".into(),
        interface: "eth2".into(),
        vrid: 7,
        priority: 255,
        version: VrrpVersion::V2,
        advert_interval: secs(3),
        vips: ips(&["198.18.30.10"]),
        vip_mode: VipMode::Kernel,
        unicast_source: None,
        unicast_peers: vec![],
        auth_pass: Some("secret".into()),
        virtual_mac: false,
        garp: GarpConfig {
            repeat: 1,
            ..vip1.garp
        },
        resign_grace: Duration::ZERO,
        tracks: vec![track(
            TrackKind::Interface {
                name: "eth2".into(),
            },
            0,
        )],
        ..vip1.clone()
    };
    let group = |name: &str, instances: &[&str]| SyncGroupConfig {
        name: name.into(),
        instances: instances.iter().map(|i| i.to_string()).collect(),
    };
    let want = VrrpConfig {
        instances: vec![vip1, vip1_v6, legacy],
        sync_groups: vec![
            group("vip1-both", &["vip1", "vip1-v6"]),
            group("solo", &["legacy"]),
        ],
    };
    assert_eq!(config.vrrp, want);
    assert!(config.vrrp_instance("vip1-v6").is_some_and(|i| i.is_v6()));
}

#[test]
fn a_vrrp_instance_gets_the_documented_defaults() {
    let source = head!(
        "[[service]]\n",
        "name = \"web\"\n",
        "vip = \"198.18.10.10\"\n",
        "port = 80\n",
        "[[service.backend]]\n",
        "address = \"198.18.20.2\"\n",
        "[[vrrp.instance]]\n",
        "name = \"vip1\"\n",
        "interface = \"vg-cli\"\n",
        "vrid = 51\n",
        "vips = [\"198.18.10.10\"]\n",
    );
    let config = match validate_str(source, "d.toml", Some(&broken_view())) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let want = VrrpInstanceConfig {
        name: "vip1".into(),
        interface: "vg-cli".into(),
        vrid: 51,
        priority: 100,
        version: VrrpVersion::V3,
        advert_interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        vips: ips(&["198.18.10.10"]),
        vip_mode: VipMode::Dataplane,
        checksum: VrrpChecksum::PseudoHeader,
        unicast_source: None,
        unicast_peers: vec![],
        auth_pass: None,
        virtual_mac: false,
        garp: GarpConfig {
            repeat: 5,
            delay: Duration::from_secs(5),
            refresh: Duration::ZERO,
        },
        resign_grace: Duration::from_secs(3),
        notify: None,
        tracks: vec![],
    };
    assert_eq!(config.vrrp.instances, [want]);
    assert!(config.vrrp.sync_groups.is_empty());
}

/// Lines a `[vrrp]` fuzz case is built from: headers, every key with good
/// and bad values.
const VRRP_LINES: &[&str] = &[
    "[vrrp]",
    "[[vrrp.instance]]",
    "[[vrrp.instance.track]]",
    "[[vrrp.sync_group]]",
    "name = \"vip1\"",
    "name = \"vip2\"",
    "name = 7",
    "interface = \"vg-cli\"",
    "interface = \"eth2\"",
    "interface = \"vg/x\"",
    "vrid = 51",
    "vrid = 0",
    "priority = 255",
    "priority = -1",
    "vips = [\"198.18.10.10\"]",
    "vips = [\"2001:db8:10::10\", \"198.18.10.11\"]",
    "vips = []",
    "vips = \"x\"",
    "version = 2",
    "version = 3",
    "advert_interval = \"15ms\"",
    "advert_interval = 1",
    "checksum = \"rfc9568\"",
    "vip_mode = \"kernel\"",
    "notify = \"\"",
    "auth_pass = \"123456789\"",
    "unicast_source = \"2001:db8::1\"",
    "unicast_peers = [\"198.18.0.3\", 4]",
    "weight = -20",
    "service = \"web\"",
    "script = \"/bin/true\"",
    "timeout = \"9s\"",
    "rise = 0",
    "file = \"/run/x\"",
    "instances = [\"vip1\", \"vip3\"]",
    "instances = []",
    "sync_group = \"g\"",
];

proptest::proptest! {
    /// Whatever `[vrrp]` holds, validation returns, every error has a
    /// position and a fix, and a clean draft always builds.
    #[test]
    fn vrrp_never_panics_and_always_locates(
        picks in proptest::collection::vec(0..VRRP_LINES.len(), 0..24)
    ) {
        let mut source = head!(
            "[[service]]\nname = \"web\"\nvip = \"198.18.10.10\"\nport = 80\n",
            "[[service.backend]]\naddress = \"198.18.20.2\"\n",
        )
        .to_string();
        for i in picks {
            source.push_str(VRRP_LINES[i]);
            source.push('\n');
        }
        if let Err(errors) = validate_str(&source, "f.toml", Some(&broken_view())) {
            let lines = source.lines().count() + 1;
            for e in errors.iter() {
                let at = e.location.expect("text errors have a position");
                proptest::prop_assert!(at.line <= lines, "{e} beyond {lines}");
                proptest::prop_assert!(!e.help.is_empty(), "{e}");
                proptest::prop_assert!(!e.message.contains("internal error"), "{e}\n{source}");
            }
        }
    }
}

#[test]
fn two_node_experiment_announces_every_vip_for_ecmp() {
    let config = load_example("two-node-experiment.toml");
    let bgp = &config.bgp;
    assert_eq!(bgp.mode, AnnounceMode::Ecmp, "both nodes announce: ECMP");
    assert_eq!(bgp.local_as, Some(64_512));
    let [peer] = &bgp.peers[..] else {
        panic!("one upstream peer: {:?}", bgp.peers)
    };
    assert_eq!(peer.address, "198.18.0.254".parse::<IpAddr>().expect("ip"));
    assert_eq!(peer.remote_as, 64_500);
    assert!(!peer.is_ibgp(64_512));
    assert!(peer.carries(AddressFamily::Ipv6Unicast), "the IPv6 VIP too");
    let announced: Vec<String> = config
        .bgp_announcements()
        .iter()
        .map(|a| a.prefix.to_string())
        .collect();
    assert_eq!(
        announced,
        ["198.18.10.10/32", "198.18.10.11/32", "2001:db8:10::10/128"]
    );
}

/// Every `[bgp]` key, inherited and overridden, against the model values.
const FULL_BGP: &str = head!(
    "[[service]]\n",
    "name = \"web\"\n",
    "vip = \"198.18.10.10\"\n",
    "port = 80\n",
    "[[service.backend]]\n",
    "address = \"198.18.20.2\"\n",
    "[[service]]\n",
    "name = \"web-v6\"\n",
    "vip = \"2001:db8:10::10\"\n",
    "port = 80\n",
    "[[service.backend]]\n",
    "address = \"2001:db8:20::2\"\n",
    r#"
[bgp]
local_as = 4200000000
router_id = "198.18.0.1"
listen = "[::]:1179"
mode = "ecmp"
hold_time = "30s"
connect_retry = "3s"
ttl_security = true
communities = ["64512:100", "0:0"]
large_communities = ["4200000000:1:2"]
med = 50
prepend = 1

[bgp.drain]
delay = "0s"
prepend = 16
med = 4294967295

[[bgp.peer]]
name = "upstream-a"
address = "198.18.0.254"
port = 1179
remote_as = 64500
local_address = "198.18.0.1"
md5_password = "s3cret with spaces"
families = ["ipv6-unicast", "ipv4-unicast"]
next_hop_v6 = "2001:db8::1"
communities = []
prepend = 3
hold_time = "0s"
reconnect_delay = "500ms"

[[bgp.peer]]
address = "2001:db8::fe"
remote_as = 4200000000
passive = true
local_pref = 200
med = 0
large_communities = ["1:2:3", "4:5:6"]
ttl_security = false

[[bgp.peer]]
name = "route-server"
address = "198.18.30.254"
remote_as = 65000

[[bgp.announce]]
prefix = "198.18.10.0/24"
communities = ["64512:1"]
large_communities = ["4200000000:0:1"]
med = 10

[[bgp.announce]]
prefix = "2001:db8:10::10"
"#
);

fn prefix(text: &str) -> IpPrefix {
    let (addr, len) = text.split_once('/').expect("ADDRESS/LENGTH");
    IpPrefix::new(addr.parse().expect("address"), len.parse().expect("length"))
        .expect("a network prefix")
}

#[test]
fn a_full_bgp_section_parses_into_the_model() {
    let config = match validate_str(FULL_BGP, "full.toml", Some(&broken_view())) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let secs = Duration::from_secs;
    let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
    let upstream = BgpPeerConfig {
        name: "upstream-a".into(),
        address: ip("198.18.0.254"),
        port: 1179,
        remote_as: 64_500,
        local_address: Some(ip("198.18.0.1")),
        hold_time: Duration::ZERO,
        connect_retry: secs(3),
        reconnect_delay: Duration::from_millis(500),
        passive: false,
        md5_password: Some("s3cret with spaces".into()),
        ttl_security: true,
        families: vec![AddressFamily::Ipv6Unicast, AddressFamily::Ipv4Unicast],
        med: Some(50),
        local_pref: None,
        communities: vec![],
        large_communities: vec![(4_200_000_000, 1, 2)],
        prepend: 3,
        next_hop_v6: Some("2001:db8::1".parse().expect("v6")),
    };
    let ibgp = BgpPeerConfig {
        name: "2001:db8::fe".into(),
        address: ip("2001:db8::fe"),
        port: 179,
        remote_as: 4_200_000_000,
        local_address: None,
        hold_time: secs(30),
        connect_retry: secs(3),
        reconnect_delay: secs(5),
        passive: true,
        md5_password: None,
        ttl_security: false,
        families: vec![AddressFamily::Ipv6Unicast],
        med: Some(0),
        local_pref: Some(200),
        communities: vec![(64_512, 100), (0, 0)],
        large_communities: vec![(1, 2, 3), (4, 5, 6)],
        prepend: 0,
        next_hop_v6: None,
    };
    let route_server = BgpPeerConfig {
        name: "route-server".into(),
        address: ip("198.18.30.254"),
        remote_as: 65_000,
        families: vec![AddressFamily::Ipv4Unicast],
        ttl_security: true,
        passive: false,
        local_pref: None,
        med: Some(50),
        large_communities: vec![(4_200_000_000, 1, 2)],
        prepend: 1,
        ..ibgp.clone()
    };
    let want = BgpConfig {
        local_as: Some(4_200_000_000),
        router_id: Some("198.18.0.1".parse().expect("v4")),
        listen: Some("[::]:1179".parse().expect("socket address")),
        mode: AnnounceMode::Ecmp,
        drain: DrainConfig {
            delay: Duration::ZERO,
            prepend: 16,
            med: Some(u32::MAX),
        },
        peers: vec![upstream, ibgp, route_server],
        announce: vec![
            AnnounceConfig {
                prefix: prefix("198.18.10.0/24"),
                communities: vec![(64_512, 1)],
                large_communities: vec![(4_200_000_000, 0, 1)],
                med: Some(10),
            },
            AnnounceConfig {
                prefix: prefix("2001:db8:10::10/128"),
                communities: vec![],
                large_communities: vec![],
                med: None,
            },
        ],
    };
    assert_eq!(config.bgp, want);
    assert_eq!(config.bgp_announcements(), want.announce);
    assert!(config
        .bgp
        .peer("2001:db8::fe")
        .is_some_and(|p| p.is_ibgp(4_200_000_000)));
}

#[test]
fn a_bgp_peer_gets_the_documented_defaults() {
    let source = head!(
        "[[service]]\n",
        "name = \"web\"\n",
        "vip = \"198.18.10.10\"\n",
        "port = 80\n",
        "[[service.backend]]\n",
        "address = \"198.18.20.2\"\n",
        "[[service]]\n",
        "name = \"dns\"\n",
        "vip = \"198.18.10.10\"\n",
        "port = 53\n",
        "protocol = \"udp\"\n",
        "[[service.backend]]\n",
        "address = \"198.18.20.2\"\n",
        "[bgp]\n",
        "local_as = 64512\n",
        "[[bgp.peer]]\n",
        "address = \"198.18.0.254\"\n",
        "remote_as = 64500\n",
    );
    let config = match validate_str(source, "d.toml", Some(&broken_view())) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let want = BgpConfig {
        local_as: Some(64_512),
        router_id: None,
        listen: None,
        mode: AnnounceMode::Ecmp,
        drain: DrainConfig {
            delay: Duration::from_secs(30),
            prepend: 0,
            med: None,
        },
        peers: vec![BgpPeerConfig {
            name: "198.18.0.254".into(),
            address: "198.18.0.254".parse().expect("ip"),
            port: 179,
            remote_as: 64_500,
            local_address: None,
            hold_time: Duration::from_secs(90),
            connect_retry: Duration::from_secs(10),
            reconnect_delay: Duration::from_secs(5),
            passive: false,
            md5_password: None,
            ttl_security: false,
            families: vec![AddressFamily::Ipv4Unicast],
            med: None,
            local_pref: None,
            communities: vec![],
            large_communities: vec![],
            prepend: 0,
            next_hop_v6: None,
        }],
        announce: vec![],
    };
    assert_eq!(config.bgp, want);
    assert_eq!(config.bgp.drain, DrainConfig::default());
    let announced = config.bgp_announcements();
    assert_eq!(announced.len(), 1, "one route per VIP, not per service");
    assert_eq!(
        announced[0].prefix,
        IpPrefix::host("198.18.10.10".parse().expect("ip"))
    );
    assert!(announced[0].communities.is_empty() && announced[0].med.is_none());
}

#[test]
fn router_id_must_be_derivable_or_set() {
    let source = head!(
        "[[service]]\nname = \"web\"\nvip = \"2001:db8:10::10\"\nport = 80\n",
        "[[service.backend]]\naddress = \"2001:db8:20::2\"\n",
        "[bgp]\nlocal_as = 64512\n",
        "[[bgp.peer]]\naddress = \"2001:db8::fe\"\nremote_as = 64500\n",
    );
    let v6_only = SystemView::new(vec![
        link("lo", &["127.0.0.1/8", "::1/128"]),
        link("vg-cli", &["2001:db8::1/64", "fe80::1/64"]),
        link("vg-srv", &["2001:db8:20::1/64"]),
    ]);
    assert_eq!(v6_only.default_router_id(), None, "loopback does not count");
    let errors = validate_str(source, "r.toml", Some(&v6_only)).expect_err("no router id");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["r.toml:17:1: bgp.router_id: no router_id, and this system has no IPv4 address (other than loopback) to take it from; set router_id = \"198.18.0.2\" in [bgp]: a non-zero IPv4 address unique among the routers"]
    );
    let with_id = source.replace(
        "local_as = 64512\n",
        "local_as = 64512\nrouter_id = \"198.18.0.2\"\n",
    );
    assert!(validate_str(&with_id, "r.toml", Some(&v6_only)).is_ok());
    assert_eq!(
        broken_view().default_router_id(),
        Some("198.18.0.1".parse().expect("v4")),
        "the first IPv4 address after loopback"
    );
}

/// Lines a `[bgp]` fuzz case is built from: headers, every key with good
/// and bad values.
const BGP_LINES: &[&str] = &[
    "[bgp]",
    "[bgp.drain]",
    "[[bgp.peer]]",
    "[[bgp.announce]]",
    "[[vrrp.instance]]",
    "local_as = 64512",
    "local_as = 23456",
    "remote_as = 64500",
    "remote_as = 64512",
    "remote_as = 0",
    "router_id = \"198.18.0.1\"",
    "listen = \"[::]:179\"",
    "listen = \"0.0.0.0:0\"",
    "mode = \"vrrp\"",
    "mode = \"ecmp\"",
    "address = \"198.18.0.254\"",
    "address = \"2001:db8::fe\"",
    "address = \"198.18.0.1\"",
    "name = \"up\"",
    "port = 1179",
    "passive = true",
    "hold_time = \"2s\"",
    "hold_time = \"0s\"",
    "ttl_security = true",
    "md5_password = \"\"",
    "families = [\"ipv6-unicast\"]",
    "families = [\"ipv4-unicast\", \"ipv4-unicast\"]",
    "families = []",
    "next_hop_v6 = \"2001:db8::1\"",
    "local_address = \"2001:db8::1\"",
    "local_pref = 200",
    "prepend = 3",
    "med = 7",
    "delay = \"1h\"",
    "communities = [\"1:2\", \"x\"]",
    "large_communities = [\"1:2:3\"]",
    "prefix = \"198.18.10.0/24\"",
    "prefix = \"198.18.99.1\"",
    "prefix = \"2001:db8:10::/64\"",
    "prefix = \"0.0.0.0/0\"",
    "vips = [\"198.18.10.10\"]",
    "interface = \"vg-cli\"",
    "vrid = 51",
];

proptest::proptest! {
    /// Whatever `[bgp]` holds, validation returns, every error has a
    /// position and a fix, and a clean draft always builds.
    #[test]
    fn bgp_never_panics_and_always_locates(
        picks in proptest::collection::vec(0..BGP_LINES.len(), 0..24)
    ) {
        let mut source = head!(
            "[[service]]\nname = \"web\"\nvip = \"198.18.10.10\"\nport = 80\n",
            "[[service.backend]]\naddress = \"198.18.20.2\"\n",
        )
        .to_string();
        for i in picks {
            source.push_str(BGP_LINES[i]);
            source.push('\n');
        }
        if let Err(errors) = validate_str(&source, "f.toml", Some(&broken_view())) {
            let lines = source.lines().count() + 1;
            for e in errors.iter() {
                let at = e.location.expect("text errors have a position");
                proptest::prop_assert!(at.line <= lines, "{e} beyond {lines}");
                proptest::prop_assert!(!e.help.is_empty(), "{e}");
                proptest::prop_assert!(!e.message.contains("internal error"), "{e}\n{source}");
            }
        }
    }
}

/// Lines 1-16 of every broken health config: [`head!`], then the service
/// "web" on 198.18.10.10:80 with two backends (weights 1 and 2) on lines
/// 11-16. Line 17 is the first line of the case.
macro_rules! health {
    ($($rest:tt)*) => {
        head!(
            "[[service]]\n",
            "name = \"web\"\n",
            "vip = \"198.18.10.10\"\n",
            "port = 80\n",
            "backend = [{ address = \"198.18.20.2\" },\n",
            "           { address = \"198.18.20.3\", weight = 2 }]\n",
            $($rest)*
        )
    };
}

const HEALTH_CASES: &[Case] = &[
    Case {
        what: "health: a valid http check with defaults and overrides",
        source: health!("[service.health]\ntype = \"http\"\npath = \"/health\"\nexpect_status = [200, \"300-399\"]\n[health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"),
        expected: &[],
    },
    Case {
        what: "health: keys of another check type, and a missing payload",
        source: health!("[service.health]\ntype = \"tcp\"\npath = \"/\"\nbody_contains = \"ok\"\n[health]\ntype = \"udp\"\npath = \"/ignored-here\"\n"),
        expected: &[
            "b.toml:19:1: service[0].health.path: path applies to http and https checks, and this check is type = \"tcp\"; remove path, or set type to http or https",
            "b.toml:20:1: service[0].health.body_contains: body_contains applies to http and https checks, and this check is type = \"tcp\"; remove body_contains, or set type to http or https",
            "b.toml:22:8: health.payload: a udp check needs payload; add payload = \"ping\\n\"",
        ],
    },
    Case {
        what: "health: timing that cannot work",
        source: health!("[health]\ninterval = \"1s\"\ntimeout = \"2s\"\njitter = \"600ms\"\nrise = 0\n"),
        expected: &[
            "b.toml:19:11: health.timeout: timeout 2s is longer than interval 1s; use a timeout of at most 1s, or a longer interval",
            "b.toml:20:10: health.jitter: jitter 600ms is more than half of interval 1s; use a jitter of at most 500ms",
            "b.toml:21:8: health.rise: rise 0 is out of range 1..=100; use 1 to 100",
        ],
    },
    Case {
        what: "health: bad values",
        source: health!("[service.health]\ntype = \"htp\"\nexpect_status = [200, \"600-700\"]\nbody_sha256 = \"abc\"\n"),
        expected: &[
            "b.toml:18:8: service[0].health.type: unknown health check type \"htp\"; expected one of none, tcp, http, https, udp, command (did you mean \"http\"?)",
            "b.toml:19:23: service[0].health.expect_status[1]: not an HTTP status code or range of them; use codes from 100 to 599 or \"low-high\" ranges, e.g. expect_status = [200, \"300-399\"]",
            "b.toml:20:15: service[0].health.body_sha256: body_sha256 is not a SHA-256 digest in hex; write the 64 hex digits `sha256sum` prints for the expected body",
        ],
    },
    Case {
        what: "health: quorum, hysteresis, sorry server and source families",
        source: health!("quorum = 3\nhysteresis = 3\nsorry_server = \"[2001:db8::9]:80\"\n[service.health]\ntype = \"tcp\"\nsource = \"2001:db8::1\"\n"),
        expected: &[
            "b.toml:17:10: service[0].quorum: quorum 3 + hysteresis 3 is more than the backends' total weight 3: the service could never count as up; use a quorum of at most 3 (minus hysteresis), or add backends",
            "b.toml:18:14: service[0].hysteresis: hysteresis 3 is not below quorum 3: the service could never count as down; use a hysteresis from 0 to 2",
            "b.toml:19:16: service[0].sorry_server: sorry_server 2001:db8::9 is IPv6 but the VIP 198.18.10.10 is IPv4; use a sorry server of the VIP's family (the dataplane does not translate between families)",
            "b.toml:22:10: service[0].backend[0].health.source: health check source 2001:db8::1 is IPv6 but backend 198.18.20.2 is IPv4; set source in the service's or backend's [health] table to an address of the backend's family",
        ],
    },
    Case {
        what: "health: a probe source this node does not have",
        source: health!("[service.health]\ntype = \"tcp\"\nsource = \"198.18.20.99\"\n"),
        expected: &[
            "b.toml:19:10: service[0].backend[0].health.source: source 198.18.20.99 is not an address of this system; use an address of this node (198.18.0.1, 198.18.20.1, 198.18.30.1), e.g. source = \"198.18.0.1\", or add 198.18.20.99 to a link",
        ],
    },
];

#[test]
fn broken_health_configs_produce_the_expected_errors() {
    let failures: Vec<String> = HEALTH_CASES
        .iter()
        .filter_map(|case| {
            check_case(case)
                .err()
                .map(|e| format!("--- {}:\n{e}", case.what))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn health_checks_inherit_from_health_to_service_to_backend() {
    use config::{CheckConfig, HealthCheckConfig, HttpCheckConfig};
    let source = health!(
        "sorry_server = \"198.18.20.9\"\nquorum = 2\nhysteresis = 1\nhold_down = \"5s\"\n",
        "[service.health]\ntype = \"https\"\npath = \"/ok\"\nbody_contains = \"up\"\n",
        "[[service]]\nname = \"dns\"\nvip = \"198.18.10.10\"\nport = 53\nprotocol = \"udp\"\n",
        "[[service.backend]]\naddress = \"198.18.20.2\"\n",
        "[service.backend.health]\ntype = \"udp\"\npayload = \"ping\"\nexpect = \"pong\"\nfall = 5\n",
        "[[service.backend]]\naddress = \"198.18.20.3\"\n",
        "[health]\ninterval = \"1s\"\ntimeout = \"300ms\"\nrise = 1\njitter = \"100ms\"\nsource = \"198.18.20.1\"\n",
    );
    let config = validate_str(source, "h.toml", Some(&broken_view())).expect("valid");
    let web = &config.services[0];
    assert_eq!(web.health.quorum, 2);
    assert_eq!(web.health.hysteresis, 1);
    assert_eq!(web.health.hold_down, Duration::from_secs(5));
    assert_eq!(
        web.health.sorry_server,
        Some("198.18.20.9:80".parse().unwrap())
    );
    let https = HealthCheckConfig {
        check: CheckConfig::Http(HttpCheckConfig {
            port: web.port,
            tls: true,
            tls_verify: false,
            server_name: None,
            path: "/ok".into(),
            host: None,
            expect_status: vec![(200, 299)],
            body_contains: Some("up".into()),
            body_sha256: None,
        }),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        rise: 1,
        fall: 3,
        retries: 0,
        retry_delay: Duration::from_millis(200),
        startup_delay: Duration::ZERO,
        jitter: Duration::from_millis(100),
        source: Some("198.18.20.1".parse().unwrap()),
        inhibit_on_failure: false,
    };
    assert_eq!(web.backends[0].health.as_ref(), Some(&https));
    assert_eq!(web.backends[1].health.as_ref(), Some(&https));
    let dns = &config.services[1];
    let udp = dns.backends[0].health.as_ref().expect("checked");
    assert_eq!(
        udp.check,
        CheckConfig::Udp {
            port: dns.port,
            payload: b"ping".to_vec(),
            expect: Some(b"pong".to_vec()),
        }
    );
    assert_eq!((udp.fall, udp.rise), (5, 1), "own fall, [health]'s rise");
    assert_eq!(
        dns.backends[1].health, None,
        "no [service.health]: type none"
    );
}
