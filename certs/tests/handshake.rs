//! Real TLS handshakes over loopback TCP between the coordinator's
//! [`server_config`] and participants' configurations, good and bad.
//!
//! The server accepts connections one after another, like the coordinator
//! does: after a refused client it keeps serving the next one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use tessera_certs::{
    TlsMaterial, client_config, describe_tls_error, peer_name_of_chain, server_config,
};
use tessera_testkit::pki::TestPki;

const TIMEOUT: Duration = Duration::from_secs(20);

/// What the server saw of one connection: the client's certificate name, or
/// the handshake error.
type Outcome = Result<String, io::Error>;

/// A blocking mTLS server on 127.0.0.1:0 that handles connections one at a
/// time and reports each outcome.
struct Server {
    addr: SocketAddr,
    outcomes: mpsc::Receiver<Outcome>,
}

impl Server {
    fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, outcomes) = mpsc::channel();
        thread::spawn(move || {
            for sock in listener.incoming() {
                let outcome = sock.and_then(|sock| serve(Arc::clone(&config), sock));
                if tx.send(outcome).is_err() {
                    break;
                }
            }
        });
        Self { addr, outcomes }
    }

    fn next_outcome(&self) -> Outcome {
        self.outcomes.recv_timeout(TIMEOUT).expect("server outcome")
    }
}

/// Completes the handshake, reads the client's name from its verified
/// certificate, then answers one `ping` line with `pong NAME`.
fn serve(config: Arc<ServerConfig>, sock: TcpStream) -> Outcome {
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.set_write_timeout(Some(TIMEOUT))?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let chain = tls
        .conn
        .peer_certificates()
        .expect("a verified client chain");
    let name = peer_name_of_chain(chain).map_err(io::Error::other)?;
    let mut ping = [0u8; 5];
    tls.read_exact(&mut ping)?;
    assert_eq!(&ping, b"ping\n");
    tls.write_all(format!("pong {name}\n").as_bytes())?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.conn.complete_io(&mut tls.sock)?;
    Ok(name)
}

/// Connects, handshakes, sends `ping` and returns the server's answer.
fn client(config: Arc<ClientConfig>, addr: SocketAddr, server_name: &str) -> io::Result<String> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.set_write_timeout(Some(TIMEOUT))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(io::Error::other)?;
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    tls.write_all(b"ping\n")?;
    tls.flush()?;
    let mut line = String::new();
    BufReader::new(&mut tls).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed without answering",
        ));
    }
    Ok(line.trim_end().to_string())
}

/// A client configuration that is *not* the project's policy, for the
/// negative cases: chosen protocol versions, and a client certificate or none.
fn custom_client(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert)
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

struct Federation {
    _dir: tempfile::TempDir,
    pki: TestPki,
    server: Server,
}

impl Federation {
    fn new(participants: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path().join("pki"), participants);
        let server_material = pki.coordinator_files().load().unwrap();
        let server = Server::start(server_config(&server_material).unwrap());
        Self {
            _dir: dir,
            pki,
            server,
        }
    }

    fn material(&self, name: &str) -> TlsMaterial {
        self.pki.files_for(name).load().unwrap()
    }

    /// A good participant still gets through: the server kept serving.
    fn assert_still_serving(&self, name: &str) {
        let config = client_config(&self.material(name)).unwrap();
        let answer = client(config, self.server.addr, "localhost").unwrap();
        assert_eq!(answer, format!("pong {name}"));
        assert_eq!(self.server.next_outcome().unwrap(), name);
    }
}

/// A second, unrelated PKI (another CA) in its own temporary directory.
fn foreign_pki(participants: &[&str]) -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), participants);
    (dir, pki)
}

fn refused(outcome: Outcome) -> io::Error {
    match outcome {
        Ok(name) => panic!("the server accepted {name:?} but should have refused"),
        Err(e) => e,
    }
}

#[test]
fn good_certificate_is_accepted_and_named() {
    let fed = Federation::new(&["hospital-a", "site_2.eu"]);
    for name in ["hospital-a", "site_2.eu"] {
        let config = client_config(&fed.material(name)).unwrap();
        // Both the DNS name and the IP address in the coordinator certificate work.
        for server_name in ["localhost", "127.0.0.1"] {
            let answer = client(Arc::clone(&config), fed.server.addr, server_name).unwrap();
            assert_eq!(answer, format!("pong {name}"));
            assert_eq!(fed.server.next_outcome().unwrap(), name);
        }
    }
}

