//! The participant's side of a federation, without I/O: coordinator
//! messages in, participant messages (and an exit decision) out.
//!
//! One round, as the site sees it:
//! 1. `RoundAnnounce`: check the announced terms ([`crate::terms`]) against
//!    the site's configuration, limits and own budget *before touching any
//!    data*; decline with a fixed code, or accept and (with secure
//!    aggregation) advertise keys;
//! 2. receive the global model; compute the input (the `input` module): the
//!    pooled-statistics contribution, or train locally and take the update
//!    Δ = local − global, clipped and encoded in fixed point with stochastic
//!    rounding. Once accepted, a round is never left because of the data: a
//!    contribution that cannot be computed is a zero vector;
//! 3. secure aggregation stages (keys → shares → masked input → unmasking);
//! 4. write the site ledger row *before* the (masked) input leaves.
//!
//! What the site sends about itself is fixed: declines and task rejections
//! carry a code and its fixed text ([`tessera_proto::reasons`]), never a
//! value, count, path or error message derived from the data; those details
//! go to the site's own log. The unmasked update never leaves this module
//! except masked; it is never logged.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tessera_model::{Dataset, TaskSpec};
use tessera_proto::chunk::{self, Assembler};
use tessera_proto::convert;
use tessera_proto::reasons::{decline_text, reject_text};
use tessera_proto::v1::{
    self, ChunkPurpose, CoordinatorMessage, DeclineCode, ParticipantMessage, RejectCode,
    coordinator_message::Body as In, participant_message::Body as Out,
};
use tessera_secagg as sa;
use tracing::{debug, info, warn};

use crate::config::ParticipantConfig;
use crate::input;
use crate::ledger::{Contribution, SiteLedger};
use crate::signing::{CohortCertificate, KeySigning};
use crate::terms::{self, Decline, RoundKind, RoundPlan};

pub use crate::task::task_from_wire;

/// What the network loop must do.
#[derive(Debug)]
pub enum Action {
    /// Send a message to the coordinator.
    Send(ParticipantMessage),
    /// Stop: the federation ended (code 0) or this site cannot take part.
    Exit {
        /// Process exit code.
        code: u8,
        /// Why.
        reason: String,
    },
}

/// Exit code of a site whose data cannot serve the task.
pub const EXIT_TASK_REJECTED: u8 = 3;
/// Exit code when the coordinator breaks the protocol.
pub const EXIT_PROTOCOL: u8 = 4;

fn send(body: Out) -> Action {
    Action::Send(ParticipantMessage { body: Some(body) })
}

enum SecureState {
    Plain,
    AwaitingPeerKeys(sa::AwaitingPeerKeys),
    AwaitingShares(sa::AwaitingShares),
    AwaitingInput(sa::AwaitingInput),
    AwaitingUnmask(sa::AwaitingUnmask),
    Done,
}

struct RoundState {
    announce: v1::RoundAnnounce,
    plan: RoundPlan,
    model: Option<Assembler<f32>>,
    global: Option<Vec<f32>>,
    input: Option<Vec<u64>>,
    secure: SecureState,
    sent: bool,
}

