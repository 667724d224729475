//! The site's own privacy ledger.
//!
//! A site need not trust the coordinator's arithmetic: it records every
//! round it contributed to, with the noise multiplier and clip norm the
//! coordinator announced, and computes its own ε with the same accountant.
//! Each contribution counts as a Gaussian mechanism with sampling rate 1 (the
//! site cannot verify the coordinator's sampling), so the site's ε is an
//! upper bound whatever the coordinator does. Each also carries the
//! total-variation slack of the round's discretised noise (what the exact
//! discrete Gaussian in integer units adds to δ), and whether the round's
//! noise was seeded (`not_private`: such a round is not private at all, and
//! the reports say so). The ε covers every federation recorded here: it is
//! the same site's data in all of them.
//!
//! The ledger is one SQLite database in WAL mode with `synchronous=FULL`: a
//! row [`SiteLedger::record`] reported written survives any crash, so a site
//! that records its row before it sends its masked input never undercounts.
//! Rows can be neither updated nor deleted.
//!
//! Version 4 adds the `event` column: the privacy event of an analytics
//! query (JSON of `PrivacyEvent`, e.g. a discrete Laplace release), which
//! is counted as recorded instead of as a Gaussian; NULL for the rounds of
//! a model.
//!
//! Schema versions: 1 had no slack and no `not_private` flag; version 2
//! adds both columns (`ALTER TABLE … ADD COLUMN`, rows of version 1 read as
//! slack 0 and private, which is what their rounds announced). Opening a
//! version-1 ledger for writing migrates it; a read-only open reads it as is.

mod memory;
mod report;
mod store;

pub use memory::MemoryLedger;
pub use store::LedgerStore;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use tessera_privacy::PrivacyEvent;

pub use report::{NOT_PRIVATE, SiteLedgerReport, SiteLedgerRow, site_ledger_report};

/// Schema version stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 4;

/// Schema version 1 (kept to create a fresh ledger by the same path as an
/// old one takes: version 1, then every migration).
const SCHEMA_V1: &str = r#"
CREATE TABLE contributions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    federation       TEXT    NOT NULL,
    round            INTEGER NOT NULL CHECK (round >= 0),
    training_round   INTEGER CHECK (training_round IS NULL OR training_round >= 0),
    kind             TEXT    NOT NULL,
    noise_multiplier REAL    NOT NULL,
    clip_norm        REAL    NOT NULL,
    recorded_at_ms   INTEGER NOT NULL,
    UNIQUE (federation, round)
) STRICT;
CREATE TRIGGER contributions_no_update BEFORE UPDATE ON contributions
BEGIN SELECT RAISE(ABORT, 'site ledger rows are append-only'); END;
CREATE TRIGGER contributions_no_delete BEFORE DELETE ON contributions
BEGIN SELECT RAISE(ABORT, 'site ledger rows are append-only'); END;
"#;

/// Version 1 → 2: the total-variation slack of the round's noise and the
/// seeded-noise flag. Adding columns fires no update trigger; existing rows
/// get the defaults.
const MIGRATE_V2: &str = r#"
ALTER TABLE contributions
    ADD COLUMN tv_slack REAL NOT NULL DEFAULT 0.0 CHECK (tv_slack >= 0.0);
ALTER TABLE contributions
    ADD COLUMN not_private INTEGER NOT NULL DEFAULT 0 CHECK (not_private IN (0, 1));
"#;

/// Version 2 → 3: the noise the sites add themselves (distributed or
/// local placement), as JSON of [`SiteNoise`]; NULL for central noise.
const MIGRATE_V3: &str = r#"
ALTER TABLE contributions ADD COLUMN site_noise TEXT;
"#;

/// Version 3 → 4: the privacy event of an analytics query, as JSON of
/// `PrivacyEvent`; NULL for the rounds of a model.
const MIGRATE_V4: &str = r#"
ALTER TABLE contributions ADD COLUMN event TEXT;
"#;

/// Errors of the site ledger. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The ledger's directory could not be created.
    #[error("cannot create the directory {path} for the site ledger: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A read-only open found no ledger at the path.
    #[error("no site ledger at {path}")]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The database was written by another version of Tessera.
    #[error(
        "the site ledger {path} has schema version {found}; this build reads version {expected}"
    )]
    SchemaVersion {
        /// The ledger.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The version this build understands.
        expected: i64,
    },
    /// SQLite reported an error.
    #[error("site ledger {path}: {source}")]
    Sqlite {
        /// The ledger.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The site already recorded a contribution to this round.
    #[error(
        "site ledger {path} already records a contribution to round {round} of federation {federation:?}"
    )]
    DuplicateRound {
        /// The ledger.
        path: PathBuf,
        /// The federation.
        federation: String,
        /// The round number.
        round: u64,
    },
    /// A value given to or read from the ledger is not valid.
    #[error("site ledger {path}: {reason}")]
    Invalid {
        /// The ledger.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The privacy accountant failed on the ledger's events.
    #[error("privacy accounting of the site ledger {path}: {source}")]
    Privacy {
        /// The ledger.
        path: PathBuf,
        /// The cause.
        source: tessera_privacy::Error,
    },
}

