//! The server's TLS configuration: TLS 1.3 only, ring provider, client certificates verified
//! against the fleet CA and its CRL whenever one is sent. A client without a certificate
//! completes the handshake (it may only enroll: the handler refuses it everywhere else with 401
//! `client_certificate_required`); a client with a bad one (other CA, expired, revoked) does
//! not. [`TlsReloader`] rebuilds the configuration when
//! the CRL file's mtime changes; new connections get the new one, and the serials the CRL lists
//! are published for the checks of open connections ([`crate::revocation`]). A certificate
//! refused as revoked at the handshake is reported there too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::config::Config;
use crate::revocation::{Attempts, ReportingVerifier, RevokedSerials, minimal};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{key} ({path}): {reason}")]
    File {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration refused")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (bad CA or CRL).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The files the configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub server_cert: PathBuf,
    /// Server key (PEM).
    pub server_key: PathBuf,
    /// Fleet CA (PEM).
    pub fleet_ca: PathBuf,
    /// CRL (PEM or DER), optional.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named in `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            server_cert: config.server_cert.clone(),
            server_key: config.server_key.clone(),
            fleet_ca: config.fleet_ca.clone(),
            crl: config.crl.clone(),
        }
    }
}

fn file_err(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(key, path, e))?;
    if certs.is_empty() {
        return Err(file_err(key, path, "no certificate"));
    }
    Ok(certs)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err("crl", path, e))?;
    if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err("crl", path, e))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// The serials `crls` list, after checking that one of `roots` signed each (a CRL from
/// elsewhere is a configuration error, not an empty list).
fn revoked_serials(
    path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
    roots: &[CertificateDer<'_>],
) -> Result<RevokedSerials, TlsError> {
    use x509_parser::prelude::FromDer as _;
    let mut serials = std::collections::HashSet::new();
    for crl in crls {
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
                .map_err(|e| file_err("crl", path, e))?;
        let signed = roots.iter().any(|root| {
            x509_parser::parse_x509_certificate(root.as_ref())
                .is_ok_and(|(_, ca)| parsed.verify_signature(ca.public_key()).is_ok())
        });
        if !signed {
            return Err(file_err(
                "crl",
                path,
                "not signed by a fleet_ca certificate",
            ));
        }
        serials.extend(
            parsed
                .iter_revoked_certificates()
                .map(|r| minimal(r.raw_serial())),
        );
    }
    Ok(Arc::new(serials))
}

/// The serials (hex, as `enrollments` prints them) the configured CRL revokes, after the same
/// signature check `serve` applies; empty without `crl`. For the CLI's fleet view.
pub fn crl_serials(files: &TlsFiles) -> Result<std::collections::HashSet<String>, TlsError> {
    let Some(path) = &files.crl else {
        return Ok(std::collections::HashSet::new());
    };
    let roots = read_certs("fleet_ca", &files.fleet_ca)?;
    let crls = read_crls(path)?;
    let serials = revoked_serials(path, &crls, &roots)?;
    Ok(serials.iter().map(|s| crate::pki::serial_hex(s)).collect())
}

/// Builds the server configuration from the files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(build(files, &Arc::new(Attempts::default()))?.0)
}

/// The server configuration, whose verifier reports revoked certificates to `attempts`, and
/// the serials the CRL lists.
fn build(
    files: &TlsFiles,
    attempts: &Arc<Attempts>,
) -> Result<(Arc<ServerConfig>, RevokedSerials), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("server_cert", &files.server_cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.server_key)
        .map_err(|e| file_err("server_key", &files.server_key, e))?;
    let mut roots = RootCertStore::empty();
    let fleet_ca = read_certs("fleet_ca", &files.fleet_ca)?;
    for ca in fleet_ca.iter().cloned() {
        roots
            .add(ca)
            .map_err(|e| file_err("fleet_ca", &files.fleet_ca, e))?;
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated();
    let mut revoked = RevokedSerials::default();
    if let Some(crl) = &files.crl {
        let crls = read_crls(crl)?;
        revoked = revoked_serials(crl, &crls, &fleet_ca)?;
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = Arc::new(ReportingVerifier::new(verifier.build()?, attempts.clone()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok((Arc::new(config), revoked))
}

/// What identifies a version of a file: mtime, size and inode (a file replaced by rename within
/// the mtime granularity still differs in inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn mtime(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// How often `serve` looks at the CRL's mtime: a revocation reaches open connections within
/// this time (plus one request).
pub const CRL_POLL: Duration = Duration::from_secs(1);

/// Watches the CRL (and CA) files and publishes a rebuilt configuration when they change.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsFiles,
    seen: (Stamp, Stamp),
    tx: watch::Sender<Arc<ServerConfig>>,
    revoked: watch::Sender<RevokedSerials>,
    attempts: Arc<Attempts>,
}

impl TlsReloader {
    /// Builds the first configuration; the receiver always holds the current one.
    pub fn new(files: TlsFiles) -> Result<(Self, watch::Receiver<Arc<ServerConfig>>), TlsError> {
        let seen = Self::stamps(&files);
        let attempts = Arc::new(Attempts::default());
        let (config, revoked) = build(&files, &attempts)?;
        let (tx, rx) = watch::channel(config);
        let (revoked, _) = watch::channel(revoked);
        Ok((
            Self {
                files,
                seen,
                tx,
                revoked,
                attempts,
            },
            rx,
        ))
    }

    /// The serials the current CRL lists, updated at each reload.
    pub fn revoked(&self) -> watch::Receiver<RevokedSerials> {
        self.revoked.subscribe()
    }

    /// Where refused attempts of revoked certificates are reported (the handshake's verifier
    /// reports there; so must the per-request check).
    pub fn attempts(&self) -> Arc<Attempts> {
        self.attempts.clone()
    }

    fn stamps(files: &TlsFiles) -> (Stamp, Stamp) {
        (files.crl.as_deref().and_then(mtime), mtime(&files.fleet_ca))
    }

    /// Rebuilds if a file changed; a failed rebuild keeps the old configuration (and is
    /// retried at the next change).
    pub fn poll(&mut self) -> bool {
        let now = Self::stamps(&self.files);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        match build(&self.files, &self.attempts) {
            Ok((config, revoked)) => {
                tracing::info!(
                    revoked = revoked.len(),
                    "TLS configuration reloaded (CRL or CA changed)"
                );
                self.tx.send_replace(config);
                self.revoked.send_replace(revoked);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous configuration");
                false
            }
        }
    }

    /// Polls every `every` until `stop` resolves.
    pub async fn run(mut self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => { self.poll(); }
            }
        }
    }
}
