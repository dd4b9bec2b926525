//! Login and session benchmark.
//! - the login decision alone (pure policy, no Argon2, no I/O): p50/p99;
//! - a clerk's whole login through the socket (Argon2id verify, throttle state fsynced, the
//!   audit event durable) beside the Argon2id verify alone, so the overhead is the difference;
//! - `touch` (session validation) through the socket with 64 concurrent clients.
//!
//! Run: `cargo bench -p posguard-agent --bench auth`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use posguard_agent::auth::{
    ClerkRecord, ClerkThrottle, LoginAttempt, Role, Secret, TerminalBudget, ThrottlePolicy,
    decide_login, hash_secret, verify_secret,
};
use posguard_agent::config::AgentConfig;
use posguard_hal::KeyMode;
use posguard_hal::testing::Swtpm;
use serde_json::{Value, json};

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn call(r: &mut BufReader<UnixStream>, w: &mut UnixStream, method: &str, params: Value) -> Value {
    w.write_all(
        format!(
            "{}\n",
            json!({"v":1,"id":1,"method":method,"params":params})
        )
        .as_bytes(),
    )
    .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn connect(socket: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(socket).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn decision_alone() {
    let policy = ThrottlePolicy::default();
    let clerk = ClerkRecord {
        role: Role::Clerk,
        enabled: true,
        honeypot: false,
        allowed_hours: Some((6, 22)),
        totp_required: false,
    };
    let mut throttle = ClerkThrottle::default();
    let mut budget = TerminalBudget::default();
    let mut samples = Vec::with_capacity(200_000);
    for i in 0..200_000u64 {
        let attempt = LoginAttempt {
            now_mono: i * 1_000_000_000,
            local_hour: 12,
            lockdown: false,
            secret_ok: i % 7 != 0,
            totp: None,
        };
        let t = Instant::now();
        let d = decide_login(&policy, &clerk, &throttle, &budget, &attempt);
        samples.push(t.elapsed());
        throttle = d.throttle;
        budget = d.budget;
    }
    samples.sort();
    println!(
        "login decision alone (pure policy):   p50 {:7.3} µs   p99 {:7.3} µs",
        us(pct(&samples, 50)),
        us(pct(&samples, 99))
    );
}

fn main() {
    decision_alone();

    let tpm = Swtpm::start().expect("swtpm");
    posguard_hal::open(&tpm.config())
        .unwrap()
        .ensure_identity_key(KeyMode::OpenOrCreate)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("agent.sock");
    let config = AgentConfig::parse(
        &format!(
            "[device]\nid = \"bench\"\n[secure_element]\ntcti = \"{}\"\n[journal]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\nmax_connections = 128\nmax_connections_per_process = 128\n",
            tpm.tcti(),
            dir.path().join("journal").display(),
            dir.path().join("state").display(),
            socket.display()
        ),
        "bench.toml",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let agent = rt.spawn(posguard_agent::daemon::run(
        config,
        async {
            let _ = stop_rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("agent ready");

    let (mut r, mut w) = connect(&socket);
    let enrolled = call(
        &mut r,
        &mut w,
        "clerk.enroll",
        json!({"clerk":"boss","role":"SuperAdmin","secret":"bench password 1"}),
    );
    let seed = posguard_agent::auth::TotpSeed::from_base32(
        enrolled["result"]["totp_secret"].as_str().unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = posguard_agent::auth::totp::code_at(&seed, now);
    let admin = call(
        &mut r,
        &mut w,
        "login",
        json!({"clerk":"boss","secret":"bench password 1","totp":code.as_str()}),
    );
    let admin = admin["result"]["token"].as_str().unwrap().to_owned();
    call(
        &mut r,
        &mut w,
        "clerk.enroll",
        json!({"token": admin, "clerk":"anna","role":"Clerk","secret":"4821"}),
    );

    // Argon2id verify alone, with the agent's default parameters.
    let phc = hash_secret(&Secret::new("4821".into()), &[7; 16], &Default::default()).unwrap();
    let mut hash_samples: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            verify_secret(&Secret::new("4821".into()), &phc).unwrap();
            t.elapsed()
        })
        .collect();
    hash_samples.sort();
    let mut login_samples: Vec<Duration> = (0..40)
        .map(|_| {
            let t = Instant::now();
            let v = call(
                &mut r,
                &mut w,
                "login",
                json!({"clerk":"anna","secret":"4821"}),
            );
            assert_eq!(v["ok"], true, "{v}");
            t.elapsed()
        })
        .collect();
    login_samples.sort();
    println!(
        "whole clerk login via socket:          p50 {:7.3} ms   p99 {:7.3} ms  (Argon2id verify alone p50 {:.3} ms; overhead p50 {:.3} ms)",
        pct(&login_samples, 50).as_secs_f64() * 1e3,
        pct(&login_samples, 99).as_secs_f64() * 1e3,
        pct(&hash_samples, 50).as_secs_f64() * 1e3,
        (pct(&login_samples, 50).as_secs_f64() - pct(&hash_samples, 50).as_secs_f64()) * 1e3
    );

    let token = call(
        &mut r,
        &mut w,
        "login",
        json!({"clerk":"anna","secret":"4821"}),
    )["result"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (socket, token, done, count) =
                (socket.clone(), token.clone(), done.clone(), count.clone());
            std::thread::spawn(move || {
                let (mut r, mut w) = connect(&socket);
                let line = format!(
                    "{}\n",
                    json!({"v":1,"id":1,"method":"touch","params":{"token":token}})
                );
                let mut answer = String::new();
                while !done.load(Ordering::Relaxed) {
                    w.write_all(line.as_bytes()).unwrap();
                    answer.clear();
                    r.read_line(&mut answer).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let start = count.load(Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let n = count.load(Ordering::Relaxed) - start;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    println!("touch via socket, 64 clients:          {rate:9.0} validations/s");

    // The transaction cache through the socket: 1 KiB values, 16 clients.
    let value = data_encoding::BASE64.encode(&[0x42u8; 1024]);
    for method in ["cache.put", "cache.get"] {
        let n_per = 500usize;
        let t = Instant::now();
        let workers: Vec<_> = (0..16)
            .map(|c| {
                let (socket, value) = (socket.clone(), value.clone());
                std::thread::spawn(move || {
                    let (mut r, mut w) = connect(&socket);
                    for i in 0..n_per {
                        let id = format!("txn-{c}-{i}");
                        let params = if method == "cache.put" {
                            json!({"id": id, "value_b64": value})
                        } else {
                            json!({"id": id})
                        };
                        let v = call(&mut r, &mut w, method, params);
                        assert_eq!(v["ok"], true, "{v}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let rate = (16 * n_per) as f64 / t.elapsed().as_secs_f64();
        println!("{method} 1 KiB via socket, 16 clients: {rate:9.0} records/s");
    }
    let _ = stop_tx.send(());
    rt.block_on(agent).unwrap().unwrap();
}
