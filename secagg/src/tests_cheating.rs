//! A coordinator that cheats in a signed-key round, caught by the
//! participants: it lies about who dropped (different survivor sets to
//! different survivors), skips the consistency check, picks its own graph
//! seed, or replays a round; plus malformed consistency-check messages and
//! the zeroisation of the client's secrets.

use std::collections::{BTreeMap, BTreeSet};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::tests::params;
use crate::tests_net::{Net, TestPki};
use crate::*;

/// A signed round of 7 on the complete graph (k = 6, t = 4).
fn signed_params() -> RoundParams {
    let mut p = params(7, 6, 4, 16, 32);
    p.signed_keys = true;
    p
}

/// Runs a signed round up to the point where the coordinator has closed the
/// masked-input stage and holds the survivor lists it would send.
fn at_consistency_check(p: &RoundParams, pki: &TestPki) -> (Net, Vec<(u32, ServerMessage)>) {
    let mut net = Net::new(p.clone(), Some(pki));
    for _ in 0..2 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    net.deliver_all();
    let StageOutcome::Send(lists) = net.server.close_stage().unwrap() else {
        panic!("the masked-input stage ends with the survivor lists")
    };
    assert_eq!(net.server.stage(), Stage::AwaitingSurvivorSignatures);
    (net, lists)
}

/// Hands `list` to participant `u`; returns its signature.
fn sign_list(net: &mut Net, u: u32, survivors: Vec<u32>) -> Vec<u8> {
    let (s, mut rng) = net.clients.remove(&u).unwrap();
    let list = ServerMessage::SurvivorList(SurvivorList {
        round: 11,
        survivors,
    });
    let (s, reply) = s.handle(list, &mut rng).unwrap();
    net.clients.insert(u, (s, rng));
    match reply {
        Some(ClientMessage::SurvivorSignature(m)) => m.signature,
        other => panic!("expected a signature, got {other:?}"),
    }
}

/// Hands an unmask request to `u`; returns its answer.
fn unmask(net: &mut Net, u: u32, req: UnmaskRequest) -> Result<UnmaskResponse, Error> {
    let (s, mut rng) = net.clients.remove(&u).unwrap();
    match s.handle(ServerMessage::UnmaskRequest(req), &mut rng)? {
        (_, Some(ClientMessage::UnmaskResponse(r))) => Ok(r),
        other => panic!("unexpected {other:?}"),
    }
}

/// The request a coordinator would send `u` if `told` were the survivors:
/// self-mask shares of the others in `told`, key shares of everyone else.
fn request(
    p: &RoundParams,
    u: u32,
    told: &BTreeSet<u32>,
    signatures: &[(u32, Vec<u8>)],
) -> UnmaskRequest {
    let others = p.participants.iter().copied().filter(|&v| v != u);
    let (survivors, dropped): (Vec<u32>, Vec<u32>) = others.partition(|v| told.contains(v));
    UnmaskRequest {
        round: 11,
        survivors,
        dropped,
        signatures: signatures.to_vec(),
    }
}

/// Runs a whole signed round with everyone honest and checks that every
/// participant contributed and the sum is theirs.
fn assert_honest_round_completes(p: &RoundParams, pki: &TestPki) {
    let mut net = Net::new(p.clone(), Some(pki));
    for _ in 0..4 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    net.deliver_all();
    let (sum, contributors) = net.finish();
    assert_eq!(contributors, p.participants);
    assert_eq!(sum, net.expected(&contributors));
}

#[test]
fn an_honest_signed_round_passes_the_consistency_check() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    assert_honest_round_completes(&p, &pki);
}

