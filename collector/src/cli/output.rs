//! JSON-lines output of the read-only commands. The field names are documented in
//! `docs/collector.md` and stable.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::clock::format_ms;
use crate::store::{Store, StoreError};

fn line(v: &Value) -> Result<(), StoreError> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output; it is not a store error.
    let _ = writeln!(out, "{v}");
    Ok(())
}

/// `forks`.
pub(super) fn forks(store: &mut dyn Store) -> anyhow::Result<()> {
    for (device, seq, hash, at) in store.forks()? {
        line(
            &json!({"device_id": device, "seq": seq, "record_hash": hash, "received_time": format_ms(at)}),
        )?;
    }
    Ok(())
}
