//! Weighted least connections (lc).
//!
//! Owns the comparison of `active / weight` between eligible backends. The
//! active connection counts belong to the caller (one slice per worker and
//! service); this file only reads them.

use super::SchedBackend;

/// lc: (backend index, weight) of the eligible backends in stable order.
pub(super) struct LcTable {
    eligible: Box<[(u16, u32)]>,
}

impl LcTable {
    pub(super) fn build(backends: &[SchedBackend]) -> Self {
        LcTable {
            eligible: backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.effective_weight() > 0)
                .map(|(i, b)| (i as u16, b.effective_weight()))
                .collect(),
        }
    }

    /// The backend with the least `active / weight`, compared exactly by
    /// cross-multiplying in `u64`. Ties go to the heavier backend, then to
    /// the earlier one. `active[i]` missing counts as 0.
    #[inline]
    pub(super) fn pick(&self, active: &[u32]) -> Option<usize> {
        let load = |i: u16| u64::from(active.get(usize::from(i)).copied().unwrap_or(0));
        let mut best: Option<(u16, u32)> = None;
        for &(i, w) in self.eligible.iter() {
            let better = match best {
                None => true,
                Some((bi, bw)) => {
                    let (lhs, rhs) = (load(i) * u64::from(bw), load(bi) * u64::from(w));
                    lhs < rhs || (lhs == rhs && w > bw)
                }
            };
            if better {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| usize::from(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(weights: &[u32]) -> LcTable {
        let b: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| SchedBackend::new(i as u64, *w))
            .collect();
        LcTable::build(&b)
    }

    #[test]
    fn picks_least_active_per_weight() {
        let t = table(&[1, 2, 4]);
        // 3/1, 4/2, 9/4 -> 2.0 is least.
        assert_eq!(t.pick(&[3, 4, 9]), Some(1));
        // 3/1, 7/2, 9/4 -> 2.25 is least.
        assert_eq!(t.pick(&[3, 7, 9]), Some(2));
    }

    #[test]
    fn ties_go_to_the_heavier_then_the_earlier() {
        let t = table(&[1, 2, 2]);
        assert_eq!(t.pick(&[0, 0, 0]), Some(1));
        assert_eq!(t.pick(&[1, 2, 2]), Some(1));
    }

    #[test]
    fn skips_weight_zero_even_when_idle() {
        let t = table(&[0, 1]);
        assert_eq!(t.pick(&[0, 1000]), Some(1));
    }

    #[test]
    fn short_counts_slice_counts_as_zero() {
        let t = table(&[1, 1, 1]);
        assert_eq!(t.pick(&[5, 5]), Some(2));
    }

    #[test]
    fn extreme_counts_and_weights_do_not_overflow() {
        let t = table(&[u32::MAX, 1]);
        assert_eq!(t.pick(&[u32::MAX, 1]), Some(0));
    }

    proptest! {
        #[test]
        fn matches_a_rational_minimum(
            spec in prop::collection::vec((0u32..6, 0u32..30), 1..10),
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let active: Vec<u32> = spec.iter().map(|s| s.1).collect();
            let got = table(&weights).pick(&active);
            let ratio = |i: usize| active[i] as f64 / weights[i] as f64;
            let eligible: Vec<usize> = (0..spec.len()).filter(|i| weights[*i] > 0).collect();
            match got {
                None => prop_assert!(eligible.is_empty()),
                Some(g) => {
                    prop_assert!(weights[g] > 0);
                    for i in eligible {
                        prop_assert!(ratio(g) <= ratio(i), "{g} vs {i}");
                    }
                }
            }
        }
    }
}
