//! Shared test fixtures: a fleet CA made with rcgen, devices whose certificate key is also
//! their DIK, journals built with proto's `Record::build`, a running collector and a client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

pub mod enroll;
pub mod triage;

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use posguard_collector::clock::SystemClock;
use posguard_collector::config::Config;
use posguard_collector::metrics::Metrics;
use posguard_collector::server::{self, AppState};
use posguard_collector::store::sqlite::SqliteStore;
use posguard_collector::store::{Store, StoreHandle};
use posguard_collector::tls::{TlsFiles, TlsReloader};
use posguard_proto::cert::UnsignedJournalKeyCert;
use posguard_proto::chain::{ChainHead, journal_key_id};
use posguard_proto::checkpoint::UnsignedCheckpoint;
use posguard_proto::event::{Actor, Event, EventKind, Stamp};
use posguard_proto::record::Record;
use posguard_proto::text::{ClerkId, DeviceId};
use posguard_proto::uplink::UplinkBatch;
use rcgen::{CertificateParams, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::oneshot;

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(vec![]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let server = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        dir,
        issuer,
        ca_pem,
    }
}

pub struct Device {
    pub id: DeviceId,
    pub cert_pem: String,
    pub key: KeyPair,
    pub dik: EcdsaKeyPair,
    pub journal: Ed25519KeyPair,
    pub head: ChainHead,
}

pub fn device(pki: &Pki, id: &str) -> Device {
    device_with(pki, id, |_| {})
}

pub fn device_with(pki: &Pki, id: &str, edit: impl FnOnce(&mut CertificateParams)) -> Device {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    edit(&mut p);
    p.subject_alt_names = vec![SanType::URI(
        format!("urn:posguard:device:{id}").try_into().unwrap(),
    )];
    let cert = p.signed_by(&key, &pki.issuer).unwrap();
    let dik = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    let id = DeviceId::new(id).unwrap();
    Device {
        head: ChainHead::genesis(&id),
        id,
        cert_pem: cert.pem(),
        key,
        dik,
        journal: Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap(),
    }
}

pub const BOOT: [u8; 16] = [1; 16];

impl Device {
    pub fn dik_sign(&self, msg: &[u8]) -> Vec<u8> {
        self.dik
            .sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    pub fn journal_cert(&self, first_seq: u64) -> Vec<u8> {
        let u = UnsignedJournalKeyCert {
            device_id: self.id.clone(),
            boot_id: BOOT,
            journal_public_key: self.journal.public_key().as_ref().try_into().unwrap(),
            first_seq,
            issued_wall_ms: 1_763_900_000_000,
        };
        let sig = self.dik_sign(&u.signing_bytes());
        u.into_cert(sig).unwrap().as_bytes().to_vec()
    }

    pub fn record(&mut self, kind: EventKind) -> Record {
        let public: [u8; 32] = self.journal.public_key().as_ref().try_into().unwrap();
        let event = Event::new(
            Stamp {
                wall_ms: 1_763_900_000_000 + self.head.seq,
                mono_ns: self.head.seq,
                boot_id: BOOT,
            },
            Actor::System,
            None,
            kind,
        );
        let r = Record::build(&self.head, journal_key_id(&public), &event, |m| {
            self.journal.sign(m).as_ref().try_into().unwrap()
        })
        .unwrap();
        self.head = r.head();
        r
    }

    pub fn checkpoint(&self, nv_counter: u64) -> Vec<u8> {
        let u = UnsignedCheckpoint {
            device_id: self.id.clone(),
            seq: self.head.seq,
            head_hash: self.head.hash,
            nv_counter,
            wall_ms: 1_763_900_000_000,
        };
        let sig = self.dik_sign(&u.signing_bytes());
        u.into_checkpoint(sig).unwrap().as_bytes().to_vec()
    }

    pub fn logout(&mut self) -> Record {
        self.record(EventKind::LoggedOut {
            clerk: ClerkId::new("anna").unwrap(),
        })
    }
}

pub fn batch(certs: Vec<Vec<u8>>, records: &[Record]) -> Vec<u8> {
    let mut b = UplinkBatch::new();
    b.certs = certs;
    b.records = records.iter().map(|r| r.as_bytes().to_vec()).collect();
    b.to_bytes().unwrap()
}

pub struct Running {
    pub addr: std::net::SocketAddr,
    pub db: std::path::PathBuf,
    pub reloader: TlsReloader,
    pub metrics: Arc<Metrics>,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
    /// The task reporting revoked certificates' attempts (it holds a store handle).
    pub reports: (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ),
}

pub async fn start(pki: &Pki, extra: &str) -> Running {
    let d = pki.dir.path();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nserver_cert = \"{0}/server.pem\"\nserver_key = \"{0}/server.key\"\n\
         fleet_ca = \"{0}/ca.pem\"\nstore = \"{0}/c.db\"\n{extra}",
        d.display()
    );
    start_config(&text).await
}

