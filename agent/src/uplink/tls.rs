//! The uplink's TLS client: TLS 1.3 only, ring provider, the device identity key (in the TPM)
//! as client key. The collector is verified against the fleet CA alone when pinned, or the
//! platform's roots plus the fleet CA otherwise. The certificate chain is read from disk for
//! each new connection, so a renewed certificate is used without a restart.

use std::path::Path;
use std::sync::Arc;

use posguard_hal::SecureElement;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use super::UplinkError;

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
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

/// Builds the client configuration for one connection.
pub(super) fn client_config(
    element: Arc<dyn SecureElement>,
    chain_path: &Path,
    fleet_ca_path: &Path,
    pinned: bool,
) -> Result<Arc<ClientConfig>, UplinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let fleet_ca = read_certs(fleet_ca_path)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Config(e.to_string()))?;
    let builder = if pinned {
        let mut roots = RootCertStore::empty();
        for ca in fleet_ca {
            roots
                .add(ca)
                .map_err(|e| UplinkError::Config(format!("fleet CA: {e}")))?;
        }
        builder.with_root_certificates(roots)
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
