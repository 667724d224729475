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
//! decline reason). Then, when the other members' keys arrive (all of
//! them in a signed-key round: the graph seed is derived from them), each
//! signature is verified with the public key of that member's checked
//! certificate ([`CertificateKeyVerifier`]); one bad or missing signature and the
//! participant leaves the round before sending anything derived from those
//! keys (no shares, no masked input).
//!
//! Supported certificate keys: ECDSA P-256 (the development PKI's keys;
//! ASN.1 DER signatures with SHA-256), ECDSA P-384 (SHA-384) and Ed25519
//! (verified by [`tessera_certs::CertificateKey`], which the coordinator
//! uses too).
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
//! - Choosing the neighbour graph: with signed keys every participant gets
//!   every advertised key and derives the graph seed from them itself.
//!
//! # What it does not protect against
//!
//! - **Inconsistent dropout claims** are not this module's to stop: the
//!   same signing keys sign the survivor list of the consistency check
//!   (`tessera_secagg::consistency`), which catches them.
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
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tessera_certs::CertificateKey as PublicKey;
pub use tessera_certs::KeyScheme;
use tessera_secagg::{KeySigner, KeyVerifier};

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
        PublicKey::new(self.scheme(), self.public_key().to_vec())
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
        PublicKey::from_certificate(der).map_err(|reason| SigningError::UnsupportedPeerKey {
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
        let own_key = PublicKey::from_certificate(&own_certificate)
            .map_err(SigningError::BadOwnCertificate)?;
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
mod tests;
