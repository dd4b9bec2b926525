//! Collector ingest from a simulated fleet: the real `posguard-collector` binary (release build)
//! receives signed, hash-chained journals from 1,000 devices, each with its own certificate
//! (software keys in the load generator) and its own TLS 1.3 connection.
//!
//! What is measured: verified-and-stored events per second in the steady state (all connections
//! open; every request answered 200 with `highest_stored` equal to its last seq, which the
//! collector only says after its store transaction committed), and the request latency (p50,
//! p99) seen by the load generator. The handshake phase is timed separately.
//!
//! Run: `./scripts/bench.sh ingest` (builds the release binaries first). Knobs, all optional:
//! `POSGUARD_BENCH_DEVICES` (1000), `POSGUARD_BENCH_RECORDS` per device (600),
//! `POSGUARD_BENCH_BATCH` records per request (200), `POSGUARD_BENCH_INFLIGHT` concurrent
//! requests (64).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use posguard_e2e::{CollectorProcess, Fleet, free_port};
use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::checkpoint::UnsignedCheckpoint;
use posguard_proto::event::{Actor, Event, EventKind, PosAction, PosEvent, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, Currency, DeviceId, SafeText};
use posguard_proto::uplink::{DeviceStatus, UplinkAck, UplinkBatch};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Checkpoint interval, as the agent's default.
const CHECKPOINT_EVERY: u64 = 1000;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One simulated terminal: its TLS identity and its journal, cut into request bodies.
struct Device {
    cert: Vec<u8>,
    key: Vec<u8>,
    bodies: Vec<(Bytes, u64)>,
}

/// One device's connection and the request bodies it still has to send (with each body's
/// last seq).
type DeviceWork = (
    SendRequest<Full<Bytes>>,
    Arc<rustls::ClientConfig>,
    Vec<(Bytes, u64)>,
);

/// A POS business event of typical size.
fn pos_event(boot_id: [u8; 16], i: u64) -> Event {
    let stamp = Stamp {
        wall_ms: 1_763_900_000_000 + i * 250,
        mono_ns: 1_000_000 * i,
        boot_id,
    };
    let kind = EventKind::Pos(PosEvent {
        action: if i.is_multiple_of(3) {
            PosAction::Refund
        } else {
            PosAction::DrawerOpen
        },
        amount: Some(posguard_proto::event::Money {
            minor: (1_000 + i).try_into().unwrap(),
            currency: Currency::new("EUR").unwrap(),
        }),
        reference: Some(SafeText::new(format!("receipt {i:08}")).unwrap()),
    });
    Event::new(
        stamp,
        Actor::Clerk(ClerkId::new(format!("clerk{:02}", i % 7)).unwrap()),
        None,
        kind,
    )
}

/// Builds one device's journal (a journal-key certificate, `records` signed records, a
/// checkpoint every [`CHECKPOINT_EVERY`]) and cuts it into uplink batches as the agent would.
fn device(fleet: &Fleet, n: usize, records: u64, batch: u64) -> Device {
    let id = format!("bench-{n:05}");
    let device_id = DeviceId::new(&id).unwrap();
    let (cert, key) = fleet.software_device(&id);
    let rng = SystemRandom::new();
    let dik = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key, &rng).unwrap();
    let dik_sign = |msg: &[u8]| dik.sign(&rng, msg).unwrap().as_ref().to_vec();
    let seed: [u8; 32] = std::array::from_fn(|i| (i as u8) ^ (n as u8) ^ ((n >> 8) as u8));
    let jk = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let jk_public: [u8; 32] = jk.public_key().as_ref().try_into().unwrap();
    let key_id = journal_key_id(&jk_public);
    let boot_id = [n as u8; 16];
    let jk_cert = UnsignedJournalKeyCert {
        device_id: device_id.clone(),
        boot_id,
        journal_public_key: jk_public,
        first_seq: 1,
        issued_wall_ms: 1_763_900_000_000,
    };
    let sig = dik_sign(&jk_cert.signing_bytes());
    let jk_cert = jk_cert.into_cert(sig).unwrap();
    let mut head = ChainHead::genesis(&device_id);
    let mut bodies = Vec::new();
    let mut nv = 0;
    let mut seq = 0;
    while seq < records {
        let mut b = UplinkBatch::new();
        b.certs = vec![jk_cert.as_bytes().to_vec()];
        for _ in 0..batch.min(records - seq) {
            seq += 1;
            let r = Record::build(&head, key_id, &pos_event(boot_id, seq), |m| {
                jk.sign(m).as_ref().try_into().unwrap()
            })
            .unwrap();
            head = r.head();
            if seq % CHECKPOINT_EVERY == 0 {
                nv += 1;
                let cp = UnsignedCheckpoint {
                    device_id: device_id.clone(),
                    seq,
                    head_hash: head.hash,
                    nv_counter: nv,
                    wall_ms: 1_763_900_000_000,
                };
                let sig = dik_sign(&cp.signing_bytes());
                let cp = cp.into_checkpoint(sig).unwrap();
                b.checkpoints.push(cp.as_bytes().to_vec());
            }
            b.records.push(r.into_bytes());
        }
        b.status = Some(DeviceStatus {
            agent_version: "bench".to_owned(),
            cert_not_after_unix: 4_000_000_000,
            journal_head: records,
            journal_shipped: seq - b.records.len() as u64,
            wall_ms: 1_763_900_000_000,
        });
        bodies.push((Bytes::from(b.to_bytes().unwrap()), seq));
    }
    Device { cert, key, bodies }
}

