//! The federation's privacy budget: calibrating σ and refusing rounds that
//! would exceed the budget. Pure functions over ledger events.
//!
//! The ledger of a private federation holds one event for the statistics
//! release and one per released training round. Before a round starts the
//! coordinator composes the ledger *plus the round it is about to run* and
//! does not start it if ε would pass the budget; so the ledger's ε never
//! exceeds the budget, whatever happens afterwards.

use tessera_privacy::{AccountantKind, PrivacyEvent};

/// Failure to calibrate or account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The accountant rejected the events.
    #[error(transparent)]
    Privacy(#[from] tessera_privacy::Error),
    /// The statistics release (and any planned evaluations) alone already
    /// take the whole budget.
    #[error(
        "the statistics release (noise multiplier {statistics_sigma}) and any planned evaluations \
         alone spend ε = {spent:.4}, more than the target ε = {target}"
    )]
    NoRoomForTraining {
        /// σ of the statistics release.
        statistics_sigma: f64,
        /// ε of that release alone.
        spent: f64,
        /// The target.
        target: f64,
    },
    /// The clipping-bit noise of adaptive clipping alone would spend the
    /// round's whole noise: (2σ_b)^-2 ≥ σ_eff^-2.
    #[error(
        "the clipping-bit noise {count_sigma} is too small for the effective noise multiplier \
         {effective_sigma}: it needs (2·σ_b)^-2 < σ^-2, i.e. σ_b > {min:.4}"
    )]
    ClipCountNoiseTooSmall {
        /// σ_b.
        count_sigma: f64,
        /// σ_eff.
        effective_sigma: f64,
        /// The least σ_b that leaves room (exclusive).
        min: f64,
    },
}

/// The ledger event of one training round.
pub fn training_event(noise_multiplier: f64, sampling_rate: f64) -> PrivacyEvent {
    PrivacyEvent::gaussian(noise_multiplier, sampling_rate, 1)
}

/// The ledger event of the statistics release (every site takes part).
pub fn statistics_event(noise_multiplier: f64) -> PrivacyEvent {
    PrivacyEvent::gaussian(noise_multiplier, 1.0, 1)
}

/// The ledger event of `count` federated evaluations (every site takes part;
/// noise std σ times the per-site sensitivity of the sums).
pub fn evaluation_event(noise_multiplier: f64, count: u32) -> PrivacyEvent {
    PrivacyEvent::gaussian(noise_multiplier, 1.0, count)
}

pub use tessera_privacy::calibrate::effective_noise_multiplier;

/// The update noise multiplier σ_Δ that, with clipping-bit noise σ_b, gives
/// the effective multiplier `effective_sigma` (inverse of
/// [`effective_noise_multiplier`], Andrew et al. 2021, §3): σ_Δ =
/// (σ_eff^-2 − (2σ_b)^-2)^-1/2, rounded up so that the noise actually added
/// is never less than what the ledger accounts. Refused when σ_b leaves no
/// room, (2σ_b)^-2 ≥ σ_eff^-2.
pub fn update_noise_multiplier(effective_sigma: f64, count_sigma: f64) -> Result<f64, BudgetError> {
    let rest = effective_sigma.powi(-2) - (2.0 * count_sigma).powi(-2);
    if !(rest > 0.0 && rest.is_finite()) {
        return Err(BudgetError::ClipCountNoiseTooSmall {
            count_sigma,
            effective_sigma,
            min: effective_sigma / 2.0,
        });
    }
    let mut sigma = rest.powf(-0.5);
    while effective_noise_multiplier(sigma, count_sigma) < effective_sigma {
        sigma *= 1.0 + 4.0 * f64::EPSILON;
    }
    Ok(sigma)
}

/// Default σ_b of adaptive clipping: the expected cohort / 20 (Andrew et
/// al. 2021, §3), so that the noisy fraction of unclipped updates has std
/// 0.05 whatever the cohort size.
pub fn default_clip_count_noise(expected_cohort: f64) -> f64 {
    expected_cohort.max(1.0) / 20.0
}

/// The clipping-bit noise σ_b that gives the bit release a `share` of the
/// round's privacy: (2σ_b)^-2 = share · σ_eff^-2, i.e. σ_b = σ_eff / (2√share);
/// the update noise is then σ_Δ = σ_eff / √(1 − share). A choice for small
/// cohorts, where the paper's default (expected cohort / 20) leaves no room.
pub fn clip_count_noise_for_share(effective_sigma: f64, share: f64) -> f64 {
    effective_sigma / (2.0 * share.sqrt())
}

