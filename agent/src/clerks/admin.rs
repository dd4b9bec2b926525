//! Administration: enrolling, removing, disabling and enabling clerks, resetting a lockout,
//! lockdown, and rotating a TOTP seed. Each needs an Admin or SuperAdmin session with the
//! permission in the role table (lockdown: SuperAdmin); the first admin of a terminal is
//! enrolled by root without a session, once, while no clerk exists.

use posguard_proto::event::{Actor, EventKind, PeerCred, Source};
use posguard_proto::local_api::{ApiError, ErrorCode};
use posguard_proto::text::ClerkId;
use serde_json::{Value, json};

use super::login::totp_aad;
use super::store::{StoredClerk, StoredTotp};
use super::{Authenticated, Clerks, internal};
use crate::auth::roles::mfa_mandatory;
use crate::auth::{ClerkRecord, Permission, Role, Secret, TotpSeed, check_secret};
use crate::clock::Clock;

/// The parameters of `clerk.enroll`.
#[derive(Debug)]
pub struct Enrollment {
    /// The new clerk's id.
    pub clerk: String,
    /// Their role.
    pub role: Role,
    /// Their PIN or password.
    pub secret: Secret,
    /// A honeypot account (never a real person).
    pub honeypot: bool,
    /// Local hours they may log in.
    pub allowed_hours: Option<(u8, u8)>,
    /// TOTP for a role that does not require it.
    pub totp: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadParams, message)
}

impl Clerks {
    fn parse_clerk(raw: &str) -> Result<ClerkId, ApiError> {
        ClerkId::new(raw).map_err(|e| bad(format!("clerk: {e}")))
    }

    fn new_seed(&self, clerk: &ClerkId) -> Result<(Vec<u8>, TotpSeed), ApiError> {
        let seed = TotpSeed::from_random(self.random::<20>()?);
        let sealed = self
            .datakey
            .seal_value(&totp_aad(clerk), seed.to_base32().as_bytes())
            .map_err(internal)?;
        Ok((sealed, seed))
    }

