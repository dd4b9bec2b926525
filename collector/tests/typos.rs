//! No silent typos in an incident (issue 17, point 6), through the real binary: an unknown
//! device id, action, state or store path is exit 64 with a message naming what is wrong and
//! the fix (the nearest known name where there is one), nothing is queued or created, and
//! doing what the message says works. Every command says what it did.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Output;

use common::enroll::{Fleet, bin, fleet, stdout};
use serde_json::Value;

const KNOWN: [&str; 3] = ["till-01", "till-02", "till-12"];

/// A fleet with an ops key and tokens for the known tills (which makes them known devices).
fn setup() -> (Fleet, String) {
    let f = fleet("");
    let out = bin(f.dir(), &["ops-key", "generate", "--out", "ops.key"]);
    assert!(out.status.success(), "{out:?}");
    for id in KNOWN {
        f.token(id);
    }
    let key = f.dir().join("ops.key").to_str().unwrap().to_owned();
    (f, key)
}

fn usage_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn commands(f: &Fleet, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["command", "list"];
    args.extend_from_slice(extra);
    stdout(&f.cli(&args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_command_for_an_unknown_device_is_refused_with_the_nearest_and_nothing_is_queued() {
    let (f, key) = setup();
    // Nothing close: no suggestion, but the way to see the fleet.
    let err = usage_error(&f.cli(&[
        "command",
        "--device",
        "no-such-till",
        "lockdown",
        "--ops-key",
        &key,
    ]));
    assert!(
        err.contains("\"no-such-till\"") && err.contains("devices"),
        "{err}"
    );
    assert!(!err.contains("did you mean"), "{err}");
    // A sweep of typos of each kind: each names the known id it is closest to.
    for (typo, near) in [
        ("till-1", "till-01"),
        ("till-002", "till-02"),
        ("tlil-12", "till-12"),
        ("TILL-02x", "till-02"),
        ("till_01", "till-01"),
    ] {
        for action in ["lockdown", "unlock"] {
            let err =
                usage_error(&f.cli(&["command", "--device", typo, action, "--ops-key", &key]));
            assert!(
                err.contains(&format!("did you mean \"{near}\"")),
                "{typo}: {err}"
            );
        }
    }
    assert!(
        commands(&f, &[]).is_empty(),
        "nothing queued by a refused command"
    );

    // Doing what the message says works, and says what it did.
    let out = f.cli(&[
        "command",
        "--device",
        "till-01",
        "lockdown",
        "--ops-key",
        &key,
    ]);
    let queued: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(queued["device_id"], "till-01");
    assert_eq!(queued["kind"], "lockdown");
    assert_eq!(queued["state"], "queued");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("queued lockdown (command 1) for till-01"),
        "{said}"
    );
    f.cli(&[
        "command",
        "--device",
        "till-12",
        "unlock",
        "--ops-key",
        &key,
    ]);

    // The list shows both with their delivery state; a device filter; a typo in the filter.
    let all = commands(&f, &[]);
    assert_eq!(all.len(), 2, "{all:?}");
    for c in &all {
        assert_eq!(c["state"], "queued");
        assert!(c["delivered"].is_null());
        assert!(c["queued"].as_str().unwrap().ends_with('Z'));
    }
    let one = commands(&f, &["--device", "till-12"]);
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0]["kind"].as_str(), one[0]["id"].as_u64()),
        (Some("unlock"), Some(1))
    );
    let err = usage_error(&f.cli(&["command", "list", "--device", "till-13"]));
    assert!(err.contains("did you mean \"till-12\""), "{err}");

    // Mistyped actions and missing arguments name the fix.
    let err = usage_error(&f.cli(&[
        "command",
        "--device",
        "till-01",
        "lockdwon",
        "--ops-key",
        &key,
    ]));
    assert!(err.contains("did you mean \"lockdown\""), "{err}");
    let err = usage_error(&f.cli(&["command", "lockdown", "--ops-key", &key]));
    assert!(err.contains("--device"), "{err}");
    let err = usage_error(&f.cli(&["command", "--device", "till-01", "lockdown"]));
    assert!(err.contains("--ops-key"), "{err}");
    assert_eq!(commands(&f, &[]).len(), 2);
}

