use std::collections::HashSet;

use super::*;
use crate::store::DeviceRow;
use crate::store::sqlite::FleetFacts;

const NOW: u64 = 1_796_654_341_719;
const HOUR: u64 = 3_600_000;

fn row(id: &str) -> DeviceRow {
    let mut d = DeviceRow::new(id, NOW - 10 * HOUR);
    d.last_seen_ms = NOW - 1000;
    d.highest_stored = 10;
    d.journal_head = 10;
    d.cert_not_after_unix = (NOW + 30 * 24 * HOUR) / 1000;
    d
}

fn judge_with(d: &DeviceRow, facts: &FleetFacts, crl: &HashSet<String>, m: Option<u64>) -> Health {
    judge(
        d,
        &Context {
            now_ms: NOW,
            silent_after_ms: HOUR,
            maintenance_seen_ms: m,
            crl_serials: crl,
            facts,
        },
    )
}

#[test]
fn a_device_in_contact_with_nothing_pending_is_ok() {
    let h = judge_with(&row("t"), &FleetFacts::default(), &HashSet::new(), None);
    assert_eq!(h.state, State::Ok);
    assert_eq!(h.states, vec![State::Ok]);
    assert_eq!(
        h.cert_days_left,
        Some(29),
        "30 days less the second already gone"
    );
    assert_eq!(h.last_stop, None);
}

/// Every silence length around the threshold, with and without a clean stop and a
/// maintenance window that ended within it.
#[test]
fn silence_is_measured_from_contact_or_the_end_of_maintenance_and_a_clean_stop_is_not_silence() {
    for quiet in [0, HOUR / 2, HOUR, HOUR + 1, 5 * HOUR, 400 * HOUR] {
        for clean in [false, true] {
            for maint_ago in [None, Some(0), Some(HOUR / 2), Some(2 * HOUR)] {
                let mut d = row("t");
                d.last_seen_ms = NOW - quiet;
                let mut facts = FleetFacts::default();
                let kind = if clean {
                    "agent_stopped"
                } else {
                    "pos_business"
                };
                facts
                    .last_record
                    .insert("t".into(), (kind.into(), NOW - quiet));
                let m = maint_ago.map(|a| NOW - a);
                let h = judge_with(&d, &facts, &HashSet::new(), m);
                let from = d.last_seen_ms.max(m.unwrap_or(0));
                let want_silent = !clean && NOW - from > HOUR;
                assert_eq!(
                    h.states.contains(&State::Silent),
                    want_silent,
                    "{quiet} {clean} {m:?}"
                );
                assert_eq!(h.states.contains(&State::Stopped), clean);
                assert_eq!(h.silent_since_ms, want_silent.then_some(d.last_seen_ms));
                let want_stop = if clean {
                    Some(LastStop::Clean)
                } else if want_silent {
                    Some(LastStop::Unclean)
                } else {
                    None
                };
                assert_eq!(h.last_stop, want_stop);
            }
        }
    }
}

#[test]
fn lag_revocation_lockdown_and_lifecycle_each_show_and_the_most_urgent_wins() {
    let mut d = row("t");
    d.journal_head = 350;
    let mut facts = FleetFacts::default();
    facts
        .last_record
        .insert("t".into(), ("pos_business".into(), NOW - HOUR));
    let crl: HashSet<String> = ["0a1b".to_owned()].into();
    let h = judge_with(&d, &facts, &crl, None);
    assert_eq!(
        (h.state, h.lag_records, h.lag_since_ms),
        (State::Lagging, 340, Some(NOW - HOUR))
    );

    // A delivered command alone is not lockdown: the agent may refuse it (forged, stale).
    facts.lockdown_commanded.insert("t".into(), (true, NOW));
    assert!(!judge_with(&d, &facts, &crl, None).lockdown);
    facts.lockdown_reported.insert("t".into(), (true, NOW));
    assert_eq!(judge_with(&d, &facts, &crl, None).state, State::Lockdown);

    facts.newest_serial.insert("t".into(), "0a1b".into());
    let h = judge_with(&d, &facts, &crl, None);
    assert_eq!(h.state, State::Revoked);
    assert_eq!(
        h.states,
        vec![State::Revoked, State::Lockdown, State::Lagging]
    );
    // Revoked through the store's record of `ca revoke` too.
    facts.revoked_serials.insert("0a1b".into());
    assert!(judge_with(&d, &facts, &HashSet::new(), None).revoked);

    for (l, retired) in [
        ("decommissioned", true),
        ("replaced", true),
        ("active", false),
    ] {
        facts.lifecycle.insert("t".into(), l.into());
        let h = judge_with(&d, &facts, &crl, None);
        assert_eq!(h.state == State::Decommissioned, retired, "{l}");
        assert_eq!(h.lifecycle.as_deref(), Some(l));
    }
}

#[test]
fn an_expired_certificate_has_negative_days() {
    let mut d = row("t");
    d.cert_not_after_unix = (NOW - 3 * 24 * HOUR) / 1000;
    let h = judge_with(&d, &FleetFacts::default(), &HashSet::new(), None);
    assert_eq!(h.cert_days_left, Some(-4));
    d.cert_not_after_unix = 0;
    let h = judge_with(&d, &FleetFacts::default(), &HashSet::new(), None);
    assert_eq!(h.cert_days_left, None);
}

#[test]
fn state_names_round_trip() {
    for s in State::ALL {
        assert_eq!(State::from_name(s.name()), Some(s));
    }
    assert_eq!(State::from_name("silnet"), None);
}

/// The fixed-width format agrees with the RFC 3339 formatter of the `time` crate over a sweep
/// of instants (leap years, month ends, the epoch, far future).
#[test]
fn rfc3339_ms_matches_the_time_crate() {
    use time::OffsetDateTime;
    let mut ms = 0u64;
    while ms < 10_000_000_000_000 {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let want = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        assert_eq!(rfc3339_ms(ms), want);
        ms = ms * 3 + 86_399_999;
    }
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
}

#[test]
fn durations_read_as_words() {
    assert_eq!(words(5_000), "5 s");
    assert_eq!(words(17 * 60_000), "17 min");
    assert_eq!(words(5 * HOUR), "5 h");
    assert_eq!(words(3 * 24 * HOUR), "3 days");
}
