//! The kinds of aggregation a federation runs, each describing itself: the
//! parts of its vector (length, bound, noise), the σ and sensitivity it is
//! announced and accounted with, and what its released sum does. Adding a
//! kind is one type implementing [`RoundSpec`] and a line in [`spec_for`]
//! (federated evaluation, [`Evaluation`], was added that way).

mod analytics;
mod evaluation;

use tessera_model::round::AdaptiveTerms;
use tessera_model::{EvalMetrics, LocalStats, ModelFile, Preprocessor, RoundKind};
use tracing::{debug, info};

pub use analytics::Analytics;
pub use evaluation::Evaluation;

use super::noise::NoisedPart;
use super::optimizer::ServerOptimizer;
use super::policy::FederationPolicy;
use crate::budget;

/// One contiguous piece of a round's vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Name, for logs.
    pub name: &'static str,
    /// Number of coordinates.
    pub len: usize,
    /// Bound on |sum| of a coordinate over the cohort, noise included.
    pub max_abs_sum: f64,
    /// Noise standard deviation in real units (0: no noise).
    pub noise_std: f64,
    /// Must be encoded exactly (no stochastic rounding).
    pub exact: bool,
}

/// The parts of a round's vector and the modulus it prefers.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The parts, in vector order.
    pub parts: Vec<Part>,
    /// Preferred modulus (bits); 64 is the fallback.
    pub modulus_bits: u32,
}

impl Layout {
    /// Vector length.
    pub fn dim(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }

    /// Bound on |sum| of any coordinate.
    pub fn max_abs_sum(&self) -> f64 {
        self.parts.iter().map(|p| p.max_abs_sum).fold(0.0, f64::max)
    }

    /// Largest noise std of any part (real units).
    pub fn largest_noise(&self) -> f64 {
        self.parts.iter().map(|p| p.noise_std).fold(0.0, f64::max)
    }

    /// Smallest positive noise std of any part (real units; 0 without noise).
    pub fn smallest_noise(&self) -> f64 {
        self.parts
            .iter()
            .map(|p| p.noise_std)
            .filter(|&s| s > 0.0)
            .reduce(f64::min)
            .unwrap_or(0.0)
    }

    /// Whether some part must be encoded exactly.
    pub fn needs_exact(&self) -> bool {
        self.parts.iter().any(|p| p.exact)
    }

    /// The noised parts at a fixed-point scale of 2^`scale_bits`.
    pub fn noised_parts(&self, scale_bits: u32) -> Vec<NoisedPart> {
        let scale = f64::from(scale_bits).exp2();
        let mut start = 0;
        let mut out = Vec::new();
        for p in &self.parts {
            if p.noise_std > 0.0 {
                out.push(NoisedPart {
                    range: start..start + p.len,
                    std_units: p.noise_std * scale,
                    draws: 1,
                });
            }
            start += p.len;
        }
        out
    }

    /// Total-variation slack of the discretised noise at this scale.
    pub fn tv_slack(&self, scale_bits: u32) -> Result<f64, tessera_privacy::Error> {
        self.noised_parts(scale_bits)
            .iter()
            .map(|p| tessera_privacy::release_tv(p.std_units, p.range.len() as u64))
            .sum()
    }
}

/// The federation state a round kind reads.
#[derive(Debug, Clone, Copy)]
pub struct RoundState<'a> {
    /// The policy.
    pub policy: &'a FederationPolicy,
    /// The current global model (after the statistics).
    pub model: Option<&'a [f32]>,
    /// The pooled preprocessing (after the statistics).
    pub preprocessor: Option<&'a Preprocessor>,
    /// Clip norm C of the next training round.
    pub clip_norm: f64,
    /// Training rounds released so far.
    pub completed_training: u32,
    /// The last training round whose model was evaluated (0: none).
    pub evaluated_through: u32,
    /// Training rounds planned.
    pub planned: u32,
}

/// Facts of a finished aggregation that a release needs.
#[derive(Debug, Clone, Copy)]
pub struct Aggregated {
    /// Announced cohort size.
    pub cohort: usize,
    /// Participants whose input is in the sum.
    pub contributors: usize,
    /// Expected cohort q·N (the denominator under sampling).
    pub expected_cohort: f64,
    /// Training round number (0 for statistics).
    pub training_round: u32,
}

