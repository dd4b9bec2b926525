//! Local API methods for clerk logins and administration; the work is in [`crate::clerks`].

use posguard_proto::event::{PeerCred, Role};
use posguard_proto::local_api::{ApiError, ErrorCode};
use posguard_proto::text::ShortCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::params;
use super::{Ctx, Peer};
use crate::auth::Secret;
use crate::clerks::{ElevateRequest, Enrollment};

pub(super) const METHODS: &[&str] = &[
    "login",
    "verify_mfa",
    "touch",
    "session_info",
    "logout",
    "elevate",
    "clerk.enroll",
    "clerk.discard_unconfirmed",
    "clerk.remove",
    "clerk.disable",
    "clerk.enable",
    "clerk.list",
    "lockout.reset",
    "lockdown.set",
    "lockdown.clear",
    "totp.rotate",
];

pub(super) fn handles(method: &str) -> bool {
    METHODS.contains(&method)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    clerk: String,
    secret: String,
    totp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyMfa {
    challenge: String,
    totp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenOnly {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Elevate {
    token: String,
    approver: String,
    approver_secret: String,
    approver_totp: Option<String>,
    role: Role,
    purpose: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enroll {
    token: Option<String>,
    clerk: String,
    role: Role,
    secret: String,
    #[serde(default)]
    honeypot: bool,
    allowed_hours: Option<(u8, u8)>,
    #[serde(default)]
    totp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClerkTarget {
    token: String,
    clerk: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClerkOnly {
    clerk: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    clerk: Option<String>,
}

pub(super) async fn dispatch(
    ctx: &Ctx,
    peer: &Peer,
    method: &str,
    raw: Value,
) -> Result<Value, ApiError> {
    let clerks = &ctx.clerks;
    let cred: PeerCred = peer.cred;
    match method {
        "login" => {
            let p: Login = params(raw)?;
            clerks
                .login(&p.clerk, Secret::new(p.secret), p.totp.as_deref(), cred)
                .await
        }
        "verify_mfa" => {
            let p: VerifyMfa = params(raw)?;
            clerks.verify_mfa(&p.challenge, &p.totp, cred).await
        }
        "touch" => {
            let p: TokenOnly = params(raw)?;
            clerks.authenticate(&p.token, cred).await?;
            Ok(json!({ "active": true }))
        }
        "session_info" => {
            let p: TokenOnly = params(raw)?;
            clerks.session_info(&p.token).await
        }
        "logout" => {
            let p: TokenOnly = params(raw)?;
            clerks.logout(&p.token, cred).await?;
            Ok(json!({ "logged_out": true }))
        }
        "elevate" => {
            let p: Elevate = params(raw)?;
            let purpose = p
                .purpose
                .map(ShortCode::new)
                .transpose()
                .map_err(|e| ApiError::new(ErrorCode::BadParams, format!("purpose: {e}")))?;
            let request = ElevateRequest {
                token: &p.token,
                approver: &p.approver,
                approver_secret: Secret::new(p.approver_secret),
                approver_code: p.approver_totp.as_deref(),
                role: p.role,
                purpose,
            };
            clerks.elevate(request, cred).await
        }
        "clerk.enroll" => {
            let p: Enroll = params(raw)?;
            let request = Enrollment {
                clerk: p.clerk,
                role: p.role,
                secret: Secret::new(p.secret),
                honeypot: p.honeypot,
                allowed_hours: p.allowed_hours,
                totp: p.totp,
            };
            clerks.enroll(p.token.as_deref(), request, cred).await
        }
        "clerk.discard_unconfirmed" => {
            let p: ClerkOnly = params(raw)?;
            clerks.discard_unconfirmed(&p.clerk, cred).await
        }
        "clerk.remove" => {
            let p: ClerkTarget = params(raw)?;
            clerks.remove(&p.token, &p.clerk, cred).await
        }
        "clerk.disable" | "clerk.enable" => {
            let p: ClerkTarget = params(raw)?;
            clerks
                .set_enabled(&p.token, &p.clerk, method == "clerk.enable", cred)
                .await
        }
        "clerk.list" => {
            let p: TokenOnly = params(raw)?;
            clerks.list(&p.token, cred).await
        }
        "lockout.reset" => {
            let p: Reset = params(raw)?;
            clerks
                .reset_lockout(&p.token, p.clerk.as_deref(), cred)
                .await
        }
        "lockdown.set" | "lockdown.clear" => {
            let p: TokenOnly = params(raw)?;
            clerks
                .lockdown_local(&p.token, method == "lockdown.set", cred)
                .await
        }
        "totp.rotate" => {
            let p: ClerkTarget = params(raw)?;
            clerks.rotate_totp(&p.token, &p.clerk, cred).await
        }
        _ => Err(super::methods::unknown_method(method)),
    }
}
