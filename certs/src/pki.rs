//! The development PKI: a federation CA that issues one coordinator
//! certificate and one certificate per participant.
//!
//! Every key is ECDSA P-256. Files are PEM and are named after their holder:
//!
//! | file | what it is |
//! | --- | --- |
//! | `ca.crt` | the federation CA certificate; every node trusts it |
//! | `ca.key` | the CA private key; only needed to issue more certificates |
//! | `coordinator.crt` / `coordinator.key` | the coordinator's server certificate (EKU serverAuth) and key |
//! | `NAME.crt` / `NAME.key` | participant `NAME`'s client certificate (EKU clientAuth) and key |
//!
//! Private keys are created with mode 0600 (on Unix) and are never silently
//! overwritten.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

use crate::Error;

/// Common name of the CA made by [`init`], before its key fingerprint.
pub const DEFAULT_CA_NAME: &str = "Tessera development CA";

/// The names the coordinator certificate is valid for when none are given:
/// `localhost` (a DNS name) and `127.0.0.1` (an IP address).
pub const DEFAULT_COORDINATOR_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// How long a CA made by [`CertificateAuthority::generate`] is valid.
pub const CA_VALIDITY: Duration = Duration::days(10 * 365);

/// How long a coordinator or participant certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::days(2 * 365);

/// How far in the past certificates start being valid, so that a peer whose
/// clock is slightly behind still accepts a freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// File name of the CA certificate inside a PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The holder name of the coordinator's files (`coordinator.crt`, `coordinator.key`).
pub const COORDINATOR_NAME: &str = "coordinator";

/// Longest participant name accepted.
pub const MAX_PARTICIPANT_NAME_LEN: usize = 64;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What to do when a file that would be written already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Refuse with [`Error::WouldOverwrite`] and write nothing.
    #[default]
    Refuse,
    /// Replace the existing files (for example to rotate a CA or re-issue an
    /// expired certificate). Replaced keys are re-created with mode 0600.
    Replace,
}

/// The federation's certificate authority: its certificate and signing key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new self-signed CA with a fresh ECDSA P-256 key.
    ///
    /// The CA may sign end-entity certificates only (path length 0) and is
    /// valid for [`CA_VALIDITY`] from now.
    pub fn generate(common_name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|source| Error::Generate {
            subject: "the CA".into(),
            source,
        })?;
        Self::generate_with_key(common_name, key)
    }

    /// Makes a new CA named [`DEFAULT_CA_NAME`] followed by a short
    /// fingerprint of its fresh key (e.g. `Tessera development CA 3f9a2c1b`),
    /// so two development PKIs never share an issuer name and a certificate
    /// from the other one is reported as signed by an unknown CA.
    pub fn generate_development() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|source| Error::Generate {
            subject: "the CA".into(),
            source,
        })?;
        // The raw public key is 0x04 || X || Y; X is uniformly random.
        let id: String = key.public_key_raw()[1..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self::generate_with_key(&format!("{DEFAULT_CA_NAME} {id}"), key)
    }

    fn generate_with_key(common_name: &str, key: KeyPair) -> Result<Self, Error> {
        let subject = || "the CA".to_string();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            subject: subject(),
            source,
        })?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA of a PKI directory from its `ca.crt` and `ca.key`,
    /// checking that the key belongs to the certificate and that the
    /// certificate is a CA.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_to_string(&cert_path)?;
        let key_pem = read_to_string(&key_path)?;
        Self::from_pem(&cert_pem, &key_pem, &cert_path, &key_path)
    }

    fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, Error> {
        let cert_what = cert_path.display().to_string();
        let key_what = key_path.display().to_string();
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::BadPrivateKey {
            what: key_what.clone(),
            reason: format!("not a usable PEM private key ({e})"),
        })?;

        let ders = crate::tls::pem_certificates(cert_pem.as_bytes(), &cert_what)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&ders[0]).map_err(|e| Error::BadCertificate {
                what: cert_what.clone(),
                reason: format!("cannot parse the certificate ({e})"),
            })?;
        if !parsed.is_ca() {
            return Err(Error::BadCertificate {
                what: cert_what,
                reason: "this certificate is not a CA certificate".into(),
            });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch {
                cert: cert_what,
                key: key_what,
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&ders[0], key).map_err(|e| Error::BadCertificate {
                what: cert_what,
                reason: format!("cannot use this certificate as an issuer ({e})"),
            })?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// Issues the coordinator's server certificate.
    ///
    /// Each name becomes a subject alternative name: an IP address SAN if it
    /// parses as an IPv4/IPv6 address (`127.0.0.1`, `::1`), a DNS SAN
    /// otherwise (`localhost`, `fl.example.org`). The common name is the
    /// first name. EKU serverAuth only, so the certificate cannot be used
    /// as a participant's client certificate. An empty list means
    /// [`DEFAULT_COORDINATOR_NAMES`].
    pub fn issue_coordinator(&self, names: &[String]) -> Result<IssuedCert, Error> {
        let names = checked_coordinator_names(names)?;
        let subject = || "the coordinator".to_string();
        let mut params = leaf_params(&names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|name| san_for(name))
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, subject)
    }

    /// Issues participant `name`'s client certificate: common name `name`,
    /// DNS SAN `name`, EKU clientAuth only.
    ///
    /// The name must pass [`validate_participant_name`].
    pub fn issue_participant(&self, name: &str) -> Result<IssuedCert, Error> {
        validate_participant_name(name)?;
        let subject = || format!("participant {name:?}");
        let mut params = leaf_params(name);
        let dns = name.try_into().map_err(|source| Error::Generate {
            subject: subject(),
            source,
        })?;
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, subject)
    }

    fn sign(
        &self,
        params: CertificateParams,
        subject: impl Fn() -> String,
    ) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate().map_err(|source| Error::Generate {
            subject: subject(),
            source,
        })?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                subject: subject(),
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA as an rcgen issuer (to sign certificates and revocation lists).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA certificate, PEM. This is what every node trusts (`ca.crt`).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key, PEM (`ca.key`). Keep it away from the nodes: it
    /// is only needed to issue certificates.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }
}

