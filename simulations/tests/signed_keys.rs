//! A federation with `[secagg] signed_keys = true`, across processes: a
//! real coordinator and three real participants (the `tessera-sim
//! coordinator|participant` entry points) on loopback mutual TLS with a
//! fresh development PKI. Every participant checks the certificates the
//! coordinator forwards, signs its advertised keys with its certificate key
//! and verifies its neighbours' signatures; the federation completes all
//! its rounds and releases a model that classifies the held-out split.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use tessera_coordinator::store::{RoundStatus, Store};
use tessera_model::{LabelRule, ModelKind, TaskSpec};
use tessera_simulations::launch::{self, Binaries, FederationPlan, SitePlan, TrainingPlan};
use tessera_simulations::partition;

const PATIENCE: Duration = Duration::from_secs(240);
const ROUNDS: u32 = 3;

fn binaries() -> Binaries {
    let sim = env!("CARGO_BIN_EXE_tessera-sim").to_string();
    Binaries {
        coordinator: vec![sim.clone(), "coordinator".into()],
        participant: vec![sim, "participant".into()],
    }
}

/// Kills whatever is still running when the test ends (or fails).
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn wait(name: &str, child: &mut Child, logs: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{name} did not exit within {PATIENCE:?}; its log:\n{}",
            log(logs, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process's log, terminal colour sequences removed.
fn log(logs: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn federation_with_signed_keys_completes() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-signed-keys-")
        .tempdir()
        .unwrap();
    let data = tessera_simulations::bundled_data().join("breast_cancer_wisconsin.csv");
    let header = tessera_model::data::read_header(&data).unwrap();
    let task = TaskSpec {
        model: ModelKind::Logistic,
        features: header.into_iter().filter(|h| h != "diagnosis").collect(),
        label: "diagnosis".into(),
        positive: LabelRule::Equals("M".into()),
    };
    let split = partition::iid(&data, "diagnosis", 3, 0.2, 11)
        .unwrap()
        .write(&dir.path().join("data"))
        .unwrap();
    let plan = FederationPlan {
        dir: dir.path().to_path_buf(),
        sites: SitePlan::from_split(&split),
        task: task.clone(),
        rounds: ROUNDS,
        min_participants: 3,
        training: TrainingPlan {
            local_epochs: 2,
            learning_rate: 0.1,
            batch_size: 16,
            clip_norm: 10.0,
            server_learning_rate: 1.0,
            seed: 1,
            average_last: 1,
        },
        secagg: true,
        signed_keys: true,
        privacy: None,
        training_seconds: 60.0,
        stage_seconds: 30.0,
        listen: None,
    };
    let mut layout = launch::prepare(&plan).unwrap();
    let config = std::fs::read_to_string(&layout.coordinator_config).unwrap();
    assert!(
        config.contains("[secagg]\nenabled = true\nsigned_keys = true\n"),
        "{config}"
    );

    let bins = binaries();
    let (coordinator, address) =
        launch::start_coordinator(&bins, &layout, "coordinator.log").unwrap();
    let mut procs = Processes(vec![("coordinator".into(), coordinator)]);
    for site in &plan.sites {
        launch::write_participant_config(&plan, &mut layout, site, &address).unwrap();
        let child =
            launch::start_participant(&bins, &layout, &site.name, &format!("{}.log", site.name))
                .unwrap();
        procs.0.push((site.name.clone(), child));
    }
    let logs = layout.logs.clone();
    for (name, child) in &mut procs.0 {
        let status = wait(name, child, &logs);
        assert!(
            status.success(),
            "{name} exited with {status}; its log:\n{}",
            log(&logs, name)
        );
    }

    // Every aggregation (the pooled statistics and each training round) was
    // released with all three sites, and each site took part in every one
    // with signed keys.
    let store = Store::open_read_only(&layout.store()).unwrap();
    let rounds = store.rounds().unwrap();
    assert!(rounds.len() as u32 > ROUNDS, "{rounds:?}");
    for r in &rounds {
        assert_eq!(r.status, RoundStatus::Released, "{r:?}");
        assert_eq!(r.contributors.len(), 3, "{r:?}");
    }
    let training = rounds.iter().filter(|r| r.training_round.is_some()).count();
    assert_eq!(training as u32, ROUNDS);
    for site in &plan.sites {
        let text = log(&logs, &site.name);
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

    let model: PathBuf = layout.coordinator_out.join("model.safetensors");
    let model = tessera_model::read_model(&model).unwrap();
    let test = tessera_model::load_csv(&split.test_path, &task).unwrap();
    let eval = tessera_model::evaluate(&model, &test).unwrap();
    assert!(eval.accuracy > 0.85, "test accuracy {}", eval.accuracy);
}
