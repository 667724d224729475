//! The one-hidden-layer MLP on the vendored data: central accuracy, model files, and the
//! federation's initial model.

use tessera_model::model::{ModelError, num_params};
use tessera_model::{
    ModelFile, ModelKind, Objective, TrainConfig, build_model, evaluate, initial_params,
    read_model, write_model,
};
use tessera_testkit::data::{breast_cancer, breast_cancer_task, holdout, pooled_preprocessor};

const MLP64: ModelKind = ModelKind::mlp1(64);
const BIN: Objective = Objective::Binary;

/// Trains an `mlp:64` centrally on 80% of the breast-cancer data, from the federation's
/// initial model for `seed`; returns the model file and its test accuracy.
fn central_breast_mlp(seed: u64) -> (ModelFile, f64, tessera_model::Dataset) {
    let (train, test) = holdout(&breast_cancer(), 1);
    let pre = pooled_preprocessor(std::slice::from_ref(&train));
    let x = pre.transform(&train.x);
    let mut m = build_model(MLP64, BIN, x.ncols()).unwrap();
    m.set_params(&initial_params(MLP64, BIN, x.ncols(), seed))
        .unwrap();
    let report = m.train(
        &x,
        &train.y,
        &TrainConfig {
            epochs: 20,
            learning_rate: 0.05,
            batch_size: 16,
            seed: 1,
            weight_decay: 0.0,
        },
    );
    assert!(
        report.last_epoch_loss < 0.1,
        "training loss {}",
        report.last_epoch_loss
    );
    let acc = m.accuracy(&pre.transform(&test.x), &test.y);
    let file = ModelFile {
        task: tessera_model::TaskSpec {
            model: MLP64,
            ..breast_cancer_task()
        },
        params: m.params().to_vec(),
        preprocessor: pre,
        round: 1,
    };
    (file, acc, test)
}

#[test]
fn central_mlp_on_breast_cancer() {
    let (_, acc, _) = central_breast_mlp(1);
    assert!(acc >= 0.95, "breast cancer test accuracy {acc}");
}

#[test]
fn mlp_model_file_round_trip() {
    let (m, acc, test) = central_breast_mlp(2);
    assert_eq!(m.params.len(), 64 * (30 + 2) + 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_model(&path, &m).unwrap();
    let back = read_model(&path).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.task.model, MLP64);
    // The task travels as text: `"model":"mlp:64"`.
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert!(meta.metadata().as_ref().unwrap()["task"].contains(r#""model":"mlp:64""#));
    let ev = evaluate(&back, &test).unwrap();
    assert!((ev.accuracy - acc).abs() < 1e-12);

    // A parameter vector of another width is refused.
    let mut wrong = m.clone();
    wrong.task.model = ModelKind::mlp1(63);
    assert!(matches!(
        wrong.to_bytes(),
        Err(ModelError::ParamLength { expected, got }) if expected == 63 * 32 + 1 && got == 64 * 32 + 1
    ));
}

#[test]
fn initial_models() {
    assert_eq!(initial_params(ModelKind::Logistic, BIN, 4, 9), vec![0.0; 5]);
    let a = initial_params(MLP64, BIN, 30, 1);
    assert_eq!(a.len(), num_params(MLP64, BIN, 30));
    assert_eq!(a, initial_params(MLP64, BIN, 30, 1));
    assert_ne!(a, initial_params(MLP64, BIN, 30, 2));
    assert!(a.iter().all(|v| v.is_finite()));
    assert!(a.iter().filter(|v| **v != 0.0).count() >= 64 * 31);
    // build_model starts from the documented initialisation for seed 0.
    assert_eq!(
        build_model(MLP64, BIN, 30).unwrap().params(),
        initial_params(MLP64, BIN, 30, 0)
    );
    assert_eq!(num_params(ModelKind::mlp1(312_500), BIN, 30), 10_000_001);
}
