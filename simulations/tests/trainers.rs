//! External trainers in real federations (processes, loopback mutual TLS,
//! secure aggregation): the example trainers under `examples/trainers/`
//! train and evaluate end to end, and a site whose trainer fails in any of
//! the ways the protocol names sits the round out without crashing, without
//! counting it in its own ledger, while the federation completes with the
//! others.
//!
//! - `the_numpy_trainer_trains_and_evaluates_in_a_federation`: `tessera-sim
//!   run --trainer "python examples/trainers/numpy/train.py"` on the
//!   breast-cancer data (three IID sites) reaches the built-in model's
//!   accuracy, its federated evaluation (the trainer's `predict` mode)
//!   equals the pooled test figures, and every site logged the trainer's
//!   local metrics. Needs a Python with numpy and safetensors: `TESSERA_PYTHON`
//!   names it (`.ci/run` installs one), else `python3` is tried; without one
//!   the test says so and passes, unless `TESSERA_REQUIRE_PYTHON_TRAINER=1`.
//! - `the_pytorch_trainer_trains_in_a_federation`: the same with
//!   `examples/trainers/pytorch/train.py`, whenever `torch` imports.
//! - `failing_trainers_sit_out_and_the_federation_completes`: eight sites
//!   with DP; three train with the built-in model, five with a trainer that
//!   exits non-zero, runs past its timeout (its process group is killed),
//!   writes a wrong shape, leaves a tensor out or writes NaN
//!   (`tests/trainers/faulty.py`, standard library only). Every round is
//!   released; each failing site logs the precise reason every round, stays
//!   connected to the end, exits successfully and counts no training round
//!   in its own ledger (its contribution was the zero vector, independent
//!   of its data); the good sites count every round.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tessera_coordinator::store::RoundStatus;
use tessera_testkit::command::{COMMAND_PATIENCE, sim_summary};
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::federation::{Federation, Setup, sim_entry_points};
use tessera_testkit::files::fresh_dir;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

/// The repository's root (examples live there).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn work_dir(name: &str) -> PathBuf {
    fresh_dir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("trainers")
            .join(name),
    )
}

