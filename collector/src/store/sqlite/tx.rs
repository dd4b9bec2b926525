//! [`StoreTx`] over a SQLite transaction.

use posguard_proto::text::DeviceId;
use posguard_proto::uplink::{CommandKind, SignedCommand};
use rusqlite::{OptionalExtension, Transaction, params};

use super::read::{DEVICE_COLUMNS, device_from_row};
use crate::alerts::{AlertKind, NewAlert, Raised};
use crate::store::{
    DeviceRow, EnrollmentRow, LifecycleRow, RecordRow, StoreError, StoreTx, TokenRow,
};

pub(super) struct SqliteTx<'a, 'c>(pub(super) &'a Transaction<'c>);

impl SqliteTx<'_, '_> {
    /// Executes `sql` through the connection's statement cache (ingest runs the same few
    /// statements for every record).
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    /// One row of `sql`, through the statement cache.
    fn row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }
}

impl StoreTx for SqliteTx<'_, '_> {
    fn savepoint(&mut self, f: crate::store::TxFn<'_>) -> Result<(), StoreError> {
        self.0.execute_batch("SAVEPOINT part")?;
        match f(self) {
            Ok(()) => {
                self.0.execute_batch("RELEASE part")?;
                Ok(())
            }
            Err(e) => {
                self.0.execute_batch("ROLLBACK TO part; RELEASE part")?;
                Err(e)
            }
        }
    }

    fn device(&mut self, device_id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1");
        Ok(self
            .row(&sql, params![device_id], device_from_row)
            .optional()?)
    }

    fn put_device(&mut self, d: &DeviceRow) -> Result<(), StoreError> {
        let state = match &d.chain_state {
            Some(s) => {
                Some(serde_json::to_string(s).map_err(|_| StoreError::Corrupt("chain state"))?)
            }
            None => None,
        };
        self.exec(
            &format!(
                "INSERT OR REPLACE INTO devices ({DEVICE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                d.device_id,
                d.first_seen_ms,
                d.last_seen_ms,
                d.cert_not_after_unix,
                state,
                d.highest_stored,
                d.agent_version,
                d.journal_head,
                d.journal_shipped,
                d.device_wall_ms,
                d.silent_alerted,
                d.expiry_alerted_for,
                d.dik
            ],
        )?;
        Ok(())
    }

    fn record_kind(&mut self, device_id: &str, seq: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .row(
                "SELECT kind FROM records WHERE device_id = ?1 AND seq = ?2",
                params![device_id, seq],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn record_hash(&mut self, device_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let hash: Option<Vec<u8>> = self
            .row(
                "SELECT hash FROM records WHERE device_id = ?1 AND seq = ?2",
                params![device_id, seq],
                |r| r.get(0),
            )
            .optional()?;
        hash.map(|h| <[u8; 32]>::try_from(h.as_slice()))
            .transpose()
            .map_err(|_| StoreError::Corrupt("record hash"))
    }

    fn put_record(&mut self, r: &RecordRow, received_ms: u64) -> Result<(), StoreError> {
        // The received order: one more than any stored (an index lookup). Writers are
        // serialised by the transaction, so a reader sees a gapless prefix of it and an export
        // cursor never skips a record committed later with a lower number.
        self.exec(
            "INSERT INTO records (device_id, seq, hash, kind, severity, wall_ms, actor, raw,
                                  received_ms, clerk, received_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, (\
                 SELECT COALESCE(MAX(received_seq), 0) + 1 FROM records))",
            params![
                r.device_id,
                r.seq,
                r.hash.as_slice(),
                r.kind,
                r.severity,
                r.wall_ms,
                r.actor,
                r.raw,
                received_ms,
                r.clerk
            ],
        )?;
        self.exec(
            super::received::MARK_HOUR,
            params![r.device_id, r.wall_ms, r.seq],
        )?;
        Ok(())
    }

    fn put_fork(
        &mut self,
        device_id: &str,
        seq: u64,
        hash: &[u8; 32],
        raw: &[u8],
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "INSERT OR IGNORE INTO forks (device_id, seq, hash, raw, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device_id, seq, hash.as_slice(), raw, at_ms],
        )?;
        Ok(n > 0)
    }

    fn certs(&mut self, device_id: &str, from_seq: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        // The key that signs `from_seq` is among those with the highest first_seq <= from_seq;
        // every later start's key may sign what follows.
        let mut stmt = self.0.prepare_cached(
            "SELECT raw FROM certs WHERE device_id = ?1 AND first_seq >= COALESCE(
                 (SELECT MAX(first_seq) FROM certs WHERE device_id = ?1 AND first_seq <= ?2), 0)
             ORDER BY first_seq",
        )?;
        let rows = stmt.query_map(params![device_id, from_seq], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_cert(&mut self, device_id: &str, raw: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM certs WHERE device_id = ?1 AND raw = ?2",
            params![device_id, raw],
        )?;
        Ok(())
    }

