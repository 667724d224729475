//! The secure-aggregation server fed a random sequence of operations over
//! an honest round of six: deliver a participant's next message, deliver
//! it tampered with (bytes, lengths, indices, round), replay it, drop it,
//! or close the stage. The server never panics, and whenever it finishes,
//! the sum is the contributors' true sum.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;
use tessera_secagg::{
    ClientConfig, ClientMessage, ClientSession, RoundParams, ServerRound, StageOutcome,
};

const N: u32 = 6;
const DIM: usize = 5;

fn tamper(m: &ClientMessage, how: u8, x: u8) -> ClientMessage {
    let mut m = m.clone();
    match &mut m {
        ClientMessage::AdvertiseKeys(k) => match how % 4 {
            0 => k.round ^= u64::from(x) + 1,
            1 => k.from = u32::from(x),
            2 => k.mask_public_key[usize::from(x) % 32] ^= 1,
            _ => k.signature = vec![x; usize::from(x) * 8],
        },
        ClientMessage::ShareKeys(s) => match how % 4 {
            0 => {
                s.shares.pop();
            }
            1 => {
                if let Some(e) = s.shares.first_mut() {
                    e.to = u32::from(x);
                }
            }
            2 => {
                if let Some(e) = s.shares.first_mut() {
                    e.ciphertext.truncate(usize::from(x));
                }
            }
            _ => {
                if let Some(e) = s.shares.first().cloned() {
                    s.shares.push(e);
                }
            }
        },
        ClientMessage::MaskedInput(v) => match how % 3 {
            0 => {
                v.values.pop();
            }
            1 => {
                if let Some(e) = v.values.get_mut(usize::from(x) % DIM) {
                    *e = u64::MAX;
                }
            }
            _ => v.round = u64::from(x),
        },
        ClientMessage::UnmaskResponse(r) => match how % 3 {
            0 => {
                if let Some((_, b)) = r.self_mask_shares.first_mut() {
                    if let Some(byte) = b.get_mut(usize::from(x) % 40) {
                        *byte ^= 0x5a;
                    }
                }
            }
            1 => {
                if let Some((o, _)) = r.key_shares.first_mut().or(r.self_mask_shares.first_mut()) {
                    *o = u32::from(x);
                }
            }
            _ => {
                r.self_mask_shares.clear();
            }
        },
        ClientMessage::SurvivorSignature(g) => match how % 2 {
            0 => g.round ^= u64::from(x) + 1,
            _ => g.signature = vec![x; usize::from(x)],
        },
    }
    m
}

fuzz_target!(|ops: &[u8]| {
    let params = RoundParams {
        round: 3,
        participants: (1..=N).collect(),
        threshold: 3,
        neighbours: 4,
        graph_seed: [9; 32],
        dim: DIM,
        modulus_bits: 20,
        signed_keys: false,
    };
    let Ok(mut server) = ServerRound::new(params.clone()) else {
        return;
    };
    let mut clients = BTreeMap::new();
    let mut outbox: BTreeMap<u32, ClientMessage> = BTreeMap::new();
    let inputs: BTreeMap<u32, Vec<u64>> = (1..=N)
        .map(|u| (u, (0..DIM as u64).map(|i| i * 100 + u64::from(u)).collect()))
        .collect();
    for u in 1..=N {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(u));
        let cfg = ClientConfig {
            params: params.clone(),
            me: u,
            signer: None,
            verifier: None,
        };
        let Ok((s, keys)) = ClientSession::start(cfg, &mut rng) else {
            return;
        };
        clients.insert(u, (s, rng));
        outbox.insert(u, keys);
    }
    let mut tampered_in = std::collections::BTreeSet::new();
    for pair in ops.chunks(3) {
        let op = pair.first().copied().unwrap_or(0);
        let x = pair.get(1).copied().unwrap_or(0);
        let y = pair.get(2).copied().unwrap_or(0);
        let u = u32::from(x) % N + 1;
        match op % 5 {
            0 => {
                if let Some(m) = outbox.remove(&u) {
                    let _ = server.receive(u, m);
                }
            }
            1 => {
                if let Some(m) = outbox.get(&u) {
                    if server.receive(u, tamper(m, y, x)).is_ok() {
                        tampered_in.insert(u);
                    }
                }
            }
            2 => {
                if let Some(m) = outbox.get(&u) {
                    let _ = server.receive(u, m.clone());
                    let _ = server.receive(u, m.clone());
                }
            }
            3 => {
                outbox.remove(&u);
            }
            _ => match server.close_stage() {
                Ok(StageOutcome::Send(messages)) => {
                    for (to, msg) in messages {
                        let Some((s, mut rng)) = clients.remove(&to) else {
                            continue;
                        };
                        if let Ok((s, reply)) = s.handle(msg, &mut rng) {
                            let (s, reply) = if s.wants_input() {
                                match s.mask_input(&inputs[&to]) {
                                    Ok((s, m)) => (s, Some(m)),
                                    Err(_) => continue,
                                }
                            } else {
                                (s, reply)
                            };
                            if let Some(m) = reply {
                                outbox.insert(to, m);
                            }
                            clients.insert(to, (s, rng));
                        }
                    }
                }
                Ok(StageOutcome::Finished { sum, contributors }) => {
                    if tampered_in.is_empty() {
                        let mut want = vec![0u64; DIM];
                        for c in &contributors {
                            for (w, v) in want.iter_mut().zip(&inputs[c]) {
                                *w = (*w + v) & ((1 << 20) - 1);
                            }
                        }
                        assert_eq!(sum, want, "honest round, wrong sum");
                    }
                    return;
                }
                Err(_) => return,
            },
        }
    }
});
