//! A small load generator for `scripts/backup-drill.sh`: software terminals that enroll and
//! ship signed journals over mTLS, the way an agent does, with their state in a directory.
//!
//! ```text
//! drill_client --state DIR --addr 127.0.0.1:8443 --ca fleet-ca.pem enroll \
//!     --collector target/debug/posguard-collector --config collector.toml --devices 3
//! drill_client --state DIR --addr 127.0.0.1:8443 --ca fleet-ca.pem ingest --records 20
//! ```
//!
//! `ingest` appends records to each device's local journal, asks the collector where it stands
//! (`next_expected`) and sends everything from there, as an agent resumes after a restore.
//! Prints one JSON line per device.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::event::{Actor, Event, EventKind, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, DeviceId};
use posguard_proto::uplink::{UplinkAck, UplinkBatch};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Debug, Parser)]
struct Cli {
    /// Where the devices' keys, certificates and journals live.
    #[arg(long)]
    state: PathBuf,
    /// The collector's HTTPS address.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// The fleet CA (PEM) that the collector's server certificate chains to.
    #[arg(long)]
    ca: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enroll `--devices` terminals (`drill-01`, …) with one-time tokens.
    Enroll {
        /// The collector binary (for `enroll-token create`).
        #[arg(long)]
        collector: PathBuf,
        /// Its config.
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 3)]
        devices: u32,
    },
    /// Append `--records` records to every enrolled device's journal and ship what the
    /// collector lacks.
    Ingest {
        #[arg(long, default_value_t = 10)]
        records: u64,
    },
}

const BOOT: [u8; 16] = [7; 16];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ca_pem = std::fs::read(&cli.ca).with_context(|| format!("{}", cli.ca.display()))?;
    std::fs::create_dir_all(&cli.state)?;
    match &cli.command {
        Cmd::Enroll {
            collector,
            config,
            devices,
        } => {
            for n in 1..=*devices {
                let id = format!("drill-{n:02}");
                enroll(&cli, &ca_pem, collector, config, &id).await?;
            }
        }
        Cmd::Ingest { records } => {
            let mut ids: Vec<String> = std::fs::read_dir(&cli.state)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            ids.sort();
            for id in ids {
                ingest(&cli, &ca_pem, &id, *records).await?;
            }
        }
    }
    Ok(())
}

