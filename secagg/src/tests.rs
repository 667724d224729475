//! Whole-round tests: correctness under dropouts, aborts, determinism, and
//! rejection of malformed, replayed and misaddressed messages.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::testing::{DropoutPlan, expected_sum, run_round};
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

fn inputs_for(p: &RoundParams, seed: u64) -> Vec<Vec<u64>> {
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
// A hand-driven round, for injecting bad messages.

pub(crate) struct Net {
    p: RoundParams,
    pub(crate) server: ServerRound,
    pub(crate) clients: BTreeMap<u32, (ClientSession, ChaCha20Rng)>,
    inputs: BTreeMap<u32, Vec<u64>>,
    /// Last message each participant sent (for replays).
    pub(crate) sent: BTreeMap<u32, ClientMessage>,
    /// Last message each participant got.
    got: BTreeMap<u32, ServerMessage>,
}

impl Net {
    pub(crate) fn new(p: RoundParams, signed: Option<&TestPki>) -> Self {
        Self::seeded(p, signed, 1000)
    }

    /// As [`Net::new`], the participants' RNGs seeded from `seed` on.
    pub(crate) fn seeded(p: RoundParams, signed: Option<&TestPki>, seed: u64) -> Self {
        let server = ServerRound::new(p.clone()).unwrap();
        let mut clients = BTreeMap::new();
        let mut sent = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let all = inputs_for(&p, 77);
        for (i, &u) in p.participants.iter().enumerate() {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + u as u64);
            let (signer, verifier) = match signed {
                Some(pki) => (
                    Some(Box::new(pki.signer(u)) as Box<dyn KeySigner>),
                    Some(Box::new(pki.clone()) as Box<dyn KeyVerifier>),
                ),
                None => (None, None),
            };
            let cfg = ClientConfig {
                params: p.clone(),
                me: u,
                signer,
                verifier,
            };
            let (s, m) = ClientSession::start(cfg, &mut rng).unwrap();
            clients.insert(u, (s, rng));
            sent.insert(u, m);
            inputs.insert(u, all[i].clone());
        }
        Net {
            p,
            server,
            clients,
            inputs,
            sent,
            got: BTreeMap::new(),
        }
    }

    pub(crate) fn deliver_all(&mut self) {
        for (&u, m) in &self.sent {
            self.server.receive(u, m.clone()).unwrap();
        }
        self.sent.clear();
    }

    /// Closes the stage and hands each message to its client; returns the
    /// clients' errors.
    pub(crate) fn step(&mut self) -> Vec<(u32, Error)> {
        let StageOutcome::Send(msgs) = self.server.close_stage().unwrap() else {
            panic!("finished early")
        };
        let mut errs = Vec::new();
        for (to, msg) in msgs {
            self.got.insert(to, msg.clone());
            let Some((s, mut rng)) = self.clients.remove(&to) else {
                continue;
            };
            match s.handle(msg, &mut rng) {
                Ok((s, reply)) => {
                    let (s, reply) = if s.wants_input() {
                        let (s, m) = s.mask_input(&self.inputs[&to]).unwrap();
                        (s, Some(m))
                    } else {
                        (s, reply)
                    };
                    if let Some(m) = reply {
                        self.sent.insert(to, m);
                    }
                    self.clients.insert(to, (s, rng));
                }
                Err(e) => errs.push((to, e)),
            }
        }
        errs
    }

    pub(crate) fn finish(&mut self) -> (Vec<u64>, Vec<u32>) {
        match self.server.close_stage().unwrap() {
            StageOutcome::Finished { sum, contributors } => (sum, contributors),
            other => panic!("not finished: {other:?}"),
        }
    }

    pub(crate) fn expected(&self, who: &[u32]) -> Vec<u64> {
        let all: Vec<Vec<u64>> = self
            .p
            .participants
            .iter()
            .map(|u| self.inputs[u].clone())
            .collect();
        expected_sum(&self.p, &all, who)
    }
}

