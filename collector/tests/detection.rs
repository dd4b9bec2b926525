//! Detection matches the runbook: every condition docs/runbook.md and docs/collector.md name
//! raises its alert, driven as real signed batches over real TLS into a real collector with a
//! SQLite store; each rule swept across its threshold (one short of it raises nothing). The
//! docs' rule tables list exactly the kinds the code raises. Rules with a test elsewhere:
//! `fork`, `bad_signature`, `chain_broken`, `counter_rollback`, `honeypot`, `tamper`,
//! `journal_overflow` (tests/ingest.rs), `chain_regressed` (tests/positions.rs),
//! `revoked_certificate` (tests/revocation.rs), `enrollment_refused` (tests/enroll.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use posguard_collector::alerts::AlertKind;
use posguard_collector::store::AlertRow;
use posguard_collector::store::Store as _;
use posguard_proto::event::EventKind;
use posguard_proto::record::Record;
use posguard_proto::text::ClerkId;

const T0: u64 = 1_763_900_000_000;

fn of<'a>(alerts: &'a [AlertRow], device: Option<&str>, kind: &str) -> Vec<&'a AlertRow> {
    alerts
        .iter()
        .filter(|a| a.device_id.as_deref() == device && a.kind == kind)
        .collect()
}

fn failed(clerk: &ClerkId) -> EventKind {
    EventKind::MfaFailed {
        clerk: clerk.clone(),
    }
}

fn replayed(clerk: &ClerkId, step: u64) -> EventKind {
    EventKind::MfaReplayed {
        clerk: clerk.clone(),
        time_step: step,
    }
}

/// The runbook: "repeated wrong or replayed TOTP codes on one terminal". Wrong and replayed
/// codes count together against `mfa_failure_count` (5) within `mfa_failure_window_s` (600 s);
/// once raised, each further code adds to the open alert's count.
#[tokio::test]
async fn wrong_and_replayed_totp_codes_count_together() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let admin = ClerkId::new("sa-1").unwrap();
    // (wrong, replayed) per device: six replays alone (the case), wrong codes alone,
    // mixes, and every total one short of the threshold.
    let cases: [(u64, u64); 9] = [
        (0, 6),
        (6, 0),
        (3, 2),
        (1, 4),
        (5, 5),
        (0, 4),
        (4, 0),
        (2, 2),
        (0, 1),
    ];
    for (i, (wrong, replays)) in cases.iter().enumerate() {
        let mut dev = device(&pki, &format!("mfa-{i}"));
        let (mut w, mut r) = (0, 0);
        let mut records = Vec::new();
        while w < *wrong || r < *replays {
            // Interleaved, as an attacker alternates a guessed and an observed code.
            if r < *replays && (r <= w || w == *wrong) {
                r += 1;
                records.push(dev.record(replayed(&admin, 100 + r)));
            } else {
                w += 1;
                records.push(dev.record(failed(&admin)));
            }
        }
        assert_eq!(send(&srv, &pki, &dev, &records).await, 200);
    }
    let alerts = alerts_in(&srv.db);
    for (i, (wrong, replays)) in cases.iter().enumerate() {
        let id = format!("mfa-{i}");
        let mine = of(&alerts, Some(&id), "mfa_failures");
        let total = wrong + replays;
        if total < 5 {
            assert!(mine.is_empty(), "{total} codes on {id}: {alerts:?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "one alert, counted: {alerts:?}");
        let a = mine[0];
        assert_eq!(a.severity, "critical");
        assert_eq!(a.state, "open");
        assert_eq!(
            a.count,
            total - 4,
            "raised at the 5th code, +1 per code after"
        );
        assert!(
            a.detail.contains(&format!(
                "{total} wrong or replayed TOTP codes on this device within 600 s \
                 ({wrong} mfa_failed, {replays} mfa_replayed; threshold 5)"
            )),
            "{a:?}"
        );
        assert!(a.detail.contains("clerk sa-1"), "{a:?}");
    }
    srv.stop().await;
}

/// The second case: a SuperAdmin locked out by a mix of replayed and wrong codes, as
/// the agent journals it (each refused code, then the lockout at the tenth failure).
#[tokio::test]
async fn a_superadmin_locked_out_by_replays_and_wrong_codes_raises_mfa_failures() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let sa = ClerkId::new("superadmin").unwrap();
    let mut dev = device(&pki, "store7-till1");
    let mut records = Vec::new();
    for n in 0..10u64 {
        let kind = if n % 2 == 0 {
            replayed(&sa, 5000 + n)
        } else {
            failed(&sa)
        };
        records.push(dev.record(kind));
    }
    records.push(dev.record(EventKind::LockedOut {
        clerk: sa.clone(),
        failures: 10,
        until_wall_ms: Some(T0 + 1_800_000),
    }));
    assert_eq!(send(&srv, &pki, &dev, &records).await, 200);
    let alerts = alerts_in(&srv.db);
    let mfa = of(&alerts, Some("store7-till1"), "mfa_failures");
    assert_eq!(mfa.len(), 1, "{alerts:?}");
    assert_eq!(mfa[0].count, 6);
    assert!(
        mfa[0].detail.contains("(5 mfa_failed, 5 mfa_replayed"),
        "{mfa:?}"
    );
    // One lockout is no storm, and this clerk's enrollment is not at the collector, so its role
    // is unknown: no admin_locked_out (see the sweep over roles below).
    assert!(of(&alerts, None, "lockout_storm").is_empty(), "{alerts:?}");
    assert!(of(&alerts, Some("store7-till1"), "admin_locked_out").is_empty());
    srv.stop().await;
}

