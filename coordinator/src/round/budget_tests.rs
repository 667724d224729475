//! A federation that the sites' own budgets end says so: sites that decline
//! for their budget sit the rest out, and when too few with budget are left
//! the machine finishes naming them.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_model::Preprocessor;
use tessera_proto::chunk;
use tessera_proto::v1::{
    self, ChunkPurpose, DeclineCode, ParticipantMessage, coordinator_message::Body as Out,
    participant_message::Body as In,
};

use super::{Input, Output, Resume, SecureRng};
use crate::config::CoordinatorConfig;
use crate::settings::Settings;

const NAMES: [&str; 3] = ["a", "b", "c"];

fn settings() -> Settings {
    let text = r#"
[federation]
name = "budgets"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 5
output_dir = "/nonexistent"
allow = ["a", "b", "c"]
max_failed_rounds = 100

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

[statistics.ranges]
x = [0.0, 1.0]
"#;
    let config: CoordinatorConfig = toml::from_str(text).unwrap();
    Settings::plan(config).unwrap()
}

#[test]
fn sites_out_of_budget_end_the_federation_and_it_says_so() {
    let settings = settings();
    let resume = Resume {
        next_round: 2,
        model: Some(vec![0.0; 2]),
        preprocessor: Some(Preprocessor {
            mean: vec![0.0],
            std: vec![1.0],
            indicator: vec![false],
            target: None,
        }),
        ..Resume::default()
    };
    let rng = |s| -> SecureRng { Box::new(ChaCha20Rng::seed_from_u64(s)) };
    let mut m = settings.machine(resume, None, rng(1), rng(2)).unwrap();
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
    let mut finished = None;
    let mut declines = 0;
    for _ in 0..1000 {
        let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        if outputs.is_empty() {
            break;
        }
        for out in outputs {
            match out {
                Output::Send { to, message } => {
                    let Some(Out::Announce(a)) = message.body else {
                        continue;
                    };
                    let session = NAMES.iter().position(|n| *n == to).unwrap() as u64;
                    let reply = |body| Input::Message {
                        name: to.clone(),
                        session,
                        message: ParticipantMessage { body: Some(body) },
                    };
                    if to == "a" {
                        let zeros = vec![0u32; a.dimension as usize];
                        for ch in chunk::split(a.round, ChunkPurpose::PlainInput, &zeros) {
                            m.handle(now, reply(In::Chunk(ch)));
                        }
                    } else {
                        declines += 1;
                        m.handle(
                            now,
                            reply(In::RoundReply(v1::RoundReply {
                                round: a.round,
                                accept: false,
                                reason: tessera_proto::reasons::decline_text(
                                    DeclineCode::BudgetExceeded,
                                )
                                .into(),
                                code: DeclineCode::BudgetExceeded as i32,
                            })),
                        );
                    }
                }
                Output::Commit(c) => m.handle(
                    now,
                    Input::Committed {
                        round: c.summary.round,
                    },
                ),
                Output::Finished { reason, success } => finished = Some((reason, success)),
                _ => {}
            }
        }
        if finished.is_none()
            && let Some(t) = m.poll_timeout()
        {
            m.handle_timeout(t.max(now));
        }
    }
    let (reason, success) = finished.expect("the federation ends");
    assert!(success, "{reason}");
    assert!(
        reason.contains("the sites' own privacy budgets are spent") && reason.contains("b, c"),
        "{reason}"
    );
    // One round asked, two declines: they are not asked again.
    assert_eq!(declines, 2);
    let budgets = m.site_budgets();
    assert!(
        budgets.is_empty(),
        "no site declared terms here: {budgets:?}"
    );
}
