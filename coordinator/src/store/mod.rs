//! The coordinator's durable state, in one SQLite database.
//!
//! Tables: the privacy ledger (one append-only row per released
//! aggregation), rounds and their outcome, model checkpoints (files on disk
//! referenced by path and SHA-256), participants seen, analytics queries
//! and their releases, and a small key/value table for federation-wide
//! settings and the live status of a running coordinator.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so every commit is
//! fsync'd before the call that made it returns: a ledger row that
//! [`Store::append_ledger`] reported written survives any crash. Ledger rows
//! can be neither updated nor deleted (triggers refuse it), and a round
//! number can have one ledger row only, so no round is ever released twice.
//!
//! One coordinator process writes a store at a time: [`Store::open`] takes an
//! exclusive lock on a `<store>.lock` file next to it, released when the
//! store is dropped or the process ends. [`Store::open_read_only`] takes no
//! lock and can read while the coordinator runs (the `status` and `ledger`
//! commands).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

mod analytics;
mod checkpoints;
mod error;
mod ledger;
mod report;
mod round_end;
mod rounds;

pub use analytics::AnalyticsRow;
pub use checkpoints::{
    Checkpoint, checkpoint_file_name, sha256_file, verify_checkpoint, write_checkpoint,
    write_checkpoint_bytes,
};
pub use error::StoreError;
pub use ledger::{LedgerRow, NewLedgerRow};
pub use report::{
    EvaluationRecord, GUARANTEE, LedgerReport, LedgerReportRow, META_EVALUATION, StatusReport,
    format_utc_ms, ledger_report, status_report,
};
pub use round_end::RoundEnd;
pub use rounds::{RoundRecord, RoundStatus};

/// Schema version stored in `PRAGMA user_version`. Version 2 added the
/// ledger's `not_private` column; version-1 stores are migrated on open.
pub const SCHEMA_VERSION: i64 = 2;

/// From schema version 1 to 2: ledger rows say whether their noise was
/// seeded (released without privacy). Rows written before were not.
const MIGRATE_1_TO_2: &str = "ALTER TABLE ledger ADD COLUMN not_private INTEGER NOT NULL \
                              DEFAULT 0 CHECK (not_private IN (0, 1));";

/// Meta key: the federation's identifier.
pub const META_FEDERATION_ID: &str = "federation_id";
/// Meta key: the task description, as JSON.
pub const META_TASK: &str = "task";
/// Meta key: the federated preprocessing parameters, as JSON.
pub const META_PREPROCESSING: &str = "preprocessing";
/// Meta key: the live status of the running coordinator, as JSON ([`LiveStatus`]).
pub const META_LIVE_STATUS: &str = "live_status";

const SCHEMA: &str = r#"
CREATE TABLE ledger (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    round            INTEGER NOT NULL UNIQUE CHECK (round >= 0),
    training_round   INTEGER CHECK (training_round IS NULL OR training_round >= 0),
    kind             TEXT    NOT NULL,
    mechanism        TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    cohort_size      INTEGER NOT NULL CHECK (cohort_size >= 0),
    clip_norm        REAL    NOT NULL,
    noise_multiplier REAL    NOT NULL,
    sampling_rate    REAL    NOT NULL,
    recorded_at_ms   INTEGER NOT NULL,
    not_private      INTEGER NOT NULL DEFAULT 0 CHECK (not_private IN (0, 1))
) STRICT;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;

CREATE TABLE rounds (
    round          INTEGER PRIMARY KEY CHECK (round >= 0),
    training_round INTEGER,
    kind           TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('started', 'released', 'aborted')),
    contributors   TEXT    NOT NULL,
    dropped        TEXT    NOT NULL,
    reason         TEXT,
    started_at_ms  INTEGER NOT NULL,
    ended_at_ms    INTEGER
) STRICT;

CREATE TABLE checkpoints (
    round          INTEGER PRIMARY KEY CHECK (round >= 0),
    training_round INTEGER NOT NULL,
    path           TEXT    NOT NULL,
    sha256         TEXT    NOT NULL CHECK (length(sha256) = 64),
    bytes          INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE participants (
    name          TEXT    PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    times_seen    INTEGER NOT NULL
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"#;

/// What the running coordinator reports about itself, kept under
/// [`META_LIVE_STATUS`] for `tessera-coordinator status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// Aggregation number of the round in progress (or last started).
    pub current_round: Option<u64>,
    /// Training round of the round in progress, if it is a training round.
    pub training_round: Option<u32>,
    /// Stage of the round in progress (`idle`, `keys`, `masked_input`, …).
    pub stage: String,
    /// Participants currently connected.
    pub connected: u32,
    /// Process id of the coordinator that wrote this.
    pub pid: u32,
    /// When this was written (ms since the Unix epoch).
    pub updated_at_ms: i64,
    /// The privacy terms connected sites declared when they joined.
    #[serde(default)]
    pub site_budgets: Vec<SiteBudgetStatus>,
}

/// A connected site's own privacy terms, as it declared them on joining
/// (its policy and its ledger's total then; never data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteBudgetStatus {
    /// Certificate name.
    pub name: String,
    /// Its own budget, if it has one.
    pub max_epsilon: Option<f64>,
    /// δ of its ε.
    pub delta: f64,
    /// Least noise multiplier it accepts.
    pub min_noise_multiplier: Option<f64>,
    /// ε its ledger had counted when it joined.
    pub epsilon_spent: f64,
    /// It declined a round for its budget and sits the rest out.
    pub exhausted: bool,
}

/// A participant the coordinator has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    /// Name from its certificate.
    pub name: String,
    /// First time seen (ms since the Unix epoch).
    pub first_seen_ms: i64,
    /// Last time seen (ms since the Unix epoch).
    pub last_seen_ms: i64,
    /// How many times it was seen (connections).
    pub times_seen: u64,
}