/// The attack the consistency check exists for [B17 §4.4]: the coordinator
/// tells one group that `victim` dropped (to collect shares of its mask
/// key) and the others that it survived (to collect shares of its self-mask
/// seed). Every participant of the first group refuses, whichever
/// signatures the coordinator forwards, and no share of the victim's mask
/// key leaves anyone.
#[test]
fn a_coordinator_that_lies_about_dropouts_is_caught() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let all: BTreeSet<u32> = p.participants.iter().copied().collect();
    let victim = p.participants[6];
    let lied: BTreeSet<u32> = all.iter().copied().filter(|&v| v != victim).collect();
    let group_a: Vec<u32> = p.participants[..3].to_vec();
    let group_b: Vec<u32> = p.participants[3..].to_vec();

    // What the coordinator forwards to the group it lied to: all the
    // signatures, only the ones over the lie, or the honest group's relabelled.
    for forward in ["all", "liars' set only", "honest group only"] {
        let (mut net, lists) = at_consistency_check(&p, &pki);
        // The genuine list names everyone.
        for (_, m) in &lists {
            assert_eq!(
                *m,
                ServerMessage::SurvivorList(SurvivorList {
                    round: 11,
                    survivors: p.participants.clone()
                })
            );
        }
        let mut signatures = BTreeMap::new();
        for &u in &group_a {
            signatures.insert(u, sign_list(&mut net, u, lied.iter().copied().collect()));
        }
        for &u in &group_b {
            signatures.insert(u, sign_list(&mut net, u, p.participants.clone()));
        }
        let forwarded: Vec<(u32, Vec<u8>)> = match forward {
            "all" => signatures.clone().into_iter().collect(),
            "liars' set only" => signatures
                .iter()
                .filter(|(u, _)| group_a.contains(u))
                .map(|(u, s)| (*u, s.clone()))
                .collect(),
            _ => signatures
                .iter()
                .filter(|(u, _)| group_b.contains(u) && **u != victim)
                .map(|(u, s)| (*u, s.clone()))
                .collect(),
        };
        for &u in &group_a {
            let err = unmask(&mut net, u, request(&p, u, &lied, &forwarded)).unwrap_err();
            assert!(err.is_peer_misbehaviour(), "{forward}: {err}");
            let expected = match forward {
                "all" => Violation::SurvivorSetMismatch { signer: group_b[0] },
                "liars' set only" => Violation::TooFewSurvivorSignatures { needed: 4, have: 3 },
                // Signatures over the true set do not verify over the lie.
                _ => Violation::SurvivorSetMismatch { signer: group_b[0] },
            };
            assert_eq!(err, Error::ProtocolViolation(expected), "{forward}");
        }
    }
}

/// Even with genuine signatures over the true set, a request that treats a
/// signed survivor as dropped (or the reverse) is refused.
#[test]
fn an_unmask_request_contradicting_the_signed_set_is_refused() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let (mut net, _) = at_consistency_check(&p, &pki);
    let all: BTreeSet<u32> = p.participants.iter().copied().collect();
    let signatures: Vec<(u32, Vec<u8>)> = p
        .participants
        .iter()
        .map(|&u| (u, sign_list(&mut net, u, p.participants.clone())))
        .collect();
    let victim = p.participants[6];
    let lied: BTreeSet<u32> = all.iter().copied().filter(|&v| v != victim).collect();
    let u = p.participants[0];
    assert_eq!(
        unmask(&mut net, u, request(&p, u, &lied, &signatures)).unwrap_err(),
        Error::ProtocolViolation(Violation::SurvivorsContradicted { peer: victim })
    );
    // The honest request goes through, with self-mask shares only.
    let v = p.participants[1];
    let r = unmask(&mut net, v, request(&p, v, &all, &signatures)).unwrap();
    assert_eq!(r.self_mask_shares.len(), 6);
    assert!(r.key_shares.is_empty());
}

#[test]
fn skipping_the_consistency_check_is_refused() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let (mut net, _) = at_consistency_check(&p, &pki);
    let all: BTreeSet<u32> = p.participants.iter().copied().collect();
    let u = p.participants[0];
    assert_eq!(
        unmask(&mut net, u, request(&p, u, &all, &[])).unwrap_err(),
        Error::ProtocolViolation(Violation::ConsistencyCheckSkipped)
    );
}

