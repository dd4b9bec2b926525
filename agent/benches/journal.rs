//! Journal benchmark: durable appends per second and commit latency (p50/p99) with 1, 16 and
//! 256 concurrent producers on a real software TPM, beside the ceilings measured in the same
//! run (a raw sled insert + fsync loop, Ed25519 signing alone, SHA-256 alone), then the
//! agent's memory with a journal filled to its 64 MiB bound.
//! Run: `cargo bench -p posguard-agent --bench journal` (figures go to docs/PERFORMANCE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use posguard_agent::clock::Clock;
use posguard_agent::journal::{Journal, JournalConfig, dir_size};
use posguard_hal::testing::Swtpm;
use posguard_hal::{KeyMode, SecureElement};
use posguard_proto::event::{Actor, Event, EventKind, PosAction, PosEvent};
use posguard_proto::text::{DeviceId, SafeText};

fn event(i: u64) -> Event {
    Event::new(
        Clock::system().stamp(),
        Actor::System,
        None,
        EventKind::Pos(PosEvent {
            action: PosAction::DrawerOpen,
            amount: None,
            reference: Some(SafeText::new(format!("till-7 receipt R-{}", i % 977)).unwrap()),
        }),
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn open(dir: &std::path::Path, se: &Arc<dyn SecureElement>) -> Journal {
    let (j, _) = Journal::open(
        &JournalConfig::at(dir),
        DeviceId::new("bench-0001").unwrap(),
        se.clone(),
        Clock::system(),
    )
    .unwrap();
    j
}

fn producers(se: &Arc<dyn SecureElement>, count: usize, total: usize) -> (f64, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir.path().join("journal"), se);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per = total / count;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..count {
            let j = journal.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t = Instant::now();
                    j.append(event((p * per + i) as u64)).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    journal.shutdown_blocking().unwrap();
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    (rate, percentile(&latencies, 50), percentile(&latencies, 99))
}

fn raw_sled_fsync() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .unwrap();
    let file = std::fs::File::open(dir.path().join("db")).unwrap();
    let mut samples = Vec::new();
    for i in 0u64..500 {
        let t = Instant::now();
        db.insert(i.to_be_bytes(), vec![0x5Au8; 200]).unwrap();
        db.flush().unwrap();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    percentile(&samples, 50)
}

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("memory-child") {
        return memory_child(&args[2], &args[3]);
    }
    let swtpm = Swtpm::start().expect("swtpm must be installed (apt-get install swtpm)");
    let se: Arc<dyn SecureElement> = posguard_hal::open(&swtpm.config()).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();

    println!("ceilings measured in this run:");
    let fsync = raw_sled_fsync();
    println!(
        "  raw sled insert + flush + fdatasync   median {:8.3} ms",
        ms(fsync)
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let sign = per_op(20_000, || {
        use ed25519_dalek::Signer;
        std::hint::black_box(key.sign(&[1u8; 40]));
    });
    println!(
        "  Ed25519 sign alone                    {:8.2} µs/op ({:.0}/s)",
        sign.as_secs_f64() * 1e6,
        1.0 / sign.as_secs_f64()
    );
    let body = vec![0xA5u8; 200];
    let hash = per_op(200_000, || {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &body));
    });
    println!(
        "  SHA-256 of a 200-byte record alone    {:8.2} µs/op ({:.0}/s)",
        hash.as_secs_f64() * 1e6,
        1.0 / hash.as_secs_f64()
    );

    println!("durable appends (group commit, TPM checkpoints every 1000 records):");
    for (count, total) in [(1usize, 2_000usize), (16, 40_000), (256, 100_000)] {
        let (rate, p50, p99) = producers(&se, count, total);
        println!(
            "  {count:>3} producers: {rate:>9.0} events/s   commit latency p50 {:7.3} ms  p99 {:7.3} ms",
            ms(p50),
            ms(p99)
        );
        if count == 1 {
            println!(
                "      1 producer p50 minus raw fsync median: {:+.3} ms",
                ms(p50) - ms(fsync)
            );
        }
    }

    println!("memory with a journal filled to its 64 MiB bound:");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    {
        let j = open(&path, &se);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for p in 0..64u64 {
                let j = j.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..4_000u64 {
                        j.append(event(p * 4_000 + i)).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let status = j.status_blocking().unwrap();
        println!(
            "  filled: {} records stored, {} dropped (unshipped overflow), {:.1} MiB on disk",
            status.records,
            status.dropped,
            dir_size(&path) as f64 / 1048576.0
        );
        j.shutdown_blocking().unwrap();
    }
    // Measure in a fresh process, as the agent would be after a restart: nothing of the
    // benchmark above counts. swtpm serves one client at a time, so let go of ours first.
    drop(se);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["memory-child", path.to_str().unwrap(), &swtpm.tcti()])
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// Child process: open the full journal (full verification), append 1000 events, report RSS.
fn memory_child(path: &str, tcti: &str) {
    let se = posguard_hal::open(&posguard_hal::SecureElementConfig::tpm(tcti)).unwrap();
    let (before, _) = rss_kib();
    let t = Instant::now();
    let j = open(std::path::Path::new(path), &se);
    let open_time = t.elapsed();
    for i in 0..1000 {
        j.append_blocking(event(i)).unwrap();
    }
    let (rss, hwm) = rss_kib();
    println!(
        "  open with full verification: {:.0} ms; process RSS {:.1} MiB (peak {:.1} MiB, {:.1} MiB before opening)",
        ms(open_time),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        before as f64 / 1024.0
    );
    j.shutdown_blocking().unwrap();
}
