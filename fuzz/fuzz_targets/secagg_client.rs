//! A secure-aggregation participant fed coordinator messages decoded from
//! the input (any bytes, through the same wire conversions the participant
//! uses), at every stage of an otherwise honest session. Refusals are
//! fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;
use tessera_proto::convert;
use tessera_proto::v1::{CoordinatorMessage, coordinator_message::Body};
use tessera_secagg::{ClientConfig, ClientSession, RoundParams, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let params = RoundParams {
        round: 3,
        participants: vec![1, 2, 3, 4],
        threshold: 2,
        neighbours: 3,
        graph_seed: [1; 32],
        dim: 4,
        modulus_bits: 16,
        signed_keys: false,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let cfg = ClientConfig {
        params,
        me: 2,
        signer: None,
        verifier: None,
    };
    let Ok((mut session, _)) = ClientSession::start(cfg, &mut rng) else {
        return;
    };
    // Length-prefixed messages.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let Ok(m) = CoordinatorMessage::decode(frame) else {
            continue;
        };
        let msg = match m.body {
            Some(Body::PeerKeys(p)) => match convert::peer_keys_from_wire(&p) {
                Ok(p) => ServerMessage::PeerKeys(p),
                Err(_) => continue,
            },
            Some(Body::RoutedShares(s)) => {
                ServerMessage::RoutedShares(convert::routed_shares_from_wire(&s))
            }
            Some(Body::UnmaskRequest(u)) => {
                ServerMessage::UnmaskRequest(convert::unmask_request_from_wire(&u))
            }
            Some(Body::SurvivorList(l)) => {
                ServerMessage::SurvivorList(convert::survivor_list_from_wire(&l))
            }
            _ => continue,
        };
        session = match session.handle(msg, &mut rng) {
            Ok((s, _)) if s.wants_input() => match s.mask_input(&[1, 2, 3, 4]) {
                Ok((s, _)) => s,
                Err(_) => return,
            },
            Ok((s, _)) => s,
            Err(_) => return,
        };
    }
});
