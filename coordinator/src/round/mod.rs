//! The federation machine: a sans-IO state machine that runs a whole
//! federation — waiting for participants, the statistics aggregation, the
//! training rounds, the privacy budget — and owns no socket, clock, thread
//! or database.
//!
//! Contract (after quinn-proto's `Connection`):
//! - feed what happens with [`FederationMachine::handle`] and the passing of
//!   time with [`FederationMachine::handle_timeout`]; time is an argument and
//!   must not go backwards;
//! - take what to do with [`FederationMachine::poll_output`] until it
//!   returns `None`;
//! - sleep until [`FederationMachine::poll_timeout`].
//!
//! Ordering rule of a round (the write-ahead rule of the privacy ledger):
//! unmasked sum → integer noise → decoded average → [`Output::Commit`] (the
//! driver writes the ledger row, then the checkpoint) → [`Input::Committed`]
//! → only then is the new model sent to anyone (in the next round's
//! announcement) or written as the final model. A crash at any point
//! therefore leaves a ledger that counts at least what was released.

pub mod aggregation;
pub mod cohort;
pub mod io;

#[cfg(test)]
mod adaptive_tests;
#[cfg(test)]
mod privacy_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rand_core::CryptoRng;
use tessera_model::{LocalStats, ModelFile, Preprocessor};
use tessera_privacy::PrivacyEvent;
use tessera_proto::chunk;
use tessera_proto::v1::{
    self, ChunkPurpose, CoordinatorMessage, coordinator_message::Body as Out,
    participant_message::Body as In,
};
use tessera_secagg::{self as sa, FixedPoint};
use tracing::{debug, info, warn};

use crate::budget;
use crate::settings::Settings;
use aggregation::{Aggregation, AggregationSpec, Stage, Step};
pub use io::{Commit, Input, Kind, LedgerEntry, Output, RoundSummary};

/// A boxed cryptographically secure RNG.
pub type SecureRng = Box<dyn CryptoRng + Send>;

/// Where a federation stood when the coordinator last stopped.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Next aggregation number (never reused).
    pub next_round: u64,
    /// Training rounds released so far.
    pub completed_training: u32,
    /// The last released model, if any.
    pub model: Option<Vec<f32>>,
    /// The pooled preprocessing, if the statistics were released.
    pub preprocessor: Option<Preprocessor>,
    /// Privacy events in the ledger.
    pub ledger: Vec<PrivacyEvent>,
    /// Adaptive clipping: the clip norm of the next training round, as
    /// adapted by the last released one (None: the configured initial C).
    pub clip_norm: Option<f64>,
}

#[derive(Debug)]
struct SessionInfo {
    id: u64,
    certificate: Vec<u8>,
}

#[derive(Debug)]
struct PendingRelease {
    round: u64,
    model: Option<Vec<f32>>,
    preprocessor: Option<Preprocessor>,
    event: Option<PrivacyEvent>,
    training: bool,
    cohort: Vec<String>,
    contributors: u32,
    epsilon_after: Option<f64>,
    /// Adaptive clipping: C for the next training round.
    next_clip_norm: Option<f64>,
}

#[derive(Debug)]
enum State {
    /// Waiting for enough participants (since when enough were there).
    Waiting { ready_since: Option<Instant> },
    /// An aggregation is running.
    Running(Box<Aggregation>),
    /// Waiting for the driver to make a round durable.
    Committing(Box<PendingRelease>),
    /// Over.
    Finished,
}

/// How long, before the first round, to wait for the rest of an allow-list
/// (or, without one, for late joiners) once `min_participants` are there.
/// Later rounds start as soon as enough participants are available.
const JOIN_GRACE: Duration = Duration::from_secs(3);

/// The coordinator's federation state machine.
pub struct FederationMachine {
    settings: Arc<Settings>,
    sessions: BTreeMap<String, SessionInfo>,
    rejected: BTreeSet<String>,
    state: State,
    next_round: u64,
    completed_training: u32,
    model: Option<Vec<f32>>,
    preprocessor: Option<Preprocessor>,
    ledger: Vec<PrivacyEvent>,
    /// Clip norm C of the next training round (adapted with adaptive clipping).
    clip_norm: f64,
    failed_in_row: u32,
    /// Whether this machine has started a round (the join grace is over).
    started_any: bool,
    outputs: VecDeque<Output>,
    rng: SecureRng,
    noise_rng: SecureRng,
}

impl std::fmt::Debug for FederationMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationMachine")
            .field("state", &self.state)
            .field("next_round", &self.next_round)
            .field("completed_training", &self.completed_training)
            .finish_non_exhaustive()
    }
}

