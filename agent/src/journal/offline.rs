//! Verifying a journal offline — on the terminal or on a copy taken from one. The directory is
//! copied to a scratch place first, so that verifying never modifies the evidence, and a child
//! process opens the copy first, so that a database that crashes sled gets a verdict too.

use std::path::Path;

use posguard_proto::event::Event;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;

use super::JournalError;
use super::scan;
use super::store::{META_DEVICE_ID, META_DIK, Store};
use crate::storeguard::{self, StoreKind, copy_dir};
use crate::walk::walk_all;

/// The result of verifying a journal directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfflineReport {
    /// The device the journal belongs to.
    pub device_id: String,
    /// Records that verified.
    pub records: u64,
    /// First record stored.
    pub first_seq: Option<u64>,
    /// Last verified record.
    pub head_seq: u64,
    /// Last checkpoint: seq and TPM counter.
    pub last_checkpoint: Option<(u64, u64)>,
    /// The first bad record and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
    /// Whether the identity key came from the journal itself rather than from the caller.
    pub dik_from_journal: bool,
    /// The last record a verified checkpoint covers (0: none): up to here the chain is bound
    /// to the TPM counter value of that checkpoint.
    pub anchored_seq: u64,
    /// Verified records after `anchored_seq`. Nothing binds them to the TPM: had records after
    /// them been cut (a truncated file, a byte edited near the end after a kill), this check
    /// could not tell.
    pub unanchored: u64,
    /// Whether the journal ends as a clean stop leaves it: an `agent_stopped` record with a
    /// checkpoint at it. Otherwise records may have followed the last checkpoint and been cut,
    /// even when none is left after it.
    pub clean_stop: bool,
    /// What was proved, in one word (also the exit code of `posguardctl verify-journal`).
    pub verdict: Verdict,
}

/// What an offline verification proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every record verifies and the journal ends with a clean stop's checkpoint (exit 0).
    /// Complete as of that checkpoint's TPM counter value: a cut through checkpoints shows
    /// only against the terminal's TPM counter (the agent compares them at start).
    Anchored,
    /// Every record verifies, but the journal does not end with a clean stop: `unanchored`
    /// records follow the last checkpoint (maybe none), and whether more followed cannot be
    /// proved here (exit 2).
    UnanchoredTail,
    /// A record, the chain, a gap or the checkpoint does not verify (exit 1).
    Broken,
}

impl Verdict {
    /// The exit code `posguardctl verify-journal` gives it.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Anchored => 0,
            Verdict::Broken => 1,
            Verdict::UnanchoredTail => 2,
        }
    }
}

/// Verifies the journal in `dir`. With `dik_spki`, signatures are checked against that device
/// identity key; without it, against the key the journal stored when it was created.
pub fn verify_dir(dir: &Path, dik_spki: Option<&[u8]>) -> Result<OfflineReport, JournalError> {
    if !dir.join("db").exists() {
        return Err(JournalError::Corrupt {
            what: format!(
                "{} is not a journal directory (no sled database)",
                dir.display()
            ),
        });
    }
    let (_scratch, store) = open_copy(dir)?;
    let device = store
        .get(META_DEVICE_ID)?
        .ok_or_else(|| JournalError::Corrupt {
            what: "no device id stored".to_owned(),
        })?;
    let device_id = DeviceId::new(String::from_utf8_lossy(&device).into_owned()).map_err(|e| {
        JournalError::Corrupt {
            what: format!("device id: {e}"),
        }
    })?;
    let stored_dik = store.get(META_DIK)?;
    let dik_bytes = match (dik_spki, &stored_dik) {
        (Some(k), _) => k.to_vec(),
        (None, Some(k)) => k.to_vec(),
        (None, None) => {
            return Err(JournalError::Corrupt {
                what: "no identity key stored; pass one".to_owned(),
            });
        }
    };
    let dik = DikPublicKey::from_der_or_point(&dik_bytes).map_err(|e| JournalError::Corrupt {
        what: format!("identity key: {e}"),
    })?;
    let scan = scan::scan(&store, &dik, &device_id, scan::Depth::Full)?;
    let anchored_seq = scan.last_checkpoint.as_ref().map_or(0, |c| c.fields().seq);
    let unanchored = scan.head.seq.saturating_sub(anchored_seq);
    let clean_stop =
        scan.problem.is_none() && super::anchor::ends_cleanly(&store, scan.head.seq, anchored_seq);
    let verdict = if scan.problem.is_some() {
        Verdict::Broken
    } else if !clean_stop {
        Verdict::UnanchoredTail
    } else {
        Verdict::Anchored
    };
    Ok(OfflineReport {
        device_id: device_id.to_string(),
        records: scan.count,
        first_seq: scan.first_seq,
        head_seq: scan.head.seq,
        last_checkpoint: scan
            .last_checkpoint
            .as_ref()
            .map(|c| (c.fields().seq, c.fields().nv_counter)),
        first_bad: scan.problem,
        dik_from_journal: dik_spki.is_none(),
        anchored_seq,
        unanchored,
        clean_stop,
        verdict,
    })
}

/// Every stored record of the journal in `dir` with its decoded event, in order (a record whose
/// body does not decode is skipped; `verify_dir` names it). Reads a scratch copy.
pub fn read_events(dir: &Path) -> Result<Vec<(u64, Event)>, JournalError> {
    let (_scratch, store) = open_copy(dir)?;
    let mut out = Vec::new();
    for item in walk_all(&store.records) {
        let (_, v) = item.map_err(|source| JournalError::Db {
            context: "read records",
            source,
        })?;
        if let Ok(record) = Record::from_bytes(&v)
            && let Ok(event) = record.event()
        {
            out.push((record.seq(), event));
        }
    }
    Ok(out)
}

struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the journal to a scratch directory, has a child process open and read the copy
/// (`crate::storeguard`: a database that crashes sled is reported, not a crash), then opens it.
fn open_copy(dir: &Path) -> Result<(Scratch, Store), JournalError> {
    let scratch = tempdir_for()?;
    let copy = scratch.0.join("journal");
    copy_dir(dir, &copy).map_err(|e| JournalError::io("copy", dir, e))?;
    storeguard::drop_unfinished_snapshots(&copy);
    storeguard::probe(&copy, StoreKind::Journal)
        .map_err(|reason| JournalError::Unreadable { reason })?;
    let store = Store::open(&copy, 4 * 1024 * 1024)?;
    Ok((scratch, store))
}

fn tempdir_for() -> Result<Scratch, JournalError> {
    let base = std::env::temp_dir().join(format!(
        "posguard-verify-{}-{}",
        std::process::id(),
        crate::clock::Clock::mono_ns()
    ));
    std::fs::create_dir_all(&base).map_err(|e| JournalError::io("create", &base, e))?;
    Ok(Scratch(base))
}