/// The window is the device clock's: five wrong codes 150 s apart fall within 600 s of the
/// last; 200 s apart, at most four do.
#[tokio::test]
async fn the_mfa_window_is_swept_at_its_edge() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let admin = ClerkId::new("admin-2").unwrap();
    for (gap_s, raised) in [(100u64, true), (150, true), (200, false), (400, false)] {
        let id = format!("gap-{gap_s}");
        let mut dev = device(&pki, &id);
        let records: Vec<Record> = (0..5u64)
            .map(|n| dev.record_at(failed(&admin), T0 + n * gap_s * 1000))
            .collect();
        assert_eq!(send(&srv, &pki, &dev, &records).await, 200);
        let alerts = alerts_in(&srv.db);
        assert_eq!(
            of(&alerts, Some(&id), "mfa_failures").len(),
            usize::from(raised),
            "5 codes {gap_s} s apart: {alerts:?}"
        );
    }
    srv.stop().await;
}

/// The runbook: "many lockouts across the fleet in a short window": `lockout_storm_count`
/// `locked_out` events on any devices within `lockout_storm_window_s`; one fleet-wide alert
/// (no device), counted on.
#[tokio::test]
async fn lockouts_across_the_fleet_raise_one_storm_at_the_threshold() {
    let pki = pki();
    let srv = start(
        &pki,
        "[alerts]\nlockout_storm_count = 4\nlockout_storm_window_s = 300\n",
    )
    .await;
    let lockout = |n: u64| EventKind::LockedOut {
        clerk: ClerkId::new(format!("clerk-{n}")).unwrap(),
        failures: 10,
        until_wall_ms: Some(T0 + 1_800_000),
    };
    // Three lockouts on three terminals, one short of the threshold: nothing.
    let mut devs: Vec<Device> = (0..6).map(|i| device(&pki, &format!("shop-{i}"))).collect();
    for (n, dev) in devs.iter_mut().take(3).enumerate() {
        let r = dev.record_at(lockout(n as u64), T0 + n as u64 * 1000);
        assert_eq!(send(&srv, &pki, dev, &[r]).await, 200);
    }
    assert!(of(&alerts_in(&srv.db), None, "lockout_storm").is_empty());
    // A fourth, outside the window of the first three: still nothing.
    let late = devs[3].record_at(lockout(3), T0 + 400_000);
    assert_eq!(send(&srv, &pki, &devs[3], &[late]).await, 200);
    assert!(of(&alerts_in(&srv.db), None, "lockout_storm").is_empty());
    // Three more within 300 s of the fourth: the fourth of the window raises, the fifth counts.
    for (n, dev) in devs.iter_mut().enumerate().skip(4) {
        let r = dev.record_at(lockout(n as u64), T0 + 400_000 + n as u64 * 1000);
        assert_eq!(send(&srv, &pki, dev, &[r]).await, 200);
    }
    let r = devs[0].record_at(lockout(9), T0 + 410_000);
    assert_eq!(send(&srv, &pki, &devs[0], &[r]).await, 200);
    let alerts = alerts_in(&srv.db);
    let storm = of(&alerts, None, "lockout_storm");
    assert_eq!(storm.len(), 1, "{alerts:?}");
    assert_eq!(storm[0].severity, "critical");
    assert!(
        storm[0]
            .detail
            .starts_with("4 lockouts across the fleet within 300 s"),
        "{storm:?}"
    );
    let r = devs[1].record_at(lockout(10), T0 + 420_000);
    assert_eq!(send(&srv, &pki, &devs[1], &[r]).await, 200);
    let alerts = alerts_in(&srv.db);
    let storm = of(&alerts, None, "lockout_storm");
    assert_eq!((storm.len(), storm[0].count), (1, 2), "{alerts:?}");
    srv.stop().await;
}