#[test]
fn a_missing_store_is_an_error_for_every_subcommand_unless_creating_is_asked_for() {
    let (f, _) = setup();
    let typo_db = f.dir().join("colector.db");
    let config = f.dir().join("typo.toml");
    std::fs::write(
        &config,
        f.text.replace(
            &format!("store = \"{}\"", f.dir().join("c.db").display()),
            &format!("store = \"{}\"", typo_db.display()),
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let backup = f.dir().join("b.db");
    for args in [
        vec!["devices"],
        vec!["alerts"],
        vec!["query"],
        vec!["export"],
        vec!["forks"],
        vec!["maintenance", "status"],
        vec!["maintenance", "on"],
        vec!["command", "list"],
        vec!["enroll-token", "list"],
        vec![
            "enroll-token",
            "create",
            "--device-id",
            "till-09",
            "--ttl",
            "1h",
        ],
        vec!["enrollments"],
        vec!["ca", "revoke", "--device", "till-01"],
        vec!["backup", "--out", backup.to_str().unwrap()],
    ] {
        let mut full = vec!["--config", cfg];
        full.extend(args.iter().copied());
        let err = usage_error(&bin(f.dir(), &full));
        assert!(
            err.contains(&typo_db.display().to_string()),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("--create-store") && err.contains("`store`"),
            "{args:?}: {err}"
        );
        assert!(!typo_db.exists(), "{args:?} created the store");
        assert!(!backup.exists());
    }
    // The fix the message names works.
    let out = bin(
        f.dir(),
        &["--config", cfg, "--create-store", "devices", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(typo_db.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("created the store"));
    assert!(bin(f.dir(), &["--config", cfg, "devices"]).status.success());
}

#[test]
fn maintenance_says_what_it_did_and_refuses_a_typo() {
    let (f, _) = setup();
    let say = |args: &[&str]| stdout(&f.cli(args));
    let off = say(&["maintenance", "status"]);
    assert!(
        off.starts_with("maintenance mode off") && off.contains("Retry-After 30 s"),
        "{off}"
    );
    let on = say(&["maintenance", "on"]);
    assert!(
        on.starts_with("maintenance mode on since") && on.contains("maintenance off"),
        "{on}"
    );
    assert!(say(&["maintenance", "status"]).starts_with("maintenance mode on (store flag)"));
    let off = say(&["maintenance", "off"]);
    assert!(
        off.starts_with("maintenance mode off at") && !off.contains("not on"),
        "{off}"
    );
    let again = say(&["maintenance", "off"]);
    assert!(again.contains("(it was not on)"), "{again}");
    let err = usage_error(&f.cli(&["maintenance", "offf"]));
    assert!(err.contains("did you mean \"off\""), "{err}");

    // The maintenance file keeps it on; `off` says so rather than claiming success.
    let file = f.dir().join("maint");
    let config = f.dir().join("file.toml");
    std::fs::write(
        &config,
        format!("{}maintenance_file = \"{}\"\n", f.text, file.display()),
    )
    .unwrap();
    std::fs::write(&file, "").unwrap();
    let out = stdout(&bin(
        f.dir(),
        &["--config", config.to_str().unwrap(), "maintenance", "off"],
    ));
    assert!(
        out.contains("stays on") && out.contains(&file.display().to_string()),
        "{out}"
    );
    let st = stdout(&bin(
        f.dir(),
        &[
            "--config",
            config.to_str().unwrap(),
            "maintenance",
            "status",
        ],
    ));
    assert!(st.starts_with("maintenance mode on (the file"), "{st}");
}

#[test]
fn a_retry_after_not_below_silent_after_is_a_config_error() {
    let (f, _) = setup();
    for (retry, silent, ok) in [
        (30, 3600, true),
        (3599, 3600, true),
        (3600, 3600, false),
        (600, 60, false),
    ] {
        let config = f.dir().join("r.toml");
        std::fs::write(
            &config,
            format!(
                "{}maintenance_retry_after_s = {retry}\nsilent_after_s = {silent}\n",
                f.text
            ),
        )
        .unwrap();
        let out = bin(f.dir(), &["--config", config.to_str().unwrap(), "devices"]);
        if ok {
            assert!(out.status.success(), "{retry}/{silent}: {out:?}");
        } else {
            let err = usage_error(&out);
            assert!(
                err.contains("maintenance_retry_after_s") && err.contains("silent_after_s"),
                "{err}"
            );
        }
    }
}
