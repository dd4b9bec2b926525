//! Clerk logins through the real socket of a running agent on a software TPM: admin TOTP with
//! oathtool as the independent judge, brute force to lockout across a restart, roles,
//! supervisor override, lockdown, honeypots — and each decision in the signed journal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use posguard_e2e::AgentProcess;
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use posguard_proto::event::{Actor, EventKind, LoginFailure, Severity};
use serde_json::{Value, json};

struct Terminal {
    _tpm: Swtpm,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Terminal {
    fn new() -> Self {
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
                "[device]\nid = \"term-7\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n[auth.throttle]\ndelay_after_failures = 10\n",
                tpm.tcti(),
                dir.path().join("journal").display(),
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

    fn start(&self) -> AgentProcess {
        AgentProcess::start(&self.config, &self.socket)
    }

    fn events(&self) -> Vec<(u64, posguard_proto::event::Event)> {
        posguard_agent::journal::read_events(&self.dir.path().join("journal")).unwrap()
    }
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        format!(
            "{}\n",
            json!({"v": 1, "id": 1, "method": method, "params": params})
        )
        .as_bytes(),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn ok(v: Value) -> Value {
    assert_eq!(v["ok"], true, "{v}");
    v["result"].clone()
}

fn code(v: &Value) -> String {
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

fn oathtool(secret: &str) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret])
        .output()
        .expect("oathtool is installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Enrolls the first admin (as root, no session) and logs in with TOTP. Returns (token, secret).
fn admin_session(socket: &Path) -> (String, String) {
    let enrolled = ok(call(
        socket,
        "clerk.enroll",
        json!({"clerk": "root-admin", "role": "SuperAdmin", "secret": "correct horse 42"}),
    ));
    let secret = enrolled["totp_secret"].as_str().unwrap().to_owned();
    assert!(
        enrolled["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let step1 = ok(call(
        socket,
        "login",
        json!({"clerk": "root-admin", "secret": "correct horse 42"}),
    ));
    assert_eq!(step1["status"], "mfa_required");
    let granted = ok(call(
        socket,
        "verify_mfa",
        json!({"challenge": step1["challenge"], "totp": oathtool(&secret)}),
    ));
    assert_eq!(granted["status"], "granted");
    (granted["token"].as_str().unwrap().to_owned(), secret)
}

#[test]
fn admin_totp_from_oathtool_works_once_and_a_replay_is_refused_and_journaled() {
    let t = Terminal::new();
    let agent = t.start();
    let (token, secret) = admin_session(&t.socket);
    // A second enrollment without a session is refused now that a clerk exists.
    let again = call(
        &t.socket,
        "clerk.enroll",
        json!({"clerk": "x", "role": "Admin", "secret": "another pass 77"}),
    );
    assert_eq!(code(&again), "unauthenticated");
    // The same code again, in one request: a replay.
    let code_now = oathtool(&secret);
    let first = call(
        &t.socket,
        "login",
        json!({"clerk": "root-admin", "secret": "correct horse 42", "totp": code_now}),
    );
    let second = call(
        &t.socket,
        "login",
        json!({"clerk": "root-admin", "secret": "correct horse 42", "totp": code_now}),
    );
    assert!(
        first["ok"] == true || code(&first) == "login_failed",
        "{first}"
    );
    assert_eq!(code(&second), "login_failed", "{second}");
    assert_eq!(
        ok(call(&t.socket, "session_info", json!({"token": token})))["clerk"],
        "root-admin"
    );
    ok(call(&t.socket, "logout", json!({"token": token})));
    assert_eq!(
        code(&call(&t.socket, "touch", json!({"token": token}))),
        "unauthenticated"
    );
    assert!(agent.stop().success());

    let events = t.events();
    let replay = events
        .iter()
        .find(|(_, e)| matches!(e.kind, EventKind::MfaReplayed { .. }))
        .expect("replay journaled");
    assert_eq!(replay.1.severity, Severity::Critical);
    let peer = replay.1.peer.expect("peer credentials recorded");
    assert_eq!(peer.uid, 0);
    assert_eq!(peer.pid, std::process::id());
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(&e.kind, EventKind::LoginSucceeded { mfa: true, .. }))
    );
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(&e.kind, EventKind::LoggedOut { .. }))
    );
}

