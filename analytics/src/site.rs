//! A site's side of a query: its policy (which columns may be queried, the
//! least noise it accepts per query kind, its own budget), the check of an
//! announced plan against that policy *before* any row is read, and the
//! bounded integer vector it then contributes to the secure sum.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tessera_privacy::PrivacyEvent;

use crate::plan::QueryPlan;
use crate::query::{KindName, QueryKind};

/// A site's rules for analytics queries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicy {
    /// Columns a query may read (in its filter or as its aggregated column).
    /// Empty: every query is declined.
    pub columns: BTreeSet<String>,
    /// Least noise multiplier accepted per kind (see
    /// [`QueryPlan::noise_multiplier`]: 1/ε for count and sum, 2/ε for a
    /// mean, σ for a histogram, 2k/ε for top k). A kind not listed is
    /// accepted at any valid noise.
    #[serde(default)]
    pub min_noise_multiplier: BTreeMap<KindName, f64>,
    /// The site declines a query that would take its own ledger's ε (at
    /// `delta`) past this.
    #[serde(default)]
    pub max_epsilon: Option<f64>,
    /// δ of `max_epsilon`.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn default_delta() -> f64 {
    1e-5
}

impl Default for SitePolicy {
    /// No column allowed (every query declined), no floors, no budget.
    fn default() -> Self {
        Self {
            columns: BTreeSet::new(),
            min_noise_multiplier: BTreeMap::new(),
            max_epsilon: None,
            delta: default_delta(),
        }
    }
}

/// Why a site declines a query, as a code sent to the coordinator (never
/// anything derived from the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The query reads a column the site does not allow.
    ColumnNotAllowed,
    /// The announced noise is below the site's floor for the kind.
    NoiseBelowMinimum,
    /// The query would take the site past its own budget.
    BudgetExceeded,
    /// The plan is invalid.
    InvalidPlan,
    /// The query reads a column the site's data does not have.
    ColumnMissing,
}

impl RefusalCode {
    /// The fixed text of the code.
    pub fn text(self) -> &'static str {
        match self {
            RefusalCode::ColumnNotAllowed => "the query reads a column this site does not allow",
            RefusalCode::NoiseBelowMinimum => {
                "the announced noise is below this site's minimum for the query kind"
            }
            RefusalCode::BudgetExceeded => "the query would take this site past its privacy budget",
            RefusalCode::InvalidPlan => "the announced query plan is invalid",
            RefusalCode::ColumnMissing => "the query reads a column this site's data does not have",
        }
    }

    /// Text form (`column_not_allowed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::ColumnNotAllowed => "column_not_allowed",
            RefusalCode::NoiseBelowMinimum => "noise_below_minimum",
            RefusalCode::BudgetExceeded => "budget_exceeded",
            RefusalCode::InvalidPlan => "invalid_plan",
            RefusalCode::ColumnMissing => "column_missing",
        }
    }
}

/// A declined query: the code for the wire and a detail for the site's log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({detail})", code.text())]
pub struct Refusal {
    /// Sent to the coordinator.
    pub code: RefusalCode,
    /// For the site's own log only.
    pub detail: String,
}

fn refuse<T>(code: RefusalCode, detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        detail: detail.into(),
    })
}

impl SitePolicy {
    /// Checks an announced plan against the policy and the site's own
    /// ledger `spent`, without touching any row: the plan is valid, every
    /// column it reads is allowed, its noise is at least the floor of its
    /// kind, and the site's ε after it stays within `max_epsilon`. Returns
    /// the event the site records in its ledger before it contributes.
    pub fn check(&self, plan: &QueryPlan, spent: &[PrivacyEvent]) -> Result<PrivacyEvent, Refusal> {
        if let Err(e) = plan.validate() {
            return refuse(RefusalCode::InvalidPlan, e.to_string());
        }
        if self.columns.is_empty() {
            // No column allowed: the site answers no query at all, also
            // none that reads no column (a plain `count`).
            return refuse(
                RefusalCode::ColumnNotAllowed,
                "this site allows no column to be queried",
            );
        }
        let columns = plan.query.columns();
        let disallowed: Vec<&str> = columns
            .iter()
            .copied()
            .filter(|c| !self.columns.contains(*c))
            .collect();
        if !disallowed.is_empty() {
            return refuse(
                RefusalCode::ColumnNotAllowed,
                format!("query `{}` reads {}", plan.query, disallowed.join(", ")),
            );
        }
        let kind = plan.query.kind.name();
        if let Some(&floor) = self.min_noise_multiplier.get(&kind) {
            let announced = plan.noise_multiplier();
            if announced < floor {
                return refuse(
                    RefusalCode::NoiseBelowMinimum,
                    format!("{kind} announced with noise multiplier {announced}, floor {floor}"),
                );
            }
        }
        let event = plan.event();
        if let Some(max) = self.max_epsilon {
            let mut ledger = spent.to_vec();
            ledger.push(event.clone());
            let eps = tessera_privacy::epsilon(
                &ledger,
                self.delta,
                tessera_privacy::AccountantKind::Best,
            )
            .map_err(|e| Refusal {
                code: RefusalCode::BudgetExceeded,
                detail: format!("the ledger cannot be accounted: {e}"),
            })?
            .epsilon;
            if eps > max {
                return refuse(
                    RefusalCode::BudgetExceeded,
                    format!(
                        "ε would reach {eps:.4} at δ = {}, the budget is {max}",
                        self.delta
                    ),
                );
            }
        }
        Ok(event)
    }
}