/// What a released aggregation changes.
#[derive(Debug, Clone)]
pub struct Released {
    /// The global model after it.
    pub model: Vec<f32>,
    /// New pooled preprocessing (statistics rounds).
    pub preprocessor: Option<Preprocessor>,
    /// The checkpoint to write (None: the model did not change).
    pub checkpoint: Option<ModelFile>,
    /// Norm of the model change (training rounds).
    pub update_norm: Option<f64>,
    /// Adaptive clipping: C of the next training round.
    pub next_clip_norm: Option<f64>,
    /// Whether it counts as a completed training round.
    pub training: bool,
    /// The global metrics of an evaluation round.
    pub evaluation: Option<EvalMetrics>,
}

/// One kind of aggregation.
pub trait RoundSpec: Sync {
    /// Which kind.
    fn kind(&self) -> RoundKind;
    /// The vector's parts for a cohort of `n`.
    fn layout(&self, s: &RoundState<'_>, n: usize) -> Layout;
    /// σ announced and accounted (0 without DP).
    fn noise_multiplier(&self, policy: &FederationPolicy) -> f64;
    /// L2 sensitivity of one site's contribution, as announced.
    fn sensitivity(&self, s: &RoundState<'_>) -> f64;
    /// Adaptive-clipping terms, if the round carries the clipping bit.
    fn adaptive_terms(&self, policy: &FederationPolicy) -> Option<AdaptiveTerms>;
    /// What the decoded, noised sum does.
    fn release(
        &self,
        s: &RoundState<'_>,
        optimizer: &mut dyn ServerOptimizer,
        agg: &Aggregated,
        decoded: Vec<f64>,
    ) -> Result<Released, String>;
}

/// The spec of a kind: the registry of kinds.
pub fn spec_for(kind: RoundKind) -> &'static dyn RoundSpec {
    match kind {
        RoundKind::Statistics => &Statistics,
        RoundKind::Training => &Training,
        RoundKind::Evaluation => &Evaluation,
        RoundKind::Analytics => &Analytics,
    }
}

/// The kind of the next round: the statistics first, then training, with an
/// evaluation of the model after every `evaluation.every` training rounds and
/// after the last.
pub fn next_kind(s: &RoundState<'_>) -> RoundKind {
    if s.preprocessor.is_none() {
        RoundKind::Statistics
    } else if s.evaluation_due() {
        RoundKind::Evaluation
    } else {
        RoundKind::Training
    }
}

impl RoundState<'_> {
    /// Whether the model of the last released training round is yet to be
    /// evaluated.
    pub fn evaluation_due(&self) -> bool {
        self.completed_training > self.evaluated_through
            && self
                .policy
                .evaluates_after(self.completed_training, self.planned)
    }
}

/// The standard deviation of the noise a release of `n` sites carries when
/// one release's noise is `std` (real units): `std` itself, except with
/// local placement, where every site adds the whole of it and the sum
/// carries √n times as much.
pub fn released_noise_std(policy: &FederationPolicy, n: usize, std: f64) -> f64 {
    match &policy.privacy {
        Some(p) if p.placement == tessera_model::Placement::Local => (n as f64).sqrt() * std,
        _ => std,
    }
}

/// Pooled feature statistics (see `tessera_model::stats`).
#[derive(Debug)]
pub struct Statistics;

impl Statistics {
    fn sensitivity_of(policy: &FederationPolicy) -> f64 {
        match &policy.privacy {
            Some(p) => tessera_model::l2_sensitivity(
                &p.statistics_bounds,
                policy.task.statistics_columns().len(),
            ),
            None => 0.0,
        }
    }
}

impl RoundSpec for Statistics {
    fn kind(&self) -> RoundKind {
        RoundKind::Statistics
    }

    fn layout(&self, s: &RoundState<'_>, n: usize) -> Layout {
        let policy = s.policy;
        let st = &policy.statistics;
        let dim = LocalStats::vector_len(policy.task.statistics_columns().len());
        let (per_site, noise_std) = match &policy.privacy {
            // Bounded contributions: rows ≤ max_rows, moments in [-1, 1] per row.
            Some(p) => (
                st.max_rows,
                released_noise_std(
                    policy,
                    n,
                    p.statistics_noise_multiplier * Self::sensitivity_of(policy),
                ),
            ),
            None => (st.max_rows * st.value_bound.max(1.0).powi(2), 0.0),
        };
        Layout {
            parts: vec![Part {
                name: "statistics",
                len: dim,
                max_abs_sum: n as f64 * per_site + 12.0 * noise_std,
                noise_std,
                exact: false,
            }],
            modulus_bits: 64,
        }
    }

