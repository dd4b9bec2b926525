//! Logging in: the secret (Argon2id, verified off the reactor, constant time), the TOTP code for
//! roles that need one (in the same request, or through a short-lived challenge and
//! `verify_mfa`), and the supervisor override. The decision itself is the pure
//! [`crate::auth::decide_login`]; this file does the I/O around it and journals every outcome.

use posguard_proto::event::{Actor, EventKind, PeerCred, Severity, ThrottleScope};
use posguard_proto::local_api::{ApiError, ErrorCode};
use posguard_proto::text::ClerkId;
use serde_json::{Value, json};

use super::store::StoredClerk;
use super::{CHALLENGE_NS, Challenge, Clerks, internal};
use crate::auth::{
    AuthFact, DenyReason, LoginAttempt, LoginOutcome, Role, Secret, SessionToken, TotpDecision,
    TotpSeed, decide_login, decide_override, decide_unknown_clerk,
};
use crate::clock::Clock;

fn refused() -> ApiError {
    ApiError::new(ErrorCode::LoginFailed, "login refused")
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// The API error for a refusal; deliberately vague where detail would help an attacker.
fn deny_error(reason: DenyReason) -> ApiError {
    match reason {
        DenyReason::LockedOut { remaining } => ApiError {
            retry_after_secs: Some(secs(remaining)),
            ..ApiError::new(
                ErrorCode::LockedOut,
                "this clerk is locked out; an admin can reset it",
            )
        },
        DenyReason::Throttled { retry_after } | DenyReason::BudgetExceeded { retry_after } => {
            ApiError {
                retry_after_secs: Some(secs(retry_after)),
                ..ApiError::new(
                    ErrorCode::Throttled,
                    "too many failed logins; wait before trying again",
                )
            }
        }
        DenyReason::Lockdown => ApiError::new(ErrorCode::Lockdown, "the terminal is in lockdown"),
        _ => refused(),
    }
}

impl Clerks {
    fn clerk_id(raw: &str) -> Result<ClerkId, ApiError> {
        ClerkId::new(raw).map_err(|_| refused())
    }

    /// Checks a secret on the bounded Argon2id workers, in turn with the caller's process.
    async fn check_secret_bounded(
        &self,
        peer: PeerCred,
        secret: Secret,
        phc: String,
    ) -> Result<bool, ApiError> {
        self.hasher.verify((peer.uid, peer.pid), secret, phc).await
    }

    /// Whether the terminal-wide failure budget blocks every login now: then no secret is worth
    /// hashing (the answer is `throttled` for known and unknown clerks alike, so skipping the
    /// hash tells an attacker nothing).
    fn budget_blocks(&self) -> Result<bool, ApiError> {
        let mut budget = self.store.budget().map_err(internal)?;
        let now = Clock::mono_ns();
        budget.refresh(&self.config.throttle, now);
        Ok(budget.blocked(now).is_some())
    }

    fn totp_decision(
        &self,
        stored: &StoredClerk,
        clerk: &ClerkId,
        code: &str,
    ) -> Result<TotpDecision, ApiError> {
        let Some(totp) = &stored.totp else {
            return Ok(TotpDecision::Wrong);
        };
        let plain = self
            .datakey
            .open_value(&totp_aad(clerk), &totp.sealed_seed)
            .map_err(internal)?;
        let text = std::str::from_utf8(&plain).map_err(internal)?;
        let seed = TotpSeed::from_base32(text).map_err(internal)?;
        Ok(crate::auth::totp::verify(
            &seed,
            code,
            Clock::wall_ms() / 1000,
            totp.last_step,
        ))
    }

    /// Journals what a decision says beyond its outcome.
    async fn audit_facts(
        &self,
        clerk: &ClerkId,
        peer: PeerCred,
        facts: &[AuthFact],
    ) -> Result<(), ApiError> {
        let actor = || Actor::Clerk(clerk.clone());
        for fact in facts {
            let (kind, severity) = match *fact {
                AuthFact::ThrottleStarted { failures, delay } => (
                    EventKind::Throttled {
                        scope: ThrottleScope::Clerk(clerk.clone()),
                        failures,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    },
                    None,
                ),
                AuthFact::LockoutStarted { failures, duration } => (
                    EventKind::LockedOut {
                        clerk: clerk.clone(),
                        failures,
                        until_wall_ms: Some(Clock::wall_ms().saturating_add(
                            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                        )),
                    },
                    None,
                ),
                AuthFact::BudgetExceeded(b) => (
                    EventKind::FailureBudgetExceeded {
                        failures: b.failures,
                        window_s: u32::try_from(b.window.as_secs()).unwrap_or(u32::MAX),
                        until_wall_ms: Some(Clock::wall_ms().saturating_add(
                            u64::try_from(b.block.as_millis()).unwrap_or(u64::MAX),
                        )),
                    },
                    Some(Severity::Critical),
                ),
                AuthFact::HoneypotTriggered => (
                    EventKind::HoneypotTriggered {
                        clerk: clerk.clone(),
                    },
                    Some(Severity::Critical),
                ),
                AuthFact::MfaFailed => (
                    EventKind::MfaFailed {
                        clerk: clerk.clone(),
                    },
                    None,
                ),
                AuthFact::MfaReplayed { step } => (
                    EventKind::MfaReplayed {
                        clerk: clerk.clone(),
                        time_step: step,
                    },
                    Some(Severity::Critical),
                ),
            };
            self.audit(actor(), peer, kind, severity).await?;
        }
        Ok(())
    }

    /// A login for no enrolled clerk: counted against the terminal's failure budget and
    /// journaled without the id (it may be a password typed into the wrong field).
    async fn unknown_clerk(&self, peer: PeerCred) -> Result<DenyReason, ApiError> {
        let budget = self.store.budget().map_err(internal)?;
        let d = decide_unknown_clerk(&self.config.throttle, &budget, Clock::mono_ns());
        self.store.put_budget(&d.budget).map_err(internal)?;
        self.store.sync().map_err(internal)?;
        let failed = EventKind::LoginFailed {
            clerk: None,
            reason: posguard_proto::event::LoginFailure::UnknownClerk,
        };
        self.audit(Actor::System, peer, failed, None).await?;
        for fact in &d.facts {
            if let AuthFact::BudgetExceeded(b) = fact {
                let kind = EventKind::FailureBudgetExceeded {
                    failures: b.failures,
                    window_s: u32::try_from(b.window.as_secs()).unwrap_or(u32::MAX),
                    until_wall_ms: Some(
                        Clock::wall_ms()
                            .saturating_add(u64::try_from(b.block.as_millis()).unwrap_or(u64::MAX)),
                    ),
                };
                self.audit(Actor::System, peer, kind, Some(Severity::Critical))
                    .await?;
            }
        }
        Ok(d.reason)
    }

    /// Authenticates a clerk (secret and, where needed, TOTP); on success the stored throttle
    /// is cleared and the role returned. `secret_ok` is given when a challenge already proved
    /// the secret.
    async fn authenticate_clerk(
        &self,
        clerk: &ClerkId,
        secret: Option<Secret>,
        code: Option<&str>,
        peer: PeerCred,
    ) -> Result<Verdict, ApiError> {
        let Some(stored) = self.store.clerk(clerk).map_err(internal)? else {
            // Unknown clerk: spend the same time as a real check (through the same bounded
            // workers and queue), count it against the terminal.
            if let Some(secret) = secret
                && !self.budget_blocks()?
            {
                let _ = self
                    .check_secret_bounded(peer, secret, self.decoy_phc.clone())
                    .await?;
            }
            let _ = clerk; // an unknown id is never recorded: it may be a mistyped password
            return Ok(Verdict::Denied(self.unknown_clerk(peer).await?));
        };
        // Refuse before hashing when the clerk is locked out or delayed, or the terminal budget
        // blocks every login: cheap, no oracle, and a flood of failures costs no hashes.
        let throttle = self.store.throttle(clerk).map_err(internal)?;
        let pre = matches!(
            throttle.gate(Clock::mono_ns()),
            crate::auth::throttle::Gate::Open
        ) && !self.budget_blocks()?;
        let secret_ok = match (secret, pre) {
            (Some(secret), true) => {
                self.check_secret_bounded(peer, secret, stored.phc.clone())
                    .await?
            }
            (None, _) => true, // proven by a challenge
            (Some(_), false) => false,
        };
        let totp = match code {
            Some(code) => Some(self.totp_decision(&stored, clerk, code)?),
            None => None,
        };
        let now = Clock::mono_ns();
        let attempt = LoginAttempt {
            now_mono: now,
            local_hour: self.local_hour(),
            lockdown: self.lockdown(),
            secret_ok,
            totp,
        };
        let budget = self.store.budget().map_err(internal)?;
        let d = decide_login(
            &self.config.throttle,
            &stored.record,
            &throttle,
            &budget,
            &attempt,
        );
        // Persist (and fsync) only what changed: a clean login touches nothing on disk.
        let mut dirty = false;
        if d.throttle != throttle {
            self.store
                .put_throttle(clerk, &d.throttle)
                .map_err(internal)?;
            dirty = true;
        }
        if d.budget != budget {
            self.store.put_budget(&d.budget).map_err(internal)?;
            dirty = true;
        }
        if let LoginOutcome::Granted {
            totp_step: Some(step),
            ..
        } = d.outcome
        {
            let mut updated = stored.clone();
            if let Some(t) = updated.totp.as_mut() {
                t.last_step = Some(step);
            }
            self.store.put_clerk(clerk, &updated).map_err(internal)?;
        }
        if dirty {
            self.store.sync().map_err(internal)?;
        }
        self.audit_facts(clerk, peer, &d.facts).await?;
        let actor = Actor::Clerk(clerk.clone());
        match d.outcome {
            LoginOutcome::Granted { role, mfa_used, .. } => Ok(Verdict::Granted {
                role,
                mfa: mfa_used,
            }),
            LoginOutcome::NeedMfa => Ok(Verdict::NeedMfa),
            LoginOutcome::Denied(reason) => {
                if let Some(failure) = reason.login_failure() {
                    self.audit(
                        actor,
                        peer,
                        EventKind::LoginFailed {
                            clerk: Some(clerk.clone()),
                            reason: failure,
                        },
                        None,
                    )
                    .await?;
                }
                Ok(Verdict::Denied(reason))
            }
        }
    }

    async fn grant(
        &self,
        clerk: ClerkId,
        role: Role,
        mfa: bool,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let token = self.new_session(clerk.clone(), role).await?;
        self.audit(
            Actor::Clerk(clerk.clone()),
            peer,
            EventKind::LoginSucceeded {
                clerk: clerk.clone(),
                role,
                mfa,
            },
            None,
        )
        .await?;
        Ok(json!({
            "status": "granted",
            "token": token.to_client_string().as_str(),
            "clerk": clerk.as_str(),
            "role": role,
            "idle_timeout_secs": self.config.session.idle_ns(role) / 1_000_000_000,
            "absolute_timeout_secs": self.config.session.absolute_ns() / 1_000_000_000,
        }))
    }

    /// `login`: a clerk id and secret, and a TOTP code when the role needs one. Without the code
    /// an MFA role gets `{"status":"mfa_required","challenge":…}` for `verify_mfa`.
    pub async fn login(
        &self,
        clerk: &str,
        secret: Secret,
        code: Option<&str>,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let clerk = match ClerkId::new(clerk) {
            Ok(c) => c,
            Err(_) => {
                // Not even a valid id (possibly a password typed in the wrong field): never
                // recorded, but counted against the terminal like any unknown clerk.
                return Err(deny_error(self.unknown_clerk(peer).await?));
            }
        };
        match self
            .authenticate_clerk(&clerk, Some(secret), code, peer)
            .await?
        {
            Verdict::Granted { role, mfa } => self.grant(clerk, role, mfa, peer).await,
            Verdict::NeedMfa => {
                let challenge = SessionToken::from_random(self.random::<32>()?);
                let expires_mono = Clock::mono_ns().saturating_add(CHALLENGE_NS);
                self.live.lock().await.challenges.insert(
                    challenge.hash(),
                    Challenge {
                        clerk: clerk.clone(),
                        expires_mono,
                    },
                );
                Ok(json!({
                    "status": "mfa_required",
                    "challenge": challenge.to_client_string().as_str(),
                    "expires_in_secs": CHALLENGE_NS / 1_000_000_000,
                }))
            }
            Verdict::Denied(reason) => Err(deny_error(reason)),
        }
    }

    /// `verify_mfa`: completes a login that answered `mfa_required`. A challenge is single use.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        code: &str,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let expired = || {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "unknown or expired challenge; log in again",
            )
        };
        let token = SessionToken::parse(challenge).map_err(|_| expired())?;
        let found = self.live.lock().await.challenges.remove(&token.hash());
        let Some(found) = found.filter(|c| c.expires_mono > Clock::mono_ns()) else {
            return Err(expired());
        };
        match self
            .authenticate_clerk(&found.clerk, None, Some(code), peer)
            .await?
        {
            Verdict::Granted { role, mfa } => self.grant(found.clerk, role, mfa, peer).await,
            Verdict::NeedMfa => Err(ApiError::new(
                ErrorCode::MfaRequired,
                "a TOTP code is required",
            )),
            Verdict::Denied(reason) => Err(deny_error(reason)),
        }
    }

    /// `elevate`: a supervisor (a different person, with the override permission) approves a
    /// higher role for the session holder. The holder gets a new token; the old one stops working.
    pub async fn elevate(
        &self,
        request: ElevateRequest<'_>,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let who = self.authenticate(request.token, peer).await?;
        let approver = Self::clerk_id(request.approver)?;
        let approver_role = match self
            .authenticate_clerk(
                &approver,
                Some(request.approver_secret),
                request.approver_code,
                peer,
            )
            .await?
        {
            Verdict::Granted { role, .. } => role,
            Verdict::NeedMfa => {
                return Err(ApiError::new(
                    ErrorCode::MfaRequired,
                    "the approver's TOTP code is required",
                ));
            }
            Verdict::Denied(reason) => return Err(deny_error(reason)),
        };
        decide_override(&who.clerk, &approver, approver_role, request.role).map_err(
            |e| match e {
                crate::auth::OverrideRefusal::SamePerson => {
                    ApiError::new(ErrorCode::Conflict, e.to_string())
                }
                _ => ApiError::new(ErrorCode::PermissionDenied, e.to_string()),
            },
        )?;
        let old = SessionToken::parse(request.token).map_err(|_| refused())?;
        let new_token = SessionToken::from_random(self.random::<32>()?);
        {
            let mut live = self.live.lock().await;
            let session = live.sessions.remove(&old.hash()).ok_or_else(refused)?;
            let elevated = session
                .elevate(
                    &self.config.session,
                    request.role,
                    &new_token,
                    Clock::mono_ns(),
                )
                .map_err(|_| ApiError::new(ErrorCode::Unauthenticated, "the session expired"))?;
            live.sessions.insert(new_token.hash(), elevated);
        }
        self.audit(
            Actor::Clerk(approver.clone()),
            peer,
            EventKind::PrivilegeElevated {
                approver,
                subject: who.clerk,
                role: request.role,
                purpose: request.purpose,
            },
            None,
        )
        .await?;
        Ok(json!({ "token": new_token.to_client_string().as_str(), "role": request.role }))
    }
}

/// The parameters of `elevate`.
#[derive(Debug)]
pub struct ElevateRequest<'a> {
    /// The session holder's token.
    pub token: &'a str,
    /// Who approves.
    pub approver: &'a str,
    /// The approver's secret.
    pub approver_secret: Secret,
    /// The approver's TOTP code, if their role needs one.
    pub approver_code: Option<&'a str>,
    /// The role granted.
    pub role: Role,
    /// Why (a short code such as `refund`).
    pub purpose: Option<posguard_proto::text::ShortCode>,
}

/// The outcome of authenticating a clerk.
enum Verdict {
    Granted { role: Role, mfa: bool },
    NeedMfa,
    Denied(DenyReason),
}

pub(crate) fn totp_aad(clerk: &ClerkId) -> Vec<u8> {
    format!("posguard/totp-seed/v1/{}", clerk.as_str()).into_bytes()
}
