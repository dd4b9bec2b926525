//! A device's life at the collector: decommissioned by operations, and re-provisioned under the
//! same id with a new chain. The rule, over one store transaction each:
//!
//! - [`decommission`] marks the id decommissioned (the CLI revokes its certificates first) and
//!   stops `silent` alerts for it; its chain stays where it is, verifiable and queryable.
//! - [`on_issued`] runs whenever a certificate is issued with a token or by `ca sign-csr`
//!   (not on renewal). If the id was decommissioned, or its stored chain was signed under
//!   another identity key (the terminal's TPM or mainboard was replaced), the stored chain
//!   cannot continue: it is archived under `<id>@gen<N>` ([`archived_id`]), where `restore`
//!   still verifies it, and the id starts generation N+1, accepted from seq 1 under the new key.
//!   The same key and an active id keep the chain (a re-run of provisioning on the same TPM).
//!   A new key on an id that was not decommissioned also raises a `device_replaced` alert.
//!
//! Archiving renames rows rather than adding a generation column: every query, the ingest
//! path and the store's indexes stay keyed by the device id alone.

use posguard_proto::event::Severity;

use crate::alerts::{AlertKind, NewAlert};
use crate::pki::issue::Issued;
use crate::store::lifecycle::archived_id;
use crate::store::{LifeState, LifecycleRow, StoreError, StoreTx};

/// What [`on_issued`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewGeneration {
    /// The id's chain continues (first provisioning, or the same key again).
    Continues,
    /// The stored chain was archived under this id; the device starts a new chain.
    Archived(String),
}

/// The id's lifecycle row, or the implicit one.
pub fn current(tx: &mut dyn StoreTx, id: &str, now_ms: u64) -> Result<LifecycleRow, StoreError> {
    Ok(tx
        .lifecycle(id)?
        .unwrap_or_else(|| LifecycleRow::first(id, now_ms)))
}

/// Marks `id` decommissioned with `reason`. Idempotent: a second call keeps the first time and
/// reason and returns the row as stored.
pub fn decommission(
    tx: &mut dyn StoreTx,
    id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<LifecycleRow, StoreError> {
    let mut row = current(tx, id, now_ms)?;
    if row.state == LifeState::Decommissioned {
        return Ok(row);
    }
    row.state = LifeState::Decommissioned;
    row.reason = Some(reason.to_owned());
    row.changed_ms = now_ms;
    tx.put_lifecycle(&row)?;
    // A decommissioned terminal is expected to stay quiet: no `silent` alert for it.
    if let Some(mut device) = tx.device(id)? {
        device.silent_alerted = true;
        tx.put_device(&device)?;
    }
    Ok(row)
}

/// The uncompressed P-256 point of the issued certificate's key.
fn issued_point(issued: &Issued) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(issued.certificate_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// After a certificate was issued to `id` by enrollment (token or offline): starts a new
/// generation where the stored chain cannot continue (module docs).
pub fn on_issued(
    tx: &mut dyn StoreTx,
    id: &str,
    issued: &Issued,
    now_ms: u64,
) -> Result<NewGeneration, StoreError> {
    let row = current(tx, id, now_ms)?;
    let decommissioned = row.state == LifeState::Decommissioned;
    let device = tx.device(id)?;
    let new_key = issued_point(issued);
    let other_key = device
        .as_ref()
        .and_then(|d| d.dik.as_ref())
        .is_some_and(|stored| new_key.as_ref() != Some(stored));
    let next = LifecycleRow {
        device_id: id.to_owned(),
        state: LifeState::Active,
        generation: row.generation.saturating_add(1),
        reason: None,
        changed_ms: now_ms,
    };
    if device.is_none() {
        // Nothing stored under the id: a decommissioned id that never shipped starts over.
        if decommissioned {
            tx.put_lifecycle(&next)?;
        }
        return Ok(NewGeneration::Continues);
    }
    if !decommissioned && !other_key {
        return Ok(NewGeneration::Continues);
    }
    let archived = archived_id(id, row.generation);
    tx.archive_device(id, &archived)?;
    tx.put_lifecycle(&LifecycleRow {
        device_id: archived.clone(),
        state: if decommissioned {
            LifeState::Decommissioned
        } else {
            LifeState::Replaced
        },
        generation: row.generation,
        reason: row.reason,
        changed_ms: now_ms,
    })?;
    tx.put_lifecycle(&next)?;
    if !decommissioned {
        // Nobody said this terminal left service: a swapped mainboard, or someone holding a
        // token for the id. Operations should know either way.
        tx.put_alert(&NewAlert {
            device_id: Some(id.to_owned()),
            kind: AlertKind::DeviceReplaced,
            severity: Severity::Warning,
            detail: format!(
                "certificate issued for another identity key while the device was not decommissioned: its chain is archived as {archived}, generation {} starts",
                next.generation
            ),
            at_ms: now_ms,
        })?;
    }
    tracing::info!(device = id, archived = %archived, generation = next.generation, "re-provisioned: the stored chain is archived, a new one starts");
    Ok(NewGeneration::Archived(archived))
}

#[cfg(test)]
mod tests;
