//! Investigation and export against a growing history: one device's window (`query --device D
//! --since T --until T+100s`) and an export resuming from a cursor, on stores where that device
//! has 10,000 to 1,000,000 records. What `query`/`export` run, through the library (SQLite
//! store, documents rendered), without the process start the CLI adds.
//!
//! For each size: the median of 30 runs of each query, and of the window query as stores ran it
//! before issue 17 (by the device's primary key over its whole history). The window
//! and the exported tail hold 100 records each whatever the size: now the time must
//! not grow with the history.
//!
//! Then the price at ingest: µs per stored record for the records table as it was before (two
//! indexes) and as it is now (the `clerk` and `received_seq` columns, the received-order lookup
//! and index, the `record_hours` upsert), 1,000 devices interleaved as ingest writes them, in
//! transactions of 10,000 rows, with the store's pragmas.
//!
//! Run: `./scripts/bench.sh query` (or `cargo bench -p posguard-collector --bench query`).
//! Knob: `POSGUARD_BENCH_SIZES` (comma-separated, default `10000,100000,1000000`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::time::Instant;

use posguard_collector::document::document;
use posguard_collector::store::sqlite::SqliteStore;
use posguard_collector::store::{EventQuery, RecordRow, Store as _};
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::event::{Actor, Event, EventKind, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, DeviceId};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

const T0: u64 = 1_765_000_000_000;
const WINDOW: u64 = 100;

/// One real record's bytes (every row reuses them: rendering decodes them as for any row).
fn record() -> Vec<u8> {
    let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
    let id = DeviceId::new("till-0001").unwrap();
    let event = Event::new(
        Stamp {
            wall_ms: T0,
            mono_ns: 1,
            boot_id: [1; 16],
        },
        Actor::System,
        None,
        EventKind::LoggedOut {
            clerk: ClerkId::new("anna").unwrap(),
        },
    );
    Record::build(
        &ChainHead::genesis(&id),
        journal_key_id(&public),
        &event,
        |m| key.sign(m).as_ref().try_into().unwrap(),
    )
    .unwrap()
    .as_bytes()
    .to_vec()
}

/// A store where `till-0001` has `n` records one second apart (and another device one in 100).
fn fill(path: &Path, n: u64) {
    let raw = record();
    let mut store = SqliteStore::open(path).unwrap();
    let hash = [0u8; 32];
    let mut seq = 0;
    while seq < n {
        store
            .transaction(&mut |tx| {
                for _ in 0..10_000.min(n - seq) {
                    seq += 1;
                    for device in ["till-0001", "till-0002"] {
                        if device == "till-0002" && seq % 100 != 0 {
                            continue;
                        }
                        let row = RecordRow {
                            device_id: device,
                            seq,
                            hash: &hash,
                            kind: "logged_out",
                            severity: "info",
                            wall_ms: T0 + seq * 1_000,
                            actor: "system",
                            clerk: Some("anna"),
                            raw: &raw,
                        };
                        tx.put_record(&row, T0 + seq * 1_000 + 5)?;
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}

/// Median milliseconds of 30 runs, and the rows one run returned.
fn median_ms(store: &mut SqliteStore, q: &EventQuery) -> (f64, usize) {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..30 {
        let started = Instant::now();
        rows = 0;
        store
            .query(q, &mut |e| {
                std::hint::black_box(document(&e).to_string());
                rows += 1;
                Ok(())
            })
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1e3, rows)
}

/// The device window as stores ran it before (no seq range: the primary key over the device's
/// whole history), rows rendered the same way: median ms of 30 runs, and the rows.
fn before_window(path: &Path, mid: u64) -> (f64, usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT device_id, seq, raw FROM records
             WHERE device_id = 'till-0001' AND wall_ms >= ?1 AND wall_ms < ?2
             ORDER BY wall_ms, device_id, seq",
        )
        .unwrap();
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..30 {
        let started = Instant::now();
        rows = 0;
        let mut q = stmt
            .query(rusqlite::params![mid, mid + WINDOW * 1_000])
            .unwrap();
        while let Some(r) = q.next().unwrap() {
            let raw: Vec<u8> = r.get(2).unwrap();
            let event = Record::from_bytes(&raw).unwrap().event().unwrap();
            std::hint::black_box(serde_json::to_string(&event).unwrap());
            rows += 1;
        }
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1e3, rows)
}

/// Median µs per row of inserting `devices` × `per_device` rows (device-interleaved, 10,000 per
/// transaction), with the records table of before (`new` false) or of now.
fn insert_us(new: bool, devices: u64, per_device: u64) -> f64 {
    insert_variant(if new { "new" } else { "old" }, devices, per_device)
}

/// `old`, `new`, or the old table plus one part: `+time_index` (a (device, time) index, the
/// alternative to `record_hours`), `+received`.
fn insert_variant(variant: &str, devices: u64, per_device: u64) -> f64 {
    let new = variant == "new";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.db");
    let conn = if new {
        drop(SqliteStore::open(&path).unwrap());
        rusqlite::Connection::open(&path).unwrap()
    } else {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE records (
                 device_id TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
                 kind TEXT NOT NULL, severity TEXT NOT NULL, wall_ms INTEGER NOT NULL,
                 actor TEXT NOT NULL, raw BLOB NOT NULL, received_ms INTEGER NOT NULL,
                 PRIMARY KEY (device_id, seq));
             CREATE INDEX records_by_time ON records (wall_ms);
             CREATE INDEX records_by_kind ON records (kind, wall_ms);",
        )
        .unwrap();
        if variant == "+time_index" || variant == "old+both" {
            c.execute_batch("CREATE INDEX t ON records (device_id, wall_ms, seq)")
                .unwrap();
        }
        if variant == "+received" {
            c.execute_batch(
                "ALTER TABLE records ADD COLUMN received_seq INTEGER;
                 CREATE UNIQUE INDEX r ON records (received_seq);",
            )
            .unwrap();
        }
        c
    };
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "cache_size", -65_536).unwrap();
    conn.pragma_update(None, "temp_store", "MEMORY").unwrap();
    let sql = if variant == "+received" {
        "INSERT INTO records (device_id, seq, hash, kind, severity, wall_ms, actor, raw,
                              received_ms, received_seq)
         VALUES (?1, ?2, ?3, 'logged_out', 'info', ?4, 'system', ?5, ?4, (
             SELECT COALESCE(MAX(received_seq), 0) + 1 FROM records))"
    } else if new {
        "INSERT INTO records (device_id, seq, hash, kind, severity, wall_ms, actor, raw,
                              received_ms, clerk, received_seq)
         VALUES (?1, ?2, ?3, 'logged_out', 'info', ?4, 'system', ?5, ?4, 'anna', (
             SELECT COALESCE(MAX(received_seq), 0) + 1 FROM records))"
    } else {
        "INSERT INTO records (device_id, seq, hash, kind, severity, wall_ms, actor, raw,
                              received_ms)
         VALUES (?1, ?2, ?3, 'logged_out', 'info', ?4, 'system', ?5, ?4)"
    };
    let raw = record();
    let ids: Vec<String> = (0..devices).map(|d| format!("till-{d:04}")).collect();
    let rows: Vec<(usize, u64)> = (1..=per_device)
        .flat_map(|seq| (0..ids.len()).map(move |d| (d, seq)))
        .collect();
    let mut times = Vec::new();
    for chunk in rows.chunks(10_000) {
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            // What `put_record` adds now: the record's (device, hour) seq range.
            let mut mark = conn
                .prepare_cached(
                    "INSERT INTO record_hours (device_id, hour, min_seq, max_seq)
                     VALUES (?1, ?2 / 3600000, ?3, ?3)
                     ON CONFLICT (device_id, hour) DO UPDATE SET
                         min_seq = MIN(min_seq, excluded.min_seq),
                         max_seq = MAX(max_seq, excluded.max_seq)",
                )
                .ok()
                .filter(|_| new);
            for (d, seq) in chunk {
                let hash = [(*seq % 251) as u8; 32];
                stmt.execute(rusqlite::params![
                    ids[*d],
                    seq,
                    &hash[..],
                    T0 + seq * 1_000,
                    raw
                ])
                .unwrap();
                if let Some(m) = mark.as_mut() {
                    m.execute(rusqlite::params![ids[*d], T0 + seq * 1_000, seq])
                        .unwrap();
                }
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e6 / chunk.len() as f64);
    }
    // The second half: a store past its first pages.
    let mut tail = times.split_off(times.len() / 2);
    tail.sort_by(f64::total_cmp);
    tail[tail.len() / 2]
}

