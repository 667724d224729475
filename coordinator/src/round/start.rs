//! Starting a round: the cohort, the vector's encoding (planned in
//! `encoding`), the privacy event and the budget gate, the
//! secure-aggregation parameters, and the announcement each member
//! receives. Failed rounds end here too.

use std::time::Instant;

use rand::Rng;
use tessera_model::round::{CohortMember, SecAggSetup};
use tessera_model::{Announcement, Encoding, PrivacyTerms, RoundKind, TrainingSettings};
use tessera_privacy::PrivacyEvent;
use tessera_proto::chunk;
use tessera_proto::v1::{self, ChunkPurpose, CoordinatorMessage, coordinator_message::Body as Out};
use tessera_secagg as sa;
use tracing::{info, warn};

use super::aggregation::{Aggregation, AggregationSpec};
use super::encoding::DEFAULT_SLACK_EPSILON;
use super::kinds::{next_kind, spec_for};
use super::{FederationMachine, Output, RoundSummary, State, cohort};
use crate::budget;

impl FederationMachine {
    pub(super) fn start_round(&mut self, now: Instant, eligible: Vec<String>) {
        let policy = std::sync::Arc::clone(&self.policy);
        let kind = next_kind(&self.round_state());
        let spec = spec_for(kind);
        let training_round = match kind {
            RoundKind::Statistics => 0,
            RoundKind::Training => self.completed_training + 1,
            // The model of the last released training round.
            RoundKind::Evaluation => self.completed_training,
            // Queries start in `round::analytics`, never from `next_kind`.
            RoundKind::Analytics => 0,
        };
        let min_cohort = policy.min_cohort();
        // Cohort selection. Under Poisson sampling a draw below the minimum is
        // discarded and another drawn; the ledger accounts what that does
        // (see `tessera_privacy::sampling`).
        let q = match (&policy.privacy, kind) {
            (Some(p), RoundKind::Training) => p.sampling_rate,
            _ => 1.0,
        };
        let sampled = if let Some(needed) = self.sampled_cohort_margin(kind) {
            match tessera_privacy::sampling::sampled_round(eligible.len() as u64, q, needed) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.finish(
                        format!(
                            "Poisson sampling at rate {q} cannot be accounted over {} available \
                             participants: {e}; raise the sampling rate or use full participation",
                            eligible.len()
                        ),
                        false,
                    );
                    return;
                }
            }
        } else {
            None
        };
        let cohort = cohort::select(&eligible, q, &mut self.rng);
        let expected_cohort = (q * eligible.len() as f64).max(1.0);
        let round = self.next_round;
        self.next_round += 1;
        let n = cohort.len();
        if n < min_cohort {
            self.round_failed(
                now,
                round,
                kind,
                training_round,
                &cohort,
                format!("only {n} participants selected"),
            );
            return;
        }
        let encoded = match self.encode(spec, n) {
            Ok(l) => l,
            Err(reason) => {
                self.finish(reason, false);
                return;
            }
        };
        let dim = encoded.layout.dim();
        // The round's ledger event: σ, the rate a released round includes a
        // site with (≥ q under sampling), and its total-variation slack.
        let mut sigma = spec.noise_multiplier(&policy);
        let site_noise = match self.site_noise(spec, n, &encoded) {
            Ok(s) => s,
            Err(reason) => {
                self.finish(reason, false);
                return;
            }
        };
        let next_event = match (&site_noise, sampled) {
            (Some(noise), _) => {
                // The release's σ on the sum (for local noise √n times each
                // site's own).
                sigma = f64::from(noise.summands).sqrt() * noise.site_units / noise.l2_units;
                PrivacyEvent::distributed(
                    noise.site_units,
                    noise.summands,
                    noise.l2_units,
                    dim as u64,
                    q,
                    noise.honest_summands(n as u32, &policy),
                )
            }
            (None, Some(r)) => PrivacyEvent::gaussian(sigma, r.inclusion_rate, 1)
                .with_tv_slack(encoded.tv_slack + r.tv_slack),
            (None, None) => PrivacyEvent::gaussian(sigma, 1.0, 1).with_tv_slack(encoded.tv_slack),
        };
        if let Some(privacy) = &policy.privacy {
            // The slack must be negligible: the calibration leaves δ/1000 for it.
            let eps_ref = privacy.max_epsilon.unwrap_or(DEFAULT_SLACK_EPSILON);
            if !tessera_privacy::sampling::negligible(
                next_event.tv_slack(),
                self.planned_releases(),
                privacy.delta,
                eps_ref,
            ) {
                let why = match sampled {
                    Some(r) if r.tv_slack > encoded.tv_slack => format!(
                        "a cohort drawn at rate {q} from {} participants falls below the {} \
                         a round needs with probability {:.3e}, which is not negligible at δ = {}; \
                         raise the sampling rate or use full participation",
                        eligible.len(),
                        self.sampled_cohort_margin(kind).unwrap_or(0),
                        r.p_fail,
                        privacy.delta
                    ),
                    _ => format!(
                        "the noise of this round is too coarse for its {dim} coordinates: the \
                         discretisation slack {:.3e} is not negligible at δ = {}",
                        encoded.tv_slack, privacy.delta
                    ),
                };
                self.finish(why, false);
                return;
            }
            // The budget: never start a round whose release would take ε past it.
            if let Some(max_eps) = privacy.max_epsilon {
                match budget::epsilon_after(
                    &self.ledger,
                    &next_event,
                    privacy.delta,
                    privacy.accountant,
                ) {
                    Ok(eps) if eps > max_eps => {
                        let spent =
                            budget::ledger_epsilon(&self.ledger, privacy.delta, privacy.accountant)
                                .unwrap_or(f64::NAN);
                        self.finish(
                            format!(
                                "privacy budget reached: ε = {spent:.4} spent; training round {training_round} would take it to {eps:.4} > {max_eps} (δ = {})",
                                privacy.delta
                            ),
                            true,
                        );
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.finish(format!("cannot account the next round: {e}"), false);
                        return;
                    }
                }
            }
        }
        let secure_params = match &policy.secagg {
            Some(secagg) => {
                // With signed keys the graph seed is derived from the
                // advertised keys by every party (tessera_secagg::consistency),
                // so the announced one is unused and left zero.
                let mut graph_seed = [0u8; 32];
                if !secagg.signed_keys {
                    self.rng.fill_bytes(&mut graph_seed);
                }
                match secagg_params(
                    round,
                    (1..=n as u32).collect(),
                    dim,
                    encoded.encoding.modulus_bits,
                    secagg.dropout_tolerance,
                    graph_seed,
                    secagg.signed_keys,
                ) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.round_failed(
                            now,
                            round,
                            kind,
                            training_round,
                            &cohort,
                            format!("secure aggregation parameters: {e}"),
                        );
                        return;
                    }
                }
            }
            None => None,
        };
        let first_deadline = now
            + if secure_params.is_some() {
                policy.stage_deadline
            } else {
                policy.training_deadline
            };
        let agg_spec = AggregationSpec {
            round,
            kind,
            training_round,
            cohort: cohort.clone(),
            dim,
            encoding: encoded.encoding,
            secure: secure_params.clone(),
            first_deadline,
            expected_cohort,
            event: next_event,
            layout: encoded.layout.clone(),
        };
        let mut agg = match Aggregation::new(agg_spec, now) {
            Ok(a) => a,
            Err(e) => {
                self.round_failed(now, round, kind, training_round, &cohort, e.to_string());
                return;
            }
        };
        info!(
            round,
            kind = kind.as_str(),
            training_round,
            cohort = n,
            dim,
            secure = secure_params.is_some(),
            "round started"
        );
        self.outputs.push_back(Output::RoundStarted(RoundSummary {
            round,
            training_round: kind.sends_model().then_some(training_round),
            kind,
            cohort: cohort.clone(),
            contributors: vec![],
            dropped: vec![],
            reason: None,
            stage_seconds: vec![],
            seconds: 0.0,
        }));
        // Announce, then the model.
        let terms = PrivacyTerms {
            enabled: policy.dp(),
            noise_multiplier: sigma,
            clip_norm: spec.sensitivity(&self.round_state()),
            sampling_rate: q,
            delta: policy.privacy.as_ref().map_or(1e-5, |p| p.delta),
            adaptive: spec.adaptive_terms(&policy),
            not_private: policy.privacy.as_ref().is_some_and(|p| p.not_private),
            placement: site_noise
                .as_ref()
                .map_or(tessera_model::Placement::Central, |s| s.placement),
            site_noise_units: site_noise.as_ref().map_or(0.0, |s| s.site_units),
            noise_summands: site_noise.as_ref().map_or(0, |s| s.summands),
        };
        let signed = secure_params.as_ref().is_some_and(|p| p.signed_keys);
        let members = self.cohort_members(&cohort, signed);
        let model_chunks = match (kind.sends_model(), &self.model) {
            (true, Some(m)) => chunk::split(round, ChunkPurpose::Model, m),
            _ => Vec::new(),
        };
        let t = &policy.training;
        for (i, name) in cohort.iter().enumerate() {
            let announcement = Announcement {
                round,
                kind,
                training_round,
                planned_rounds: self.rounds,
                dimension: dim as u64,
                training: TrainingSettings {
                    local_epochs: t.local_epochs,
                    learning_rate: t.learning_rate,
                    batch_size: t.batch_size,
                    shuffle_seed: t.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    weight_decay: t.weight_decay,
                },
                privacy: terms,
                secagg: secure_params.as_ref().map(|p| SecAggSetup {
                    my_index: i as u32 + 1,
                    cohort: members.clone(),
                    threshold: p.threshold as u32,
                    neighbours: p.neighbours as u32,
                    graph_seed: p.graph_seed,
                    signed_keys: p.signed_keys,
                }),
                encoding: Encoding {
                    scale_bits: encoded.encoding.scale_bits,
                    modulus_bits: encoded.encoding.modulus_bits,
                },
                preprocessing: self.preprocessor.clone(),
                statistics_bounds: match (&policy.privacy, kind) {
                    (Some(p), RoundKind::Statistics) => Some(p.statistics_bounds.clone()),
                    _ => None,
                },
                evaluation: match (&policy.evaluation, kind) {
                    (Some(e), RoundKind::Evaluation) => Some(e.terms),
                    _ => None,
                },
                analytics: None,
            };
            self.send(
                name,
                Out::Announce(tessera_proto::round::announcement_to_wire(&announcement)),
            );
            for c in &model_chunks {
                self.send(name, Out::Chunk(c.clone()));
            }
        }
        if signed {
            agg.verify_survivor_signatures(super::signatures::CohortKeys::new(
                members.iter().map(|m| (m.index, m.certificate.as_slice())),
            ));
        }
        self.state = State::Running(Box::new(agg));
    }

    /// Queues a message for a participant.
    /// The cohort as announced: each site's index (from 1, in cohort
    /// order), name and, when keys are signed, the certificate its session
    /// presented (the sites check each other's key signatures against it).
    pub(super) fn cohort_members(&self, cohort: &[String], signed: bool) -> Vec<CohortMember> {
        cohort
            .iter()
            .enumerate()
            .map(|(i, name)| CohortMember {
                index: i as u32 + 1,
                name: name.clone(),
                certificate: if signed {
                    self.sessions
                        .get(name)
                        .map(|x| x.certificate.clone())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    pub(super) fn send(&mut self, to: &str, body: Out) {
        self.outputs.push_back(Output::Send {
            to: to.to_owned(),
            message: Box::new(CoordinatorMessage { body: Some(body) }),
        });
    }

    /// Under Poisson sampling with DP, the least cohort that keeps enough
    /// contributors after the tolerated dropouts (None otherwise).
    pub(super) fn sampled_cohort_margin(&self, kind: RoundKind) -> Option<u64> {
        let p = self.policy.privacy.as_ref()?;
        (kind == RoundKind::Training && p.sampling_rate < 1.0).then(|| {
            tessera_privacy::sampling::min_cohort_with_dropouts(
                self.policy.min_cohort() as u64,
                self.policy.secagg.map_or(0.0, |s| s.dropout_tolerance),
            )
        })
    }

    /// Records a round that ended unreleased and tells each member of its
    /// cohort still connected.
    pub(super) fn report_unreleased(
        &mut self,
        round: u64,
        kind: RoundKind,
        training_round: Option<u32>,
        cohort: &[String],
        reason: &str,
    ) {
        self.outputs.push_back(Output::RoundAborted(RoundSummary {
            round,
            training_round,
            kind,
            cohort: cohort.to_vec(),
            contributors: vec![],
            dropped: cohort.to_vec(),
            reason: Some(reason.to_owned()),
            stage_seconds: vec![],
            seconds: 0.0,
        }));
        for name in cohort {
            if self.sessions.contains_key(name) {
                self.send(
                    name,
                    Out::Result(v1::RoundResult {
                        round,
                        completed: false,
                        reason: reason.to_owned(),
                        contributors: 0,
                        epsilon: 0.0,
                    }),
                );
            }
        }
    }

    pub(super) fn round_failed(
        &mut self,
        now: Instant,
        round: u64,
        kind: RoundKind,
        training_round: u32,
        cohort: &[String],
        reason: String,
    ) {
        if kind == RoundKind::Analytics {
            return self.query_failed(now, round, cohort, reason);
        }
        warn!(round, kind = kind.as_str(), %reason, "round failed; nothing was released");
        self.report_unreleased(
            round,
            kind,
            kind.sends_model().then_some(training_round),
            cohort,
            &reason,
        );
        self.failed_in_row += 1;
        self.state = State::Waiting { ready_since: None };
        if let Some(needed) = self.sampled_cohort_margin(kind)
            && cohort.len() as u64 >= needed
        {
            // The accounting of sampled rounds assumes that a cohort of this
            // size always keeps enough contributors (at most the tolerated
            // share drops out); this one did not, so it no longer holds for
            // further draws.
            self.finish(
                format!(
                    "a sampled round of {} participants failed ({reason}): more than the tolerated \
                     share dropped out, which the privacy accounting of Poisson sampling assumes \
                     never happens; no further sampled round is run",
                    cohort.len()
                ),
                false,
            );
            return;
        }
        let max = self.policy.max_failed_rounds;
        if self.failed_in_row >= max {
            self.finish(
                format!("{max} rounds in a row failed (last: {reason})"),
                false,
            );
            return;
        }
        self.maybe_start_round(now);
    }
}

/// Secure-aggregation parameters for a cohort: SecAgg+ recommendations, or,
/// for cohorts too small for their probabilistic analysis, the complete graph
/// (k = n − 1 neighbours) with the threshold that tolerates the most
/// dropouts while keeping a majority of each secret's holders (2t > k), so
/// that the coordinator cannot learn both secrets of anyone without
/// colluding participants.
///
/// A survivor's self-mask seed is shared among its k neighbours; with D of
/// them gone, k − D holders are left, so t ≤ k − D is what tolerating D
/// dropouts takes.
pub fn secagg_params(
    round: u64,
    participants: Vec<u32>,
    dim: usize,
    modulus_bits: u32,
    dropout: f64,
    graph_seed: [u8; 32],
    signed_keys: bool,
) -> Result<sa::RoundParams, sa::Error> {
    let n = participants.len();
    let mut params = match sa::RoundParams::recommended(
        round,
        participants.clone(),
        dim,
        modulus_bits,
        dropout,
        graph_seed,
    ) {
        Ok(p) => p,
        Err(_) if n >= 3 => {
            let k = n - 1;
            let tolerated = (dropout * n as f64).floor() as usize;
            let majority = k / 2 + 1;
            let threshold = k.saturating_sub(tolerated).max(majority);
            sa::RoundParams {
                round,
                participants,
                threshold,
                neighbours: k,
                graph_seed,
                dim,
                modulus_bits,
                signed_keys,
            }
        }
        Err(e) => return Err(e),
    };
    params.signed_keys = signed_keys;
    params.validate()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cohorts_tolerate_their_dropouts() {
        for n in 3..12u32 {
            let p = secagg_params(1, (1..=n).collect(), 10, 32, 0.3, [0; 32], false).unwrap();
            let dropouts = (0.3 * n as f64).floor() as usize;
            let k = p.neighbours;
            assert!(2 * p.threshold > k, "n = {n}: {p:?}");
            if k == n as usize - 1 && k - dropouts > k / 2 {
                assert!(p.threshold <= k - dropouts, "n = {n}: {p:?}");
            }
        }
    }
}
