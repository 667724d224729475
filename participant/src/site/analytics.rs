//! The site's side of an analytics round: the announced query parsed by the
//! site itself and checked against its own `[analytics]` policy *before any
//! row is read*, then its bounded contribution computed from its data.
//!
//! The checks, in order, each a decline with a fixed code (the detail stays
//! in the site's log; nothing derived from the data is ever sent):
//! 1. the announcement's shape: central noise, secure aggregation when the
//!    site requires it, the site's limits on dimension and cohort;
//! 2. the query text parses and its plan is valid (`InvalidQuery`): a
//!    hostile text is bounded by the parser (`tessera_analytics::parse`)
//!    and never panics;
//! 3. the policy (`tessera_analytics::SitePolicy::check`): every column the
//!    query reads is in `analytics.allowed_columns` (`ColumnNotAllowed`),
//!    the noise is at least the site's floor for the kind
//!    (`NoiseBelowMinimum`), and the site's own ledger stays within
//!    `privacy.max_epsilon` with the query added (`BudgetExceeded`);
//! 4. the row cap is within `analytics.max_rows` (`LimitsExceeded`), and
//!    the announced dimension, encoding, noise and sensitivity are what the
//!    plan implies (`InvalidTerms` / `InvalidEncoding`), so the coordinator
//!    cannot announce one query and account another;
//! 5. only then the data's header: a column the file does not have is
//!    declined (`ColumnMissing`) before any value is read.
//!
//! The contribution is `tessera_analytics::site::contribution`: at most
//! `max_rows` selected rows, values clamped to the public bounds, as
//! integers modulo 2^64 — the 64-bit encoding with no fractional bits the
//! coordinator announces. The site's ledger records the plan's own event
//! (discrete Laplace, exponential or Gaussian mechanism) before the masked
//! vector leaves, as for every round.

use tessera_analytics::site::{Table, contribution};
use tessera_analytics::{QueryNoise, QueryPlan, RefusalCode, parse_query};
use tessera_model::{Announcement, Placement, RoundKind};
use tessera_privacy::PrivacyEvent;
use tessera_proto::v1::DeclineCode as D;
use tessera_secagg::FixedPoint;
use tracing::info;

use super::terms::{Decline, RoundPlan};
use super::{Site, SitePolicy};
use crate::data::LocalData;

/// The checked query of an analytics round and the event the site records.
#[derive(Debug, Clone)]
pub(crate) struct CheckedQuery {
    /// The plan, as the site derived it from the announced text.
    pub(crate) plan: QueryPlan,
    /// The ledger event of its release.
    pub(crate) event: PrivacyEvent,
}

