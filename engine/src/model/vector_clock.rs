//! Version vectors: author -> highest contiguous seq held. They summarise what a node has, so two
//! nodes can tell exactly which per-author ranges the other lacks.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::model::ids::{AuthorId, EventId};

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Both hold the same events.
    Equal,
    /// The left holds a strict subset of the right's events.
    Before,
    /// The left holds a strict superset of the right's events.
    After,
    /// Each holds events the other lacks.
    Concurrent,
}

/// A contiguous range of one author's seqs, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    /// The author.
    pub author: AuthorId,
    /// First seq of the range.
    pub first: u64,
    /// Last seq of the range.
    pub last: u64,
}

impl SeqRange {
    /// Number of events in the range.
    pub fn len(&self) -> u64 {
        self.last + 1 - self.first
    }

    /// Whether the range is empty (never, for ranges this module returns).
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// author -> highest contiguous seq. Authors at 0 are not stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(BTreeMap<AuthorId, u64>);

impl VersionVector {
    /// The empty vector.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The seq held for an author (0 when none).
    pub fn get(&self, author: &AuthorId) -> u64 {
        self.0.get(author).copied().unwrap_or(0)
    }

    /// Sets an author's seq (0 removes it).
    pub fn set(&mut self, author: AuthorId, seq: u64) {
        if seq == 0 {
            self.0.remove(&author);
        } else {
            self.0.insert(author, seq);
        }
    }

    /// Up to `limit` authors whose key sorts after `after` (all, without it), in key order, and
    /// whether more remain after them.
    pub fn page_after(&self, after: Option<&AuthorId>, limit: usize) -> (Vec<(AuthorId, u64)>, bool) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.0.range((start, Bound::Unbounded));
        let page: Vec<(AuthorId, u64)> = range.by_ref().take(limit).map(|(author, seq)| (*author, *seq)).collect();
        (page, range.next().is_some())
    }

    /// Raises an author's seq to at least `seq`.
    pub fn raise(&mut self, author: AuthorId, seq: u64) {
        if seq > self.get(&author) {
            self.0.insert(author, seq);
        }
    }

    /// Whether the event (author, seq) is included.
    pub fn contains(&self, author: &AuthorId, seq: u64) -> bool {
        seq <= self.get(author)
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (author, seq) in &other.0 {
            self.raise(*author, *seq);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut less = false;
        let mut greater = false;
        for author in self.0.keys().chain(other.0.keys()) {
            match self.get(author).cmp(&other.get(author)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The ranges `self` holds that `other` lacks, per author in key order.
    pub fn missing_in(&self, other: &VersionVector) -> Vec<SeqRange> {
        self.0
            .iter()
            .filter(|(author, seq)| **seq > other.get(author))
            .map(|(author, seq)| SeqRange { author: *author, first: other.get(author) + 1, last: *seq })
            .collect()
    }

    /// Total events held (sum of seqs).
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Iterates (author, seq) in author order.
    pub fn iter(&self) -> impl Iterator<Item = (&AuthorId, &u64)> {
        self.0.iter()
    }

    /// Number of authors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no author is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(AuthorId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (AuthorId, u64)>>(iter: T) -> Self {
        let mut vector = VersionVector::new();
        for (author, seq) in iter {
            vector.raise(author, seq);
        }
        vector
    }
}

/// The head of one author's chain in one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Highest contiguous seq stored.
    pub seq: u64,
    /// Link hash of the event at that seq: what the next event's `prev` must be.
    pub link: EventId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(n: u8) -> AuthorId {
        AuthorId([n; 32])
    }

    #[test]
    fn pages_cover_every_author_once_in_key_order() {
        let mut v = VersionVector::new();
        for n in [9u8, 3, 7, 1, 5] {
            v.set(a(n), u64::from(n) * 10);
        }
        let (first, more) = v.page_after(None, 2);
        assert_eq!(first, vec![(a(1), 10), (a(3), 30)]);
        assert!(more);
        let (second, more) = v.page_after(Some(&a(3)), 2);
        assert_eq!(second, vec![(a(5), 50), (a(7), 70)]);
        assert!(more);
        let (last, more) = v.page_after(Some(&a(7)), 2);
        assert_eq!(last, vec![(a(9), 90)]);
        assert!(!more);
        // After a key the vector does not hold: from the next one.
        assert_eq!(v.page_after(Some(&a(4)), 1), (vec![(a(5), 50)], true));
        assert_eq!(v.page_after(Some(&a(9)), 5), (vec![], false));
        assert_eq!(v.page_after(None, 5).0.len(), 5);
    }

    fn vector() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u8..4, 0u64..6), 0..5)
            .prop_map(|pairs| pairs.into_iter().map(|(n, s)| (a(n), s)).collect())
    }

    #[test]
    fn compare_and_missing() {
        let x: VersionVector = [(a(1), 3), (a(2), 1)].into_iter().collect();
        let y: VersionVector = [(a(1), 1), (a(3), 2)].into_iter().collect();
        assert_eq!(x.compare(&y), Causality::Concurrent);
        assert_eq!(
            x.missing_in(&y),
            vec![SeqRange { author: a(1), first: 2, last: 3 }, SeqRange { author: a(2), first: 1, last: 1 }]
        );
        let mut z = x.clone();
        z.merge(&y);
        assert_eq!(x.compare(&z), Causality::Before);
        assert_eq!(z.compare(&y), Causality::After);
        assert_eq!(z.compare(&z.clone()), Causality::Equal);
    }

    proptest! {
        #[test]
        fn merge_is_a_join(x in vector(), y in vector(), z in vector()) {
            let mut xy = x.clone(); xy.merge(&y);
            let mut yx = y.clone(); yx.merge(&x);
            prop_assert_eq!(&xy, &yx);
            let mut xy_z = xy.clone(); xy_z.merge(&z);
            let mut yz = y.clone(); yz.merge(&z);
            let mut x_yz = x.clone(); x_yz.merge(&yz);
            prop_assert_eq!(&xy_z, &x_yz);
            let mut xx = x.clone(); xx.merge(&x);
            prop_assert_eq!(&xx, &x);
        }

        #[test]
        fn missing_ranges_bring_other_up_to_merge(x in vector(), y in vector()) {
            let mut patched = y.clone();
            for range in x.missing_in(&y) {
                prop_assert_eq!(range.first, y.get(&range.author) + 1);
                patched.set(range.author, range.last);
            }
            let mut merged = x.clone(); merged.merge(&y);
            prop_assert_eq!(patched, merged);
        }
    }
}
