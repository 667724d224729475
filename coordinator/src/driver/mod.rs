//! The driver: a tokio task that owns the [`FederationMachine`], feeds it
//! session events and the passing of time, and carries out its outputs —
//! sending messages and making rounds durable in the store.
//!
//! Durability is the driver's job and ordering is the machine's: on
//! [`Output::Commit`] the driver appends the ledger row (committed, fsync'd),
//! then writes and records the checkpoint, then the round record, and only
//! then feeds [`Input::Committed`] back, which is what lets the machine
//! release the model.
//!
//! The parts: [`admission`] (who may hold a session), [`durable`] (what is
//! written to the store and the output directory), [`resume`] (where a
//! restarted coordinator stands).

pub mod admission;
pub mod durable;
mod live;
pub mod queries;
pub mod resume;
pub mod rounds_csv;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::round::{FederationMachine, Input, OptimizerState, Output, RoundSummary, SecureRng};
use crate::service::{Outbox, SessionEvent};
use crate::settings::Settings;
use crate::store::{LiveStatus, RoundStatus, Store};
use admission::{Admission, Admit};
use live::LiveStatusWriter;
pub use resume::{
    META_CLIP_NORM, META_OPTIMIZER_STATE, refuse_non_private_history, resume_from,
    settle_interrupted_rounds,
};
use tessera_proto::v1::ParticipantMessage;

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
    admission: Admission,
    live: LiveStatusWriter,
    /// The leaf certificate of each open session (checked on CRL reloads).
    sessions_certificates: HashMap<String, Vec<u8>>,
    /// Second sessions waiting for the round in progress to end.
    parked: HashMap<String, Parked>,
    /// Analytics queries: operator requests and who waits for answers.
    queries: queries::QueryDesk,
}

/// A second session under a name whose first session is in the round in
/// progress: it waits (its messages kept, up to [`MAX_PARKED_MESSAGES`])
/// and replaces the first once that round ends or the first closes.
struct Parked {
    session: u64,
    certificate: Vec<u8>,
    outbox: Outbox,
    messages: Vec<ParticipantMessage>,
}

