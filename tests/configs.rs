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
    load_and_validate, validate_str, Config, GarpConfig, InterfaceAddress, InterfaceRole, Protocol,
    Scheduler, SyncGroupConfig, SystemInterface, SystemView, TrackConfig, TrackKind, VipMode,
    VrrpChecksum, VrrpConfig, VrrpInstanceConfig, VrrpVersion,
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
