//! The site: the participant's side of a federation as a machine without
//! I/O. Coordinator messages go in ([`Site::handle`]); messages to send and
//! an exit decision come out ([`Site::poll_action`]). Its collaborators are
//! values handed in ([`SiteParts`]): the data already loaded, the ledger
//! behind [`LedgerStore`], a [`Trainer`], the RNG and the clock. It opens no
//! file or socket, reads no clock of its own and never exits the process.
//!
//! One round, as the site sees it:
//! 1. an announcement: check the announced terms ([`terms`]) against the
//!    site's policy and limits, then its own budget (`own_budget`), *before
//!    touching any data*;
//!    decline with a fixed code, or accept and (with secure aggregation)
//!    advertise keys;
//! 2. receive the global model; compute the input (`input`): the
//!    pooled-statistics contribution, or train locally and take the update
//!    Δ = local − global, clipped and encoded in fixed point with stochastic
//!    rounding. Once accepted, a round is never left because of the data: a
//!    contribution that cannot be computed is a zero vector;
//! 3. secure aggregation stages (keys → shares → masked input → unmasking,
//!    in `secure`);
//! 4. write the site ledger row *before* the (masked) input leaves.
//!
//! What the site sends about itself is fixed: declines and task rejections
//! carry a code and its fixed text ([`tessera_proto::reasons`]), never a
//! value, count, path or error message derived from the data; those details
//! go to the site's own log. The unmasked update never leaves this module
//! except masked; it is never logged.

mod analytics;
mod input;
mod noise_terms;
mod own_budget;
mod secure;
pub mod task;
pub mod terms;

use std::collections::VecDeque;

use rand::rand_core::CryptoRng;
use tessera_model::round::SiteBudget;
use tessera_model::{Announcement, Dataset, RoundKind, TaskSpec};
use tessera_proto::chunk::Assembler;
use tessera_proto::reasons::{decline_text, reject_text};
use tessera_proto::v1::{
    self, ChunkPurpose, CoordinatorMessage, DeclineCode, ParticipantMessage, RejectCode,
    coordinator_message::Body as In, participant_message::Body as Out,
};
use tracing::{debug, info, warn};

use crate::config::{AnalyticsSection, EvaluationSection, LimitsSection, SitePrivacySection};
use crate::data::LocalData;
use crate::ledger::LedgerStore;
use crate::rounds::{MemoryRounds, RoundMemory};
use crate::signing::KeySigning;
use crate::trainer::Trainer;
use secure::SecureState;
use terms::{Decline, RoundPlan};

/// What the network loop must do.
#[derive(Debug)]
pub enum Action {
    /// Send a message to the coordinator.
    Send(ParticipantMessage),
    /// Stop: the federation ended (code 0) or this site cannot take part.
    Exit {
        /// Process exit code.
        code: u8,
        /// Why (for the site's own log).
        reason: String,
    },
}

/// Exit code of a site whose data cannot serve the task.
pub const EXIT_TASK_REJECTED: u8 = 3;
/// Exit code when the coordinator breaks the protocol.
pub const EXIT_PROTOCOL: u8 = 4;

/// A boxed cryptographically secure RNG.
pub type SecureRng = Box<dyn CryptoRng + Send>;

/// The time, as the site reads it (for ledger rows).
pub trait Clock: Send {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        tessera_common::time::now_ms()
    }
}

/// The part of a site's configuration the machine decides by: its own
/// privacy terms, its limits and its column allow-list.
#[derive(Debug, Clone, Default)]
pub struct SitePolicy {
    /// The site's own budget and requirements.
    pub privacy: SitePrivacySection,
    /// Largest announcement it takes part in.
    pub limits: LimitsSection,
    /// Columns a task may name (None: any).
    pub allowed_columns: Option<Vec<String>>,
    /// Which rows are held out for federated evaluation.
    pub evaluation: EvaluationSection,
    /// Which analytics queries it answers.
    pub analytics: AnalyticsSection,
}

/// What a site machine is made of.
pub struct SiteParts {
    /// The policy it decides by.
    pub policy: SitePolicy,
    /// Its data, already loaded.
    pub data: LocalData,
    /// Its own privacy ledger.
    pub ledger: Box<dyn LedgerStore>,
    /// How it trains locally.
    pub trainer: Box<dyn Trainer>,
    /// Randomness for masks, keys and stochastic rounding (a CSPRNG).
    pub rng: SecureRng,
    /// The clock of its ledger rows.
    pub clock: Box<dyn Clock>,
    /// Signing of advertised keys with the certificate key, if it can.
    pub key_signing: Option<KeySigning>,
}