/// The geometric clip-norm update of adaptive clipping (Andrew et al. 2021,
/// Algorithm 1): C_{t+1} = C_t · exp(−η_C (b̄ − γ)), where b̄ is the noisy
/// fraction of participants whose unclipped update norm was at most C_t and
/// γ the target quantile. More unclipped than targeted (b̄ > γ) shrinks C;
/// fewer grows it.
pub fn next_clip_norm(
    clip_norm: f64,
    unclipped_fraction: f64,
    target_quantile: f64,
    rate: f64,
) -> f64 {
    clip_norm * (-rate * (unclipped_fraction - target_quantile)).exp()
}

/// ε of a ledger at δ with the given accountant.
pub fn ledger_epsilon(
    events: &[PrivacyEvent],
    delta: f64,
    kind: AccountantKind,
) -> Result<f64, BudgetError> {
    if events.is_empty() {
        return Ok(0.0);
    }
    Ok(tessera_privacy::epsilon(events, delta, kind)?.epsilon)
}

/// ε after `ledger` plus `next`: what the ledger would say if `next` ran.
pub fn epsilon_after(
    ledger: &[PrivacyEvent],
    next: &PrivacyEvent,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64, BudgetError> {
    let mut all = ledger.to_vec();
    all.push(next.clone());
    ledger_epsilon(&all, delta, kind)
}

/// Share of δ the calibration leaves for the rounds' total-variation slack
/// (discretised noise, sampled cohorts): the coordinator refuses a round
/// whose slack, over the planned rounds, would need more
/// (`tessera_privacy::sampling::negligible`).
pub const SLACK_SHARE_OF_DELTA: f64 = 1e-3;

/// The smallest training noise multiplier such that the statistics release
/// plus `rounds` training rounds at rate `q` stay within `target_epsilon`,
/// rounded toward more noise. Calibrated at δ·(1 − [`SLACK_SHARE_OF_DELTA`])
/// so that the rounds' slack fits in the rest.
pub fn calibrate_training_noise(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    rounds: u32,
    statistics_sigma: f64,
    kind: AccountantKind,
) -> Result<f64, BudgetError> {
    calibrate_training_noise_with(
        target_epsilon,
        delta,
        q,
        rounds,
        &[statistics_event(statistics_sigma)],
        kind,
    )
}

/// As [`calibrate_training_noise`], with the releases besides the training
/// rounds given as `fixed` events (the statistics first, then e.g. the planned
/// evaluations): the training rounds get what they leave.
pub fn calibrate_training_noise_with(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    rounds: u32,
    fixed: &[PrivacyEvent],
    kind: AccountantKind,
) -> Result<f64, BudgetError> {
    let delta = delta * (1.0 - SLACK_SHARE_OF_DELTA);
    let spent = ledger_epsilon(fixed, delta, kind)?;
    if spent >= target_epsilon {
        let statistics_sigma = match fixed.first() {
            Some(PrivacyEvent::Gaussian {
                noise_multiplier, ..
            }) => *noise_multiplier,
            _ => f64::NAN,
        };
        return Err(BudgetError::NoRoomForTraining {
            statistics_sigma,
            spent,
            target: target_epsilon,
        });
    }
    let eps_at = |sigma: f64| -> Result<f64, BudgetError> {
        let mut events = fixed.to_vec();
        events.push(PrivacyEvent::gaussian(sigma, q, rounds));
        ledger_epsilon(&events, delta, kind)
    };
    // Bracket: grow `hi` until it meets the target.
    let mut lo = 1e-3;
    let mut hi = 1.0;
    while eps_at(hi)? > target_epsilon {
        lo = hi;
        hi *= 2.0;
        if hi > 1e7 {
            return Err(BudgetError::Privacy(
                tessera_privacy::Error::InvalidEpsilon(target_epsilon),
            ));
        }
    }
    // Bisection to 1e-6 relative; `hi` always meets the target.
    while (hi - lo) > 1e-6 * hi {
        let mid = 0.5 * (lo + hi);
        if eps_at(mid)? > target_epsilon {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_meets_target_and_is_tight() {
        let sigma =
            calibrate_training_noise(4.0, 1e-5, 1.0, 30, 20.0, AccountantKind::Best).unwrap();
        let events = [
            statistics_event(20.0),
            PrivacyEvent::gaussian(sigma, 1.0, 30),
        ];
        let eps = ledger_epsilon(&events, 1e-5, AccountantKind::Best).unwrap();
        assert!(eps <= 4.0, "{eps}");
        let less = [
            events[0].clone(),
            PrivacyEvent::gaussian(sigma * 0.99, 1.0, 30),
        ];
        assert!(ledger_epsilon(&less, 1e-5, AccountantKind::Best).unwrap() > 4.0);
    }

    #[test]
    fn planned_evaluations_leave_less_for_training() {
        let fixed = [statistics_event(20.0), evaluation_event(5.0, 4)];
        let plain =
            calibrate_training_noise(4.0, 1e-5, 1.0, 20, 20.0, AccountantKind::Best).unwrap();
        let sigma = calibrate_training_noise_with(4.0, 1e-5, 1.0, 20, &fixed, AccountantKind::Best)
            .unwrap();
        assert!(sigma > plain, "{sigma} vs {plain}");
        let mut events = fixed.to_vec();
        events.push(PrivacyEvent::gaussian(sigma, 1.0, 20));
        assert!(ledger_epsilon(&events, 1e-5, AccountantKind::Best).unwrap() <= 4.0);
    }

    #[test]
    fn statistics_can_exhaust_the_budget() {
        let err = calibrate_training_noise(0.1, 1e-5, 1.0, 10, 0.5, AccountantKind::Best);
        assert!(matches!(err, Err(BudgetError::NoRoomForTraining { .. })));
    }

    #[test]
    fn effective_sigma_composes_both_releases() {
        let (update, count) = (2.0, 5.0);
        let eff = effective_noise_multiplier(update, count);
        assert!(eff < update, "{eff}");
        // Closed form: (1/4 + 1/100)^-1/2.
        assert!((eff - (0.25f64 + 0.01).powf(-0.5)).abs() < 1e-12);
        // As σ_b grows, the bit costs nothing and σ_eff → σ_Δ.
        let far = effective_noise_multiplier(update, 1e9);
        assert!((far - update).abs() < 1e-9, "{far}");
        let mut last = 0.0;
        for b in [0.5, 1.0, 5.0, 50.0, 500.0] {
            let e = effective_noise_multiplier(update, b);
            assert!(e > last && e < update, "σ_b = {b}: {e}");
            last = e;
        }
    }

    #[test]
    fn update_sigma_inverts_the_composition_without_undercounting() {
        for (eff, count) in [(5.92, 9.4), (1.0, 2.0), (0.7, 100.0), (3.0, 1.6)] {
            let update = update_noise_multiplier(eff, count).unwrap();
            assert!(update > eff);
            let back = effective_noise_multiplier(update, count);
            assert!(back >= eff, "{back} < {eff}");
            assert!((back - eff) / eff < 1e-12, "{back} vs {eff}");
        }
        // (2σ_b)^-2 ≥ σ_eff^-2: no room for the update noise.
        assert!(matches!(
            update_noise_multiplier(5.92, 0.5),
            Err(BudgetError::ClipCountNoiseTooSmall { .. })
        ));
        assert!(update_noise_multiplier(2.0, 1.0).is_err());
        assert_eq!(default_clip_count_noise(10.0), 0.5);
    }

    #[test]
    fn clip_norm_moves_toward_the_target_quantile() {
        // More updates unclipped than the target: C shrinks.
        assert!(next_clip_norm(1.0, 0.9, 0.5, 0.2) < 1.0);
        // Fewer: C grows.
        assert!(next_clip_norm(1.0, 0.1, 0.5, 0.2) > 1.0);
        // On target: unchanged.
        assert_eq!(next_clip_norm(1.0, 0.5, 0.5, 0.2), 1.0);
        // Geometric: exp(−η (b̄ − γ)).
        let c = next_clip_norm(2.0, 1.0, 0.5, 0.2);
        assert!((c - 2.0 * (-0.1f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn epsilon_after_grows() {
        let ledger = vec![training_event(2.0, 1.0)];
        let now = ledger_epsilon(&ledger, 1e-5, AccountantKind::Best).unwrap();
        let next = epsilon_after(
            &ledger,
            &training_event(2.0, 1.0),
            1e-5,
            AccountantKind::Best,
        )
        .unwrap();
        assert!(next > now);
    }
}
