//! `[analytics]` of the participant's configuration: which analytics
//! queries the site answers, and the checks of those values.

use serde::{Deserialize, Serialize};

use super::{ConfigError, ParticipantConfig, invalid};

/// `[analytics]`: the federated-analytics queries the site answers. Every
/// announced query is parsed and checked against it before any row is
/// read; a query it does not allow is declined with a code (the detail
/// stays in the site's log). The site's own budget (`privacy.max_epsilon`)
/// covers its queries and its training rounds together, in one ledger.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSection {
    /// Columns a query may read, in its filter or as the column it
    /// aggregates. Empty (the default): every query is declined.
    pub allowed_columns: Vec<String>,
    /// The least noise accepted per query kind (`count`, `sum`, `mean`,
    /// `histogram`, `top_k`), as a multiplier of the sensitivity: 1/ε for a
    /// count or sum, 2/ε for a mean, σ for a histogram, 2k/ε for top k.
    pub min_noise_multiplier: std::collections::BTreeMap<tessera_analytics::KindName, f64>,
    /// The largest per-site row cap a query may announce (absent: any the
    /// query language allows).
    pub max_rows: Option<u64>,
}

impl AnalyticsSection {
    /// Whether nothing is set (every query declined).
    pub fn is_default(&self) -> bool {
        self.allowed_columns.is_empty()
            && self.min_noise_multiplier.is_empty()
            && self.max_rows.is_none()
    }
}

impl ParticipantConfig {
    /// Checks `[analytics]`: column names, noise floors, the row cap, and
    /// that every allowed column is one `participant.allowed_columns` lets
    /// any query see.
    pub(super) fn validate_analytics(&self) -> Result<(), ConfigError> {
        let a = &self.analytics;
        if let Some(c) = a.allowed_columns.iter().find(|c| c.trim().is_empty()) {
            return Err(invalid(
                "analytics.allowed_columns",
                format!("empty column name {c:?}"),
            ));
        }
        if let Some(all) = &self.participant.allowed_columns
            && let Some(c) = a
                .allowed_columns
                .iter()
                .find(|c| !all.iter().any(|x| x.trim() == c.trim()))
        {
            return Err(invalid(
                "analytics.allowed_columns",
                format!(
                    "{c:?} is not in participant.allowed_columns, which no task or query may go past"
                ),
            ));
        }
        if let Some((kind, v)) = a
            .min_noise_multiplier
            .iter()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(invalid(
                "analytics.min_noise_multiplier",
                format!("{kind}: must be a non-negative number, got {v}"),
            ));
        }
        if a.max_rows == Some(0) {
            return Err(invalid("analytics.max_rows", "must be at least 1"));
        }
        Ok(())
    }
}
