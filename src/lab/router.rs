//! `vipgate lab router --config FILE`: the lab's upstream router, built
//! from vipgate's own BGP speaker, so the ECMP lab needs nothing but the
//! vipgate binary.
//!
//! It holds the sessions of FILE's `[bgp]` (the `vipgate route speak`
//! format; usually passive peers and `listen`), announces nothing, and
//! mirrors what the peers announce into the kernel FIB of the namespace it
//! runs in: per prefix, one route with `proto bgp` whose next hops are the
//! best paths of every peer's Adj-RIB-In ([`best_paths`]: the BGP decision
//! down to eBGP over iBGP, every tie kept as an equal-cost path, RFC 8326
//! GRACEFUL_SHUTDOWN honoured as local preference 0). A route changes in
//! one `RTM_NEWROUTE` with `NLM_F_REPLACE`, so a next hop leaving never
//! takes the route away for a moment. On SIGTERM/SIGINT it removes every
//! route it installed, then closes the sessions.
//!
//! Owns: the mirror loop and [`fib_changes`] (what to replace and remove,
//! sans-IO). Must not touch: routes it did not install, sysctls (the lab
//! turns forwarding and L4 multipath hashing on in the router's
//! namespace), anything outside the namespace it runs in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

use vipgate_routing::rib_in::{best_paths, DecisionPolicy};
use vipgate_routing::speaker::{Speaker, SpeakerHandle};
use vipgate_routing::wire::Prefix;

use crate::netlink::RtNetlink;

/// How long the loop waits for a change before checking for a signal.
const POLL: Duration = Duration::from_millis(100);
/// A route the kernel refused is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);

/// One change to the FIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibChange {
    /// Install or replace the route of a prefix with these next hops.
    Replace(Prefix, Vec<IpAddr>),
    /// Remove the route of a prefix.
    Remove(Prefix),
}

/// What turns `installed` into `wanted`: removals first, then the routes
/// that are new or whose next hops changed.
pub fn fib_changes(
    installed: &BTreeMap<Prefix, Vec<IpAddr>>,
    wanted: &BTreeMap<Prefix, Vec<IpAddr>>,
) -> Vec<FibChange> {
    let removed = installed
        .keys()
        .filter(|p| !wanted.contains_key(p))
        .map(|p| FibChange::Remove(*p));
    let replaced = wanted
        .iter()
        .filter(|(p, hops)| installed.get(p) != Some(hops))
        .map(|(p, hops)| FibChange::Replace(*p, hops.clone()));
    removed.chain(replaced).collect()
}

/// `vipgate lab router --config FILE`, until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    crate::daemon::install_signal_handlers(stop.clone())?;
    let mut nl = RtNetlink::open().context("opening rtnetlink")?;
    let view = crate::daemon::system_view(&mut nl).ok();
    let bgp = crate::bgp::load_speak_config(path, view.as_ref())?;
    let config = crate::bgp::speaker_config(&bgp, view.as_ref())?;
    let policy = DecisionPolicy {
        local_as: config.local_as,
        graceful_shutdown: true,
    };
    let speaker = Speaker::new(config).context("starting the BGP speaker")?;
    info!(config = %path.display(), "lab router: BGP up, mirroring received routes into the FIB");
    let mut installed = BTreeMap::new();
    mirror(&speaker.handle(), &mut nl, &policy, &mut installed, &stop);
    info!(routes = installed.len(), "lab router: removing its routes");
    for prefix in std::mem::take(&mut installed).into_keys() {
        if let Err(e) = nl.del_route(prefix.addr(), prefix.prefix_len(), None, None) {
            warn!(%prefix, error = %e, "could not remove a route");
        }
    }
    drop(speaker);
    Ok(ExitCode::SUCCESS)
}

/// Mirrors the best paths into the FIB until `stop`.
fn mirror(
    handle: &SpeakerHandle,
    nl: &mut RtNetlink,
    policy: &DecisionPolicy,
    installed: &mut BTreeMap<Prefix, Vec<IpAddr>>,
    stop: &AtomicBool,
) {
    let mut seen = 0;
    let mut failed = false;
    while !stop.load(Ordering::Relaxed) {
        let wait = if failed { RETRY } else { POLL };
        let generation = handle.wait_rib_in(seen, wait);
        if generation == seen && !failed {
            continue;
        }
        seen = generation;
        let wanted = best_paths(&handle.adj_rib_in(None), policy);
        failed = false;
        for change in fib_changes(installed, &wanted) {
            match apply(nl, &change) {
                Ok(()) => record(installed, change),
                Err(e) => {
                    warn!(error = %e, "the kernel refused a route; trying again in 1 s");
                    failed = true;
                }
            }
        }
    }
}

fn apply(nl: &mut RtNetlink, change: &FibChange) -> std::io::Result<()> {
    match change {
        FibChange::Replace(p, hops) => {
            nl.replace_path_route(p.addr(), p.prefix_len(), hops)?;
            let list: Vec<String> = hops.iter().map(ToString::to_string).collect();
            info!(prefix = %p, next_hops = %list.join(", "), "route installed");
        }
        FibChange::Remove(p) => {
            nl.del_route(p.addr(), p.prefix_len(), None, None)?;
            info!(prefix = %p, "route removed");
        }
    }
    Ok(())
}

fn record(installed: &mut BTreeMap<Prefix, Vec<IpAddr>>, change: FibChange) {
    match change {
        FibChange::Replace(p, hops) => {
            installed.insert(p, hops);
        }
        FibChange::Remove(p) => {
            installed.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn hops(list: &[&str]) -> Vec<IpAddr> {
        list.iter()
            .map(|s| s.parse().expect("test address"))
            .collect()
    }

    #[test]
    fn changes_remove_first_then_replace_only_what_differs() {
        let vip = p("198.18.10.10/32");
        let gone = p("198.18.11.0/24");
        let new = p("2001:db8:10::10/128");
        let installed = BTreeMap::from([
            (vip, hops(&["198.18.1.2", "198.18.2.2"])),
            (gone, hops(&["198.18.1.2"])),
        ]);
        let mut wanted = BTreeMap::from([
            (vip, hops(&["198.18.1.2", "198.18.2.2"])),
            (new, hops(&["2001:db8:1::2"])),
        ]);
        assert_eq!(
            fib_changes(&installed, &wanted),
            [
                FibChange::Remove(gone),
                FibChange::Replace(new, hops(&["2001:db8:1::2"]))
            ]
        );
        // One next hop leaves: one replace, the route is never removed.
        wanted.insert(vip, hops(&["198.18.2.2"]));
        wanted.remove(&new);
        let changes = fib_changes(&installed, &wanted);
        assert_eq!(changes[1], FibChange::Replace(vip, hops(&["198.18.2.2"])));
        // Applying the changes reaches the wanted table, then nothing moves.
        let mut now = installed.clone();
        for c in changes {
            record(&mut now, c);
        }
        assert_eq!(now, wanted);
        assert!(fib_changes(&now, &wanted).is_empty());
    }
}