fn send(body: Out) -> Action {
    Action::Send(ParticipantMessage { body: Some(body) })
}

struct RoundState {
    announce: Announcement,
    plan: RoundPlan,
    model: Option<Assembler<f32>>,
    input: Option<Vec<u64>>,
    /// The input is the zero vector in place of one that could not be computed.
    fallback: bool,
    secure: SecureState,
    sent: bool,
}

/// The participant's state across rounds.
pub struct Site {
    policy: SitePolicy,
    data: LocalData,
    ledger: Box<dyn LedgerStore>,
    trainer: Box<dyn Trainer>,
    rng: SecureRng,
    clock: Box<dyn Clock>,
    key_signing: Option<KeySigning>,
    /// Signed-key rounds taken part in (a reused round is declined).
    rounds: Box<dyn RoundMemory>,
    federation: String,
    name: String,
    task: Option<TaskSpec>,
    dataset: Option<Dataset>,
    /// Rows held out for federated evaluation.
    held_out: Option<Dataset>,
    round: Option<RoundState>,
    actions: VecDeque<Action>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .field("federation", &self.federation)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// A site made of `parts`.
    pub fn new(parts: SiteParts) -> Self {
        Self {
            policy: parts.policy,
            data: parts.data,
            ledger: parts.ledger,
            trainer: parts.trainer,
            rng: parts.rng,
            clock: parts.clock,
            key_signing: parts.key_signing,
            rounds: Box::new(MemoryRounds::default()),
            federation: String::new(),
            name: String::new(),
            task: None,
            dataset: None,
            held_out: None,
            round: None,
            actions: VecDeque::new(),
        }
    }

    /// The site with `rounds` as its record of the signed-key rounds it took
    /// part in (by default a record in memory, for the life of the process).
    pub fn with_round_memory(mut self, rounds: Box<dyn RoundMemory>) -> Self {
        self.rounds = rounds;
        self
    }

