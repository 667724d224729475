//! Signed advertised keys: the opt-in defence against a coordinator that
//! substitutes secure-aggregation keys (`[secagg] signed_keys = true` on the
//! coordinator).
//!
//! # What happens
//!
//! In a signed-key round every participant signs its two advertised X25519
//! public keys with the private key of its TLS certificate
//! ([`CertificateKeySigner`]); the signed bytes are
//! [`tessera_secagg::signed_key_message`]: a domain-separation prefix, the
//! round number, the signer's cohort index and both keys. The coordinator
//! forwards, with the round announcement, the DER certificate of each
//! cohort member, and every participant checks, **before it takes part**:
//!
//! 1. each forwarded certificate chains to the federation CA this
//!    participant trusts (the `ca` file of its own TLS configuration), is
//!    within its validity period and carries EKU clientAuth — the same
//!    verification the coordinator applies to participants in the TLS
//!    handshake, done with rustls' `WebPkiClientVerifier` over that CA
//!    alone ([`FederationTrust`]);
//! 2. the certificate's name ([`tessera_certs::peer_name`]) is the name the
//!    cohort list gives that member, and no name or index appears twice;
//! 3. the certificate forwarded for this participant's own index, if any,
//!    is its own certificate.
//!
//! A member whose certificate fails these checks makes the participant
//! decline the round ([`SigningError`], logged and sent back as the
//! decline reason). Then, when the neighbours' keys arrive, each signature
//! is verified with the public key of that neighbour's checked certificate
//! ([`CertificateKeyVerifier`]); one bad or missing signature and the
//! participant leaves the round before sending anything derived from those
//! keys (no shares, no masked input).
//!
//! Supported certificate keys: ECDSA P-256 (the development PKI's keys;
//! ASN.1 DER signatures with SHA-256), ECDSA P-384 (SHA-384) and Ed25519.
//! The private key must be PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as
//! `tessera-certs` writes it. A participant whose key cannot sign still
//! takes part in rounds without signed keys and declines signed ones.
//!
//! # What this protects against
//!
//! - A coordinator replacing a participant's advertised keys with keys of
//!   its own (a man in the middle of the pairwise key agreement). Without
//!   signatures it could then open the Shamir shares sent to that
//!   participant and derive its pairwise masks, and so unmask individual
//!   inputs. With signatures the substituted keys do not verify and the
//!   honest participants stop before sending shares.
//! - A coordinator forwarding a certificate of its own making for a
//!   member: it does not chain to the federation CA, or names someone else,
//!   and the round is refused.
//! - Replaying or moving genuine signed keys: the signed bytes bind the
//!   round number and the signer's cohort index.
//!
//! # What it does not protect against
//!
//! - **Inconsistent dropout claims.** The consistency check of Bonawitz et
//!   al. 2017 (their Round 3, in which survivors sign the set of
//!   participants that are still alive before any share is revealed) is not
//!   implemented. An actively malicious coordinator can therefore still tell
//!   different participants different stories about who dropped out, and ask
//!   some of them for a participant's self-mask shares and others for its
//!   mask-key shares. Each participant refuses to reveal both kinds of share
//!   for one peer, but it cannot see what the others were asked.
//! - **The CA holder.** Whoever holds the federation CA key can issue a
//!   valid certificate for any name. In a development PKI made by the
//!   coordinator's operator this defence is only as strong as that operator's
//!   restraint; for real protection the CA must be run by a party the
//!   coordinator does not control.
//! - **Colluding or coordinator-controlled participants** with genuine
//!   certificates (Sybils) in the cohort; the Shamir threshold bounds what
//!   they learn, signatures do not.
//! - **Revocation.** No revocation list is consulted; a compromised
//!   participant key stays usable until its certificate expires.
//! - Which participants are selected, dropped or excluded: that remains the
//!   coordinator's decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tessera_secagg::{KeySigner, KeyVerifier};

/// OID of an elliptic-curve public key (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the P-256 curve (prime256v1).
const OID_P256: &str = "1.2.840.10045.3.1.7";
/// OID of the P-384 curve (secp384r1).
const OID_P384: &str = "1.3.132.0.34";
/// OID of an Ed25519 public key.
const OID_ED25519: &str = "1.3.101.112";

