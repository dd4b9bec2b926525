//! Decommissioning when the collector cannot take the journal, with the real binaries (agent on
//! swtpm, collector killed):
//!
//! - without `--force`: progress lines, then a failure at the deadline; nothing removed, the
//!   agent still running;
//! - `--force` with a wrong typed device id: nothing changed;
//! - `--force` confirmed with the device id: a record of what was not shipped (seq range,
//!   count, head hash) in a file and in the JSON report, the agent stopped before anything
//!   was removed, then the TPM keys, state and configuration gone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::process::Stdio;

use posguard_e2e::provision_agent::{Central, Terminal};
use posguard_e2e::{AgentProcess, agent_status, append_business_events, command};
use posguard_hal::testing::Swtpm;
use serde_json::Value;

fn decommission(t: &Terminal, tpm: &Swtpm, args: &[&str], typed: &str) -> (bool, String) {
    let mut child = command("posguard-provision")
        .args(["decommission", "--tcti", &tpm.tcti(), "--config-dir"])
        .arg(&t.etc)
        .arg("--state-dir")
        .arg(&t.state)
        .arg("--socket")
        .arg(t.socket())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{typed}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_forced_decommission_wipes_after_recording_what_was_not_shipped() {
    let (central, collector) = Central::start();
    let tpm = Swtpm::start().unwrap();
    let t = Terminal::new();
    t.init(&central, "till-7", &tpm.tcti(), &[]);
    let mut agent = AgentProcess::start(&t.config(), &t.socket());

    // The collector goes away; sales go on.
    collector.kill();
    append_business_events(&t.socket(), 1, 5, 1);

    // Without --force: progress, then nothing removed at the deadline.
    let (ok, out) = decommission(&t, &tpm, &["--yes", "--timeout", "6"], "");
    assert!(!ok, "{out}");
    assert!(out.contains("shipping: acknowledged"), "{out}");
    assert!(
        out.contains("nothing was removed") && out.contains("--force"),
        "{out}"
    );
    assert!(agent.is_running());
    assert!(t.config().exists() && t.state.join("datakey.sealed").exists());

    // --force asks for the device id; a wrong answer changes nothing.
    let (ok, out) = decommission(&t, &tpm, &["--force", "--timeout", "2"], "till-8");
    assert!(!ok && out.contains("nothing changed"), "{out}");
    assert!(agent.is_running() && t.config().exists());

    // --force, confirmed: the record first, the agent stopped, then the wipe.
    let before = agent_status(&t.socket());
    let record = t.dir.path().join("unshipped.json");
    let (ok, out) = decommission(
        &t,
        &tpm,
        &[
            "--force",
            "--timeout",
            "2",
            "--json",
            "--record",
            record.to_str().unwrap(),
        ],
        "till-7",
    );
    assert!(ok, "{out}");
    // stdout (the report) comes first, then stderr (progress and the record).
    let report: Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let unshipped = &report["unshipped"];
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(&saved, unshipped);
    assert_eq!(unshipped["device_id"], "till-7");
    let acked = unshipped["acknowledged_seq"].as_u64().unwrap();
    let head = unshipped["head_seq"].as_u64().unwrap();
    // The five sales and the decommissioning record itself, at least, were not shipped.
    assert!(head > before["journal"]["head_seq"].as_u64().unwrap());
    assert!(unshipped["count"].as_u64().unwrap() >= 6, "{unshipped:#}");
    assert_eq!(unshipped["count"].as_u64().unwrap(), head - acked);
    assert_eq!(unshipped["unshipped"], serde_json::json!([acked + 1, head]));
    let hash = unshipped["head_hash"].as_str().unwrap();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );

    // The agent was stopped before anything was removed.
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let at = |n: &str| names.iter().position(|s| s.contains(n)).unwrap();
    assert!(
        at("record of what was not shipped") < at("agent stopped"),
        "{names:?}"
    );
    assert!(at("agent stopped") < at("TPM identity key"), "{names:?}");
    assert!(!agent.is_running());
    assert!(!t.state.exists() && !t.config().exists());
    let caps = tpm.tpm2("tpm2_getcap", &["handles-persistent"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&caps.stdout).contains("0x81010001"),
        "identity key evicted"
    );
}

#[test]
fn without_an_agent_only_force_wipes_and_the_record_says_nothing_is_known() {
    let (central, _collector) = Central::start();
    let tpm = Swtpm::start().unwrap();
    let t = Terminal::new();
    t.init(&central, "till-8", &tpm.tcti(), &[]);

    let (ok, out) = decommission(&t, &tpm, &["--yes"], "");
    assert!(!ok && out.contains("nothing was removed"), "{out}");
    assert!(out.contains("systemctl start posguard-agent"), "{out}");
    assert!(t.config().exists() && t.state.join("datakey.sealed").exists());

    let record = t.dir.path().join("unshipped.json");
    let (ok, out) = decommission(
        &t,
        &tpm,
        &["--force", "--yes", "--record", record.to_str().unwrap()],
        "",
    );
    assert!(ok, "{out}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(saved["device_id"], "till-8");
    assert!(
        saved["count"].is_null() && saved["head_seq"].is_null(),
        "{saved:#}"
    );
    assert!(
        saved["reason"].as_str().unwrap().contains("unknown"),
        "{saved:#}"
    );
    assert!(!t.state.exists() && !t.config().exists());
}
