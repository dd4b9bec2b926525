//! `posguard-provision`: the field technician's CLI. Argument parsing only; see the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posguard_hal::SecureElementConfig;
use posguard_provision::report::Report;
use posguard_provision::selftest;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Bring up, check, renew and decommission a posguard terminal.
#[derive(Debug, Parser)]
#[command(name = "posguard-provision", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exercise the secure element: key, signature, sealing, counter, RNG; one line per step.
    Selftest {
        /// TPM TCTI (default: the kernel resource manager, device:/dev/tpmrm0).
        #[arg(long, default_value = posguard_hal::config::DEFAULT_TCTI)]
        tcti: String,
        /// Use the software backend with keys in this directory instead of a TPM (development
        /// only: keys are files, not hardware).
        #[arg(long, value_name = "DIR")]
        software_keys: Option<PathBuf>,
        /// Only check what exists; do not create the identity key or the counter.
        #[arg(long)]
        check_only: bool,
        /// Print a machine-readable JSON report instead of progress lines.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a line; a closed stdout is not an error worth a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match cli.command {
        Command::Selftest {
            tcti,
            software_keys,
            check_only,
            json,
        } => {
            let config = match software_keys {
                Some(dir) => SecureElementConfig::software(dir),
                None => SecureElementConfig::tpm(tcti),
            };
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
