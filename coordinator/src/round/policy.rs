//! The narrow policy a federation machine runs by: rounds, cohort,
//! deadlines, privacy terms and training settings — nothing of TLS,
//! addresses or files. Built from the planned settings by
//! [`crate::settings::Settings::policy`].

use std::time::Duration;

use tessera_model::{StatsBounds, TaskSpec};
use tessera_privacy::AccountantKind;

/// Everything that decides how a federation runs its rounds.
#[derive(Debug, Clone)]
pub struct FederationPolicy {
    /// Federation name (sent in the welcome).
    pub federation: String,
    /// The task every site trains.
    pub task: TaskSpec,
    /// Planned training rounds.
    pub rounds: u32,
    /// Rounds do not start with fewer, and complete only with at least this many contributors.
    pub min_participants: usize,
    /// Optional allow-list of certificate names (the first round waits for all of them).
    pub allow: Option<Vec<String>>,
    /// Aggregations in a row that may fail before the federation gives up.
    pub max_failed_rounds: u32,
    /// Deadline of each secure-aggregation stage.
    pub stage_deadline: Duration,
    /// Deadline of local training and the upload of the input.
    pub training_deadline: Duration,
    /// Secure aggregation, or None for plain sums (comparisons only).
    pub secagg: Option<SecAggPolicy>,
    /// Local and server training.
    pub training: TrainingPolicy,
    /// Differential privacy, or None when it is off.
    pub privacy: Option<PrivacyPolicy>,
    /// Bounds of the statistics contributions without DP.
    pub statistics: StatisticsPolicy,
    /// Federated evaluation, if on.
    pub evaluation: Option<EvaluationPolicy>,
    /// What to do when the plan does not fit a site's declared terms.
    pub site_budgets: super::budgets::SiteBudgetPolicy,
}

/// Secure aggregation settings.
#[derive(Debug, Clone, Copy)]
pub struct SecAggPolicy {
    /// Share of a cohort that may drop out while the round completes.
    pub dropout_tolerance: f64,
    /// Participants sign their advertised keys.
    pub signed_keys: bool,
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainingPolicy {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local minibatch size.
    pub batch_size: u32,
    /// Seed of local shuffling and of the initial model.
    pub seed: u64,
    /// Clip norm C (the initial one with adaptive clipping).
    pub clip_norm: f64,
    /// Adaptive clipping, if on.
    pub adaptive: Option<AdaptivePolicy>,
    /// L2 weight decay of local training.
    pub weight_decay: f64,
    /// The initial model's parameters (`training.initial_model`), if given.
    pub initial_model: Option<InitialModel>,
    /// Monotone constraints the coordinator projects every released model
    /// onto (post-processing; empty: none).
    pub monotone: tessera_model::Monotone,
}

/// The tensors of a federation's initial model file, by name.
#[derive(Clone)]
pub struct InitialModel(pub std::sync::Arc<Vec<(tessera_model::TensorSpec, Vec<f32>)>>);

impl InitialModel {
    /// From a layout and its flat vector.
    pub fn new(layout: Vec<tessera_model::TensorSpec>, params: &[f32]) -> Self {
        let mut at: usize = 0;
        let tensors = layout
            .into_iter()
            .map(|t| {
                let n = t.len();
                let values = params
                    .get(at..at.saturating_add(n))
                    .map(<[f32]>::to_vec)
                    .unwrap_or_default();
                at = at.saturating_add(n);
                (t, values)
            })
            .collect();
        Self(std::sync::Arc::new(tensors))
    }

