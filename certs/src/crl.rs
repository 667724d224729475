//! Revocation: the federation CA's certificate revocation list (CRL).
//!
//! `tessera-certs revoke NAME` adds participant `NAME`'s certificate to
//! `DIR/crl.pem`, a CRL signed by the CA (a new one on the first
//! revocation; each revocation keeps the earlier entries and increments the
//! CRL number). The coordinator loads it with `[tls] crl = "DIR/crl.pem"`:
//! the TLS layer then refuses revoked client certificates at the handshake,
//! and a participant connected under one is dropped when the CRL is
//! reloaded (SIGHUP or a change of the file).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::Error;
use crate::pki::{CertificateAuthority, cert_path};

/// File name of the CRL inside a PKI directory.
pub const CRL_FILE: &str = "crl.pem";

/// How long a CRL written by [`revoke`] is current (its `nextUpdate`).
pub const CRL_VALIDITY: Duration = Duration::days(365);

/// A certificate's serial number with leading zero bytes stripped (the
/// form compared against a CRL's entries).
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::BadCertificate {
            what: "the certificate".into(),
            reason: format!("cannot parse it ({e})"),
        })?;
    Ok(strip(cert.tbs_certificate.raw_serial()))
}

fn strip(serial: &[u8]) -> Vec<u8> {
    let first = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial.get(first..).unwrap_or_default().to_vec()
}

/// The CRLs in a PEM buffer (`-----BEGIN X509 CRL-----`), DER; an error
/// naming `what` if there is none or one is malformed.
pub fn pem_crls(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCertificate {
            what: what.to_string(),
            reason: format!("malformed PEM ({e})"),
        })?;
    if crls.is_empty() {
        return Err(Error::BadCertificate {
            what: what.to_string(),
            reason: "no PEM revocation list (-----BEGIN X509 CRL-----) found".into(),
        });
    }
    for der in &crls {
        x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| Error::BadCertificate {
            what: what.to_string(),
            reason: format!("cannot parse the revocation list ({e})"),
        })?;
    }
    Ok(crls)
}

/// The serial numbers (leading zeros stripped) a PEM CRL file revokes.
pub fn revoked_serials(pem: &[u8], what: &str) -> Result<HashSet<Vec<u8>>, Error> {
    let mut out = HashSet::new();
    for der in pem_crls(pem, what)? {
        if let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref()) {
            out.extend(
                crl.iter_revoked_certificates()
                    .map(|r| strip(r.raw_serial())),
            );
        }
    }
    Ok(out)
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The CRL file written.
    pub crl: PathBuf,
    /// Certificates the CRL now revokes.
    pub entries: usize,
    /// Whether this certificate was already on the list.
    pub already: bool,
}

/// Revokes participant `name`'s certificate (`DIR/NAME.crt`): writes
/// `DIR/crl.pem` signed by the CA in `DIR`, holding every earlier entry and
/// this one, with the next CRL number. The file is replaced atomically (a
/// coordinator watching it never reads half of it).
pub fn revoke(dir: &Path, name: &str) -> Result<Revoked, Error> {
    let ca = CertificateAuthority::load(dir)?;
    let cert_file = cert_path(dir, name);
    let pem = std::fs::read(&cert_file).map_err(|source| Error::Read {
        path: cert_file.clone(),
        source,
    })?;
    let what = cert_file.display().to_string();
    let ders = crate::tls::pem_certificates(&pem, &what)?;
    let serial = ders
        .first()
        .map(|d| serial_of(d.as_ref()))
        .transpose()?
        .unwrap_or_default();
    let crl_file = dir.join(CRL_FILE);
    let now = OffsetDateTime::now_utc();
    let (mut entries, number) = existing_entries(&crl_file)?;
    let already = entries
        .iter()
        .any(|e| strip(e.serial_number.as_ref()) == serial);
    if !already {
        entries.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: now,
            reason_code: Some(RevocationReason::CessationOfOperation),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from(number.saturating_add(1)),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let count = params.revoked_certs.len();
    let crl = params
        .signed_by(ca.issuer())
        .map_err(|source| Error::Generate {
            subject: "the revocation list".into(),
            source,
        })?;
    let pem = crl.pem().map_err(|source| Error::Generate {
        subject: "the revocation list".into(),
        source,
    })?;
    let tmp = dir.join(format!(".{CRL_FILE}.tmp"));
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    std::fs::write(&tmp, pem.as_bytes()).map_err(werr(&tmp))?;
    std::fs::rename(&tmp, &crl_file).map_err(werr(&crl_file))?;
    Ok(Revoked {
        crl: crl_file,
        entries: count,
        already,
    })
}

/// The entries and CRL number of an existing CRL file (none and 0 if the
/// file does not exist).
fn existing_entries(path: &Path) -> Result<(Vec<RevokedCertParams>, u64), Error> {
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let what = path.display().to_string();
    let mut entries = Vec::new();
    let mut number = 0u64;
    for der in pem_crls(&pem, &what)? {
        let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref()) else {
            continue;
        };
        if let Some(n) = crl.crl_number() {
            let bytes = n.to_bytes_be();
            let tail = bytes
                .get(bytes.len().saturating_sub(8)..)
                .unwrap_or_default();
            let mut b = [0u8; 8];
            if let Some(dst) = b.get_mut(8 - tail.len()..) {
                dst.copy_from_slice(tail);
            }
            number = number.max(u64::from_be_bytes(b));
        }
        for r in crl.iter_revoked_certificates() {
            entries.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&strip(r.raw_serial())),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason_code: Some(RevocationReason::CessationOfOperation),
                invalidity_date: None,
            });
        }
    }
    Ok((entries, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_keeps_earlier_entries_and_counts_up() {
        let dir = tempfile::tempdir().unwrap();
        crate::init(dir.path(), &["a".into(), "b".into(), "c".into()], &[]).unwrap();
        let serial = |n: &str| {
            let pem = std::fs::read(cert_path(dir.path(), n)).unwrap();
            let ders = crate::tls::pem_certificates(&pem, n).unwrap();
            serial_of(ders[0].as_ref()).unwrap()
        };
        let r = revoke(dir.path(), "a").unwrap();
        assert_eq!((r.entries, r.already), (1, false));
        let r = revoke(dir.path(), "b").unwrap();
        assert_eq!((r.entries, r.already), (2, false));
        let r = revoke(dir.path(), "b").unwrap();
        assert_eq!((r.entries, r.already), (2, true));
        let pem = std::fs::read(dir.path().join(CRL_FILE)).unwrap();
        let revoked = revoked_serials(&pem, "crl").unwrap();
        assert!(revoked.contains(&serial("a")));
        assert!(revoked.contains(&serial("b")));
        assert!(!revoked.contains(&serial("c")));
        let (_, number) = existing_entries(&dir.path().join(CRL_FILE)).unwrap();
        assert_eq!(number, 3);
        assert!(revoke(dir.path(), "nobody").is_err());
    }
}
