//! Federated statistics: per-feature moments summed across sites, and the preprocessing
//! every site derives from the pooled sum.
//!
//! Each site computes [`LocalStats`] from its own [`Dataset`] and sends
//! [`LocalStats::to_vector`]; the federation sums the vectors (a plain sum, or a secure sum
//! with noise — addition is all it needs) and every site rebuilds the pooled statistics with
//! [`LocalStats::from_vector`] and derives the same [`Preprocessor`]. So all sites impute and
//! standardise identically, and no site reveals its own figures beyond what the sum does.
//!
//! # Bounded contributions (private statistics)
//!
//! With differential privacy at the level of a whole site, each site's contribution must
//! have a bounded L2 norm. [`LocalStats::compute_bounded`] builds it from public
//! [`StatsBounds`]:
//! 1. each value is clipped to the feature's public range `[lo, hi]` and mapped to
//!    `z = (x − c) / r ∈ [−1, 1]` with centre `c = (lo + hi) / 2` and half-range
//!    `r = (hi − lo) / 2`;
//! 2. every row gets the same weight `w = min(1, max_rows / n)`, so the site's total weight
//!    is `min(n, max_rows)`;
//! 3. the vector holds the weighted `rows`, and per feature the weighted `present`, `Σ z`,
//!    `Σ z²` and `missing`.
//!
//! Then `rows ≤ M`, `present + missing = rows`, `|Σ z| ≤ present` and `Σ z² ≤ present`,
//! so the squared norm is at most `M² (1 + 3 d)` and the sensitivity of the sum over sites
//! (add or remove one site) is [`l2_sensitivity`] `= M √(1 + 3d)`. Gaussian noise of standard
//! deviation `σ · l2_sensitivity` on the summed vector makes it `σ`-private like a model
//! update of clip norm `l2_sensitivity`.
//!
//! The pooled (noisy) sum is turned back into a preprocessor with
//! [`Preprocessor::from_pooled_bounded`], which clamps the noisy moments to what values in
//! the range can have and shrinks them towards range scaling as far as the known noise
//! level warrants, so the worst case is plain range scaling ([`Preprocessor::from_bounds`]).
//! Noise relative to signal is roughly `σ √(1 + 3d) / K` for `K` sites of similar size, so
//! with few sites or many features the private statistics are coarse.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::{DataError, Dataset};

/// Per-feature counts and moments of one site (or, after [`LocalStats::add`], of many).
///
/// All fields are `f64` so that the sum can carry fractional weights and noise.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalStats {
    /// Number of rows (total weight).
    pub rows: f64,
    /// Per feature: number of present (non-missing) values.
    pub present: Vec<f64>,
    /// Per feature: sum of present values.
    pub sum: Vec<f64>,
    /// Per feature: sum of squares of present values.
    pub sum_sq: Vec<f64>,
    /// Per feature: number of missing values.
    pub missing: Vec<f64>,
}

impl LocalStats {
    /// All-zero statistics for `n_features` features (the neutral element of [`add`](Self::add)).
    pub fn zeros(n_features: usize) -> Self {
        LocalStats {
            rows: 0.0,
            present: vec![0.0; n_features],
            sum: vec![0.0; n_features],
            sum_sq: vec![0.0; n_features],
            missing: vec![0.0; n_features],
        }
    }

    /// Number of features described.
    pub fn n_features(&self) -> usize {
        self.present.len()
    }

    /// The dataset whose columns are the task's
    /// [statistics columns](crate::TaskSpec::statistics_columns): `ds` itself, or with the
    /// (regression) target appended as a last column when the task standardises it.
    pub fn columns_for(ds: &Dataset, task: &crate::TaskSpec) -> Dataset {
        if !task.standardizes_target() {
            return ds.clone();
        }
        let mut x = ndarray::Array2::zeros((ds.n_rows(), ds.n_features() + 1));
        x.slice_axis_mut(ndarray::Axis(1), ndarray::Slice::from(..ds.n_features()))
            .assign(&ds.x);
        x.column_mut(ds.n_features()).assign(&ds.y);
        let mut features = ds.features.clone();
        features.push(task.label.clone());
        Dataset {
            features,
            x,
            y: ds.y.clone(),
            skipped_rows: ds.skipped_rows,
        }
    }

