//! Whole-round tests: correctness under dropouts, aborts and determinism,
//! and random operation sequences against a hand-driven round. Refused
//! messages are in `tests_server_refusals` and `tests_client_refusals`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::testing::{DropoutPlan, expected_sum, run_round};
use crate::tests_net::Net;
use crate::*;

pub(crate) fn params(n: u32, k: usize, t: usize, dim: usize, bits: u32) -> RoundParams {
    RoundParams {
        round: 11,
        participants: (1..=n).map(|i| i * 3 + 1).collect(), // non-contiguous indices
        threshold: t,
        neighbours: k,
        graph_seed: [0x5a; 32],
        dim,
        modulus_bits: bits,
        signed_keys: false,
    }
}

pub(crate) fn inputs_for(p: &RoundParams, seed: u64) -> Vec<Vec<u64>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let m = prg::modulus_mask(p.modulus_bits);
    p.participants
        .iter()
        .map(|_| (0..p.dim).map(|_| rng.next_u64() & m).collect())
        .collect()
}

#[test]
fn full_round_without_dropouts() {
    for (n, k, t, bits) in [
        (3u32, 2usize, 2usize, 32u32),
        (5, 4, 3, 1),
        (12, 6, 4, 64),
        (9, 8, 5, 17),
    ] {
        let p = params(n, k, t, 37, bits);
        let inputs = inputs_for(&p, 1);
        let out = run_round(&p, &inputs, &DropoutPlan::default(), 5).unwrap();
        assert_eq!(out.contributors, p.participants);
        assert_eq!(
            out.sum,
            expected_sum(&p, &inputs, &p.participants),
            "n {n} k {k} bits {bits}"
        );
        assert!(out.client_errors.is_empty());
    }
}

/// Inputs sent in parts are summed like whole ones; participants that stop
/// half-way through their masked input are taken out of the sum again (at
/// the stage's close, or at once with `withdraw_masked`) and dropped, and
/// their pairwise masks are removed like any dropout's.
#[test]
fn inputs_stopped_half_way_leave_the_sum() {
    let p = params(9, 8, 5, 1_000, 32);
    let inputs = inputs_for(&p, 3);
    let plan = DropoutPlan {
        mid_masked_input: [2, 7].into(),
        ..DropoutPlan::default()
    };
    let out = run_round(&p, &inputs, &plan, 9).unwrap();
    let want: Vec<u32> = p
        .participants
        .iter()
        .copied()
        .filter(|u| ![2, 7].contains(u))
        .collect();
    assert_eq!(out.contributors, want);
    assert_eq!(out.sum, expected_sum(&p, &inputs, &want));

    // Parts are refused outside the masked-input stage.
    let u = p.participants[0];
    let mut server = ServerRound::new(p.clone()).unwrap();
    assert!(!server.withdraw_masked(u));
    assert_eq!(
        server.receive_masked_part(u, p.round, 0, &inputs[0][..10]),
        Err(Error::ProtocolViolation(Violation::WrongStage))
    );
}

#[test]
fn same_seed_same_transcript() {
    let p = params(8, 4, 3, 16, 32);
    let inputs = inputs_for(&p, 2);
    let mut plan = DropoutPlan::default();
    plan.after_shares.insert(p.participants[2]);
    let a = run_round(&p, &inputs, &plan, 99).unwrap();
    let b = run_round(&p, &inputs, &plan, 99).unwrap();
    let c = run_round(&p, &inputs, &plan, 100).unwrap();
    assert_eq!(a, b);
    // Pinned: a change here means the protocol's bytes changed (keys, KDF,
    // Shamir, AEAD, graph or PRG), which breaks mixed-version rounds.
    assert_eq!(
        a.transcript_hash[..4],
        [0x6c, 0x1b, 0x63, 0xf6],
        "transcript changed: {:02x?}",
        &a.transcript_hash[..4]
    );
    assert_ne!(a.transcript_hash, c.transcript_hash);
    assert_eq!(a.sum, c.sum);
}

