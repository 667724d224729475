//! Adaptive clipping (Andrew et al. 2021) end to end: `tessera-sim run
//! --adaptive-clipping --target-epsilon 4` on the breast-cancer data, ten
//! IID sites, thirty rounds, real processes with secure aggregation.
//!
//! It checks that the federation completes within its budget, that the
//! ledger accounts every training round at the effective noise multiplier
//! (the same for every round) while the clip norm it records changes from
//! round to round, and that the model is still useful.

#![cfg(unix)]

use std::path::Path;
use std::time::Duration;

use tessera_privacy::PrivacyEvent;
use tessera_testkit::command::sim_summary;
use tessera_testkit::data::breast_cancer_path;

const PATIENCE: Duration = Duration::from_secs(600);

#[test]
fn adaptive_clipping_breast_cancer_iid_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = breast_cancer_path();
    let summary = sim_summary(
        Path::new(env!("CARGO_BIN_EXE_tessera-sim")),
        &[
            "run",
            "--data",
            data.to_str().unwrap(),
            "--label",
            "diagnosis",
            "--participants",
            "10",
            "--partition",
            "iid",
            "--rounds",
            "30",
            "--model",
            "logistic",
            "--target-epsilon",
            "4",
            "--delta",
            "1e-5",
            "--seed",
            "1",
            "--adaptive-clipping",
        ],
        &out,
        PATIENCE,
    );
    let epsilon = summary["epsilon"].as_f64().expect("epsilon");
    let accuracy = summary["final_accuracy"].as_f64().expect("final_accuracy");
    println!("adaptive clipping: accuracy {accuracy:.4}, ε = {epsilon:.4}");
    assert!(epsilon <= 4.0, "{summary:#}");
    assert_eq!(summary["rounds"], 30, "{summary:#}");
    assert!(accuracy >= 0.85, "final accuracy {accuracy}: {summary:#}");

    let store = tessera_coordinator::store::Store::open_read_only(
        &out.join("coordinator/coordinator.sqlite"),
    )
    .expect("opening the store");
    let rows: Vec<_> = store
        .ledger()
        .expect("reading the ledger")
        .into_iter()
        .filter(|r| r.training_round.is_some())
        .collect();
    assert_eq!(rows.len(), 30);
    let sigma = summary["noise_multiplier"]
        .as_f64()
        .expect("noise_multiplier");
    let clips: Vec<f64> = rows.iter().map(|r| r.clip_norm).collect();
    println!("clip norms by round: {clips:?}");
    for r in &rows {
        // One effective σ for every round, as calibrated for the target.
        assert_eq!(r.noise_multiplier, sigma);
        // Full participation, one release, and the (tiny) slack of the
        // discretised noise.
        let PrivacyEvent::Gaussian {
            noise_multiplier,
            sampling_rate,
            count,
            tv_slack,
        } = r.event
        else {
            panic!("{:?}", r.event)
        };
        assert_eq!((noise_multiplier, sampling_rate, count), (sigma, 1.0, 1));
        assert!(tv_slack > 0.0 && tv_slack < 1e-12, "{tv_slack:e}");
        assert!(r.clip_norm.is_finite() && r.clip_norm > 0.0);
    }
    // The clip norm adapts: the rounds do not all use the same C.
    let distinct = clips
        .windows(2)
        .filter(|w| (w[0] - w[1]).abs() > 1e-12)
        .count();
    assert!(distinct >= 20, "clip norms barely move: {clips:?}");
    assert_eq!(clips[0], summary["clip_norm"].as_f64().unwrap());
}
