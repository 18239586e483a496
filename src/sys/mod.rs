//! System changes the dataplane needs from the kernel, each one undone on
//! exit.
//!
//! The userspace dataplane reads VIP traffic and backend replies from
//! AF_PACKET taps, which see a frame before tc and netfilter ingress. The
//! kernel must not also act on those frames (forward them, answer them with
//! RSTs or ICMP, track them), while the node's own addresses keep working for
//! SSH, BGP, VRRP and health checks. This module owns the three kinds of
//! change that achieve that, each as a guard that remembers what was there
//! and puts it back in `restore()` and in `Drop`:
//!
//! - [`SysctlGuard`] sets `/proc/sys` values ([`dataplane_sysctls`] is the list
//!   the dataplane needs, with the reason for each);
//! - [`NftIngressGuard`] installs an nftables `netdev` table whose ingress chains drop
//!   the kernel's copy of VIP traffic and backend replies, programmed over
//!   nfnetlink without the `nft` binary;
//! - [`OffloadGuard`] turns GRO/LRO/GSO/TSO (and optionally checksum
//!   offloads) off through the ethtool ioctl.
//!
//! [`SystemChanges`] stacks guards and restores them in reverse order, so a
//! start that fails halfway leaves the system as it was.
//!
//! Every call acts on the network namespace of the calling thread at the time
//! the guard is made; a guard keeps acting on that namespace afterwards (the
//! nft guard holds its netlink socket, the others re-resolve names, so restore
//! them from a thread in the same namespace).
//!
//! Must not touch: links, addresses, routes and neighbours (src/netlink/),
//! the dataplane's sockets, or any nftables table other than its own.

mod ethtool;
mod nfnl;
mod nft;
mod sysctl;

use std::any::Any;
use std::fmt;
use std::io;
use std::marker::PhantomData;

pub mod epoll;
pub mod packet;
pub use ethtool::{Feature, Offload, OffloadGuard, OffloadState, Offloads};
pub use nft::{BackendEndpoint, IngressFilter, L4Protocol, NftIngressGuard};
pub use sysctl::{dataplane_sysctls, read_sysctl, SysctlGuard, SysctlKey, SysctlSetting};

/// What went wrong while changing or restoring the system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysError {
    /// The kernel said EPERM/EACCES and the process lacks CAP_NET_ADMIN.
    #[error("{what}: needs CAP_NET_ADMIN (run as root)")]
    PermissionDenied { what: String },
    /// A network interface named in the request does not exist.
    #[error("{what}: no network interface named {ifname:?}")]
    NoSuchInterface { what: String, ifname: String },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel rejected a netlink request; `detail` is its extended-ACK
    /// message, when it sent one.
    #[error("{what}: kernel refused: {source}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
        detail: Option<String>,
    },
    /// The request itself is malformed (bad name, duplicate interface...).
    #[error("{0}")]
    InvalidInput(String),
}

impl SysError {
    /// Wraps a failed system call, turning a permission error into the
    /// one-line "needs CAP_NET_ADMIN" message.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) if !has_cap_net_admin() => {
                SysError::PermissionDenied { what }
            }
            _ => SysError::Io { what, source },
        }
    }

    /// True when the error says the thing to change no longer exists
    /// (interface gone, table already deleted): restoring it is moot.
    pub fn is_not_found(&self) -> bool {
        match self {
            SysError::NoSuchInterface { .. } => true,
            SysError::Io { source, .. } | SysError::Netlink { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENODEV)
            ),
            _ => false,
        }
    }
}

/// Whether this process has CAP_NET_ADMIN in its effective set, read from
/// /proc/self/status. Used only to word error messages.
fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// One applied change to the system that can be put back.
///
/// `restore` must be idempotent: the second call does nothing and returns
/// `Ok`. Implementations also restore in their own `Drop`.
pub trait SystemChange: Send {
    /// What was changed, for logs ("sysctl net.ipv4.conf.eth0.forwarding=0 (was 1)").
    fn describe(&self) -> String;
    /// Puts the system back as it was before this change.
    fn restore(&mut self) -> Result<(), SysError>;
}

/// Gives `SystemChanges::get_mut` a way to downcast without trait upcasting
/// (not available at the workspace's rust-version).
trait AnyChange: SystemChange {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: SystemChange + Any> AnyChange for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Names a change pushed on a [`SystemChanges`] stack, typed so that
/// [`SystemChanges::get_mut`] hands back the guard itself (e.g. to update
/// the nft rules).
pub struct ChangeId<C> {
    serial: u64,
    _kind: PhantomData<fn() -> C>,
}

impl<C> Clone for ChangeId<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for ChangeId<C> {}

impl<C> fmt::Debug for ChangeId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeId({})", self.serial)
    }
}

/// The system changes made so far, restored last-in first-out by
/// [`SystemChanges::restore_all`] or on drop (also while unwinding from a
/// panic).
#[derive(Default)]
pub struct SystemChanges {
    /// Each change with the serial its [`ChangeId`] carries; serials are
    /// never reused, so an id cannot name a later change.
    changes: Vec<(u64, Box<dyn AnyChange>)>,
    next_serial: u64,
}

