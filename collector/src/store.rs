//! Storage behind one trait, so that a fleet that outgrows one machine can move to a database
//! server. [`Store`] is the whole store; [`StoreTx`] is what one ingest does inside a single
//! transaction (committed before the agent gets its answer). [`sqlite::SqliteStore`] is the
//! default; [`handle::StoreHandle`] is the one thread that owns it, fed by async callers.
//! [`enrollment`] holds the rows of enrollment tokens and the enrollment history; [`lifecycle`]
//! the rows of a device's life (active, decommissioned, replaced generations).

pub mod enrollment;
pub mod handle;
pub mod lifecycle;
pub mod sqlite;

pub use enrollment::{EnrollKind, EnrollmentRow, TokenRow};
pub use handle::StoreHandle;
pub use lifecycle::{LifeState, LifecycleRow};

use posguard_proto::uplink::SignedCommand;
use posguard_proto::verify::ChainState;
use serde::Serialize;

use crate::alerts::triage::{ActionRow, AlertFilter, Triage, TriageRefusal};
use crate::alerts::{AlertKind, NewAlert, Raised};

/// The setting that holds when maintenance mode was last seen on (Unix ms): silence is
/// measured from then, since terminals were told to stay away until it ended.
pub const MAINTENANCE_SEEN_MS: &str = "maintenance_seen_ms";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused an operation.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back (a damaged or foreign database).
    #[error("corrupt stored value: {0}")]
    Corrupt(&'static str),
    /// The thread that owns the store has stopped.
    #[error("store thread stopped")]
    Stopped,
    /// One part of a group transaction failed and was rolled back alone.
    #[error("transaction part rolled back")]
    PartRolledBack,
    /// The group transaction a part belonged to did not commit.
    #[error("transaction not committed")]
    NotCommitted,
}

/// What the collector knows about a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    /// Device id (from its certificate).
    pub device_id: String,
    /// First contact (collector wall time, Unix ms).
    pub first_seen_ms: u64,
    /// Last contact.
    pub last_seen_ms: u64,
    /// The client certificate's notAfter (Unix seconds) at last contact.
    pub cert_not_after_unix: u64,
    /// Where the verifier stands (None before the first record).
    #[serde(skip)]
    pub chain_state: Option<ChainState>,
    /// Highest seq stored.
    pub highest_stored: u64,
    /// Agent version from the last status.
    pub agent_version: Option<String>,
    /// The agent's journal head from the last status.
    pub journal_head: u64,
    /// The agent's shipped mark from the last status.
    pub journal_shipped: u64,
    /// The device clock at the last status (Unix ms).
    pub device_wall_ms: u64,
    /// Whether a silent alert was raised since the last contact.
    pub silent_alerted: bool,
    /// The notAfter an expiry alert was last raised for (0 for none).
    #[serde(skip)]
    pub expiry_alerted_for: u64,
    /// The device identity key (uncompressed P-256 point) of the last client certificate: what
    /// `restore` re-verifies the journal-key certificates against. None for a device last seen
    /// by a collector that did not store it.
    #[serde(skip)]
    pub dik: Option<Vec<u8>>,
}

impl DeviceRow {
    /// A device seen for the first time now.
    pub fn new(device_id: &str, now_ms: u64) -> Self {
        Self {
            device_id: device_id.to_owned(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            cert_not_after_unix: 0,
            chain_state: None,
            highest_stored: 0,
            agent_version: None,
            journal_head: 0,
            journal_shipped: 0,
            device_wall_ms: 0,
            silent_alerted: false,
            expiry_alerted_for: 0,
            dik: None,
        }
    }
}

/// A verified record, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow<'a> {
    /// Device id.
    pub device_id: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Record hash.
    pub hash: &'a [u8; 32],
    /// Event kind name.
    pub kind: &'static str,
    /// Severity name.
    pub severity: &'static str,
    /// Event wall time (device clock, Unix ms).
    pub wall_ms: u64,
    /// `clerk:<id>`, `system` or `collector`.
    pub actor: &'a str,
    /// The clerk the event concerns ([`crate::document::event_clerk`]), for `--clerk`.
    pub clerk: Option<&'a str>,
    /// The record's canonical bytes (the event is rendered from them when read).
    pub raw: &'a [u8],
}

