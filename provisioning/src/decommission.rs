//! `posguard-provision decommission`: ship what is left of the journal, stop the agent, then
//! remove the TPM keys, the sealed data key, the state and the configuration.
//!
//! Shipping shows its progress (acknowledged seq against the journal head) every few seconds
//! and ends at a deadline. Without `--force` nothing is removed unless everything was shipped.
//! With `--force` (confirmed by typing the device id, or `--yes`) the terminal is wiped anyway,
//! after a record of what was not shipped (seq range, count, head hash) has been written to a
//! file for operations and printed. In every case the agent is stopped, and seen gone, before
//! anything is removed: a running agent would go on writing into what is being deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use posguard_hal::SecureElementConfig;
use serde::Serialize;
use serde_json::json;

use crate::agent_api::{self, at};
use crate::files::write_file;
use crate::report::Report;

/// What `decommission` was asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The secure element.
    pub element: SecureElementConfig,
    /// `/etc/posguard`.
    pub config_dir: PathBuf,
    /// `/var/lib/posguard`.
    pub state_dir: PathBuf,
    /// The agent's socket.
    pub socket: PathBuf,
    /// Wipe even if the journal could not be shipped.
    pub force: bool,
    /// How long shipping may take.
    pub timeout: Duration,
    /// Where the record of unshipped records goes (`None`: beside the state directory).
    pub record: Option<PathBuf>,
    /// The device id, when known (from agent.toml).
    pub device_id: Option<String>,
}

/// What could not be shipped: handed to operations after a forced decommission.
#[derive(Debug, Clone, Serialize)]
pub struct Unshipped {
    /// The device.
    pub device_id: Option<String>,
    /// Unix seconds when the terminal was wiped.
    pub wiped_at_unix: u64,
    /// Highest seq the collector acknowledged (known from the agent).
    pub acknowledged_seq: Option<u64>,
    /// The journal's last seq.
    pub head_seq: Option<u64>,
    /// Hash of the last record (hex).
    pub head_hash: Option<String>,
    /// First and last seq that were not shipped (inclusive), if any.
    pub unshipped: Option<(u64, u64)>,
    /// How many records were not shipped, if known.
    pub count: Option<u64>,
    /// Why they were not shipped.
    pub reason: String,
}

