//! Distributed noise: the sum of independent discrete Gaussians that many
//! sites add to their own integer vectors before secure aggregation, its
//! privacy bound, and its tail (for the fixed-point modulus).
//!
//! # Why this family
//!
//! Each site adds `N_Z(0, s²)` (the exact discrete Gaussian of
//! [`crate::DiscreteGaussian`], s in integer units) to every coordinate of
//! its encoded, clipped update; the secure sum then carries the sum of `n`
//! independent discrete Gaussians. That sum is not itself a discrete
//! Gaussian, but Kairouz, Liu & Steinke 2021 ("The Distributed Discrete
//! Gaussian Mechanism for Federated Learning with Secure Aggregation",
//! ICML), **Theorem 2** bounds it: for integer inputs whose L2 sensitivity
//! is Δ₂ (integer units) over `d` coordinates, adding the sum of `n`
//! independent `N_Z(0, s²)` per coordinate is `ε²/2`-concentrated DP
//! (zCDP) with
//!
//! ```text
//! ε = min( sqrt(Δ₂²/(n s²) + τ d / 2),  Δ₂/(√n s) + τ √d ),
//! τ = 10 Σ_{k=1}^{n−1} exp(−2π² s² k/(k+1)).
//! ```
//!
//! ρ-zCDP is RDP of order α at `α ρ` for every α > 1 (Bun & Steinke 2016,
//! Def. 1.1), which is how the RDP accountant composes it. τ is zero to
//! double precision once `s` exceeds a few units (Tessera's noise is at
//! least thousands of units), so the bound is the Gaussian's `α Δ₂²/(2 n s²)`:
//! a distributed release costs what a central one with the same total
//! variance costs under RDP. It is *not* accounted by the exact Gaussian or
//! PLD accountants (a zCDP bound says nothing about the privacy-loss
//! distribution), so a central ledger, which those accountants may tighten,
//! reports a somewhat smaller ε at the same noise.
//!
//! The coordinator tops up a sum that lost sites: with `n` planned and `m`
//! in the sum it adds `n − m` further independent `N_Z(0, s²)`, so the
//! released sum is again exactly the sum of `n` of them and the theorem
//! applies with the planned `n`.
//!
//! # Sensitivity of an encoded update
//!
//! A site clips its real update to `C − √d·2^−f` and rounds each coordinate
//! stochastically to a neighbouring multiple of `2^−f` (the fixed-point
//! encoding of `tessera_secagg`): every coordinate moves by less than one
//! unit, so the integer vector's L2 norm is below `(C − √d·2^−f)·2^f + √d =
//! C·2^f`. Replacing one site's vector by zero therefore moves the integer
//! sum by at most Δ₂ = C·2^f in L2 — the figure the events record.
//!
//! # Subsampling
//!
//! No amplification by sampling is claimed for these events (a sampled
//! round is accounted as if every site took part): Theorem 2 is a zCDP
//! bound, and the known amplification results for a general RDP mechanism
//! need its RDP at every integer order through sampled-mechanism formulas
//! we do not carry here. Ignoring the sampling only overstates ε.

use crate::Error;

/// The τ of Kairouz, Liu & Steinke 2021, Theorem 2, for `n` summands of
/// standard deviation `s` integer units: `10 Σ_{k=1}^{n−1} e^{−2π²s²k/(k+1)}`.
/// Every term is at most `e^{−π² s²}`, so the sum is bounded by
/// `10 (n−1) e^{−π² s²}`, which is what is returned (an upper bound: τ only
/// enters ε increasingly).
pub fn kls_tau(s: f64, n: u32) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    10.0 * f64::from(n - 1) * (-std::f64::consts::PI.powi(2) * s * s).exp()
}

/// The zCDP parameter ε of Theorem 2 (ρ = ε²/2): `n` summands of
/// `N_Z(0, s²)`, L2 sensitivity `l2` and `dim` coordinates, all in integer
/// units. Errors on a non-positive or non-finite figure.
pub fn ddg_epsilon(s: f64, n: u32, l2: f64, dim: u64) -> Result<f64, Error> {
    if !(s.is_finite() && s > 0.0 && l2.is_finite() && l2 > 0.0 && n > 0) {
        return Err(Error::InvalidScale {
            value: s,
            max: crate::noise::MAX_SIGMA,
        });
    }
    let tau = kls_tau(s, n);
    let d = dim as f64;
    let var = f64::from(n) * s * s;
    let a = (l2 * l2 / var + tau * d / 2.0).sqrt();
    let b = l2 / var.sqrt() + tau * d.sqrt();
    Ok(a.min(b))
}

/// A bound `t` (integer units) with `P(|X| ≥ t) ≤ p_fail` for *every one*
/// of `dim` coordinates at once, where each coordinate X is a sum of
/// independent discrete Gaussians of total variance `var_units`.
///
/// The discrete Gaussian `N_Z(0, s²)` is `s²`-sub-Gaussian (Canonne,
/// Kamath & Steinke 2020, Cor. 9), sums of independent sub-Gaussians add
/// their variance proxies, so `P(|X| ≥ t) ≤ 2 e^{−t²/(2 var)}`; a union
/// bound over the coordinates gives `t = sqrt(2 var ln(2 dim / p_fail))`.
pub fn sum_tail_units(var_units: f64, dim: u64, p_fail: f64) -> f64 {
    let d = (dim.max(1)) as f64;
    (2.0 * var_units * (2.0 * d / p_fail).ln()).sqrt()
}

