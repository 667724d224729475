//! Tests of the development PKI (`pki.rs`).

use super::*;
use std::os::unix::fs::PermissionsExt;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Parses a PEM certificate and hands it to `f`.
fn with_cert<R>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let (_, pem) = parse_x509_pem(pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("X.509");
    f(&cert)
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .expect("a CN")
        .as_str()
        .expect("CN string")
        .to_string()
}

/// DNS and IP SANs, rendered as strings.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let ext = cert.subject_alternative_name().unwrap().expect("SANs");
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap())),
                16 => format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap())),
                _ => panic!("bad IP SAN"),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// (serverAuth, clientAuth)
fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let ext = cert.extended_key_usage().unwrap().expect("EKU");
    assert!(!ext.value.any, "anyExtendedKeyUsage must not be set");
    (ext.value.server_auth, ext.value.client_auth)
}

/// Whether `leaf_pem` is signed by the key of `ca_pem` and names it as issuer.
fn signed_by(leaf_pem: &str, ca_pem: &str) -> bool {
    with_cert(ca_pem, |ca| {
        with_cert(leaf_pem, |leaf| {
            leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    })
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn ca_is_a_p256_ca_valid_now() {
    let ca = CertificateAuthority::generate("Test CA").unwrap();
    with_cert(&ca.cert_pem(), |cert| {
        assert!(cert.is_ca());
        assert_eq!(common_name(cert), "Test CA");
        assert!(cert.validity().is_valid());
        assert!(cert.verify_signature(None).is_ok(), "self-signed");
        // id-ecPublicKey with the P-256 curve.
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        let curve = cert.public_key().algorithm.parameters.as_ref().unwrap();
        assert_eq!(
            curve.as_oid().unwrap().to_id_string(),
            "1.2.840.10045.3.1.7"
        );
    });
    assert!(ca.key_pem().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn participant_certificate_names_and_purpose() {
    let ca = CertificateAuthority::generate("Test CA").unwrap();
    let issued = ca.issue_participant("hospital-a_1.eu").unwrap();
    assert!(issued.key_pem.contains("BEGIN PRIVATE KEY"));
    with_cert(&issued.cert_pem, |cert| {
        assert_eq!(common_name(cert), "hospital-a_1.eu");
        assert_eq!(sans(cert), ["DNS:hospital-a_1.eu"]);
        assert_eq!(eku(cert), (false, true), "clientAuth only");
        assert!(!cert.is_ca());
        assert!(cert.validity().is_valid());
        let left = cert.validity().time_to_expiration().unwrap();
        assert!(left > Duration::days(365) && left <= LEAF_VALIDITY);
    });
    assert!(signed_by(&issued.cert_pem, &ca.cert_pem()));
}

#[test]
fn coordinator_certificate_has_dns_and_ip_sans() {
    let ca = CertificateAuthority::generate("Test CA").unwrap();
    let issued = ca
        .issue_coordinator(&names(&["localhost", "127.0.0.1", "::1", "fl.example.org"]))
        .unwrap();
    with_cert(&issued.cert_pem, |cert| {
        assert_eq!(common_name(cert), "localhost");
        assert_eq!(
            sans(cert),
            [
                "DNS:localhost",
                "IP:127.0.0.1",
                "IP:::1",
                "DNS:fl.example.org"
            ]
        );
        assert_eq!(eku(cert), (true, false), "serverAuth only");
    });
    assert!(signed_by(&issued.cert_pem, &ca.cert_pem()));
}

#[test]
fn coordinator_defaults_and_bad_names() {
    let ca = CertificateAuthority::generate("Test CA").unwrap();
    let issued = ca.issue_coordinator(&[]).unwrap();
    with_cert(&issued.cert_pem, |cert| {
        assert_eq!(sans(cert), ["DNS:localhost", "IP:127.0.0.1"]);
    });
    for bad in ["", "not a name", "bad/name", "ünïcode.org"] {
        match ca.issue_coordinator(&names(&[bad])) {
            Err(Error::InvalidCoordinatorName { name }) => assert_eq!(name, bad.trim()),
            other => panic!("{bad:?}: expected InvalidCoordinatorName, got {other:?}"),
        }
    }
}

#[test]
fn participant_names_are_checked() {
    let long = "x".repeat(MAX_PARTICIPANT_NAME_LEN);
    for good in ["a", "site-1", "hospital_a.eu", "0day", long.as_str()] {
        validate_participant_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    let too_long = "x".repeat(MAX_PARTICIPANT_NAME_LEN + 1);
    for bad in [
        "",
        too_long.as_str(),
        "a/b",
        "../x",
        ".hidden",
        "-rf",
        "a b",
        "é",
        "ca",
        "CA",
        "coordinator",
        "Coordinator",
    ] {
        match validate_participant_name(bad) {
            Err(Error::InvalidParticipantName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: expected InvalidParticipantName, got {other:?}"),
        }
    }
    let ca = CertificateAuthority::generate("Test CA").unwrap();
    assert!(matches!(
        ca.issue_participant("coordinator"),
        Err(Error::InvalidParticipantName { .. })
    ));
}

#[test]
fn init_writes_every_file_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let written = init_with(&out, &names(&["a", "b"]), &[], Overwrite::Refuse).unwrap();
    let expected = [
        "ca.crt",
        "ca.key",
        "coordinator.crt",
        "coordinator.key",
        "a.crt",
        "a.key",
        "b.crt",
        "b.key",
    ];
    let mut got: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    got.sort();
    let mut want = expected.map(String::from).to_vec();
    want.sort();
    assert_eq!(got, want);
    for file in expected {
        let path = out.join(file);
        assert!(path.is_file(), "{file} missing");
        if file.ends_with(".key") {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    let ca = fs::read_to_string(out.join("ca.crt")).unwrap();
    for holder in ["coordinator", "a", "b"] {
        let cert = fs::read_to_string(out.join(format!("{holder}.crt"))).unwrap();
        assert!(signed_by(&cert, &ca), "{holder}");
    }
    // The files load back as a CA.
    let loaded = CertificateAuthority::load(&out).unwrap();
    assert_eq!(loaded.cert_pem(), ca);
    // Each development CA has its own name.
    let other = CertificateAuthority::generate_development().unwrap();
    let (name, other_name) = (
        with_cert(&ca, common_name),
        with_cert(&other.cert_pem(), common_name),
    );
    assert!(name.starts_with(DEFAULT_CA_NAME), "{name}");
    assert_ne!(name, other_name);
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    fs::write(out.join("ca.key"), "precious").unwrap();
    match init(out, &names(&["a"]), &[]) {
        Err(Error::WouldOverwrite { path }) => assert_eq!(path, out.join("ca.key")),
        other => panic!("expected WouldOverwrite, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(out.join("ca.key")).unwrap(), "precious");
    assert!(!out.join("ca.crt").exists());
    assert!(!out.join("a.key").exists());

    // A participant key in the way also stops init.
    fs::remove_file(out.join("ca.key")).unwrap();
    fs::write(out.join("a.key"), "precious").unwrap();
    assert!(matches!(
        init(out, &names(&["a"]), &[]),
        Err(Error::WouldOverwrite { .. })
    ));
    assert!(!out.join("ca.key").exists());
}

#[test]
fn init_replace_makes_a_new_ca_and_tightens_modes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    init(out, &names(&["a"]), &[]).unwrap();
    let old_ca = fs::read_to_string(out.join("ca.crt")).unwrap();
    fs::set_permissions(out.join("a.key"), fs::Permissions::from_mode(0o644)).unwrap();
    init_with(out, &names(&["a"]), &[], Overwrite::Replace).unwrap();
    let new_ca = fs::read_to_string(out.join("ca.crt")).unwrap();
    assert_ne!(old_ca, new_ca);
    assert_eq!(mode(&out.join("a.key")), 0o600);
    let a = fs::read_to_string(out.join("a.crt")).unwrap();
    assert!(signed_by(&a, &new_ca));
    assert!(!signed_by(&a, &old_ca));
}

#[test]
fn init_rejects_duplicates_and_bad_names_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    assert!(matches!(
        init(&out, &names(&["a", "b", "A"]), &[]),
        Err(Error::DuplicateParticipant { name }) if name == "A"
    ));
    assert!(matches!(
        init(&out, &names(&["a", "b/c"]), &[]),
        Err(Error::InvalidParticipantName { .. })
    ));
    assert!(matches!(
        init(&out, &names(&["a"]), &names(&["no such name"])),
        Err(Error::InvalidCoordinatorName { .. })
    ));
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn issue_uses_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    init(out, &names(&["a"]), &[]).unwrap();
    let ca = fs::read_to_string(out.join("ca.crt")).unwrap();
    issue(out, "late-joiner").unwrap();
    let cert = fs::read_to_string(out.join("late-joiner.crt")).unwrap();
    assert!(signed_by(&cert, &ca));
    with_cert(&cert, |c| {
        assert_eq!(common_name(c), "late-joiner");
        assert_eq!(eku(c), (false, true));
    });
    assert_eq!(mode(&out.join("late-joiner.key")), 0o600);
    // The CA itself is untouched.
    assert_eq!(fs::read_to_string(out.join("ca.crt")).unwrap(), ca);
}

#[test]
fn issue_refuses_existing_key_unless_replacing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    init(out, &names(&["a"]), &[]).unwrap();
    let key = fs::read_to_string(out.join("a.key")).unwrap();
    match issue(out, "a") {
        Err(Error::WouldOverwrite { path }) => assert_eq!(path, out.join("a.key")),
        other => panic!("expected WouldOverwrite, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(out.join("a.key")).unwrap(), key);
    issue_with(out, "a", Overwrite::Replace).unwrap();
    assert_ne!(fs::read_to_string(out.join("a.key")).unwrap(), key);
    assert!(matches!(
        issue(out, "ca"),
        Err(Error::InvalidParticipantName { .. })
    ));
}

#[test]
fn issue_without_a_ca_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    match issue(dir.path(), "a") {
        Err(Error::Read { path, .. }) => assert_eq!(path, dir.path().join("ca.crt")),
        other => panic!("expected Read error, got {other:?}"),
    }
    assert!(!dir.path().join("a.key").exists());
}

#[test]
fn load_rejects_a_key_of_another_ca_and_a_leaf_as_ca() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    init(one.path(), &names(&["a"]), &[]).unwrap();
    init(two.path(), &names(&["a"]), &[]).unwrap();
    fs::copy(two.path().join("ca.key"), one.path().join("other.key")).unwrap();
    fs::remove_file(one.path().join("ca.key")).unwrap();
    fs::rename(one.path().join("other.key"), one.path().join("ca.key")).unwrap();
    assert!(matches!(
        CertificateAuthority::load(one.path()),
        Err(Error::KeyMismatch { .. })
    ));

    // A participant's certificate and key are not a CA.
    let three = tempfile::tempdir().unwrap();
    fs::copy(two.path().join("a.crt"), three.path().join("ca.crt")).unwrap();
    fs::copy(two.path().join("a.key"), three.path().join("ca.key")).unwrap();
    assert!(matches!(
        CertificateAuthority::load(three.path()),
        Err(Error::BadCertificate { .. })
    ));
}
