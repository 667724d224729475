//! Analytics releases in the store: one row per query the coordinator
//! answered or could not answer. The table is created when a store is
//! opened for writing (`CREATE TABLE IF NOT EXISTS`, so stores from before
//! it gain it without a schema migration); a read-only open of a store that
//! never answered a query reads no rows.
//!
//! A released row is written after the query's ledger row (the machine
//! opens the answer only once the ledger row is durable), so a crash between
//! the two leaves a ledger that counts a release the table does not show:
//! the overcount the privacy contract allows, never the other way round.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use tessera_analytics::Release;

use super::{Store, StoreError};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS analytics (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    round          INTEGER CHECK (round IS NULL OR round >= 0),
    origin         TEXT    NOT NULL,
    query          TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('released', 'failed')),
    release        TEXT,
    epsilon        REAL,
    delta          REAL,
    answered       INTEGER NOT NULL CHECK (answered >= 0),
    declined       INTEGER NOT NULL CHECK (declined >= 0),
    reason         TEXT,
    recorded_at_ms INTEGER NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS analytics_no_update BEFORE UPDATE ON analytics
BEGIN SELECT RAISE(ABORT, 'analytics rows are append-only'); END;
"#;

/// One query's outcome, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsRow {
    /// Aggregation number of its round (None: refused before a round).
    pub round: Option<u64>,
    /// Where it came from (`config:0`, `operator`).
    pub origin: String,
    /// The query's canonical text.
    pub query: String,
    /// The release (None when it failed).
    pub release: Option<Release>,
    /// Sites whose vector is in the sum.
    pub answered: u32,
    /// Sites that declined it (count only).
    pub declined: u32,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// When it was recorded (ms since the Unix epoch).
    pub recorded_at_ms: i64,
}

impl Store {
    /// Creates the analytics table if the store has none yet.
    pub(super) fn ensure_analytics_table(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch(SCHEMA).map_err(|e| self.sql(e))
    }

    /// Appends a query's outcome, durably.
    pub fn record_analytics(&mut self, row: &AnalyticsRow) -> Result<(), StoreError> {
        let release = row
            .release
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.invalid(format!("analytics release: {e}")))?;
        let round = row
            .round
            .map(|r| super::to_i64(self, "round", r))
            .transpose()?;
        self.conn
            .execute(
                "INSERT INTO analytics (round, origin, query, status, release, epsilon, delta,
                                        answered, declined, reason, recorded_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    round,
                    row.origin,
                    row.query,
                    if row.release.is_some() {
                        "released"
                    } else {
                        "failed"
                    },
                    release,
                    row.release.as_ref().map(|r| r.epsilon),
                    row.release.as_ref().map(|r| r.delta),
                    row.answered,
                    row.declined,
                    row.reason,
                    row.recorded_at_ms,
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every query's outcome, oldest first (none if the store never had
    /// the table).
    pub fn analytics(&self) -> Result<Vec<AnalyticsRow>, StoreError> {
        let exists: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'analytics'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT round, origin, query, release, answered, declined, reason, recorded_at_ms
                 FROM analytics ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let release: Option<String> = r.get(3)?;
                Ok(AnalyticsRow {
                    round: r.get::<_, Option<i64>>(0)?.map(|x| x.max(0) as u64),
                    origin: r.get(1)?,
                    query: r.get(2)?,
                    release: release
                        .map(|json| {
                            serde_json::from_str(&json).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    3,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })
                        })
                        .transpose()?,
                    answered: r.get::<_, i64>(4)?.clamp(0, u32::MAX.into()) as u32,
                    declined: r.get::<_, i64>(5)?.clamp(0, u32::MAX.into()) as u32,
                    reason: r.get(6)?,
                    recorded_at_ms: r.get(7)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_old_stores_read_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut store = Store::open(&path).unwrap();
        assert!(store.analytics().unwrap().is_empty());
        let failed = AnalyticsRow {
            round: None,
            origin: "operator".into(),
            query: "count".into(),
            release: None,
            answered: 0,
            declined: 4,
            reason: Some("every site declined".into()),
            recorded_at_ms: 7,
        };
        store.record_analytics(&failed).unwrap();
        drop(store);
        let read = Store::open_read_only(&path).unwrap();
        assert_eq!(read.analytics().unwrap(), vec![failed]);
    }
}
