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
//! driver writes the ledger row, then the checkpoint with the round's
//! record) → [`Input::Committed`] → only then is the new model sent to
//! anyone (in the next round's announcement) or written as the final model. A crash at any point
//! therefore leaves a ledger that counts at least what was released.
//!
//! Where things go: what the machine runs by is a narrow [`FederationPolicy`];
//! each kind of aggregation describes itself in [`kinds`]; the noise is added
//! by a [`NoisePlacement`] and the model moved by a [`ServerOptimizer`], both
//! handed in; sessions and the routing of messages are in `sessions`,
//! starting a round is in `start`, releasing one in `release`;
//! analytics queries (queued, asked, released after their ledger row) in
//! `analytics`.

pub mod aggregation;
mod analytics;
pub mod budgets;
pub mod cohort;
mod encoding;
pub mod io;
pub mod kinds;
pub mod noise;
pub mod optimizer;
pub mod phase;
pub mod policy;
mod release;
mod sessions;
pub mod signatures;
mod start;

#[cfg(test)]
mod adaptive_tests;
#[cfg(test)]
mod analytics_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod privacy_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_model::Preprocessor;
use tessera_model::round::SiteBudget;
use tessera_privacy::PrivacyEvent;
use tessera_proto::v1::{self, CoordinatorMessage, coordinator_message::Body as Out};
use tracing::info;

use aggregation::{Aggregation, Stage, Step};
pub use analytics::{QueryFailed, QueryOrigin, QueryReleased, QueuedQuery, terms_of};
pub use encoding::limit_resolution;
pub use io::{Commit, Input, LedgerEntry, Output, RoundSummary};
use kinds::RoundState;
pub use noise::{CentralNoise, NoisePlacement, SecureRng};
pub use optimizer::{OptimizerState, ServerOptimizer};
pub use phase::Phase;
pub use policy::FederationPolicy;
pub use start::secagg_params;

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
    /// The last training round whose model was evaluated (0: none).
    pub evaluated_through: u32,
}

/// The pluggable parts of a machine: where the noise goes and how the
/// model moves.
pub struct Plugins {
    /// The noise placement (central: the coordinator adds it all).
    pub noise: Box<dyn NoisePlacement>,
    /// The server optimizer, restored from the last checkpoint if any.
    pub optimizer: Box<dyn ServerOptimizer>,
}

