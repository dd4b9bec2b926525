//! A terminal for the anchor tests: a swtpm with the identity key, an agent configuration
//! under a temporary directory, and helpers to run the real agent binary against it.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use posguard_e2e::{AgentProcess, agent_status};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use posguard_proto::event::{EventKind, TamperFinding};
use serde_json::Value;

pub struct Terminal {
    _tpm: Swtpm,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
}
impl Terminal {
    pub fn new(id: &str) -> Self {
        let tpm = Swtpm::start().unwrap();
        posguard_hal::open(&tpm.config())
            .unwrap()
            .ensure_identity_key(KeyMode::OpenOrCreate)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[device]\nid = \"{id}\"\n[secure_element]\ntcti = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                tpm.tcti(),
                dir.path().join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        Terminal {
            _tpm: tpm,
            dir,
            config,
            socket,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    pub fn start(&self) -> AgentProcess {
        AgentProcess::start(&self.config, &self.socket)
    }

    /// One clean run: start, status, SIGTERM.
    pub fn run(&self) -> Value {
        let agent = self.start();
        let status = agent_status(&self.socket);
        assert!(agent.stop().success());
        status
    }

    pub fn findings(&self) -> Vec<TamperFinding> {
        posguard_agent::journal::read_events(&self.path("journal"))
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e.kind {
                EventKind::TamperDetected { finding }
                | EventKind::TamperRecovered { finding, .. } => Some(finding),
                _ => None,
            })
            .collect()
    }
}

pub fn condition(status: &Value) -> &str {
    status["condition"].as_str().unwrap_or_default()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn replace_dir(dir: &Path, with: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(with, dir);
}
