//! A federation with `[secagg] signed_keys = true`, across processes: a
//! real coordinator and three real participants (the `tessera-sim
//! coordinator|participant` entry points) on loopback mutual TLS with a
//! fresh development PKI. Every participant checks the certificates the
//! coordinator forwards, signs its advertised keys with its certificate key
//! and verifies its neighbours' signatures; the federation completes all
//! its rounds and releases a model that classifies the held-out split.

#![cfg(unix)]

use std::path::PathBuf;
use std::time::Duration;

use tessera_coordinator::store::RoundStatus;
use tessera_simulations::launch::{FederationPlan, SitePlan};
use tessera_testkit::data::breast_cancer_task;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};

const PATIENCE: Duration = Duration::from_secs(240);
const ROUNDS: u32 = 3;

#[test]
fn federation_with_signed_keys_completes() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-signed-keys-")
        .tempdir()
        .unwrap();
    let task = breast_cancer_task();
    let split = breast_cancer_split(&dir.path().join("data"), 3, 11);
    let plan = FederationPlan {
        rounds: ROUNDS,
        signed_keys: true,
        ..plain_plan(dir.path(), &SitePlan::from_split(&split))
    };
    let mut fed = Federation::from_plan(plan, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    let config = std::fs::read_to_string(&fed.layout.coordinator_config).unwrap();
    let parsed: toml::Table = toml::from_str(&config).unwrap();
    assert_eq!(
        parsed["secagg"]["enabled"].as_bool(),
        Some(true),
        "{config}"
    );
    assert_eq!(
        parsed["secagg"]["signed_keys"].as_bool(),
        Some(true),
        "{config}"
    );

    fed.start_coordinator();
    fed.start_participants();
    let status = fed.wait_coordinator_within(PATIENCE);
    assert!(
        status.success(),
        "coordinator exited with {status}; its log:\n{}",
        fed.coordinator_log()
    );
    for name in fed.site_names() {
        let status = fed.wait_participant_within(&name, PATIENCE);
        assert!(
            status.success(),
            "{name} exited with {status}; its log:\n{}",
            fed.log(&name)
        );
    }

    // Every aggregation (the pooled statistics and each training round) was
    // released with all three sites, and each site took part in every one
    // with signed keys.
    let store = fed.store();
    let rounds = store.rounds().unwrap();
    assert!(rounds.len() as u32 > ROUNDS, "{rounds:?}");
    for r in &rounds {
        assert_eq!(r.status, RoundStatus::Released, "{r:?}");
        assert_eq!(r.contributors.len(), 3, "{r:?}");
    }
    let training = rounds.iter().filter(|r| r.training_round.is_some()).count();
    assert_eq!(training as u32, ROUNDS);
    for site in &fed.plan.sites {
        let text = fed.log(&site.name);
        assert!(
            text.contains(&format!("federation finished after {ROUNDS} rounds")),
            "{}:\n{text}",
            site.name
        );
        let checked = text.matches("cohort certificates checked").count();
        assert_eq!(checked, rounds.len(), "{}:\n{text}", site.name);
        assert!(
            !text.contains("refusing the round"),
            "{}:\n{text}",
            site.name
        );
        assert!(
            !text.contains("leaving the round"),
            "{}:\n{text}",
            site.name
        );
    }

    let model: PathBuf = fed.model_path();
    let model = tessera_model::read_model(&model).unwrap();
    let test = tessera_model::load_csv(&split.test_path, &task).unwrap();
    let eval = tessera_model::evaluate(&model, &test).unwrap();
    assert!(eval.accuracy > 0.85, "test accuracy {}", eval.accuracy);
}