#[test]
fn malformed_survivor_lists_and_signature_lists_are_refused() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let ps = p.participants.clone();
    let me = ps[0];
    let try_list = |survivors: Vec<u32>| {
        let (mut net, _) = at_consistency_check(&p, &pki);
        let (s, mut rng) = net.clients.remove(&me).unwrap();
        let list = ServerMessage::SurvivorList(SurvivorList {
            round: 11,
            survivors,
        });
        s.handle(list, &mut rng).map(|_| ()).unwrap_err()
    };
    let v = |x: Violation| Error::ProtocolViolation(x);
    let mut unsorted = ps.clone();
    unsorted.swap(1, 2);
    assert_eq!(try_list(unsorted), v(Violation::NotCanonical(ps[1])));
    let mut dup = ps.clone();
    dup[2] = dup[1];
    assert_eq!(try_list(dup), v(Violation::NotCanonical(ps[1])));
    assert_eq!(
        try_list(vec![me, 999]),
        v(Violation::UnknownParticipant(999))
    );
    assert_eq!(
        try_list(ps[1..].to_vec()),
        v(Violation::LeftOutOfSurvivors(me))
    );
    assert_eq!(
        try_list(ps[..3].to_vec()),
        v(Violation::TooFewSurvivors { needed: 4, have: 3 })
    );
    // A list for another round.
    let (mut net, _) = at_consistency_check(&p, &pki);
    let (s, mut rng) = net.clients.remove(&me).unwrap();
    let other_round = ServerMessage::SurvivorList(SurvivorList {
        round: 12,
        survivors: ps.clone(),
    });
    assert!(matches!(
        s.handle(other_round, &mut rng),
        Err(Error::ProtocolViolation(Violation::WrongRound { .. }))
    ));

    // Forwarded signatures: a duplicate signer, a signer outside U3, garbage.
    let (mut net, _) = at_consistency_check(&p, &pki);
    let all: BTreeSet<u32> = ps.iter().copied().collect();
    let sigs: Vec<(u32, Vec<u8>)> = ps
        .iter()
        .map(|&u| (u, sign_list(&mut net, u, ps.clone())))
        .collect();
    let mut dup = sigs.clone();
    dup.push(sigs[1].clone());
    assert_eq!(
        unmask(&mut net, ps[0], request(&p, ps[0], &all, &dup)).unwrap_err(),
        v(Violation::Duplicate(ps[1]))
    );
    let mut stranger = sigs.clone();
    stranger.push((999, vec![1; 32]));
    assert_eq!(
        unmask(&mut net, ps[1], request(&p, ps[1], &all, &stranger)).unwrap_err(),
        v(Violation::SignerNotSurvivor(999))
    );
    let mut garbage = sigs.clone();
    garbage[3].1 = vec![0; 32];
    assert_eq!(
        unmask(&mut net, ps[2], request(&p, ps[2], &all, &garbage)).unwrap_err(),
        v(Violation::SurvivorSetMismatch { signer: ps[3] })
    );
    // Sanity: the untouched list is accepted.
    assert!(unmask(&mut net, ps[3], request(&p, ps[3], &all, &sigs)).is_ok());
}

#[test]
fn a_survivor_list_in_an_unsigned_round_is_out_of_place() {
    let p = params(7, 6, 4, 16, 32);
    let mut net = Net::new(p.clone(), None);
    for _ in 0..2 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    let u = p.participants[0];
    let (s, mut rng) = net.clients.remove(&u).unwrap();
    let list = ServerMessage::SurvivorList(SurvivorList {
        round: 11,
        survivors: p.participants.clone(),
    });
    assert_eq!(
        s.handle(list, &mut rng).unwrap_err(),
        Error::ProtocolViolation(Violation::WrongStage)
    );
    // And the server of an unsigned round takes no survivor signature.
    net.deliver_all();
    let sig = ClientMessage::SurvivorSignature(SurvivorSignature {
        round: 11,
        signature: vec![1; 32],
    });
    assert_eq!(
        net.server.receive(u, sig),
        Err(Error::ProtocolViolation(Violation::WrongStage))
    );
}

#[test]
fn the_server_checks_survivor_signatures() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let (mut net, _) = at_consistency_check(&p, &pki);
    net.server.set_verifier(Box::new(pki.clone()));
    let ps = p.participants.clone();
    let sig = |s: Vec<u8>| {
        ClientMessage::SurvivorSignature(SurvivorSignature {
            round: 11,
            signature: s,
        })
    };
    let v = |x: Violation| Err(Error::ProtocolViolation(x));
    assert_eq!(
        net.server.receive(ps[0], sig(Vec::new())),
        v(Violation::WrongLength {
            expected: server::MAX_SIGNATURE_LEN,
            got: 0
        })
    );
    assert_eq!(
        net.server
            .receive(ps[0], sig(vec![1; server::MAX_SIGNATURE_LEN + 1])),
        v(Violation::WrongLength {
            expected: server::MAX_SIGNATURE_LEN,
            got: server::MAX_SIGNATURE_LEN + 1
        })
    );
    // A signature over another set, refused on arrival.
    let wrong = sign_list(&mut net, ps[0], ps[..6].to_vec());
    assert_eq!(
        net.server.receive(ps[0], sig(wrong)),
        v(Violation::BadSignature { peer: ps[0] })
    );
    // Genuine signatures: accepted once, the replay refused.
    let mut fresh = Net::new(p.clone(), Some(&pki));
    std::mem::swap(&mut fresh.clients, &mut net.clients);
    for &u in &ps[1..] {
        let s = sign_list(&mut fresh, u, ps.clone());
        net.server.receive(u, sig(s.clone())).unwrap();
        assert_eq!(net.server.receive(u, sig(s)), v(Violation::Duplicate(u)));
    }
    // Six signers ≥ t: the unmask requests go to them, with the signatures.
    let StageOutcome::Send(reqs) = net.server.close_stage().unwrap() else {
        panic!()
    };
    assert_eq!(reqs.len(), 6);
    for (to, m) in reqs {
        let ServerMessage::UnmaskRequest(r) = m else {
            panic!()
        };
        assert_ne!(to, ps[0], "who did not sign is not asked");
        assert_eq!(r.signatures.len(), 6);
    }
}

