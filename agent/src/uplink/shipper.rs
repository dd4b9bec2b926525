//! The shipping loop: read a bounded batch from where the collector said it stands, send it
//! with the journal-key certificates and checkpoints it needs, and on an acknowledgement let
//! the journal prune what is stored centrally and apply any signed commands. Failures back off
//! with full jitter (1 s to 5 min by default); `Retry-After` is a floor; nothing is ever
//! dropped here (the journal's own bound decides that, and says so in the chain).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use posguard_proto::event::{
    Actor, CommandRef, CommandRefusal, Event, EventKind, PeerCred, Source,
};
use posguard_proto::uplink::{CommandKind, DeviceStatus, SignedCommand, UplinkAck, UplinkBatch};
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;

mod ack;
mod final_flush;

use super::http::Connection;
use super::renew::{self, RenewSchedule};
use super::{Backoff, UplinkDeps, UplinkError, crl, ops_key, tls};
use crate::clock::Clock;

/// How often to look for new records when there is nothing to send.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Connect and request timeouts.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A fresh connection at least this often, so a renewed certificate is picked up.
const RECONNECT_AFTER: Duration = Duration::from_secs(600);

enum Progress {
    Sent,
    Idle,
}

struct Failure {
    error: UplinkError,
    retry_after: Option<Duration>,
}