    fn noise_multiplier(&self, policy: &FederationPolicy) -> f64 {
        policy
            .privacy
            .as_ref()
            .map_or(0.0, |p| p.statistics_noise_multiplier)
    }

    fn sensitivity(&self, s: &RoundState<'_>) -> f64 {
        Self::sensitivity_of(s.policy)
    }

    fn adaptive_terms(&self, _: &FederationPolicy) -> Option<AdaptiveTerms> {
        None
    }

    fn release(
        &self,
        s: &RoundState<'_>,
        _: &mut dyn ServerOptimizer,
        agg: &Aggregated,
        decoded: Vec<f64>,
    ) -> Result<Released, String> {
        let policy = s.policy;
        let task = &policy.task;
        let pre = LocalStats::from_vector(&decoded, task.statistics_columns().len())
            .and_then(|stats| match &policy.privacy {
                // The noise the sum carries (the cohort's, topped up for
                // dropouts), which the shrinkage of noisy moments weighs.
                Some(p) => Preprocessor::from_pooled_bounded(
                    &stats,
                    &p.statistics_bounds,
                    released_noise_std(
                        policy,
                        agg.cohort,
                        p.statistics_noise_multiplier * Self::sensitivity_of(policy),
                    ),
                ),
                None => Preprocessor::from_pooled(&stats),
            })
            .map_err(|e| format!("pooled statistics unusable: {e}"))?
            .split_target(task);
        let mut model = match &policy.training.initial_model {
            Some(initial) => initial
                .params_for(&task.layout(pre.output_dim()))
                .map_err(|e| {
                    format!(
                        "{e} ({} with {} inputs after the pooled preprocessing)",
                        task.model,
                        pre.output_dim()
                    )
                })?,
            None => tessera_model::initial_params(
                task.model,
                task.objective(),
                pre.output_dim(),
                policy.training.seed,
            ),
        };
        // The federation starts inside its monotone constraints.
        policy.training.monotone.project(&mut model);
        Ok(Released {
            checkpoint: Some(ModelFile {
                task: task.clone(),
                params: model.clone(),
                preprocessor: pre.clone(),
                round: 0,
            }),
            model,
            preprocessor: Some(pre),
            update_norm: None,
            next_clip_norm: None,
            training: false,
            evaluation: None,
        })
    }
}

/// A clipped model update, followed with adaptive clipping by the centred
/// clipping bit 1[‖Δ‖ ≤ C] − 1/2 (Andrew et al. 2021), which is summed and
/// noised with it.
#[derive(Debug)]
pub struct Training;

impl RoundSpec for Training {
    fn kind(&self) -> RoundKind {
        RoundKind::Training
    }

    fn layout(&self, s: &RoundState<'_>, n: usize) -> Layout {
        let policy = s.policy;
        let model_len = s.model.map_or(0, <[f32]>::len);
        let c = s.clip_norm;
        let (update_std, bit_std) = match &policy.privacy {
            // Local noise: every site adds σ·C, the sum carries √n·σ·C.
            Some(p) if p.placement == tessera_model::Placement::Local => (
                (n as f64).sqrt() * p.update_noise_multiplier * c,
                p.clip_count_noise_multiplier,
            ),
            Some(p) => (p.update_noise_multiplier * c, p.clip_count_noise_multiplier),
            None => (0.0, 0.0),
        };
        // The headroom of 12 standard deviations covers the noise of every
        // coordinate at once with probability ≥ 1 − 10⁻¹² for any model
        // below 10¹⁸ coordinates (tessera_privacy::distributed::sum_tail_units:
        // 12² / 2 = 72 ≥ ln(2d / 10⁻¹²)); a sum beyond it is treated as wrapped.
        let mut parts = vec![Part {
            name: "update",
            len: model_len,
            max_abs_sum: n as f64 * c + 12.0 * update_std,
            noise_std: update_std,
            exact: false,
        }];
        if policy.training.adaptive.is_some() {
            // |b − 1/2| = 1/2; ±1/2 must be encoded exactly, or its
            // sensitivity would exceed 1/2.
            parts.push(Part {
                name: "clipping bit",
                len: 1,
                max_abs_sum: n as f64 / 2.0 + 12.0 * bit_std,
                noise_std: if policy.dp() { bit_std } else { 0.0 },
                exact: true,
            });
        }
        Layout {
            parts,
            modulus_bits: 32,
        }
    }

