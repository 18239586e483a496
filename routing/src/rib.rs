//! Adj-RIB-Out: what the application wants announced, and per peer what was
//! sent, with the UPDATE/withdraw diff between the two. Sans-IO.
//!
//! Owns:
//! - [`DesiredRoutes`]: the one table the application edits (`announce`,
//!   `withdraw`, `set_drain`). It is shared by all peers.
//! - [`AdjRibOut`]: one per peer. It resolves each desired route for that
//!   peer (next-hop self, drain) and remembers what the peer was sent, so a
//!   change in the desired table becomes the smallest set of UPDATEs, and a
//!   session that reaches Established gets the full table and one
//!   End-of-RIB per family (RFC 4724).
//!
//! Next-hop self ([`NextHop::Local`]) resolves to the session's own
//! addresses, [`NextHopSelf`]: the IPv4 next hop of IPv4 NLRI is the local
//! address of an IPv4 session; the IPv6 next hop of IPv6 NLRI (MP_REACH,
//! RFC 4760) is the local address of an IPv6 session. Across families (IPv6
//! NLRI on an IPv4 session or the reverse) the next hop must be configured
//! per peer (`next_hop_ipv6` / `next_hop_ipv4` in the speaker's peer
//! configuration); without one the route is not sent to that peer, since
//! any guess (an IPv4-mapped address, another interface's address) would
//! give the router a next hop it may not reach. Skipped routes are counted
//! ([`AdjRibOut::unresolved`]).
//!
//! Drain (RFC 8326): while draining every route carries GRACEFUL_SHUTDOWN
//! (65535:0) and optionally extra AS-path prepends and a MED
//! ([`DrainPolicy`]); the peer then prefers other paths before we withdraw.
//!
//! Must not touch: sockets, clocks, session timers; the session's wire
//! encoding (it calls [`Session::announce`] and friends only).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::session::{Announcement, SendError, Session};
use crate::wire::{Community, Family, LargeCommunity, Prefix};

/// The next hop of an announced route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// Next-hop self: the session's local address of the prefix's family.
    #[default]
    Local,
    /// This address (of the prefix's family).
    Address(IpAddr),
}

/// What the application attaches to one announced prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttrs {
    /// Next hop; [`NextHop::Local`] by default.
    pub next_hop: NextHop,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF, sent on iBGP sessions only (default 100 there).
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997).
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITIES (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// Extra copies of our AS in front of the AS_PATH.
    pub prepend: u8,
}

/// What a drain adds to every route besides GRACEFUL_SHUTDOWN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Extra AS-path prepends while draining.
    pub extra_prepend: u8,
    /// MED while draining (replaces the route's own MED).
    pub med: Option<u32>,
}

/// What one peer adds to every route it is sent: its own MED, local
/// preference, communities and AS-path prepends (set per peer in the
/// application's configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerExport {
    /// MED when the route (or a drain) sets none.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP) when the route sets none.
    pub local_pref: Option<u32>,
    /// Added in front of the route's communities.
    pub communities: Vec<Community>,
    /// Added in front of the route's large communities.
    pub large_communities: Vec<LargeCommunity>,
    /// Added to the route's prepends (eBGP only; iBGP never prepends).
    pub prepend: u8,
}

impl PeerExport {
    /// `attrs` with this peer's attributes: the route's own MED and local
    /// preference win, communities add up without duplicates, prepends add.
    pub fn apply(&self, attrs: &RouteAttrs) -> RouteAttrs {
        let mut communities = self.communities.clone();
        for c in &attrs.communities {
            if !communities.contains(c) {
                communities.push(*c);
            }
        }
        let mut large_communities = self.large_communities.clone();
        for c in &attrs.large_communities {
            if !large_communities.contains(c) {
                large_communities.push(*c);
            }
        }
        RouteAttrs {
            next_hop: attrs.next_hop,
            med: attrs.med.or(self.med),
            local_pref: attrs.local_pref.or(self.local_pref),
            communities,
            large_communities,
            prepend: attrs.prepend.saturating_add(self.prepend),
        }
    }
}

/// The routes the application wants announced to every peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredRoutes {
    routes: BTreeMap<Prefix, RouteAttrs>,
    draining: bool,
    drain_policy: DrainPolicy,
}

