//! The site's contribution to an accepted round, computed from its data:
//! the statistics vector or the clipped training update, encoded in fixed
//! point.
//!
//! Once a site has accepted a round, nothing about its data may make it
//! leave: a dropout that happens only for some data tells the coordinator
//! something about that data. So every failure here (a non-finite update, a
//! model that will not load, a value the encoding refuses) becomes the
//! plan's [`zero vector`](RoundPlan::zero_vector), with the detail in the
//! site's own log.

use rand::rand_core::CryptoRng;
use tessera_model::{Dataset, LocalStats, TaskSpec, TrainingSettings};
use tracing::{debug, warn};

use super::terms::{RoundKind, RoundPlan};
use crate::trainer::Trainer;

/// The statistics vector of a statistics round: bounded and clipped under
/// DP, exact otherwise.
pub(crate) fn statistics(data: &Dataset, plan: &RoundPlan) -> Result<Vec<f64>, String> {
    let mut v = match &plan.bounds {
        Some(b) => {
            let mut v = LocalStats::compute_bounded(data, b)
                .map_err(|e| e.to_string())?
                .to_vector();
            // Every element is at most max_rows in exact arithmetic (see the
            // encoding check in `terms`); clamping removes floating-point
            // excess so the checked bound holds exactly.
            v.iter_mut()
                .for_each(|x| *x = x.clamp(-b.max_rows, b.max_rows));
            v
        }
        None => LocalStats::compute(data).to_vector(),
    };
    if let Some(clip) = plan.clip_to {
        // As for training updates: within the sensitivity even after
        // stochastic rounding.
        let outcome = tessera_privacy::clip_l2(&mut v, clip).map_err(|e| e.to_string())?;
        debug!(clipped = outcome.scaled, "statistics clipped");
    }
    check_len(&v, plan)?;
    Ok(v)
}

/// The clipped update Δ = local − global of a training round (with the
/// centred clipping bit appended under adaptive clipping).
pub(crate) fn training(
    trainer: &mut dyn Trainer,
    task: &TaskSpec,
    data: &Dataset,
    plan: &RoundPlan,
    global: &[f32],
    settings: &TrainingSettings,
) -> Result<Vec<f64>, String> {
    let pre = plan
        .preprocessor
        .as_ref()
        .ok_or("no preprocessing in the plan")?;
    if pre.n_features() != data.n_features() {
        return Err(format!(
            "preprocessing for {} features, data has {}",
            pre.n_features(),
            data.n_features()
        ));
    }
    let local = trainer
        .train(task, pre, data, global, settings)
        .map_err(|e| e.to_string())?;
    if local.len() != global.len() {
        return Err(format!(
            "the trainer returned {} parameters for a model of {}",
            local.len(),
            global.len()
        ));
    }
    let mut update: Vec<f64> = local
        .iter()
        .zip(global)
        .map(|(l, g)| f64::from(*l) - f64::from(*g))
        .collect();
    // Clip so that even after stochastic rounding the encoded update has
    // norm at most C: the sensitivity the noise is calibrated to.
    let clip = plan.clip_to.ok_or("no clip norm in the plan")?;
    let outcome = tessera_privacy::clip_l2(&mut update, clip).map_err(|e| e.to_string())?;
    debug!(clipped = outcome.scaled, "update clipped");
    if plan.adaptive {
        // Adaptive clipping (Andrew et al. 2021, Algorithm 1): one more
        // element, the centred bit 1[‖Δ‖ ≤ C] − 1/2 of the unclipped norm,
        // summed (and noised) with the update; ±1/2 is encoded exactly.
        let unclipped = outcome.norm_before <= plan.clip_norm;
        debug!(
            norm = outcome.norm_before,
            clip_norm = plan.clip_norm,
            unclipped,
            "clipping bit"
        );
        update.push(if unclipped { 0.5 } else { -0.5 });
    }
    check_len(&update, plan)?;
    Ok(update)
}

fn check_len(v: &[f64], plan: &RoundPlan) -> Result<(), String> {
    if v.len() != plan.dimension {
        return Err(format!(
            "vector of {} elements, the round expects {}",
            v.len(),
            plan.dimension
        ));
    }
    Ok(())
}

/// Encodes the computed vector; on any failure (computing or encoding it)
/// logs the detail locally and encodes the plan's zero vector instead.
pub(crate) fn encode_or_zero(
    round: u64,
    plan: &RoundPlan,
    computed: Result<Vec<f64>, String>,
    rng: &mut dyn CryptoRng,
) -> Vec<u64> {
    let encoded = computed.and_then(|v| {
        plan.encoding
            .encode(&v, rng)
            .map_err(|e| format!("the vector does not fit the announced encoding: {e}"))
    });
    match encoded {
        Ok(e) => e,
        Err(detail) => {
            warn!(
                round,
                kind = plan.kind.as_str(),
                %detail,
                "cannot compute this site's contribution; contributing a zero vector instead"
            );
            // The zero vector fits every encoding the terms check accepts
            // (zeros, and ±1/2 with at least one fractional bit).
            plan.encoding
                .encode(&plan.zero_vector(), rng)
                .unwrap_or_else(|_| vec![0; plan.dimension])
        }
    }
}

/// Whether a round's vector is computed when it is accepted (statistics)
/// rather than once the global model has arrived (training).
pub(crate) fn computed_at_accept(plan: &RoundPlan) -> bool {
    plan.kind == RoundKind::Statistics
}
