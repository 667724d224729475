//! Protobuf that decodes but breaks the protocol, from one authenticated
//! site among eight, over two private training rounds with secure
//! aggregation: messages out of stage, naming another round, with a wrong
//! vector length, sent twice, replayed from the previous round, or naming
//! another participant as their sender. Each time the federation completes
//! both rounds with every honest site's input, and the model released is
//! bit for bit the one released when the hostile site, connected, sends
//! nothing at all: nothing it sent reached the sum.

use std::collections::BTreeSet;

use tessera_participant::site::SitePolicy;
use tessera_proto::v1::participant_message::Body;
use tessera_proto::v1::{ParticipantMessage, UnmaskResponse};

use super::scenario::{Scenario, site_name};
use super::{InMemoryFederation, Outcome, Tamper};

const SITES: Scenario = Scenario { sites: 8, drops: 1 };
const ROUNDS: u32 = 2;

fn hostile() -> String {
    site_name(3)
}

fn federation() -> InMemoryFederation {
    InMemoryFederation::new(
        &SITES.settings_with_rounds(ROUNDS),
        super::scenario::resume(),
        SITES.data(1),
        &SitePolicy::default(),
        11,
    )
    .unwrap()
}

/// The run where the hostile site stays connected but sends nothing: it
/// is in every cohort and dropped before its keys.
fn reference() -> Outcome {
    with(Box::new(|_| Vec::new()))
}

fn with(tamper: Tamper) -> Outcome {
    let mut fed = federation();
    fed.tamper(&hostile(), tamper);
    fed.run(1_000_000).unwrap()
}

fn round_of(m: &mut ParticipantMessage) -> Option<&mut u64> {
    match m.body.as_mut()? {
        Body::Keys(k) => Some(&mut k.round),
        Body::ShareKeys(s) => Some(&mut s.round),
        Body::Chunk(c) => Some(&mut c.round),
        Body::Unmask(u) => Some(&mut u.round),
        _ => None,
    }
}

/// Checks that `out` completed every round with all honest sites and
/// (`excluded`) without the hostile one, releasing `reference`'s model.
fn check(name: &str, out: &Outcome, reference: &Outcome, excluded: bool) {
    let (reason, success) = out.finished.clone().unwrap();
    assert!(success, "{name}: {reason}");
    assert!(out.aborted.is_empty(), "{name}: {:?}", out.aborted);
    assert_eq!(out.released.len(), ROUNDS as usize, "{name}");
    let honest: BTreeSet<String> = (0..SITES.sites)
        .map(site_name)
        .filter(|n| *n != hostile())
        .collect();
    for c in &out.released {
        let who: BTreeSet<String> = c.summary.contributors.iter().cloned().collect();
        if excluded {
            assert_eq!(who, honest, "{name}: round {}", c.summary.round);
        } else {
            assert!(
                who.is_superset(&honest),
                "{name}: round {}",
                c.summary.round
            );
        }
    }
    if excluded {
        assert_eq!(out.model(), reference.model(), "{name}: a different model");
    }
}

#[test]
fn protocol_breaking_messages_reach_no_sum() {
    let reference = reference();
    assert_eq!(reference.released.len(), ROUNDS as usize);
    // (what it does, how, whether it is kept out of every sum)
    let cases: Vec<(&str, Tamper, bool)> = vec![
        (
            "every message for the next round",
            Box::new(|mut m| {
                if let Some(r) = round_of(&mut m) {
                    *r += 1;
                }
                vec![m]
            }),
            true,
        ),
        (
            "an unmasking answer with its keys (wrong stage), a vector one element long",
            Box::new(|m| match &m.body {
                Some(Body::Keys(k)) => {
                    let early = ParticipantMessage {
                        body: Some(Body::Unmask(UnmaskResponse {
                            round: k.round,
                            ..Default::default()
                        })),
                    };
                    vec![m.clone(), early]
                }
                Some(Body::Chunk(c)) => {
                    let mut c = c.clone();
                    c.total += 1;
                    vec![ParticipantMessage {
                        body: Some(Body::Chunk(c)),
                    }]
                }
                _ => vec![m],
            }),
            true,
        ),
        (
            "every message twice",
            // The first of each is taken; its input is a valid one.
            Box::new(|m| vec![m.clone(), m]),
            false,
        ),
        (
            "the previous round's messages replayed first",
            {
                let mut earlier: Vec<ParticipantMessage> = Vec::new();
                Box::new(move |m| {
                    let mut out: Vec<ParticipantMessage> = Vec::new();
                    if matches!(m.body, Some(Body::Chunk(_))) {
                        out.extend(
                            earlier
                                .iter()
                                .filter(|e| matches!(e.body, Some(Body::Chunk(_))))
                                .cloned(),
                        );
                    }
                    earlier.push(m.clone());
                    out.push(m);
                    out
                })
            },
            // Honest in the first round (nothing to replay yet).
            false,
        ),
        (
            "shares naming another participant as their sender",
            Box::new(|mut m| {
                if let Some(Body::ShareKeys(s)) = m.body.as_mut() {
                    for share in &mut s.shares {
                        share.from = if share.from == 1 { 2 } else { 1 };
                    }
                }
                vec![m]
            }),
            true,
        ),
    ];
    for (name, tamper, excluded) in cases {
        let out = with(tamper);
        check(name, &out, &reference, excluded);
    }
}
