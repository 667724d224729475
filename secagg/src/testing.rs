//! An in-process, deterministic runner for whole rounds (feature
//! `test-util`): n participants and one coordinator, a seeded RNG, no
//! network, and a [`DropoutPlan`] saying who disappears at which stage.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::{
    ClientConfig, ClientMessage, ClientSession, Error, RoundParams, ServerMessage, ServerRound,
    StageOutcome,
};

/// Who drops out, and when. A participant listed in several sets drops at
/// the earliest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropoutPlan {
    /// Never sends anything.
    pub before_keys: BTreeSet<u32>,
    /// Sends its keys, then disappears.
    pub after_keys: BTreeSet<u32>,
    /// Sends its encrypted shares, then disappears (its masks must be removed).
    pub after_shares: BTreeSet<u32>,
    /// Sends its masked input, then disappears during unmasking.
    pub after_masked_input: BTreeSet<u32>,
    /// Sends the first half of its masked input (in parts), then
    /// disappears: the half must leave the sum again.
    pub mid_masked_input: BTreeSet<u32>,
}

/// The result of a completed round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOutcome {
    /// The unmasked sum modulo 2^modulus_bits.
    pub sum: Vec<u64>,
    /// Whose inputs are in the sum.
    pub contributors: Vec<u32>,
    /// SHA-256 over every message of the round, in order (determinism checks).
    pub transcript_hash: [u8; 32],
    /// Payload bytes sent by each participant.
    pub bytes_sent: BTreeMap<u32, u64>,
    /// Participants that stopped because of an error, with the error.
    pub client_errors: Vec<(u32, Error)>,
}

/// The exact sum of the given participants' inputs modulo 2^modulus_bits.
pub fn expected_sum(params: &RoundParams, inputs: &[Vec<u64>], who: &[u32]) -> Vec<u64> {
    let mut sum = vec![0u64; params.dim];
    for (i, u) in params.participants.iter().enumerate() {
        if who.contains(u) {
            for (s, x) in sum.iter_mut().zip(&inputs[i]) {
                *s = s.wrapping_add(*x);
            }
        }
    }
    crate::prg::reduce(&mut sum, params.modulus_bits);
    sum
}

fn absorb_client(h: &mut Sha256, from: u32, m: &ClientMessage) {
    h.update(b"C");
    h.update(from.to_be_bytes());
    h.update(m.round().to_be_bytes());
    match m {
        ClientMessage::AdvertiseKeys(k) => {
            h.update(k.from.to_be_bytes());
            h.update(k.cipher_public_key);
            h.update(k.mask_public_key);
            h.update((k.signature.len() as u64).to_be_bytes());
            h.update(&k.signature);
        }
        ClientMessage::ShareKeys(s) => {
            for e in &s.shares {
                h.update(e.from.to_be_bytes());
                h.update(e.to.to_be_bytes());
                h.update(&e.ciphertext);
            }
        }
        ClientMessage::MaskedInput(v) => {
            for x in &v.values {
                h.update(x.to_le_bytes());
            }
        }
        ClientMessage::SurvivorSignature(m) => h.update(&m.signature),
        ClientMessage::UnmaskResponse(r) => {
            for (o, s) in r.self_mask_shares.iter().chain(r.key_shares.iter()) {
                h.update(o.to_be_bytes());
                h.update(s);
            }
        }
    }
}

fn absorb_server(h: &mut Sha256, to: u32, m: &ServerMessage) {
    h.update(b"S");
    h.update(to.to_be_bytes());
    h.update(m.round().to_be_bytes());
    match m {
        ServerMessage::PeerKeys(p) => {
            for k in &p.keys {
                absorb_client(h, k.from, &ClientMessage::AdvertiseKeys(k.clone()));
            }
        }
        ServerMessage::RoutedShares(r) => {
            for e in &r.shares {
                h.update(e.from.to_be_bytes());
                h.update(&e.ciphertext);
            }
        }
        ServerMessage::SurvivorList(l) => {
            for u in &l.survivors {
                h.update(u.to_be_bytes());
            }
        }
        ServerMessage::UnmaskRequest(r) => {
            for u in &r.survivors {
                h.update(u.to_be_bytes());
            }
            h.update(b"|");
            for u in &r.dropped {
                h.update(u.to_be_bytes());
            }
            for (u, s) in &r.signatures {
                h.update(u.to_be_bytes());
                h.update(s);
            }
        }
    }
}