/// Starts a collector from a whole config text (the fleet CA is loaded if configured).
pub async fn start_config(text: &str) -> Running {
    let config = Config::parse(text).unwrap();
    let ca = config.ca_cert.as_ref().map(|cert| {
        Arc::new(
            posguard_collector::pki::issue::DeviceCa::load(
                cert,
                config.ca_key.as_ref().unwrap(),
                &config.fleet_ca,
                config.device_cert_days,
            )
            .unwrap(),
        )
    });
    let (reloader, tls) = TlsReloader::new(TlsFiles::from_config(&config)).unwrap();
    let store = StoreHandle::spawn(Box::new(SqliteStore::open(&config.store).unwrap())).unwrap();
    let metrics = Arc::new(Metrics::default());
    // Refused attempts of revoked certificates become metrics and alerts, as under `serve`.
    let reports_stop = tokio_util::sync::CancellationToken::new();
    let reports = tokio::spawn(posguard_collector::revocation::run_reports(
        reloader.attempts(),
        store.clone(),
        metrics.clone(),
        Arc::new(SystemClock),
        reports_stop.clone(),
    ));
    let state = Arc::new(
        AppState::new(&config, store, metrics.clone(), Arc::new(SystemClock))
            .with_ca(ca)
            .with_revocation(&reloader),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server::run(listener, state, tls, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        db: config.store,
        reloader,
        metrics,
        stop: Some(stop),
        done,
        reports: (reports_stop, reports),
    }
}

impl Running {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap();
        // Last store handle: once it is gone the store is closed (restore needs that).
        self.reports.0.cancel();
        self.reports.1.await.unwrap();
    }
}

pub fn client_config(pki: &Pki, dev: Option<&Device>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match dev {
        Some(d) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(d.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(d.key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// Posts a body to `/v1/journal`; `Err` if the connection or TLS failed.
pub async fn post(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    post_to(addr, config, "/v1/journal", body).await
}

/// Posts a body to `path`; `Err` if the connection or TLS failed.
pub async fn post_to(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| chain(&e))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| chain(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| chain(&e))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| chain(&e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| chain(&e))?
        .to_bytes();
    Ok((status, headers, bytes))
}

pub fn count_records(db: &std::path::Path) -> usize {
    let mut s = SqliteStore::open(db).unwrap();
    let mut n = 0;
    s.query(&Default::default(), &mut |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    n
}

pub fn alert_kinds(db: &std::path::Path) -> Vec<String> {
    let mut s = SqliteStore::open(db).unwrap();
    s.alerts(None, None)
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

/// Writes a CRL revoking `serials` to `<dir>/crl.pem`.
pub fn write_crl(
    pki: &Pki,
    serials: &[rcgen::SerialNumber],
    crl_number: u64,
) -> std::path::PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(7),
        crl_number: rcgen::SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: s.clone(),
                revocation_time: now - time::Duration::minutes(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&pki.issuer).unwrap();
    let path = pki.dir.path().join("crl.pem");
    std::fs::write(&path, crl.pem().unwrap()).unwrap();
    path
}

/// An error with its sources, so tests can look for the TLS alert inside a hyper error.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = format!("{e:?}");
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(&format!(" <- {s:?}"));
        cur = s.source();
    }
    text
}

impl Device {
    /// A record whose event says it happened at `wall_ms` (device clock), for rules counted in
    /// a time window.
    pub fn record_at(&mut self, kind: EventKind, wall_ms: u64) -> Record {
        let public: [u8; 32] = self.journal.public_key().as_ref().try_into().unwrap();
        let event = Event::new(
            Stamp {
                wall_ms,
                mono_ns: self.head.seq,
                boot_id: BOOT,
            },
            Actor::System,
            None,
            kind,
        );
        let r = Record::build(&self.head, journal_key_id(&public), &event, |m| {
            self.journal.sign(m).as_ref().try_into().unwrap()
        })
        .unwrap();
        self.head = r.head();
        r
    }
}

/// Every alert in the store at `db` (all states).
pub fn alerts_in(db: &std::path::Path) -> Vec<posguard_collector::store::AlertRow> {
    SqliteStore::open(db).unwrap().alerts(None, None).unwrap()
}

/// Posts one batch of `records` (with the journal certificate) from `dev`; the HTTP status.
pub async fn send(srv: &Running, pki: &Pki, dev: &Device, records: &[Record]) -> u16 {
    let cfg = client_config(pki, Some(dev));
    post(srv.addr, cfg, batch(vec![dev.journal_cert(1)], records))
        .await
        .unwrap()
        .0
}
