//! Analytics rounds in the federation machine: the queue of queries, the
//! round that asks one of them, and its release — the query's noise on the
//! secure sum (`tessera_analytics::release`), the ledger event made durable
//! by the driver, and only then the answer.
//!
//! A query is one more aggregation kind ([`RoundKind::Analytics`]): every
//! eligible site is asked (no sampling), each parses the announced text and
//! checks it against its own `[analytics]` policy before reading a row, and
//! declines with a code or sends its bounded integer vector through the
//! same secure aggregation as training. The vector is encoded with no
//! fractional bits in the 64-bit ring, exactly as `tessera_analytics::site`
//! computes it, so the unmasked sum is the plan's integer sum.
//!
//! Noise is central: the coordinator draws it from its CSPRNG after
//! unmasking (see the README's "Federated analytics" for why distributed
//! placement is refused with analytics). The ledger event is the plan's own
//! ([`QueryPlan::event`]): discrete Laplace (pure ε) for counts, sums and
//! means, the Gaussian mechanism for histograms, the exponential mechanism
//! for top k. It counts in the same ledger and against the same
//! `privacy.max_epsilon` as training; a query that would pass the budget is
//! refused, and the federation carries on.

use std::time::Instant;

use tessera_analytics::release::{Release, Sealed};
use tessera_analytics::{QueryNoise, QueryPlan};
use tessera_model::round::SecAggSetup;
use tessera_model::{AnalyticsTerms, Announcement, Encoding, PrivacyTerms, RoundKind};
use tessera_proto::v1::coordinator_message::Body as Out;
use tessera_secagg::FixedPoint;
use tracing::{info, warn};

use super::aggregation::{Aggregation, AggregationSpec};
use super::{
    Commit, FederationMachine, LedgerEntry, Output, PendingRelease, RoundSummary, State,
    secagg_params,
};
use crate::budget;

/// Where a query came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOrigin {
    /// The `[[analytics]]` entry of this index (0-based) in the configuration.
    Config(usize),
    /// `tessera-coordinator query` (or another operator request).
    Operator,
}

impl QueryOrigin {
    /// Text form for the store and logs (`config:2`, `operator`).
    pub fn as_string(&self) -> String {
        match self {
            QueryOrigin::Config(i) => format!("config:{i}"),
            QueryOrigin::Operator => "operator".into(),
        }
    }
}

/// A query waiting for its round.
#[derive(Debug, Clone)]
pub struct QueuedQuery {
    /// The driver's number for it (to find who waits for the answer).
    pub id: u64,
    /// The plan every site is announced.
    pub plan: QueryPlan,
    /// Where it came from.
    pub origin: QueryOrigin,
}

/// A released query, after its ledger event was made durable.
#[derive(Debug, Clone)]
pub struct QueryReleased {
    /// The query.
    pub query: QueuedQuery,
    /// Aggregation number of its round.
    pub round: u64,
    /// The release: answer, noise per part, event, ε and δ.
    pub release: Release,
    /// Sites that answered (their vector is in the sum).
    pub answered: usize,
    /// Sites that declined it (by their own policy), a count only.
    pub declined: usize,
    /// Sites that accepted but whose vector is not in the sum (dropped).
    pub dropped: usize,
    /// ε of the whole ledger after it, by the federation's accountant.
    pub epsilon_after: Option<f64>,
}

/// A query that was not answered (nothing released, nothing counted).
#[derive(Debug, Clone)]
pub struct QueryFailed {
    /// The query.
    pub query: QueuedQuery,
    /// Why.
    pub reason: String,
}

/// The running query's own bookkeeping.
#[derive(Debug)]
pub(super) struct RunningQuery {
    pub(super) query: QueuedQuery,
    pub(super) declined: usize,
}

/// A query round's release waiting for its commit.
#[derive(Debug)]
pub(super) struct PendingQuery {
    pub(super) query: QueuedQuery,
    pub(super) sealed: Sealed,
    pub(super) answered: usize,
    pub(super) declined: usize,
    pub(super) dropped: usize,
}

