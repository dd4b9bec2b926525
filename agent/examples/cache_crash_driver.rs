//! Crash-test driver for the transaction cache's key rotation (used by `agent/tests/cache.rs`;
//! not shipped).
//!
//! Opens the keyring in `--state` and the cache in `--state/cache` with the software backend
//! (`--keys DIR`) or a TPM (`--tcti`), makes sure records `rec-0..rec-<N>` exist with their
//! expected values ([`expected`]), prints `filled`, then rotates and re-encrypts in a loop while
//! a second thread keeps rewriting records with the same values, until it is killed. Each line
//! is written with a single `write` and flushed: `filled`, `rotated <version>`,
//! `pass <reencrypted> <retired…>`, `error <text>`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use posguard_agent::cache::{Cache, CacheConfig, NoAudit, RecordId};
use posguard_agent::datakey::Keyring;
use posguard_hal::SecureElementConfig;

#[derive(Debug, Parser)]
#[command(about = "Fills the cache, then rotates its key in a loop until killed")]
struct Args {
    /// State directory (data key files; the cache in `cache/`).
    #[arg(long)]
    state: PathBuf,
    /// Key directory of the software secure element.
    #[arg(long, required_unless_present = "tcti", conflicts_with = "tcti")]
    keys: Option<PathBuf>,
    /// TCTI of a TPM.
    #[arg(long)]
    tcti: Option<String>,
    /// How many records.
    #[arg(long, default_value_t = 200)]
    records: usize,
}

/// The value record `i` always holds.
fn expected(i: usize) -> Vec<u8> {
    format!(
        "{{\"sale\":{i},\"items\":[\"coffee\",\"bagel\"],\"total_minor\":{}}}",
        i * 7
    )
    .into_bytes()
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let se_config = match (&args.keys, &args.tcti) {
        (Some(keys), _) => SecureElementConfig::software(keys),
        (None, Some(tcti)) => SecureElementConfig::tpm(tcti.clone()),
        (None, None) => anyhow::bail!("one of --keys and --tcti is required"),
    };
    let element = posguard_hal::open(&se_config).context("opening the secure element")?;
    let keyring = Keyring::open(element, &args.state).context("opening the keyring")?;
    let config = CacheConfig::at(args.state.join("cache"));
    let cache = Cache::open(&config, keyring, Arc::new(NoAudit)).context("opening the cache")?;
    let ids: Vec<RecordId> = (0..args.records)
        .map(|i| RecordId::new(format!("rec-{i}")))
        .collect::<Result<_, _>>()?;
    for (i, id) in ids.iter().enumerate() {
        if cache.get(id).ok().map(|s| s.value.to_vec()) != Some(expected(i)) {
            cache.put(id, &expected(i), None)?;
        }
    }
    say("filled\n")?;
    let writer = {
        let (cache, ids) = (cache.clone(), ids.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            loop {
                for (i, id) in ids.iter().enumerate().step_by(7) {
                    cache.put(id, &expected(i), None)?;
                }
            }
        })
    };
    loop {
        if writer.is_finished() {
            let e = match writer.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "the writer stopped".to_owned(),
            };
            say(&format!("error {}\n", e.replace('\n', " ")))?;
            anyhow::bail!("writer failed");
        }
        let version = cache.rotate_key()?;
        say(&format!("rotated {version}\n"))?;
        let report = cache.reencrypt()?;
        say(&format!(
            "pass {} {:?}\n",
            report.reencrypted, report.retired
        ))?;
    }
}
