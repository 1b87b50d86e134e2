//! Which addresses are taken, kept so that finding free space stays cheap.
//!
//! [`Occupancy`] counts, per address, how many occupants cover it (explicit
//! subnets may overlap excluded ranges, requests and allocations may overlap
//! each other), so removing one occupant gives back exactly the addresses no
//! other occupant still covers. Next to the counts it keeps the coalesced union
//! of all occupants: a gap search jumps over a whole run of adjacent
//! allocations in one step instead of visiting them one by one.
//!
//! [`CidrIndex`] answers "who holds something overlapping this CIDR" without a
//! scan, using the fact that two CIDRs either nest or are disjoint.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::range::{Family, Interval, align_up};

#[derive(Clone, Debug, Default)]
pub(crate) struct Occupancy {
    /// Disjoint segments `start -> (end, occupants covering it)`, count >= 1.
    /// Adjacent segments with equal counts are merged so the map stays canonical.
    segments: BTreeMap<(Family, u128), (u128, usize)>,
    /// Coalesced union of the segments: maximal occupied runs `start -> end`.
    union: BTreeMap<(Family, u128), u128>,
}

impl Occupancy {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.union.is_empty()
    }

    /// One more occupant covers `iv`.
    pub(crate) fn add(&mut self, iv: Interval) {
        let family = iv.family;
        self.split_at(family, iv.start);
        if let Some(after) = iv.end.checked_add(1) {
            self.split_at(family, after);
        }
        let inside = self.segments_within(iv);
        // `next` is the first address of `iv` not handled yet; None once past the end of the space.
        let mut next = Some(iv.start);
        for (start, end) in inside {
            if let Some(gap_start) = next.filter(|&n| n < start) {
                self.segments.insert((family, gap_start), (start - 1, 1));
                self.union_insert(family, gap_start, start - 1);
            }
            if let Some(segment) = self.segments.get_mut(&(family, start)) {
                segment.1 += 1;
            }
            next = end.checked_add(1);
        }
        if let Some(gap_start) = next.filter(|&n| n <= iv.end) {
            self.segments.insert((family, gap_start), (iv.end, 1));
            self.union_insert(family, gap_start, iv.end);
        }
        self.coalesce(iv);
    }

    /// One occupant of `iv` is gone. Must mirror an earlier `add` of the same interval.
    pub(crate) fn remove(&mut self, iv: Interval) {
        let family = iv.family;
        self.split_at(family, iv.start);
        if let Some(after) = iv.end.checked_add(1) {
            self.split_at(family, after);
        }
        for (start, end) in self.segments_within(iv) {
            let emptied = match self.segments.get_mut(&(family, start)) {
                Some(segment) => {
                    segment.1 = segment.1.saturating_sub(1);
                    segment.1 == 0
                }
                None => false,
            };
            if emptied {
                self.segments.remove(&(family, start));
                self.union_remove(family, start, end);
            }
        }
        self.coalesce(iv);
    }

    /// The end of the last occupied run overlapping `iv`, if any: the next free
    /// candidate starts right after it.
    pub(crate) fn last_overlap_end(&self, iv: Interval) -> Option<u128> {
        let (&(family, _), &end) = self.union.range(..=(iv.family, iv.end)).next_back()?;
        (family == iv.family && end >= iv.start).then_some(end)
    }

    pub(crate) fn is_free(&self, iv: Interval) -> bool {
        self.last_overlap_end(iv).is_none()
    }

    /// How many addresses of `iv` are occupied.
    pub(crate) fn covered_within(&self, iv: Interval) -> u128 {
        self.runs_overlapping(iv)
            .filter_map(|run| run.intersect(&iv))
            .fold(0u128, |sum, part| sum.saturating_add(part.size()))
    }

    /// The occupied runs overlapping `iv`, in address order.
    pub(crate) fn runs_overlapping(&self, iv: Interval) -> impl Iterator<Item = Interval> + '_ {
        let first = self
            .union
            .range(..=(iv.family, iv.start))
            .next_back()
            .filter(|&(&(family, _), &end)| family == iv.family && end >= iv.start)
            .map_or(iv.start, |(&(_, start), _)| start);
        self.union
            .range((iv.family, first)..=(iv.family, iv.end))
            .map(move |(&(family, start), &end)| Interval { family, start, end })
    }

    /// Splits the segment containing `at` (if it starts before `at`) into two.
    fn split_at(&mut self, family: Family, at: u128) {
        let Some(before) = at.checked_sub(1) else {
            return;
        };
        let Some((&(f, start), &(end, count))) =
            self.segments.range(..=(family, before)).next_back()
        else {
            return;
        };
        if f == family && end >= at {
            self.segments.insert((family, start), (before, count));
            self.segments.insert((family, at), (end, count));
        }
    }

    fn segments_within(&self, iv: Interval) -> Vec<(u128, u128)> {
        self.segments
            .range((iv.family, iv.start)..=(iv.family, iv.end))
            .map(|(&(_, start), &(end, _))| (start, end))
            .collect()
    }

    /// Merges equal-count neighbours from just before `iv` to just after it.
    fn coalesce(&mut self, iv: Interval) {
        let family = iv.family;
        let from = self
            .segments
            .range(..(family, iv.start))
            .next_back()
            .filter(|&(&(f, _), _)| f == family)
            .map_or(iv.start, |(&(_, start), _)| start);
        let to = iv.end.saturating_add(1);
        let touched: Vec<(u128, u128, usize)> = self
            .segments
            .range((family, from)..=(family, to))
            .map(|(&(_, start), &(end, count))| (start, end, count))
            .collect();
        let mut pieces = touched.into_iter();
        let Some(mut current) = pieces.next() else {
            return;
        };
        for piece in pieces {
            if current.1.checked_add(1) == Some(piece.0) && current.2 == piece.2 {
                self.segments.remove(&(family, piece.0));
                current.1 = piece.1;
                self.segments
                    .insert((family, current.0), (current.1, current.2));
            } else {
                current = piece;
            }
        }
    }

    /// Adds a run known to be free, merging it with adjacent runs.
    fn union_insert(&mut self, family: Family, mut start: u128, mut end: u128) {
        if let Some(before) = start.checked_sub(1)
            && let Some((&(f, prev_start), &prev_end)) =
                self.union.range(..=(family, before)).next_back()
            && f == family
            && prev_end == before
        {
            self.union.remove(&(family, prev_start));
            start = prev_start;
        }
        if let Some(after) = end.checked_add(1)
            && let Some(next_end) = self.union.remove(&(family, after))
        {
            end = next_end;
        }
        self.union.insert((family, start), end);
    }

    /// Removes a run known to lie inside one occupied run.
    fn union_remove(&mut self, family: Family, start: u128, end: u128) {
        let Some((&(f, run_start), &run_end)) = self.union.range(..=(family, start)).next_back()
        else {
            return;
        };
        if f != family || run_end < end {
            return;
        }
        self.union.remove(&(family, run_start));
        if run_start < start {
            self.union.insert((family, run_start), start - 1);
        }
        if end < run_end {
            self.union.insert((family, end + 1), run_end);
        }
    }
}

