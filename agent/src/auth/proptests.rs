//! Property tests of the policy invariants: a lockout never shortens, an expired session never
//! revives, session limits hold to the second, and permissions are exactly the table.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use posguard_proto::text::ClerkId;
use proptest::prelude::*;

use super::config::{SessionPolicy, ThrottlePolicy};
use super::decide::{AuthFact, ClerkRecord, LoginAttempt, LoginOutcome, decide_login};
use super::roles::{ALL_ROLES, Permission, Role, allows};
use super::session::{Session, SessionState, SessionToken};
use super::throttle::{ClerkThrottle, Gate, TerminalBudget};
use super::totp::TotpDecision;

const S: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// A login attempt `dt_ms` after the previous event.
    Attempt {
        dt_ms: u64,
        secret_ok: bool,
        totp: u8,
    },
    /// Time passes with no attempt (the stored state is not updated).
    Advance { dt_s: u64 },
    /// The terminal restarts: the boot clock starts over at `mono_s`; the state goes through
    /// JSON; optionally its update time was lost.
    Restart { mono_s: u64, forget_updated: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..90_000, any::<bool>(), 0u8..3)
            .prop_map(|(dt_ms, secret_ok, totp)| Op::Attempt { dt_ms, secret_ok, totp }),
        2 => (0u64..2_400).prop_map(|dt_s| Op::Advance { dt_s }),
        1 => (0u64..100_000, any::<bool>())
            .prop_map(|(mono_s, forget_updated)| Op::Restart { mono_s, forget_updated }),
    ]
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_lockout_never_shortens(ops in proptest::collection::vec(op(), 1..120), lock_failures in 1u32..=10) {
        let policy = ThrottlePolicy { lockout_failures: lock_failures, ..ThrottlePolicy::default() };
        let rec = ClerkRecord {
            role: Role::Supervisor,
            enabled: true,
            honeypot: false,
            allowed_hours: None,
            totp_required: true,
        };
        let (mut throttle, mut budget) = (ClerkThrottle::default(), TerminalBudget::default());
        // `mono` is the current boot clock; `on` is the time the terminal has been running in all.
        let (mut mono, mut on) = (0u64, 0u64);
        let mut locked_until_on: Option<u64> = None;
        for op in ops {
            match op {
                Op::Attempt { dt_ms, secret_ok, totp } => {
                    let dt = dt_ms * 1_000_000;
                    mono += dt;
                    on += dt;
                    let totp = match totp {
                        0 => None,
                        1 => Some(TotpDecision::Wrong),
                        _ => Some(TotpDecision::Accepted { step: on }),
                    };
                    let attempt = LoginAttempt { now_mono: mono, local_hour: 12, lockdown: false, secret_ok, totp };
                    let d = decide_login(&policy, &rec, &throttle, &budget, &attempt);
                    if locked_until_on.is_some_and(|u| on < u) {
                        prop_assert!(!matches!(d.outcome, LoginOutcome::Granted { .. }), "granted while locked");
                    }
                    for fact in &d.facts {
                        if let AuthFact::LockoutStarted { duration, .. } = fact {
                            let until = on + u64::try_from(duration.as_nanos()).unwrap();
                            locked_until_on = Some(locked_until_on.map_or(until, |u| u.max(until)));
                        }
                    }
                    (throttle, budget) = (d.throttle, d.budget);
                }
                Op::Advance { dt_s } => {
                    mono += dt_s * S;
                    on += dt_s * S;
                }
                Op::Restart { mono_s, forget_updated } => {
                    mono = mono_s * S;
                    throttle = roundtrip(&throttle);
                    budget = roundtrip(&budget);
                    if forget_updated {
                        throttle.updated_mono = None;
                        budget.updated_mono = None;
                    }
                    throttle.rebase(mono);
                    budget.rebase(mono);
                }
            }
            if let Some(until) = locked_until_on.filter(|u| on < *u) {
                let want = until - on;
                match throttle.gate(mono) {
                    Gate::Locked { remaining } => prop_assert!(
                        u64::try_from(remaining.as_nanos()).unwrap() >= want,
                        "remaining {remaining:?} < {want} ns"
                    ),
                    other => prop_assert!(false, "not locked: {other:?}, {want} ns left"),
                }
            }
        }
    }

    #[test]
    fn an_expired_session_never_revives(
        role in 0usize..4,
        steps in proptest::collection::vec((0u64..3_600, any::<bool>()), 1..200),
    ) {
        let policy = SessionPolicy::default();
        let token = SessionToken::from_random([3; 32]);
        let mut s = Session::new(ClerkId::new("anna").unwrap(), ALL_ROLES[role], &token, 1_000 * S);
        let mut now = 1_000 * S;
        let mut expired = false;
        for (dt_s, touch) in steps {
            now += dt_s * S;
            let state = if touch { s.touch(&policy, now) } else { s.check(&policy, now) };
            if expired {
                prop_assert_ne!(state, SessionState::Active);
                prop_assert_ne!(s.check(&policy, now), SessionState::Active);
            }
            expired |= state != SessionState::Active;
        }
    }

    #[test]
    fn session_limits_hold_to_the_second(
        role in 0usize..4,
        created_s in 0u64..1_000_000,
        gaps in proptest::collection::vec(0u64..900, 0..100),
    ) {
        let policy = SessionPolicy::default();
        let role = ALL_ROLES[role];
        let idle = policy.idle_ns(role);
        let abs = policy.absolute_ns();
        let c = created_s * S;
        let mut s = Session::new(ClerkId::new("anna").unwrap(), role, &SessionToken::from_random([1; 32]), c);
        for gap in gaps {
            let now = s.last_seen_mono + gap * S;
            let want = if now - c >= abs { SessionState::ExpiredAbsolute } else { SessionState::Active };
            prop_assert_eq!(s.touch(&policy, now), want);
        }
        let l = s.last_seen_mono;
        let before_idle = l + idle - S;
        prop_assert_eq!(
            s.check(&policy, before_idle),
            if before_idle - c >= abs { SessionState::ExpiredAbsolute } else { SessionState::Active }
        );
        prop_assert_ne!(s.check(&policy, l + idle), SessionState::Active);
        prop_assert_eq!(s.check(&policy, c + abs), SessionState::ExpiredAbsolute);
        let before_abs = c + abs - S;
        prop_assert_eq!(
            s.check(&policy, before_abs),
            if before_abs.saturating_sub(l) >= idle { SessionState::ExpiredIdle } else { SessionState::Active }
        );
    }

    #[test]
    fn permissions_are_exactly_the_table(role in 0usize..4, perm in 0usize..14) {
        // Written independently of roles.rs: (permission, lowest role index holding it).
        const LOWEST: [(Permission, usize); 14] = [
            (Permission::Sell, 0),
            (Permission::Refund, 1),
            (Permission::PriceOverride, 1),
            (Permission::DrawerOpenNoSale, 1),
            (Permission::ApproveOverride, 1),
            (Permission::EnrollClerk, 2),
            (Permission::RemoveClerk, 2),
            (Permission::DisableClerk, 2),
            (Permission::ResetLockout, 2),
            (Permission::SetLockdown, 3),
            (Permission::ClearLockdown, 3),
            (Permission::RotateTotp, 2),
            (Permission::CacheAdmin, 2),
            (Permission::ViewAudit, 2),
        ];
        let (p, lowest) = LOWEST[perm];
        prop_assert_eq!(Permission::ALL[perm], p);
        prop_assert_eq!(allows(ALL_ROLES[role], p), role >= lowest);
    }
}
