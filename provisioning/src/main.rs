//! `posguard-provision`: the field technician's CLI. Argument parsing only; see the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posguard_hal::SecureElementConfig;
use posguard_provision::identity;
use posguard_provision::inputs;
use posguard_provision::report::Report;
use posguard_provision::selftest;

mod commands;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Bring up, check, renew and decommission a posguard terminal.
#[derive(Debug, Parser)]
#[command(name = "posguard-provision", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the secure element is.
#[derive(Debug, clap::Args)]
struct ElementArgs {
    /// TPM TCTI (default: the kernel resource manager, device:/dev/tpmrm0).
    #[arg(long, default_value = posguard_hal::config::DEFAULT_TCTI)]
    tcti: String,
    /// Use the software backend with keys in this directory instead of a TPM (development
    /// only: keys are files, not hardware).
    #[arg(long, value_name = "DIR")]
    software_keys: Option<PathBuf>,
    /// Persistent handle of the device identity key (default: the configuration's
    /// `[secure_element] identity_handle`, else 0x81010001). Use a free one when another
    /// application's object is at the default.
    #[arg(long, value_name = "HANDLE", value_parser = identity::parse_handle)]
    identity_handle: Option<u32>,
    /// Persistent handle of the storage root key (default: the configuration's
    /// `[secure_element] srk_handle`, else 0x81000001).
    #[arg(long, value_name = "HANDLE", value_parser = identity::parse_handle)]
    srk_handle: Option<u32>,
    /// NV index of the monotonic counter (default: the configuration's
    /// `[secure_element] counter_index`, else 0x01005047).
    #[arg(long, value_name = "INDEX", value_parser = identity::parse_nv_index)]
    counter_index: Option<u32>,
}

impl ElementArgs {
    fn config(&self) -> SecureElementConfig {
        self.config_in(None)
    }

