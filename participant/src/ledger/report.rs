//! The site ledger's report: every contribution with the site's cumulative
//! ε, as a table or one JSON object, with seeded-noise rounds marked NOT
//! PRIVATE.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use tessera_common::time::format_utc_ms;

use super::store::epsilon_of;
use super::{LedgerError, LedgerStore, site_events};

/// Marker of a contribution to a round whose noise was seeded.
pub const NOT_PRIVATE: &str = "NOT PRIVATE";

/// One contribution with the site's ε after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteLedgerRow {
    /// The federation.
    pub federation: String,
    /// Aggregation number.
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What the round aggregated.
    pub kind: String,
    /// Announced noise multiplier σ.
    pub noise_multiplier: f64,
    /// Announced clip norm C.
    pub clip_norm: f64,
    /// Total-variation slack of the round's discretised noise.
    pub tv_slack: f64,
    /// The round's noise was seeded: this contribution is not private, and
    /// no ε covers it.
    pub not_private: bool,
    /// When the row was written, RFC 3339 UTC.
    pub recorded_at: String,
    /// The site's ε (at the report's δ, q = 1, best accountant) up to and
    /// including this contribution.
    pub cumulative_epsilon: f64,
}

/// The site's ledger with cumulative ε, for `tessera-participant ledger`.
/// Serialises to one JSON object; `Display` renders a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteLedgerReport {
    /// The ledger read.
    pub ledger: PathBuf,
    /// δ at which ε is reported.
    pub delta: f64,
    /// Every contribution, in the order recorded.
    pub rows: Vec<SiteLedgerRow>,
    /// The site's ε over every contribution (0 when there is none).
    pub epsilon: f64,
    /// The site's budget, if given.
    pub max_epsilon: Option<f64>,
    /// Budget left (never negative), if a budget was given.
    pub epsilon_remaining: Option<f64>,
    /// How many contributions went to rounds with seeded noise.
    pub not_private_contributions: usize,
    /// Set when some contributions are not private: what that means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Every contribution with the site's cumulative ε after it, at `delta`.
pub fn site_ledger_report(
    l: &dyn LedgerStore,
    delta: f64,
    max_epsilon: Option<f64>,
) -> Result<SiteLedgerReport, LedgerError> {
    let contributions = l.contributions()?;
    let mut rows = Vec::with_capacity(contributions.len());
    for (i, c) in contributions.iter().enumerate() {
        let cumulative_epsilon = epsilon_of(
            l.location(),
            &site_events(contributions.get(..=i).unwrap_or_default()),
            delta,
        )?;
        rows.push(SiteLedgerRow {
            federation: c.federation.clone(),
            round: c.round,
            training_round: c.training_round,
            kind: c.kind.clone(),
            noise_multiplier: c.noise_multiplier,
            clip_norm: c.clip_norm,
            tv_slack: c.tv_slack,
            not_private: c.not_private,
            recorded_at: format_utc_ms(c.recorded_at_ms),
            cumulative_epsilon,
        });
    }
    let epsilon = rows.last().map_or(0.0, |r| r.cumulative_epsilon);
    let not_private_contributions = rows.iter().filter(|r| r.not_private).count();
    let warning = (not_private_contributions > 0).then(|| {
        format!(
            "{NOT_PRIVATE}: {not_private_contributions} contribution(s) went to rounds whose noise \
             was seeded; whoever knows the seed can remove the noise, so no epsilon covers them"
        )
    });
    Ok(SiteLedgerReport {
        ledger: l.location().to_path_buf(),
        delta,
        rows,
        epsilon,
        max_epsilon,
        epsilon_remaining: max_epsilon.map(|m| (m - epsilon).max(0.0)),
        not_private_contributions,
        warning,
    })
}

impl fmt::Display for SiteLedgerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "site ledger {}", self.ledger.display())?;
        if self.rows.is_empty() {
            writeln!(
                f,
                "no contributions recorded: epsilon = 0 at delta = {:e}",
                self.delta
            )?;
        } else {
            writeln!(
                f,
                "{:<20} {:>6} {:>6} {:<11} {:>8} {:>8} {:>10} {:<24} {:>12}  note",
                "federation",
                "round",
                "train",
                "kind",
                "sigma",
                "clip",
                "tv slack",
                "recorded at",
                "cum. eps"
            )?;
            for r in &self.rows {
                let train = r
                    .training_round
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                writeln!(
                    f,
                    "{:<20} {:>6} {:>6} {:<11} {:>8.4} {:>8.4} {:>10.3e} {:<24} {:>12.6}  {}",
                    r.federation,
                    r.round,
                    train,
                    r.kind,
                    r.noise_multiplier,
                    r.clip_norm,
                    r.tv_slack,
                    r.recorded_at,
                    r.cumulative_epsilon,
                    if r.not_private { NOT_PRIVATE } else { "" }
                )?;
            }
            writeln!(
                f,
                "{} contribution(s): epsilon = {:.6} at delta = {:e} (sampling counted as q = 1, best accountant)",
                self.rows.len(),
                self.epsilon,
                self.delta
            )?;
        }
        if let (Some(max), Some(left)) = (self.max_epsilon, self.epsilon_remaining) {
            writeln!(f, "budget: max_epsilon = {max}, remaining {left:.6}")?;
        }
        if let Some(w) = &self.warning {
            writeln!(f, "WARNING: {w}")?;
        }
        Ok(())
    }
}
