//! One aggregation: a cohort sums one vector each, through secure
//! aggregation (or, for comparisons only, as plain encoded sums).
//!
//! The aggregation records what arrives and decides nothing about time: the
//! federation machine tells it when a stage's deadline has passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use tessera_proto::chunk::{Assembler, ChunkError, Cursor};
use tessera_proto::convert;
use tessera_proto::v1::{self, ChunkPurpose, participant_message::Body};
use tessera_secagg::{self as sa, FixedPoint, ServerRound, StageOutcome};

use tessera_model::RoundKind as Kind;

use super::kinds::Layout;
use super::phase::Phase;

/// Where an aggregation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Secure: collecting accept replies and advertised keys.
    AwaitingKeys,
    /// Secure: collecting encrypted shares.
    AwaitingShares,
    /// Collecting (masked or plain) inputs.
    AwaitingInputs,
    /// Secure with signed keys: collecting the survivors' signatures over
    /// the survivor list (the consistency check; timed as part of unmasking).
    AwaitingSurvivorSignatures,
    /// Secure: collecting revealed shares.
    AwaitingUnmasking,
}

impl Stage {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        self.phase().as_str()
    }

    /// The timed phase this stage is.
    pub fn phase(self) -> Phase {
        match self {
            Stage::AwaitingKeys => Phase::Keys,
            Stage::AwaitingShares => Phase::Shares,
            Stage::AwaitingInputs => Phase::MaskedInput,
            Stage::AwaitingSurvivorSignatures | Stage::AwaitingUnmasking => Phase::Unmask,
        }
    }
}

/// A plain vector being received in chunks (kept whole until complete:
/// plain sums are for comparisons only).
#[derive(Debug)]
enum Upload {
    Narrow(Assembler<u32>),
    Wide(Assembler<u64>),
}

impl Upload {
    fn new(round: u64, purpose: ChunkPurpose, dim: usize, modulus_bits: u32) -> Self {
        if modulus_bits <= 32 {
            Upload::Narrow(Assembler::new(round, purpose, dim as u64))
        } else {
            Upload::Wide(Assembler::new(round, purpose, dim as u64))
        }
    }

    /// Adds a chunk; returns the whole vector once complete.
    fn push(&mut self, chunk: &v1::VectorChunk) -> Result<Option<Vec<u64>>, ChunkError> {
        match self {
            Upload::Narrow(a) => {
                if a.push(chunk)? {
                    let a = std::mem::replace(a, Assembler::new(0, ChunkPurpose::Unspecified, 0));
                    Ok(a.finish().map(|v| v.into_iter().map(u64::from).collect()))
                } else {
                    Ok(None)
                }
            }
            Upload::Wide(a) => {
                if a.push(chunk)? {
                    let a = std::mem::replace(a, Assembler::new(0, ChunkPurpose::Unspecified, 0));
                    Ok(a.finish())
                } else {
                    Ok(None)
                }
            }
        }
    }
}

/// Checks the next chunk of a masked input and decodes its elements (32-
/// or 64-bit words on the wire, by the modulus): `(offset, elements)`.
fn next_masked_part(
    cursor: &mut Cursor,
    chunk: &v1::VectorChunk,
    modulus_bits: u32,
) -> Result<(u64, Vec<u64>), ChunkError> {
    if modulus_bits <= 32 {
        let (offset, words) = cursor.next::<u32>(chunk)?;
        Ok((offset, words.into_iter().map(u64::from).collect()))
    } else {
        cursor.next::<u64>(chunk)
    }
}

/// How the vectors are summed.
#[derive(Debug)]
enum Summation {
    /// Secure aggregation: the coordinator sees only masked vectors.
    Secure(Box<ServerRound>),
    /// Plain encoded sums (comparisons only).
    Plain {
        sum: Vec<u64>,
        contributors: BTreeSet<u32>,
        modulus_bits: u32,
    },
}

/// What handling a message or closing a stage asks the machine to do.
#[derive(Debug)]
pub enum Step {
    /// Send these messages (index → message), the stage advanced.
    Send(Vec<(u32, v1::CoordinatorMessage)>),
    /// The sum is ready.
    Finished {
        /// Σ of the contributors' encoded vectors mod 2^k.
        sum: Vec<u64>,
        /// Cohort indices whose vectors are in the sum.
        contributors: Vec<u32>,
    },
    /// The aggregation cannot complete (too few participants left).
    Failed(tessera_secagg::Error),
}

