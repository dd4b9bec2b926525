#![allow(clippy::unwrap_used)]

use super::*;

const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;

fn fail_n(t: &mut ClerkThrottle, p: &ThrottlePolicy, n: u32, now: u64) -> FailureOutcome {
    let mut last = FailureOutcome::Counted { failures: 0 };
    for _ in 0..n {
        last = t.record_failure(p, now);
    }
    last
}

#[test]
fn delays_grow_then_lockout_at_ten() {
    let p = ThrottlePolicy::default();
    let mut t = ClerkThrottle::default();
    assert_eq!(
        fail_n(&mut t, &p, 2, 0),
        FailureOutcome::Counted { failures: 2 }
    );
    assert_eq!(
        t.record_failure(&p, 0),
        FailureOutcome::Delayed {
            failures: 3,
            delay: Duration::from_secs(1)
        }
    );
    assert_eq!(
        t.gate(S / 2),
        Gate::Delayed {
            retry_after: Duration::from_millis(500)
        }
    );
    assert_eq!(t.gate(S), Gate::Open);
    assert_eq!(
        fail_n(&mut t, &p, 7, 10 * S),
        FailureOutcome::LockedOut {
            failures: 10,
            duration: Duration::from_secs(30 * 60)
        }
    );
    assert_eq!(
        t.gate(10 * S + 30 * MIN - 1),
        Gate::Locked {
            remaining: Duration::from_nanos(1)
        }
    );
    assert_eq!(t.gate(10 * S + 30 * MIN), Gate::Open);
}

#[test]
fn success_does_not_end_a_lockout_and_expiry_gives_a_fresh_tally() {
    let p = ThrottlePolicy::default();
    let mut t = ClerkThrottle::default();
    fail_n(&mut t, &p, 10, 0);
    t.record_success(MIN);
    assert!(matches!(t.gate(MIN), Gate::Locked { .. }));
    t.refresh(30 * MIN);
    assert_eq!(t.consecutive_failures, 0);
    assert_eq!(t.gate(30 * MIN), Gate::Open);
    t.admin_reset(0);
    assert_eq!(t.consecutive_failures, 0);
}

#[test]
fn admin_reset_ends_a_lockout_early() {
    let p = ThrottlePolicy::default();
    let mut t = ClerkThrottle::default();
    fail_n(&mut t, &p, 10, 0);
    t.admin_reset(MIN);
    assert_eq!(t.gate(MIN), Gate::Open);
}

#[test]
fn reboot_keeps_the_remaining_lockout_in_full() {
    let p = ThrottlePolicy::default();
    let mut t = ClerkThrottle::default();
    // Locked at 100 min of uptime, last saved at 110 min: 20 min were left.
    fail_n(&mut t, &p, 10, 100 * MIN);
    t.refresh(110 * MIN);
    let stored = serde_json::to_string(&t).unwrap();
    let mut after: ClerkThrottle = serde_json::from_str(&stored).unwrap();
    // The new boot clock reads 5 s.
    after.rebase(5 * S);
    assert_eq!(
        after.gate(5 * S),
        Gate::Locked {
            remaining: Duration::from_secs(20 * 60)
        }
    );
    // Unknown update time: the whole lockout starts over.
    let mut unknown = t.clone();
    unknown.updated_mono = None;
    unknown.rebase(5 * S);
    assert_eq!(
        unknown.gate(5 * S),
        Gate::Locked {
            remaining: Duration::from_secs(30 * 60)
        }
    );
}

#[test]
fn terminal_budget_blocks_after_too_many_failures_in_the_window() {
    let p = ThrottlePolicy::default();
    let mut b = TerminalBudget::default();
    for i in 0..20 {
        assert_eq!(b.record_failure(&p, i * S), None);
    }
    let exceeded = b.record_failure(&p, 20 * S).unwrap();
    assert_eq!(exceeded.failures, 21);
    assert_eq!(exceeded.block, Duration::from_secs(15 * 60));
    assert_eq!(b.blocked(20 * S), Some(Duration::from_secs(15 * 60)));
    assert_eq!(b.blocked(20 * S + 15 * MIN), None);
}

#[test]
fn terminal_window_slides() {
    let p = ThrottlePolicy::default();
    let mut b = TerminalBudget::default();
    // 20 failures spread so that no 10-minute window holds 21.
    for i in 0..100 {
        assert_eq!(b.record_failure(&p, i * 31 * S), None, "failure {i}");
    }
    assert!(b.failures_mono.len() <= 20);
}

#[test]
fn terminal_budget_survives_a_reboot() {
    let p = ThrottlePolicy::default();
    let mut b = TerminalBudget::default();
    for _ in 0..21 {
        b.record_failure(&p, 50 * MIN);
    }
    b.refresh(&p, 55 * MIN);
    b.rebase(S);
    assert_eq!(b.blocked(S), Some(Duration::from_secs(10 * 60)));
    let mut c = TerminalBudget::default();
    c.record_failure(&p, 50 * MIN);
    c.refresh(&p, 52 * MIN);
    let mut early = c.clone();
    c.rebase(10 * MIN);
    // The failure keeps its age of 2 minutes: it leaves the window 8 minutes from now.
    c.refresh(&p, 18 * MIN - 1);
    assert_eq!(c.failures_mono.len(), 1);
    c.refresh(&p, 18 * MIN);
    assert!(c.failures_mono.is_empty());
    // A boot clock younger than the failure's age: it counts as brand new (longer, never shorter).
    early.rebase(S);
    early.refresh(&p, 10 * MIN - 1);
    assert_eq!(early.failures_mono.len(), 1);
    early.refresh(&p, 10 * MIN);
    assert!(c.failures_mono.is_empty());
}