    fn noise_multiplier(&self, policy: &FederationPolicy) -> f64 {
        policy.privacy.as_ref().map_or(0.0, |p| p.noise_multiplier)
    }

    fn sensitivity(&self, s: &RoundState<'_>) -> f64 {
        s.clip_norm
    }

    fn adaptive_terms(&self, policy: &FederationPolicy) -> Option<AdaptiveTerms> {
        policy.training.adaptive?;
        Some(match &policy.privacy {
            Some(p) => AdaptiveTerms {
                update_noise_multiplier: p.update_noise_multiplier,
                clip_count_noise_multiplier: p.clip_count_noise_multiplier,
            },
            None => AdaptiveTerms {
                update_noise_multiplier: 0.0,
                clip_count_noise_multiplier: 0.0,
            },
        })
    }

    fn release(
        &self,
        s: &RoundState<'_>,
        optimizer: &mut dyn ServerOptimizer,
        agg: &Aggregated,
        decoded: Vec<f64>,
    ) -> Result<Released, String> {
        let policy = s.policy;
        let denominator = match &policy.privacy {
            // A fixed denominator keeps the sensitivity of the mean at
            // C/denominator: the announced cohort under full participation,
            // q·N under sampling.
            Some(p) if p.sampling_rate >= 1.0 => agg.cohort as f64,
            Some(_) => agg.expected_cohort,
            None => agg.contributors as f64,
        };
        let adaptive = policy.training.adaptive;
        let (update, bit_sum) = if adaptive.is_some() {
            let (u, b) = decoded.split_at(decoded.len().saturating_sub(1));
            (u, b.first().copied())
        } else {
            (&decoded[..], None)
        };
        // Adaptive clipping (Andrew et al. 2021, Algorithm 1): the noisy
        // fraction of unclipped updates, from the noised sum of centred bits
        // over the same denominator, moves C geometrically toward the target
        // quantile. Post-processing of the noised release: no privacy cost.
        let next_clip_norm = match (bit_sum, adaptive) {
            (Some(b), Some(a)) => {
                let unclipped = b / denominator + 0.5;
                let next = budget::next_clip_norm(
                    s.clip_norm,
                    unclipped,
                    a.target_quantile,
                    a.clip_learning_rate,
                );
                info!(
                    training_round = agg.training_round,
                    clip_norm = s.clip_norm,
                    unclipped_fraction = unclipped,
                    next_clip_norm = next,
                    "adaptive clipping"
                );
                Some(next)
            }
            _ => None,
        };
        let mut model = s.model.map(<[f32]>::to_vec).unwrap_or_default();
        let mut norm = optimizer.step(&mut model, update, denominator);
        // Public monotone constraints: reads only the noised step's result
        // and public knowledge, so it is post-processing (no privacy cost).
        let clamped = policy.training.monotone.project(&mut model);
        if clamped > 0 {
            // The update norm reported is the change the model really made.
            if let Some(before) = s.model {
                norm = before
                    .iter()
                    .zip(&model)
                    .map(|(b, a)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum::<f64>()
                    .sqrt();
            }
            debug!(
                training_round = agg.training_round,
                weights = clamped,
                "monotone constraints set weights of the wrong sign to zero"
            );
        }
        let pre = s
            .preprocessor
            .cloned()
            .ok_or("a training round before the statistics")?;
        Ok(Released {
            checkpoint: Some(ModelFile {
                task: policy.task.clone(),
                params: model.clone(),
                preprocessor: pre,
                round: agg.training_round,
            }),
            model,
            preprocessor: None,
            update_norm: Some(norm),
            next_clip_norm,
            training: true,
            evaluation: None,
        })
    }
}
