//! The test PKI as it was before it moved to `tessera-testkit`
//! (`tessera_testkit::pki::TestPki`), compiled only for this crate's unit
//! tests and behind the `testing` feature, not into the library: it stays
//! until the unit tests that still import it (`tls.rs` here,
//! `participant/src/signing.rs`) use the test kit, then goes.

use std::path::{Path, PathBuf};

use crate::pki::{COORDINATOR_NAME, DEFAULT_COORDINATOR_NAMES, Overwrite, init_with, issue};
use crate::tls::TlsFiles;

/// A development PKI made in a directory the caller owns (typically a
/// temporary directory), with a coordinator certificate for `localhost` and
/// `127.0.0.1`.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The directory holding `ca.crt`, `coordinator.*` and `NAME.*`.
    pub dir: PathBuf,
    participants: Vec<String>,
}

impl TestPki {
    /// Makes a fresh CA, coordinator certificate and one certificate per
    /// participant in `dir` (created if missing), replacing any PKI already
    /// there.
    ///
    /// # Panics
    /// If the PKI cannot be made (bad participant name, unwritable
    /// directory): this is a test helper.
    pub fn new<S: AsRef<str>>(dir: impl AsRef<Path>, participants: &[S]) -> Self {
        let dir = dir.as_ref().to_path_buf();
        let participants: Vec<String> = participants
            .iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        let names: Vec<String> = DEFAULT_COORDINATOR_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Err(e) = init_with(&dir, &participants, &names, Overwrite::Replace) {
            panic!("cannot make a test PKI in {}: {e}", dir.display());
        }
        Self { dir, participants }
    }

    /// Issues one more participant certificate from the same CA.
    ///
    /// # Panics
    /// If it cannot be issued (bad or existing name).
    pub fn add(&mut self, name: &str) -> TlsFiles {
        if let Err(e) = issue(&self.dir, name) {
            panic!("cannot issue {name:?} in {}: {e}", self.dir.display());
        }
        self.participants.push(name.to_string());
        self.files_for(name)
    }

    /// The TLS files of participant `name` (the CA, `NAME.crt`, `NAME.key`).
    pub fn files_for(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, name)
    }

    /// The coordinator's TLS files (the CA, `coordinator.crt`,
    /// `coordinator.key`).
    pub fn coordinator_files(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, COORDINATOR_NAME)
    }

    /// Path of the CA certificate, `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(crate::pki::CA_CERT_FILE)
    }

    /// The participants this PKI holds certificates for.
    pub fn participants(&self) -> &[String] {
        &self.participants
    }
}
