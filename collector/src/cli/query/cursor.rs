//! The export cursor file: where the last export ended in the received order, and the record
//! there, as `{"device":D,"received_seq":N,"schema":"posguard.export-cursor.v1","seq":S}`. Replaced atomically (a new file
//! synced, then renamed over the old one), so a crash leaves the old cursor or the new one.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::super::usage;
use crate::store::Store;

const SCHEMA: &str = "posguard.export-cursor.v1";

/// A position in the received order and the record there (none at the start).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Cursor {
    /// The place of the last exported record.
    pub at: u64,
    /// That record's (device, seq): checked when resuming.
    pub record: Option<(String, u64)>,
}

impl Cursor {
    fn json(&self) -> Value {
        match &self.record {
            Some((device, seq)) => {
                json!({"schema": SCHEMA, "received_seq": self.at, "device": device, "seq": seq})
            }
            None => json!({"schema": SCHEMA, "received_seq": self.at}),
        }
    }
}

fn parse(text: &str) -> Option<Cursor> {
    let v = serde_json::from_str::<Value>(text).ok()?;
    if v.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
        return None;
    }
    let at = v.get("received_seq").and_then(Value::as_u64)?;
    let device = v.get("device").and_then(Value::as_str);
    let seq = v.get("seq").and_then(Value::as_u64);
    match (at, device, seq) {
        (0, None, None) => Some(Cursor::default()),
        (1.., Some(d), Some(s)) => Some(Cursor {
            at,
            record: Some((d.to_owned(), s)),
        }),
        _ => None,
    }
}

/// Where to resume: the start when `path` does not exist yet (the first export). A cursor
/// whose record is not at its place in `store` was written against another store, or against
/// this one before it was replaced or restored from a backup: resuming from it could skip
/// records silently, so it is refused with the two ways on.
pub(super) fn load(path: &Path, store: &mut dyn Store) -> anyhow::Result<u64> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| format!("--cursor: cannot read {}", path.display()));
        }
    };
    let cursor = parse(&text).ok_or_else(|| {
        usage(format!(
            "--cursor: {} is not an export cursor (expected {}); give the export its own \
             file, or remove this one to export everything from the start",
            path.display(),
            Cursor::default().json()
        ))
    })?;
    let Some(record) = &cursor.record else {
        return Ok(0);
    };
    let here = store.received_record(cursor.at)?;
    if here.as_ref() == Some(record) {
        return Ok(cursor.at);
    }
    let newest = store.last_received_seq()?;
    let now = Cursor {
        at: newest,
        record: store.received_record(newest)?,
    };
    let found = here.map_or_else(|| "nothing".to_owned(), |(d, s)| format!("{d} seq {s}"));
    Err(usage(format!(
        "--cursor: {} does not match this store: place {} holds {found}, not {} seq {} as when \
         the cursor was written (the store was replaced, or restored from a backup). Remove the \
         file to export everything again (records exported before come again; a SIEM keys them \
         by device and seq), or write {} into it to export only what is stored from now on \
         (what was stored since the restore is then not exported)",
        path.display(),
        cursor.at,
        record.0,
        record.1,
        now.json()
    )))
}

/// Replaces the cursor at `path`.
pub(super) fn save(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let fail = || format!("cannot update the export cursor {}", path.display());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cursor".to_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(fail)?;
    writeln!(f, "{}", cursor.json()).with_context(fail)?;
    f.sync_all().with_context(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(fail)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(fail)?;
    Ok(())
}
