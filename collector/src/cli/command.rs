//! `command lockdown|unlock --device ID --ops-key FILE`: signs a command and queues it for the
//! device's next acknowledgement, after checking that the collector knows the device (a typo
//! is exit 64 with the nearest known id, never a command queued for no one).
//! `command list [--device ID]`: the queued commands with their delivery state.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use posguard_proto::text::DeviceId;
use posguard_proto::uplink::CommandKind;
use serde_json::json;

use super::{open_store, suggest, usage};
use crate::clock::{SystemClock, WallClock as _};
use crate::config::Config;
use crate::health::rfc3339_ms;
use crate::store::Store as _;
use crate::store::sqlite::SqliteStore;

/// Arguments of `command`.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// `lockdown`, `unlock`, or `list`.
    pub action: String,
    /// The device (required for lockdown and unlock; a filter for list).
    #[arg(long)]
    pub device: Option<String>,
    /// The operations key file (lockdown and unlock).
    #[arg(long)]
    pub ops_key: Option<PathBuf>,
}

pub(super) fn run(config: &Config, args: &CommandArgs) -> anyhow::Result<()> {
    const ACTIONS: [&str; 3] = ["lockdown", "unlock", "list"];
    let action = args.action.as_str();
    if action == "list" {
        let store = open_store(config)?;
        if let Some(d) = &args.device {
            known(&store, d)?;
        }
        return list(&store, args.device.as_deref());
    }
    let kind = CommandKind::from_name(action).ok_or_else(|| {
        usage(format!(
            "command: expected lockdown, unlock or list, not {action:?}{}",
            suggest::hint(action, ACTIONS)
        ))
    })?;
    let device = args
        .device
        .as_deref()
        .ok_or_else(|| usage(format!("command {action}: give --device ID")))?;
    let ops_key = args.ops_key.as_deref().ok_or_else(|| {
        usage(format!(
            "command {action}: give --ops-key FILE (the key `ops-key generate` wrote)"
        ))
    })?;
    let device = DeviceId::new(device).map_err(|e| usage(format!("--device: {e}")))?;
    if let Some(expected) = config.ops_public_key()? {
        let actual = crate::opskey::public_hex(ops_key)?;
        if actual != crate::clock::hex(&expected) {
            return Err(usage("--ops-key: not the key named by ops_public_key"));
        }
    }
    let mut store = open_store(config)?;
    known(&store, device.as_str())?;
    let id = store.next_command_id(device.as_str())?;
    let now = SystemClock.now_ms();
    let cmd = crate::opskey::sign(ops_key, device, id, kind, now)
        .with_context(|| format!("--ops-key {}", ops_key.display()))?;
    store.queue_command(&cmd, now)?;
    println!(
        "{}",
        json!({
            "device_id": cmd.device_id.as_str(),
            "id": id,
            "kind": kind.name(),
            "queued": rfc3339_ms(now),
            "state": "queued",
        })
    );
    eprintln!(
        "queued {} (command {id}) for {}: delivered with the device's next acknowledgement; \
         `posguard-collector command list --device {}` shows when",
        kind.name(),
        cmd.device_id.as_str(),
        cmd.device_id.as_str()
    );
    Ok(())
}

/// Refuses a device id the collector has never seen, enrolled or issued a token for.
fn known(store: &SqliteStore, device: &str) -> anyhow::Result<()> {
    let ids = store.known_device_ids()?;
    if ids.contains(device) {
        return Ok(());
    }
    Err(usage(format!(
        "--device: no device {device:?} is known to this collector (never seen, enrolled or \
         given a token){}; `posguard-collector devices` lists the fleet",
        suggest::hint(device, ids.iter().map(String::as_str))
    )))
}

fn list(store: &SqliteStore, device: Option<&str>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for c in store.commands(device)? {
        let line = json!({
            "device_id": c.device_id,
            "id": c.id,
            "kind": c.kind,
            "queued": rfc3339_ms(c.queued_ms),
            "delivered": c.delivered_ms.map(rfc3339_ms),
            "state": if c.delivered_ms.is_some() { "delivered" } else { "queued" },
        });
        // A closed pipe (`| head`) ends the output; it is not an error.
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}
