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
    /// The statistics release alone already takes the whole budget.
    #[error(
        "the statistics release alone (noise multiplier {statistics_sigma}) spends ε = {spent:.4}, \
         more than the target ε = {target}"
    )]
    NoRoomForTraining {
        /// σ of the statistics release.
        statistics_sigma: f64,
        /// ε of that release alone.
        spent: f64,
        /// The target.
        target: f64,
    },
}

/// The ledger event of one training round.
pub fn training_event(noise_multiplier: f64, sampling_rate: f64) -> PrivacyEvent {
    PrivacyEvent::Gaussian {
        noise_multiplier,
        sampling_rate,
        count: 1,
    }
}

/// The ledger event of the statistics release (every site takes part).
pub fn statistics_event(noise_multiplier: f64) -> PrivacyEvent {
    PrivacyEvent::Gaussian {
        noise_multiplier,
        sampling_rate: 1.0,
        count: 1,
    }
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

/// The smallest training noise multiplier such that the statistics release
/// plus `rounds` training rounds at rate `q` stay within `target_epsilon`,
/// rounded toward more noise.
pub fn calibrate_training_noise(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    rounds: u32,
    statistics_sigma: f64,
    kind: AccountantKind,
) -> Result<f64, BudgetError> {
    let stats = statistics_event(statistics_sigma);
    let spent = ledger_epsilon(std::slice::from_ref(&stats), delta, kind)?;
    if spent >= target_epsilon {
        return Err(BudgetError::NoRoomForTraining {
            statistics_sigma,
            spent,
            target: target_epsilon,
        });
    }
    let eps_at = |sigma: f64| -> Result<f64, BudgetError> {
        let events = [
            stats.clone(),
            PrivacyEvent::Gaussian {
                noise_multiplier: sigma,
                sampling_rate: q,
                count: rounds,
            },
        ];
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
            PrivacyEvent::Gaussian {
                noise_multiplier: sigma,
                sampling_rate: 1.0,
                count: 30,
            },
        ];
        let eps = ledger_epsilon(&events, 1e-5, AccountantKind::Best).unwrap();
        assert!(eps <= 4.0, "{eps}");
        let less = [
            events[0].clone(),
            PrivacyEvent::Gaussian {
                noise_multiplier: sigma * 0.99,
                sampling_rate: 1.0,
                count: 30,
            },
        ];
        assert!(ledger_epsilon(&less, 1e-5, AccountantKind::Best).unwrap() > 4.0);
    }

    #[test]
    fn statistics_can_exhaust_the_budget() {
        let err = calibrate_training_noise(0.1, 1e-5, 1.0, 10, 0.5, AccountantKind::Best);
        assert!(matches!(err, Err(BudgetError::NoRoomForTraining { .. })));
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
