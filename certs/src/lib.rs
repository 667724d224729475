//! Tessera's development PKI and the mutual-TLS policy that the coordinator
//! and the participants share.
//!
//! - [`pki`]: make a federation CA, a coordinator certificate and one
//!   certificate per participant ([`init`]), and add participants later
//!   ([`issue`]). The `tessera-certs` binary is a thin shell around these.
//! - [`tls`]: turn a node's PEM files into rustls configurations
//!   ([`server_config`], [`client_config`]): TLS 1.3 only, client
//!   certificates required and verified against the federation CA, ALPN h2;
//!   read a peer's identity from its certificate ([`peer_name`]); explain a
//!   refused handshake in one sentence ([`describe_tls_error`]).
//! - [`check`]: check a node's TLS files before it runs (dates, chain,
//!   names).
//! - [`signature`]: verify a signature with a certificate's public key
//!   ([`CertificateKey`]), as participants and the coordinator do for the
//!   signed secure-aggregation messages.
//!
//! A participant's identity is the name in its certificate (the subject
//! common name), never a name it claims in a message.

pub mod check;
pub mod crl;
mod error;
pub mod pki;
pub mod signature;
pub mod tls;

pub use crl::{CRL_FILE, revoke, revoked_serials, serial_of};
pub use error::Error;
pub use pki::{
    CertificateAuthority, DEFAULT_COORDINATOR_NAMES, IssuedCert, Overwrite, init, init_with, issue,
    issue_with, validate_participant_name,
};
pub use signature::{CertificateKey, KeyScheme};
pub use tls::{
    TlsFiles, TlsMaterial, client_config, describe_tls_error, install_crypto_provider, peer_name,
    peer_name_of_chain, server_config,
};
