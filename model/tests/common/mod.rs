//! Shared helpers for the integration tests: the vendored data sets, the holdout and a
//! small in-memory federated averaging loop.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tessera_model::split::{deal_stratified, stratified_holdout};
use tessera_model::{
    Dataset, LabelRule, LocalStats, ModelKind, Preprocessor, TaskSpec, TrainConfig, build_model,
    load_csv, read_header,
};

pub const HOSPITALS: [&str; 4] = ["cleveland", "hungary", "switzerland", "va_long_beach"];

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

pub fn hospital_path(name: &str) -> PathBuf {
    data_dir().join("heart_disease").join(format!("{name}.csv"))
}

pub fn breast_path() -> PathBuf {
    data_dir().join("breast_cancer_wisconsin.csv")
}

/// All columns except the label, in file order.
pub fn task_for(path: &std::path::Path, label: &str, positive: &str) -> TaskSpec {
    let header = read_header(path).unwrap();
    TaskSpec {
        model: ModelKind::Logistic,
        features: header.into_iter().filter(|h| h != label).collect(),
        label: label.into(),
        positive: positive.parse::<LabelRule>().unwrap(),
    }
}

pub fn heart_task() -> TaskSpec {
    task_for(&hospital_path("cleveland"), "num", "> 0")
}

pub fn breast_task() -> TaskSpec {
    task_for(&breast_path(), "diagnosis", "M")
}

pub fn heart_sites() -> Vec<Dataset> {
    let task = heart_task();
    HOSPITALS
        .iter()
        .map(|h| load_csv(&hospital_path(h), &task).unwrap())
        .collect()
}

pub fn breast() -> Dataset {
    load_csv(&breast_path(), &breast_task()).unwrap()
}

/// 20% stratified (by class) holdout of one site.
pub fn holdout(ds: &Dataset, seed: u64) -> (Dataset, Dataset) {
    let keys: Vec<u8> = ds.y.iter().map(|v| u8::from(*v > 0.5)).collect();
    let (train, test) = stratified_holdout(&keys, 0.2, seed);
    (ds.select(&train), ds.select(&test))
}

/// Splits every site 80/20 and returns (train sites, pooled test).
pub fn split_sites(sites: &[Dataset], seed: u64) -> (Vec<Dataset>, Dataset) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let (tr, te) = holdout(s, seed.wrapping_add(i as u64));
        train.push(tr);
        test.push(te);
    }
    let test = Dataset::concat(&test.iter().collect::<Vec<_>>()).unwrap();
    (train, test)
}

/// Deals a dataset IID (stratified) over `n` sites.
pub fn deal(ds: &Dataset, n: usize, seed: u64) -> Vec<Dataset> {
    let keys: Vec<u8> = ds.y.iter().map(|v| u8::from(*v > 0.5)).collect();
    deal_stratified(&keys, n, seed)
        .iter()
        .map(|idx| ds.select(idx))
        .collect()
}

/// The preprocessor every site derives from the sum of the sites' statistics.
pub fn pooled_preprocessor(sites: &[Dataset]) -> Preprocessor {
    let d = sites[0].n_features();
    let mut pooled = LocalStats::zeros(d);
    for s in sites {
        pooled.add(&LocalStats::compute(s));
    }
    Preprocessor::from_pooled(&pooled).unwrap()
}

/// Preprocessed inputs and labels.
pub type Xy = (Array2<f64>, Array1<f64>);

/// How site updates are combined in [`fedavg`].
#[derive(Clone, Copy, Debug)]
pub enum Averaging {
    /// Weighted by the sites' row counts.
    Weighted,
    /// Plain mean over sites.
    Uniform,
    /// DP-FedAvg: clip each update to `clip`, sum, add N(0, (sigma·clip)²) per coordinate,
    /// divide by the number of sites.
    Private {
        clip: f64,
        sigma: f64,
        noise_seed: u64,
    },
}

/// Runs `rounds` rounds of federated averaging over preprocessed sites; returns the global
/// parameters and the test accuracy after each round.
pub fn fedavg(
    sites: &[Xy],
    test: &Xy,
    rounds: u32,
    local: TrainConfig,
    averaging: Averaging,
) -> (Vec<f32>, Vec<f64>) {
    let dim = test.0.ncols();
    let mut global = build_model(ModelKind::Logistic, dim);
    let mut acc = Vec::new();
    let noise_rng = match averaging {
        Averaging::Private { noise_seed, .. } => Some(ChaCha8Rng::seed_from_u64(noise_seed)),
        _ => None,
    };
    let mut noise_rng = noise_rng;
    let total: f64 = sites.iter().map(|s| s.1.len() as f64).sum();
    for r in 0..rounds {
        let g: Vec<f64> = global.params().iter().map(|v| f64::from(*v)).collect();
        let mut sum = vec![0.0f64; g.len()];
        for (k, (x, y)) in sites.iter().enumerate() {
            let mut m = build_model(ModelKind::Logistic, dim);
            m.set_params(global.params()).unwrap();
            let cfg = TrainConfig {
                seed: local.seed ^ (u64::from(r) << 16) ^ k as u64,
                ..local
            };
            m.train(x, y, &cfg);
            let mut delta: Vec<f64> = m
                .params()
                .iter()
                .zip(&g)
                .map(|(l, g)| f64::from(*l) - g)
                .collect();
            let weight = match averaging {
                Averaging::Weighted => y.len() as f64 / total,
                Averaging::Uniform => 1.0 / sites.len() as f64,
                Averaging::Private { clip, .. } => {
                    let norm = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
                    if norm > clip {
                        delta.iter_mut().for_each(|d| *d *= clip / norm);
                    }
                    1.0
                }
            };
            sum.iter_mut()
                .zip(&delta)
                .for_each(|(s, d)| *s += weight * d);
        }
        if let Averaging::Private { clip, sigma, .. } = averaging {
            let rng = noise_rng.as_mut().unwrap();
            let normal = Normal::<f64>::new(0.0, sigma * clip).unwrap();
            for s in sum.iter_mut() {
                *s = (*s + normal.sample(rng)) / sites.len() as f64;
            }
        }
        let next: Vec<f32> = g.iter().zip(&sum).map(|(g, s)| (g + s) as f32).collect();
        global.set_params(&next).unwrap();
        acc.push(global.accuracy(&test.0, &test.1));
    }
    (global.params().to_vec(), acc)
}

/// Preprocesses sites and test set with one preprocessor.
pub fn prepared(pre: &Preprocessor, sites: &[Dataset], test: &Dataset) -> (Vec<Xy>, Xy) {
    let s = sites
        .iter()
        .map(|d| (pre.transform(&d.x), d.y.clone()))
        .collect();
    (s, (pre.transform(&test.x), test.y.clone()))
}