fn decline<T>(code: D, detail: impl Into<String>) -> Result<T, Decline> {
    Err(Decline::new(code, detail))
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= super::terms::RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

fn code_of(r: RefusalCode) -> D {
    match r {
        RefusalCode::ColumnNotAllowed => D::ColumnNotAllowed,
        RefusalCode::NoiseBelowMinimum => D::NoiseBelowMinimum,
        RefusalCode::BudgetExceeded => D::BudgetExceeded,
        RefusalCode::InvalidPlan => D::InvalidQuery,
        RefusalCode::ColumnMissing => D::ColumnMissing,
    }
}

/// Checks an analytics announcement against the site's policy and its own
/// ledger (`spent`), without touching any data.
pub(crate) fn check(
    policy: &SitePolicy,
    a: &Announcement,
    spent: &[PrivacyEvent],
) -> Result<CheckedQuery, Decline> {
    let terms = a
        .analytics
        .as_ref()
        .ok_or_else(|| Decline::new(D::InvalidQuery, "an analytics round without a query"))?;
    let p = &policy.privacy;
    if a.privacy.placement != Placement::Central {
        return decline(
            D::InvalidTerms,
            format!(
                "{} noise announced for an analytics query (only central noise is planned for queries)",
                a.privacy.placement
            ),
        );
    }
    if p.require_privacy && a.privacy.not_private {
        return decline(
            D::PrivacyRequired,
            "the query's noise is seeded and this site requires privacy",
        );
    }
    if p.secure_aggregation_required(true) && a.secagg.is_none() {
        return decline(
            D::SecureAggregationRequired,
            "the query has secure aggregation off",
        );
    }
    let limits = &policy.limits;
    if a.dimension > limits.max_dimension {
        return decline(
            D::LimitsExceeded,
            format!(
                "dimension {} exceeds limits.max_dimension {}",
                a.dimension, limits.max_dimension
            ),
        );
    }
    if let Some(s) = &a.secagg
        && s.cohort.len() as u64 > u64::from(limits.max_cohort_size)
    {
        return decline(
            D::LimitsExceeded,
            format!(
                "cohort of {} exceeds limits.max_cohort_size {}",
                s.cohort.len(),
                limits.max_cohort_size
            ),
        );
    }
    let query = parse_query(&terms.query).map_err(|e| {
        Decline::new(
            D::InvalidQuery,
            format!("the announced query does not parse: {e}"),
        )
    })?;
    let noise = match (terms.epsilon, terms.noise_multiplier) {
        (e, s) if e > 0.0 && s == 0.0 => QueryNoise::Epsilon(e),
        (e, s) if e == 0.0 && s > 0.0 => QueryNoise::NoiseMultiplier(s),
        (e, s) => {
            return decline(
                D::InvalidQuery,
                format!("the query announces ε = {e} and σ = {s}: exactly one must be positive"),
            );
        }
    };
    let plan = QueryPlan {
        query,
        max_rows: terms.max_rows,
        noise,
    };
    let own = tessera_analytics::SitePolicy {
        columns: policy.analytics.allowed_columns.iter().cloned().collect(),
        min_noise_multiplier: policy.analytics.min_noise_multiplier.clone(),
        max_epsilon: p.max_epsilon,
        delta: p.delta,
    };
    let event = own
        .check(&plan, spent)
        .map_err(|r| Decline::new(code_of(r.code), r.detail))?;
    if let Some(cap) = policy.analytics.max_rows
        && plan.max_rows > cap
    {
        return decline(
            D::LimitsExceeded,
            format!(
                "the query's row cap {} exceeds analytics.max_rows {cap}",
                plan.max_rows
            ),
        );
    }
    if a.dimension != plan.dim() as u64 {
        return decline(
            D::InvalidTerms,
            format!(
                "dimension {}, the query implies {}",
                a.dimension,
                plan.dim()
            ),
        );
    }
    if (a.encoding.scale_bits, a.encoding.modulus_bits) != (0, 64) {
        return decline(
            D::InvalidEncoding,
            format!(
                "a query's integers need the 64-bit encoding with no fractional bits, \
                 announced 2^{} scale modulo 2^{}",
                a.encoding.scale_bits, a.encoding.modulus_bits
            ),
        );
    }
    if !a.privacy.enabled
        || !same(a.privacy.noise_multiplier, plan.noise_multiplier())
        || !same(a.privacy.clip_norm, plan.max_rows as f64)
    {
        return decline(
            D::InvalidTerms,
            format!(
                "announced noise multiplier {} and sensitivity {} differ from the query's own {} and {}",
                a.privacy.noise_multiplier,
                a.privacy.clip_norm,
                plan.noise_multiplier(),
                plan.max_rows
            ),
        );
    }
    Ok(CheckedQuery { plan, event })
}

/// The plan of the round: what the rest of the site machine sends and
/// records (the vector is computed by [`compute`]).
pub(crate) fn round_plan(q: &CheckedQuery, a: &Announcement) -> Result<RoundPlan, Decline> {
    let encoding = FixedPoint::new(0, 64)
        .map_err(|e| Decline::new(D::InvalidEncoding, format!("encoding: {e}")))?;
    Ok(RoundPlan {
        kind: RoundKind::Analytics,
        encoding,
        dimension: q.plan.dim(),
        private: true,
        not_private: a.privacy.not_private,
        adaptive: false,
        clip_norm: q.plan.max_rows as f64,
        clip_to: None,
        bounds: None,
        preprocessor: None,
        model_len: 0,
        tv_slack: q.event.tv_slack(),
        evaluation: None,
        site_noise_units: None,
        noise_summands: 0,
        query_event: Some(q.event.clone()),
    })
}

/// The site's data as a table of numbers, with every column the query
/// reads present (checked on the header: `ColumnMissing` otherwise).
pub(crate) fn table_for(q: &CheckedQuery, data: &LocalData) -> Result<Table, Decline> {
    let table = Table::from_csv_bytes(&data.csv, &data.source).map_err(|e| {
        Decline::new(
            D::NotReady,
            format!("the data cannot be read as a table: {e}"),
        )
    })?;
    if let Some(c) = q
        .plan
        .query
        .columns()
        .iter()
        .find(|c| table.index(c).is_none())
    {
        return decline(D::ColumnMissing, format!("the data has no column `{c}`"));
    }
    Ok(table)
}

/// The site's contribution: residues modulo 2^64 of the query's bounded
/// integer sums.
pub(crate) fn compute(q: &CheckedQuery, table: &Table) -> Result<Vec<u64>, Decline> {
    contribution(&q.plan, table).map_err(|r| Decline::new(code_of(r.code), r.detail))
}

impl Site {
    /// An analytics announcement: the query checked against the site's
    /// policy and own ledger before any row is read ([`check`]),
    /// then the data's header, then the bounded vector.
    pub(super) fn check_query(&self, a: &Announcement) -> Result<(RoundPlan, Vec<u64>), Decline> {
        let spent = self
            .ledger
            .contributions()
            .map(|c| crate::ledger::site_events(&c))
            .map_err(|e| {
                Decline::new(
                    D::LedgerUnavailable,
                    format!("cannot read the site ledger: {e}"),
                )
            })?;
        let query = check(&self.policy, a, &spent)?;
        let plan = round_plan(&query, a)?;
        let table = table_for(&query, &self.data)?;
        let vector = compute(&query, &table)?;
        info!(round = a.round, query = %query.plan.query, "analytics query answered");
        Ok((plan, vector))
    }
}
