//! The privacy ledger: one append-only row per released aggregation.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tessera_model::RoundKind;
use tessera_privacy::PrivacyEvent;

use super::{Store, StoreError, sql_error_at, to_i64, to_u32, to_u64};

/// A ledger row to append: the privacy event of one released aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLedgerRow {
    /// Aggregation number (unique across the federation).
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What was released.
    pub kind: RoundKind,
    /// The privacy event the accountant composes.
    pub event: PrivacyEvent,
    /// Participants whose inputs are in the sum.
    pub cohort_size: u32,
    /// Clip norm C (sensitivity of the sum).
    pub clip_norm: f64,
    /// Noise multiplier σ (noise std σ·C).
    pub noise_multiplier: f64,
    /// Sampling rate q of the cohort selection (1 under full participation).
    pub sampling_rate: f64,
    /// When the row was written (ms since the Unix epoch).
    pub recorded_at_ms: i64,
    /// The noise was drawn from a fixed seed (`insecure_noise_seed`): the
    /// release is NOT private, whatever its event says.
    #[serde(default)]
    pub not_private: bool,
}

/// A ledger row as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// Row id (insertion order).
    pub id: i64,
    /// Aggregation number (unique across the federation).
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What was released.
    pub kind: RoundKind,
    /// The privacy event the accountant composes.
    pub event: PrivacyEvent,
    /// Participants whose inputs are in the sum.
    pub cohort_size: u32,
    /// Clip norm C (sensitivity of the sum).
    pub clip_norm: f64,
    /// Noise multiplier σ (noise std σ·C).
    pub noise_multiplier: f64,
    /// Sampling rate q of the cohort selection.
    pub sampling_rate: f64,
    /// When the row was written (ms since the Unix epoch).
    pub recorded_at_ms: i64,
    /// The noise was drawn from a fixed seed (`insecure_noise_seed`): the
    /// release is NOT private, whatever its event says.
    #[serde(default)]
    pub not_private: bool,
}

impl LedgerRow {
    /// The mechanism name of the row's event (`gaussian`, …), as serialised.
    pub fn mechanism(&self) -> String {
        mechanism_of(&self.event).unwrap_or_default()
    }
}

/// The `mechanism` tag of an event's serialised form.
fn mechanism_of(event: &PrivacyEvent) -> Option<String> {
    let value = serde_json::to_value(event).ok()?;
    value
        .get("mechanism")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
}

/// Checks that a numeric field the event carries agrees with the row's column.
fn check_field(event: &serde_json::Value, field: &str, column: f64) -> Result<(), String> {
    match event.get(field).and_then(|v| v.as_f64()) {
        Some(v) if v != column => Err(format!(
            "the event's {field} ({v}) differs from the row's ({column})"
        )),
        _ => Ok(()),
    }
}

const LEDGER_COLUMNS: &str = "id, round, training_round, kind, event, cohort_size, clip_norm, \
                              noise_multiplier, sampling_rate, recorded_at_ms, not_private";

