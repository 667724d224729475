//! The analytics kind in the registry of kinds. An analytics round's vector,
//! noise and release follow from its announced query plan
//! (`tessera_analytics::QueryPlan`), not from the federation's state, so the
//! machine starts and releases it in `round::analytics`; what the registry
//! answers here is the kind's shape as the rest of the machine sees it: no
//! model, no clipping terms, no vector of the federation's own.

use tessera_model::RoundKind;
use tessera_model::round::AdaptiveTerms;

use super::{Aggregated, Layout, Released, RoundSpec, RoundState};
use crate::round::optimizer::ServerOptimizer;
use crate::round::policy::FederationPolicy;

/// One federated-analytics query (see `round::analytics`).
#[derive(Debug)]
pub struct Analytics;

impl RoundSpec for Analytics {
    fn kind(&self) -> RoundKind {
        RoundKind::Analytics
    }

    /// Empty: the query plan lays out the vector.
    fn layout(&self, _: &RoundState<'_>, _: usize) -> Layout {
        Layout {
            parts: vec![],
            modulus_bits: 64,
        }
    }

    /// 0: the query plan carries the noise.
    fn noise_multiplier(&self, _: &FederationPolicy) -> f64 {
        0.0
    }

    /// 0: the query plan carries the sensitivity.
    fn sensitivity(&self, _: &RoundState<'_>) -> f64 {
        0.0
    }

    fn adaptive_terms(&self, _: &FederationPolicy) -> Option<AdaptiveTerms> {
        None
    }

    /// Refused: a query's sum is released by its plan, with its own noise.
    fn release(
        &self,
        _: &RoundState<'_>,
        _: &mut dyn ServerOptimizer,
        _: &Aggregated,
        _: Vec<f64>,
    ) -> Result<Released, String> {
        Err("an analytics round is released by its query plan, not as a decoded sum".into())
    }
}
