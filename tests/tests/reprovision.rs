//! Re-provisioning a device id with the real binaries on software TPMs (issue 16, point 3): a
//! terminal ships, operations decommission it at the collector (its certificates revoked), a
//! new terminal (another TPM) is provisioned under the same id with a new token and its new
//! chain is accepted from seq 1; then a third terminal replaces it without a decommission (a
//! mainboard swapped in the field). Every old chain stays stored and verifiable under
//! `<id>@gen<N>`, `devices` shows each generation's state, the only alert is the one saying the
//! id was replaced without a decommission, and a backup restores with every generation verified.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use posguard_e2e::central::{Central, run};
use posguard_e2e::{AgentProcess, agent_status, append_business_events, command, stored_seqs};
use posguard_hal::testing::Swtpm;
use serde_json::Value;

const ID: &str = "till-5";

/// One physical terminal: its TPM and its directories.
struct Terminal {
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Terminal {
    fn new() -> Self {
        Terminal {
            tpm: Swtpm::start().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `posguard-provision init` with a new token, then the agent started (1 s heartbeat).
    fn provision_and_start(&self, c: &Central) -> AgentProcess {
        let (ok, out) = run(command("posguard-provision")
            .args([
                "init",
                "--collector",
                &c.addr(),
                "--server-name",
                "localhost",
            ])
            .args(["--token", &c.token(ID), "--fleet-ca"])
            .arg(c.fleet_ca())
            .args(["--device-id", ID, "--config-dir"])
            .arg(self.etc())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.state().join("agent.sock"))
            .args(["--tcti", &self.tpm.tcti()]));
        assert!(ok, "{out}");
        let config = self.etc().join("agent.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}heartbeat_secs = 1\n")).unwrap();
        AgentProcess::start(&config, &self.state().join("agent.sock"))
    }
}

/// Appends events and waits until the collector acknowledged the whole journal; its head.
fn ship(agent: &AgentProcess, tag: u64) -> u64 {
    append_business_events(&agent.socket, 1, 5, tag);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = agent_status(&agent.socket);
        let head = s["journal"]["head_seq"].as_u64().unwrap_or(0);
        let acked = s["uplink"]["acked_seq"].as_u64().unwrap_or(0);
        if head >= 5 && acked >= head {
            return head;
        }
        assert!(Instant::now() < deadline, "not acknowledged: {s}");
        // Polling interval while waiting for the acknowledgement.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(out.lines().next().unwrap_or_default()).unwrap()
}

/// A chain shipped up to `head` by an agent that was then stopped: seq 1 to `head`, plus the
/// `agent_stopped` record when its one shipping attempt at the stop (at most 3 s) got through.
fn stopped_chain(stored: &[u64], head: u64) {
    assert!(
        stored == one_to(head).as_slice() || stored == one_to(head + 1).as_slice(),
        "stored {stored:?}, shipped up to {head}"
    );
}

#[test]
fn decommissioned_then_replaced_terminals_start_new_chains_and_old_ones_stay_verifiable() {
    let mut c = Central::start();

    // Generation 1 ships, then is decommissioned by operations.
    let first = Terminal::new();
    let agent = first.provision_and_start(&c);
    let head1 = ship(&agent, 1);
    agent.stop();
    let (ok, out) = c.cli(&[
        "device",
        "decommission",
        "--device",
        ID,
        "--reason",
        "mainboard replaced",
    ]);
    assert!(ok, "{out}");
    let d = json_line(&out);
    assert_eq!(d["state"], "decommissioned", "{out}");
    assert!(!d["revoked"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(c.devices()[ID]["lifecycle"], "decommissioned");
    // Run again: nothing more to do, and it says so in the same form.
    let (ok, out) = c.cli(&[
        "device",
        "decommission",
        "--device",
        ID,
        "--reason",
        "again",
    ]);
    assert!(ok, "{out}");
    assert_eq!(json_line(&out)["reason"], "mainboard replaced", "{out}");
    // An unknown id is a usage error naming what to check.
    let (ok, out) = c.cli(&[
        "device",
        "decommission",
        "--device",
        "till-404",
        "--reason",
        "x",
    ]);
    assert!(!ok && out.contains("not known here"), "{out}");

    // Generation 2: another terminal, same id, new token. Its chain is accepted from seq 1.
    let second = Terminal::new();
    let agent = second.provision_and_start(&c);
    let head2 = ship(&agent, 2);
    agent.stop();
    stopped_chain(&stored_seqs(&c.config, ID), head2);
    stopped_chain(&stored_seqs(&c.config, &format!("{ID}@gen1")), head1);

    // Generation 3: replaced in the field without a decommission (a new TPM, a new token).
    let third = Terminal::new();
    let agent = third.provision_and_start(&c);
    let head3 = ship(&agent, 3);
    agent.stop();
    stopped_chain(&stored_seqs(&c.config, ID), head3);
    stopped_chain(&stored_seqs(&c.config, &format!("{ID}@gen2")), head2);

    let devices = c.devices();
    let life = |id: &str| {
        let d = &devices[id];
        (
            d["lifecycle"].as_str().unwrap().to_owned(),
            d["generation"].as_u64().unwrap(),
            d["highest_stored"].as_u64().unwrap(),
        )
    };
    // highest_stored is the stored chain's last seq (checked by stopped_chain above).
    let last = |id: &str| *stored_seqs(&c.config, id).last().unwrap();
    assert_eq!(life(ID), ("active".to_owned(), 3, last(ID)), "{devices:?}");
    let gen1 = format!("{ID}@gen1");
    assert_eq!(life(&gen1), ("decommissioned".to_owned(), 1, last(&gen1)));
    let gen2 = format!("{ID}@gen2");
    assert_eq!(life(&gen2), ("replaced".to_owned(), 2, last(&gen2)));
    // The new chains were never refused: the only alert for the current id is the one that
    // says it was replaced without a decommission (generation 3), none for generation 2.
    let (ok, alerts) = c.cli(&["alerts", "--device", ID]);
    assert!(ok, "{alerts}");
    let kinds: Vec<(String, String)> = alerts
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 1, "{alerts}");
    assert_eq!(kinds[0].0, "device_replaced", "{alerts}");
    assert!(kinds[0].1.contains(&format!("{ID}@gen2")), "{alerts}");
    let (ok, all) = c.cli(&["alerts"]);
    assert!(ok, "{all}");
    assert!(
        !all.contains("bad_cert_signature") && !all.contains("chain_regressed"),
        "{all}"
    );

    // A backup restores with every generation re-verified.
    let backup = c.dir.path().join("backup.db");
    let (ok, out) = c.cli(&["backup", "--out", &backup.display().to_string()]);
    assert!(ok, "{out}");
    c.process.take().unwrap().kill();
    let (ok, out) = c.cli(&[
        "restore",
        "--from",
        &backup.display().to_string(),
        "--force",
    ]);
    assert!(ok, "{out}");
    let restored = json_line(&out);
    let mut heads: Vec<(String, u64)> = restored["heads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["device_id"].as_str().unwrap().to_owned(),
                h["highest_stored"].as_u64().unwrap(),
            )
        })
        .collect();
    heads.sort();
    assert_eq!(
        heads,
        [
            (ID.to_owned(), last(ID)),
            (gen1.clone(), last(&gen1)),
            (gen2.clone(), last(&gen2))
        ],
        "{out}"
    );
    assert!(restored.get("unverified").is_none(), "{out}");
}