/// A site's rows as numbers: column names and, per row, each cell's value
/// (`NaN` where missing or not a number).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    /// Reads a CSV file (header row; missing markers and text cells become
    /// `NaN`).
    pub fn read_csv(path: &Path) -> Result<Table, tessera_model::data::DataError> {
        Self::from_raw(tessera_model::data::read_raw_csv(path)?)
    }

    /// Reads CSV text already in memory (`source` names it in errors), as
    /// [`Table::read_csv`] reads a file.
    pub fn from_csv_bytes(
        bytes: &[u8],
        source: &Path,
    ) -> Result<Table, tessera_model::data::DataError> {
        Self::from_raw(tessera_model::data::read_raw_csv_from_reader(
            bytes, source,
        )?)
    }

    fn from_raw(
        raw: tessera_model::data::RawTable,
    ) -> Result<Table, tessera_model::data::DataError> {
        let rows = raw
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| tessera_model::data::parse_cell(c).unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        Ok(Table {
            columns: raw.header,
            rows,
        })
    }

    /// Index of a column.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The rows concatenated with another table's (same columns).
    pub fn concat(tables: &[Table]) -> Option<Table> {
        let first = tables.first()?;
        if tables.iter().any(|t| t.columns != first.columns) {
            return None;
        }
        Some(Table {
            columns: first.columns.clone(),
            rows: tables.iter().flat_map(|t| t.rows.iter().cloned()).collect(),
        })
    }
}

/// The exact, unbounded answer of a query on a table (what the pooled data
/// would give without caps or noise): count, sum, mean, bin counts or
/// candidate counts. For tests and for comparing a release with the truth
/// on data one holds.
pub fn exact_answer(plan: &QueryPlan, table: &Table) -> Result<Vec<f64>, Refusal> {
    let uncapped = QueryPlan {
        max_rows: u64::MAX,
        ..plan.clone()
    };
    let v = raw_sums(&uncapped, table)?;
    let parts = uncapped.parts();
    let mut out: Vec<f64> = Vec::with_capacity(v.len());
    for p in &parts {
        for i in p.range.clone() {
            out.push(v[i] as f64 / p.units);
        }
    }
    if let QueryKind::Mean { .. } = plan.query.kind {
        return Ok(vec![out[0] / out[1]]);
    }
    Ok(out)
}

/// The site's vector for the secure sum: the query's integer sums over at
/// most `max_rows` selected rows (the first ones in file order), each value
/// clamped and encoded as `plan.parts()` says, as residues modulo 2^64.
/// Call after [`SitePolicy::check`]; a column missing from the data is
/// declined here, before any row is read.
pub fn contribution(plan: &QueryPlan, table: &Table) -> Result<Vec<u64>, Refusal> {
    if let Err(e) = plan.validate() {
        return refuse(RefusalCode::InvalidPlan, e.to_string());
    }
    Ok(raw_sums(plan, table)?
        .into_iter()
        .map(|x| x as u64)
        .collect())
}

