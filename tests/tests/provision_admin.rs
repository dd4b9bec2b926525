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

use posguard_e2e::provision_agent::{Central, SharedTpm, Terminal, run};
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

/// What a program under `script` (a real pseudo-terminal) printed so far.
struct Screen {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Screen {
    fn watch(out: std::process::ChildStdout) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            let mut out = out;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen { text }
    }

    /// Waits (at most 60 s) until `what` has appeared `times` times; returns the screen.
    fn wait_for(&self, what: &str, times: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = self.text.lock().unwrap().clone();
            if text.matches(what).count() >= times {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} in:\n{text}"
            );
            // Polling the terminal output.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn at_a_terminal_the_password_is_typed_twice_and_the_seed_shown_three_ways() {
    let (central, _collector) = Central::start();
    let tpm = SharedTpm::start();
    let t = Terminal::new();
    t.init(&central, "till-4", &tpm.tcti(), &tpm.env());
    let owned = tpm.env();
    let env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _agent = AgentProcess::start_with_env(&t.config(), &t.socket(), &env);

    // `script` gives the tool a real terminal (/dev/tty), as a technician's console would.
    let tool = posguard_e2e::bin("posguard-provision");
    let line = format!(
        "{} admin --admin boss --selftest-timeout 30 --socket {}",
        tool.display(),
        t.socket().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .envs(tpm.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let screen = Screen::watch(child.stdout.take().unwrap());
    let mut keys = child.stdin.take().unwrap();
    let mut type_line = |s: &str| {
        keys.write_all(format!("{s}\r").as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    // Two different passwords: asked again. Then the same twice.
    screen.wait_for("Password for boss", 1);
    type_line("first-password-12");
    screen.wait_for("Type it again", 1);
    type_line("other-password-34");
    screen.wait_for("differ", 1);
    screen.wait_for("Password for boss", 2);
    type_line("right-password-56");
    screen.wait_for("Type it again", 2);
    type_line("right-password-56");

    // The seed: QR code, URI and base32, then the code.
    let text = screen.wait_for("6-digit code", 1);
    let uri_start = text.find("otpauth://").unwrap();
    let uri: String = text[uri_start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("seed (to type by hand") && text.contains(&secret),
        "{text}"
    );
    assert!(
        text.contains('▀') || text.contains('▄') || text.contains('█'),
        "a QR code: {text}"
    );
    type_line(&code(&secret, 0));
    let text = screen.wait_for("first admin: ", 1);
    assert!(text.contains("first admin: done"), "{text}");
    assert!(
        !text.contains("right-password-56"),
        "the password was echoed: {text}"
    );
    assert!(child.wait().unwrap().success());

    // The confirmed password is the one typed twice: the first one is refused, it is accepted.
    let login = |password: &str, code: &str| {
        let stream = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
        let mut w = stream.try_clone().unwrap();
        let request = serde_json::json!({"v": 1, "id": 1, "method": "login",
            "params": {"clerk": "boss", "secret": password, "totp": code}});
        writeln!(w, "{request}").unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    };
    let next = code(&secret, 1);
    assert!(login("first-password-12", &next).contains("login_failed"));
    assert!(login("right-password-56", &next).contains("granted"));
}