/// docs: "records are missing between what is stored and what arrived, and no
/// `journal_overflow` declared them yet" — a warning naming the missing range.
#[tokio::test]
async fn a_sequence_jump_raises_chain_gap_naming_the_range() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "gap-term");
    let first: Vec<Record> = (0..2).map(|_| dev.logout()).collect();
    assert_eq!(send(&srv, &pki, &dev, &first).await, 200);
    assert!(alerts_in(&srv.db).is_empty());
    for _ in 3..=5 {
        dev.logout(); // written on the terminal, never shipped
    }
    let after = dev.logout();
    assert_eq!(send(&srv, &pki, &dev, &[after]).await, 200);
    let alerts = alerts_in(&srv.db);
    let gap = of(&alerts, Some("gap-term"), "chain_gap");
    assert_eq!(gap.len(), 1, "{alerts:?}");
    assert_eq!(gap[0].severity, "warning");
    assert!(gap[0].detail.contains("3-5"), "{gap:?}");
    srv.stop().await;
}

/// docs: "a terminal certificate expires within 30 days" (`cert_expiry_days`), with the date
/// in RFC 3339. Swept: 29 days raises, 31 does not.
#[tokio::test]
async fn a_certificate_expiring_within_the_configured_days_raises_cert_expiry() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let now = time::OffsetDateTime::now_utc();
    for (days, raised) in [(2i64, true), (29, true), (31, false), (365, false)] {
        let id = format!("cert-{days}d");
        let not_after = now + time::Duration::days(days);
        let mut dev = device_with(&pki, &id, |p| p.not_after = not_after);
        let r = dev.logout();
        assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
        // A second contact with the same certificate raises nothing more.
        let r = dev.logout();
        assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
        let alerts = alerts_in(&srv.db);
        let mine = of(&alerts, Some(&id), "cert_expiry");
        assert_eq!(mine.len(), usize::from(raised), "{days} days: {alerts:?}");
        if raised {
            let date = not_after
                .replace_nanosecond(0)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(
                mine[0].detail,
                format!("device certificate expires at {date}")
            );
            assert_eq!((mine[0].severity.as_str(), mine[0].count), ("warning", 1));
        }
    }
    srv.stop().await;
}

/// The issue: the `silent` alert said "no contact since 1796654341719 (Unix ms)". It gives the
/// last contact in RFC 3339.
#[tokio::test]
async fn silent_names_the_last_contact_in_rfc_3339() {
    use posguard_collector::server::sweep::sweep_silent;
    use posguard_collector::store::sqlite::SqliteStore;
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "quiet-till");
    let r = dev.logout();
    assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
    let mut store = SqliteStore::open(&srv.db).unwrap();
    let seen = store.devices().unwrap()[0].last_seen_ms;
    let hour = std::time::Duration::from_secs(3600);
    // "Longer than silent_after_s": not at exactly an hour, one millisecond later.
    assert_eq!(sweep_silent(&mut store, seen + 3_600_000, hour).unwrap(), 0);
    assert_eq!(sweep_silent(&mut store, seen + 3_600_001, hour).unwrap(), 1);
    let alerts = alerts_in(&srv.db);
    let silent = of(&alerts, Some("quiet-till"), "silent");
    assert_eq!(silent.len(), 1);
    let expected = posguard_collector::clock::format_ms(seen);
    assert!(
        silent[0]
            .detail
            .starts_with(&format!("no contact since {expected}; ")),
        "{}",
        silent[0].detail
    );
    assert!(!silent[0].detail.contains("Unix"), "{silent:?}");
    srv.stop().await;
}

/// Every alert kind the code raises has a row in docs/collector.md's rule table and in
/// docs/runbook.md's "Investigate each alert" table, and neither names a kind the code lacks.
#[test]
fn the_docs_list_exactly_the_rules_the_code_applies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let code: std::collections::BTreeSet<String> =
        AlertKind::ALL.iter().map(|k| k.name().to_owned()).collect();
    for (file, section) in [
        ("collector.md", "## Alert rules"),
        ("runbook.md", "## Investigate each alert"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let start = text
            .find(section)
            .unwrap_or_else(|| panic!("{file}: no {section}"));
        let body = &text[start + section.len()..];
        let body = &body[..body.find("\n## ").unwrap_or(body.len())];
        let mut documented = std::collections::BTreeSet::new();
        for line in body.lines().filter(|l| l.starts_with("| `")) {
            let first = line.split('|').nth(1).unwrap();
            for name in first.split('`').skip(1).step_by(2) {
                documented.insert(name.to_owned());
            }
        }
        assert_eq!(documented, code, "{file} {section}");
    }
}

