//! The command line: parsed by clap into [`Cli`], run by [`run`]. Bad usage or configuration
//! exits 64 with a message naming the key or argument.

mod alerts;
mod backup;
mod command;
mod devices;
mod lifecycle;
mod maintenance;
mod output;
mod pki;
mod serve;
pub mod suggest;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::EXIT_USAGE;
use crate::config::Config;
use crate::store::sqlite::SqliteStore;

/// Receive, verify, store and alert on the audit trails of a fleet of posguard terminals.
#[derive(Debug, Parser)]
#[command(name = "posguard-collector", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/posguard/collector.toml"
    )]
    pub config: PathBuf,
    /// Create the store named by `store` if it does not exist (only `serve` and `restore`
    /// create one otherwise: a mistyped path is an error, not an empty fleet).
    #[arg(long, global = true)]
    pub create_store: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (HTTPS ingest, metrics, periodic checks) until SIGTERM or SIGINT.
    Serve,
    /// Stored events as JSON lines.
    Query(QueryArgs),
    /// The alert queue: list (JSON lines), show, acknowledge, resolve, reopen.
    Alerts(alerts::AlertsArgs),
    /// Stored events as JSON lines for a SIEM (see docs/collector.md for the fields).
    Export(QueryArgs),
    /// Fleet health: every device with its state (ok, lagging, silent, stopped, revoked,
    /// lockdown, decommissioned), lag, last contact and certificate expiry. A table on a
    /// terminal, JSON lines when piped or with `--json`.
    Devices(devices::DevicesArgs),
    /// Forked records kept aside, as JSON lines.
    Forks,
    /// The operations key that signs commands.
    #[command(subcommand)]
    OpsKey(OpsKeyCommand),
    /// Sign a command (`lockdown`, `unlock`) and queue it for a known device's next
    /// acknowledgement, or `list` the commands with their delivery state.
    Command(command::CommandArgs),
    /// Switch maintenance mode `on` or `off` (agents get 503 with Retry-After), or show its
    /// `status`.
    Maintenance(maintenance::MaintenanceArgs),
    /// The fleet CA: create it, revoke device certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// A device's lifecycle: decommission it (docs/collector.md, "Device lifecycle").
    #[command(subcommand)]
    Device(DeviceCommand),
    /// One-time enrollment tokens for terminals.
    #[command(subcommand)]
    EnrollToken(TokenCommand),
    /// The enrollment history (enrollments, renewals, refusals, revocations) as JSON lines.
    Enrollments {
        /// Only entries at or after (RFC 3339 or Unix ms).
        #[arg(long)]
        since: Option<String>,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
    },
    /// Copy the store, online and consistent, into a new file (mode 0600); print a JSON
    /// summary. The collector may keep running.
    Backup {
        /// The backup file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify every device's chain in a backup and install it as the store; print a JSON
    /// summary. Stop the collector first: refused while it holds the store.
    Restore {
        /// The backup file (opened read-only).
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store.
        #[arg(long)]
        force: bool,
    },
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the fleet CA, the collector's server certificate and an empty CRL in a directory
    /// (never overwriting); print the lines for collector.toml. Needs no config.
    Init {
        /// Directory for the files (created, mode 0700, if missing).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address of the collector (repeatable; default localhost and
        /// 127.0.0.1).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Validity of the CA in days (the server certificate: at most 825).
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a new server certificate with a new key for the collector, signed by `ca_cert`
    /// (after its key was stolen: docs/runbook.md); print a JSON summary. Never overwrites.
    ServerCert {
        /// Directory for `collector-<serial>.pem` and `.key` (mode 0600).
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS name or IP address of the collector (repeatable, at least one).
        #[arg(long = "server-name", required = true)]
        server_names: Vec<String>,
        /// Validity in days (at most 825, never past the CA).
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Sign a terminal's offline CSR (`posguard-provision csr`) with the checks of enrollment,
    /// recorded in the enrollment history; write the chain (leaf, fleet CA) to a new file.
    SignCsr {
        /// The CSR file (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The device the CSR must name.
        #[arg(long)]
        device: String,
        /// Where to write the chain (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a certificate (or every certificate issued to a device) by reissuing the CRL
    /// named by `crl`; the server picks it up within seconds. The collector's own certificate
    /// too (`--serial`): agents refuse it once they have the new CRL.
    Revoke {
        /// Serial of the certificate, hex (as `enrollments` prints it).
        #[arg(long, required_unless_present = "device", conflicts_with = "device")]
        serial: Option<String>,
        /// Every certificate issued to this device by enrollment or renewal.
        #[arg(long)]
        device: Option<String>,
    },
}

/// `device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Revoke every certificate issued to the device and mark it decommissioned; its chain
    /// stays verifiable, and a later enrollment of the id starts a new chain.
    Decommission {
        /// The device.
        #[arg(long)]
        device: String,
        /// Why it leaves service (one line, recorded).
        #[arg(long)]
        reason: String,
    },
}

/// `enroll-token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a one-time token for a device; the token is printed once and stored only hashed.
    Create {
        /// The device the token may enroll.
        #[arg(long)]
        device_id: String,
        /// How long the token is valid: `30m`, `24h`, `7d` (at most 30d).
        #[arg(long)]
        ttl: String,
        /// Print only the token.
        #[arg(long, conflicts_with = "json")]
        quiet: bool,
        /// Print one JSON object (`token`, `device_id`, `expires`, `expires_ms`).
        #[arg(long)]
        json: bool,
    },
    /// Tokens as JSON lines: device, expiry, used (never the token).
    List,
}

/// Ops-key subcommands.
#[derive(Debug, Subcommand)]
pub enum OpsKeyCommand {
    /// Generate a key into a new file (mode 0600) and print its public half.
    Generate {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Filters of `query` and `export`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Event time at or after (RFC 3339 or Unix ms).
    #[arg(long)]
    pub since: Option<String>,
    /// Event time before (RFC 3339 or Unix ms).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this event kind (`login_failed`, `locked_out`, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this severity or higher (`info`, `notice`, `warning`, `critical`).
    #[arg(long)]
    pub min_severity: Option<String>,
}

/// A usage error: exit 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the process arguments and runs; the whole binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if crate::logging::sink() == Some(crate::logging::Sink::Journald) {
                // Under systemd: error priority (a plain stderr line would be info, hidden from
                // `journalctl -u posguard-collector -p warning`).
                tracing::error!("{e:#}");
            } else {
                eprintln!("posguard-collector: {e:#}");
            }
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<crate::config::ConfigError>().is_some()
                || e.downcast_ref::<crate::tls::TlsError>().is_some()
                || e.downcast_ref::<crate::pki::PkiError>().is_some_and(|e| {
                    matches!(
                        e,
                        crate::pki::PkiError::Invalid(_) | crate::pki::PkiError::Bad { .. }
                    )
                });
            let partial = e.downcast_ref::<backup::PartialRestore>().is_some();
            ExitCode::from(if usage {
                EXIT_USAGE
            } else if partial {
                2
            } else {
                1
            })
        }
    }
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Opens the existing store. A missing one is a usage error naming the path and the fix: a
/// mistyped `store` would otherwise create an empty database and show an empty fleet.
fn open_store(config: &Config) -> anyhow::Result<SqliteStore> {
    require_store(config)?;
    create_or_open_store(config)
}

