//! The FedAvg reference: federated averaging of the built-in logistic model
//! in process, with the sites' updates weighted, uniform, or clipped and
//! noised as DP-FedAvg does, against which the real federation and the
//! recommended training defaults are measured.

use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tessera_model::{Dataset, ModelKind, Objective, Preprocessor, TrainConfig, build_model};

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
        /// Clip norm C of each update.
        clip: f64,
        /// Noise multiplier σ.
        sigma: f64,
        /// Seed of the noise.
        noise_seed: u64,
    },
}

/// Runs `rounds` rounds of federated averaging over preprocessed sites; returns the global
/// parameters and the test accuracy after each round.
///
/// Every round starts each site from the global model and trains it with `local`, its seed
/// mixed with the round and the site's index; the global model then moves by the combined
/// update (server learning rate 1).
pub fn fedavg(
    sites: &[Xy],
    test: &Xy,
    rounds: u32,
    local: TrainConfig,
    averaging: Averaging,
) -> (Vec<f32>, Vec<f64>) {
    let dim = test.0.ncols();
    let logistic = || build_model(ModelKind::Logistic, Objective::Binary, dim).expect("built in");
    let mut global = logistic();
    let mut acc = Vec::new();
    let mut noise_rng = match averaging {
        Averaging::Private { noise_seed, .. } => Some(ChaCha8Rng::seed_from_u64(noise_seed)),
        _ => None,
    };
    let total: f64 = sites.iter().map(|s| s.1.len() as f64).sum();
    for r in 0..rounds {
        let g: Vec<f64> = global.params().iter().map(|v| f64::from(*v)).collect();
        let mut sum = vec![0.0f64; g.len()];
        for (k, (x, y)) in sites.iter().enumerate() {
            let mut m = logistic();
            m.set_params(global.params())
                .expect("the global model fits the task");
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
            let rng = noise_rng.as_mut().expect("a noise generator");
            let normal = Normal::<f64>::new(0.0, sigma * clip).expect("a noise distribution");
            for s in sum.iter_mut() {
                *s = (*s + normal.sample(rng)) / sites.len() as f64;
            }
        }
        let next: Vec<f32> = g.iter().zip(&sum).map(|(g, s)| (g + s) as f32).collect();
        global
            .set_params(&next)
            .expect("the averaged model fits the task");
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
