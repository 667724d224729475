//! Releasing a round: noise on the unmasked sum (by the noise placement),
//! decoding, what the round's kind does with the result, the commit the
//! driver makes durable, and only then the release to the cohort.

use std::time::Instant;

use tessera_privacy::PrivacyEvent;
use tessera_proto::v1::{self, coordinator_message::Body as Out};

use super::aggregation::Aggregation;
use super::kinds::{Aggregated, spec_for};
use super::{Commit, FederationMachine, LedgerEntry, Output, PendingRelease, RoundSummary, State};
use crate::budget;

/// Why a participant named by secure aggregation is excluded.
pub(super) const EXCLUSION_REASON: &str = "it revealed a secure-aggregation share that disagrees with \
                                    every other holder's share of the same secret";

impl FederationMachine {
    pub(super) fn aggregation_finished(
        &mut self,
        now: Instant,
        agg: Aggregation,
        mut sum: Vec<u64>,
        contributors: Vec<u32>,
    ) {
        if agg.kind == tessera_model::RoundKind::Analytics {
            return self.query_aggregated(now, agg, sum, contributors);
        }
        let policy = std::sync::Arc::clone(&self.policy);
        let cohort: Vec<String> = agg.cohort.values().cloned().collect();
        let contributor_names: Vec<String> = contributors
            .iter()
            .filter_map(|i| agg.cohort.get(i).cloned())
            .collect();
        let min = policy.min_participants;
        if contributors.len() < min {
            self.round_failed(
                now,
                agg.round,
                agg.kind,
                agg.training_round,
                &cohort,
                format!(
                    "only {} of {} participants contributed; at least {min} needed",
                    contributors.len(),
                    cohort.len()
                ),
            );
            return;
        }
        let spec = spec_for(agg.kind);
        // The event decided when the round started (with adaptive clipping
        // σ_eff: the ledger accounts the joint release of the update sum and
        // the clipping-bit sum).
        let mut event = agg.event.clone();
        let mut noise_multiplier = spec.noise_multiplier(&policy);
        let sensitivity = spec.sensitivity(&self.round_state());
        // With noise added by the sites: the top-up for those whose input
        // is missing, and what the coordinator itself saw.
        let mut site_noise = false;
        let mut top_up = None;
        if let PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier: sigma,
            summands,
            l2_units,
            honest_summands,
            ..
        } = &mut event
        {
            site_noise = true;
            noise_multiplier = *sigma;
            let m = contributors.len() as u32;
            let placement = policy
                .privacy
                .as_ref()
                .map_or(tessera_model::Placement::Central, |p| p.placement);
            *honest_summands =
                super::encoding::honest_summands(placement, m, &policy).min(*summands);
            top_up = Some(super::noise::NoisedPart {
                range: 0..agg.dim,
                std_units: *sigma * *l2_units / f64::from(*summands).sqrt(),
                draws: summands.saturating_sub(m),
            });
        }
        if policy.dp() {
            // Exact discrete Gaussian noise on the integer sum, part by part,
            // in fixed-point units (with noise by the sites: one more site's
            // share per missing site). Nothing is released without its noise.
            let parts = match top_up {
                Some(part) => vec![part],
                None => agg.layout.noised_parts(agg.encoding.scale_bits),
            };
            if let Err(e) = self
                .noise
                .noise_sum(&mut sum, &parts, agg.encoding.modulus_bits)
            {
                self.round_failed(
                    now,
                    agg.round,
                    agg.kind,
                    agg.training_round,
                    &cohort,
                    format!("cannot add the privacy noise: {e}"),
                );
                return;
            }
        }
        let decoded = if site_noise {
            // The sites' noise went through the modular sum: a coordinate
            // beyond the planned bound (contributions and noise at its tail)
            // means the sum may have wrapped. Refuse it rather than release a
            // wrong model.
            match agg.encoding.decode_sum_checked(
                &sum,
                agg.layout.max_abs_sum(),
                contributors.len(),
            ) {
                Ok(d) => d,
                Err(e) => {
                    self.round_failed(
                        now,
                        agg.round,
                        agg.kind,
                        agg.training_round,
                        &cohort,
                        format!("the noised sum is out of the encoding's range: {e}"),
                    );
                    return;
                }
            }
        } else {
            agg.encoding.decode_sum(&sum)
        };
        drop(sum);
        let privacy = policy.privacy.as_ref();
        let epsilon_after = privacy
            .and_then(|p| budget::epsilon_after(&self.ledger, &event, p.delta, p.accountant).ok());
        let dropped: Vec<String> = cohort
            .iter()
            .filter(|n| !contributor_names.contains(n))
            .cloned()
            .collect();
        let summary = RoundSummary {
            round: agg.round,
            training_round: agg.kind.sends_model().then_some(agg.training_round),
            kind: agg.kind,
            cohort: cohort.clone(),
            contributors: contributor_names.clone(),
            dropped,
            reason: None,
            stage_seconds: agg.stage_seconds.clone(),
            seconds: now.duration_since(agg.started).as_secs_f64(),
        };
        let ledger_entry = privacy.map(|p| LedgerEntry {
            event: event.clone(),
            cohort_size: cohort.len() as u32,
            clip_norm: sensitivity,
            noise_multiplier,
            sampling_rate: match &event {
                PrivacyEvent::Gaussian { sampling_rate, .. }
                | PrivacyEvent::DistributedDiscreteGaussian { sampling_rate, .. } => *sampling_rate,
                _ => 1.0,
            },
            not_private: p.not_private,
        });
        let facts = Aggregated {
            cohort: cohort.len(),
            contributors: contributors.len(),
            expected_cohort: agg.expected_cohort,
            training_round: agg.training_round,
        };
        let state = super::kinds::RoundState {
            policy: &policy,
            model: self.model.as_deref(),
            preprocessor: self.preprocessor.as_ref(),
            clip_norm: self.clip_norm,
            completed_training: self.completed_training,
            evaluated_through: self.evaluated_through,
            planned: self.rounds,
        };
        let released = match spec.release(&state, self.optimizer.as_mut(), &facts, decoded) {
            Ok(r) => r,
            Err(reason) => {
                self.round_failed(
                    now,
                    agg.round,
                    agg.kind,
                    agg.training_round,
                    &cohort,
                    reason,
                );
                return;
            }
        };
        let excluded = agg
            .misbehaving_names()
            .into_iter()
            .map(|name| (name, EXCLUSION_REASON.to_owned()))
            .collect();
        let evaluated = released.evaluation.is_some().then_some(agg.training_round);
        self.outputs.push_back(Output::Commit(Box::new(Commit {
            excluded,
            summary,
            privacy: ledger_entry,
            checkpoint: released.checkpoint,
            preprocessing: released.preprocessor.clone(),
            epsilon_after,
            update_norm: released.update_norm,
            evaluation: released.evaluation,
        })));
        self.state = State::Committing(Box::new(PendingRelease {
            round: agg.round,
            model: Some(released.model),
            preprocessor: released.preprocessor,
            event: policy.dp().then_some(event),
            training: released.training,
            cohort,
            contributors: contributors.len() as u32,
            epsilon_after,
            next_clip_norm: released.next_clip_norm,
            evaluated,
            query: None,
        }));
    }

    pub(super) fn committed(&mut self, now: Instant, round: u64) {
        let State::Committing(p) = &self.state else {
            tracing::warn!(round, "commit confirmation outside a commit ignored");
            return;
        };
        if p.round != round {
            tracing::warn!(
                round,
                expected = p.round,
                "commit confirmation for another round ignored"
            );
            return;
        }
        let State::Committing(p) =
            std::mem::replace(&mut self.state, State::Waiting { ready_since: None })
        else {
            unreachable!()
        };
        if let Some(e) = p.event {
            self.ledger.push(e);
        }
        if p.preprocessor.is_some() {
            self.preprocessor = p.preprocessor;
        }
        if let Some(model) = p.model {
            self.model = Some(model);
        }
        if let Some(c) = p.next_clip_norm {
            self.clip_norm = c;
        }
        if p.training {
            self.completed_training += 1;
        }
        if let Some(t) = p.evaluated {
            self.evaluated_through = self.evaluated_through.max(t);
        }
        self.failed_in_row = 0;
        for name in &p.cohort {
            if self.sessions.contains_key(name) {
                self.send(
                    name,
                    Out::Result(v1::RoundResult {
                        round: p.round,
                        completed: true,
                        reason: String::new(),
                        contributors: p.contributors,
                        epsilon: p.epsilon_after.unwrap_or(0.0),
                    }),
                );
            }
        }
        if let Some(q) = p.query {
            self.query_committed(p.round, *q, p.epsilon_after);
        }
        let planned = self.rounds;
        // After the last training round, its evaluation (if any) still runs,
        // and so do the queries queued meanwhile; an analytics-only
        // federation runs until stopped.
        if !self.analytics_only()
            && self.queries.is_empty()
            && self.completed_training >= planned
            && !self.round_state().evaluation_due()
        {
            self.finish(format!("all {planned} planned rounds completed"), true);
            return;
        }
        self.maybe_start_round(now);
    }
}
