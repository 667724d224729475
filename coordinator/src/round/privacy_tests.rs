//! What the federation machine puts in the ledger and the announcements
//! when privacy is on: sampled cohorts with a minimum size, the
//! discretisation slack and resolution of the noise, seeded noise. Plain
//! sums of zero vectors from simulated sites; the tests read the machine's
//! outputs.

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_model::Preprocessor;
use tessera_privacy::{AccountantKind, PrivacyEvent};
use tessera_proto::chunk;
use tessera_proto::v1::{
    ChunkPurpose, Encoding, ParticipantMessage, PrivacyTerms, coordinator_message::Body as Out,
    participant_message::Body as In,
};

use super::{Input, LedgerEntry, Output, Resume, SecureRng};
use crate::config::CoordinatorConfig;
use crate::settings::Settings;

/// A private federation of plain sums (no secure aggregation) over
/// `features` features; `extra` is appended to `[privacy]`.
fn settings(min: usize, rounds: u32, extra_privacy: &str) -> Settings {
    let text = format!(
        r#"
[federation]
name = "privacy-tests"
listen = "127.0.0.1:0"
min_participants = {min}
rounds = {rounds}
output_dir = "/nonexistent"
max_failed_rounds = 1000

[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[task]
features = ["a", "b"]
label = "y"
positive = "> 0"

[training]
clip_norm = 0.25

[secagg]
enabled = false

[privacy]
enabled = true
accountant = "rdp"
statistics_noise_multiplier = 5.0
{extra_privacy}

[statistics.ranges]
a = [0.0, 1.0]
b = [0.0, 1.0]
"#
    );
    let config: CoordinatorConfig = toml::from_str(&text).unwrap();
    Settings::plan(config).unwrap()
}

/// What a run showed.
#[derive(Debug, Default)]
struct Run {
    /// Every announcement's terms and encoding (one per round, first member).
    announced: Vec<(PrivacyTerms, Encoding, u64)>,
    /// Ledger entries of released rounds.
    ledger: Vec<LedgerEntry>,
    /// Rounds that failed.
    failed: usize,
    /// How the federation ended.
    finished: Option<(String, bool)>,
}

/// Runs training rounds with `sites` connected sites that each send a zero
/// vector, until the federation ends (at most `max_steps` output batches).
fn run(mut settings: Settings, sites: usize, model_len: usize) -> Run {
    let names: Vec<String> = (0..sites).map(|i| format!("site{i:03}")).collect();
    // Everyone on the allow-list is there: no join grace before round 1.
    settings.config.federation.allow = Some(names.clone());
    let settings = Arc::new(settings);
    let resume = Resume {
        next_round: 2,
        model: Some(vec![0.0; model_len]),
        preprocessor: Some(Preprocessor {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
            indicator: vec![false; 2],
            target: None,
        }),
        ..Resume::default()
    };
    let rng: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(11));
    let noise: SecureRng = Box::new(ChaCha20Rng::seed_from_u64(12));
    let mut m = settings.machine(resume, None, rng, noise).unwrap();
    let now = Instant::now();
    for (i, name) in names.into_iter().enumerate() {
        m.handle(
            now,
            Input::Connected {
                name,
                session: i as u64,
                certificate: vec![],
            },
        );
    }
    m.start(now);
    let mut seen = Run::default();
    for _ in 0..10_000 {
        let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        if outputs.is_empty() {
            break;
        }
        let mut first_of_round = true;
        for out in outputs {
            match out {
                Output::Send { to, message } => {
                    let Some(Out::Announce(a)) = message.body else {
                        continue;
                    };
                    if first_of_round {
                        seen.announced
                            .push((a.privacy.unwrap(), a.encoding.unwrap(), a.dimension));
                        first_of_round = false;
                    }
                    let session: u64 = to.trim_start_matches("site").parse().unwrap();
                    let zeros = vec![0u32; a.dimension as usize];
                    let wide = vec![0u64; a.dimension as usize];
                    let chunks = if a.encoding.unwrap().modulus_bits > 32 {
                        chunk::split(a.round, ChunkPurpose::PlainInput, &wide)
                    } else {
                        chunk::split(a.round, ChunkPurpose::PlainInput, &zeros)
                    };
                    for ch in chunks {
                        m.handle(
                            now,
                            Input::Message {
                                name: to.clone(),
                                session,
                                message: ParticipantMessage {
                                    body: Some(In::Chunk(ch)),
                                },
                            },
                        );
                    }
                }
                Output::Commit(c) => {
                    seen.ledger.push(c.privacy.clone().expect("DP is on"));
                    m.handle(
                        now,
                        Input::Committed {
                            round: c.summary.round,
                        },
                    );
                }
                Output::RoundAborted(_) => seen.failed += 1,
                Output::Finished { reason, success } => seen.finished = Some((reason, success)),
                _ => {}
            }
        }
    }
    seen
}