    /// The first message of every session, without terms of the site's
    /// own (see [`Site::hello_with_budget`]).
    pub fn hello() -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Out::Hello(v1::Hello {
                protocol_version: tessera_proto::PROTOCOL_VERSION,
                software: concat!("tessera-participant ", env!("CARGO_PKG_VERSION")).into(),
                budget: None,
            })),
        }
    }

    /// The first message of this site's sessions: the hello with its own
    /// privacy terms (its budget, minimum noise, whether it requires
    /// privacy, and its ledger's ε so far), so the coordinator can check its
    /// plan before the first round. Policy and ledger totals only; nothing
    /// here comes from the data.
    pub fn hello_with_budget(&self) -> ParticipantMessage {
        let p = &self.policy.privacy;
        let budget = SiteBudget {
            max_epsilon: p.max_epsilon,
            delta: p.delta,
            min_noise_multiplier: p.min_noise_multiplier,
            epsilon_spent: self.ledger.epsilon(p.delta).unwrap_or(0.0),
            require_privacy: p.require_privacy,
        };
        let mut hello = Self::hello();
        if let Some(Out::Hello(h)) = hello.body.as_mut() {
            h.budget = Some(tessera_proto::round::budget_to_wire(&budget));
        }
        hello
    }

    /// The site's own ledger.
    pub fn ledger(&self) -> &dyn LedgerStore {
        self.ledger.as_ref()
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// [`handle`](Self::handle), then every action it produced.
    pub fn step(&mut self, message: CoordinatorMessage) -> Vec<Action> {
        self.handle(message);
        std::iter::from_fn(|| self.poll_action()).collect()
    }

    /// A site of the built-in trainer, the system clock and the operating
    /// system's randomness, with `policy`, `data` and `ledger`.
    pub fn with_defaults(
        policy: SitePolicy,
        data: LocalData,
        ledger: Box<dyn LedgerStore>,
        key_signing: Option<KeySigning>,
    ) -> Self {
        use rand::SeedableRng;
        Site::new(SiteParts {
            policy,
            data,
            ledger,
            trainer: Box::new(crate::trainer::BuiltinTrainer),
            rng: Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
            clock: Box::new(SystemClock),
            key_signing,
        })
    }

    /// The session was lost: the round in progress cannot continue (its
    /// secure-aggregation secrets are gone with it).
    pub fn connection_lost(&mut self) {
        if let Some(r) = self.round.take() {
            info!(
                round = r.announce.round,
                "connection lost during a round; the round goes on without this site"
            );
        }
    }

    /// Handles one coordinator message; take what to do with
    /// [`poll_action`](Self::poll_action).
    pub fn handle(&mut self, message: CoordinatorMessage) {
        let Some(body) = message.body else {
            warn!("empty message from the coordinator ignored");
            return;
        };
        match body {
            In::Welcome(w) => self.welcome(w),
            In::Announce(a) => self.announce(&a),
            In::Chunk(c) => self.model_chunk(c),
            In::PeerKeys(k) => self.peer_keys(k),
            In::RoutedShares(s) => self.routed_shares(s),
            In::SurvivorList(l) => self.survivor_list(l),
            In::UnmaskRequest(r) => self.unmask(r),
            In::Result(r) => self.result(r),
            // Transport: the shell's upload queue answers grants
            // (`crate::upload`); one that reaches the site is stale.
            In::UploadGrant(_) => {}
            In::Done(d) => {
                let delta = self.policy.privacy.delta;
                let eps = self.ledger.epsilon(delta).unwrap_or(f64::NAN);
                self.actions.push_back(Action::Exit {
                    code: 0,
                    reason: format!(
                        "federation finished after {} rounds: {}; this site's own ε = {eps:.4} (δ = {delta})",
                        d.completed_rounds, d.reason
                    ),
                });
            }
        }
    }

    fn result(&mut self, r: v1::RoundResult) {
        if r.completed {
            if r.epsilon > 0.0 {
                info!(
                    round = r.round,
                    contributors = r.contributors,
                    epsilon = r.epsilon,
                    "round released"
                );
            } else {
                info!(
                    round = r.round,
                    contributors = r.contributors,
                    "round released"
                );
            }
        } else {
            info!(round = r.round, reason = %r.reason, "round failed");
        }
        if self.round.as_ref().map(|x| x.announce.round) == Some(r.round) {
            self.round = None;
        }
    }

    fn welcome(&mut self, w: v1::Welcome) {
        self.name = w.participant_name;
        self.federation = w.federation;
        info!(name = %self.name, federation = %self.federation, "joined the federation");
        let Some(task) = w.task else {
            self.actions.push_back(Action::Exit {
                code: EXIT_PROTOCOL,
                reason: "the coordinator sent no task".into(),
            });
            return;
        };
        let task = match task::accept(&self.policy, &task) {
            Ok(t) => t,
            Err((code, detail)) => return self.reject(code, detail),
        };
        if self.dataset.is_none() || self.task.as_ref() != Some(&task) {
            match task::load_split(&self.data, &task, &self.policy) {
                Ok((ds, held_out)) => {
                    self.dataset = Some(ds);
                    self.held_out = held_out;
                }
                Err((code, detail)) => return self.reject(code, detail),
            }
        }
        self.task = Some(task);
    }

    /// Rejects the task: the coordinator gets `code` and its fixed text; the
    /// detail is logged here and is the (local) exit reason.
    fn reject(&mut self, code: RejectCode, detail: String) {
        warn!(?code, %detail, "cannot take part");
        self.actions
            .push_back(send(Out::TaskRejected(v1::TaskRejected {
                reason: reject_text(code).into(),
                code: code as i32,
            })));
        self.actions.push_back(Action::Exit {
            code: EXIT_TASK_REJECTED,
            reason: detail,
        });
    }

    /// Declines a round: the coordinator gets the code and its fixed text;
    /// the detail stays in the site's log.
    fn decline(&mut self, round: u64, d: Decline) {
        warn!(round, code = ?d.code, reason = %d.detail, "declining the round");
        self.actions.push_back(send(Out::RoundReply(v1::RoundReply {
            round,
            accept: false,
            reason: decline_text(d.code).into(),
            code: d.code as i32,
        })));
    }

    fn announce(&mut self, wire: &v1::RoundAnnounce) {
        let round = wire.round;
        if self.round.is_some() {
            debug!(round, "a new round replaces the unfinished one");
            self.round = None;
        }
        if self.task.is_none() || self.dataset.is_none() {
            return self.decline(
                round,
                Decline::new(DeclineCode::NotReady, "no task or data loaded"),
            );
        }
        let a = match tessera_proto::round::announcement_from_wire(wire) {
            Ok(a) => a,
            Err(e) => return self.decline(round, Decline::malformed(&e)),
        };
        // An analytics query is checked, and its vector computed, before
        // the site accepts: it declines with a code or answers.
        let (plan, query_input) = if a.kind == RoundKind::Analytics {
            match self.check_query(&a) {
                Ok((p, v)) => (p, Some(v)),
                Err(d) => return self.decline(round, d),
            }
        } else {
            match self.check_terms(&a) {
                Ok(p) => (p, None),
                Err(d) => return self.decline(round, d),
            }
        };
        let secure = match &a.secagg {
            None => SecureState::Plain,
            Some(setup) => match self.start_secagg(&a, setup) {
                Ok((state, keys)) => {
                    self.accept(round);
                    self.actions
                        .push_back(send(Out::Keys(tessera_proto::convert::keys_to_wire(&keys))));
                    SecureState::AwaitingPeerKeys(state)
                }
                Err(e) => {
                    return self.decline(
                        round,
                        Decline::new(
                            DeclineCode::InvalidSecureAggregation,
                            format!("secure aggregation setup refused: {e}"),
                        ),
                    );
                }
            },
        };
        if matches!(secure, SecureState::Plain) {
            self.accept(round);
        }
        info!(
            round,
            kind = plan.kind.as_str(),
            training_round = a.training_round,
            "round accepted"
        );
        let model = plan
            .kind
            .sends_model()
            .then(|| Assembler::new(round, ChunkPurpose::Model, plan.model_len));
        let at_accept = input::computed_at_accept(&plan) && query_input.is_none();
        self.round = Some(RoundState {
            announce: a,
            plan,
            model,
            input: None,
            fallback: false,
            secure,
            sent: false,
        });
        if at_accept {
            let (Some(data), Some(r)) = (self.dataset.as_ref(), self.round.as_mut()) else {
                return;
            };
            let Some(task) = self.task.as_ref() else {
                return;
            };
            let computed = input::statistics(task, data, &r.plan);
            let mut encoded = input::encode_or_zero(round, &r.plan, computed, &mut self.rng);
            if let Err(e) = input::add_site_noise(&mut encoded.values, &r.plan, &mut self.rng) {
                warn!(round, error = %e, "leaving the round");
                self.round = None;
                return;
            }
            r.input = Some(encoded.values);
            r.fallback = encoded.fallback;
        }
        if let (Some(v), Some(r)) = (query_input, self.round.as_mut()) {
            r.input = Some(v);
        }
        self.maybe_send_input();
    }

    fn accept(&mut self, round: u64) {
        self.actions.push_back(send(Out::RoundReply(v1::RoundReply {
            round,
            accept: true,
            reason: String::new(),
            code: 0,
        })));
    }

    fn model_chunk(&mut self, c: v1::VectorChunk) {
        let Some(r) = self.round.as_mut() else {
            debug!(round = c.round, "model chunk outside a round ignored");
            return;
        };
        let Some(asm) = r.model.as_mut() else {
            warn!(round = c.round, "unexpected chunk ignored");
            return;
        };
        // The assembler expects exactly the model length the task and the
        // preprocessing imply (checked with the terms), so a chunk naming
        // another length is refused before anything is allocated. The data
        // is untouched so far: leaving here depends on the coordinator only.
        match asm.push(&c) {
            Ok(false) => {}
            Ok(true) => {
                let global = r.model.take().and_then(|a| a.finish()).unwrap_or_default();
                let round = r.announce.round;
                let (Some(task), Some(data)) = (self.task.as_ref(), self.dataset.as_ref()) else {
                    return;
                };
                let computed = match r.plan.kind {
                    RoundKind::Evaluation => input::evaluation(
                        self.trainer.as_mut(),
                        task,
                        self.held_out.as_ref(),
                        &r.plan,
                        &global,
                    ),
                    _ => input::training(
                        self.trainer.as_mut(),
                        task,
                        data,
                        &r.plan,
                        &global,
                        &r.announce.training,
                        r.announce.training_round,
                    ),
                };
                let mut encoded = input::encode_or_zero(round, &r.plan, computed, &mut self.rng);
                if let Err(e) = input::add_site_noise(&mut encoded.values, &r.plan, &mut self.rng) {
                    warn!(round, error = %e, "leaving the round");
                    self.round = None;
                    return;
                }
                r.input = Some(encoded.values);
                r.fallback = encoded.fallback;
                self.maybe_send_input();
            }
            Err(e) => {
                warn!(error = %e, "bad model chunk; leaving the round");
                self.round = None;
            }
        }
    }
}
