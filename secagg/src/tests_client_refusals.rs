//! The clients against a bad server: malformed requests, bad peer keys and
//! shares, substituted signed keys, API misuse and bad local input.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::tests::params;
use crate::tests_net::{Net, TestPki, violation};
use crate::*;

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
