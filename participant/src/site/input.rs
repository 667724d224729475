//! The site's contribution to an accepted round, computed from its data:
//! the statistics vector, the clipped training update, or the evaluation
//! sums of its held-out rows, encoded in fixed point.
//!
//! Once a site has accepted a round, nothing about its data may make it
//! leave: a dropout that happens only for some data tells the coordinator
//! something about that data. So every failure here (a non-finite update, a
//! model that will not load, a value the encoding refuses, an external
//! trainer that fails) becomes the plan's [`zero vector`](RoundPlan::zero_vector),
//! with the detail in the site's own log. The released sum then does not
//! depend on this site's data at all in that round, so (without adaptive
//! clipping, whose bit is not zero) the site does not count the round in its
//! own ledger: its individual privacy loss there is zero (individual
//! accounting as in Feldman & Zrnic 2021, "Individual Privacy Accounting via
//! a Rényi Filter", whose filter the site's own budget is).

use rand::rand_core::CryptoRng;
use tessera_model::{Dataset, LocalStats, Objective, TaskSpec, TrainingSettings};
use tracing::{debug, warn};

use super::terms::{RoundKind, RoundPlan};
use crate::trainer::{TrainJob, Trainer};

/// The statistics vector of a statistics round: bounded and clipped under
/// DP, exact otherwise. Its columns are the task's statistics columns (the
/// features, and a standardised regression target).
pub(crate) fn statistics(
    task: &TaskSpec,
    data: &Dataset,
    plan: &RoundPlan,
) -> Result<Vec<f64>, String> {
    let data = &LocalStats::columns_for(data, task);
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
    round: u32,
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
        .train(&TrainJob {
            task,
            pre,
            data,
            global,
            settings,
            round,
        })
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

/// The evaluation sums of the site's held-out rows under the global model
/// (an empty vector of rows contributes zeros); bounded by construction and,
/// under DP, clipped like the statistics.
pub(crate) fn evaluation(
    trainer: &mut dyn Trainer,
    task: &TaskSpec,
    held_out: Option<&Dataset>,
    plan: &RoundPlan,
    global: &[f32],
) -> Result<Vec<f64>, String> {
    let (layout, max_rows) = plan.evaluation.ok_or("no evaluation terms in the plan")?;
    let pre = plan
        .preprocessor
        .as_ref()
        .ok_or("no preprocessing in the plan")?;
    let Some(data) = held_out.filter(|d| d.n_rows() > 0) else {
        debug!("no held-out rows: the evaluation sums are zero");
        return Ok(vec![0.0; plan.dimension]);
    };
    let mut outputs = trainer
        .predict(task, pre, data, global)
        .map_err(|e| e.to_string())?;
    if outputs.nrows() != data.n_rows() || outputs.ncols() != task.objective().outputs() {
        return Err(format!(
            "{} × {} outputs for {} rows",
            outputs.nrows(),
            outputs.ncols(),
            data.n_rows()
        ));
    }
    if let (Objective::Regression, Some(t)) = (task.objective(), pre.target) {
        // Errors in the target's own units, where its public range is.
        outputs.mapv_inplace(|z| t.inverse(z));
    }
    if outputs.iter().any(|v| !v.is_finite()) {
        return Err("the model's outputs are not finite".into());
    }
    let mut v = layout.contribution(&outputs, &data.y, max_rows);
    if let Some(clip) = plan.clip_to {
        let outcome = tessera_privacy::clip_l2(&mut v, clip).map_err(|e| e.to_string())?;
        debug!(clipped = outcome.scaled, "evaluation sums clipped");
    }
    check_len(&v, plan)?;
    Ok(v)
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

/// An encoded contribution, and whether it is the plan's zero vector in
/// place of one that could not be computed.
pub(crate) struct Encoded {
    /// The encoded vector.
    pub(crate) values: Vec<u64>,
    /// It replaced a contribution that could not be computed.
    pub(crate) fallback: bool,
}

/// Encodes the computed vector; on any failure (computing or encoding it)
/// logs the detail locally and encodes the plan's zero vector instead.
pub(crate) fn encode_or_zero(
    round: u64,
    plan: &RoundPlan,
    computed: Result<Vec<f64>, String>,
    rng: &mut dyn CryptoRng,
) -> Encoded {
    let encoded = computed.and_then(|v| {
        plan.encoding
            .encode(&v, rng)
            .map_err(|e| format!("the vector does not fit the announced encoding: {e}"))
    });
    match encoded {
        Ok(values) => Encoded {
            values,
            fallback: false,
        },
        Err(detail) => {
            warn!(
                round,
                kind = plan.kind.as_str(),
                %detail,
                "cannot compute this site's contribution; contributing a zero vector instead"
            );
            // The zero vector fits every encoding the terms check accepts
            // (zeros, and ±1/2 with at least one fractional bit).
            let values = plan
                .encoding
                .encode(&plan.zero_vector(), rng)
                .unwrap_or_else(|_| vec![0; plan.dimension]);
            Encoded {
                values,
                fallback: true,
            }
        }
    }
}

/// Adds this site's share of the noise to its encoded vector, before it is
/// masked (distributed or local placement; nothing for central noise): an
/// exact discrete Gaussian of the announced size on every coordinate,
/// drawn from the site's CSPRNG. The zero vector a site sends in place of
/// one it could not compute gets its noise too, or the released sum would
/// carry less than planned. `Err` only for terms the check should have
/// refused (the noise cannot be drawn): the site then leaves the round,
/// which depends on the terms only, never on its data.
pub(crate) fn add_site_noise(
    values: &mut [u64],
    plan: &RoundPlan,
    rng: &mut dyn CryptoRng,
) -> Result<(), String> {
    let Some(units) = plan.site_noise_units else {
        return Ok(());
    };
    tessera_privacy::DiscreteGaussian::new(units)
        .and_then(|g| g.add_mod(values, plan.encoding.modulus_bits, rng))
        .map_err(|e| format!("cannot add this site's noise: {e}"))
}

/// Whether a round's vector is computed when it is accepted (statistics)
/// rather than once the global model has arrived (training).
pub(crate) fn computed_at_accept(plan: &RoundPlan) -> bool {
    plan.kind == RoundKind::Statistics
}
