//! One whole secure-aggregation round in this process, for queries over
//! local files: n sites and one coordinator run the `tessera-secagg`
//! machines (X25519 key agreement, Shamir shares, AES-CTR masks) message by
//! message, each site with its own RNG, and the coordinator learns only the
//! sum. No dropouts, no network: every message is handed over by value.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use rand::rand_core::CryptoRng;
use tessera_secagg::{
    ClientConfig, ClientMessage, ClientSession, RoundParams, ServerRound, StageOutcome,
};

/// The sum of `inputs` (one per site, residues modulo 2^modulus_bits) and
/// the 1-based indices of the sites in it. `rngs` gives each site's own
/// randomness (keys and mask seeds); `graph_seed` relabels the SecAgg+
/// neighbour graph. Needs at least 3 sites.
pub fn secure_sum(
    inputs: &[Vec<u64>],
    modulus_bits: u32,
    graph_seed: [u8; 32],
    rngs: &mut [Box<dyn CryptoRng>],
) -> anyhow::Result<(Vec<u64>, Vec<u32>)> {
    let n = inputs.len();
    if rngs.len() != n {
        bail!("one RNG per site");
    }
    let dim = inputs.first().map_or(0, Vec::len);
    let params = RoundParams::recommended(
        1,
        (1..=n as u32).collect(),
        dim,
        modulus_bits,
        0.0,
        graph_seed,
    )
    .context("secure-aggregation parameters")?;
    let mut server = ServerRound::new(params.clone())?;
    let mut sessions: BTreeMap<u32, ClientSession> = BTreeMap::new();
    for (i, rng) in rngs.iter_mut().enumerate() {
        let me = i as u32 + 1;
        let cfg = ClientConfig {
            params: params.clone(),
            me,
            signer: None,
            verifier: None,
        };
        let (s, m) = ClientSession::start(cfg, rng.as_mut())?;
        server.receive(me, m)?;
        sessions.insert(me, s);
    }
    for _ in 0..4 {
        let msgs = match server.close_stage()? {
            StageOutcome::Send(msgs) => msgs,
            StageOutcome::Finished { sum, contributors } => return Ok((sum, contributors)),
        };
        for (to, msg) in msgs {
            let i = to as usize - 1;
            let (Some(session), Some(rng), Some(input)) =
                (sessions.remove(&to), rngs.get_mut(i), inputs.get(i))
            else {
                bail!("a message for unknown site {to}");
            };
            let (s, reply) = session.handle(msg, rng.as_mut())?;
            let (s, reply): (ClientSession, Option<ClientMessage>) = if s.wants_input() {
                let (s, m) = s.mask_input(input)?;
                (s, Some(m))
            } else {
                (s, reply)
            };
            if let Some(m) = reply {
                server.receive(to, m)?;
            }
            sessions.insert(to, s);
        }
    }
    bail!("the secure-aggregation round did not finish in four stages")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_sum_is_exact_and_wraps() {
        let inputs: Vec<Vec<u64>> = (1..=5u64).map(|i| vec![i, u64::MAX, 7 * i]).collect();
        let mut rngs: Vec<Box<dyn CryptoRng>> = (0..5)
            .map(|i| Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(i)) as Box<dyn CryptoRng>)
            .collect();
        let (sum, who) = secure_sum(&inputs, 64, [3; 32], &mut rngs).unwrap();
        assert_eq!(sum, vec![15, 5u64.wrapping_neg(), 105]);
        assert_eq!(who, [1, 2, 3, 4, 5]);
        let mut two: Vec<Box<dyn CryptoRng>> = (0..2)
            .map(|i| Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(i)) as Box<dyn CryptoRng>)
            .collect();
        assert!(secure_sum(&inputs[..2], 64, [3; 32], &mut two).is_err());
    }
}