fn raw_sums(plan: &QueryPlan, table: &Table) -> Result<Vec<i64>, Refusal> {
    let mut index = BTreeMap::new();
    for c in plan.query.columns() {
        match table.index(c) {
            Some(i) => {
                index.insert(c.to_string(), i);
            }
            None => return refuse(RefusalCode::ColumnMissing, format!("no column `{c}`")),
        }
    }
    let parts = plan.parts();
    let units = parts.first().map_or(1.0, |p| p.units);
    let target = plan.query.kind.column().and_then(|c| index.get(c).copied());
    let mut out = vec![0i64; plan.dim()];
    let mut taken: u64 = 0;
    for row in &table.rows {
        if taken >= plan.max_rows {
            break;
        }
        let value_of = |name: &str| {
            index
                .get(name)
                .and_then(|&i| row.get(i).copied())
                .unwrap_or(f64::NAN)
        };
        if let Some(f) = &plan.query.filter
            && f.eval(&value_of) != Some(true)
        {
            continue;
        }
        let x = target.and_then(|i| row.get(i).copied()).unwrap_or(f64::NAN);
        let used = match &plan.query.kind {
            QueryKind::Count => {
                out[0] += 1;
                true
            }
            QueryKind::Sum { bounds, .. } | QueryKind::Mean { bounds, .. } => {
                if x.is_nan() {
                    false
                } else {
                    out[0] += (x.clamp(bounds.lo, bounds.hi) * units).round() as i64;
                    if out.len() > 1 {
                        out[1] += 1;
                    }
                    true
                }
            }
            QueryKind::Histogram { edges, .. } => match bin_of(edges, x) {
                Some(b) => {
                    out[b] += units as i64;
                    true
                }
                None => false,
            },
            QueryKind::TopK { candidates, .. } => match candidates.iter().position(|&c| c == x) {
                Some(i) => {
                    out[i] += 1;
                    true
                }
                None => false,
            },
        };
        if used {
            taken += 1;
        }
    }
    Ok(out)
}

