//! Federated evaluation as an aggregation kind: every site sums its held-out
//! rows' errors under the current global model ([`tessera_model::evaluation`]),
//! the sum goes through secure aggregation like any other, gets its own noise
//! and ledger event under DP, and the coordinator decodes global metrics from
//! it. The model does not change.

use tessera_model::round::AdaptiveTerms;
use tessera_model::{EvalLayout, RoundKind};
use tracing::info;

use super::{Aggregated, Layout, Part, Released, RoundSpec, RoundState};
use crate::round::optimizer::ServerOptimizer;
use crate::round::policy::FederationPolicy;

/// Sums of the current model's errors on each site's held-out rows.
#[derive(Debug)]
pub struct Evaluation;

impl Evaluation {
    /// The vector layout of the task under the announced terms.
    pub fn eval_layout(policy: &FederationPolicy) -> Option<EvalLayout> {
        let e = policy.evaluation.as_ref()?;
        EvalLayout::new(policy.task.objective(), &e.terms)
    }

    fn sensitivity_of(policy: &FederationPolicy) -> f64 {
        match (Self::eval_layout(policy), &policy.evaluation) {
            (Some(l), Some(e)) => l.sensitivity(e.terms.max_rows),
            _ => 0.0,
        }
    }
}

impl RoundSpec for Evaluation {
    fn kind(&self) -> RoundKind {
        RoundKind::Evaluation
    }

    fn layout(&self, s: &RoundState<'_>, n: usize) -> Layout {
        let policy = s.policy;
        let len = Self::eval_layout(policy).map_or(0, |l| l.len());
        let max_rows = policy.evaluation.as_ref().map_or(0.0, |e| e.terms.max_rows);
        let noise_std = super::released_noise_std(
            policy,
            n,
            self.noise_multiplier(policy) * Self::sensitivity_of(policy),
        );
        Layout {
            parts: vec![Part {
                name: "evaluation",
                len,
                // Every element of a site's vector is at most max_rows in size.
                max_abs_sum: n as f64 * max_rows + 12.0 * noise_std,
                noise_std,
                exact: false,
            }],
            // The vector is short (a few to a few hundred sums), and its
            // elements span counts up to n·M and a regression's squared
            // errors relative to a wide public range: 64 bits keep both exact
            // enough that, without noise, the metrics equal a central
            // computation on the union of the evaluation rows.
            modulus_bits: 64,
        }
    }

    fn noise_multiplier(&self, policy: &FederationPolicy) -> f64 {
        match (&policy.privacy, &policy.evaluation) {
            (Some(_), Some(e)) => e.noise_multiplier,
            _ => 0.0,
        }
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
        let layout = Self::eval_layout(s.policy).ok_or("an evaluation round without its terms")?;
        if decoded.len() != layout.len() {
            return Err(format!(
                "an evaluation sum of {} values, the task's is {}",
                decoded.len(),
                layout.len()
            ));
        }
        let metrics = layout.metrics(&decoded);
        info!(
            training_round = agg.training_round,
            contributors = agg.contributors,
            metrics = %metrics.summary(),
            "federated evaluation"
        );
        Ok(Released {
            model: s.model.map(<[f32]>::to_vec).unwrap_or_default(),
            preprocessor: None,
            checkpoint: None,
            update_norm: None,
            next_clip_norm: None,
            training: false,
            evaluation: Some(metrics),
        })
    }
}
