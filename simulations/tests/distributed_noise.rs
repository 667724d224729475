//! Acceptance tests of noise added by the sites (`--dp distributed`), in
//! real federations: one coordinator process and one process per site
//! (`tessera-sim run`, the processes engine), gRPC over loopback mutual TLS,
//! secure aggregation, the SQLite stores of both sides.
//!
//! - `the_unmasked_sum_carries_the_planned_noise`: with one seeded training
//!   round, a central and a distributed run share everything but the noise
//!   (same data, initial model, statistics release, training, clipping and
//!   stochastic rounding — the sites draw their noise after rounding). So
//!   n × (model_central − model_distributed) is, coordinate by coordinate,
//!   the coordinator's discrete Gaussian minus the sum of the sites' ones:
//!   two independent noises of std σ·C each, √2·σ·C together. A second
//!   distributed run with the same seed gives the same model (the control:
//!   nothing else differs). The released ε is that of the same noise
//!   accounted by RDP (the distributed discrete Gaussian's bound) instead
//!   of the exact Gaussian profile: a little above central's, by the
//!   RDP-to-(ε, δ) conversion, and the ε against the coordinator is the
//!   same figure (no site colludes).
//! - `a_dropout_below_plan_is_topped_up_and_accounted`: sites leave before
//!   their masked input in every training round; the rounds are still
//!   released (one site of five missing from each sum), each ledger row records the noise of the whole planned
//!   cohort (the coordinator's top-up) and the contributors as the summands
//!   unknown to the coordinator, and the ledger's ε is exactly that of the
//!   planned noise, while the ε against the coordinator counts only the
//!   survivors' noise and so is larger.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_coordinator::store::Store;
use tessera_model::{ModelFile, RoundKind};
use tessera_privacy::{AccountantKind, PrivacyEvent};
use tessera_testkit::command;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::files::fresh_dir;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");
const SITES: usize = 5;
const SIGMA: f64 = 1.0;
const CLIP: f64 = 0.25;

fn work_dir(name: &str) -> PathBuf {
    fresh_dir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("distributed_noise")
            .join(name),
    )
}

/// One `tessera-sim run` of five sites; its directory and summary.
fn sim_run(name: &str, extra: &[&str]) -> (PathBuf, Value) {
    let dir = work_dir(name);
    let data = breast_cancer_path();
    let sites = SITES.to_string();
    let sigma = SIGMA.to_string();
    let clip = CLIP.to_string();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--label",
        "diagnosis",
        "--participants",
        &sites,
        "--partition",
        "iid",
        "--seed",
        "1",
        "--noise-multiplier",
        &sigma,
        "--clip-norm",
        &clip,
        "--average-last",
        "1",
        "--engine",
        "processes",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    command::run_ok(&[SIM], &args);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (dir, summary)
}

fn model(dir: &Path) -> ModelFile {
    tessera_model::read_model(&dir.join("coordinator").join("model.safetensors"))
        .expect("final model")
}

fn ledger(dir: &Path) -> Vec<tessera_coordinator::store::LedgerRow> {
    Store::open_read_only(&dir.join("coordinator").join("coordinator.sqlite"))
        .unwrap()
        .ledger()
        .unwrap()
}