async fn enroll(
    cli: &Cli,
    ca_pem: &[u8],
    collector: &Path,
    config: &Path,
    id: &str,
) -> anyhow::Result<()> {
    let out = std::process::Command::new(collector)
        .args(["--config"])
        .arg(config)
        .args([
            "enroll-token",
            "create",
            "--device-id",
            id,
            "--ttl",
            "1h",
            "--quiet",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "enroll-token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, id);
    p.subject_alt_names = vec![SanType::URI(
        format!("urn:posguard:device:{id}").try_into()?,
    )];
    let csr = p.serialize_request(&key)?.pem()?;
    let body = serde_json::to_vec(&serde_json::json!({"token": token, "csr_pem": csr}))?;
    let (status, bytes) = post(cli.addr, client(ca_pem, None)?, "/v1/enroll", body).await?;
    if status != 200 {
        bail!(
            "{id}: enroll answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
    let chain = answer["chain_pem"].as_str().context("chain_pem")?;
    let dir = cli.state.join(id);
    std::fs::create_dir_all(dir.join("journal"))?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    std::fs::write(dir.join("chain.pem"), chain)?;
    println!("{}", serde_json::json!({"device": id, "enrolled": true}));
    Ok(())
}

struct Terminal {
    id: DeviceId,
    dir: PathBuf,
    key: KeyPair,
    chain: String,
    journal: Ed25519KeyPair,
}

impl Terminal {
    fn load(state: &Path, id: &str) -> anyhow::Result<Self> {
        let dir = state.join(id);
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("key.pem"))?)?;
        let chain = std::fs::read_to_string(dir.join("chain.pem"))?;
        // A fixed journal key per device: the drill restarts no agent, so one key signs all.
        let mut seed = [0u8; 32];
        for (s, b) in seed.iter_mut().zip(id.bytes().cycle()) {
            *s = b;
        }
        let journal =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            id: DeviceId::new(id)?,
            dir,
            key,
            chain,
            journal,
        })
    }

    fn record_path(&self, seq: u64) -> PathBuf {
        self.dir.join("journal").join(format!("{seq:010}.rec"))
    }

    fn head(&self) -> anyhow::Result<ChainHead> {
        let mut seq = 0;
        while self.record_path(seq + 1).exists() {
            seq += 1;
        }
        if seq == 0 {
            return Ok(ChainHead::genesis(&self.id));
        }
        Ok(Record::from_bytes(&std::fs::read(self.record_path(seq))?)?.head())
    }

    fn append(&self, n: u64) -> anyhow::Result<u64> {
        let public: [u8; 32] = self.journal.public_key().as_ref().try_into()?;
        let mut head = self.head()?;
        for _ in 0..n {
            let event = Event::new(
                Stamp {
                    wall_ms: 1_763_900_000_000 + head.seq,
                    mono_ns: head.seq,
                    boot_id: BOOT,
                },
                Actor::System,
                None,
                EventKind::LoggedOut {
                    clerk: ClerkId::new("drill")?,
                },
            );
            let r = Record::build(&head, journal_key_id(&public), &event, |m| {
                self.journal.sign(m).as_ref().try_into().unwrap()
            })?;
            head = r.head();
            std::fs::write(self.record_path(head.seq), r.as_bytes())?;
        }
        Ok(head.seq)
    }

    fn journal_cert(&self) -> anyhow::Result<Vec<u8>> {
        let u = UnsignedJournalKeyCert {
            device_id: self.id.clone(),
            boot_id: BOOT,
            journal_public_key: self.journal.public_key().as_ref().try_into()?,
            first_seq: 1,
            issued_wall_ms: 1_763_900_000_000,
        };
        let dik = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.key.serialize_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sig = dik
            .sign(&SystemRandom::new(), &u.signing_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(u.into_cert(sig.as_ref().to_vec())?.as_bytes().to_vec())
    }
}

async fn ingest(cli: &Cli, ca_pem: &[u8], id: &str, n: u64) -> anyhow::Result<()> {
    let t = Terminal::load(&cli.state, id)?;
    let local_head = t.append(n)?;
    let cfg = client(ca_pem, Some(&t))?;
    let send = |records: Vec<Vec<u8>>| {
        let cfg = cfg.clone();
        let cert = t.journal_cert();
        async move {
            let mut b = UplinkBatch::new();
            b.certs = vec![cert?];
            b.records = records;
            let (status, bytes) = post(cli.addr, cfg, "/v1/journal", b.to_bytes()?).await?;
            if status != 200 {
                bail!(
                    "{id}: journal answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            Ok::<_, anyhow::Error>(UplinkAck::from_bytes(&bytes)?)
        }
    };
    // Where the collector stands (after a restore it may be behind what we sent before).
    let mut ack = send(Vec::new()).await?;
    let resumed_from = ack.next_expected;
    let mut sent = 0u64;
    while ack.next_expected <= local_head {
        let last = local_head.min(ack.next_expected + 99);
        let mut records = Vec::new();
        for seq in ack.next_expected..=last {
            records.push(std::fs::read(t.record_path(seq))?);
        }
        sent += records.len() as u64;
        let next = send(records).await?;
        if next.next_expected <= ack.next_expected {
            bail!(
                "{id}: the collector did not advance past {}",
                ack.next_expected
            );
        }
        ack = next;
    }
    println!(
        "{}",
        serde_json::json!({"device": id, "resumed_from": resumed_from, "sent": sent,
            "highest_stored": ack.highest_stored, "local_head": local_head})
    );
    Ok(())
}

fn client(ca_pem: &[u8], t: Option<&Terminal>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c?)?;
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    Ok(Arc::new(match t {
        Some(t) => {
            let chain = CertificateDer::pem_slice_iter(t.chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(t.key.serialize_pem().as_bytes())?;
            b.with_client_auth_cert(chain, key)?
        }
        None => b.with_no_client_auth(),
    }))
}

async fn post(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}
