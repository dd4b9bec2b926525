//! `posguardctl`: the local operator CLI. It talks to the agent over its Unix socket; the
//! commands arrive with the local API.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use posguard_agent::EXIT_USAGE;

/// Operate a posguard agent on this terminal.
#[derive(Debug, Parser)]
#[command(name = "posguardctl", version, about, long_about = None)]
struct Cli {
    /// The agent's local API socket.
    #[arg(long, default_value = "/run/posguard/agent.sock")]
    socket: std::path::PathBuf,
}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => {
            eprintln!(
                "posguardctl: no command given (socket {}); see --help",
                cli.socket.display()
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