#[derive(Debug)]
struct SessionInfo {
    id: u64,
    certificate: Vec<u8>,
    /// The site's own terms, as its hello declared them.
    budget: Option<SiteBudget>,
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
    /// An evaluation: the training round whose model it evaluated.
    evaluated: Option<u32>,
    /// An analytics round: its query and sealed answer.
    query: Option<Box<analytics::PendingQuery>>,
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
    policy: Arc<FederationPolicy>,
    /// Planned training rounds (the policy's, or fewer when fitted to the
    /// sites' own budgets).
    rounds: u32,
    /// Sites that declined a round for their own budget: they sit out the
    /// rest of the federation.
    exhausted: BTreeSet<String>,
    /// Whether the plan was checked against the sites' declared terms.
    budgets_checked: bool,
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
    /// The last training round whose model was evaluated (0: none).
    evaluated_through: u32,
    failed_in_row: u32,
    /// Whether this machine has started a round (the join grace is over).
    started_any: bool,
    outputs: VecDeque<Output>,
    /// Analytics queries waiting for their round.
    queries: VecDeque<QueuedQuery>,
    /// The query of the analytics round in progress.
    running_query: Option<analytics::RunningQuery>,
    rng: SecureRng,
    noise: Box<dyn NoisePlacement>,
    optimizer: Box<dyn ServerOptimizer>,
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
    /// federation). `rng` drives cohort sampling and graph seeds; the noise
    /// placement draws the privacy noise from its own CSPRNG.
    pub fn new(
        policy: Arc<FederationPolicy>,
        resume: Resume,
        plugins: Plugins,
        rng: SecureRng,
    ) -> Self {
        let training = &policy.training;
        let clip_norm = match resume.clip_norm {
            Some(c) if training.adaptive.is_some() && c.is_finite() && c > 0.0 => c,
            _ => training.clip_norm,
        };
        Self {
            clip_norm,
            rounds: policy.rounds,
            exhausted: BTreeSet::new(),
            budgets_checked: false,
            policy,
            sessions: BTreeMap::new(),
            rejected: BTreeSet::new(),
            state: State::Waiting { ready_since: None },
            next_round: resume.next_round.max(1),
            completed_training: resume.completed_training,
            model: resume.model,
            preprocessor: resume.preprocessor,
            ledger: resume.ledger,
            evaluated_through: resume.evaluated_through,
            failed_in_row: 0,
            started_any: false,
            outputs: VecDeque::new(),
            queries: VecDeque::new(),
            running_query: None,
            rng,
            noise: plugins.noise,
            optimizer: plugins.optimizer,
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

    /// The server optimizer's state after the rounds released so far (or,
    /// while a round is being committed, after that round), to checkpoint.
    pub fn optimizer_state(&self) -> OptimizerState {
        self.optimizer.state()
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
                a.kind.sends_model().then_some(a.training_round),
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
        if !self.analytics_only()
            && self.queries.is_empty()
            && self.completed_training >= self.rounds
            && !self.round_state().evaluation_due()
        {
            self.finish(
                format!("all {} planned rounds were already completed", self.rounds),
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

    fn maybe_start_round(&mut self, now: Instant) {
        if !matches!(self.state, State::Waiting { .. }) {
            return;
        }
        let eligible = self.eligible();
        if let Some(reason) = self.spent_by_the_sites(&eligible) {
            self.finish(reason, true);
            return;
        }
        let State::Waiting { ready_since } = &mut self.state else {
            return;
        };
        let policy = &self.policy;
        if eligible.len() < policy.min_participants {
            *ready_since = None;
            return;
        }
        let since = *ready_since.get_or_insert(now);
        let everyone_here = match &policy.allow {
            Some(allow) => allow.iter().all(|n| eligible.contains(n)),
            None => false,
        };
        let first = !self.started_any;
        if first && !everyone_here && now < since + JOIN_GRACE {
            return;
        }
        self.started_any = true;
        if let Some(query) = self.queries.pop_front() {
            // Queries run before training and between its rounds.
            self.start_query_round(now, eligible, query);
            return;
        }
        if self.analytics_only() {
            // Nothing to train: wait for the next query.
            return;
        }
        if !self.budgets_checked {
            self.budgets_checked = true;
            if let Err(reason) = self.fit_site_budgets(&eligible) {
                self.finish(reason, false);
                return;
            }
            if self.completed_training >= self.rounds {
                let rounds = self.rounds;
                self.finish(format!("all {rounds} planned rounds completed"), true);
                return;
            }
        }
        self.start_round(now, eligible);
    }

    fn finish(&mut self, reason: String, success: bool) {
        info!(%reason, "federation finished");
        self.state = State::Finished;
        for name in self.sessions.keys() {
            self.outputs.push_back(Output::Send {
                to: name.clone(),
                message: Box::new(CoordinatorMessage {
                    body: Some(Out::Done(v1::FederationDone {
                        reason: reason.clone(),
                        completed_rounds: self.completed_training,
                    })),
                }),
            });
        }
        self.outputs.push_back(Output::Finished { reason, success });
    }

    /// The state the round kinds read.
    fn round_state(&self) -> RoundState<'_> {
        RoundState {
            policy: &self.policy,
            model: self.model.as_deref(),
            preprocessor: self.preprocessor.as_ref(),
            clip_norm: self.clip_norm,
            completed_training: self.completed_training,
            evaluated_through: self.evaluated_through,
            planned: self.rounds,
        }
    }

    fn close_stage(&mut self, now: Instant) {
        let State::Running(agg) = &mut self.state else {
            return;
        };
        let stage_deadline = self.policy.stage_deadline;
        let training_deadline = self.policy.training_deadline;
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
                    let Some(name) = agg.cohort.get(&index).cloned() else {
                        continue;
                    };
                    self.outputs.push_back(Output::Send {
                        to: name,
                        message: Box::new(message),
                    });
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
                    reason.to_string(),
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
}