/// The least standard deviation, in integer units, of one site's share:
/// there τ is below `10 (n−1) e^{−π²·256}`, zero in double precision for
/// any cohort, so Theorem 2's bound is the Gaussian's.
pub const MIN_SITE_NOISE_UNITS: f64 = 16.0;

/// Probability the coordinator's wrap-around check is sized for: a decoded
/// sum beyond the tail bound at this probability is treated as wrapped
/// (the round fails rather than releasing a wrong sum).
pub const TAIL_FAILURE: f64 = 1e-12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiscreteGaussian;
    use rand::SeedableRng;

    #[test]
    fn one_summand_is_the_discrete_gaussian() {
        // n = 1: τ = 0 and ε = Δ₂/s, the discrete Gaussian's own zCDP
        // (Canonne, Kamath & Steinke 2020, Thm. 4).
        let e = ddg_epsilon(4096.0, 1, 4096.0, 1000).unwrap();
        assert!((e - 1.0).abs() < 1e-15);
    }

    #[test]
    fn many_summands_add_their_variance() {
        // 10 sites of s each ≡ one Gaussian of √10 s, τ negligible.
        let e = ddg_epsilon(1000.0, 10, 5000.0, 1_000_000).unwrap();
        assert!((e - 5000.0 / (1000.0 * 10f64.sqrt())).abs() < 1e-12);
        // Tiny noise: τ dominates and ε grows.
        let small = ddg_epsilon(0.3, 10, 1.0, 1000).unwrap();
        assert!(small > 1.0 / (0.3 * 10f64.sqrt()));
        assert!(kls_tau(0.3, 10) > 0.0 && kls_tau(50.0, 10) == 0.0);
    }

    #[test]
    fn invalid_figures_are_refused() {
        for (s, n, l2) in [
            (0.0, 1, 1.0),
            (f64::NAN, 1, 1.0),
            (1.0, 0, 1.0),
            (1.0, 2, -1.0),
            (1.0, 2, f64::INFINITY),
        ] {
            assert!(ddg_epsilon(s, n, l2, 1).is_err(), "{s} {n} {l2}");
        }
    }

    #[test]
    fn the_tail_bound_holds_for_sampled_sums() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let g = DiscreteGaussian::new(50.0).unwrap();
        let dim = 20_000u64;
        let t = sum_tail_units(4.0 * 2500.0, dim, 1e-6);
        let mut worst = 0i64;
        for _ in 0..dim {
            let x: i64 = (0..4).map(|_| g.sample(&mut rng)).sum();
            worst = worst.max(x.abs());
        }
        assert!((worst as f64) < t, "{worst} vs {t}");
        // ... and is not absurdly loose (about 6 standard deviations here).
        assert!(t < 7.0 * 100.0, "{t}");
    }

    #[test]
    fn the_accountants_compose_it_by_rdp_only() {
        use crate::{AccountantKind, PrivacyEvent, epsilon};
        let l2 = 0.25 * 2f64.powi(27);
        // 10 sites whose noise sums to σ = 1.2 on the sum, 30 releases.
        let s = 1.2 * l2 / 10f64.sqrt();
        let e = PrivacyEvent::distributed(s, 10, l2, 31, 1.0, 10);
        let ledger = vec![e.clone(); 30];
        let dist = epsilon(&ledger, 1e-5, AccountantKind::Best).unwrap();
        assert_eq!(dist.accountant, AccountantKind::Rdp);
        let gauss = vec![PrivacyEvent::gaussian(1.2, 1.0, 30)];
        let rdp = epsilon(&gauss, 1e-5, AccountantKind::Rdp).unwrap().epsilon;
        let exact = epsilon(&gauss, 1e-5, AccountantKind::Exact)
            .unwrap()
            .epsilon;
        // τ vanishes: the very RDP curve of the Gaussian at the same noise.
        assert!(
            (dist.epsilon - rdp).abs() < 1e-9 * rdp,
            "{} {rdp}",
            dist.epsilon
        );
        // ... which is above the exact Gaussian ε central releases get.
        assert!(dist.epsilon > exact);
        for k in [AccountantKind::Exact, AccountantKind::Pld] {
            assert!(epsilon(&ledger, 1e-5, k).is_err(), "{k}");
        }
        // Mixed with a central statistics release: still RDP, and larger.
        let mut mixed = ledger.clone();
        mixed.push(PrivacyEvent::gaussian(5.0, 1.0, 1));
        assert!(epsilon(&mixed, 1e-5, AccountantKind::Best).unwrap().epsilon > dist.epsilon);
    }

    #[test]
    fn the_coordinator_view_keeps_only_the_honest_noise() {
        let e = crate::PrivacyEvent::distributed(100.0, 10, 4096.0, 5, 1.0, 7);
        let Some(crate::PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier,
            summands,
            ..
        }) = e.coordinator_view()
        else {
            panic!("a view");
        };
        assert_eq!(summands, 7);
        assert!((noise_multiplier - 7f64.sqrt() * 100.0 / 4096.0).abs() < 1e-12);
        let none = crate::PrivacyEvent::distributed(100.0, 10, 4096.0, 5, 1.0, 0);
        assert!(none.coordinator_view().is_none());
        assert!(
            crate::PrivacyEvent::gaussian(1.0, 1.0, 1)
                .coordinator_view()
                .is_none()
        );
        // Hostile figures are refused, not accounted.
        let bad = crate::PrivacyEvent::distributed(100.0, 3, 4096.0, 5, 1.0, 4);
        assert!(bad.validate().is_err());
        let nan = crate::PrivacyEvent::distributed(f64::NAN, 3, 4096.0, 5, 1.0, 1);
        assert!(nan.validate().is_err());
    }
}
