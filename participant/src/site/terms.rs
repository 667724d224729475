//! The check of a round's announced terms, made before the site touches its data.
//!
//! A coordinator may be hostile: everything in an [`Announcement`] is a
//! claim to check, not an instruction. [`check`] turns an announcement into a
//! [`RoundPlan`] (what the site will compute, clip and encode) or a
//! [`Decline`] with a fixed [`DeclineCode`]; the detail of a decline goes to
//! the site's own log only. Nothing here reads the site's data: the checks
//! use the configuration, the task and the announcement, so whether a site
//! declines never depends on its data.
//!
//! What is checked:
//! - the site's limits (`[limits]`): dimension, cohort size, feature count;
//! - privacy: DP required by the site (seeded noise counts as not private),
//!   positive noise, the site's minimum noise, σ_eff of adaptive clipping,
//!   bounds and sensitivity of private statistics;
//! - secure aggregation, when the site requires it;
//! - that the dimension, the preprocessing and the model length are what the
//!   task implies (for an evaluation round, what the announced evaluation terms
//!   imply), and that the announced weight decay is a sane number;
//! - that the fixed-point encoding carries the clipped contribution without
//!   overflow, leaves room for the rounding slack, and keeps the noise at or
//!   above [`tessera_privacy::MIN_NOISE_UNITS`] integer units (these noise
//!   and encoding checks are in the `noise_terms` module).

use tessera_model::{Announcement, EvalLayout, LocalStats, Preprocessor, StatsBounds, TaskSpec};
use tessera_proto::round::AnnouncementError;
use tessera_proto::v1::DeclineCode;
use tessera_secagg::FixedPoint;

pub use tessera_model::RoundKind;

use super::SitePolicy;
use super::noise_terms::{check_encoding, check_noise, encoding_of, noise_slack, site_noise};

/// Relative tolerance of announced figures the site recomputes (sensitivity, σ_eff).
pub const RELATIVE_TOLERANCE: f64 = 1e-9;

/// Largest weight decay a site accepts (a larger one is not a training setting,
/// it is a way to zero the model).
pub const MAX_WEIGHT_DECAY: f64 = 100.0;

/// Why the site declines a round: a fixed code for the wire and a detail
/// for its own log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decline {
    /// The code sent to the coordinator (with its fixed text).
    pub code: DeclineCode,
    /// The detail, for the site's log only.
    pub detail: String,
}

impl Decline {
    /// A decline with `code` and a local `detail`.
    pub fn new(code: DeclineCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

pub(super) fn decline<T>(code: DeclineCode, detail: impl Into<String>) -> Result<T, Decline> {
    Err(Decline::new(code, detail))
}

impl Decline {
    /// The decline for an announcement that does not convert from the wire:
    /// the code of the part at fault.
    pub fn malformed(e: &AnnouncementError) -> Self {
        let code = match e {
            AnnouncementError::Missing("encoding") => DeclineCode::InvalidEncoding,
            AnnouncementError::GraphSeed(_) => DeclineCode::InvalidSecureAggregation,
            _ => DeclineCode::InvalidTerms,
        };
        Decline::new(code, format!("malformed announcement: {e}"))
    }
}

/// What the site contributes to a round whose terms passed [`check`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    /// What the round aggregates.
    pub kind: RoundKind,
    /// The announced fixed-point encoding.
    pub encoding: FixedPoint,
    /// Length of the vector the site sends.
    pub dimension: usize,
    /// The round is announced as differentially private.
    pub private: bool,
    /// The round's noise is seeded (simulations): not private.
    pub not_private: bool,
    /// Adaptive clipping: the vector ends with the centred clipping bit.
    pub adaptive: bool,
    /// Announced clip norm C (training) or sensitivity (statistics).
    pub clip_norm: f64,
    /// L2 norm the vector (without the clipping bit) is clipped to before
    /// encoding, so that after stochastic rounding it stays within
    /// `clip_norm`; `None` for exact statistics (no privacy).
    pub clip_to: Option<f64>,
    /// Bounds of the statistics contribution, if announced.
    pub bounds: Option<StatsBounds>,
    /// The pooled preprocessing of a training round.
    pub preprocessor: Option<Preprocessor>,
    /// Length of the global model a training round sends (0 for statistics).
    pub model_len: u64,
    /// Total-variation slack of the round's discretised noise (0 without DP).
    pub tv_slack: f64,
    /// An evaluation round: the vector's layout and the row cap it weights to.
    pub evaluation: Option<(EvalLayout, f64)>,
    /// Noise added by the sites (distributed or local placement): the
    /// standard deviation, in integer units, of the discrete Gaussian this
    /// site adds to its encoded vector before masking. None: central noise.
    pub site_noise_units: Option<f64>,
    /// With noise added by the sites: the sites' noises in the release.
    pub noise_summands: u32,
    /// An analytics query: the privacy event of its release, which the
    /// site's ledger records as is (see `site::analytics`).
    pub query_event: Option<tessera_privacy::PrivacyEvent>,
}

impl RoundPlan {
    /// The vector a site contributes when it cannot compute its own after
    /// accepting: zeros, and with adaptive clipping the bit −1/2 ("clipped").
    ///
    /// The vector is the same whatever the data, so contributing it reveals
    /// nothing a dropout would not; it is within the sensitivity the noise is
    /// calibrated to (norm 0, bit ±1/2). The bit says "clipped" because the
    /// update the site failed to compute has no finite norm within C (a
    /// non-finite update is the limit of an ever larger one), which is also
    /// what the clipping code reports for a non-finite norm.
    pub fn zero_vector(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.dimension];
        if self.adaptive
            && let Some(bit) = v.last_mut()
        {
            *bit = -0.5;
        }
        v
    }
}

