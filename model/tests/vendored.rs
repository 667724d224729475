//! The vendored data sets load, and the built-in model reaches the known accuracies on them,
//! centrally and with federated averaging (deterministic for the fixed seeds used here).

use ndarray::{Axis, concatenate};
use tessera_model::{
    Dataset, LocalStats, ModelFile, ModelKind, Objective, TrainConfig, build_model, evaluate,
    read_model, write_model,
};
use tessera_testkit::data::*;
use tessera_testkit::fedavg::*;

#[test]
fn every_vendored_file_loads() {
    let expected = [
        ("cleveland", 303, 139),
        ("hungary", 294, 106),
        ("switzerland", 123, 115),
        ("va_long_beach", 200, 149),
    ];
    let task = heart_task();
    assert_eq!(task.features.len(), 13);
    for (site, (name, rows, positives)) in heart_sites().iter().zip(expected) {
        assert_eq!(site.n_rows(), rows, "{name}");
        assert_eq!(site.positives(), positives, "{name}");
        assert_eq!(site.skipped_rows, 0);
        assert!(site.x.iter().all(|v| v.is_nan() || v.is_finite()));
    }
    // Missingness differs by site, as documented: Hungary lacks most of ca, Cleveland almost nothing.
    let ca = task.features.iter().position(|f| f == "ca").unwrap();
    let sites = heart_sites();
    let missing = |d: &Dataset| d.x.column(ca).iter().filter(|v| v.is_nan()).count();
    assert!(missing(&sites[0]) <= 5);
    assert!(missing(&sites[1]) > 250);
    // ".7"-style numbers parse (Switzerland's oldpeak).
    let oldpeak = task.features.iter().position(|f| f == "oldpeak").unwrap();
    assert!(sites[2].x.column(oldpeak).iter().any(|v| *v == 0.7));

    let bc = breast_cancer();
    assert_eq!(
        (bc.n_rows(), bc.n_features(), bc.positives()),
        (569, 30, 212)
    );
    assert!(bc.x.iter().all(|v| v.is_finite()));
}

#[test]
fn site_stats_sum_to_stats_of_the_union() {
    let sites = heart_sites();
    let union = Dataset::concat(&sites.iter().collect::<Vec<_>>()).unwrap();
    let mut sum = LocalStats::zeros(union.n_features());
    for s in &sites {
        // Through the flat vector, as the federation carries it.
        let v = LocalStats::compute(s).to_vector();
        sum.add(&LocalStats::from_vector(&v, s.n_features()).unwrap());
    }
    let whole = LocalStats::compute(&union);
    for (a, b) in sum.to_vector().iter().zip(whole.to_vector()) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    }
    let pre = pooled_preprocessor(&sites);
    // ca, slope, thal, fbs, ... are missing somewhere: indicators appended for them only.
    assert_eq!(
        pre.indicator.iter().filter(|b| **b).count(),
        whole.missing.iter().filter(|m| **m > 0.0).count()
    );
    let z = pre.transform(&union.x);
    assert_eq!(z.ncols(), pre.output_dim());
    for j in 0..union.n_features() {
        // Standardised present values have mean 0 and variance 1; missing ones are 0.
        let col = z.column(j);
        let mean = col.sum() / col.len() as f64;
        assert!(mean.abs() < 1e-9, "feature {j}: mean {mean}");
    }
}

fn central_accuracy(train: &[Dataset], test: &Dataset, cfg: TrainConfig) -> f64 {
    let pre = pooled_preprocessor(train);
    let (sites, test) = prepared(&pre, train, test);
    let x = concatenate(
        Axis(0),
        &sites.iter().map(|s| s.0.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let y = concatenate(
        Axis(0),
        &sites.iter().map(|s| s.1.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut m = build_model(ModelKind::Logistic, Objective::Binary, x.ncols()).unwrap();
    m.train(&x, &y, &cfg);
    m.accuracy(&test.0, &test.1)
}

const CENTRAL: TrainConfig = TrainConfig {
    epochs: 20,
    learning_rate: 0.05,
    batch_size: 16,
    seed: 1,
    weight_decay: 0.0,
};

#[test]
fn central_logistic_regression_on_pooled_heart_disease() {
    let (train, test) = split_sites(&heart_sites(), 1);
    let acc = central_accuracy(&train, &test, CENTRAL);
    assert!(acc >= 0.78, "heart disease test accuracy {acc}");
}

#[test]
fn central_logistic_regression_on_breast_cancer() {
    let (train, test) = holdout(&breast_cancer(), 1);
    let acc = central_accuracy(&[train], &test, CENTRAL);
    assert!(acc >= 0.95, "breast cancer test accuracy {acc}");
}

#[test]
fn fedavg_over_the_four_hospitals() {
    let (train, test) = split_sites(&heart_sites(), 1);
    let pre = pooled_preprocessor(&train);
    let (sites, test) = prepared(&pre, &train, &test);
    for epochs in [1, 2, 5] {
        let cfg = TrainConfig {
            epochs,
            ..TrainConfig::default()
        };
        for avg in [Averaging::Weighted, Averaging::Uniform] {
            let (_, acc) = fedavg(&sites, &test, 30, cfg, avg);
            let last = *acc.last().unwrap();
            assert!(last >= 0.78, "{epochs} local epochs, {avg:?}: {last}");
        }
    }
}

#[test]
fn fedavg_breast_cancer_over_ten_iid_sites() {
    let (train, test) = holdout(&breast_cancer(), 1);
    let sites = deal(&train, 10, 1);
    let pre = pooled_preprocessor(&sites);
    let (sites, test) = prepared(&pre, &sites, &test);
    let (_, acc) = fedavg(
        &sites,
        &test,
        30,
        TrainConfig::default(),
        Averaging::Weighted,
    );
    assert!(*acc.last().unwrap() >= 0.95, "{acc:?}");
}

#[test]
fn model_file_round_trip_and_evaluation() {
    let (train, test) = split_sites(&heart_sites(), 1);
    let pre = pooled_preprocessor(&train);
    let (sites, test_xy) = prepared(&pre, &train, &test);
    let (params, acc) = fedavg(
        &sites,
        &test_xy,
        10,
        TrainConfig::default(),
        Averaging::Weighted,
    );
    let m = ModelFile {
        task: heart_task(),
        params,
        preprocessor: pre,
        round: 10,
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_model(&path, &m).unwrap();
    let back = read_model(&path).unwrap();
    assert_eq!(back, m);
    let ev = evaluate(&back, &test).unwrap();
    assert_eq!(ev.rows, test.n_rows());
    assert!((ev.accuracy - acc.last().unwrap()).abs() < 1e-12);
    assert!(ev.loss.is_finite() && ev.loss > 0.0);
    // Only the model file is left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);

    // Overwriting replaces the file as a whole.
    let m2 = ModelFile {
        round: 11,
        ..m.clone()
    };
    write_model(&path, &m2).unwrap();
    assert_eq!(read_model(&path).unwrap().round, 11);

    // A dataset of another task is refused, not mis-evaluated.
    assert!(evaluate(&m, &breast_cancer()).is_err());
}
