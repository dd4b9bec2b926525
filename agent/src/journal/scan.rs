//! Reading a journal database end to end and checking it: the hash chain, every signature
//! against the certified journal keys, declared overflow gaps, the stored head, and the last
//! checkpoint. Used at start (`startup`) and offline (`posguardctl verify-journal`).

use posguard_proto::cert::JournalKeyCert;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use posguard_proto::verify::{ChainVerifier, GapPolicy};

use super::JournalError;
use super::store::{META_BASE, META_LAST_CHECKPOINT, Store, key_seq};
use crate::walk::walk_all;

/// What a scan found.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// The last good record (or the base/genesis when there is none).
    pub(crate) head: ChainHead,
    /// Records that verified.
    pub(crate) count: u64,
    /// Their encoded size.
    pub(crate) bytes: u64,
    /// The first record stored.
    pub(crate) first_seq: Option<u64>,
    /// The last checkpoint, if it verified.
    pub(crate) last_checkpoint: Option<Checkpoint>,
    /// The first problem: the seq it concerns and what it is.
    pub(crate) problem: Option<(u64, String)>,
}

/// The point the stored records continue from: the last pruned record, or the genesis.
pub(crate) fn base(store: &Store, device_id: &DeviceId) -> Result<ChainHead, JournalError> {
    Ok(store
        .head_at(META_BASE)?
        .unwrap_or_else(|| ChainHead::genesis(device_id)))
}

pub(crate) fn certs(store: &Store) -> Result<Vec<JournalKeyCert>, JournalError> {
    let mut out = Vec::new();
    for item in walk_all(&store.certs) {
        let (_, v) = item.map_err(|source| JournalError::Db {
            context: "read certificates",
            source,
        })?;
        let cert = JournalKeyCert::from_bytes(&v).map_err(|e| JournalError::Corrupt {
            what: format!("journal-key certificate: {e}"),
        })?;
        out.push(cert);
    }
    Ok(out)
}

/// How much a scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Every signature (offline verification).
    Full,
    /// At start: every hash link and the checkpoint, but signatures only after the last
    /// checkpoint — the records before it are authenticated by the checkpoint's signature over
    /// the head hash their chain leads to. Keeps start-up fast on a full journal.
    Startup,
}

/// Verifies what is stored. Storage errors are `Err`; anything wrong with the data is a
/// `problem` in the result, naming the first bad seq.
pub(crate) fn scan(
    store: &Store,
    dik: &DikPublicKey,
    device_id: &DeviceId,
    depth: Depth,
) -> Result<Scan, JournalError> {
    let anchor = base(store, device_id)?;
    let mut scan = Scan {
        head: anchor,
        count: 0,
        bytes: 0,
        first_seq: None,
        last_checkpoint: None,
        problem: None,
    };
    let certs = match certs(store) {
        Ok(c) => c,
        Err(JournalError::Corrupt { what }) => {
            scan.problem = Some((anchor.seq.saturating_add(1), what));
            return Ok(scan);
        }
        Err(e) => return Err(e),
    };
    // Where signature checks start (Startup): just after the last checkpoint, if it decodes;
    // whether it verifies is checked after the pass.
    let signatures_from = match depth {
        Depth::Full => 0,
        Depth::Startup => store
            .get(META_LAST_CHECKPOINT)?
            .and_then(|b| Checkpoint::from_bytes(&b).ok())
            .map_or(0, |cp| cp.fields().seq.saturating_add(1)),
    };
    let mut verifier = match ChainVerifier::new(dik, device_id, &certs, anchor) {
        Ok(v) => v
            .with_gap_policy(GapPolicy::AllowDeclared)
            .with_signatures_from(signatures_from),
        Err(e) => {
            scan.problem = Some((e.seq.unwrap_or(anchor.seq.saturating_add(1)), e.to_string()));
            return Ok(scan);
        }
    };
    // The head before the first undeclared gap: where a recovery must cut if the gap is never
    // declared (the verifier itself moves on past a gap provisionally).
    let mut clean_head = anchor;
    let (mut clean_count, mut clean_bytes) = (0u64, 0u64);
    for item in walk_all(&store.records) {
        let (k, v) = item.map_err(|source| JournalError::Db {
            context: "read records",
            source,
        })?;
        let key = key_seq(&k);
        let record = match Record::from_bytes(&v) {
            Ok(r) => r,
            Err(e) => {
                let seq = key.unwrap_or(scan.head.seq.saturating_add(1));
                scan.problem = Some((seq, format!("record does not decode: {e}")));
                return Ok(scan);
            }
        };
        // A prune interrupted after moving the base forward: these records are already gone.
        if record.seq() <= anchor.seq {
            continue;
        }
        if key != Some(record.seq()) {
            scan.problem = Some((
                key.unwrap_or(record.seq()),
                format!("record for seq {} stored under another key", record.seq()),
            ));
            return Ok(scan);
        }
        if verifier.pending_gaps().is_empty() {
            clean_head = verifier.head();
            clean_count = scan.count;
            clean_bytes = scan.bytes;
        }
        if let Err(e) = verifier.push(&record) {
            scan.problem = Some((e.seq.unwrap_or(record.seq()), e.reason.to_string()));
            return Ok(scan);
        }
        scan.first_seq.get_or_insert(record.seq());
        scan.count = scan.count.saturating_add(1);
        scan.bytes = scan.bytes.saturating_add(v.len() as u64);
        scan.head = verifier.head();
    }
    if let Some(gap) = verifier.pending_gaps().first() {
        scan.head = clean_head;
        scan.count = clean_count;
        scan.bytes = clean_bytes;
        scan.problem = Some((
            gap.first,
            "records missing and not declared dropped".to_owned(),
        ));
        return Ok(scan);
    }
    // The stored head says how far the chain went: missing records at the end are truncation.
    if let Some(stored) = store.stored_head()?
        && stored.seq > scan.head.seq
    {
        scan.problem = Some((
            scan.head.seq.saturating_add(1),
            format!(
                "records {}..={} are missing",
                scan.head.seq.saturating_add(1),
                stored.seq
            ),
        ));
        return Ok(scan);
    }
    if let Some(bytes) = store.get(META_LAST_CHECKPOINT)? {
        let cp = match Checkpoint::from_bytes(&bytes) {
            Ok(cp) => cp,
            Err(e) => {
                scan.problem = Some((
                    scan.head.seq,
                    format!("last checkpoint does not decode: {e}"),
                ));
                return Ok(scan);
            }
        };
        let seq = cp.fields().seq;
        let expected = if seq == scan.head.seq {
            Some(scan.head.hash)
        } else {
            store.record_hash(seq)?
        };
        if seq > scan.head.seq {
            scan.problem = Some((
                scan.head.seq.saturating_add(1),
                format!("the last checkpoint is at seq {seq}, after the last record"),
            ));
            return Ok(scan);
        }
        if let Err(e) = cp.verify(dik, device_id, expected.as_ref()) {
            scan.problem = Some((seq, format!("checkpoint: {}", e.reason)));
            return Ok(scan);
        }
        scan.last_checkpoint = Some(cp);
    }
    Ok(scan)
}
