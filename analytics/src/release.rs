//! The coordinator's side of a query: noise on the secure sum, drawn from a
//! cryptographically secure RNG, then decoding into the answer. The answer
//! comes sealed: it is opened only after the caller has written its ledger
//! event ([`Sealed::open_after`]), so nothing is shown before it is counted.

use rand_core::CryptoRng;
use tessera_privacy::noise::DiscreteLaplace;
use tessera_privacy::{DiscreteGaussian, PrivacyEvent, exponential_mechanism};

use crate::plan::{Mechanism, QueryPlan};
use crate::query::QueryKind;

/// The answer of a query.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// A noised count.
    Count {
        /// The value.
        value: f64,
    },
    /// A noised clamped sum.
    Sum {
        /// The value.
        value: f64,
    },
    /// Noised sum / noised count.
    Mean {
        /// The mean (None when the noised count is below 1).
        value: Option<f64>,
        /// Its standard error from the noise (delta method), None with the value.
        std_error: Option<f64>,
        /// The noised clamped sum.
        sum: f64,
        /// The noised count of rows with a value.
        count: f64,
    },
    /// Noised bin counts.
    Histogram {
        /// The bin edges.
        edges: Vec<f64>,
        /// One noised count per bin.
        counts: Vec<f64>,
    },
    /// The chosen values, most likely first.
    TopK {
        /// The chosen candidates, in the order chosen.
        chosen: Vec<f64>,
    },
}

impl Answer {
    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            Answer::Count { value } | Answer::Sum { value } => format!("{value}"),
            Answer::Mean {
                value: Some(v),
                std_error: Some(se),
                ..
            } => format!("{v:.4} ± {se:.4} (standard error from the noise)"),
            Answer::Mean { sum, count, .. } => {
                format!("no mean: the noised count {count} is below 1 (noised sum {sum})")
            }
            Answer::Histogram { edges, counts } => edges
                .windows(2)
                .zip(counts)
                .enumerate()
                .map(|(i, (w, c))| {
                    let close = if i + 2 == edges.len() { "]" } else { ")" };
                    format!("[{}, {}{close}: {c:.1}", w[0], w[1])
                })
                .collect::<Vec<_>>()
                .join("; "),
            Answer::TopK { chosen } => chosen
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The noise of one released part, in the answer's units.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NoiseReport {
    /// Which part (`count`, `sum`, `bins`, `counts`).
    pub part: String,
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Laplace scale b, Gaussian σ, or for the exponential mechanism the
    /// scale 2Δ/ε of the Gumbel noise of the equivalent report-noisy-max.
    pub scale: f64,
    /// Standard deviation of that noise.
    pub std: f64,
}

/// A released query.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    /// The query's canonical text.
    pub query: String,
    /// The answer.
    pub answer: Answer,
    /// The noise of each part.
    pub noise: Vec<NoiseReport>,
    /// The ledger event written before the answer was opened.
    pub event: PrivacyEvent,
    /// ε of this release alone.
    pub epsilon: f64,
    /// δ of `epsilon` (0 for pure ε).
    pub delta: f64,
    /// Sites whose contribution is in the sum.
    pub contributors: usize,
}

/// A noised answer not yet shown: its event must be recorded first.
#[derive(Debug)]
pub struct Sealed(Release);

impl Sealed {
    /// The event to record.
    pub fn event(&self) -> &PrivacyEvent {
        &self.0.event
    }

    /// Records the event with `record` (durably, in the caller's ledger)
    /// and only then returns the release; a failed record keeps it sealed.
    pub fn open_after<E>(
        self,
        record: impl FnOnce(&PrivacyEvent) -> Result<(), E>,
    ) -> Result<Release, E> {
        record(&self.0.event)?;
        Ok(self.0)
    }
}