#[test]
fn client_without_certificate_is_refused() {
    let fed = Federation::new(&["a"]);
    let ca = std::fs::read(fed.pki.ca_cert()).unwrap();
    let config = custom_client(&ca, None, &[&rustls::version::TLS13]);
    let client_err = client(config, fed.server.addr, "localhost").unwrap_err();
    let server_err = refused(fed.server.next_outcome());
    let server_says = describe_tls_error(&server_err);
    assert!(
        server_says.contains("client presented no certificate"),
        "{server_says}"
    );
    let client_says = describe_tls_error(&client_err);
    assert!(
        client_says.contains("requires a client certificate"),
        "{client_says}"
    );
    fed.assert_still_serving("a");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let fed = Federation::new(&["a"]);
    let (_other_dir, other) = foreign_pki(&["a"]);
    // Same name, but issued by another CA; the client itself trusts our CA.
    let impostor = TlsMaterial {
        ca_pem: std::fs::read(fed.pki.ca_cert()).unwrap(),
        ..other.files_for("a").load().unwrap()
    };
    let client_err = client(
        client_config(&impostor).unwrap(),
        fed.server.addr,
        "localhost",
    )
    .unwrap_err();
    let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
    assert!(
        server_says.contains("signed by an unknown CA"),
        "{server_says}"
    );
    let client_says = describe_tls_error(&client_err);
    assert!(client_says.contains("unknown CA"), "{client_says}");
    fed.assert_still_serving("a");
}

#[test]
fn tls12_only_client_is_refused() {
    let fed = Federation::new(&["a"]);
    let m = fed.material("a");
    let config = custom_client(
        &m.ca_pem,
        Some((&m.cert_pem, &m.key_pem)),
        &[&rustls::version::TLS12],
    );
    let client_err = client(config, fed.server.addr, "localhost").unwrap_err();
    let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
    assert!(
        server_says.contains("TLS version not supported (TLS 1.3 required)"),
        "{server_says}"
    );
    let client_says = describe_tls_error(&client_err);
    assert!(client_says.contains("TLS 1.3 required"), "{client_says}");
    fed.assert_still_serving("a");
}

#[test]
fn client_that_trusts_another_ca_refuses_the_server() {
    let fed = Federation::new(&["a"]);
    let (_other_dir, other) = foreign_pki(&["x"]);
    let misconfigured = TlsMaterial {
        ca_pem: std::fs::read(other.ca_cert()).unwrap(),
        ..fed.material("a")
    };
    let client_err = client(
        client_config(&misconfigured).unwrap(),
        fed.server.addr,
        "localhost",
    )
    .unwrap_err();
    let client_says = describe_tls_error(&client_err);
    assert!(client_says.contains("unknown CA"), "{client_says}");
    let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
    assert!(server_says.contains("the peer rejected"), "{server_says}");
    fed.assert_still_serving("a");
}

#[test]
fn wrong_server_name_is_refused_by_the_client() {
    let fed = Federation::new(&["a"]);
    let config = client_config(&fed.material("a")).unwrap();
    for wrong in ["coordinator.example.org", "127.0.0.2"] {
        let client_err = client(Arc::clone(&config), fed.server.addr, wrong).unwrap_err();
        let client_says = describe_tls_error(&client_err);
        assert!(
            client_says.contains("not valid for the name we connected to"),
            "{client_says}"
        );
        refused(fed.server.next_outcome());
    }
    fed.assert_still_serving("a");
}

#[test]
fn coordinator_certificate_cannot_act_as_a_participant() {
    let fed = Federation::new(&["a"]);
    // The coordinator's own certificate carries serverAuth only.
    let config = client_config(&fed.pki.coordinator_files().load().unwrap()).unwrap();
    let _ = client(config, fed.server.addr, "localhost").unwrap_err();
    let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
    assert!(
        server_says.contains("not meant for this use"),
        "{server_says}"
    );
    fed.assert_still_serving("a");
}

