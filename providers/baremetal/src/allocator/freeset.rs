//! The free addresses of one pool and one family, as a set of intervals.
//!
//! Every operation is O(log n) in the number of intervals, and the number of
//! intervals grows only with fragmentation (one per hole that allocations and
//! releases leave), never with the size of the pool.
//!
//! With `skip_buggy` (a pool with `avoidBuggyIPs`, IPv4 only), addresses ending
//! in .0 or .255 are "don't care": they are never in the set, never counted and
//! never handed out, yet two intervals separated only by such addresses are one
//! interval. So a /8 is one interval, not 65,536, and stays one when every
//! address in it has been taken and given back.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub(crate) struct FreeSet {
    /// start -> end, inclusive. Both ends are allowed addresses, intervals are
    /// disjoint, and between two intervals lies at least one allowed address.
    spans: BTreeMap<u128, u128>,
    skip_buggy: bool,
    /// Allowed addresses in the set (saturating for `::/0`).
    count: u128,
}

impl FreeSet {
    /// The allowed addresses of `spans` (any order; they may overlap).
    pub(crate) fn new(skip_buggy: bool, spans: &[(u128, u128)]) -> FreeSet {
        let mut set = FreeSet {
            skip_buggy,
            ..FreeSet::default()
        };
        let mut sorted = spans.to_vec();
        sorted.sort_unstable();
        let mut current: Option<(u128, u128)> = None;
        for (s, e) in sorted {
            let (Some(s), Some(e)) = (set.ceil(s), set.floor(e)) else {
                continue;
            };
            if s > e {
                continue;
            }
            current = match current {
                // No allowed address between the two: one interval.
                Some((cs, ce))
                    if ce
                        .checked_add(1)
                        .and_then(|n| set.ceil(n))
                        .is_none_or(|n| n >= s) =>
                {
                    Some((cs, ce.max(e)))
                }
                Some(done) => {
                    set.push(done);
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some(done) = current {
            set.push(done);
        }
        set
    }

    fn push(&mut self, (s, e): (u128, u128)) {
        self.count = self.count.saturating_add(self.span_count(s, e));
        self.spans.insert(s, e);
    }

    /// Whether `v` may ever be in the set.
    fn allowed(&self, v: u128) -> bool {
        !self.skip_buggy || !matches!(v & 0xff, 0 | 255)
    }

    /// The smallest allowed value `>= v`.
    fn ceil(&self, v: u128) -> Option<u128> {
        if !self.skip_buggy {
            return Some(v);
        }
        match v & 0xff {
            0 => v.checked_add(1),
            255 => v.checked_add(2),
            _ => Some(v),
        }
    }

    /// The largest allowed value `<= v`.
    fn floor(&self, v: u128) -> Option<u128> {
        if !self.skip_buggy {
            return Some(v);
        }
        match v & 0xff {
            0 => v.checked_sub(2),
            255 => v.checked_sub(1),
            _ => Some(v),
        }
    }

    /// Allowed values in `s..=e`, computed, never enumerated.
    fn span_count(&self, s: u128, e: u128) -> u128 {
        if !self.skip_buggy {
            return (e - s).saturating_add(1);
        }
        // Allowed values below n: 254 per full block of 256, and in the last,
        // partial block every value but .0.
        let below = |n: u128| (n >> 8) * 254 + (n & 0xff).saturating_sub(1);
        // `e` is allowed, so it is not u128::MAX (which ends in .255).
        below(e + 1) - below(s)
    }

    /// The lowest address in the set.
    pub(crate) fn first(&self) -> Option<u128> {
        self.spans.first_key_value().map(|(&s, _)| s)
    }

    pub(crate) fn contains(&self, v: u128) -> bool {
        self.allowed(v)
            && self
                .spans
                .range(..=v)
                .next_back()
                .is_some_and(|(_, &e)| e >= v)
    }

    /// Takes `v` out of the set; false if it was not in it.
    pub(crate) fn remove(&mut self, v: u128) -> bool {
        if !self.allowed(v) {
            return false;
        }
        let Some((&s, &e)) = self.spans.range(..=v).next_back() else {
            return false;
        };
        if e < v {
            return false;
        }
        self.spans.remove(&s);
        if v > s {
            // `s` is allowed and below `v`, so the floor exists and is >= s.
            if let Some(left_end) = self.floor(v - 1) {
                self.spans.insert(s, left_end);
            }
        }
        if v < e
            && let Some(right_start) = self.ceil(v + 1)
        {
            self.spans.insert(right_start, e);
        }
        self.count = self.count.saturating_sub(1);
        true
    }

    /// Puts `v` back, merging it with its neighbours; false if it was already in
    /// the set or is never allowed in it.
    pub(crate) fn insert(&mut self, v: u128) -> bool {
        if !self.allowed(v) || self.contains(v) {
            return false;
        }
        let (mut start, mut end) = (v, v);
        if let Some((&ls, &le)) = self.spans.range(..v).next_back() {
            // `le < v` because `v` is not in the set.
            if self.ceil(le + 1) == Some(v) {
                self.spans.remove(&ls);
                start = ls;
            }
        }
        if let Some(next) = v.checked_add(1)
            && let Some((&rs, &re)) = self.spans.range(next..).next()
            && self.ceil(next) == Some(rs)
        {
            self.spans.remove(&rs);
            end = re;
        }
        self.spans.insert(start, end);
        self.count = self.count.saturating_add(1);
        true
    }

    /// How many addresses may still be handed out.
    pub(crate) fn count(&self) -> u128 {
        self.count
    }

    /// How many intervals the set is made of.
    #[cfg(test)]
    pub(crate) fn span_len(&self) -> usize {
        self.spans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.0 as a number, to keep the tests readable.
    const NET: u128 = 0x0a00_0000;

    /// The set's members, enumerated (for small sets only).
    fn members(set: &FreeSet) -> Vec<u128> {
        set.spans
            .iter()
            .flat_map(|(&s, &e)| s..=e)
            .filter(|&v| set.allowed(v))
            .collect()
    }

    #[test]
    fn plain_set_takes_and_gives_back() {
        let mut set = FreeSet::new(false, &[(10, 19)]);
        assert_eq!(
            (set.first(), set.count(), set.span_len()),
            (Some(10), 10, 1)
        );
        assert!(set.remove(10));
        assert!(!set.remove(10));
        assert!(set.remove(15));
        assert_eq!(members(&set), vec![11, 12, 13, 14, 16, 17, 18, 19]);
        assert_eq!((set.count(), set.span_len()), (8, 2));
        assert!(!set.insert(12), "already free");
        assert!(set.insert(15));
        assert!(set.insert(10));
        assert_eq!(
            (set.first(), set.count(), set.span_len()),
            (Some(10), 10, 1)
        );
        assert!(!set.remove(25), "never in the set");
    }

    #[test]
    fn overlapping_input_counts_once() {
        let set = FreeSet::new(false, &[(5, 9), (0, 6), (12, 12)]);
        assert_eq!(members(&set), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12]);
        assert_eq!(set.count(), 11);
    }

    #[test]
    fn whole_address_space_saturates() {
        let mut set = FreeSet::new(false, &[(0, u128::MAX)]);
        assert_eq!(set.count(), u128::MAX);
        assert!(set.remove(u128::MAX));
        assert!(set.remove(0));
        assert_eq!(set.first(), Some(1));
        assert!(set.insert(u128::MAX));
        assert!(set.insert(0));
        assert_eq!(set.span_len(), 1);
    }

    #[test]
    fn skip_buggy_never_holds_dot_zero_or_dot_255() {
        // 10.0.0.250 - 10.0.1.5
        let mut set = FreeSet::new(true, &[(NET + 250, NET + 256 + 5)]);
        let want: Vec<u128> = (NET + 250..=NET + 254)
            .chain(NET + 257..=NET + 261)
            .collect();
        assert_eq!(members(&set), want);
        assert_eq!((set.count(), set.span_len()), (10, 1));
        assert!(!set.contains(NET + 255) && !set.contains(NET + 256));
        assert!(!set.remove(NET + 255));
        assert!(!set.insert(NET + 256));
        // Taking the last address before the gap leaves the gap out of both halves.
        assert!(set.remove(NET + 254));
        assert_eq!(
            set.spans.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(),
            vec![(NET + 250, NET + 253), (NET + 257, NET + 261)]
        );
        // Giving it back joins across the gap again.
        assert!(set.insert(NET + 254));
        assert_eq!((set.count(), set.span_len()), (10, 1));
        // The same from the other side of the gap.
        assert!(set.remove(NET + 257));
        assert_eq!(set.span_len(), 2);
        assert!(set.insert(NET + 257));
        assert_eq!((set.count(), set.span_len()), (10, 1));
    }

    #[test]
    fn skip_buggy_drops_spans_that_hold_only_buggy_addresses() {
        let set = FreeSet::new(true, &[(NET + 255, NET + 256), (NET, NET)]);
        assert_eq!((set.first(), set.count(), set.span_len()), (None, 0, 0));
        // Two ranges separated only by .255 and .0 are one interval.
        let set = FreeSet::new(true, &[(NET + 1, NET + 254), (NET + 257, NET + 300)]);
        assert_eq!(set.span_len(), 1);
        assert_eq!(set.count(), 254 + 44);
    }

    #[test]
    fn a_slash_8_stays_one_interval_when_drained_and_refilled() {
        let start = NET;
        let end = NET + (1 << 24) - 1;
        let mut set = FreeSet::new(true, &[(start, end)]);
        assert_eq!(set.count(), 65_536 * 254);
        let mut taken = Vec::new();
        for _ in 0..3_000 {
            let v = set.first().unwrap();
            assert!(set.remove(v));
            taken.push(v);
            assert_eq!(set.span_len(), 1);
        }
        assert!(taken.iter().all(|v| !matches!(v & 0xff, 0 | 255)));
        for v in taken.into_iter().rev() {
            assert!(set.insert(v));
        }
        assert_eq!((set.count(), set.span_len()), (65_536 * 254, 1));
    }

    #[test]
    fn count_matches_enumeration_for_every_small_span() {
        for s in NET + 250..NET + 262 {
            for e in s..NET + 520 {
                let set = FreeSet::new(true, &[(s, e)]);
                assert_eq!(set.count(), members(&set).len() as u128, "{s}..={e}");
            }
        }
    }
}