impl DesiredRoutes {
    /// An empty table, not draining, with this drain policy.
    pub fn new(drain_policy: DrainPolicy) -> Self {
        DesiredRoutes {
            drain_policy,
            ..Default::default()
        }
    }

    /// Announce `prefix` (or replace its attributes).
    pub fn announce(&mut self, prefix: Prefix, attrs: RouteAttrs) {
        self.routes.insert(prefix, attrs);
    }

    /// Stop announcing `prefix`; false if it was not announced.
    pub fn withdraw(&mut self, prefix: &Prefix) -> bool {
        self.routes.remove(prefix).is_some()
    }

    /// Start or end the drain (RFC 8326) of every route.
    pub fn set_drain(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether routes are being drained.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The routes as the application set them (drain not applied).
    pub fn routes(&self) -> impl Iterator<Item = (&Prefix, &RouteAttrs)> {
        self.routes.iter()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when nothing is announced.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `attrs` as sent: with the drain's community, prepend and MED while
    /// draining.
    fn effective(&self, attrs: &RouteAttrs) -> RouteAttrs {
        let mut out = attrs.clone();
        if self.draining {
            if !out.communities.contains(&Community::GRACEFUL_SHUTDOWN) {
                out.communities.push(Community::GRACEFUL_SHUTDOWN);
            }
            out.prepend = out.prepend.saturating_add(self.drain_policy.extra_prepend);
            out.med = self.drain_policy.med.or(out.med);
        }
        out
    }
}

/// The addresses [`NextHop::Local`] resolves to on one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHopSelf {
    /// Next hop for IPv4 NLRI.
    pub ipv4: Option<Ipv4Addr>,
    /// Next hop for IPv6 NLRI.
    pub ipv6: Option<Ipv6Addr>,
}

impl NextHopSelf {
    /// From the session's local address, with configured next hops for the
    /// other family (a configured one also overrides the session's own).
    pub fn from_session(local: IpAddr, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Self {
        match local.to_canonical() {
            IpAddr::V4(a) => NextHopSelf {
                ipv4: ipv4.or(Some(a)),
                ipv6,
            },
            IpAddr::V6(a) => NextHopSelf {
                ipv4,
                ipv6: ipv6.or(Some(a)),
            },
        }
    }
}

/// The UPDATEs that bring a peer from what it was sent to what is desired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RibDiff {
    /// Prefixes to withdraw.
    pub withdraw: Vec<Prefix>,
    /// Prefixes to announce, grouped by identical (resolved) attributes.
    pub announce: Vec<(RouteAttrs, Vec<Prefix>)>,
}

impl RibDiff {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty() && self.announce.is_empty()
    }
}

/// One peer's Adj-RIB-Out: what it was sent, with resolved next hops.
#[derive(Clone, Debug, Default)]
pub struct AdjRibOut {
    export: PeerExport,
    next_hop_self: NextHopSelf,
    sent: BTreeMap<Prefix, RouteAttrs>,
    unresolved: usize,
}

impl AdjRibOut {
    /// An empty Adj-RIB-Out.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty Adj-RIB-Out of a peer that adds `export` to every route.
    pub fn with_export(export: PeerExport) -> Self {
        AdjRibOut {
            export,
            ..Self::default()
        }
    }

    /// What was sent and not withdrawn, with next hops resolved.
    pub fn sent(&self) -> &BTreeMap<Prefix, RouteAttrs> {
        &self.sent
    }

    /// Desired routes left out at the last sync because no next hop of
    /// their family was known or the peer did not negotiate the family.
    pub fn unresolved(&self) -> usize {
        self.unresolved
    }

    /// The session's connection is gone: nothing is announced any more.
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// The routes this peer should have, resolved and drained; the number
    /// of routes with no next hop for this peer.
    pub fn target(&self, desired: &DesiredRoutes) -> (BTreeMap<Prefix, RouteAttrs>, usize) {
        let mut unresolved = 0;
        let mut out = BTreeMap::new();
        for (prefix, attrs) in desired.routes() {
            match self.resolve(prefix, &self.export.apply(&desired.effective(attrs))) {
                Some(a) => {
                    out.insert(*prefix, a);
                }
                None => unresolved += 1,
            }
        }
        (out, unresolved)
    }