/// Whether `python` imports every module of `modules`.
fn imports(python: &Path, modules: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python that imports `modules`: `TESSERA_PYTHON`, else `python3`.
fn python_with(modules: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("TESSERA_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("python3")]);
    candidates.into_iter().find(|p| imports(p, modules))
}

/// The Python for the NumPy example, or None when there is none and the
/// run does not require it.
fn numpy_python() -> Option<PathBuf> {
    let found = python_with("numpy, safetensors");
    if found.is_none() {
        assert!(
            std::env::var("TESSERA_REQUIRE_PYTHON_TRAINER").as_deref() != Ok("1"),
            "TESSERA_REQUIRE_PYTHON_TRAINER=1 but no Python imports numpy and safetensors \
             (set TESSERA_PYTHON)"
        );
        eprintln!("no Python with numpy and safetensors: the example trainer is not run");
    }
    found
}

/// Runs `tessera-sim run` on breast cancer with `trainer` (and evaluation
/// every 2 rounds); returns the summary and the run's directory.
fn run_with_trainer(name: &str, trainer: &str) -> (Value, PathBuf) {
    let out = work_dir(name);
    run_in(&out, trainer, &["--model", "logistic"])
}

/// [`run_with_trainer`] in `out` with `model` (the model's flags).
fn run_in(out: &Path, trainer: &str, model: &[&str]) -> (Value, PathBuf) {
    let data = breast_cancer_path();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--label",
        "diagnosis",
        "--participants",
        "3",
        "--partition",
        "iid",
        "--rounds",
        "6",
        "--seed",
        "4",
        "--evaluate-every",
        "2",
        "--trainer",
        trainer,
        "--trainer-timeout",
        "120",
    ];
    args.extend_from_slice(model);
    let summary = sim_summary(Path::new(SIM), &args, out, COMMAND_PATIENCE);
    (summary, out.to_path_buf())
}

/// The run's final accuracy, its federated evaluation of the last model
/// equal to the pooled test figures, and the sites' logs showing the
/// trainer's local metrics (logged, never sent).
fn check_trained_and_evaluated(summary: &Value, out: &Path) {
    let accuracy = summary["final_accuracy"].as_f64().expect("final accuracy");
    assert!(accuracy >= 0.9, "final accuracy {accuracy}: {summary}");
    let history = summary["history"].as_array().expect("history");
    let last = history.last().expect("a round");
    let federated = &last["federated"];
    let fed_accuracy = federated["accuracy"].as_f64().unwrap_or_else(|| {
        panic!("no federated evaluation of the last round: {last}");
    });
    // The sites' held-out rows are the pooled test rows: the same figure
    // (`rounds.csv` keeps six decimals).
    assert!(
        (fed_accuracy - last["accuracy"].as_f64().unwrap()).abs() < 1e-6,
        "{last}"
    );
    for site in ["site-1", "site-2", "site-3"] {
        let log = tessera_testkit::files::read_log(out.join("logs").join(format!("{site}.log")));
        assert!(
            log.contains("trainer metrics (local only, never sent)"),
            "{site} did not run the trainer:\n{log}"
        );
        assert!(!log.contains("zero vector"), "{site}:\n{log}");
    }
}

#[test]
fn the_numpy_trainer_trains_and_evaluates_in_a_federation() {
    let Some(python) = numpy_python() else {
        return;
    };
    let script = repo().join("examples/trainers/numpy/train.py");
    let trainer = format!("{} {}", python.display(), script.display());
    let (summary, out) = run_with_trainer("numpy", &trainer);
    check_trained_and_evaluated(&summary, &out);
}

#[test]
fn the_pytorch_trainer_trains_in_a_federation() {
    let Some(python) = python_with("torch, safetensors") else {
        eprintln!("torch does not import here: the PyTorch example is not run");
        return;
    };
    let script = repo().join("examples/trainers/pytorch/train.py");
    // The federation's model is the script's own module: its initial
    // state_dict, made by the script, is the layout (30 inputs, 1 output).
    let out = work_dir("pytorch");
    let init = out.join("init.safetensors");
    let made = Command::new(&python)
        .arg(&script)
        .args([
            "--init",
            init.to_str().unwrap(),
            "--inputs",
            "30",
            "--classes",
            "1",
        ])
        .output()
        .expect("running the script");
    assert!(made.status.success(), "{made:?}");
    let trainer = format!("{} {}", python.display(), script.display());
    let (summary, out) = run_in(
        &out,
        &trainer,
        &[
            "--model",
            "external",
            "--initial-model",
            init.to_str().unwrap(),
        ],
    );
    check_trained_and_evaluated(&summary, &out);
}

/// The failing modes of `faulty.py` and what the site's log says of each.
const FAILURES: [(&str, &str); 5] = [
    ("exit", "the trainer exited with"),
    ("hang", "ran past its timeout"),
    ("shape", "has shape"),
    ("missing", "is missing"),
    ("nan", "non-finite"),
];

#[test]
fn failing_trainers_sit_out_and_the_federation_completes() {
    let Some(python) = python_with("json, struct") else {
        assert!(
            std::env::var("TESSERA_REQUIRE_PYTHON_TRAINER").as_deref() != Ok("1"),
            "TESSERA_REQUIRE_PYTHON_TRAINER=1 but there is no python3"
        );
        eprintln!("no python3: the failing trainers are not run");
        return;
    };
    const ROUNDS: u32 = 3;
    const GOOD: usize = 3;
    let sites = GOOD + FAILURES.len();
    let mut setup = Setup::private(sites, ROUNDS, 2.0, work_dir("failing"));
    setup.min_participants = GOOD;
    let mut fed = Federation::prepare(&setup, sim_entry_points(SIM));
    // A short timeout for the hanging trainer, well inside the training
    // deadline: the others are not held past it.
    fed.plan.learning.trainer_timeout_seconds = 3.0;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trainers/faulty.py");
    let names = fed.site_names();
    for (site, (mode, _)) in fed.plan.sites.iter_mut().skip(GOOD).zip(FAILURES) {
        site.trainer = Some(vec![
            python.to_string_lossy().into_owned(),
            script.to_string_lossy().into_owned(),
            mode.to_owned(),
        ]);
    }
    fed.start_coordinator();
    fed.start_participants();
    let status = fed.wait_coordinator_within(Duration::from_secs(300));
    assert!(
        status.success(),
        "coordinator: {status}\n{}",
        fed.coordinator_log()
    );
    for (name, status) in fed.wait_participants(Duration::from_secs(60)) {
        assert!(
            status.success(),
            "{name} exited with {status}:\n{}",
            fed.log(&name)
        );
    }

    // Every round released with every site in the sum (the failing ones
    // contributed the zero vector: nobody dropped out).
    let store = fed.store();
    let released: Vec<_> = store
        .rounds()
        .unwrap()
        .into_iter()
        .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
        .collect();
    assert_eq!(released.len() as u32, ROUNDS, "{}", fed.coordinator_log());
    for r in &released {
        assert_eq!(
            r.contributors.len(),
            sites,
            "round {}: {:?}",
            r.round,
            r.dropped
        );
    }

    for (name, (mode, reason)) in names.iter().skip(GOOD).zip(FAILURES) {
        let log = fed.log(name);
        let failures: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("contributing a zero vector instead"))
            .collect();
        assert_eq!(failures.len() as u32, ROUNDS, "{name} ({mode}):\n{log}");
        assert!(
            failures.iter().all(|l| l.contains(reason)),
            "{name} ({mode}) does not say {reason:?}:\n{log}"
        );
        let ledger = fed.participant_ledger_json(name);
        let training = ledger["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "training")
            .count();
        assert_eq!(training, 0, "{name} ({mode}) counted a round: {ledger}");
    }
    for name in names.iter().take(GOOD) {
        let ledger = fed.participant_ledger_json(name);
        let training = ledger["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "training")
            .count();
        assert_eq!(training as u32, ROUNDS, "{name}: {ledger}");
    }
    // The hanging trainer's process group is gone, its child included.
    let left = Command::new("pgrep")
        .args(["-f", "faulty.py hang|tessera-faulty-hang"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the hanging trainer's processes survive: {left}"
    );
}
