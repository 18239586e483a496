//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Owns the lookup table and its population. Each eligible backend has a
//! permutation of the `M` table slots (`M` prime) derived only from its
//! [`SchedBackend::key`]: `offset = h1(key) % M`, `skip = h2(key) % (M-1) +
//! 1`, slot `j` = `(offset + j * skip) % M`. Backends take turns claiming
//! their next free preferred slot until the table is full; a flow goes to
//! `table[hash % M]`. Because permutations depend on the key alone, adding
//! or removing one backend moves few flows of the others, and every node
//! with the same backend set builds the same table.
//!
//! Weights (the paper leaves them open): each round every backend earns its
//! weight in credit and takes one turn per `max_weight` of credit, so the
//! heaviest takes a turn every round and entry counts are proportional to
//! weights within one entry. Turns are taken in key order, not slice order,
//! so the table depends only on the set of (key, weight), not on how the
//! configuration lists backends.
//!
//! Must not touch: flow hashing (the caller's stable hash), backend health.

use std::fmt;

use super::{SchedBackend, SchedError, MAX_BACKENDS};
use crate::flow::splitmix64;

/// Smallest accepted table size.
pub const MIN_SIZE: u32 = 2;
/// Largest accepted table size (32 MiB of `u16` entries).
pub const MAX_SIZE: u32 = 1 << 24;
/// Slots per configured backend below which a table counts as undersized:
/// with fewer, each slot carries a coarse share of traffic and a backend
/// change disturbs more flows (the paper wants `M` ≫ backends).
pub const ENTRIES_PER_BACKEND: u64 = 100;

/// Initial slot value; every slot is overwritten while populating.
const EMPTY: u16 = u16::MAX;

/// A populated Maglev lookup table. Immutable once built.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index per slot; empty when no backend is eligible.
    entries: Box<[u16]>,
    size: u32,
    eligible: usize,
    /// Backends it was built from, eligible or not.
    backends: usize,
}

/// One eligible backend while populating.
struct Turn {
    index: u16,
    weight: u64,
    credit: u64,
    /// Next slot of its permutation to try.
    next: u32,
    skip: u32,
}

impl MaglevTable {
    /// Builds the table of `size` slots (a prime, see [`is_prime`]) for
    /// `backends`; weight-0 and unusable backends get no slots. Errors on a
    /// bad size, too many backends or two backends with one key.
    ///
    /// Cost: about `M ln M` slot probes, allocation of the table and of one
    /// small record per backend, none per step. For benches: build with
    /// `size = 65_537` and 10–100 backends of keys [`super::backend_key`].
    pub fn build(size: u32, backends: &[SchedBackend]) -> Result<Self, SchedError> {
        validate_size(size)?;
        if backends.len() > MAX_BACKENDS {
            return Err(SchedError::TooManyBackends {
                count: backends.len(),
            });
        }
        check_unique_keys(backends)?;
        let mut turns = turns(size, backends);
        let entries = if turns.is_empty() {
            Box::default()
        } else {
            populate(size, &mut turns)
        };
        Ok(MaglevTable {
            entries,
            size,
            eligible: turns.len(),
            backends: backends.len(),
        })
    }

    /// The backend index for a flow hash, `None` if no backend is eligible.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let slot = (hash % u64::from(self.size)) as usize;
        self.entries.get(slot).map(|i| usize::from(*i))
    }

    /// The table size `M`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Number of backends that hold slots.
    pub fn eligible_count(&self) -> usize {
        self.eligible
    }

    /// The slots (backend indexes); empty when no backend is eligible.
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// [`is_undersized`] for this table's size and configured backends.
    pub fn is_undersized(&self) -> bool {
        is_undersized(self.size, self.backends)
    }

    /// Slots held per backend index, for status output and tests.
    pub fn entry_counts(&self, backend_count: usize) -> Vec<u32> {
        let mut counts = vec![0u32; backend_count];
        for e in self.entries.iter() {
            if let Some(c) = counts.get_mut(usize::from(*e)) {
                *c += 1;
            }
        }
        counts
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("eligible", &self.eligible)
            .field("undersized", &self.is_undersized())
            .finish_non_exhaustive()
    }
}