/// The participant's state across rounds.
pub struct Site {
    config: ParticipantConfig,
    ledger: SiteLedger,
    federation: String,
    name: String,
    task: Option<TaskSpec>,
    data: Option<Dataset>,
    round: Option<RoundState>,
    rng: StdRng,
    key_signing: Option<KeySigning>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .field("federation", &self.federation)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Site {
    /// A site with its configuration and ledger.
    pub fn new(config: ParticipantConfig, ledger: SiteLedger) -> Self {
        Self {
            config,
            ledger,
            federation: String::new(),
            name: String::new(),
            task: None,
            data: None,
            round: None,
            rng: StdRng::from_rng(&mut rand::rng()),
            key_signing: None,
        }
    }

    /// Lets the site take part in signed-key rounds: it signs its advertised
    /// keys with its certificate key and checks its peers' (see
    /// [`crate::signing`]). Without it, such rounds are declined.
    pub fn with_key_signing(mut self, signing: KeySigning) -> Self {
        self.key_signing = Some(signing);
        self
    }

    /// The first message of every session.
    pub fn hello() -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Out::Hello(v1::Hello {
                protocol_version: tessera_proto::PROTOCOL_VERSION,
                software: concat!("tessera-participant ", env!("CARGO_PKG_VERSION")).into(),
            })),
        }
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

    /// Handles one coordinator message.
    pub fn handle(&mut self, message: CoordinatorMessage) -> Vec<Action> {
        let Some(body) = message.body else {
            warn!("empty message from the coordinator ignored");
            return vec![];
        };
        match body {
            In::Welcome(w) => self.welcome(w),
            In::Announce(a) => self.announce(a),
            In::Chunk(c) => self.model_chunk(c),
            In::PeerKeys(k) => self.peer_keys(k),
            In::RoutedShares(s) => self.routed_shares(s),
            In::UnmaskRequest(r) => self.unmask(r),
            In::Result(r) => {
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
                vec![]
            }
            In::Done(d) => {
                let eps = self
                    .ledger
                    .epsilon(self.config.privacy.delta)
                    .unwrap_or(f64::NAN);
                vec![Action::Exit {
                    code: 0,
                    reason: format!(
                        "federation finished after {} rounds: {}; this site's own ε = {eps:.4} (δ = {})",
                        d.completed_rounds, d.reason, self.config.privacy.delta
                    ),
                }]
            }
        }
    }

    fn welcome(&mut self, w: v1::Welcome) -> Vec<Action> {
        self.name = w.participant_name;
        self.federation = w.federation;
        info!(name = %self.name, federation = %self.federation, "joined the federation");
        let Some(task) = w.task else {
            return vec![Action::Exit {
                code: EXIT_PROTOCOL,
                reason: "the coordinator sent no task".into(),
            }];
        };
        let task = match crate::task::accept(&self.config, &task) {
            Ok(t) => t,
            Err((code, detail)) => return self.reject(code, detail),
        };
        if self.data.is_none() || self.task.as_ref() != Some(&task) {
            match crate::task::load_data(&self.config, &task) {
                Ok(ds) => self.data = Some(ds),
                Err((code, detail)) => return self.reject(code, detail),
            }
        }
        self.task = Some(task);
        vec![]
    }

    /// Rejects the task: the coordinator gets `code` and its fixed text; the
    /// detail is logged here and is the (local) exit reason.
    fn reject(&mut self, code: RejectCode, detail: String) -> Vec<Action> {
        warn!(?code, %detail, "cannot take part");
        vec![
            send(Out::TaskRejected(v1::TaskRejected {
                reason: reject_text(code).into(),
                code: code as i32,
            })),
            Action::Exit {
                code: EXIT_TASK_REJECTED,
                reason: detail,
            },
        ]
    }

    /// Declines a round: the coordinator gets the code and its fixed text;
    /// the detail stays in the site's log.
    fn decline(&self, round: u64, d: Decline) -> Vec<Action> {
        warn!(round, code = ?d.code, reason = %d.detail, "declining the round");
        vec![send(Out::RoundReply(v1::RoundReply {
            round,
            accept: false,
            reason: decline_text(d.code).into(),
            code: d.code as i32,
        }))]
    }

    /// The check made before any data is touched: the announced terms
    /// ([`terms::check`]), then the site's own budget with this round added.
    fn check_terms(&self, a: &v1::RoundAnnounce) -> Result<RoundPlan, Decline> {
        let task = self
            .task
            .as_ref()
            .ok_or_else(|| Decline::new(DeclineCode::NotReady, "no task"))?;
        let plan = terms::check(&self.config, task, a)?;
        let p = &self.config.privacy;
        if let Some(max) = p.max_epsilon {
            let next = self.contribution(a, &plan);
            let eps = self.ledger.epsilon_if(&next, p.delta).map_err(|e| {
                Decline::new(
                    DeclineCode::LedgerUnavailable,
                    format!("cannot account the round: {e}"),
                )
            })?;
            if eps.is_nan() || eps > max {
                let now = self.ledger.epsilon(p.delta).unwrap_or(f64::NAN);
                return Err(Decline::new(
                    DeclineCode::BudgetExceeded,
                    format!(
                        "this round would take the site's ε from {now:.4} to {eps:.4}, past its budget {max} (δ = {})",
                        p.delta
                    ),
                ));
            }
        }
        if plan.private
            && let Err(e) = self.contribution(a, &plan).event().validate()
        {
            return Err(Decline::new(
                DeclineCode::LedgerUnavailable,
                format!("the round cannot be accounted: {e}"),
            ));
        }
        Ok(plan)
    }

    fn contribution(&self, a: &v1::RoundAnnounce, plan: &RoundPlan) -> Contribution {
        let terms = a.privacy.unwrap_or_default();
        Contribution {
            federation: self.federation.clone(),
            round: a.round,
            training_round: (plan.kind == RoundKind::Training).then_some(a.training_round),
            kind: plan.kind.as_str().into(),
            noise_multiplier: terms.noise_multiplier,
            clip_norm: plan.clip_norm,
            tv_slack: plan.tv_slack,
            not_private: plan.not_private,
            recorded_at_ms: now_ms(),
        }
    }

    fn announce(&mut self, a: v1::RoundAnnounce) -> Vec<Action> {
        let round = a.round;
        if self.round.is_some() {
            debug!(round, "a new round replaces the unfinished one");
            self.round = None;
        }
        if self.task.is_none() || self.data.is_none() {
            return self.decline(
                round,
                Decline::new(DeclineCode::NotReady, "no task or data loaded"),
            );
        }
        let plan = match self.check_terms(&a) {
            Ok(p) => p,
            Err(d) => return self.decline(round, d),
        };
        let mut actions = vec![send(Out::RoundReply(v1::RoundReply {
            round,
            accept: true,
            reason: String::new(),
            code: 0,
        }))];
        let secure = match &a.secagg {
            None => SecureState::Plain,
            Some(setup) => match self.start_secagg(&a, setup) {
                Ok((state, keys)) => {
                    actions.push(send(Out::Keys(convert::keys_to_wire(&keys))));
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
        info!(
            round,
            kind = plan.kind.as_str(),
            training_round = a.training_round,
            "round accepted"
        );
        let model = (plan.kind == RoundKind::Training)
            .then(|| Assembler::new(round, ChunkPurpose::Model, plan.model_len));
        let at_accept = input::computed_at_accept(&plan);
        self.round = Some(RoundState {
            announce: a,
            plan,
            model,
            global: None,
            input: None,
            secure,
            sent: false,
        });
        if at_accept {
            let data = self.data.as_ref().expect("checked above");
            let r = self.round.as_mut().expect("set above");
            let computed = input::statistics(data, &r.plan);
            r.input = Some(input::encode_or_zero(
                round,
                &r.plan,
                computed,
                &mut self.rng,
            ));
        }
        actions.extend(self.maybe_send_input());
        actions
    }

    fn start_secagg(
        &mut self,
        a: &v1::RoundAnnounce,
        setup: &v1::SecAggSetup,
    ) -> Result<(sa::AwaitingPeerKeys, sa::AdvertiseKeys), String> {
        let graph_seed: [u8; 32] = setup
            .graph_seed
            .as_slice()
            .try_into()
            .map_err(|_| "graph seed must be 32 bytes".to_string())?;
        let participants: Vec<u32> = setup.cohort.iter().map(|m| m.index).collect();
        let params = sa::RoundParams {
            round: a.round,
            participants,
            threshold: setup.threshold as usize,
            neighbours: setup.neighbours as usize,
            graph_seed,
            dim: a.dimension as usize,
            modulus_bits: a.encoding.map(|e| e.modulus_bits).unwrap_or(0),
            signed_keys: setup.signed_keys,
        };
        params.validate().map_err(|e| e.to_string())?;
        // A threshold at or below half the cohort would let the coordinator
        // reconstruct secrets with too few colluders.
        if 2 * params.threshold <= params.neighbours {
            return Err(format!("threshold {} is too low", params.threshold));
        }
        let (signer, verifier) = if setup.signed_keys {
            let signing = self.key_signing.as_ref().ok_or(
                "the round asks for signed keys and this participant's certificate key cannot sign them",
            )?;
            let cohort = setup.cohort.iter().map(CohortCertificate::from);
            match signing.for_round(setup.my_index, cohort) {
                Ok((s, v)) => {
                    info!(
                        round = a.round,
                        members = setup.cohort.len(),
                        "cohort certificates checked; keys will be signed and verified"
                    );
                    (
                        Some(Box::new(s) as Box<dyn sa::KeySigner>),
                        Some(Box::new(v) as Box<dyn sa::KeyVerifier>),
                    )
                }
                Err(e) => {
                    warn!(round = a.round, error = %e, "refusing the round: the forwarded certificates do not check out");
                    return Err(e.to_string());
                }
            }
        } else {
            (None, None)
        };
        let cfg = sa::ClientConfig {
            params,
            me: setup.my_index,
            signer,
            verifier,
        };
        sa::AwaitingPeerKeys::start(cfg, &mut self.rng).map_err(|e| e.to_string())
    }

    fn model_chunk(&mut self, c: v1::VectorChunk) -> Vec<Action> {
        let Some(r) = self.round.as_mut() else {
            debug!(round = c.round, "model chunk outside a round ignored");
            return vec![];
        };
        let Some(asm) = r.model.as_mut() else {
            warn!(round = c.round, "unexpected chunk ignored");
            return vec![];
        };
        // The assembler expects exactly the model length the task and the
        // preprocessing imply (checked with the terms), so a chunk naming
        // another length is refused before anything is allocated. The data
        // is untouched so far: leaving here depends on the coordinator only.
        match asm.push(&c) {
            Ok(false) => vec![],
            Ok(true) => {
                let asm = r.model.take().expect("present");
                r.global = asm.finish();
                let round = r.announce.round;
                let task = self.task.as_ref().expect("task");
                let data = self.data.as_ref().expect("data");
                let global = r.global.as_deref().unwrap_or_default();
                let settings = r.announce.training.unwrap_or_default();
                let computed = input::training(task, data, &r.plan, global, settings);
                r.input = Some(input::encode_or_zero(
                    round,
                    &r.plan,
                    computed,
                    &mut self.rng,
                ));
                self.maybe_send_input()
            }
            Err(e) => {
                warn!(error = %e, "bad model chunk; leaving the round");
                self.round = None;
                vec![]
            }
        }
    }

    fn peer_keys(&mut self, k: v1::PeerKeys) -> Vec<Action> {
        let Some(r) = self.round.as_mut() else {
            return vec![];
        };
        let SecureState::AwaitingPeerKeys(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = k.round, "peer keys out of order ignored");
            return vec![];
        };
        let msg = match convert::peer_keys_from_wire(&k) {
            Ok(m) => m,
            Err(e) => return self.abandon(format!("bad peer keys: {e}")),
        };
        match state.handle_peer_keys(msg, &mut self.rng) {
            Ok((next, shares)) => {
                self.round.as_mut().expect("round").secure = SecureState::AwaitingShares(next);
                vec![send(Out::ShareKeys(convert::share_keys_to_wire(&shares)))]
            }
            Err(e) => self.abandon(format!("peer keys refused: {e}")),
        }
    }

    fn routed_shares(&mut self, s: v1::RoutedShares) -> Vec<Action> {
        let Some(r) = self.round.as_mut() else {
            return vec![];
        };
        let SecureState::AwaitingShares(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = s.round, "shares out of order ignored");
            return vec![];
        };
        match state.handle_routed_shares(convert::routed_shares_from_wire(&s)) {
            Ok(next) => {
                self.round.as_mut().expect("round").secure = SecureState::AwaitingInput(next);
                self.maybe_send_input()
            }
            Err(e) => self.abandon(format!("shares refused: {e}")),
        }
    }

    fn unmask(&mut self, req: v1::UnmaskRequest) -> Vec<Action> {
        let Some(r) = self.round.as_mut() else {
            return vec![];
        };
        let SecureState::AwaitingUnmask(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = req.round, "unmask request out of order ignored");
            return vec![];
        };
        match state.handle_unmask_request(convert::unmask_request_from_wire(&req)) {
            Ok(resp) => vec![send(Out::Unmask(convert::unmask_response_to_wire(&resp)))],
            Err(e) => self.abandon(format!("unmask request refused: {e}")),
        }
    }

    fn abandon(&mut self, reason: String) -> Vec<Action> {
        warn!(%reason, "leaving the round");
        self.round = None;
        vec![]
    }

    /// Sends the input once it is computed and the protocol is ready for it.
    fn maybe_send_input(&mut self) -> Vec<Action> {
        let Some(r) = self.round.as_mut() else {
            return vec![];
        };
        if r.sent || r.input.is_none() {
            return vec![];
        }
        let ready = matches!(r.secure, SecureState::Plain | SecureState::AwaitingInput(_));
        if !ready {
            return vec![];
        }
        // Write-ahead: the site's ledger row is durable before anything leaves.
        if r.plan.private {
            let r = self.round.as_ref().expect("round");
            let contribution = self.contribution(&r.announce, &r.plan);
            if let Err(e) = self.ledger.record(&contribution) {
                return self.abandon(format!("cannot write the site ledger: {e}"));
            }
        }
        let r = self.round.as_mut().expect("round");
        let input = r.input.take().expect("checked");
        let round = r.announce.round;
        let wide = r.plan.encoding.modulus_bits > 32;
        let (values, purpose) = match std::mem::replace(&mut r.secure, SecureState::Done) {
            SecureState::AwaitingInput(state) => match state.mask_input(&input) {
                Ok((next, masked)) => {
                    r.secure = SecureState::AwaitingUnmask(next);
                    (masked.values, ChunkPurpose::MaskedInput)
                }
                Err(e) => return self.abandon(format!("masking failed: {e}")),
            },
            _ => {
                r.secure = SecureState::Done;
                (input, ChunkPurpose::PlainInput)
            }
        };
        r.sent = true;
        let chunks = if wide {
            chunk::split(round, purpose, &values)
        } else {
            let narrow: Vec<u32> = values.iter().map(|&v| v as u32).collect();
            chunk::split(round, purpose, &narrow)
        };
        chunks.into_iter().map(|c| send(Out::Chunk(c))).collect()
    }
}
