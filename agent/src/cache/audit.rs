//! Where the cache's audit events go. The cache knows only this trait; the daemon plugs in the
//! journal, tests a recorder. Events carry counts and reasons only: never a value, never a
//! card number.

use posguard_proto::event::{Actor, Event, EventKind, PeerCred};

use crate::clock::Clock;
use crate::journal::Journal;

/// Receives the cache's audit events. Called from blocking threads (never on the reactor).
pub trait CacheAudit: Send + Sync + std::fmt::Debug {
    /// Records `kind`, asked for by `peer` where known. Returns once durable, or why not.
    fn record(&self, kind: EventKind, peer: Option<PeerCred>) -> Result<(), String>;
}

/// The audit journal as the cache's audit sink.
#[derive(Debug, Clone)]
pub struct JournalAudit {
    journal: Journal,
    clock: Clock,
}

impl JournalAudit {
    /// Events go to `journal`, stamped by `clock`.
    pub fn new(journal: Journal, clock: Clock) -> Self {
        JournalAudit { journal, clock }
    }
}

impl CacheAudit for JournalAudit {
    fn record(&self, kind: EventKind, peer: Option<PeerCred>) -> Result<(), String> {
        let event = Event::new(self.clock.stamp(), Actor::System, peer, kind);
        self.journal
            .append_blocking(event)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Drops every event: for benchmarks and tools that have no journal.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl CacheAudit for NoAudit {
    fn record(&self, _kind: EventKind, _peer: Option<PeerCred>) -> Result<(), String> {
        Ok(())
    }
}
