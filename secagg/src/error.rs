//! Error types.
//!
//! Errors are split the way rustls splits them: a [`Violation`] is something a
//! *peer* did wrong (untrusted input), [`Error::ApiMisuse`] is a mistake of the
//! caller (call order, parameters), and [`Error::BelowThreshold`] is the
//! protocol's own abort: too few participants are left to finish safely.

use crate::Stage;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer (participant or coordinator) sent something the protocol does
    /// not allow. The message was rejected and the state left unchanged.
    #[error("protocol violation: {0}")]
    ProtocolViolation(Violation),
    /// Too few participants are left for the round to finish without
    /// revealing anything beyond the sum; the round is aborted and nothing is
    /// released.
    #[error("aborted in stage {stage:?}: {have} participants left, {needed} needed")]
    BelowThreshold {
        /// How many were needed.
        needed: usize,
        /// How many there were.
        have: usize,
        /// The stage that could not be completed.
        stage: Stage,
    },
    /// Round parameters that are malformed or cannot meet the requested
    /// security or dropout tolerance.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Local input the caller handed in is unusable (wrong length, NaN,
    /// out of the encodable range).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The caller used the API in a way it does not support (call order,
    /// missing signer, ...). Never caused by untrusted data.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl Error {
    /// Whether the error was caused by a misbehaving peer (untrusted input).
    pub fn is_peer_misbehaviour(&self) -> bool {
        matches!(self, Error::ProtocolViolation(_))
    }
}

impl From<Violation> for Error {
    fn from(v: Violation) -> Self {
        Error::ProtocolViolation(v)
    }
}

/// The precise way a peer misbehaved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The message is not legal in the current stage (late, early or replayed).
    #[error("message not expected in the current stage")]
    WrongStage,
    /// The message belongs to another round.
    #[error("message for round {got}, expected round {expected}")]
    WrongRound {
        /// This round.
        expected: u64,
        /// The round the message names.
        got: u64,
    },
    /// The sender (or a participant named in the message) is not in the cohort.
    #[error("participant {0} is not in the cohort")]
    UnknownParticipant(u32),
    /// The participant is in the cohort but not expected here (dropped earlier,
    /// not a neighbour, not asked).
    #[error("participant {0} is not selected for this step")]
    NotSelected(u32),
    /// The same message (or the same entry) arrived twice.
    #[error("duplicate message or entry from/for participant {0}")]
    Duplicate(u32),
    /// A vector, list or byte string has the wrong length.
    #[error("wrong length: expected {expected}, got {got}")]
    WrongLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A part of a vector does not start where the previous one ended.
    #[error("part at offset {got}, expected offset {expected}")]
    OutOfOrder {
        /// Where the next part must start.
        expected: usize,
        /// Where it started.
        got: usize,
    },
    /// A message claims to come from someone other than its authenticated sender.
    #[error("message claims sender {claimed}, authenticated sender is {actual}")]
    WrongSender {
        /// Sender named in the message.
        claimed: u32,
        /// Sender the transport authenticated.
        actual: u32,
    },
    /// An element of a masked vector is not below 2^modulus_bits.
    #[error("vector element {index} out of range")]
    ValueOutOfRange {
        /// Position of the first offending element.
        index: usize,
    },
    /// An encrypted share failed to decrypt or authenticate.
    #[error("encrypted share from participant {from} does not decrypt")]
    BadCiphertext {
        /// Sender of the share.
        from: u32,
    },
    /// A peer's key signature is missing or does not verify.
    #[error("signature on the keys of participant {peer} is missing or invalid")]
    BadSignature {
        /// Whose keys.
        peer: u32,
    },
    /// A peer's public key is a low-order point (non-contributory agreement).
    #[error("public key of participant {peer} is not usable")]
    BadPublicKey {
        /// Whose key.
        peer: u32,
    },
    /// A Shamir share is malformed, or the shares of one secret are inconsistent.
    #[error("bad share of the secret of participant {owner}")]
    BadShare {
        /// Owner of the shared secret.
        owner: u32,
    },
    /// The coordinator asked for both the self-mask share and the key share of
    /// the same participant.
    #[error("both shares of participant {peer} requested")]
    BothSharesRequested {
        /// The participant named in both lists.
        peer: u32,
    },
    /// The coordinator asked to reveal a share this participant never received.
    #[error("no shares were received from participant {peer}")]
    NoSharesFrom {
        /// The participant named.
        peer: u32,
    },
    /// The coordinator announced fewer survivors than the threshold.
    #[error("only {have} survivors announced, threshold is {needed}")]
    TooFewSurvivors {
        /// Threshold.
        needed: usize,
        /// Survivors announced (including the recipient).
        have: usize,
    },
    /// The coordinator's neighbour-graph seed differs from the one derived
    /// from the advertised keys (signed keys: it tried to choose the graph).
    #[error("the coordinator's graph seed is not the one derived from the advertised keys")]
    GraphSeedMismatch,
    /// A list that must be strictly increasing (it is signed in that
    /// canonical form) is not.
    #[error("list not strictly increasing at participant {0}")]
    NotCanonical(u32),
    /// The coordinator's survivor list leaves out this participant although
    /// it sent its masked input, or the recipient is asked to sign a list
    /// that does not name it.
    #[error("the survivor list leaves out participant {0}")]
    LeftOutOfSurvivors(u32),
    /// The coordinator asked for shares without the consistency check that
    /// a signed-key round requires (Bonawitz et al. 2017, Round 3).
    #[error("unmasking requested without the consistency check of a signed round")]
    ConsistencyCheckSkipped,
    /// A forwarded survivor-list signature does not verify over the list
    /// this participant was given: the coordinator told participants
    /// different survivor sets, or forwarded a forged signature.
    #[error(
        "the signature of participant {signer} is not over the survivor set this participant was given"
    )]
    SurvivorSetMismatch {
        /// Whose signature.
        signer: u32,
    },
    /// A forwarded survivor-list signature comes from a participant that is
    /// not in the survivor set.
    #[error("survivor-list signature from participant {0}, who is not a survivor")]
    SignerNotSurvivor(u32),
    /// Fewer valid survivor-list signatures than the threshold.
    #[error("only {have} valid survivor-list signatures, threshold is {needed}")]
    TooFewSurvivorSignatures {
        /// Threshold.
        needed: usize,
        /// Valid signatures from distinct survivors.
        have: usize,
    },
    /// The unmasking request treats a participant differently from the
    /// signed survivor set (a survivor as dropped, or the reverse).
    #[error("the unmask request contradicts the signed survivor set about participant {peer}")]
    SurvivorsContradicted {
        /// The participant concerned.
        peer: u32,
    },
}