impl SystemChanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of an applied change; it is restored before every
    /// change pushed earlier.
    pub fn push<C: SystemChange + 'static>(&mut self, change: C) -> ChangeId<C> {
        tracing::debug!(change = %change.describe(), "system change recorded; will restore on exit");
        let serial = self.next_serial;
        self.next_serial += 1;
        self.changes.push((serial, Box::new(change)));
        ChangeId {
            serial,
            _kind: PhantomData,
        }
    }

    /// The change `id` names, while the stack still holds it.
    pub fn get_mut<C: SystemChange + 'static>(&mut self, id: ChangeId<C>) -> Option<&mut C> {
        self.changes
            .iter_mut()
            .find(|(serial, _)| *serial == id.serial)
            .and_then(|(_, c)| c.as_any_mut().downcast_mut::<C>())
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// What each held change did, oldest first.
    pub fn describe(&self) -> Vec<String> {
        self.changes.iter().map(|(_, c)| c.describe()).collect()
    }

    /// Restores every change, newest first, and empties the stack. Keeps
    /// going past a failure so one stuck change does not strand the others;
    /// returns all failures.
    pub fn restore_all(&mut self) -> Result<(), Vec<SysError>> {
        let mut errors = Vec::new();
        if !self.changes.is_empty() {
            tracing::info!(count = self.changes.len(), "restoring system changes");
        }
        while let Some((_, mut change)) = self.changes.pop() {
            if let Err(e) = change.restore() {
                tracing::error!(change = %change.describe(), error = %e, "could not restore system change");
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Drop for SystemChanges {
    fn drop(&mut self) {
        // Failures are already logged one per change by restore_all.
        let _ = self.restore_all();
    }
}

impl fmt::Debug for SystemChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.describe()).finish()
    }
}

/// Sets every sysctl of [`dataplane_sysctls`] for `ifname` and pushes a
/// guard for each value that changed.
pub fn apply_dataplane_sysctls(changes: &mut SystemChanges, ifname: &str) -> Result<(), SysError> {
    for setting in dataplane_sysctls(ifname)? {
        if let Some(guard) = SysctlGuard::apply(&setting)? {
            changes.push(guard);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A change that records the order in which it is restored.
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
        fail: bool,
    }

    impl SystemChange for Recorder {
        fn describe(&self) -> String {
            self.name.to_string()
        }
        fn restore(&mut self) -> Result<(), SysError> {
            self.log
                .lock()
                .expect("test mutex not poisoned")
                .push(self.name);
            if self.fail {
                Err(SysError::InvalidInput(format!("{} failed", self.name)))
            } else {
                Ok(())
            }
        }
    }

    fn recorder(name: &'static str, log: &Arc<Mutex<Vec<&'static str>>>, fail: bool) -> Recorder {
        Recorder {
            name,
            log: log.clone(),
            fail,
        }
    }

    #[test]
    fn restores_in_reverse_order_and_keeps_going_after_a_failure() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = SystemChanges::new();
        changes.push(recorder("first", &log, false));
        changes.push(recorder("second", &log, true));
        changes.push(recorder("third", &log, false));
        let errors = changes.restore_all().expect_err("second fails");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            *log.lock().expect("not poisoned"),
            ["third", "second", "first"]
        );
        assert!(changes.is_empty());
        // A second restore has nothing left to do.
        assert!(changes.restore_all().is_ok());
        assert_eq!(log.lock().expect("not poisoned").len(), 3);
    }

    #[test]
    fn drop_restores_in_reverse_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut changes = SystemChanges::new();
            changes.push(recorder("a", &log, false));
            changes.push(recorder("b", &log, false));
        }
        assert_eq!(*log.lock().expect("not poisoned"), ["b", "a"]);
    }

    #[test]
    fn drop_restores_while_unwinding() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let inner = log.clone();
        let result = std::panic::catch_unwind(move || {
            let mut changes = SystemChanges::new();
            changes.push(recorder("a", &inner, false));
            panic!("start failed");
        });
        assert!(result.is_err());
        assert_eq!(*log.lock().expect("not poisoned"), ["a"]);
    }

    #[test]
    fn get_mut_returns_the_typed_change() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = SystemChanges::new();
        let id = changes.push(recorder("a", &log, false));
        let change = changes.get_mut(id).expect("still held");
        assert_eq!(change.name, "a");
        changes.restore_all().expect("restores");
        assert!(changes.get_mut(id).is_none());
    }

    #[test]
    fn permission_error_wording() {
        let e = SysError::PermissionDenied {
            what: "set sysctl net.ipv4.conf.eth0.forwarding".into(),
        };
        assert_eq!(
            e.to_string(),
            "set sysctl net.ipv4.conf.eth0.forwarding: needs CAP_NET_ADMIN (run as root)"
        );
    }
}
