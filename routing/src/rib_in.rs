//! The Adj-RIB-In (RFC 4271 3.2) of each peer, and the decision process
//! that turns the Adj-RIBs-In of all peers into multipath routes, sans-IO.
//!
//! Owns: [`AdjRibIn`], the routes one peer announced and has not withdrawn
//! (an UPDATE applied at a time, RFC 7606 treat-as-withdraw honoured), and
//! [`multipath`] / [`best_paths`], a pure function from the routes of every
//! peer to the next hops a router installs for each prefix: the usual BGP
//! preference order (RFC 4271 9.1.2.2) down to the eBGP-over-iBGP step,
//! with every route that ties at that point kept as an equal-cost path, as
//! BIRD's `merge paths` and FRR's `maximum-paths` do. RFC 8326: a route
//! with GRACEFUL_SHUTDOWN gets LOCAL_PREF 0 when [`DecisionPolicy`] says so
//! (the import policy RFC 8326 section 4.2 asks routers to apply).
//!
//! Must not touch: sessions, sockets, the kernel. The speaker keeps one
//! [`AdjRibIn`] per peer task and shows copies through its handle; what is
//! done with the result (a FIB, a report) is the caller's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::wire::{AsSegment, Community, Origin, PathAttributes, Prefix, UpdateRepr};

/// LOCAL_PREF of a route that does not carry one (eBGP routes never do).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The routes one peer announced and has not withdrawn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdjRibIn {
    routes: BTreeMap<Prefix, PathAttributes>,
}

impl AdjRibIn {
    /// An empty table.
    pub fn new() -> Self {
        AdjRibIn::default()
    }

    /// Applies one received UPDATE: withdrawals first, then announcements
    /// (an UPDATE that RFC 7606 turned into a withdrawal has its prefixes
    /// in `withdrawn` already). True if the table changed.
    pub fn apply(&mut self, update: &UpdateRepr) -> bool {
        let mut changed = false;
        for p in &update.withdrawn {
            changed |= self.routes.remove(p).is_some();
        }
        if update.treat_as_withdraw.is_some() {
            for p in &update.announced {
                changed |= self.routes.remove(p).is_some();
            }
            return changed;
        }
        for p in &update.announced {
            let old = self.routes.insert(*p, update.attributes.clone());
            changed |= old.as_ref() != Some(&update.attributes);
        }
        changed
    }

    /// Forgets everything (the session went down).
    pub fn clear(&mut self) {
        self.routes.clear();
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the peer announces nothing.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, by prefix.
    pub fn routes(&self) -> &BTreeMap<Prefix, PathAttributes> {
        &self.routes
    }
}

/// One route of one peer, as the decision process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRoute {
    /// The peer that announced it.
    pub peer: IpAddr,
    /// The peer's AS equals ours.
    pub ibgp: bool,
    /// The prefix.
    pub prefix: Prefix,
    /// Its attributes as received.
    pub attributes: PathAttributes,
}

impl ReceivedRoute {
    /// The next hop for the prefix's family: NEXT_HOP for IPv4, the
    /// global MP_REACH next hop for IPv6; `None` when it is missing or
    /// unusable (unspecified, multicast).
    pub fn next_hop(&self) -> Option<IpAddr> {
        let hop = if self.prefix.is_ipv4() {
            IpAddr::V4(self.attributes.next_hop?)
        } else {
            IpAddr::V6(self.attributes.mp_next_hop?.global)
        };
        (!hop.is_unspecified() && !hop.is_multicast()).then_some(hop)
    }
}

/// The import policy the decision applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionPolicy {
    /// Our AS: a path that holds it is a loop and is ignored.
    pub local_as: u32,
    /// RFC 8326 4.2: GRACEFUL_SHUTDOWN lowers LOCAL_PREF to 0.
    pub graceful_shutdown: bool,
}

/// What the decision compares, best first in each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rank {
    local_pref: u32,
    as_path_len: usize,
    origin: u8,
    /// The AS the path came from (MED is compared only within one).
    neighbour_as: Option<u32>,
    med: u32,
    ebgp: bool,
}