/// P(Bin(n, q) = k) by direct products (independent of the library's log-space sum).
fn binomial_pmf(n: u64, q: f64, k: u64) -> f64 {
    let mut c = 1.0f64;
    for j in 0..k {
        c = c * (n - j) as f64 / (j + 1) as f64;
    }
    c * q.powi(k as i32) * (1.0 - q).powi((n - k) as i32)
}

fn binomial_at_least(n: u64, q: f64, m: u64) -> f64 {
    1.0 - (0..m.min(n + 1))
        .map(|k| binomial_pmf(n, q, k))
        .sum::<f64>()
}

/// The acceptance grid: for every (N, q, minimum cohort) the machine either
/// refuses the configuration or keeps a ledger whose ε is at least the ε of
/// the released rounds accounted at their true inclusion probability,
/// P(site ∈ S | |S| ≥ m) = q·P(Bin(N−1, q) ≥ m−1) / P(Bin(N, q) ≥ m).
#[test]
fn sampled_ledger_is_never_below_the_true_inclusion_rate() {
    let rounds = 4u32;
    let delta = 1e-5;
    let (mut accepted, mut refused) = (0, 0);
    for &n in &[10usize, 30, 100, 400] {
        for &q in &[0.1, 0.3, 0.6] {
            for &min in &[1usize, 3, 5] {
                let extra = format!("noise_multiplier = 1.0\nsampling_rate = {q}");
                let r = run(settings(min, rounds, &extra), n, 3);
                let (reason, success) = r.finished.clone().expect("the federation ends");
                if !success {
                    assert!(
                        reason.contains("sampling") && r.ledger.is_empty(),
                        "N={n} q={q} m={min}: {reason}"
                    );
                    refused += 1;
                    continue;
                }
                accepted += 1;
                assert_eq!(
                    r.ledger.len(),
                    rounds as usize,
                    "N={n} q={q} m={min}: {r:?}"
                );
                let (n64, m64) = (n as u64, min as u64);
                let true_rate = q * binomial_at_least(n64 - 1, q, m64.saturating_sub(1))
                    / binomial_at_least(n64, q, m64);
                let events: Vec<PrivacyEvent> = r.ledger.iter().map(|e| e.event.clone()).collect();
                for e in &events {
                    let PrivacyEvent::Gaussian { sampling_rate, .. } = e else {
                        panic!("{e:?}")
                    };
                    // (The test's own arithmetic is good to about 1e-14.)
                    assert!(
                        *sampling_rate >= true_rate * (1.0 - 1e-12),
                        "N={n} q={q} m={min}: {e:?} vs {true_rate}"
                    );
                }
                let ledger_eps = tessera_privacy::epsilon(&events, delta, AccountantKind::Rdp)
                    .unwrap()
                    .epsilon;
                let truth = vec![PrivacyEvent::gaussian(1.0, true_rate.min(1.0), rounds)];
                let true_eps = tessera_privacy::epsilon(&truth, delta, AccountantKind::Rdp)
                    .unwrap()
                    .epsilon;
                assert!(
                    ledger_eps >= true_eps * (1.0 - 1e-9),
                    "N={n} q={q} m={min}: ledger ε {ledger_eps} < true ε {true_eps}"
                );
            }
        }
    }
    assert!(
        accepted >= 5 && refused >= 5,
        "accepted {accepted}, refused {refused}"
    );
}

/// The issue's own example: ten sites at q = 0.3 with a minimum of 3 are
/// refused, with a reason that names the probability.
#[test]
fn a_small_sampled_federation_is_refused_with_its_reason() {
    let r = run(
        settings(3, 30, "noise_multiplier = 1.0\nsampling_rate = 0.3"),
        10,
        3,
    );
    let (reason, success) = r.finished.unwrap();
    assert!(!success);
    assert!(
        reason.contains("rate 0.3") && reason.contains("10"),
        "{reason}"
    );
    assert!(r.ledger.is_empty());
}