impl FederationMachine {
    /// A machine resuming from `resume` (use `Resume::default()` for a new
    /// federation). `rng` drives cohort sampling and graph seeds; `noise_rng`
    /// draws the privacy noise (a CSPRNG; seeded only in simulations).
    pub fn new(
        settings: Arc<Settings>,
        resume: Resume,
        rng: SecureRng,
        noise_rng: SecureRng,
    ) -> Self {
        let training = &settings.config.training;
        let clip_norm = match resume.clip_norm {
            Some(c) if training.adaptive_clipping && c.is_finite() && c > 0.0 => c,
            _ => training.clip_norm,
        };
        Self {
            clip_norm,
            settings,
            sessions: BTreeMap::new(),
            rejected: BTreeSet::new(),
            state: State::Waiting { ready_since: None },
            next_round: resume.next_round.max(1),
            completed_training: resume.completed_training,
            model: resume.model,
            preprocessor: resume.preprocessor,
            ledger: resume.ledger,
            failed_in_row: 0,
            started_any: false,
            outputs: VecDeque::new(),
            rng,
            noise_rng,
        }
    }

    /// Training rounds released so far.
    pub fn completed_training(&self) -> u32 {
        self.completed_training
    }

    /// The clip norm C the next training round will announce (the configured
    /// one, or with adaptive clipping the one adapted so far).
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// While a round is being committed: the clip norm adaptive clipping
    /// chose for the next training round, to be stored with the round so a
    /// restarted coordinator goes on from it.
    pub fn pending_clip_norm(&self) -> Option<f64> {
        match &self.state {
            State::Committing(p) => p.next_clip_norm,
            _ => None,
        }
    }