    /// The UPDATEs from what was sent to `target`.
    pub fn diff(&self, target: &BTreeMap<Prefix, RouteAttrs>) -> RibDiff {
        let withdraw = self
            .sent
            .keys()
            .filter(|p| !target.contains_key(p))
            .copied()
            .collect();
        let mut groups: BTreeMap<&RouteAttrs, Vec<Prefix>> = BTreeMap::new();
        for (prefix, attrs) in target {
            if self.sent.get(prefix) != Some(attrs) {
                groups.entry(attrs).or_default().push(*prefix);
            }
        }
        let announce = groups.into_iter().map(|(a, p)| (a.clone(), p)).collect();
        RibDiff { withdraw, announce }
    }

    /// The session reached Established on a connection whose local side
    /// resolves next-hop self to `next_hop_self`: send the whole table and
    /// End-of-RIB for each negotiated family.
    pub fn established(
        &mut self,
        next_hop_self: NextHopSelf,
        desired: &DesiredRoutes,
        session: &mut Session,
    ) -> Result<(), SendError> {
        self.next_hop_self = next_hop_self;
        self.sent.clear();
        self.sync(desired, session)?;
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            skip_unnegotiated(session.send_end_of_rib(family))?;
        }
        Ok(())
    }

    /// Send what changed since the last sync (Established sessions only;
    /// otherwise nothing is sent and nothing recorded).
    pub fn sync(
        &mut self,
        desired: &DesiredRoutes,
        session: &mut Session,
    ) -> Result<(), SendError> {
        let (target, unresolved) = self.target(desired);
        let diff = self.diff(&target);
        let skipped = self.send(diff, session)?;
        self.unresolved = unresolved + skipped;
        Ok(())
    }

    /// The peer asked for `family` again (RFC 2918): resend what it has,
    /// then End-of-RIB.
    pub fn refresh(&mut self, family: Family, session: &mut Session) -> Result<(), SendError> {
        let mut groups: BTreeMap<&RouteAttrs, Vec<Prefix>> = BTreeMap::new();
        for (prefix, attrs) in &self.sent {
            if family_of(prefix) == family {
                groups.entry(attrs).or_default().push(*prefix);
            }
        }
        for (attrs, prefixes) in groups {
            if let Some(ann) = announcement(attrs) {
                session.announce(&prefixes, &ann)?;
            }
        }
        skip_unnegotiated(session.send_end_of_rib(family))
    }

    /// Queue `diff` on `session`, recording what was queued; the number of
    /// prefixes left out because the peer lacks their family.
    fn send(&mut self, diff: RibDiff, session: &mut Session) -> Result<usize, SendError> {
        if !diff.withdraw.is_empty() {
            session.withdraw(&diff.withdraw)?;
            for p in &diff.withdraw {
                self.sent.remove(p);
            }
        }
        let mut skipped = 0;
        for (attrs, prefixes) in diff.announce {
            let (Some(ann), Some(first)) = (announcement(&attrs), prefixes.first()) else {
                continue;
            };
            let family = family_of(first);
            match session.announce(&prefixes, &ann) {
                Ok(()) => {
                    for p in prefixes {
                        self.sent.insert(p, attrs.clone());
                    }
                }
                Err(SendError::FamilyNotNegotiated(f)) if f == family => skipped += prefixes.len(),
                Err(e) => return Err(e),
            }
        }
        Ok(skipped)
    }

    /// `attrs` for `prefix` with next-hop self resolved; None without a
    /// next hop of the prefix's family.
    fn resolve(&self, prefix: &Prefix, attrs: &RouteAttrs) -> Option<RouteAttrs> {
        let next_hop = match (attrs.next_hop, prefix.is_ipv4()) {
            (NextHop::Address(a @ IpAddr::V4(_)), true) => a,
            (NextHop::Address(a @ IpAddr::V6(_)), false) => a,
            (NextHop::Address(_), _) => return None,
            (NextHop::Local, true) => IpAddr::V4(self.next_hop_self.ipv4?),
            (NextHop::Local, false) => IpAddr::V6(self.next_hop_self.ipv6?),
        };
        Some(RouteAttrs {
            next_hop: NextHop::Address(next_hop),
            ..attrs.clone()
        })
    }
}