/// Why keys cannot be signed, or why a round's forwarded certificates are
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The private key is not a PEM private key.
    #[error("cannot read the private key: {0}")]
    BadPrivateKey(String),
    /// The private key is of a kind that cannot sign advertised keys.
    #[error("this private key cannot sign advertised keys: {0}")]
    UnsupportedPrivateKey(String),
    /// The CA file holds no usable certificate.
    #[error("cannot use the federation CA certificate: {0}")]
    BadCa(String),
    /// This participant's own certificate cannot be read.
    #[error("cannot use this participant's certificate: {0}")]
    BadOwnCertificate(String),
    /// The private key does not belong to this participant's certificate.
    #[error("the private key does not belong to this participant's certificate")]
    KeyMismatch,
    /// The cohort lists this index twice.
    #[error("the cohort lists index {0} twice")]
    DuplicateIndex(u32),
    /// The cohort lists this name twice.
    #[error("the cohort lists {0:?} twice")]
    DuplicateName(String),
    /// This participant's own index is not in the cohort.
    #[error("this participant's index {0} is not in the cohort")]
    NotInCohort(u32),
    /// The certificate forwarded for this participant is not its own.
    #[error(
        "the coordinator forwarded, for this participant (index {index}), a certificate that is not its own"
    )]
    NotMyCertificate {
        /// This participant's index.
        index: u32,
    },
    /// A member's certificate does not verify against the federation CA.
    #[error(
        "the certificate forwarded for cohort member {index} ({name:?}) is not a valid participant certificate of the federation CA: {reason}"
    )]
    UntrustedCertificate {
        /// The member's index.
        index: u32,
        /// The name the cohort list gives it.
        name: String,
        /// What the verification found.
        reason: String,
    },
    /// A member's certificate names someone else.
    #[error(
        "the certificate forwarded for cohort member {index} names {found:?}, but the cohort lists {listed:?}"
    )]
    NameMismatch {
        /// The member's index.
        index: u32,
        /// The name the cohort list gives it.
        listed: String,
        /// The name in the certificate.
        found: String,
    },
    /// A member's certificate key cannot verify signatures here.
    #[error("the certificate of cohort member {index} ({name:?}) has an unsupported key: {reason}")]
    UnsupportedPeerKey {
        /// The member's index.
        index: u32,
        /// The name the cohort list gives it.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The signature scheme a certificate key signs advertised keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// ECDSA on P-256 with SHA-256, ASN.1 DER signature.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384, ASN.1 DER signature.
    EcdsaP384Sha384,
    /// Ed25519.
    Ed25519,
}

impl KeyScheme {
    fn verification(self) -> &'static dyn sig::VerificationAlgorithm {
        match self {
            KeyScheme::EcdsaP256Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyScheme::EcdsaP384Sha384 => &sig::ECDSA_P384_SHA384_ASN1,
            KeyScheme::Ed25519 => &sig::ED25519,
        }
    }
}

/// A certificate's public key as used to verify signatures: its scheme and
/// the raw key bytes of its SubjectPublicKeyInfo (an uncompressed point for
/// ECDSA, 32 bytes for Ed25519).
#[derive(Clone, PartialEq, Eq)]
struct PublicKey {
    scheme: KeyScheme,
    bytes: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("scheme", &self.scheme)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl PublicKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.scheme.verification(), &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

/// The public key of a DER certificate, if its algorithm is supported.
fn certificate_key(der: &[u8]) -> Result<PublicKey, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate ({e})"))?;
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let scheme = match algorithm.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .ok_or("an elliptic-curve key without a named curve")?;
            match curve.as_str() {
                OID_P256 => KeyScheme::EcdsaP256Sha256,
                OID_P384 => KeyScheme::EcdsaP384Sha384,
                other => return Err(format!("elliptic curve {other} (P-256 or P-384 supported)")),
            }
        }
        OID_ED25519 => KeyScheme::Ed25519,
        other => {
            return Err(format!(
                "key algorithm {other} (ECDSA P-256, P-384 or Ed25519 supported)"
            ));
        }
    };
    Ok(PublicKey {
        scheme,
        bytes: spki.subject_public_key.data.to_vec(),
    })
}

