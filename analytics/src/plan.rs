//! The announced plan of one query: the query, the per-site row cap and the
//! noise, and everything that follows from them — the layout of a site's
//! integer vector, each part's sensitivity, the mechanism, the noise scale
//! and the ledger event. Coordinator and sites derive all of it from the
//! plan alone, so a site can check what it is asked before reading its data.
//!
//! # Sensitivity (adjacency: add/remove one site)
//!
//! A site contributes at most `max_rows` rows and every value is clamped to
//! public bounds, so one site changes
//! * a count by at most `max_rows` (L1 = L2 = `max_rows`);
//! * a clamped sum by at most `max_rows · B` with `B = max(|lo|, |hi|)`,
//!   in fixed-point units `max_rows · round(B · 2^f)` (rounding is monotone,
//!   so a rounded clamped value stays within the rounded bounds);
//! * a histogram, whose rows each fall in at most one bin, by L2 at most
//!   `max_rows` (all rows in one bin is the worst case: ‖v‖₂ ≤ ‖v‖₁ = max_rows);
//! * each candidate's count of a `top k` by at most `max_rows`.
//!
//! # Mechanisms
//!
//! * `count`, `sum`: the discrete Laplace mechanism with scale Δ/ε is pure
//!   ε-DP for an integer query of L1 sensitivity Δ (Canonne, Kamath &
//!   Steinke 2020, "The Discrete Gaussian for Differential Privacy",
//!   Proposition 1 / the geometric mechanism of Ghosh, Roughgarden &
//!   Sundararajan 2009).
//! * `mean`: the sum and the count, each with ε/2 (basic composition,
//!   Dwork & Roth 2014, Theorem 3.16): ε in all. The ledger gets one
//!   discrete-Laplace event of ε/2 with count 2.
//! * `histogram`: the discrete Gaussian with σ·Δ₂ per bin, accounted as the
//!   Gaussian mechanism of multiplier σ (the accountants' bound, with the
//!   total-variation slack of the discretisation, see
//!   `tessera_privacy::discretisation`).
//! * `top k`: k rounds of the exponential mechanism, each ε/k on the exact
//!   secure-summed counts with utility sensitivity `max_rows`
//!   (McSherry & Talwar 2007, Theorem 6; k-fold basic composition), every
//!   chosen value removed before the next round. Only the choices are
//!   released, never the counts.

use tessera_privacy::noise::DiscreteLaplace;
use tessera_privacy::{MIN_NOISE_UNITS, PrivacyEvent};

use crate::query::{KindName, Query, QueryKind};

/// Most rows a plan may let one site contribute (2^24): keeps every sum and
/// every noise scale inside the 64-bit sum and the samplers' range.
pub const MAX_ROWS_LIMIT: u64 = 1 << 24;
/// Fixed-point units of the largest clamped value of a sum: values are
/// encoded as `round(x · 2^f)` with `2^f ≈ VALUE_UNITS / B`.
const VALUE_UNITS: f64 = 4096.0;
/// Smallest ε a plan may announce (smaller would need noise beyond the
/// samplers' range for large row caps).
pub const MIN_EPSILON: f64 = 1e-4;
/// Largest ε a plan may announce.
pub const MAX_EPSILON: f64 = 100.0;

/// The noise a query is announced with.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryNoise {
    /// Pure ε of the whole query (count, sum, mean, top k).
    Epsilon(f64),
    /// Gaussian noise multiplier σ: std σ·Δ₂ per coordinate (histogram).
    NoiseMultiplier(f64),
}

/// Why a plan is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The row cap is 0 or above [`MAX_ROWS_LIMIT`].
    #[error("row cap {0} outside 1..={MAX_ROWS_LIMIT}")]
    RowCap(u64),
    /// ε not finite or outside [`MIN_EPSILON`]..=[`MAX_EPSILON`].
    #[error("epsilon {0} outside {MIN_EPSILON}..={MAX_EPSILON}")]
    Epsilon(f64),
    /// σ not finite, or not positive.
    #[error("noise multiplier {0} is not a finite positive number")]
    NoiseMultiplier(f64),
    /// The query kind takes the other form of noise.
    #[error("a {kind} query takes {wants}")]
    WrongNoise {
        /// The query kind.
        kind: KindName,
        /// What it takes.
        wants: &'static str,
    },
    /// Bounds, edges or candidates that are not finite or too large.
    #[error("{0}")]
    Query(String),
}

