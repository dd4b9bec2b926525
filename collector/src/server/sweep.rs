//! The periodic check for terminals that have gone silent. Maintenance mode tells terminals
//! to stay away, so while it is on nobody is silent, and afterwards silence is measured from
//! when it was last seen on ([`MAINTENANCE_SEEN_MS`]), not from each terminal's last contact.

use std::sync::Arc;
use std::time::Duration;

use posguard_proto::event::Severity;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertKind, NewAlert, Raised};
use crate::clock::WallClock;
use crate::clock::format_ms;
use crate::metrics::Metrics;
use crate::store::{MAINTENANCE_SEEN_MS, Store, StoreError};

/// Raises one `silent` alert per device not heard from for `silent_after` (again only after
/// it has been heard from since). Returns how many were raised.
pub fn sweep_silent(
    store: &mut dyn Store,
    now_ms: u64,
    silent_after: Duration,
) -> Result<u64, StoreError> {
    let before = now_ms.saturating_sub(u64::try_from(silent_after.as_millis()).unwrap_or(u64::MAX));
    let maintenance_seen: u64 = store
        .setting(MAINTENANCE_SEEN_MS)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if maintenance_seen >= before {
        // Within silent_after of maintenance: every terminal may still be waiting out its
        // Retry-After.
        return Ok(0);
    }
    let mut raised = 0u64;
    store.transaction(&mut |tx| {
        raised = 0;
        for mut d in tx.silent_candidates(before)? {
            // A terminal whose last stored record is its clean stop was switched off or
            // stopped on purpose; without one it lost power, crashed or lost its network.
            let stopped =
                tx.record_kind(&d.device_id, d.highest_stored)?.as_deref() == Some("agent_stopped");
            let how = if stopped {
                "; it stopped cleanly (its last record is agent_stopped)"
            } else {
                "; no clean stop (power cut, crash or network)"
            };
            let alert = tx.raise_alert(&NewAlert {
                device_id: Some(d.device_id.clone()),
                kind: AlertKind::Silent,
                severity: Severity::Warning,
                detail: format!("no contact since {}{how}", format_ms(d.last_seen_ms)),
                at_ms: now_ms,
            })?;
            d.silent_alerted = true;
            tx.put_device(&d)?;
            // A terminal silent again while its last silent alert is open adds to its count.
            if matches!(alert, Raised::New(_)) {
                raised = raised.saturating_add(1);
            }
        }
        Ok(())
    })?;
    Ok(raised)
}

/// While maintenance is on (the store's flag or `maintenance_file`), records now as when it
/// was last seen on and returns true: no sweep then.
pub fn note_maintenance(
    store: &mut dyn Store,
    now_ms: u64,
    maintenance_file: Option<&std::path::Path>,
) -> Result<bool, StoreError> {
    let on = maintenance_file.is_some_and(|f| f.exists()) || store.maintenance()?;
    if on {
        store.set_setting(MAINTENANCE_SEEN_MS, &now_ms.to_string())?;
    }
    Ok(on)
}

/// Runs [`sweep_silent`] every `every` until `stop`, except during maintenance.
pub async fn run_sweeps(
    store: crate::store::StoreHandle,
    clock: Arc<dyn WallClock>,
    metrics: Arc<Metrics>,
    silent_after: Duration,
    every: Duration,
    maintenance_file: Option<std::path::PathBuf>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now_ms();
        let file = maintenance_file.clone();
        match store
            .call(move |s| {
                if note_maintenance(s, now, file.as_deref())? {
                    return Ok(0);
                }
                sweep_silent(s, now, silent_after)
            })
            .await
        {
            Ok(n) => {
                for _ in 0..n {
                    metrics.alert(AlertKind::Silent.name());
                }
            }
            Err(e) => tracing::error!(error = %e, "silent sweep failed"),
        }
    }
}
