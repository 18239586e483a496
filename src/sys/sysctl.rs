//! `/proc/sys` values the dataplane needs, set and put back.
//!
//! Owns reading and writing sysctl files; knows nothing about interfaces
//! beyond their names. Net sysctls are per network namespace: the file a
//! thread opens belongs to the namespace that thread is in.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{SysError, SystemChange};

const PROC_SYS: &str = "/proc/sys";

/// A sysctl name, stored as its path below /proc/sys.
///
/// Parsed like sysctl(8): `net.ipv4.conf.eth0.forwarding` or
/// `net/ipv4/conf/eth0.100/forwarding` (the slash form keeps dots inside an
/// interface name). Shown in the dotted form, with a dot inside a component
/// written as `/` (again like sysctl(8)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysctlKey {
    components: Vec<String>,
}

impl SysctlKey {
    pub fn parse(key: &str) -> Result<Self, SysError> {
        let parts: Vec<&str> = if key.contains('/') {
            key.split('/').collect()
        } else {
            key.split('.').collect()
        };
        Self::from_components(&parts)
    }

    /// `net.ipv4.conf.<ifname>.<name>`.
    pub fn ipv4_conf(ifname: &str, name: &str) -> Result<Self, SysError> {
        Self::from_components(&["net", "ipv4", "conf", ifname, name])
    }

    /// `net.ipv6.conf.<ifname>.<name>`.
    pub fn ipv6_conf(ifname: &str, name: &str) -> Result<Self, SysError> {
        Self::from_components(&["net", "ipv6", "conf", ifname, name])
    }

    fn from_components(parts: &[&str]) -> Result<Self, SysError> {
        let bad = |p: &&str| p.is_empty() || *p == "." || *p == ".." || p.contains('/');
        if parts.is_empty() || parts.iter().any(bad) {
            return Err(SysError::InvalidInput(format!(
                "invalid sysctl name {:?}",
                parts.join(".")
            )));
        }
        Ok(Self {
            components: parts.iter().map(|p| p.to_string()).collect(),
        })
    }

    /// The file under /proc/sys.
    pub fn proc_path(&self) -> PathBuf {
        let mut path = PathBuf::from(PROC_SYS);
        path.extend(&self.components);
        path
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.components.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&c.replace('.', "/"))?;
        }
        Ok(())
    }
}

/// One sysctl the dataplane wants, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlSetting {
    pub key: SysctlKey,
    pub value: &'static str,
    /// Missing on older kernels; skipped (logged at debug) when absent.
    pub optional: bool,
    pub reason: &'static str,
}

/// The sysctls the dataplane needs on an interface it takes over.
///
/// The nftables ingress guard is what keeps the kernel off VIP traffic and
/// backend replies; these make the kernel harmless for whatever that guard
/// does not match (transit traffic, packets before the guard exists):
///
/// - `net.ipv4.conf.<if>.forwarding=0`: IPv4 packets that arrive on `<if>`
///   for a non-local address fail the input route lookup (`ip_route_input_slow`
///   gives them an unreachable route, `ip_error` drops them without ICMP when
///   forwarding is off on the input device). Verified on 6.18 by
///   tests/sys.rs: with `ip_forward=1` globally and a route to the target,
///   pings through the interface get no reply, `Ip: ForwDatagrams` stays
///   put, `IpExt/Ip InAddrErrors` counts them and no ICMP leaves.
/// - `net.ipv6.conf.<if>.force_forwarding=0` (6.17+, optional): forces
///   IPv6 forwarding on for `<if>` even with `all.forwarding=0`; make sure it
///   is off.
///
/// Deliberately not in the list:
/// - `net.ipv6.conf.<if>.forwarding`: IPv6 forwarding is gated only by
///   `net.ipv6.conf.all.forwarding` (and `force_forwarding`); the
///   per-interface flag does not stop forwarding (tests/sys.rs shows a ping
///   forwarded with it at 0) but switches the interface to host behaviour:
///   it sends router solicitations and accepts router advertisements, which
///   can add addresses and default routes. IPv6 VIP traffic is kept from
///   the kernel by the nft guard alone.
/// - `send_redirects`: redirects are only sent on the forwarding path, which
///   `forwarding=0` closes for this interface; and the effective value is
///   `all || <if>`, so the per-interface 0 alone would not do anything.
/// - `accept_local`, `rp_filter`: they only widen or narrow what the kernel
///   accepts as local; VIP traffic never reaches that check (dropped at
///   ingress), and control traffic should keep the operator's settings.
pub fn dataplane_sysctls(ifname: &str) -> Result<Vec<SysctlSetting>, SysError> {
    Ok(vec![
        SysctlSetting {
            key: SysctlKey::ipv4_conf(ifname, "forwarding")?,
            value: "0",
            optional: false,
            reason: "the kernel must not forward IPv4 packets the dataplane handles; \
                     non-local packets are dropped at route lookup without ICMP",
        },
        SysctlSetting {
            key: SysctlKey::ipv6_conf(ifname, "force_forwarding")?,
            value: "0",
            optional: true,
            reason: "per-interface forced IPv6 forwarding must stay off",
        },
    ])
}

/// The current value of a sysctl, trimmed.
pub fn read_sysctl(key: &SysctlKey) -> Result<String, SysError> {
    std::fs::read_to_string(key.proc_path())
        .map(|v| v.trim().to_string())
        .map_err(|e| sysctl_error(format!("read sysctl {key}"), key, e))
}

