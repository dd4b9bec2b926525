//! The first admin and the end-to-end self-test with the real binaries: a provisioned terminal
//! (swtpm behind tpm2-abrmd, real collector), its agent, and `posguard-provision admin` driven
//! like a script would (`--json`, `--password-file`, codes on standard input, computed by
//! `oathtool` from the seed the tool printed).
//!
//! - an interrupted run leaves an unconfirmed admin that the next run replaces;
//! - three wrong codes remove the admin again and say what to run next;
//! - a right code after wrong ones confirms it; the JSON report carries the seed;
//! - once confirmed, no second first admin can be made;
//! - the self-test needs a record acknowledged after it began: it fails with the collector
//!   down and passes once it is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};

use posguard_e2e::provision::{Central, SharedTpm, Terminal, run};
use posguard_e2e::{AgentProcess, CollectorProcess, command};
use serde_json::Value;

/// `admin` with a password file, codes from stdin; returns the child and its first stdout line
/// (the seed, as JSON).
fn start_admin(
    t: &Terminal,
    tpm: &SharedTpm,
    pw: &Path,
) -> (Child, Value, BufReader<std::process::ChildStdout>) {
    let mut child = command("posguard-provision")
        .args([
            "admin",
            "--admin",
            "boss",
            "--json",
            "--selftest-timeout",
            "30",
        ])
        .arg("--password-file")
        .arg(pw)
        .arg("--socket")
        .arg(t.socket())
        .envs(tpm.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let seed: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("seed line: {line}"));
    assert_eq!(seed["event"], "totp_seed");
    (child, seed, out)
}

fn code(secret: &str, offset_steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (ok, out) = run(std::process::Command::new("oathtool")
        .args(["--totp", "-b"])
        .arg(format!("--now=@{}", now + offset_steps * 30))
        .arg(secret));
    assert!(ok, "{out}");
    out.trim().to_owned()
}

/// A code that is wrong now: an hour away (outside any drift window).
fn wrong_code(secret: &str) -> String {
    let now = code(secret, 0);
    let mut c = code(secret, 120);
    if c == now {
        c = code(secret, 240);
    }
    c
}

/// Types `codes`, closes stdin, and returns (success, the final JSON report, stderr).
fn finish(
    mut child: Child,
    mut out: BufReader<std::process::ChildStdout>,
    codes: &[String],
) -> (bool, Value, String) {
    let mut stdin = child.stdin.take().unwrap();
    for c in codes {
        writeln!(stdin, "{c}").unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let report: Value =
        serde_json::from_str(rest.trim()).unwrap_or_else(|_| panic!("report: {rest} {err}"));
    (status.success(), report, err)
}

#[test]
fn first_admin_counts_once_confirmed_and_the_self_test_needs_the_collector() {
    let (central, collector) = Central::start();
    let tpm = SharedTpm::start();
    let t = Terminal::new();
    t.init(&central, "till-3", &tpm.tcti(), &tpm.env());
    let owned = tpm.env();
    let env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _agent = AgentProcess::start_with_env(&t.config(), &t.socket(), &env);
    let pw = t.dir.path().join("password");
    std::fs::write(&pw, "correct-horse-battery-42\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Interrupted after the seed was shown (the technician's phone died): killed.
    let (mut child, first_seed, _out) = start_admin(&t, &tpm, &pw);
    child.kill().unwrap();
    child.wait().unwrap();

    // The next run replaces that unconfirmed admin; three wrong codes remove it again.
    let (child, seed, out) = start_admin(&t, &tpm, &pw);
    assert_ne!(seed["totp_secret"], first_seed["totp_secret"], "a new seed");
    let secret = seed["totp_secret"].as_str().unwrap().to_owned();
    let wrong = wrong_code(&secret);
    let (ok, report, err) = finish(
        child,
        out,
        &[wrong.clone(), "12ab56".to_owned(), wrong.clone()],
    );
    assert!(!ok, "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("was removed"), "{error}");
    assert!(
        error.contains("posguard-provision admin --admin boss"),
        "{error}"
    );
    assert!(err.contains("not accepted"), "{err}");
    assert!(
        report["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("earlier unconfirmed attempt was removed"),
        "{report:#}"
    );

    // Again: two wrong codes, then the right one. The JSON report carries the seed.
    let (child, seed, out) = start_admin(&t, &tpm, &pw);
    let secret = seed["totp_secret"].as_str().unwrap().to_owned();
    let wrong = wrong_code(&secret);
    let (ok, report, err) = finish(child, out, &[wrong.clone(), wrong, code(&secret, 0)]);
    assert!(ok, "{report:#} {err}");
    assert_eq!(report["admin"]["totp_secret"], seed["totp_secret"]);
    assert_eq!(report["admin"]["otpauth_uri"], seed["otpauth_uri"]);
    assert!(seed["otpauth_uri"].as_str().unwrap().contains(&secret));
    let steps = report["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["ok"] == true), "{report:#}");
    assert!(
        steps
            .iter()
            .any(|s| s["detail"].as_str().unwrap().contains("attempt 3 of 3")),
        "{report:#}"
    );

    // Confirmed: no run can replace it, under its own id or another.
    for id in ["boss", "boss2"] {
        let (ok, out) = run(command("posguard-provision")
            .args(["admin", "--admin", id, "--json", "--password-file"])
            .arg(&pw)
            .arg("--socket")
            .arg(t.socket())
            .stdin(Stdio::null()));
        assert!(!ok && out.contains("already has clerks"), "{out}");
        if id == "boss" {
            assert!(out.contains("not an unconfirmed first admin"), "{out}");
        }
    }

    // The self-test: with the collector down, a record made now is never acknowledged.
    collector.kill();
    let selftest = |t: &Terminal| {
        run(command("posguard-provision")
            .args([
                "admin",
                "--selftest-only",
                "--selftest-timeout",
                "5",
                "--socket",
            ])
            .arg(t.socket()))
    };
    let (ok, out) = selftest(&t);
    assert!(!ok && out.contains("did not acknowledge"), "{out}");
    let _collector = CollectorProcess::start(&central.config, central.port);
    let (ok, out) = selftest(&t);
    assert!(ok && out.contains("acknowledged"), "{out}");
}
