//! `maintenance on|off|status`: switches the store's maintenance flag (terminals get 503 with
//! `Retry-After: maintenance_retry_after_s`) and says what it did and what state results. Each
//! switch records when maintenance was last on (`maintenance_seen_ms`): the silent check and
//! `devices` measure silence from then, because terminals were told to stay away until it ended.

use super::{open_store, suggest, usage};
use crate::clock::{SystemClock, WallClock as _};
use crate::config::Config;
use crate::health::rfc3339_ms;
use crate::store::{MAINTENANCE_SEEN_MS, Store as _};

/// Arguments of `maintenance`.
#[derive(Debug, clap::Args)]
pub struct MaintenanceArgs {
    /// `on`, `off` or `status`.
    pub action: String,
}

pub(super) fn run(config: &Config, args: &MaintenanceArgs) -> anyhow::Result<()> {
    const ACTIONS: [&str; 3] = ["on", "off", "status"];
    let action = args.action.as_str();
    if !ACTIONS.contains(&action) {
        return Err(usage(format!(
            "maintenance: expected on, off or status, not {action:?}{}",
            suggest::hint(action, ACTIONS)
        )));
    }
    let mut store = open_store(config)?;
    let now = SystemClock.now_ms();
    let retry = config.maintenance_retry_after_s;
    let file = config.maintenance_file.as_deref().filter(|p| p.exists());
    match action {
        "on" => {
            store.set_maintenance(true)?;
            store.set_setting(MAINTENANCE_SEEN_MS, &now.to_string())?;
            println!(
                "maintenance mode on since {}: terminals get 503 with Retry-After {retry} s and \
                 keep their records; no terminal is reported silent until it ends \
                 (`posguard-collector maintenance off`)",
                rfc3339_ms(now)
            );
        }
        "off" => {
            let was_on = store.maintenance()?;
            store.set_maintenance(false)?;
            store.set_setting(MAINTENANCE_SEEN_MS, &now.to_string())?;
            if let Some(f) = file {
                println!(
                    "maintenance flag off, but maintenance mode stays on: the file {} \
                     (maintenance_file) exists; remove it to end maintenance",
                    f.display()
                );
            } else {
                println!(
                    "maintenance mode off at {}{}: terminals resume within {retry} s (their \
                     Retry-After); silence is measured from now, so none looks silent before {}",
                    rfc3339_ms(now),
                    if was_on { "" } else { " (it was not on)" },
                    rfc3339_ms(now.saturating_add(config.silent_after_s.saturating_mul(1000)))
                );
            }
        }
        _ => {
            let flag = store.maintenance()?;
            let seen = store
                .setting(MAINTENANCE_SEEN_MS)?
                .and_then(|v| v.parse::<u64>().ok());
            let on = flag || file.is_some();
            let why = match (flag, file) {
                (true, Some(f)) => format!(" (store flag, and the file {})", f.display()),
                (true, None) => " (store flag)".to_owned(),
                (false, Some(f)) => format!(" (the file {} exists)", f.display()),
                (false, None) => String::new(),
            };
            let last = match (on, seen) {
                (false, Some(ms)) => format!("; last on until {}", rfc3339_ms(ms)),
                _ => String::new(),
            };
            println!(
                "maintenance mode {}{why}{last}; Retry-After {retry} s",
                if on { "on" } else { "off" }
            );
        }
    }
    Ok(())
}
