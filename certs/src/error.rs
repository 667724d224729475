//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while making, loading or using certificates.
///
/// Each variant names the file, participant or certificate involved, so the
/// message alone tells an operator what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// Writing would replace an existing private key (or the CA), which is
    /// refused unless overwriting was asked for explicitly.
    #[error(
        "refusing to overwrite {path}: it already exists (remove it, or ask explicitly to replace it, e.g. with --force)"
    )]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },

    /// A participant name breaks the naming rules.
    #[error("invalid participant name {name:?}: {reason}")]
    InvalidParticipantName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The same participant name was given twice.
    #[error("participant {name:?} is listed more than once")]
    DuplicateParticipant {
        /// The repeated name.
        name: String,
    },

    /// A coordinator name is neither a valid DNS name nor an IP address.
    #[error("invalid coordinator name {name:?}: not a DNS name or an IP address")]
    InvalidCoordinatorName {
        /// The rejected name.
        name: String,
    },

    /// The certificate library refused to build or sign a certificate.
    #[error("cannot create the certificate for {subject}: {source}")]
    Generate {
        /// Whose certificate (e.g. `participant "a"`, `the CA`).
        subject: String,
        /// The underlying error.
        source: rcgen::Error,
    },

    /// A PEM input holds no certificate, or one that cannot be parsed.
    #[error("{what}: {reason}")]
    BadCertificate {
        /// Which input (a file path, or a role such as "the CA certificate").
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A PEM input holds no private key, or one that cannot be used.
    #[error("{what}: {reason}")]
    BadPrivateKey {
        /// Which input (a file path, or a role such as "the private key").
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A private key does not belong to the certificate it is paired with.
    #[error("the private key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The certificate (path or role).
        cert: String,
        /// The key (path or role).
        key: String,
    },

    /// A certificate carries neither a subject common name nor a DNS name,
    /// so it names no peer.
    #[error("the peer certificate carries no common name and no DNS name")]
    NoPeerName,

    /// The peer presented no certificate at all.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,

    /// rustls refused to build a TLS configuration.
    #[error("cannot build the TLS {side} configuration: {source}")]
    Tls {
        /// `"server"` or `"client"`.
        side: &'static str,
        /// The underlying error.
        source: rustls::Error,
    },

    /// rustls refused to build the client-certificate verifier (for example,
    /// no usable CA certificate).
    #[error("cannot build the client certificate verifier: {source}")]
    Verifier {
        /// The underlying error.
        source: rustls::server::VerifierBuilderError,
    },
}
