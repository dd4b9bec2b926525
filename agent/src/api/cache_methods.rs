//! The `cache.*` methods of the local API: the transaction cache over the socket. Values travel
//! as standard base64 (RFC 4648, padded) in JSON. The cache's work is blocking (sled, fsync),
//! so each method runs it on the blocking pool.
//!
//! - `cache.put` `{id, value_b64, retention_secs?}` → `{expires_unix_ms}`
//! - `cache.get` `{id}` → `{value_b64, expires_unix_ms}`
//! - `cache.delete` `{id}` → `{deleted}`
//! - `cache.list` `{after?, limit?}` → `[{id, size, expires_unix_ms}]` (id order, at most
//!   `limit` (default and maximum 1000); page on with `after` = the last id)
//! - `cache.rotate_key` `{token?}` → `{key_version}`: admin only (see [`authorize_rotation`]).

use data_encoding::BASE64;
use posguard_proto::local_api::{ApiError, ErrorCode};
use serde::Deserialize;

use super::params::params;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::api::Peer;
use crate::cache::{Cache, CacheError, RecordId};

type MethodResult = Result<Value, ApiError>;

/// Most entries one `cache.list` returns.
pub const LIST_LIMIT: usize = 1000;

/// The `cache.*` methods.
pub(super) const METHODS: &[&str] = &[
    "cache.put",
    "cache.get",
    "cache.delete",
    "cache.list",
    "cache.rotate_key",
];

/// Whether `method` is one of these.
pub fn handles(method: &str) -> bool {
    METHODS.contains(&method)
}

/// Runs one `cache.*` request.
pub async fn dispatch(cache: &Cache, peer: &Peer, method: &str, params: Value) -> MethodResult {
    match method {
        "cache.put" => put(cache, peer, params).await,
        "cache.get" => get(cache, peer, params).await,
        "cache.delete" => delete(cache, peer, params).await,
        "cache.list" => list(cache, peer, params).await,
        "cache.rotate_key" => rotate_key(cache, peer, params).await,
        other => Err(super::methods::unknown_method(other)),
    }
}

fn record_id(id: String) -> Result<RecordId, ApiError> {
    RecordId::new(id).map_err(|e| ApiError::new(ErrorCode::BadParams, format!("id: {e}")))
}

/// The peer's error for a cache error; the detail of internal failures goes to the log.
fn api_error(e: CacheError) -> ApiError {
    let code = match &e {
        CacheError::BadId(_) | CacheError::BadRetention { .. } | CacheError::TooLarge { .. } => {
            ErrorCode::BadParams
        }
        CacheError::CardData => ErrorCode::CardData,
        CacheError::Full { .. } => ErrorCode::Full,
        CacheError::NotFound(_) => ErrorCode::NotFound,
        CacheError::Unreadable { id, .. } => {
            tracing::error!(error = %e, "cache: a stored record is unreadable");
            return ApiError::new(
                ErrorCode::Internal,
                format!("record {id:?} is unreadable (tampered or damaged); see the agent's log"),
            );
        }
        _ => {
            tracing::error!(error = %e, "cache request failed inside the agent");
            return ApiError::new(ErrorCode::Internal, "internal error; see the agent's log");
        }
    };
    ApiError::new(code, e.to_string())
}

