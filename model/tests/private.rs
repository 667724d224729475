//! DP-FedAvg with the recommended private training defaults: breast cancer over ten IID
//! sites, each update clipped to 0.25, Gaussian noise of std 5.92 · 0.25 on the sum
//! (the noise multiplier calibrated for ε = 4, δ = 1e-5 over 30 rounds), 30 rounds.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use tessera_model::{LocalStats, Preprocessor, StatsBounds, TrainConfig, l2_sensitivity};
use tessera_testkit::data::*;
use tessera_testkit::fedavg::*;

#[test]
fn dp_fedavg_breast_cancer_with_private_defaults() {
    let (train, test) = holdout(&breast_cancer(), 1);
    let sites = deal(&train, 10, 1);
    let pre = pooled_preprocessor(&sites);
    let (sites, test) = prepared(&pre, &sites, &test);
    let accs: Vec<f64> = (1..=4u64)
        .map(|seed| {
            let avg = Averaging::Private {
                clip: 0.25,
                sigma: 5.92,
                noise_seed: seed,
            };
            *fedavg(&sites, &test, 30, TrainConfig::private_default(), avg)
                .1
                .last()
                .unwrap()
        })
        .collect();
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    assert!(mean >= 0.92, "{accs:?}");
}

#[test]
fn noisy_bounded_statistics_still_give_a_usable_preprocessor() {
    let sites = heart_sites();
    let d = sites[0].n_features();
    // Public ranges for the heart-disease columns (clinical plausibility, not the data).
    let ranges = [
        (0.0, 100.0),  // age
        (0.0, 1.0),    // sex
        (1.0, 4.0),    // cp
        (50.0, 250.0), // trestbps
        (0.0, 700.0),  // chol
        (0.0, 1.0),    // fbs
        (0.0, 2.0),    // restecg
        (50.0, 220.0), // thalach
        (0.0, 1.0),    // exang
        (-3.0, 7.0),   // oldpeak
        (1.0, 3.0),    // slope
        (0.0, 3.0),    // ca
        (3.0, 7.0),    // thal
    ];
    let bounds = StatsBounds::new(&ranges, 300.0).unwrap();
    let mut sum = vec![0.0; LocalStats::vector_len(d)];
    for s in &sites {
        let v = LocalStats::compute_bounded(s, &bounds).unwrap().to_vector();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= l2_sensitivity(&bounds, d));
        sum.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let noise = Normal::<f64>::new(0.0, 0.5 * l2_sensitivity(&bounds, d)).unwrap();
    sum.iter_mut().for_each(|a| *a += noise.sample(&mut rng));
    let pooled = LocalStats::from_vector(&sum, d).unwrap();
    let noise_std = 0.5 * l2_sensitivity(&bounds, d);
    let pre = Preprocessor::from_pooled_bounded(&pooled, &bounds, noise_std).unwrap();
    for (j, &(lo, hi)) in ranges.iter().enumerate() {
        assert!(pre.mean[j] >= lo && pre.mean[j] <= hi);
        assert!(pre.std[j] > 0.0 && pre.std[j] <= (hi - lo) / 2.0);
        // Only a missing count well above the noise adds an indicator column.
        assert!(pre.indicator[j] == (pooled.missing[j] > 3.0 * noise_std));
    }
}
