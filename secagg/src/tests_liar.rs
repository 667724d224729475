//! One participant that reveals a wrong share at unmasking: the round goes
//! on without its share, and the server names it.

use crate::shamir::{P, Share};
use crate::tests::params;
use crate::tests_net::Net;
use crate::*;

/// `bytes` as a share with its first element moved by one (still in the
/// field, so only the consistency check can catch it).
fn corrupted(bytes: &[u8]) -> Vec<u8> {
    let mut s = Share::from_bytes(bytes).unwrap();
    s.0[0] = (s.0[0] + 1) % P;
    s.to_bytes().to_vec()
}

/// Runs a round of 8 on a complete graph (t = 4, so every secret has 7 or
/// 6 holders); `dropout` leaves after its shares; `liar` corrupts every
/// share it reveals. Returns the finished sum, the contributors and the
/// named participants.
fn round_with_liar(dropout: Option<u32>, liar: u32) -> (Vec<u64>, Vec<u32>, Vec<u32>, Net) {
    let p = params(8, 7, 4, 40, 24);
    let mut net = Net::new(p, None);
    net.deliver_all();
    assert!(net.step().is_empty()); // keys -> shares
    net.deliver_all();
    assert!(net.step().is_empty()); // shares -> masked inputs
    if let Some(d) = dropout {
        net.sent.remove(&d);
    }
    net.deliver_all();
    assert!(net.step().is_empty()); // masked inputs -> unmasking
    let Some(ClientMessage::UnmaskResponse(mut r)) = net.sent.remove(&liar) else {
        panic!("the liar was asked to unmask")
    };
    for (_, b) in r.self_mask_shares.iter_mut().chain(r.key_shares.iter_mut()) {
        *b = corrupted(b);
    }
    net.server
        .receive(liar, ClientMessage::UnmaskResponse(r))
        .expect("a well-formed response is recorded");
    net.deliver_all();
    let (sum, contributors) = net.finish();
    let named = net.server.misbehaving();
    (sum, contributors, named, net)
}

#[test]
fn a_lying_holder_of_self_mask_shares_is_left_out_and_named() {
    let p = params(8, 7, 4, 40, 24);
    let liar = p.participants[2];
    let (sum, contributors, named, net) = round_with_liar(None, liar);
    assert_eq!(contributors, p.participants);
    assert_eq!(sum, net.expected(&contributors));
    assert_eq!(named, vec![liar]);
}

#[test]
fn a_lying_holder_of_a_dropped_key_is_left_out_and_named() {
    let p = params(8, 7, 4, 40, 24);
    let dropped = p.participants[0];
    let liar = p.participants[5];
    let (sum, contributors, named, net) = round_with_liar(Some(dropped), liar);
    let expected: Vec<u32> = p
        .participants
        .iter()
        .copied()
        .filter(|&u| u != dropped)
        .collect();
    assert_eq!(contributors, expected);
    assert_eq!(sum, net.expected(&contributors));
    assert_eq!(named, vec![liar]);
}

#[test]
fn an_honest_round_names_nobody() {
    let p = params(8, 7, 4, 40, 24);
    let mut net = Net::new(p.clone(), None);
    for _ in 0..3 {
        net.deliver_all();
        assert!(net.step().is_empty());
    }
    net.deliver_all();
    let (sum, contributors) = net.finish();
    assert_eq!(sum, net.expected(&contributors));
    assert!(net.server.misbehaving().is_empty());
}