/// Messages kept of a waiting session (a hello, a budget); more are dropped.
const MAX_PARKED_MESSAGES: usize = 8;

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
        rounds_csv::repair(&out.join("rounds.csv"), &store)?;
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
            admission: Admission::default(),
            live: LiveStatusWriter::default(),
            sessions_certificates: HashMap::new(),
            parked: HashMap::new(),
            queries: queries::QueryDesk::default(),
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
        self.queue_configured_queries()?;
        self.machine.start(Instant::now());
        loop {
            if let Some(outcome) = self.drain_outputs()? {
                return Ok(outcome);
            }
            if !self.parked.is_empty() {
                self.admit_parked();
                if let Some(outcome) = self.drain_outputs()? {
                    return Ok(outcome);
                }
            }
            self.write_live_status();
            let deadline = self.machine.poll_timeout();
            // A deferred live-status refresh wakes the loop too (see `live`).
            let wake = match (deadline, self.live.refresh_at()) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            };
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return Ok(Outcome::Interrupted) };
                    self.on_event(ev);
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        self.machine.handle_timeout(now);
                    }
                }
                Some(request) = queries::next_request(&mut self.queries) => {
                    self.operator_query(request);
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
            self.record_abort(&s)?;
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
        self.sessions_certificates.clear();
        for (_, p) in self.parked.drain() {
            let _ = p
                .outbox
                .try_send(Err(tonic::Status::unavailable(SHUTDOWN_STATUS)));
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
            site_budgets: Vec::new(),
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
                let open_elsewhere = self
                    .outboxes
                    .get(&name)
                    .is_some_and(|(_, o)| !o.is_closed());
                match self.admission.decide(
                    &name,
                    &certificate,
                    open_elsewhere,
                    self.in_current_round(&name),
                ) {
                    Admit::Refuse(status) => {
                        warn!(participant = %name, session, reason = status.message(), "session refused");
                        let _ = outbox.try_send(Err(status));
                    }
                    Admit::Defer => {
                        info!(participant = %name, session, "a second session waits until the round in progress ends");
                        let parked = Parked {
                            session,
                            certificate,
                            outbox,
                            messages: Vec::new(),
                        };
                        if let Some(older) = self.parked.insert(name, parked) {
                            let _ = older.outbox.try_send(Err(tonic::Status::unavailable(
                                "replaced by a newer session under the same name",
                            )));
                        }
                    }
                    Admit::Accept => self.accept(name, session, certificate, outbox, Vec::new()),
                }
            }
            SessionEvent::Message {
                name,
                session,
                message,
                upload: _upload,
            } => {
                if let Some(p) = self.parked.get_mut(&name).filter(|p| p.session == session) {
                    if p.messages.len() < MAX_PARKED_MESSAGES {
                        p.messages.push(message);
                    }
                    return;
                }
                self.machine.handle(
                    now,
                    Input::Message {
                        name,
                        session,
                        message,
                    },
                )
            }
            SessionEvent::Revoked { serials } => {
                self.admission.set_revoked(serials);
                let revoked: Vec<String> = self
                    .sessions_certificates
                    .iter()
                    .filter(|(_, cert)| self.admission.is_revoked(cert))
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in revoked {
                    self.close_session(
                        &name,
                        tonic::Status::permission_denied(format!(
                            "the certificate of `{name}` was revoked by the federation CA"
                        )),
                        "certificate revoked",
                    );
                }
                let admission = &self.admission;
                self.parked.retain(|_, p| {
                    let keep = !admission.is_revoked(&p.certificate);
                    if !keep {
                        let _ = p.outbox.try_send(Err(tonic::Status::permission_denied(
                            "this certificate was revoked by the federation CA",
                        )));
                    }
                    keep
                });
            }
            SessionEvent::Disconnected {
                name,
                session,
                error,
            } => {
                if self.parked.get(&name).is_some_and(|p| p.session == session) {
                    self.parked.remove(&name);
                    return;
                }
                if self.outboxes.get(&name).map(|(s, _)| *s) == Some(session) {
                    self.outboxes.remove(&name);
                    self.sessions_certificates.remove(&name);
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

    /// Whether `name` is in the cohort of the round in progress.
    fn in_current_round(&self, name: &str) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.cohort.iter().any(|n| n == name))
    }

    /// Lets a session in: it replaces any earlier session under its name.
    fn accept(
        &mut self,
        name: String,
        session: u64,
        certificate: Vec<u8>,
        outbox: Outbox,
        messages: Vec<ParticipantMessage>,
    ) {
        let now = Instant::now();
        if let Err(e) = self.store.participant_seen(&name, now_ms()) {
            warn!(error = %e, "cannot record participant");
        }
        self.outboxes.insert(name.clone(), (session, outbox));
        self.sessions_certificates
            .insert(name.clone(), certificate.clone());
        self.machine.handle(
            now,
            Input::Connected {
                name: name.clone(),
                session,
                certificate,
            },
        );
        for message in messages {
            self.machine.handle(
                now,
                Input::Message {
                    name: name.clone(),
                    session,
                    message,
                },
            );
        }
        self.metrics
            .set_participants_connected(self.outboxes.len() as u64);
    }

    /// Lets in the parked sessions whose name is no longer held by an open
    /// session in the round in progress.
    fn admit_parked(&mut self) {
        let ready: Vec<String> = self
            .parked
            .keys()
            .filter(|n| {
                let open = self.outboxes.get(*n).is_some_and(|(_, o)| !o.is_closed());
                !(open && self.in_current_round(n))
            })
            .cloned()
            .collect();
        for name in ready {
            if let Some(p) = self.parked.remove(&name) {
                info!(participant = %name, session = p.session, "the waiting session replaces the earlier one");
                if let Some((_, old)) = self.outboxes.get(&name) {
                    let _ = old.try_send(Err(tonic::Status::unavailable(
                        "replaced by a newer session under the same name",
                    )));
                }
                self.accept(name, p.session, p.certificate, p.outbox, p.messages);
            }
        }
    }

    /// Closes `name`'s session with `status` and takes it out of the round.
    fn close_session(&mut self, name: &str, status: tonic::Status, why: &str) {
        self.sessions_certificates.remove(name);
        if let Some((session, outbox)) = self.outboxes.remove(name) {
            warn!(participant = %name, reason = why, "closing the participant's session");
            let _ = outbox.try_send(Err(status));
            self.machine.handle(
                Instant::now(),
                Input::Disconnected {
                    name: name.to_owned(),
                    session,
                },
            );
            self.metrics
                .set_participants_connected(self.outboxes.len() as u64);
        }
    }

    fn drain_outputs(&mut self) -> anyhow::Result<Option<Outcome>> {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Send { to, message } => self.send(&to, *message),

                Output::RoundStarted(s) => {
                    let started = now_ms();
                    self.round_started_ms.insert(s.round, started);
                    self.record(&s, RoundStatus::Started, started, None)?;
                    self.current = Some(s);
                }
                Output::RoundAborted(s) => {
                    self.current = None;
                    self.metrics.participants_dropped(s.dropped.len() as u64);
                    self.record_abort(&s)?;
                }
                Output::Commit(commit) => {
                    self.current = None;
                    for (name, reason) in &commit.excluded {
                        warn!(participant = %name, %reason, "participant excluded from the federation");
                        self.admission.exclude(name, reason);
                        self.close_session(
                            name,
                            tonic::Status::permission_denied(format!(
                                "participant `{name}` is excluded from this federation: {reason}"
                            )),
                            "excluded",
                        );
                    }
                    let round = commit.summary.round;
                    let next_clip_norm = self.machine.pending_clip_norm();
                    self.commit(*commit, next_clip_norm)?;
                    // Sessions that waited for this round to end get in
                    // before the next round's cohort is drawn.
                    self.admit_parked();
                    self.machine
                        .handle(Instant::now(), Input::Committed { round });
                }
                Output::QueryReleased(r) => self.query_released(*r)?,
                Output::QueryFailed(f) => self.query_failed(*f)?,
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
                self.sessions_certificates.remove(to);
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
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