#[test]
fn participant_certificate_cannot_act_as_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), &["a", "localhost"]);
    // A participant named like the coordinator host, serving with its
    // clientAuth-only certificate: participants must refuse it.
    let server = Server::start(server_config(&pki.files_for("localhost").load().unwrap()).unwrap());
    let config = client_config(&pki.files_for("a").load().unwrap()).unwrap();
    let client_err = client(config, server.addr, "localhost").unwrap_err();
    let client_says = describe_tls_error(&client_err);
    assert!(
        client_says.contains("not meant for this use"),
        "{client_says}"
    );
    refused(server.next_outcome());
}

#[test]
fn certificate_from_another_ca_with_the_same_name_is_refused() {
    // Two CAs that share a name: the signature check, not the name, decides.
    let ours = tessera_certs::CertificateAuthority::generate("Federation CA").unwrap();
    let theirs = tessera_certs::CertificateAuthority::generate("Federation CA").unwrap();
    let coordinator = ours.issue_coordinator(&[]).unwrap();
    let server = Server::start(
        server_config(&TlsMaterial {
            ca_pem: ours.cert_pem().into_bytes(),
            cert_pem: coordinator.cert_pem.into_bytes(),
            key_pem: coordinator.key_pem.into_bytes(),
            crl_pem: None,
        })
        .unwrap(),
    );
    let material = |ca: &tessera_certs::CertificateAuthority| {
        let issued = ca.issue_participant("a").unwrap();
        TlsMaterial {
            ca_pem: ours.cert_pem().into_bytes(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
            crl_pem: None,
        }
    };
    let impostor = client_config(&material(&theirs)).unwrap();
    let _ = client(impostor, server.addr, "localhost").unwrap_err();
    let server_says = describe_tls_error(&refused(server.next_outcome()));
    assert!(server_says.contains("unknown CA"), "{server_says}");

    let genuine = client_config(&material(&ours)).unwrap();
    assert_eq!(client(genuine, server.addr, "localhost").unwrap(), "pong a");
    assert_eq!(server.next_outcome().unwrap(), "a");
}

#[test]
fn a_ca_file_with_two_cas_trusts_both_during_rotation() {
    let old = tessera_certs::CertificateAuthority::generate_development().unwrap();
    let new = tessera_certs::CertificateAuthority::generate_development().unwrap();
    let both = format!("{}{}", old.cert_pem(), new.cert_pem()).into_bytes();
    let coordinator = new.issue_coordinator(&[]).unwrap();
    let server = Server::start(
        server_config(&TlsMaterial {
            ca_pem: both.clone(),
            cert_pem: coordinator.cert_pem.into_bytes(),
            key_pem: coordinator.key_pem.into_bytes(),
            crl_pem: None,
        })
        .unwrap(),
    );
    for (ca, name) in [(&old, "still-on-old"), (&new, "moved-to-new")] {
        let issued = ca.issue_participant(name).unwrap();
        let config = client_config(&TlsMaterial {
            ca_pem: both.clone(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
            crl_pem: None,
        })
        .unwrap();
        assert_eq!(
            client(config, server.addr, "localhost").unwrap(),
            format!("pong {name}")
        );
        assert_eq!(server.next_outcome().unwrap(), name);
    }
}

/// A certificate on the CA's revocation list is refused at the handshake;
/// the other participants are still served. Without the CRL in the server
/// configuration the revoked participant would get in.
#[test]
fn revoked_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path().join("pki"), &["a", "b"]);
    let revoked = tessera_certs::revoke(&pki.dir, "a").unwrap();
    assert_eq!(revoked.entries, 1);
    let mut files = pki.coordinator_files();
    files.crl = Some(revoked.crl.clone());
    let server = Server::start(server_config(&files.load().unwrap()).unwrap());
    let a = client_config(&pki.files_for("a").load().unwrap()).unwrap();
    let _ = client(a, server.addr, "localhost").unwrap_err();
    let server_says = describe_tls_error(&refused(server.next_outcome()));
    assert!(
        server_says.to_lowercase().contains("revoked"),
        "{server_says}"
    );
    let b = client_config(&pki.files_for("b").load().unwrap()).unwrap();
    assert_eq!(client(b, server.addr, "localhost").unwrap(), "pong b");

    // The same PKI without the CRL lets `a` in: the list is what refuses it.
    let open = Server::start(server_config(&pki.coordinator_files().load().unwrap()).unwrap());
    let a = client_config(&pki.files_for("a").load().unwrap()).unwrap();
    assert_eq!(client(a, open.addr, "localhost").unwrap(), "pong a");

    // A CRL file that is not a CRL is refused when the files are loaded.
    std::fs::write(&revoked.crl, "not a crl").unwrap();
    let err = files.load().unwrap_err().to_string();
    assert!(err.contains("crl.pem"), "{err}");
}

