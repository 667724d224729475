//! Federated evaluation: the vector of sums one site contributes for its held-out rows,
//! with a per-site L2 bound, and the global metrics decoded from the (noisy) sum.
//!
//! Each row adds a vector `r` with every element in `[−1, 1]`, weighted by
//! `w = min(1, max_rows / n)` so that a site's total weight is at most `max_rows = M`;
//! a site's contribution `Σ w·r` then has L2 norm at most `M · B`, where `B` bounds a
//! row's norm ([`EvalLayout::row_bound`]). That is the sensitivity of the sum when a site
//! is added or removed, which calibrates its Gaussian noise under DP.
//!
//! Layout, classification with `k` classes (binary: `k = 2`, class 1 the positive one):
//! `[rows, Σ loss/L, confusion (k × k, true class major), hist⁺ (b), hist⁻ (b)]`, the
//! two score histograms (binary only) counting positives and negatives by `b` equal bins
//! of P(y = 1). The loss is the cross-entropy with probabilities clipped at
//! `e^−L` ([`LOSS_CAP`] `= L`), so each row's loss is in `[0, L]`. `B = 2` (binary) or
//! `√3`.
//!
//! Regression with a public target range `[lo, hi]` (centre `c`, half-width `h`): the
//! prediction is clamped to the range, `e = ŷ − y`, `z = (y − c)/h`, and the row adds
//! `[1, (e/2h)², |e|/2h, z, z²]`; `B = √5`.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::model::Objective;

/// Cross-entropy cap `L` per row: probabilities are clipped at `e^−L = 10⁻⁴`.
pub const LOSS_CAP: f64 = 9.210_340_371_976_184;
/// Score bins of a binary task's histograms when not configured.
pub const DEFAULT_BINS: u32 = 100;
/// Least and most score bins an evaluation may use.
pub const BINS_RANGE: std::ops::RangeInclusive<u32> = 10..=10_000;

/// The public terms of an evaluation aggregation, announced to every site.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalTerms {
    /// Most total row weight one site contributes (`M`).
    pub max_rows: f64,
    /// Score bins of a binary task's histograms.
    pub bins: u32,
    /// Regression: the public range of the target.
    pub target_range: Option<(f64, f64)>,
}

/// The shape of an evaluation vector for a task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EvalLayout {
    /// Classification with `classes` classes; `bins` score bins when binary (else 0).
    Classification {
        /// Number of classes (2 for binary).
        classes: usize,
        /// Score bins (binary only; 0 otherwise).
        bins: usize,
    },
    /// Regression over the public target range.
    Regression {
        /// Lower end of the range.
        lo: f64,
        /// Upper end of the range.
        hi: f64,
    },
}

impl EvalLayout {
    /// The layout for an objective and announced terms; `None` when the terms do not
    /// fit it (no target range for a regression, bins out of [`BINS_RANGE`] for a binary
    /// task, a non-finite or empty range, `max_rows` below 1).
    pub fn new(objective: Objective, terms: &EvalTerms) -> Option<Self> {
        if !(terms.max_rows.is_finite() && terms.max_rows >= 1.0) {
            return None;
        }
        match objective {
            Objective::Binary => {
                BINS_RANGE
                    .contains(&terms.bins)
                    .then_some(EvalLayout::Classification {
                        classes: 2,
                        bins: terms.bins as usize,
                    })
            }
            Objective::Multiclass { classes } => {
                Some(EvalLayout::Classification { classes, bins: 0 })
            }
            Objective::Regression => {
                let (lo, hi) = terms.target_range?;
                (lo.is_finite() && hi.is_finite() && lo < hi)
                    .then_some(EvalLayout::Regression { lo, hi })
            }
        }
    }

    /// Length of the vector.
    pub fn len(&self) -> usize {
        match *self {
            EvalLayout::Classification { classes, bins } => 2 + classes * classes + 2 * bins,
            EvalLayout::Regression { .. } => 5,
        }
    }

