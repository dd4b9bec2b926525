//! The hardware self-test: every operation of the secure element, checked against an
//! independent verifier where one exists (ring for signatures).

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use posguard_hal::{KeyMode, SealedBlob, SecureElement, SecureElementConfig, sha256};

use crate::report::Report;

/// What the self-test may change on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Creates the identity key and the counter if they are missing (first provisioning), and
    /// increments the counter.
    Provision,
    /// Changes nothing in the TPM: no key, no storage root key, no NV index is created and the
    /// counter is only read (an increment would move the journal's anti-rollback counter);
    /// fails if the identity key or counter is missing.
    CheckOnly,
}

fn fingerprint(spki: &[u8]) -> String {
    sha256(spki)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs the self-test, recording each step in `report`. Returns the opened element if the TPM
/// (or software backend) could be opened at all.
pub fn run(
    config: &SecureElementConfig,
    mode: Mode,
    report: &mut Report,
) -> Option<Arc<dyn SecureElement>> {
    let se = report.step("open secure element", || {
        let se = posguard_hal::open(config)?;
        let info = se.info();
        let detail = format!(
            "{:?} at {} ({})",
            info.kind, info.location, info.description
        );
        Ok::<_, posguard_hal::HalError>((se, detail))
    })?;

    report.step("TPM not in dictionary-attack lockout", || {
        if se.in_lockout()? {
            bail!(
                "the TPM is in dictionary-attack lockout: keys with a password cannot be used; \
                 wait for the lockout recovery time or clear it with the lockout authorisation \
                 (tpm2_dictionarylockout --clear-lockout), then run the self-test again"
            );
        }
        Ok::<_, anyhow::Error>(((), "not locked out".to_owned()))
    });

    let key_mode = match mode {
        Mode::Provision => KeyMode::OpenOrCreate,
        Mode::CheckOnly => KeyMode::OpenExisting,
    };
    let spki = report.step("device identity key (ECC P-256)", || {
        let key = se.ensure_identity_key(key_mode)?;
        let detail = format!(
            "{:?} at {}, SHA-256 fingerprint {}",
            key.origin,
            key.location,
            fingerprint(&key.spki_der)
        );
        Ok::<_, posguard_hal::HalError>((key.spki_der, detail))
    });

    if let Some(spki) = &spki {
        report.step("sign a digest, verify with ring", || {
            let message = b"posguard self-test";
            let sig = se.sign_digest(&sha256(message))?;
            let point = posguard_hal::der::p256_point_from_spki(spki)
                .ok_or_else(|| anyhow!("identity key is not P-256"))?;
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                point,
            )
            .verify(message, &sig)
            .map_err(|_| anyhow!("signature did not verify"))?;
            Ok::<_, anyhow::Error>((
                (),
                format!("{}-byte DER ECDSA signature verified", sig.len()),
            ))
        });
        report.step("certificate signing request", || {
            let pem = posguard_hal::csr::device_csr_pem(se.clone(), "selftest")?;
            Ok::<_, posguard_hal::HalError>(((), format!("{} bytes PEM", pem.len())))
        });
    }

    // Sealing needs the storage root key, which the TPM backend creates when it is missing:
    // in check-only mode only on a terminal whose identity key (a child of it) exists.
    if mode == Mode::CheckOnly && spki.is_none() {
        report.step("seal and unseal a 32-byte secret", || {
            Err::<((), String), _>(anyhow!(
                "not tested: no identity key, and check-only creates nothing (run `init` first)"
            ))
        });
    } else {
        seal_steps(se.as_ref(), report);
    }

    report.step("monotonic counter", || match mode {
        Mode::Provision => {
            let before = se.counter_create()?;
            let after = se.counter_increment().context("increment")?;
            if after <= before {
                bail!("counter went from {before} to {after}");
            }
            Ok::<_, anyhow::Error>(((), format!("{before} -> {after}")))
        }
        Mode::CheckOnly => {
            let value = se.counter_read()?;
            Ok(((), format!("value {value} (read only: check-only)")))
        }
    });

    report.step("random bytes from the secure element", || {
        let a = se.random(64)?;
        let b = se.random(64)?;
        if a[..] == b[..] {
            bail!("two draws were equal");
        }
        Ok::<_, anyhow::Error>(((), "64 bytes, two draws differ".to_owned()))
    });

    Some(se)
}

fn seal_steps(se: &dyn SecureElement, report: &mut Report) {
    report.step("seal and unseal a 32-byte secret", || {
        let secret = se.random(32)?;
        let blob = se.seal(&secret)?;
        let back = se.unseal(&blob)?;
        if back[..] != secret[..] {
            bail!("unsealed secret differs");
        }
        Ok::<_, anyhow::Error>((
            (),
            format!("{}-byte blob round-trips", blob.as_bytes().len()),
        ))
    });

    report.step("tampered sealed blob is refused", || {
        let blob = se.seal(b"tamper test")?;
        let mut bytes = blob.as_bytes().to_vec();
        let mid = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(mid) {
            *b ^= 0x01;
        }
        match se.unseal(&SealedBlob::from_bytes(bytes)) {
            Ok(_) => bail!("a tampered blob was accepted"),
            Err(e) => Ok(((), format!("refused: {e}"))),
        }
    });
}
