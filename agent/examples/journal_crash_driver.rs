//! Crash-test driver for the audit journal (used by `agent/tests/journal_crash.rs`; not shipped).
//!
//! Opens the journal at `--dir` with the software backend (`--keys DIR`) or a TPM (`--tcti`),
//! then appends from 8 threads as fast as it can until it is killed. Protocol on stdout, one
//! line per message, each written with a single `write` and flushed:
//!
//! - `open <head_seq>`: the journal opened; its head after the start-up check.
//! - `finding <text>`: the start-up check reported a tamper/rollback/unreadable finding.
//! - `ack <seq>`: an append was acknowledged, i.e. record `seq` is durable.
//! - `error <text>`: an append failed (the driver then exits with status 1).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use posguard_agent::clock::Clock;
use posguard_agent::journal::{Journal, JournalConfig};
use posguard_hal::{KeyMode, SecureElementConfig};
use posguard_proto::event::{Actor, Event, EventKind, PosAction, PosEvent};
use posguard_proto::text::{DeviceId, SafeText, ShortCode};

const THREADS: usize = 8;

#[derive(Debug, Parser)]
#[command(about = "Appends to the audit journal from 8 threads until killed")]
struct Args {
    /// Journal directory (sled database).
    #[arg(long)]
    dir: PathBuf,
    /// Key directory of the software secure element.
    #[arg(long, required_unless_present = "tcti", conflicts_with = "tcti")]
    keys: Option<PathBuf>,
    /// TCTI of a TPM (e.g. `swtpm:host=127.0.0.1,port=2321`).
    #[arg(long)]
    tcti: Option<String>,
    /// Device id the journal belongs to.
    #[arg(long)]
    device_id: String,
}

/// Writes one whole line to stdout with a single write and flushes it.
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

fn event(thread: usize, i: u64, clock: &Clock) -> anyhow::Result<Event> {
    Ok(Event::new(
        clock.stamp(),
        Actor::System,
        None,
        EventKind::Pos(PosEvent {
            action: PosAction::Other(ShortCode::new("crash")?),
            amount: None,
            reference: Some(SafeText::new(format!("t{thread}-{i}"))?),
        }),
    ))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let se_config = match (&args.keys, &args.tcti) {
        (Some(keys), _) => SecureElementConfig::software(keys),
        (None, Some(tcti)) => SecureElementConfig::tpm(tcti.clone()),
        (None, None) => anyhow::bail!("one of --keys and --tcti is required"),
    };
    let element = posguard_hal::open(&se_config).context("opening the secure element")?;
    element
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .context("opening the identity key")?;
    let device = DeviceId::new(args.device_id.clone()).context("--device-id")?;
    let clock = Clock::system();
    let (journal, report) = Journal::open(&JournalConfig::at(&args.dir), device, element, clock)
        .context("opening the journal")?;
    if let Some(finding) = &report.finding {
        let text = finding.to_string().replace('\n', " ");
        say(&format!("finding {text}\n"))?;
    }
    say(&format!("open {}\n", report.head_seq))?;

    let journal = Arc::new(journal);
    let mut threads = Vec::with_capacity(THREADS);
    for t in 0..THREADS {
        let journal = Arc::clone(&journal);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            for i in 0u64.. {
                match journal.append_blocking(event(t, i, &clock)?) {
                    // A closed stdout means the test has gone: stop quietly.
                    Ok(seq) => {
                        if say(&format!("ack {seq}\n")).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        let _ = say(&format!("error {}\n", e.to_string().replace('\n', " ")));
                        return Err(e.into());
                    }
                }
            }
            Ok(())
        }));
    }
    let mut failed = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("an append thread panicked")),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            journal.shutdown_blocking()?;
            Ok(())
        }
    }
}