fn rank(route: &ReceivedRoute, policy: &DecisionPolicy) -> Option<Rank> {
    let a = &route.attributes;
    let path = a.as_path.as_deref().unwrap_or(&[]);
    let loops = path.iter().any(|s| match s {
        AsSegment::Sequence(v) | AsSegment::Set(v) => v.contains(&policy.local_as),
    });
    if loops || route.next_hop().is_none() {
        return None;
    }
    let shut = policy.graceful_shutdown && a.communities.contains(&Community::GRACEFUL_SHUTDOWN);
    let local_pref = match (shut, route.ibgp) {
        (true, _) => 0,
        (false, true) => a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
        // RFC 4271 5.1.5: LOCAL_PREF from an external peer is ignored.
        (false, false) => DEFAULT_LOCAL_PREF,
    };
    Some(Rank {
        local_pref,
        // RFC 4271 9.1.2.2 a: an AS_SET counts as one.
        as_path_len: path
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
            })
            .sum(),
        origin: match a.origin.unwrap_or(Origin::Incomplete) {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        },
        neighbour_as: path.iter().find_map(|s| match s {
            AsSegment::Sequence(v) => v.first().copied(),
            AsSegment::Set(_) => None,
        }),
        // RFC 4271 9.1.2.2 c: a missing MED is the lowest value.
        med: a.med.unwrap_or(0),
        ebgp: !route.ibgp,
    })
}

/// Keeps the candidates whose `key` is the best (lowest) among them.
fn keep_best<K: Ord + Copy>(c: &mut Vec<(Rank, IpAddr)>, key: impl Fn(&Rank) -> K) {
    if let Some(best) = c.iter().map(|(r, _)| key(r)).min() {
        c.retain(|(r, _)| key(r) == best);
    }
}

/// The next hops of one prefix's best routes among `routes` (all of the
/// same prefix), sorted and without duplicates; empty when no route is
/// usable. RFC 4271 9.1.2.2 steps a-d, then every route left is an
/// equal-cost path (no IGP cost and no router-id tie-break: a multipath
/// router keeps them all).
pub fn multipath(routes: &[&ReceivedRoute], policy: &DecisionPolicy) -> Vec<IpAddr> {
    let mut c: Vec<(Rank, IpAddr)> = routes
        .iter()
        .filter_map(|r| Some((rank(r, policy)?, r.next_hop()?)))
        .collect();
    keep_best(&mut c, |r| std::cmp::Reverse(r.local_pref));
    keep_best(&mut c, |r| r.as_path_len);
    keep_best(&mut c, |r| r.origin);
    // MED: a route loses to one with a lower MED from the same AS.
    let beaten: Vec<bool> = c
        .iter()
        .map(|(a, _)| {
            c.iter()
                .any(|(b, _)| a.neighbour_as == b.neighbour_as && b.med < a.med)
        })
        .collect();
    let mut i = 0;
    c.retain(|_| {
        i += 1;
        !beaten[i - 1]
    });
    keep_best(&mut c, |r| !r.ebgp);
    let mut hops: Vec<IpAddr> = c.into_iter().map(|(_, h)| h).collect();
    hops.sort();
    hops.dedup();
    hops
}

