//! What the driver makes durable: a released round's ledger row, then its
//! checkpoint, meta and record in one transaction; the records of started
//! and aborted rounds; their `rounds.csv` lines (`rounds_csv.rs`) and the
//! final model (the live status is `live.rs`).

use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use super::Driver;
use super::resume::{META_CLIP_NORM, META_OPTIMIZER_STATE};
use super::rounds_csv::{self, META_ROUNDS_CSV_LINE};
use crate::round::{Commit, RoundSummary};
use crate::store::{
    Checkpoint, EvaluationRecord, META_EVALUATION, META_PREPROCESSING, NewLedgerRow, RoundEnd,
    RoundRecord, RoundStatus, write_checkpoint,
};
use tessera_common::time::now_ms;

impl Driver {
    pub(super) fn record(
        &mut self,
        s: &RoundSummary,
        status: RoundStatus,
        started_at_ms: i64,
        ended_at_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        self.store
            .record_round(&round_record(s, status, started_at_ms, ended_at_ms))?;
        Ok(())
    }

    /// The ledger row first, durable on its own; then the checkpoint file;
    /// then, in one transaction, the checkpoint's row, the meta that follows
    /// the release and the `released` round record.
    pub(super) fn commit(&mut self, c: Commit, next_clip_norm: Option<f64>) -> anyhow::Result<()> {
        let s = &c.summary;
        let now = now_ms();
        if let Some(entry) = &c.privacy {
            self.store.append_ledger(&NewLedgerRow {
                round: s.round,
                training_round: s.training_round,
                kind: s.kind,
                event: entry.event.clone(),
                cohort_size: entry.cohort_size,
                clip_norm: entry.clip_norm,
                noise_multiplier: entry.noise_multiplier,
                sampling_rate: entry.sampling_rate,
                recorded_at_ms: now,
                not_private: entry.not_private,
            })?;
            if let Some(eps) = c.epsilon_after {
                self.metrics.set_epsilon_spent(eps);
            }
        }
        // Everything that follows the release goes in one transaction with
        // its checkpoint and its `released` record (`Store::record_round_end`):
        // the pooled preprocessing, the next clip norm, the optimizer's state
        // after this step (nothing for a stateless optimizer), the global
        // evaluation and the round's line of `rounds.csv`. A restart resumes
        // the model together with the state that follows it, never a later
        // step's, and never a checkpoint whose record lost its contributors.
        let mut meta: Vec<(&str, String)> = Vec::new();
        if let Some(pre) = &c.preprocessing {
            let json = serde_json::json!({
                "mean": pre.mean, "std": pre.std, "indicator": pre.indicator,
            });
            meta.push((META_PREPROCESSING, json.to_string()));
        }
        if let Some(clip) = next_clip_norm {
            meta.push((META_CLIP_NORM, format!("{clip:?}")));
        }
        let state = self.machine.optimizer_state();
        if !state.vectors.is_empty() || state.steps > 0 {
            meta.push((META_OPTIMIZER_STATE, serde_json::to_string(&state)?));
        }
        if let Some(m) = &c.evaluation {
            // The cohort's sums only: no site's own figures exist here.
            let record = EvaluationRecord {
                round: s.round,
                training_round: s.training_round.unwrap_or(0),
                contributors: s.contributors.len(),
                metrics: m.clone(),
            };
            meta.push((META_EVALUATION, serde_json::to_string(&record)?));
        }
        let checkpoint = match &c.checkpoint {
            Some(model) => {
                let dir = self
                    .settings
                    .config
                    .federation
                    .output_dir
                    .join("checkpoints");
                let training_round = s.training_round.unwrap_or(0);
                let (path, sha256, bytes) = write_checkpoint(&dir, training_round, model)?;
                Some(Checkpoint {
                    round: s.round,
                    training_round,
                    path,
                    sha256,
                    bytes,
                    created_at_ms: now_ms(),
                })
            }
            None => None,
        };
        let line = rounds_csv::line(
            s,
            "released",
            c.epsilon_after,
            c.update_norm,
            c.evaluation.as_ref(),
        );
        meta.push((META_ROUNDS_CSV_LINE, line.clone()));
        let started = self.round_started_ms.remove(&s.round).unwrap_or(now);
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.store.record_round_end(&RoundEnd {
            round: &round_record(s, RoundStatus::Released, started, Some(now_ms())),
            checkpoint: checkpoint.as_ref(),
            meta: &meta,
        })?;
        if let Some(m) = &c.evaluation {
            self.metrics.set_evaluation(m);
        }
        self.metrics.round_completed();
        self.metrics.participants_dropped(s.dropped.len() as u64);
        for (phase, secs) in &s.stage_seconds {
            self.metrics
                .observe_stage(*phase, std::time::Duration::from_secs_f64(*secs));
        }
        rounds_csv::append(&self.rounds_csv_path(), &line)?;
        info!(
            round = s.round,
            kind = s.kind.as_str(),
            training_round = ?s.training_round,
            contributors = s.contributors.len(),
            dropped = s.dropped.len(),
            seconds = format!("{:.2}", s.seconds),
            stages = %stage_times(&s.stage_seconds),
            epsilon = ?c.epsilon_after,
            "round released"
        );
        Ok(())
    }

