//! Fleet gauges for a dashboard: devices by state, shipping lag, certificates near expiry,
//! pending commands. Computed by a few SQL aggregates over the store on a read-only connection
//! of its own (never on the store thread that ingest waits on), at most once per [`CACHE_FOR`]
//! however often Prometheus scrapes, and never one series per device: the cost is bounded by
//! the fleet's size, the exposition's by a constant.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

use super::text::Text;
use crate::clock::WallClock;

/// How long one computation answers scrapes.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

const DAY_S: u64 = 86_400;

/// One computation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// Devices known.
    pub devices: u64,
    /// Devices not heard from for longer than `silent_after_s`.
    pub silent: u64,
    /// Records the most lagging device holds and the collector has not stored (per its last
    /// status: journal head − highest stored).
    pub lag_max: u64,
    /// The same, summed over the fleet.
    pub lag_sum: u64,
    /// Device certificates already expired.
    pub certs_expired: u64,
    /// Device certificates valid now and expiring within 7 days.
    pub certs_within_7d: u64,
    /// … within 30 days (includes the 7-day ones).
    pub certs_within_30d: u64,
    /// Signed commands queued and not yet received by their device.
    pub pending_commands: u64,
}

/// The gauges' source: the store file, read on demand.
#[derive(Debug)]
pub struct Fleet {
    path: PathBuf,
    silent_after_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    conn: Option<Connection>,
    last: Option<(Instant, FleetSnapshot)>,
    errors: u64,
}

impl Fleet {
    /// Gauges of the store at `path`; a device is silent after `silent_after`.
    pub fn new(path: &Path, silent_after: Duration) -> Self {
        Self {
            path: path.to_owned(),
            silent_after_ms: u64::try_from(silent_after.as_millis()).unwrap_or(u64::MAX),
            state: Mutex::new(State::default()),
        }
    }

    /// The gauges as of at most [`CACHE_FOR`] ago, and how many computations failed so far. A
    /// failed one (store busy or damaged) answers with the last good values, if any.
    pub fn snapshot(&self, clock: &dyn WallClock) -> (Option<FleetSnapshot>, u64) {
        // A poisoned state is still a usable cache.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, snap)) = st.last
            && at.elapsed() < CACHE_FOR
        {
            return (Some(snap), st.errors);
        }
        match self.compute(&mut st, clock.now_ms()) {
            Ok(snap) => {
                st.last = Some((Instant::now(), snap));
                (Some(snap), st.errors)
            }
            Err(e) => {
                st.errors = st.errors.saturating_add(1);
                // Opened again next time (the file may have been restored meanwhile).
                st.conn = None;
                tracing::warn!(error = %e, store = %self.path.display(), "fleet metrics: cannot read the store");
                (st.last.map(|(_, s)| s), st.errors)
            }
        }
    }

    fn compute(&self, st: &mut State, now_ms: u64) -> rusqlite::Result<FleetSnapshot> {
        if st.conn.is_none() {
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(1))?;
            st.conn = Some(conn);
        }
        let Some(conn) = st.conn.as_ref() else {
            return Err(rusqlite::Error::InvalidQuery);
        };
        let now_s = now_ms / 1000;
        let silent_before = now_ms.saturating_sub(self.silent_after_ms);
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut snap = conn.query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(last_seen_ms < ?1), 0),
                    COALESCE(MAX(MAX(journal_head - highest_stored, 0)), 0),
                    COALESCE(SUM(MAX(journal_head - highest_stored, 0)), 0),
                    COALESCE(SUM(cert_not_after_unix > 0 AND cert_not_after_unix <= ?2), 0),
                    COALESCE(SUM(cert_not_after_unix > ?2 AND cert_not_after_unix <= ?3), 0),
                    COALESCE(SUM(cert_not_after_unix > ?2 AND cert_not_after_unix <= ?4), 0)
             FROM devices",
            params![
                i(silent_before),
                i(now_s),
                i(now_s.saturating_add(7 * DAY_S)),
                i(now_s.saturating_add(30 * DAY_S))
            ],
            |r| {
                Ok(FleetSnapshot {
                    devices: r.get(0)?,
                    silent: r.get(1)?,
                    lag_max: r.get(2)?,
                    lag_sum: r.get(3)?,
                    certs_expired: r.get(4)?,
                    certs_within_7d: r.get(5)?,
                    certs_within_30d: r.get(6)?,
                    pending_commands: 0,
                })
            },
        )?;
        snap.pending_commands = conn.query_row(
            "SELECT COUNT(*) FROM commands WHERE delivered_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(snap)
    }
}

