//! Re-verification of a whole store, as `restore` does before installing it: for every device,
//! its journal-key certificates against its stored DIK, then every stored record from genesis
//! through a [`ChainVerifier`] (hash, link, signature, declared gaps) exactly as ingest
//! verified them, the stored columns against the record they came from, the checkpoints
//! (signature, head hash, NV-counter monotonicity), and finally the device's saved verifier
//! state against where the replay ends, so that ingest resumes at the right `next_expected`.
//!
//! Each device is verified on its own: one that does not verify is reported in
//! [`Verified::unverified`] and the others still verify. Only a store-wide fault (a damaged
//! database, rows of no known device) fails the whole store.

use posguard_proto::cert::JournalKeyCert;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use posguard_proto::verify::{ChainState, ChainVerifier, GapPolicy};
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::ingest::row::{event_columns, record_row};

/// Why a store (or one device in it) does not verify: the device, the seq where known, and the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("device {device}{}: {reason}", .seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
pub struct Invalid {
    /// The device (empty for a store-wide problem).
    pub device: String,
    /// The record's (or checkpoint's) seq.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// A device's verified head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceHead {
    /// Device id.
    pub device_id: String,
    /// Records verified.
    pub records: u64,
    /// Highest seq stored (ingest resumes at this + 1).
    pub highest_stored: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
}

/// What verified, and which devices did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Every device that verified, by id.
    pub heads: Vec<DeviceHead>,
    /// Every device that did not, by id, with the first thing found wrong.
    pub unverified: Vec<Invalid>,
}

/// Either a database error or a verification failure.
type Checked<T> = Result<Result<T, Invalid>, rusqlite::Error>;

fn bad(device: &str, seq: Option<u64>, reason: impl Into<String>) -> Invalid {
    Invalid {
        device: device.to_owned(),
        seq,
        reason: reason.into(),
    }
}

/// Verifies every device in the store open on `conn`.
pub fn verify(conn: &Connection) -> Checked<Verified> {
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Ok(Err(bad("", None, format!("database damaged: {check}"))));
    }
    for table in ["records", "certs", "checkpoints"] {
        let orphan: Option<String> = conn
            .query_row(
                &format!(
                    "SELECT device_id FROM {table}
                     WHERE device_id NOT IN (SELECT device_id FROM devices) LIMIT 1"
                ),
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        if let Some(d) = orphan {
            return Ok(Err(bad(&d, None, format!("{table} of an unknown device"))));
        }
    }
    let mut stmt = conn.prepare(
        "SELECT device_id, chain_state, highest_stored, dik FROM devices ORDER BY device_id",
    )?;
    let devices = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut heads = Vec::with_capacity(devices.len());
    let mut unverified = Vec::new();
    for (id, state, highest, dik) in devices {
        match device(conn, &id, state.as_deref(), highest, dik.as_deref())? {
            Ok(h) => heads.push(h),
            Err(e) => unverified.push(e),
        }
    }
    Ok(Ok(Verified { heads, unverified }))
}