enum SigningKey {
    Ecdsa(EcdsaKeyPair, KeyScheme),
    Ed25519(Ed25519KeyPair),
}

struct SignerInner {
    key: SigningKey,
    rng: SystemRandom,
}

/// Signs this participant's advertised keys with the private key of its
/// TLS certificate. Cheap to clone (the key is shared).
#[derive(Clone)]
pub struct CertificateKeySigner {
    inner: Arc<SignerInner>,
}

impl fmt::Debug for CertificateKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateKeySigner")
            .field("scheme", &self.scheme())
            .finish_non_exhaustive()
    }
}

impl CertificateKeySigner {
    /// From a PEM private key (PKCS#8, `-----BEGIN PRIVATE KEY-----`):
    /// ECDSA P-256, ECDSA P-384 or Ed25519.
    pub fn from_pem(key_pem: &[u8]) -> Result<Self, SigningError> {
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| SigningError::BadPrivateKey(format!("no usable PEM private key ({e})")))?;
        match key {
            PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8_der(k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(_) => Err(SigningError::UnsupportedPrivateKey(
                "a SEC1 key (BEGIN EC PRIVATE KEY); convert it to PKCS#8 \
                 (`openssl pkcs8 -topk8 -nocrypt`)"
                    .into(),
            )),
            PrivateKeyDer::Pkcs1(_) => Err(SigningError::UnsupportedPrivateKey(
                "an RSA key; signed keys need an ECDSA P-256/P-384 or Ed25519 certificate key"
                    .into(),
            )),
            _ => Err(SigningError::UnsupportedPrivateKey(
                "an unknown key format".into(),
            )),
        }
    }

    /// From a DER PKCS#8 private key: ECDSA P-256, ECDSA P-384 or Ed25519.
    pub fn from_pkcs8_der(pkcs8: &[u8]) -> Result<Self, SigningError> {
        let rng = SystemRandom::new();
        let key = if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
        {
            SigningKey::Ecdsa(k, KeyScheme::EcdsaP256Sha256)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8, &rng)
        {
            SigningKey::Ecdsa(k, KeyScheme::EcdsaP384Sha384)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
            SigningKey::Ed25519(k)
        } else {
            return Err(SigningError::UnsupportedPrivateKey(
                "not an ECDSA P-256, ECDSA P-384 or Ed25519 PKCS#8 key".into(),
            ));
        };
        Ok(Self {
            inner: Arc::new(SignerInner { key, rng }),
        })
    }

    /// The scheme this key signs with.
    pub fn scheme(&self) -> KeyScheme {
        match &self.inner.key {
            SigningKey::Ecdsa(_, s) => *s,
            SigningKey::Ed25519(_) => KeyScheme::Ed25519,
        }
    }

    /// The raw public key, as it appears in a certificate's
    /// SubjectPublicKeyInfo.
    pub fn public_key(&self) -> &[u8] {
        match &self.inner.key {
            SigningKey::Ecdsa(k, _) => k.public_key().as_ref(),
            SigningKey::Ed25519(k) => k.public_key().as_ref(),
        }
    }

    fn public(&self) -> PublicKey {
        PublicKey {
            scheme: self.scheme(),
            bytes: self.public_key().to_vec(),
        }
    }
}

impl KeySigner for CertificateKeySigner {
    /// The signature over `message`. ECDSA signing only fails if the system
    /// random number generator does; the signature is then empty, which
    /// every verifier (and the coordinator) refuses.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.inner.key {
            SigningKey::Ecdsa(k, _) => match k.sign(&self.inner.rng, message) {
                Ok(s) => s.as_ref().to_vec(),
                Err(_) => {
                    tracing::error!(
                        "the system random number generator failed; keys left unsigned"
                    );
                    Vec::new()
                }
            },
            SigningKey::Ed25519(k) => k.sign(message).as_ref().to_vec(),
        }
    }
}