    /// The flat vector of `layout` made of these tensors, or why not (a tensor
    /// missing, another shape, one too many).
    pub fn params_for(&self, layout: &[tessera_model::TensorSpec]) -> Result<Vec<f32>, String> {
        if self.0.len() != layout.len() {
            return Err(format!(
                "the initial model has {} tensors, the model {}",
                self.0.len(),
                layout.len()
            ));
        }
        let mut out = Vec::with_capacity(tessera_model::layout::total_len(layout));
        for t in layout {
            let (have, values) = self
                .0
                .iter()
                .find(|(h, _)| h.name == t.name)
                .ok_or_else(|| format!("the initial model has no tensor {:?}", t.name))?;
            if have.shape != t.shape {
                return Err(format!(
                    "the initial model's {:?} has shape {:?}, the model needs {:?}",
                    t.name, have.shape, t.shape
                ));
            }
            out.extend_from_slice(values);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for InitialModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InitialModel({} tensors)", self.0.len())
    }
}

/// Federated evaluation (see `kinds::Evaluation`).
#[derive(Debug, Clone, Copy)]
pub struct EvaluationPolicy {
    /// Evaluate after every this many training rounds, and after the last.
    pub every: u32,
    /// With DP: noise multiplier of the sums.
    pub noise_multiplier: f64,
    /// The public terms every site is announced.
    pub terms: tessera_model::EvalTerms,
}

/// Adaptive clipping (Andrew et al. 2021).
#[derive(Debug, Clone, Copy)]
pub struct AdaptivePolicy {
    /// Target quantile γ of the update norms.
    pub target_quantile: f64,
    /// Learning rate η_C of the geometric clip update.
    pub clip_learning_rate: f64,
}

/// Differential privacy settings, with the noise decided.
#[derive(Debug, Clone)]
pub struct PrivacyPolicy {
    /// σ of a training round (σ_eff with adaptive clipping).
    pub noise_multiplier: f64,
    /// σ_Δ on the update coordinates.
    pub update_noise_multiplier: f64,
    /// σ_b on the clipping bits (adaptive clipping).
    pub clip_count_noise_multiplier: f64,
    /// σ of the statistics release.
    pub statistics_noise_multiplier: f64,
    /// Bounds of each site's statistics contribution.
    pub statistics_bounds: StatsBounds,
    /// δ.
    pub delta: f64,
    /// Poisson sampling rate of training rounds.
    pub sampling_rate: f64,
    /// Budget: no round starts that would pass it.
    pub max_epsilon: Option<f64>,
    /// The accountant.
    pub accountant: AccountantKind,
    /// The noise is seeded: NOT private.
    pub not_private: bool,
    /// Where training rounds' noise is added. With `Local`,
    /// `noise_multiplier` is each site's own σ.
    pub placement: tessera_model::Placement,
    /// Sites assumed to collude with the coordinator in the guarantee
    /// against it.
    pub colluding_sites: u32,
}

/// Statistics settings that matter without DP too.
#[derive(Debug, Clone, Copy)]
pub struct StatisticsPolicy {
    /// Values are clipped to ±value_bound (without DP).
    pub value_bound: f64,
    /// Rows one site contributes at most.
    pub max_rows: f64,
}

impl FederationPolicy {
    /// The least cohort a round runs with: `min_participants`, and 3 for
    /// secure aggregation.
    pub fn min_cohort(&self) -> usize {
        self.min_participants
            .max(if self.secagg.is_some() { 3 } else { 1 })
    }

    /// Whether differential privacy is on.
    pub fn dp(&self) -> bool {
        self.privacy.is_some()
    }

    /// Whether the model of training round `t` is evaluated: every
    /// `evaluation.every` rounds, and the last planned one (of `planned`).
    pub fn evaluates_after(&self, t: u32, planned: u32) -> bool {
        match &self.evaluation {
            Some(e) if t > 0 => t.is_multiple_of(e.every.max(1)) || t >= planned,
            _ => false,
        }
    }

    /// How many evaluation releases `planned` training rounds make.
    pub fn planned_evaluations(&self, planned: u32) -> u32 {
        (1..=planned)
            .filter(|&t| self.evaluates_after(t, planned))
            .count() as u32
    }
}
