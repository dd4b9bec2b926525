//! The local API: a Unix socket in the runtime directory speaking newline-delimited JSON
//! (`posguard_proto::local_api`).
//!
//! - `listener`: binding the socket (stale socket removed, group-restricted mode) and the
//!   accept loop with its connection cap.
//! - `conn`: one connection: peer credentials checked against the allow-list, bounded lines,
//!   idle timeout, one response per request.
//! - `methods`: dispatch, `status` and `audit.record`.
//! - `auth_methods`: logins, sessions and clerk administration.
//! - `cache_methods`: the encrypted transaction cache.
//! - `params`: decoding a method's parameters (objects only, unknown fields refused).
//! - [`client`]: a small Rust client, used by `posguardctl`.

mod auth_methods;
mod cache_methods;
pub mod client;
mod conn;
mod listener;
mod methods;
mod params;

use std::sync::Arc;
use std::time::Instant;

use posguard_hal::BackendInfo;
use posguard_proto::event::PeerCred;
use posguard_proto::text::DeviceId;

use crate::clerks::Clerks;
use crate::clock::Clock;
use crate::config::ApiConfig;
use crate::journal::Journal;
pub use listener::{bind, serve};

/// Every method of the local API (docs/local-api.md), for documentation checks and tests.
pub fn methods() -> Vec<&'static str> {
    let mut all = vec!["status", "audit.record"];
    all.extend_from_slice(auth_methods::METHODS);
    all.extend_from_slice(cache_methods::METHODS);
    all
}

/// What request handlers share.
#[derive(Debug)]
pub struct AgentContext {
    /// This terminal.
    pub device_id: DeviceId,
    /// The audit journal.
    pub journal: Journal,
    /// Where the keys live.
    pub backend: BackendInfo,
    /// Event stamps.
    pub clock: Clock,
    /// When the agent started.
    pub started: Instant,
    /// API limits.
    pub api: ApiConfig,
    /// Clerk logins and sessions.
    pub clerks: Arc<Clerks>,
    /// The transaction cache.
    pub cache: crate::cache::Cache,
    /// Uplink counters, when an uplink is configured.
    pub uplink: Option<Arc<crate::uplink::UplinkStats>>,
    /// Stores (clerks, cache) found unreadable at start, moved aside and started afresh.
    pub recovered: Vec<crate::storeguard::MovedAside>,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Credentials from SO_PEERCRED.
    pub cred: PeerCred,
}

/// Shared context handle.
pub type Ctx = Arc<AgentContext>;