/// One round the site contributed to, with what the coordinator announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The federation's identifier.
    pub federation: String,
    /// Aggregation number within the federation.
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What the round aggregates (`statistics`, `training`, …).
    pub kind: String,
    /// Noise multiplier σ the coordinator announced.
    pub noise_multiplier: f64,
    /// Clip norm C the coordinator announced.
    pub clip_norm: f64,
    /// Total-variation slack of the round's discretised noise, as announced
    /// (noise std and encoding): added to δ by the accountant.
    #[serde(default)]
    pub tv_slack: f64,
    /// The round announced seeded noise: it is not private, whatever σ says.
    #[serde(default)]
    pub not_private: bool,
    /// When the row was written (ms since the Unix epoch).
    pub recorded_at_ms: i64,
    /// Noise added by the sites (distributed or local placement): the
    /// round is then a distributed discrete Gaussian release, not a
    /// Gaussian one. None for central noise.
    #[serde(default)]
    pub site_noise: Option<SiteNoise>,
    /// An analytics query: the privacy event of its release as the site
    /// derived it from the announced plan (discrete Laplace, exponential
    /// or Gaussian mechanism), counted as is. None for a model's rounds.
    #[serde(default)]
    pub event: Option<PrivacyEvent>,
}

/// The noise of a round whose sites add it themselves, as announced and
/// checked by the site.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SiteNoise {
    /// Sites' discrete Gaussians in the release (the planned cohort).
    pub summands: u32,
    /// L2 sensitivity of one site's encoded vector (C·2^f integer units).
    pub l2_units: f64,
    /// Coordinates of the release.
    pub dimension: u64,
}

impl Contribution {
    /// The privacy event the site counts for this contribution: Gaussian with
    /// the announced noise multiplier, sampling rate 1, and the round's
    /// total-variation slack; with noise added by the sites, the distributed
    /// discrete Gaussian of the announced plan (every summand counted, as
    /// the release carries them all after the coordinator's top-up).
    pub fn event(&self) -> PrivacyEvent {
        if let Some(e) = &self.event {
            return e.clone();
        }
        match self.site_noise {
            Some(n) => PrivacyEvent::DistributedDiscreteGaussian {
                noise_multiplier: self.noise_multiplier,
                summands: n.summands,
                l2_units: n.l2_units,
                dimension: n.dimension,
                sampling_rate: 1.0,
                count: 1,
                honest_summands: 0,
            },
            None => {
                PrivacyEvent::gaussian(self.noise_multiplier, 1.0, 1).with_tv_slack(self.tv_slack)
            }
        }
    }

    /// Whether the contribution can be recorded: accountable, with finite,
    /// non-negative figures (the reason otherwise).
    pub fn check(&self) -> Result<(), String> {
        self.event().validate().map_err(|e| {
            format!(
                "contribution to round {}: cannot be accounted: {e}",
                self.round
            )
        })?;
        for (name, v) in [
            ("noise_multiplier", self.noise_multiplier),
            ("clip_norm", self.clip_norm),
            ("tv_slack", self.tv_slack),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "contribution to round {}: {name} must be finite and non-negative, got {v}",
                    self.round
                ));
            }
        }
        Ok(())
    }
}

/// The site's privacy ledger (SQLite, in the participant's state directory).
#[derive(Debug)]
pub struct SiteLedger {
    conn: Connection,
    path: PathBuf,
    /// Schema version of the open database (a read-only open may see 1).
    version: i64,
}

