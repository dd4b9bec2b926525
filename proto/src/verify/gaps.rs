//! Gaps a verifier has seen but not yet matched to a journal-overflow event.
//!
//! When unshipped records would overflow its bound, the journal drops some (routine ones first)
//! and appends a signed [`Overflow`] event naming the range and count. A verifier that allows
//! declared gaps accepts a jump in sequence numbers provisionally, remembers the missing range,
//! and clears it when a later overflow event covers it. A gap never covered stays an error.

use serde::{Deserialize, Serialize};

use super::VerifyReason;
use crate::event::Overflow;

/// Most separate pending gaps a verifier holds.
pub const MAX_PENDING_GAPS: usize = 1024;

/// An inclusive range of missing sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GapRange {
    /// First missing seq.
    pub first: u64,
    /// Last missing seq.
    pub last: u64,
}

impl GapRange {
    fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }
}

/// Pending gaps, sorted, disjoint, each `first <= last`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gaps(Vec<GapRange>);

impl Gaps {
    /// Builds from saved ranges, refusing unsorted, overlapping or too many.
    pub(crate) fn from_ranges(ranges: Vec<GapRange>, below: u64) -> Option<Self> {
        if ranges.len() > MAX_PENDING_GAPS {
            return None;
        }
        let mut floor = 1u64;
        for r in &ranges {
            if r.first < floor || r.last < r.first || r.last >= below {
                return None;
            }
            floor = r.last.checked_add(2)?;
        }
        Some(Self(ranges))
    }

    pub(crate) fn as_slice(&self) -> &[GapRange] {
        &self.0
    }

    pub(crate) fn first(&self) -> Option<&GapRange> {
        self.0.first()
    }

    /// Adds a gap above every pending one.
    pub(crate) fn push(&mut self, gap: GapRange) -> Result<(), VerifyReason> {
        if self.0.len() >= MAX_PENDING_GAPS {
            return Err(VerifyReason::TooManyGaps);
        }
        self.0.push(gap);
        Ok(())
    }

    /// Removes what `overflow` (found in the record at `at_seq`) declares dropped. The range must
    /// lie before `at_seq`, and the records found missing in it cannot outnumber the declared
    /// count (fewer is fine: the collector may hold some that were shipped before the drop).
    pub(crate) fn explain(&mut self, overflow: &Overflow, at_seq: u64) -> Result<(), VerifyReason> {
        let declared = GapRange {
            first: overflow.first_seq,
            last: overflow.last_seq,
        };
        if declared.first == 0
            || declared.last < declared.first
            || declared.last >= at_seq
            || overflow.dropped > declared.len()
        {
            return Err(VerifyReason::OverflowMismatch);
        }
        let mut kept = Vec::with_capacity(self.0.len().saturating_add(1));
        let mut removed = 0u64;
        for gap in &self.0 {
            let lo = gap.first.max(declared.first);
            let hi = gap.last.min(declared.last);
            if lo > hi {
                kept.push(*gap);
                continue;
            }
            removed = removed.saturating_add(
                GapRange {
                    first: lo,
                    last: hi,
                }
                .len(),
            );
            if gap.first < lo {
                kept.push(GapRange {
                    first: gap.first,
                    last: lo.saturating_sub(1),
                });
            }
            if hi < gap.last {
                kept.push(GapRange {
                    first: hi.saturating_add(1),
                    last: gap.last,
                });
            }
        }
        if removed > overflow.dropped {
            return Err(VerifyReason::OverflowMismatch);
        }
        if kept.len() > MAX_PENDING_GAPS {
            return Err(VerifyReason::TooManyGaps);
        }
        self.0 = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overflow(first_seq: u64, last_seq: u64, dropped: u64) -> Overflow {
        Overflow {
            first_seq,
            last_seq,
            dropped,
            dropped_critical: 0,
        }
    }

    fn gaps(ranges: &[(u64, u64)]) -> Gaps {
        Gaps(
            ranges
                .iter()
                .map(|&(first, last)| GapRange { first, last })
                .collect(),
        )
    }

    #[test]
    fn covering_overflow_clears_gaps() {
        let mut g = gaps(&[(3, 4), (7, 9)]);
        g.explain(&overflow(2, 10, 5), 20).unwrap();
        assert!(g.as_slice().is_empty());
    }

    /// The agent removes a dropped range in small batches after committing the overflow event;
    /// a kill part way leaves some of the declared records stored. Fewer missing than declared
    /// is accepted.
    #[test]
    fn a_drop_carried_out_only_in_part_is_accepted() {
        let mut g = gaps(&[(3, 4)]);
        g.explain(&overflow(2, 10, 5), 20).unwrap();
        assert!(g.as_slice().is_empty());
    }

    #[test]
    fn partial_cover_splits() {
        let mut g = gaps(&[(3, 9)]);
        g.explain(&overflow(5, 6, 2), 20).unwrap();
        assert_eq!(g, gaps(&[(3, 4), (7, 9)]));
    }

    #[test]
    fn more_missing_than_declared_is_refused() {
        let mut g = gaps(&[(3, 9)]);
        assert_eq!(
            g.explain(&overflow(3, 9, 6), 20),
            Err(VerifyReason::OverflowMismatch)
        );
        assert_eq!(g, gaps(&[(3, 9)]), "unchanged after a refusal");
    }

    #[test]
    fn range_must_precede_the_event_and_be_sane() {
        let mut g = gaps(&[(3, 4)]);
        for bad in [
            overflow(3, 20, 2),
            overflow(5, 4, 0),
            overflow(0, 4, 2),
            overflow(3, 4, 3),
        ] {
            assert_eq!(g.explain(&bad, 20), Err(VerifyReason::OverflowMismatch));
        }
    }

    #[test]
    fn saved_ranges_are_checked() {
        let ok = vec![
            GapRange { first: 2, last: 3 },
            GapRange { first: 5, last: 5 },
        ];
        assert!(Gaps::from_ranges(ok, 6).is_some());
        let touching = vec![
            GapRange { first: 2, last: 3 },
            GapRange { first: 4, last: 5 },
        ];
        assert!(Gaps::from_ranges(touching, 9).is_none());
        let above_head = vec![GapRange { first: 2, last: 9 }];
        assert!(Gaps::from_ranges(above_head, 9).is_none());
    }
}