/// The lowest block `[s, s + mask]` aligned on `mask + 1` inside `within` that
/// none of `occupied` touches. `within` must itself be aligned at least that coarsely.
pub(crate) fn lowest_free_block(
    within: Interval,
    mask: u128,
    occupied: &[&Occupancy],
) -> Option<Interval> {
    let mut candidate = align_up(within.start, mask)?;
    'search: loop {
        let end = candidate.checked_add(mask)?;
        if end > within.end {
            return None;
        }
        let block = Interval {
            family: within.family,
            start: candidate,
            end,
        };
        for occupancy in occupied {
            if let Some(taken_end) = occupancy.last_overlap_end(block) {
                // Everything up to `taken_end` is unusable for an aligned block
                // starting at or after `candidate`: jump past it.
                candidate = align_up(taken_end.checked_add(1)?, mask)?;
                continue 'search;
            }
        }
        return Some(block);
    }
}

/// CIDR -> value, with an overlap query that costs O(prefix bits + hits).
#[derive(Clone, Debug)]
pub(crate) struct CidrIndex<V> {
    entries: BTreeMap<Interval, (IpNet, V)>,
}

impl<V> Default for CidrIndex<V> {
    fn default() -> Self {
        CidrIndex {
            entries: BTreeMap::new(),
        }
    }
}

impl<V> CidrIndex<V> {
    pub(crate) fn get_mut(&mut self, net: &IpNet) -> Option<&mut V> {
        self.entries
            .get_mut(&Interval::of(net))
            .map(|(_, value)| value)
    }

    pub(crate) fn entry_or_insert_with(&mut self, net: IpNet, make: impl FnOnce() -> V) -> &mut V {
        &mut self
            .entries
            .entry(Interval::of(&net))
            .or_insert_with(|| (net, make()))
            .1
    }

    pub(crate) fn insert(&mut self, net: IpNet, value: V) {
        self.entries.insert(Interval::of(&net), (net, value));
    }

    pub(crate) fn remove(&mut self, net: &IpNet) -> Option<V> {
        self.entries
            .remove(&Interval::of(net))
            .map(|(_, value)| value)
    }

