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
    load_and_validate, validate_str, Config, InterfaceAddress, InterfaceRole, Protocol, Scheduler,
    SystemInterface, SystemView,
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
    ($rest:literal) => {
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
            $rest
        )
    };
}

struct Case {
    what: &'static str,
    source: &'static str,
    /// Every error line, in order (the summary line is checked separately).
    expected: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        what: "misspelt scheduler",
        source: head!("[[service]]\nname = \"web\"\nvip = \"198.18.10.10\"\nport = 80\nscheduler = \"mglev\"\n[[service.backend]]\naddress = \"198.18.20.2\"\n"),
        expected: &[
            "b.toml:15:13: service[0].scheduler: unknown scheduler \"mglev\"; expected one of rr, wrr, lc, sh, maglev (did you mean \"maglev\"?)",
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
