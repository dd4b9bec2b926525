//! Revocation after the handshake, and what operations see of it.
//!
//! The TLS verifier checks the CRL only when a connection is opened, and a busy terminal keeps
//! its keep-alive connection open for as long as it ships. So the serials the current CRL lists
//! ([`RevokedSerials`], published by [`crate::tls::TlsReloader`] at every CRL reload) are also
//! checked for every request, and a connection whose certificate becomes revoked is closed when
//! the CRL changes ([`crate::server`]).
//!
//! Every refused attempt of a revoked certificate, at the handshake ([`ReportingVerifier`]) or
//! at a request, is reported to [`Attempts`]; [`run_reports`] turns the reports into the
//! `posguard_collector_revoked_refusals_total` counter, a log line and a `revoked_certificate`
//! alert per certificate (at most one per [`ALERT_EVERY`], so that a terminal retrying for
//! days does not fill the alert table).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertKind, NewAlert};
use crate::clock::WallClock;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// Serials (DER INTEGER content, without leading zero bytes) the current CRL lists.
pub type RevokedSerials = Arc<HashSet<Vec<u8>>>;

/// At most one `revoked_certificate` alert per certificate within this time.
pub const ALERT_EVERY: Duration = Duration::from_secs(600);

/// Reports kept while the reporting task is behind, at most (further ones are counted only).
const MAX_PENDING: usize = 1024;

/// Certificates whose last alert time is remembered, at most (then the memory starts over).
const MAX_REMEMBERED: usize = 4096;

/// Where a revoked certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The TLS handshake (a new connection).
    Handshake,
    /// A request on a connection opened before the revocation.
    Request,
}

impl Stage {
    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Request => "request",
        }
    }
}

/// One refused attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The device the certificate names, if it names one.
    pub device_id: Option<String>,
    /// The certificate's serial, hex.
    pub serial: String,
    /// Where it was refused.
    pub stage: Stage,
}

/// The serial of a certificate (DER), without leading zero bytes.
pub fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(minimal(cert.raw_serial()))
}

/// Serial bytes without leading zero bytes (as the CRL and the certificate may differ there).
pub fn minimal(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(start..).unwrap_or_default().to_vec()
}

/// Refused attempts waiting to be reported; shared by the verifier and the connections.
#[derive(Debug, Default)]
pub struct Attempts {
    pending: Mutex<Vec<Attempt>>,
    wake: Notify,
    /// Every handshake the verifier refused, by reason (revoked or not), for the metrics.
    pub handshakes: crate::metrics::handshake::HandshakeRefusals,
}

impl Attempts {
    /// Records a refused attempt of the certificate `der`.
    pub fn refused(&self, der: &[u8], stage: Stage) {
        let device_id = crate::peer::peer_from_cert(der)
            .ok()
            .map(|p| p.device_id.as_str().to_owned());
        let serial = cert_serial(der).map_or_else(String::new, |s| crate::clock::hex(&s));
        let attempt = Attempt {
            device_id,
            serial,
            stage,
        };
        // A poisoned list is still a list of attempts.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < MAX_PENDING {
            pending.push(attempt);
        }
        drop(pending);
        self.wake.notify_one();
    }

    pub(crate) fn take(&self) -> Vec<Attempt> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The client verifier of [`crate::tls`] with one addition: a certificate refused as revoked
/// is reported to [`Attempts`] (which device, which serial) before the handshake fails.
#[derive(Debug)]
pub struct ReportingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    attempts: Arc<Attempts>,
}

impl ReportingVerifier {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, attempts: Arc<Attempts>) -> Self {
        Self { inner, attempts }
    }
}

impl ClientCertVerifier for ReportingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &result {
            self.attempts.handshakes.refused(e);
        }
        if let Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)) = &result {
            self.attempts.refused(end_entity.as_ref(), Stage::Handshake);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Turns reported attempts into metrics, log lines and alerts until `stop`.
pub async fn run_reports(
    attempts: Arc<Attempts>,
    store: StoreHandle,
    metrics: Arc<Metrics>,
    clock: Arc<dyn WallClock>,
    stop: CancellationToken,
) {
    let mut alerted: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = attempts.wake.notified() => {}
        }
        for a in attempts.take() {
            metrics.revoked_refusal(a.stage.name());
            let device = a.device_id.as_deref().unwrap_or("-");
            tracing::warn!(device, serial = %a.serial, stage = a.stage.name(), "revoked certificate refused");
            let now = Instant::now();
            if alerted
                .get(&a.serial)
                .is_some_and(|at| now.saturating_duration_since(*at) < ALERT_EVERY)
            {
                continue;
            }
            if alerted.len() >= MAX_REMEMBERED {
                alerted.clear();
            }
            alerted.insert(a.serial.clone(), now);
            let alert = NewAlert {
                device_id: a.device_id.clone(),
                kind: AlertKind::RevokedCertificate,
                severity: posguard_proto::event::Severity::Warning,
                detail: format!(
                    "revoked certificate {} of {device} refused at the {} (further attempts \
                     within {} min are counted in the metrics only)",
                    a.serial,
                    a.stage.name(),
                    ALERT_EVERY.as_secs() / 60
                ),
                at_ms: clock.now_ms(),
            };
            match store
                .call(move |s| s.transaction(&mut |tx| tx.put_alert(&alert)))
                .await
            {
                Ok(()) => metrics.alert(AlertKind::RevokedCertificate.name()),
                Err(e) => {
                    tracing::error!(error = %e, "could not store a revoked_certificate alert")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(minimal(&[0, 0, 0x81, 1]), vec![0x81, 1]);
        assert_eq!(minimal(&[0x40, 0]), vec![0x40, 0]);
        assert!(minimal(&[0]).is_empty());
    }

    #[test]
    fn pending_reports_are_bounded() {
        let a = Attempts::default();
        for _ in 0..MAX_PENDING + 10 {
            a.refused(b"not a certificate", Stage::Request);
        }
        let taken = a.take();
        assert_eq!(taken.len(), MAX_PENDING);
        assert_eq!(taken[0].device_id, None);
        assert!(a.take().is_empty());
    }
}
