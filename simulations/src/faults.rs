//! Faults a simulated site injects into itself, so that dropout recovery can
//! be exercised across real processes at a chosen point of the protocol.
//! They live here, in the simulations, and reach the participant only
//! through its send hook ([`tessera_participant::client::SendHook`]): the
//! production participant has no fault code.

use std::process::ExitCode;
use std::time::Duration;

use tessera_participant::client::SendHook;
use tessera_proto::v1::{ParticipantMessage, participant_message::Body};

/// Exit code of a simulated crash.
pub const EXIT_SIMULATED_CRASH: u8 = 101;

/// The command-line flag of [`CrashAfterShares`] for `tessera-sim participant`.
pub const CRASH_AFTER_SHARES_FLAG: &str = "--crash-after-shares";

/// Exits abruptly (as a crash would) right after sending the encrypted
/// shares of one aggregation, before sending its masked input.
#[derive(Debug, Clone, Copy)]
pub struct CrashAfterShares {
    /// The aggregation.
    pub round: u64,
}

impl SendHook for CrashAfterShares {
    fn sent(&mut self, message: &ParticipantMessage) {
        if matches!(&message.body, Some(Body::ShareKeys(s)) if s.round == self.round) {
            // Let the shares leave, then vanish without a goodbye, mid-round.
            std::thread::sleep(Duration::from_millis(300));
            tracing::warn!(round = self.round, "simulated crash after sending shares");
            std::process::exit(i32::from(EXIT_SIMULATED_CRASH));
        }
    }
}

/// The command-line flag of [`StopAfter`] for `tessera-sim participant`:
/// `--stop-after STAGE:ROUND`, STAGE one of [`StopAfter::STAGES`].
pub const STOP_AFTER_FLAG: &str = "--stop-after";

/// Stops its own process (SIGSTOP) right after sending its last message of
/// one secure-aggregation stage of one aggregation, so that a test can
/// SIGKILL it at that exact point of the protocol: after `reply` (accepted
/// the round, no keys sent), `keys` (no shares sent), `shares` (no masked
/// input sent) or `masked` (the last chunk of its masked input sent, no
/// unmasking answer). Logs `simulated stop after STAGE` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopAfter {
    /// One of [`StopAfter::STAGES`].
    pub stage: String,
    /// The aggregation.
    pub round: u64,
}

impl StopAfter {
    /// The stages a site can stop after.
    pub const STAGES: [&'static str; 4] = ["reply", "keys", "shares", "masked"];

    /// Parses `STAGE:ROUND`.
    pub fn parse(text: &str) -> Option<Self> {
        let (stage, round) = text.split_once(':')?;
        Self::STAGES.contains(&stage).then_some(())?;
        Some(Self {
            stage: stage.to_owned(),
            round: round.parse().ok()?,
        })
    }

    fn matches(&self, body: &Body) -> bool {
        match (self.stage.as_str(), body) {
            ("reply", Body::RoundReply(r)) => r.round == self.round && r.accept,
            ("keys", Body::Keys(k)) => k.round == self.round,
            ("shares", Body::ShareKeys(s)) => s.round == self.round,
            ("masked", Body::Chunk(c)) => {
                c.round == self.round
                    && c.purpose == tessera_proto::v1::ChunkPurpose::MaskedInput as i32
                    && c.offset.saturating_add((c.data.len() / 4) as u64) >= c.total
            }
            _ => false,
        }
    }
}

impl SendHook for StopAfter {
    fn sent(&mut self, message: &ParticipantMessage) {
        if message.body.as_ref().is_some_and(|b| self.matches(b)) {
            // Let the message leave, then freeze where we are.
            std::thread::sleep(Duration::from_millis(300));
            tracing::warn!(round = self.round, stage = %self.stage, "simulated stop after {}", self.stage);
            let _ = std::process::Command::new("kill")
                .args(["-s", "STOP", &std::process::id().to_string()])
                .status();
        }
    }
}

/// The command-line flag of [`BadSurvivorSignature`] for `tessera-sim participant`.
pub const BAD_SURVIVOR_SIGNATURE_FLAG: &str = "--bad-survivor-signature";

/// A hostile site: in a signed-key aggregation it sends a survivor-list
/// signature that does not verify (its genuine one with one bit flipped),
/// and otherwise follows the protocol. The coordinator must drop it from the
/// rest of that aggregation rather than forward the signature, which would
/// make every honest site refuse to reveal its shares.
#[derive(Debug, Clone, Copy)]
pub struct BadSurvivorSignature {
    /// The aggregation.
    pub round: u64,
}

impl SendHook for BadSurvivorSignature {
    fn sent(&mut self, _message: &ParticipantMessage) {}

