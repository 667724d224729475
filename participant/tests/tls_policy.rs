//! The participant's TLS client policy, against real servers on loopback:
//! the connector the participant binary uses refuses a coordinator that
//! speaks only TLS 1.2, connects to one that speaks TLS 1.3, and refuses a
//! coordinator whose certificate the federation's revocation list names
//! (`[tls] crl`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use tessera_participant::tls::Connector;
use tessera_testkit::pki::TestPki;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::codegen::http::Uri;
use tower_service::Service;

/// A server speaking only `versions`, with the coordinator's certificate
/// and no client authentication; accepts and handshakes every connection.
async fn server(pki: &TestPki, versions: &[&'static rustls::SupportedProtocolVersion]) -> Uri {
    let m = pki.coordinator_files().load().unwrap();
    let chain: Vec<_> = rustls_pemfile_certs(&m.cert_pem);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&m.key_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.flush().await;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            });
        }
    });
    format!("http://{addr}").parse().unwrap()
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn connector(pki: &TestPki, crl: Option<std::path::PathBuf>) -> Connector {
    let mut files = pki.files_for("a");
    files.crl = crl;
    let config = tessera_certs::client_config(&files.load().unwrap()).unwrap();
    Connector::new(config, "localhost").unwrap()
}

#[tokio::test]
async fn tls_1_2_only_coordinator_is_refused_and_1_3_accepted() {
    tessera_certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), &["a"]);

    let old = server(&pki, &[&rustls::version::TLS12]).await;
    let err = connector(&pki, None).call(old).await.unwrap_err();
    let said = tessera_certs::describe_tls_error(&err);
    assert!(
        said.to_lowercase().contains("version") || said.contains("protocol"),
        "{said}"
    );

    let new = server(&pki, &[&rustls::version::TLS13]).await;
    connector(&pki, None).call(new).await.unwrap();
}

#[tokio::test]
async fn revoked_coordinator_certificate_is_refused() {
    tessera_certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), &["a"]);
    let crl = tessera_certs::revoke(&pki.dir, tessera_certs::pki::COORDINATOR_NAME)
        .unwrap()
        .crl;
    let uri = server(&pki, &[&rustls::version::TLS13]).await;
    let err = connector(&pki, Some(crl))
        .call(uri.clone())
        .await
        .unwrap_err();
    let said = tessera_certs::describe_tls_error(&err);
    assert!(said.contains("revoked"), "{said}");
    // Without the list the same server is accepted: the list refused it.
    connector(&pki, None).call(uri).await.unwrap();
}