/// Test-only "signatures": SHA-256 of a per-participant secret and the
/// message. Not a signature scheme; enough to exercise the plumbing.
#[derive(Clone)]
pub(crate) struct TestPki(BTreeMap<u32, [u8; 32]>);

pub(crate) struct TestSigner([u8; 32]);

fn mac(key: &[u8; 32], m: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(key)
        .chain_update(m)
        .finalize()
        .to_vec()
}

impl TestPki {
    pub(crate) fn new(p: &RoundParams) -> Self {
        TestPki(p.participants.iter().map(|&u| (u, [u as u8; 32])).collect())
    }
    pub(crate) fn signer(&self, u: u32) -> TestSigner {
        TestSigner(self.0[&u])
    }
}

impl KeySigner for TestSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        mac(&self.0, message)
    }
}

impl KeyVerifier for TestPki {
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool {
        self.0
            .get(&peer)
            .is_some_and(|k| mac(k, message) == signature)
    }
}

fn violation(r: Result<(), Error>) -> Violation {
    match r {
        Err(Error::ProtocolViolation(v)) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn server_rejects_bad_messages_and_completes() {
    let p = params(7, 4, 3, 50, 20);
    let mut net = Net::new(p.clone(), None);
    let us = p.participants.clone();
    let a = us[0];
    let keys_a = net.sent[&a].clone();

    // Stage 1: keys.
    assert_eq!(
        violation(net.server.receive(999, keys_a.clone())),
        Violation::UnknownParticipant(999)
    );
    let ClientMessage::AdvertiseKeys(mut k) = keys_a.clone() else {
        unreachable!()
    };
    k.round = 12;
    assert_eq!(
        violation(
            net.server
                .receive(a, ClientMessage::AdvertiseKeys(k.clone()))
        ),
        Violation::WrongRound {
            expected: 11,
            got: 12
        }
    );
    k.round = 11;
    k.from = us[1];
    assert_eq!(
        violation(
            net.server
                .receive(a, ClientMessage::AdvertiseKeys(k.clone()))
        ),
        Violation::WrongSender {
            claimed: us[1],
            actual: a
        }
    );
    k.from = a;
    k.signature = vec![0; MAX_SIG + 1];
    assert!(matches!(
        violation(net.server.receive(a, ClientMessage::AdvertiseKeys(k))),
        Violation::WrongLength { .. }
    ));
    let early = ClientMessage::MaskedInput(MaskedInput {
        round: 11,
        values: vec![0; 50],
    });
    assert_eq!(
        violation(net.server.receive(a, early.clone())),
        Violation::WrongStage
    );
    assert_eq!(
        net.server.pending().len(),
        7,
        "rejected messages change nothing"
    );
    net.deliver_all();
    assert_eq!(
        violation(net.server.receive(a, keys_a.clone())),
        Violation::Duplicate(a)
    );
    assert!(net.server.pending().is_empty());
    assert!(net.step().is_empty());

    // Stage 2: shares. Replay of stage 1 and malformed share lists.
    assert_eq!(
        violation(net.server.receive(a, keys_a)),
        Violation::WrongStage
    );
    let ClientMessage::ShareKeys(sk) = net.sent[&a].clone() else {
        unreachable!()
    };
    let mut short = sk.clone();
    short.shares.pop();
    assert!(matches!(
        violation(net.server.receive(a, ClientMessage::ShareKeys(short))),
        Violation::WrongLength { .. }
    ));
    let mut dup = sk.clone();
    dup.shares[1] = dup.shares[0].clone();
    assert!(matches!(
        violation(net.server.receive(a, ClientMessage::ShareKeys(dup))),
        Violation::Duplicate(_)
    ));
    let mut bad_to = sk.clone();
    bad_to.shares[0].to = 999;
    assert_eq!(
        violation(net.server.receive(a, ClientMessage::ShareKeys(bad_to))),
        Violation::UnknownParticipant(999)
    );
    let mut bad_len = sk.clone();
    bad_len.shares[0].ciphertext.push(0);
    assert!(matches!(
        violation(net.server.receive(a, ClientMessage::ShareKeys(bad_len))),
        Violation::WrongLength { .. }
    ));
    let mut forged = sk.clone();
    forged.shares[0].from = us[1];
    assert!(matches!(
        violation(net.server.receive(a, ClientMessage::ShareKeys(forged))),
        Violation::WrongSender { .. }
    ));
    // Participant b's bundle for a is corrupted in transit: a cannot open it.
    let b = net.server_peer_of(a);
    if let Some(ClientMessage::ShareKeys(sb)) = net.sent.get_mut(&b) {
        for s in sb.shares.iter_mut().filter(|s| s.to == a) {
            s.ciphertext[5] ^= 0x40;
        }
    }
    net.deliver_all();
    let errs = net.step();
    assert_eq!(
        errs,
        vec![(
            a,
            Error::ProtocolViolation(Violation::BadCiphertext { from: b })
        )]
    );

    // Stage 3: masked inputs.
    let c = us[2];
    let ClientMessage::MaskedInput(mi) = net.sent[&c].clone() else {
        unreachable!()
    };
    let mut short = mi.clone();
    short.values.pop();
    assert_eq!(
        violation(net.server.receive(c, ClientMessage::MaskedInput(short))),
        Violation::WrongLength {
            expected: 50,
            got: 49
        }
    );
    let mut big = mi.clone();
    big.values[3] = 1 << 20;
    assert_eq!(
        violation(net.server.receive(c, ClientMessage::MaskedInput(big))),
        Violation::ValueOutOfRange { index: 3 }
    );
    net.deliver_all();
    assert_eq!(
        violation(net.server.receive(c, ClientMessage::MaskedInput(mi))),
        Violation::Duplicate(c)
    );
    assert!(net.step().is_empty());

    // Stage 4: unmasking responses.
    let ClientMessage::UnmaskResponse(r) = net.sent[&c].clone() else {
        unreachable!()
    };
    assert_eq!(
        violation(
            net.server
                .receive(a, ClientMessage::UnmaskResponse(r.clone()))
        ),
        Violation::NotSelected(a),
        "a dropped out and was not asked"
    );
    if !r.self_mask_shares.is_empty() {
        let mut bad = r.clone();
        bad.self_mask_shares[0].1 = vec![0xff; 40];
        assert!(matches!(
            violation(net.server.receive(c, ClientMessage::UnmaskResponse(bad))),
            Violation::BadShare { .. }
        ));
        let mut missing = r.clone();
        missing.self_mask_shares.pop();
        assert!(matches!(
            violation(
                net.server
                    .receive(c, ClientMessage::UnmaskResponse(missing))
            ),
            Violation::WrongLength { .. }
        ));
        let mut stranger = r.clone();
        stranger.self_mask_shares[0].0 = 999;
        assert_eq!(
            violation(
                net.server
                    .receive(c, ClientMessage::UnmaskResponse(stranger))
            ),
            Violation::NotSelected(999)
        );
    }
    net.deliver_all();
    let (sum, contributors) = net.finish();
    let mut want = us.clone();
    want.retain(|&u| u != a);
    assert_eq!(contributors, want);
    assert_eq!(sum, net.expected(&want));
    assert_eq!(net.server.stage(), Stage::Finished);
    assert!(matches!(net.server.close_stage(), Err(Error::ApiMisuse(_))));
    assert_eq!(
        violation(net.server.receive(c, ClientMessage::UnmaskResponse(r))),
        Violation::WrongStage,
        "late messages after the end"
    );
}

const MAX_SIG: usize = server::MAX_SIGNATURE_LEN;

impl Net {
    /// Some participant whose shares are routed to `u`.
    fn server_peer_of(&self, u: u32) -> u32 {
        let n = neighbours_of(&self.p, u);
        n[0]
    }
}

#[test]
fn client_refuses_bad_requests() {
    let p = params(6, 4, 3, 10, 32);
    let mut net = Net::new(p.clone(), None);
    for _ in 0..2 {
        net.deliver_all();
        net.step();
    }
    net.deliver_all();
    // Close the masked-input stage but keep the requests from the clients.
    let StageOutcome::Send(msgs) = net.server.close_stage().unwrap() else {
        panic!()
    };
    let u = p.participants[0];
    let req = msgs
        .into_iter()
        .find_map(|(to, m)| match m {
            ServerMessage::UnmaskRequest(r) if to == u => Some(r),
            _ => None,
        })
        .unwrap();
    let nb = neighbours_of(&p, u);
    assert_eq!(req.survivors, nb);
    // Both shares of one neighbour.
    let (session, _) = net.clients.remove(&u).unwrap();
    let ClientSession::AwaitingUnmask(state) = session else {
        panic!()
    };
    let both = UnmaskRequest {
        round: 11,
        survivors: req.survivors.clone(),
        dropped: vec![nb[0]],
        signatures: vec![],
    };
    assert_eq!(
        state.handle_unmask_request(both).unwrap_err(),
        Error::ProtocolViolation(Violation::BothSharesRequested { peer: nb[0] })
    );
    // The other checks, each on a participant still waiting.
    let mut waiting: Vec<(u32, AwaitingUnmask)> = std::mem::take(&mut net.clients)
        .into_iter()
        .filter_map(|(v, (s, _))| match s {
            ClientSession::AwaitingUnmask(s) => Some((v, s)),
            _ => None,
        })
        .collect();
    let (v, s) = waiting.pop().unwrap();
    let stranger = p
        .participants
        .iter()
        .copied()
        .find(|w| *w != v && !neighbours_of(&p, v).contains(w));
    let bad = UnmaskRequest {
        round: 11,
        survivors: vec![stranger.unwrap_or(999)],
        dropped: vec![],
        signatures: vec![],
    };
    assert!(matches!(
        s.handle_unmask_request(bad),
        Err(Error::ProtocolViolation(Violation::NoSharesFrom { .. }))
    ));
    let (v, s) = waiting.pop().unwrap();
    let one = neighbours_of(&p, v)[0];
    let few = UnmaskRequest {
        round: 11,
        survivors: vec![one],
        dropped: vec![],
        signatures: vec![],
    };
    assert_eq!(
        s.handle_unmask_request(few).unwrap_err(),
        Error::ProtocolViolation(Violation::TooFewSurvivors { needed: 3, have: 2 })
    );
    let (v, s) = waiting.pop().unwrap();
    let nbv = neighbours_of(&p, v);
    let dup = UnmaskRequest {
        round: 11,
        survivors: vec![nbv[0], nbv[0], nbv[1]],
        dropped: vec![],
        signatures: vec![],
    };
    assert_eq!(
        s.handle_unmask_request(dup).unwrap_err(),
        Error::ProtocolViolation(Violation::Duplicate(nbv[0]))
    );
    let (_, s) = waiting.pop().unwrap();
    let wrong_round = UnmaskRequest {
        round: 10,
        survivors: vec![],
        dropped: vec![],
        signatures: vec![],
    };
    assert!(matches!(
        s.handle_unmask_request(wrong_round),
        Err(Error::ProtocolViolation(Violation::WrongRound { .. }))
    ));
}

#[test]
fn client_rejects_bad_peer_keys_and_shares() {
    let p = params(6, 4, 3, 10, 32);
    let u = p.participants[0];
    let nb = neighbours_of(&p, u);
    let start = |seed: u64| {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let cfg = ClientConfig {
            params: p.clone(),
            me: u,
            signer: None,
            verifier: None,
        };
        AwaitingPeerKeys::start(cfg, &mut rng).unwrap().0
    };
    let key_of = |v: u32| {
        let mut rng = ChaCha20Rng::seed_from_u64(500 + v as u64);
        let cfg = ClientConfig {
            params: p.clone(),
            me: v,
            signer: None,
            verifier: None,
        };
        AwaitingPeerKeys::start(cfg, &mut rng).unwrap().1
    };
    let good: Vec<AdvertiseKeys> = nb.iter().map(|&v| key_of(v)).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let run = |keys: Vec<AdvertiseKeys>, round: u64, rng: &mut ChaCha20Rng| {
        start(3)
            .handle_peer_keys(
                PeerKeys {
                    round,
                    keys,
                    graph_seed: p.graph_seed,
                },
                rng,
            )
            .map(|_| ())
    };
    run(good.clone(), 11, &mut rng).unwrap();
    assert!(matches!(
        run(good.clone(), 12, &mut rng),
        Err(Error::ProtocolViolation(Violation::WrongRound { .. }))
    ));
    let mut dup = good.clone();
    dup[1] = dup[0].clone();
    assert!(matches!(
        run(dup, 11, &mut rng),
        Err(Error::ProtocolViolation(Violation::Duplicate(_)))
    ));
    let non_neighbour = p
        .participants
        .iter()
        .copied()
        .find(|w| *w != u && !nb.contains(w))
        .unwrap();
    let mut stranger = good.clone();
    stranger[0] = key_of(non_neighbour);
    assert_eq!(
        run(stranger, 11, &mut rng),
        Err(Error::ProtocolViolation(Violation::NotSelected(
            non_neighbour
        )))
    );
    let mut low = good.clone();
    low[0].mask_public_key = [0; 32];
    assert_eq!(
        run(low, 11, &mut rng),
        Err(Error::ProtocolViolation(Violation::BadPublicKey {
            peer: good[0].from
        }))
    );
    assert_eq!(
        run(good[..2].to_vec(), 11, &mut rng),
        Err(Error::BelowThreshold {
            needed: 3,
            have: 2,
            stage: Stage::AwaitingKeys
        })
    );

    // Routed shares: misaddressed, unknown sender, duplicate, too few.
    let (state, _) = start(3)
        .handle_peer_keys(
            PeerKeys {
                round: 11,
                keys: good.clone(),
                graph_seed: p.graph_seed,
            },
            &mut rng,
        )
        .unwrap();
    let ct = vec![0u8; seal::CIPHERTEXT_LEN];
    let share = |from: u32, to: u32| EncryptedShare {
        from,
        to,
        ciphertext: ct.clone(),
    };
    let r = state.handle_routed_shares(RoutedShares {
        round: 11,
        shares: vec![share(nb[0], nb[1])],
    });
    assert!(matches!(
        r,
        Err(Error::ProtocolViolation(Violation::NotSelected(_)))
    ));
    let (state, _) = start(3)
        .handle_peer_keys(
            PeerKeys {
                round: 11,
                keys: good.clone(),
                graph_seed: p.graph_seed,
            },
            &mut rng,
        )
        .unwrap();
    let r = state.handle_routed_shares(RoutedShares {
        round: 11,
        shares: vec![share(nb[0], u)],
    });
    assert_eq!(
        r.unwrap_err(),
        Error::ProtocolViolation(Violation::BadCiphertext { from: nb[0] })
    );
    let (state, _) = start(3)
        .handle_peer_keys(
            PeerKeys {
                round: 11,
                keys: good.clone(),
                graph_seed: p.graph_seed,
            },
            &mut rng,
        )
        .unwrap();
    let r = state.handle_routed_shares(RoutedShares {
        round: 11,
        shares: vec![],
    });
    assert_eq!(
        r.unwrap_err(),
        Error::BelowThreshold {
            needed: 3,
            have: 0,
            stage: Stage::AwaitingShares
        }
    );
}

#[test]
fn signed_keys_round_and_substitution() {
    let mut p = params(6, 4, 3, 12, 32);
    p.signed_keys = true;
    let pki = TestPki::new(&p);
    // Honest round with signatures (and the consistency check).
    let mut net = Net::new(p.clone(), Some(&pki));
    for _ in 0..4 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    net.deliver_all();
    let (sum, contributors) = net.finish();
    assert_eq!(sum, net.expected(&contributors));
    assert_eq!(contributors, p.participants);

    // The coordinator substitutes one participant's mask key.
    let mut net = Net::new(p.clone(), Some(&pki));
    let victim = p.participants[1];
    if let Some(ClientMessage::AdvertiseKeys(k)) = net.sent.get_mut(&victim) {
        k.mask_public_key =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([7u8; 32])).to_bytes();
    }
    net.deliver_all();
    let errs = net.step();
    assert_eq!(errs.len(), p.participants.len());
    // The others see the bad signature; the victim, whose own keys differ
    // from those the seed was derived from, sees a graph seed not its own.
    for (u, e) in &errs {
        let expected = if *u == victim {
            Violation::GraphSeedMismatch
        } else {
            Violation::BadSignature { peer: victim }
        };
        assert_eq!(*e, Error::ProtocolViolation(expected));
    }

    // Unsigned keys are refused by the coordinator when signing is on.
    let mut net = Net::new(p.clone(), Some(&pki));
    let u = p.participants[0];
    if let Some(ClientMessage::AdvertiseKeys(k)) = net.sent.get_mut(&u) {
        k.signature.clear();
    }
    let m = net.sent[&u].clone();
    assert_eq!(
        violation(net.server.receive(u, m)),
        Violation::BadSignature { peer: u }
    );

    // A signed round needs a signer and a verifier.
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let cfg = ClientConfig {
        params: p.clone(),
        me: u,
        signer: None,
        verifier: None,
    };
    assert!(matches!(
        ClientSession::start(cfg, &mut rng),
        Err(Error::ApiMisuse(_))
    ));
}

#[test]
fn api_misuse_and_abort_are_sticky() {
    let p = params(5, 4, 3, 4, 32);
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let cfg = ClientConfig {
        params: p.clone(),
        me: 2,
        signer: None,
        verifier: None,
    };
    assert!(matches!(
        ClientSession::start(cfg, &mut rng),
        Err(Error::InvalidParams(_))
    ));
    let mut bad = p.clone();
    bad.threshold = 1;
    assert!(matches!(
        ServerRound::new(bad),
        Err(Error::InvalidParams(_))
    ));
    let mut server = ServerRound::new(p.clone()).unwrap();
    assert_eq!(server.stage(), Stage::AwaitingKeys);
    assert!(matches!(
        server.close_stage(),
        Err(Error::BelowThreshold {
            needed: 3,
            have: 0,
            ..
        })
    ));
    assert_eq!(server.stage(), Stage::Aborted);
    assert!(matches!(server.close_stage(), Err(Error::ApiMisuse(_))));
    assert!(server.pending().is_empty());
    let (s, m) = ClientSession::start(
        ClientConfig {
            params: p.clone(),
            me: p.participants[0],
            signer: None,
            verifier: None,
        },
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        violation(server.receive(p.participants[0], m)),
        Violation::WrongStage
    );
    // Client: wrong-stage server message and input before shares.
    assert!(matches!(
        ClientSession::start(
            ClientConfig {
                params: p.clone(),
                me: p.participants[1],
                signer: None,
                verifier: None
            },
            &mut rng
        )
        .unwrap()
        .0
        .handle(
            ServerMessage::UnmaskRequest(UnmaskRequest {
                round: 11,
                survivors: vec![],
                dropped: vec![],
                signatures: vec![],
            }),
            &mut rng
        ),
        Err(Error::ProtocolViolation(Violation::WrongStage))
    ));
    assert!(matches!(s.mask_input(&[0; 4]), Err(Error::ApiMisuse(_))));
}

#[test]
fn mask_input_checks_local_input() {
    let p = params(5, 4, 3, 4, 8);
    let mut net = Net::new(p.clone(), None);
    net.deliver_all();
    net.step();
    net.deliver_all();
    let StageOutcome::Send(msgs) = net.server.close_stage().unwrap() else {
        panic!()
    };
    let (to, msg) = msgs.into_iter().next().unwrap();
    let (s, mut rng) = net.clients.remove(&to).unwrap();
    let (s, _) = s.handle(msg, &mut rng).unwrap();
    let ClientSession::AwaitingInput(s) = s else {
        panic!()
    };
    assert_eq!(s.mask_partners(), neighbours_of(&p, to));
    assert!(matches!(
        s.mask_input(&[0, 0, 256, 0]),
        Err(Error::InvalidInput(_))
    ));
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