/// Why a participant's message was refused: always the participant's
/// doing (a local failure of the coordinator is a [`Step::Failed`]). The
/// participant stays in the round unless [`Refusal::is_fatal`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The participant already left this round.
    #[error("participant is no longer in this round")]
    NotInRound,
    /// A message that does not belong to the current stage (ignored).
    #[error("unexpected {message} during stage {stage}")]
    OutOfStage {
        /// The message's name.
        message: &'static str,
        /// The stage awaited.
        stage: &'static str,
    },
    /// Its input arrived twice (ignored).
    #[error("input already received")]
    DuplicateInput,
    /// Its advertised keys are malformed.
    #[error("malformed keys: {0}")]
    MalformedKeys(#[from] tessera_proto::convert::ConvertError),
    /// Secure aggregation refused the message.
    #[error("{0}")]
    Protocol(tessera_secagg::Error),
    /// Its input chunks do not assemble into the announced vector.
    #[error("bad input: {0}")]
    BadInput(ChunkError),
    /// Its assembled input was refused (wrong length, wrong stage, replay).
    #[error("input refused: {0}")]
    InputRefused(tessera_secagg::Error),
    /// An element of its plain input lies outside the modulus.
    #[error("input element outside the modulus")]
    OutsideModulus,
}

impl Refusal {
    /// Whether the participant is out of the round. A signature that does
    /// not verify (on its keys, or on the survivor list) puts it out: it
    /// cannot sign the round's messages, and waiting for another would only
    /// hold the stage until its deadline (see [`super::signatures`]).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Refusal::MalformedKeys(_)
                | Refusal::BadInput(_)
                | Refusal::InputRefused(_)
                | Refusal::OutsideModulus
                | Refusal::Protocol(tessera_secagg::Error::ProtocolViolation(
                    tessera_secagg::Violation::BadSignature { .. }
                ))
        )
    }
}

/// One aggregation in progress.
#[derive(Debug)]
pub struct Aggregation {
    /// Aggregation number.
    pub round: u64,
    /// Statistics or training.
    pub kind: Kind,
    /// Training round (0 for statistics).
    pub training_round: u32,
    /// Cohort: index → name.
    pub cohort: BTreeMap<u32, String>,
    index_of: HashMap<String, u32>,
    /// Vector length.
    pub dim: usize,
    /// Fixed-point encoding.
    pub encoding: FixedPoint,
    summation: Summation,
    stage: Stage,
    /// When the current stage ends at the latest.
    pub deadline: Instant,
    /// Participants that declined, disconnected or misbehaved.
    gone: BTreeSet<u32>,
    accepted: BTreeSet<u32>,
    /// Plain inputs being received (whole vectors until complete).
    uploads: HashMap<u32, Upload>,
    /// Masked inputs being received: where each stands. Their elements go
    /// straight into secure aggregation's running sum.
    masked: HashMap<u32, Cursor>,
    /// When the aggregation started.
    pub started: Instant,
    stage_started: Instant,
    /// Seconds per finished stage.
    pub stage_seconds: Vec<(Phase, f64)>,
    /// Expected cohort size q·N (the DP denominator).
    pub expected_cohort: f64,
    /// The privacy event the round's release is accounted as (decided when
    /// it started: σ, inclusion rate, total-variation slack).
    pub event: tessera_privacy::PrivacyEvent,
    /// What the vector holds, part by part.
    pub layout: Layout,
}

/// Everything needed to start an aggregation.
#[derive(Debug)]
pub struct AggregationSpec {
    /// Aggregation number.
    pub round: u64,
    /// Statistics or training.
    pub kind: Kind,
    /// Training round (0 for statistics).
    pub training_round: u32,
    /// Cohort names, in index order (index = position + 1).
    pub cohort: Vec<String>,
    /// Vector length.
    pub dim: usize,
    /// Fixed-point encoding.
    pub encoding: FixedPoint,
    /// Secure-aggregation parameters, or None for plain sums.
    pub secure: Option<sa::RoundParams>,
    /// Deadline of the first stage.
    pub first_deadline: Instant,
    /// Expected cohort size (DP denominator).
    pub expected_cohort: f64,
    /// The privacy event the round's release is accounted as.
    pub event: tessera_privacy::PrivacyEvent,
    /// What the vector holds, part by part.
    pub layout: Layout,
}

