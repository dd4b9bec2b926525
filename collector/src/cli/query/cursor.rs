//! The export cursor file: where the last export ended in the received order, as
//! `{"schema":"posguard.export-cursor.v1","received_seq":N}`. Replaced atomically (a new file
//! synced, then renamed over the old one), so a crash leaves the old cursor or the new one.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::super::usage;

const SCHEMA: &str = "posguard.export-cursor.v1";

/// Where to resume: 0 when `path` does not exist yet (the first export). `newest` is the
/// highest place stored: a cursor past it belongs to another store (or to this store before it
/// was restored from an older backup), and resuming from it would silently export nothing.
pub(super) fn load(path: &Path, newest: u64) -> anyhow::Result<u64> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| format!("--cursor: cannot read {}", path.display()));
        }
    };
    let at = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v.get("schema").and_then(Value::as_str) == Some(SCHEMA))
        .and_then(|v| v.get("received_seq").and_then(Value::as_u64))
        .ok_or_else(|| {
            usage(format!(
                "--cursor: {} is not an export cursor (expected {}); give the export its own \
                 file, or remove this one to export everything from the start",
                path.display(),
                json!({"schema": SCHEMA, "received_seq": 0})
            ))
        })?;
    if at > newest {
        return Err(usage(format!(
            "--cursor: {} points past the newest stored record ({at} > {newest}): it belongs to \
             another store, or this store was restored from an older backup. Remove it to \
             export everything again, or write {} into it to export only records stored from \
             now on",
            path.display(),
            json!({"schema": SCHEMA, "received_seq": newest})
        )));
    }
    Ok(at)
}

/// Replaces the cursor at `path` with `at`.
pub(super) fn save(path: &Path, at: u64) -> anyhow::Result<()> {
    let fail = || format!("cannot update the export cursor {}", path.display());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cursor".to_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(fail)?;
    writeln!(f, "{}", json!({"schema": SCHEMA, "received_seq": at})).with_context(fail)?;
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