/// The mechanism a plan releases through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Discrete Laplace on each released value (pure ε).
    DiscreteLaplace,
    /// Discrete Gaussian on each bin.
    DiscreteGaussian,
    /// Exponential mechanism on the exact counts (pure ε).
    Exponential,
}

impl Mechanism {
    /// Name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::DiscreteLaplace => "discrete Laplace",
            Mechanism::DiscreteGaussian => "discrete Gaussian",
            Mechanism::Exponential => "exponential mechanism",
        }
    }
}

/// One query as announced to every site.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryPlan {
    /// The query.
    pub query: Query,
    /// Most rows one site contributes (the row cap).
    pub max_rows: u64,
    /// The noise.
    pub noise: QueryNoise,
}

/// One released part of a site's vector with its noise.
#[derive(Debug, Clone, PartialEq)]
pub struct PartNoise {
    /// Name (`count`, `sum`, `bins`, `counts`).
    pub name: &'static str,
    /// Coordinates in the vector.
    pub range: std::ops::Range<usize>,
    /// Fixed-point units per output unit (the part's values are `x · units`).
    pub units: f64,
    /// L1 (Laplace) or L2 (Gaussian) sensitivity in fixed-point units.
    pub sensitivity_units: f64,
    /// Laplace scale or Gaussian std in fixed-point units (0: no noise added
    /// to the sum — the exponential mechanism's counts).
    pub scale_units: f64,
}

fn check_finite(xs: &[f64], what: &str, limit: f64) -> Result<(), PlanError> {
    if xs.iter().all(|x| x.is_finite() && x.abs() <= limit) {
        Ok(())
    } else {
        Err(PlanError::Query(format!(
            "{what} must be finite numbers of magnitude at most {limit:e}"
        )))
    }
}

/// Fixed-point exponent f of a sum whose clamped values are at most `b`.
fn value_scale(b: f64) -> f64 {
    if b <= 0.0 {
        return 1.0;
    }
    (VALUE_UNITS / b).log2().floor().clamp(-60.0, 60.0).exp2()
}

