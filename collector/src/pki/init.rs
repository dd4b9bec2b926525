//! `ca init`: the fleet CA (ECDSA P-256, key file mode 0600, created with `create_new` so an
//! existing CA is never overwritten), the collector's server certificate signed by it and an
//! empty CRL, so that `crl` can be configured from day one. [`server_cert`] also serves
//! `ca server-cert` (a new server key after a compromise).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::{PkiError, io_err, random_serial, write_new};

/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "posguard fleet CA";
/// The server certificate never lives longer than this, whatever `--days` says.
pub const MAX_SERVER_DAYS: u32 = 825;

/// What `ca init` makes.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// Where the files go (created, mode 0700, if missing).
    pub dir: PathBuf,
    /// DNS names or IP addresses of the collector (its server certificate's SANs).
    pub server_names: Vec<String>,
    /// Validity of the CA in days (the server certificate: at most [`MAX_SERVER_DAYS`]).
    pub days: u32,
}

/// The files `ca init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// Fleet CA certificate (PEM): `fleet_ca` and `ca_cert`; terminals get it too.
    pub ca_cert: PathBuf,
    /// Fleet CA key (PKCS#8 PEM, mode 0600): `ca_key`.
    pub ca_key: PathBuf,
    /// The collector's certificate (PEM): `server_cert`.
    pub server_cert: PathBuf,
    /// The collector's key (PKCS#8 PEM, mode 0600): `server_key`.
    pub server_key: PathBuf,
    /// The CRL (PEM): `crl`.
    pub crl: PathBuf,
}

impl CaFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("fleet-ca.pem"),
            ca_key: dir.join("fleet-ca.key"),
            server_cert: dir.join("collector.pem"),
            server_key: dir.join("collector.key"),
            crl: dir.join("fleet.crl"),
        }
    }

    fn all(&self) -> [&Path; 5] {
        [
            &self.ca_key,
            &self.ca_cert,
            &self.server_key,
            &self.server_cert,
            &self.crl,
        ]
    }

    /// The lines to put into `collector.toml` (valid TOML).
    pub fn config_snippet(&self) -> String {
        format!(
            "server_cert = \"{}\"\nserver_key = \"{}\"\nfleet_ca = \"{}\"\ncrl = \"{}\"\n\
             ca_cert = \"{}\"\nca_key = \"{}\"\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca_cert.display(),
            self.crl.display(),
            self.ca_cert.display(),
            self.ca_key.display(),
        )
    }
}

/// Creates the CA, the server certificate and the CRL. Nothing is written if any of the files
/// exists; the CA key is written first, with `create_new`, so two racing runs cannot both win.
pub fn init(plan: &InitPlan) -> Result<CaFiles, PkiError> {
    if plan.days == 0 || plan.days > 36_500 {
        return Err(PkiError::Invalid("--days: must be 1 to 36500".into()));
    }
    if plan.server_names.is_empty() {
        return Err(PkiError::Invalid("--server-name: at least one".into()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plan.dir)
        .map_err(io_err(&plan.dir))?;
    let dir = plan.dir.canonicalize().map_err(io_err(&plan.dir))?;
    let files = CaFiles::in_dir(&dir);
    if let Some(existing) = files.all().into_iter().find(|p| p.exists()) {
        return Err(PkiError::Exists(existing.to_owned()));
    }
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.distinguished_name
        .push(DnType::OrganizationName, "posguard");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + Duration::days(i64::from(plan.days));
    let ca_not_after = ca.not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let server = server_cert(&issuer, &plan.server_names, plan.days, ca_not_after, now)?;
    let crl_pem = super::crl::signed_pem(&issuer, &[], 1, now)?;

    write_new(&files.ca_key, ca_key_pem.as_bytes(), 0o600)?;
    write_new(&files.ca_cert, ca_pem.as_bytes(), 0o644)?;
    write_new(&files.server_key, server.key_pem.as_bytes(), 0o600)?;
    write_new(&files.server_cert, server.cert_pem.as_bytes(), 0o644)?;
    write_new(&files.crl, crl_pem.as_bytes(), 0o644)?;
    Ok(files)
}

/// A new server certificate and its new key.
#[derive(Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its key (PKCS#8 PEM).
    pub key_pem: String,
    /// Serial, lower-case hex (what `ca revoke --serial` takes).
    pub serial: String,
    /// notAfter, Unix seconds.
    pub not_after_unix: i64,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerCert")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// Issues the collector's server certificate for `names` (a new P-256 key, serverAuth, valid
/// `days` but at most [`MAX_SERVER_DAYS`] and never past the CA): `ca init`, and
/// `ca server-cert` when the server key must be replaced (docs/runbook.md).
pub fn server_cert(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    days: u32,
    ca_not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<ServerCert, PkiError> {
    if names.is_empty() {
        return Err(PkiError::Invalid("--server-name: at least one".into()));
    }
    if days == 0 {
        return Err(PkiError::Invalid("--days: must be at least 1".into()));
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(names.to_vec())?;
    server.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        server.distinguished_name.push(DnType::CommonName, first);
    }
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let serial = random_serial()?;
    server.serial_number = Some(SerialNumber::from_slice(&serial));
    server.use_authority_key_identifier_extension = true;
    server.not_before = now - Duration::minutes(5);
    server.not_after =
        (now + Duration::days(i64::from(days.min(MAX_SERVER_DAYS)))).min(ca_not_after);
    if server.not_after <= now {
        return Err(PkiError::Invalid("the fleet CA has expired".into()));
    }
    let not_after_unix = server.not_after.unix_timestamp();
    let cert = server.signed_by(&key, issuer)?;
    Ok(ServerCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial: super::serial_hex(&serial),
        not_after_unix,
    })
}
