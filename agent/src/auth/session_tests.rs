#![allow(clippy::unwrap_used)]

use super::*;

const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;

fn clerk() -> ClerkId {
    ClerkId::new("anna").unwrap()
}

fn token(b: u8) -> SessionToken {
    SessionToken::from_random([b; TOKEN_LEN])
}

#[test]
fn idle_limits_by_role_hold_to_the_nanosecond() {
    let p = SessionPolicy::default();
    for (role, idle) in [
        (Role::Clerk, 30 * MIN),
        (Role::Supervisor, 30 * MIN),
        (Role::Admin, 15 * MIN),
        (Role::SuperAdmin, 15 * MIN),
    ] {
        let s = Session::new(clerk(), role, &token(1), 7 * S);
        assert_eq!(
            s.check(&p, 7 * S + idle - 1),
            SessionState::Active,
            "{role:?}"
        );
        assert_eq!(
            s.check(&p, 7 * S + idle),
            SessionState::ExpiredIdle,
            "{role:?}"
        );
    }
}

#[test]
fn absolute_limit_holds_despite_activity() {
    let p = SessionPolicy::default();
    let mut s = Session::new(clerk(), Role::Clerk, &token(1), 0);
    let mut now = 0;
    while now + 20 * MIN < 12 * 60 * MIN {
        now += 20 * MIN;
        assert_eq!(s.touch(&p, now), SessionState::Active);
    }
    assert_eq!(s.check(&p, 12 * 60 * MIN - 1), SessionState::Active);
    assert_eq!(s.check(&p, 12 * 60 * MIN), SessionState::ExpiredAbsolute);
    assert_eq!(s.touch(&p, 12 * 60 * MIN), SessionState::ExpiredAbsolute);
}

#[test]
fn touch_does_not_revive() {
    let p = SessionPolicy::default();
    let mut s = Session::new(clerk(), Role::Admin, &token(1), 0);
    assert_eq!(s.touch(&p, 16 * MIN), SessionState::ExpiredIdle);
    assert_eq!(s.last_seen_mono, 0);
    assert_eq!(s.check(&p, 16 * MIN), SessionState::ExpiredIdle);
}

#[test]
fn tokens_are_stored_hashed_and_compared() {
    let t = token(9);
    let wire = t.to_client_string();
    assert_eq!(wire.len(), 43);
    let back = SessionToken::parse(&wire).unwrap();
    let s = Session::new(clerk(), Role::Clerk, &t, 0);
    assert_ne!(s.token_hash, [9; 32]);
    assert!(token_matches(&s.token_hash, &back));
    assert!(!token_matches(&s.token_hash, &token(8)));
    assert!(matches!(
        SessionToken::parse("short"),
        Err(TokenFormatError)
    ));
    assert!(SessionToken::parse(&"!".repeat(43)).is_err());
    assert_eq!(format!("{t:?}"), "SessionToken(<redacted>)");
}

#[test]
fn elevation_rotates_the_token_and_keeps_the_login_time() {
    let p = SessionPolicy::default();
    let s = Session::new(clerk(), Role::Clerk, &token(1), 0);
    let e = s.elevate(&p, Role::Supervisor, &token(2), 5 * MIN).unwrap();
    assert_eq!(e.role, Role::Supervisor);
    assert_eq!(e.created_mono, 0);
    assert_eq!(e.last_seen_mono, 5 * MIN);
    assert!(!token_matches(&e.token_hash, &token(1)));
    assert!(token_matches(&e.token_hash, &token(2)));
    assert_eq!(
        s.elevate(&p, Role::Supervisor, &token(3), 31 * MIN),
        Err(ElevateError::Expired)
    );
}