/// Runs blocking cache work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(api_error),
        Err(e) => {
            tracing::error!(error = %e, "cache task failed");
            Err(ApiError::new(
                ErrorCode::Internal,
                "internal error; see the agent's log",
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutParams {
    id: String,
    value_b64: String,
    retention_secs: Option<u64>,
}

/// `cache.put`.
pub async fn put(cache: &Cache, peer: &Peer, raw: Value) -> MethodResult {
    let p: PutParams = params(raw)?;
    let id = record_id(p.id)?;
    let value =
        Zeroizing::new(BASE64.decode(p.value_b64.as_bytes()).map_err(|e| {
            ApiError::new(ErrorCode::BadParams, format!("value_b64: not base64: {e}"))
        })?);
    let (cache, cred) = (cache.clone(), peer.cred);
    let expires = blocking(move || cache.put_as(Some(cred), &id, &value, p.retention_secs)).await?;
    Ok(json!({ "expires_unix_ms": expires }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: String,
}

/// `cache.get`.
pub async fn get(cache: &Cache, _peer: &Peer, raw: Value) -> MethodResult {
    let id = record_id(params::<IdParams>(raw)?.id)?;
    let cache = cache.clone();
    let stored = blocking(move || cache.get(&id)).await?;
    // The base64 text is the value in another form: zeroized too, once serialized.
    let encoded = Zeroizing::new(BASE64.encode(&stored.value));
    Ok(json!({
        "value_b64": encoded.as_str(),
        "expires_unix_ms": stored.expires_unix_ms,
    }))
}

/// `cache.delete`.
pub async fn delete(cache: &Cache, _peer: &Peer, raw: Value) -> MethodResult {
    let id = record_id(params::<IdParams>(raw)?.id)?;
    let cache = cache.clone();
    let deleted = blocking(move || cache.delete(&id)).await?;
    Ok(json!({ "deleted": deleted }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// `cache.list`.
pub async fn list(cache: &Cache, _peer: &Peer, raw: Value) -> MethodResult {
    let p: ListParams = params(raw)?;
    let after = p.after.map(record_id).transpose()?;
    let limit = p.limit.unwrap_or(LIST_LIMIT).min(LIST_LIMIT);
    let cache = cache.clone();
    let entries = blocking(move || cache.list(after.as_ref(), limit)).await?;
    serde_json::to_value(entries).map_err(|e| {
        tracing::error!(error = %e, "cache.list: serializing");
        ApiError::new(ErrorCode::Internal, "internal error; see the agent's log")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateParams {
    /// The admin's session token (checked by [`authorize_rotation`]).
    token: Option<String>,
}

/// Who may rotate the data key: the local API's dispatcher has already checked that `token` is
/// a live session with the cache-administration permission (`api/methods.rs`); here only its
/// presence is checked again, so this function cannot be reached without one.
pub fn authorize_rotation(_peer: &Peer, token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "log in as an admin to rotate the data key",
        )),
    }
}

/// `cache.rotate_key`: a new key version now; records are re-encrypted in the background.
pub async fn rotate_key(cache: &Cache, peer: &Peer, raw: Value) -> MethodResult {
    let p: RotateParams = params(raw)?;
    authorize_rotation(peer, p.token.as_deref())?;
    let cache = cache.clone();
    let version = blocking(move || cache.rotate_key()).await?;
    Ok(json!({ "key_version": version }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use posguard_hal::SecureElementConfig;
    use posguard_proto::event::PeerCred;

    use super::*;
    use crate::cache::{CacheConfig, NoAudit};
    use crate::datakey::Keyring;

    #[tokio::test]
    async fn methods_round_trip_and_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let se =
            posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
        let keyring = Keyring::open(se, dir.path()).unwrap();
        let cache = Cache::open(
            &CacheConfig::at(dir.path().join("cache")),
            keyring,
            Arc::new(NoAudit),
        )
        .unwrap();
        let peer = Peer {
            cred: PeerCred {
                uid: 0,
                gid: 0,
                pid: 1,
            },
        };
        let call = |m: &'static str, p: Value| {
            let (cache, peer) = (cache.clone(), peer);
            async move { dispatch(&cache, &peer, m, p).await }
        };
        let put = call(
            "cache.put",
            json!({"id": "sale-1", "value_b64": BASE64.encode(b"hello"), "retention_secs": 60}),
        )
        .await
        .unwrap();
        let expires = put["expires_unix_ms"].as_u64().unwrap();
        let got = call("cache.get", json!({"id": "sale-1"})).await.unwrap();
        assert_eq!(got["value_b64"], BASE64.encode(b"hello"));
        assert_eq!(got["expires_unix_ms"], expires);
        let listed = call("cache.list", Value::Null).await.unwrap();
        assert_eq!(
            listed,
            json!([{"id": "sale-1", "size": 5, "expires_unix_ms": expires}])
        );
        let code = |r: MethodResult| r.unwrap_err().code;
        let card = BASE64.encode(br#"{"pan":"4111 1111 1111 1111"}"#);
        assert_eq!(
            code(call("cache.put", json!({"id": "x", "value_b64": card})).await),
            ErrorCode::CardData
        );
        assert_eq!(
            code(call("cache.put", json!({"id": "x", "value_b64": "%%%"})).await),
            ErrorCode::BadParams
        );
        assert_eq!(
            code(call("cache.put", json!({"id": "a b", "value_b64": ""})).await),
            ErrorCode::BadParams
        );
        assert_eq!(
            code(call("cache.get", json!({"id": "nope"})).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(call("cache.get", json!({"id": "x", "extra": 1})).await),
            ErrorCode::BadParams
        );
        // The session itself is checked by the dispatcher (api/methods.rs); here only that one
        // is given.
        assert_eq!(
            code(call("cache.rotate_key", json!({})).await),
            ErrorCode::Unauthenticated
        );
        let rotated = call("cache.rotate_key", json!({"token": "checked-upstream"}))
            .await
            .unwrap();
        assert_eq!(rotated["key_version"], 2);
        assert_eq!(
            call("cache.delete", json!({"id": "sale-1"})).await.unwrap(),
            json!({"deleted": true})
        );
        assert!(handles("cache.put") && !handles("cache.putt"));
    }
}
