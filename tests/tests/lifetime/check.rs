//! The end of the run: a last start with the collector up until everything is shipped, then
//! the checks of issue 15 point 11, each failing with a finding that names what broke.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use posguard_e2e::lifetime::{AgentRun, agent_env, call};
use posguard_e2e::{collector_cli, command};
use serde_json::{Value, json};

use crate::sim::{DEVICE, Report, Sim, stored_rows};

/// A range of seqs a stored `journal_overflow` record declares dropped.
#[derive(Debug, Clone, Copy)]
struct Declared {
    first: u64,
    last: u64,
    dropped: u64,
}

impl Sim {
    pub fn finish(mut self) -> Report {
        let day = self.sizes.starts;
        self.sim_offset += 86_400;
        std::fs::write(&self.time_file, format!("+{}\n", self.sim_offset)).unwrap();
        self.collector.start();
        let mut agent = AgentRun::spawn(&self.config, &agent_env(self.sim_offset));
        let up = agent.wait_ready(&self.socket, Duration::from_secs(30));
        if let Err(e) = &up {
            self.findings.push(format!("final start: {e}"));
        }
        // Everything shipped: the collector acknowledged the head (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut status = Value::Null;
        while up.is_ok() {
            status = call(&self.socket, "status", json!({}))
                .map(|v| v["result"].clone())
                .unwrap_or_default();
            let head = status["journal"]["head_seq"].as_u64().unwrap_or(u64::MAX);
            if status["uplink"]["acked_seq"].as_u64().unwrap_or(0) >= head {
                break;
            }
            if Instant::now() > deadline {
                self.findings.push(format!(
                    "shipping never caught up within 90 s of the last start: journal {}, \
                     uplink {}",
                    status["journal"], status["uplink"]
                ));
                break;
            }
            // Polling interval of a bounded wait for the acknowledgement.
            std::thread::sleep(Duration::from_millis(100));
        }
        self.sample_rss(day, agent.pid());
        // Without a final status (the agent did not come up), every acknowledged seq is due.
        let head = status["journal"]["head_seq"]
            .as_u64()
            .unwrap_or_else(|| self.acked.iter().map(|a| a.seq).max().unwrap_or(0));
        if up.is_ok() {
            match agent.terminate() {
                Some(s) if s.success() => {}
                other => self
                    .findings
                    .push(format!("day {day}: the final stop ended with {other:?}")),
            }
        }

        let rows = stored_rows(&self.collector.config);
        let extra = self.check_store(&rows, head);
        self.check_alerts(&rows);
        self.check_renewals();
        self.check_rss();
        self.check_offline();
        if std::env::var_os("POSGUARD_LIFETIME_KEEP").is_some() {
            // For an investigation: the collector's store and the terminal's state stay.
            self.pki.dir.disable_cleanup(true);
            self.dir.disable_cleanup(true);
            eprintln!(
                "kept: collector {} ; terminal {}",
                self.pki.dir.path().display(),
                self.dir.path().display()
            );
        }
        Report {
            figures: self.figures(&format!("journal head {head}; {extra}")),
            findings: self
                .day_findings()
                .into_iter()
                .chain(self.findings)
                .collect(),
        }
    }

