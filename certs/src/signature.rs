//! Verifying signatures with the public key of a federation certificate:
//! the key a participant signs its secure-aggregation keys and survivor
//! list with, checked by its peers and by the coordinator alike.
//!
//! Supported certificate keys: ECDSA P-256 (ASN.1 DER signatures with
//! SHA-256; the development PKI's keys), ECDSA P-384 (SHA-384) and Ed25519.
//! This module only reads the key out of a certificate: whether the
//! certificate itself is one of the federation's is the caller's check (the
//! TLS handshake on the coordinator, the CA verification of forwarded
//! certificates on a participant).

use std::fmt;

use ring::signature::{self as sig, UnparsedPublicKey};

/// OID of an elliptic-curve public key (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the P-256 curve (prime256v1).
const OID_P256: &str = "1.2.840.10045.3.1.7";
/// OID of the P-384 curve (secp384r1).
const OID_P384: &str = "1.3.132.0.34";
/// OID of an Ed25519 public key.
const OID_ED25519: &str = "1.3.101.112";

/// The signature scheme a certificate key signs with.
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
pub struct CertificateKey {
    scheme: KeyScheme,
    bytes: Vec<u8>,
}

impl fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateKey")
            .field("scheme", &self.scheme)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl CertificateKey {
    /// A key from its scheme and raw bytes (as a signer reports its own).
    pub fn new(scheme: KeyScheme, bytes: Vec<u8>) -> Self {
        Self { scheme, bytes }
    }

    /// The public key of a DER certificate; `Err` says why it cannot verify
    /// signatures here (unparsable, or an unsupported algorithm or curve).
    pub fn from_certificate(der: &[u8]) -> Result<Self, String> {
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
                    other => {
                        return Err(format!("elliptic curve {other} (P-256 or P-384 supported)"));
                    }
                }
            }
            OID_ED25519 => KeyScheme::Ed25519,
            other => {
                return Err(format!(
                    "key algorithm {other} (ECDSA P-256, P-384 or Ed25519 supported)"
                ));
            }
        };
        Ok(Self {
            scheme,
            bytes: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The scheme the key verifies.
    pub fn scheme(&self) -> KeyScheme {
        self.scheme
    }

    /// Whether `signature` over `message` verifies with this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.scheme.verification(), &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_key_verifies_its_own_signatures_only() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["site-a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let public = CertificateKey::from_certificate(cert.der()).unwrap();
        assert_eq!(public.scheme(), KeyScheme::EcdsaP256Sha256);
        let rng = ring::rand::SystemRandom::new();
        let signer = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let signature = signer.sign(&rng, b"survivors").unwrap();
        assert!(public.verify(b"survivors", signature.as_ref()));
        assert!(!public.verify(b"survivors!", signature.as_ref()));
        assert!(!public.verify(b"survivors", &[]));
        let mut flipped = signature.as_ref().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(!public.verify(b"survivors", &flipped));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(CertificateKey::from_certificate(b"not DER").is_err());
        assert!(CertificateKey::from_certificate(&[]).is_err());
    }
}
