//! Clerk logins with their I/O: the pure policy of [`crate::auth`] wrapped around the stored
//! state (`store`), secret verification off the reactor, sessions in memory, and an audit
//! event for every decision.
//!
//! - `store`: clerks, throttle states, the terminal budget and lockdown, durable in sled.
//! - `login`: `login`, `verify_mfa`, `elevate` (supervisor override).
//! - `admin`: enrolment, removal, disabling, lockout reset, lockdown, TOTP rotation.
//! - `first_admin`: root discarding a first admin whose TOTP was never confirmed.
//! - `hasher`: every Argon2id hash and check, on a bounded set of worker threads behind a
//!   bounded queue served fairly per client process (`fair_queue`).
//! - this file: the service, sessions, and the audit helpers.

mod admin;
mod fair_queue;
mod first_admin;
mod hasher;
mod login;
mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use posguard_proto::event::{Actor, Event, EventKind, PeerCred, Severity};
use posguard_proto::local_api::{ApiError, ErrorCode};
use posguard_proto::text::ClerkId;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Mutex;

use crate::auth::{AuthConfig, Permission, Role, Session, SessionState, SessionToken, allows};
use crate::clock::Clock;
use crate::datakey::DataKey;
use crate::journal::Journal;
pub use admin::Enrollment;
pub use login::ElevateRequest;
use store::AuthStore;
pub use store::StoreError;

/// A login waiting for its TOTP code.
#[derive(Debug)]
struct Challenge {
    clerk: ClerkId,
    expires_mono: u64,
}

/// What changes at every request: sessions and pending MFA challenges (never stored).
#[derive(Debug, Default)]
struct Live {
    sessions: HashMap<[u8; 32], Session>,
    challenges: HashMap<[u8; 32], Challenge>,
}

/// How long a TOTP challenge stays valid.
const CHALLENGE_NS: u64 = 120 * 1_000_000_000;

/// The clerk-authentication service. One instance per agent; cheap to share through `Arc`.
#[derive(Debug)]
pub struct Clerks {
    store: AuthStore,
    config: AuthConfig,
    datakey: Arc<DataKey>,
    journal: Journal,
    clock: Clock,
    rng: SystemRandom,
    live: Mutex<Live>,
    /// A valid Argon2id hash of nothing anyone knows: unknown clerks are checked against it so
    /// that their answer takes as long as a known clerk's.
    decoy_phc: String,
    /// Bounded Argon2id work: the agent's memory does not grow with concurrent logins.
    hasher: hasher::Hasher,
    /// The stored database, if it was unreadable at start and replaced by a fresh one.
    recovered: Option<crate::storeguard::MovedAside>,
}

/// An authenticated request's session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who.
    pub clerk: ClerkId,
    /// With which role.
    pub role: Role,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "clerk authentication failed inside the agent");
    ApiError::new(ErrorCode::Internal, "internal error; see the agent's log")
}

impl Clerks {
    /// Opens the store under `state_dir/auth`. Every stored lockout and the terminal budget are
    /// rebased on this boot's clock so that the restart shortens none of them.
    pub fn open(
        state_dir: &Path,
        config: AuthConfig,
        datakey: Arc<DataKey>,
        journal: Journal,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let dir = state_dir.join("auth");
        // A damaged database is moved aside untouched and replaced by an empty one: clerks,
        // lockouts and the lockdown flag are lost, and with no clerk nobody can log in until a
        // technician enrols the first admin again (docs/runbook.md).
        let recovered = crate::storeguard::check_or_move_aside(
            &dir,
            crate::storeguard::StoreKind::Clerks,
            |copy| AuthStore::check(copy).map_err(|e| e.to_string()),
        )
        .map_err(|source| StoreError::Sync {
            path: dir.clone(),
            source,
        })?;
        let store = AuthStore::open(&dir)?;
        let now = Clock::mono_ns();
        for (id, mut state) in store.all_throttles()? {
            state.rebase(now);
            if let Ok(id) = ClerkId::new(id) {
                store.put_throttle(&id, &state)?;
            }
        }
        let mut budget = store.budget()?;
        budget.rebase(now);
        store.put_budget(&budget)?;
        store.sync()?;
        let decoy_phc = crate::auth::hash_secret(
            &crate::auth::Secret::new("posguard-decoy".to_owned()),
            &[0x5A; 16],
            &config.argon2,
        )
        .map_err(|_| StoreError::Corrupt {
            what: "decoy hash parameters",
        })?;
        Ok(Clerks {
            store,
            config,
            datakey,
            journal,
            clock,
            rng: SystemRandom::new(),
            live: Mutex::new(Live::default()),
            decoy_phc,
            hasher: hasher::Hasher::start(config.hashing).map_err(StoreError::Workers)?,
            recovered,
        })
    }

    /// The clerk database found unreadable at start and moved aside, if it was.
    pub fn recovered(&self) -> Option<&crate::storeguard::MovedAside> {
        self.recovered.as_ref()
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], ApiError> {
        let mut out = [0u8; N];
        self.rng
            .fill(&mut out)
            .map_err(|_| internal("the OS RNG failed"))?;
        Ok(out)
    }

    /// Appends an audit event for this decision; returns once it is durable.
    pub(crate) async fn audit(
        &self,
        actor: Actor,
        peer: PeerCred,
        kind: EventKind,
        at_least: Option<Severity>,
    ) -> Result<u64, ApiError> {
        let mut event = Event::new(self.clock.stamp(), actor, Some(peer), kind);
        if let Some(s) = at_least {
            event = event.at_least(s);
        }
        self.journal.append(event).await.map_err(internal)
    }

