//! The world around the terminal: the simulated calendar (the collector's clock file), the
//! collector's incidents (outages, restarts, backup and restore), the terminal's wrong clock on
//! some days, and what the kernel's TPM resource manager does when a process dies.

use posguard_e2e::lifetime::{collector_try, offset_spec};

use crate::sim::{DAY, JUMP, Sim};

impl Sim {
    /// Moves the simulated world one day ahead and tells the collector's clock.
    pub(crate) fn advance(&mut self) {
        self.sim_offset += DAY;
        std::fs::write(
            &self.time_file,
            format!("{}\n", offset_spec(self.sim_offset)),
        )
        .unwrap();
    }

    /// The collector's part of day `i`: outages, restarts, backup and restore.
    pub(crate) fn collector_events(&mut self, i: u64) {
        let p = self.sizes.period;
        let backup_day = self.sizes.starts * 6 / 10;
        if i % p == 10 {
            self.collector.kill();
            self.counts.outages += 1;
        } else if i % p == 14 || i % p == 40 {
            if i % p == 40 {
                self.collector.kill();
                self.counts.restarts += 1;
            }
            self.collector.start();
        }
        if i == backup_day {
            let path = self.pki.path("backup.db");
            match collector_try(
                &self.collector.config,
                &["backup", "--out", path.to_str().unwrap()],
            ) {
                Ok(_) => self.backup = Some(path),
                Err(e) => self.finding(i, format!("collector backup refused: {e}")),
            }
        }
        if i == backup_day + 5
            && let Some(backup) = self.backup.clone()
        {
            self.restore(i, &backup);
        }
    }

    /// The runbook's restore: stop the collector, lose its store, restore the backup, start.
    /// The lost store is only moved aside, so that a refused restore (a finding) leaves the
    /// scenario a collector to go on with, as an operator would.
    fn restore(&mut self, i: u64, backup: &std::path::Path) {
        self.collector.kill();
        let files =
            ["db", "db-wal", "db-shm"].map(|ext| self.pki.path(&format!("collector.{ext}")));
        for f in &files {
            let _ = std::fs::rename(f, f.with_extension("lost"));
        }
        match collector_try(
            &self.collector.config,
            &["restore", "--from", backup.to_str().unwrap()],
        ) {
            Ok(_) => self.counts.restores += 1,
            Err(e) => {
                self.finding(i, format!("restore of the online backup refused: {e}"));
                for f in &files {
                    let _ = std::fs::rename(f.with_extension("lost"), f);
                }
            }
        }
        self.collector.start();
    }

    /// The terminal's clock offset on day `i`: the world's, or 400 days off on the days its
    /// clock is wrong (the next day it jumps back).
    pub(crate) fn agent_offset(&mut self, i: u64) -> i64 {
        match i % self.sizes.period {
            25 => {
                self.counts.jumps += 1;
                self.sim_offset + JUMP
            }
            60 => {
                self.counts.jumps += 1;
                self.sim_offset - JUMP
            }
            _ => self.sim_offset,
        }
    }

    /// What the kernel's resource manager (`/dev/tpmrm0`) does when a process dies: flush the
    /// transient objects and sessions it left in the TPM. swtpm's socket has no resource
    /// manager, so without this every kill between a load and its flush would leak one of the
    /// TPM's three object slots, which a terminal never sees. Clean stops get no such help.
    pub(crate) fn after_kill(&mut self, day: u64) {
        if let Err(e) = self.tpm.flush_after_kill() {
            self.finding(day, e.to_string());
        }
    }
}
