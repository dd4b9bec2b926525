//! The POS workload of the power-cut test (`scripts/vm/`; not shipped).
//!
//! `load`: over the local API, `--workers` connections append audit events (`audit.record`,
//! reference `a<tag>-<worker>-<i>`) and as many write cache records (`cache.put`, id
//! `c<tag>-<worker>-<i>`, value derived from the id) as fast as the agent answers, until killed.
//! Each acknowledgement is written at once, one line with a single `write`, to standard output
//! (in the VM a serial port, so that it leaves the guest as it happens; the POS user cannot open
//! the port itself, its shell hands it over):
//!
//! - `ack <seq> a<tag>-<worker>-<i>`: the event is durable with that journal seq;
//! - `put c<tag>-<worker>-<i>`: the cache record is durable;
//! - `error <text>`: a call failed (the worker stops).
//!
//! `check`: reads every cache record back (`cache.list`, `cache.get`) and prints, per prefix
//! `c<tag>-<worker>`, how many consecutive records from 0 read back with the expected value
//! (`prefix c3-1 412`), and `bad <id>` for a record that is there with another value. The
//! host compares this with the `put` lines it saw: a worker writes its records in order, so
//! every acknowledged record is there iff the prefix reaches past the last acknowledged one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use data_encoding::BASE64;
use posguard_agent::api::client::Client;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "POS workload and cache check for the power-cut test")]
struct Args {
    /// The agent's socket.
    #[arg(long, default_value = "/run/posguard/agent.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append events and write cache records until killed.
    Load {
        /// Distinguishes this run's records from earlier boots' (e.g. the boot number).
        #[arg(long)]
        tag: String,
        /// Connections per kind (events and cache).
        #[arg(long, default_value_t = 4)]
        workers: usize,
    },
    /// Read every cache record back and print the consecutive prefixes.
    Check,
    /// Print `head_seq shipped_seq condition` from `status` (one line, for shell scripts).
    Status,
}

/// The value stored under `id`: 256 bytes that depend on it, so a record read back under
/// another id, or a torn one, is caught.
fn value_of(id: &str) -> Vec<u8> {
    id.bytes().cycle().take(256).collect()
}

/// One line to the acknowledgement port, written whole.
fn say(out: &Mutex<std::io::Stdout>, line: &str) {
    if let Ok(out) = out.lock() {
        let mut out = out.lock();
        // A lost line only makes the host count less as acknowledged: never more.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

async fn events(socket: PathBuf, tag: String, worker: usize, out: Arc<Mutex<std::io::Stdout>>) {
    let mut client = match Client::connect(&socket).await {
        Ok(c) => c,
        Err(e) => return say(&out, &format!("error connect: {e}\n")),
    };
    for i in 0u64.. {
        let reference = format!("a{tag}-{worker}-{i}");
        let params = json!({"action": "sale", "reference": reference});
        match client.call("audit.record", params).await {
            Ok(result) => {
                let seq = result.get("seq").and_then(|s| s.as_u64()).unwrap_or(0);
                say(&out, &format!("ack {seq} {reference}\n"));
            }
            Err(e) => return say(&out, &format!("error audit.record: {e}\n")),
        }
    }
}

async fn puts(socket: PathBuf, tag: String, worker: usize, out: Arc<Mutex<std::io::Stdout>>) {
    let mut client = match Client::connect(&socket).await {
        Ok(c) => c,
        Err(e) => return say(&out, &format!("error connect: {e}\n")),
    };
    for i in 0u64.. {
        let id = format!("c{tag}-{worker}-{i}");
        let params = json!({"id": id, "value_b64": BASE64.encode(&value_of(&id))});
        match client.call("cache.put", params).await {
            Ok(_) => say(&out, &format!("put {id}\n")),
            Err(e) => return say(&out, &format!("error cache.put: {e}\n")),
        }
    }
}

async fn check(socket: PathBuf) -> anyhow::Result<()> {
    let mut client = Client::connect(&socket).await?;
    // prefix -> indexes present with the right value
    let mut present: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let params = match &after {
            Some(a) => json!({"after": a, "limit": 1000}),
            None => json!({"limit": 1000}),
        };
        let page = client.call("cache.list", params).await?;
        let items = page.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in &items {
            let Some(id) = item.get("id").and_then(|i| i.as_str()) else {
                continue;
            };
            after = Some(id.to_owned());
            let got = client.call("cache.get", json!({"id": id})).await?;
            let value = got
                .get("value_b64")
                .and_then(|v| v.as_str())
                .map(|v| BASE64.decode(v.as_bytes()))
                .transpose()?;
            if value.as_deref() != Some(value_of(id).as_slice()) {
                println!("bad {id}");
                continue;
            }
            if let Some((prefix, index)) = id.rsplit_once('-')
                && let Ok(index) = index.parse::<u64>()
            {
                present.entry(prefix.to_owned()).or_default().push(index);
            }
        }
    }
    for (prefix, mut indexes) in present {
        indexes.sort_unstable();
        let run = indexes
            .iter()
            .enumerate()
            .take_while(|(n, i)| *n as u64 == **i)
            .count();
        println!("prefix {prefix} {run}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Load { tag, workers } => {
            let out = Arc::new(Mutex::new(std::io::stdout()));
            let mut tasks = Vec::new();
            for worker in 0..workers {
                let (s, t, o) = (args.socket.clone(), tag.clone(), out.clone());
                tasks.push(tokio::spawn(events(s, t, worker, o)));
                let (s, t, o) = (args.socket.clone(), tag.clone(), out.clone());
                tasks.push(tokio::spawn(puts(s, t, worker, o)));
            }
            for task in tasks {
                task.await?;
            }
            Ok(())
        }
        Command::Check => check(args.socket).await,
        Command::Status => {
            let status = Client::connect(&args.socket)
                .await?
                .call("status", json!({}))
                .await?;
            let number = |p: &str| status.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
            let condition = status
                .get("condition")
                .and_then(|c| c.as_str())
                .unwrap_or("?");
            println!(
                "{} {} {condition}",
                number("/journal/head_seq"),
                number("/journal/shipped_seq")
            );
            Ok(())
        }
    }
}
