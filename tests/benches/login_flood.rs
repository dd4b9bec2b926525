//! A real clerk's login while 64 local clients flood the agent with wrong passwords (issue 15,
//! point 6), and the agent's peak memory meanwhile.
//!
//! The release `posguard-agent` runs on swtpm with its default `[api]` and `[auth.hashing]`
//! limits and the environment of its systemd unit; only the terminal-wide failure budget is set
//! as loose as allowed, so that the flood keeps costing hashes instead of blocking every login.
//! 64 threads of this process flood `login` for unknown clerks (each costs the decoy Argon2id
//! check) and reconnect at once when refused `busy`. The clerk logs in with `posguardctl call
//! login` (another process) again and again, first on a quiet agent, then during the flood;
//! `VmRSS` is sampled every 5 ms.
//!
//! Run: `./scripts/bench.sh login_flood`. Under `cargo test` (no `--bench`) it runs as a short
//! smoke test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use posguard_e2e::{AgentProcess, command};
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

const FLOODERS: usize = 64;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `Environment=` lines of `systemd/posguard-agent.service`: the agent as deployed.
fn unit_env() -> Vec<(String, String)> {
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/posguard-agent.service"
    );
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn call(socket: &Path, method: &str, params: Value) -> Value {
    let s = UnixStream::connect(socket).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        format!(
            "{}\n",
            json!({"v":1,"id":1,"method":method,"params":params})
        )
        .as_bytes(),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{method}: {v}");
    v["result"].clone()
}

/// One login of the clerk through `posguardctl`; how long it took.
fn real_login(socket: &Path) -> Duration {
    let t = Instant::now();
    let out = command("posguardctl")
        .arg("--socket")
        .arg(socket)
        .args(["call", "login", r#"{"clerk":"anna","secret":"4821"}"#])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("granted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn logins(socket: &Path, n: usize) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n).map(|_| real_login(socket)).collect();
    v.sort();
    v
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100 } else { 5 };
    let tpm = Swtpm::start().unwrap();
    posguard_hal::open(&tpm.config())
        .unwrap()
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"bench-flood\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n\
             [storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\
             [auth.throttle]\nbudget_failures = 1000\nbudget_window_secs = 1\n",
            tpm.tcti(),
            dir.path().join("journal").display(),
            dir.path().join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    let env = unit_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent = AgentProcess::start_with_env(&config, &socket, &env);
    let pid = agent.pid();

    let enrolled = call(
        &socket,
        "clerk.enroll",
        json!({"clerk":"boss","role":"SuperAdmin","secret":"bench password 1"}),
    );
    let seed =
        posguard_agent::auth::TotpSeed::from_base32(enrolled["totp_secret"].as_str().unwrap())
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = posguard_agent::auth::totp::code_at(&seed, now);
    let admin = call(
        &socket,
        "login",
        json!({"clerk":"boss","secret":"bench password 1","totp":code.as_str()}),
    );
    call(
        &socket,
        "clerk.enroll",
        json!({"token": admin["token"], "clerk":"anna","role":"Clerk","secret":"4821"}),
    );

    let quiet = logins(&socket, n);
    let idle_rss = rss_kib(pid).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (failed, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (socket, stop, failed, busy) =
                (socket.clone(), stop.clone(), failed.clone(), busy.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(s) = UnixStream::connect(&socket) else {
                        continue;
                    };
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let req = json!({"v":1,"id":n,"method":"login",
                            "params":{"clerk":format!("intruder{i}x{n}"),"secret":"0000"}});
                        let mut line = String::new();
                        if w.write_all(format!("{req}\n").as_bytes()).is_err()
                            || r.read_line(&mut line).unwrap_or(0) == 0
                        {
                            break;
                        }
                        if line.contains("\"busy\"") {
                            busy.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(now) = rss_kib(pid) else { break };
                peak.fetch_max(now, Ordering::Relaxed);
                // The RSS probe's sampling interval.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Let the flood fill the connection slots and the hashing queue first.
    let t = Instant::now();
    while failed.load(Ordering::Relaxed) < FLOODERS as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the flood got no answers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let flooded = logins(&socket, n);
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    sampler.join().unwrap();
    let after = Instant::now() + Duration::from_secs(10);
    let mut settled = rss_kib(pid).unwrap();
    while settled > idle_rss + 4096 && Instant::now() < after {
        std::thread::sleep(Duration::from_millis(50));
        settled = rss_kib(pid).unwrap();
    }
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "clerk login (posguardctl), quiet agent:            p50 {:7.1} ms   p99 {:7.1} ms   ({n} logins)",
        pct(&quiet, 50),
        pct(&quiet, 99)
    );
    println!(
        "clerk login (posguardctl), {FLOODERS} clients flooding: p50 {:7.1} ms   p99 {:7.1} ms   max {:7.1} ms",
        pct(&flooded, 50),
        pct(&flooded, 99),
        pct(&flooded, 100)
    );
    println!(
        "flood meanwhile: {:.0} wrong passwords checked/s, {:.0} answered busy/s",
        failed.load(Ordering::Relaxed) as f64 / secs,
        busy.load(Ordering::Relaxed) as f64 / secs
    );
    println!(
        "agent VmRSS: idle {:.1} MiB, peak during the flood {:.1} MiB, after it {:.1} MiB (bound 64 MiB)",
        mib(idle_rss),
        mib(peak.load(Ordering::Relaxed)),
        mib(settled)
    );
    assert!(agent.stop().success());
}
