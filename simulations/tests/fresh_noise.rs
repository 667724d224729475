//! Noise is fresh unless seeded, and seeding is announced, through
//! `tessera-sim run` (a coordinator and participant processes over loopback
//! mutual TLS, secure aggregation, the bundled breast-cancer data):
//!
//! a run without privacy and a run with σ > 0 give different models; two
//! runs with σ > 0 and no noise seed draw different noise (the pooled
//! feature means of the statistics release differ far more than between
//! two runs without noise, and so do the models); two runs with the same
//! `--noise-seed` draw the same noise (models and pooled means equal up to
//! the participants' stochastic rounding, far below the noise), and such a
//! run says it is NOT private (`summary.json`: `private: false`,
//! `noise_seeded: true`; the printed warning and the coordinator's log).

use std::path::PathBuf;

use serde_json::Value;
use tessera_model::ModelFile;
use tessera_testkit::command;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::files::{fresh_dir, read_log};

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

/// A fresh working directory for one test under the target directory,
/// kept after the run (logs, stores) so that a failure can be examined.
fn work_dir_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("privacy")
        .join(name)
}

/// One `tessera-sim run` on three sites; returns stdout, the summary and
/// the final model.
fn sim_run(name: &str, extra: &[&str]) -> (String, Value, ModelFile) {
    let dir = fresh_dir(work_dir_path(name));
    let data = breast_cancer_path();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--label",
        "diagnosis",
        "--participants",
        "3",
        "--rounds",
        "3",
        "--seed",
        "1",
        // The same training settings with and without privacy.
        "--clip-norm",
        "0.25",
        "--learning-rate",
        "3",
        "--local-epochs",
        "1",
        "--average-last",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = command::run_ok(&[SIM], &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let model = tessera_model::read_model(&dir.join("coordinator").join("model.safetensors"))
        .expect("final model");
    (stdout, summary, model)
}

/// Largest difference between two models' parameters (infinite when their
/// shapes differ: the noisy statistics decide the indicator columns).
fn param_distance(a: &ModelFile, b: &ModelFile) -> f64 {
    if a.params.len() != b.params.len() {
        return f64::INFINITY;
    }
    a.params
        .iter()
        .zip(&b.params)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

/// Largest relative difference between the pooled feature means the two
/// models were trained with (the statistics release, always the same shape).
fn mean_distance(a: &ModelFile, b: &ModelFile) -> f64 {
    a.preprocessor
        .mean
        .iter()
        .zip(&b.preprocessor.mean)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn noise_is_fresh_unless_seeded_and_seeding_is_announced() {
    let (plain_out, plain, plain_model) = sim_run("noise_off", &[]);
    assert_eq!(plain["private"], false);
    assert_eq!(plain["noise_seeded"], false);
    assert!(plain["epsilon"].is_null());
    assert!(
        plain_out.contains("NOT differentially private"),
        "{plain_out}"
    );
    // Without noise, two runs differ only by the participants' stochastic
    // rounding of their inputs (their own randomness, not the noise).
    let (_, _, plain_model_2) = sim_run("noise_off_again", &[]);

    let noisy = ["--noise-multiplier", "1"];
    let (out_a, a, model_a) = sim_run("noise_a", &noisy);
    let (_, b, model_b) = sim_run("noise_b", &noisy);
    for s in [&a, &b] {
        assert_eq!(s["private"], true);
        assert_eq!(s["noise_seeded"], false);
        assert_eq!(s["noise_multiplier"], 1.0);
    }
    assert!(out_a.contains("Privacy spent: ε ="), "{out_a}");
    assert!(!out_a.contains("NOT private"), "{out_a}");

    let seeded = ["--noise-multiplier", "1", "--noise-seed", "7"];
    let (out_s, s, model_s) = sim_run("noise_seeded_a", &seeded);
    let (_, t, model_t) = sim_run("noise_seeded_b", &seeded);
    for x in [&s, &t] {
        assert_eq!(x["private"], false);
        assert_eq!(x["noise_seeded"], true);
    }
    assert!(
        out_s.contains("WARNING: the noise is seeded (--noise-seed): this run is NOT private"),
        "{out_s}"
    );
    assert!(
        out_s.contains("the noise was seeded: NOT private"),
        "{out_s}"
    );
    let coordinator_log = read_log(work_dir_path("noise_seeded_a").join("logs/coordinator.log"));
    assert!(
        coordinator_log.contains("THE NOISE IS SEEDED: this run is NOT private"),
        "{coordinator_log}"
    );

    let rounding = param_distance(&plain_model, &plain_model_2);
    let off_vs_on = param_distance(&plain_model, &model_a);
    let fresh = param_distance(&model_a, &model_b);
    let fresh_means = mean_distance(&model_a, &model_b);
    let same_seed = param_distance(&model_s, &model_t);
    let same_seed_means = mean_distance(&model_s, &model_t);
    println!(
        "largest differences: two runs without noise: parameters {rounding:e}; \
         noise off vs σ = 1: parameters {off_vs_on:e}; \
         two unseeded runs with σ = 1: parameters {fresh:e}, pooled means {fresh_means:e}; \
         two runs with the same noise seed: parameters {same_seed:e}, pooled means {same_seed_means:e}"
    );
    let rounding_means = mean_distance(&plain_model, &plain_model_2);
    assert!(
        rounding_means * 100.0 < fresh_means,
        "runs without noise differ as much as noisy ones: {rounding_means:e} vs {fresh_means:e}"
    );
    assert!(off_vs_on > 1e-3, "noise off and σ = 1 give the same model");
    // Each round adds noise of std σ·C/n ≈ 0.08 to every coordinate, and
    // the statistics release its own noise to every pooled sum.
    assert!(
        fresh > 1e-3,
        "two unseeded runs drew the same training noise"
    );
    assert!(
        fresh_means > 1e-6,
        "two unseeded runs drew the same statistics noise"
    );
    assert!(
        same_seed.is_finite() && same_seed <= 1e-4 && same_seed * 100.0 < fresh,
        "the same noise seed did not reproduce the training noise: {same_seed:e} vs {fresh:e}"
    );
    assert!(
        same_seed_means <= 1e-9 && same_seed_means * 100.0 < fresh_means,
        "the same noise seed did not reproduce the statistics noise: {same_seed_means:e} vs {fresh_means:e}"
    );
}
