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
//! variance costs under RDP.
//!
//! # Accounting: the Gaussian's privacy profile, within a slack
//!
//! RDP alone leaves ε about 8% above the exact Gaussian profile central
//! releases are accounted with (the RDP-to-(ε, δ) conversion, already the
//! improved one of Canonne, Kamath & Steinke 2020, Prop. 12, loses that
//! much; no conversion from an RDP curve alone can recover the profile).
//! The structure of the sum closes the gap instead. Theorem 2 rests on
//! the sum `X = X₁ + … + X_n` of independent `N_Z(0, s²)` being close to
//! the single discrete Gaussian `Y ~ N_Z(0, n s²)` *pointwise*: Kairouz,
//! Liu & Steinke 2021, Proposition 14 (arXiv:2102.06387): `D_∞(X‖Y) ≤ τ` and
//! `D_∞(Y‖X) ≤ τ`, with the τ above (by Poisson summation, adding the
//! (k+1)-th summand to a sum of k changes the pmf by a factor within
//! `e^{±c·e^{−2π² s² k/(k+1)}}`; the terms of τ). So every probability of
//! X is within a factor `e^τ` of Y's, and `TV(X, Y) ≤ e^τ − 1` per
//! coordinate, `d (e^τ − 1)` over d independent coordinates. `Y` is the
//! noise of a central release of σ = √n s/Δ₂, which is itself within the
//! discretisation slack [`crate::release_tv`] of the rounded continuous
//! Gaussian. Hence a distributed release is within total variation
//! [`gaussian_tv`] = `d (e^τ − 1) + release_tv(√n s, d)` of the Gaussian
//! mechanism at σ, and the exact and PLD accountants count it as that
//! mechanism with this slack, added to δ as `(1 + e^ε)·slack` exactly as
//! for central releases (see `accountant::epsilon_with_slack`). With τ = 0
//! in double precision the slack is the central one, so at equal noise a
//! distributed ledger reports the central ledger's ε. The RDP accountant
//! keeps using Theorem 2 (no slack); `Best` takes the smaller valid answer.
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

/// Total variation between a distributed release's noise — on each of
/// `dim` coordinates the sum of `n` independent `N_Z(0, s²)` — and the
/// rounded continuous Gaussian of standard deviation `sum_std` = √n·s
/// (integer units) on each: `dim·(e^τ − 1)` (the sum against `N_Z(0, n s²)`,
/// Kairouz, Liu & Steinke 2021, Prop. 14, with τ = [`kls_tau`]) plus the
/// discretisation slack of `N_Z(0, n s²)` ([`crate::release_tv`]). See the
/// module documentation, "Accounting".
pub fn gaussian_tv(s: f64, n: u32, sum_std: f64, dim: u64) -> Result<f64, Error> {
    let closeness = dim as f64 * kls_tau(s, n).exp_m1();
    Ok(closeness + crate::release_tv(sum_std, dim)?)
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
    fn the_accountants_count_it_as_the_gaussian_within_its_slack() {
        use crate::{AccountantKind, PrivacyEvent, epsilon};
        let l2 = 0.25 * 2f64.powi(27);
        let dim = 31;
        // 10 sites whose noise sums to σ = 1.2 on the sum, 3 releases.
        let s = 1.2 * l2 / 10f64.sqrt();
        let e = PrivacyEvent::distributed(s, 10, l2, dim, 1.0, 10);
        let ledger = vec![e.clone(); 3];
        let slack = crate::release_tv(1.2 * l2, dim).unwrap();
        assert_eq!(gaussian_tv(s, 10, 1.2 * l2, dim).unwrap(), slack);
        // The central release of the same noise: the Gaussian at σ with
        // the discretisation slack of N_Z(0, (σ·Δ₂)²).
        let central = vec![PrivacyEvent::gaussian(1.2, 1.0, 3).with_tv_slack(3.0 * slack)];
        for k in [
            AccountantKind::Best,
            AccountantKind::Exact,
            AccountantKind::Pld,
        ] {
            let d = epsilon(&ledger, 1e-5, k).unwrap();
            let c = epsilon(&central, 1e-5, k).unwrap();
            assert!(
                (d.epsilon - c.epsilon).abs() < 1e-9 * c.epsilon,
                "{k}: {} vs {}",
                d.epsilon,
                c.epsilon
            );
        }
        // RDP keeps Theorem 2's bound: with τ = 0 the Gaussian's RDP curve,
        // above the exact profile.
        let rdp = epsilon(&ledger, 1e-5, AccountantKind::Rdp).unwrap().epsilon;
        let gauss_rdp = epsilon(
            &[PrivacyEvent::gaussian(1.2, 1.0, 3)],
            1e-5,
            AccountantKind::Rdp,
        )
        .unwrap()
        .epsilon;
        assert!((rdp - gauss_rdp).abs() < 1e-9 * rdp);
        let best = epsilon(&ledger, 1e-5, AccountantKind::Best)
            .unwrap()
            .epsilon;
        assert!(best < rdp, "{best} vs {rdp}");
        // Mixed with a central statistics release: larger.
        let mut mixed = ledger.clone();
        mixed.push(PrivacyEvent::gaussian(5.0, 1.0, 1));
        assert!(epsilon(&mixed, 1e-5, AccountantKind::Best).unwrap().epsilon > best);
    }

    #[test]
    fn tiny_shares_make_the_slack_grow() {
        // s = 0.6: τ is far from zero and enters the slack as d·(e^τ − 1).
        let tau = kls_tau(0.6, 4);
        assert!(tau > 1e-3);
        let tv = gaussian_tv(0.6, 4, 1.2, 10).unwrap();
        assert!(tv >= 10.0 * tau.exp_m1(), "{tv} vs {tau}");
        assert!(gaussian_tv(16.0, 4, 32.0, 10).unwrap() == crate::release_tv(32.0, 10).unwrap());
    }

    /// Kairouz, Liu & Steinke 2021, Prop. 14 on an example where τ is not
    /// negligible: the pmf of the sum of three `N_Z(0, s²)` (by exact
    /// convolution) is within a factor e^{±τ} of `N_Z(0, 3 s²)` everywhere
    /// it can be computed.
    #[test]
    fn the_sum_is_pointwise_close_to_one_discrete_gaussian() {
        let pmf = |var: f64, r: i64| -> Vec<f64> {
            let w: Vec<f64> = (-r..=r)
                .map(|x| (-(x as f64).powi(2) / (2.0 * var)).exp())
                .collect();
            let z: f64 = w.iter().sum();
            w.into_iter().map(|x| x / z).collect()
        };
        let conv = |a: &[f64], b: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; a.len() + b.len() - 1];
            for (i, x) in a.iter().enumerate() {
                for (j, y) in b.iter().enumerate() {
                    out[i + j] += x * y;
                }
            }
            out
        };
        for s in [0.5, 0.6, 0.8] {
            let r = 40;
            let one = pmf(s * s, r);
            let sum = conv(&conv(&one, &one), &one);
            let y = pmf(3.0 * s * s, 3 * r);
            let tau = kls_tau(s, 3);
            for (x, (p, q)) in sum.iter().zip(&y).enumerate() {
                if *q < 1e-200 || *p < 1e-200 {
                    continue;
                }
                let ratio = (p / q).ln().abs();
                assert!(
                    ratio <= tau,
                    "s = {s}, x = {x}: |ln ratio| {ratio} > τ {tau}"
                );
            }
        }
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