fn main() {
    let sizes: Vec<u64> = std::env::var("POSGUARD_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    println!(
        "device history | window of 100: indexed / index dropped | export of the 100 after a cursor | fleet-wide window (no --device)"
    );
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let started = Instant::now();
        fill(&path, n);
        let fill_s = started.elapsed().as_secs_f64();
        let mut store = SqliteStore::open(&path).unwrap();
        let mid = T0 + (n / 2) * 1_000;
        let window = EventQuery {
            device_id: Some("till-0001".into()),
            since_ms: Some(mid),
            until_ms: Some(mid + WINDOW * 1_000),
            ..EventQuery::default()
        };
        let (indexed, rows) = median_ms(&mut store, &window);
        assert_eq!(rows, WINDOW as usize);
        // The same window fleet-wide (no --device), through the event-time index.
        let fleet = EventQuery {
            device_id: None,
            ..window.clone()
        };
        let (fleet_ms, rows) = median_ms(&mut store, &fleet);
        assert!(rows >= WINDOW as usize);
        let tail = EventQuery {
            after_received_seq: Some(store.last_received_seq().unwrap() - WINDOW),
            ..EventQuery::default()
        };
        let (export, rows) = median_ms(&mut store, &tail);
        assert_eq!(rows, WINDOW as usize);
        let (plain, rows) = before_window(&path, mid);
        assert_eq!(rows, WINDOW as usize);
        println!(
            "{n:>9} | {indexed:.2} ms / {plain:.2} ms | {export:.2} ms | {fleet_ms:.2} ms   (store filled in {fill_s:.1} s)"
        );
    }
    let per_device = std::env::var("POSGUARD_BENCH_PER_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    // POSGUARD_BENCH_PARTS=old,+time_index,+received,new: each variant five times,
    // alternated (the machine's speed drifts), medians.
    if let Ok(parts) = std::env::var("POSGUARD_BENCH_PARTS") {
        let parts: Vec<&str> = parts.split(',').collect();
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
        for _ in 0..5 {
            for (i, v) in parts.iter().enumerate() {
                runs[i].push(insert_variant(v, 1_000, per_device));
            }
        }
        for (v, mut r) in parts.iter().zip(runs) {
            r.sort_by(f64::total_cmp);
            println!("insert {v}: median {:.2} µs/record of {r:.2?}", r[2]);
        }
        return;
    }
    for round in 1..=3 {
        let (old, new) = (
            insert_us(false, 1_000, per_device),
            insert_us(true, 1_000, per_device),
        );
        println!(
            "insert, 1,000 devices x {per_device}, round {round}: before {old:.2} µs/record, now {new:.2} µs/record"
        );
    }
}