#[test]
fn brute_force_reaches_lockout_at_ten_and_a_restart_unlocks_nobody() {
    let t = Terminal::new();
    let agent = t.start();
    let (admin, _) = admin_session(&t.socket);
    ok(call(
        &t.socket,
        "clerk.enroll",
        json!({"token": admin, "clerk": "anna", "role": "Clerk", "secret": "4821"}),
    ));
    for i in 1..=10 {
        let r = call(
            &t.socket,
            "login",
            json!({"clerk": "anna", "secret": "0000"}),
        );
        assert_eq!(code(&r), "login_failed", "attempt {i}: {r}");
    }
    let locked = call(
        &t.socket,
        "login",
        json!({"clerk": "anna", "secret": "4821"}),
    );
    assert_eq!(code(&locked), "locked_out", "{locked}");
    assert!(locked["error"]["retry_after_secs"].as_u64().unwrap() > 29 * 60);
    assert!(agent.stop().success());

    let agent = t.start();
    let still = call(
        &t.socket,
        "login",
        json!({"clerk": "anna", "secret": "4821"}),
    );
    assert_eq!(
        code(&still),
        "locked_out",
        "a restart unlocks nobody: {still}"
    );
    // Sessions do not survive the restart either.
    assert_eq!(
        code(&call(&t.socket, "touch", json!({"token": admin}))),
        "unauthenticated"
    );
    assert!(agent.stop().success());

    let events = t.events();
    let failures = events
        .iter()
        .filter(|(_, e)| matches!(&e.kind, EventKind::LoginFailed { reason: LoginFailure::BadSecret, clerk: Some(c) } if c.as_str() == "anna"))
        .count();
    assert_eq!(failures, 10);
    let lockout = events
        .iter()
        .find(|(_, e)| matches!(&e.kind, EventKind::LockedOut { .. }))
        .expect("lockout journaled");
    assert!(matches!(&lockout.1.actor, Actor::Clerk(c) if c.as_str() == "anna"));
}

#[test]
fn roles_override_lockdown_and_honeypots() {
    let t = Terminal::new();
    let agent = t.start();
    let (admin, _) = admin_session(&t.socket);
    ok(call(
        &t.socket,
        "clerk.enroll",
        json!({"token": admin, "clerk": "bob", "role": "Clerk", "secret": "1111"}),
    ));
    ok(call(
        &t.socket,
        "clerk.enroll",
        json!({"token": admin, "clerk": "sue", "role": "Supervisor", "secret": "246810"}),
    ));
    ok(call(
        &t.socket,
        "clerk.enroll",
        json!({"token": admin, "clerk": "admin2", "role": "Clerk", "secret": "9999", "honeypot": true}),
    ));

    let bob = ok(call(
        &t.socket,
        "login",
        json!({"clerk": "bob", "secret": "1111"}),
    ))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = call(
        &t.socket,
        "clerk.enroll",
        json!({"token": bob, "clerk": "eve", "role": "Clerk", "secret": "1234"}),
    );
    assert_eq!(code(&denied), "permission_denied");

    // Override: bob cannot approve himself; sue can, and bob's old token stops working.
    let same = call(
        &t.socket,
        "elevate",
        json!({"token": bob, "approver": "bob", "approver_secret": "1111", "role": "Supervisor"}),
    );
    assert!(
        code(&same) == "conflict" || code(&same) == "permission_denied",
        "{same}"
    );
    let bob = ok(call(
        &t.socket,
        "login",
        json!({"clerk": "bob", "secret": "1111"}),
    ))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let elevated = ok(call(
        &t.socket,
        "elevate",
        json!({"token": bob, "approver": "sue", "approver_secret": "246810", "role": "Supervisor", "purpose": "refund"}),
    ));
    assert_eq!(
        code(&call(&t.socket, "touch", json!({"token": bob}))),
        "unauthenticated"
    );
    let bob2 = elevated["token"].as_str().unwrap().to_owned();
    assert_eq!(
        ok(call(&t.socket, "session_info", json!({"token": bob2})))["role"],
        "Supervisor"
    );

    // Honeypot: refused like any wrong login, raised as critical.
    assert_eq!(
        code(&call(
            &t.socket,
            "login",
            json!({"clerk": "admin2", "secret": "9999"})
        )),
        "login_failed"
    );

    // Lockdown: every session revoked, only SuperAdmin may log in.
    ok(call(&t.socket, "lockdown.set", json!({"token": admin})));
    assert_eq!(
        code(&call(&t.socket, "touch", json!({"token": bob2}))),
        "unauthenticated"
    );
    assert_eq!(
        code(&call(
            &t.socket,
            "login",
            json!({"clerk": "bob", "secret": "1111"})
        )),
        "lockdown"
    );
    // The SuperAdmin gets past the lockdown check to the TOTP step.
    let step1 = ok(call(
        &t.socket,
        "login",
        json!({"clerk": "root-admin", "secret": "correct horse 42"}),
    ));
    assert_eq!(step1["status"], "mfa_required");
    // Lockdown revoked the SuperAdmin's own session too.
    assert_eq!(
        code(&call(&t.socket, "lockdown.clear", json!({"token": admin}))),
        "unauthenticated"
    );
    assert!(agent.stop().success());

    let events = t.events();
    assert!(events.iter().any(
        |(_, e)| matches!(&e.kind, EventKind::HoneypotTriggered { .. })
            && e.severity == Severity::Critical
    ));
    assert!(events.iter().any(|(_, e)| matches!(&e.kind, EventKind::PrivilegeElevated { approver, subject, .. } if approver.as_str() == "sue" && subject.as_str() == "bob")));
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(&e.kind, EventKind::LockdownChanged { enabled: true, .. }))
    );
    assert!(events.iter().any(|(_, e)| matches!(
        &e.kind,
        EventKind::LoginFailed {
            reason: LoginFailure::Lockdown,
            ..
        }
    )));
}