/// A stored event as the query and export commands print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Device id.
    pub device_id: String,
    /// Sequence number.
    pub seq: u64,
    /// Record hash (hex).
    pub hash: String,
    /// Event kind name.
    pub kind: String,
    /// Severity name.
    pub severity: String,
    /// Event wall time (Unix ms).
    pub wall_ms: u64,
    /// Actor.
    pub actor: String,
    /// The clerk the event concerns, if any.
    pub clerk: Option<String>,
    /// The event as JSON, rendered from the stored record.
    pub event: serde_json::Value,
    /// When the collector stored it (Unix ms).
    pub received_ms: u64,
    /// Its place in the order the collector stored records (1, 2, …; never reused): what an
    /// export cursor counts.
    pub received_seq: u64,
}

/// A filter on stored events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this device.
    pub device_id: Option<String>,
    /// Event wall time at or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Event wall time before (Unix ms).
    pub until_ms: Option<u64>,
    /// Only this kind name.
    pub kind: Option<String>,
    /// Only these severity names (at least a minimum).
    pub severities: Option<Vec<String>>,
    /// Only events concerning this clerk (named by the event, or acting).
    pub clerk: Option<String>,
    /// Stored by the collector at or after (Unix ms).
    pub received_since_ms: Option<u64>,
    /// Stored by the collector before (Unix ms).
    pub received_until_ms: Option<u64>,
    /// Only records stored after this place in the received order (an export cursor); the
    /// output is then in received order instead of event time.
    pub after_received_seq: Option<u64>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    /// Alert id (increasing).
    pub id: i64,
    /// Device, if any.
    pub device_id: Option<String>,
    /// Kind name.
    pub kind: String,
    /// Severity name.
    pub severity: String,
    /// Detail (the latest raise's).
    pub detail: String,
    /// When it was first raised (Unix ms).
    pub at_ms: u64,
    /// `open`, `acknowledged` or `resolved` (alerts::triage::AlertState).
    pub state: String,
    /// How many times its cause was raised while it was open or acknowledged.
    pub count: u64,
    /// When its cause was last raised (Unix ms).
    pub last_ms: u64,
    /// Who made the last triage action.
    pub state_by: Option<String>,
    /// When (Unix ms).
    pub state_at_ms: Option<u64>,
    /// Why.
    pub state_note: Option<String>,
    /// When an acknowledgement lapses (Unix ms), if it does.
    pub ack_until_ms: Option<u64>,
}

