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
    // Logging first, so that a bad configuration is logged at error priority: under systemd a
    // plain line on stderr reaches the journal at info, and `journalctl -p warning` (what
    // docs/operations.md tells operators to run) would not show why the unit failed.
    let sink = posguard_agent::logging::init("posguard-agent");
    let config = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(config = %path.display(), "invalid configuration: {e}; fix it (`posguard-agent check-config`), then restart");
            if sink == posguard_agent::logging::Sink::AlreadySet {
                // No subscriber of ours: the line above may have gone nowhere.
                eprintln!("posguard-agent: invalid configuration: {e}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let notifier = posguard_agent::notify::Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "systemd notifications disabled");
        posguard_agent::notify::Notifier::disabled()
    });
    let socket = config.api.socket.clone();
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
    let result = runtime.block_on(async {
        let watchdog_stop = tokio_util::sync::CancellationToken::new();
        let watchdog = posguard_agent::notify::watchdog_interval().map(|interval| {
            tokio::spawn(posguard_agent::notify::watchdog(
                notifier.clone(),
                interval,
                watchdog_stop.clone(),
            ))
        });
        let shutdown = {
            let notifier = notifier.clone();
            async move {
                posguard_agent::daemon::termination().await;
                if let Err(e) = notifier.stopping("stopping: closing the journal") {
                    tracing::warn!(error = %e, "STOPPING=1 not sent");
                }
            }
        };
        let ready = {
            let notifier = notifier.clone();
            move || {
                if let Err(e) = notifier.ready(&format!("serving on {}", socket.display())) {
                    tracing::error!(error = %e, "READY=1 not sent; systemd will time the start out");
                }
            }
        };
        let result = posguard_agent::daemon::run(config, shutdown, ready).await;
        watchdog_stop.cancel();
        if let Some(task) = watchdog {
            let _ = task.await;
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("posguard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // A re-executed copy of this binary probing a store for the daemon (or verify-journal).
    if let Some(code) = posguard_agent::storeguard::run_probe_if_asked() {
        return code;
    }
    posguard_agent::storeguard::enable_self_exec();
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
