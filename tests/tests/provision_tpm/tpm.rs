//! The software TPM as another application sees it (tpm2-tools): planting its objects at
//! posguard's handles, reading public areas and the dictionary-attack counter.

use posguard_hal::testing::Swtpm;

pub const IDENTITY: &str = "0x81010001";
pub const SRK: &str = "0x81000001";

/// `tpm2_readpublic` of a handle (its name and public area), or its error.
pub fn public_area(tpm: &Swtpm, handle: &str) -> String {
    let out = tpm.tpm2("tpm2_readpublic", &["-c", handle]).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// TPM2_PT_LOCKOUT_COUNTER: the dictionary-attack failures the TPM has counted.
pub fn lockout_counter(tpm: &Swtpm) -> u64 {
    let out = tpm.tpm2("tpm2_getcap", &["properties-variable"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("TPM2_PT_LOCKOUT_COUNTER"))
        .unwrap_or_else(|| panic!("no lockout counter in {text}"));
    let value = line.rsplit(':').next().unwrap().trim();
    u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
}

pub fn tpm2_ok(tpm: &Swtpm, tool: &str, args: &[&str]) {
    let out = tpm.tpm2(tool, args).unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What another application may have left at one of posguard's handles.
#[derive(Debug, Clone, Copy)]
pub enum Foreign {
    /// A P-256 signing key with a password and without noDA: each wrong password counts
    /// towards lockout. Its attributes are those posguard's key had minus noDA.
    PasswordP256,
    /// tpm2-tools' default P-256 key (sign and decrypt), no password.
    DefaultP256,
    /// An RSA storage primary.
    RsaPrimary,
    /// An RSA storage primary at the storage root key's handle.
    RsaAtSrk,
}

impl Foreign {
    pub fn handle(self) -> &'static str {
        match self {
            Foreign::RsaAtSrk => SRK,
            _ => IDENTITY,
        }
    }

    /// The option and free handle the refusal must offer.
    pub fn advice(self) -> (&'static str, &'static str) {
        match self {
            Foreign::RsaAtSrk => ("--srk-handle", "0x81000002"),
            _ => ("--identity-handle", "0x81010002"),
        }
    }

    pub fn plant(self, tpm: &Swtpm) {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let (primary, public, private, key) =
            (p("primary.ctx"), p("k.pub"), p("k.priv"), p("k.ctx"));
        match self {
            Foreign::RsaPrimary | Foreign::RsaAtSrk => {
                tpm2_ok(
                    tpm,
                    "tpm2_createprimary",
                    &["-C", "o", "-G", "rsa2048", "-c", &key],
                );
            }
            Foreign::PasswordP256 | Foreign::DefaultP256 => {
                tpm2_ok(
                    tpm,
                    "tpm2_createprimary",
                    &["-C", "o", "-G", "ecc256", "-c", &primary],
                );
                let mut args = vec![
                    "-C",
                    &primary,
                    "-G",
                    "ecc256:ecdsa-sha256",
                    "-u",
                    &public,
                    "-r",
                    &private,
                ];
                if let Foreign::PasswordP256 = self {
                    args.extend([
                        "-p",
                        "another-apps-secret",
                        "-a",
                        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                    ]);
                }
                tpm2_ok(tpm, "tpm2_create", &args);
                tpm.flush_after_kill().unwrap();
                tpm2_ok(
                    tpm,
                    "tpm2_load",
                    &["-C", &primary, "-u", &public, "-r", &private, "-c", &key],
                );
            }
        }
        tpm2_ok(
            tpm,
            "tpm2_evictcontrol",
            &["-C", "o", "-c", &key, self.handle()],
        );
        // tpm2-tools without a resource manager leave their transient objects loaded.
        tpm.flush_after_kill().unwrap();
    }
}