    /// Ends a round without a release: its `aborted` record and its line of
    /// `rounds.csv`, stored together, then the line appended to the file.
    pub(super) fn record_abort(&mut self, s: &RoundSummary) -> anyhow::Result<()> {
        let started = self
            .round_started_ms
            .remove(&s.round)
            .unwrap_or_else(now_ms);
        let line = rounds_csv::line(s, "aborted", None, None, None);
        self.store.record_round_end(&RoundEnd {
            round: &round_record(s, RoundStatus::Aborted, started, Some(now_ms())),
            checkpoint: None,
            meta: &[(META_ROUNDS_CSV_LINE, &line)],
        })?;
        self.metrics.round_aborted();
        rounds_csv::append(&self.rounds_csv_path(), &line)
    }

    /// `output_dir/rounds.csv`.
    pub(super) fn rounds_csv_path(&self) -> PathBuf {
        self.settings
            .config
            .federation
            .output_dir
            .join("rounds.csv")
    }

    /// Writes the final model to `output_dir/model.safetensors`: the last
    /// checkpoint, or with `training.average_last = K > 1` the average of the
    /// parameters of the last K released models (post-processing of released
    /// models: it costs no privacy, and it averages out part of the noise).
    pub(super) fn write_final_model(&mut self) -> anyhow::Result<Option<PathBuf>> {
        let Some(cp) = self.store.latest_checkpoint()? else {
            return Ok(None);
        };
        if cp.training_round == 0 {
            return Ok(None);
        }
        let k = self.settings.config.training.average_last.max(1) as usize;
        let mut model = tessera_model::read_model(&cp.path)
            .with_context(|| format!("reading {}", cp.path.display()))?;
        if k > 1 {
            let mut all = self.store.checkpoints()?;
            all.retain(|c| c.training_round > 0);
            all.sort_by_key(|c| c.training_round);
            let tail = all.get(all.len().saturating_sub(k)..).unwrap_or_default();
            let mut sum = vec![0.0f64; model.params.len()];
            for c in tail {
                let m = tessera_model::read_model(&c.path)
                    .with_context(|| format!("reading {}", c.path.display()))?;
                for (s, p) in sum.iter_mut().zip(&m.params) {
                    *s += f64::from(*p);
                }
            }
            let n = tail.len() as f64;
            model.params = sum.iter().map(|s| (s / n) as f32).collect();
            info!(
                models = tail.len(),
                "final model is the average of the last released models"
            );
        }
        let dest = self
            .settings
            .config
            .federation
            .output_dir
            .join("model.safetensors");
        tessera_model::write_model(&dest, &model)
            .with_context(|| format!("writing {}", dest.display()))?;
        info!(path = %dest.display(), training_round = cp.training_round, "final model written");
        Ok(Some(dest))
    }
}

/// The seconds each stage of a round took, e.g. `keys 0.12 s, shares 1.30 s`
/// (for the log: where a slow round spends its time).
fn stage_times(stages: &[(crate::round::phase::Phase, f64)]) -> String {
    stages
        .iter()
        .map(|(phase, secs)| format!("{} {secs:.2} s", phase.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store's record of a round from its summary.
fn round_record(
    s: &RoundSummary,
    status: RoundStatus,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
) -> RoundRecord {
    RoundRecord {
        round: s.round,
        training_round: s.training_round,
        kind: s.kind,
        status,
        contributors: s.contributors.clone(),
        dropped: s.dropped.clone(),
        reason: s.reason.clone(),
        started_at_ms,
        ended_at_ms,
    }
}
