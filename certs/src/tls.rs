//! The mutual-TLS policy shared by the coordinator and the participants.
//!
//! - TLS 1.3 only, with the ring crypto provider.
//! - The coordinator requires a client certificate and verifies it against
//!   the federation CA (and nothing else); the certificate must carry EKU
//!   clientAuth.
//! - Participants trust only the federation CA and check that the
//!   coordinator's certificate is valid for the name they dial (EKU
//!   serverAuth).
//! - Both sides offer ALPN `h2` (gRPC).
//! - A peer's identity is the name in its certificate ([`peer_name`]),
//!   nothing it says later.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, PeerIncompatible, RootCertStore};

use crate::Error;
use crate::pki::{CA_CERT_FILE, cert_path, key_path};

/// The ALPN protocol both sides offer: HTTP/2, which gRPC runs on.
pub const ALPN_H2: &[u8] = b"h2";

/// Where one node's TLS files are: the federation CA certificate, the node's
/// own certificate, and its private key. Also the `[tls]` section of the
/// coordinator's and the participants' configuration files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The federation CA certificate (PEM; may hold several CA certificates).
    pub ca: PathBuf,
    /// This node's certificate (PEM; leaf first, then any intermediates).
    pub cert: PathBuf,
    /// This node's private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The federation CA's revocation list (PEM, written by `tessera-certs
    /// revoke`): certificates on it are refused at the handshake. The
    /// coordinator reloads it on SIGHUP or when the file changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// The contents of a node's [`TlsFiles`], PEM.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The federation CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain, PEM, leaf first.
    pub cert_pem: Vec<u8>,
    /// This node's private key, PEM.
    pub key_pem: Vec<u8>,
    /// The CA's revocation list, PEM, when one is configured.
    pub crl_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &String::from_utf8_lossy(&self.ca_pem))
            .field("cert_pem", &String::from_utf8_lossy(&self.cert_pem))
            .field("key_pem", &"<redacted>")
            .field("crl_pem", &self.crl_pem.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl TlsFiles {
    /// The files of holder `name` in a PKI directory laid out by
    /// [`crate::init`]: `DIR/ca.crt`, `DIR/NAME.crt`, `DIR/NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            cert: cert_path(dir, name),
            key: key_path(dir, name),
            crl: None,
        }
    }

    /// Reads the three files and checks them: the CA file and the
    /// certificate file must hold at least one certificate, the key file a
    /// private key, and the key must belong to the certificate. Errors name
    /// the offending file.
    pub fn load(&self) -> Result<TlsMaterial, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let material = TlsMaterial {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
            crl_pem: self.crl.as_deref().map(read).transpose()?,
        };
        let ca_what = self.ca.display().to_string();
        let cert_what = self.cert.display().to_string();
        let key_what = self.key.display().to_string();
        material.parse(&ca_what, &cert_what, &key_what)?;
        if let (Some(pem), Some(path)) = (&material.crl_pem, &self.crl) {
            crate::crl::pem_crls(pem, &path.display().to_string())?;
        }
        Ok(material)
    }
}

/// The parsed form of a [`TlsMaterial`].
struct Parsed {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    fn parse(&self, ca_what: &str, cert_what: &str, key_what: &str) -> Result<Parsed, Error> {
        let mut roots = RootCertStore::empty();
        for der in pem_certificates(&self.ca_pem, ca_what)? {
            roots.add(der).map_err(|e| Error::BadCertificate {
                what: ca_what.to_string(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
        }
        let chain = pem_certificates(&self.cert_pem, cert_what)?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| Error::BadPrivateKey {
                what: key_what.to_string(),
                reason: format!("no usable PEM private key found ({e})"),
            })?;
        // Check the pair now so the error names both inputs.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                    cert: cert_what.to_string(),
                    key: key_what.to_string(),
                },
                other => Error::BadPrivateKey {
                    what: key_what.to_string(),
                    reason: format!("cannot use this key ({other})"),
                },
            },
        )?;
        Ok(Parsed { roots, chain, key })
    }

    /// The configured revocation lists, DER (none without a CRL).
    fn crls(&self) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, Error> {
        match &self.crl_pem {
            Some(pem) => crate::crl::pem_crls(pem, "the revocation list"),
            None => Ok(Vec::new()),
        }
    }

    fn parse_by_role(&self) -> Result<Parsed, Error> {
        self.parse("the CA certificate", "the certificate", "the private key")
    }
}

