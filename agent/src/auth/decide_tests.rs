#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;

fn record(role: Role) -> ClerkRecord {
    ClerkRecord {
        role,
        enabled: true,
        honeypot: false,
        allowed_hours: None,
        totp_required: false,
    }
}

fn attempt(now_mono: u64, secret_ok: bool, totp: Option<TotpDecision>) -> LoginAttempt {
    LoginAttempt {
        now_mono,
        local_hour: 12,
        lockdown: false,
        secret_ok,
        totp,
    }
}

fn run(rec: &ClerkRecord, a: &LoginAttempt) -> LoginDecision {
    decide_login(
        &ThrottlePolicy::default(),
        rec,
        &ClerkThrottle::default(),
        &TerminalBudget::default(),
        a,
    )
}

fn denied(d: &LoginDecision) -> DenyReason {
    match d.outcome {
        LoginOutcome::Denied(r) => r,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn clerk_with_right_pin_is_granted_without_mfa() {
    let d = run(&record(Role::Clerk), &attempt(0, true, None));
    assert_eq!(
        d.outcome,
        LoginOutcome::Granted {
            role: Role::Clerk,
            mfa_used: false,
            totp_step: None
        }
    );
    assert!(d.facts.is_empty());
}

#[test]
fn admin_needs_totp_and_gets_the_step_back() {
    let rec = record(Role::Admin);
    assert_eq!(
        run(&rec, &attempt(0, true, None)).outcome,
        LoginOutcome::NeedMfa
    );
    let d = run(
        &rec,
        &attempt(0, true, Some(TotpDecision::Accepted { step: 7 })),
    );
    assert_eq!(
        d.outcome,
        LoginOutcome::Granted {
            role: Role::Admin,
            mfa_used: true,
            totp_step: Some(7)
        }
    );
    let mut sup = record(Role::Supervisor);
    sup.totp_required = true;
    assert_eq!(
        run(&sup, &attempt(0, true, None)).outcome,
        LoginOutcome::NeedMfa
    );
}

#[test]
fn mfa_failures_count_and_replay_is_critical() {
    let rec = record(Role::Admin);
    let d = run(&rec, &attempt(0, true, Some(TotpDecision::Wrong)));
    assert_eq!(denied(&d), DenyReason::MfaWrong);
    assert_eq!(d.throttle.consecutive_failures, 1);
    assert_eq!(d.facts, vec![AuthFact::MfaFailed]);
    let d = run(
        &rec,
        &attempt(0, true, Some(TotpDecision::Replayed { step: 5 })),
    );
    assert_eq!(denied(&d), DenyReason::MfaReplay { step: 5 });
    assert_eq!(d.throttle.consecutive_failures, 1);
    assert!(d.facts.iter().any(AuthFact::critical));
    assert_eq!(denied(&d).login_failure(), None);
}

#[test]
fn ten_bad_secrets_lock_out_for_thirty_minutes() {
    let p = ThrottlePolicy::default();
    let rec = record(Role::Clerk);
    let (mut t, mut b) = (ClerkThrottle::default(), TerminalBudget::default());
    let mut now = 0;
    for i in 1..=10u32 {
        // Wait out any delay so that each attempt is considered.
        if let Gate::Delayed { retry_after } = t.gate(now) {
            now += u64::try_from(retry_after.as_nanos()).unwrap();
        }
        let d = decide_login(&p, &rec, &t, &b, &attempt(now, false, None));
        assert_eq!(denied(&d), DenyReason::BadSecret, "attempt {i}");
        (t, b) = (d.throttle, d.budget);
        if i == 3 {
            assert!(matches!(
                d.facts.as_slice(),
                [AuthFact::ThrottleStarted { failures: 3, .. }]
            ));
        }
        if i == 10 {
            assert!(d.facts.contains(&AuthFact::LockoutStarted {
                failures: 10,
                duration: Duration::from_secs(1800)
            }));
        }
    }
    // Even the right PIN is refused until the lockout ends.
    let d = decide_login(&p, &rec, &t, &b, &attempt(now + 29 * MIN, true, None));
    assert_eq!(
        denied(&d),
        DenyReason::LockedOut {
            remaining: Duration::from_secs(60)
        }
    );
    assert_eq!(denied(&d).login_failure(), Some(LoginFailure::LockedOut));
    let d = decide_login(&p, &rec, &t, &b, &attempt(now + 30 * MIN, true, None));
    assert!(matches!(d.outcome, LoginOutcome::Granted { .. }));
}

#[test]
fn throttled_attempts_are_refused_before_the_secret() {
    let p = ThrottlePolicy::default();
    let rec = record(Role::Clerk);
    let mut t = ClerkThrottle::default();
    for _ in 0..3 {
        t.record_failure(&p, 0);
    }
    let d = decide_login(
        &p,
        &rec,
        &t,
        &TerminalBudget::default(),
        &attempt(0, true, None),
    );
    assert_eq!(
        denied(&d),
        DenyReason::Throttled {
            retry_after: Duration::from_secs(1)
        }
    );
    assert_eq!(d.throttle.consecutive_failures, 3);
}

#[test]
fn lockdown_admits_only_superadmin() {
    for role in [Role::Clerk, Role::Supervisor, Role::Admin] {
        let mut a = attempt(0, true, Some(TotpDecision::Accepted { step: 1 }));
        a.lockdown = true;
        assert_eq!(denied(&run(&record(role), &a)), DenyReason::Lockdown);
    }
    let mut a = attempt(0, true, Some(TotpDecision::Accepted { step: 1 }));
    a.lockdown = true;
    assert!(matches!(
        run(&record(Role::SuperAdmin), &a).outcome,
        LoginOutcome::Granted { .. }
    ));
}

#[test]
fn disabled_outside_hours_and_honeypot() {
    let mut rec = record(Role::Clerk);
    rec.enabled = false;
    assert_eq!(
        denied(&run(&rec, &attempt(0, true, None))),
        DenyReason::Disabled
    );

    let mut rec = record(Role::Clerk);
    rec.allowed_hours = Some((22, 6));
    let mut a = attempt(0, true, None);
    for (hour, ok) in [
        (21, false),
        (22, true),
        (3, true),
        (6, false),
        (12, false),
        (24, false),
    ] {
        a.local_hour = hour;
        let granted = matches!(run(&rec, &a).outcome, LoginOutcome::Granted { .. });
        assert_eq!(granted, ok, "hour {hour}");
    }
    rec.allowed_hours = Some((8, 8));
    a.local_hour = 3;
    assert!(matches!(
        run(&rec, &a).outcome,
        LoginOutcome::Granted { .. }
    ));

    let mut rec = record(Role::SuperAdmin);
    rec.honeypot = true;
    let d = run(
        &rec,
        &attempt(0, true, Some(TotpDecision::Accepted { step: 1 })),
    );
    assert_eq!(denied(&d), DenyReason::Honeypot);
    assert_eq!(d.facts, vec![AuthFact::HoneypotTriggered]);
    assert!(d.facts.iter().all(AuthFact::critical));
    assert_eq!(d.budget.failures_mono.len(), 1);
}

#[test]
fn budget_exceeded_blocks_every_clerk() {
    let p = ThrottlePolicy::default();
    let mut b = TerminalBudget::default();
    let mut facts = Vec::new();
    for i in 0..21u64 {
        let d = decide_unknown_clerk(&p, &b, i * S);
        assert_eq!(d.reason, DenyReason::UnknownClerk);
        facts.extend(d.facts);
        b = d.budget;
    }
    assert!(matches!(facts.as_slice(), [AuthFact::BudgetExceeded(e)] if e.failures == 21));
    let d = decide_login(
        &p,
        &record(Role::SuperAdmin),
        &ClerkThrottle::default(),
        &b,
        &attempt(25 * S, true, Some(TotpDecision::Accepted { step: 1 })),
    );
    assert!(matches!(denied(&d), DenyReason::BudgetExceeded { .. }));
    assert_eq!(denied(&d).login_failure(), Some(LoginFailure::Throttled));
}

#[test]
fn override_needs_a_second_permitted_person() {
    let anna = ClerkId::new("anna").unwrap();
    let bob = ClerkId::new("bob").unwrap();
    assert_eq!(
        decide_override(
            &anna,
            &ClerkId::new("ANNA").unwrap(),
            Role::Supervisor,
            Role::Supervisor
        ),
        Err(OverrideRefusal::SamePerson)
    );
    assert_eq!(
        decide_override(&anna, &bob, Role::Clerk, Role::Supervisor),
        Err(OverrideRefusal::NotPermitted)
    );
    assert_eq!(
        decide_override(&anna, &bob, Role::Supervisor, Role::Admin),
        Err(OverrideRefusal::RoleTooHigh)
    );
    assert_eq!(
        decide_override(&anna, &bob, Role::Supervisor, Role::Supervisor),
        Ok(())
    );
}
