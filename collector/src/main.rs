//! `posguard-collector`: the fleet's central collector and its operations CLI.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use posguard_collector::EXIT_USAGE;

/// Receive, verify, store and alert on the audit trails of a fleet of posguard terminals.
#[derive(Debug, Parser)]
#[command(name = "posguard-collector", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/posguard/collector.toml")]
    config: std::path::PathBuf,
}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => {
            eprintln!(
                "posguard-collector: no command given (config {}); see --help",
                cli.config.display()
            );
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}