fn device(
    conn: &Connection,
    id: &str,
    saved: Option<&str>,
    highest: u64,
    dik: Option<&[u8]>,
) -> Checked<DeviceHead> {
    // An archived generation (`<id>@gen<N>`) is the chain of the device id it names: its
    // genesis and certificates are that id's.
    let Ok(device_id) = DeviceId::new(crate::store::lifecycle::base_id(id)) else {
        return Ok(Err(bad(id, None, "invalid device id")));
    };
    let saved: Option<ChainState> = match saved.map(serde_json::from_str).transpose() {
        Ok(s) => s,
        Err(_) => return Ok(Err(bad(id, None, "saved verifier state unreadable"))),
    };
    let records: u64 = conn.query_row(
        "SELECT COUNT(*) FROM records WHERE device_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let Some(dik) = dik else {
        let certs: u64 = conn.query_row(
            "SELECT COUNT(*) FROM certs WHERE device_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        if records == 0 && certs == 0 && highest == 0 {
            return Ok(Ok(DeviceHead {
                device_id: id.to_owned(),
                records: 0,
                highest_stored: 0,
                checkpoints: 0,
            }));
        }
        return Ok(Err(bad(
            id,
            None,
            "no identity key stored (last seen by an older collector): cannot verify",
        )));
    };
    let Ok(dik) = DikPublicKey::from_der_or_point(dik) else {
        return Ok(Err(bad(id, None, "stored identity key is not a P-256 key")));
    };
    let mut v = match certs(conn, id, &device_id, &dik)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = replay(conn, id, &mut v)? {
        return Ok(Err(e));
    }
    let checkpoints = match checkpoints(conn, id, &device_id, &dik)? {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let state = v.state();
    let genesis = ChainState {
        head: ChainHead::genesis(&device_id),
        pending_gaps: Vec::new(),
    };
    if saved.as_ref().unwrap_or(&genesis) != &state || highest != state.head.seq {
        return Ok(Err(bad(
            id,
            Some(highest),
            format!(
                "saved state (highest stored {highest}) does not match the records (head {})",
                state.head.seq
            ),
        )));
    }
    Ok(Ok(DeviceHead {
        device_id: id.to_owned(),
        records,
        highest_stored: state.head.seq,
        checkpoints,
    }))
}

/// A verifier from genesis trusting the device's stored certificates, each checked first.
fn certs(
    conn: &Connection,
    id: &str,
    device_id: &DeviceId,
    dik: &DikPublicKey,
) -> Checked<ChainVerifier> {
    let mut stmt =
        conn.prepare("SELECT first_seq, raw FROM certs WHERE device_id = ?1 ORDER BY first_seq")?;
    let rows = stmt
        .query_map(params![id], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut certs = Vec::with_capacity(rows.len());
    for (first_seq, raw) in rows {
        let what = format!("journal-key certificate from seq {first_seq}");
        let Ok(cert) = JournalKeyCert::from_bytes(&raw) else {
            return Ok(Err(bad(id, None, format!("{what} undecodable"))));
        };
        if cert.fields().first_seq != first_seq {
            return Ok(Err(bad(
                id,
                None,
                format!("{what}: first_seq column altered"),
            )));
        }
        if let Err(e) = cert.verify(dik, device_id) {
            return Ok(Err(bad(id, None, format!("{what}: {}", e.reason))));
        }
        certs.push(cert);
    }
    Ok(
        match ChainVerifier::new(dik, device_id, &certs, ChainHead::genesis(device_id)) {
            Ok(v) => Ok(v.with_gap_policy(GapPolicy::AllowDeclared)),
            Err(e) => Err(bad(id, e.seq, e.reason.to_string())),
        },
    )
}

/// Every stored record through `v`, oldest first, and its stored columns against it.
fn replay(conn: &Connection, id: &str, v: &mut ChainVerifier) -> Checked<()> {
    let mut stmt = conn.prepare(
        "SELECT seq, hash, kind, severity, wall_ms, actor, raw
         FROM records WHERE device_id = ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![id])?;
    while let Some(r) = rows.next()? {
        let seq: u64 = r.get(0)?;
        // A row edited with the wrong type is tampering, not a database error.
        let rusqlite::types::ValueRef::Blob(raw) = r.get_ref(6)? else {
            return Ok(Err(bad(id, Some(seq), "record column is not a blob")));
        };
        let record = match Record::from_bytes(raw) {
            Ok(rec) if rec.seq() == seq => rec,
            Ok(rec) => {
                let why = format!("row holds the record of seq {}", rec.seq());
                return Ok(Err(bad(id, Some(seq), why)));
            }
            Err(e) => return Ok(Err(bad(id, Some(seq), format!("undecodable record: {e}")))),
        };
        let event = match v.push(&record) {
            Ok(e) => e,
            Err(e) => return Ok(Err(bad(id, Some(seq), e.reason.to_string()))),
        };
        let columns = event_columns(&event);
        let row = record_row(id, &record, &columns);
        let hash: Vec<u8> = r.get(1)?;
        let stored = (
            hash.as_slice(),
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, u64>(4)?,
            r.get::<_, String>(5)?,
        );
        let expected = (
            row.hash.as_slice(),
            row.kind,
            row.severity,
            row.wall_ms,
            row.actor,
        );
        let (hash, kind, severity, wall_ms, actor) = &stored;
        if (
            *hash,
            kind.as_str(),
            severity.as_str(),
            *wall_ms,
            actor.as_str(),
        ) != expected
        {
            return Ok(Err(bad(
                id,
                Some(seq),
                "stored columns differ from the signed record",
            )));
        }
    }
    Ok(Ok(()))
}

/// The device's checkpoints by counter: each signed by the DIK over a stored record's hash,
/// each following the previous one (counter and seq never go back).
fn checkpoints(
    conn: &Connection,
    id: &str,
    device_id: &DeviceId,
    dik: &DikPublicKey,
) -> Checked<u64> {
    let mut stmt = conn.prepare(
        "SELECT c.seq, c.nv_counter, c.raw, r.hash FROM checkpoints c
         LEFT JOIN records r ON r.device_id = c.device_id AND r.seq = c.seq
         WHERE c.device_id = ?1 ORDER BY c.nv_counter",
    )?;
    let rows = stmt
        .query_map(params![id], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut previous: Option<Checkpoint> = None;
    let mut n = 0u64;
    for (seq, counter, raw, hash) in rows {
        let fail = |why: String| Ok(Err(bad(id, Some(seq), format!("checkpoint: {why}"))));
        let Ok(cp) = Checkpoint::from_bytes(&raw) else {
            return fail("undecodable".into());
        };
        if cp.fields().seq != seq || cp.fields().nv_counter != counter {
            return fail("seq or counter column altered".into());
        }
        let Some(hash) = hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()) else {
            return fail("no stored record at its seq".into());
        };
        if let Err(e) = cp.verify(dik, device_id, Some(&hash)) {
            return fail(e.reason.to_string());
        }
        if let Some(p) = &previous
            && let Err(e) = cp.check_follows(p)
        {
            return fail(e.reason.to_string());
        }
        previous = Some(cp);
        n = n.saturating_add(1);
    }
    Ok(Ok(n))
}