/// The announced terms of a plan.
pub fn terms_of(plan: &QueryPlan) -> AnalyticsTerms {
    let (epsilon, noise_multiplier) = match plan.noise {
        QueryNoise::Epsilon(e) => (e, 0.0),
        QueryNoise::NoiseMultiplier(s) => (0.0, s),
    };
    AnalyticsTerms {
        query: plan.query.to_string(),
        max_rows: plan.max_rows,
        epsilon,
        noise_multiplier,
    }
}

impl FederationMachine {
    /// Queues a query: it runs as soon as no round is running (before the
    /// next training round). An invalid plan fails at once.
    pub fn queue_query(&mut self, now: Instant, query: QueuedQuery) {
        if let Err(e) = query.plan.validate() {
            self.outputs
                .push_back(Output::QueryFailed(Box::new(QueryFailed {
                    query,
                    reason: format!("invalid query plan: {e}"),
                })));
            return;
        }
        info!(id = query.id, origin = %query.origin.as_string(), query = %query.plan.query, "analytics query queued");
        self.queries.push_back(query);
        if matches!(self.state, State::Waiting { .. }) && self.started_any {
            self.maybe_start_round(now);
        }
    }

    /// Queries waiting for their round.
    pub fn queued_queries(&self) -> usize {
        self.queries.len()
    }

    /// An analytics-only federation (`federation.rounds = 0`): no
    /// statistics, no training; it answers queries until stopped.
    pub(super) fn analytics_only(&self) -> bool {
        self.policy.rounds == 0
    }