    /// Exact statistics of a dataset (`NaN` counts as missing).
    pub fn compute(ds: &Dataset) -> Self {
        let d = ds.n_features();
        let mut s = LocalStats::zeros(d);
        s.rows = ds.n_rows() as f64;
        for row in ds.x.rows() {
            for (j, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    s.missing[j] += 1.0;
                } else {
                    s.present[j] += 1.0;
                    s.sum[j] += v;
                    s.sum_sq[j] += v * v;
                }
            }
        }
        s
    }

    /// Bounded statistics for a private sum, in the normalised units described in the
    /// [module docs](self): values clipped to `[lo, hi]` and mapped to `[−1, 1]`, rows
    /// weighted so the site's total weight is at most `max_rows`. The vector's L2 norm is at
    /// most [`l2_sensitivity`]. Convert a pooled sum back with [`StatsBounds::to_raw`] or
    /// [`Preprocessor::from_pooled_bounded`].
    pub fn compute_bounded(ds: &Dataset, bounds: &StatsBounds) -> Result<Self, DataError> {
        let d = ds.n_features();
        bounds.check(d)?;
        let n = ds.n_rows() as f64;
        let w = if n > bounds.max_rows {
            bounds.max_rows / n
        } else {
            1.0
        };
        let mut s = LocalStats::zeros(d);
        s.rows = w * n;
        for row in ds.x.rows() {
            for (j, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    s.missing[j] += w;
                } else {
                    let (c, r) = bounds.centre_radius(j);
                    let z = (v.clamp(bounds.lo[j], bounds.hi[j]) - c) / r;
                    s.present[j] += w;
                    s.sum[j] += w * z;
                    s.sum_sq[j] += w * z * z;
                }
            }
        }
        Ok(s)
    }

    /// Length of the flat vector for `n_features` features: `1 + 4 · n_features`.
    pub fn vector_len(n_features: usize) -> usize {
        1 + 4 * n_features
    }

    /// The flat vector that is summed across sites:
    /// `[rows, present.., sum.., sum_sq.., missing..]`.
    pub fn to_vector(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(Self::vector_len(self.n_features()));
        v.push(self.rows);
        v.extend_from_slice(&self.present);
        v.extend_from_slice(&self.sum);
        v.extend_from_slice(&self.sum_sq);
        v.extend_from_slice(&self.missing);
        v
    }

    /// Inverse of [`to_vector`](Self::to_vector); accepts any finite values (a noisy sum may
    /// hold negative counts). Errors on a wrong length or a non-finite entry.
    pub fn from_vector(v: &[f64], n_features: usize) -> Result<Self, DataError> {
        let expected = Self::vector_len(n_features);
        if v.len() != expected {
            return Err(DataError::InvalidStats(format!(
                "{} values for {n_features} features (expected {expected})",
                v.len()
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(DataError::InvalidStats(format!("entry {i} is not finite")));
        }
        let d = n_features;
        let part = |k: usize| v[1 + k * d..1 + (k + 1) * d].to_vec();
        Ok(LocalStats {
            rows: v[0],
            present: part(0),
            sum: part(1),
            sum_sq: part(2),
            missing: part(3),
        })
    }

    /// Adds another site's statistics (same number of features) into these.
    ///
    /// # Panics
    /// If the feature counts differ (a programming error: all sites share one task).
    pub fn add(&mut self, other: &LocalStats) {
        assert_eq!(
            self.n_features(),
            other.n_features(),
            "statistics of different tasks"
        );
        self.rows += other.rows;
        for (a, b) in [
            (&mut self.present, &other.present),
            (&mut self.sum, &other.sum),
            (&mut self.sum_sq, &other.sum_sq),
            (&mut self.missing, &other.missing),
        ] {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
}

/// Public bounds that make each site's statistics contribution bounded (see the
/// [module docs](self)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsBounds {
    /// Per feature: lower end of the public range.
    pub lo: Vec<f64>,
    /// Per feature: upper end of the public range (`> lo`).
    pub hi: Vec<f64>,
    /// Cap on a site's total row weight (`M`), `> 0`.
    pub max_rows: f64,
}

impl StatsBounds {
    /// Bounds from per-feature `(lo, hi)` ranges and a row cap, validated.
    pub fn new(ranges: &[(f64, f64)], max_rows: f64) -> Result<Self, DataError> {
        let b = StatsBounds {
            lo: ranges.iter().map(|r| r.0).collect(),
            hi: ranges.iter().map(|r| r.1).collect(),
            max_rows,
        };
        b.check(ranges.len())?;
        Ok(b)
    }

    /// Checks the bounds fit `n_features` features: finite, `lo < hi`, `max_rows > 0`.
    pub fn check(&self, n_features: usize) -> Result<(), DataError> {
        if self.lo.len() != n_features || self.hi.len() != n_features {
            return Err(DataError::InvalidBounds(format!(
                "{} lower and {} upper bounds for {n_features} features",
                self.lo.len(),
                self.hi.len()
            )));
        }
        if !(self.max_rows.is_finite() && self.max_rows > 0.0) {
            return Err(DataError::InvalidBounds(format!(
                "max_rows must be a positive number, got {}",
                self.max_rows
            )));
        }
        for (j, (lo, hi)) in self.lo.iter().zip(&self.hi).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(DataError::InvalidBounds(format!(
                    "feature {j}: range [{lo}, {hi}] is not a finite interval with lo < hi"
                )));
            }
        }
        Ok(())
    }

    fn centre_radius(&self, j: usize) -> (f64, f64) {
        (
            (self.lo[j] + self.hi[j]) / 2.0,
            (self.hi[j] - self.lo[j]) / 2.0,
        )
    }

    /// Converts pooled statistics in normalised units (a sum of
    /// [`LocalStats::compute_bounded`] vectors, possibly noisy) back to the features' own
    /// units. Exact for exact sums: `Σx = c·present + r·Σz`, `Σx² = c²·present + 2cr·Σz + r²·Σz²`.
    pub fn to_raw(&self, pooled: &LocalStats) -> Result<LocalStats, DataError> {
        self.check(pooled.n_features())?;
        let mut out = pooled.clone();
        for j in 0..pooled.n_features() {
            let (c, r) = self.centre_radius(j);
            let (p, sz, szz) = (pooled.present[j], pooled.sum[j], pooled.sum_sq[j]);
            out.sum[j] = c * p + r * sz;
            out.sum_sq[j] = c * c * p + 2.0 * c * r * sz + r * r * szz;
        }
        Ok(out)
    }
}

/// L2 sensitivity of the sum of [`LocalStats::compute_bounded`] vectors when one site is
/// added or removed: `max_rows · √(1 + 3 · n_features)`.
pub fn l2_sensitivity(bounds: &StatsBounds, n_features: usize) -> f64 {
    bounds.max_rows * (1.0 + 3.0 * n_features as f64).sqrt()
}

/// Relative threshold under which a standard deviation counts as zero.
const STD_EPS: f64 = 1e-9;

/// The pooled mean and standard deviation of a regression target, with which it is
/// standardised for training (`(y − mean) / std`) and predictions are turned back
/// (`z · std + mean`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetScale {
    /// Pooled mean of the target.
    pub mean: f64,
    /// Pooled standard deviation of the target (positive).
    pub std: f64,
}

