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
mod tests;
