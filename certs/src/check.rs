//! Checks of a node's TLS files before it runs: the files parse and the key
//! matches, every certificate is within its dates (with a warning a month
//! before expiry), the node's certificate chains to the federation CA for
//! its role, and the names it carries. The first thing an operator runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use crate::tls::{TlsFiles, pem_certificates};

/// Warn when a certificate expires within this time.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but needs attention soon.
    Warning,
    /// Will not work.
    Error,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// One line of a check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub level: Level,
    /// What was found, in one sentence.
    pub message: String,
}

impl Finding {
    fn new(level: Level, message: impl Into<String>) -> Self {
        Self {
            level,
            message: message.into(),
        }
    }
}

/// Whose certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The coordinator: a server certificate valid for every name in the
    /// list (the names participants dial; empty: the names it carries).
    Coordinator(Vec<String>),
    /// A participant or an operator: a client certificate.
    Client,
}

/// Checks `files` for `role` at time `now`.
pub fn check_tls_files(files: &TlsFiles, role: &Role, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = files.load() {
        out.push(Finding::new(Level::Error, e.to_string()));
        return out;
    }
    out.push(Finding::new(
        Level::Ok,
        format!(
            "{} and {} parse, and the key belongs to the certificate",
            files.cert.display(),
            files.key.display()
        ),
    ));
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
    let ca_what = files.ca.display().to_string();
    let cert_what = files.cert.display().to_string();
    let (Ok(cas), Ok(chain)) = (
        pem_certificates(&read(&files.ca), &ca_what),
        pem_certificates(&read(&files.cert), &cert_what),
    ) else {
        out.push(Finding::new(
            Level::Error,
            "the files changed while being read",
        ));
        return out;
    };
    for ca in &cas {
        dates(&mut out, "CA certificate", ca, now);
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(ca)
            && !c.is_ca()
        {
            out.push(Finding::new(
                Level::Error,
                format!("{ca_what}: {} is not a CA certificate", c.subject()),
            ));
        }
    }
    let leaf = &chain[0];
    dates(&mut out, "certificate", leaf, now);
    let name = crate::tls::peer_name(leaf.as_ref()).ok();
    let mut roots = RootCertStore::empty();
    for ca in cas {
        let _ = roots.add(ca);
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let when = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    match role {
        Role::Client => {
            match &name {
                Some(n) => {
                    let level = match crate::validate_participant_name(n) {
                        Ok(()) => Level::Ok,
                        Err(_) => Level::Warning,
                    };
                    out.push(Finding::new(
                        level,
                        if level == Level::Ok {
                            format!("identity: {n:?} (the name the coordinator sees)")
                        } else {
                            format!(
                                "identity: {n:?}, outside the development PKI's naming rules \
                                 (letters, digits, '.', '_', '-'); the coordinator accepts it, \
                                 but allow-lists must spell it exactly"
                            )
                        },
                    ));
                }
                None => out.push(Finding::new(
                    Level::Error,
                    "the certificate names nobody (no common name, no DNS name)",
                )),
            }
            let verdict = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v.verify_client_cert(leaf, &chain[1..], when)
                        .map_err(|e| e.to_string())
                });
            out.push(match verdict {
                Ok(_) => Finding::new(
                    Level::Ok,
                    "chains to the federation CA as a client certificate",
                ),
                Err(e) => Finding::new(
                    Level::Error,
                    format!("not accepted as a client certificate of the federation CA: {e}"),
                ),
            });
        }
        Role::Coordinator(names) => {
            let mut names = names.clone();
            if names.is_empty() {
                names = dns_names(leaf);
            }
            let verifier =
                match WebPkiServerVerifier::builder_with_provider(roots, provider).build() {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(Finding::new(Level::Error, e.to_string()));
                        return out;
                    }
                };
            if names.is_empty() {
                out.push(Finding::new(
                    Level::Error,
                    "the certificate carries no name participants could dial",
                ));
            }
            for n in names {
                let Ok(server) = ServerName::try_from(n.clone()) else {
                    out.push(Finding::new(
                        Level::Error,
                        format!("{n:?} is neither a DNS name nor an IP address"),
                    ));
                    continue;
                };
                out.push(
                    match verifier.verify_server_cert(leaf, &chain[1..], &server, &[], when) {
                        Ok(_) => Finding::new(
                            Level::Ok,
                            format!("participants dialling {n:?} accept this certificate"),
                        ),
                        Err(e) => Finding::new(
                            Level::Error,
                            format!("participants dialling {n:?} would refuse it: {e}"),
                        ),
                    },
                );
            }
        }
    }
    out
}

/// The DNS and IP subject alternative names of a certificate.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The validity findings of one certificate.
fn dates(out: &mut Vec<Finding>, what: &str, der: &CertificateDer<'_>, now: SystemTime) {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else {
        out.push(Finding::new(
            Level::Error,
            format!("the {what} cannot be parsed"),
        ));
        return;
    };
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let v = c.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    let subject = c.subject().to_string();
    if now_s < from {
        out.push(Finding::new(
            Level::Error,
            format!("{what} {subject} is not valid before {}", v.not_before),
        ));
    } else if now_s > to {
        out.push(Finding::new(
            Level::Error,
            format!("{what} {subject} expired on {}", v.not_after),
        ));
    } else if to - now_s < EXPIRY_WARNING.as_secs() as i64 {
        out.push(Finding::new(
            Level::Warning,
            format!(
                "{what} {subject} expires in {} day(s), on {}: re-issue it",
                (to - now_s) / 86_400,
                v.not_after
            ),
        ));
    } else {
        out.push(Finding::new(
            Level::Ok,
            format!("{what} {subject} valid until {}", v.not_after),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_pki_passes_and_a_late_clock_fails() {
        let dir = tempfile::tempdir().unwrap();
        crate::init(dir.path(), &["alice".to_string()], &[]).unwrap();
        let alice = TlsFiles::in_dir(dir.path(), "alice");
        let now = SystemTime::now();
        let found = check_tls_files(&alice, &Role::Client, now);
        assert!(found.iter().all(|f| f.level == Level::Ok), "{found:?}");
        let coord = TlsFiles::in_dir(dir.path(), "coordinator");
        let found = check_tls_files(&coord, &Role::Coordinator(vec!["localhost".into()]), now);
        assert!(found.iter().all(|f| f.level == Level::Ok), "{found:?}");
        let found = check_tls_files(&coord, &Role::Coordinator(vec!["example.org".into()]), now);
        assert!(found.iter().any(|f| f.level == Level::Error), "{found:?}");
        let later = now + Duration::from_secs(60 * 365 * 24 * 3600);
        let found = check_tls_files(&alice, &Role::Client, later);
        assert!(
            found
                .iter()
                .any(|f| f.level == Level::Error && f.message.contains("expired")),
            "{found:?}"
        );
        // A participant's key with another's certificate.
        let mixed = TlsFiles {
            key: dir.path().join("coordinator.key"),
            ..alice
        };
        let found = check_tls_files(&mixed, &Role::Client, now);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].level, Level::Error);
    }
}
