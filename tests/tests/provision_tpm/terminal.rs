//! A terminal's directories, what a failed `--force` must not change, and the real agent
//! shipping with the terminal's identity.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use posguard_e2e::{AgentProcess, agent_status};
use posguard_hal::testing::Swtpm;

use super::tpm::{IDENTITY, public_area};

/// A terminal's directories.
pub struct Terminal {
    _dir: tempfile::TempDir,
    pub etc: PathBuf,
    pub state: PathBuf,
}

impl Terminal {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
        Terminal {
            _dir: dir,
            etc,
            state,
        }
    }

    pub fn dirs(&self) -> (&Path, &Path) {
        (&self.etc, &self.state)
    }

    /// What a forced re-provisioning must not change when it fails.
    pub fn snapshot(&self, tpm: &Swtpm) -> (String, Vec<u8>, Vec<u8>, Vec<u8>) {
        (
            public_area(tpm, IDENTITY),
            std::fs::read(self.state.join("device.pem")).unwrap(),
            std::fs::read(self.etc.join("agent.toml")).unwrap(),
            std::fs::read(self.state.join("datakey.sealed")).unwrap(),
        )
    }

    /// Starts the real agent (heartbeat every second) and waits until the collector
    /// acknowledged a batch over mTLS with the TPM key: the identity works end to end.
    pub fn agent_ships(&self) {
        assert!(self.shipping_agent().stop().success());
    }

    /// [`Terminal::agent_ships`], leaving the agent running.
    pub fn shipping_agent(&self) -> AgentProcess {
        let config = self.etc.join("agent.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        if !text.contains("heartbeat_secs") {
            // [uplink] is the last section init writes.
            text.push_str("heartbeat_secs = 1\n");
            std::fs::write(&config, text).unwrap();
        }
        let socket = self.state.join("agent.sock");
        let agent = AgentProcess::start(&config, &socket);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = agent_status(&socket);
            if s["uplink"]["batches_acked"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "nothing acknowledged: {s}");
            // Polling interval while waiting for the first acknowledgement.
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }
}

/// The fingerprint `posguard-provision` prints for the key of a PEM certificate: SHA-256 of its
/// SubjectPublicKeyInfo, 8 bytes.
pub fn fingerprint(pem: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let bytes: Vec<String> = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    bytes.join(":")
}
