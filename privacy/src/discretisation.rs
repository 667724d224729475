//! How far the exact discrete Gaussian is from the continuous Gaussian the
//! accountants analyse, as a total-variation bound added to δ.
//!
//! Let `N_Z(0, s^2)` be the discrete Gaussian (`P(k) ∝ exp(-k^2 / 2 s^2)`)
//! and `R_s` the continuous `N(0, s^2)` rounded to the nearest integer.
//! Adding `R_s` to an integer vector is a post-processing of the continuous
//! Gaussian mechanism with the same L2 sensitivity, so it has exactly the
//! continuous Gaussian's privacy. The total-variation distance between the
//! two, per coordinate, is bounded as follows (φ is the standard normal
//! density, `φ_s(t) = φ(t / s) / s`):
//!
//! 1. `P_Z(k) = φ_s(k) / (1 + η)` with `0 <= η <= 2 e^{-2π²s²} / (1 - e^{-2π²s²})`
//!    (Poisson summation of the normaliser), so `Σ_k |P_Z(k) - φ_s(k)| = η`.
//! 2. `R_s(k) = ∫_{k-1/2}^{k+1/2} φ_s`, and the midpoint rule gives
//!    `|R_s(k) - φ_s(k)| <= sup_{|t-k|<=1/2} |φ_s''(t)| / 24`. Summing, with
//!    `Σ_k sup_{I_k} |g| <= ∫|g| + ∫|g'|` for unit intervals `I_k`:
//!    `Σ_k |R_s(k) - φ_s(k)| <= (∫|φ_s''| + ∫|φ_s'''|) / 24
//!    = (4 φ(1) / s^2 + c3 / s^3) / 24`, where `c3 = ∫|φ'''| = 2 (φ(0) + 4 φ(√3))`.
//! 3. TV = half the L1 distance, so
//!    `tau(s) <= η / 2 + φ(1) / (12 s^2) + c3 / (48 s^3)`.
//!
//! Coordinates are independent, so a release of `d` coordinates is within
//! `Σ tau(s_i)` of its rounded continuous counterpart; adaptive composition
//! adds these up (a hybrid argument). The sampler's own sigma is rounded
//! *up* ([`crate::DiscreteGaussian`]), and `tau` decreases in `s`, so the
//! bound at the requested sigma covers the noise actually drawn.

use crate::Error;

/// The least noise standard deviation, in fixed-point integer units, at
/// which Tessera adds discrete Gaussian noise: 2^12. Below it the
/// discretisation bound grows past what a ledger can carry for real models
/// (τ ≈ 1.2e-9 per coordinate at 2^12, against 1.9e-17 at 2^25).
pub const MIN_NOISE_UNITS: f64 = 4096.0;

/// φ(1) / 12.
const C2: f64 = 0.020_164_227_043_261_95;
/// (φ(0) + 4 φ(√3)) / 24, i.e. c3 / 48.
const C3: f64 = 0.031_458_604_169_384_95;

/// Upper bound on the total-variation distance between `N_Z(0, s^2)` and
/// the rounded continuous `N(0, s^2)`, for a standard deviation `s >= 1`
/// in integer units (see the module docs). Rounded up.
pub fn discretisation_tv(s: f64) -> Result<f64, Error> {
    if !(s.is_finite() && s >= 1.0) {
        return Err(Error::InvalidScale {
            value: s,
            max: crate::noise::MAX_SIGMA,
        });
    }
    let e = (-2.0 * std::f64::consts::PI.powi(2) * s * s).exp();
    let eta = 2.0 * e / (1.0 - e);
    let tau = eta / 2.0 + C2 / (s * s) + C3 / (s * s * s);
    // Two ulps' worth of relative margin for the floating-point evaluation.
    Ok(tau * (1.0 + 1e-12))
}

/// The total-variation slack of one release: `dim` coordinates with
/// discrete Gaussian noise of standard deviation `s` integer units each.
pub fn release_tv(s: f64, dim: u64) -> Result<f64, Error> {
    Ok(discretisation_tv(s)? * dim as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phi(z: f64) -> f64 {
        (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    #[test]
    fn constants_are_the_normal_density_integrals() {
        assert!((C2 - phi(1.0) / 12.0).abs() < 1e-15);
        assert!((C3 - (phi(0.0) + 4.0 * phi(3f64.sqrt())) / 24.0).abs() < 1e-15);
    }

    /// The exact total variation, summed over integers, stays below the
    /// bound (and the bound is not loose by orders of magnitude).
    #[test]
    fn bound_covers_the_exact_distance() {
        for s in [1.0, 1.5, 3.0, 10.0, 40.0, 100.0] {
            let half = (12.0 * s) as i64;
            let weights: Vec<f64> = (-half..=half)
                .map(|k| (-(k * k) as f64 / (2.0 * s * s)).exp())
                .collect();
            let norm: f64 = weights.iter().sum();
            let mut tv = 0.0;
            for (i, k) in (-half..=half).enumerate() {
                let p = weights[i] / norm;
                let r = crate::special::normal_sf((k as f64 - 0.5) / s)
                    - crate::special::normal_sf((k as f64 + 0.5) / s);
                tv += (p - r).abs() / 2.0;
            }
            let bound = discretisation_tv(s).unwrap();
            assert!(tv <= bound, "s = {s}: tv {tv:e} > bound {bound:e}");
            let slack = if s < 10.0 { 4.0 } else { 1.5 };
            assert!(bound < slack * tv, "s = {s}: bound {bound:e} vs tv {tv:e}");
        }
    }

    #[test]
    fn small_or_invalid_scales_are_refused() {
        for s in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(discretisation_tv(s).is_err(), "{s}");
        }
        let t = discretisation_tv(MIN_NOISE_UNITS).unwrap();
        assert!(t > 1.1e-9 && t < 1.3e-9, "{t:e}");
        assert_eq!(release_tv(4096.0, 10).unwrap(), 10.0 * t);
    }
}