    fn rewrite(&mut self, message: &mut ParticipantMessage) {
        if let Some(Body::SurvivorSignature(s)) = &mut message.body
            && s.round == self.round
            && let Some(last) = s.signature.last_mut()
        {
            *last ^= 1;
            tracing::warn!(round = self.round, "simulated bad survivor signature");
        }
    }
}

/// The command-line flag that seeds a simulated site's randomness (NOT
/// secure: its masks become predictable; for reproducing runs only).
pub const INSECURE_SEED_FLAG: &str = "--insecure-seed";

/// `tessera-sim participant [--crash-after-shares ROUND | --stop-after STAGE:ROUND |
/// --bad-survivor-signature ROUND]
/// [--leave-round AGGREGATION:STAGE]… [--insecure-seed SEED] <participant
/// args>`: the participant's own command line, with the simulation's faults
/// (see [`crate::dropout`] for leaving rounds).
pub fn participant_main(args: Vec<String>) -> ExitCode {
    let mut rest = Vec::with_capacity(args.len());
    let mut hook: Option<Box<dyn SendHook>> = None;
    let mut leave = Vec::new();
    let mut rng: Option<tessera_participant::site::SecureRng> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == crate::dropout::LEAVE_FLAG {
            match it.next().map(|v| crate::dropout::parse_leave(&v)) {
                Some(Ok(l)) => leave.push(l),
                Some(Err(e)) => {
                    eprintln!("error: {}: {e}", crate::dropout::LEAVE_FLAG);
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!(
                        "error: {} needs AGGREGATION:STAGE",
                        crate::dropout::LEAVE_FLAG
                    );
                    return ExitCode::from(2);
                }
            }
        } else if a == INSECURE_SEED_FLAG {
            match it.next().and_then(|r| r.parse::<u64>().ok()) {
                Some(seed) => {
                    use rand::SeedableRng;
                    rng = Some(Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)));
                }
                None => {
                    eprintln!("error: {INSECURE_SEED_FLAG} needs a number");
                    return ExitCode::from(2);
                }
            }
        } else if a == CRASH_AFTER_SHARES_FLAG {
            match it.next().and_then(|r| r.parse::<u64>().ok()) {
                Some(round) => hook = Some(Box::new(CrashAfterShares { round })),
                None => {
                    eprintln!("error: {CRASH_AFTER_SHARES_FLAG} needs an aggregation number");
                    return ExitCode::from(2);
                }
            }
        } else if a == BAD_SURVIVOR_SIGNATURE_FLAG {
            match it.next().and_then(|r| r.parse::<u64>().ok()) {
                Some(round) => hook = Some(Box::new(BadSurvivorSignature { round })),
                None => {
                    eprintln!("error: {BAD_SURVIVOR_SIGNATURE_FLAG} needs an aggregation number");
                    return ExitCode::from(2);
                }
            }
        } else if a == STOP_AFTER_FLAG {
            match it.next().as_deref().and_then(StopAfter::parse) {
                Some(stop) => hook = Some(Box::new(stop)),
                None => {
                    eprintln!(
                        "error: {STOP_AFTER_FLAG} needs STAGE:ROUND, STAGE one of {:?}",
                        StopAfter::STAGES
                    );
                    return ExitCode::from(2);
                }
            }
        } else {
            rest.push(a);
        }
    }
    if !leave.is_empty() {
        if hook.is_some() {
            eprintln!(
                "error: {CRASH_AFTER_SHARES_FLAG} and {} do not combine",
                crate::dropout::LEAVE_FLAG
            );
            return ExitCode::from(2);
        }
        hook = Some(Box::new(crate::dropout::LeaveRounds::new(leave)));
    }
    tessera_participant::cli::main_with_options(
        std::iter::once("tessera-participant".to_string()).chain(rest),
        tessera_participant::client::ShellOptions { hook, rng },
    )
}