fn write_sysctl(key: &SysctlKey, value: &str) -> Result<(), SysError> {
    OpenOptions::new()
        .write(true)
        .open(key.proc_path())
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| sysctl_error(format!("set sysctl {key}={value}"), key, e))
}

/// A missing `conf/<if>` file means the interface does not exist (in this
/// namespace); say so instead of "No such file or directory".
fn sysctl_error(what: String, key: &SysctlKey, e: io::Error) -> SysError {
    let conf_if = match key.components.as_slice() {
        [net, _, conf, ifname, _] if net == "net" && conf == "conf" => Some(ifname),
        _ => None,
    };
    match conf_if {
        Some(ifname)
            if e.kind() == io::ErrorKind::NotFound
                && !key.proc_path().parent().is_some_and(|p| p.exists()) =>
        {
            SysError::NoSuchInterface {
                what,
                ifname: ifname.clone(),
            }
        }
        _ => SysError::io(what, e),
    }
}

/// A sysctl set to a new value; the old one is written back on restore.
#[derive(Debug)]
pub struct SysctlGuard {
    key: SysctlKey,
    value: String,
    previous: String,
    restored: bool,
}

impl SysctlGuard {
    /// Sets `key` to `value`. Returns `None` when it already had that value
    /// (nothing to restore).
    pub fn set(key: SysctlKey, value: &str) -> Result<Option<Self>, SysError> {
        let previous = read_sysctl(&key)?;
        if previous == value {
            tracing::debug!(sysctl = %key, value, "sysctl already set; nothing to change");
            return Ok(None);
        }
        write_sysctl(&key, value)?;
        tracing::info!(sysctl = %key, value, previous = %previous, "set sysctl; will restore on exit");
        Ok(Some(Self {
            key,
            value: value.to_string(),
            previous,
            restored: false,
        }))
    }

    /// Applies one [`SysctlSetting`]; an optional setting whose file does
    /// not exist on this kernel is skipped.
    pub fn apply(setting: &SysctlSetting) -> Result<Option<Self>, SysError> {
        if setting.optional && !setting.key.proc_path().exists() {
            tracing::debug!(sysctl = %setting.key, "sysctl not present on this kernel; skipped");
            return Ok(None);
        }
        Self::set(setting.key.clone(), setting.value)
    }

    pub fn key(&self) -> &SysctlKey {
        &self.key
    }

    /// The value found before the change.
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// Writes the previous value back, unless someone else changed the
    /// sysctl since (then their value stays, with a warning) or it is gone
    /// (interface deleted). Idempotent.
    pub fn restore(&mut self) -> Result<(), SysError> {
        if self.restored {
            return Ok(());
        }
        let current = match read_sysctl(&self.key) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => {
                tracing::debug!(sysctl = %self.key, "sysctl gone (interface removed?); nothing to restore");
                self.restored = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if current != self.value {
            tracing::warn!(sysctl = %self.key, current = %current, ours = %self.value, previous = %self.previous,
                "sysctl changed by someone else since we set it; leaving it as it is");
        } else {
            write_sysctl(&self.key, &self.previous)?;
            tracing::info!(sysctl = %self.key, value = %self.previous, "restored sysctl");
        }
        self.restored = true;
        Ok(())
    }
}

impl SystemChange for SysctlGuard {
    fn describe(&self) -> String {
        format!("sysctl {}={} (was {})", self.key, self.value, self.previous)
    }

    fn restore(&mut self) -> Result<(), SysError> {
        SysctlGuard::restore(self)
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!(sysctl = %self.key, error = %e, "could not restore sysctl");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotted_and_slash_forms() {
        let dotted = SysctlKey::parse("net.ipv4.conf.eth0.forwarding").expect("valid");
        assert_eq!(
            dotted.proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0/forwarding")
        );
        let vlan = SysctlKey::parse("net/ipv4/conf/eth0.100/forwarding").expect("valid");
        assert_eq!(
            vlan.proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            vlan,
            SysctlKey::ipv4_conf("eth0.100", "forwarding").expect("valid")
        );
        assert_eq!(vlan.to_string(), "net.ipv4.conf.eth0/100.forwarding");
    }

    #[test]
    fn rejects_names_that_escape_proc_sys() {
        for bad in ["", "net..ipv4", "net/../../etc/passwd", "net/ipv4/", "."] {
            assert!(SysctlKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SysctlKey::ipv4_conf("..", "forwarding").is_err());
        assert!(SysctlKey::ipv4_conf("a/b", "forwarding").is_err());
    }

    #[test]
    fn dataplane_list_names_the_interface() {
        let list = dataplane_sysctls("dp0").expect("valid name");
        let keys: Vec<String> = list.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "net.ipv4.conf.dp0.forwarding",
                "net.ipv6.conf.dp0.force_forwarding"
            ]
        );
        assert!(list.iter().all(|s| s.value == "0"));
    }

    #[test]
    fn missing_interface_is_reported_as_such() {
        let key = SysctlKey::ipv4_conf("vgt-no-such-if", "forwarding").expect("valid");
        match read_sysctl(&key) {
            Err(SysError::NoSuchInterface { ifname, .. }) => assert_eq!(ifname, "vgt-no-such-if"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
