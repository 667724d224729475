//! The driver: a tokio task that owns the [`FederationMachine`], feeds it
//! session events and the passing of time, and carries out its outputs —
//! sending messages and making rounds durable in the store.
//!
//! Durability is the driver's job and ordering is the machine's: on
//! [`Output::Commit`] the driver appends the ledger row (committed, fsync'd),
//! then writes and records the checkpoint, then the round record, and only
//! then feeds [`Input::Committed`] back, which is what lets the machine
//! release the model.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::round::{
    Commit, FederationMachine, Input, OptimizerState, Output, Resume, RoundSummary, SecureRng,
};
use crate::service::{Outbox, SessionEvent};
use crate::settings::Settings;
use crate::store::{
    Checkpoint, LiveStatus, NewLedgerRow, RoundRecord, RoundStatus, Store, write_checkpoint,
};

/// How a federation run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The machine finished (all rounds, or the budget).
    Finished {
        /// Why.
        reason: String,
        /// Whether it ended as planned or by the budget (not by failures).
        success: bool,
        /// Training rounds released in total.
        rounds: u32,
        /// The final model file, if any round was released.
        model: Option<PathBuf>,
    },
    /// Shut down from outside before the federation finished.
    Interrupted,
}

/// The driver of one coordinator.
pub struct Driver {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    store: Store,
    machine: FederationMachine,
    outboxes: HashMap<String, (u64, Outbox)>,
    round_started_ms: HashMap<u64, i64>,
    /// The round started and not yet released or aborted.
    current: Option<RoundSummary>,
}

/// Why a round in progress at shutdown ends unreleased.
pub const SHUTDOWN_REASON: &str = "the coordinator was stopped before the round was committed;                                    nothing of it was released";

/// What the participants' sessions end with when the coordinator stops.
pub const SHUTDOWN_STATUS: &str =
    "the coordinator is shutting down; it resumes from its store when restarted";

use tessera_common::time::now_ms;

