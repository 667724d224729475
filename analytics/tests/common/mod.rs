//! Statistical tests with a fixed false-alarm rate, the heart-disease
//! hospitals as tables, and the plain sum of the sites' vectors.

#![allow(dead_code)]

use tessera_analytics::{QueryNoise, QueryPlan, Table, parse_query};
use tessera_testkit::data::{HOSPITALS, hospital_path};

/// The false-alarm rate of every test here: a correct implementation fails
/// one run in a thousand (the seeds are fixed, so a run either passes always
/// or never).
pub(crate) const ALPHA: f64 = 0.001;
/// z with P(Z > z) = ALPHA.
const Z_ALPHA: f64 = 3.090_232;

/// The four hospitals' tables, in file order.
pub(crate) fn hospitals() -> Vec<Table> {
    HOSPITALS
        .iter()
        .map(|h| Table::read_csv(&hospital_path(h)).expect("bundled data"))
        .collect()
}

/// A plan with `max_rows` above every hospital's row count, so that the cap
/// does not bind and the error is the noise alone.
pub(crate) fn plan(q: &str, noise: QueryNoise) -> QueryPlan {
    QueryPlan {
        query: parse_query(q).expect("a valid query"),
        max_rows: 400,
        noise,
    }
}

/// The sum modulo 2^64 of the sites' vectors.
pub(crate) fn plain_sum(vectors: &[Vec<u64>]) -> Vec<u64> {
    let mut s = vec![0u64; vectors[0].len()];
    for v in vectors {
        for (a, b) in s.iter_mut().zip(v) {
            *a = a.wrapping_add(*b);
        }
    }
    s
}

/// Upper ALPHA quantile of the chi-square distribution with `dof` degrees
/// (Wilson–Hilferty; within 1% of the exact quantile for dof ≥ 3).
pub(crate) fn chi_square_critical(dof: usize) -> f64 {
    let k = dof as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + Z_ALPHA * a.sqrt()).powi(3)
}

/// Pearson's statistic of observed against expected counts.
pub(crate) fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum()
}

/// Chi-square test of integer samples against a discrete CDF, in `bins`
/// bins cut at the distribution's quantiles. Returns (statistic, critical).
pub(crate) fn chi_square_cdf(samples: &[i64], cdf: impl Fn(i64) -> f64, bins: usize) -> (f64, f64) {
    // Cut points: the smallest x with CDF(x) ≥ j/bins.
    let search = |q: f64| {
        let (mut lo, mut hi) = (-(1i64 << 40), 1i64 << 40);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if cdf(mid) >= q {
                hi = mid
            } else {
                lo = mid + 1
            }
        }
        lo
    };
    let mut cuts: Vec<i64> = (1..bins).map(|j| search(j as f64 / bins as f64)).collect();
    cuts.dedup();
    let mut probs = Vec::new();
    let mut prev = 0.0;
    for &c in &cuts {
        probs.push(cdf(c) - prev);
        prev = cdf(c);
    }
    probs.push(1.0 - prev);
    let mut observed = vec![0u64; probs.len()];
    for &x in samples {
        let b = cuts.partition_point(|&c| c < x);
        observed[b] += 1;
    }
    let n = samples.len() as f64;
    let expected: Vec<f64> = probs.iter().map(|p| p * n).collect();
    (
        chi_square(&observed, &expected),
        chi_square_critical(probs.len() - 1),
    )
}

/// CDF of the discrete Laplace distribution P(x) ∝ exp(-|x|/b).
pub(crate) fn discrete_laplace_cdf(b: f64) -> impl Fn(i64) -> f64 {
    let p = (-1.0 / b).exp();
    move |x| {
        if x < 0 {
            p.powf(-(x as f64)) / (1.0 + p)
        } else {
            1.0 - p.powf(x as f64 + 1.0) / (1.0 + p)
        }
    }
}

/// The standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        1.0 - erfc / 2.0
    } else {
        erfc / 2.0
    }
}

/// Kolmogorov–Smirnov statistic of samples against a continuous CDF, and
/// its critical value at ALPHA (asymptotic: sqrt(-ln(ALPHA/2)/2) / sqrt(n)).
pub(crate) fn ks(samples: &[f64], cdf: impl Fn(f64) -> f64) -> (f64, f64) {
    let mut xs = samples.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    let d = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    (d, (-(ALPHA / 2.0).ln() / 2.0).sqrt() / n.sqrt())
}

/// Two-sample Kolmogorov–Smirnov statistic and its critical value at ALPHA.
pub(crate) fn ks_two_sample(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let c = (-(ALPHA / 2.0).ln() / 2.0).sqrt();
    (d, c * ((n + m) / (n * m)).sqrt())
}