/// A terminal whose failure budget ran out (failed logins of any clerk id, also ids nobody
/// has, which lock nobody out) raises `login_blocked` at once, with the end of the block in
/// RFC 3339; the same terminal again while it is open adds to its count.
#[tokio::test]
async fn an_exceeded_login_budget_raises_login_blocked() {
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "store3-till5");
    let blocked = |until| EventKind::FailureBudgetExceeded {
        failures: 20,
        window_s: 600,
        until_wall_ms: until,
    };
    let r = dev.record(blocked(Some(T0 + 900_000)));
    assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
    let alerts = alerts_in(&srv.db);
    let mine = of(&alerts, Some("store3-till5"), "login_blocked");
    assert_eq!(mine.len(), 1, "{alerts:?}");
    let until = posguard_collector::clock::format_ms(T0 + 900_000);
    assert_eq!(
        mine[0].detail,
        format!(
            "every login on this terminal blocked after 20 failed logins within 600 s, until {until}"
        )
    );
    assert_eq!(mine[0].severity, "critical");
    let r = dev.record(blocked(None));
    assert_eq!(send(&srv, &pki, &dev, &[r]).await, 200);
    let alerts = alerts_in(&srv.db);
    let mine = of(&alerts, Some("store3-till5"), "login_blocked");
    assert_eq!((mine.len(), mine[0].count), (1, 2), "{alerts:?}");
    assert!(
        mine[0].detail.ends_with("until an admin resets it"),
        "{mine:?}"
    );
    srv.stop().await;
}

/// docs: `journal_overflow` is a warning, critical if security-critical records were dropped.
#[tokio::test]
async fn journal_overflow_is_critical_when_security_critical_records_were_dropped() {
    use posguard_proto::event::Overflow;
    let pki = pki();
    let srv = start(&pki, "").await;
    for critical in [0u64, 1, 3] {
        let id = format!("overflow-{critical}");
        let mut dev = device(&pki, &id);
        let mut records = vec![dev.logout(), dev.logout()];
        for _ in 3..=5 {
            dev.logout(); // dropped by the terminal
        }
        records.push(dev.record(EventKind::JournalOverflow(Overflow {
            first_seq: 3,
            last_seq: 5,
            dropped: 3,
            dropped_critical: critical,
        })));
        assert_eq!(send(&srv, &pki, &dev, &records).await, 200);
        let alerts = alerts_in(&srv.db);
        let mine = of(&alerts, Some(&id), "journal_overflow");
        assert_eq!(mine.len(), 1, "{alerts:?}");
        let expected = if critical > 0 { "critical" } else { "warning" };
        assert_eq!(mine[0].severity, expected, "{critical} critical dropped");
        assert!(
            mine[0]
                .detail
                .contains(&format!("({critical} security-critical)")),
            "{mine:?}"
        );
    }
    srv.stop().await;
}

/// An Admin or SuperAdmin locked out raises `admin_locked_out` (the role from the clerk's
/// stored `clerk_enrolled` record); a Clerk or Supervisor locked out, or a clerk whose
/// enrollment the collector does not hold, raises nothing of its own.
#[tokio::test]
async fn an_admin_or_superadmin_locked_out_raises_admin_locked_out() {
    use posguard_proto::event::Role;
    let pki = pki();
    let srv = start(&pki, "").await;
    let mut dev = device(&pki, "store4-till1");
    let roles = [Role::Clerk, Role::Supervisor, Role::Admin, Role::SuperAdmin];
    let mut records: Vec<Record> = roles
        .iter()
        .enumerate()
        .map(|(n, role)| {
            dev.record(EventKind::ClerkEnrolled {
                clerk: ClerkId::new(format!("c{n}")).unwrap(),
                role: *role,
                mfa: *role >= Role::Admin,
            })
        })
        .collect();
    // Each enrolled clerk locked out, and one the collector never saw enrolled.
    for n in 0..=roles.len() {
        records.push(dev.record(EventKind::LockedOut {
            clerk: ClerkId::new(format!("c{n}")).unwrap(),
            failures: 10,
            until_wall_ms: Some(T0 + 1_800_000),
        }));
    }
    assert_eq!(send(&srv, &pki, &dev, &records).await, 200);
    let alerts = alerts_in(&srv.db);
    let mut details: Vec<&str> = of(&alerts, Some("store4-till1"), "admin_locked_out")
        .iter()
        .map(|a| {
            assert_eq!(a.severity, "critical");
            a.detail.as_str()
        })
        .collect();
    details.sort_unstable();
    assert_eq!(
        details,
        [
            "Admin c2 locked out after 10 consecutive failures",
            "SuperAdmin c3 locked out after 10 consecutive failures"
        ]
    );
    srv.stop().await;
}
