//! The last act of a stopping uplink: after the daemon has journaled `agent_stopped`, one
//! attempt of bounded length to ship what the journal still holds, so that the collector
//! learns of a clean stop at once rather than at the next start.

use super::{Progress, Shipper};

impl Shipper {
    /// One attempt, bounded by [`super::super::FINAL_FLUSH`], to ship what the journal holds after
    /// the agent journaled its stop. A failure or the time running out leaves the records for
    /// the next start, as before.
    pub(super) async fn final_flush(&mut self) {
        self.stopping = true;
        // Read before the stop record was appended: it may end short of it.
        self.prefetched = None;
        let flush = async {
            loop {
                match self.step().await {
                    Ok(Progress::Sent) => {}
                    Ok(Progress::Idle) => return Ok(()),
                    Err(f) => return Err(f.error),
                }
            }
        };
        match tokio::time::timeout(super::super::FINAL_FLUSH, flush).await {
            Ok(Ok(())) => tracing::info!(
                shipped = self.next_seq.saturating_sub(1),
                "uplink: everything shipped before stopping"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "uplink: the final records wait for the next start")
            }
            Err(_) => tracing::warn!(
                within_ms = super::super::FINAL_FLUSH.as_millis() as u64,
                "uplink: not shipped in time before stopping; the rest waits for the next start"
            ),
        }
    }
}