impl TargetScale {
    /// A target value in standardised units.
    pub fn forward(&self, y: f64) -> f64 {
        (y - self.mean) / self.std
    }

    /// A standardised prediction in the target's units.
    pub fn inverse(&self, z: f64) -> f64 {
        z * self.std + self.mean
    }
}

/// How every site turns raw features into model inputs, derived from pooled statistics.
///
/// [`transform`](Self::transform) maps a present value `x` of feature `i` to
/// `(x − mean[i]) / std[i]` and a missing value to `0` — mean imputation, which is `0` after
/// standardisation — and, for each feature with `indicator[i]`, appends a column that is 1
/// where the value was missing and 0 elsewhere (after all standardised columns, in feature
/// order).
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    /// Per feature: mean of the present values.
    pub mean: Vec<f64>,
    /// Per feature: standard deviation of the present values (1 when it is zero or unknown).
    pub std: Vec<f64>,
    /// Per feature: whether a missing-value indicator column is appended.
    pub indicator: Vec<bool>,
    /// A regression target's standardisation, when the task asks for it.
    pub target: Option<TargetScale>,
}

impl Preprocessor {
    /// Preprocessing derived for the task's [statistics columns](crate::TaskSpec::statistics_columns):
    /// when they end with a standardised regression target, that last column becomes
    /// [`Preprocessor::target`] (its missing-value indicator is dropped: rows without a
    /// label are never loaded). Otherwise `self` unchanged.
    pub fn split_target(mut self, task: &crate::TaskSpec) -> Self {
        if task.standardizes_target() && self.mean.len() == task.features.len() + 1 {
            let mean = self.mean.pop().expect("one more column than features");
            let std = self.std.pop().expect("one more column than features");
            self.indicator.pop();
            self.target = Some(TargetScale { mean, std });
        }
        self
    }