impl Driver {
    /// Opens the store and resumes the federation from its last committed round.
    pub fn open(settings: Arc<Settings>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let out = &settings.config.federation.output_dir;
        std::fs::create_dir_all(out.join("checkpoints"))
            .with_context(|| format!("creating {}", out.display()))?;
        let mut store = Store::open(&settings.store)?;
        refuse_non_private_history(&store, &settings)?;
        let resume = resume_from(&store)?;
        settle_interrupted_rounds(&mut store)?;
        if resume.completed_training > 0 || resume.preprocessor.is_some() {
            info!(
                completed_training = resume.completed_training,
                next_round = resume.next_round,
                ledger_events = resume.ledger.len(),
                "resuming the federation from the store"
            );
        }
        let privacy = &settings.config.privacy;
        let noise_rng: SecureRng = match privacy.insecure_noise_seed {
            Some(seed) => {
                warn!(
                    seed,
                    "THE NOISE IS SEEDED: this run is NOT private (simulations only)"
                );
                Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed))
            }
            None => Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
        };
        let rng: SecureRng = Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng()));
        if privacy.enabled {
            let eps =
                crate::budget::ledger_epsilon(&resume.ledger, privacy.delta, privacy.accountant)
                    .unwrap_or(f64::NAN);
            metrics.set_epsilon_spent(eps);
            info!(
                noise_multiplier = settings.noise_multiplier,
                clip_norm = settings.config.training.clip_norm,
                adaptive_clipping = settings.config.training.adaptive_clipping,
                update_noise_multiplier = settings.update_noise_multiplier,
                clip_count_noise_multiplier = settings.clip_count_noise_multiplier,
                delta = privacy.delta,
                max_epsilon = ?settings.max_epsilon,
                spent = eps,
                "differential privacy on"
            );
        } else {
            warn!("differential privacy is OFF: released models carry no privacy guarantee");
        }
        if !settings.config.secagg.enabled {
            warn!(
                "secure aggregation is OFF: the coordinator sees each participant's update (comparisons only)"
            );
        }
        let optimizer_state = match store.meta(META_OPTIMIZER_STATE)? {
            Some(text) => Some(
                serde_json::from_str::<OptimizerState>(&text)
                    .with_context(|| "stored server optimizer state".to_string())?,
            ),
            None => None,
        };
        let machine = settings
            .machine(resume, optimizer_state.as_ref(), rng, noise_rng)
            .map_err(|e| anyhow::anyhow!("cannot resume the server optimizer: {e}"))?;
        Ok(Self {
            settings,
            metrics,
            store,
            machine,
            outboxes: HashMap::new(),
            round_started_ms: HashMap::new(),
            current: None,
        })
    }

    /// Runs until the federation finishes, the session events end, or
    /// `shutdown` resolves. On shutdown a round in progress is recorded as
    /// aborted (nothing of it was released: a release is committed within
    /// one step of this loop, never across an await), its cohort is told,
    /// every session is closed with [`SHUTDOWN_STATUS`], and the store is
    /// closed when the driver is dropped.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<SessionEvent>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Outcome> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.machine.start(Instant::now());
        loop {
            if let Some(outcome) = self.drain_outputs()? {
                return Ok(outcome);
            }
            self.write_live_status();
            let deadline = self.machine.poll_timeout();
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return Ok(Outcome::Interrupted) };
                    self.on_event(ev);
                }
                _ = sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                }
                () = &mut shutdown => {
                    self.stop()?;
                    return Ok(Outcome::Interrupted);
                }
            }
        }
    }

    /// Ends the round in progress unreleased, tells its cohort, closes every
    /// session and records the coordinator as stopped.
    fn stop(&mut self) -> anyhow::Result<()> {
        use tessera_proto::v1::{self, coordinator_message::Body};
        if let Some(mut s) = self.current.take() {
            s.reason = Some(SHUTDOWN_REASON.to_owned());
            let started = self
                .round_started_ms
                .remove(&s.round)
                .unwrap_or_else(now_ms);
            self.record(&s, RoundStatus::Aborted, started, Some(now_ms()))?;
            self.metrics.round_aborted();
            self.append_metrics_line(&s, "aborted", None, None)?;
            for name in &s.cohort {
                self.send(
                    name,
                    v1::CoordinatorMessage {
                        body: Some(Body::Result(v1::RoundResult {
                            round: s.round,
                            completed: false,
                            reason: SHUTDOWN_REASON.to_owned(),
                            contributors: 0,
                            epsilon: 0.0,
                        })),
                    },
                );
            }
            info!(
                round = s.round,
                "round in progress aborted: the coordinator is stopping"
            );
        }
        for (_, (_, outbox)) in self.outboxes.drain() {
            let _ = outbox.try_send(Err(tonic::Status::unavailable(SHUTDOWN_STATUS)));
        }
        self.metrics.set_participants_connected(0);
        let status = LiveStatus {
            current_round: None,
            training_round: None,
            stage: "stopped".to_owned(),
            connected: 0,
            pid: std::process::id(),
            updated_at_ms: now_ms(),
        };
        self.store.set_live_status(&status)?;
        info!("coordinator stopped cleanly; `serve` resumes the federation from its store");
        Ok(())
    }

    fn on_event(&mut self, ev: SessionEvent) {
        let now = Instant::now();
        match ev {
            SessionEvent::Connected {
                name,
                session,
                certificate,
                outbox,
            } => {
                if let Err(e) = self.store.participant_seen(&name, now_ms()) {
                    warn!(error = %e, "cannot record participant");
                }
                self.outboxes.insert(name.clone(), (session, outbox));
                self.machine.handle(
                    now,
                    Input::Connected {
                        name,
                        session,
                        certificate,
                    },
                );
                self.metrics
                    .set_participants_connected(self.outboxes.len() as u64);
            }
            SessionEvent::Message {
                name,
                session,
                message,
            } => self.machine.handle(
                now,
                Input::Message {
                    name,
                    session,
                    message,
                },
            ),
            SessionEvent::Disconnected {
                name,
                session,
                error,
            } => {
                if self.outboxes.get(&name).map(|(s, _)| *s) == Some(session) {
                    self.outboxes.remove(&name);
                }
                if let Some(e) = error {
                    info!(participant = %name, error = %e, "session ended with an error");
                }
                self.machine
                    .handle(now, Input::Disconnected { name, session });
                self.metrics
                    .set_participants_connected(self.outboxes.len() as u64);
            }
        }
    }

    fn drain_outputs(&mut self) -> anyhow::Result<Option<Outcome>> {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Send { to, message } => self.send(&to, message),
                Output::RoundStarted(s) => {
                    let started = now_ms();
                    self.round_started_ms.insert(s.round, started);
                    self.record(&s, RoundStatus::Started, started, None)?;
                    self.current = Some(s);
                }
                Output::RoundAborted(s) => {
                    self.current = None;
                    self.metrics.round_aborted();
                    self.metrics.participants_dropped(s.dropped.len() as u64);
                    let started = self
                        .round_started_ms
                        .remove(&s.round)
                        .unwrap_or_else(now_ms);
                    self.record(&s, RoundStatus::Aborted, started, Some(now_ms()))?;
                    self.append_metrics_line(&s, "aborted", None, None)?;
                }
                Output::Commit(commit) => {
                    self.current = None;
                    let round = commit.summary.round;
                    let next_clip_norm = self.machine.pending_clip_norm();
                    self.commit(*commit, next_clip_norm)?;
                    self.machine
                        .handle(Instant::now(), Input::Committed { round });
                }
                Output::Finished { reason, success } => {
                    let model = self.write_final_model()?;
                    self.store.set_meta("finish_reason", &reason)?;
                    self.write_live_status();
                    let rounds = self.machine.completed_training();
                    // Flush FederationDone to everyone still connected.
                    return Ok(Some(Outcome::Finished {
                        reason,
                        success,
                        rounds,
                        model,
                    }));
                }
            }
        }
        Ok(None)
    }

    fn send(&mut self, to: &str, message: tessera_proto::v1::CoordinatorMessage) {
        let Some((_, outbox)) = self.outboxes.get(to) else {
            return;
        };
        let len = prost::Message::encoded_len(&message) as u64;
        match outbox.try_send(Ok(message)) {
            Ok(()) => self.metrics.add_bytes_sent(len),
            Err(TrySendError::Full(_)) => {
                warn!(participant = %to, "participant is not reading its messages; closing its session");
                if let Some((session, _)) = self.outboxes.remove(to) {
                    self.machine.handle(
                        Instant::now(),
                        Input::Disconnected {
                            name: to.to_owned(),
                            session,
                        },
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn record(
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
    /// next. With adaptive clipping the next round's clip norm is stored
    /// before the checkpoint, so a restart goes on with the adapted C.
    fn commit(&mut self, c: Commit, next_clip_norm: Option<f64>) -> anyhow::Result<()> {
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
        if let Some(clip) = next_clip_norm {
            self.store.set_meta(META_CLIP_NORM, &format!("{clip:?}"))?;
        }
        // The optimizer's state after this round goes with its checkpoint
        // (nothing to keep for a stateless one).
        let state = self.machine.optimizer_state();
        if !state.vectors.is_empty() || state.steps > 0 {
            self.store
                .set_meta(META_OPTIMIZER_STATE, &serde_json::to_string(&state)?)?;
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
            self.store.record_checkpoint(&Checkpoint {
                round: s.round,
                training_round,
                path,
                sha256,
                bytes,
                created_at_ms: now_ms(),
            })?;
        }
        let started = self.round_started_ms.remove(&s.round).unwrap_or(now);
        self.record(s, RoundStatus::Released, started, Some(now_ms()))?;
        self.metrics.round_completed();
        self.metrics.participants_dropped(s.dropped.len() as u64);
        for (phase, secs) in &s.stage_seconds {
            self.metrics
                .observe_stage(*phase, std::time::Duration::from_secs_f64(*secs));
        }
        self.append_metrics_line(s, "released", c.epsilon_after, c.update_norm)?;
        info!(
            round = s.round,
            kind = s.kind.as_str(),
            training_round = ?s.training_round,
            contributors = s.contributors.len(),
            dropped = s.dropped.len(),
            seconds = format!("{:.2}", s.seconds),
            epsilon = ?c.epsilon_after,
            "round released"
        );
        Ok(())
    }

    /// One line per round in `output_dir/rounds.csv`.
    fn append_metrics_line(
        &self,
        s: &RoundSummary,
        status: &str,
        epsilon: Option<f64>,
        update_norm: Option<f64>,
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
                "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm"
            )?;
        }
        writeln!(
            f,
            "{},{},{},{},{},{},{},{:.4},{},{}",
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
        )?;
        Ok(())
    }

    /// Writes the final model to `output_dir/model.safetensors`: the last
    /// checkpoint, or with `training.average_last = K > 1` the average of the
    /// parameters of the last K released models (post-processing of released
    /// models: it costs no privacy, and it averages out part of the noise).
    fn write_final_model(&mut self) -> anyhow::Result<Option<PathBuf>> {
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
            let tail = &all[all.len().saturating_sub(k)..];
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

    fn write_live_status(&mut self) {
        let current = self.machine.current_round();
        let status = LiveStatus {
            current_round: current.map(|c| c.0),
            training_round: current.and_then(|c| c.1),
            stage: match current {
                Some((_, _, stage)) => stage.to_owned(),
                None => self.machine.describe(),
            },
            connected: self.outboxes.len() as u32,
            pid: std::process::id(),
            updated_at_ms: now_ms(),
        };
        if let Err(e) = self.store.set_live_status(&status) {
            error!(error = %e, "cannot write live status");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Store meta key of the adapted clip norm for the next training round.
pub const META_CLIP_NORM: &str = "clip_norm";

/// Store meta key of the server optimizer's state after the last released
/// round (JSON of [`OptimizerState`]; absent for a stateless optimizer).
pub const META_OPTIMIZER_STATE: &str = "optimizer_state";

/// Settles the records of rounds a previous coordinator left as `started`:
/// the round of the latest checkpoint was committed (its ledger row and
/// checkpoint are durable, its model goes out on resume), so it is
/// `released`; any other was interrupted before its commit and released
/// nothing, so it is `aborted`.
pub fn settle_interrupted_rounds(store: &mut Store) -> anyhow::Result<()> {
    let committed = store.latest_checkpoint()?.map(|c| c.round);
    for mut r in store.rounds()? {
        if r.status != RoundStatus::Started {
            continue;
        }
        if Some(r.round) == committed {
            r.status = RoundStatus::Released;
        } else {
            r.status = RoundStatus::Aborted;
            r.reason =
                Some("interrupted: the coordinator stopped before the round was committed".into());
        }
        r.ended_at_ms = Some(now_ms());
        store.record_round(&r)?;
    }
    Ok(())
}

/// A private federation (DP on, noise not seeded) refuses a store that
/// released rounds without privacy: the ledger's ε would not count them,
/// so resuming would report a guarantee the released models do not have.
pub fn refuse_non_private_history(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    if !settings.config.privacy.enabled || settings.not_private {
        return Ok(());
    }
    let rounds = store.non_private_releases()?;
    if rounds.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = rounds.iter().take(10).map(u64::to_string).collect();
    anyhow::bail!(
        "the store {} holds {} round(s) released without privacy (DP off or seeded noise: round {}{}); \
         a private federation cannot resume it, because its ε would not count them. \
         Start the private federation on a new store (`federation.store` or a new output_dir)",
        settings.store.display(),
        rounds.len(),
        list.join(", "),
        if rounds.len() > 10 { ", …" } else { "" }
    )
}

/// Reads where the federation stood from the store.
pub fn resume_from(store: &Store) -> anyhow::Result<Resume> {
    let ledger = store.privacy_events()?;
    let last_ledger = store.last_ledger_round()?.unwrap_or(0);
    let last_round = store.rounds()?.iter().map(|r| r.round).max().unwrap_or(0);
    let clip_norm = match store.meta(META_CLIP_NORM)? {
        Some(text) => Some(
            text.parse::<f64>()
                .with_context(|| format!("stored clip norm `{text}`"))?,
        ),
        None => None,
    };
    let mut resume = Resume {
        next_round: last_ledger.max(last_round) + 1,
        ledger,
        clip_norm,
        ..Resume::default()
    };
    if let Some(cp) = store.latest_checkpoint()? {
        store.verify_checkpoint(&cp)?;
        let model = tessera_model::read_model(&cp.path)
            .with_context(|| format!("reading checkpoint {}", cp.path.display()))?;
        resume.completed_training = cp.training_round;
        resume.model = Some(model.params);
        resume.preprocessor = Some(model.preprocessor);
    }
    Ok(resume)
}
