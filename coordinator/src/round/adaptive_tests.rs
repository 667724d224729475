//! Adaptive clipping through the federation machine: simulated participants
//! with updates of known norms, plain sums, and the machine's announcements
//! and ledger events observed round by round.

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_model::Preprocessor;
use tessera_privacy::PrivacyEvent;
use tessera_proto::chunk;
use tessera_proto::v1::{
    ChunkPurpose, ParticipantMessage, coordinator_message::Body as Out,
    participant_message::Body as In,
};
use tessera_secagg::FixedPoint;

use super::{FederationMachine, Input, Output, Resume, SecureRng};
use crate::config::CoordinatorConfig;
use crate::settings::Settings;

const SITES: usize = 10;
const MODEL_LEN: usize = 3;

fn settings(initial_clip: f64, extra_training: &str) -> Settings {
    let allow: Vec<String> = (0..SITES).map(|i| format!("\"site{i}\"")).collect();
    let text = format!(
        r#"
[federation]
name = "adaptive"
listen = "127.0.0.1:0"
min_participants = {SITES}
rounds = 25
output_dir = "/nonexistent"
allow = [{allow}]

[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[task]
features = ["a", "b"]
label = "y"
positive = "> 0"

[training]
clip_norm = {initial_clip:?}
adaptive_clipping = true
{extra_training}

[secagg]
enabled = false

[privacy]
enabled = true
noise_multiplier = 1.0
clip_count_noise_multiplier = 2.0
statistics_noise_multiplier = 5.0

[statistics.ranges]
a = [0.0, 1.0]
b = [0.0, 1.0]
"#,
        allow = allow.join(", ")
    );
    let config: CoordinatorConfig = toml::from_str(&text).unwrap();
    Settings::plan(config).unwrap()
}

/// What the test saw of one training round.
#[derive(Debug)]
struct Observed {
    clip_norm: f64,
    noise_multiplier: f64,
    ledger_clip_norm: f64,
    ledger_event: PrivacyEvent,
    ledger_noise_multiplier: f64,
}

/// Runs `rounds` training rounds where site i's update has norm `norms[i]`.
fn run(settings: Settings, norms: &[f64], rounds: usize) -> (Vec<Observed>, FederationMachine) {
    let settings = Arc::new(settings);
    let resume = Resume {
        next_round: 2,
        completed_training: 0,
        model: Some(vec![0.0; MODEL_LEN]),
        preprocessor: Some(Preprocessor {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
            indicator: vec![false; 2],
            target: None,
        }),
        ledger: vec![],
        clip_norm: None,
        evaluated_through: 0,
    };
    let rng: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(7));
    let noise: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(8));
    let mut m = settings.machine(resume, None, rng, noise).unwrap();
    let mut site_rng = ChaCha20Rng::seed_from_u64(9);
    let now = Instant::now();
    for i in 0..SITES {
        m.handle(
            now,
            Input::Connected {
                name: format!("site{i}"),
                session: i as u64,
                certificate: vec![],
            },
        );
    }
    m.start(now);
    let mut seen = Vec::new();
    let mut announced = None;
    while seen.len() < rounds {
        let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        assert!(!outputs.is_empty(), "the machine stalled: {m:?}");
        for out in outputs {
            match out {
                Output::Send { to, message } => {
                    let Some(Out::Announce(a)) = message.body else {
                        continue;
                    };
                    let terms = a.privacy.unwrap();
                    assert!(terms.adaptive_clipping);
                    assert_eq!(a.dimension as usize, MODEL_LEN + 1);
                    assert_eq!(terms.noise_multiplier, settings.noise_multiplier);
                    assert_eq!(
                        terms.update_noise_multiplier,
                        settings.update_noise_multiplier
                    );
                    announced = Some((terms.clip_norm, terms.noise_multiplier));
                    let i: usize = to.trim_start_matches("site").parse().unwrap();
                    let enc = a.encoding.unwrap();
                    let e = FixedPoint::new(enc.scale_bits, enc.modulus_bits).unwrap();
                    // An update of norm norms[i], clipped as a site does, then
                    // the centred bit of the unclipped norm.
                    let c = terms.clip_norm;
                    let norm = norms[i];
                    let clip = c - e.max_rounding_norm(MODEL_LEN);
                    let scale = (clip / norm).min(1.0);
                    let mut v = vec![norm * scale, 0.0, 0.0];
                    v.push(if norm <= c { 0.5 } else { -0.5 });
                    let encoded = e.encode(&v, &mut site_rng).unwrap();
                    // The announced modulus decides the element width.
                    let chunks = if e.modulus_bits > 32 {
                        chunk::split(a.round, ChunkPurpose::PlainInput, &encoded)
                    } else {
                        let narrow: Vec<u32> = encoded.iter().map(|&x| x as u32).collect();
                        chunk::split(a.round, ChunkPurpose::PlainInput, &narrow)
                    };
                    for ch in chunks {
                        m.handle(
                            now,
                            Input::Message {
                                name: to.clone(),
                                session: i as u64,
                                message: ParticipantMessage {
                                    body: Some(In::Chunk(ch)),
                                },
                            },
                        );
                    }
                }
                Output::Commit(c) => {
                    let entry = c.privacy.clone().expect("DP is on");
                    let (clip_norm, noise_multiplier) = announced.take().unwrap();
                    seen.push(Observed {
                        clip_norm,
                        noise_multiplier,
                        ledger_clip_norm: entry.clip_norm,
                        ledger_event: entry.event,
                        ledger_noise_multiplier: entry.noise_multiplier,
                    });
                    let next = m.pending_clip_norm().expect("adaptive clipping");
                    assert!(next.is_finite() && next > 0.0);
                    m.handle(
                        now,
                        Input::Committed {
                            round: c.summary.round,
                        },
                    );
                    assert_eq!(m.clip_norm(), next);
                }
                Output::Finished { reason, .. } => panic!("finished early: {reason}"),
                _ => {}
            }
        }
    }
    (seen, m)
}