    /// Names of connected participants.
    pub fn connected(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// A short description of what the machine is doing, for status.
    pub fn describe(&self) -> String {
        match &self.state {
            State::Waiting { .. } => "waiting for participants".into(),
            State::Running(a) => format!(
                "round {} ({} {}) stage {}",
                a.round,
                a.kind.as_str(),
                a.training_round,
                a.stage().name()
            ),
            State::Committing(p) => format!("committing round {}", p.round),
            State::Finished => "finished".into(),
        }
    }

    /// The aggregation in progress: number, training round (None for
    /// statistics) and stage name.
    pub fn current_round(&self) -> Option<(u64, Option<u32>, &'static str)> {
        match &self.state {
            State::Running(a) => Some((
                a.round,
                (a.kind == Kind::Training).then_some(a.training_round),
                a.stage().name(),
            )),
            State::Committing(p) => Some((p.round, None, "commit")),
            _ => None,
        }
    }

    /// Whether the federation is over.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant the machine wants [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Running(a) => Some(a.deadline),
            State::Waiting {
                ready_since: Some(t),
            } => Some(*t + JOIN_GRACE),
            _ => None,
        }
    }

    /// Starts the machine: it may begin a round at once if it can.
    pub fn start(&mut self, now: Instant) {
        if self.completed_training >= self.settings.config.federation.rounds {
            self.finish(
                format!(
                    "all {} planned rounds were already completed",
                    self.settings.config.federation.rounds
                ),
                true,
            );
            return;
        }
        self.maybe_start_round(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Running(a) if now >= a.deadline => {
                info!(
                    round = a.round,
                    stage = a.stage().name(),
                    "stage deadline passed; closing the stage with the participants that answered"
                );
                self.close_stage(now);
            }
            State::Waiting { .. } => self.maybe_start_round(now),
            _ => {}
        }
    }

    /// Something happened.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected {
                name,
                session,
                certificate,
            } => {
                if self
                    .sessions
                    .insert(
                        name.clone(),
                        SessionInfo {
                            id: session,
                            certificate,
                        },
                    )
                    .is_some()
                {
                    info!(participant = %name, "participant reconnected; its earlier session is replaced");
                    self.participant_lost(now, &name, "reconnected with a new session");
                } else {
                    info!(participant = %name, connected = self.sessions.len(), "participant joined");
                }
                self.rejected.remove(&name);
                self.outputs.push_back(Output::Send {
                    to: name.clone(),
                    message: CoordinatorMessage {
                        body: Some(Out::Welcome(v1::Welcome {
                            protocol_version: tessera_proto::PROTOCOL_VERSION,
                            participant_name: name,
                            federation: self.settings.config.federation.name.clone(),
                            task: Some(task_to_wire(&self.settings.task)),
                        })),
                    },
                });
                if matches!(self.state, State::Waiting { .. }) {
                    self.maybe_start_round(now);
                }
            }
            Input::Disconnected { name, session } => {
                if self.sessions.get(&name).map(|s| s.id) == Some(session) {
                    self.sessions.remove(&name);
                    info!(participant = %name, connected = self.sessions.len(), "participant left");
                    self.participant_lost(now, &name, "disconnected");
                }
            }
            Input::Message {
                name,
                session,
                message,
            } => {
                if self.sessions.get(&name).map(|s| s.id) != Some(session) {
                    debug!(participant = %name, "message from a replaced session ignored");
                    return;
                }
                let Some(body) = message.body else {
                    warn!(participant = %name, "empty message ignored");
                    return;
                };
                self.handle_message(now, &name, body);
            }
            Input::Committed { round } => self.committed(now, round),
        }
    }

    fn handle_message(&mut self, now: Instant, name: &str, body: In) {
        match &body {
            In::Hello(h) => {
                if h.protocol_version != tessera_proto::PROTOCOL_VERSION {
                    warn!(participant = %name, version = h.protocol_version, "participant speaks another protocol version");
                }
                return;
            }
            In::TaskRejected(r) => {
                let (code, reason) = tessera_proto::reasons::reject_of(r);
                warn!(participant = %name, code = code.as_str_name(), %reason, "participant cannot serve the task; carrying on without it");
                self.rejected.insert(name.to_owned());
                self.participant_lost(now, name, "rejected the task");
                return;
            }
            _ => {}
        }
        let State::Running(agg) = &mut self.state else {
            debug!(participant = %name, message = aggregation::body_name(&body), "message outside a round ignored");
            return;
        };
        let Some(index) = agg.index_of(name) else {
            warn!(participant = %name, round = agg.round, message = aggregation::body_name(&body), "message from a participant not in this round's cohort refused");
            return;
        };
        if let In::RoundReply(reply) = &body {
            if reply.round != agg.round {
                warn!(participant = %name, got = reply.round, expected = agg.round, "reply for another round refused");
                return;
            }
            if reply.accept {
                agg.accept(index);
            } else {
                let (code, reason) = tessera_proto::reasons::decline_of(reply);
                info!(participant = %name, round = agg.round, code = code.as_str_name(), %reason, "participant declined the round");
                agg.drop_participant(index);
            }
        } else if let Err(refusal) = agg.handle(index, &body) {
            warn!(participant = %name, round = agg.round, fatal = refusal.fatal, reason = %refusal.reason, "message refused");
            if refusal.fatal {
                agg.drop_participant(index);
            }
        }
        if let State::Running(agg) = &self.state
            && agg.stage_complete()
        {
            self.close_stage(now);
        }
    }

    fn participant_lost(&mut self, now: Instant, name: &str, why: &str) {
        if let State::Running(agg) = &mut self.state
            && let Some(index) = agg.index_of(name)
        {
            info!(participant = %name, round = agg.round, stage = agg.stage().name(), "participant dropped from the round: {why}");
            agg.drop_participant(index);
            if agg.stage_complete() {
                self.close_stage(now);
            }
        }
    }

    fn eligible(&self) -> Vec<String> {
        self.sessions
            .keys()
            .filter(|n| !self.rejected.contains(*n))
            .cloned()
            .collect()
    }

    fn maybe_start_round(&mut self, now: Instant) {
        if !matches!(self.state, State::Waiting { .. }) {
            return;
        }
        let eligible = self.eligible();
        let State::Waiting { ready_since } = &mut self.state else {
            return;
        };
        let fed = &self.settings.config.federation;
        if eligible.len() < fed.min_participants {
            *ready_since = None;
            return;
        }
        let since = *ready_since.get_or_insert(now);
        let everyone_here = match &fed.allow {
            Some(allow) => allow.iter().all(|n| eligible.contains(n)),
            None => false,
        };
        let first = !self.started_any;
        if first && !everyone_here && now < since + JOIN_GRACE {
            return;
        }
        self.started_any = true;
        self.start_round(now, eligible);
    }

    fn finish(&mut self, reason: String, success: bool) {
        info!(%reason, "federation finished");
        self.state = State::Finished;
        for name in self.sessions.keys() {
            self.outputs.push_back(Output::Send {
                to: name.clone(),
                message: CoordinatorMessage {
                    body: Some(Out::Done(v1::FederationDone {
                        reason: reason.clone(),
                        completed_rounds: self.completed_training,
                    })),
                },
            });
        }
        self.outputs.push_back(Output::Finished { reason, success });
    }

    fn dp(&self) -> bool {
        self.settings.config.privacy.enabled
    }

    fn start_round(&mut self, now: Instant, eligible: Vec<String>) {
        let s = Arc::clone(&self.settings);
        let kind = if self.preprocessor.is_none() {
            Kind::Statistics
        } else {
            Kind::Training
        };
        let training_round = match kind {
            Kind::Statistics => 0,
            Kind::Training => self.completed_training + 1,
        };
        let privacy = &s.config.privacy;
        let secure = s.config.secagg.enabled;
        let min_cohort = s
            .config
            .federation
            .min_participants
            .max(if secure { 3 } else { 1 });
        // Cohort selection. Under Poisson sampling a draw below the minimum is
        // discarded and another drawn; the ledger accounts what that does
        // (see `tessera_privacy::sampling`).
        let q = if kind == Kind::Training && self.dp() {
            privacy.sampling_rate
        } else {
            1.0
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
        let adaptive = kind == Kind::Training && s.config.training.adaptive_clipping;
        let layout = match self.layout(kind, n) {
            Ok(l) => l,
            Err(reason) => {
                self.finish(reason, false);
                return;
            }
        };
        let (dim, encoding) = (layout.dim, layout.encoding);
        // The round's ledger event: σ, the rate a released round includes a
        // site with (≥ q under sampling), and its total-variation slack.
        let next_event = {
            let (sigma, rate, sampling_tv) = match (kind, sampled) {
                (Kind::Statistics, _) => (privacy.statistics_noise_multiplier, 1.0, 0.0),
                (Kind::Training, Some(r)) => (s.noise_multiplier, r.inclusion_rate, r.tv_slack),
                (Kind::Training, None) => (s.noise_multiplier, 1.0, 0.0),
            };
            PrivacyEvent::gaussian(sigma, rate, 1).with_tv_slack(layout.tv_slack + sampling_tv)
        };
        if self.dp() {
            // The slack must be negligible: the calibration leaves δ/1000 for it.
            let eps_ref = s.max_epsilon.unwrap_or(DEFAULT_SLACK_EPSILON);
            let planned = s.config.federation.rounds;
            if !tessera_privacy::sampling::negligible(
                next_event.tv_slack(),
                planned + 1,
                privacy.delta,
                eps_ref,
            ) {
                let why = match sampled {
                    Some(r) if r.tv_slack > layout.tv_slack => format!(
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
                        layout.tv_slack, privacy.delta
                    ),
                };
                self.finish(why, false);
                return;
            }
            // The budget: never start a round whose release would take ε past it.
            if let Some(max_eps) = s.max_epsilon {
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
        let indices: Vec<u32> = (1..=n as u32).collect();
        let secure_params = if secure {
            let mut graph_seed = [0u8; 32];
            self.rng.fill_bytes(&mut graph_seed);
            match secagg_params(
                round,
                indices,
                dim,
                encoding.modulus_bits,
                s.config.secagg.dropout_tolerance,
                graph_seed,
                s.config.secagg.signed_keys,
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
        } else {
            None
        };
        let first_deadline = now
            + if secure {
                s.stage_deadline()
            } else {
                s.training_deadline()
            };
        let spec = AggregationSpec {
            round,
            kind,
            training_round,
            cohort: cohort.clone(),
            dim,
            encoding,
            secure: secure_params.clone(),
            first_deadline,
            expected_cohort,
            event: next_event,
        };
        let agg = match Aggregation::new(spec, now) {
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
            secure,
            "round started"
        );
        self.outputs.push_back(Output::RoundStarted(RoundSummary {
            round,
            training_round: (kind == Kind::Training).then_some(training_round),
            kind,
            cohort: cohort.clone(),
            contributors: vec![],
            dropped: vec![],
            reason: None,
            stage_seconds: vec![],
            seconds: 0.0,
        }));
        // Announce, then the model.
        let members: Vec<v1::CohortMember> = cohort
            .iter()
            .enumerate()
            .map(|(i, name)| v1::CohortMember {
                index: i as u32 + 1,
                name: name.clone(),
                certificate: if s.config.secagg.signed_keys {
                    self.sessions
                        .get(name)
                        .map(|x| x.certificate.clone())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let model_chunks = match (kind, &self.model) {
            (Kind::Training, Some(m)) => chunk::split(round, ChunkPurpose::Model, m),
            _ => Vec::new(),
        };
        for (i, name) in cohort.iter().enumerate() {
            let announce = v1::RoundAnnounce {
                round,
                kind: match kind {
                    Kind::Statistics => v1::AggregationKind::Statistics as i32,
                    Kind::Training => v1::AggregationKind::Training as i32,
                },
                training_round,
                planned_rounds: s.config.federation.rounds,
                dimension: dim as u64,
                training: Some(v1::TrainingSettings {
                    local_epochs: s.config.training.local_epochs,
                    learning_rate: s.config.training.learning_rate,
                    batch_size: s.config.training.batch_size,
                    shuffle_seed: s.config.training.seed
                        ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                }),
                privacy: Some(v1::PrivacyTerms {
                    enabled: self.dp(),
                    noise_multiplier: match kind {
                        Kind::Statistics if self.dp() => privacy.statistics_noise_multiplier,
                        Kind::Training => s.noise_multiplier,
                        _ => 0.0,
                    },
                    clip_norm: match kind {
                        Kind::Statistics => statistics_sensitivity(&s),
                        Kind::Training => self.clip_norm,
                    },
                    sampling_rate: q,
                    delta: privacy.delta,
                    adaptive_clipping: adaptive,
                    update_noise_multiplier: if adaptive {
                        s.update_noise_multiplier
                    } else {
                        0.0
                    },
                    clip_count_noise_multiplier: if adaptive {
                        s.clip_count_noise_multiplier
                    } else {
                        0.0
                    },
                    not_private: s.not_private,
                }),
                secagg: secure_params.as_ref().map(|p| v1::SecAggSetup {
                    my_index: i as u32 + 1,
                    cohort: members.clone(),
                    threshold: p.threshold as u32,
                    neighbours: p.neighbours as u32,
                    graph_seed: p.graph_seed.to_vec(),
                    signed_keys: p.signed_keys,
                }),
                encoding: Some(v1::Encoding {
                    scale_bits: encoding.scale_bits,
                    modulus_bits: encoding.modulus_bits,
                }),
                preprocessing: self.preprocessor.as_ref().map(|p| v1::Preprocessing {
                    mean: p.mean.clone(),
                    std: p.std.clone(),
                    indicator: p.indicator.clone(),
                }),
                statistics_bounds: if kind == Kind::Statistics && self.dp() {
                    s.statistics_bounds.as_ref().map(|b| v1::StatisticsBounds {
                        lo: b.lo.clone(),
                        hi: b.hi.clone(),
                        max_rows: b.max_rows,
                    })
                } else {
                    None
                },
            };
            self.outputs.push_back(Output::Send {
                to: name.clone(),
                message: CoordinatorMessage {
                    body: Some(Out::Announce(announce)),
                },
            });
            for c in &model_chunks {
                self.outputs.push_back(Output::Send {
                    to: name.clone(),
                    message: CoordinatorMessage {
                        body: Some(Out::Chunk(c.clone())),
                    },
                });
            }
        }
        self.state = State::Running(Box::new(agg));
    }

    /// The vector layout of a round for a cohort of `n`: its length, its
    /// fixed-point encoding and (with DP) the total-variation slack of its
    /// discretised noise. The encoding is the 32-bit one where its noise is
    /// fine enough, else the 64-bit one; `Err` is the reason the federation
    /// cannot go on.
    fn layout(&self, kind: Kind, n: usize) -> Result<Layout, String> {
        let s = &self.settings;
        let privacy = &s.config.privacy;
        let dp = self.dp();
        let adaptive = kind == Kind::Training && s.config.training.adaptive_clipping;
        let n_features = s.task.features.len();
        // (dim, largest |sum|, preferred modulus, noise std per part).
        let (dim, max_abs_sum, modulus_bits) = match kind {
            Kind::Statistics => {
                let st = &s.config.statistics;
                let dim = LocalStats::vector_len(n_features);
                let per_site = if dp {
                    // Bounded contributions (see tessera_model::stats): rows ≤ max_rows, moments in [-1, 1] per row.
                    st.max_rows
                } else {
                    st.max_rows * st.value_bound.max(1.0).powi(2)
                };
                let noise = if dp {
                    12.0 * privacy.statistics_noise_multiplier * statistics_sensitivity(s)
                } else {
                    0.0
                };
                (dim, n as f64 * per_site + noise, 64)
            }
            Kind::Training => {
                let model_len = self.model.as_ref().map(|m| m.len()).unwrap_or(0);
                let c = self.clip_norm;
                let noise = if dp {
                    12.0 * s.update_noise_multiplier * c
                } else {
                    0.0
                };
                if adaptive {
                    // One more element: the centred clipping bit, |b − 1/2| = 1/2.
                    let bits = n as f64 / 2.0 + 12.0 * s.clip_count_noise_multiplier;
                    (model_len + 1, (n as f64 * c + noise).max(bits), 32)
                } else {
                    (model_len, n as f64 * c + noise, 32)
                }
            }
        };
        // Noise std (real units) of the update part and, with adaptive
        // clipping, of the clipping bit.
        let (noise_std, bit_std) = if !dp {
            (0.0, 0.0)
        } else {
            match kind {
                Kind::Statistics => (
                    privacy.statistics_noise_multiplier * statistics_sensitivity(s),
                    0.0,
                ),
                Kind::Training if adaptive => (
                    s.update_noise_multiplier * self.clip_norm,
                    s.clip_count_noise_multiplier,
                ),
                Kind::Training => (s.noise_multiplier * self.clip_norm, 0.0),
            }
        };
        let largest_noise = noise_std.max(bit_std);
        let smallest_noise = if bit_std > 0.0 {
            noise_std.min(bit_std)
        } else {
            noise_std
        };
        let slack_of = |e: FixedPoint| -> Result<f64, tessera_privacy::Error> {
            if !dp {
                return Ok(0.0);
            }
            let scale = f64::from(e.scale_bits).exp2();
            if bit_std > 0.0 {
                Ok(
                    tessera_privacy::release_tv(noise_std * scale, dim as u64 - 1)?
                        + tessera_privacy::release_tv(bit_std * scale, 1)?,
                )
            } else {
                tessera_privacy::release_tv(noise_std * scale, dim as u64)
            }
        };
        let eps_ref = s.max_epsilon.unwrap_or(DEFAULT_SLACK_EPSILON);
        // The planned training rounds and the statistics release.
        let planned = s.config.federation.rounds + 1;
        let mut last_error = String::new();
        for bits in [modulus_bits, 64] {
            let encoding = match FixedPoint::for_sum(max_abs_sum, bits)
                .and_then(|e| limit_resolution(e, largest_noise))
            {
                Ok(e) => e,
                Err(e) => {
                    last_error = format!("no fixed-point encoding fits this round: {e}");
                    continue;
                }
            };
            // The centred bit ±1/2 must be encoded exactly (no stochastic
            // rounding), or its sensitivity would exceed 1/2.
            if adaptive && encoding.scale_bits == 0 {
                last_error = "no fixed-point encoding represents the clipping bit exactly".into();
                continue;
            }
            let units = smallest_noise * f64::from(encoding.scale_bits).exp2();
            if dp && units < tessera_privacy::MIN_NOISE_UNITS {
                last_error = format!(
                    "the noise would be {units:.0} fixed-point units, below the {} the exact \
                     discrete noise is accounted for",
                    tessera_privacy::MIN_NOISE_UNITS
                );
                continue;
            }
            let tv_slack = slack_of(encoding).map_err(|e| e.to_string())?;
            let layout = Layout {
                dim,
                encoding,
                tv_slack,
            };
            let fine = !dp
                || tessera_privacy::sampling::negligible(tv_slack, planned, privacy.delta, eps_ref);
            if fine || bits == 64 {
                return Ok(layout);
            }
        }
        Err(last_error)
    }

    /// Under Poisson sampling with DP, the least cohort that keeps enough
    /// contributors after the tolerated dropouts (None otherwise).
    fn sampled_cohort_margin(&self, kind: Kind) -> Option<u64> {
        let s = &self.settings.config;
        let sampled = kind == Kind::Training && self.dp() && s.privacy.sampling_rate < 1.0;
        sampled.then(|| {
            let min = s
                .federation
                .min_participants
                .max(if s.secagg.enabled { 3 } else { 1 });
            tessera_privacy::sampling::min_cohort_with_dropouts(
                min as u64,
                s.secagg.dropout_tolerance,
            )
        })
    }

    fn round_failed(
        &mut self,
        now: Instant,
        round: u64,
        kind: Kind,
        training_round: u32,
        cohort: &[String],
        reason: String,
    ) {
        warn!(round, kind = kind.as_str(), %reason, "round failed; nothing was released");
        self.outputs.push_back(Output::RoundAborted(RoundSummary {
            round,
            training_round: (kind == Kind::Training).then_some(training_round),
            kind,
            cohort: cohort.to_vec(),
            contributors: vec![],
            dropped: cohort.to_vec(),
            reason: Some(reason.clone()),
            stage_seconds: vec![],
            seconds: 0.0,
        }));
        for name in cohort {
            if self.sessions.contains_key(name) {
                self.outputs.push_back(Output::Send {
                    to: name.clone(),
                    message: CoordinatorMessage {
                        body: Some(Out::Result(v1::RoundResult {
                            round,
                            completed: false,
                            reason: reason.clone(),
                            contributors: 0,
                            epsilon: 0.0,
                        })),
                    },
                });
            }
        }
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
        let max = self.settings.config.federation.max_failed_rounds;
        if self.failed_in_row >= max {
            self.finish(
                format!("{max} rounds in a row failed (last: {reason})"),
                false,
            );
            return;
        }
        self.maybe_start_round(now);
    }

    fn close_stage(&mut self, now: Instant) {
        let State::Running(agg) = &mut self.state else {
            return;
        };
        let stage_deadline = self.settings.stage_deadline();
        let training_deadline = self.settings.training_deadline();
        let step = agg.close_stage(now, |next| {
            now + if next == Stage::AwaitingInputs {
                training_deadline
            } else {
                stage_deadline
            }
        });
        match step {
            Step::Send(messages) => {
                for (index, message) in messages {
                    let name = agg.cohort[&index].clone();
                    self.outputs.push_back(Output::Send { to: name, message });
                }
                if agg.stage_complete() {
                    // Everyone left is already gone: close the next stage too.
                    self.close_stage(now);
                }
            }
            Step::Failed(reason) => {
                let State::Running(agg) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    unreachable!()
                };
                let cohort: Vec<String> = agg.cohort.values().cloned().collect();
                self.round_failed(
                    now,
                    agg.round,
                    agg.kind,
                    agg.training_round,
                    &cohort,
                    reason,
                );
            }
            Step::Finished { sum, contributors } => {
                let State::Running(agg) = std::mem::replace(&mut self.state, State::Finished)
                else {
                    unreachable!()
                };
                self.aggregation_finished(now, *agg, sum, contributors);
            }
        }
    }

    fn aggregation_finished(
        &mut self,
        now: Instant,
        agg: Aggregation,
        mut sum: Vec<u64>,
        contributors: Vec<u32>,
    ) {
        let s = Arc::clone(&self.settings);
        let cohort: Vec<String> = agg.cohort.values().cloned().collect();
        let contributor_names: Vec<String> =
            contributors.iter().map(|i| agg.cohort[i].clone()).collect();
        let min = s.config.federation.min_participants;
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
        let privacy = &s.config.privacy;
        let scale = (agg.encoding.scale_bits as f64).exp2();
        let adaptive = agg.kind == Kind::Training && s.config.training.adaptive_clipping;
        // The event decided when the round started (with adaptive clipping
        // σ_eff: the ledger accounts the joint release of the update sum and
        // the clipping-bit sum).
        let event = agg.event.clone();
        let (noise_multiplier, sensitivity) = match agg.kind {
            Kind::Statistics => (
                privacy.statistics_noise_multiplier,
                statistics_sensitivity(&s),
            ),
            Kind::Training => (s.noise_multiplier, self.clip_norm),
        };
        if self.dp() {
            // Exact discrete Gaussian noise on the integer sum: std σ·C in
            // fixed-point units. With adaptive clipping, σ_Δ·C on the update
            // coordinates and σ_b on the clipping-bit coordinate.
            let modulus_bits = agg.encoding.modulus_bits;
            let noised = if adaptive && !sum.is_empty() {
                let last = sum.len() - 1;
                let (update, bit) = sum.split_at_mut(last);
                tessera_privacy::DiscreteGaussian::new(
                    s.update_noise_multiplier * sensitivity * scale,
                )
                .and_then(|g| g.add_mod(update, modulus_bits, &mut self.noise_rng))
                .and_then(|()| {
                    tessera_privacy::DiscreteGaussian::new(s.clip_count_noise_multiplier * scale)
                })
                .and_then(|g| g.add_mod(bit, modulus_bits, &mut self.noise_rng))
            } else {
                let sigma_int = noise_multiplier * sensitivity * scale;
                tessera_privacy::DiscreteGaussian::new(sigma_int)
                    .and_then(|g| g.add_mod(&mut sum, modulus_bits, &mut self.noise_rng))
            };
            if let Err(e) = noised {
                // Nothing is released without its noise.
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
        let decoded = agg.encoding.decode_sum(&sum);
        drop(sum);
        let epsilon_after = if self.dp() {
            budget::epsilon_after(&self.ledger, &event, privacy.delta, privacy.accountant).ok()
        } else {
            None
        };
        let dropped: Vec<String> = cohort
            .iter()
            .filter(|n| !contributor_names.contains(n))
            .cloned()
            .collect();
        let summary = RoundSummary {
            round: agg.round,
            training_round: (agg.kind == Kind::Training).then_some(agg.training_round),
            kind: agg.kind,
            cohort: cohort.clone(),
            contributors: contributor_names.clone(),
            dropped,
            reason: None,
            stage_seconds: agg.stage_seconds.clone(),
            seconds: now.duration_since(agg.started).as_secs_f64(),
        };
        let ledger_entry = self.dp().then(|| LedgerEntry {
            event: event.clone(),
            cohort_size: cohort.len() as u32,
            clip_norm: sensitivity,
            noise_multiplier,
            sampling_rate: match &event {
                PrivacyEvent::Gaussian { sampling_rate, .. } => *sampling_rate,
                _ => 1.0,
            },
            not_private: s.not_private,
        });
        let pending = match agg.kind {
            Kind::Statistics => {
                let n_features = s.task.features.len();
                let noise_std = privacy.statistics_noise_multiplier * sensitivity;
                let dp = self.dp();
                let pre = LocalStats::from_vector(&decoded, n_features).and_then(|stats| {
                    match (&s.statistics_bounds, dp) {
                        (Some(bounds), true) => {
                            Preprocessor::from_pooled_bounded(&stats, bounds, noise_std)
                        }
                        _ => Preprocessor::from_pooled(&stats),
                    }
                });
                let pre = match pre {
                    Ok(p) => p,
                    Err(e) => {
                        self.round_failed(
                            now,
                            agg.round,
                            agg.kind,
                            0,
                            &cohort,
                            format!("pooled statistics unusable: {e}"),
                        );
                        return;
                    }
                };
                let input_dim = pre.output_dim();
                let model =
                    tessera_model::initial_params(s.task.model, input_dim, s.config.training.seed);
                self.outputs.push_back(Output::Commit(Box::new(Commit {
                    summary,
                    privacy: ledger_entry,
                    checkpoint: Some(ModelFile {
                        task: s.task.clone(),
                        params: model.clone(),
                        preprocessor: pre.clone(),
                        round: 0,
                    }),
                    preprocessing: Some(pre.clone()),
                    epsilon_after,
                    update_norm: None,
                })));
                PendingRelease {
                    round: agg.round,
                    model: Some(model),
                    preprocessor: Some(pre),
                    event: self.dp().then_some(event),
                    training: false,
                    cohort,
                    contributors: contributors.len() as u32,
                    epsilon_after,
                    next_clip_norm: None,
                }
            }
            Kind::Training => {
                let denominator = if self.dp() {
                    // A fixed denominator keeps the sensitivity of the mean at C/denominator:
                    // the announced cohort under full participation, q·N under sampling.
                    if privacy.sampling_rate >= 1.0 {
                        cohort.len() as f64
                    } else {
                        agg.expected_cohort
                    }
                } else {
                    contributors.len() as f64
                };
                let lr = s.config.training.server_learning_rate;
                let mut model = self.model.clone().unwrap_or_default();
                let (update, bit_sum) = if adaptive {
                    let (u, b) = decoded.split_at(decoded.len().saturating_sub(1));
                    (u, b.first().copied())
                } else {
                    (&decoded[..], None)
                };
                // Adaptive clipping (Andrew et al. 2021, Algorithm 1): the
                // noisy fraction of unclipped updates, from the noised sum of
                // centred bits over the same denominator, moves C
                // geometrically toward the target quantile. Post-processing
                // of the noised release: no further privacy cost.
                let next_clip_norm = bit_sum.map(|b| {
                    let unclipped = b / denominator + 0.5;
                    let t = &s.config.training;
                    let next = budget::next_clip_norm(
                        self.clip_norm,
                        unclipped,
                        t.target_quantile(),
                        t.clip_learning_rate(),
                    );
                    info!(
                        round = agg.round,
                        clip_norm = self.clip_norm,
                        unclipped_fraction = unclipped,
                        next_clip_norm = next,
                        "adaptive clipping"
                    );
                    next
                });
                let mut norm_sq = 0.0;
                for (w, d) in model.iter_mut().zip(update) {
                    let step = lr * d / denominator;
                    norm_sq += step * step;
                    *w += step as f32;
                }
                let pre = self
                    .preprocessor
                    .clone()
                    .expect("training rounds follow statistics");
                self.outputs.push_back(Output::Commit(Box::new(Commit {
                    summary,
                    privacy: ledger_entry,
                    checkpoint: Some(ModelFile {
                        task: s.task.clone(),
                        params: model.clone(),
                        preprocessor: pre,
                        round: agg.training_round,
                    }),
                    preprocessing: None,
                    epsilon_after,
                    update_norm: Some(norm_sq.sqrt()),
                })));
                PendingRelease {
                    round: agg.round,
                    model: Some(model),
                    preprocessor: None,
                    event: self.dp().then_some(event),
                    training: true,
                    cohort,
                    contributors: contributors.len() as u32,
                    epsilon_after,
                    next_clip_norm,
                }
            }
        };
        self.state = State::Committing(Box::new(pending));
    }

    fn committed(&mut self, now: Instant, round: u64) {
        let State::Committing(p) = &self.state else {
            warn!(round, "commit confirmation outside a commit ignored");
            return;
        };
        if p.round != round {
            warn!(
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
        self.model = p.model;
        if let Some(c) = p.next_clip_norm {
            self.clip_norm = c;
        }
        if p.training {
            self.completed_training += 1;
        }
        self.failed_in_row = 0;
        for name in &p.cohort {
            if self.sessions.contains_key(name) {
                self.outputs.push_back(Output::Send {
                    to: name.clone(),
                    message: CoordinatorMessage {
                        body: Some(Out::Result(v1::RoundResult {
                            round: p.round,
                            completed: true,
                            reason: String::new(),
                            contributors: p.contributors,
                            epsilon: p.epsilon_after.unwrap_or(0.0),
                        })),
                    },
                });
            }
        }
        let planned = self.settings.config.federation.rounds;
        if self.completed_training >= planned {
            self.finish(format!("all {planned} planned rounds completed"), true);
            return;
        }
        self.maybe_start_round(now);
    }
}

/// Largest noise standard deviation in fixed-point units: inside the exact
/// sampler's range (2^40), and fine enough that the discretisation slack of
/// even a very large model is negligible (about 7e-26 per coordinate).
const MAX_NOISE_UNITS: f64 = (1u64 << 39) as f64;

/// ε at which a round's total-variation slack is judged negligible when the
/// federation has no budget (`max_epsilon`): the slack enters δ as
/// (1 + e^ε)·τ, so a larger ε makes the same slack weigh more.
const DEFAULT_SLACK_EPSILON: f64 = 10.0;

/// What a round sums: vector length, encoding, slack of its noise.
#[derive(Debug, Clone, Copy)]
struct Layout {
    dim: usize,
    encoding: FixedPoint,
    tv_slack: f64,
}

/// Lowers the fixed-point scale when the noise std would exceed
/// [`MAX_NOISE_UNITS`] units: resolution much finer than the noise buys
/// nothing, and the exact sampler works on a bounded integer range.
pub fn limit_resolution(e: FixedPoint, noise_std: f64) -> Result<FixedPoint, sa::Error> {
    if noise_std <= 0.0 {
        return Ok(e);
    }
    let mut scale_bits = e.scale_bits;
    while scale_bits > 0 && noise_std * (scale_bits as f64).exp2() > MAX_NOISE_UNITS {
        scale_bits -= 1;
    }
    FixedPoint::new(scale_bits, e.modulus_bits)
}

/// The L2 sensitivity of one site's statistics contribution (DP only).
pub fn statistics_sensitivity(s: &Settings) -> f64 {
    match &s.statistics_bounds {
        Some(b) => tessera_model::l2_sensitivity(b, s.task.features.len()),
        None => 0.0,
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

/// The task as it travels on the wire.
pub fn task_to_wire(task: &tessera_model::TaskSpec) -> v1::TaskSpec {
    v1::TaskSpec {
        model: task.model.to_string(),
        features: task.features.clone(),
        label: task.label.clone(),
        positive: task.positive.to_string(),
    }
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

    #[test]
    fn resolution_is_limited_by_the_noise() {
        let e = FixedPoint::new(50, 64).unwrap();
        let limited = limit_resolution(e, 1000.0).unwrap();
        assert!(1000.0 * f64::from(limited.scale_bits).exp2() <= MAX_NOISE_UNITS);
        assert_eq!(limit_resolution(e, 0.0).unwrap().scale_bits, 50);
    }
}
