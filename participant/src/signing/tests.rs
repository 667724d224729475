//! Tests of signed advertised keys: signing, verifying, and every way a
//! forwarded certificate or a signature can be wrong.

use super::*;
use tessera_secagg::signed_key_message;
use tessera_testkit::pki::TestPki;

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
    let err = CertificateKeyVerifier::new(&ours.trust(), [member(2, "bob", b"not a certificate")])
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
        KeySigning::from_pem(&read(&bob.key), &read(&alice.cert), &read(&alice.ca)).unwrap_err(),
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