impl Store {
    /// Appends the ledger row of a released aggregation. The row is committed
    /// and fsync'd when this returns. A second row for the same round is
    /// refused with [`StoreError::DuplicateRound`].
    pub fn append_ledger(&mut self, row: &NewLedgerRow) -> Result<LedgerRow, StoreError> {
        let round = to_i64(self, "round", row.round)?;
        // An event the accountant cannot compose would make the ledger
        // unaccountable: refuse it before anything is released.
        row.event.validate().map_err(|e| {
            self.invalid(format!(
                "ledger row for round {}: invalid privacy event: {e}",
                row.round
            ))
        })?;
        let event_value =
            serde_json::to_value(&row.event).map_err(|e| self.invalid(e.to_string()))?;
        let mechanism = event_value
            .get("mechanism")
            .and_then(|m| m.as_str())
            .ok_or_else(|| self.invalid("privacy event without a mechanism tag"))?
            .to_owned();
        for (field, column) in [
            ("noise_multiplier", row.noise_multiplier),
            ("sampling_rate", row.sampling_rate),
        ] {
            check_field(&event_value, field, column).map_err(|reason| {
                self.invalid(format!("ledger row for round {}: {reason}", row.round))
            })?;
        }
        for (name, v) in [
            ("clip_norm", row.clip_norm),
            ("noise_multiplier", row.noise_multiplier),
            ("sampling_rate", row.sampling_rate),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(self.invalid(format!(
                    "ledger row for round {}: {name} must be finite and non-negative, got {v}",
                    row.round
                )));
            }
        }
        let event_json = event_value.to_string();
        let id = self.write_transaction(|tx, path| {
            let sql_err = sql_error_at(path);
            let exists: Option<i64> = tx
                .query_row("SELECT id FROM ledger WHERE round = ?1", [round], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql_err)?;
            if exists.is_some() {
                return Err(StoreError::DuplicateRound {
                    path: path.to_path_buf(),
                    round: row.round,
                });
            }
            let inserted = tx.execute(
                "INSERT INTO ledger (round, training_round, kind, mechanism, event, cohort_size,
                                     clip_norm, noise_multiplier, sampling_rate, recorded_at_ms,
                                     not_private)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    round,
                    row.training_round,
                    row.kind.as_str(),
                    mechanism,
                    event_json,
                    row.cohort_size,
                    row.clip_norm,
                    row.noise_multiplier,
                    row.sampling_rate,
                    row.recorded_at_ms,
                    row.not_private,
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    return Err(StoreError::DuplicateRound {
                        path: path.to_path_buf(),
                        round: row.round,
                    });
                }
                Err(e) => return Err(sql_err(e)),
            }
            Ok(tx.last_insert_rowid())
        })?;
        Ok(LedgerRow {
            id,
            round: row.round,
            training_round: row.training_round,
            kind: row.kind,
            event: row.event.clone(),
            cohort_size: row.cohort_size,
            clip_norm: row.clip_norm,
            noise_multiplier: row.noise_multiplier,
            sampling_rate: row.sampling_rate,
            recorded_at_ms: row.recorded_at_ms,
            not_private: row.not_private,
        })
    }

    /// Every ledger row, ordered by round.
    pub fn ledger(&self) -> Result<Vec<LedgerRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {LEDGER_COLUMNS} FROM ledger ORDER BY round"
            ))
            .map_err(|e| self.sql(e))?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    to_u64(r.get(1)?)?,
                    r.get::<_, Option<i64>>(2)?.map(to_u32).transpose()?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    to_u32(r.get(5)?)?,
                    r.get::<_, f64>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, f64>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, bool>(10)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        raw.into_iter()
            .map(
                |(id, round, training_round, kind, event, cohort_size, clip, sigma, q, at, np)| {
                    let event: PrivacyEvent = serde_json::from_str(&event).map_err(|e| {
                        self.invalid(format!("ledger row for round {round}: bad event: {e}"))
                    })?;
                    Ok(LedgerRow {
                        id,
                        round,
                        training_round,
                        kind: kind.parse().map_err(|e: String| {
                            self.invalid(format!("ledger row for round {round}: {e}"))
                        })?,
                        event,
                        cohort_size,
                        clip_norm: clip,
                        noise_multiplier: sigma,
                        sampling_rate: q,
                        recorded_at_ms: at,
                        not_private: np,
                    })
                },
            )
            .collect()
    }

    /// The privacy events of every ledger row, ordered by round: what the
    /// accountant composes.
    pub fn privacy_events(&self) -> Result<Vec<PrivacyEvent>, StoreError> {
        Ok(self.ledger()?.into_iter().map(|r| r.event).collect())
    }

    /// The highest round with a ledger row, if any: the last released round.
    pub fn last_ledger_round(&self) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT max(round) FROM ledger", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        v.map(|v| to_u64(v).map_err(|e| self.sql(e))).transpose()
    }

    /// Rounds this store released without privacy: released rounds that have
    /// no ledger row (DP was off) and ledger rows whose noise was seeded.
    /// A private federation cannot resume a store that has any: its ε would
    /// leave them out.
    pub fn non_private_releases(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT round FROM rounds WHERE status = 'released'
                     AND round NOT IN (SELECT round FROM ledger)
                 UNION
                 SELECT round FROM ledger WHERE not_private = 1
                 ORDER BY round",
            )
            .map_err(|e| self.sql(e))?;
        let rounds = stmt
            .query_map([], |r| to_u64(r.get(0)?))
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rounds)
    }
}
