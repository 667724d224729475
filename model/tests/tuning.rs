//! Hyper-parameter sweeps behind the recommended training defaults. They print tables and
//! assert nothing; run with `cargo test -p tessera-model --test tuning -- --ignored --nocapture`.

use tessera_model::{Dataset, ModelKind, Objective, TrainConfig, build_model};
use tessera_testkit::data::*;
use tessera_testkit::fedavg::*;

fn central(train: &[Dataset], test: &Dataset, cfg: TrainConfig) -> f64 {
    let pre = pooled_preprocessor(train);
    let (sites, test) = prepared(&pre, train, test);
    let x = ndarray::concatenate(
        ndarray::Axis(0),
        &sites.iter().map(|s| s.0.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let y = ndarray::concatenate(
        ndarray::Axis(0),
        &sites.iter().map(|s| s.1.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut m = build_model(ModelKind::Logistic, Objective::Binary, x.ncols()).unwrap();
    m.train(&x, &y, &cfg);
    m.accuracy(&test.0, &test.1)
}

fn mean_min(v: &[f64]) -> (f64, f64) {
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v.iter().cloned().fold(f64::INFINITY, f64::min),
    )
}

#[test]
#[ignore]
fn sweep_central() {
    let heart = heart_sites();
    let bc = breast_cancer();
    for epochs in [5, 10, 20, 50] {
        for lr in [0.01, 0.05, 0.1] {
            let cfg = TrainConfig {
                epochs,
                learning_rate: lr,
                batch_size: 16,
                seed: 1,
                weight_decay: 0.0,
            };
            let h: Vec<f64> = (1..=5)
                .map(|s| {
                    let (tr, te) = split_sites(&heart, s);
                    central(&tr, &te, cfg)
                })
                .collect();
            let b: Vec<f64> = (1..=5)
                .map(|s| {
                    let (tr, te) = holdout(&bc, s);
                    central(&[tr], &te, cfg)
                })
                .collect();
            println!(
                "central epochs {epochs:3} lr {lr:5}: heart mean/min {:.3?}  breast mean/min {:.3?}",
                mean_min(&h),
                mean_min(&b)
            );
        }
    }
}

#[test]
#[ignore]
fn sweep_fedavg_heart() {
    let heart = heart_sites();
    for avg in [Averaging::Weighted, Averaging::Uniform] {
        for epochs in [1, 2, 5] {
            for lr in [0.02, 0.05, 0.1, 0.2] {
                let cfg = TrainConfig {
                    epochs,
                    learning_rate: lr,
                    batch_size: 16,
                    seed: 1,
                    weight_decay: 0.0,
                };
                let accs: Vec<f64> = (1..=5)
                    .map(|s| {
                        let (tr, te) = split_sites(&heart, s);
                        let pre = pooled_preprocessor(&tr);
                        let (sites, test) = prepared(&pre, &tr, &te);
                        *fedavg(&sites, &test, 30, cfg, avg).1.last().unwrap()
                    })
                    .collect();
                println!(
                    "fedavg heart {avg:?} E{epochs} lr {lr}: mean/min {:.3?} {:.3?}",
                    mean_min(&accs),
                    accs
                );
            }
        }
    }
}

#[test]
#[ignore]
fn sweep_fedavg_breast() {
    let bc = breast_cancer();
    for epochs in [1, 2] {
        for lr in [0.05, 0.1, 0.2] {
            let cfg = TrainConfig {
                epochs,
                learning_rate: lr,
                batch_size: 16,
                seed: 1,
                weight_decay: 0.0,
            };
            let accs: Vec<f64> = (1..=5)
                .map(|s| {
                    let (tr, te) = holdout(&bc, s);
                    let sites = deal(&tr, 10, s);
                    let pre = pooled_preprocessor(&sites);
                    let (sites, test) = prepared(&pre, &sites, &te);
                    *fedavg(&sites, &test, 30, cfg, Averaging::Weighted)
                        .1
                        .last()
                        .unwrap()
                })
                .collect();
            println!(
                "fedavg breast E{epochs} lr {lr}: mean/min {:.3?} {:.3?}",
                mean_min(&accs),
                accs
            );
        }
    }
}

#[test]
#[ignore]
fn sweep_dp_fedavg() {
    let bc = breast_cancer();
    let heart = heart_sites();
    for (clip, lrs) in [
        (0.25, vec![1.0, 2.0, 3.0, 5.0]),
        (0.5, vec![1.0, 3.0]),
        (1.0, vec![0.1, 3.0]),
    ] {
        for lr in lrs {
            for epochs in [1, 2] {
                let cfg = TrainConfig {
                    epochs,
                    learning_rate: lr,
                    batch_size: 16,
                    seed: 1,
                    weight_decay: 0.0,
                };
                let mut accs = Vec::new();
                for s in 1..=3u64 {
                    let (tr, te) = holdout(&bc, s);
                    let sites = deal(&tr, 10, s);
                    let pre = pooled_preprocessor(&sites);
                    let (sites, test) = prepared(&pre, &sites, &te);
                    for noise_seed in 1..=4u64 {
                        let avg = Averaging::Private {
                            clip,
                            sigma: 5.92,
                            noise_seed: noise_seed * 100 + s,
                        };
                        accs.push(*fedavg(&sites, &test, 30, cfg, avg).1.last().unwrap());
                    }
                }
                let mut hs = Vec::new();
                for s in 1..=3u64 {
                    let (tr, te) = split_sites(&heart, s);
                    let pre = pooled_preprocessor(&tr);
                    let (sites, test) = prepared(&pre, &tr, &te);
                    for noise_seed in 1..=4u64 {
                        let avg = Averaging::Private {
                            clip,
                            sigma: 1.0,
                            noise_seed: noise_seed * 100 + s,
                        };
                        hs.push(*fedavg(&sites, &test, 30, cfg, avg).1.last().unwrap());
                    }
                }
                println!(
                    "dp C {clip} lr {lr} E{epochs}: breast(10 sites, sigma 5.92) mean/min {:.3?}  heart(4 sites, sigma 1) mean/min {:.3?}",
                    mean_min(&accs),
                    mean_min(&hs)
                );
            }
        }
    }
}

/// Public-range stand-in for the sweeps: each feature's observed range widened by 10%.
fn widened_bounds(ds: &Dataset, max_rows: f64) -> tessera_model::StatsBounds {
    let ranges: Vec<(f64, f64)> =
        ds.x.columns()
            .into_iter()
            .map(|c| {
                let lo = c
                    .iter()
                    .filter(|v| !v.is_nan())
                    .cloned()
                    .fold(f64::INFINITY, f64::min);
                let hi = c
                    .iter()
                    .filter(|v| !v.is_nan())
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let pad = 0.1 * (hi - lo).max(1.0);
                (lo - pad, hi + pad)
            })
            .collect();
    tessera_model::StatsBounds::new(&ranges, max_rows).unwrap()
}

#[test]
#[ignore]
fn sweep_dp_batch_and_preprocessing() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    use tessera_model::{LocalStats, Preprocessor, l2_sensitivity};
    let bc = breast_cancer();
    let bounds = widened_bounds(&bc, 50.0);
    // Preprocessing variants: exact pooled stats, bounded stats with noise sigma_s, or
    // plain range scaling from the bounds (no data used).
    let pre_for = |sites: &[Dataset], sigma_s: Option<f64>, seed: u64| -> Preprocessor {
        match sigma_s {
            None => pooled_preprocessor(sites),
            Some(s) if s < 0.0 => Preprocessor::from_bounds(&bounds),
            Some(s) => {
                let d = sites[0].n_features();
                let mut v = vec![0.0; LocalStats::vector_len(d)];
                for site in sites {
                    let b = LocalStats::compute_bounded(site, &bounds)
                        .unwrap()
                        .to_vector();
                    v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let n = Normal::<f64>::new(0.0, s * l2_sensitivity(&bounds, d)).unwrap();
                v.iter_mut().for_each(|a| *a += n.sample(&mut rng));
                Preprocessor::from_pooled_bounded(
                    &LocalStats::from_vector(&v, d).unwrap(),
                    &bounds,
                    s * l2_sensitivity(&bounds, d),
                )
                .unwrap()
            }
        }
    };
    let configs: Vec<(&str, Option<f64>, f64, usize)> = vec![
        ("exact stats", None, 0.5, 16),
        ("exact stats", None, 1.0, 8),
        ("exact stats", None, 1.0, 32),
        ("exact stats", None, 3.0, 8),
        ("exact stats", None, 3.0, 16),
        ("exact stats", None, 3.0, 32),
        ("exact stats", None, 10.0, 16),
        ("noisy stats s=0", Some(0.0), 3.0, 16),
        ("noisy stats s=0.05", Some(0.05), 3.0, 16),
        ("noisy stats s=0.3", Some(0.3), 3.0, 16),
        ("noisy stats s=1", Some(1.0), 3.0, 16),
        ("range scaling", Some(-1.0), 1.0, 16),
        ("range scaling", Some(-1.0), 3.0, 16),
        ("range scaling", Some(-1.0), 10.0, 16),
    ];
    for (label, sigma_s, lr, batch) in configs {
        let cfg = TrainConfig {
            epochs: 1,
            learning_rate: lr,
            batch_size: batch,
            seed: 1,
            weight_decay: 0.0,
        };
        let mut accs = Vec::new();
        for s in 1..=3u64 {
            let (tr, te) = holdout(&bc, s);
            let sites = deal(&tr, 10, s);
            let pre = pre_for(&sites, sigma_s, 1000 + s);
            let (sites, test) = prepared(&pre, &sites, &te);
            for noise_seed in 1..=6u64 {
                let avg = Averaging::Private {
                    clip: 0.25,
                    sigma: 5.92,
                    noise_seed: noise_seed * 100 + s,
                };
                accs.push(*fedavg(&sites, &test, 30, cfg, avg).1.last().unwrap());
            }
        }
        let below = accs.iter().filter(|a| **a < 0.94).count();
        println!(
            "dp breast C 0.25 {label:18} lr {lr:4} batch {batch:2}: mean/min {:.3?}, {below}/{} runs below 0.94",
            mean_min(&accs),
            accs.len()
        );
    }
}