pub(super) fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

pub(super) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Checks `a` against the site's policy and the task, without touching any
/// data, and plans the site's contribution.
pub fn check(policy: &SitePolicy, task: &TaskSpec, a: &Announcement) -> Result<RoundPlan, Decline> {
    use DeclineCode as D;
    let kind = a.kind;
    check_limits(policy, task, a)?;
    let n_features = task.features.len();
    let n_statistics = task.statistics_columns().len();
    let terms = a.privacy;
    let p = &policy.privacy;
    let private = terms.enabled;
    // Seeded noise is no privacy at all, whatever the other terms say.
    let truly_private = private && !terms.not_private;
    if (p.require_privacy || p.max_epsilon.is_some()) && !truly_private {
        let why = if private {
            "the round's noise is seeded (not private)"
        } else {
            "the round is not differentially private"
        };
        return decline(
            D::PrivacyRequired,
            format!("{why} and this site requires privacy"),
        );
    }
    let adaptive = kind == RoundKind::Training && terms.adaptive.is_some();
    if private {
        check_noise(policy, &terms, adaptive)?;
    }
    if p.secure_aggregation_required(private) && a.secagg.is_none() {
        return decline(
            D::SecureAggregationRequired,
            "the round has secure aggregation off",
        );
    }

    // The task's shape: dimension, bounds, preprocessing, model length.
    let dimension = a.dimension;
    let mut evaluation = None;
    let (bounds, preprocessor, model_len, clip_norm) = match kind {
        // A query's terms are its own (`site::analytics`).
        RoundKind::Analytics => {
            return decline(
                D::InvalidTerms,
                "an analytics round is checked by the query's own terms",
            );
        }
        RoundKind::Statistics => {
            let bounds = statistics_bounds(a, n_statistics, private)?;
            let expected = LocalStats::vector_len(n_statistics) as u64;
            if dimension != expected {
                return decline(
                    D::LimitsExceeded,
                    format!("statistics of dimension {dimension}, the task implies {expected}"),
                );
            }
            let clip_norm = match (&bounds, private) {
                (Some(b), true) => {
                    let sensitivity = tessera_model::l2_sensitivity(b, n_statistics);
                    if !same(terms.clip_norm, sensitivity) {
                        return decline(
                            D::InvalidTerms,
                            format!(
                                "announced sensitivity {} differs from {sensitivity}, the bounds' own",
                                terms.clip_norm
                            ),
                        );
                    }
                    sensitivity
                }
                _ => terms.clip_norm,
            };
            (bounds, None, 0, clip_norm)
        }
        RoundKind::Training => {
            let pre = preprocessing(a, task, n_features)?;
            check_weight_decay(a.training.weight_decay)?;
            let params = task.num_params(pre.output_dim()) as u64;
            let expected = params.saturating_add(u64::from(adaptive));
            if dimension != expected {
                return decline(
                    D::LimitsExceeded,
                    format!(
                        "dimension {dimension}, the task and preprocessing imply {expected}{}",
                        if adaptive {
                            " (with the clipping bit)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            if !positive(terms.clip_norm) {
                return decline(
                    D::InvalidTerms,
                    format!("clip norm {} is not positive", terms.clip_norm),
                );
            }
            (None, Some(pre), params, terms.clip_norm)
        }
        RoundKind::Evaluation => {
            let pre = preprocessing(a, task, n_features)?;
            let params = task.num_params(pre.output_dim()) as u64;
            let (layout, max_rows) = evaluation_terms(a, task)?;
            if dimension != layout.len() as u64 {
                return decline(
                    D::LimitsExceeded,
                    format!(
                        "evaluation of dimension {dimension}, the task and its terms imply {}",
                        layout.len()
                    ),
                );
            }
            let sensitivity = layout.sensitivity(max_rows);
            if private && !same(terms.clip_norm, sensitivity) {
                return decline(
                    D::InvalidTerms,
                    format!(
                        "announced sensitivity {} differs from {sensitivity}, the evaluation terms' own",
                        terms.clip_norm
                    ),
                );
            }
            evaluation = Some((layout, max_rows));
            (None, Some(pre), params, sensitivity)
        }
    };
    let dimension = dimension as usize;

    let encoding = encoding_of(a)?;
    let largest = match kind {
        RoundKind::Training if adaptive => Some(clip_norm.max(0.5)),
        RoundKind::Training => Some(clip_norm),
        RoundKind::Statistics => bounds.as_ref().map(|b| b.max_rows),
        RoundKind::Evaluation => evaluation.map(|(_, m)| m),
        RoundKind::Analytics => None,
    };
    let clipped_len = match kind {
        RoundKind::Training => Some(model_len as usize),
        RoundKind::Statistics | RoundKind::Evaluation if private => Some(dimension),
        RoundKind::Statistics | RoundKind::Evaluation | RoundKind::Analytics => None,
    };
    let clip_to = check_encoding(encoding, adaptive, clip_norm, largest, clipped_len)?;
    let site_noise_units = if private {
        site_noise(a, kind, adaptive, encoding, clip_norm, dimension)?
    } else {
        None
    };
    let tv_slack = match (private, site_noise_units) {
        // The distributed discrete Gaussian is accounted exactly (no slack).
        (true, Some(_)) => 0.0,
        (true, None) => noise_slack(encoding, &terms, adaptive, clip_norm, dimension)?,
        (false, _) => 0.0,
    };
    Ok(RoundPlan {
        kind,
        encoding,
        dimension,
        private,
        not_private: terms.not_private,
        adaptive,
        clip_norm,
        clip_to,
        bounds,
        preprocessor,
        model_len,
        tv_slack,
        evaluation,
        site_noise_units,
        noise_summands: if site_noise_units.is_some() {
            terms.noise_summands
        } else {
            0
        },
        query_event: None,
    })
}

/// The weight decay of a training round: finite, non-negative, at most
/// [`MAX_WEIGHT_DECAY`].
fn check_weight_decay(decay: f64) -> Result<(), Decline> {
    if decay.is_finite() && (0.0..=MAX_WEIGHT_DECAY).contains(&decay) {
        Ok(())
    } else {
        decline(
            DeclineCode::InvalidTerms,
            format!("weight decay {decay} is not in [0, {MAX_WEIGHT_DECAY}]"),
        )
    }
}

/// The announced terms of an evaluation round, checked against the task: a
/// row cap of at least 1, score bins in range for a binary task, a finite
/// target range for a regression.
fn evaluation_terms(a: &Announcement, task: &TaskSpec) -> Result<(EvalLayout, f64), Decline> {
    let Some(terms) = &a.evaluation else {
        return decline(
            DeclineCode::InvalidTerms,
            "an evaluation round without its terms",
        );
    };
    match EvalLayout::new(task.objective(), terms) {
        Some(layout) => Ok((layout, terms.max_rows)),
        None => decline(
            DeclineCode::InvalidTerms,
            format!(
                "evaluation terms {terms:?} do not fit a {} task",
                task.kind.name()
            ),
        ),
    }
}

fn check_limits(policy: &SitePolicy, task: &TaskSpec, a: &Announcement) -> Result<(), Decline> {
    let l = &policy.limits;
    if a.dimension == 0 || a.dimension > l.max_dimension {
        return decline(
            DeclineCode::LimitsExceeded,
            format!(
                "dimension {} is outside 1..={} (limits.max_dimension)",
                a.dimension, l.max_dimension
            ),
        );
    }
    if task.features.len() > l.max_features {
        return decline(
            DeclineCode::LimitsExceeded,
            format!(
                "{} features, more than {} (limits.max_features)",
                task.features.len(),
                l.max_features
            ),
        );
    }
    if let Some(s) = &a.secagg
        && s.cohort.len() as u64 > u64::from(l.max_cohort_size)
    {
        return decline(
            DeclineCode::LimitsExceeded,
            format!(
                "cohort of {}, more than {} (limits.max_cohort_size)",
                s.cohort.len(),
                l.max_cohort_size
            ),
        );
    }
    Ok(())
}

/// The statistics bounds: required with DP (without them a site would send
/// exact, unbounded statistics), and valid for the task's features.
fn statistics_bounds(
    a: &Announcement,
    n_features: usize,
    private: bool,
) -> Result<Option<StatsBounds>, Decline> {
    let Some(bounds) = a.statistics_bounds.clone() else {
        if private {
            return decline(
                DeclineCode::InvalidTerms,
                "a private statistics round without statistics bounds",
            );
        }
        return Ok(None);
    };
    if let Err(e) = bounds.check(n_features) {
        return decline(DeclineCode::InvalidTerms, format!("statistics bounds: {e}"));
    }
    if bounds.max_rows < 1.0 {
        return decline(
            DeclineCode::InvalidTerms,
            format!("statistics bounds: max_rows {} is below 1", bounds.max_rows),
        );
    }
    Ok(Some(bounds))
}

/// The pooled preprocessing of a training or evaluation round, checked
/// against the task (a target scale exactly when a regression standardises
/// its target).
fn preprocessing(
    a: &Announcement,
    task: &TaskSpec,
    n_features: usize,
) -> Result<Preprocessor, Decline> {
    let bad = |detail: String| decline(DeclineCode::LimitsExceeded, detail);
    let Some(p) = &a.preprocessing else {
        return bad("a training round without preprocessing".into());
    };
    let lengths = [p.mean.len(), p.std.len(), p.indicator.len()];
    if lengths.iter().any(|&l| l != n_features) {
        return bad(format!(
            "preprocessing of lengths {lengths:?} (mean, std, indicator) for {n_features} features"
        ));
    }
    if !p.mean.iter().all(|m| m.is_finite()) {
        return bad("preprocessing with a non-finite mean".into());
    }
    if !p.std.iter().all(|&s| positive(s)) {
        return bad("preprocessing with a standard deviation that is not positive".into());
    }
    match (task.standardizes_target(), p.target) {
        (true, Some(t)) if t.mean.is_finite() && positive(t.std) => {}
        (false, None) => {}
        (want, got) => {
            return bad(format!(
                "preprocessing with target scale {got:?} for a task that {} standardise its target",
                if want { "does" } else { "does not" }
            ));
        }
    }
    Ok(p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_vector_says_clipped_under_adaptive_clipping() {
        let mut plan = RoundPlan {
            kind: RoundKind::Training,
            encoding: FixedPoint::new(16, 32).unwrap(),
            dimension: 5,
            private: true,
            not_private: false,
            adaptive: true,
            clip_norm: 1.0,
            clip_to: Some(0.9),
            bounds: None,
            preprocessor: None,
            model_len: 4,
            tv_slack: 0.0,
            evaluation: None,
            site_noise_units: None,
            noise_summands: 0,
            query_event: None,
        };
        assert_eq!(plan.zero_vector(), [0.0, 0.0, 0.0, 0.0, -0.5]);
        plan.adaptive = false;
        plan.dimension = 4;
        assert_eq!(plan.zero_vector(), [0.0; 4]);
    }

    #[test]
    fn announced_figures_agree_within_the_relative_tolerance() {
        assert!(same(1000.0, 1000.0 * (1.0 + 1e-10)));
        assert!(!same(1000.0, 1000.0 * (1.0 + 1e-8)));
        assert!(!same(1.0, f64::NAN));
    }
}