/// The session's form of resolved attributes (None for an unresolved
/// next hop, which `resolve` never returns).
fn announcement(attrs: &RouteAttrs) -> Option<Announcement> {
    let NextHop::Address(next_hop) = attrs.next_hop else {
        return None;
    };
    Some(Announcement {
        next_hop,
        med: attrs.med,
        local_pref: attrs.local_pref,
        communities: attrs.communities.clone(),
        large_communities: attrs.large_communities.clone(),
        prepend: attrs.prepend,
    })
}

/// Grouped prefixes share attributes, and attributes carry a next hop of
/// one family, so each group is of one family.
fn family_of(p: &Prefix) -> Family {
    if p.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

fn skip_unnegotiated(r: Result<(), SendError>) -> Result<(), SendError> {
    match r {
        Err(SendError::FamilyNotNegotiated(_)) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Event, SessionConfig, SessionEvent, State, Transmit};
    use crate::wire::UpdateRepr;
    use std::time::Instant;

    const A_AS: u32 = 4_200_000_001;
    const B_AS: u32 = 65002;

    /// Our speaker's session (a) and a peer (b) on one virtual connection.
    struct Pair {
        now: Instant,
        a: Session,
        b: Session,
        /// UPDATEs b received, in order.
        b_got: Vec<UpdateRepr>,
    }

    impl Pair {
        fn new(families_b: Vec<Family>) -> Self {
            let a = SessionConfig::new(A_AS, B_AS, "198.18.0.1".parse().expect("addr"));
            let mut b = SessionConfig::new(B_AS, A_AS, "198.18.0.2".parse().expect("addr"));
            b.passive = true;
            b.families = families_b;
            let mut pair = Pair {
                now: Instant::now(),
                a: Session::new(a),
                b: Session::new(b),
                b_got: vec![],
            };
            pair.b.handle_event(pair.now, Event::ManualStart);
            pair.a.handle_event(pair.now, Event::ManualStart);
            pair.drive();
            assert_eq!(pair.a.state(), State::Established);
            pair
        }

        fn drive(&mut self) {
            for _ in 0..1000 {
                let mut moved = false;
                while let Some(t) = self.a.poll_transmit() {
                    moved = true;
                    match t {
                        Transmit::Connect => {
                            self.b.handle_event(self.now, Event::TcpConnected);
                            self.a.handle_event(self.now, Event::TcpConnected);
                        }
                        Transmit::Bytes(bytes) => {
                            self.b.handle_event(self.now, Event::BytesReceived(&bytes))
                        }
                        Transmit::Close => {}
                    }
                }
                while let Some(t) = self.b.poll_transmit() {
                    moved = true;
                    if let Transmit::Bytes(bytes) = t {
                        self.a.handle_event(self.now, Event::BytesReceived(&bytes));
                    }
                }
                while self.a.poll_event().is_some() {}
                while let Some(e) = self.b.poll_event() {
                    if let SessionEvent::RouteUpdate(u) = e {
                        self.b_got.push(u);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("pair did not settle");
        }

        fn take(&mut self) -> Vec<UpdateRepr> {
            self.drive();
            std::mem::take(&mut self.b_got)
        }
    }

    fn prefix(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn local() -> NextHopSelf {
        NextHopSelf::from_session(
            "198.18.0.1".parse().expect("addr"),
            None,
            Some("2001:db8::1".parse().expect("addr")),
        )
    }

    #[test]
    fn established_sends_full_table_then_end_of_rib_per_family() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        let mut desired = DesiredRoutes::default();
        desired.announce(prefix("198.18.10.1/32"), RouteAttrs::default());
        desired.announce(prefix("198.18.10.2/32"), RouteAttrs::default());
        desired.announce(prefix("2001:db8:10::1/128"), RouteAttrs::default());
        let mut rib = AdjRibOut::new();
        rib.established(local(), &desired, &mut pair.a)
            .expect("established");
        let got = pair.take();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0].announced,
            vec![prefix("198.18.10.1/32"), prefix("198.18.10.2/32")]
        );
        assert_eq!(got[0].attributes.next_hop, "198.18.0.1".parse().ok());
        assert_eq!(got[1].announced, vec![prefix("2001:db8:10::1/128")]);
        assert_eq!(
            got[1].attributes.mp_next_hop.map(|n| n.global),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(got[2].end_of_rib, Some(Family::Ipv4Unicast));
        assert_eq!(got[3].end_of_rib, Some(Family::Ipv6Unicast));
        assert_eq!(rib.sent().len(), 3);
    }

    #[test]
    fn changes_become_the_smallest_diff() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        let mut desired = DesiredRoutes::default();
        desired.announce(prefix("198.18.10.1/32"), RouteAttrs::default());
        desired.announce(prefix("198.18.10.2/32"), RouteAttrs::default());
        let mut rib = AdjRibOut::new();
        rib.established(local(), &desired, &mut pair.a)
            .expect("established");
        pair.take();
        // Nothing changed: nothing sent.
        rib.sync(&desired, &mut pair.a).expect("sync");
        assert!(pair.take().is_empty());
        // One withdrawn, one changed, one new.
        desired.withdraw(&prefix("198.18.10.1/32"));
        let med = RouteAttrs {
            med: Some(50),
            ..Default::default()
        };
        desired.announce(prefix("198.18.10.2/32"), med.clone());
        desired.announce(prefix("198.18.10.3/32"), med);
        rib.sync(&desired, &mut pair.a).expect("sync");
        let got = pair.take();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].withdrawn, vec![prefix("198.18.10.1/32")]);
        assert_eq!(
            got[1].announced,
            vec![prefix("198.18.10.2/32"), prefix("198.18.10.3/32")]
        );
        assert_eq!(got[1].attributes.med, Some(50));
        assert_eq!(
            rib.sent().keys().copied().collect::<Vec<_>>(),
            vec![prefix("198.18.10.2/32"), prefix("198.18.10.3/32")]
        );
    }

    #[test]
    fn drain_adds_graceful_shutdown_prepend_and_med_and_undrain_removes_them() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast]);
        let policy = DrainPolicy {
            extra_prepend: 2,
            med: Some(1000),
        };
        let mut desired = DesiredRoutes::new(policy);
        let attrs = RouteAttrs {
            communities: vec![Community::new(65000, 7)],
            med: Some(10),
            ..Default::default()
        };
        desired.announce(prefix("198.18.10.1/32"), attrs);
        let mut rib = AdjRibOut::new();
        rib.established(local(), &desired, &mut pair.a)
            .expect("established");
        pair.take();
        desired.set_drain(true);
        rib.sync(&desired, &mut pair.a).expect("sync");
        let got = pair.take();
        assert_eq!(got.len(), 1);
        let a = &got[0].attributes;
        assert_eq!(
            a.communities,
            vec![Community::new(65000, 7), Community::GRACEFUL_SHUTDOWN]
        );
        assert_eq!(a.med, Some(1000));
        assert_eq!(
            a.as_path,
            Some(vec![crate::wire::AsSegment::Sequence(vec![A_AS; 3])])
        );
        desired.set_drain(false);
        rib.sync(&desired, &mut pair.a).expect("sync");
        let got = pair.take();
        assert_eq!(
            got[0].attributes.communities,
            vec![Community::new(65000, 7)]
        );
        assert_eq!(got[0].attributes.med, Some(10));
    }

    #[test]
    fn each_peer_adds_its_own_attributes() {
        let mut desired = DesiredRoutes::new(DrainPolicy {
            extra_prepend: 1,
            med: Some(900),
        });
        let mut own = RouteAttrs::default();
        own.communities.push(Community::new(64512, 1));
        desired.announce(prefix("198.18.10.10/32"), own);
        let with_med = RouteAttrs {
            med: Some(5),
            ..RouteAttrs::default()
        };
        desired.announce(prefix("198.18.10.11/32"), with_med);
        let export = PeerExport {
            med: Some(50),
            local_pref: Some(200),
            communities: vec![Community::new(64512, 100), Community::new(64512, 1)],
            large_communities: vec![],
            prepend: 2,
        };
        let mut a = AdjRibOut::with_export(export);
        a.next_hop_self = local();
        let mut b = AdjRibOut::new();
        b.next_hop_self = local();
        let (ta, _) = a.target(&desired);
        let (tb, _) = b.target(&desired);
        let r = &ta[&prefix("198.18.10.10/32")];
        assert_eq!(r.med, Some(50), "the peer's MED where the route has none");
        assert_eq!(r.local_pref, Some(200));
        assert_eq!(
            r.communities,
            [Community::new(64512, 100), Community::new(64512, 1)],
            "peer's first, no duplicates"
        );
        assert_eq!(r.prepend, 2);
        assert_eq!(
            ta[&prefix("198.18.10.11/32")].med,
            Some(5),
            "the route's MED wins"
        );
        let plain = &tb[&prefix("198.18.10.10/32")];
        assert_eq!(
            (plain.med, plain.prepend),
            (None, 0),
            "another peer: nothing added"
        );
        desired.set_drain(true);
        let (ta, _) = a.target(&desired);
        let r = &ta[&prefix("198.18.10.10/32")];
        assert_eq!(r.med, Some(900), "the drain's MED wins over the peer's");
        assert_eq!(r.prepend, 3, "drain and peer prepends add");
        assert!(r.communities.contains(&Community::GRACEFUL_SHUTDOWN));
    }

    #[test]
    fn next_hop_self_needs_an_address_of_the_family() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        let mut desired = DesiredRoutes::default();
        desired.announce(prefix("198.18.10.1/32"), RouteAttrs::default());
        desired.announce(prefix("2001:db8:10::1/128"), RouteAttrs::default());
        // An explicit next hop of the wrong family is never sent.
        let wrong = RouteAttrs {
            next_hop: NextHop::Address("2001:db8::9".parse().expect("addr")),
            ..Default::default()
        };
        desired.announce(prefix("198.18.10.9/32"), wrong);
        let mut rib = AdjRibOut::new();
        // IPv4 session, no configured IPv6 next hop: the /128 stays back.
        let v4_only = NextHopSelf::from_session("198.18.0.1".parse().expect("addr"), None, None);
        rib.established(v4_only, &desired, &mut pair.a)
            .expect("established");
        let got = pair.take();
        assert_eq!(got[0].announced, vec![prefix("198.18.10.1/32")]);
        assert_eq!(rib.unresolved(), 2);
        assert_eq!(rib.sent().len(), 1);
        // IPv6 session: the IPv6 address is next-hop self for the /128.
        let v6 = NextHopSelf::from_session("2001:db8::5".parse().expect("addr"), None, None);
        assert_eq!(v6.ipv6, "2001:db8::5".parse().ok());
        assert_eq!(v6.ipv4, None);
    }

    #[test]
    fn unnegotiated_family_is_skipped_not_fatal() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast]);
        let mut desired = DesiredRoutes::default();
        desired.announce(prefix("198.18.10.1/32"), RouteAttrs::default());
        desired.announce(prefix("2001:db8:10::1/128"), RouteAttrs::default());
        let mut rib = AdjRibOut::new();
        rib.established(local(), &desired, &mut pair.a)
            .expect("established");
        let got = pair.take();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].end_of_rib, Some(Family::Ipv4Unicast));
        assert_eq!(rib.unresolved(), 1);
    }

    #[test]
    fn refresh_resends_the_family_and_reset_forgets() {
        let mut pair = Pair::new(vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        let mut desired = DesiredRoutes::default();
        desired.announce(prefix("198.18.10.1/32"), RouteAttrs::default());
        desired.announce(prefix("2001:db8:10::1/128"), RouteAttrs::default());
        let mut rib = AdjRibOut::new();
        rib.established(local(), &desired, &mut pair.a)
            .expect("established");
        pair.take();
        rib.refresh(Family::Ipv6Unicast, &mut pair.a)
            .expect("refresh");
        let got = pair.take();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].announced, vec![prefix("2001:db8:10::1/128")]);
        assert_eq!(got[1].end_of_rib, Some(Family::Ipv6Unicast));
        rib.reset();
        assert!(rib.sent().is_empty());
    }
}
