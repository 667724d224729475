//! The sites' own privacy terms, as they declare them when they join
//! (`Hello.budget`): the federation's plan checked against them before the
//! first round — and fitted to the tightest site when configured to — and
//! the sites whose budgets are spent, so that a federation they end says so.
//!
//! A declaration is a site's policy and its ledger's total, never anything
//! derived from its data. It is a forecast, not a guarantee: every site
//! still checks each announced round against its own ledger and declines
//! what would pass its budget. The forecast counts every training round at
//! sampling rate 1, as the sites do; for a site with nothing spent yet it is
//! exactly the site's own arithmetic, for one with an ε already spent it
//! adds the new rounds' ε to it (basic composition, never below).

use tessera_model::round::SiteBudget;
use tessera_privacy::{AccountantKind, PrivacyEvent};
use tracing::warn;

/// What the coordinator does when its plan does not fit a site's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteBudgetPolicy {
    /// Refuse to start, naming the sites and the figures (default).
    #[default]
    Refuse,
    /// Plan fewer training rounds: as many as the tightest site allows.
    Fit,
    /// Start as planned, naming the sites the plan does not fit in a
    /// warning: each sits out the rounds its own terms decline, and the
    /// federation goes on while enough sites remain (a consortium that
    /// accepts a small site for its first rounds only).
    Proceed,
}

/// The noise a plan announces, for the forecast.
#[derive(Debug, Clone, Copy)]
pub struct PlannedNoise {
    /// σ of a training round (σ_eff with adaptive clipping).
    pub training: f64,
    /// σ of the statistics release.
    pub statistics: f64,
    /// Whether the statistics release is still to come.
    pub statistics_pending: bool,
    /// The noise is seeded: the rounds are not private.
    pub not_private: bool,
}

/// Why a site's terms cannot be met by any number of rounds.
#[derive(Debug, Clone, PartialEq)]
pub enum Misfit {
    /// The site requires privacy and the federation has none (or seeded noise).
    RequiresPrivacy,
    /// The site requires more noise than the plan announces.
    NoiseBelowMinimum {
        /// The site's minimum.
        minimum: f64,
        /// The smallest σ the plan announces.
        planned: f64,
    },
}

/// The site's ε (forecast) after `rounds` training rounds of `noise`.
pub fn forecast_epsilon(budget: &SiteBudget, noise: &PlannedNoise, rounds: u32) -> f64 {
    let mut events = Vec::new();
    if noise.statistics_pending {
        events.push(PrivacyEvent::gaussian(noise.statistics, 1.0, 1));
    }
    if rounds > 0 {
        events.push(PrivacyEvent::gaussian(noise.training, 1.0, rounds));
    }
    let new = if events.is_empty() {
        0.0
    } else {
        // Noise added by the sites is accounted as the Gaussian at the same
        // σ too (within a slack, see `tessera_privacy::distributed`).
        tessera_privacy::epsilon(&events, budget.delta, AccountantKind::Best)
            .map_or(f64::INFINITY, |r| r.epsilon)
    };
    budget.epsilon_spent + new
}