    /// The training targets of `y` under this preprocessing: standardised for a regression
    /// target with a [`TargetScale`], unchanged otherwise.
    pub fn transform_target(&self, y: &ndarray::Array1<f64>) -> ndarray::Array1<f64> {
        match &self.target {
            Some(t) => y.mapv(|v| t.forward(v)),
            None => y.clone(),
        }
    }

    /// Derives the preprocessing from pooled statistics (exact or noisy).
    ///
    /// `mean = sum / present`; `std = √max(0, sum_sq / present − mean²)`, replaced by 1 when
    /// it is (numerically) zero; `indicator = missing > 0`. Noisy sums are tolerated: a
    /// feature whose present count is below 1 gets mean 0 and std 1 (no usable information),
    /// and negative variances clamp to zero (hence std 1). Non-finite entries are an error.
    pub fn from_pooled(stats: &LocalStats) -> Result<Self, DataError> {
        let d = stats.n_features();
        if [&stats.sum, &stats.sum_sq, &stats.missing]
            .iter()
            .any(|v| v.len() != d)
        {
            return Err(DataError::InvalidStats(
                "per-feature vectors of different lengths".into(),
            ));
        }
        LocalStats::from_vector(&stats.to_vector(), d)?;
        let mut p = Preprocessor {
            mean: vec![0.0; d],
            std: vec![1.0; d],
            indicator: vec![false; d],
            target: None,
        };
        for j in 0..d {
            p.indicator[j] = stats.missing[j] > 0.0;
            let n = stats.present[j];
            if n < 1.0 {
                continue;
            }
            let mean = stats.sum[j] / n;
            let var = (stats.sum_sq[j] / n - mean * mean).max(0.0);
            let std = var.sqrt();
            p.mean[j] = mean;
            p.std[j] = if std > STD_EPS * mean.abs().max(1.0) {
                std
            } else {
                1.0
            };
        }
        Ok(p)
    }

