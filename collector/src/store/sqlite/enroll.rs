//! SQL of enrollment tokens and the enrollment history.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::StoreError;
use crate::store::enrollment::{EnrollmentRow, TokenRow};

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<(Vec<u8>, TokenRow)> {
    let hash: Vec<u8> = r.get(0)?;
    Ok((
        hash,
        TokenRow {
            hash: [0; 32],
            device_id: r.get(1)?,
            created_ms: r.get(2)?,
            expires_ms: r.get(3)?,
            used_ms: r.get(4)?,
        },
    ))
}

fn finish((hash, mut row): (Vec<u8>, TokenRow)) -> Result<TokenRow, StoreError> {
    row.hash =
        <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| StoreError::Corrupt("token hash"))?;
    Ok(row)
}

const TOKEN_COLUMNS: &str = "token_hash, device_id, created_ms, expires_ms, used_ms";

pub(super) fn token(conn: &Connection, hash: &[u8; 32]) -> Result<Option<TokenRow>, StoreError> {
    conn.query_row(
        &format!("SELECT {TOKEN_COLUMNS} FROM enroll_tokens WHERE token_hash = ?1"),
        params![hash.as_slice()],
        token_from_row,
    )
    .optional()?
    .map(finish)
    .transpose()
}

pub(super) fn tokens(conn: &Connection) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM enroll_tokens ORDER BY created_ms, device_id"
    ))?;
    let rows = stmt.query_map([], token_from_row)?;
    rows.map(|r| finish(r?)).collect()
}

pub(super) fn put_token(conn: &Connection, t: &TokenRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO enroll_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            t.hash.as_slice(),
            t.device_id,
            t.created_ms,
            t.expires_ms,
            t.used_ms
        ],
    )?;
    Ok(())
}

pub(super) fn mark_used(
    conn: &Connection,
    hash: &[u8; 32],
    at_ms: u64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE enroll_tokens SET used_ms = ?2 WHERE token_hash = ?1 AND used_ms IS NULL",
        params![hash.as_slice(), at_ms],
    )?;
    Ok(n == 1)
}

pub(super) fn put_enrollment(conn: &Connection, e: &EnrollmentRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO enrollments (at_ms, kind, device_id, outcome, reason, serial,
                                  not_after_unix, peer)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            e.at_ms,
            e.kind,
            e.device_id,
            e.outcome,
            e.reason,
            e.serial,
            e.not_after_unix,
            e.peer
        ],
    )?;
    Ok(())
}

pub(super) fn enrollments(
    conn: &Connection,
    since_ms: Option<u64>,
    device_id: Option<&str>,
) -> Result<Vec<EnrollmentRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at_ms, kind, device_id, outcome, reason, serial, not_after_unix, peer
         FROM enrollments WHERE at_ms >= ?1 AND (?2 IS NULL OR device_id = ?2) ORDER BY id",
    )?;
    let since = i64::try_from(since_ms.unwrap_or(0)).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![since, device_id], |r| {
        Ok(EnrollmentRow {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            kind: r.get(2)?,
            device_id: r.get(3)?,
            outcome: r.get(4)?,
            reason: r.get(5)?,
            serial: r.get(6)?,
            not_after_unix: r.get(7)?,
            peer: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn issued_serials(
    conn: &Connection,
    device_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT serial FROM enrollments
         WHERE device_id = ?1 AND outcome = 'issued' AND serial IS NOT NULL ORDER BY id",
    )?;
    let rows = stmt.query_map(params![device_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The key each used token certified, for idempotent retries of `POST /v1/enroll`: a table of
/// its own (created on open, so existing stores upgrade) rather than a column of
/// `enroll_tokens`, so that token rows keep their shape.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS enroll_token_keys (
            token_hash BLOB PRIMARY KEY,
            key_sha256 BLOB NOT NULL,
            at_ms INTEGER NOT NULL
        )",
    )?;
    Ok(())
}

pub(super) fn token_key(
    conn: &Connection,
    hash: &[u8; 32],
) -> Result<Option<[u8; 32]>, StoreError> {
    let key: Option<Vec<u8>> = conn
        .query_row(
            "SELECT key_sha256 FROM enroll_token_keys WHERE token_hash = ?1",
            params![hash.as_slice()],
            |r| r.get(0),
        )
        .optional()?;
    key.map(|k| {
        <[u8; 32]>::try_from(k.as_slice()).map_err(|_| StoreError::Corrupt("token key hash"))
    })
    .transpose()
}

pub(super) fn put_token_key(
    conn: &Connection,
    hash: &[u8; 32],
    key_sha256: &[u8; 32],
    at_ms: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO enroll_token_keys (token_hash, key_sha256, at_ms)
         VALUES (?1, ?2, ?3)",
        params![hash.as_slice(), key_sha256.as_slice(), at_ms],
    )?;
    Ok(())
}

pub(super) fn revoked_since(
    conn: &Connection,
    device_id: &str,
    since_ms: u64,
) -> Result<bool, StoreError> {
    let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
    Ok(conn.query_row(
        "SELECT COUNT(*) > 0 FROM enrollments
         WHERE device_id = ?1 AND outcome = 'revoked' AND at_ms >= ?2",
        params![device_id, since],
        |r| r.get(0),
    )?)
}