    /// `clerk.enroll`. With `token = None` only root may call it, and only while no clerk
    /// exists, and only for an Admin or SuperAdmin (the terminal's first admin).
    pub async fn enroll(
        &self,
        token: Option<&str>,
        request: Enrollment,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let actor = match token {
            Some(t) => Actor::Clerk(
                self.authorize(t, peer, Permission::EnrollClerk)
                    .await?
                    .clerk,
            ),
            None => {
                if peer.uid != 0 || !self.store.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::Unauthenticated,
                        "log in as an admin to enroll clerks",
                    ));
                }
                if request.role < Role::Admin {
                    return Err(bad(
                        "the first clerk of a terminal must be an Admin or SuperAdmin",
                    ));
                }
                Actor::System
            }
        };
        let clerk = Self::parse_clerk(&request.clerk)?;
        if self.store.clerk(&clerk).map_err(internal)?.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("clerk {clerk} exists"),
            ));
        }
        check_secret(request.role, &request.secret, &self.config.secrets)
            .map_err(|e| bad(format!("secret: {e}")))?;
        if let Some((a, b)) = request.allowed_hours
            && (a > 23 || b > 23)
        {
            return Err(bad("allowed_hours: hours are 0 to 23"));
        }
        let salt = self.random::<16>()?;
        let params = self.config.argon2;
        let secret = request.secret;
        let phc = self
            .hasher
            .hash((peer.uid, peer.pid), secret, salt, params)
            .await?
            .map_err(internal)?;
        let wants_totp = request.totp || mfa_mandatory(request.role);
        let (totp, shown) = if wants_totp {
            let (sealed_seed, seed) = self.new_seed(&clerk)?;
            (
                Some(StoredTotp {
                    sealed_seed,
                    last_step: None,
                }),
                Some(seed),
            )
        } else {
            (None, None)
        };
        let stored = StoredClerk {
            record: ClerkRecord {
                role: request.role,
                enabled: true,
                honeypot: request.honeypot,
                allowed_hours: request.allowed_hours,
                totp_required: request.totp,
            },
            phc,
            totp,
        };
        self.store.put_clerk(&clerk, &stored).map_err(internal)?;
        self.audit(
            actor,
            peer,
            EventKind::ClerkEnrolled {
                clerk: clerk.clone(),
                role: request.role,
                mfa: wants_totp,
            },
            None,
        )
        .await?;
        // A TOTP seed is shown once, to be scanned into the clerk's authenticator app; it can
        // never be read back.
        Ok(match shown {
            Some(seed) => json!({
                "clerk": clerk.as_str(),
                "role": request.role,
                "totp_secret": seed.to_base32().as_str(),
                "otpauth_uri": crate::auth::totp::otpauth_uri(&clerk, &seed).as_str(),
            }),
            None => json!({ "clerk": clerk.as_str(), "role": request.role }),
        })
    }

    async fn admin(
        &self,
        token: &str,
        peer: PeerCred,
        permission: Permission,
    ) -> Result<Authenticated, ApiError> {
        self.authorize(token, peer, permission).await
    }

    fn existing(&self, raw: &str) -> Result<(ClerkId, StoredClerk), ApiError> {
        let clerk = Self::parse_clerk(raw)?;
        let stored = self
            .store
            .clerk(&clerk)
            .map_err(internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no clerk {clerk}")))?;
        Ok((clerk, stored))
    }

    /// `clerk.remove`.
    pub async fn remove(
        &self,
        token: &str,
        clerk: &str,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let who = self.admin(token, peer, Permission::RemoveClerk).await?;
        let (clerk, _) = self.existing(clerk)?;
        self.store.remove_clerk(&clerk).map_err(internal)?;
        self.drop_sessions_of(&clerk).await;
        self.audit(
            Actor::Clerk(who.clerk),
            peer,
            EventKind::ClerkRemoved {
                clerk: clerk.clone(),
            },
            None,
        )
        .await?;
        Ok(json!({ "clerk": clerk.as_str(), "removed": true }))
    }

    /// `clerk.disable` / `clerk.enable`.
    pub async fn set_enabled(
        &self,
        token: &str,
        clerk: &str,
        enabled: bool,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let who = self.admin(token, peer, Permission::DisableClerk).await?;
        let (clerk, mut stored) = self.existing(clerk)?;
        stored.record.enabled = enabled;
        self.store.put_clerk(&clerk, &stored).map_err(internal)?;
        if !enabled {
            self.drop_sessions_of(&clerk).await;
        }
        let kind = if enabled {
            EventKind::ClerkEnabled {
                clerk: clerk.clone(),
            }
        } else {
            EventKind::ClerkDisabled {
                clerk: clerk.clone(),
            }
        };
        self.audit(Actor::Clerk(who.clerk), peer, kind, None)
            .await?;
        Ok(json!({ "clerk": clerk.as_str(), "enabled": enabled }))
    }

    /// `lockout.reset`: ends a clerk's lockout (or, without a clerk, the terminal block).
    pub async fn reset_lockout(
        &self,
        token: &str,
        clerk: Option<&str>,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let who = self.admin(token, peer, Permission::ResetLockout).await?;
        let now = Clock::mono_ns();
        let target = match clerk {
            Some(raw) => {
                let (clerk, _) = self.existing(raw)?;
                let mut state = self.store.throttle(&clerk).map_err(internal)?;
                state.admin_reset(now);
                self.store.put_throttle(&clerk, &state).map_err(internal)?;
                Some(clerk)
            }
            None => {
                let mut budget = self.store.budget().map_err(internal)?;
                budget.admin_reset(now);
                self.store.put_budget(&budget).map_err(internal)?;
                None
            }
        };
        self.store.sync().map_err(internal)?;
        self.audit(
            Actor::Clerk(who.clerk),
            peer,
            EventKind::LockoutReset {
                clerk: target.clone(),
            },
            None,
        )
        .await?;
        Ok(json!({ "reset": target.map(|c| c.as_str().to_owned()) }))
    }

    /// Sets or clears lockdown. Lockdown revokes every session; only SuperAdmin may log in.
    pub async fn set_lockdown(
        &self,
        on: bool,
        source: Source,
        actor: Actor,
        peer: PeerCred,
    ) -> Result<(), ApiError> {
        self.store.set_lockdown(on).map_err(internal)?;
        if on {
            self.revoke_all().await;
        }
        self.audit(
            actor,
            peer,
            EventKind::LockdownChanged {
                enabled: on,
                source,
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// `lockdown.set` / `lockdown.clear` from a local SuperAdmin session.
    pub async fn lockdown_local(
        &self,
        token: &str,
        on: bool,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let permission = if on {
            Permission::SetLockdown
        } else {
            Permission::ClearLockdown
        };
        let who = self.admin(token, peer, permission).await?;
        self.set_lockdown(on, Source::Local, Actor::Clerk(who.clerk), peer)
            .await?;
        Ok(json!({ "lockdown": on }))
    }

    /// `totp.rotate`: a new seed for a clerk (shown once); the old one stops working at once.
    pub async fn rotate_totp(
        &self,
        token: &str,
        clerk: &str,
        peer: PeerCred,
    ) -> Result<Value, ApiError> {
        let who = self.admin(token, peer, Permission::RotateTotp).await?;
        let (clerk, mut stored) = self.existing(clerk)?;
        let (sealed_seed, seed) = self.new_seed(&clerk)?;
        stored.totp = Some(StoredTotp {
            sealed_seed,
            last_step: None,
        });
        self.store.put_clerk(&clerk, &stored).map_err(internal)?;
        self.audit(
            Actor::Clerk(who.clerk),
            peer,
            EventKind::TotpSeedRotated {
                clerk: clerk.clone(),
            },
            None,
        )
        .await?;
        Ok(json!({
            "clerk": clerk.as_str(),
            "totp_secret": seed.to_base32().as_str(),
            "otpauth_uri": crate::auth::totp::otpauth_uri(&clerk, &seed).as_str(),
        }))
    }

    /// The enrolled clerk ids (`clerk.list`, admins only).
    pub async fn list(&self, token: &str, peer: PeerCred) -> Result<Value, ApiError> {
        self.admin(token, peer, Permission::EnrollClerk).await?;
        let mut out = Vec::new();
        for id in self.store.clerk_ids().map_err(internal)? {
            if let Ok(clerk) = ClerkId::new(id)
                && let Some(c) = self.store.clerk(&clerk).map_err(internal)?
            {
                out.push(json!({"clerk": clerk.as_str(), "role": c.record.role, "enabled": c.record.enabled, "mfa": c.totp.is_some()}));
            }
        }
        Ok(json!(out))
    }

    async fn drop_sessions_of(&self, clerk: &ClerkId) {
        self.live
            .lock()
            .await
            .sessions
            .retain(|_, s| &s.clerk != clerk);
    }
}
