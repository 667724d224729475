//! Analytics rounds in the federation machine, without a network: a query
//! past the federation's budget is refused and the federation carries on;
//! a query is announced with its own terms; a site that declines it is
//! counted (and stays eligible); the answer comes out only after the
//! commit of its ledger row, with the noise of its plan.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_analytics::{QueryNoise, QueryPlan, parse_query};
use tessera_proto::chunk;
use tessera_proto::v1::{
    self, ChunkPurpose, DeclineCode, ParticipantMessage, coordinator_message::Body as Out,
    participant_message::Body as In,
};

use super::{FederationMachine, Input, Output, QueryOrigin, QueuedQuery, SecureRng};
use crate::config::CoordinatorConfig;
use crate::settings::Settings;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn machine() -> FederationMachine {
    let text = r#"
[federation]
name = "queries"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 0
output_dir = "/nonexistent"
allow = ["a", "b", "c", "d"]

[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[task]
features = ["x"]
label = "y"
positive = "> 0"

[secagg]
enabled = false

[privacy]
enabled = true
noise_multiplier = 1.0
max_epsilon = 1.0

[statistics.ranges]
x = [0.0, 1.0]
"#;
    let config: CoordinatorConfig = toml::from_str(text).unwrap();
    let settings = Settings::plan(config).unwrap();
    let rng = |s| -> SecureRng { Box::new(ChaCha20Rng::seed_from_u64(s)) };
    settings
        .machine(super::Resume::default(), None, rng(1), rng(2))
        .unwrap()
}

fn count(id: u64, epsilon: f64) -> QueuedQuery {
    QueuedQuery {
        id,
        plan: QueryPlan {
            query: parse_query("count where x > 1").unwrap(),
            max_rows: 100,
            noise: QueryNoise::Epsilon(epsilon),
        },
        origin: QueryOrigin::Operator,
    }
}

#[test]
fn queries_are_gated_announced_declined_and_released_after_their_commit() {
    let mut m = machine();
    let now = Instant::now();
    for (i, name) in NAMES.iter().enumerate() {
        m.handle(
            now,
            Input::Connected {
                name: (*name).into(),
                session: i as u64,
                certificate: vec![],
            },
        );
    }
    m.start(now);
    // Everyone is on the allow-list: no join grace.
    let _: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    // Past the budget of ε = 1: refused, nothing started.
    m.queue_query(now, count(1, 2.0));
    let outs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        matches!(&outs[..], [Output::QueryFailed(f)] if f.query.id == 1 && f.reason.contains("> 1")),
        "{outs:?}"
    );
    assert!(!m.is_finished());
    // Within it: announced to every site with the query's own terms.
    m.queue_query(now, count(2, 0.5));
    let mut released = None;
    let mut committed = false;
    for _ in 0..100 {
        let outs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        if outs.is_empty() {
            break;
        }
        for out in outs {
            match out {
                Output::Send { to, message } => {
                    let Some(Out::Announce(a)) = message.body else {
                        continue;
                    };
                    assert_eq!(a.kind, v1::AggregationKind::Analytics as i32);
                    let q = a.analytics.as_ref().unwrap();
                    assert_eq!(
                        (q.query.as_str(), q.max_rows, q.epsilon),
                        ("count where x > 1", 100, 0.5)
                    );
                    let p = a.privacy.unwrap();
                    assert_eq!((p.noise_multiplier, p.clip_norm), (2.0, 100.0));
                    let e = a.encoding.unwrap();
                    assert_eq!((e.scale_bits, e.modulus_bits, a.dimension), (0, 64, 1));
                    let session = NAMES.iter().position(|n| *n == to).unwrap() as u64;
                    let reply = |body| Input::Message {
                        name: to.clone(),
                        session,
                        message: ParticipantMessage { body: Some(body) },
                    };
                    if to == "d" {
                        m.handle(
                            now,
                            reply(In::RoundReply(v1::RoundReply {
                                round: a.round,
                                accept: false,
                                reason: tessera_proto::reasons::decline_text(
                                    DeclineCode::ColumnNotAllowed,
                                )
                                .into(),
                                code: DeclineCode::ColumnNotAllowed as i32,
                            })),
                        );
                    } else {
                        let v = vec![10u64];
                        for ch in chunk::split(a.round, ChunkPurpose::PlainInput, &v) {
                            m.handle(now, reply(In::Chunk(ch)));
                        }
                    }
                }
                Output::Commit(c) => {
                    let entry = c.privacy.as_ref().unwrap();
                    assert_eq!(
                        entry.event,
                        tessera_privacy::PrivacyEvent::DiscreteLaplace {
                            epsilon: 0.5,
                            count: 1
                        }
                    );
                    assert!(released.is_none(), "released before its commit");
                    committed = true;
                    m.handle(
                        now,
                        Input::Committed {
                            round: c.summary.round,
                        },
                    );
                }
                Output::QueryReleased(r) => released = Some(r),
                Output::Finished { reason, .. } => panic!("finished: {reason}"),
                _ => {}
            }
        }
    }
    assert!(committed);
    let r = released.expect("released");
    assert_eq!(
        (r.query.id, r.answered, r.declined, r.dropped),
        (2, 3, 1, 0)
    );
    assert_eq!(r.release.noise[0].scale, 200.0);
    assert!(matches!(
        r.release.answer,
        tessera_analytics::Answer::Count { .. }
    ));
    // The site that declined is not out of the federation.
    assert!(m.site_budgets().is_empty() && m.connected().len() == 4);
    assert!(
        !m.is_finished(),
        "an analytics-only federation waits for more"
    );
    assert_eq!(m.queued_queries(), 0);
}
