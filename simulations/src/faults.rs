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

/// The command-line flag that seeds a simulated site's randomness (NOT
/// secure: its masks become predictable; for reproducing runs only).
pub const INSECURE_SEED_FLAG: &str = "--insecure-seed";

/// `tessera-sim participant [--crash-after-shares ROUND]
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
