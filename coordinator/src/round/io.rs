//! Inputs to and outputs of the federation machine.

use tessera_model::{EvalMetrics, ModelFile, Preprocessor, RoundKind};

use super::phase::Phase;
use tessera_privacy::PrivacyEvent;
use tessera_proto::v1::{CoordinatorMessage, ParticipantMessage};

/// Something that happened, fed to [`super::FederationMachine::handle`].
#[derive(Debug)]
pub enum Input {
    /// A participant opened a session (its certificate was verified).
    Connected {
        /// Certificate name.
        name: String,
        /// Session id; a later session of the same name replaces this one.
        session: u64,
        /// DER certificate, forwarded to peers when keys are signed.
        certificate: Vec<u8>,
    },
    /// A session ended.
    Disconnected {
        /// Certificate name.
        name: String,
        /// Session id.
        session: u64,
    },
    /// A message arrived on a session.
    Message {
        /// Certificate name.
        name: String,
        /// Session id.
        session: u64,
        /// The message.
        message: ParticipantMessage,
    },
    /// The driver made a [`Commit`] durable.
    Committed {
        /// The aggregation it belongs to.
        round: u64,
    },
}

/// What the machine wants done, taken with [`super::FederationMachine::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send a message on a participant's current session.
    Send {
        /// Certificate name.
        to: String,
        /// The message (boxed: the largest output by far).
        message: Box<CoordinatorMessage>,
    },
    /// Make a round's results durable, in this order: ledger row, then
    /// checkpoint, then round record; then feed back [`Input::Committed`].
    /// Nothing of the round is released before that.
    Commit(Box<Commit>),
    /// Record that a round failed (nothing released).
    RoundAborted(RoundSummary),
    /// Record that an aggregation started.
    RoundStarted(RoundSummary),
    /// An analytics query was released (after its ledger row was made
    /// durable): store it, log it, answer whoever asked.
    QueryReleased(Box<super::QueryReleased>),
    /// An analytics query was not answered (nothing released or counted).
    QueryFailed(Box<super::QueryFailed>),
    /// The federation is over: send `FederationDone` to everyone and stop.
    Finished {
        /// Why it ended.
        reason: String,
        /// Whether it ended as planned (all rounds done) or by the budget.
        success: bool,
    },
}

/// What the store needs to know of one aggregation.
#[derive(Debug, Clone)]
pub struct RoundSummary {
    /// Aggregation number.
    pub round: u64,
    /// Training round (None for statistics); for an evaluation, the training
    /// round of the model it evaluated.
    pub training_round: Option<u32>,
    /// Statistics or training.
    pub kind: RoundKind,
    /// Cohort names.
    pub cohort: Vec<String>,
    /// Names whose input is in the sum.
    pub contributors: Vec<String>,
    /// Names that were selected but are not in the sum.
    pub dropped: Vec<String>,
    /// Why the round failed, if it did.
    pub reason: Option<String>,
    /// Seconds spent in each stage.
    pub stage_seconds: Vec<(Phase, f64)>,
    /// Wall seconds of the whole aggregation.
    pub seconds: f64,
}

/// A released round's durable record.
#[derive(Debug, Clone)]
pub struct Commit {
    /// What happened.
    pub summary: RoundSummary,
    /// The privacy event, when DP is on.
    pub privacy: Option<LedgerEntry>,
    /// The new global model (training rounds), with its preprocessing.
    pub checkpoint: Option<ModelFile>,
    /// The pooled preprocessing (statistics rounds).
    pub preprocessing: Option<Preprocessor>,
    /// ε of the ledger including this round (None when DP is off).
    pub epsilon_after: Option<f64>,
    /// L2 norm of the applied (noised, averaged) update.
    pub update_norm: Option<f64>,
    /// Participants to close and refuse from now on, with why: secure
    /// aggregation identified them as having revealed a share that
    /// disagrees with every other holder's (their share was left out of
    /// this round).
    pub excluded: Vec<(String, String)>,
    /// The global metrics of an evaluation round (sums of the whole cohort
    /// only; noised under DP).
    pub evaluation: Option<EvalMetrics>,
}

/// One privacy ledger row.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// The mechanism and its parameters.
    pub event: PrivacyEvent,
    /// Cohort size announced.
    pub cohort_size: u32,
    /// Sensitivity bound (clip norm) of one participant's contribution.
    pub clip_norm: f64,
    /// Noise multiplier.
    pub noise_multiplier: f64,
    /// Sampling rate accounted.
    pub sampling_rate: f64,
    /// The noise was seeded: the release is NOT private.
    pub not_private: bool,
}