/// Checks a participant name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit, and not `ca` or `coordinator` (in any
/// case), whose files it would collide with.
///
/// The name is the participant's identity: it becomes the certificate's
/// common name and DNS SAN and the stem of its file names.
pub fn validate_participant_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidParticipantName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_PARTICIPANT_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters A-Z a-z, digits, '.', '_' and '-' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if name.eq_ignore_ascii_case("ca") || name.eq_ignore_ascii_case(COORDINATOR_NAME) {
        return bad("\"ca\" and \"coordinator\" are reserved for the CA and the coordinator");
    }
    Ok(())
}

/// Makes a complete development PKI in `out` (created if missing): `ca.crt`,
/// `ca.key`, `coordinator.crt`, `coordinator.key` and `NAME.crt`/`NAME.key`
/// for each participant.
///
/// `coordinator_names` are the names participants will dial (see
/// [`CertificateAuthority::issue_coordinator`]); empty means
/// [`DEFAULT_COORDINATOR_NAMES`]. Refuses (writing nothing) if any of the
/// private keys it would write already exists; use [`init_with`] with
/// [`Overwrite::Replace`] to start over.
pub fn init(
    out: &Path,
    participants: &[String],
    coordinator_names: &[String],
) -> Result<(), Error> {
    init_with(out, participants, coordinator_names, Overwrite::Refuse).map(|_| ())
}

/// [`init`] with an explicit overwrite policy; returns the files written, in
/// order.
pub fn init_with(
    out: &Path,
    participants: &[String],
    coordinator_names: &[String],
    overwrite: Overwrite,
) -> Result<Vec<PathBuf>, Error> {
    let mut seen = HashSet::new();
    for name in participants {
        validate_participant_name(name)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(Error::DuplicateParticipant { name: name.clone() });
        }
    }
    let coordinator_names = checked_coordinator_names(coordinator_names)?;

    let mut holders = vec![
        ("ca".to_string(), None),
        (COORDINATOR_NAME.to_string(), None),
    ];
    holders.extend(participants.iter().map(|n| (n.clone(), None)));
    if overwrite == Overwrite::Refuse {
        for (holder, _) in &holders {
            refuse_existing(&key_path(out, holder))?;
        }
    }

    let ca = CertificateAuthority::generate_development()?;
    holders[0].1 = Some(IssuedCert {
        cert_pem: ca.cert_pem(),
        key_pem: ca.key_pem(),
    });
    holders[1].1 = Some(ca.issue_coordinator(&coordinator_names)?);
    for (i, name) in participants.iter().enumerate() {
        holders[i + 2].1 = Some(ca.issue_participant(name)?);
    }

    create_dir(out)?;
    let mut written = Vec::with_capacity(2 * holders.len());
    for (holder, issued) in &holders {
        let issued = issued.as_ref().expect("every holder was issued above");
        written.extend(write_pair(out, holder, issued, overwrite)?);
    }
    Ok(written)
}