    /// Whether the vector is empty (never).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `B`: the largest L2 norm of one row's vector.
    pub fn row_bound(&self) -> f64 {
        match *self {
            EvalLayout::Classification { bins, .. } if bins > 0 => 2.0,
            EvalLayout::Classification { .. } => 3f64.sqrt(),
            EvalLayout::Regression { .. } => 5f64.sqrt(),
        }
    }

    /// L2 sensitivity of the sum over sites: `max_rows · B`.
    pub fn sensitivity(&self, max_rows: f64) -> f64 {
        max_rows * self.row_bound()
    }

    /// A site's contribution for rows with model `outputs` (rows × outputs: probabilities,
    /// or predictions in the target's units) and targets `y` (0/1, class indices, or
    /// values), its rows weighted to at most `max_rows` in all.
    ///
    /// # Panics
    /// If the shapes disagree with each other or the layout.
    pub fn contribution(&self, outputs: &Array2<f64>, y: &Array1<f64>, max_rows: f64) -> Vec<f64> {
        assert_eq!(outputs.nrows(), y.len(), "one output row per label");
        let n = y.len();
        let w = if n as f64 > max_rows {
            max_rows / n as f64
        } else {
            1.0
        };
        let mut v = vec![0.0; self.len()];
        match *self {
            EvalLayout::Classification { classes, bins } => {
                for (row, &yi) in outputs.rows().into_iter().zip(y) {
                    let t = yi as usize;
                    let (pred, p_true, score) =
                        if bins > 0 {
                            let p = row[0].clamp(0.0, 1.0);
                            (usize::from(p >= 0.5), if t == 1 { p } else { 1.0 - p }, p)
                        } else {
                            let best = row.iter().enumerate().fold(
                                (0, f64::NEG_INFINITY),
                                |b, (i, &p)| if p > b.1 { (i, p) } else { b },
                            );
                            (best.0, row[t], 0.0)
                        };
                    let loss = (-p_true.max((-LOSS_CAP).exp()).ln()).clamp(0.0, LOSS_CAP);
                    v[0] += w;
                    v[1] += w * loss / LOSS_CAP;
                    v[2 + t * classes + pred] += w;
                    if bins > 0 {
                        let b = ((score * bins as f64) as usize).min(bins - 1);
                        let base = 2 + classes * classes + if t == 1 { 0 } else { bins };
                        v[base + b] += w;
                    }
                }
            }
            EvalLayout::Regression { lo, hi } => {
                let (c, h) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                for (row, &yi) in outputs.rows().into_iter().zip(y) {
                    let yc = yi.clamp(lo, hi);
                    let e = (row[0].clamp(lo, hi) - yc) / (2.0 * h);
                    let z = (yc - c) / h;
                    for (k, x) in [1.0, e * e, e.abs(), z, z * z].into_iter().enumerate() {
                        v[k] += w * x;
                    }
                }
            }
        }
        v
    }