/// [`multipath`] for every prefix in `routes`: prefix -> next hops, only
/// prefixes with at least one usable route.
pub fn best_paths(
    routes: &[ReceivedRoute],
    policy: &DecisionPolicy,
) -> BTreeMap<Prefix, Vec<IpAddr>> {
    let mut by_prefix: BTreeMap<Prefix, Vec<&ReceivedRoute>> = BTreeMap::new();
    for r in routes {
        by_prefix.entry(r.prefix).or_default().push(r);
    }
    by_prefix
        .into_iter()
        .filter_map(|(p, rs)| {
            let hops = multipath(&rs, policy);
            (!hops.is_empty()).then_some((p, hops))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MpNextHop;
    use proptest::prelude::*;

    const POLICY: DecisionPolicy = DecisionPolicy {
        local_as: 65000,
        graceful_shutdown: true,
    };

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// An eBGP route from `peer` (AS 65001) with next hop `peer`.
    fn route(peer: &str, prefix: &str) -> ReceivedRoute {
        let peer = ip(peer);
        let mut attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(vec![AsSegment::Sequence(vec![65001])]),
            ..Default::default()
        };
        match peer {
            IpAddr::V4(a) => attributes.next_hop = Some(a),
            IpAddr::V6(a) => {
                attributes.mp_next_hop = Some(MpNextHop {
                    global: a,
                    link_local: None,
                })
            }
        }
        ReceivedRoute {
            peer,
            ibgp: false,
            prefix: p(prefix),
            attributes,
        }
    }

    fn hops(routes: &[ReceivedRoute]) -> Vec<IpAddr> {
        let refs: Vec<&ReceivedRoute> = routes.iter().collect();
        multipath(&refs, &POLICY)
    }

    const VIP: &str = "198.18.10.10/32";

    #[test]
    fn equal_routes_from_two_gateways_are_both_kept() {
        let a = route("198.18.1.2", VIP);
        let b = route("198.18.2.2", VIP);
        assert_eq!(
            hops(&[b.clone(), a.clone()]),
            [ip("198.18.1.2"), ip("198.18.2.2")]
        );
        // The same next hop twice is one path.
        assert_eq!(hops(&[a.clone(), a]), [ip("198.18.1.2")]);
    }

    #[test]
    fn graceful_shutdown_moves_traffic_to_the_other_gateway() {
        let mut a = route("198.18.1.2", VIP);
        a.attributes.communities = vec![Community::GRACEFUL_SHUTDOWN];
        let b = route("198.18.2.2", VIP);
        assert_eq!(hops(&[a.clone(), b.clone()]), [ip("198.18.2.2")]);
        // Both draining: both stay (equal at LOCAL_PREF 0).
        let mut b2 = b.clone();
        b2.attributes.communities = vec![Community::GRACEFUL_SHUTDOWN];
        assert_eq!(hops(&[a.clone(), b2]).len(), 2);
        // Without the import policy the community means nothing.
        let ignore = DecisionPolicy {
            graceful_shutdown: false,
            ..POLICY
        };
        assert_eq!(multipath(&[&a, &b], &ignore).len(), 2);
    }

    #[test]
    fn preference_order_local_pref_path_origin_med_ebgp() {
        let base = route("198.18.1.2", VIP);
        let other = |f: &dyn Fn(&mut ReceivedRoute)| {
            let mut r = route("198.18.2.2", VIP);
            f(&mut r);
            r
        };
        let want_base = [ip("198.18.1.2")];
        // Longer AS path (a prepend) loses.
        let prepended =
            other(&|r| r.attributes.as_path = Some(vec![AsSegment::Sequence(vec![65001, 65001])]));
        assert_eq!(hops(&[base.clone(), prepended]), want_base);
        // An AS_SET counts as one AS.
        let set = other(&|r| {
            r.attributes.as_path = Some(vec![AsSegment::Set(vec![65001, 65002, 65003])])
        });
        assert_eq!(hops(&[base.clone(), set]).len(), 2);
        // INCOMPLETE loses to IGP.
        let incomplete = other(&|r| r.attributes.origin = Some(Origin::Incomplete));
        assert_eq!(hops(&[base.clone(), incomplete]), want_base);
        // Higher MED from the same AS loses; from another AS it is not compared.
        let med = other(&|r| r.attributes.med = Some(10));
        assert_eq!(hops(&[base.clone(), med]), want_base);
        let med_other_as = other(&|r| {
            r.attributes.med = Some(10);
            r.attributes.as_path = Some(vec![AsSegment::Sequence(vec![65002])]);
        });
        assert_eq!(hops(&[base.clone(), med_other_as]).len(), 2);
        // eBGP beats iBGP; iBGP LOCAL_PREF counts, eBGP's is ignored.
        let ibgp = other(&|r| {
            r.ibgp = true;
            r.attributes.as_path = Some(vec![]);
        });
        let ibgp_long = ReceivedRoute {
            ibgp: true,
            ..base.clone()
        };
        assert_eq!(hops(&[ibgp_long, other(&|_| {})]), [ip("198.18.2.2")]);
        let mut high = ibgp.clone();
        high.attributes.local_pref = Some(200);
        assert_eq!(hops(&[base.clone(), high]), [ip("198.18.2.2")]);
        let mut ebgp_lp = other(&|_| {});
        ebgp_lp.attributes.local_pref = Some(500);
        assert_eq!(hops(&[base.clone(), ebgp_lp]).len(), 2);
    }

    #[test]
    fn loops_and_missing_next_hops_are_unusable() {
        let mut looped = route("198.18.1.2", VIP);
        looped.attributes.as_path = Some(vec![AsSegment::Sequence(vec![65001, 65000])]);
        assert!(hops(&[looped]).is_empty());
        let mut no_hop = route("198.18.1.2", VIP);
        no_hop.attributes.next_hop = None;
        assert!(hops(&[no_hop]).is_empty());
        // An IPv6 prefix takes the MP_REACH next hop, never NEXT_HOP.
        let mut v6 = route("2001:db8:1::2", "2001:db8:10::10/128");
        v6.attributes.next_hop = Some("198.18.1.2".parse().expect("addr"));
        assert_eq!(hops(&[v6.clone()]), [ip("2001:db8:1::2")]);
        v6.attributes.mp_next_hop = None;
        assert!(hops(&[v6]).is_empty());
    }

    #[test]
    fn best_paths_groups_by_prefix() {
        let routes = vec![
            route("198.18.1.2", VIP),
            route("198.18.2.2", VIP),
            route("198.18.1.2", "198.18.11.0/24"),
            route("2001:db8:1::2", "2001:db8:10::10/128"),
        ];
        let best = best_paths(&routes, &POLICY);
        assert_eq!(best.len(), 3);
        assert_eq!(best[&p(VIP)].len(), 2);
        assert_eq!(best[&p("198.18.11.0/24")], [ip("198.18.1.2")]);
    }

    fn update(announced: &[&str], withdrawn: &[&str], med: Option<u32>) -> UpdateRepr {
        UpdateRepr {
            announced: announced.iter().map(|s| p(s)).collect(),
            withdrawn: withdrawn.iter().map(|s| p(s)).collect(),
            attributes: PathAttributes {
                med,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn adj_rib_in_applies_updates_in_order() {
        let mut rib = AdjRibIn::new();
        assert!(rib.apply(&update(&[VIP, "198.18.11.0/24"], &[], None)));
        assert!(!rib.apply(&update(&[VIP], &[], None)), "same attributes");
        assert!(rib.apply(&update(&[VIP], &[], Some(5))), "new attributes");
        assert_eq!(rib.routes()[&p(VIP)].med, Some(5));
        assert!(rib.apply(&update(&[], &["198.18.11.0/24"], None)));
        assert!(!rib.apply(&update(&[], &["198.18.11.0/24"], None)));
        // RFC 7606 treat-as-withdraw removes what the UPDATE names.
        let mut bad = update(&[VIP], &[], None);
        bad.treat_as_withdraw = Some(crate::wire::MalformedAttribute {
            type_code: 8,
            reason: "test",
        });
        assert!(rib.apply(&bad));
        assert!(rib.is_empty());
        // End-of-RIB changes nothing.
        assert!(!rib.apply(&UpdateRepr::default()));
    }

    fn arb_route() -> impl Strategy<Value = ReceivedRoute> {
        (
            0u8..4,
            proptest::option::of(0u32..3),
            1usize..3,
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            0u32..2,
        )
            .prop_map(|(gw, med, len, origin, ibgp, shut, nas)| {
                let mut r = route(&format!("198.18.{gw}.2"), VIP);
                r.ibgp = ibgp;
                r.attributes.med = med;
                r.attributes.as_path = Some(vec![AsSegment::Sequence(vec![65001 + nas; len])]);
                r.attributes.origin = Some(match origin {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    _ => Origin::Incomplete,
                });
                if shut {
                    r.attributes.communities = vec![Community::GRACEFUL_SHUTDOWN];
                }
                r
            })
    }

    proptest! {
        #[test]
        fn multipath_is_a_nonempty_subset_and_ignores_order(
            routes in proptest::collection::vec(arb_route(), 1..6),
            rotate in 0usize..6,
        ) {
            let got = hops(&routes);
            prop_assert!(!got.is_empty());
            let offered: Vec<IpAddr> = routes.iter().filter_map(ReceivedRoute::next_hop).collect();
            prop_assert!(got.iter().all(|h| offered.contains(h)));
            let mut turned = routes.clone();
            turned.rotate_left(rotate % routes.len());
            prop_assert_eq!(hops(&turned), got.clone());
            // Adding a copy of a chosen route (another peer, same next
            // hop and attributes) never changes the choice.
            let chosen = routes.iter().find(|r| r.next_hop().is_some_and(|h| got.contains(&h)));
            if let Some(c) = chosen {
                let mut more = routes.clone();
                more.push(c.clone());
                prop_assert_eq!(hops(&more), got);
            }
        }
    }
}