#[test]
fn below_threshold_aborts_and_reveals_nothing() {
    let p = params(6, 4, 3, 8, 32);
    let inputs = inputs_for(&p, 3);
    // Four of six vanish after sending shares: only two masked inputs < t.
    let mut plan = DropoutPlan::default();
    plan.after_shares
        .extend(p.participants[..4].iter().copied());
    let err = run_round(&p, &inputs, &plan, 1).unwrap_err();
    assert_eq!(
        err,
        Error::BelowThreshold {
            needed: 3,
            have: 2,
            stage: Stage::AwaitingMaskedInputs
        }
    );
    // Too few at the very start.
    let mut plan = DropoutPlan::default();
    plan.before_keys.extend(p.participants[..4].iter().copied());
    assert!(matches!(
        run_round(&p, &inputs, &plan, 1),
        Err(Error::BelowThreshold {
            stage: Stage::AwaitingKeys,
            ..
        })
    ));
    // Too many silent during unmasking.
    let mut plan = DropoutPlan::default();
    plan.after_masked_input
        .extend(p.participants[..4].iter().copied());
    assert!(matches!(
        run_round(&p, &inputs, &plan, 1),
        Err(Error::BelowThreshold {
            stage: Stage::AwaitingUnmasking,
            ..
        })
    ));
}

/// Sufficient condition for success: every participant keeps at least t
/// neighbours that answer through to the end, and at least t do overall.
fn should_succeed(p: &RoundParams, plan: &DropoutPlan) -> bool {
    let dropped: BTreeSet<u32> = plan
        .before_keys
        .iter()
        .chain(&plan.after_keys)
        .chain(&plan.after_shares)
        .chain(&plan.after_masked_input)
        .chain(&plan.mid_masked_input)
        .copied()
        .collect();
    let finals: BTreeSet<u32> = p
        .participants
        .iter()
        .copied()
        .filter(|u| !dropped.contains(u))
        .collect();
    finals.len() >= p.threshold
        && p.participants.iter().all(|&u| {
            neighbours_of(p, u)
                .iter()
                .filter(|v| finals.contains(v))
                .count()
                >= p.threshold
        })
}

fn who_masked(p: &RoundParams, plan: &DropoutPlan) -> Vec<u32> {
    p.participants
        .iter()
        .copied()
        .filter(|u| {
            !plan.before_keys.contains(u)
                && !plan.after_keys.contains(u)
                && !plan.after_shares.contains(u)
                && !plan.mid_masked_input.contains(u)
        })
        .collect()
}

