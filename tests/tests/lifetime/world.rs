//! The world around the terminal: the simulated calendar (the collector's clock file), the
//! collector's incidents (outages, restarts, backup and restore), the terminal's wrong clock on
//! some days, and what the kernel's TPM resource manager does when a process dies.

use posguard_e2e::collector_cli;
use posguard_e2e::lifetime::offset_spec;

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
            collector_cli(
                &self.collector.config,
                &["backup", "--out", path.to_str().unwrap()],
            );
            self.backup = Some(path);
        }
        if i == backup_day + 5
            && let Some(backup) = self.backup.clone()
        {
            self.collector.kill();
            for ext in ["db", "db-wal", "db-shm"] {
                let _ = std::fs::remove_file(self.pki.path(&format!("collector.{ext}")));
            }
            collector_cli(
                &self.collector.config,
                &["restore", "--from", backup.to_str().unwrap()],
            );
            self.collector.start();
            self.counts.restores += 1;
        }
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
        for what in ["-t", "-l", "-s"] {
            let out = std::process::Command::new("tpm2_flushcontext")
                .arg(what)
                .env("TPM2TOOLS_TCTI", self.tpm.tcti())
                .output();
            if let Ok(o) = out
                && !o.status.success()
            {
                let e = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                self.finding(day, format!("tpm2_flushcontext {what}: {e}"));
            }
        }
    }
}
