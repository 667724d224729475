//! `[[analytics]]`: federated-analytics queries the coordinator runs before
//! training (or, in an analytics-only federation with `federation.rounds =
//! 0`, on their own), one query per entry.
//!
//! ```toml
//! [[analytics]]
//! query = "count where age > 65 and cp = 4"
//! epsilon = 0.5           # count, sum, mean, top k: pure ε
//! max_rows = 300          # most rows one site contributes (default 1000)
//!
//! [[analytics]]
//! query = "histogram age edges [20, 40, 60, 80]"
//! noise_multiplier = 2.0  # histogram: discrete Gaussian σ per row cap
//! ```
//!
//! Each entry is parsed and its plan checked as the file is read, so an
//! error names the file, the line and the key (`analytics.query`: the
//! position in the query text too).

use serde::{Deserialize, Serialize};
use tessera_analytics::{QueryNoise, QueryPlan, parse_query};

/// Default row cap of a query (the same as `tessera-sim query`'s).
pub const DEFAULT_MAX_ROWS: u64 = 1000;

/// One `[[analytics]]` entry, checked: the plan every site is announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AnalyticsEntryText", into = "AnalyticsEntryText")]
pub struct AnalyticsEntry {
    /// The query, its row cap and its noise.
    pub plan: QueryPlan,
}

/// An `[[analytics]]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsEntryText {
    /// The query text (see the README's "Federated analytics").
    pub query: String,
    /// ε of a count, sum, mean or top k (pure differential privacy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// σ of a histogram's discrete Gaussian, per unit of row cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// Most rows one site contributes (its sensitivity).
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
}

fn default_max_rows() -> u64 {
    DEFAULT_MAX_ROWS
}

impl AnalyticsEntryText {
    /// The checked plan, or what is wrong with the entry, naming its key.
    pub fn plan(&self) -> Result<QueryPlan, String> {
        let query = parse_query(&self.query).map_err(|e| {
            format!(
                "analytics.query: at position {}:\n{}",
                e.position,
                e.render(&self.query)
            )
        })?;
        let histogram = matches!(query.kind, tessera_analytics::QueryKind::Histogram { .. });
        let noise = match (self.epsilon, self.noise_multiplier, histogram) {
            (Some(e), None, false) => QueryNoise::Epsilon(e),
            (None, Some(s), true) => QueryNoise::NoiseMultiplier(s),
            (_, _, false) => {
                return Err(
                    "analytics.epsilon: a count, sum, mean or top k needs `epsilon` (and no \
                     `noise_multiplier`)"
                        .into(),
                );
            }
            (_, _, true) => {
                return Err(
                    "analytics.noise_multiplier: a histogram needs `noise_multiplier` (and no \
                     `epsilon`)"
                        .into(),
                );
            }
        };
        let plan = QueryPlan {
            query,
            max_rows: self.max_rows,
            noise,
        };
        plan.validate().map_err(|e| {
            let key = match e {
                tessera_analytics::PlanError::RowCap(_) => "analytics.max_rows",
                tessera_analytics::PlanError::Epsilon(_) => "analytics.epsilon",
                tessera_analytics::PlanError::NoiseMultiplier(_) => "analytics.noise_multiplier",
                _ => "analytics.query",
            };
            format!("{key}: {e}")
        })?;
        Ok(plan)
    }
}

impl TryFrom<AnalyticsEntryText> for AnalyticsEntry {
    type Error = String;

    fn try_from(text: AnalyticsEntryText) -> Result<Self, String> {
        Ok(AnalyticsEntry { plan: text.plan()? })
    }
}

impl From<AnalyticsEntry> for AnalyticsEntryText {
    fn from(e: AnalyticsEntry) -> Self {
        let (epsilon, noise_multiplier) = match e.plan.noise {
            QueryNoise::Epsilon(x) => (Some(x), None),
            QueryNoise::NoiseMultiplier(s) => (None, Some(s)),
        };
        AnalyticsEntryText {
            query: e.plan.query.to_string(),
            epsilon,
            noise_multiplier,
            max_rows: e.plan.max_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Result<AnalyticsEntry, String> {
        #[derive(Deserialize)]
        struct File {
            analytics: Vec<AnalyticsEntry>,
        }
        toml::from_str::<File>(text)
            .map(|f| f.analytics.into_iter().next().expect("one entry"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn entries_become_plans() {
        let e = entry("[[analytics]]\nquery = \"count where age > 65\"\nepsilon = 0.5\n").unwrap();
        assert_eq!(e.plan.max_rows, DEFAULT_MAX_ROWS);
        assert_eq!(e.plan.noise, QueryNoise::Epsilon(0.5));
        let h = entry(
            "[[analytics]]\nquery = \"histogram age edges [20, 40, 60]\"\nnoise_multiplier = 2\nmax_rows = 50\n",
        )
        .unwrap();
        assert_eq!(h.plan.noise, QueryNoise::NoiseMultiplier(2.0));
        assert_eq!(h.plan.max_rows, 50);
    }

    #[test]
    fn bad_entries_name_key_and_line() {
        for (text, key, line) in [
            (
                "[[analytics]]\nquery = \"count wher age > 65\"\nepsilon = 1\n",
                "analytics.query",
                "line 1",
            ),
            (
                "\n[[analytics]]\nquery = \"count\"\nepsilon = -1\n",
                "analytics.epsilon",
                "line 2",
            ),
            (
                "[[analytics]]\nquery = \"count\"\nnoise_multiplier = 1\n",
                "analytics.epsilon",
                "line 1",
            ),
            (
                "[[analytics]]\nquery = \"histogram a edges [0, 1]\"\nepsilon = 1\n",
                "analytics.noise_multiplier",
                "line 1",
            ),
            (
                "[[analytics]]\nquery = \"count\"\nepsilon = 1\nmax_rows = 0\n",
                "analytics.max_rows",
                "line 1",
            ),
            (
                "[[analytics]]\nquery = \"count\"\nepsilon = 1\nrows = 3\n",
                "rows",
                "line 4",
            ),
        ] {
            let e = entry(text).unwrap_err();
            assert!(e.contains(key) && e.contains(line), "{text}: {e}");
        }
        let e = entry("[[analytics]]\nquery = \"count wher age > 65\"\nepsilon = 1\n").unwrap_err();
        assert!(e.contains("position 7"), "{e}");
    }
}