    /// Derives the preprocessing from a pooled, possibly noisy, sum of
    /// [`LocalStats::compute_bounded`] vectors; `noise_std` is the standard deviation of the
    /// Gaussian noise added to each entry of the sum (0 for an exact sum).
    ///
    /// Works in the normalised units `z ∈ [−1, 1]`. Per feature, the noisy mean and second
    /// moment (`Σz / present`, `Σz² / present`) are clamped to what values in `[−1, 1]` can
    /// have, then shrunk towards the public prior — a value uniform on the range (mean 0,
    /// variance 1/3) — with weight `w = τ² / (τ² + (noise_std / present)²)`, `τ² = 1/3`:
    /// `mean_z = w · m`, `var_z = w · v + (1 − w) / 3`. With no noise this is the exact pooled
    /// mean and variance of the clipped values; when the noise swamps the counts it becomes
    /// range scaling ([`Preprocessor::from_bounds`]). A feature with fewer than one present
    /// value, or zero variance, gets the prior. Indicators: pooled missing count above
    /// three noise standard deviations (`> 0` without noise).
    pub fn from_pooled_bounded(
        pooled: &LocalStats,
        bounds: &StatsBounds,
        noise_std: f64,
    ) -> Result<Self, DataError> {
        let d = pooled.n_features();
        bounds.check(d)?;
        LocalStats::from_vector(&pooled.to_vector(), d)?;
        if !(noise_std.is_finite() && noise_std >= 0.0) {
            return Err(DataError::InvalidStats(format!(
                "noise std {noise_std} is not a finite non-negative number"
            )));
        }
        const PRIOR_VAR: f64 = 1.0 / 3.0;
        let mut p = Preprocessor::from_bounds(bounds);
        for j in 0..d {
            // A noisy count decides the model's shape: only a count well
            // above the noise says that the feature really has missing values.
            p.indicator[j] = pooled.missing[j] > 3.0 * noise_std;
            let n = pooled.present[j];
            if n < 1.0 {
                continue;
            }
            let (c, r) = bounds.centre_radius(j);
            let m = (pooled.sum[j] / n).clamp(-1.0, 1.0);
            let m2 = (pooled.sum_sq[j] / n).clamp(0.0, 1.0);
            let v = (m2 - m * m).max(0.0);
            let s2 = (noise_std / n).powi(2);
            let w = PRIOR_VAR / (PRIOR_VAR + s2);
            let var = w * v + (1.0 - w) * PRIOR_VAR;
            p.mean[j] = c + r * w * m;
            if var.sqrt() > STD_EPS {
                p.std[j] = r * var.sqrt();
            }
        }
        Ok(p)
    }

    /// Range scaling from public bounds alone, using no data: mean = centre of the range,
    /// std = half-range / √3 (the std of a value uniform on the range), an indicator column
    /// for every feature (a column that stays zero costs nothing).
    pub fn from_bounds(bounds: &StatsBounds) -> Self {
        let d = bounds.lo.len().min(bounds.hi.len());
        let (mean, std) = (0..d)
            .map(|j| {
                let (c, r) = bounds.centre_radius(j);
                (c, r / 3f64.sqrt())
            })
            .unzip();
        Preprocessor {
            mean,
            std,
            indicator: vec![true; d],
            target: None,
        }
    }

    /// Number of raw features expected by [`transform`](Self::transform).
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// Number of model inputs produced: features plus indicator columns.
    pub fn output_dim(&self) -> usize {
        self.mean.len() + self.indicator.iter().filter(|b| **b).count()
    }

    /// Imputes, standardises and appends indicator columns (see the type docs).
    ///
    /// # Panics
    /// If `x` does not have [`n_features`](Self::n_features) columns; callers check the
    /// dataset's features against the task first (as [`crate::evaluate`] does).
    pub fn transform(&self, x: &Array2<f64>) -> Array2<f64> {
        let d = self.n_features();
        assert_eq!(x.ncols(), d, "preprocessor expects {d} feature columns");
        let ind: Vec<usize> = (0..d).filter(|&j| self.indicator[j]).collect();
        let mut out = Array2::zeros((x.nrows(), self.output_dim()));
        for (row, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
            for j in 0..d {
                let v = row[j];
                if !v.is_nan() {
                    o[j] = (v - self.mean[j]) / self.std[j];
                }
            }
            for (k, &j) in ind.iter().enumerate() {
                if row[j].is_nan() {
                    o[d + k] = 1.0;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