impl Plan {
    /// The record file: `--record`, else `posguard-decommission-<device>-<unix>.json` beside
    /// the state directory (which is removed).
    pub fn record_path(&self, now: u64) -> PathBuf {
        self.record.clone().unwrap_or_else(|| {
            let name = format!(
                "posguard-decommission-{}-{now}.json",
                self.device_id.as_deref().unwrap_or("unknown")
            );
            self.state_dir
                .parent()
                .map_or_else(|| PathBuf::from(&name), |p| p.join(&name))
        })
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Progress lines: on stdout for people, on stderr with `--json` (stdout is the report).
fn progress(json: bool, line: &str) {
    use std::io::Write;
    if json {
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout(), "{line}");
    }
}

/// The agent's journal head and acknowledged seq as it sees them now.
#[derive(Debug, Clone, Default)]
struct Seen {
    pid: Option<u64>,
    head: u64,
    acked: u64,
    head_hash: Option<String>,
    failures: u64,
}

fn seen(socket: &Path) -> anyhow::Result<Seen> {
    let s = agent_api::call(socket, "status", json!({}))?;
    Ok(Seen {
        pid: at(&s, "/pid").as_u64(),
        head: at(&s, "/journal/head_seq").as_u64().unwrap_or(0),
        acked: at(&s, "/uplink/acked_seq").as_u64().unwrap_or(0),
        head_hash: at(&s, "/journal/head_hash").as_str().map(str::to_owned),
        failures: at(&s, "/uplink/failures").as_u64().unwrap_or(0),
    })
}

/// Waits until the collector acknowledged the head, printing progress every 5 s. `Err` carries
/// the last state seen.
fn ship(plan: &Plan, json: bool) -> Result<Seen, (Seen, String)> {
    let started = Instant::now();
    let deadline = started + plan.timeout;
    let mut next_line = started;
    let mut last = Seen::default();
    loop {
        match seen(&plan.socket) {
            Ok(s) => last = s,
            Err(e) => return Err((last, format!("the agent stopped answering: {e:#}"))),
        }
        if last.acked >= last.head {
            return Ok(last);
        }
        let now = Instant::now();
        if now >= next_line {
            progress(
                json,
                &format!(
                    "  shipping: acknowledged {} of {} ({} to go, {} uplink failures), {} s left",
                    last.acked,
                    last.head,
                    last.head.saturating_sub(last.acked),
                    last.failures,
                    deadline.saturating_duration_since(now).as_secs()
                ),
            );
            next_line = now + Duration::from_secs(5);
        }
        if now > deadline {
            return Err((
                last.clone(),
                format!(
                    "the collector acknowledged {} of {} within {} s ({} uplink failures: unreachable, or this certificate refused)",
                    last.acked,
                    last.head,
                    plan.timeout.as_secs(),
                    last.failures
                ),
            ));
        }
        // Polling the agent's counters while its uplink ships.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether process `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Stops the agent (systemd if it runs the machine, else SIGTERM to the pid the agent reported)
/// and waits until the process is gone and its socket closed.
fn stop_agent(socket: &Path, pid: Option<u64>) -> anyhow::Result<String> {
    let systemd = Path::new("/run/systemd/system").exists();
    if systemd {
        let status = std::process::Command::new("systemctl")
            .args(["disable", "--now", "posguard-agent"])
            .status()?;
        if !status.success() {
            bail!("systemctl disable --now posguard-agent: {status}");
        }
    } else if let Some(pid) = pid {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !status.success() && !exited(pid) {
            bail!("kill -TERM {pid}: {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = pid.is_none_or(exited);
        let closed = std::os::unix::net::UnixStream::connect(socket).is_err();
        if gone && closed {
            return Ok(match (systemd, pid) {
                (true, _) => "posguard-agent.service stopped and disabled".to_owned(),
                (false, Some(pid)) => format!("pid {pid} exited"),
                (false, None) => "not running (its socket does not answer)".to_owned(),
            });
        }
        if Instant::now() > deadline {
            bail!("the agent is still running 30 s after it was asked to stop");
        }
        // Polling for the process to exit.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the decommissioning. The confirmation has been asked by the caller.
pub fn run(plan: &Plan, json: bool, report: &mut Report) -> anyhow::Result<Option<Unshipped>> {
    let recorded = report.step("decommissioning recorded in the signed journal", || {
        let v = agent_api::call(
            &plan.socket,
            "audit.record",
            json!({"action": "decommission", "reference": "posguard-provision decommission"}),
        )?;
        Ok::<_, anyhow::Error>(((), format!("seq {}", at(&v, "/seq"))))
    });
    let mut unshipped = None;
    let mut pid = None;
    if recorded.is_none() {
        if !plan.force {
            let why = report
                .steps()
                .last()
                .map(|s| s.detail.clone())
                .unwrap_or_default();
            bail!(
                "the agent could not record the decommissioning ({why}); nothing was removed: \
                 start the agent (systemctl start posguard-agent) or fix what its status \
                 reports, and run again; or add --force to wipe without shipping"
            );
        }
        unshipped = Some(Unshipped {
            device_id: plan.device_id.clone(),
            wiped_at_unix: now_unix(),
            acknowledged_seq: None,
            head_seq: None,
            head_hash: None,
            unshipped: None,
            count: None,
            reason: "the agent could not record the decommissioning (not running, or its journal \
                     failed): what was not shipped is unknown"
                .to_owned(),
        });
    } else {
        let shipped = report.step_slow(
            "remaining journal shipped to the collector",
            || match ship(plan, json) {
                Ok(s) => {
                    let detail = format!("acknowledged up to seq {}", s.acked);
                    Ok(((s, None), detail))
                }
                Err((s, why)) if plan.force => {
                    let detail = format!("NOT shipped, forced: {why}");
                    Ok(((s, Some(why)), detail))
                }
                Err((_, why)) => Err(anyhow!("{why}")),
            },
        );
        let Some((last, why)) = shipped else {
            bail!(
                "the journal is not shipped; nothing was removed. See `posguard-provision status` \
                 for why, and run again; or add --force to wipe anyway (what is not shipped is \
                 written to a record for operations)"
            );
        };
        pid = last.pid;
        if let Some(why) = why {
            let (first, end) = (last.acked.saturating_add(1), last.head);
            unshipped = Some(Unshipped {
                device_id: plan.device_id.clone(),
                wiped_at_unix: now_unix(),
                acknowledged_seq: Some(last.acked),
                head_seq: Some(last.head),
                head_hash: last.head_hash.clone(),
                unshipped: (first <= end).then_some((first, end)),
                count: Some(end.saturating_sub(last.acked)),
                reason: why,
            });
        }
    }
    if let Some(u) = &unshipped {
        let path = plan.record_path(u.wiped_at_unix);
        report
            .step("record of what was not shipped written", || {
                let text = serde_json::to_string_pretty(u)?;
                write_file(&path, format!("{text}\n").as_bytes(), 0o644, None)?;
                progress(json, &text);
                Ok::<_, anyhow::Error>(((), format!("{} (hand it to operations)", path.display())))
            })
            .ok_or_else(|| anyhow!("the record could not be written; nothing was removed"))?;
    }
    report
        .step_slow("agent stopped", || {
            stop_agent(&plan.socket, pid).map(|d| ((), d))
        })
        .ok_or_else(|| anyhow!("the agent did not stop; nothing was removed"))?;
    report
        .step("TPM identity key and counter removed", || {
            let se = posguard_hal::open(&plan.element)?;
            se.destroy()?;
            Ok::<_, anyhow::Error>(((), "evicted".to_owned()))
        })
        .ok_or_else(|| anyhow!("TPM keys not removed; run decommission again"))?;
    report
        .step(
            "sealed data key, journal, clerks and cache destroyed",
            || {
                if plan.state_dir.exists() {
                    std::fs::remove_dir_all(&plan.state_dir)?;
                }
                Ok::<_, anyhow::Error>(((), format!("{} removed", plan.state_dir.display())))
            },
        )
        .ok_or_else(|| anyhow!("state not removed; run decommission again"))?;
    report
        .step("configuration removed", || {
            for f in ["agent.toml", "device.pem", "fleet-ca.pem"] {
                let p = plan.config_dir.join(f);
                if p.exists() {
                    std::fs::remove_file(&p)?;
                }
            }
            Ok::<_, anyhow::Error>(((), plan.config_dir.display().to_string()))
        })
        .ok_or_else(|| anyhow!("configuration not removed; run decommission again"))?;
    Ok(unshipped)
}
