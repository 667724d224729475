//! The signed-key rounds this site took part in, remembered durably, so a
//! coordinator that announces the same round of a federation a second time
//! is caught.
//!
//! Why: everything a participant signs in a secure-aggregation round (its
//! advertised keys, the survivor set of the consistency check) is bound to
//! the round number. A coordinator that ran round r twice could replay in
//! the second run what it collected in the first — a peer's keys whose
//! mask key it learnt when that peer was declared dropped, or signatures
//! over a survivor set — and combine what the two runs reveal. An honest
//! coordinator never reuses a round number (it records a round as started,
//! durably, before announcing it), so a site that remembers every
//! signed-key round it advertised keys in, and declines one it has seen,
//! costs honest federations nothing.
//!
//! The record is written before the site's keys leave (write-ahead), in
//! `rounds.sqlite` beside the site's ledger ([`RoundLog`]);
//! [`MemoryRounds`] keeps it for the life of the process (tests and
//! in-process simulations).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, params};

/// Why a round cannot be remembered as new.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundMemoryError {
    /// The site already advertised keys in this round of this federation:
    /// the coordinator reuses a round.
    #[error(
        "round {round} of federation {federation:?} was announced before: the coordinator reuses a round"
    )]
    Reused {
        /// The federation.
        federation: String,
        /// The round number.
        round: u64,
    },
    /// The record could not be read or written.
    #[error("cannot use the round record {path}: {reason}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Remembers the signed-key rounds a site took part in.
pub trait RoundMemory: Send {
    /// Records `round` of `federation` durably before returning; refuses a
    /// round recorded before with [`RoundMemoryError::Reused`].
    fn remember(&mut self, federation: &str, round: u64) -> Result<(), RoundMemoryError>;
}

/// Rounds remembered in memory, for the life of the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryRounds(BTreeSet<(String, u64)>);

impl RoundMemory for MemoryRounds {
    fn remember(&mut self, federation: &str, round: u64) -> Result<(), RoundMemoryError> {
        if !self.0.insert((federation.to_owned(), round)) {
            return Err(RoundMemoryError::Reused {
                federation: federation.to_owned(),
                round,
            });
        }
        Ok(())
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS signed_rounds (
    federation     TEXT    NOT NULL,
    round          INTEGER NOT NULL CHECK (round >= 0),
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (federation, round)
) STRICT;
"#;

/// Rounds remembered in SQLite (WAL, synchronous writes).
#[derive(Debug)]
pub struct RoundLog {
    conn: Connection,
    path: PathBuf,
}

impl RoundLog {
    /// Opens (creating if needed) the record at `path`.
    pub fn open(path: &Path) -> Result<Self, RoundMemoryError> {
        let storage = |reason: String| RoundMemoryError::Storage {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
        }
        let conn =
            tessera_common::sqlite::open_durable(path).map_err(|e| storage(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| storage(e.to_string()))?;
        Ok(RoundLog {
            conn,
            path: path.to_path_buf(),
        })
    }
}

impl RoundMemory for RoundLog {
    fn remember(&mut self, federation: &str, round: u64) -> Result<(), RoundMemoryError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let round_sql = i64::try_from(round).map_err(|_| RoundMemoryError::Storage {
            path: self.path.clone(),
            reason: format!("round {round} is out of range"),
        })?;
        match self.conn.execute(
            "INSERT INTO signed_rounds (federation, round, recorded_at_ms) VALUES (?1, ?2, ?3)",
            params![federation, round_sql, now],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                Err(RoundMemoryError::Reused {
                    federation: federation.to_owned(),
                    round,
                })
            }
            Err(e) => Err(RoundMemoryError::Storage {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_remembered_once_and_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("rounds.sqlite");
        let mut log = RoundLog::open(&path).unwrap();
        log.remember("f", 3).unwrap();
        log.remember("g", 3).unwrap();
        log.remember("f", 4).unwrap();
        assert!(matches!(
            log.remember("f", 3),
            Err(RoundMemoryError::Reused { round: 3, .. })
        ));
        drop(log);
        let mut again = RoundLog::open(&path).unwrap();
        assert!(matches!(
            again.remember("f", 4),
            Err(RoundMemoryError::Reused { round: 4, .. })
        ));
        again.remember("f", 5).unwrap();
        // A round number SQLite cannot hold is an error, not a wrap-around.
        assert!(matches!(
            again.remember("f", u64::MAX),
            Err(RoundMemoryError::Storage { .. })
        ));
    }

    #[test]
    fn memory_rounds_follow_the_same_rule() {
        let mut m = MemoryRounds::default();
        m.remember("f", 1).unwrap();
        m.remember("f", 2).unwrap();
        assert!(matches!(
            m.remember("f", 1),
            Err(RoundMemoryError::Reused { round: 1, .. })
        ));
    }

    #[test]
    fn an_unusable_path_is_a_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            RoundLog::open(&file.join("rounds.sqlite")),
            Err(RoundMemoryError::Storage { .. })
        ));
    }
}