#[test]
fn too_few_survivor_signatures_abort_before_anything_is_revealed() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let (mut net, _) = at_consistency_check(&p, &pki);
    for &u in &p.participants[..3] {
        let s = sign_list(&mut net, u, p.participants.clone());
        net.server
            .receive(
                u,
                ClientMessage::SurvivorSignature(SurvivorSignature {
                    round: 11,
                    signature: s,
                }),
            )
            .unwrap();
    }
    assert_eq!(
        net.server.close_stage(),
        Err(Error::BelowThreshold {
            needed: 4,
            have: 3,
            stage: Stage::AwaitingSurvivorSignatures
        })
    );
    assert_eq!(net.server.stage(), Stage::Aborted);
}

/// The graph of a signed round follows from the advertised keys: a
/// coordinator announcing a seed of its own choosing, or dropping or
/// replacing keys to steer the seed while keeping its own, is refused by
/// every participant before any share is sent.
#[test]
fn a_coordinator_that_picks_its_own_graph_seed_is_caught() {
    // Sparse graph: n = 12, k = 6, so the seed matters.
    let mut p = params(12, 6, 4, 8, 32);
    p.signed_keys = true;
    let pki = TestPki::new(&p);

    // Honest: the server's seed is the derived one, not the announced one,
    // and the round completes.
    let mut net = Net::new(p.clone(), Some(&pki));
    net.deliver_all();
    let StageOutcome::Send(msgs) = net.server.close_stage().unwrap() else {
        panic!()
    };
    let derived = net.server.graph_seed();
    assert_ne!(derived, p.graph_seed);
    for (to, m) in &msgs {
        let ServerMessage::PeerKeys(k) = m else {
            panic!()
        };
        assert_eq!(k.graph_seed, derived);
        assert_eq!(k.keys.len(), 11, "all other keys go to {to}");
    }

    type Tamper = Box<dyn Fn(&mut PeerKeys)>;
    let chosen = [0x66u8; 32];
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "a seed of its choice",
            Box::new(move |k| k.graph_seed = chosen),
        ),
        (
            "the announced seed",
            Box::new(move |k| k.graph_seed = [0x5a; 32]),
        ),
        (
            "one participant's keys left out, the seed kept",
            Box::new(|k| {
                k.keys.pop();
            }),
        ),
    ];
    for (what, tamper) in cases {
        let mut net = Net::new(p.clone(), Some(&pki));
        net.deliver_all();
        let StageOutcome::Send(msgs) = net.server.close_stage().unwrap() else {
            panic!()
        };
        for (to, m) in msgs {
            let ServerMessage::PeerKeys(mut k) = m else {
                panic!()
            };
            tamper(&mut k);
            let (s, mut rng) = net.clients.remove(&to).unwrap();
            assert_eq!(
                s.handle(ServerMessage::PeerKeys(k), &mut rng).unwrap_err(),
                Error::ProtocolViolation(Violation::GraphSeedMismatch),
                "{what}"
            );
        }
    }

    // Only the neighbours' keys under its own graph (the unsigned protocol)
    // does not verify either: the seed is over the keys received.
    let mut net = Net::new(p.clone(), Some(&pki));
    net.deliver_all();
    let StageOutcome::Send(msgs) = net.server.close_stage().unwrap() else {
        panic!()
    };
    for (to, m) in msgs {
        let ServerMessage::PeerKeys(mut k) = m else {
            panic!()
        };
        let nb = neighbours_of(&p, to);
        k.keys.retain(|a| nb.contains(&a.from));
        k.graph_seed = p.graph_seed;
        let (s, mut rng) = net.clients.remove(&to).unwrap();
        assert_eq!(
            s.handle(ServerMessage::PeerKeys(k), &mut rng).unwrap_err(),
            Error::ProtocolViolation(Violation::GraphSeedMismatch)
        );
    }

    // The whole sparse signed round completes with the derived graph.
    assert_honest_round_completes(&p, &pki);
}