/// Whether `n` is prime (trial division; `n` ≤ [`MAX_SIZE`] in practice).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// A backend's permutation of `size` slots: `(offset, skip)`, with slot
/// `j` = `(offset + j * skip) % size`. Depends on `key` and `size` only;
/// pinned by a test.
pub fn permutation(key: u64, size: u32) -> (u32, u32) {
    let h1 = splitmix64(key);
    let h2 = splitmix64(h1 ^ 0x6a09_e667_f3bc_c908);
    let m = u64::from(size);
    let offset = (h1 % m) as u32;
    let skip = (h2 % (m - 1) + 1) as u32;
    (offset, skip)
}

/// Whether `size` is below [`ENTRIES_PER_BACKEND`] × `backend_count`: the
/// table still works, but the control plane should warn and suggest a
/// larger prime.
pub fn is_undersized(size: u32, backend_count: usize) -> bool {
    u64::from(size) < ENTRIES_PER_BACKEND.saturating_mul(backend_count as u64)
}

/// Checks a table size: prime and within [`MIN_SIZE`]`..=`[`MAX_SIZE`].
/// For configuration validation before anything is built.
pub fn validate_size(size: u32) -> Result<(), SchedError> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(SchedError::TableSizeOutOfRange {
            size,
            min: MIN_SIZE,
            max: MAX_SIZE,
        });
    }
    if !is_prime(size) {
        return Err(SchedError::TableSizeNotPrime { size });
    }
    Ok(())
}

fn check_unique_keys(backends: &[SchedBackend]) -> Result<(), SchedError> {
    let mut keys: Vec<(u64, usize)> = backends.iter().map(|b| b.key).zip(0..).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(SchedError::DuplicateKey {
            key: w[0].0,
            first: w[0].1,
            second: w[1].1,
        }),
        None => Ok(()),
    }
}

/// Eligible backends in key order with their permutations.
fn turns(size: u32, backends: &[SchedBackend]) -> Vec<Turn> {
    let mut order: Vec<(u64, usize)> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.effective_weight() > 0)
        .map(|(i, b)| (b.key, i))
        .collect();
    order.sort_unstable();
    order
        .into_iter()
        .map(|(key, i)| {
            let (offset, skip) = permutation(key, size);
            Turn {
                // Fits: backends.len() <= MAX_BACKENDS was checked.
                index: i as u16,
                weight: u64::from(backends[i].effective_weight()),
                credit: 0,
                next: offset,
                skip,
            }
        })
        .collect()
}

/// Fills every slot. Terminates: each round the heaviest backend earns a
/// turn (credit ≥ max weight), and each turn claims one free slot, found
/// within `size` probes because a prime `size` and `1 <= skip < size`
/// make every permutation visit all slots. Probes test a bitmap of taken
/// slots (8 KiB at the default size, cache-resident) rather than the table.
fn populate(size: u32, turns: &mut [Turn]) -> Box<[u16]> {
    let mut entries = vec![EMPTY; size as usize].into_boxed_slice();
    let mut taken = SlotBitmap::new(size);
    let max_weight = turns.iter().map(|t| t.weight).max().unwrap_or(1);
    let mut filled: u32 = 0;
    loop {
        for t in turns.iter_mut() {
            t.credit += t.weight;
            if t.credit < max_weight {
                continue;
            }
            t.credit -= max_weight;
            let mut slot = t.next;
            while taken.test_and_set(slot) {
                slot = step(slot, t.skip, size);
            }
            entries[slot as usize] = t.index;
            t.next = step(slot, t.skip, size);
            filled += 1;
            if filled == size {
                return entries;
            }
        }
    }
}

/// One bit per slot: set once claimed.
struct SlotBitmap(Box<[u64]>);

impl SlotBitmap {
    fn new(size: u32) -> Self {
        SlotBitmap(vec![0; size.div_ceil(64) as usize].into_boxed_slice())
    }

    /// Whether `slot` was taken; takes it if not.
    #[inline]
    fn test_and_set(&mut self, slot: u32) -> bool {
        let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        was
    }
}

