//! Reads the alert rules need beyond counting events: the role a clerk was enrolled with on a
//! device (roles are fixed at enrollment), from the device's stored `clerk_enrolled` records.

use posguard_proto::event::{EventKind, Role};
use posguard_proto::record::Record;
use rusqlite::{Connection, params};

use crate::store::StoreError;

/// The role of `clerk`'s latest enrollment on `device_id` stored before `before_seq`; `None`
/// if none is stored (enrolled before the records this collector holds).
pub(super) fn clerk_role(
    conn: &Connection,
    device_id: &str,
    clerk: &str,
    before_seq: u64,
) -> Result<Option<Role>, StoreError> {
    // A terminal enrolls a few dozen clerks over its life: every enrollment is read, newest
    // first, until the clerk's.
    let mut stmt = conn.prepare_cached(
        "SELECT raw FROM records
         WHERE device_id = ?1 AND kind = 'clerk_enrolled' AND seq < ?2 ORDER BY seq DESC",
    )?;
    let mut rows = stmt.query(params![
        device_id,
        i64::try_from(before_seq).unwrap_or(i64::MAX)
    ])?;
    while let Some(row) = rows.next()? {
        let raw: Vec<u8> = row.get(0)?;
        let event = Record::from_bytes(&raw)
            .and_then(|r| r.event())
            .map_err(|_| StoreError::Corrupt("stored record"))?;
        if let EventKind::ClerkEnrolled { clerk: c, role, .. } = event.kind
            && c.as_str() == clerk
        {
            return Ok(Some(role));
        }
    }
    Ok(None)
}