/// A coordinator that runs the same round id twice cannot reuse the first
/// run's survivor signatures: they bind the round's freshly drawn keys
/// (through the derived graph seed).
#[test]
fn survivor_signatures_of_a_reused_round_do_not_verify() {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let all: BTreeSet<u32> = p.participants.iter().copied().collect();
    let (mut first, _) = at_consistency_check(&p, &pki);
    let old: Vec<(u32, Vec<u8>)> = p
        .participants
        .iter()
        .map(|&u| (u, sign_list(&mut first, u, p.participants.clone())))
        .collect();
    // Second run, same round id, fresh keys (other random draws).
    let mut second = Net::seeded(p.clone(), Some(&pki), 5000);
    for _ in 0..2 {
        second.deliver_all();
        assert!(second.step().is_empty());
    }
    second.deliver_all();
    let StageOutcome::Send(_) = second.server.close_stage().unwrap() else {
        panic!()
    };
    let u = p.participants[0];
    sign_list(&mut second, u, p.participants.clone());
    assert_eq!(
        unmask(&mut second, u, request(&p, u, &all, &old)).unwrap_err(),
        Error::ProtocolViolation(Violation::SurvivorSetMismatch {
            signer: p.participants[0]
        })
    );
}

fn zeroize_on_drop<T: ZeroizeOnDrop>() {}

#[test]
fn client_secrets_are_zeroised_on_drop() {
    zeroize_on_drop::<AwaitingPeerKeys>();
    zeroize_on_drop::<AwaitingShares>();
    zeroize_on_drop::<AwaitingInput>();
    zeroize_on_drop::<AwaitingUnmask>();
    zeroize_on_drop::<AwaitingSignatures>();
    zeroize_on_drop::<HeldShares>();
    zeroize_on_drop::<x25519_dalek::StaticSecret>();
    zeroize_on_drop::<zeroize::Zeroizing<[u8; 32]>>();
    // What drop runs on held shares wipes both of them.
    let mut held = HeldShares::new(
        shamir::Share([7; shamir::CHUNKS]),
        shamir::Share([9; shamir::CHUNKS]),
    );
    held.zeroize();
    assert_eq!(held.values(), ([0; shamir::CHUNKS], [0; shamir::CHUNKS]));
}

/// A finished round (its sum, its contributors and the network), or the
/// participants' refusals.
type Outcome = Result<(Vec<u64>, Vec<u32>, Net), Vec<(u32, Error)>>;

/// Runs a signed round in which `hostile` sends a survivor signature with
/// one bit flipped; the server verifies signatures on arrival when
/// `verify`. Returns the sum and contributors, or the honest
/// participants' refusals of the unmasking request.
fn round_with_a_bad_survivor_signature(verify: bool, hostile: u32) -> Outcome {
    let p = signed_params();
    let pki = TestPki::new(&p);
    let mut net = Net::new(p.clone(), Some(&pki));
    if verify {
        net.server.set_verifier(Box::new(pki.clone()));
    }
    for _ in 0..3 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    // The survivor signatures: the hostile one tampered with.
    let Some(ClientMessage::SurvivorSignature(bad)) = net.sent.get_mut(&hostile) else {
        panic!("{hostile} signs the survivor list")
    };
    *bad.signature.last_mut().unwrap() ^= 1;
    for (&u, m) in &net.sent {
        let r = net.server.receive(u, m.clone());
        if verify && u == hostile {
            assert_eq!(
                r,
                Err(Error::ProtocolViolation(Violation::BadSignature {
                    peer: u
                }))
            );
        } else {
            r.unwrap();
        }
    }
    net.sent.clear();
    let refusals = net.step();
    if !refusals.is_empty() {
        return Err(refusals);
    }
    net.deliver_all();
    let (sum, contributors) = net.finish();
    Ok((sum, contributors, net))
}

/// One participant's bad survivor signature does not abort the round when
/// the server checks signatures as they arrive: it is refused, the
/// participant gets no unmasking request, and the honest ones reveal the
/// self-mask shares of its input (which is in the sum: it sent it before
/// the check) as of any survivor's. Without the check the bad signature is
/// forwarded and every honest participant refuses to reveal anything.
#[test]
fn a_bad_survivor_signature_drops_its_sender_not_the_round() {
    let hostile = signed_params().participants[2];
    let (sum, contributors, net) =
        round_with_a_bad_survivor_signature(true, hostile).expect("the round completes");
    let p = signed_params();
    assert_eq!(contributors, p.participants);
    assert_eq!(sum, net.expected(&contributors));
    assert!(net.server.misbehaving().is_empty());

    let refusals = round_with_a_bad_survivor_signature(false, hostile)
        .err()
        .expect("forwarded, the bad signature makes the honest participants refuse");
    assert_eq!(refusals.len(), p.participants.len());
    for (_, e) in refusals {
        assert_eq!(
            e,
            Error::ProtocolViolation(Violation::SurvivorSetMismatch { signer: hostile })
        );
    }
}