/// All certificates in a PEM buffer, in order; an error naming `what` if
/// there is none or one is malformed.
pub(crate) fn pem_certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCertificate {
            what: what.to_string(),
            reason: format!("malformed PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(Error::BadCertificate {
            what: what.to_string(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(certs)
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The coordinator's TLS configuration.
///
/// TLS 1.3 only; a client certificate is required and must chain to the
/// federation CA in `m.ca_pem` with EKU clientAuth; the server presents
/// `m.cert_pem` with `m.key_pem`; ALPN `h2`. A certificate on the CA's
/// revocation list (`m.crl_pem`) is refused. Use it with
/// `tokio_rustls::TlsAcceptor::from(config)`, then read the client's name
/// with [`peer_name_of_chain`] on the connection's peer certificates.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, Error> {
    let parsed = m.parse_by_role()?;
    let provider = Arc::new(provider());
    let crls = m.crls()?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(parsed.roots), Arc::clone(&provider))
            .with_crls(crls)
            .build()
            .map_err(|source| Error::Verifier { source })?;
    let tls = |source| Error::Tls {
        side: "server",
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parsed.chain, parsed.key)
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A participant's TLS configuration.
///
/// TLS 1.3 only; trusts only the federation CA in `m.ca_pem` (not the
/// system roots) and refuses a coordinator certificate on its revocation
/// list (`m.crl_pem`); presents `m.cert_pem` with `m.key_pem` as its client
/// certificate; ALPN `h2`. The coordinator's certificate must be valid for
/// the server name the caller connects with (a DNS name or IP address in its
/// SANs) and carry EKU serverAuth.
pub fn client_config(m: &TlsMaterial) -> Result<Arc<rustls::ClientConfig>, Error> {
    let parsed = m.parse_by_role()?;
    let tls = |source| Error::Tls {
        side: "client",
        source,
    };
    let provider = Arc::new(provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(parsed.roots),
        Arc::clone(&provider),
    )
    .with_crls(m.crls()?)
    .build()
    .map_err(|source| Error::Verifier { source })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(parsed.chain, parsed.key)
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The identity a certificate names: its subject common name, or, if it
/// has none, its first DNS subject alternative name.
///
/// This does not verify the certificate: call it on certificates the TLS
/// handshake has already verified (the peer certificates of an established
/// connection).
pub fn peer_name(cert_der: &[u8]) -> Result<String, Error> {
    let what = || "the peer certificate".to_string();
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::BadCertificate {
            what: what(),
            reason: format!("cannot parse it ({e})"),
        })?;
    if let Some(cn) = cert.subject().iter_common_name().next() {
        return cn
            .as_str()
            .map(str::to_string)
            .map_err(|e| Error::BadCertificate {
                what: what(),
                reason: format!("its common name is not a string ({e})"),
            });
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::BadCertificate {
            what: what(),
            reason: format!("malformed subject alternative names ({e})"),
        })?;
    san.into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|general_name| match general_name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .ok_or(Error::NoPeerName)
}

/// [`peer_name`] of the first (leaf) certificate of a verified peer chain,
/// as returned by `rustls::CommonState::peer_certificates()` or tonic's
/// `Request::peer_certs()`. [`Error::NoPeerCertificate`] if the chain is
/// empty.
pub fn peer_name_of_chain(chain: &[CertificateDer<'_>]) -> Result<String, Error> {
    let leaf = chain.first().ok_or(Error::NoPeerCertificate)?;
    peer_name(leaf.as_ref())
}

/// Makes ring the process-wide default rustls crypto provider, once.
///
/// The configurations built here name their provider explicitly and do not
/// need this; it is insurance for code that calls `ServerConfig::builder()`
/// or `ClientConfig::builder()` (such as tonic's own TLS). Calling it again,
/// or after another provider was installed, does nothing.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An Err only means a provider is already installed: fine.
        let _ = provider().install_default();
    });
}