    /// Every stored CIDR overlapping `net`: its supernets first (largest
    /// first), then the CIDRs starting inside `net` in address order.
    pub(crate) fn overlapping(&self, net: &IpNet) -> Vec<(IpNet, &V)> {
        let iv = Interval::of(net);
        let mut hits: Vec<(IpNet, &V)> = iv
            .supernets()
            .filter(|supernet| supernet.start < iv.start)
            .filter_map(|supernet| self.entries.get(&supernet))
            .map(|(net, value)| (*net, value))
            .collect();
        let from = Interval { end: 0, ..iv };
        let to = Interval {
            start: iv.end,
            end: u128::MAX,
            ..iv
        };
        hits.extend(
            self.entries
                .range(from..=to)
                .map(|(_, (net, value))| (*net, value)),
        );
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::host_mask;
    use proptest::prelude::*;

    fn iv(start: u128, end: u128) -> Interval {
        Interval {
            family: Family::V4,
            start,
            end,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn runs(o: &Occupancy) -> Vec<(u128, u128)> {
        o.union.iter().map(|(&(_, s), &e)| (s, e)).collect()
    }

    #[test]
    fn overlapping_occupants_keep_space_until_the_last_leaves() {
        let mut o = Occupancy::new();
        o.add(iv(0, 15));
        o.add(iv(4, 7));
        o.add(iv(16, 31));
        assert_eq!(runs(&o), vec![(0, 31)]);
        o.remove(iv(0, 15));
        assert_eq!(runs(&o), vec![(4, 7), (16, 31)]);
        o.remove(iv(4, 7));
        assert_eq!(runs(&o), vec![(16, 31)]);
        o.remove(iv(16, 31));
        assert!(o.is_empty());
        assert!(o.segments.is_empty());
    }

    #[test]
    fn segments_stay_canonical() {
        let mut o = Occupancy::new();
        o.add(iv(0, 255));
        o.add(iv(16, 31));
        o.remove(iv(16, 31));
        assert_eq!(o.segments.len(), 1);
    }

    #[test]
    fn families_kept_apart() {
        let mut o = Occupancy::new();
        o.add(Interval::of(&net("10.0.0.0/8")));
        assert!(o.is_free(Interval::of(&net("::a00:0/104"))));
        assert!(!o.is_free(Interval::of(&net("10.1.0.0/16"))));
    }

    #[test]
    fn whole_v6_space() {
        let mut o = Occupancy::new();
        let all = Interval::of(&net("::/0"));
        o.add(all);
        o.add(Interval::of(&net("ffff::/16")));
        assert_eq!(
            lowest_free_block(all, host_mask(Family::V6, 64), &[&o]),
            None
        );
        o.remove(all);
        let free = lowest_free_block(all, host_mask(Family::V6, 16), &[&o]).unwrap();
        assert_eq!(free, Interval::of(&net("::/16")));
        o.remove(Interval::of(&net("ffff::/16")));
        assert!(o.is_empty());
    }

    #[test]
    fn gap_search_jumps_runs() {
        let mut o = Occupancy::new();
        let pool = Interval::of(&net("10.0.0.0/16"));
        for i in 0..100u128 {
            o.add(iv(pool.start + i * 256, pool.start + i * 256 + 255));
        }
        assert_eq!(o.union.len(), 1);
        let free = lowest_free_block(pool, 255, &[&o]).unwrap();
        assert_eq!(free.start, pool.start + 100 * 256);
    }

    #[test]
    fn index_finds_supernets_and_subnets() {
        let mut index = CidrIndex::default();
        index.insert(net("10.0.0.0/8"), "big");
        index.insert(net("10.1.2.0/24"), "small");
        index.insert(net("10.1.0.0/16"), "mid");
        index.insert(net("11.0.0.0/8"), "other");
        index.insert(net("::a00:0/104"), "v6");
        let hits: Vec<_> = index
            .overlapping(&net("10.1.0.0/16"))
            .into_iter()
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(hits, vec!["big", "mid", "small"]);
        let hits: Vec<_> = index
            .overlapping(&net("10.0.0.0/8"))
            .into_iter()
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(hits, vec!["big", "mid", "small"]);
        assert!(index.overlapping(&net("12.0.0.0/8")).is_empty());
    }

    proptest! {
        /// The occupancy and the gap search agree with a plain per-address count.
        #[test]
        fn matches_brute_force(ops in proptest::collection::vec((0u128..64, 0u32..4, any::<bool>()), 1..60)) {
            let mut o = Occupancy::new();
            let mut counts = [0usize; 64];
            let mut live: Vec<Interval> = Vec::new();
            for (at, bits, add) in ops {
                let mask = (1u128 << bits) - 1;
                let start = at & !mask;
                let piece = iv(start, (start + mask).min(63));
                if add || live.is_empty() {
                    o.add(piece);
                    live.push(piece);
                    for c in &mut counts[piece.start as usize..=piece.end as usize] { *c += 1; }
                } else {
                    let gone = live.remove((at as usize) % live.len());
                    o.remove(gone);
                    for c in &mut counts[gone.start as usize..=gone.end as usize] { *c -= 1; }
                }
                for (addr, &c) in counts.iter().enumerate() {
                    prop_assert_eq!(o.is_free(iv(addr as u128, addr as u128)), c == 0);
                }
                for bits in 0..4u32 {
                    let mask = (1u128 << bits) - 1;
                    let expected = (0..64u128).step_by(1 << bits)
                        .find(|&s| counts[s as usize..=(s + mask) as usize].iter().all(|&c| c == 0));
                    let found = lowest_free_block(iv(0, 63), mask, &[&o]).map(|b| b.start);
                    prop_assert_eq!(found, expected);
                }
            }
        }
    }
}
