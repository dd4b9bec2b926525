//! Records at or below the verified head (duplicates, forks, reorderings) and checkpoints.

use posguard_proto::cert::JournalKeyCert;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::record::Record;
use posguard_proto::verify::{ChainVerifier, VerifyReason};

use super::{Fail, Run};
use crate::alerts::AlertKind;
use crate::store::StoreError;

impl Run<'_> {
    /// A record at or below the verified head: a duplicate, a fork, or a reordering.
    pub(super) fn old_record(
        &mut self,
        v: &ChainVerifier,
        record: &Record,
    ) -> Result<Result<(), Fail>, StoreError> {
        let seq = record.seq();
        let stored = match self.batch_hashes.get(&seq) {
            Some(h) => Some(*h),
            None => self.tx.record_hash(&self.id, seq)?,
        };
        match stored {
            Some(h) if &h == record.hash() => {
                self.report.duplicates = self.report.duplicates.saturating_add(1);
                Ok(Ok(()))
            }
            Some(_) => self.fork(record),
            None if v
                .pending_gaps()
                .iter()
                .any(|g| g.first <= seq && seq <= g.last) =>
            {
                // It fills a gap this chain jumped over: the batch was out of order.
                Ok(Err(Fail {
                    seq: Some(seq),
                    reason: VerifyReason::Reordered {
                        expected: v.head().seq.saturating_add(1),
                    },
                }))
            }
            // Below the head, not held, not pending: declared dropped. Nothing to link it to.
            None => Ok(Ok(())),
        }
    }

    /// A validly signed second record for a held seq is a fork: kept aside, alerted.
    fn fork(&mut self, record: &Record) -> Result<Result<(), Fail>, StoreError> {
        let seq = record.seq();
        let mut certs = Vec::new();
        for raw in self.tx.certs(&self.id, seq)? {
            certs.push(JournalKeyCert::from_bytes(&raw).map_err(|_| StoreError::Corrupt("cert"))?);
        }
        let anchor = ChainHead {
            seq: seq.saturating_sub(1),
            hash: *record.prev_hash(),
        };
        let checked = ChainVerifier::new(&self.peer.dik, &self.peer.device_id, &certs, anchor)
            .and_then(|mut fv| fv.push(record));
        if let Err(e) = checked {
            return Ok(Err(e.into()));
        }
        let new = self
            .tx
            .put_fork(&self.id, seq, record.hash(), record.as_bytes(), self.now_ms)?;
        if new && seq == 1 && !self.regressed {
            // A different first record: the device's chain started again from the genesis.
            self.regressed()?;
        } else if new && !self.fork_alerted && !self.regression_known()? {
            // One alert per batch: every record of a forked stretch is kept aside, one alert
            // names where it starts.
            self.fork_alerted = true;
            self.alert(
                AlertKind::Fork,
                format!("second record for seq {seq} with a different hash, kept aside"),
            )?;
        }
        Ok(Ok(()))
    }

    /// Stores a checkpoint whose head hash must be `hash`, after its signature and the
    /// counter's monotonicity are checked. An exact resend is ignored.
    pub(super) fn checkpoint(
        &mut self,
        cp: &Checkpoint,
        raw: &[u8],
        hash: &[u8; 32],
    ) -> Result<Result<(), Fail>, StoreError> {
        if self.tx.has_checkpoint(&self.id, raw)? {
            return Ok(Ok(()));
        }
        if let Err(e) = cp.verify(&self.peer.dik, &self.peer.device_id, Some(hash)) {
            return Ok(Err(e.into()));
        }
        // Checked against its neighbours in counter order, not only the newest: an agent resending
        // from below the collector's head (a lost acknowledgement, a refused batch sent again)
        // can carry an older checkpoint the collector never saw (made at a start whose records
        // were already shipped). Its counter is lower than the newest, but so is its seq: that is
        // no rollback. A rollback shows as a higher counter at a lower seq, on either side.
        let (below, above) = self
            .tx
            .checkpoints_around(&self.id, cp.fields().nv_counter)?;
        let decode = |raw: Vec<u8>| {
            Checkpoint::from_bytes(&raw).map_err(|_| StoreError::Corrupt("checkpoint"))
        };
        if let Some(below) = below.map(decode).transpose()?
            && let Err(e) = cp.check_follows(&below)
        {
            return Ok(Err(e.into()));
        }
        if let Some(above) = above.map(decode).transpose()?
            && let Err(e) = above.check_follows(cp)
        {
            return Ok(Err(e.into()));
        }
        let f = cp.fields();
        self.tx
            .put_checkpoint(&self.id, f.seq, f.nv_counter, raw, self.now_ms)?;
        Ok(Ok(()))
    }
}
