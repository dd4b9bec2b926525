//! `posguardctl`: the local operator CLI. Argument parsing only; see the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posguard_agent::EXIT_USAGE;

/// `println!` that ignores a closed stdout (output piped into `head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use posguard_agent::journal::{Verdict, verify_dir};

/// Operate a posguard agent on this terminal.
#[derive(Debug, Parser)]
#[command(name = "posguardctl", version, about, long_about = None)]
struct Cli {
    /// The agent's local API socket.
    #[arg(long, default_value = "/run/posguard/agent.sock", global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in as a clerk: the PIN or password is read without echo, then the TOTP code if the
    /// role needs one. Prints the session token.
    Login {
        /// The clerk id.
        clerk: String,
    },
    /// The transaction cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Show the agent's status: identity, secure element, journal, any tamper condition.
    Status,
    /// Call any local API method with JSON parameters and print the result (for scripts).
    Call {
        /// Method name, e.g. `audit.record`.
        method: String,
        /// Parameters as a JSON object.
        #[arg(default_value = "{}")]
        params: String,
    },
    /// Print the events of a journal offline, one JSON object per line (seq and event).
    JournalEvents {
        /// The journal directory.
        path: PathBuf,
    },
    /// Verify an audit journal offline (on the terminal, or a copy taken from one): hash chain,
    /// signatures, declared gaps, last checkpoint. Says what it proved: the records verified,
    /// the last TPM-anchored seq and how many records follow it unanchored. Exit codes: 0
    /// verified and anchored to the end, 1 a bad record (named), 2 verified but with an
    /// unanchored tail (a cut there would not show), 3 the database cannot be read at all (not a
    /// journal, or damaged beyond opening), 64 bad usage.
    VerifyJournal {
        /// The journal directory (default on a terminal: /var/lib/posguard/journal).
        path: PathBuf,
        /// Check signatures against this device identity public key (SPKI DER file) instead of
        /// the one the journal stored when it was created.
        #[arg(long, value_name = "FILE")]
        identity_key: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Rotate the cache's data key (Admin session): a new key version now, records
    /// re-encrypted in the background, the old key destroyed once no record uses it.
    RotateKey {
        /// An Admin or SuperAdmin session token (from `posguardctl login`); default: the
        /// POSGUARD_TOKEN environment variable.
        #[arg(long, env = "POSGUARD_TOKEN", hide_env_values = true)]
        token: String,
    },
}

/// The agent's refusal or the connection's failure, and what to do about it.
fn report(e: &posguard_agent::api::client::ClientError) {
    eprintln!("posguardctl: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("posguardctl: {hint}");
    }
}

fn call(socket: &std::path::Path, method: &str, params: &str) -> ExitCode {
    let params: serde_json::Value = match serde_json::from_str(params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("posguardctl: parameters are not JSON: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("posguardctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut client = posguard_agent::api::client::Client::connect(socket).await?;
        client.call(method, params).await
    });
    match result {
        Ok(value) => {
            say!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

fn login(socket: &std::path::Path, clerk: &str) -> ExitCode {
    use posguard_agent::prompt::read_secret;
    let secret = match read_secret("PIN or password: ") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("posguardctl: cannot read the secret: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("posguardctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut client = posguard_agent::api::client::Client::connect(socket).await?;
        let first = client
            .call(
                "login",
                serde_json::json!({"clerk": clerk, "secret": secret.as_str()}),
            )
            .await?;
        if first.pointer("/status").cloned().unwrap_or_default() == "mfa_required" {
            let code =
                read_secret("TOTP code: ").map_err(posguard_agent::api::client::ClientError::Io)?;
            client
                .call(
                    "verify_mfa",
                    serde_json::json!({"challenge": first.pointer("/challenge").cloned().unwrap_or_default(), "totp": code.as_str()}),
                )
                .await
        } else {
            Ok(first)
        }
    });
    match result {
        Ok(granted) => {
            eprintln!(
                "logged in as {} ({})",
                clerk,
                granted
                    .pointer("/role")
                    .cloned()
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            );
            say!(
                "{}",
                granted
                    .pointer("/token")
                    .cloned()
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// `verify-journal`: the database cannot be read at all (documented in docs/journal.md).
const EXIT_UNREADABLE: u8 = 3;

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
        Command::Status => call(&cli.socket, "status", "{}"),
        Command::Cache {
            action: CacheAction::RotateKey { token },
        } => call(
            &cli.socket,
            "cache.rotate_key",
            &serde_json::json!({ "token": token }).to_string(),
        ),
        Command::Login { clerk } => login(&cli.socket, &clerk),
        Command::JournalEvents { path } => match posguard_agent::journal::read_events(&path) {
            Ok(events) => {
                for (seq, event) in events {
                    say!("{}", serde_json::json!({ "seq": seq, "event": event }));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("posguardctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Call { method, params } => call(&cli.socket, &method, &params),
        Command::VerifyJournal {
            path,
            identity_key,
            json,
        } => {
            let key = match identity_key.map(std::fs::read).transpose() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("posguardctl: cannot read the identity key: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let report = match verify_dir(&path, key.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    if json {
                        say!("{}", serde_json::json!({ "unreadable": e.to_string() }));
                    } else {
                        say!("UNREADABLE: no record could be verified: {e}");
                    }
                    eprintln!("posguardctl: {e}");
                    return ExitCode::from(EXIT_UNREADABLE);
                }
            };
            if json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                say!("journal of device {}", report.device_id);
                say!(
                    "  records verified: {} (seq {} to {})",
                    report.records,
                    report.first_seq.map_or("-".to_owned(), |s| s.to_string()),
                    report.head_seq
                );
                match report.last_checkpoint {
                    Some((seq, counter)) => say!(
                        "  last TPM-anchored seq: {seq} (checkpoint with TPM counter {counter})"
                    ),
                    None => say!("  last TPM-anchored seq: none (no checkpoint verified)"),
                }
                if report.first_bad.is_none() {
                    say!("  records after it, not anchored: {}", report.unanchored);
                }
                if report.dik_from_journal {
                    say!(
                        "  identity key: the one stored in the journal (use --identity-key to check against a known key)"
                    );
                }
                match (&report.first_bad, report.verdict) {
                    (Some((seq, why)), _) => say!("FAILED: first bad record is seq {seq}: {why}"),
                    (None, Verdict::UnanchoredTail) => say!(
                        "VERIFIED, TAIL NOT ANCHORED: records {}..={} verify, but the journal does not end with a clean stop ({} records after the last checkpoint), so records cut after seq {} would not show here (compare with the collector's acknowledged seq)",
                        report.first_seq.unwrap_or(report.head_seq),
                        report.head_seq,
                        report.unanchored,
                        report.head_seq
                    ),
                    (None, _) => say!(
                        "VERIFIED AND ANCHORED: records {}..={} verify and end with a clean stop whose checkpoint covers seq {}; complete as of its TPM counter value (the agent compares it with the TPM's at start)",
                        report.first_seq.map_or("-".to_owned(), |s| s.to_string()),
                        report.head_seq,
                        report.head_seq
                    ),
                }
            }
            ExitCode::from(report.verdict.exit_code())
        }
    }
}
