//! Backend schedulers: which backend a new flow of a service goes to.
//!
//! Owns the scheduling algorithms (rr, wrr, lc, sh and weighted Maglev, the
//! default) and nothing else: it does not know addresses of backends, the
//! connection table, health checking or snapshots. It must not read clocks,
//! log, or allocate while picking.
//!
//! The work is split in two parts:
//!
//! - [`SchedTable`]: immutable, built by the control plane from the backend
//!   list of one service and shared read-only by every worker inside a
//!   configuration snapshot (`Send + Sync`, no interior mutability).
//! - [`SchedState`]: a few words of per-worker, per-service cursor state for
//!   rr and wrr. Never shared, no atomics. A state stays valid when the
//!   worker starts using a newer table (cursors are clamped on use), so a
//!   worker can keep one state per service id across snapshot swaps.
//!
//! Backends are given as a slice of [`SchedBackend`] in a stable order;
//! picks return an index into that slice. A backend takes new flows only if
//! it is `usable` and has a weight above zero (it is then *eligible*).
//!
//! Hash-based schedulers (sh, Maglev) must agree between all nodes behind
//! ECMP, so their inputs are stable hashes (never `std`'s keyed hasher) and
//! each backend carries a [`SchedBackend::key`] derived from its identity
//! (see [`backend_key`], [`endpoint_key`]), not from its position or a
//! node-local id.

use std::fmt;
use std::str::FromStr;

use crate::flow::{Addr16, FlowTuple};

mod lc;
pub mod maglev;
mod rr;
mod sh;

pub use maglev::MaglevTable;

/// Default Maglev lookup table size: the prime the Maglev paper uses.
pub const DEFAULT_MAGLEV_SIZE: u32 = 65_537;

/// Most backends one service may have (indexes are stored as `u16`).
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// The scheduling algorithm of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedulerKind {
    /// Round robin over eligible backends (weights only gate eligibility).
    Rr,
    /// Interleaved weighted round robin (IPVS `wrr`, gcd-stepped).
    Wrr,
    /// Weighted least connections: least `active / weight`.
    Lc,
    /// Source hashing on the client address only, weighted (Maglev table).
    Sh,
    /// Weighted Maglev consistent hashing on the flow's 5-tuple.
    #[default]
    Maglev,
}

impl SchedulerKind {
    /// Picks from the flow and the backends alone (no per-node state such
    /// as a round-robin cursor or connection counts): every node with the
    /// same backends picks the same one for a flow.
    pub fn is_consistent(self) -> bool {
        matches!(self, SchedulerKind::Maglev | SchedulerKind::Sh)
    }

    /// Every kind, in the order names are listed in errors.
    pub const ALL: [SchedulerKind; 5] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Sh,
        SchedulerKind::Maglev,
    ];

    /// The configuration name (`"rr"`, `"wrr"`, `"lc"`, `"sh"`, `"maglev"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Maglev => "maglev",
        }
    }

    /// Whether the choice depends only on hashes (same on every node).
    pub fn is_consistent_hash(self) -> bool {
        matches!(self, SchedulerKind::Sh | SchedulerKind::Maglev)
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchedulerKind {
    type Err = ParseSchedulerKindError;

    /// Accepts the names case-insensitively, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseSchedulerKindError {
                given: s.to_owned(),
            })
    }
}

/// An unknown scheduler name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSchedulerKindError {
    /// The name as given.
    pub given: String,
}

impl fmt::Display for ParseSchedulerKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scheduler {:?}; valid names are ", self.given)?;
        for (i, k) in SchedulerKind::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{k}")?;
        }
        f.write_str(" (default maglev)")
    }
}

impl std::error::Error for ParseSchedulerKindError {}

/// Why a [`SchedTable`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedError {
    /// The Maglev table size must be prime (its permutations rely on it).
    TableSizeNotPrime { size: u32 },
    /// The Maglev table size is outside `min..=max`.
    TableSizeOutOfRange { size: u32, min: u32, max: u32 },
    /// More backends than [`MAX_BACKENDS`].
    TooManyBackends { count: usize },
    /// Two backends of a hashing scheduler share one key: they would have
    /// the same Maglev permutation. Indexes into the backend slice.
    DuplicateKey {
        key: u64,
        first: usize,
        second: usize,
    },
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::TableSizeNotPrime { size } => {
                write!(f, "maglev table size {size} is not prime (try 65537)")
            }
            SchedError::TableSizeOutOfRange { size, min, max } => {
                write!(f, "maglev table size {size} is out of range {min}..={max}")
            }
            SchedError::TooManyBackends { count } => {
                write!(f, "{count} backends, at most {MAX_BACKENDS} allowed")
            }
            SchedError::DuplicateKey { key, first, second } => write!(
                f,
                "backends #{first} and #{second} have the same identity key {key:#018x}"
            ),
        }
    }
}