/// Writes the fleet families (all present, at 0 before the first good computation).
pub fn render(t: &mut Text, snap: Option<FleetSnapshot>, errors: u64) {
    let s = snap.unwrap_or_default();
    t.family(
        "posguard_collector_devices",
        "gauge",
        "Devices known to the collector, by state (silent: not heard from for longer than silent_after_s).",
    );
    t.sample(
        "posguard_collector_devices",
        &[("state", "reporting")],
        s.devices.saturating_sub(s.silent),
    );
    t.sample(
        "posguard_collector_devices",
        &[("state", "silent")],
        s.silent,
    );
    t.single(
        "posguard_collector_silent_devices",
        "gauge",
        "Devices not heard from for longer than silent_after_s.",
        s.silent,
    );
    t.single(
        "posguard_collector_shipping_lag_records_max",
        "gauge",
        "Records the most lagging device holds that the collector has not stored (journal head minus highest stored, as of its last status).",
        s.lag_max,
    );
    t.single(
        "posguard_collector_unshipped_records",
        "gauge",
        "Records held by devices and not yet stored by the collector, summed over the fleet.",
        s.lag_sum,
    );
    t.family(
        "posguard_collector_device_certs_expiring",
        "gauge",
        "Device certificates (as last presented) valid now and expiring within the window.",
    );
    for (w, n) in [("7d", s.certs_within_7d), ("30d", s.certs_within_30d)] {
        t.sample(
            "posguard_collector_device_certs_expiring",
            &[("within", w)],
            n,
        );
    }
    t.single(
        "posguard_collector_device_certs_expired",
        "gauge",
        "Devices whose last presented certificate has expired.",
        s.certs_expired,
    );
    t.single(
        "posguard_collector_pending_commands",
        "gauge",
        "Signed commands queued and not yet received by their device.",
        s.pending_commands,
    );
    t.single(
        "posguard_collector_fleet_query_errors_total",
        "counter",
        "Computations of the fleet gauges that failed (the gauges then keep their last values).",
        errors,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{DeviceRow, Store as _};

    #[derive(Debug)]
    struct At(u64);
    impl WallClock for At {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    /// A sweep of devices over the boundaries: silent just before/after the limit, certificates
    /// expired, inside 7 and 30 days and beyond, lag positive and negative (a status older than
    /// what was stored since).
    #[test]
    fn gauges_count_each_boundary_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.db");
        let now_ms: u64 = 1_765_000_000_000;
        let now_s = now_ms / 1000;
        let mut store = SqliteStore::open(&db).unwrap();
        // (last seen ms ago, cert seconds from now (None: never presented), head, stored)
        let cases: [(u64, Option<i64>, u64, u64); 7] = [
            (0, Some(40 * 86_400), 10, 10),
            (59_999, Some(30 * 86_400), 17, 10),
            (60_000, Some(7 * 86_400), 10, 10),
            (60_001, Some(7 * 86_400 + 1), 3, 10),
            (3_600_000, Some(0), 110, 10),
            (0, Some(-1), 0, 0),
            (0, None, 0, 0),
        ];
        store
            .transaction(&mut |tx| {
                for (i, (ago, cert, head, stored)) in cases.iter().enumerate() {
                    let mut d = DeviceRow::new(&format!("t{i}"), now_ms - ago);
                    d.cert_not_after_unix =
                        cert.map_or(0, |c| u64::try_from(now_s as i64 + c).unwrap());
                    d.journal_head = *head;
                    d.highest_stored = *stored;
                    tx.put_device(&d)?;
                }
                Ok(())
            })
            .unwrap();
        let fleet = Fleet::new(&db, Duration::from_secs(60));
        let (snap, errors) = fleet.snapshot(&At(now_ms));
        assert_eq!(errors, 0);
        assert_eq!(
            snap.unwrap(),
            FleetSnapshot {
                devices: 7,
                silent: 2,
                lag_max: 100,
                lag_sum: 107,
                certs_expired: 2,
                certs_within_7d: 1,
                certs_within_30d: 3,
                pending_commands: 0,
            }
        );
        // A missing store is an error counted, not a panic; the gauges read 0 until it exists.
        let gone = Fleet::new(&dir.path().join("missing.db"), Duration::from_secs(60));
        assert_eq!(gone.snapshot(&At(now_ms)), (None, 1));
    }
}