impl SiteLedger {
    /// Opens the ledger at `path` for writing, creating its directory, the
    /// database and its schema if needed.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = tessera_common::sqlite::open_durable(path).map_err(|e| open_error(path, e))?;
        let mut ledger = SiteLedger {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// Opens an existing ledger for reading only (works while the participant
    /// runs).
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        if !path.is_file() {
            return Err(LedgerError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = tessera_common::sqlite::open_read_only(path).map_err(|e| open_error(path, e))?;
        let mut ledger = SiteLedger {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        let found =
            tessera_common::sqlite::user_version(&ledger.conn).map_err(|e| ledger.sql(e))?;
        if !(1..=SCHEMA_VERSION).contains(&found) {
            return Err(LedgerError::SchemaVersion {
                path: ledger.path.clone(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        ledger.version = found;
        Ok(ledger)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a contribution; committed and fsync'd when this returns. A
    /// second contribution to the same round of the same federation is
    /// refused with [`LedgerError::DuplicateRound`].
    fn insert(&mut self, c: &Contribution) -> Result<(), LedgerError> {
        let round = i64::try_from(c.round)
            .map_err(|_| self.invalid(format!("round {} is too large", c.round)))?;
        c.check().map_err(|reason| self.invalid(reason))?;
        let site_noise = c
            .site_noise
            .map(|n| serde_json::to_string(&n))
            .transpose()
            .map_err(|e| self.invalid(format!("site noise of round {}: {e}", c.round)))?;
        let event = c
            .event
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.invalid(format!("event of round {}: {e}", c.round)))?;
        let path = self.path.clone();
        let sql_err = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let duplicate = || LedgerError::DuplicateRound {
            path: path.clone(),
            federation: c.federation.clone(),
            round: c.round,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT id FROM contributions WHERE federation = ?1 AND round = ?2",
                params![c.federation, round],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        if exists.is_some() {
            return Err(duplicate());
        }
        match tx.execute(
            "INSERT INTO contributions (federation, round, training_round, kind,
                                        noise_multiplier, clip_norm, recorded_at_ms,
                                        tv_slack, not_private, site_noise, event)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                c.federation,
                round,
                c.training_round,
                c.kind,
                c.noise_multiplier,
                c.clip_norm,
                c.recorded_at_ms,
                c.tv_slack,
                c.not_private,
                site_noise,
                event,
            ],
        ) {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return Err(duplicate());
            }
            Err(e) => return Err(sql_err(e)),
        }
        tx.commit().map_err(sql_err)
    }

    fn read_contributions(&self) -> Result<Vec<Contribution>, LedgerError> {
        // A version-1 ledger (read-only open) has neither column: its rows
        // announced no slack and no seeded noise.
        let extra = match self.version {
            4.. => "tv_slack, not_private, site_noise, event",
            3 => "tv_slack, not_private, site_noise, NULL",
            2 => "tv_slack, not_private, NULL, NULL",
            _ => "0.0, 0, NULL, NULL",
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT federation, round, training_round, kind, noise_multiplier, clip_norm,
                        recorded_at_ms, {extra}
                 FROM contributions ORDER BY id"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let conv = |i: usize, e: std::num::TryFromIntError| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Integer,
                        Box::new(e),
                    )
                };
                Ok(Contribution {
                    federation: r.get(0)?,
                    round: u64::try_from(r.get::<_, i64>(1)?).map_err(|e| conv(1, e))?,
                    training_round: r
                        .get::<_, Option<i64>>(2)?
                        .map(|t| u32::try_from(t).map_err(|e| conv(2, e)))
                        .transpose()?,
                    kind: r.get(3)?,
                    noise_multiplier: r.get(4)?,
                    clip_norm: r.get(5)?,
                    recorded_at_ms: r.get(6)?,
                    tv_slack: r.get(7)?,
                    not_private: r.get(8)?,
                    site_noise: r
                        .get::<_, Option<String>>(9)?
                        .map(|json| {
                            serde_json::from_str(&json).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    9,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })
                        })
                        .transpose()?,
                    event: r
                        .get::<_, Option<String>>(10)?
                        .map(|json| {
                            serde_json::from_str(&json).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    10,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })
                        })
                        .transpose()?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let sql_err = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql_err)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql_err)?;
        let steps = match found {
            0 => [SCHEMA_V1, MIGRATE_V2, MIGRATE_V3, MIGRATE_V4].as_slice(),
            1 => [MIGRATE_V2, MIGRATE_V3, MIGRATE_V4].as_slice(),
            2 => [MIGRATE_V3, MIGRATE_V4].as_slice(),
            3 => [MIGRATE_V4].as_slice(),
            SCHEMA_VERSION => return Ok(()),
            found => {
                return Err(LedgerError::SchemaVersion {
                    path: path.clone(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        };
        steps
            .iter()
            .try_for_each(|sql| tx.execute_batch(sql))
            .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
            .and_then(|()| tx.commit())
            .map_err(sql_err)
    }

    fn sql(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> LedgerError {
        LedgerError::Invalid {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

impl LedgerStore for SiteLedger {
    fn location(&self) -> &Path {
        &self.path
    }

    fn contributions(&self) -> Result<Vec<Contribution>, LedgerError> {
        self.read_contributions()
    }

    fn record(&mut self, c: &Contribution) -> Result<(), LedgerError> {
        self.insert(c)
    }
}

fn open_error(path: &Path, e: tessera_common::sqlite::OpenError) -> LedgerError {
    match e {
        tessera_common::sqlite::OpenError::Sqlite(source) => LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
        other => LedgerError::Invalid {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Gaussian events at sampling rate 1, merged by noise multiplier (the
/// slacks of merged contributions add up), and the distributed-noise
/// rounds each as its own event.
pub(crate) fn site_events(contributions: &[Contribution]) -> Vec<PrivacyEvent> {
    let mut merged: Vec<(f64, u32, f64)> = Vec::new();
    let mut distributed = Vec::new();
    for c in contributions {
        if c.site_noise.is_some() || c.event.is_some() {
            distributed.push(c.event());
            continue;
        }
        match merged
            .iter_mut()
            .find(|(sigma, ..)| sigma.to_bits() == c.noise_multiplier.to_bits())
        {
            Some((_, count, slack)) => {
                *count += 1;
                *slack += c.tv_slack;
            }
            None => merged.push((c.noise_multiplier, 1, c.tv_slack)),
        }
    }
    merged
        .into_iter()
        .map(|(sigma, count, slack)| PrivacyEvent::gaussian(sigma, 1.0, count).with_tv_slack(slack))
        .chain(distributed)
        .collect()
}
