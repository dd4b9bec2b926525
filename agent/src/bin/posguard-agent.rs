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
    /// Run the agent (what systemd starts).
    Run,
    /// Validate the configuration file; each error names the key and the problem (exit 64).
    CheckConfig,
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("posguard-agent: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("posguard-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(posguard_agent::daemon::run(
        config,
        posguard_agent::daemon::termination(),
        || {},
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("posguard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Run => run(&cli.config),
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