/// Why a sum cannot be released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The plan is invalid.
    #[error("invalid plan: {0}")]
    Plan(#[from] crate::plan::PlanError),
    /// The sum has the wrong length.
    #[error("a sum of {got} values, the plan's vector has {want}")]
    Dimension {
        /// Received.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// No site contributed.
    #[error("no site contributed to the sum")]
    NoContributors,
    /// The noise could not be drawn or accounted.
    #[error("noise: {0}")]
    Noise(#[from] tessera_privacy::Error),
}

/// Variance of the discrete Laplace distribution `P(x) ∝ exp(-|x|/b)`:
/// `2p/(1-p)²` with `p = e^{-1/b}` (Canonne, Kamath & Steinke 2020, §2.2;
/// it is the difference of two geometric variables of parameter 1 − p).
pub fn discrete_laplace_variance(b: f64) -> f64 {
    let p = (-1.0 / b).exp();
    2.0 * p / ((1.0 - p) * (1.0 - p))
}

/// Adds the plan's noise to the secure sum (residues modulo 2^64 of the
/// sites' integer vectors) and decodes the answer, sealed until its event
/// is recorded. `delta` is the federation's δ (for a histogram's ε).
pub fn release<R: CryptoRng + ?Sized>(
    plan: &QueryPlan,
    sum: &[u64],
    contributors: usize,
    delta: f64,
    rng: &mut R,
) -> Result<Sealed, ReleaseError> {
    plan.validate()?;
    if sum.len() != plan.dim() {
        return Err(ReleaseError::Dimension {
            got: sum.len(),
            want: plan.dim(),
        });
    }
    if contributors == 0 {
        return Err(ReleaseError::NoContributors);
    }
    let (epsilon, delta) = plan.epsilon(delta)?;
    let exact: Vec<i64> = sum.iter().map(|&x| x as i64).collect();
    let mut noise = Vec::new();
    let mut values = vec![0f64; exact.len()];
    for p in plan.parts() {
        let (mechanism, var_units) = match plan.mechanism() {
            Mechanism::DiscreteLaplace => {
                let l = DiscreteLaplace::new(p.scale_units)?;
                for i in p.range.clone() {
                    values[i] = exact[i].saturating_add(l.sample(rng)) as f64 / p.units;
                }
                (
                    Mechanism::DiscreteLaplace,
                    discrete_laplace_variance(p.scale_units),
                )
            }
            Mechanism::DiscreteGaussian => {
                let g = DiscreteGaussian::new(p.scale_units)?;
                for i in p.range.clone() {
                    values[i] = exact[i].saturating_add(g.sample(rng)) as f64 / p.units;
                }
                (Mechanism::DiscreteGaussian, p.scale_units * p.scale_units)
            }
            Mechanism::Exponential => {
                for i in p.range.clone() {
                    values[i] = exact[i] as f64;
                }
                (Mechanism::Exponential, 0.0)
            }
        };
        let (scale, std) = match mechanism {
            Mechanism::Exponential => {
                // Report-noisy-max with Gumbel noise of scale 2Δ/ε per
                // selection is the exponential mechanism (Durfee & Rogers
                // 2019, Lemma 4.2); noise_multiplier() is 2/ε per selection.
                let gumbel = p.sensitivity_units * plan.noise_multiplier();
                (gumbel, gumbel * std::f64::consts::PI / 6f64.sqrt())
            }
            _ => (p.scale_units / p.units, var_units.sqrt() / p.units),
        };
        noise.push(NoiseReport {
            part: p.name.to_string(),
            mechanism,
            scale,
            std,
        });
    }
    let answer = match &plan.query.kind {
        QueryKind::Count => Answer::Count { value: values[0] },
        QueryKind::Sum { .. } => Answer::Sum { value: values[0] },
        QueryKind::Mean { .. } => {
            let (sum, count) = (values[0], values[1]);
            let (var_s, var_c) = (noise[0].std.powi(2), noise[1].std.powi(2));
            if count >= 1.0 {
                let mean = sum / count;
                // Delta method for a ratio: Var(S/N) ≈ (Var S + m² Var N) / N².
                let se = (var_s + mean * mean * var_c).sqrt() / count;
                Answer::Mean {
                    value: Some(mean),
                    std_error: Some(se),
                    sum,
                    count,
                }
            } else {
                Answer::Mean {
                    value: None,
                    std_error: None,
                    sum,
                    count,
                }
            }
        }
        QueryKind::Histogram { edges, .. } => Answer::Histogram {
            edges: edges.clone(),
            counts: values,
        },
        QueryKind::TopK { k, candidates, .. } => {
            let eps_each = epsilon / *k as f64;
            let mut left: Vec<usize> = (0..candidates.len()).collect();
            let mut chosen = Vec::with_capacity(*k);
            for _ in 0..*k {
                let scores: Vec<f64> = left.iter().map(|&i| values[i]).collect();
                let pick = exponential_mechanism(&scores, eps_each, plan.max_rows as f64, rng)?;
                let i = left.remove(pick);
                chosen.push(candidates[i]);
            }
            Answer::TopK { chosen }
        }
    };
    Ok(Sealed(Release {
        query: plan.query.to_string(),
        answer,
        noise,
        event: plan.event(),
        epsilon,
        delta,
        contributors,
    }))
}