impl std::error::Error for SchedError {}

/// One backend as the schedulers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchedBackend {
    /// Stable identity for hashing schedulers: the same backend must have
    /// the same key on every node and across restarts (see
    /// [`backend_key`], [`endpoint_key`]). Ignored by rr, wrr and lc.
    pub key: u64,
    /// Relative weight; 0 takes no new flows.
    pub weight: u32,
    /// Health: `false` takes no new flows whatever the weight.
    pub usable: bool,
}

impl SchedBackend {
    /// A usable backend.
    pub fn new(key: u64, weight: u32) -> Self {
        SchedBackend {
            key,
            weight,
            usable: true,
        }
    }

    /// The weight that counts: 0 when not usable.
    #[inline]
    pub fn effective_weight(&self) -> u32 {
        if self.usable {
            self.weight
        } else {
            0
        }
    }
}

/// A stable 64-bit key from a backend's identity bytes (a configured name,
/// or `address:port` text). FNV-1a followed by SplitMix64, like
/// [`FlowTuple::stable_hash`]; the value is pinned by a test.
pub fn backend_key(identity: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::flow::splitmix64(h)
}

/// A stable key from a backend endpoint (address and port).
pub fn endpoint_key(addr: Addr16, port: u16) -> u64 {
    let mut bytes = [0u8; 18];
    bytes[..16].copy_from_slice(&addr.0);
    bytes[16..].copy_from_slice(&port.to_be_bytes());
    backend_key(&bytes)
}

/// Build-time options of a [`SchedTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedOptions {
    /// Maglev (and sh) lookup table size: a prime, ideally at least 100
    /// times the number of backends ([`MaglevTable::is_undersized`]).
    pub maglev_size: u32,
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions {
            maglev_size: DEFAULT_MAGLEV_SIZE,
        }
    }
}

/// Per-worker, per-service cursor state (rr and wrr positions).
///
/// Plain data: one per worker and service, never shared. Valid with any
/// table of the same service, old or new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedState {
    rr_next: usize,
    wrr: rr::WrrCursor,
}

impl SchedState {
    /// A state starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state whose rr/wrr cursor starts `offset` eligible backends in, so
    /// workers (pass the worker index) do not all send their first flows to
    /// the same backend. Distribution over a full cycle is unchanged.
    pub fn starting_at(offset: usize) -> Self {
        SchedState {
            rr_next: offset,
            wrr: rr::WrrCursor::starting_at(offset),
        }
    }
}

/// The prebuilt, read-only scheduler of one service. Cloning shares the
/// table (a Maglev table is 128 KiB at the default size), so a snapshot
/// rebuilt for another reason reuses the tables whose backends did not
/// change.
#[derive(Clone)]
pub struct SchedTable {
    kind: SchedulerKind,
    backends: usize,
    eligible: usize,
    picker: std::sync::Arc<Picker>,
}

enum Picker {
    Rr(rr::RrTable),
    Wrr(rr::WrrTable),
    Lc(lc::LcTable),
    Sh(MaglevTable),
    Maglev(MaglevTable),
}

impl SchedTable {
    /// Whether `self` and `other` are clones of one built table.
    pub fn shares_table_with(&self, other: &SchedTable) -> bool {
        std::sync::Arc::ptr_eq(&self.picker, &other.picker)
    }

    /// Builds the table for `kind` over `backends` (in their stable order).
    /// Allocates; meant for the control plane, not the packet path.
    pub fn build(
        kind: SchedulerKind,
        backends: &[SchedBackend],
        options: &SchedOptions,
    ) -> Result<Self, SchedError> {
        if backends.len() > MAX_BACKENDS {
            return Err(SchedError::TooManyBackends {
                count: backends.len(),
            });
        }
        let picker = match kind {
            SchedulerKind::Rr => Picker::Rr(rr::RrTable::build(backends)),
            SchedulerKind::Wrr => Picker::Wrr(rr::WrrTable::build(backends)),
            SchedulerKind::Lc => Picker::Lc(lc::LcTable::build(backends)),
            SchedulerKind::Sh => Picker::Sh(MaglevTable::build(options.maglev_size, backends)?),
            SchedulerKind::Maglev => {
                Picker::Maglev(MaglevTable::build(options.maglev_size, backends)?)
            }
        };
        Ok(SchedTable {
            kind,
            backends: backends.len(),
            eligible: backends.iter().filter(|b| b.effective_weight() > 0).count(),
            picker: std::sync::Arc::new(picker),
        })
    }