/// A one-sentence explanation of a failed TLS connection, for logs and
/// error messages.
///
/// Accepts any error (`&std::io::Error` from tokio-rustls or
/// `rustls::StreamOwned`, `&rustls::Error`, a tonic transport error…) and
/// looks through its source chain, including the error wrapped inside an
/// `io::Error`, for the rustls error. For example: "the client presented no
/// certificate (a certificate signed by the federation CA is required)",
/// "the peer's certificate is signed by an unknown CA (not the federation
/// CA)", "TLS version not supported (TLS 1.3 required)".
pub fn describe_tls_error(e: &(dyn StdError + 'static)) -> String {
    let mut io_kind = None;
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return describe_rustls(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn StdError + 'static));
                continue;
            }
        }
        current = err.source();
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::UnexpectedEof) => "the peer closed the connection during the TLS handshake \
             (it may have refused our certificate or TLS version, or not speak TLS)"
            .into(),
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe) => {
            format!("the connection was reset during the TLS handshake ({e})")
        }
        Some(K::ConnectionRefused) => {
            format!("connection refused: nothing is listening at that address ({e})")
        }
        Some(K::TimedOut | K::WouldBlock) => format!("the TLS handshake timed out ({e})"),
        _ => format!("TLS connection failed: {e}"),
    }
}

fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => "the client presented no certificate \
             (a certificate signed by the federation CA is required)"
            .into(),
        E::InvalidCertificate(c) => describe_certificate_error(c),
        E::AlertReceived(alert) => describe_alert(*alert),
        E::PeerIncompatible(p) => describe_incompatible(p),
        E::InvalidMessage(_) => format!(
            "the peer did not speak TLS correctly (is it using plaintext, or a different protocol?): {e}"
        ),
        E::NoApplicationProtocol => {
            "no common application protocol: ALPN \"h2\" (gRPC) is required".into()
        }
        E::InconsistentKeys(_) => "our private key does not belong to our certificate".into(),
        other => format!("TLS error: {other}"),
    }
}

fn describe_certificate_error(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => {
            "the peer's certificate is signed by an unknown CA (not the federation CA)".into()
        }
        C::BadSignature => "the peer's certificate does not verify against the trusted CA \
             (signed by an unknown CA of the same name, or altered)"
            .into(),
        C::Expired | C::ExpiredContext { .. } => {
            format!("the peer's certificate has expired ({c})")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("the peer's certificate is not valid yet; check the clocks ({c})")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the server's certificate is not valid for the name we connected to ({c}); \
             dial one of the names in its certificate or re-issue it with that name"
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "the peer's certificate is not meant for this use ({c}); participants need \
             EKU clientAuth, the coordinator serverAuth"
        ),
        C::Revoked => "the peer's certificate has been revoked".into(),
        C::BadEncoding => "the peer's certificate is malformed".into(),
        other => format!("the peer's certificate was rejected: {other}"),
    }
}

fn describe_alert(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => {
            "the server requires a client certificate and we presented none".into()
        }
        A::UnknownCA => {
            "the peer rejected our certificate: signed by a CA it does not trust (unknown CA)"
                .into()
        }
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            format!("the peer rejected our certificate ({alert:?})")
        }
        A::CertificateExpired => "the peer rejected our certificate: it has expired".into(),
        A::CertificateRevoked => "the peer rejected our certificate: it has been revoked".into(),
        A::AccessDenied => "the peer denied access to our certificate's identity".into(),
        A::ProtocolVersion => {
            "the peer refused our TLS version: TLS version not supported (TLS 1.3 required)".into()
        }
        A::HandshakeFailure => {
            "the peer refused the handshake: no common TLS parameters (TLS 1.3 required)".into()
        }
        A::NoApplicationProtocol => {
            "the peer refused our application protocol: ALPN \"h2\" (gRPC) is required".into()
        }
        A::DecryptError => "the peer could not verify our handshake signature".into(),
        other => format!("the peer aborted the handshake with alert {other:?}"),
    }
}

