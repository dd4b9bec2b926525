//! The figures a run reports: how many starts of each kind, how fast, what happened around
//! them, and the agent's memory.

use crate::sim::{DAY, Sim};

impl Sim {
    pub fn figures(&self, extra: &str) -> String {
        let c = &self.counts;
        let starts = c.clean
            + c.killed_start_up
            + c.killed_traffic
            + c.failed_starts
            + c.failed_stops
            + c.aborted_stops;
        let secs = self.began.elapsed().as_secs_f64();
        let max = |v: &Vec<u64>| v.iter().copied().max().unwrap_or(0);
        format!(
            "{starts} agent starts in {secs:.0} s ({:.1} starts/s; {} clean, {} killed in \
             start-up, {} killed in traffic, {} failed to start, {} failed to stop, {} stops crashed under libfaketime); start to socket median {} ms, max {} ms; \
             {} simulated days; {} events acknowledged; collector: {} outages, {} restarts, \
             {} restores; {} overflow bursts; {} clock jumps; {} data-key rotations; {} certificate renewals; \
             {} clerk logins; {} cache puts; agent RSS max {:.1} MiB (heap {:.1} MiB) over {} \
             samples, peak (VmHWM) {:.1} MiB; {extra}",
            starts as f64 / secs.max(0.001),
            c.clean,
            c.killed_start_up,
            c.killed_traffic,
            c.failed_starts,
            c.failed_stops,
            c.aborted_stops,
            self.typical_start_ms(),
            max(&c.start_ms),
            self.sim_offset / DAY,
            self.acked.len(),
            c.outages,
            c.restarts,
            c.restores,
            c.overflow_bursts,
            c.jumps,
            c.rotations,
            c.renewals,
            c.clerk_logins,
            c.cache_puts,
            mib(c.rss.iter().map(|s| s.1).max().unwrap_or(0)),
            mib(c.rss.iter().map(|s| s.2).max().unwrap_or(0)),
            c.rss.len(),
            mib(c.hwm_kib),
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
