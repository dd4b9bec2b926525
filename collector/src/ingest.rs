//! Ingest of one uplink batch, inside one store transaction: verify journal-key certificates
//! against the DIK from the client certificate, records through a [`ChainVerifier`] resumed
//! from the device's stored state, checkpoints and NV-counter monotonicity; store what verified
//! (records before the first bad one), keep forks aside, raise alerts, build the ack.
//!
//! Idempotent on (device, seq): a record already stored with the same hash is a duplicate and
//! ignored; one with a different hash is a fork, kept aside and never stored over the original.

pub mod certs;
mod events;
mod history;
mod position;
pub mod reason;
pub mod row;

use std::collections::HashMap;

use posguard_proto::cert::VerifiedCert;
use posguard_proto::chain::ChainHead;
use posguard_proto::checkpoint::Checkpoint;
use posguard_proto::keys::DikPublicKey;
use posguard_proto::record::Record;
use posguard_proto::text::DeviceId;
use posguard_proto::uplink::{UplinkAck, UplinkBatch};
use posguard_proto::verify::{
    ChainState, ChainVerifier, GapPolicy, Prechecked, VerifyError, VerifyReason, precheck_verified,
};

/// A verification failure (proto's `VerifyError` cannot be built outside proto).
#[derive(Debug, Clone)]
pub(crate) struct Fail {
    seq: Option<u64>,
    reason: VerifyReason,
}

