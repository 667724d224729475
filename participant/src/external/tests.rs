//! The external-trainer protocol with shell commands standing in for a
//! script: the files and variables a command gets, and each way a command can
//! fail (exit code, timeout with its process group killed, a wrong, missing,
//! extra or non-finite tensor).

use std::collections::HashMap;

use ndarray::array;
use tessera_model::{LabelRule, ModelKind, Preprocessor, TaskSpec, TrainingSettings};

use super::*;

fn task() -> TaskSpec {
    TaskSpec::binary(
        ModelKind::Logistic,
        vec!["a".into(), "b".into()],
        "y",
        LabelRule::GreaterThan(0.0),
    )
}

fn pre() -> Preprocessor {
    Preprocessor {
        mean: vec![1.0, 0.0],
        std: vec![2.0, 1.0],
        indicator: vec![false, true],
        target: None,
    }
}

fn data() -> Dataset {
    Dataset::new(
        vec!["a".into(), "b".into()],
        array![[1.0, f64::NAN], [3.0, 2.0], [5.0, -1.0]],
        array![1.0, 0.0, 1.0],
    )
    .unwrap()
}

const GLOBAL: [f32; 4] = [0.5, -0.25, 1.0, 0.125];

fn settings() -> TrainingSettings {
    TrainingSettings {
        local_epochs: 2,
        learning_rate: 0.5,
        batch_size: 16,
        shuffle_seed: 42,
        weight_decay: 0.01,
    }
}

fn trainer(dir: &Path, script: &str, timeout: Duration) -> ExternalTrainer {
    ExternalTrainer::new(
        vec!["sh".into(), "-c".into(), script.into()],
        timeout,
        dir.join("work"),
    )
}

fn train(t: &mut ExternalTrainer) -> Result<Vec<f32>, TrainError> {
    let (task, pre, data, s) = (task(), pre(), data(), settings());
    t.train(&TrainJob {
        task: &task,
        pre: &pre,
        data: &data,
        global: &GLOBAL,
        settings: &s,
        round: 3,
    })
}