#[inline]
fn step(slot: u32, skip: u32, size: u32) -> u32 {
    // slot, skip < size <= 2^24: the sum cannot overflow.
    let s = slot + skip;
    if s >= size {
        s - size
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend_key;
    use super::*;
    use proptest::prelude::*;

    const M: u32 = 65_537;

    fn backends(weights: &[u32]) -> Vec<SchedBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                SchedBackend::new(backend_key(format!("198.18.10.{i}:80").as_bytes()), *w)
            })
            .collect()
    }

    fn build(size: u32, b: &[SchedBackend]) -> MaglevTable {
        MaglevTable::build(size, b).expect("valid test input")
    }

    /// Share of slots whose backend key differs between two tables.
    fn moved(
        a: &MaglevTable,
        ab: &[SchedBackend],
        b: &MaglevTable,
        bb: &[SchedBackend],
    ) -> (f64, f64) {
        let (mut all, mut others) = (0u32, 0u32);
        let removed = |k: u64| !bb.iter().any(|x| x.key == k && x.effective_weight() > 0);
        for (x, y) in a.entries().iter().zip(b.entries()) {
            let (kx, ky) = (ab[*x as usize].key, bb[*y as usize].key);
            if kx != ky {
                all += 1;
                if !removed(kx) {
                    others += 1;
                }
            }
        }
        let m = f64::from(a.size());
        (f64::from(all) / m, f64::from(others) / m)
    }

    fn fnv(entries: &[u16]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in entries.iter().flat_map(|e| e.to_be_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..40).filter(|n| is_prime(*n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65_537) && is_prime(655_373) && is_prime(16_777_213));
        assert!(!is_prime(65_536) && !is_prime(65_541) && !is_prime(25) && !is_prime(49));
    }

    #[test]
    fn size_is_validated() {
        let b = backends(&[1]);
        assert_eq!(
            MaglevTable::build(65_536, &b),
            Err(SchedError::TableSizeNotPrime { size: 65_536 })
        );
        assert!(matches!(
            MaglevTable::build(16_777_259, &b),
            Err(SchedError::TableSizeOutOfRange { .. })
        ));
        assert!(build(997, &backends(&[1; 10])).is_undersized());
        assert!(!build(1009, &backends(&[1; 10])[..5]).is_undersized());
        // Configured backends count, healthy or not.
        assert!(build(997, &backends(&[0; 10])).is_undersized());
        assert_eq!(validate_size(65_537), Ok(()));
        assert!(!is_undersized(65_537, 655) && is_undersized(65_537, 656));
    }

    #[test]
    fn equal_weights_get_equal_slots() {
        for n in [3usize, 10, 100] {
            let t = build(M, &backends(&vec![1; n]));
            let fair = M as usize / n;
            for c in t.entry_counts(n) {
                assert!((fair..=fair + 1).contains(&(c as usize)), "n={n} c={c}");
            }
        }
    }

    #[test]
    fn weighted_shares_track_weights() {
        let weights = [1, 2, 3, 4, 10, 50, 100, 0, 7, 23];
        let t = build(M, &backends(&weights));
        let total: u32 = weights.iter().sum();
        for (c, w) in t.entry_counts(weights.len()).iter().zip(weights) {
            let want = f64::from(M) * f64::from(w) / f64::from(total);
            assert!(
                (f64::from(*c) - want).abs() <= want * 0.01 + 2.0,
                "w={w} c={c}"
            );
        }
    }

    #[test]
    fn removing_one_backend_moves_about_one_nth() {
        for n in [3usize, 10, 100] {
            let all = backends(&vec![1; n]);
            let a = build(M, &all);
            // Removal from the slice shifts indexes; the keys still match.
            let mut fewer = all.clone();
            fewer.remove(n / 2);
            let b = build(M, &fewer);
            let (total, others) = moved(&a, &all, &b, &fewer);
            let share = 1.0 / n as f64;
            assert!(total >= share - 0.001, "n={n} total={total}");
            assert!(total < share + 0.02, "n={n} total={total}");
            assert!(others < 0.02, "n={n} others={others}");
            // Adding it back is the same comparison the other way round.
            let (back, _) = moved(&b, &fewer, &a, &all);
            assert_eq!(back, total);
        }
    }

    #[test]
    fn health_down_equals_removal() {
        let mut b = backends(&[1; 10]);
        let mut fewer = b.clone();
        fewer.remove(3);
        b[3].usable = false;
        let (x, y) = (build(M, &b), build(M, &fewer));
        let (total, _) = moved(&x, &b, &y, &fewer);
        assert_eq!(total, 0.0);
    }

    #[test]
    fn changing_one_weight_disturbs_little() {
        let before = backends(&[1; 10]);
        let mut after = before.clone();
        after[4].weight = 2;
        let (a, b) = (build(M, &before), build(M, &after));
        let (total, _) = moved(&a, &before, &b, &after);
        // Its share goes from 1/10 to 2/11: at least that much must move.
        let delta = 2.0 / 11.0 - 0.1;
        assert!(total >= delta - 0.001 && total < delta + 0.03, "{total}");
    }

    #[test]
    fn random_flows_move_like_slots() {
        let all = backends(&[1; 10]);
        let mut fewer = all.clone();
        fewer.remove(7);
        let (a, b) = (build(M, &all), build(M, &fewer));
        let flows = 20_000u64;
        let moved = (0..flows)
            .map(|n| super::super::tests::flow(n).stable_hash())
            .filter(|h| {
                all[a.lookup(*h).expect("eligible")].key
                    != fewer[b.lookup(*h).expect("eligible")].key
            })
            .count();
        let share = moved as f64 / flows as f64;
        assert!((0.09..0.12).contains(&share), "{share}");
    }

    #[test]
    fn same_input_builds_the_same_table_in_any_order() {
        let b = backends(&[3, 1, 4, 1, 5, 9, 2, 6]);
        let (x, y) = (build(M, &b), build(M, &b));
        assert!(x == y);
        let mut rev = b.clone();
        rev.reverse();
        let r = build(M, &rev);
        let n = b.len();
        assert!(x
            .entries()
            .iter()
            .zip(r.entries())
            .all(|(i, j)| *i as usize == n - 1 - *j as usize));
    }

    #[test]
    fn known_table_is_pinned() {
        // Pinned fixture: nodes behind one ECMP group, possibly running
        // different versions, must build this exact table. If this fails,
        // the permutation, key or turn order changed: that breaks flows
        // during a rolling upgrade and needs a release note. The values
        // were cross-checked with an independent Python implementation of
        // the paper's loop (`maglev_reference.py` beside this file).
        let b = backends(&[1, 1, 2, 1]);
        let t = build(M, &b);
        assert_eq!(permutation(b[0].key, M), (33_643, 42_698));
        assert_eq!(
            &t.entries()[..16],
            &[2, 1, 0, 0, 3, 3, 2, 3, 3, 1, 1, 2, 2, 0, 0, 1]
        );
        assert_eq!(t.entries()[M as usize - 1], 2);
        assert_eq!(fnv(t.entries()), 0xe804_6332_5b6c_662c);
        assert_eq!(t.lookup(0x0123_4567_89ab_cdef), Some(1));
        assert_eq!(t.entry_counts(4), [13_107, 13_107, 26_215, 13_108]);
    }

    #[test]
    fn empty_and_ineligible_give_none() {
        assert_eq!(build(M, &[]).lookup(1), None);
        assert_eq!(build(M, &backends(&[0, 0])).lookup(1), None);
        let one = build(M, &backends(&[0, 5]));
        assert!((0..100).all(|h| one.lookup(h) == Some(1)));
    }

    /// Build time at the default size; run with
    /// `cargo test --release -p vipgate-dataplane maglev_build_time -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, meaningful in release builds only"]
    fn maglev_build_time() {
        for n in [10usize, 100] {
            for weights in [vec![1u32; n], (1..=n as u32).collect()] {
                let b = backends(&weights);
                let rounds = 50u32;
                let start = std::time::Instant::now();
                for _ in 0..rounds {
                    std::hint::black_box(build(M, std::hint::black_box(&b)));
                }
                eprintln!(
                    "n={n} weighted={} {:?}/build",
                    weights[0] != weights[n - 1],
                    start.elapsed() / rounds
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn shares_follow_weights_within_one_entry_per_backend(
            weights in prop::collection::vec(0u32..20, 1..12),
        ) {
            let size = 2039;
            let t = build(size, &backends(&weights));
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            let counts = t.entry_counts(weights.len());
            prop_assert_eq!(counts.iter().sum::<u32>(), size);
            for (c, w) in counts.iter().zip(&weights) {
                let want = f64::from(size) * f64::from(*w) / f64::from(total);
                prop_assert!((f64::from(*c) - want).abs() <= weights.len() as f64 + 2.0, "w={} c={} want={}", w, c, want);
            }
        }

        #[test]
        fn removal_moves_little_of_the_others(
            n in 2usize..20, victim in 0usize..20, seed in any::<u64>(),
        ) {
            // At the default size; smaller tables move more of the others
            // (up to ~4 % seen at M = 4099).
            let all: Vec<SchedBackend> = (0..n as u64)
                .map(|i| SchedBackend::new(splitmix64(seed ^ i), 1))
                .collect();
            let mut fewer = all.clone();
            fewer.remove(victim % n);
            let (a, b) = (build(M, &all), build(M, &fewer));
            let (total, others) = moved(&a, &all, &b, &fewer);
            prop_assert!(total < 1.0 / n as f64 + 0.02, "total={}", total);
            prop_assert!(others < 0.02, "others={}", others);
        }
    }
}