fn client_config(fleet: &Fleet, d: &Device) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(fleet.path("fleet-ca.pem")).unwrap();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(d.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(d.key.clone())),
        )
        .unwrap();
    Arc::new(config)
}

/// The DER certificates in a PEM file (the fleet CA file holds one).
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

async fn connect(port: u16, config: Arc<rustls::ClientConfig>) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one batch and checks the acknowledgement; returns the latency. A connection the
/// collector closed while it sat idle (its header timeout) is opened again, as an agent would.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    reconnect: (u16, &Arc<rustls::ClientConfig>),
    body: Bytes,
    last_seq: u64,
) -> Duration {
    let started = Instant::now();
    if sender.ready().await.is_err() {
        *sender = connect(reconnect.0, reconnect.1.clone()).await;
        sender.ready().await.unwrap();
    }
    let req = hyper::Request::post("/v1/journal")
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/x-postcard")
        .body(Full::new(body))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        200,
        "collector answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let ack = UplinkAck::from_bytes(&bytes).unwrap();
    assert_eq!(ack.highest_stored, last_seq, "acknowledged head");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (CI) this runs as a small
    // smoke test of the same path, so that the benchmark keeps working.
    let full = std::env::args().any(|a| a == "--bench");
    let n_devices = knob("POSGUARD_BENCH_DEVICES", if full { 1000 } else { 20 });
    let records = knob("POSGUARD_BENCH_RECORDS", if full { 600 } else { 50 }) as u64;
    let batch = knob("POSGUARD_BENCH_BATCH", 200) as u64;
    let inflight = knob("POSGUARD_BENCH_INFLIGHT", 64).max(1);

    let fleet = Fleet::new("posguard bench fleet CA");
    let t = Instant::now();
    let devices: Vec<Device> = std::thread::scope(|s| {
        let workers = 2;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let fleet = &fleet;
                s.spawn(move || {
                    (0..n_devices)
                        .filter(|n| n % workers == w)
                        .map(|n| (n, device(fleet, n, records, batch)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Device)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_by_key(|(n, _)| *n);
        all.into_iter().map(|(_, d)| d).collect()
    });
    let total_events = n_devices as u64 * records;
    let total_requests: usize = devices.iter().map(|d| d.bodies.len()).sum();
    let body_bytes: usize = devices
        .iter()
        .flat_map(|d| d.bodies.iter().map(|(b, _)| b.len()))
        .sum();
    println!(
        "load: {n_devices} devices × {records} events = {total_events} events in \
         {total_requests} requests of ≤{batch} ({:.1} MiB of bodies), prepared in {:.1} s",
        body_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    ceilings(&devices);

    let port = free_port();
    let config = fleet.collector_config(port, "[rate_limit]\nper_second = 1000.0\nburst = 1000\n");
    let collector = CollectorProcess::start(&config, port);
    let pid = collector.pid();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Handshakes: every device opens its own mTLS connection.
        let t = Instant::now();
        let configs: Vec<_> = devices.iter().map(|d| client_config(&fleet, d)).collect();
        let mut senders = Vec::with_capacity(n_devices);
        for chunk in configs.chunks(50) {
            let opened =
                futures_join(chunk.iter().map(|c| connect(port, c.clone())).collect()).await;
            senders.extend(opened);
        }
        let handshake = t.elapsed();
        println!(
            "handshakes: {n_devices} mTLS connections in {:.2} s ({:.0}/s)",
            handshake.as_secs_f64(),
            n_devices as f64 / handshake.as_secs_f64()
        );

        // Steady state: `inflight` workers, each owning every inflight-th device and sending
        // those devices' batches round-robin, one request at a time.
        let mut work: Vec<Vec<DeviceWork>> = (0..inflight).map(|_| Vec::new()).collect();
        for (i, ((sender, config), d)) in senders.into_iter().zip(configs).zip(devices).enumerate()
        {
            work[i % inflight].push((sender, config, d.bodies));
        }
        let cpu_before = thread_cpu(pid);
        let t = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|mut mine| {
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let rounds = mine.iter().map(|(_, _, b)| b.len()).max().unwrap_or(0);
                    for round in 0..rounds {
                        for (sender, config, bodies) in &mut mine {
                            if let Some((body, last)) = bodies.get(round) {
                                let again = (port, &*config);
                                latencies.push(post(sender, again, body.clone(), *last).await);
                            }
                        }
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(total_requests);
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = t.elapsed();
        latencies.sort();
        assert_eq!(latencies.len(), total_requests);
        println!(
            "ingest: {total_events} events verified and stored in {:.2} s = {:.0} events/s \
             ({:.0} requests/s); request latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
             ({inflight} in flight)",
            elapsed.as_secs_f64(),
            total_events as f64 / elapsed.as_secs_f64(),
            total_requests as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
        let cpu: Vec<String> = thread_cpu(pid)
            .into_iter()
            .map(|(name, after)| {
                let before = cpu_before
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, b)| *b);
                format!("{name} {:.2}", after - before)
            })
            .collect();
        println!(
            "collector CPU seconds during ingest, by thread: {}",
            cpu.join(", ")
        );
    });
}

/// What the verification alone costs on one core, for the record: decoding, hashing and
/// checking the signatures of every record in the first devices' batches, one signature at a
/// time (the signature rule, key checked each time) and in groups ([`posguard_proto::verify::precheck`]).
fn ceilings(devices: &[Device]) {
    let mut records = Vec::new();
    let mut certs = Vec::new();
    for d in devices.iter().take(50) {
        for (body, _) in &d.bodies {
            let b = UplinkBatch::from_bytes(body).unwrap();
            certs.extend(
                b.certs
                    .iter()
                    .map(|c| posguard_proto::cert::JournalKeyCert::from_bytes(c).unwrap()),
            );
            records.extend(b.records.iter().map(|r| Record::from_bytes(r).unwrap()));
        }
    }
    let n = records.len() as f64;
    let t = Instant::now();
    for r in &records {
        let cert = certs
            .iter()
            .find(|c| c.journal_key_id() == *r.journal_key_id())
            .unwrap();
        let message = posguard_proto::chain::record_signing_message(r.hash());
        assert!(posguard_proto::keys::verify_ed25519(
            &cert.fields().journal_public_key,
            &message,
            r.signature()
        ));
    }
    let single = t.elapsed().as_secs_f64() / n;
    let t = Instant::now();
    let mut verified = 0;
    for d in devices.iter().take(50) {
        for (body, _) in &d.bodies {
            let b = UplinkBatch::from_bytes(body).unwrap();
            let c: Vec<_> = b
                .certs
                .iter()
                .map(|c| posguard_proto::cert::JournalKeyCert::from_bytes(c).unwrap())
                .collect();
            let recs = b
                .records
                .iter()
                .map(|r| Record::from_bytes(r).unwrap())
                .collect();
            verified += posguard_proto::verify::precheck(recs, &c).len();
        }
    }
    let bulk = t.elapsed().as_secs_f64() / verified as f64;
    println!(
        "one core: Ed25519 verify one at a time {:.1} µs/record ({:.0}/s); batch decode + hash + body decode + grouped verify {:.1} µs/record ({:.0}/s)",
        single * 1e6,
        1.0 / single,
        bulk * 1e6,
        1.0 / bulk
    );
}

/// CPU seconds used so far by each thread of process `pid`, by thread name (from /proc).
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ..." — fields after the name: utime is the 12th, stime the 13th.
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        let name = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        *by_name.entry(name).or_default() += ticks / 100.0;
    }
    by_name.into_iter().collect()
}

/// Awaits all of `futures` concurrently (a small join_all, to avoid a dependency).
async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