    /// The local hour for allowed-hours checks.
    fn local_hour(&self) -> u8 {
        let secs = i64::try_from(Clock::wall_ms() / 1000).unwrap_or(0);
        let local =
            secs.saturating_add(i64::from(self.config.utc_offset_minutes).saturating_mul(60));
        u8::try_from(local.rem_euclid(86_400) / 3600).unwrap_or(0)
    }

    /// Creates a session and returns its token (shown to the client once).
    async fn new_session(&self, clerk: ClerkId, role: Role) -> Result<SessionToken, ApiError> {
        let token = SessionToken::from_random(self.random::<32>()?);
        let session = Session::new(clerk, role, &token, Clock::mono_ns());
        self.live
            .lock()
            .await
            .sessions
            .insert(token.hash(), session);
        Ok(token)
    }

    /// Looks up a session by its token, refreshing its idle timer. An expired session is removed
    /// and journaled, and never comes back.
    pub async fn authenticate(
        &self,
        token: &str,
        peer: PeerCred,
    ) -> Result<Authenticated, ApiError> {
        let unauthenticated =
            || ApiError::new(ErrorCode::Unauthenticated, "no valid session; log in");
        let token = SessionToken::parse(token).map_err(|_| unauthenticated())?;
        let hash = token.hash();
        let now = Clock::mono_ns();
        let expired = {
            let mut live = self.live.lock().await;
            let Some(session) = live.sessions.get_mut(&hash) else {
                return Err(unauthenticated());
            };
            match session.touch(&self.config.session, now) {
                SessionState::Active => {
                    return Ok(Authenticated {
                        clerk: session.clerk.clone(),
                        role: session.role,
                    });
                }
                state => {
                    let session = live.sessions.remove(&hash);
                    session.map(|s| (s.clerk, state))
                }
            }
        };
        if let Some((clerk, state)) = expired
            && let Some(limit) = state.limit()
        {
            self.audit(
                Actor::Clerk(clerk.clone()),
                peer,
                EventKind::SessionExpired { clerk, limit },
                None,
            )
            .await?;
        }
        Err(unauthenticated())
    }

    /// Like [`Clerks::authenticate`], and the session's role must have `permission`.
    pub async fn authorize(
        &self,
        token: &str,
        peer: PeerCred,
        permission: Permission,
    ) -> Result<Authenticated, ApiError> {
        let who = self.authenticate(token, peer).await?;
        if !allows(who.role, permission) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("the {:?} role may not do this", who.role),
            ));
        }
        Ok(who)
    }

    /// Session details without extending it (`session_info`).
    pub async fn session_info(&self, token: &str) -> Result<serde_json::Value, ApiError> {
        let unauthenticated =
            || ApiError::new(ErrorCode::Unauthenticated, "no valid session; log in");
        let token = SessionToken::parse(token).map_err(|_| unauthenticated())?;
        let now = Clock::mono_ns();
        let live = self.live.lock().await;
        let session = live
            .sessions
            .get(&token.hash())
            .ok_or_else(unauthenticated)?;
        if session.check(&self.config.session, now) != SessionState::Active {
            return Err(unauthenticated());
        }
        let idle_left = session
            .last_seen_mono
            .saturating_add(self.config.session.idle_ns(session.role))
            .saturating_sub(now);
        let absolute_left = session
            .created_mono
            .saturating_add(self.config.session.absolute_ns())
            .saturating_sub(now);
        Ok(serde_json::json!({
            "clerk": session.clerk.as_str(),
            "role": session.role,
            "idle_expires_in_secs": idle_left / 1_000_000_000,
            "absolute_expires_in_secs": absolute_left / 1_000_000_000,
        }))
    }

    /// Ends a session.
    pub async fn logout(&self, token: &str, peer: PeerCred) -> Result<(), ApiError> {
        let who = self.authenticate(token, peer).await?;
        if let Ok(t) = SessionToken::parse(token) {
            self.live.lock().await.sessions.remove(&t.hash());
        }
        self.audit(
            Actor::Clerk(who.clerk.clone()),
            peer,
            EventKind::LoggedOut { clerk: who.clerk },
            None,
        )
        .await?;
        Ok(())
    }

    /// Removes expired sessions and challenges, journaling each expired session.
    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let now = Clock::mono_ns();
        let expired: Vec<_> = {
            let mut live = self.live.lock().await;
            live.challenges.retain(|_, c| c.expires_mono > now);
            let policy = self.config.session;
            let gone: Vec<[u8; 32]> = live
                .sessions
                .iter()
                .filter(|(_, s)| s.check(&policy, now) != SessionState::Active)
                .map(|(k, _)| *k)
                .collect();
            gone.iter()
                .filter_map(|k| live.sessions.remove(k))
                .map(|s| {
                    let state = s.check(&policy, now);
                    (s.clerk, state)
                })
                .collect()
        };
        let count = expired.len();
        let system = PeerCred {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        for (clerk, state) in expired {
            if let Some(limit) = state.limit() {
                self.audit(
                    Actor::Clerk(clerk.clone()),
                    system,
                    EventKind::SessionExpired { clerk, limit },
                    None,
                )
                .await?;
            }
        }
        Ok(count)
    }

    /// Revokes every session (lockdown).
    async fn revoke_all(&self) {
        let mut live = self.live.lock().await;
        live.sessions.clear();
        live.challenges.clear();
    }

    /// The clerk store's anchor (instance id, write generation), for the journal's check.
    pub fn anchor(&self) -> std::sync::Arc<crate::anchor::AnchorCell> {
        self.store.anchor()
    }

    /// Makes the clerk store durable now, with its anchor and the journal head it records.
    /// Blocking (fsync).
    pub fn sync_anchor(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// Whether the terminal is in lockdown.
    pub fn lockdown(&self) -> bool {
        self.store.lockdown().unwrap_or(true)
    }
}
