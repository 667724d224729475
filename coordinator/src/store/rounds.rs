//! Rounds and their outcome.

use std::fmt;
use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use tessera_model::RoundKind;

use super::{Store, StoreError, sql_error_at, to_i64, to_u32, to_u64};

/// Outcome of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundStatus {
    /// Started, not yet released or aborted (or the coordinator stopped during it).
    Started,
    /// Its aggregate was released (after its ledger row was committed).
    Released,
    /// Ended without a release.
    Aborted,
}

impl RoundStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundStatus::Started => "started",
            RoundStatus::Released => "released",
            RoundStatus::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "started" => Some(RoundStatus::Started),
            "released" => Some(RoundStatus::Released),
            "aborted" => Some(RoundStatus::Aborted),
            _ => None,
        }
    }
}

impl fmt::Display for RoundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A round as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Aggregation number.
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What the round aggregates.
    pub kind: RoundKind,
    /// Its outcome so far.
    pub status: RoundStatus,
    /// Participants whose inputs are in the sum.
    pub contributors: Vec<String>,
    /// Participants that dropped out.
    pub dropped: Vec<String>,
    /// Why the round was aborted, if it was.
    pub reason: Option<String>,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// When it ended (ms since the Unix epoch).
    pub ended_at_ms: Option<i64>,
}

/// A round record checked and serialised for the `rounds` table, ready to
/// write inside a transaction ([`Store::record_round`], or with its
/// checkpoint in [`Store::record_round_end`](super::Store::record_round_end)).
pub(super) struct RoundRow<'a> {
    record: &'a RoundRecord,
    round: i64,
    contributors: String,
    dropped: String,
}

impl<'a> RoundRow<'a> {
    pub(super) fn new(store: &Store, r: &'a RoundRecord) -> Result<Self, StoreError> {
        let json =
            |v: &Vec<String>| serde_json::to_string(v).map_err(|e| store.invalid(e.to_string()));
        Ok(Self {
            record: r,
            round: to_i64(store, "round", r.round)?,
            contributors: json(&r.contributors)?,
            dropped: json(&r.dropped)?,
        })
    }

    /// Writes the record on `tx`, replacing the record of the same round. A
    /// released round stays released: another status is refused with
    /// [`StoreError::RoundAlreadyReleased`].
    pub(super) fn write(&self, tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
        let r = self.record;
        let sql_err = sql_error_at(path);
        let previous: Option<String> = tx
            .query_row(
                "SELECT status FROM rounds WHERE round = ?1",
                [self.round],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        if previous.as_deref() == Some(RoundStatus::Released.as_str())
            && r.status != RoundStatus::Released
        {
            return Err(StoreError::RoundAlreadyReleased {
                path: path.to_path_buf(),
                round: r.round,
                status: r.status,
            });
        }
        tx.execute(
            "INSERT INTO rounds (round, training_round, kind, status, contributors, dropped,
                                 reason, started_at_ms, ended_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(round) DO UPDATE SET
                 training_round = excluded.training_round,
                 kind = excluded.kind,
                 status = excluded.status,
                 contributors = excluded.contributors,
                 dropped = excluded.dropped,
                 reason = excluded.reason,
                 started_at_ms = excluded.started_at_ms,
                 ended_at_ms = excluded.ended_at_ms",
            params![
                self.round,
                r.training_round,
                r.kind.as_str(),
                r.status.as_str(),
                self.contributors,
                self.dropped,
                r.reason,
                r.started_at_ms,
                r.ended_at_ms,
            ],
        )
        .map_err(sql_err)?;
        Ok(())
    }
}

impl Store {
    /// Records a round, replacing the record of the same round number. A
    /// released round stays released: recording it with another status is
    /// refused with [`StoreError::RoundAlreadyReleased`].
    pub fn record_round(&mut self, r: &RoundRecord) -> Result<(), StoreError> {
        let row = RoundRow::new(self, r)?;
        self.write_transaction(|tx, path| row.write(tx, path))
    }

    /// Every recorded round, ordered by round number.
    pub fn rounds(&self) -> Result<Vec<RoundRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT round, training_round, kind, status, contributors, dropped, reason,
                        started_at_ms, ended_at_ms
                 FROM rounds ORDER BY round",
            )
            .map_err(|e| self.sql(e))?;
        let raw = stmt
            .query_map([], |row| {
                Ok((
                    to_u64(row.get(0)?)?,
                    row.get::<_, Option<i64>>(1)?.map(to_u32).transpose()?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, i64>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        raw.into_iter()
            .map(
                |(
                    round,
                    training_round,
                    kind,
                    status,
                    contributors,
                    dropped,
                    reason,
                    start,
                    end,
                )| {
                    let bad = |what: &str, e: &dyn fmt::Display| {
                        self.invalid(format!("round {round}: bad {what}: {e}"))
                    };
                    Ok(RoundRecord {
                        round,
                        training_round,
                        kind: kind.parse().map_err(|e: String| bad("kind", &e))?,
                        status: RoundStatus::parse(&status)
                            .ok_or_else(|| bad("status", &status))?,
                        contributors: serde_json::from_str(&contributors)
                            .map_err(|e| bad("contributors", &e))?,
                        dropped: serde_json::from_str(&dropped).map_err(|e| bad("dropped", &e))?,
                        reason,
                        started_at_ms: start,
                        ended_at_ms: end,
                    })
                },
            )
            .collect()
    }
}