/// The encoded checkpoints just below and just above a counter, where there are such.
pub type Around = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What one transaction can read and write.
pub trait StoreTx {
    /// Runs `f` inside a savepoint: if it fails, what it wrote is undone, its error returned,
    /// and the rest of the transaction stands.
    fn savepoint(&mut self, f: TxFn<'_>) -> Result<(), StoreError>;
    /// The device's row.
    fn device(&mut self, device_id: &str) -> Result<Option<DeviceRow>, StoreError>;
    /// Inserts or replaces the device's row.
    fn put_device(&mut self, row: &DeviceRow) -> Result<(), StoreError>;
    /// The hash stored at (device, seq).
    fn record_hash(&mut self, device_id: &str, seq: u64) -> Result<Option<[u8; 32]>, StoreError>;
    /// The kind of the record stored at (device, seq).
    fn record_kind(&mut self, device_id: &str, seq: u64) -> Result<Option<String>, StoreError>;
    /// Stores a record (the caller has checked that (device, seq) is free).
    fn put_record(&mut self, row: &RecordRow<'_>, received_ms: u64) -> Result<(), StoreError>;
    /// Keeps a forked record aside; false if this exact fork was already kept.
    fn put_fork(
        &mut self,
        device_id: &str,
        seq: u64,
        hash: &[u8; 32],
        raw: &[u8],
        at_ms: u64,
    ) -> Result<bool, StoreError>;
    /// The device's journal-key certificates whose first seq is at least `min_first_seq`,
    /// plus the latest one below it (the key that signs from there on).
    fn certs(&mut self, device_id: &str, from_seq: u64) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Stores a certificate; false if it was already stored.
    fn put_cert(
        &mut self,
        device_id: &str,
        first_seq: u64,
        raw: &[u8],
        at_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Removes a certificate stored earlier in the same transaction (a batch refused as a
    /// whole keeps nothing).
    fn delete_cert(&mut self, device_id: &str, raw: &[u8]) -> Result<(), StoreError>;
    /// The stored checkpoint with the highest counter.
    fn last_checkpoint(&mut self, device_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored checkpoints next to `nv_counter`: the one with the highest counter below it and
    /// the one with the lowest counter above it.
    fn checkpoints_around(
        &mut self,
        device_id: &str,
        nv_counter: u64,
    ) -> Result<Around, StoreError>;
    /// Whether this exact checkpoint is stored.
    fn has_checkpoint(&mut self, device_id: &str, raw: &[u8]) -> Result<bool, StoreError>;
    /// Stores a verified checkpoint.
    fn put_checkpoint(
        &mut self,
        device_id: &str,
        seq: u64,
        nv_counter: u64,
        raw: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// Stores an alert, or adds to the count of the open or acknowledged alert of the same
    /// device, kind and cause ([`crate::alerts::grouped_by_detail`]).
    fn raise_alert(&mut self, alert: &NewAlert) -> Result<Raised, StoreError>;
    /// The role of `clerk`'s latest enrollment on the device stored below `before_seq` (`None`
    /// if the collector holds none).
    fn clerk_role(
        &mut self,
        device_id: &str,
        clerk: &str,
        before_seq: u64,
    ) -> Result<Option<posguard_proto::event::Role>, StoreError>;
    /// [`Self::raise_alert`], for callers that need not know whether the alert is new.
    fn put_alert(&mut self, alert: &NewAlert) -> Result<(), StoreError> {
        self.raise_alert(alert).map(|_| ())
    }
    /// Whether an alert of `kind` with exactly `detail` is stored for the device (the same
    /// cause: a refused batch sent again must not raise a second alert).
    fn has_alert(
        &mut self,
        device_id: &str,
        kind: AlertKind,
        detail: &str,
    ) -> Result<bool, StoreError>;
    /// Events of `kind` (optionally of one device) with wall time at or after `since_ms`.
    fn count_events(
        &mut self,
        kind: &str,
        device_id: Option<&str>,
        since_ms: u64,
    ) -> Result<u64, StoreError>;
    /// Commands queued for the device and not yet seen received.
    fn pending_commands(&mut self, device_id: &str) -> Result<Vec<SignedCommand>, StoreError>;
    /// Marks a command received by the device.
    fn mark_command_delivered(
        &mut self,
        device_id: &str,
        command_id: u64,
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// Devices last seen before `before_ms` and not yet reported silent.
    fn silent_candidates(&mut self, before_ms: u64) -> Result<Vec<DeviceRow>, StoreError>;
    /// The enrollment token with this hash.
    fn enroll_token(&mut self, hash: &[u8; 32]) -> Result<Option<TokenRow>, StoreError>;
    /// Stores a new enrollment token.
    fn put_enroll_token(&mut self, row: &TokenRow) -> Result<(), StoreError>;
    /// Marks a token used; false if it was already used (or does not exist).
    fn mark_token_used(&mut self, hash: &[u8; 32], at_ms: u64) -> Result<bool, StoreError>;
    /// Appends to the enrollment history.
    fn put_enrollment(&mut self, row: &EnrollmentRow) -> Result<(), StoreError>;
    /// SHA-256 of the public key a used token certified, if recorded (enrollment retries).
    fn token_key(&mut self, hash: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError>;
    /// Records the key a token certified (same transaction as marking it used).
    fn put_token_key(
        &mut self,
        hash: &[u8; 32],
        key_sha256: &[u8; 32],
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// Whether a certificate of `device_id` was revoked at or after `since_ms`.
    fn revoked_since(&mut self, device_id: &str, since_ms: u64) -> Result<bool, StoreError>;
    /// Serials (hex) of every certificate issued to the device by enrollment or renewal.
    fn issued_serials(&mut self, device_id: &str) -> Result<Vec<String>, StoreError>;
    /// The device's lifecycle row (None: active, generation 1).
    fn lifecycle(&mut self, device_id: &str) -> Result<Option<LifecycleRow>, StoreError>;
    /// Inserts or replaces a lifecycle row.
    fn put_lifecycle(&mut self, row: &LifecycleRow) -> Result<(), StoreError>;
    /// Moves the device's chain, alerts and undelivered commands under `archived_id`.
    fn archive_device(&mut self, device_id: &str, archived_id: &str) -> Result<(), StoreError>;
}

/// A closure run inside one transaction; `Err` rolls back.
pub type TxFn<'a> = &'a mut dyn FnMut(&mut dyn StoreTx) -> Result<(), StoreError>;

/// The whole store.
pub trait Store: Send {
    /// Runs `f` in one transaction, committed durably if it returns `Ok`.
    fn transaction(&mut self, f: TxFn<'_>) -> Result<(), StoreError>;
    /// Whether maintenance mode is on.
    fn maintenance(&mut self) -> Result<bool, StoreError>;
    /// Switches maintenance mode.
    fn set_maintenance(&mut self, on: bool) -> Result<(), StoreError>;
    /// A value of the key-value settings (for example [`MAINTENANCE_SEEN_MS`]).
    fn setting(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value of the key-value settings.
    fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Stored events matching `q`, passed to `out`: oldest first by (wall time, device, seq), or
    /// in received order when `q.after_received_seq` is set.
    fn query(
        &mut self,
        q: &EventQuery,
        out: &mut dyn FnMut(StoredEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// The highest place in the received order (0 for an empty store).
    fn last_received_seq(&mut self) -> Result<u64, StoreError>;
    /// The record (device, seq) at a place in the received order.
    fn received_record(&mut self, received_seq: u64) -> Result<Option<(String, u64)>, StoreError>;
    /// Alerts, oldest first, optionally since a time and for one device.
    fn alerts(
        &mut self,
        since_ms: Option<u64>,
        device_id: Option<&str>,
    ) -> Result<Vec<AlertRow>, StoreError>;
    /// Alerts matching `filter`, oldest first, passed to `out` one at a time; acknowledgements
    /// lapsed by `now_ms` are first reopened (and the expiry recorded).
    fn alert_list(
        &mut self,
        filter: &AlertFilter,
        now_ms: u64,
        out: &mut dyn FnMut(AlertRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// One alert and its triage history, oldest first (lapsed acknowledgements reopened first).
    fn alert_show(
        &mut self,
        id: i64,
        now_ms: u64,
    ) -> Result<Option<(AlertRow, Vec<ActionRow>)>, StoreError>;
    /// Applies and records a triage action at `now_ms`; refused, with nothing changed, if no
    /// such alert exists or its state does not allow the action.
    fn alert_triage(
        &mut self,
        id: i64,
        triage: &Triage,
        now_ms: u64,
    ) -> Result<Result<AlertRow, TriageRefusal>, StoreError>;
    /// Every device.
    fn devices(&mut self) -> Result<Vec<DeviceRow>, StoreError>;
    /// Forked records kept aside: (device, seq, hash hex, received ms).
    fn forks(&mut self) -> Result<Vec<(String, u64, String, u64)>, StoreError>;
    /// The next free command id for a device.
    fn next_command_id(&mut self, device_id: &str) -> Result<u64, StoreError>;
    /// Queues a signed command for delivery in the device's next ack.
    fn queue_command(&mut self, cmd: &SignedCommand, at_ms: u64) -> Result<(), StoreError>;
    /// Every lifecycle row (devices without one are active, generation 1).
    fn lifecycles(&mut self) -> Result<Vec<LifecycleRow>, StoreError>;
    /// Every enrollment token (hashes only), oldest first.
    fn enroll_tokens(&mut self) -> Result<Vec<TokenRow>, StoreError>;
    /// The enrollment history, oldest first, optionally since a time and for one device.
    fn enrollments(
        &mut self,
        since_ms: Option<u64>,
        device_id: Option<&str>,
    ) -> Result<Vec<EnrollmentRow>, StoreError>;
}