/// Runs one whole round in process: `inputs[i]` is the input of
/// `params.participants[i]`; every participant's RNG is derived from `seed`.
/// Participants that fail (e.g. too few neighbours left) stop silently, as
/// a dropout would. Returns the coordinator's result.
pub fn run_round(
    params: &RoundParams,
    inputs: &[Vec<u64>],
    plan: &DropoutPlan,
    seed: u64,
) -> Result<RoundOutcome, Error> {
    if inputs.len() != params.participants.len() {
        return Err(Error::ApiMisuse("one input per participant"));
    }
    let mut master = ChaCha20Rng::seed_from_u64(seed);
    let mut server = ServerRound::new(params.clone())?;
    let mut h = Sha256::new();
    let mut bytes: BTreeMap<u32, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut sessions: BTreeMap<u32, (ClientSession, ChaCha20Rng)> = BTreeMap::new();
    let input_of: BTreeMap<u32, &Vec<u64>> = params
        .participants
        .iter()
        .copied()
        .zip(inputs.iter())
        .collect();
    let bits = params.modulus_bits;

    fn deliver(
        server: &mut ServerRound,
        h: &mut Sha256,
        bytes: &mut BTreeMap<u32, u64>,
        bits: u32,
        from: u32,
        m: ClientMessage,
    ) -> Result<(), Error> {
        absorb_client(h, from, &m);
        *bytes.entry(from).or_default() += m.payload_len(bits);
        server.receive(from, m)
    }

    for &u in &params.participants {
        let mut seed32 = [0u8; 32];
        master.fill_bytes(&mut seed32);
        let mut rng = ChaCha20Rng::from_seed(seed32);
        if plan.before_keys.contains(&u) {
            continue;
        }
        let cfg = ClientConfig {
            params: params.clone(),
            me: u,
            signer: None,
            verifier: None,
        };
        let (s, m) = ClientSession::start(cfg, &mut rng)?;
        deliver(&mut server, &mut h, &mut bytes, bits, u, m)?;
        sessions.insert(u, (s, rng));
    }
    let stop_after = [
        &plan.after_keys,
        &plan.after_shares,
        &plan.after_masked_input,
    ];
    for stage in 0..4 {
        let out = server.close_stage()?;
        let msgs = match out {
            StageOutcome::Send(msgs) => msgs,
            StageOutcome::Finished { sum, contributors } => {
                return Ok(RoundOutcome {
                    sum,
                    contributors,
                    transcript_hash: h.finalize().into(),
                    bytes_sent: bytes,
                    client_errors: errors,
                });
            }
        };
        for (to, msg) in msgs {
            absorb_server(&mut h, to, &msg);
            if stop_after
                .iter()
                .take(stage + 1)
                .any(|set| set.contains(&to))
            {
                sessions.remove(&to);
                continue;
            }
            let Some((session, mut rng)) = sessions.remove(&to) else {
                continue;
            };
            let result = session.handle(msg, &mut rng).and_then(|(s, reply)| {
                if s.wants_input() && !plan.after_shares.contains(&to) {
                    let input = input_of.get(&to).map(|v| v.as_slice()).unwrap_or(&[]);
                    // Exercise both masking paths (borrowed and in place).
                    let (s, m) = if to % 2 == 0 {
                        s.mask_input(input)?
                    } else {
                        s.mask_input_owned(input.to_vec())?
                    };
                    Ok((s, Some(m)))
                } else {
                    Ok((s, reply))
                }
            });
            match result {
                Ok((s, Some(ClientMessage::MaskedInput(m))))
                    if plan.mid_masked_input.contains(&to) =>
                {
                    // Half of it, in two parts, then silence.
                    let half = m.values.len() / 2;
                    let quarter = half / 2;
                    for (a, b) in [(0, quarter), (quarter, half)] {
                        if a < b {
                            server.receive_masked_part(to, m.round, a, &m.values[a..b])?;
                        }
                    }
                    drop(s);
                }
                Ok((s, Some(ClientMessage::MaskedInput(m)))) if to % 3 == 0 => {
                    // Exercise the parts path: three parts.
                    absorb_client(&mut h, to, &ClientMessage::MaskedInput(m.clone()));
                    *bytes.entry(to).or_default() +=
                        ClientMessage::MaskedInput(m.clone()).payload_len(bits);
                    let third = m.values.len() / 3;
                    let cuts = [0, third, 2 * third, m.values.len()];
                    for w in cuts.windows(2).filter(|w| w[0] < w[1]) {
                        server.receive_masked_part(to, m.round, w[0], &m.values[w[0]..w[1]])?;
                    }
                    sessions.insert(to, (s, rng));
                }
                Ok((s, reply)) => {
                    if let Some(m) = reply {
                        deliver(&mut server, &mut h, &mut bytes, bits, to, m)?;
                    }
                    sessions.insert(to, (s, rng));
                }
                Err(e) => errors.push((to, e)),
            }
        }
    }
    Err(Error::ApiMisuse("round did not finish in four stages"))
}
