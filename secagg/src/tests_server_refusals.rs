//! The server against malformed, oversized, replayed and misaddressed
//! messages: each refused with its violation, and the round still completes.

use crate::tests::params;
use crate::tests_net::{Net, violation};
use crate::*;

const MAX_SIG: usize = server::MAX_SIGNATURE_LEN;

impl Net {
    /// Some participant whose shares are routed to `u`.
    fn server_peer_of(&self, u: u32) -> u32 {
        let n = neighbours_of(&self.p, u);
        n[0]
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
