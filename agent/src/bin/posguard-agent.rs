//! `posguard-agent`: the terminal's security daemon. Argument parsing only; see the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posguard_agent::EXIT_USAGE;
use posguard_agent::config::AgentConfig;

/// The posguard security agent for POS terminals.
#[derive(Debug, Parser)]
#[command(name = "posguard-agent", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/posguard/agent.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration file; each error names the key and the problem (exit 64).
    CheckConfig,
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
    match cli.command {
        Command::CheckConfig => match AgentConfig::load(&cli.config) {
            Ok(_) => {
                println!("{}: configuration is valid", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("posguard-agent: invalid configuration: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}
