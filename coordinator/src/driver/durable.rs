//! What the driver makes durable: the ledger row, checkpoint and round
//! record of a released round (each durable before the next), the records
//! of started and aborted rounds, `rounds.csv` and the final model (the
//! live status is `live.rs`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use super::Driver;
use super::resume::{META_CLIP_NORM, META_OPTIMIZER_STATE};
use crate::round::{Commit, RoundSummary};
use crate::store::{
    Checkpoint, EvaluationRecord, META_EVALUATION, NewLedgerRow, RoundRecord, RoundStatus,
    write_checkpoint,
};
use tessera_common::time::now_ms;

/// The global metrics columns of `rounds.csv` (filled by evaluation rounds).
pub const EVALUATION_COLUMNS: [&str; 8] = [
    "eval_rows",
    "eval_accuracy",
    "eval_balanced_accuracy",
    "eval_log_loss",
    "eval_auc",
    "eval_rmse",
    "eval_mae",
    "eval_r2",
];

impl Driver {
    pub(super) fn record(
        &mut self,
        s: &RoundSummary,
        status: RoundStatus,
        started_at_ms: i64,
        ended_at_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        self.store.record_round(&RoundRecord {
            round: s.round,
            training_round: s.training_round,
            kind: s.kind,
            status,
            contributors: s.contributors.clone(),
            dropped: s.dropped.clone(),
            reason: s.reason.clone(),
            started_at_ms,
            ended_at_ms,
        })?;
        Ok(())
    }

    /// Ledger row, then checkpoint, then round record: each durable before the
    /// next. With adaptive clipping the next round's clip norm, and with a
    /// stateful server optimizer its state, are stored in the checkpoint's
    /// transaction, so a restart goes on with the C and the state that
    /// follow the model it resumes.
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
        if let Some(pre) = &c.preprocessing {
            let json = serde_json::json!({
                "mean": pre.mean, "std": pre.std, "indicator": pre.indicator,
            });
            self.store.set_meta("preprocessing", &json.to_string())?;
        }
        // The next clip norm and the optimizer's state after this round go
        // with its checkpoint, in the same transaction (nothing to keep for
        // a stateless optimizer): a restart resumes the model together with
        // the state that follows it, never a later step's.
        let mut meta: Vec<(&str, String)> = Vec::new();
        if let Some(clip) = next_clip_norm {
            meta.push((META_CLIP_NORM, format!("{clip:?}")));
        }
        let state = self.machine.optimizer_state();
        if !state.vectors.is_empty() || state.steps > 0 {
            meta.push((META_OPTIMIZER_STATE, serde_json::to_string(&state)?));
        }
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if c.checkpoint.is_none() {
            for (key, value) in &meta {
                self.store.set_meta(key, value)?;
            }
        }
        if let Some(model) = &c.checkpoint {
            let dir = self
                .settings
                .config
                .federation
                .output_dir
                .join("checkpoints");
            let training_round = s.training_round.unwrap_or(0);
            let (path, sha256, bytes) = write_checkpoint(&dir, training_round, model)?;
            self.store.record_checkpoint_with(
                &Checkpoint {
                    round: s.round,
                    training_round,
                    path,
                    sha256,
                    bytes,
                    created_at_ms: now_ms(),
                },
                &meta,
            )?;
        }
        if let Some(m) = &c.evaluation {
            // The cohort's sums only: no site's own figures exist here.
            let record = EvaluationRecord {
                round: s.round,
                training_round: s.training_round.unwrap_or(0),
                contributors: s.contributors.len(),
                metrics: m.clone(),
            };
            self.store
                .set_meta(META_EVALUATION, &serde_json::to_string(&record)?)?;
            self.metrics.set_evaluation(m);
        }
        let started = self.round_started_ms.remove(&s.round).unwrap_or(now);
        self.record(s, RoundStatus::Released, started, Some(now_ms()))?;
        self.metrics.round_completed();
        self.metrics.participants_dropped(s.dropped.len() as u64);
        for (phase, secs) in &s.stage_seconds {
            self.metrics
                .observe_stage(*phase, std::time::Duration::from_secs_f64(*secs));
        }
        self.append_metrics_line(
            s,
            "released",
            c.epsilon_after,
            c.update_norm,
            c.evaluation.as_ref(),
        )?;
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

    /// One line per round in `output_dir/rounds.csv`; an evaluation round
    /// also fills the global metrics' columns.
    pub(super) fn append_metrics_line(
        &self,
        s: &RoundSummary,
        status: &str,
        epsilon: Option<f64>,
        update_norm: Option<f64>,
        evaluation: Option<&tessera_model::EvalMetrics>,
    ) -> anyhow::Result<()> {
        let path = self
            .settings
            .config
            .federation
            .output_dir
            .join("rounds.csv");
        let new = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(
                f,
                "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm,{}",
                EVALUATION_COLUMNS.join(",")
            )?;
        }
        let cell = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let eval: Vec<String> = match evaluation {
            Some(m) => [
                Some(m.rows),
                m.accuracy,
                m.balanced_accuracy,
                m.log_loss,
                m.auc,
                m.rmse,
                m.mae,
                m.r2,
            ]
            .into_iter()
            .map(cell)
            .collect(),
            None => vec![String::new(); EVALUATION_COLUMNS.len()],
        };
        writeln!(
            f,
            "{},{},{},{},{},{},{},{:.4},{},{},{}",
            s.round,
            s.training_round.map(|r| r.to_string()).unwrap_or_default(),
            s.kind.as_str(),
            status,
            s.cohort.len(),
            s.contributors.len(),
            s.dropped.len(),
            s.seconds,
            epsilon.map(|e| format!("{e:.6}")).unwrap_or_default(),
            update_norm.map(|e| format!("{e:.6}")).unwrap_or_default(),
            eval.join(","),
        )?;
        Ok(())
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
