//! Detection as the runbook describes it, end to end: a real agent on a software TPM ships to
//! a real collector process; a SuperAdmin is locked out by a mix of replayed and wrong TOTP
//! codes at the terminal's socket (codes from `oathtool`, the independent judge), and the
//! collector raises `mfa_failures` naming both kinds and `admin_locked_out` (before, replays
//! were not counted and the lockout raised nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use posguard_e2e::lifetime::call;
use posguard_e2e::{AgentProcess, CollectorProcess, Fleet, collector_cli, free_port};
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

/// Polls `f` every 100 ms until it returns `Some`, at most `secs`.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TOTP code of `secret` at `offset_steps` 30 s steps from now.
fn oathtool(secret: &str, offset_steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = std::process::Command::new("oathtool")
        .args([
            "--totp",
            "-b",
            &format!("--now=@{}", now + offset_steps * 30),
            secret,
        ])
        .output()
        .expect("oathtool is installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A code the agent cannot accept now: none of the previous, current or next step's.
fn wrong_code(secret: &str) -> String {
    let valid: Vec<String> = (-1..=1).map(|o| oathtool(secret, o)).collect();
    (0..4u32)
        .map(|n| format!("{:06}", n * 250_001))
        .find(|c| !valid.contains(c))
        .unwrap()
}

fn login(socket: &std::path::Path, totp: &str) -> Value {
    call(
        socket,
        "login",
        json!({"clerk": "sa", "secret": "correct horse 42", "totp": totp}),
    )
    .unwrap()
}

#[test]
fn a_superadmin_locked_out_by_replayed_and_wrong_codes_raises_mfa_failures() {
    let fleet = Fleet::new("posguard detection CA");
    let port = free_port();
    let config = fleet.collector_config(port, "");
    let _collector = CollectorProcess::start(&config, port);
    let tpm = Swtpm::start().unwrap();
    // No progressive delay before the lockout, so the ten attempts run back to back.
    let t = fleet.bench_terminal(
        &tpm,
        "store9-till2",
        port,
        64 * 1024 * 1024,
        "[auth.throttle]\ndelay_after_failures = 10\n",
    );
    let agent = AgentProcess::start(&t.config, &t.socket);
    let enrolled = call(
        &t.socket,
        "clerk.enroll",
        json!({"clerk": "sa", "role": "SuperAdmin", "secret": "correct horse 42"}),
    )
    .unwrap();
    assert_eq!(enrolled["ok"], true, "{enrolled}");
    let secret = enrolled["result"]["totp_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // One good login: its code is now spent, and any reuse is a replay.
    let seen = oathtool(&secret, 0);
    let first = login(&t.socket, &seen);
    assert_eq!(first["ok"], true, "{first}");
    let mut outcomes = Vec::new();
    for n in 0..10 {
        let code = if n % 2 == 0 {
            seen.clone()
        } else {
            wrong_code(&secret)
        };
        let r = login(&t.socket, &code);
        assert_eq!(r["ok"], false, "attempt {n}: {r}");
        outcomes.push(r["error"]["code"].as_str().unwrap_or("").to_owned());
    }
    let locked = login(&t.socket, &oathtool(&secret, 0));
    assert_eq!(
        locked["error"]["code"], "locked_out",
        "{locked} after {outcomes:?}"
    );

    // Shipped within a heartbeat or two: the lockout and the codes are at the collector...
    poll(60, "the lockout stored at the collector", || {
        let out = collector_cli(
            &config,
            &["query", "--device", "store9-till2", "--kind", "locked_out"],
        );
        (!out.trim().is_empty()).then_some(())
    });
    // ...and so is the alert, naming both kinds of codes.
    let alert: Value = poll(30, "an mfa_failures alert", || {
        let out = collector_cli(
            &config,
            &[
                "alerts",
                "--kind",
                "mfa_failures",
                "--device",
                "store9-till2",
            ],
        );
        out.lines().next().map(|l| serde_json::from_str(l).unwrap())
    });
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["state"], "open", "{alert}");
    let detail = alert["detail"].as_str().unwrap();
    assert!(detail.contains("5 mfa_failed, 5 mfa_replayed"), "{detail}");
    assert!(detail.contains("clerk sa"), "{detail}");
    assert_eq!(
        alert["count"], 6,
        "raised at the 5th code, +1 for each of 5 more: {alert}"
    );
    assert!(agent.stop().success());
}
