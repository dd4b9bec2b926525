//! The collector's acknowledgement: where it stands is the truth for this journal, both ways.
//! Records it acknowledged may be pruned; after it was restored from a backup it acknowledges
//! less than before, and the records it lost become unshipped again and are resent from its
//! `next_expected`. A position beyond this journal's head means the journal went back (deleted,
//! replaced, or its tail cut): that is journaled as a finding.

use std::sync::atomic::Ordering;

use posguard_proto::event::{EventKind, TamperFinding};
use posguard_proto::text::ShortCode;
use posguard_proto::uplink::UplinkAck;

use super::Shipper;

impl Shipper {
    pub(super) async fn acknowledged(
        &mut self,
        ack: &UplinkAck,
    ) -> Result<(), crate::journal::JournalError> {
        let before = self.deps.journal.status().await?;
        if ack.highest_stored > before.head_seq {
            self.collector_ahead(ack.highest_stored, before.head_seq)
                .await;
        } else if ack.highest_stored < before.shipped_seq {
            tracing::warn!(
                collector = ack.highest_stored,
                acknowledged_before = before.shipped_seq,
                "uplink: the collector holds less than it acknowledged (restored from a backup?); resending from its position"
            );
        }
        // The collector's position is the truth both ways: records it no longer holds become
        // unshipped again and are resent from `next_expected` (as long as they are stored here).
        self.deps.journal.ack(ack.highest_stored).await?;
        self.next_seq = ack.next_expected.max(ack.highest_stored.saturating_add(1));
        let stats = &self.deps.stats;
        stats.batches_acked.fetch_add(1, Ordering::Relaxed);
        stats.acked_seq.store(ack.highest_stored, Ordering::Relaxed);
        Ok(())
    }

    /// The collector stored records beyond this journal's head: the journal went back (deleted,
    /// replaced, or its tail cut). Journaled once per position the collector reports.
    pub(super) async fn collector_ahead(&mut self, collector: u64, head: u64) {
        if self.ahead_reported == Some(collector) {
            return;
        }
        self.ahead_reported = Some(collector);
        tracing::error!(
            collector,
            head,
            "uplink: the collector holds records beyond this journal's head: the journal went back"
        );
        let finding = match ShortCode::new("behind_collector") {
            Ok(code) => TamperFinding::Other(code),
            Err(_) => TamperFinding::BrokenChain {
                seq: head.saturating_add(1),
            },
        };
        self.journal(EventKind::TamperDetected { finding }).await;
    }
}
