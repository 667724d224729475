//! The store's errors, each naming the file it concerns, so an operator
//! knows which store, lock or checkpoint to look at.

use std::path::PathBuf;

use super::RoundStatus;

/// Errors of the coordinator's store. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's directory could not be created.
    #[error("cannot create the directory {path} for the store: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A read-only open found no store at the path.
    #[error("no coordinator store at {path}")]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// Another process holds the store open for writing.
    #[error("the store {path} is in use by another coordinator (lock file {lock})")]
    Locked {
        /// The store.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock the store {path} with {lock}: {source}")]
    Lock {
        /// The store.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database was written by another version of Tessera.
    #[error("the store {path} has schema version {found}; this build reads version {expected}")]
    SchemaVersion {
        /// The store.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The version this build understands.
        expected: i64,
    },
    /// SQLite reported an error.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The store.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The round already has a ledger row: it was released before.
    #[error(
        "round {round} already has a privacy ledger row in {path}; a round is never released twice"
    )]
    DuplicateRound {
        /// The store.
        path: PathBuf,
        /// The round number.
        round: u64,
    },
    /// A different checkpoint is already recorded for the round.
    #[error("store {path} already records a different checkpoint for round {round}")]
    DuplicateCheckpoint {
        /// The store.
        path: PathBuf,
        /// The round number.
        round: u64,
    },
    /// The round was released and cannot be recorded with another status.
    #[error("round {round} in {path} was released; its status cannot become {status}")]
    RoundAlreadyReleased {
        /// The store.
        path: PathBuf,
        /// The round number.
        round: u64,
        /// The status that was refused.
        status: RoundStatus,
    },
    /// A value given to or read from the store is not valid.
    #[error("store {path}: {reason}")]
    Invalid {
        /// The store.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint file could not be written or read.
    #[error("checkpoint {path}: {source}")]
    CheckpointIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint file's content differs from what the store recorded.
    #[error(
        "checkpoint {path} does not match the store: expected {expected_bytes} bytes with sha256 {expected_sha256}, found {actual_bytes} bytes with sha256 {actual_sha256}"
    )]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded SHA-256 (hex).
        expected_sha256: String,
        /// SHA-256 of the file (hex).
        actual_sha256: String,
        /// Recorded size.
        expected_bytes: u64,
        /// Size of the file.
        actual_bytes: u64,
    },
    /// A model file could not be encoded.
    #[error("checkpoint {path}: {source}")]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<tessera_model::ModelError>,
    },
    /// The privacy accountant failed on the ledger's events.
    #[error("privacy accounting of the ledger in {path}: {source}")]
    Privacy {
        /// The store.
        path: PathBuf,
        /// The cause.
        source: tessera_privacy::Error,
    },
}