#[test]
fn clip_norm_falls_toward_the_median_of_small_updates() {
    let s = settings(10.0, "clip_learning_rate = 0.5");
    let sigma_eff = s.noise_multiplier;
    assert!(s.update_noise_multiplier > sigma_eff);
    let norms: Vec<f64> = (0..SITES).map(|i| 0.2 + 0.02 * i as f64).collect();
    let (seen, _) = run(s, &norms, 25);
    let clips: Vec<f64> = seen.iter().map(|o| o.clip_norm).collect();
    assert_eq!(clips[0], 10.0);
    // Every update is below C at first: C must fall, round after round.
    assert!(clips[10] < 10.0 * 0.2, "{clips:?}");
    // And it settles near the median norm (0.29), not at the start.
    let last = clips[clips.len() - 1];
    assert!(last > 0.05 && last < 1.0, "{clips:?}");
    for o in &seen {
        // The ledger accounts σ_eff, with the C of that round.
        assert_eq!(o.noise_multiplier, sigma_eff);
        assert_eq!(o.ledger_noise_multiplier, sigma_eff);
        assert_eq!(o.ledger_clip_norm, o.clip_norm);
        // Full participation; the slack of the discretised noise only.
        let PrivacyEvent::Gaussian {
            noise_multiplier,
            sampling_rate,
            count,
            tv_slack,
        } = o.ledger_event
        else {
            panic!("{:?}", o.ledger_event)
        };
        assert_eq!(
            (noise_multiplier, sampling_rate, count),
            (sigma_eff, 1.0, 1)
        );
        assert!(tv_slack > 0.0 && tv_slack < 1e-12, "{tv_slack:e}");
    }
}

#[test]
fn clip_norm_grows_when_every_update_is_clipped() {
    let s = settings(0.01, "clip_learning_rate = 0.5\ntarget_quantile = 0.5");
    let norms = vec![0.3; SITES];
    let (seen, m) = run(s, &norms, 12);
    assert_eq!(seen[0].clip_norm, 0.01);
    assert!(m.clip_norm() > 0.01 * 5.0, "{seen:?}");
}

#[test]
fn a_restarted_machine_goes_on_from_the_adapted_clip_norm() {
    let s = Arc::new(settings(10.0, ""));
    let resume = Resume {
        clip_norm: Some(0.7),
        ..Resume::default()
    };
    let rng: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(1));
    let noise: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(2));
    let m = s.machine(resume.clone(), None, rng, noise).unwrap();
    assert_eq!(m.clip_norm(), 0.7);
    // Without adaptive clipping a stored C is ignored.
    let mut fixed = (*s).clone();
    fixed.config.training.adaptive_clipping = false;
    let rng: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(1));
    let noise: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(2));
    let m = fixed.machine(resume, None, rng, noise).unwrap();
    assert_eq!(m.clip_norm(), 10.0);
}