    /// Exactly once, no undeclared gap, every acknowledged event there with its content.
    fn check_store(&mut self, rows: &[Value], head: u64) -> String {
        let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
        let mut twice = Vec::new();
        for row in rows {
            let seq = row["seq"].as_u64().unwrap_or(0);
            if by_seq.insert(seq, row).is_some() {
                twice.push(seq);
            }
        }
        if !twice.is_empty() {
            self.findings.push(format!(
                "{} seqs stored more than once, first {:?}",
                twice.len(),
                &twice[..twice.len().min(10)]
            ));
        }
        let declared: Vec<Declared> = rows
            .iter()
            .filter(|r| r["kind"] == "journal_overflow")
            .filter_map(overflow_fields)
            .collect();
        let declared_dropped: u64 = declared.iter().map(|d| d.dropped).sum();
        let in_declared = |seq: u64| declared.iter().any(|d| (d.first..=d.last).contains(&seq));
        // Records after the last acknowledgement of the final run (its stop event) are not
        // expected at the collector; everything up to the acknowledged head is.
        let missing: Vec<u64> = (1..=head).filter(|s| !by_seq.contains_key(s)).collect();
        let undeclared: Vec<u64> = missing
            .iter()
            .copied()
            .filter(|s| !in_declared(*s))
            .collect();
        if !undeclared.is_empty() {
            self.findings.push(format!(
                "{} seqs missing at the collector without a declared overflow, first {:?} \
                 (collector holds {} of 1..={head}; declared ranges {declared:?})",
                undeclared.len(),
                &undeclared[..undeclared.len().min(10)],
                by_seq.len()
            ));
        }
        if missing.len() as u64 > declared_dropped {
            self.findings.push(format!(
                "{} seqs missing but overflow events declare only {declared_dropped} dropped",
                missing.len()
            ));
        }
        let (mut lost, mut wrong, mut dropped) = (Vec::new(), Vec::new(), 0u64);
        for a in &self.acked {
            match by_seq.get(&a.seq) {
                Some(row) => {
                    if !row.to_string().contains(&format!("\"{}\"", a.reference)) {
                        wrong.push(a.seq);
                    }
                }
                None if in_declared(a.seq) => dropped += 1,
                None => lost.push(a.seq),
            }
        }
        if !lost.is_empty() {
            self.findings.push(format!(
                "{} acknowledged events lost (not at the collector, not declared dropped), \
                 first seqs {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        if !wrong.is_empty() {
            self.findings.push(format!(
                "{} acknowledged seqs hold another event at the collector, first {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(10)]
            ));
        }
        if self.counts.overflow_bursts > 0 && declared.is_empty() {
            self.findings
                .push("the journal overflowed but no overflow event reached the collector".into());
        }
        format!(
            "collector stores {} records; {} overflow events declare {declared_dropped} dropped; \
             {} acknowledged events declared dropped, {} lost",
            by_seq.len(),
            declared.len(),
            dropped,
            lost.len()
        )
    }

    /// Only the alerts the scenario causes: a `chain_gap` per declared overflow at most, and one
    /// `journal_overflow` per stored overflow record.
    fn check_alerts(&mut self, rows: &[Value]) {
        let overflows = rows
            .iter()
            .filter(|r| r["kind"] == "journal_overflow")
            .count();
        let alerts: Vec<Value> = collector_cli(&self.collector.config, &["alerts"])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let gaps = alerts.iter().filter(|a| a["kind"] == "chain_gap").count();
        // Each declared overflow is also an alert of its own (routine records only: warning).
        let declared = alerts
            .iter()
            .filter(|a| a["kind"] == "journal_overflow" && a["severity"] == "warning")
            .count();
        if declared != overflows {
            self.findings.push(format!(
                "{declared} journal_overflow alerts for {overflows} stored overflow records"
            ));
        }
        let other: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["kind"] != "chain_gap" && a["kind"] != "journal_overflow")
            .collect();
        if gaps > overflows {
            self.findings.push(format!(
                "{gaps} chain_gap alerts for {overflows} declared overflows: {:?}",
                alerts
                    .iter()
                    .filter(|a| a["kind"] == "chain_gap")
                    .map(|a| a["detail"].to_string())
                    .take(5)
                    .collect::<Vec<_>>()
            ));
        }
        if !other.is_empty() {
            self.findings.push(format!(
                "{} alerts the scenario did not cause, first: {:?}",
                other.len(),
                other.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }

    /// The terminal renewed its 30-day certificate itself, about every 20 simulated days.
    fn check_renewals(&mut self) {
        let out = collector_cli(&self.collector.config, &["enrollments", "--device", DEVICE]);
        let issued = out
            .lines()
            .filter(|l| l.contains("\"renew\"") && l.contains("\"issued\""))
            .count() as u64;
        let refused = out.lines().filter(|l| l.contains("\"refused\"")).count();
        let days = u64::try_from(self.sim_offset / 86_400).unwrap_or(0);
        if issued < days / 30 {
            self.findings.push(format!(
                "{issued} certificate renewals in {days} days of 30-day certificates"
            ));
        }
        if refused > 0 {
            self.findings
                .push(format!("{refused} renewals refused by the collector"));
        }
        self.counts.renewals = issued;
    }

    /// VmRSS in the states sampled (a quiet day, a full journal, after shipping the backlog),
    /// as docs/PERFORMANCE.md measures it.
    fn check_rss(&mut self) {
        let over: Vec<String> = self
            .counts
            .rss
            .iter()
            .filter(|s| s.1 > self.sizes.rss_bound_kib)
            .map(|(day, rss, anon)| {
                format!(
                    "day {day}: {:.1} MiB (heap {:.1})",
                    *rss as f64 / 1024.0,
                    *anon as f64 / 1024.0
                )
            })
            .collect();
        if !over.is_empty() {
            self.findings.push(format!(
                "agent RSS over the bound {:.1} MiB: {}",
                self.sizes.rss_bound_kib as f64 / 1024.0,
                over.join(", ")
            ));
        }
    }

    fn check_offline(&mut self) {
        let out = command("posguardctl")
            .arg("verify-journal")
            .arg(&self.journal)
            .output()
            .unwrap();
        if !out.status.success() {
            self.findings.push(format!(
                "posguardctl verify-journal failed ({}): {} {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
}

/// The overflow's fields wherever the rendered event keeps them.
fn overflow_fields(event: &Value) -> Option<Declared> {
    Some(Declared {
        first: find_key(event, "first_seq")?.as_u64()?,
        last: find_key(event, "last_seq")?.as_u64()?,
        dropped: find_key(event, "dropped")?.as_u64()?,
    })
}

fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}