/// A safetensors file of `tensors`.
fn file(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let layout: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, s, _)| TensorSpec::new(n, s))
        .collect();
    let values: Vec<f32> = tensors.iter().flat_map(|t| t.2.clone()).collect();
    let bytes =
        tessera_model::tensors::to_safetensors(&layout, &values, vec![], HashMap::new()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn the_command_gets_its_files_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    // Keeps what it was given, and returns the global model unchanged.
    let script = format!(
        "set -e; mkdir -p {seen}; env | grep '^TESSERA_' | sort > {seen}/env; \
         cp \"$TESSERA_DATA\" \"$TESSERA_TASK\" \"$TESSERA_PREPROCESSING\" {seen}/; \
         cp \"$TESSERA_MODEL_IN\" \"$TESSERA_MODEL_OUT\"; \
         echo '{{\"loss\": 0.5}}' > \"$TESSERA_METRICS_OUT\"",
        seen = seen.display()
    );
    let mut t = trainer(dir.path(), &script, Duration::from_secs(30));
    assert_eq!(train(&mut t).unwrap(), GLOBAL);
    let env = std::fs::read_to_string(seen.join("env")).unwrap();
    for line in [
        "TESSERA_PROTOCOL=1",
        "TESSERA_MODE=train",
        "TESSERA_ROUND=3",
        "TESSERA_SEED=42",
        "TESSERA_EPOCHS=2",
        "TESSERA_LEARNING_RATE=0.5",
        "TESSERA_BATCH_SIZE=16",
        "TESSERA_WEIGHT_DECAY=0.01",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    // The rows preprocessed: standardised, imputed, the indicator, the label.
    let csv = std::fs::read_to_string(seen.join("data.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "a,b,b_missing,y");
    assert_eq!(lines[1], "0.0,0.0,1.0,1.0");
    assert_eq!(lines[2], "1.0,2.0,0.0,0.0");
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seen.join("task.json")).unwrap()).unwrap();
    assert_eq!(task["protocol"], 1);
    assert_eq!(task["kind"], "binary");
    assert_eq!(task["outputs"], 1);
    assert_eq!(task["inputs"], serde_json::json!(["a", "b", "b_missing"]));
    assert_eq!(
        task["tensors"],
        serde_json::json!([{"name": "weight", "shape": [1, 3]}, {"name": "bias", "shape": [1]}])
    );
    // The job's files are gone afterwards.
    assert_eq!(
        std::fs::read_dir(dir.path().join("work")).unwrap().count(),
        0
    );
}

#[test]
fn a_failing_command_is_an_error_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(
        dir.path(),
        "echo 'Traceback: shape mismatch' >&2; exit 3",
        Duration::from_secs(30),
    );
    let e = train(&mut t).unwrap_err().to_string();
    assert!(
        e.contains("exit status: 3") && e.contains("shape mismatch"),
        "{e}"
    );
    let mut t = ExternalTrainer::new(
        vec!["/nonexistent/trainer".into()],
        Duration::from_secs(5),
        dir.path().join("w"),
    );
    assert!(
        train(&mut t)
            .unwrap_err()
            .to_string()
            .contains("cannot start")
    );
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild");
    // A child that starts a grandchild and both sleep far past the timeout.
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let mut t = trainer(dir.path(), &script, Duration::from_millis(500));
    let started = Instant::now();
    let e = train(&mut t).unwrap_err().to_string();
    assert!(e.contains("timeout"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone too (or, orphaned, at most a zombie).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        if stat.is_empty() || state == Some('Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} still runs: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wrong_missing_extra_or_non_finite_tensors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good_bias = ("bias", vec![1], vec![0.0]);
    for (name, tensors, expect) in [
        (
            "shape",
            vec![("weight", vec![3], vec![1.0; 3]), good_bias.clone()],
            "shape",
        ),
        ("missing", vec![good_bias.clone()], "missing"),
        (
            "extra",
            vec![
                ("weight", vec![1, 3], vec![1.0; 3]),
                good_bias.clone(),
                ("momentum", vec![1], vec![0.0]),
            ],
            "not part of the model",
        ),
        (
            "nan",
            vec![
                ("weight", vec![1, 3], vec![1.0, f32::NAN, 0.0]),
                good_bias.clone(),
            ],
            "non-finite",
        ),
    ] {
        let out = file(dir.path(), &format!("{name}.safetensors"), &tensors);
        let script = format!("cp {} \"$TESSERA_MODEL_OUT\"", out.display());
        let mut t = trainer(dir.path(), &script, Duration::from_secs(30));
        let e = train(&mut t).unwrap_err().to_string();
        assert!(e.contains(expect), "{name}: {e}");
    }
    // No output file at all.
    let mut t = trainer(dir.path(), "true", Duration::from_secs(30));
    assert!(
        train(&mut t)
            .unwrap_err()
            .to_string()
            .contains("no TESSERA_MODEL_OUT")
    );
    // Not safetensors.
    let mut t = trainer(
        dir.path(),
        "echo nope > \"$TESSERA_MODEL_OUT\"",
        Duration::from_secs(30),
    );
    assert!(
        train(&mut t)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors")
    );
}

#[test]
fn predictions_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        dir.path(),
        "p.safetensors",
        &[("predictions", vec![3, 1], vec![0.9, 0.2, 0.6])],
    );
    let script = format!(
        "test \"$TESSERA_MODE\" = predict && cp {} \"$TESSERA_PREDICTIONS_OUT\"",
        good.display()
    );
    let mut t = trainer(dir.path(), &script, Duration::from_secs(30));
    let p = t.predict(&task(), &pre(), &data(), &GLOBAL).unwrap();
    assert_eq!(p, array![[0.9f32 as f64], [0.2f32 as f64], [0.6f32 as f64]]);
    let short = file(
        dir.path(),
        "q.safetensors",
        &[("predictions", vec![2, 1], vec![0.9, 0.2])],
    );
    let script = format!("cp {} \"$TESSERA_PREDICTIONS_OUT\"", short.display());
    let mut t = trainer(dir.path(), &script, Duration::from_secs(30));
    assert!(t.predict(&task(), &pre(), &data(), &GLOBAL).is_err());
}