impl From<UplinkError> for Failure {
    fn from(error: UplinkError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

struct Shipper {
    deps: UplinkDeps,
    conn: Option<(Connection, Instant)>,
    next_seq: u64,
    batch_records: usize,
    backoff: Backoff,
    last_sent: Option<Instant>,
    handled: HashSet<u64>,
    rng: SystemRandom,
    ops_key: Option<[u8; 32]>,
    renew: RenewSchedule,
    /// Records read while the previous batch was in flight: (first seq asked for, records).
    /// Used only if the collector then expects exactly that seq.
    prefetched: Option<(u64, Vec<posguard_proto::record::Record>)>,
    /// When the fleet CRL was last asked for on the current connection.
    crl_checked: Option<Instant>,
    /// The collector position last reported as beyond this journal's head.
    ahead_reported: Option<u64>,
    /// The agent is stopping: ship only, no renewal or CRL fetch.
    stopping: bool,
}

fn me() -> PeerCred {
    PeerCred {
        uid: 0,
        gid: 0,
        pid: std::process::id(),
    }
}

/// `not_after` of the leaf certificate in a PEM chain, as unix seconds.
pub(crate) fn cert_not_after(path: &std::path::Path) -> Option<u64> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

pub(super) async fn run(deps: UplinkDeps, stop: CancellationToken) {
    let ops_key = deps
        .config
        .ops_public_key
        .as_deref()
        .and_then(|k| ops_key(k).ok());
    let start = match deps.journal.status().await {
        Ok(s) => s.shipped_seq.saturating_add(1),
        Err(_) => 1,
    };
    let mut s = Shipper {
        backoff: Backoff::new(
            Duration::from_secs(deps.config.backoff_min_secs),
            Duration::from_secs(deps.config.backoff_max_secs),
        ),
        batch_records: deps.config.batch_records,
        deps,
        conn: None,
        next_seq: start,
        last_sent: None,
        handled: HashSet::new(),
        rng: SystemRandom::new(),
        ops_key,
        renew: RenewSchedule::new(),
        prefetched: None,
        crl_checked: None,
        ahead_reported: None,
        stopping: false,
    };
    loop {
        if stop.is_cancelled() {
            break;
        }
        let pause = match s.step().await {
            Ok(Progress::Sent) => continue,
            Ok(Progress::Idle) => IDLE_POLL,
            Err(f) => {
                s.deps.stats.failures.fetch_add(1, Ordering::Relaxed);
                let delay = s.backoff.next(s.unit(), f.retry_after);
                tracing::warn!(error = %f.error, retry_in_ms = delay.as_millis() as u64, attempt = s.backoff.attempts(), "uplink: batch not delivered");
                delay
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    s.final_flush().await;
}

impl Shipper {
    fn unit(&self) -> f64 {
        let mut b = [0u8; 8];
        let _ = self.rng.fill(&mut b);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn connection(&mut self) -> Result<&mut Connection, UplinkError> {
        let stale = self
            .conn
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > RECONNECT_AFTER);
        if stale {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.deps
                .stats
                .connection_attempts
                .fetch_add(1, Ordering::Relaxed);
            let c = &self.deps.config;
            let config = tls::client_config(
                self.deps.element.clone(),
                &c.certificate,
                &c.fleet_ca,
                c.pinned,
                c.crl.as_deref(),
            )?;
            let conn = Connection::open(&c.collector, &c.server_name(), config, TIMEOUT).await?;
            self.conn = Some((conn, Instant::now()));
            // A new connection asks for the current CRL first thing.
            self.crl_checked = None;
        }
        match self.conn.as_mut() {
            Some((conn, _)) => Ok(conn),
            None => Err(UplinkError::Network("no connection".to_owned())),
        }
    }

    /// Renews the certificate when due; failures are logged and retried later, never fatal.
    async fn maybe_renew(&mut self) {
        if !self.renew.ready() {
            return;
        }
        let path = self.deps.config.certificate.clone();
        let Some((not_before, not_after)) =
            std::fs::read(&path).ok().and_then(|p| renew::validity(&p))
        else {
            self.renew.later();
            return;
        };
        let fraction = f64::from(self.deps.config.renew_after_percent) / 100.0;
        if !renew::due(not_before, not_after, Clock::wall_ms() / 1000, fraction) {
            self.renew.later();
            return;
        }
        match self.renew_now(&path, not_after).await {
            Ok(new_not_after) => {
                tracing::info!(
                    not_after = new_not_after,
                    "certificate renewed; the next connection uses it"
                );
                self.conn = None;
                self.renew.succeeded();
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; the current certificate stays in use");
                self.renew.failed();
            }
        }
    }

    async fn renew_now(
        &mut self,
        path: &std::path::Path,
        old_not_after: u64,
    ) -> Result<u64, UplinkError> {
        let device = self.deps.journal.device_id().as_str().to_owned();
        let csr = posguard_hal::csr::device_csr_pem(self.deps.element.clone(), &device)
            .map_err(|e| UplinkError::Config(format!("renewal CSR: {e}")))?;
        let spki = self
            .deps
            .element
            .identity_public_key()
            .map_err(|e| UplinkError::Config(format!("identity key: {e}")))?;
        let body = serde_json::to_vec(&serde_json::json!({ "csr_pem": csr }))
            .map_err(|e| UplinkError::Config(e.to_string()))?;
        let conn = self.connection().await?;
        let answer = conn
            .post_as("/v1/renew", "application/json", body, TIMEOUT)
            .await?;
        if answer.status != 200 {
            return Err(UplinkError::Refused {
                status: answer.status,
                code: answer.error_code.unwrap_or_default(),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| UplinkError::Network(format!("renewal answer: {e}")))?;
        let chain = v
            .get("chain_pem")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| UplinkError::Network("renewal answer holds no chain".to_owned()))?;
        renew::install(path, chain, &spki, old_not_after)
    }

    /// Fetches the fleet CRL when due; a newer one closes the connection, so that the next
    /// handshake checks the collector's certificate against it. Failures only wait.
    async fn maybe_refresh_crl(&mut self) -> Result<(), UplinkError> {
        let Some(path) = self.deps.config.crl.clone() else {
            return Ok(());
        };
        if self.conn.is_none() || self.crl_checked.is_some_and(|t| t.elapsed() < crl::REFRESH) {
            return Ok(());
        }
        self.crl_checked = Some(Instant::now());
        let fleet_ca = self.deps.config.fleet_ca.clone();
        let conn = self.connection().await?;
        match crl::refresh(conn, &path, &fleet_ca, TIMEOUT).await {
            Ok(Some(number)) => {
                tracing::info!(
                    number,
                    "newer fleet CRL installed; reconnecting to apply it"
                );
                self.conn = None;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "fleet CRL not refreshed; the current one stays"),
        }
        Ok(())
    }

    async fn step(&mut self) -> Result<Progress, Failure> {
        if !self.stopping {
            self.maybe_renew().await;
            self.maybe_refresh_crl().await?;
        }
        let journal = &self.deps.journal;
        let internal =
            |e: crate::journal::JournalError| UplinkError::Config(format!("journal: {e}"));
        let mut records = match self.prefetched.take() {
            Some((from, records))
                if from == self.next_seq && records.len() <= self.batch_records =>
            {
                records
            }
            _ => journal
                .read(
                    self.next_seq,
                    self.batch_records,
                    self.deps.config.batch_bytes,
                )
                .await
                .map_err(internal)?,
        };
        let heartbeat_due = self
            .last_sent
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.deps.config.heartbeat_secs));
        if records.is_empty() && !heartbeat_due {
            return Ok(Progress::Idle);
        }
        let mut checkpoints = match (records.first(), records.last()) {
            (Some(a), Some(b)) => journal
                .checkpoints(a.seq(), b.seq())
                .await
                .map_err(internal)?,
            _ => Vec::new(),
        };
        super::batch::cut_to_checkpoint_limit(&mut records, &mut checkpoints);
        let key_ids = super::batch::cut_to_key_limit(&mut records);
        if let Some(last) = records.last().map(|r| r.seq()) {
            // The key cut may end the records earlier: their checkpoints end there too.
            checkpoints.retain(|c| {
                posguard_proto::checkpoint::Checkpoint::from_bytes(c)
                    .map_or(true, |cp| cp.fields().seq <= last)
            });
        }
        let last = records.last().map(|r| r.seq());
        let certs = journal.certs_for(key_ids).await.map_err(internal)?;
        let status = journal.status().await.map_err(internal)?;
        let mut batch = UplinkBatch::new();
        batch.certs = certs;
        batch.checkpoints = checkpoints;
        batch.records = records.into_iter().map(|r| r.into_bytes()).collect();
        batch.status = Some(DeviceStatus {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            cert_not_after_unix: cert_not_after(&self.deps.config.certificate).unwrap_or(0),
            journal_head: status.head_seq,
            journal_shipped: status.shipped_seq,
            wall_ms: Clock::wall_ms(),
        });
        let body = batch
            .to_bytes()
            .map_err(|e| UplinkError::Config(format!("batch: {e}")))?;
        // While the collector verifies and stores this batch, read the next one (records are
        // never rewritten, so what is read now is what would be read after the answer).
        let reader = self.deps.journal.clone();
        let (max_count, max_bytes) = (self.batch_records, self.deps.config.batch_bytes);
        let prefetch = async move {
            let from = last?.checked_add(1)?;
            match reader.read(from, max_count, max_bytes).await {
                Ok(next) if !next.is_empty() => Some((from, next)),
                _ => None,
            }
        };
        let conn = self.connection().await?;
        let (answer, prefetched) = tokio::join!(conn.post("/v1/journal", body, TIMEOUT), prefetch);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.conn = None;
                return Err(e.into());
            }
        };
        if answer.status == 200 {
            self.prefetched = prefetched;
        }
        let refused = |status: u16, code: Option<String>| UplinkError::Refused {
            status,
            code: code.unwrap_or_default(),
        };
        match answer.status {
            200 => {
                let ack = UplinkAck::from_bytes(&answer.body).map_err(|e| {
                    UplinkError::Network(format!("unreadable acknowledgement: {e}"))
                })?;
                self.acknowledged(&ack).await.map_err(internal)?;
                self.apply_commands(&ack.commands).await;
                self.backoff.reset();
                self.last_sent = Some(Instant::now());
                self.batch_records = self.deps.config.batch_records;
                Ok(Progress::Sent)
            }
            413 => {
                self.batch_records = (self.batch_records / 2).max(1);
                Err(refused(413, answer.error_code).into())
            }
            401 | 403 => {
                self.conn = None;
                Err(UplinkError::ClientCertRefused(format!(
                    "the collector refused this terminal ({}): {}",
                    answer.status,
                    answer.error_code.unwrap_or_default()
                ))
                .into())
            }
            status => {
                // A refused batch still says where the collector stands: beyond this journal's
                // head means the journal went back (its new chain is refused at the link).
                if let Some(collector) = answer.highest_stored
                    && let Ok(now) = self.deps.journal.status().await
                    && collector > now.head_seq
                {
                    self.collector_ahead(collector, now.head_seq).await;
                }
                if status >= 500 || status == 408 || status == 422 {
                    // Stored prefix (422) or nothing; the next try resumes from the collector's word.
                    self.conn = None;
                }
                Err(Failure {
                    error: refused(status, answer.error_code),
                    retry_after: answer.retry_after,
                })
            }
        }
    }

    async fn journal(&self, kind: EventKind) {
        let event = Event::new(self.deps.clock.stamp(), Actor::Collector, Some(me()), kind);
        if let Err(e) = self.deps.journal.append(event).await {
            tracing::error!(error = %e, "uplink: could not journal a command");
        }
    }

    /// Verifies and applies signed commands; each is journaled as received and as applied or
    /// refused (the collector stops repeating a command once it sees one of those).
    async fn apply_commands(&mut self, commands: &[SignedCommand]) {
        for cmd in commands {
            if !self.handled.insert(cmd.id) {
                continue;
            }
            let command = CommandRef {
                command_seq: cmd.id,
                kind: cmd.kind.into(),
            };
            self.journal(EventKind::CommandReceived {
                command: command.clone(),
            })
            .await;
            let refusal = match self.ops_key {
                None => Some(CommandRefusal::Unsupported),
                Some(_) if cmd.device_id != *self.deps.journal.device_id() => {
                    Some(CommandRefusal::WrongDevice)
                }
                Some(key) if !cmd.verify(&key) => Some(CommandRefusal::BadSignature),
                Some(_) => None,
            };
            if let Some(reason) = refusal {
                tracing::warn!(id = cmd.id, ?reason, "uplink: command refused");
                self.journal(EventKind::CommandRefused {
                    command: Some(command),
                    reason,
                })
                .await;
                continue;
            }
            let on = matches!(cmd.kind, CommandKind::Lockdown);
            match self
                .deps
                .clerks
                .set_lockdown(on, Source::Collector, Actor::Collector, me())
                .await
            {
                Ok(()) => self.journal(EventKind::CommandApplied { command }).await,
                Err(e) => tracing::error!(error = ?e, "uplink: command could not be applied"),
            }
        }
    }
}