impl From<VerifyError> for Fail {
    fn from(e: VerifyError) -> Self {
        Self {
            seq: e.seq,
            reason: e.reason,
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "at seq {seq}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

use crate::alerts::{AlertKind, NewAlert, Raised, expires_soon};
use crate::config::AlertConfig;
use crate::ingest::certs::{CertCache, CertError};
use crate::store::{DeviceRow, StoreError, StoreTx};

/// Who is sending, from the verified client certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The device id from the certificate's URI SAN.
    pub device_id: DeviceId,
    /// The device identity key (the certificate's public key).
    pub dik: DikPublicKey,
    /// The certificate's notAfter, Unix seconds.
    pub cert_not_after_unix: u64,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// The acknowledgement (also meaningful after a rejection: the prefix that was stored).
    pub ack: UplinkAck,
    /// The stable code of the first failure, if the batch was refused.
    pub rejected: Option<&'static str>,
    /// Records newly stored.
    pub stored: u64,
    /// Records already held.
    pub duplicates: u64,
    /// Alerts raised.
    pub alerts: Vec<AlertKind>,
}

struct Run<'t> {
    tx: &'t mut dyn StoreTx,
    peer: &'t Peer,
    certs: &'t CertCache,
    id: String,
    now_ms: u64,
    rules: AlertConfig,
    report: IngestReport,
    /// Hashes stored by this batch, by seq.
    batch_hashes: HashMap<u64, [u8; 32]>,
    /// The device's highest stored seq before this batch.
    stored_before: u64,
    /// This batch showed the device's journal went back (forks then raise no alert of their
    /// own: the `chain_regressed` alert covers them).
    regressed: bool,
    /// A fork alert was raised for this batch (one per batch, not one per forked record).
    fork_alerted: bool,
    /// Journal-key certificates this batch stored for the first time: removed again if the
    /// whole batch is refused, so that a refusal changes nothing stored but its alert.
    new_certs: Vec<Vec<u8>>,
}

/// A batch with the work that needs no store done: records decoded, hashed, their bodies
/// decoded into row columns and their signatures verified in bulk ([`precheck_verified`]). Made by [`prepare`]
/// on any thread, so that the store thread only walks the chain and writes.
#[derive(Debug)]
pub struct Prepared {
    batch: UplinkBatch,
    records: Vec<(Prechecked, Option<row::EventColumns>)>,
    /// The first record that does not decode (nothing after it is looked at).
    undecodable: Option<posguard_proto::codec::DecodeError>,
}

/// Prepares `batch` from `peer` for [`ingest`]. A large batch (one agent catching up sends
/// thousands of records) is cut into one part per core, prepared in parallel.
pub fn prepare(peer: &Peer, mut batch: UplinkBatch, cache: &CertCache) -> Prepared {
    // The certificates (DIK signature, journal key) are checked here, off the store thread;
    // [`ingest`] finds them in `cache` (and reports what failed). The precheck uses the keys
    // checked then; the chain walk still trusts a precheck only under a key it holds itself.
    let certs: Vec<VerifiedCert> = batch
        .certs
        .iter()
        .filter_map(|b| cache.verified(b, &peer.dik, &peer.device_id).ok())
        .collect();
    let raw = std::mem::take(&mut batch.records);
    let threads = cores();
    let parts: Vec<PreparedPart> = if threads < 2 || raw.len() < PARALLEL_FROM {
        vec![prepare_part(raw, &certs)]
    } else {
        let per = raw.len().div_ceil(threads);
        let mut chunks: Vec<Vec<Vec<u8>>> = Vec::with_capacity(threads);
        let mut rest = raw;
        while rest.len() > per {
            let tail = rest.split_off(per);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        std::thread::scope(|s| {
            let mut chunks = chunks.into_iter();
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks
                .map(|c| s.spawn(|| prepare_part(c, &certs)))
                .collect();
            let mut parts = vec![prepare_part(first, &certs)];
            // A part that panicked (none does) ends the batch there: the prefix is stored and
            // acknowledged, and the agent resends the rest.
            parts.extend(others.into_iter().map_while(|h| h.join().ok()));
            parts
        })
    };
    let mut records = Vec::new();
    let mut undecodable = None;
    for (part, bad) in parts {
        records.extend(part);
        if bad.is_some() {
            // Nothing after the first undecodable record is looked at.
            undecodable = bad;
            break;
        }
    }
    Prepared {
        batch,
        records,
        undecodable,
    }
}

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup's CPU
/// quota files at every call, which cost 1% of the collector's time when asked per batch.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// Batches below this many records are prepared on the calling thread alone.
const PARALLEL_FROM: usize = 512;

/// Prepared records of one part, and the decode error that ended it early, if any.
type PreparedPart = (
    Vec<(Prechecked, Option<row::EventColumns>)>,
    Option<posguard_proto::codec::DecodeError>,
);

/// Decodes `raw` up to the first undecodable record, prechecks it and builds the rows.
fn prepare_part(raw: Vec<Vec<u8>>, certs: &[VerifiedCert]) -> PreparedPart {
    let mut records = Vec::with_capacity(raw.len());
    let mut undecodable = None;
    for bytes in raw {
        match Record::from_bytes(&bytes) {
            Ok(r) => records.push(r),
            Err(e) => {
                undecodable = Some(e);
                break;
            }
        }
    }
    let prepared = precheck_verified(records, certs)
        .into_iter()
        .map(|p| {
            let columns = p.event().ok().map(row::event_columns);
            (p, columns)
        })
        .collect();
    (prepared, undecodable)
}

/// Verifies and stores `batch` from `peer`. Store errors abort (the caller rolls back);
/// verification failures are reported in the result and committed with what came before them.
pub fn ingest(
    tx: &mut dyn StoreTx,
    peer: &Peer,
    certs: &CertCache,
    prepared: &Prepared,
    now_ms: u64,
    rules: AlertConfig,
) -> Result<IngestReport, StoreError> {
    let batch = &prepared.batch;
    let id = peer.device_id.as_str().to_owned();
    let mut device = tx
        .device(&id)?
        .unwrap_or_else(|| DeviceRow::new(&id, now_ms));
    let mut run = Run {
        tx,
        peer,
        certs,
        id,
        now_ms,
        rules,
        report: IngestReport {
            ack: UplinkAck {
                highest_stored: device.highest_stored,
                next_expected: device.highest_stored.saturating_add(1),
                commands: Vec::new(),
            },
            rejected: None,
            stored: 0,
            duplicates: 0,
            alerts: Vec::new(),
        },
        batch_hashes: HashMap::new(),
        stored_before: device.highest_stored,
        regressed: false,
        fork_alerted: false,
        new_certs: Vec::new(),
    };
    run.touch_device(&mut device, batch);
    run.check_head(batch)?;
    if run.collector_behind(&device, prepared) {
        // Nothing of the batch was verified: an identity key is recorded only for a device
        // that has none yet, never replaced.
        if device.dik.is_none() {
            device.dik = Some(peer.dik.point().to_vec());
        }
        run.expiry_alert(&mut device)?;
        run.tx.put_device(&device)?;
        let head = device.highest_stored;
        run.report.ack = UplinkAck {
            highest_stored: head,
            next_expected: head.saturating_add(1),
            commands: run.tx.pending_commands(&run.id)?,
        };
        return Ok(run.report);
    }
    let state = device.chain_state.clone().unwrap_or_else(|| ChainState {
        head: ChainHead::genesis(&peer.device_id),
        pending_gaps: Vec::new(),
    });
    let gaps_before = state.pending_gaps.len();
    match run.verify_and_store(state, prepared)? {
        Ok(v) => device.chain_state = Some(v),
        Err((v, e)) => {
            if let Some(v) = v {
                device.chain_state = Some(v);
            }
            run.fail(&e)?;
        }
    }
    if let Some(state) = &device.chain_state {
        device.highest_stored = state.head.seq;
        if state.pending_gaps.len() > gaps_before {
            let gaps: Vec<String> = state
                .pending_gaps
                .iter()
                .map(|g| format!("{}-{}", g.first, g.last))
                .collect();
            run.alert_once(
                AlertKind::ChainGap,
                format!(
                    "records missing, not yet declared dropped: {}",
                    gaps.join(",")
                ),
            )?;
        }
    }
    if run.report.rejected.is_some() && run.report.stored == 0 {
        // Refused as a whole: nothing of it is kept but the alert. Above all not the identity
        // key of the client certificate, which `restore` re-verifies the stored chain with
        // (a terminal re-provisioned with a new key must not replace it: docs/collector.md,
        // "Device lifecycle").
        for raw in std::mem::take(&mut run.new_certs) {
            run.tx.delete_cert(&run.id, &raw)?;
        }
    } else {
        // What this batch stored verified under this key: `restore` re-verifies the stored
        // journal-key certificates with it.
        device.dik = Some(peer.dik.point().to_vec());
        run.expiry_alert(&mut device)?;
        run.tx.put_device(&device)?;
    }
    let head = device.highest_stored;
    run.report.ack = UplinkAck {
        highest_stored: head,
        next_expected: head.saturating_add(1),
        commands: run.tx.pending_commands(&run.id)?,
    };
    Ok(run.report)
}

pub(crate) type Verified = Result<ChainState, (Option<ChainState>, Fail)>;

impl Run<'_> {
    fn touch_device(&mut self, d: &mut DeviceRow, batch: &UplinkBatch) {
        d.last_seen_ms = self.now_ms;
        d.silent_alerted = false;
        d.cert_not_after_unix = self.peer.cert_not_after_unix;
        if let Some(s) = &batch.status {
            d.agent_version = Some(s.agent_version.clone());
            d.journal_head = s.journal_head;
            d.journal_shipped = s.journal_shipped;
            d.device_wall_ms = s.wall_ms;
        }
    }

    /// The certificate-expiry alert, once per notAfter; only for a batch that is kept.
    fn expiry_alert(&mut self, d: &mut DeviceRow) -> Result<(), StoreError> {
        let not_after = self.peer.cert_not_after_unix;
        if expires_soon(not_after, self.now_ms, self.rules.cert_expiry_days)
            && d.expiry_alerted_for != not_after
        {
            d.expiry_alerted_for = not_after;
            self.alert(
                AlertKind::CertExpiry,
                format!(
                    "device certificate expires at {}",
                    crate::clock::format_ms(not_after.saturating_mul(1000))
                ),
            )?;
        }
        Ok(())
    }

    fn alert(&mut self, kind: AlertKind, detail: String) -> Result<(), StoreError> {
        let severity = reason::severity(kind);
        self.alert_with(kind, severity, detail, true)
    }

    fn alert_with(
        &mut self,
        kind: AlertKind,
        severity: posguard_proto::event::Severity,
        detail: String,
        for_device: bool,
    ) -> Result<(), StoreError> {
        let raised = self.tx.raise_alert(&NewAlert {
            device_id: for_device.then(|| self.id.clone()),
            kind,
            severity,
            detail: detail.clone(),
            at_ms: self.now_ms,
        })?;
        match raised {
            Raised::New(id) => {
                tracing::warn!(device = %self.id, alert = kind.name(), id, %detail, "alert");
                self.report.alerts.push(kind);
            }
            // The open alert of this cause counts it; metrics count alerts, not repeats.
            Raised::Repeated(id) => {
                tracing::debug!(device = %self.id, alert = kind.name(), id, %detail, "alert repeated");
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: &Fail) -> Result<(), StoreError> {
        let (code, kind) = reason::classify(&e.reason);
        self.report.rejected = Some(code);
        // A device whose journal went back (`chain_regressed` raised for this stored head) sends
        // records and checkpoints that disagree with the stored ones (a checkpoint of its new
        // chain at a stored seq): that is the same cause, not a new fork.
        if kind == AlertKind::Fork && self.regression_known()? {
            return Ok(());
        }
        // A retry of the same batch fails the same way: one alert for the cause, not per try.
        self.alert_once(kind, format!("batch refused ({code}): {e}"))
    }

    fn verify_and_store(
        &mut self,
        state: ChainState,
        prepared: &Prepared,
    ) -> Result<Verified, StoreError> {
        let batch = &prepared.batch;
        let bad = |reason| Fail { seq: None, reason };
        let mut certs = Vec::with_capacity(batch.certs.len());
        for bytes in &batch.certs {
            match self
                .certs
                .verified(bytes, &self.peer.dik, &self.peer.device_id)
            {
                Ok(c) => certs.push(c),
                Err(CertError::Undecodable(e)) => {
                    return Ok(Err((None, bad(VerifyReason::Undecodable(e)))));
                }
                Err(CertError::Refused(e)) => return Ok(Err((None, e.into()))),
            }
        }
        let mut checkpoints = Vec::with_capacity(batch.checkpoints.len());
        for bytes in &batch.checkpoints {
            match Checkpoint::from_bytes(bytes) {
                Ok(c) => checkpoints.push((c, bytes.as_slice(), false)),
                Err(e) => return Ok(Err((None, bad(VerifyReason::Undecodable(e))))),
            }
        }
        checkpoints.sort_by_key(|(c, _, _)| c.fields().seq);
        for c in &certs {
            let c = c.cert();
            if self
                .tx
                .put_cert(&self.id, c.fields().first_seq, c.as_bytes(), self.now_ms)?
            {
                self.new_certs.push(c.as_bytes().to_vec());
            }
        }
        let from = state.head.seq.saturating_add(1);
        let mut all_certs = Vec::new();
        for raw in self.tx.certs(&self.id, from)? {
            match self
                .certs
                .verified(&raw, &self.peer.dik, &self.peer.device_id)
            {
                Ok(c) => all_certs.push(c),
                Err(CertError::Undecodable(_)) => return Err(StoreError::Corrupt("cert")),
                Err(CertError::Refused(e)) => return Ok(Err((None, e.into()))),
            }
        }
        let mut v = match ChainVerifier::resume_verified(
            &self.peer.dik,
            &self.peer.device_id,
            &all_certs,
            state,
        ) {
            Ok(v) => v.with_gap_policy(GapPolicy::AllowDeclared),
            Err(e) => return Ok(Err((None, e.into()))),
        };
        for (pre, row) in &prepared.records {
            if let Err(e) = self.one_record(&mut v, pre, row.as_ref(), &mut checkpoints)? {
                return Ok(Err((Some(v.state()), e)));
            }
        }
        if let Some(e) = &prepared.undecodable {
            let fail = Fail {
                seq: None,
                reason: VerifyReason::Undecodable(e.clone()),
            };
            return Ok(Err((Some(v.state()), fail)));
        }
        // Checkpoints for records acknowledged earlier (a resend, or one sent after its records).
        let head = v.head().seq;
        for (cp, raw, done) in &mut checkpoints {
            if *done || cp.fields().seq > head {
                continue;
            }
            let seq = cp.fields().seq;
            let hash = match self.batch_hashes.get(&seq) {
                Some(h) => Some(*h),
                None => self.tx.record_hash(&self.id, seq)?,
            };
            let Some(hash) = hash else { continue };
            if let Err(e) = self.checkpoint(cp, raw, &hash)? {
                return Ok(Err((Some(v.state()), e)));
            }
            *done = true;
        }
        Ok(Ok(v.state()))
    }

    fn one_record(
        &mut self,
        v: &mut ChainVerifier,
        pre: &Prechecked,
        columns: Option<&row::EventColumns>,
        checkpoints: &mut [(Checkpoint, &[u8], bool)],
    ) -> Result<Result<(), Fail>, StoreError> {
        let record = pre.record();
        let seq = record.seq();
        if seq <= v.head().seq {
            return self.old_record(v, record);
        }
        let event = match v.push_prechecked(pre) {
            Ok(e) => e,
            Err(e) => return Ok(Err(e.into())),
        };
        let worked_out;
        let columns = match columns {
            Some(c) => c,
            None => {
                worked_out = row::event_columns(&event);
                &worked_out
            }
        };
        self.tx
            .put_record(&row::record_row(&self.id, record, columns), self.now_ms)?;
        self.batch_hashes.insert(seq, *record.hash());
        self.report.stored = self.report.stored.saturating_add(1);
        self.on_event(seq, &event)?;
        for (cp, raw, done) in checkpoints.iter_mut() {
            if !*done && cp.fields().seq == seq {
                if let Err(e) = self.checkpoint(cp, raw, record.hash())? {
                    return Ok(Err(e));
                }
                *done = true;
            }
        }
        Ok(Ok(()))
    }
}