fn describe_incompatible(p: &PeerIncompatible) -> String {
    use PeerIncompatible as P;
    match p {
        P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled
        | P::SupportedVersionsExtensionRequired
        | P::ServerDoesNotSupportTls12Or13
        | P::ServerTlsVersionIsDisabledByOurConfig => {
            format!("TLS version not supported (TLS 1.3 required): {p:?}")
        }
        other => format!("the peer's TLS settings are incompatible with ours: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{COORDINATOR_NAME, DEFAULT_COORDINATOR_NAMES, Overwrite, init_with};
    use rcgen::{CertificateParams, DistinguishedName, KeyPair};

    /// A development PKI in `dir` for `names`; the files of each name.
    fn pki(dir: &Path, names: &[&str]) -> impl Fn(&str) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let hosts: Vec<String> = DEFAULT_COORDINATOR_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect();
        init_with(dir, &names, &hosts, Overwrite::Replace).unwrap();
        let dir = dir.to_path_buf();
        move |name| TlsFiles::in_dir(&dir, name)
    }

    fn der_of(pem: &str) -> Vec<u8> {
        pem_certificates(pem.as_bytes(), "test").unwrap()[0]
            .as_ref()
            .to_vec()
    }

    #[test]
    fn peer_name_is_the_common_name() {
        let ca = crate::CertificateAuthority::generate("CA").unwrap();
        let issued = ca.issue_participant("site-7").unwrap();
        assert_eq!(peer_name(&der_of(&issued.cert_pem)).unwrap(), "site-7");
        let chain = vec![CertificateDer::from(der_of(&issued.cert_pem))];
        assert_eq!(peer_name_of_chain(&chain).unwrap(), "site-7");
        assert!(matches!(
            peer_name_of_chain(&[]),
            Err(Error::NoPeerCertificate)
        ));
    }

    #[test]
    fn peer_name_falls_back_to_the_dns_san() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["only-san.example".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(peer_name(cert.der()).unwrap(), "only-san.example");

        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(peer_name(cert.der()), Err(Error::NoPeerName)));

        assert!(matches!(
            peer_name(b"not a certificate"),
            Err(Error::BadCertificate { .. })
        ));
    }

    #[test]
    fn load_names_the_offending_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = pki(dir.path(), &["a", "b"]);
        let good = files("a");
        good.load().unwrap();

        let mut missing = good.clone();
        missing.key = dir.path().join("nope.key");
        match missing.load() {
            Err(Error::Read { path, .. }) => assert_eq!(path, dir.path().join("nope.key")),
            other => panic!("expected Read, got {other:?}"),
        }

        let mut key_as_cert = good.clone();
        key_as_cert.cert = good.key.clone();
        match key_as_cert.load() {
            Err(e @ Error::BadCertificate { .. }) => {
                assert!(e.to_string().contains("a.key"), "{e}")
            }
            other => panic!("expected BadCertificate, got {other:?}"),
        }

        let mut cert_as_key = good.clone();
        cert_as_key.key = good.cert.clone();
        match cert_as_key.load() {
            Err(e @ Error::BadPrivateKey { .. }) => {
                assert!(e.to_string().contains("a.crt"), "{e}")
            }
            other => panic!("expected BadPrivateKey, got {other:?}"),
        }

        let mut mismatched = good.clone();
        mismatched.key = files("b").key;
        match mismatched.load() {
            Err(Error::KeyMismatch { cert, key }) => {
                assert!(cert.ends_with("a.crt") && key.ends_with("b.key"))
            }
            other => panic!("expected KeyMismatch, got {other:?}"),
        }
    }

    #[test]
    fn configs_offer_h2_and_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = pki(dir.path(), &["a"]);
        let server = server_config(&files(COORDINATOR_NAME).load().unwrap()).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        let client = client_config(&files("a").load().unwrap()).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(client.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn describe_looks_inside_io_errors() {
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert!(describe_tls_error(&wrapped).contains("presented no certificate"));
        let unknown_ca = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe_tls_error(&unknown_ca).contains("unknown CA"));
        let version =
            rustls::Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired);
        assert!(describe_tls_error(&version).contains("TLS 1.3 required"));
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(describe_tls_error(&eof).contains("closed the connection"));
    }

    #[test]
    fn install_crypto_provider_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}
