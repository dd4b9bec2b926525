//! The uplink's TLS client: TLS 1.3 only, ring provider, the device identity key (in the TPM)
//! as client key. The collector is verified against the fleet CA alone when pinned, or the
//! platform's roots plus the fleet CA otherwise; when pinned, the collector's certificate is
//! also checked against the fleet CRL at `uplink.crl` (a stolen collector key, revoked). The
//! certificate chain and the CRL are read from disk for each new connection, so a renewed
//! certificate or a newer CRL is used without a restart.

use std::path::Path;
use std::sync::Arc;

use posguard_hal::SecureElement;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::{ClientConfig, RootCertStore};

use super::UplinkError;

pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| UplinkError::Config(format!("{}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| UplinkError::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(UplinkError::Config(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the client configuration for one connection. With `crl_path` (pinned only), the
/// collector's certificate must not be on the fleet CRL kept there (see [`super::crl`]).
pub(super) fn client_config(
    element: Arc<dyn SecureElement>,
    chain_path: &Path,
    fleet_ca_path: &Path,
    pinned: bool,
    crl_path: Option<&Path>,
) -> Result<Arc<ClientConfig>, UplinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let fleet_ca = read_certs(fleet_ca_path)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Config(e.to_string()))?;
    let builder = if pinned {
        let crl = match crl_path {
            Some(path) => super::crl::load(path, &fleet_ca)?,
            None => None,
        };
        let mut roots = RootCertStore::empty();
        for ca in fleet_ca {
            roots
                .add(ca)
                .map_err(|e| UplinkError::Config(format!("fleet CA: {e}")))?;
        }
        let mut verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl) = crl {
            verifier = verifier
                .with_crls([CertificateRevocationListDer::from(crl.der)])
                .only_check_end_entity_revocation();
        }
        let verifier = verifier
            .build()
            .map_err(|e| UplinkError::Config(format!("collector verifier: {e}")))?;
        builder.with_webpki_verifier(verifier)
    } else {
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(fleet_ca, provider)
            .map_err(|e| UplinkError::Config(format!("platform verifier: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let chain = read_certs(chain_path)?;
    let resolver = posguard_hal::tls::client_cert_resolver(element, chain)
        .map_err(|e| UplinkError::Config(format!("device identity key: {e}")))?;
    Ok(Arc::new(builder.with_client_cert_resolver(resolver)))
}