    /// Picks the backend for a new flow: an index into the backend slice
    /// the table was built from, or `None` when no backend is eligible.
    ///
    /// `active_conns[i]` is this worker's count of active connections to
    /// backend `i` (lc only; missing entries count as 0). Allocation-free.
    #[inline]
    pub fn pick(
        &self,
        state: &mut SchedState,
        flow: &FlowTuple,
        active_conns: &[u32],
    ) -> Option<usize> {
        self.pick_with(state, flow, active_conns, || flow.stable_hash())
    }

    /// [`pick`](Self::pick) for callers that already hold
    /// `flow.stable_hash()` (and only that hash: a keyed or per-node hash
    /// would make nodes behind ECMP disagree). Used by Maglev only.
    #[inline]
    pub fn pick_hashed(
        &self,
        state: &mut SchedState,
        flow: &FlowTuple,
        stable_hash: u64,
        active_conns: &[u32],
    ) -> Option<usize> {
        debug_assert_eq!(stable_hash, flow.stable_hash());
        self.pick_with(state, flow, active_conns, || stable_hash)
    }

    #[inline]
    fn pick_with(
        &self,
        state: &mut SchedState,
        flow: &FlowTuple,
        active_conns: &[u32],
        stable_hash: impl FnOnce() -> u64,
    ) -> Option<usize> {
        match &*self.picker {
            Picker::Rr(t) => t.pick(&mut state.rr_next),
            Picker::Wrr(t) => t.pick(&mut state.wrr),
            Picker::Lc(t) => t.pick(active_conns),
            Picker::Sh(t) => t.lookup(sh::client_hash(&flow.client)),
            Picker::Maglev(t) => t.lookup(stable_hash()),
        }
    }

    /// The algorithm this table implements.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// Number of backends the table was built from (eligible or not).
    pub fn backend_count(&self) -> usize {
        self.backends
    }

    /// Number of backends that take new flows.
    pub fn eligible_count(&self) -> usize {
        self.eligible
    }