/// Every release carries the discretisation slack of its noise, computed
/// from the announced resolution; a model too large for the 32-bit
/// resolution over the planned rounds is announced with the 64-bit one.
#[test]
fn discretisation_slack_is_recorded_and_decides_the_encoding() {
    for (len, rounds, modulus) in [(1000usize, 10u32, 32u32), (100_000, 10_000, 64)] {
        // The planned count decides the slack budget; the budget stops the
        // run after two releases.
        let s = planned_with_stop(settings(3, rounds, "noise_multiplier = 1.0"), 2);
        let r = run(s, 3, len);
        assert!(r.ledger.len() >= 2, "{r:?}");
        for ((terms, enc, dim), entry) in r.announced.iter().zip(&r.ledger) {
            assert_eq!(enc.modulus_bits, modulus, "len {len}, rounds {rounds}");
            let units = terms.noise_multiplier * terms.clip_norm * f64::from(enc.scale_bits).exp2();
            assert!(units >= tessera_privacy::MIN_NOISE_UNITS);
            let expected = tessera_privacy::release_tv(units, *dim).unwrap();
            assert_eq!(entry.event.tv_slack(), expected);
            assert!(!entry.not_private);
        }
    }
}

/// A run of `settings` that stops after `releases` training rounds (the
/// budget ends it), while `federation.rounds` keeps the planned count.
fn planned_with_stop(mut settings: Settings, releases: u32) -> Settings {
    let eps = tessera_privacy::epsilon(
        &[PrivacyEvent::gaussian(
            settings.noise_multiplier,
            1.0,
            releases,
        )],
        settings.config.privacy.delta,
        AccountantKind::Rdp,
    )
    .unwrap()
    .epsilon;
    settings.max_epsilon = Some(eps * 1.001);
    settings
}

/// Very little noise cannot be carried at 32 bits above the minimum
/// resolution: the round goes to 64 bits rather than below it.
#[test]
fn noise_below_the_minimum_resolution_moves_to_64_bits() {
    let r = run(settings(3, 2, "noise_multiplier = 0.00001"), 3, 4);
    assert!(!r.announced.is_empty(), "{r:?}");
    let (terms, enc, _) = &r.announced[0];
    assert_eq!(enc.modulus_bits, 64);
    let units = terms.noise_multiplier * terms.clip_norm * f64::from(enc.scale_bits).exp2();
    assert!(units >= tessera_privacy::MIN_NOISE_UNITS, "{units}");
}

/// Seeded noise needs the acknowledgement, and then says so everywhere.
#[test]
fn seeded_noise_is_announced_and_recorded_as_not_private() {
    let text_ok = "noise_multiplier = 1.0\ninsecure_noise_seed = 7\nacknowledge_not_private = true";
    let s = planned_with_stop(settings(3, 3, text_ok), 2);
    assert!(s.not_private);
    let r = run(s, 3, 3);
    assert!(!r.ledger.is_empty());
    assert!(r.announced.iter().all(|(t, _, _)| t.not_private));
    assert!(r.ledger.iter().all(|e| e.not_private));
    // Without the acknowledgement the configuration is refused, naming the key.
    let text = r#"
[federation]
name = "x"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 3
output_dir = "/nonexistent"
[tls]
ca = "a"
cert = "b"
key = "c"
[task]
features = ["a"]
label = "y"
positive = "> 0"
[privacy]
enabled = true
noise_multiplier = 1.0
insecure_noise_seed = 7
[statistics.ranges]
a = [0.0, 1.0]
"#;
    let config: CoordinatorConfig = toml::from_str(text).unwrap();
    let err = Settings::plan(config).unwrap_err().to_string();
    assert!(
        err.contains("privacy.insecure_noise_seed") && err.contains("acknowledge_not_private"),
        "{err}"
    );
    // Real noise: private.
    let r = run(
        planned_with_stop(settings(3, 3, "noise_multiplier = 1.0"), 1),
        3,
        3,
    );
    assert!(r.announced.iter().all(|(t, _, _)| !t.not_private));
}
