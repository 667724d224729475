//! Statistical tests of the exact samplers, and that they draw from the RNG
//! they are given.

use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};
use tessera_privacy::noise::{DiscreteLaplace, MAX_SIGMA};
use tessera_privacy::{
    DiscreteGaussian, Error, add_discrete_gaussian_mod, exponential_mechanism, report_noisy_max,
    sample_discrete_gaussian, sample_discrete_laplace, sample_gaussian_f64,
};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Chi-square statistic of observed counts against a pmf on `lo..=hi`,
/// merging the two tails into the end bins. Returns (statistic, dof).
fn chi_square(samples: &[i64], lo: i64, hi: i64, pmf: impl Fn(i64) -> f64) -> (f64, usize) {
    let n = samples.len() as f64;
    let k = (hi - lo + 1) as usize;
    let mut obs = vec![0.0; k];
    for &s in samples {
        obs[(s.clamp(lo, hi) - lo) as usize] += 1.0;
    }
    let mut exp: Vec<f64> = (lo..=hi).map(&pmf).collect();
    let z: f64 = (lo - 200..=hi + 200).map(&pmf).sum();
    let below: f64 = (lo - 200..lo).map(&pmf).sum();
    let above: f64 = (hi + 1..=hi + 200).map(&pmf).sum();
    exp[0] += below;
    exp[k - 1] += above;
    let stat = obs
        .iter()
        .zip(&exp)
        .map(|(o, e)| (o - n * e / z).powi(2) / (n * e / z))
        .sum();
    (stat, k - 1)
}

/// Loose critical value (about p = 1e-6) for a chi-square with `dof` degrees.
fn critical(dof: usize) -> f64 {
    let d = dof as f64;
    d + 7.0 * (2.0 * d).sqrt()
}