    /// The global metrics of a summed (possibly noisy) vector: counts are clamped at
    /// zero, ratios of empty classes are left out.
    pub fn metrics(&self, sum: &[f64]) -> EvalMetrics {
        let pos = |x: f64| x.max(0.0);
        let rows = pos(sum[0]);
        let mut m = EvalMetrics {
            rows,
            ..EvalMetrics::default()
        };
        match *self {
            EvalLayout::Classification { classes, bins } => {
                let cell = |t: usize, p: usize| pos(sum[2 + t * classes + p]);
                let total: f64 = (0..classes)
                    .flat_map(|t| (0..classes).map(move |p| (t, p)))
                    .map(|(t, p)| cell(t, p))
                    .sum();
                let correct: f64 = (0..classes).map(|t| cell(t, t)).sum();
                m.recall = (0..classes)
                    .map(|t| {
                        let support: f64 = (0..classes).map(|p| cell(t, p)).sum();
                        (support > 0.0).then(|| cell(t, t) / support)
                    })
                    .collect();
                let known: Vec<f64> = m.recall.iter().flatten().copied().collect();
                if total > 0.0 {
                    m.accuracy = Some(correct / total);
                }
                if !known.is_empty() {
                    m.balanced_accuracy = Some(known.iter().sum::<f64>() / known.len() as f64);
                }
                if rows > 0.0 {
                    m.log_loss = Some((pos(sum[1]) * LOSS_CAP / rows).min(LOSS_CAP));
                }
                if bins > 0 {
                    let base = 2 + classes * classes;
                    let hp: Vec<f64> = sum[base..base + bins].iter().map(|&x| pos(x)).collect();
                    let hn: Vec<f64> = sum[base + bins..base + 2 * bins]
                        .iter()
                        .map(|&x| pos(x))
                        .collect();
                    m.auc = auc_from_histograms(&hp, &hn);
                }
            }
            EvalLayout::Regression { lo, hi } => {
                let (c, h) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                if rows > 0.0 {
                    let sse = pos(sum[1]) * 4.0 * h * h;
                    let sae = pos(sum[2]) * 2.0 * h;
                    let sy = c * rows + h * sum[3];
                    let syy = pos(c * c * rows + 2.0 * c * h * sum[3] + h * h * sum[4]);
                    let sst = syy - sy * sy / rows;
                    m.mse = Some(sse / rows);
                    m.rmse = Some((sse / rows).sqrt());
                    m.mae = Some(sae / rows);
                    m.r2 = (sst > 0.0).then(|| 1.0 - sse / sst);
                }
            }
        }
        m
    }
}

/// ROC AUC from score histograms of positives and negatives over the same bins
/// (ascending scores): the probability that a random positive scores above a random
/// negative, ties (same bin) counting one half. `None` without both classes.
pub fn auc_from_histograms(pos: &[f64], neg: &[f64]) -> Option<f64> {
    let (p, n): (f64, f64) = (pos.iter().sum(), neg.iter().sum());
    if p <= 0.0 || n <= 0.0 {
        return None;
    }
    let mut below = 0.0;
    let mut area = 0.0;
    for (hp, hn) in pos.iter().zip(neg) {
        area += hp * (below + hn / 2.0);
        below += hn;
    }
    Some(area / (p * n))
}

/// Global metrics of a federated evaluation (what the coordinator learns).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Rows evaluated (weighted, noisy under DP).
    pub rows: f64,
    /// Classification: fraction correct.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Classification: mean recall over the classes present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    /// Classification: mean cross-entropy (probabilities clipped at 10⁻⁴).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Classification: recall of each class (None for a class with no rows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recall: Vec<Option<f64>>,
    /// Binary: ROC AUC from the score histograms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    /// Regression: mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Regression: root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regression: R² = 1 − SSE/SST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