    /// The lookup table of sh and Maglev (for status and diagnostics).
    pub fn maglev(&self) -> Option<&MaglevTable> {
        match &*self.picker {
            Picker::Sh(t) | Picker::Maglev(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Debug for SchedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SchedTable");
        d.field("kind", &self.kind)
            .field("backends", &self.backends)
            .field("eligible", &self.eligible);
        if let Some(t) = self.maglev() {
            d.field("maglev", t);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::L4Proto;
    use proptest::prelude::*;

    pub(crate) fn flow(n: u64) -> FlowTuple {
        // Clients spread over 198.18.0.0/15, ports over 1024..61024.
        let h = crate::flow::splitmix64(n);
        let client = std::net::Ipv4Addr::from(0xc612_0000 | (n as u32 & 0x1_ffff));
        FlowTuple {
            client: Addr16::from_v4(client),
            client_port: 1024 + (h % 60_000) as u16,
            vip: Addr16::from_ip("198.18.1.1".parse().expect("literal")),
            vip_port: 80,
            proto: L4Proto::Tcp,
        }
    }

    fn backends(weights: &[u32]) -> Vec<SchedBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| SchedBackend::new(backend_key(format!("b{i}").as_bytes()), *w))
            .collect()
    }

    fn table(kind: SchedulerKind, b: &[SchedBackend]) -> SchedTable {
        let opts = SchedOptions { maglev_size: 1009 };
        SchedTable::build(kind, b, &opts).expect("valid test input")
    }

    #[test]
    fn kind_names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.to_string().parse::<SchedulerKind>(), Ok(k));
        }
        assert_eq!(
            " MagLev ".parse::<SchedulerKind>(),
            Ok(SchedulerKind::Maglev)
        );
        assert_eq!(SchedulerKind::default(), SchedulerKind::Maglev);
    }

    #[test]
    fn unknown_kind_lists_valid_names() {
        let e = "wlc".parse::<SchedulerKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown scheduler \"wlc\"; valid names are rr, wrr, lc, sh, maglev (default maglev)"
        );
    }

    #[test]
    fn tables_are_send_sync_and_states_are_plain() {
        fn send_sync<T: Send + Sync>() {}
        fn copy<T: Copy + Send>() {}
        send_sync::<SchedTable>();
        copy::<SchedState>();
    }

    #[test]
    fn backend_key_is_pinned() {
        // Pinned: a change would make old and new nodes disagree.
        assert_eq!(
            backend_key(b""),
            crate::flow::splitmix64(0xcbf2_9ce4_8422_2325)
        );
        assert_eq!(backend_key(b"198.18.10.1:80"), 0xd3ab_6e93_f625_169f);
    }

    #[test]
    fn every_kind_returns_none_without_eligible_backends() {
        let mut b = backends(&[0, 3, 2]);
        b[1].usable = false;
        b[2].usable = false;
        for k in SchedulerKind::ALL {
            for bs in [&b[..], &[][..]] {
                let t = table(k, bs);
                let mut st = SchedState::new();
                assert_eq!(t.pick(&mut st, &flow(1), &[0, 0, 0]), None, "{k}");
                assert_eq!(t.eligible_count(), 0);
            }
        }
    }

    #[test]
    fn too_many_backends_is_an_error() {
        let b = vec![SchedBackend::new(1, 1); MAX_BACKENDS + 1];
        let e = SchedTable::build(SchedulerKind::Rr, &b, &SchedOptions::default());
        assert!(matches!(e, Err(SchedError::TooManyBackends { .. })));
    }

    #[test]
    fn duplicate_keys_are_rejected_for_hashing_only() {
        let b = [SchedBackend::new(7, 1), SchedBackend::new(7, 2)];
        let opts = SchedOptions::default();
        let e = SchedTable::build(SchedulerKind::Maglev, &b, &opts).unwrap_err();
        assert_eq!(
            e,
            SchedError::DuplicateKey {
                key: 7,
                first: 0,
                second: 1
            }
        );
        assert!(SchedTable::build(SchedulerKind::Wrr, &b, &opts).is_ok());
    }

    #[test]
    fn sh_is_stable_per_client_and_ignores_the_port() {
        let b = backends(&[1, 1, 1, 1]);
        let t = table(SchedulerKind::Sh, &b);
        let mut st = SchedState::new();
        let mut counts = [0u32; 4];
        for n in 0..4000 {
            let f = flow(n);
            let first = t.pick(&mut st, &f, &[]).expect("eligible backends");
            for port in [1, 1024, 65535] {
                let g = FlowTuple {
                    client_port: port,
                    ..f
                };
                assert_eq!(t.pick(&mut st, &g, &[]), Some(first));
            }
            counts[first] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn sh_follows_weights() {
        let b = backends(&[1, 3]);
        let t = table(SchedulerKind::Sh, &b);
        let mut st = SchedState::new();
        let heavy = (0..8000)
            .filter(|n| t.pick(&mut st, &flow(*n), &[]) == Some(1))
            .count();
        assert!((5700..6300).contains(&heavy), "{heavy}");
    }

    #[test]
    fn maglev_uses_the_whole_tuple() {
        let b = backends(&[1; 8]);
        let t = table(SchedulerKind::Maglev, &b);
        let mut st = SchedState::new();
        let f = flow(42);
        let mut seen = [false; 8];
        for port in 0..200 {
            let g = FlowTuple {
                client_port: port,
                ..f
            };
            let i = t.pick(&mut st, &g, &[]).expect("eligible backends");
            assert_eq!(t.pick_hashed(&mut st, &g, g.stable_hash(), &[]), Some(i));
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn never_picks_an_ineligible_backend(
            spec in prop::collection::vec((0u32..5, any::<bool>()), 0..12),
            kind in prop::sample::select(SchedulerKind::ALL.to_vec()),
            active in prop::collection::vec(0u32..50, 0..12),
            offset in 0usize..100,
        ) {
            let mut b = backends(&spec.iter().map(|s| s.0).collect::<Vec<_>>());
            for (x, s) in b.iter_mut().zip(&spec) {
                x.usable = s.1;
            }
            let t = table(kind, &b);
            let any_eligible = b.iter().any(|x| x.effective_weight() > 0);
            let mut st = SchedState::starting_at(offset);
            for n in 0..50 {
                match t.pick(&mut st, &flow(n), &active) {
                    Some(i) => prop_assert!(b[i].effective_weight() > 0),
                    None => prop_assert!(!any_eligible),
                }
            }
        }

        #[test]
        fn a_state_survives_a_smaller_table(
            big in 1usize..20, small in 1usize..20, steps in 0usize..50,
        ) {
            // A worker keeps its state when a new snapshot shrinks the
            // backend list: the next pick must still be in range.
            let old_rr = table(SchedulerKind::Rr, &backends(&vec![3; big]));
            let old_wrr = table(SchedulerKind::Wrr, &backends(&vec![9; big]));
            let new_rr = table(SchedulerKind::Rr, &backends(&vec![3; small]));
            let new_wrr = table(SchedulerKind::Wrr, &backends(&vec![1; small]));
            let mut st = SchedState::new();
            for n in 0..steps {
                old_rr.pick(&mut st, &flow(n as u64), &[]);
                old_wrr.pick(&mut st, &flow(n as u64), &[]);
            }
            prop_assert!(new_rr.pick(&mut st, &flow(0), &[]).is_some_and(|i| i < small));
            prop_assert!(new_wrr.pick(&mut st, &flow(0), &[]).is_some_and(|i| i < small));
        }
    }
}