#[test]
fn the_unmasked_sum_carries_the_planned_noise() {
    // An MLP: hundreds of coordinates to measure the noise's size on.
    let one_round = ["--rounds", "1", "--model", "mlp:16", "--noise-seed", "7"];
    let with = |p: &'static str| [one_round.as_slice(), &["--dp", p]].concat();
    let (central_dir, central) = sim_run("central", &with("central"));
    let (dist_dir, dist) = sim_run("distributed", &with("distributed"));
    let (control_dir, _) = sim_run("distributed_again", &with("distributed"));
    let (c, d, again) = (model(&central_dir), model(&dist_dir), model(&control_dir));
    assert_eq!(
        c.preprocessor, d.preprocessor,
        "the same statistics release"
    );
    assert_eq!(d.params, again.params, "the same seed, the same release");
    assert_eq!(c.params.len(), d.params.len());
    let n = SITES as f64;
    let diffs: Vec<f64> = c
        .params
        .iter()
        .zip(&d.params)
        .map(|(x, y)| n * (f64::from(*x) - f64::from(*y)))
        .collect();
    let k = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / k;
    let std = (diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
    let planned = std::f64::consts::SQRT_2 * SIGMA * CLIP;
    // ≈ 500 coordinates: the sample std is within 3 standard errors
    // (√(1/2k) ≈ 3%) of the planned one.
    assert!(
        (std / planned - 1.0).abs() < 0.1,
        "noise of std {std} on the sum, planned {planned} ({k} coordinates)"
    );
    assert!(mean.abs() < 4.0 * planned / k.sqrt(), "mean {mean}");

    // The ledger: one distributed discrete Gaussian of the five sites.
    let rows = ledger(&dist_dir);
    let training: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Training)
        .collect();
    assert_eq!(training.len(), 1);
    match training[0].event {
        PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier,
            summands,
            honest_summands,
            ..
        } => {
            assert!(
                (noise_multiplier - SIGMA).abs() < 1e-9,
                "{noise_multiplier}"
            );
            assert_eq!((summands, honest_summands), (5, 5));
        }
        ref e => panic!("not a distributed event: {e:?}"),
    }
    let (eps_c, eps_d) = (
        central["epsilon"].as_f64().unwrap(),
        dist["epsilon"].as_f64().unwrap(),
    );
    // The same noise, by RDP rather than the exact Gaussian profile.
    let events: Vec<PrivacyEvent> = rows.iter().map(|r| r.event.clone()).collect();
    let rdp = tessera_privacy::epsilon(&events, 1e-5, AccountantKind::Rdp)
        .unwrap()
        .epsilon;
    assert!((eps_d - rdp).abs() < 1e-9 * rdp);
    assert!(eps_d > eps_c && eps_d < 1.15 * eps_c, "{eps_d} vs {eps_c}");
    assert!(central["epsilon_against_coordinator"].is_null());
    let against = dist["epsilon_against_coordinator"].as_f64().unwrap();
    // Only the training round counts against the coordinator (the
    // statistics it noises itself): below the whole ledger's ε.
    assert!(against > 0.0 && against < eps_d, "{against} vs {eps_d}");
    let report = std::fs::read_to_string(dist_dir.join("privacy_report.md")).unwrap();
    assert!(report.contains("distributed placement"), "{report}");
}

#[test]
fn a_dropout_below_plan_is_topped_up_and_accounted() {
    let rounds = 3u32;
    let (dir, summary) = sim_run(
        "dropout",
        &[
            "--rounds",
            &rounds.to_string(),
            "--dp",
            "distributed",
            "--dropout",
            "input=0.2",
        ],
    );
    assert_eq!(summary["rounds"], rounds, "{summary}");
    let rows = ledger(&dir);
    let training: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Training)
        .collect();
    assert_eq!(training.len(), rounds as usize);
    let mut survivors = Vec::new();
    for r in &training {
        let PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier,
            summands,
            honest_summands,
            ..
        } = r.event
        else {
            panic!("not a distributed event: {:?}", r.event);
        };
        // The release carries the whole planned cohort's noise.
        assert_eq!(summands as usize, SITES);
        assert!((noise_multiplier - SIGMA).abs() < 1e-9);
        survivors.push(honest_summands);
    }
    // One site of five leaves before its input in every round.
    assert_eq!(survivors, [4, 4, 4]);
    // The ledger's ε is that of the planned noise in every round, dropouts
    // or not: the statistics release and `rounds` full releases at σ.
    let planned: Vec<PrivacyEvent> = rows
        .iter()
        .map(|r| match &r.event {
            PrivacyEvent::DistributedDiscreteGaussian {
                summands,
                l2_units,
                dimension,
                ..
            } => PrivacyEvent::distributed(
                SIGMA * l2_units / f64::from(*summands).sqrt(),
                *summands,
                *l2_units,
                *dimension,
                1.0,
                *summands,
            ),
            other => other.clone(),
        })
        .collect();
    let eps_planned = tessera_privacy::epsilon(&planned, 1e-5, AccountantKind::Best)
        .unwrap()
        .epsilon;
    let eps = summary["epsilon"].as_f64().unwrap();
    assert!(
        (eps - eps_planned).abs() < 1e-9 * eps,
        "{eps} vs {eps_planned}"
    );
    // Against the coordinator only the survivors' noise counts: more ε.
    let all_survive = tessera_coordinator::privacy_report::coordinator_epsilon(
        &rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let PrivacyEvent::DistributedDiscreteGaussian {
                    summands,
                    honest_summands,
                    ..
                } = &mut r.event
                {
                    *honest_summands = *summands;
                }
                r
            })
            .collect::<Vec<_>>(),
        1e-5,
    )
    .unwrap();
    let against = summary["epsilon_against_coordinator"].as_f64().unwrap();
    assert!(against > all_survive, "{against} vs {all_survive}");
}