/// The usage error for a `store` path that does not exist.
fn require_store(config: &Config) -> anyhow::Result<()> {
    if !config.store.exists() {
        return Err(usage(format!(
            "the store {} does not exist: correct `store` in the configuration (--config), \
             or create it by starting `posguard-collector serve` once or by adding --create-store",
            config.store.display()
        )));
    }
    Ok(())
}

/// Opens the store, creating it if missing (`serve`, `--create-store`).
fn create_or_open_store(config: &Config) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(&config.store)
        .with_context(|| format!("cannot open store {}", config.store.display()))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::OpsKey(OpsKeyCommand::Generate { out }) = &cli.command {
        let public = crate::opskey::generate(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("{public}");
        eprintln!("set ops_public_key = \"{public}\" in the collector's config");
        return Ok(());
    }
    if let Command::Ca(CaCommand::Init {
        dir,
        server_names,
        days,
    }) = &cli.command
    {
        return pki::ca_init(dir, server_names, *days);
    }
    let config = Config::load(&cli.config)?;
    if cli.create_store && !config.store.exists() {
        SqliteStore::open(&config.store)
            .with_context(|| format!("cannot create store {}", config.store.display()))?;
        eprintln!("created the store {}", config.store.display());
    }
    match cli.command {
        Command::Serve => serve::serve(&config),
        Command::Query(q) => output::events(&mut open_store(&config)?, &q, false),
        Command::Export(q) => output::events(&mut open_store(&config)?, &q, true),
        Command::Alerts(args) => alerts::run(&config, args),
        Command::Devices(args) => devices::run(&config, &args),
        Command::Forks => output::forks(&mut open_store(&config)?),
        Command::Maintenance(args) => maintenance::run(&config, &args),
        Command::Command(args) => command::run(&config, &args),
        Command::Ca(CaCommand::ServerCert {
            out_dir,
            server_names,
            days,
        }) => pki::ca_server_cert(&config, &out_dir, &server_names, days),
        Command::Ca(CaCommand::Revoke { serial, device }) => {
            pki::ca_revoke(&config, serial.as_deref(), device.as_deref())
        }
        Command::Ca(CaCommand::SignCsr { csr, device, out }) => {
            lifecycle::sign_csr(&config, &csr, &device, &out)
        }
        Command::Device(DeviceCommand::Decommission { device, reason }) => {
            lifecycle::decommission(&config, &device, &reason)
        }
        Command::EnrollToken(TokenCommand::Create {
            device_id,
            ttl,
            quiet,
            json,
        }) => pki::token_create(&config, &device_id, &ttl, quiet, json),
        Command::EnrollToken(TokenCommand::List) => pki::token_list(&config),
        Command::Enrollments { since, device } => {
            let since = parse_opt_time("--since", since.as_deref())?;
            pki::enrollments(&config, since, device.as_deref())
        }
        Command::Backup { out } => backup::backup(&config, &out),
        Command::Restore { from, force } => backup::restore(&config, &from, force),
        Command::OpsKey(_) | Command::Ca(CaCommand::Init { .. }) => Ok(()),
    }
}

fn parse_opt_time(flag: &str, text: Option<&str>) -> anyhow::Result<Option<u64>> {
    text.map(|t| {
        crate::clock::parse_time(t)
            .ok_or_else(|| usage(format!("{flag}: expected RFC 3339 or Unix ms, not {t:?}")))
    })
    .transpose()
}