/// The coordinator's SQLite store. Holds one connection; wrap it in a mutex
/// to share it between tasks.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// Held for its lock while the store is open for writing.
    _lock: Option<File>,
}

impl Store {
    /// Opens the store at `path` for writing, creating its directory, the
    /// database and its schema if needed. Fails with [`StoreError::Locked`]
    /// if another process has it open for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = lock_file(path)?;
        let conn = tessera_common::sqlite::open_durable(path).map_err(|e| open_error(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            read_only: false,
            _lock: Some(lock),
        };
        store.migrate()?;
        store.ensure_analytics_table()?;
        Ok(store)
    }

    /// Opens an existing store for reading only; works while a coordinator
    /// has it open for writing.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = tessera_common::sqlite::open_read_only(path).map_err(|e| open_error(path, e))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            read_only: true,
            _lock: None,
        };
        let version = store.user_version()?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                path: store.path.clone(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this store was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether a process holds this store open for writing (a running
    /// coordinator), judged by its lock file. Always true for a store opened
    /// with [`Store::open`].
    pub fn writer_active(&self) -> bool {
        if !self.read_only {
            return true;
        }
        let Ok(file) = File::open(lock_path(&self.path)) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }

    /// Sets a key of the key/value table (insert or replace), durably.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        upsert_meta(&self.conn, key, value).map_err(|e| self.sql(e))
    }

    /// Reads a key of the key/value table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Writes the running coordinator's live status under [`META_LIVE_STATUS`].
    pub fn set_live_status(&mut self, status: &LiveStatus) -> Result<(), StoreError> {
        let json = serde_json::to_string(status).map_err(|e| self.invalid(e.to_string()))?;
        self.set_meta(META_LIVE_STATUS, &json)
    }

    /// Reads the live status last written by a coordinator, if any.
    pub fn live_status(&self) -> Result<Option<LiveStatus>, StoreError> {
        self.meta(META_LIVE_STATUS)?
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|e| self.invalid(format!("meta key {META_LIVE_STATUS}: {e}")))
            })
            .transpose()
    }

    /// Records that participant `name` was seen at `now_ms`.
    pub fn participant_seen(&mut self, name: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO participants (name, first_seen_ms, last_seen_ms, times_seen)
                 VALUES (?1, ?2, ?2, 1)
                 ON CONFLICT(name) DO UPDATE SET
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     times_seen = times_seen + 1",
                params![name, now_ms],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every participant seen, ordered by name.
    pub fn participants(&self) -> Result<Vec<ParticipantRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, first_seen_ms, last_seen_ms, times_seen
                 FROM participants ORDER BY name",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ParticipantRecord {
                    name: r.get(0)?,
                    first_seen_ms: r.get(1)?,
                    last_seen_ms: r.get(2)?,
                    times_seen: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)
                    .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
                    .and_then(|()| tx.commit())
                    .map_err(|source| StoreError::Sqlite {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(())
            }
            1 => {
                tx.execute_batch(MIGRATE_1_TO_2)
                    .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
                    .and_then(|()| tx.commit())
                    .map_err(|source| StoreError::Sqlite {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(())
            }
            SCHEMA_VERSION => Ok(()),
            found => Err(StoreError::SchemaVersion {
                path: self.path.clone(),
                found,
                expected: SCHEMA_VERSION,
            }),
        }
    }

    fn user_version(&self) -> Result<i64, StoreError> {
        tessera_common::sqlite::user_version(&self.conn).map_err(|e| self.sql(e))
    }

    /// Runs `f` in one immediate write transaction and commits it, so what
    /// `f` writes lands whole or (on an error, which rolls back) not at all.
    /// `f` gets the transaction and the store's path for its errors.
    pub(crate) fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let sql_err = sql_error_at(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let value = f(&tx, &path)?;
        tx.commit().map_err(sql_err)?;
        Ok(value)
    }

    pub(crate) fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

/// The writer lock file of the store at `path`: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Takes the exclusive writer lock `<path>.lock`, waiting briefly in case a
/// reader is probing it (see [`Store::writer_active`]).
fn open_error(path: &Path, e: tessera_common::sqlite::OpenError) -> StoreError {
    match e {
        tessera_common::sqlite::OpenError::Sqlite(source) => StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
        other => StoreError::Invalid {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

fn lock_file(path: &Path) -> Result<File, StoreError> {
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| StoreError::Lock {
            path: path.to_path_buf(),
            lock: lock.clone(),
            source,
        })?;
    let mut attempts = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if attempts < LOCK_ATTEMPTS => {
                attempts += 1;
                std::thread::sleep(LOCK_RETRY);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                    lock,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Lock {
                    path: path.to_path_buf(),
                    lock,
                    source,
                });
            }
        }
    }
}

const LOCK_ATTEMPTS: u32 = 10;
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Converts a `u64` to SQLite's `i64`, refusing values that do not fit.
pub(crate) fn to_i64(store: &Store, what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| store.invalid(format!("{what} {v} is too large")))
}

/// Converts a stored `i64` back to `u64`.
pub(crate) fn to_u64(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

/// Turns a SQLite error into a [`StoreError::Sqlite`] naming the store at
/// `path`.
pub(crate) fn sql_error_at(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts a stored `i64` back to `u32`.
pub(crate) fn to_u32(v: i64) -> rusqlite::Result<u32> {
    u32::try_from(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

/// Inserts or replaces `key` of the key/value table on `conn` (a connection
/// or, through `Deref`, an open transaction).
pub(crate) fn upsert_meta(
    conn: &rusqlite::Connection,
    key: &str,
    value: &str,
) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map(|_| ())
}