    /// The configuration, taking handles not given here from `CONFIG_DIR/agent.toml`.
    fn config_in(&self, config_dir: Option<&std::path::Path>) -> SecureElementConfig {
        let mut config = match &self.software_keys {
            Some(dir) => SecureElementConfig::software(dir),
            None => SecureElementConfig::tpm(self.tcti.clone()),
        };
        let kept = config_dir
            .map(identity::places_from_agent_toml)
            .unwrap_or_default();
        if let Some(h) = self.identity_handle.or(kept.identity) {
            config.identity_handle = h;
        }
        if let Some(h) = self.srk_handle.or(kept.srk) {
            config.srk_handle = h;
        }
        if let Some(h) = self.counter_index.or(kept.counter) {
            config.counter_index = h;
        }
        config
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provision this terminal: TPM checks, identity key, CSR, enrollment with a one-time
    /// token, data key, configuration; with --admin, the first admin and a self-test.
    Init {
        /// The collector, host:port.
        #[arg(long)]
        collector: String,
        /// The one-time enrollment token; `-` reads it from standard input. On the command line
        /// it is visible in `ps` and shell history: prefer --token-file or `-`.
        #[arg(long, value_name = "TOKEN|-", conflicts_with = "token_file")]
        token: Option<String>,
        /// Read the one-time enrollment token from this file.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// The fleet CA certificate (PEM).
        #[arg(long)]
        fleet_ca: PathBuf,
        /// This terminal's device id.
        #[arg(long)]
        device_id: String,
        /// The name in the collector's certificate (default: the host of --collector).
        #[arg(long)]
        server_name: Option<String>,
        /// The operations public key (hex) that signed commands are checked with.
        #[arg(long)]
        ops_public_key: Option<String>,
        /// Configuration directory.
        #[arg(long, default_value = "/etc/posguard")]
        config_dir: PathBuf,
        /// State directory.
        #[arg(long, default_value = "/var/lib/posguard")]
        state_dir: PathBuf,
        /// The agent's socket (for the first admin and the self-test).
        #[arg(long, default_value = "/run/posguard/agent.sock")]
        socket: PathBuf,
        /// Enroll this first admin (SuperAdmin) through the running agent, then self-test.
        /// The password is read without echo, then a current TOTP code.
        #[arg(long)]
        admin: Option<String>,
        /// Redo everything on a provisioned terminal: a new certificate for posguard's identity
        /// key (kept), new configuration. A failure before the end changes nothing.
        #[arg(long)]
        force: bool,
        /// With --force: replace the identity key too, once the new one is enrolled (a failure
        /// before that leaves the old key, certificate and configuration in place). The journal
        /// already on the terminal stays signed by the old key.
        #[arg(long, requires = "force")]
        new_key: bool,
        /// Evict the TPM object at HANDLE that posguard did not create (posguard never does
        /// otherwise). Only the identity key, storage root key or counter handle of this run is
        /// accepted; posguard's own object there is kept.
        #[arg(long, value_name = "HANDLE", value_parser = identity::parse_any_handle)]
        evict_foreign: Vec<u32>,
        #[command(flatten)]
        element: ElementArgs,
        /// Print a machine-readable JSON report instead of progress lines.
        #[arg(long)]
        json: bool,
    },
    /// The first admin (SuperAdmin, TOTP shown as a QR code and confirmed with a code) and the
    /// end-to-end self-test, through the running agent. Needs root, and no confirmed clerk yet;
    /// an unconfirmed admin of an earlier attempt is replaced.
    Admin {
        /// The admin's clerk id.
        #[arg(long, required_unless_present = "selftest_only")]
        admin: Option<String>,
        /// Read the password from the first line of this file (mode 0600) instead of asking
        /// twice at the terminal (for scripts; standard input also works without a terminal).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Only the end-to-end self-test (the admin exists).
        #[arg(long, conflicts_with_all = ["admin", "password_file"])]
        selftest_only: bool,
        /// How long the collector may take to acknowledge the self-test's record.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        selftest_timeout: u64,
        /// The agent's socket.
        #[arg(long, default_value = "/run/posguard/agent.sock")]
        socket: PathBuf,
        /// Print a machine-readable JSON report (the TOTP seed first, as one JSON line).
        #[arg(long)]
        json: bool,
    },
    /// Offline path, step 1: write a CSR for this terminal's identity key to a file.
    Csr {
        /// This terminal's device id.
        #[arg(long)]
        device_id: String,
        /// Where to write the CSR (PEM).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        element: ElementArgs,
    },
    /// Offline path, step 2: check the chain operations signed (`posguard-collector ca
    /// sign-csr`) against the fleet CA, this device id, the clock and this TPM's key, install it
    /// and, on a terminal not configured yet, write the agent's configuration.
    InstallCert {
        /// The chain (PEM, leaf first).
        #[arg(long)]
        chain: PathBuf,
        /// The fleet CA certificate (PEM) the chain must lead to.
        #[arg(long)]
        fleet_ca: PathBuf,
        /// This terminal's device id (the certificate must name it).
        #[arg(long)]
        device_id: String,
        /// The collector, host:port (needed when the terminal has no agent.toml yet).
        #[arg(long)]
        collector: Option<String>,
        /// The name in the collector's certificate (default: the host of --collector).
        #[arg(long)]
        server_name: Option<String>,
        /// The operations public key (hex) that signed commands are checked with.
        #[arg(long)]
        ops_public_key: Option<String>,
        /// Configuration directory.
        #[arg(long, default_value = "/etc/posguard")]
        config_dir: PathBuf,
        /// State directory.
        #[arg(long, default_value = "/var/lib/posguard")]
        state_dir: PathBuf,
        /// The agent's socket.
        #[arg(long, default_value = "/run/posguard/agent.sock")]
        socket: PathBuf,
        #[command(flatten)]
        element: ElementArgs,
    },
    /// Identity key, TPM lockout, certificate (valid, for this key), an mTLS request answered
    /// by the collector, and the agent's own status. Exit 1 if any check fails.
    Status {
        /// Configuration directory.
        #[arg(long, default_value = "/etc/posguard")]
        config_dir: PathBuf,
        #[command(flatten)]
        element: ElementArgs,
        /// Print a machine-readable JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Renew this terminal's certificate now, over mTLS with the current one (the agent also
    /// renews by itself once two thirds of the lifetime have passed).
    Renew {
        /// Configuration directory.
        #[arg(long, default_value = "/etc/posguard")]
        config_dir: PathBuf,
        #[command(flatten)]
        element: ElementArgs,
    },
    /// Decommission: ship the remaining journal (progress every 5 s, until --timeout), stop the
    /// agent, then remove the TPM keys, the sealed data key, the state and the configuration.
    /// Asks for confirmation unless --yes; with --force, wipes even if the journal could not be
    /// shipped, after writing a record of what was not (confirmed by typing the device id).
    Decommission {
        /// Wipe even when the collector is unreachable or refuses this terminal.
        #[arg(long)]
        force: bool,
        /// How long shipping the journal may take, in seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
        /// Where a forced decommission writes the record of unshipped records (default:
        /// posguard-decommission-<device>-<time>.json beside the state directory).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Print a machine-readable JSON report.
        #[arg(long)]
        json: bool,
        /// Configuration directory.
        #[arg(long, default_value = "/etc/posguard")]
        config_dir: PathBuf,
        /// State directory.
        #[arg(long, default_value = "/var/lib/posguard")]
        state_dir: PathBuf,
        /// The agent's socket.
        #[arg(long, default_value = "/run/posguard/agent.sock")]
        socket: PathBuf,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        element: ElementArgs,
    },
    /// Exercise the secure element: key, signature, sealing, counter, RNG; one line per step.
    Selftest {
        #[command(flatten)]
        element: ElementArgs,
        /// Only check what exists; do not create the identity key or the counter.
        #[arg(long)]
        check_only: bool,
        /// Print a machine-readable JSON report instead of progress lines.
        #[arg(long)]
        json: bool,
    },
}

fn eprintln_safe(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Checks `--collector` and reads the token (file, stdin or argv, with a warning for argv).
/// No token at all is allowed: a rerun compares, and a pending chain finishes without one.
fn init_inputs(
    collector: &str,
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<(String, Option<inputs::Token>)> {
    let host = inputs::collector_host(collector)?;
    let source = match (token, token_file) {
        (_, Some(path)) => Some(inputs::TokenSource::File(path)),
        (Some(t), None) if t == "-" => Some(inputs::TokenSource::Stdin),
        (Some(t), None) => {
            eprintln_safe(
                "warning: a token on the command line is visible to other users (`ps`) and in \
                 shell history; use --token-file PATH or --token - (standard input) instead",
            );
            Some(inputs::TokenSource::Argv(t))
        }
        (None, None) => None,
    };
    let token = source
        .map(|s| inputs::read_token(&s, &mut std::io::stdin().lock()))
        .transpose()?;
    Ok((host, token))
}

/// Prints a line; a closed stdout is not an error worth a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn main() -> ExitCode {
    posguard_provision::inputs::quiet_tss2_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a pipe or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match cli.command {
        Command::Init {
            collector,
            token,
            token_file,
            fleet_ca,
            device_id,
            server_name,
            ops_public_key,
            config_dir,
            state_dir,
            socket,
            admin,
            force,
            new_key,
            evict_foreign,
            element,
            json,
        } => {
            let (host, token) = match init_inputs(&collector, token, token_file) {
                Ok(v) => v,
                Err(e) => {
                    eprintln_safe(&format!("error: {e:#}"));
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let server_name = server_name.unwrap_or(host);
            let secure_element = element.config_in(Some(&config_dir));
            let plan = posguard_provision::init::InitPlan {
                collector,
                server_name,
                token,
                fleet_ca,
                device_id,
                config_dir,
                state_dir,
                socket: socket.clone(),
                secure_element,
                force,
                new_key,
                evict_foreign,
                ops_public_key,
            };
            commands::init(&plan, admin.as_deref(), json)
        }
        Command::Admin {
            admin,
            password_file,
            selftest_only: _,
            selftest_timeout,
            socket,
            json,
        } => commands::admin(
            &posguard_provision::admin::AdminOptions {
                socket,
                admin,
                password_file,
                selftest_timeout: std::time::Duration::from_secs(selftest_timeout),
            },
            json,
        ),
        Command::Csr {
            device_id,
            out,
            element,
        } => commands::csr(&element.config(), &device_id, &out),
        Command::InstallCert {
            chain,
            fleet_ca,
            device_id,
            collector,
            server_name,
            ops_public_key,
            config_dir,
            state_dir,
            socket,
            element,
        } => commands::install_cert(&posguard_provision::offline::InstallPlan {
            secure_element: element.config_in(Some(&config_dir)),
            chain,
            fleet_ca,
            device_id,
            collector,
            server_name,
            ops_public_key,
            config_dir,
            state_dir,
            socket,
        }),
        Command::Status {
            config_dir,
            element,
            json,
        } => commands::status(&element.config_in(Some(&config_dir)), &config_dir, json),
        Command::Renew {
            config_dir,
            element,
        } => commands::renew(&element.config_in(Some(&config_dir)), &config_dir),
        Command::Decommission {
            force,
            timeout,
            record,
            json,
            config_dir,
            state_dir,
            socket,
            yes,
            element,
        } => {
            let device_id = posguard_provision::status::Terminal::read(&config_dir)
                .ok()
                .map(|t| t.device_id);
            let plan = posguard_provision::decommission::Plan {
                element: element.config_in(Some(&config_dir)),
                config_dir,
                state_dir,
                socket,
                force,
                timeout: std::time::Duration::from_secs(timeout),
                record,
                device_id,
            };
            commands::decommission(&plan, yes, json)
        }
        Command::Selftest {
            element,
            check_only,
            json,
        } => {
            let config = element.config();
            let mode = if check_only {
                selftest::Mode::CheckOnly
            } else {
                selftest::Mode::Provision
            };
            if !json {
                say("posguard hardware self-test");
            }
            let mut report = Report::new(json);
            selftest::run(&config, mode, &mut report);
            let ok = report.all_ok();
            if json {
                let doc = serde_json::json!({ "ok": ok, "steps": report.steps() });
                say(&format!("{doc:#}"));
            } else {
                let failed = report.steps().iter().filter(|s| !s.ok).count();
                say(&format!(
                    "self-test {}: {} steps, {} failed",
                    if ok { "PASSED" } else { "FAILED" },
                    report.steps().len(),
                    failed
                ));
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
