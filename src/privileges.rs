//! Checks that the process may do what the daemon and the lab need, so a
//! missing privilege is one clear line at start instead of an EPERM halfway
//! through set-up.

use anyhow::{bail, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn missing(caps: &[(u32, &'static str)]) -> Vec<&'static str> {
    let eff = effective_caps();
    caps.iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The daemon needs CAP_NET_ADMIN (links, sysctls, nftables) and
/// CAP_NET_RAW (AF_PACKET).
pub fn require_daemon() -> Result<()> {
    let m = missing(&[
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]);
    if !m.is_empty() {
        bail!(
            "vipgate run needs {} (run as root, or grant them with setcap/systemd AmbientCapabilities)",
            m.join(" and ")
        );
    }
    Ok(())
}

/// Whether this process has root's network powers (CAP_SYS_ADMIN,
/// CAP_NET_ADMIN, CAP_NET_RAW): what the lab and the namespace tests need.
/// The tests skip, saying so, when it is false.
pub fn is_root() -> bool {
    missing(&[
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ])
    .is_empty()
}

/// The lab also creates network namespaces: CAP_SYS_ADMIN, i.e. root.
pub fn require_lab() -> Result<()> {
    let m = missing(&[
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]);
    if !m.is_empty() {
        bail!(
            "vipgate lab needs root (missing {}): it builds network namespaces; run it with sudo",
            m.join(", ")
        );
    }
    Ok(())
}