/// How many of `planned` training rounds a site takes part in before its
/// budget would stop it (`planned` when it has none), or why it takes part
/// in none; `None` for a federation without privacy.
pub fn rounds_allowed(
    budget: &SiteBudget,
    noise: Option<&PlannedNoise>,
    planned: u32,
) -> Result<u32, Misfit> {
    let Some(noise) = noise.filter(|n| !n.not_private) else {
        return if budget.require_privacy || budget.max_epsilon.is_some() {
            Err(Misfit::RequiresPrivacy)
        } else {
            Ok(planned)
        };
    };
    if let Some(minimum) = budget.min_noise_multiplier {
        let planned_sigma = if noise.statistics_pending {
            noise.training.min(noise.statistics)
        } else {
            noise.training
        };
        if planned_sigma < minimum {
            return Err(Misfit::NoiseBelowMinimum {
                minimum,
                planned: planned_sigma,
            });
        }
    }
    let Some(max) = budget.max_epsilon else {
        return Ok(planned);
    };
    if forecast_epsilon(budget, noise, planned) <= max {
        return Ok(planned);
    }
    // ε grows with the rounds: the largest k that fits, by bisection.
    let (mut lo, mut hi) = (0u32, planned);
    if forecast_epsilon(budget, noise, 0) > max {
        return Ok(0);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if forecast_epsilon(budget, noise, mid) <= max {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

impl super::FederationMachine {
    /// The sites' declared terms, and whether each has spent its budget.
    pub fn site_budgets(&self) -> Vec<(String, SiteBudget, bool)> {
        self.sessions
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.budget?, self.exhausted.contains(n))))
            .collect()
    }

    /// When too few sites with budget left remain but enough are connected,
    /// the sites' own budgets end the federation: the reason, naming them.
    pub(super) fn spent_by_the_sites(&self, eligible: &[String]) -> Option<String> {
        let min = self.policy.min_participants;
        let spent: Vec<&String> = self
            .exhausted
            .iter()
            .filter(|n| self.sessions.contains_key(*n))
            .collect();
        (eligible.len() < min && !spent.is_empty() && eligible.len() + spent.len() >= min).then(
            || {
                let names: Vec<&str> = spent.iter().map(|n| n.as_str()).collect();
                format!(
                    "the sites' own privacy budgets are spent: {} declined for their budget, \
                     {} site(s) with budget left, at least {min} needed",
                    names.join(", "),
                    eligible.len()
                )
            },
        )
    }

    /// Checks the plan against the terms the sites declared (before the
    /// first round): each site's forecast ε over the remaining rounds. With
    /// [`SiteBudgetPolicy::Fit`], plans as many rounds as the
    /// tightest site allows; with `Proceed`, warns and starts as planned;
    /// otherwise a misfit is the reason not to start.
    pub(super) fn fit_site_budgets(&mut self, eligible: &[String]) -> Result<(), String> {
        let remaining = self.rounds.saturating_sub(self.completed_training);
        let q = self
            .policy
            .privacy
            .as_ref()
            .map_or(1.0, |p| p.sampling_rate);
        let noise = self.policy.privacy.as_ref().map(|p| PlannedNoise {
            training: p.noise_multiplier,
            statistics: p.statistics_noise_multiplier,
            statistics_pending: self.preprocessor.is_none(),
            not_private: p.not_private,
        });
        // Under sampling a site takes part in about q of the rounds.
        let participations = (q * f64::from(remaining)).ceil() as u32;
        let mut short = Vec::new();
        let mut misfits = Vec::new();
        for name in eligible {
            let Some(b) = self.sessions.get(name).and_then(|s| s.budget) else {
                continue;
            };
            match rounds_allowed(&b, noise.as_ref(), participations) {
                Ok(k) if k < participations => {
                    let rounds = if q < 1.0 {
                        (f64::from(k) / q).floor() as u32
                    } else {
                        k
                    };
                    short.push((name.clone(), rounds, b));
                }
                Ok(_) => {}
                Err(m) => misfits.push((name.clone(), m)),
            }
        }
        if short.is_empty() && misfits.is_empty() {
            return Ok(());
        }
        let mut parts: Vec<String> = short
            .iter()
            .map(|(n, k, b)| {
                format!(
                    "{n} allows {k} of the {remaining} remaining rounds (its own budget ε ≤ {} at δ = {}, {} spent)",
                    b.max_epsilon.unwrap_or(f64::INFINITY),
                    b.delta,
                    b.epsilon_spent
                )
            })
            .collect();
        parts.extend(misfits.iter().map(|(n, m)| match m {
            Misfit::RequiresPrivacy => format!("{n} requires differential privacy"),
            Misfit::NoiseBelowMinimum { minimum, planned } => {
                format!(
                    "{n} requires a noise multiplier of at least {minimum} (the plan has {planned})"
                )
            }
        }));
        let detail = parts.join("; ");
        if self.policy.site_budgets == SiteBudgetPolicy::Proceed {
            warn!(%detail, "the plan does not fit every site's own privacy terms; going on as planned (federation.site_budgets = \"proceed\")");
            return Ok(());
        }
        let fit = self.policy.site_budgets == SiteBudgetPolicy::Fit;
        let tightest = short.iter().map(|(_, k, _)| *k).min();
        match (fit, misfits.is_empty(), tightest) {
            (true, true, Some(k)) if k > 0 => {
                let before = self.rounds;
                self.rounds = self.completed_training + k;
                warn!(planned = before, fitted = self.rounds, %detail, "plan fitted to the sites' own budgets");
                Ok(())
            }
            _ => Err(format!(
                "the plan does not fit the sites' own privacy terms: {detail}; lower federation.rounds, \
                 raise the noise, or set federation.site_budgets = \"fit\" to plan only the rounds the \
                 tightest site allows"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(sigma: f64) -> PlannedNoise {
        PlannedNoise {
            training: sigma,
            statistics: 20.0,
            statistics_pending: true,
            not_private: false,
        }
    }

    fn budget(max: Option<f64>) -> SiteBudget {
        SiteBudget {
            max_epsilon: max,
            delta: 1e-5,
            ..SiteBudget::default()
        }
    }

    #[test]
    fn the_largest_number_of_rounds_that_fits() {
        let b = budget(Some(10.0));
        let n = noise(2.0);
        let k = rounds_allowed(&b, Some(&n), 300).unwrap();
        assert!(k > 0 && k < 300, "{k}");
        assert!(forecast_epsilon(&b, &n, k) <= 10.0);
        assert!(forecast_epsilon(&b, &n, k + 1) > 10.0);
        // Without a budget, every round; with enough noise, every round.
        assert_eq!(rounds_allowed(&budget(None), Some(&n), 300), Ok(300));
        assert_eq!(rounds_allowed(&b, Some(&noise(100.0)), 300), Ok(300));
        // What was spent already counts.
        let spent = SiteBudget {
            epsilon_spent: 5.0,
            ..b
        };
        assert!(rounds_allowed(&spent, Some(&n), 300).unwrap() < k);
    }

    #[test]
    fn terms_no_number_of_rounds_can_meet() {
        let b = SiteBudget {
            min_noise_multiplier: Some(3.0),
            ..budget(None)
        };
        assert_eq!(
            rounds_allowed(&b, Some(&noise(2.0)), 10),
            Err(Misfit::NoiseBelowMinimum {
                minimum: 3.0,
                planned: 2.0
            })
        );
        assert_eq!(
            rounds_allowed(&budget(Some(1.0)), None, 10),
            Err(Misfit::RequiresPrivacy)
        );
        let seeded = PlannedNoise {
            not_private: true,
            ..noise(2.0)
        };
        assert_eq!(
            rounds_allowed(&budget(Some(1.0)), Some(&seeded), 10),
            Err(Misfit::RequiresPrivacy)
        );
        assert_eq!(rounds_allowed(&budget(None), None, 10), Ok(10));
    }
}