    /// Starts the round of `query` with every eligible site.
    pub(super) fn start_query_round(
        &mut self,
        now: Instant,
        eligible: Vec<String>,
        query: QueuedQuery,
    ) {
        let policy = std::sync::Arc::clone(&self.policy);
        let plan = &query.plan;
        let event = plan.event();
        let delta = policy.privacy.as_ref().map_or(1e-5, |p| p.delta);
        let accountant = policy
            .privacy
            .as_ref()
            .map_or(tessera_privacy::AccountantKind::Best, |p| p.accountant);
        // The budget gate: never release a query that would take the
        // ledger past the federation's budget.
        if let Some(max_eps) = policy.privacy.as_ref().and_then(|p| p.max_epsilon) {
            match budget::epsilon_after(&self.ledger, &event, delta, accountant) {
                Ok(eps) if eps <= max_eps => {}
                Ok(eps) => {
                    return self.query_refused(
                        now,
                        query,
                        format!(
                            "the query would take the federation's ε to {eps:.4} > {max_eps} (δ = {delta})"
                        ),
                    );
                }
                Err(e) => {
                    return self.query_refused(
                        now,
                        query,
                        format!("cannot account the query: {e}"),
                    );
                }
            }
        }
        let n = eligible.len();
        let round = self.next_round;
        self.next_round += 1;
        let dim = plan.dim();
        // Integers, no fractional bits, 64-bit ring: exactly the residues
        // the sites compute (`tessera_analytics::site::contribution`).
        let encoding = match FixedPoint::new(0, 64) {
            Ok(e) => e,
            Err(e) => return self.query_refused(now, query, format!("encoding: {e}")),
        };
        let secure = match &policy.secagg {
            Some(secagg) => {
                let mut graph_seed = [0u8; 32];
                if !secagg.signed_keys {
                    rand::Rng::fill_bytes(&mut self.rng, &mut graph_seed);
                }
                match secagg_params(
                    round,
                    (1..=n as u32).collect(),
                    dim,
                    64,
                    secagg.dropout_tolerance,
                    graph_seed,
                    secagg.signed_keys,
                ) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        return self.query_round_failed(
                            now,
                            round,
                            query,
                            &eligible,
                            format!("secure aggregation parameters: {e}"),
                        );
                    }
                }
            }
            None => None,
        };
        let first_deadline = now
            + if secure.is_some() {
                policy.stage_deadline
            } else {
                policy.training_deadline
            };
        let layout = super::kinds::Layout {
            parts: vec![],
            modulus_bits: 64,
        };
        let agg = match Aggregation::new(
            AggregationSpec {
                round,
                kind: RoundKind::Analytics,
                training_round: 0,
                cohort: eligible.clone(),
                dim,
                encoding,
                secure: secure.clone(),
                first_deadline,
                expected_cohort: n as f64,
                event: event.clone(),
                layout,
            },
            now,
        ) {
            Ok(a) => a,
            Err(e) => {
                return self.query_round_failed(now, round, query, &eligible, e.to_string());
            }
        };
        info!(round, id = query.id, query = %plan.query, cohort = n, dim, "analytics round started");
        self.outputs.push_back(Output::RoundStarted(RoundSummary {
            round,
            training_round: None,
            kind: RoundKind::Analytics,
            cohort: eligible.clone(),
            contributors: vec![],
            dropped: vec![],
            reason: None,
            stage_seconds: vec![],
            seconds: 0.0,
        }));
        let terms = PrivacyTerms {
            enabled: true,
            noise_multiplier: plan.noise_multiplier(),
            clip_norm: plan.max_rows as f64,
            sampling_rate: 1.0,
            delta,
            ..PrivacyTerms::default()
        };
        let signed = secure.as_ref().is_some_and(|p| p.signed_keys);
        let members = self.cohort_members(&eligible, signed);
        let analytics = terms_of(plan);
        for (i, name) in eligible.iter().enumerate() {
            let announcement = Announcement {
                round,
                kind: RoundKind::Analytics,
                training_round: 0,
                planned_rounds: self.rounds,
                dimension: dim as u64,
                training: Default::default(),
                privacy: terms,
                secagg: secure.as_ref().map(|p| SecAggSetup {
                    my_index: i as u32 + 1,
                    cohort: members.clone(),
                    threshold: p.threshold as u32,
                    neighbours: p.neighbours as u32,
                    graph_seed: p.graph_seed,
                    signed_keys: p.signed_keys,
                }),
                encoding: Encoding {
                    scale_bits: 0,
                    modulus_bits: 64,
                },
                preprocessing: None,
                statistics_bounds: None,
                evaluation: None,
                analytics: Some(analytics.clone()),
            };
            self.send(
                name,
                Out::Announce(tessera_proto::round::announcement_to_wire(&announcement)),
            );
        }
        self.running_query = Some(RunningQuery { query, declined: 0 });
        self.state = State::Running(Box::new(agg));
    }

    /// A query refused before its round started: told to whoever asked; the
    /// federation goes on.
    fn query_refused(&mut self, now: Instant, query: QueuedQuery, reason: String) {
        warn!(id = query.id, query = %query.plan.query, %reason, "analytics query refused");
        self.outputs
            .push_back(Output::QueryFailed(Box::new(QueryFailed { query, reason })));
        self.maybe_start_round(now);
    }

    fn query_round_failed(
        &mut self,
        now: Instant,
        round: u64,
        query: QueuedQuery,
        cohort: &[String],
        reason: String,
    ) {
        self.running_query = Some(RunningQuery { query, declined: 0 });
        self.round_failed(now, round, RoundKind::Analytics, 0, cohort, reason);
    }

    /// A query round that failed: nothing released or counted. The cohort
    /// and whoever asked are told; unlike a failed training round it does
    /// not count toward `federation.max_failed_rounds` (a query every site
    /// declines is the sites' right, not a broken federation).
    pub(super) fn query_failed(
        &mut self,
        now: Instant,
        round: u64,
        cohort: &[String],
        reason: String,
    ) {
        warn!(round, %reason, "analytics round failed; nothing was released");
        self.report_unreleased(round, RoundKind::Analytics, None, cohort, &reason);
        if let Some(running) = self.running_query.take() {
            self.outputs
                .push_back(Output::QueryFailed(Box::new(QueryFailed {
                    query: running.query,
                    reason,
                })));
        }
        self.state = State::Waiting { ready_since: None };
        self.maybe_start_round(now);
    }

    /// The unmasked sum of a query round: noise, event, commit. The answer
    /// stays sealed until the driver confirms the ledger row.
    pub(super) fn query_aggregated(
        &mut self,
        now: Instant,
        agg: Aggregation,
        sum: Vec<u64>,
        contributors: Vec<u32>,
    ) {
        let cohort: Vec<String> = agg.cohort.values().cloned().collect();
        let Some(running) = self.running_query.take() else {
            return self.round_failed(
                now,
                agg.round,
                RoundKind::Analytics,
                0,
                &cohort,
                "an analytics round without its query".into(),
            );
        };
        let contributor_names: Vec<String> = contributors
            .iter()
            .filter_map(|i| agg.cohort.get(i).cloned())
            .collect();
        let min = self.policy.min_participants;
        if contributor_names.len() < min {
            let reason = format!(
                "only {} of {} sites answered the query ({} declined); at least {min} needed",
                contributor_names.len(),
                cohort.len(),
                running.declined
            );
            self.running_query = Some(running);
            return self.round_failed(now, agg.round, RoundKind::Analytics, 0, &cohort, reason);
        }
        let privacy = self.policy.privacy.as_ref();
        let delta = privacy.map_or(1e-5, |p| p.delta);
        let accountant = privacy.map_or(tessera_privacy::AccountantKind::Best, |p| p.accountant);
        let plan = &running.query.plan;
        // The noise: exact discrete Laplace / Gaussian samplers, or the
        // exponential mechanism, from the machine's CSPRNG.
        let sealed = match tessera_analytics::release::release(
            plan,
            &sum,
            contributor_names.len(),
            delta,
            &mut self.rng,
        ) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("cannot release the query: {e}");
                self.running_query = Some(running);
                return self.round_failed(now, agg.round, RoundKind::Analytics, 0, &cohort, reason);
            }
        };
        drop(sum);
        let event = sealed.event().clone();
        let epsilon_after = budget::epsilon_after(&self.ledger, &event, delta, accountant).ok();
        let dropped: Vec<String> = cohort
            .iter()
            .filter(|n| !contributor_names.contains(n))
            .cloned()
            .collect();
        let answered = contributor_names.len();
        let dropped_count = cohort.len() - answered - running.declined.min(cohort.len() - answered);
        self.outputs.push_back(Output::Commit(Box::new(Commit {
            excluded: agg
                .misbehaving_names()
                .into_iter()
                .map(|name| (name, super::release::EXCLUSION_REASON.to_owned()))
                .collect(),
            summary: RoundSummary {
                round: agg.round,
                training_round: None,
                kind: RoundKind::Analytics,
                cohort: cohort.clone(),
                contributors: contributor_names,
                dropped,
                reason: None,
                stage_seconds: agg.stage_seconds.clone(),
                seconds: now.duration_since(agg.started).as_secs_f64(),
            },
            privacy: Some(LedgerEntry {
                event: event.clone(),
                cohort_size: cohort.len() as u32,
                clip_norm: plan.max_rows as f64,
                noise_multiplier: plan.noise_multiplier(),
                sampling_rate: 1.0,
                not_private: false,
            }),
            checkpoint: None,
            preprocessing: None,
            epsilon_after,
            update_norm: None,
            evaluation: None,
        })));
        self.state = State::Committing(Box::new(PendingRelease {
            round: agg.round,
            model: None,
            preprocessor: None,
            event: Some(event),
            training: false,
            cohort,
            contributors: answered as u32,
            epsilon_after,
            next_clip_norm: None,
            evaluated: None,
            query: Some(Box::new(PendingQuery {
                declined: running.declined,
                query: running.query,
                sealed,
                answered,
                dropped: dropped_count,
            })),
        }));
    }

    /// The ledger row of a query round is durable: open its answer.
    pub(super) fn query_committed(
        &mut self,
        round: u64,
        p: PendingQuery,
        epsilon_after: Option<f64>,
    ) {
        // The driver confirmed the ledger row (`Input::Committed`): the
        // event is recorded, so the answer may be shown.
        let opened = p
            .sealed
            .open_after(|_| Ok::<(), std::convert::Infallible>(()));
        let release = match opened {
            Ok(r) => r,
            Err(never) => match never {},
        };
        info!(
            round,
            id = p.query.id,
            query = %release.query,
            answer = %release.answer.summary(),
            epsilon = release.epsilon,
            delta = release.delta,
            answered = p.answered,
            declined = p.declined,
            "analytics query released"
        );
        self.outputs
            .push_back(Output::QueryReleased(Box::new(QueryReleased {
                query: p.query,
                round,
                release,
                answered: p.answered,
                declined: p.declined,
                dropped: p.dropped,
                epsilon_after,
            })));
    }
}
