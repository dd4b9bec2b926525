//! A loopback TLS 1.3 handshake: a tokio-rustls server that requires client certificates from
//! the test CA, and a rustls client whose key is a secure element's identity key.

use std::sync::Arc;

use posguard_hal::SecureElement;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::pki::TestCa;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn handshake_with_client_key(se: Arc<dyn SecureElement>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(se));
}

async fn run(se: Arc<dyn SecureElement>) {
    let ca = TestCa::new();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let roots = Arc::new(roots);

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .unwrap();
    let (server_cert, server_key) = ca.server_cert();
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert, ca.cert.clone()], server_key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let (_, conn) = tls.get_ref();
        let version = conn.protocol_version();
        let peer = conn.peer_certificates().map(|c| c[0].clone());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong!").await.unwrap();
        tls.shutdown().await.ok();
        (version, peer, buf)
    });

    let device_cert = ca.device_cert(se.clone(), "term-0001");
    let resolver = posguard_hal::tls::client_cert_resolver(se, vec![device_cert.clone()]).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"ping!").await.unwrap();
    let mut reply = [0u8; 5];
    // A refused client certificate would show here, on the first read (TLS 1.3).
    tls.read_exact(&mut reply)
        .await
        .expect("server accepted the client certificate");
    assert_eq!(&reply, b"pong!");

    let (version, peer, got) = server_task.await.unwrap();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(
        peer.as_ref(),
        Some(&device_cert),
        "server saw the device certificate"
    );
    assert_eq!(&got, b"ping!");
}
