//! Hyper-parameter sweeps behind the recommended training defaults. They print tables and
//! assert nothing; run with `cargo test -p tessera-model --test tuning -- --ignored --nocapture`.

mod common;

use common::*;
use tessera_model::{Dataset, ModelKind, TrainConfig, build_model};

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
    let mut m = build_model(ModelKind::Logistic, x.ncols());
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
    let bc = breast();
    for epochs in [5, 10, 20, 50] {
        for lr in [0.01, 0.05, 0.1] {
            let cfg = TrainConfig {
                epochs,
                learning_rate: lr,
                batch_size: 16,
                seed: 1,
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
    let bc = breast();
    for epochs in [1, 2] {
        for lr in [0.05, 0.1, 0.2] {
            let cfg = TrainConfig {
                epochs,
                learning_rate: lr,
                batch_size: 16,
                seed: 1,
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
    let bc = breast();
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