    fn put_cert(
        &mut self,
        device_id: &str,
        first_seq: u64,
        raw: &[u8],
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "INSERT OR IGNORE INTO certs (device_id, first_seq, raw, received_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![device_id, first_seq, raw, at_ms],
        )?;
        Ok(n > 0)
    }

    fn last_checkpoint(&mut self, device_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .row(
                "SELECT raw FROM checkpoints WHERE device_id = ?1
                 ORDER BY nv_counter DESC LIMIT 1",
                params![device_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn checkpoints_around(
        &mut self,
        device_id: &str,
        nv_counter: u64,
    ) -> Result<crate::store::Around, StoreError> {
        let below = self
            .row(
                "SELECT raw FROM checkpoints WHERE device_id = ?1 AND nv_counter < ?2
                 ORDER BY nv_counter DESC LIMIT 1",
                params![device_id, nv_counter],
                |r| r.get(0),
            )
            .optional()?;
        let above = self
            .row(
                "SELECT raw FROM checkpoints WHERE device_id = ?1 AND nv_counter > ?2
                 ORDER BY nv_counter ASC LIMIT 1",
                params![device_id, nv_counter],
                |r| r.get(0),
            )
            .optional()?;
        Ok((below, above))
    }

    fn has_checkpoint(&mut self, device_id: &str, raw: &[u8]) -> Result<bool, StoreError> {
        let n: u64 = self.row(
            "SELECT COUNT(*) FROM checkpoints WHERE device_id = ?1 AND raw = ?2",
            params![device_id, raw],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn put_checkpoint(
        &mut self,
        device_id: &str,
        seq: u64,
        nv_counter: u64,
        raw: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO checkpoints (device_id, seq, nv_counter, raw, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device_id, seq, nv_counter, raw, at_ms],
        )?;
        Ok(())
    }

    fn raise_alert(&mut self, a: &NewAlert) -> Result<Raised, StoreError> {
        super::triage::raise(self.0, a)
    }

    fn clerk_role(
        &mut self,
        device_id: &str,
        clerk: &str,
        before_seq: u64,
    ) -> Result<Option<posguard_proto::event::Role>, StoreError> {
        super::rules::clerk_role(self.0, device_id, clerk, before_seq)
    }

    fn has_alert(
        &mut self,
        device_id: &str,
        kind: AlertKind,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let n: u64 = self.row(
            "SELECT COUNT(*) FROM alerts WHERE device_id = ?1 AND kind = ?2 AND detail = ?3",
            params![device_id, kind.name(), detail],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn count_events(
        &mut self,
        kind: &str,
        device_id: Option<&str>,
        since_ms: u64,
    ) -> Result<u64, StoreError> {
        Ok(self.row(
            "SELECT COUNT(*) FROM records
             WHERE kind = ?1 AND wall_ms >= ?2 AND (?3 IS NULL OR device_id = ?3)",
            params![kind, since_ms, device_id],
            |r| r.get(0),
        )?)
    }

    fn pending_commands(&mut self, device_id: &str) -> Result<Vec<SignedCommand>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, kind, issued_wall_ms, signature FROM commands
             WHERE device_id = ?1 AND delivered_ms IS NULL ORDER BY id LIMIT 64",
        )?;
        let rows = stmt.query_map(params![device_id], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let device = DeviceId::new(device_id).map_err(|_| StoreError::Corrupt("device id"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, issued_wall_ms, sig) = row?;
            out.push(SignedCommand {
                device_id: device.clone(),
                id,
                kind: CommandKind::from_name(&kind).ok_or(StoreError::Corrupt("command kind"))?,
                issued_wall_ms,
                signature: sig
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("command signature"))?,
            });
        }
        Ok(out)
    }

    fn mark_command_delivered(
        &mut self,
        device_id: &str,
        command_id: u64,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE commands SET delivered_ms = ?3
             WHERE device_id = ?1 AND id = ?2 AND delivered_ms IS NULL",
            params![device_id, command_id, at_ms],
        )?;
        Ok(())
    }

    fn silent_candidates(&mut self, before_ms: u64) -> Result<Vec<DeviceRow>, StoreError> {
        super::read::devices(self.0, Some(before_ms))
    }

    fn enroll_token(&mut self, hash: &[u8; 32]) -> Result<Option<TokenRow>, StoreError> {
        super::enroll::token(self.0, hash)
    }

    fn put_enroll_token(&mut self, row: &TokenRow) -> Result<(), StoreError> {
        super::enroll::put_token(self.0, row)
    }

    fn mark_token_used(&mut self, hash: &[u8; 32], at_ms: u64) -> Result<bool, StoreError> {
        super::enroll::mark_used(self.0, hash, at_ms)
    }

    fn token_key(&mut self, hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        super::enroll::token_key(self.0, hash)
    }

    fn put_token_key(
        &mut self,
        hash: &[u8; 32],
        key_sha256: &[u8; 32],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        super::enroll::put_token_key(self.0, hash, key_sha256, at_ms)
    }

    fn revoked_since(&mut self, device_id: &str, since_ms: u64) -> Result<bool, StoreError> {
        super::enroll::revoked_since(self.0, device_id, since_ms)
    }

    fn put_enrollment(&mut self, row: &EnrollmentRow) -> Result<(), StoreError> {
        super::enroll::put_enrollment(self.0, row)
    }

    fn issued_serials(&mut self, device_id: &str) -> Result<Vec<String>, StoreError> {
        super::enroll::issued_serials(self.0, device_id)
    }

    fn lifecycle(&mut self, device_id: &str) -> Result<Option<LifecycleRow>, StoreError> {
        super::lifecycle::get(self.0, device_id)
    }

    fn put_lifecycle(&mut self, row: &LifecycleRow) -> Result<(), StoreError> {
        super::lifecycle::put(self.0, row)
    }

    fn archive_device(&mut self, device_id: &str, archived_id: &str) -> Result<(), StoreError> {
        super::lifecycle::archive(self.0, device_id, archived_id)
    }
}