impl Aggregation {
    /// Starts an aggregation awaiting its first stage.
    pub fn new(spec: AggregationSpec, now: Instant) -> Result<Self, sa::Error> {
        let cohort: BTreeMap<u32, String> = spec
            .cohort
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n.clone()))
            .collect();
        let index_of = cohort.iter().map(|(i, n)| (n.clone(), *i)).collect();
        let (summation, stage) = match spec.secure {
            Some(params) => (
                Summation::Secure(Box::new(ServerRound::new(params)?)),
                Stage::AwaitingKeys,
            ),
            None => (
                Summation::Plain {
                    sum: vec![0; spec.dim],
                    contributors: BTreeSet::new(),
                    modulus_bits: spec.encoding.modulus_bits,
                },
                Stage::AwaitingInputs,
            ),
        };
        Ok(Self {
            round: spec.round,
            kind: spec.kind,
            training_round: spec.training_round,
            cohort,
            index_of,
            dim: spec.dim,
            encoding: spec.encoding,
            summation,
            stage,
            deadline: spec.first_deadline,
            gone: BTreeSet::new(),
            accepted: BTreeSet::new(),
            uploads: HashMap::new(),
            masked: HashMap::new(),
            started: now,
            stage_started: now,
            stage_seconds: Vec::new(),
            expected_cohort: spec.expected_cohort,
            event: spec.event,
            layout: spec.layout,
        })
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the aggregation runs through secure aggregation.
    pub fn is_secure(&self) -> bool {
        matches!(self.summation, Summation::Secure(_))
    }

    /// The cohort index of `name`, if it is in the cohort.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.index_of.get(name).copied()
    }

    /// Names of cohort members that are out of the round.
    pub fn gone_names(&self) -> Vec<String> {
        self.gone
            .iter()
            .filter_map(|i| self.cohort.get(i).cloned())
            .collect()
    }

    /// Names secure aggregation identified as having revealed a share that
    /// disagrees with every other holder's (their share was left out).
    pub fn misbehaving_names(&self) -> Vec<String> {
        match &self.summation {
            Summation::Secure(s) => s
                .misbehaving()
                .iter()
                .filter_map(|i| self.cohort.get(i).cloned())
                .collect(),
            Summation::Plain { .. } => Vec::new(),
        }
    }

    /// Marks a participant as out of the round (declined, disconnected).
    pub fn drop_participant(&mut self, index: u32) {
        self.gone.insert(index);
        self.uploads.remove(&index);
        if self.masked.remove(&index).is_some()
            && let Summation::Secure(server) = &mut self.summation
        {
            // Whatever it sent of its masked input leaves the sum again.
            server.withdraw_masked(index);
        }
    }

    /// Elements held for inputs still arriving, in memory (the running
    /// sums aside): whole plain vectors, and the parts of masked inputs
    /// not yet complete.
    pub fn held_elements(&self) -> usize {
        let secure = match &self.summation {
            Summation::Secure(s) => s.held_partial_elements(),
            Summation::Plain { .. } => 0,
        };
        secure + self.uploads.len() * self.dim
    }

    /// Signed keys: verify each survivor-list signature on arrival with
    /// `keys` and refuse a bad one (see [`super::signatures`]).
    pub fn verify_survivor_signatures(&mut self, keys: super::signatures::CohortKeys) {
        if let Summation::Secure(server) = &mut self.summation {
            server.set_verifier(Box::new(keys));
        }
    }

    /// Records that a participant accepted.
    pub fn accept(&mut self, index: u32) {
        self.accepted.insert(index);
    }

    /// Whether every member still in the round has sent what the stage needs.
    pub fn stage_complete(&self) -> bool {
        let pending: Vec<u32> = match &self.summation {
            Summation::Secure(s) => s.pending(),
            Summation::Plain { contributors, .. } => self
                .cohort
                .keys()
                .copied()
                .filter(|i| !contributors.contains(i))
                .collect(),
        };
        pending.iter().all(|i| self.gone.contains(i))
    }

    /// Handles one message of a cohort member.
    pub fn handle(&mut self, index: u32, body: &Body) -> Result<(), Refusal> {
        if self.gone.contains(&index) {
            return Err(Refusal::NotInRound);
        }
        let round = self.round;
        let modulus_bits = self.encoding.modulus_bits;
        let dim = self.dim;
        match (&mut self.summation, body) {
            (Summation::Secure(server), Body::Keys(k)) => {
                let keys = convert::keys_from_wire(index, k)?;
                server
                    .receive(index, sa::ClientMessage::AdvertiseKeys(keys))
                    .map_err(Refusal::Protocol)
            }
            (Summation::Secure(server), Body::ShareKeys(s)) => server
                .receive(
                    index,
                    sa::ClientMessage::ShareKeys(convert::share_keys_from_wire(s)),
                )
                .map_err(Refusal::Protocol),
            (Summation::Secure(server), Body::SurvivorSignature(s)) => server
                .receive(
                    index,
                    sa::ClientMessage::SurvivorSignature(convert::survivor_signature_from_wire(s)),
                )
                .map_err(Refusal::Protocol),
            (Summation::Secure(server), Body::Unmask(u)) => server
                .receive(
                    index,
                    sa::ClientMessage::UnmaskResponse(convert::unmask_response_from_wire(u)),
                )
                .map_err(Refusal::Protocol),
            (Summation::Secure(server), Body::Chunk(chunk)) => {
                if self.stage != Stage::AwaitingInputs {
                    return Err(Refusal::OutOfStage {
                        message: "masked input",
                        stage: self.stage.name(),
                    });
                }
                let cursor = self
                    .masked
                    .entry(index)
                    .or_insert_with(|| Cursor::new(round, ChunkPurpose::MaskedInput, dim as u64));
                let part = next_masked_part(cursor, chunk, modulus_bits)
                    .map_err(Refusal::BadInput)
                    .and_then(|(offset, values)| {
                        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                        server
                            .receive_masked_part(index, round, offset, &values)
                            .map_err(Refusal::InputRefused)
                    });
                match part {
                    Ok(false) => Ok(()),
                    Ok(true) => {
                        self.masked.remove(&index);
                        Ok(())
                    }
                    Err(e) => {
                        // Its parts so far leave the sum; it is out.
                        self.masked.remove(&index);
                        server.withdraw_masked(index);
                        Err(e)
                    }
                }
            }
            (
                Summation::Plain {
                    sum,
                    contributors,
                    modulus_bits,
                },
                Body::Chunk(chunk),
            ) => {
                if contributors.contains(&index) {
                    return Err(Refusal::DuplicateInput);
                }
                let upload = self.uploads.entry(index).or_insert_with(|| {
                    Upload::new(round, ChunkPurpose::PlainInput, dim, *modulus_bits)
                });
                match upload.push(chunk) {
                    Ok(None) => Ok(()),
                    Ok(Some(values)) => {
                        self.uploads.remove(&index);
                        let mask = if *modulus_bits == 64 {
                            u64::MAX
                        } else {
                            (1u64 << *modulus_bits) - 1
                        };
                        if values.iter().any(|&v| v > mask) {
                            return Err(Refusal::OutsideModulus);
                        }
                        for (s, v) in sum.iter_mut().zip(values) {
                            *s = s.wrapping_add(v) & mask;
                        }
                        contributors.insert(index);
                        Ok(())
                    }
                    Err(e) => {
                        self.uploads.remove(&index);
                        Err(Refusal::BadInput(e))
                    }
                }
            }
            (_, other) => Err(Refusal::OutOfStage {
                message: body_name(other),
                stage: self.stage.name(),
            }),
        }
    }

    /// Ends the current stage (everyone answered, or its deadline passed).
    /// `next_deadline(stage)` gives the deadline of the stage that follows.
    pub fn close_stage(&mut self, now: Instant, next_deadline: impl Fn(Stage) -> Instant) -> Step {
        self.stage_seconds.push((
            self.stage.phase(),
            now.duration_since(self.stage_started).as_secs_f64(),
        ));
        self.stage_started = now;
        self.uploads.clear();
        // Secure aggregation withdraws masked inputs left unfinished.
        self.masked.clear();
        match &mut self.summation {
            Summation::Plain {
                sum, contributors, ..
            } => Step::Finished {
                sum: std::mem::take(sum),
                contributors: contributors.iter().copied().collect(),
            },
            Summation::Secure(server) => match server.close_stage() {
                Ok(StageOutcome::Send(messages)) => {
                    self.stage = match server.stage() {
                        sa::Stage::AwaitingShares => Stage::AwaitingShares,
                        sa::Stage::AwaitingMaskedInputs => Stage::AwaitingInputs,
                        sa::Stage::AwaitingSurvivorSignatures => Stage::AwaitingSurvivorSignatures,
                        _ => Stage::AwaitingUnmasking,
                    };
                    self.deadline = next_deadline(self.stage);
                    Step::Send(
                        messages
                            .iter()
                            .map(|(to, m)| (*to, convert::server_message_to_wire(m)))
                            .collect(),
                    )
                }
                Ok(StageOutcome::Finished { sum, contributors }) => {
                    Step::Finished { sum, contributors }
                }
                Err(e) => Step::Failed(e),
            },
        }
    }
}

/// Short name of a message body, for logs.
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "hello",
        Body::RoundReply(_) => "round reply",
        Body::Keys(_) => "keys",
        Body::ShareKeys(_) => "share keys",
        Body::Chunk(_) => "vector chunk",
        Body::Unmask(_) => "unmask response",
        Body::SurvivorSignature(_) => "survivor signature",
        Body::TaskRejected(_) => "task rejection",
        Body::UploadRequest(_) => "upload request",
        Body::UploadWithdrawn(_) => "upload withdrawal",
    }
}