/// The federation CA as this participant trusts it: verifies that a
/// forwarded certificate is a participant certificate issued by it.
#[derive(Clone)]
pub struct FederationTrust {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for FederationTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationTrust").finish_non_exhaustive()
    }
}

impl FederationTrust {
    /// From the federation CA certificate(s), PEM (this participant's
    /// `tls.ca` file).
    pub fn from_pem(ca_pem: &[u8]) -> Result<Self, SigningError> {
        let cas = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SigningError::BadCa(format!("malformed PEM ({e})")))?;
        if cas.is_empty() {
            return Err(SigningError::BadCa("no PEM certificate found".into()));
        }
        let mut roots = RootCertStore::empty();
        for der in cas {
            roots
                .add(der)
                .map_err(|e| SigningError::BadCa(format!("not a usable CA certificate ({e})")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| SigningError::BadCa(e.to_string()))?;
        Ok(Self { verifier })
    }

    /// Checks one cohort member's forwarded certificate — it chains to the
    /// federation CA, is valid now, carries EKU clientAuth and names
    /// `name` — and returns its public key.
    fn check_member(&self, index: u32, name: &str, der: &[u8]) -> Result<PublicKey, SigningError> {
        let cert = CertificateDer::from(der);
        self.verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map_err(|e| SigningError::UntrustedCertificate {
                index,
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let found =
            tessera_certs::peer_name(der).map_err(|e| SigningError::UntrustedCertificate {
                index,
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        if found != name {
            return Err(SigningError::NameMismatch {
                index,
                listed: name.to_string(),
                found,
            });
        }
        certificate_key(der).map_err(|reason| SigningError::UnsupportedPeerKey {
            index,
            name: name.to_string(),
            reason,
        })
    }
}

/// One cohort member as the coordinator announced it.
#[derive(Debug, Clone, Copy)]
pub struct CohortCertificate<'a> {
    /// The member's index in the round.
    pub index: u32,
    /// The name the cohort list gives it.
    pub name: &'a str,
    /// Its DER certificate as forwarded (empty when none was forwarded).
    pub certificate: &'a [u8],
}

impl<'a> From<&'a tessera_proto::v1::CohortMember> for CohortCertificate<'a> {
    fn from(m: &'a tessera_proto::v1::CohortMember) -> Self {
        Self {
            index: m.index,
            name: &m.name,
            certificate: &m.certificate,
        }
    }
}

impl<'a> From<&'a tessera_model::round::CohortMember> for CohortCertificate<'a> {
    fn from(m: &'a tessera_model::round::CohortMember) -> Self {
        Self {
            index: m.index,
            name: &m.name,
            certificate: &m.certificate,
        }
    }
}

/// Verifies the neighbours' signatures on their advertised keys with the
/// public keys of their checked certificates.
#[derive(Debug, Clone)]
pub struct CertificateKeyVerifier {
    keys: BTreeMap<u32, PublicKey>,
}

impl CertificateKeyVerifier {
    /// Checks every member's forwarded certificate against the federation
    /// CA and its listed name (see the module documentation) and keeps its
    /// public key. Any failure refuses the whole cohort.
    ///
    /// A member with no forwarded certificate (the coordinator lost its
    /// session before the announcement) is kept without a key: keys
    /// advertised in its name never verify.
    pub fn new<'a>(
        trust: &FederationTrust,
        cohort: impl IntoIterator<Item = CohortCertificate<'a>>,
    ) -> Result<Self, SigningError> {
        let mut keys = BTreeMap::new();
        let mut indices = BTreeSet::new();
        let mut names = BTreeSet::new();
        for m in cohort {
            if !indices.insert(m.index) {
                return Err(SigningError::DuplicateIndex(m.index));
            }
            if !names.insert(m.name) {
                return Err(SigningError::DuplicateName(m.name.to_string()));
            }
            if m.certificate.is_empty() {
                tracing::debug!(
                    index = m.index,
                    name = m.name,
                    "no certificate forwarded for this cohort member"
                );
                continue;
            }
            keys.insert(m.index, trust.check_member(m.index, m.name, m.certificate)?);
        }
        Ok(Self { keys })
    }

    /// Whether member `index` has a checked certificate.
    pub fn knows(&self, index: u32) -> bool {
        self.keys.contains_key(&index)
    }
}

impl KeyVerifier for CertificateKeyVerifier {
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool {
        self.keys
            .get(&peer)
            .is_some_and(|k| k.verify(message, signature))
    }
}

/// Everything a participant needs for signed-key rounds: its certificate
/// key, its certificate and the federation CA it trusts.
#[derive(Clone)]
pub struct KeySigning {
    signer: CertificateKeySigner,
    trust: FederationTrust,
    own_certificate: Vec<u8>,
}

impl fmt::Debug for KeySigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigning")
            .field("scheme", &self.signer.scheme())
            .finish_non_exhaustive()
    }
}

