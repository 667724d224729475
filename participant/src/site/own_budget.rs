//! The site's check of an announced round before any data is touched: the
//! announced terms, then its own privacy budget with the round added, and
//! the ledger contribution the round would record.

use tessera_model::{Announcement, RoundKind};
use tessera_proto::v1::DeclineCode;

use super::Site;
use super::terms::{self, Decline, RoundPlan};
use crate::ledger::Contribution;

impl Site {
    /// The check made before any data is touched: the announced terms
    /// ([`terms::check`]), then the site's own budget with this round added.
    pub(super) fn check_terms(&self, a: &Announcement) -> Result<RoundPlan, Decline> {
        let task = self
            .task
            .as_ref()
            .ok_or_else(|| Decline::new(DeclineCode::NotReady, "no task"))?;
        let plan = terms::check(&self.policy, task, a)?;
        let p = &self.policy.privacy;
        if let Some(max) = p.max_epsilon {
            let next = self.contribution(a, &plan);
            let eps = self.ledger.epsilon_if(&next, p.delta).map_err(|e| {
                Decline::new(
                    DeclineCode::LedgerUnavailable,
                    format!("cannot account the round: {e}"),
                )
            })?;
            if eps.is_nan() || eps > max {
                let now = self.ledger.epsilon(p.delta).unwrap_or(f64::NAN);
                return Err(Decline::new(
                    DeclineCode::BudgetExceeded,
                    format!(
                        "this round would take the site's ε from {now:.4} to {eps:.4}, past its budget {max} (δ = {})",
                        p.delta
                    ),
                ));
            }
        }
        if plan.private
            && let Err(e) = self.contribution(a, &plan).event().validate()
        {
            return Err(Decline::new(
                DeclineCode::LedgerUnavailable,
                format!("the round cannot be accounted: {e}"),
            ));
        }
        Ok(plan)
    }

    pub(super) fn contribution(&self, a: &Announcement, plan: &RoundPlan) -> Contribution {
        Contribution {
            federation: self.federation.clone(),
            round: a.round,
            training_round: (plan.kind == RoundKind::Training).then_some(a.training_round),
            kind: plan.kind.as_str().into(),
            noise_multiplier: a.privacy.noise_multiplier,
            clip_norm: plan.clip_norm,
            tv_slack: plan.tv_slack,
            not_private: plan.not_private,
            recorded_at_ms: self.clock.now_ms(),
            site_noise: plan.site_noise_units.map(|_| crate::ledger::SiteNoise {
                summands: plan.noise_summands,
                l2_units: plan.clip_norm * f64::from(plan.encoding.scale_bits).exp2(),
                dimension: plan.dimension as u64,
            }),
            event: plan.query_event.clone(),
        }
    }
}
