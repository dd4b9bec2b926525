//! The methods of the local API. Each takes typed parameters (a wrong shape is `bad_params`)
//! and answers with a JSON result or a typed error; every security decision is journaled with
//! the peer's uid and pid.

use posguard_proto::event::{
    Actor, Event, EventKind, MinorUnits, Money, PeerCred, PosAction, PosEvent,
};
use posguard_proto::local_api::{ApiError, ErrorCode, Request, Response};
use posguard_proto::text::{Currency, SafeText, ShortCode, TextError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{NoParams, params};
use super::{Ctx, Peer, auth_methods, cache_methods};
use crate::journal::JournalError;

type MethodResult = Result<Value, ApiError>;

/// `unknown_method`, naming the method back only when it is a plain short word: a 10,000-byte
/// name or a card number typed into the wrong field is not echoed.
pub(super) fn unknown_method(method: &str) -> ApiError {
    let message = if posguard_proto::local_api::echoable(method) {
        format!("no method `{method}`; docs/local-api.md lists the methods")
    } else {
        "no such method; docs/local-api.md lists the methods".to_owned()
    };
    ApiError::new(ErrorCode::UnknownMethod, message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "local API request failed inside the agent");
    ApiError::new(ErrorCode::Internal, "internal error; see the agent's log")
}

/// A failed append: storage failures get their own code, so that the POS application can tell
/// "not recorded, the journal is down" from a bug.
fn journal_error(e: JournalError) -> ApiError {
    match e {
        JournalError::Closed | JournalError::Db { .. } | JournalError::Io { .. } => {
            tracing::error!(error = %e, "audit event refused: the journal cannot store events");
            ApiError::new(
                ErrorCode::JournalUnavailable,
                "the audit journal cannot store events (disk full or failed); nothing was \
                 recorded; see the agent's status",
            )
        }
        other => internal(other),
    }
}

/// Runs one request.
pub(super) async fn dispatch(ctx: &Ctx, peer: &Peer, request: Request) -> Response {
    let id = Some(request.id.clone());
    let result = match request.method.as_str() {
        "status" => match params::<NoParams>(request.params) {
            Ok(NoParams {}) => status(ctx).await,
            Err(e) => Err(e),
        },
        "audit.record" => audit_record(ctx, peer, request.params).await,
        method if auth_methods::handles(method) => {
            auth_methods::dispatch(ctx, peer, method, request.params).await
        }
        "cache.rotate_key" => rotate_key(ctx, peer, request.params).await,
        method if cache_methods::handles(method) => {
            cache_methods::dispatch(&ctx.cache, peer, method, request.params).await
        }
        other => Err(unknown_method(other)),
    };
    match result {
        Ok(value) => Response::ok(id, value),
        Err(error) => Response::err(id, error),
    }
}

/// `ok` only when nothing is wrong and nothing is unproven; otherwise the most serious first.
fn condition(journal: &crate::journal::JournalStatus) -> String {
    let tail = &journal.start_tail;
    match (&journal.failure, &journal.finding) {
        (Some(f), _) => format!("journal stopped: {f}"),
        (None, Some(f)) => format!("tamper recovered: {f}"),
        (None, None) if !journal.store_findings.is_empty() => {
            format!("tamper detected: {}", journal.store_findings.join("; "))
        }
        (None, None) if tail.unanchored > 0 => format!(
            "unanchored tail at start: the agent last stopped without a final checkpoint; records {}..={} were not TPM-anchored, so a cut there cannot be seen locally (the collector's acknowledgement covers shipped records)",
            tail.anchored_seq.saturating_add(1),
            tail.head_seq
        ),
        (None, None) if !tail.clean_stop => format!(
            "unanchored tail at start: the agent last stopped without a final checkpoint; the journal ends at the checkpoint at seq {}, but records that followed it, if any, could have been cut unseen (the collector's acknowledgement covers shipped records)",
            tail.anchored_seq
        ),
        (None, None) => "ok".to_owned(),
    }
}

async fn status(ctx: &Ctx) -> MethodResult {
    let journal = ctx.journal.status().await.map_err(internal)?;
    let mut condition = condition(&journal);
    for moved in &ctx.recovered {
        let lost = match moved.store {
            "clerks" => {
                "every clerk, lockout and the lockdown flag were lost: enrol the first admin again (docs/runbook.md)"
            }
            "datakey" => {
                "a new data key was made: admins' TOTP seeds and cached transactions sealed with the old one cannot be opened; re-enrol admins' TOTP (docs/runbook.md)"
            }
            "cache_key" => {
                "cached transactions sealed with that key version cannot be opened (docs/runbook.md)"
            }
            _ => "its cached transactions were not restored (docs/runbook.md)",
        };
        let note = format!(
            "{} database unreadable ({}), moved to {}; {lost}",
            moved.store,
            moved.reason,
            moved.moved_to.display()
        );
        condition = if condition == "ok" {
            format!("tamper recovered: {note}")
        } else {
            format!("{condition}; {note}")
        };
    }
    Ok(json!({
        "device_id": ctx.device_id.as_str(),
        "agent_version": env!("CARGO_PKG_VERSION"),
        "secure_element": {
            "backend": format!("{:?}", ctx.backend.kind).to_lowercase(),
            "location": ctx.backend.location,
            "description": ctx.backend.description,
        },
        "uptime_secs": ctx.started.elapsed().as_secs(),
        "pid": std::process::id(),
        "condition": condition,
        "lockdown": ctx.clerks.lockdown(),
        "journal": journal,
        "uplink": ctx.uplink.as_ref().map(|u| u.to_json()),
        "stores_recovered": ctx.recovered,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditRecordParams {
    /// `refund`, `drawer_open`, `price_override`, `void`, `no_sale`, or another short code.
    action: String,
    amount_minor: Option<u64>,
    currency: Option<String>,
    reference: Option<String>,
    /// The session of the clerk who did it; the event's actor.
    token: Option<String>,
}

fn text_error(field: &str, e: TextError) -> ApiError {
    match e {
        TextError::DigitRun => ApiError::new(
            ErrorCode::CardData,
            format!("{field} holds a long run of digits; card numbers are never recorded"),
        ),
        other => ApiError::new(ErrorCode::BadParams, format!("{field}: {other}")),
    }
}

fn pos_event(p: AuditRecordParams) -> Result<PosEvent, ApiError> {
    let action = match p.action.as_str() {
        "refund" => PosAction::Refund,
        "drawer_open" => PosAction::DrawerOpen,
        "price_override" => PosAction::PriceOverride,
        "void" => PosAction::Void,
        "no_sale" => PosAction::NoSale,
        other => PosAction::Other(ShortCode::new(other).map_err(|e| text_error("action", e))?),
    };
    let amount = match (p.amount_minor, p.currency) {
        (None, None) => None,
        (Some(minor), Some(currency)) => Some(Money {
            minor: MinorUnits::new(minor)
                .map_err(|e| ApiError::new(ErrorCode::BadParams, format!("amount_minor: {e}")))?,
            currency: Currency::new(currency).map_err(|e| text_error("currency", e))?,
        }),
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadParams,
                "amount_minor and currency go together",
            ));
        }
    };
    let reference = p
        .reference
        .map(|r| SafeText::new(r).map_err(|e| text_error("reference", e)))
        .transpose()?;
    Ok(PosEvent {
        action,
        amount,
        reference,
    })
}

async fn audit_record(ctx: &Ctx, peer: &Peer, raw: Value) -> MethodResult {
    let p: AuditRecordParams = params(raw)?;
    let actor = match &p.token {
        Some(token) => Actor::Clerk(ctx.clerks.authenticate(token, peer_cred(peer)).await?.clerk),
        None => Actor::System,
    };
    let event = Event::new(
        ctx.clock.stamp(),
        actor,
        Some(peer_cred(peer)),
        EventKind::Pos(pos_event(p)?),
    );
    let seq = ctx.journal.append(event).await.map_err(journal_error)?;
    Ok(json!({ "seq": seq }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKeyParams {
    token: Option<String>,
}

/// `cache.rotate_key` needs an Admin or SuperAdmin session (cache administration).
async fn rotate_key(ctx: &Ctx, peer: &Peer, raw: Value) -> MethodResult {
    // The shape first, so that a misspelt field is `bad_params`, not `unauthenticated`.
    let p: RotateKeyParams = params(raw.clone())?;
    let token = p.token.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "log in as an admin to rotate the data key",
        )
    })?;
    ctx.clerks
        .authorize(token, peer_cred(peer), crate::auth::Permission::CacheAdmin)
        .await?;
    cache_methods::dispatch(&ctx.cache, peer, "cache.rotate_key", raw).await
}

fn peer_cred(peer: &Peer) -> PeerCred {
    peer.cred
}