impl KeySigning {
    /// From this participant's PEM private key, certificate (leaf first)
    /// and federation CA; checks that the key belongs to the certificate.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8], ca_pem: &[u8]) -> Result<Self, SigningError> {
        let signer = CertificateKeySigner::from_pem(key_pem)?;
        let trust = FederationTrust::from_pem(ca_pem)?;
        let own_certificate = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or_else(|| SigningError::BadOwnCertificate("no PEM certificate found".into()))?
            .map_err(|e| SigningError::BadOwnCertificate(format!("malformed PEM ({e})")))?
            .as_ref()
            .to_vec();
        let own_key = certificate_key(&own_certificate).map_err(SigningError::BadOwnCertificate)?;
        if own_key != signer.public() {
            return Err(SigningError::KeyMismatch);
        }
        Ok(Self {
            signer,
            trust,
            own_certificate,
        })
    }

    /// From the TLS material this participant connects with.
    pub fn from_material(m: &tessera_certs::TlsMaterial) -> Result<Self, SigningError> {
        Self::from_pem(&m.key_pem, &m.cert_pem, &m.ca_pem)
    }

    /// The signer of this participant's advertised keys.
    pub fn signer(&self) -> CertificateKeySigner {
        self.signer.clone()
    }

    /// The federation CA this participant trusts.
    pub fn trust(&self) -> &FederationTrust {
        &self.trust
    }

    /// This participant's own certificate, DER.
    pub fn own_certificate(&self) -> &[u8] {
        &self.own_certificate
    }

    /// The signer and the verifier of one signed-key round, after checking
    /// the announced cohort: every forwarded certificate (see
    /// [`CertificateKeyVerifier::new`]), and that the certificate forwarded
    /// for this participant's own index `me`, if any, is its own.
    pub fn for_round<'a>(
        &self,
        me: u32,
        cohort: impl IntoIterator<Item = CohortCertificate<'a>>,
    ) -> Result<(CertificateKeySigner, CertificateKeyVerifier), SigningError> {
        let cohort: Vec<CohortCertificate<'a>> = cohort.into_iter().collect();
        let mine = cohort
            .iter()
            .find(|m| m.index == me)
            .ok_or(SigningError::NotInCohort(me))?;
        if !mine.certificate.is_empty() && mine.certificate != self.own_certificate.as_slice() {
            return Err(SigningError::NotMyCertificate { index: me });
        }
        let verifier = CertificateKeyVerifier::new(&self.trust, cohort)?;
        Ok((self.signer(), verifier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_certs::testing::TestPki;
    use tessera_secagg::signed_key_message;

    struct Pki {
        _dir: tempfile::TempDir,
        pki: TestPki,
    }

    fn pki(names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path(), names);
        Pki { _dir: dir, pki }
    }

    fn read(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    impl Pki {
        fn signing(&self, name: &str) -> KeySigning {
            let f = self.pki.files_for(name);
            KeySigning::from_pem(&read(&f.key), &read(&f.cert), &read(&f.ca)).unwrap()
        }

        fn cert_der(&self, name: &str) -> Vec<u8> {
            der(&read(&self.pki.files_for(name).cert))
        }

        fn trust(&self) -> FederationTrust {
            FederationTrust::from_pem(&read(&self.pki.ca_cert())).unwrap()
        }
    }

    fn member<'a>(index: u32, name: &'a str, certificate: &'a [u8]) -> CohortCertificate<'a> {
        CohortCertificate {
            index,
            name,
            certificate,
        }
    }

    fn message(round: u64, from: u32) -> Vec<u8> {
        signed_key_message(round, from, &[1; 32], &[2; 32])
    }

    #[test]
    fn sign_verify_round_trip_with_the_development_pki() {
        let p = pki(&["alice", "bob", "carol"]);
        let alice = p.signing("alice");
        assert_eq!(alice.signer().scheme(), KeyScheme::EcdsaP256Sha256);
        let (a, b, c) = (p.cert_der("alice"), p.cert_der("bob"), p.cert_der("carol"));
        let cohort = [
            member(1, "alice", &a),
            member(2, "bob", &b),
            member(3, "carol", &c),
        ];
        let (_, verifier) = alice.for_round(1, cohort).unwrap();
        for (i, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
            let signer = p.signing(name).signer();
            let m = message(7, i);
            let s = signer.sign(&m);
            assert!(!s.is_empty() && s.len() <= tessera_secagg::server::MAX_SIGNATURE_LEN);
            assert!(verifier.verify(i, &m, &s), "{name}'s signature");
            // The same signature does not verify for another index, round or key.
            assert!(!verifier.verify(i % 3 + 1, &m, &s));
            assert!(!verifier.verify(i, &message(8, i), &s));
            let mut moved = m.clone();
            moved[40] ^= 1;
            assert!(!verifier.verify(i, &moved, &s));
        }
        assert!(!verifier.verify(4, &message(7, 4), &alice.signer().sign(&message(7, 4))));
    }

    #[test]
    fn a_key_that_is_not_the_members_does_not_verify() {
        let p = pki(&["alice", "bob"]);
        let (a, b) = (p.cert_der("alice"), p.cert_der("bob"));
        let verifier =
            CertificateKeyVerifier::new(&p.trust(), [member(1, "alice", &a), member(2, "bob", &b)])
                .unwrap();
        // Bob's keys signed with Alice's key, or with a key from nowhere.
        let m = message(3, 2);
        assert!(!verifier.verify(2, &m, &p.signing("alice").signer().sign(&m)));
        let stranger = rcgen::KeyPair::generate().unwrap();
        let stranger = CertificateKeySigner::from_pem(stranger.serialize_pem().as_bytes()).unwrap();
        assert!(!verifier.verify(2, &m, &stranger.sign(&m)));
        assert!(!verifier.verify(2, &m, &[]));
        assert!(!verifier.verify(2, &m, &[0x30; 70]));
        assert!(verifier.verify(2, &m, &p.signing("bob").signer().sign(&m)));
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ours = pki(&["alice", "bob"]);
        let theirs = pki(&["bob"]);
        let a = ours.cert_der("alice");
        let forged = theirs.cert_der("bob");
        let err = ours
            .signing("alice")
            .for_round(1, [member(1, "alice", &a), member(2, "bob", &forged)])
            .unwrap_err();
        assert!(
            matches!(&err, SigningError::UntrustedCertificate { index: 2, name, .. } if name == "bob"),
            "{err}"
        );
        // Garbage is refused the same way.
        let err =
            CertificateKeyVerifier::new(&ours.trust(), [member(2, "bob", b"not a certificate")])
                .unwrap_err();
        assert!(
            matches!(err, SigningError::UntrustedCertificate { index: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_naming_someone_else_is_refused() {
        let p = pki(&["alice", "bob", "carol"]);
        let (a, c) = (p.cert_der("alice"), p.cert_der("carol"));
        // Carol's genuine certificate passed off as Bob's.
        let err = p
            .signing("alice")
            .for_round(1, [member(1, "alice", &a), member(2, "bob", &c)])
            .unwrap_err();
        assert_eq!(
            err,
            SigningError::NameMismatch {
                index: 2,
                listed: "bob".into(),
                found: "carol".into()
            }
        );
        // The same certificate under two indices.
        let err = p
            .signing("alice")
            .for_round(
                1,
                [
                    member(1, "alice", &a),
                    member(2, "carol", &c),
                    member(3, "carol", &c),
                ],
            )
            .unwrap_err();
        assert_eq!(err, SigningError::DuplicateName("carol".into()));
        let err = p
            .signing("alice")
            .for_round(1, [member(1, "alice", &a), member(1, "carol", &c)])
            .unwrap_err();
        assert_eq!(err, SigningError::DuplicateIndex(1));
    }

    #[test]
    fn the_coordinators_certificate_is_not_a_participant_certificate() {
        let p = pki(&["alice"]);
        let coordinator = der(&read(&p.pki.coordinator_files().cert));
        let err = CertificateKeyVerifier::new(&p.trust(), [member(2, "localhost", &coordinator)])
            .unwrap_err();
        assert!(
            matches!(err, SigningError::UntrustedCertificate { index: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn own_entry_must_be_this_participants_certificate() {
        let p = pki(&["alice", "bob"]);
        let (a, b) = (p.cert_der("alice"), p.cert_der("bob"));
        let alice = p.signing("alice");
        // Alice at index 1 but with Bob's certificate (and name) in her place.
        let err = alice
            .for_round(1, [member(1, "bob", &b), member(2, "alice", &a)])
            .unwrap_err();
        assert_eq!(err, SigningError::NotMyCertificate { index: 1 });
        assert_eq!(
            alice.for_round(3, [member(1, "alice", &a)]).unwrap_err(),
            SigningError::NotInCohort(3)
        );
        // A member with no forwarded certificate is kept, without a key.
        let (_, v) = alice
            .for_round(1, [member(1, "alice", &a), member(2, "bob", &[])])
            .unwrap();
        assert!(v.knows(1) && !v.knows(2));
        let m = message(1, 2);
        assert!(!v.verify(2, &m, &p.signing("bob").signer().sign(&m)));
    }

    #[test]
    fn key_material_is_checked() {
        let p = pki(&["alice", "bob"]);
        let (alice, bob) = (p.pki.files_for("alice"), p.pki.files_for("bob"));
        assert_eq!(
            KeySigning::from_pem(&read(&bob.key), &read(&alice.cert), &read(&alice.ca))
                .unwrap_err(),
            SigningError::KeyMismatch
        );
        assert!(matches!(
            KeySigning::from_pem(b"nothing", &read(&alice.cert), &read(&alice.ca)),
            Err(SigningError::BadPrivateKey(_))
        ));
        assert!(matches!(
            KeySigning::from_pem(&read(&alice.key), &read(&alice.cert), b""),
            Err(SigningError::BadCa(_))
        ));
        let material = alice.load().unwrap();
        let s = KeySigning::from_material(&material).unwrap();
        assert_eq!(s.own_certificate(), p.cert_der("alice").as_slice());
        // A SEC1 key is explained, not silently misread.
        let sec1 = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            CertificateKeySigner::from_pem(sec1),
            Err(SigningError::UnsupportedPrivateKey(_))
        ));
    }

    /// A small CA with the given key algorithm, issuing one participant
    /// certificate the way the development PKI does.
    fn rcgen_pki(alg: &'static rcgen::SignatureAlgorithm, name: &str) -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate_for(alg).unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(alg).unwrap();
        let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, name);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    #[test]
    fn ed25519_and_p384_certificates() {
        for (alg, scheme) in [
            (&rcgen::PKCS_ED25519, KeyScheme::Ed25519),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyScheme::EcdsaP384Sha384),
        ] {
            let (ca, cert, key) = rcgen_pki(alg, "dana");
            let s = KeySigning::from_pem(key.as_bytes(), cert.as_bytes(), ca.as_bytes()).unwrap();
            assert_eq!(s.signer().scheme(), scheme);
            let own = s.own_certificate().to_vec();
            let (signer, verifier) = s.for_round(5, [member(5, "dana", &own)]).unwrap();
            let m = message(9, 5);
            let sig = signer.sign(&m);
            assert!(sig.len() <= tessera_secagg::server::MAX_SIGNATURE_LEN);
            assert!(verifier.verify(5, &m, &sig), "{scheme:?}");
            assert!(!verifier.verify(5, &message(9, 6), &sig), "{scheme:?}");
        }
    }
}