/// Adds participant `participant` to the PKI in `out`: writes
/// `NAME.crt`/`NAME.key` signed by the CA loaded from `out/ca.crt` and
/// `out/ca.key`. Refuses if `NAME.key` already exists.
pub fn issue(out: &Path, participant: &str) -> Result<(), Error> {
    issue_with(out, participant, Overwrite::Refuse).map(|_| ())
}

/// [`issue`] with an explicit overwrite policy ([`Overwrite::Replace`]
/// re-issues a participant's certificate and key, e.g. before it expires);
/// returns the files written.
pub fn issue_with(
    out: &Path,
    participant: &str,
    overwrite: Overwrite,
) -> Result<Vec<PathBuf>, Error> {
    validate_participant_name(participant)?;
    if overwrite == Overwrite::Refuse {
        refuse_existing(&key_path(out, participant))?;
    }
    let ca = CertificateAuthority::load(out)?;
    let issued = ca.issue_participant(participant)?;
    write_pair(out, participant, &issued, overwrite)
}

/// Path of holder `name`'s certificate in a PKI directory (`DIR/NAME.crt`).
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.crt"))
}

/// Path of holder `name`'s private key in a PKI directory (`DIR/NAME.key`).
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + LEAF_VALIDITY;
    params
}

/// Validates coordinator names (DNS name or IP address each), drops
/// duplicates, and substitutes the defaults for an empty list.
fn checked_coordinator_names(names: &[String]) -> Result<Vec<String>, Error> {
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_COORDINATOR_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        names.to_vec()
    };
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim().to_string();
        if name.parse::<IpAddr>().is_err() && ServerName::try_from(name.as_str()).is_err() {
            return Err(Error::InvalidCoordinatorName { name });
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn san_for(name: &str) -> Result<SanType, Error> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => {
            name.try_into()
                .map(SanType::DnsName)
                .map_err(|_| Error::InvalidCoordinatorName {
                    name: name.to_string(),
                })
        }
    }
}

fn refuse_existing(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(Error::WouldOverwrite {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn read_to_string(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `NAME.key` (mode 0600, created fresh) then `NAME.crt`.
fn write_pair(
    dir: &Path,
    name: &str,
    issued: &IssuedCert,
    overwrite: Overwrite,
) -> Result<Vec<PathBuf>, Error> {
    let key = key_path(dir, name);
    let cert = cert_path(dir, name);
    write_private(&key, issued.key_pem.as_bytes(), overwrite)?;
    fs::write(&cert, issued.cert_pem.as_bytes()).map_err(|source| Error::Write {
        path: cert.clone(),
        source,
    })?;
    Ok(vec![cert, key])
}

/// Creates a private-key file that only its owner can read or write.
///
/// The file is created with `create_new` and mode 0600 in one step, so the
/// key is never readable by others, not even briefly; with
/// [`Overwrite::Replace`] an existing file is removed first (rather than
/// truncated, which would keep its old permissions).
fn write_private(path: &Path, contents: &[u8], overwrite: Overwrite) -> Result<(), Error> {
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if overwrite == Overwrite::Replace {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(e)),
        }
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::WouldOverwrite {
                path: path.to_path_buf(),
            }
        } else {
            werr(e)
        }
    })?;
    file.write_all(contents).map_err(werr)?;
    file.sync_all().map_err(werr)
}

#[cfg(all(test, unix))]
mod tests {
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
                leaf.issuer() == ca.subject()
                    && leaf.verify_signature(Some(ca.public_key())).is_ok()
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
}