#[test]
fn discrete_gaussian_matches_its_pmf_at_small_sigma() {
    for (sigma, seed) in [(0.8f64, 1u64), (1.5, 2), (3.0, 3)] {
        let g = DiscreteGaussian::new(sigma).unwrap();
        let mut r = rng(seed);
        let xs: Vec<i64> = (0..100_000).map(|_| g.sample(&mut r)).collect();
        let w = (4.0 * sigma).ceil() as i64;
        let (stat, dof) = chi_square(&xs, -w, w, |x| {
            (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()
        });
        assert!(stat < critical(dof), "sigma {sigma}: chi2 {stat} dof {dof}");
    }
}

#[test]
fn discrete_gaussian_moments_at_large_sigma() {
    for sigma in [1e3f64, 1e6, 1e9] {
        let mut r = rng(sigma as u64);
        let n = 50_000;
        let xs: Vec<f64> = (0..n)
            .map(|_| sample_discrete_gaussian(sigma, &mut r) as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        let se = sigma / (n as f64).sqrt();
        assert!(mean.abs() < 6.0 * se, "sigma {sigma}: mean {mean}");
        assert!(
            (var / (sigma * sigma) - 1.0).abs() < 6.0 * (2.0 / n as f64).sqrt(),
            "sigma {sigma}: var {var}"
        );
        assert!((kurt - 3.0).abs() < 0.15, "sigma {sigma}: kurtosis {kurt}");
    }
}

#[test]
fn discrete_laplace_matches_its_pmf() {
    for (scale, seed) in [(0.7f64, 5u64), (2.5, 6), (10.0, 7)] {
        let l = DiscreteLaplace::new(scale).unwrap();
        let mut r = rng(seed);
        let xs: Vec<i64> = (0..100_000).map(|_| l.sample(&mut r)).collect();
        let w = (5.0 * scale).ceil() as i64;
        let (stat, dof) = chi_square(&xs, -w, w, |x| (-(x.abs() as f64) / scale).exp());
        assert!(stat < critical(dof), "scale {scale}: chi2 {stat} dof {dof}");
    }
    // Large scale: variance 2 e^{-1/s} / (1 - e^{-1/s})^2 ~ 2 s^2.
    let s = 1e5;
    let mut r = rng(8);
    let n = 50_000;
    let xs: Vec<f64> = (0..n)
        .map(|_| sample_discrete_laplace(s, &mut r) as f64)
        .collect();
    let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
    assert!((var / (2.0 * s * s) - 1.0).abs() < 0.06, "{var}");
    assert_eq!(DiscreteLaplace::scale_for(0.5, 1.0).unwrap(), 2.0);
    assert!(DiscreteLaplace::scale_for(0.3, 1.0).unwrap() * 0.3 >= 1.0);
}

#[test]
fn exponential_mechanism_matches_its_distribution() {
    let scores = [0.0, 1.0, 2.0, 4.0];
    let (eps, sens) = (1.0, 1.0);
    let mut r = rng(9);
    let n = 60_000;
    let mut counts = [0.0f64; 4];
    for _ in 0..n {
        counts[exponential_mechanism(&scores, eps, sens, &mut r).unwrap()] += 1.0;
    }
    let w: Vec<f64> = scores
        .iter()
        .map(|s| (eps * s / (2.0 * sens)).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let stat: f64 = counts
        .iter()
        .zip(&w)
        .map(|(o, wi)| (o - n as f64 * wi / z).powi(2) / (n as f64 * wi / z))
        .sum();
    assert!(stat < critical(3), "chi2 {stat}");
    // report-noisy-max is the same distribution; the best candidate wins most often.
    let best = (0..2000)
        .filter(|_| report_noisy_max(&scores, 8.0, 1.0, &mut r).unwrap() == 3)
        .count();
    assert!(best > 1800, "{best}");
    assert_eq!(
        exponential_mechanism(&[], 1.0, 1.0, &mut r),
        Err(Error::NoCandidates)
    );
    assert_eq!(
        exponential_mechanism(&[f64::NAN], 1.0, 1.0, &mut r),
        Err(Error::NonFinite)
    );
    assert!(matches!(
        exponential_mechanism(&[1.0], 0.0, 1.0, &mut r),
        Err(Error::InvalidEpsilon(_))
    ));
    assert!(matches!(
        exponential_mechanism(&[1.0], 1.0, -1.0, &mut r),
        Err(Error::InvalidSensitivity(_))
    ));
    // Widely spread scores still terminate and pick the top one.
    assert_eq!(
        exponential_mechanism(&[-1e300, 0.0], 1.0, 1.0, &mut r),
        Ok(1)
    );
}

/// Counts the words drawn from the inner RNG.
struct Counting<R> {
    inner: R,
    words: u64,
}

impl<R: TryRng> TryRng for Counting<R> {
    type Error = R::Error;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.words += 1;
        self.inner.try_next_u32()
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.words += 1;
        self.inner.try_next_u64()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.words += dst.len().div_ceil(8) as u64;
        self.inner.try_fill_bytes(dst)
    }
}
impl<R: TryCryptoRng> TryCryptoRng for Counting<R> {}

#[test]
fn samplers_draw_from_the_rng_they_are_given() {
    let mut c = Counting {
        inner: rng(10),
        words: 0,
    };
    sample_discrete_gaussian(1e6, &mut c);
    let after_one = c.words;
    assert!(after_one > 0);
    let mut v = vec![0u64; 100];
    add_discrete_gaussian_mod(&mut v, 32, 1e4, &mut c);
    assert!(c.words >= after_one + 100);
    let before = c.words;
    sample_discrete_laplace(3.0, &mut c);
    assert!(c.words > before);
    let before = c.words;
    exponential_mechanism(&[1.0, 2.0], 1.0, 1.0, &mut c).unwrap();
    assert!(c.words > before);

    // Same seed, same samples; different seeds, different samples.
    let draw = |seed| {
        (0..64)
            .map(|_| 0)
            .scan(rng(seed), |r, _: i32| {
                Some(sample_discrete_gaussian(1e6, r))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(11), draw(11));
    assert_ne!(draw(11), draw(12));
}

#[test]
fn modular_noise_wraps_and_bad_sigma_fails_private() {
    let mut r = rng(13);
    let mut v = vec![250u64; 1000];
    add_discrete_gaussian_mod(&mut v, 8, 20.0, &mut r);
    assert!(v.iter().all(|&x| x < 256));
    // Centred around 250 mod 256: differences to 250 are small in the ring.
    let d: Vec<i64> = v
        .iter()
        .map(|&x| ((x as i64 - 250 + 128).rem_euclid(256)) - 128)
        .collect();
    let mean = d.iter().sum::<i64>() as f64 / d.len() as f64;
    assert!(mean.abs() < 3.0, "{mean}");
    assert!(d.iter().any(|&x| x < -10) && d.iter().any(|&x| x > 10));
    let mut full = vec![u64::MAX; 10];
    add_discrete_gaussian_mod(&mut full, 64, 1.0, &mut r);
    // sigma 0: no noise, only the reduction.
    let mut z = vec![300u64, 5];
    add_discrete_gaussian_mod(&mut z, 8, 0.0, &mut r);
    assert_eq!(z, vec![44, 5]);
    // Invalid sigma: every value becomes a uniform residue (infinite noise).
    let mut w = vec![7u64; 256];
    add_discrete_gaussian_mod(&mut w, 16, f64::NAN, &mut r);
    assert!(w.iter().filter(|&&x| x == 7).count() < 3);
    assert!(w.iter().all(|&x| x < 1 << 16));
    let g = DiscreteGaussian::new(5.0).unwrap();
    assert_eq!(
        g.add_mod(&mut w, 0, &mut r),
        Err(Error::InvalidModulusBits(0))
    );
    assert!(matches!(
        DiscreteGaussian::new(MAX_SIGMA * 2.0),
        Err(Error::InvalidScale { .. })
    ));
    assert_eq!(sample_discrete_gaussian(0.0, &mut r), 0);
}

#[test]
fn continuous_gaussian_for_simulations() {
    let mut r = rng(14);
    let n = 50_000;
    let xs: Vec<f64> = (0..n).map(|_| sample_gaussian_f64(2.0, &mut r)).collect();
    let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
    assert!((var / 4.0 - 1.0).abs() < 0.05);
    assert_eq!(sample_gaussian_f64(-1.0, &mut r), 0.0);
}