/// The bin of `x` among `edges`: `[e_i, e_{i+1})`, the last bin closed;
/// `None` outside every bin or for `NaN`.
pub fn bin_of(edges: &[f64], x: f64) -> Option<usize> {
    let (first, last) = (*edges.first()?, *edges.last()?);
    if x.is_nan() || x < first || x > last {
        return None;
    }
    if x == last {
        return Some(edges.len() - 2);
    }
    Some(edges.partition_point(|&e| e <= x) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_query;
    use crate::plan::QueryNoise;

    fn plan(q: &str, rows: u64) -> QueryPlan {
        let noise = if q.starts_with("histogram") {
            QueryNoise::NoiseMultiplier(2.0)
        } else {
            QueryNoise::Epsilon(1.0)
        };
        QueryPlan {
            query: parse_query(q).unwrap(),
            max_rows: rows,
            noise,
        }
    }

    fn table() -> Table {
        let nan = f64::NAN;
        Table {
            columns: vec!["age".into(), "cp".into(), "chol".into()],
            rows: vec![
                vec![70.0, 4.0, 250.0],
                vec![66.0, 4.0, 900.0],
                vec![50.0, 4.0, nan],
                vec![nan, 4.0, 200.0],
                vec![80.0, 2.0, 150.0],
            ],
        }
    }

    fn policy(cols: &[&str]) -> SitePolicy {
        SitePolicy {
            columns: cols.iter().map(|c| c.to_string()).collect(),
            ..SitePolicy::default()
        }
    }

    fn signed(v: Vec<u64>) -> Vec<i64> {
        v.into_iter().map(|x| x as i64).collect()
    }

    #[test]
    fn contributions_filter_clamp_and_cap() {
        let t = table();
        let c = |q: &str, rows| signed(contribution(&plan(q, rows), &t).unwrap());
        assert_eq!(c("count where age > 65 and cp = 4", 100), [2]);
        // A missing age is unknown, also under `not` and `!=`.
        assert_eq!(c("count where not age > 65", 100), [1]);
        assert_eq!(c("count where age != 70", 100), [3]);
        assert_eq!(c("count where age > 65 or cp = 4", 100), [5]);
        assert_eq!(c("count", 3), [3]);
        let p = plan("mean chol in [100, 400]", 100);
        let u = p.parts()[0].units;
        assert_eq!(
            c("mean chol in [100, 400]", 100),
            [((250.0 + 400.0 + 200.0 + 150.0) * u) as i64, 4]
        );
        // The cap counts rows used, not rows read.
        assert_eq!(
            c("mean chol in [100, 400]", 2),
            [((250.0 + 400.0) * u) as i64, 2]
        );
        let h = plan("histogram age edges [60, 70, 80]", 100);
        let hu = h.parts()[0].units as i64;
        assert_eq!(c("histogram age edges [60, 70, 80]", 100), [hu, 2 * hu]);
        assert_eq!(c("top 1 cp among [1, 2, 4]", 100), [0, 1, 4]);
        let neg = signed(contribution(&plan("sum chol in [-1000, -10]", 100), &t).unwrap());
        assert!(neg[0] < 0);
    }

    #[test]
    fn exact_answers_are_uncapped() {
        let t = table();
        assert_eq!(exact_answer(&plan("count", 1), &t).unwrap(), [5.0]);
        let m = exact_answer(&plan("mean chol in [0, 1000]", 1), &t).unwrap();
        assert!((m[0] - 1500.0 / 4.0).abs() < 1e-3);
    }

    #[test]
    fn policy_declines_before_reading() {
        let p = plan("count where age > 65 and cp = 4", 100);
        let e = policy(&["age"]).check(&p, &[]).unwrap_err();
        assert_eq!(e.code, RefusalCode::ColumnNotAllowed);
        assert!(e.detail.contains("cp"));
        assert!(policy(&["age", "cp"]).check(&p, &[]).is_ok());
        assert_eq!(
            SitePolicy::default().check(&p, &[]).unwrap_err().code,
            RefusalCode::ColumnNotAllowed
        );
        let mut floor = policy(&["age", "cp"]);
        floor.min_noise_multiplier.insert(KindName::Count, 2.0); // ε ≤ 0.5
        assert_eq!(
            floor.check(&p, &[]).unwrap_err().code,
            RefusalCode::NoiseBelowMinimum
        );
        floor.min_noise_multiplier.insert(KindName::Count, 1.0);
        assert!(floor.check(&p, &[]).is_ok());
        let mut budget = policy(&["age", "cp"]);
        budget.max_epsilon = Some(2.5);
        let spent = vec![PrivacyEvent::DiscreteLaplace {
            epsilon: 1.0,
            count: 2,
        }];
        assert_eq!(
            budget.check(&p, &spent).unwrap_err().code,
            RefusalCode::BudgetExceeded
        );
        let r = budget.check(&p, &spent[..0]);
        assert!(r.is_ok(), "{r:?}");
        let bad = QueryPlan {
            max_rows: 0,
            ..p.clone()
        };
        assert_eq!(
            policy(&["age", "cp"]).check(&bad, &[]).unwrap_err().code,
            RefusalCode::InvalidPlan
        );
        let missing = plan("count where weight > 1", 10);
        assert!(policy(&["weight"]).check(&missing, &[]).is_ok());
        assert_eq!(
            contribution(&missing, &table()).unwrap_err().code,
            RefusalCode::ColumnMissing
        );
    }

    #[test]
    fn files_with_missing_markers_and_text_read_as_missing() {
        let dir = std::env::temp_dir().join(format!("tessera-analytics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("site.csv");
        std::fs::write(
            &path,
            "age,cp,note\n70,4,x\n?,4,y\n66,NaN,z\n1e999,4,w\n67,4,\n",
        )
        .unwrap();
        let t = Table::read_csv(&path).unwrap();
        assert_eq!(t.rows.len(), 5);
        // `?`, `NaN`, an overflowing number and text are all missing.
        assert!(t.rows[1][0].is_nan() && t.rows[2][1].is_nan() && t.rows[3][0].is_nan());
        assert!(t.rows[0][2].is_nan());
        let c = signed(contribution(&plan("count where age > 65 and cp = 4", 100), &t).unwrap());
        assert_eq!(c, [2]);
        std::fs::write(&path, "age,cp\n70,4,9\n").unwrap();
        assert!(Table::read_csv(&path).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bins_are_half_open_with_a_closed_last() {
        let e = [0.0, 1.0, 2.0];
        assert_eq!(bin_of(&e, 0.0), Some(0));
        assert_eq!(bin_of(&e, 0.99), Some(0));
        assert_eq!(bin_of(&e, 1.0), Some(1));
        assert_eq!(bin_of(&e, 2.0), Some(1));
        assert_eq!(bin_of(&e, 2.01), None);
        assert_eq!(bin_of(&e, -0.1), None);
        assert_eq!(bin_of(&e, f64::NAN), None);
    }
}
