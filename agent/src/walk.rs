//! Reading a sled tree in key order with one lookup per entry, so that sled's cache stays near
//! its configured size.
//!
//! sled 0.34 evicts lazily: each page access is queued in one of 256 shards, and a shard runs its
//! evictions only when its queue of 64 accesses is full. A plain `Tree::iter` touches each leaf
//! page once, so one pass over a large tree queues about one access per page, fills no queue
//! and evicts nothing: the whole tree stays in memory. Measured with a 4 MiB cache
//! (docs/PERFORMANCE.md, "Memory"): one `iter()` pass over 200,000 records of 280 bytes leaves
//! 55 MiB of live heap, one lookup per entry leaves 3 MiB more than opening the database did,
//! at the same speed. Every bulk read of the agent's sled trees goes through [`walk`].

use std::ops::Bound;

use sled::IVec;

/// The entries of `tree` between `lo` and `hi`, in key order; see the module comment.
///
/// Like `Tree::range`, this is not a snapshot: an entry inserted after the walk passed its key
/// is not seen, one inserted ahead of it is. After an error the walk ends.
pub(crate) fn walk(tree: &sled::Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Walk {
    let owned = |b: Bound<&[u8]>| match b {
        Bound::Included(k) => Bound::Included(IVec::from(k)),
        Bound::Excluded(k) => Bound::Excluded(IVec::from(k)),
        Bound::Unbounded => Bound::Unbounded,
    };
    Walk {
        tree: tree.clone(),
        lo: owned(lo),
        hi: owned(hi),
        done: false,
    }
}

/// Every entry of `tree`, in key order.
pub(crate) fn walk_all(tree: &sled::Tree) -> Walk {
    walk(tree, Bound::Unbounded, Bound::Unbounded)
}

/// The iterator [`walk`] returns.
pub(crate) struct Walk {
    tree: sled::Tree,
    lo: Bound<IVec>,
    hi: Bound<IVec>,
    done: bool,
}

impl Iterator for Walk {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // A fresh lookup from the root for every entry: the accesses are what let sled evict.
        let found = self
            .tree
            .range::<IVec, _>((self.lo.clone(), self.hi.clone()))
            .next();
        match found {
            Some(Ok((key, value))) => {
                self.lo = Bound::Excluded(key.clone());
                Some(Ok((key, value)))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        for i in 0u32..300 {
            t.insert(i.to_be_bytes(), &i.to_le_bytes()).unwrap();
        }
        t
    }

    fn keys(w: Walk) -> Vec<u32> {
        w.map(|r| {
            let (k, v) = r.unwrap();
            let key = u32::from_be_bytes(k.as_ref().try_into().unwrap());
            assert_eq!(v.as_ref(), key.to_le_bytes());
            key
        })
        .collect()
    }

    #[test]
    fn a_walk_yields_what_range_yields_for_every_kind_of_bound() {
        let t = tree();
        assert_eq!(keys(walk_all(&t)), (0..300).collect::<Vec<_>>());
        let (a, b) = (10u32.to_be_bytes(), 20u32.to_be_bytes());
        type Range<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);
        let cases: [Range; 5] = [
            (Bound::Included(&a), Bound::Excluded(&b)),
            (Bound::Excluded(&a), Bound::Included(&b)),
            (Bound::Unbounded, Bound::Included(&a)),
            (Bound::Included(&b), Bound::Unbounded),
            (Bound::Included(&b), Bound::Excluded(&a)),
        ];
        for (lo, hi) in cases {
            let expected: Vec<u32> = t
                .range::<&[u8], _>((lo, hi))
                .map(|r| u32::from_be_bytes(r.unwrap().0.as_ref().try_into().unwrap()))
                .collect();
            assert_eq!(keys(walk(&t, lo, hi)), expected, "{lo:?}..{hi:?}");
        }
    }

    #[test]
    fn entries_removed_or_added_ahead_of_the_walk_are_seen_as_they_are_then() {
        let t = tree();
        let mut w = walk_all(&t);
        assert!(w.next().is_some());
        t.remove(1u32.to_be_bytes()).unwrap();
        t.insert(1000u32.to_be_bytes(), &1000u32.to_le_bytes())
            .unwrap();
        let rest = keys(w);
        assert_eq!(rest.first(), Some(&2));
        assert_eq!(rest.last(), Some(&1000));
        assert_eq!(rest.len(), 299);
    }
}
