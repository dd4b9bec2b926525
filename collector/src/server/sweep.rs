//! The periodic check for terminals that have gone silent.

use std::sync::Arc;
use std::time::Duration;

use posguard_proto::event::Severity;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertKind, NewAlert, Raised};
use crate::clock::WallClock;
use crate::clock::format_ms;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Raises one `silent` alert per device not heard from for `silent_after` (again only after
/// it has been heard from since). Returns how many were raised.
pub fn sweep_silent(
    store: &mut dyn Store,
    now_ms: u64,
    silent_after: Duration,
) -> Result<u64, StoreError> {
    let before = now_ms.saturating_sub(u64::try_from(silent_after.as_millis()).unwrap_or(u64::MAX));
    let mut raised = 0u64;
    store.transaction(&mut |tx| {
        raised = 0;
        for mut d in tx.silent_candidates(before)? {
            let alert = tx.raise_alert(&NewAlert {
                device_id: Some(d.device_id.clone()),
                kind: AlertKind::Silent,
                severity: Severity::Warning,
                detail: format!("no contact since {}", format_ms(d.last_seen_ms)),
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

/// Runs [`sweep_silent`] every `every` until `stop`.
pub async fn run_sweeps(
    store: crate::store::StoreHandle,
    clock: Arc<dyn WallClock>,
    metrics: Arc<Metrics>,
    silent_after: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now_ms();
        match store
            .call(move |s| sweep_silent(s, now, silent_after))
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
