//! Round robin (rr) and interleaved weighted round robin (wrr).
//!
//! Owns the prebuilt eligible lists and the cursor arithmetic. Cursors live
//! in the caller's per-worker [`super::SchedState`]; this file must not
//! keep any mutable state of its own.

use super::SchedBackend;

/// rr: the eligible backends in their stable order.
pub(super) struct RrTable {
    eligible: Box<[u16]>,
}

impl RrTable {
    pub(super) fn build(backends: &[SchedBackend]) -> Self {
        RrTable {
            eligible: eligible(backends).map(|(i, _)| i).collect(),
        }
    }

    /// The next eligible backend after `*next` (wrapping), advancing it.
    #[inline]
    pub(super) fn pick(&self, next: &mut usize) -> Option<usize> {
        if self.eligible.is_empty() {
            return None;
        }
        let pos = *next % self.eligible.len();
        *next = pos + 1;
        Some(usize::from(self.eligible[pos]))
    }
}

/// wrr cursor: the position in the current round and the round's weight
/// threshold (IPVS `cl` and `cw`). `cw == 0` means "start a new cycle".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct WrrCursor {
    next: usize,
    cw: u32,
}

impl WrrCursor {
    pub(super) fn starting_at(offset: usize) -> Self {
        WrrCursor {
            next: offset,
            cw: 0,
        }
    }
}

/// wrr as IPVS does it: rounds with a falling weight threshold `cw` (from
/// the largest weight down by the weights' gcd); each round yields, in
/// order, every backend whose weight is at least `cw`. Over one cycle of
/// `sum(w) / gcd` picks each backend is chosen exactly `w / gcd` times,
/// interleaved rather than in bursts.
pub(super) struct WrrTable {
    /// (backend index, weight) of the eligible backends in stable order.
    eligible: Box<[(u16, u32)]>,
    max_weight: u32,
    gcd: u32,
}

impl WrrTable {
    pub(super) fn build(backends: &[SchedBackend]) -> Self {
        let eligible: Box<[(u16, u32)]> = eligible(backends).collect();
        let max_weight = eligible.iter().map(|e| e.1).max().unwrap_or(0);
        let gcd = eligible.iter().fold(0, |g, e| gcd(g, e.1));
        WrrTable {
            eligible,
            max_weight,
            gcd,
        }
    }

    /// At most two scans of the eligible list: after one step down of `cw`
    /// (which never exceeds the largest weight) the heaviest backend
    /// qualifies, so the second scan always finds one.
    #[inline]
    pub(super) fn pick(&self, cur: &mut WrrCursor) -> Option<usize> {
        if self.eligible.is_empty() {
            return None;
        }
        if cur.cw == 0 || cur.cw > self.max_weight {
            // Fresh state, or a state left by a table with heavier weights.
            cur.cw = self.max_weight;
            cur.next %= self.eligible.len();
        }
        for _ in 0..2 {
            if let Some(i) = self.scan(cur) {
                return Some(i);
            }
            cur.cw = if cur.cw > self.gcd {
                cur.cw - self.gcd
            } else {
                self.max_weight
            };
            cur.next = 0;
        }
        debug_assert!(false, "wrr: second scan found no backend");
        None
    }

    /// The first backend from `cur.next` on whose weight reaches `cur.cw`.
    #[inline]
    fn scan(&self, cur: &mut WrrCursor) -> Option<usize> {
        let start = cur.next.min(self.eligible.len());
        let (off, &(idx, _)) = self.eligible[start..]
            .iter()
            .enumerate()
            .find(|(_, e)| e.1 >= cur.cw)?;
        cur.next = start + off + 1;
        Some(usize::from(idx))
    }
}

/// (index, effective weight) of the backends that take new flows. Callers
/// have checked that indexes fit in `u16`.
fn eligible(backends: &[SchedBackend]) -> impl Iterator<Item = (u16, u32)> + '_ {
    backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.effective_weight() > 0)
        .map(|(i, b)| (i as u16, b.effective_weight()))
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(weights: &[u32]) -> Vec<SchedBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| SchedBackend::new(i as u64, *w))
            .collect()
    }

    fn wrr_sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let t = WrrTable::build(&backends(weights));
        let mut cur = WrrCursor::default();
        (0..n)
            .map(|_| t.pick(&mut cur).expect("eligible"))
            .collect()
    }

    #[test]
    fn rr_cycles_over_eligible_backends_in_order() {
        let mut b = backends(&[1, 0, 5, 1]);
        b[3].usable = false;
        let t = RrTable::build(&b);
        let mut next = 0;
        let seq: Vec<_> = (0..5)
            .map(|_| t.pick(&mut next).expect("eligible"))
            .collect();
        assert_eq!(seq, [0, 2, 0, 2, 0]);
    }

    #[test]
    fn rr_offset_staggers_the_start() {
        let t = RrTable::build(&backends(&[1, 1, 1]));
        let mut next = 4;
        assert_eq!(t.pick(&mut next), Some(1));
        assert_eq!(t.pick(&mut next), Some(2));
        assert_eq!(t.pick(&mut next), Some(0));
    }

    #[test]
    fn wrr_interleaves_like_ipvs() {
        // IPVS wrr with weights a=4, b=3, c=2: a a b a b c a b c.
        assert_eq!(wrr_sequence(&[4, 3, 2], 9), [0, 0, 1, 0, 1, 2, 0, 1, 2]);
        // gcd 2 shortens the cycle: weights 4, 2 behave as 2, 1.
        assert_eq!(wrr_sequence(&[4, 2], 6), [0, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn wrr_skips_zero_weight_and_unusable() {
        let mut b = backends(&[2, 0, 1, 3]);
        b[3].usable = false;
        let t = WrrTable::build(&b);
        let mut cur = WrrCursor::default();
        let seq: Vec<_> = (0..6)
            .map(|_| t.pick(&mut cur).expect("eligible"))
            .collect();
        assert_eq!(seq, [0, 0, 2, 0, 0, 2]);
    }

    #[test]
    fn wrr_huge_weights_stay_bounded() {
        // One pick never loops over weight levels: a cycle would be ~4e9.
        let seq = wrr_sequence(&[1, u32::MAX], 3);
        assert_eq!(seq, [1, 1, 1]);
    }

    proptest! {
        #[test]
        fn wrr_is_exact_over_any_cycle_window(
            weights in prop::collection::vec(0u32..12, 1..8),
            offset in 0usize..20,
            skip in 0usize..50,
        ) {
            let b = backends(&weights);
            let t = WrrTable::build(&b);
            let g = weights.iter().fold(0, |g, w| gcd(g, *w));
            prop_assume!(g > 0);
            let cycle: u32 = weights.iter().map(|w| w / g).sum();
            let mut cur = WrrCursor::starting_at(offset);
            for _ in 0..skip {
                t.pick(&mut cur);
            }
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..cycle {
                counts[t.pick(&mut cur).expect("eligible")] += 1;
            }
            let want: Vec<u32> = weights.iter().map(|w| w / g).collect();
            prop_assert_eq!(counts, want);
        }

        #[test]
        fn rr_is_exact_over_a_cycle(
            weights in prop::collection::vec(0u32..3, 1..10),
            offset in 0usize..20,
        ) {
            let t = RrTable::build(&backends(&weights));
            let n = weights.iter().filter(|w| **w > 0).count();
            let mut next = offset;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..n * 3 {
                counts[t.pick(&mut next).expect("eligible")] += 1;
            }
            for (c, w) in counts.iter().zip(&weights) {
                prop_assert_eq!(*c, if *w > 0 { 3 } else { 0 });
            }
        }
    }
}
