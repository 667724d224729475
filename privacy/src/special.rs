//! Special functions with the accuracy the accountants need.
//!
//! Privacy accounting lives in the tails of the normal distribution, where a
//! naive `exp(x^2) * erfc(x)` or `1 - Phi(x)` loses every significant digit.
//! Everything here is written so that the relative error stays near machine
//! precision far into the tails: the scaled complementary error function
//! `erfcx(x) = exp(x^2) erfc(x)` is the workhorse, and hockey-stick
//! divergences of Gaussian pairs are written as *differences of erfcx values
//! times one common Gaussian factor*, which removes the catastrophic
//! cancellation of the textbook formula.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// `ln(exp(a) + exp(b))` without overflow; `-inf` acts as zero.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// Scaled complementary error function `exp(x^2) * erfc(x)`.
///
/// Relative error of a few ulps for all `x >= -26` (beyond that it
/// overflows to `+inf`, as the true value does shortly after).
pub(crate) fn erfcx(x: f64) -> f64 {
    if x < 0.5 {
        // exp(x^2) is at most e^0.25 for |x| < 0.5 and exact enough for
        // negative x, where erfc(x) is in (1, 2] and carries full precision.
        let (hi, lo) = square_split(x);
        return hi.exp() * lo.exp() * libm::erfc(x);
    }
    if x < 25.0 {
        // x^2 = hi + lo exactly, so exp(x^2) is as accurate as exp itself.
        let (hi, lo) = square_split(x);
        return hi.exp() * lo.exp() * libm::erfc(x);
    }
    // Asymptotic series: erfcx(x) = 1/(x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k.
    // For x >= 25 the terms shrink by a factor of at least 1250 per step.
    let inv = 1.0 / (2.0 * x * x);
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..10 {
        term *= -((2 * k - 1) as f64) * inv;
        sum += term;
    }
    sum / (x * PI.sqrt())
}

/// `x*x` as an unevaluated sum `hi + lo` (exact, via fused multiply-add).
fn square_split(x: f64) -> (f64, f64) {
    let hi = x * x;
    let lo = x.mul_add(x, -hi);
    (hi, lo)
}

/// `ln(erfc(x))`, accurate in the far right tail.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 0.5 {
        libm::erfc(x).ln()
    } else {
        let (hi, lo) = square_split(x);
        -hi - lo + erfcx(x).ln()
    }
}

/// Upper tail of the standard normal, `Q(z) = P(N(0,1) > z)`.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z * FRAC_1_SQRT_2)
}

/// `exp((z^2 - w^2)/2) * Q(z)`, i.e. `exp(-w^2/2) * erfcx(z/sqrt 2) / 2`,
/// evaluated without overflow for any sign of `z`.
pub(crate) fn scaled_sf(w: f64, z: f64) -> f64 {
    if z > 0.0 {
        (-0.5 * w * w).exp() * 0.5 * erfcx(z * FRAC_1_SQRT_2)
    } else {
        (0.5 * (z - w) * (z + w)).exp() * normal_sf(z)
    }
}

/// `Q(a) - exp((b^2 - a^2)/2) Q(b)` for `a < b`: the hockey-stick divergence
/// pattern of a pair of unit-variance Gaussians (Balle & Wang 2018, Thm. 8),
/// computed without cancellation when both arguments are positive.
/// Clamped at zero against rounding.
pub(crate) fn gauss_hockey(a: f64, b: f64) -> f64 {
    let v = if a > 0.0 {
        (-0.5 * a * a).exp() * 0.5 * (erfcx(a * FRAC_1_SQRT_2) - erfcx(b * FRAC_1_SQRT_2))
    } else {
        normal_sf(a) - scaled_sf(a, b)
    };
    v.max(0.0)
}

/// `exp((u^2 - v^2)/2) Q(u) - Q(v)` for `u < v`: the mirrored pattern used by
/// the "add" direction of the subsampled Gaussian. Clamped at zero.
pub(crate) fn gauss_hockey_mirror(u: f64, v: f64) -> f64 {
    let r = if u > 0.0 {
        (-0.5 * v * v).exp() * 0.5 * (erfcx(u * FRAC_1_SQRT_2) - erfcx(v * FRAC_1_SQRT_2))
    } else {
        scaled_sf(v, u) - normal_sf(v)
    };
    r.max(0.0)
}

/// `ln |binom(n, k)|` for real `n` (via `ln |Gamma|`), as the RDP series needs.
pub(crate) fn log_abs_binom(n: f64, k: f64) -> f64 {
    libm::lgamma_r(n + 1.0).0 - libm::lgamma_r(k + 1.0).0 - libm::lgamma_r(n - k + 1.0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfcx_is_continuous_and_matches_known_values() {
        // erfcx(1) = e * erfc(1) = 0.42758357615580700442
        assert!((erfcx(1.0) / 0.427_583_576_155_807 - 1.0).abs() < 1e-14);
        // erfcx(30) ~ 0.0187958888614168...
        assert!((erfcx(30.0) / 0.018_795_888_861_416_75 - 1.0).abs() < 1e-13);
        for x in [0.5, 25.0] {
            let l = erfcx(x - 1e-12);
            let r = erfcx(x);
            assert!((l / r - 1.0).abs() < 1e-11, "{x}: {l} vs {r}");
        }
    }

    #[test]
    fn gauss_hockey_agrees_with_naive_formula_where_that_is_accurate() {
        let (a, b) = (0.3, 1.3);
        let naive = normal_sf(a) - ((b * b - a * a) / 2.0).exp() * normal_sf(b);
        assert!((gauss_hockey(a, b) / naive - 1.0).abs() < 1e-13);
        let (u, v) = (0.3f64, 1.3);
        let naive = ((u * u - v * v) / 2.0).exp() * normal_sf(u) - normal_sf(v);
        assert!((gauss_hockey_mirror(u, v) / naive - 1.0).abs() < 1e-13);
    }

    #[test]
    fn log_erfc_tail() {
        // ln erfc(10) = -100 + ln(erfcx(10)); erfcx(10) = 0.05614099274382259
        assert!((log_erfc(10.0) - (-100.0 + 0.056_140_992_743_822_59_f64.ln())).abs() < 1e-12);
        assert!((log_erfc(0.0)).abs() < 1e-16);
    }
}