/// A leaf certificate signed by `pki`'s CA, made by hand: `name` as common
/// name and DNS name, `eku` its one extended key usage, valid from
/// `not_before` to `not_after`. Written as `NAME.crt|key` in `pki.dir`.
fn hand_made_leaf(
    pki: &TestPki,
    name: &str,
    eku: rcgen::ExtendedKeyUsagePurpose,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> TlsMaterial {
    use tessera_certs::pki::{CA_CERT_FILE, CA_KEY_FILE};
    let ca_pem = std::fs::read_to_string(pki.dir.join(CA_CERT_FILE)).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.dir.join(CA_KEY_FILE)).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(pki.dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(pki.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    pki.files_for(name).load().unwrap()
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// A participant certificate that expired yesterday, or that becomes valid
/// only tomorrow, is refused by the coordinator's policy with an error that
/// says which; the server keeps serving. The same certificate made valid
/// today is accepted, so the dates are what refuse it.
#[test]
fn expired_and_not_yet_valid_participant_certificates_are_refused() {
    use rcgen::ExtendedKeyUsagePurpose::ClientAuth;
    let fed = Federation::new(&["a"]);
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        ("expired", now - days(30), now - days(1), "expired"),
        ("early", now + days(1), now + days(30), "not valid yet"),
    ];
    for (name, from, to, says) in cases {
        let material = hand_made_leaf(&fed.pki, name, ClientAuth, from, to);
        let _ = client(
            client_config(&material).unwrap(),
            fed.server.addr,
            "localhost",
        )
        .unwrap_err();
        let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
        assert!(server_says.contains(says), "{name}: {server_says}");
        fed.assert_still_serving("a");
    }
    let material = hand_made_leaf(&fed.pki, "today", ClientAuth, now - days(1), now + days(1));
    let answer = client(
        client_config(&material).unwrap(),
        fed.server.addr,
        "localhost",
    )
    .unwrap();
    assert_eq!(answer, "pong today");
    assert_eq!(fed.server.next_outcome().unwrap(), "today");
}

/// A coordinator whose certificate has expired (or is not valid yet) is
/// refused by the participants' policy, naming why.
#[test]
fn expired_and_not_yet_valid_coordinator_certificates_are_refused() {
    use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), &["a"]);
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        (now - days(30), now - days(1), "expired"),
        (now + days(1), now + days(30), "not valid yet"),
    ];
    for (from, to, says) in cases {
        let material = hand_made_leaf(&pki, "localhost", ServerAuth, from, to);
        let server = Server::start(server_config(&material).unwrap());
        let config = client_config(&pki.files_for("a").load().unwrap()).unwrap();
        let client_says =
            describe_tls_error(&client(config, server.addr, "localhost").unwrap_err());
        assert!(client_says.contains(says), "{client_says}");
        refused(server.next_outcome());
    }
}

/// The federation CA's own certificate and key, presented as a client
/// identity, do not make a participant: a CA certificate is not an end
/// entity. The server keeps serving.
#[test]
fn ca_certificate_cannot_act_as_a_participant() {
    use tessera_certs::pki::{CA_CERT_FILE, CA_KEY_FILE};
    let fed = Federation::new(&["a"]);
    let ca = std::fs::read(fed.pki.dir.join(CA_CERT_FILE)).unwrap();
    let key = std::fs::read(fed.pki.dir.join(CA_KEY_FILE)).unwrap();
    let config = custom_client(&ca, Some((&ca, &key)), &[&rustls::version::TLS13]);
    let _ = client(config, fed.server.addr, "localhost").unwrap_err();
    let server_says = describe_tls_error(&refused(fed.server.next_outcome()));
    assert!(
        server_says.contains("rejected") || server_says.contains("not meant for this use"),
        "{server_says}"
    );
    fed.assert_still_serving("a");
}