impl EvalMetrics {
    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let f = |name: &str, v: Option<f64>| v.map(|x| format!("{name} {x:.4}"));
        [
            Some(format!("rows {:.0}", self.rows)),
            f("accuracy", self.accuracy),
            f("balanced accuracy", self.balanced_accuracy),
            f("log loss", self.log_loss),
            f("AUC", self.auc),
            f("RMSE", self.rmse),
            f("MAE", self.mae),
            f("R²", self.r2),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn terms(bins: u32, range: Option<(f64, f64)>) -> EvalTerms {
        EvalTerms {
            max_rows: 100.0,
            bins,
            target_range: range,
        }
    }

    #[test]
    fn binary_counts_auc_and_bound() {
        let l = EvalLayout::new(Objective::Binary, &terms(10, None)).unwrap();
        assert_eq!(l.len(), 2 + 4 + 20);
        let p = array![[0.9], [0.2], [0.6], [0.4], [0.05]];
        let y = array![1.0, 0.0, 0.0, 1.0, 0.0];
        let v = l.contribution(&p, &y, 100.0);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= l.sensitivity(5.0) + 1e-12);
        let m = l.metrics(&v);
        assert_eq!(m.rows, 5.0);
        assert_eq!(m.accuracy, Some(3.0 / 5.0));
        assert_eq!(m.recall, vec![Some(2.0 / 3.0), Some(0.5)]);
        assert_eq!(m.balanced_accuracy, Some((2.0 / 3.0 + 0.5) / 2.0));
        // Exact AUC: pairs (pos, neg) ordered correctly: 0.9 beats all 3; 0.4 beats 0.2, 0.05.
        assert_eq!(m.auc, Some(5.0 / 6.0));
        let ll = [0.9f64, 0.8, 0.4, 0.4, 0.95]
            .iter()
            .map(|p| -p.ln())
            .sum::<f64>()
            / 5.0;
        assert!((m.log_loss.unwrap() - ll).abs() < 1e-12);
        // Sums of sites are the metrics of the union.
        let a = l.contribution(
            &p.select(ndarray::Axis(0), &[0, 1]),
            &y.select(ndarray::Axis(0), &[0, 1]),
            100.0,
        );
        let b = l.contribution(
            &p.select(ndarray::Axis(0), &[2, 3, 4]),
            &y.select(ndarray::Axis(0), &[2, 3, 4]),
            100.0,
        );
        let s: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(l.metrics(&s), m);
        assert!(EvalLayout::new(Objective::Binary, &terms(5, None)).is_none());
    }

    #[test]
    fn many_rows_are_weighted_to_the_cap() {
        let l = EvalLayout::new(Objective::Multiclass { classes: 3 }, &terms(0, None)).unwrap();
        let n = 500;
        let p = Array2::from_shape_fn((n, 3), |(i, j)| if j == i % 3 { 0.8 } else { 0.1 });
        let y = Array1::from_shape_fn(n, |i| (i % 3) as f64);
        let v = l.contribution(&p, &y, 100.0);
        assert!((v[0] - 100.0).abs() < 1e-9);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= l.sensitivity(100.0));
        assert_eq!(l.metrics(&v).accuracy, Some(1.0));
    }

    #[test]
    fn regression_sums_give_mse_mae_and_r2() {
        let l = EvalLayout::new(Objective::Regression, &terms(0, Some((0.0, 100.0)))).unwrap();
        let pred = array![[10.0], [20.0], [35.0], [120.0]];
        let y = array![12.0, 18.0, 30.0, 90.0];
        let m = l.metrics(&l.contribution(&pred, &y, 100.0));
        // The last prediction is clamped to 100.
        let e = [-2.0f64, 2.0, 5.0, 10.0];
        let sse: f64 = e.iter().map(|x| x * x).sum();
        let mean = 150.0 / 4.0;
        let sst: f64 = [12.0f64, 18.0, 30.0, 90.0]
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        assert!((m.mse.unwrap() - sse / 4.0).abs() < 1e-9);
        assert!((m.mae.unwrap() - 19.0 / 4.0).abs() < 1e-9);
        assert!((m.r2.unwrap() - (1.0 - sse / sst)).abs() < 1e-9);
        assert!(EvalLayout::new(Objective::Regression, &terms(0, None)).is_none());
        assert!(EvalLayout::new(Objective::Regression, &terms(0, Some((1.0, 1.0)))).is_none());
    }

    #[test]
    fn noisy_sums_stay_meaningful() {
        let l = EvalLayout::new(Objective::Binary, &terms(10, None)).unwrap();
        let mut v = vec![-3.0; l.len()];
        v[0] = 10.0;
        let m = l.metrics(&v);
        assert_eq!(m.accuracy, None);
        assert_eq!(m.auc, None);
        assert!(m.summary().contains("rows 10"));
    }
}
