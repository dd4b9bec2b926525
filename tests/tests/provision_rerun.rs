//! Issue 16, point 9: `init` on a provisioned terminal compares what is asked with what is
//! there, says each difference and what to do, and exits 0 ("nothing changed") only when all
//! match; a TPM that lost the identity key is not "already provisioned". Real binaries, a real
//! collector, a swtpm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use posguard_e2e::command;
use posguard_e2e::provision::{Terminal, central, run};

#[test]
fn a_rerun_compares_what_is_asked_with_what_is_there() {
    let (c, _collector) = central();
    let t = Terminal::new("till-q1");
    let ops = "11".repeat(32);
    let token = c.token(&t.id);
    let first = run(t
        .init_as(&c, &[("--ops-public-key", &ops)])
        .args(t.token_file(&token)));
    assert!(first.ok(), "{}", first.text());
    let config = t.etc().join("agent.toml");
    let before = std::fs::read(&config).unwrap();

    // Another fleet's CA, for the fleet CA comparison.
    let other = t.dir.path().join("other-ca");
    let out = command("posguard-collector")
        .args(["ca", "init", "--dir"])
        .arg(&other)
        .args(["--server-name", "localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let other_ca = other.join("fleet-ca.pem").display().to_string();

    let other_ops = "22".repeat(32);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("--device-id", "till-q2", "init --force"),
        ("--collector", "127.0.0.1:1", "restart posguard-agent"),
        (
            "--server-name",
            "collector.example",
            "restart posguard-agent",
        ),
        ("--fleet-ca", &other_ca, "rotated the fleet CA"),
        ("--ops-public-key", &other_ops, "restart posguard-agent"),
    ];
    for (flag, value, todo) in cases {
        let out = run(&mut t.init_as(&c, &[("--ops-public-key", &ops), (flag, value)]));
        assert_eq!(out.code, Some(1), "{flag}: {}", out.text());
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains("[FAIL]"))
            .unwrap_or_else(|| panic!("{flag}: {}", out.text()));
        assert!(
            line.contains(value) || flag == "--fleet-ca",
            "{flag}: {line}"
        );
        assert!(line.contains(todo), "{flag}: {line}");
        assert!(
            out.stdout.contains("provisioned differently"),
            "{}",
            out.text()
        );
        assert!(
            !out.stdout.contains("nothing changed (use --force"),
            "{}",
            out.text()
        );
        assert_eq!(std::fs::read(&config).unwrap(), before, "{flag}: changed");
    }

    // What the message says for a moved collector works: edit agent.toml, and the rerun
    // with the new address matches.
    let moved = String::from_utf8(before.clone())
        .unwrap()
        .replace(&c.addr(), "127.0.0.1:1");
    std::fs::write(&config, moved).unwrap();
    let out = run(&mut t.init_as(
        &c,
        &[("--collector", "127.0.0.1:1"), ("--ops-public-key", &ops)],
    ));
    assert!(out.ok(), "{}", out.text());
    std::fs::write(&config, &before).unwrap();

    // Asked exactly what is there: exit 0, nothing changed.
    let same = run(&mut t.init_as(&c, &[("--ops-public-key", &ops)]));
    assert!(same.ok(), "{}", same.text());
    assert!(same.stdout.contains("nothing changed"), "{}", same.text());
    assert!(!same.stdout.contains("[FAIL]"), "{}", same.text());

    // The identity key is gone from the TPM: not "already provisioned".
    let out = t
        .tpm
        .tpm2("tpm2_evictcontrol", &["-C", "o", "-c", "0x81010001"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gone = run(&mut t.init_as(&c, &[("--ops-public-key", &ops)]));
    assert_eq!(gone.code, Some(1), "{}", gone.text());
    assert!(
        gone.stdout.contains("no longer holds the identity key"),
        "{}",
        gone.text()
    );
    assert!(gone.stdout.contains("init --force"), "{}", gone.text());
}
