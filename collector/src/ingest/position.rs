//! Where a device's journal stands against what the collector stored, before the chain walk:
//!
//! - The collector is behind (restored from a backup): the device says the collector
//!   acknowledged more than it now holds, and the batch starts past the collector's head.
//!   Storing it would leave a permanent gap where the lost records belong, so nothing is stored
//!   and the ack names the collector's position; the agent resends from there.
//! - The device went back: it reports a journal head below what the collector stored (its
//!   journal was deleted, replaced, or its tail cut), or sends a different record 1 (its chain
//!   restarted). One `chain_regressed` alert per cause: the detail names the stored head only,
//!   so a retry, a heartbeat, or the rest of the restarted chain adds to its count only.

use posguard_proto::uplink::UplinkBatch;

use super::{Prepared, Run};
use crate::alerts::AlertKind;
use crate::store::{DeviceRow, StoreError};

impl Run<'_> {
    /// Whether the collector lost records the device had shipped and this batch would jump
    /// over them.
    pub(super) fn collector_behind(&self, device: &DeviceRow, prepared: &Prepared) -> bool {
        let stored = device.highest_stored;
        let Some(status) = &prepared.batch.status else {
            return false;
        };
        let first = prepared.records.first().map(|(p, _)| p.record().seq());
        let behind =
            status.journal_shipped > stored && first.is_some_and(|f| f > stored.saturating_add(1));
        if behind {
            tracing::warn!(
                device = %self.id,
                stored,
                device_says_acknowledged = status.journal_shipped,
                batch_from = first.unwrap_or(0),
                "collector holds less than it acknowledged to this device (restored from a backup?): asking it to resend"
            );
        }
        behind
    }

    /// Raises `chain_regressed` if the device reports a journal head below the stored one.
    pub(super) fn check_head(&mut self, batch: &UplinkBatch) -> Result<(), StoreError> {
        let Some(status) = &batch.status else {
            return Ok(());
        };
        if status.journal_head < self.stored_before {
            tracing::warn!(device = %self.id, stored = self.stored_before, reported_head = status.journal_head, "device journal head below what is stored");
            self.regressed()?;
        }
        Ok(())
    }

    /// One `chain_regressed` alert for the device's journal falling below the stored head.
    pub(super) fn regressed(&mut self) -> Result<(), StoreError> {
        self.regressed = true;
        let detail = self.regression_detail();
        self.alert_once(AlertKind::ChainRegressed, detail)
    }

    /// Whether `chain_regressed` was raised for the current stored head: forks that follow
    /// (the rest of the restarted chain, resent after an agent restart) are that same cause.
    pub(super) fn regression_known(&mut self) -> Result<bool, StoreError> {
        if !self.regressed {
            let detail = self.regression_detail();
            self.regressed = self
                .tx
                .has_alert(&self.id, AlertKind::ChainRegressed, &detail)?;
        }
        Ok(self.regressed)
    }

    fn regression_detail(&self) -> String {
        format!(
            "the device's journal went back below seq {} stored here (deleted, replaced, or its tail cut): \
             it reports a lower head or restarted its chain",
            self.stored_before
        )
    }

    /// Raises an alert for a cause named by its detail: the same cause again (a refused batch
    /// sent again, a heartbeat of a regressed device) adds to the open or acknowledged alert's
    /// count instead of a new alert; after it was resolved, it opens a new one.
    pub(super) fn alert_once(&mut self, kind: AlertKind, detail: String) -> Result<(), StoreError> {
        self.alert(kind, detail)
    }
}