impl QueryPlan {
    /// Checks the plan: row cap, noise of the right form and size, finite
    /// public bounds, edges and candidates.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.max_rows == 0 || self.max_rows > MAX_ROWS_LIMIT {
            return Err(PlanError::RowCap(self.max_rows));
        }
        let kind = self.query.kind.name();
        match (kind, self.noise) {
            (KindName::Histogram, QueryNoise::NoiseMultiplier(s)) => {
                if !(s.is_finite() && s > 0.0 && s <= 1e6) {
                    return Err(PlanError::NoiseMultiplier(s));
                }
            }
            (KindName::Histogram, QueryNoise::Epsilon(_)) => {
                return Err(PlanError::WrongNoise {
                    kind,
                    wants: "a noise multiplier (discrete Gaussian on the bins)",
                });
            }
            (_, QueryNoise::Epsilon(e)) => {
                if !(e.is_finite() && (MIN_EPSILON..=MAX_EPSILON).contains(&e)) {
                    return Err(PlanError::Epsilon(e));
                }
            }
            (_, QueryNoise::NoiseMultiplier(_)) => {
                return Err(PlanError::WrongNoise {
                    kind,
                    wants: "an epsilon (pure differential privacy)",
                });
            }
        }
        match &self.query.kind {
            QueryKind::Count => {}
            QueryKind::Sum { bounds, .. } | QueryKind::Mean { bounds, .. } => {
                check_finite(&[bounds.lo, bounds.hi], "bounds", 1e12)?;
                if bounds.lo >= bounds.hi {
                    return Err(PlanError::Query("bounds must satisfy low < high".into()));
                }
            }
            QueryKind::Histogram { edges, .. } => {
                check_finite(edges, "bin edges", f64::MAX)?;
                if edges.len() < 2
                    || edges.len() > crate::parse::MAX_LIST
                    || edges.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(PlanError::Query(
                        "bin edges must be 2 to 1000 strictly increasing numbers".into(),
                    ));
                }
            }
            QueryKind::TopK { k, candidates, .. } => {
                check_finite(candidates, "candidates", f64::MAX)?;
                if *k == 0 || candidates.len() <= *k || candidates.len() > crate::parse::MAX_LIST {
                    return Err(PlanError::Query(
                        "top k needs 1 ≤ k < number of candidates ≤ 1000".into(),
                    ));
                }
            }
        }
        // Every noise scale inside the exact samplers' range, so that a
        // plan the sites accept can always be released.
        for p in self.parts() {
            if !(p.scale_units.is_finite() && p.scale_units <= tessera_privacy::noise::MAX_SIGMA) {
                return Err(PlanError::Query(format!(
                    "the {} noise ({:e} fixed-point units) is beyond the samplers' range: \
                     lower the row cap or raise ε",
                    p.name, p.scale_units
                )));
            }
        }
        if let Some(f) = &self.query.filter {
            fn finite(f: &crate::query::Filter) -> bool {
                use crate::query::Filter::*;
                match f {
                    Cmp { value, .. } => value.is_finite(),
                    And(a, b) | Or(a, b) => finite(a) && finite(b),
                    Not(a) => finite(a),
                }
            }
            if !finite(f) {
                return Err(PlanError::Query("filter constants must be finite".into()));
            }
        }
        Ok(())
    }

    /// The mechanism of the query's kind.
    pub fn mechanism(&self) -> Mechanism {
        match self.query.kind {
            QueryKind::Count | QueryKind::Sum { .. } | QueryKind::Mean { .. } => {
                Mechanism::DiscreteLaplace
            }
            QueryKind::Histogram { .. } => Mechanism::DiscreteGaussian,
            QueryKind::TopK { .. } => Mechanism::Exponential,
        }
    }

    /// Length of a site's vector.
    pub fn dim(&self) -> usize {
        match &self.query.kind {
            QueryKind::Count | QueryKind::Sum { .. } => 1,
            QueryKind::Mean { .. } => 2,
            QueryKind::Histogram { edges, .. } => edges.len() - 1,
            QueryKind::TopK { candidates, .. } => candidates.len(),
        }
    }

    fn epsilon_of(&self) -> f64 {
        match self.noise {
            QueryNoise::Epsilon(e) => e,
            QueryNoise::NoiseMultiplier(_) => 0.0,
        }
    }

    /// Fixed-point units per output unit of a histogram's bins: a power of
    /// two making the noise std at least `MIN_NOISE_UNITS` integer units, so
    /// that the discretisation's total-variation bound stays negligible.
    fn histogram_units(&self, sigma: f64) -> f64 {
        let std = sigma * self.max_rows as f64;
        let mut units = 1.0;
        while std * units < MIN_NOISE_UNITS && units < 2f64.powi(40) {
            units *= 2.0;
        }
        units
    }

    /// The parts of a site's vector, their units, sensitivities and noise.
    /// Call on a validated plan.
    pub fn parts(&self) -> Vec<PartNoise> {
        let rows = self.max_rows as f64;
        let eps = self.epsilon_of();
        let laplace = |name, range, units: f64, sens: f64, eps: f64| PartNoise {
            name,
            range,
            units,
            sensitivity_units: sens,
            scale_units: DiscreteLaplace::scale_for(eps, sens).unwrap_or(f64::INFINITY),
        };
        match &self.query.kind {
            QueryKind::Count => vec![laplace("count", 0..1, 1.0, rows, eps)],
            QueryKind::Sum { bounds, .. } => {
                let u = value_scale(bounds.max_abs());
                let sens = rows * (bounds.max_abs() * u).round();
                vec![laplace("sum", 0..1, u, sens.max(1.0), eps)]
            }
            QueryKind::Mean { bounds, .. } => {
                let u = value_scale(bounds.max_abs());
                let sens = rows * (bounds.max_abs() * u).round();
                vec![
                    laplace("sum", 0..1, u, sens.max(1.0), eps / 2.0),
                    laplace("count", 1..2, 1.0, rows, eps / 2.0),
                ]
            }
            QueryKind::Histogram { edges, .. } => {
                let sigma = match self.noise {
                    QueryNoise::NoiseMultiplier(s) => s,
                    QueryNoise::Epsilon(_) => 0.0,
                };
                let u = self.histogram_units(sigma);
                vec![PartNoise {
                    name: "bins",
                    range: 0..edges.len() - 1,
                    units: u,
                    sensitivity_units: rows * u,
                    scale_units: sigma * rows * u,
                }]
            }
            QueryKind::TopK { candidates, .. } => vec![PartNoise {
                name: "counts",
                range: 0..candidates.len(),
                units: 1.0,
                sensitivity_units: rows,
                scale_units: 0.0,
            }],
        }
    }

    /// The plan's noise relative to its sensitivity, per released value, as
    /// a site's floor compares it: Laplace scale / Δ₁ = 1/ε of the value
    /// (2/ε for a mean's two values), Gaussian σ, and for `top k` the
    /// equivalent Gumbel scale of report-noisy-max / Δ = 2k/ε.
    pub fn noise_multiplier(&self) -> f64 {
        let eps = self.epsilon_of();
        match (&self.query.kind, self.noise) {
            (_, QueryNoise::NoiseMultiplier(s)) => s,
            (QueryKind::Mean { .. }, _) => 2.0 / eps,
            (QueryKind::TopK { k, .. }, _) => 2.0 * *k as f64 / eps,
            _ => 1.0 / eps,
        }
    }

    /// The ledger event of one release of this plan.
    pub fn event(&self) -> PrivacyEvent {
        let eps = self.epsilon_of();
        match (&self.query.kind, self.noise) {
            (QueryKind::Histogram { .. }, QueryNoise::NoiseMultiplier(sigma)) => {
                let tv: f64 = self
                    .parts()
                    .iter()
                    .map(|p| {
                        tessera_privacy::release_tv(p.scale_units, p.range.len() as u64)
                            .unwrap_or(1.0)
                    })
                    .sum();
                PrivacyEvent::gaussian(sigma, 1.0, 1).with_tv_slack(tv)
            }
            (QueryKind::Mean { .. }, _) => PrivacyEvent::DiscreteLaplace {
                epsilon: eps / 2.0,
                count: 2,
            },
            (QueryKind::TopK { k, .. }, _) => PrivacyEvent::Exponential {
                epsilon: eps / *k as f64,
                count: *k as u32,
            },
            _ => PrivacyEvent::DiscreteLaplace {
                epsilon: eps,
                count: 1,
            },
        }
    }

    /// (ε, δ) of one release at the federation's `delta`: the pure ε for
    /// the Laplace and exponential kinds (δ = 0), the accountant's ε at
    /// `delta` for a histogram.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), tessera_privacy::Error> {
        let event = self.event();
        match event {
            // A query's plan only makes the kinds above; a distributed
            // event would be accounted like the Gaussian.
            PrivacyEvent::Gaussian { .. } | PrivacyEvent::DistributedDiscreteGaussian { .. } => {
                let r = tessera_privacy::epsilon(
                    &[event],
                    delta,
                    tessera_privacy::AccountantKind::Best,
                )?;
                Ok((r.epsilon, delta))
            }
            PrivacyEvent::DiscreteLaplace { epsilon, count }
            | PrivacyEvent::Exponential { epsilon, count } => Ok((epsilon * f64::from(count), 0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_query;

    fn plan(q: &str, rows: u64, noise: QueryNoise) -> QueryPlan {
        QueryPlan {
            query: parse_query(q).unwrap(),
            max_rows: rows,
            noise,
        }
    }

    #[test]
    fn validation_refuses_bad_plans() {
        let e = QueryNoise::Epsilon(1.0);
        assert!(plan("count", 100, e).validate().is_ok());
        assert_eq!(plan("count", 0, e).validate(), Err(PlanError::RowCap(0)));
        assert!(plan("count", MAX_ROWS_LIMIT + 1, e).validate().is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9, 1e9] {
            assert!(
                plan("count", 10, QueryNoise::Epsilon(bad))
                    .validate()
                    .is_err()
            );
            assert!(
                plan(
                    "histogram a edges [0, 1]",
                    10,
                    QueryNoise::NoiseMultiplier(bad)
                )
                .validate()
                .is_err()
                    || bad == 1e-9
            );
        }
        assert!(matches!(
            plan("histogram a edges [0, 1]", 10, e).validate(),
            Err(PlanError::WrongNoise { .. })
        ));
        assert!(matches!(
            plan("count", 10, QueryNoise::NoiseMultiplier(1.0)).validate(),
            Err(PlanError::WrongNoise { .. })
        ));
        let mut p = plan("sum a in [0, 1]", 10, e);
        if let QueryKind::Sum { bounds, .. } = &mut p.query.kind {
            bounds.hi = f64::NAN;
        }
        assert!(p.validate().is_err());
        let mut p = plan("count where a > 1", 10, e);
        p.query.filter = Some(crate::query::Filter::Cmp {
            column: "a".into(),
            op: crate::query::CmpOp::Gt,
            value: f64::INFINITY,
        });
        assert!(p.validate().is_err());
        // Noise beyond the samplers' range is refused up front.
        let huge = plan(
            "sum a in [0, 1e9]",
            MAX_ROWS_LIMIT,
            QueryNoise::Epsilon(MIN_EPSILON),
        );
        assert!(matches!(huge.validate(), Err(PlanError::Query(m)) if m.contains("range")));
        assert!(
            plan("sum a in [0, 1e9]", 1000, QueryNoise::Epsilon(1.0))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn events_and_epsilons_follow_the_kind() {
        let e = QueryNoise::Epsilon(0.8);
        assert_eq!(
            plan("count", 50, e).event(),
            PrivacyEvent::DiscreteLaplace {
                epsilon: 0.8,
                count: 1
            }
        );
        assert_eq!(
            plan("mean a in [0, 1]", 50, e).event(),
            PrivacyEvent::DiscreteLaplace {
                epsilon: 0.4,
                count: 2
            }
        );
        assert_eq!(
            plan("top 2 a among [1, 2, 3]", 50, e).event(),
            PrivacyEvent::Exponential {
                epsilon: 0.4,
                count: 2
            }
        );
        for q in ["count", "mean a in [0, 1]", "top 2 a among [1, 2, 3]"] {
            let (eps, delta) = plan(q, 50, e).epsilon(1e-5).unwrap();
            assert!((eps - 0.8).abs() < 1e-12 && delta == 0.0, "{q}");
        }
        let h = plan(
            "histogram a edges [0, 1, 2]",
            50,
            QueryNoise::NoiseMultiplier(4.0),
        );
        assert!(h.event().tv_slack() > 0.0 && h.event().tv_slack() < 1e-9);
        let (eps, _) = h.epsilon(1e-5).unwrap();
        assert!(eps > 0.5 && eps < 2.0, "{eps}");
    }

    #[test]
    fn parts_carry_the_sensitivity() {
        let p = plan("count", 300, QueryNoise::Epsilon(0.5));
        let parts = p.parts();
        assert_eq!(parts[0].sensitivity_units, 300.0);
        assert!((parts[0].scale_units - 600.0).abs() < 1e-9);
        let p = plan("sum a in [-3, 600]", 10, QueryNoise::Epsilon(1.0));
        let part = &p.parts()[0];
        assert!(part.units * 600.0 <= VALUE_UNITS && part.units * 600.0 > VALUE_UNITS / 2.0);
        assert_eq!(part.sensitivity_units, 10.0 * (600.0 * part.units).round());
        let h = plan(
            "histogram a edges [0, 1, 2]",
            3,
            QueryNoise::NoiseMultiplier(1.0),
        );
        assert!(h.parts()[0].scale_units >= MIN_NOISE_UNITS);
        assert_eq!(h.dim(), 2);
        assert_eq!(
            plan("mean a in [0, 1]", 3, QueryNoise::Epsilon(1.0)).dim(),
            2
        );
    }
}