fn arb_round() -> impl Strategy<Value = (RoundParams, DropoutPlan, u64)> {
    (
        3u32..=14,
        any::<u64>(),
        1u32..=64,
        1usize..40,
        proptest::collection::vec(0u8..12, 14),
    )
        .prop_map(|(n, seed, bits, dim, fates)| {
            let n_us = n as usize;
            // k: an even degree or the complete graph; t in (k/2, k].
            let mut r = ChaCha20Rng::seed_from_u64(seed);
            let evens: Vec<usize> = (2..n_us - 1).step_by(2).chain([n_us - 1]).collect();
            let k = evens[(r.next_u32() as usize) % evens.len()];
            let t = k / 2 + 1 + (r.next_u32() as usize) % (k - k / 2);
            let mut p = params(n, k, t, dim, bits);
            p.graph_seed = [seed as u8; 32];
            let mut plan = DropoutPlan::default();
            for (u, f) in p.participants.iter().zip(fates) {
                match f {
                    0 => plan.before_keys.insert(*u),
                    1 => plan.after_keys.insert(*u),
                    2 | 3 => plan.after_shares.insert(*u),
                    4 => plan.after_masked_input.insert(*u),
                    5 => plan.mid_masked_input.insert(*u),
                    _ => false,
                };
            }
            (p, plan, seed)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn recovered_sum_is_survivors_sum((p, plan, seed) in arb_round()) {
        let inputs = inputs_for(&p, seed);
        match run_round(&p, &inputs, &plan, seed) {
            Ok(out) => {
                prop_assert_eq!(&out.sum, &expected_sum(&p, &inputs, &out.contributors));
                let masked = who_masked(&p, &plan);
                prop_assert!(out.contributors.iter().all(|u| masked.contains(u)));
                if should_succeed(&p, &plan) {
                    prop_assert_eq!(&out.contributors, &masked);
                }
            }
            Err(Error::BelowThreshold { .. }) => prop_assert!(!should_succeed(&p, &plan)),
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }
}

#[test]
fn hundred_participants_with_dropouts_at_two_stages() {
    let n = 100u32;
    let participants: Vec<u32> = (1..=n).collect();
    let p = RoundParams::recommended(1, participants.clone(), 100_000, 32, 0.15, [3; 32]).unwrap();
    let inputs = inputs_for(&p, 7);
    let mut plan = DropoutPlan::default();
    plan.after_shares.extend((1..=n).filter(|u| u % 10 == 3)); // 10%
    plan.after_masked_input
        .extend((1..=n).filter(|u| u % 20 == 7)); // 5%
    let out = run_round(&p, &inputs, &plan, 2024).unwrap();
    let masked = who_masked(&p, &plan);
    assert_eq!(out.contributors, masked);
    assert_eq!(out.contributors.len(), 90);
    assert_eq!(out.sum, expected_sum(&p, &inputs, &masked));
}

// ---------------------------------------------------------------------------
// Random operation sequences (quinn-style fuzzing with proptest).

#[derive(Clone, Debug)]
enum Op {
    /// Deliver the honest message of participant (index).
    Honest(usize),
    /// Replay a participant's earlier message.
    Replay(usize),
    /// Send a message of random kind and contents.
    Garbage {
        from: u32,
        kind: u8,
        round: u64,
        len: usize,
        byte: u8,
    },
    /// Close the stage now.
    Close,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..8).prop_map(Op::Honest),
        1 => (0usize..8).prop_map(Op::Replay),
        2 => (0u32..40, any::<u8>(), prop_oneof![Just(11u64), any::<u64>()], 0usize..200, any::<u8>())
            .prop_map(|(from, kind, round, len, byte)| Op::Garbage { from, kind, round, len, byte }),
        1 => Just(Op::Close),
    ]
}

fn garbage(kind: u8, round: u64, from: u32, len: usize, byte: u8) -> ClientMessage {
    let bytes = vec![byte; len];
    match kind % 4 {
        0 => ClientMessage::AdvertiseKeys(AdvertiseKeys {
            round,
            from,
            cipher_public_key: [byte; 32],
            mask_public_key: [byte.wrapping_add(1); 32],
            signature: bytes,
        }),
        1 => ClientMessage::ShareKeys(ShareKeys {
            round,
            shares: (0..len % 9)
                .map(|i| EncryptedShare {
                    from,
                    to: i as u32 * 3 + 4,
                    ciphertext: vec![byte; seal::CIPHERTEXT_LEN],
                })
                .collect(),
        }),
        2 => ClientMessage::MaskedInput(MaskedInput {
            round,
            values: vec![byte as u64; len],
        }),
        _ => ClientMessage::UnmaskResponse(UnmaskResponse {
            round,
            self_mask_shares: (0..len % 5)
                .map(|i| (i as u32 * 3 + 4, bytes.clone()))
                .collect(),
            key_shares: vec![(from, vec![byte; 40])],
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_operations_never_panic_and_never_corrupt(ops in proptest::collection::vec(arb_op(), 0..120), seed in any::<u64>()) {
        let p = params(8, 4, 3, 6, 16);
        let mut net = Net::new(p.clone(), None);
        let mut history: BTreeMap<u32, Vec<ClientMessage>> = BTreeMap::new();
        let mut finished = None;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        for op in ops {
            match op {
                Op::Honest(i) => {
                    let u = p.participants[i % 8];
                    if let Some(m) = net.sent.remove(&u) {
                        history.entry(u).or_default().push(m.clone());
                        let _ = net.server.receive(u, m);
                    }
                }
                Op::Replay(i) => {
                    let u = p.participants[i % 8];
                    if let Some(m) = history.get(&u).and_then(|h| h.first()).cloned() {
                        let before = net.server.pending();
                        let r = net.server.receive(u, m);
                        prop_assert!(r.is_err() || net.server.pending() != before);
                    }
                }
                Op::Garbage { from, kind, round, len, byte } => {
                    let before = net.server.pending();
                    let m = garbage(kind, round, from, len, byte);
                    if net.server.receive(from, m).is_err() {
                        prop_assert_eq!(net.server.pending(), before);
                    }
                }
                Op::Close => {
                    match net.server.close_stage() {
                        Ok(StageOutcome::Send(msgs)) => {
                            for (to, msg) in msgs {
                                let Some((s, mut crng)) = net.clients.remove(&to) else { continue };
                                if let Ok((s, reply)) = s.handle(msg, &mut crng) {
                                    let (s, reply) = if s.wants_input() {
                                        match s.mask_input(&net.inputs[&to]) {
                                            Ok((s, m)) => (s, Some(m)),
                                            Err(_) => continue,
                                        }
                                    } else {
                                        (s, reply)
                                    };
                                    if let Some(m) = reply {
                                        net.sent.insert(to, m);
                                    }
                                    net.clients.insert(to, (s, crng));
                                }
                            }
                        }
                        Ok(StageOutcome::Finished { sum, contributors }) => {
                            finished = Some((sum, contributors));
                            break;
                        }
                        Err(Error::BelowThreshold { .. }) => break,
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
            }
            let _ = rng.next_u32();
        }
        if let Some((sum, contributors)) = finished {
            // Garbage can make participants drop, never change the sum.
            prop_assert_eq!(sum, net.expected(&contributors));
        }
    }

    #[test]
    fn random_server_messages_never_panic_clients(
        kind in 0u8..3, round in prop_oneof![Just(11u64), any::<u64>()],
        ids in proptest::collection::vec(0u32..40, 0..8),
        bytes in proptest::collection::vec(any::<u8>(), 0..130),
        stage in 0usize..3,
    ) {
        let p = params(6, 4, 3, 5, 32);
        let mut net = Net::new(p.clone(), None);
        for _ in 0..stage {
            net.deliver_all();
            net.step();
        }
        let msg = match kind {
            0 => ServerMessage::PeerKeys(PeerKeys { round, keys: ids.iter().map(|&i| AdvertiseKeys {
                round, from: i,
                cipher_public_key: core::array::from_fn(|j| bytes.get(j).copied().unwrap_or(9)),
                mask_public_key: core::array::from_fn(|j| bytes.get(j + 32).copied().unwrap_or(9)),
                signature: bytes.clone() }).collect(), graph_seed: p.graph_seed }),
            1 => ServerMessage::RoutedShares(RoutedShares { round, shares: ids.iter().map(|&i| EncryptedShare {
                from: i, to: p.participants[0], ciphertext: bytes.clone() }).collect() }),
            _ => ServerMessage::UnmaskRequest(UnmaskRequest { round,
                survivors: ids.iter().copied().filter(|i| i % 2 == 0).collect(),
                dropped: ids.iter().copied().filter(|i| i % 2 == 1).collect(),
                signatures: ids.iter().map(|&i| (i, bytes.clone())).collect() }),
        };
        for (_, (s, mut rng)) in std::mem::take(&mut net.clients) {
            let _ = s.handle(msg.clone(), &mut rng);
        }
    }
}
