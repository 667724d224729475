//! Property tests of the accountants and calibration.

use proptest::prelude::*;
use tessera_privacy::accountant::exact::{gaussian_delta, gaussian_epsilon};
use tessera_privacy::{
    AccountantKind, Error, PrivacyEvent, calibrate_noise_multiplier, delta, epsilon,
};

fn eps(sigma: f64, q: f64, t: u32, kind: AccountantKind) -> f64 {
    epsilon(&[PrivacyEvent::gaussian(sigma, q, t)], 1e-5, kind)
        .unwrap()
        .epsilon
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn rdp_epsilon_grows_with_rounds_and_rate_and_falls_with_sigma(
        sigma in 0.6f64..8.0, q in 0.001f64..1.0, t in 1u32..2000, k in 1u32..500,
    ) {
        let base = eps(sigma, q, t, AccountantKind::Rdp);
        // Where the full-participation cap binds, a sampled and an unsampled
        // release reach the same ε by different floating-point paths: equal
        // to the last bits (seen: σ = 0.67, q = 0.742 → 1, T = 798).
        let tol = 1e-12 * base;
        prop_assert!(eps(sigma, q, t + k, AccountantKind::Rdp) >= base - tol);
        prop_assert!(eps(sigma, (q * 1.5).min(1.0), t, AccountantKind::Rdp) >= base - tol);
        prop_assert!(eps(sigma * 1.2, q, t, AccountantKind::Rdp) <= base + tol);
    }

    #[test]
    fn exact_epsilon_is_monotone_and_inverts_delta(sigma in 0.3f64..50.0, t in 1u32..100_000, d in 1e-12f64..0.1) {
        let e = epsilon(&[PrivacyEvent::gaussian(sigma, 1.0, t)], d, AccountantKind::Exact).unwrap().epsilon;
        prop_assert!(e >= 0.0 && e.is_finite());
        prop_assert!(eps(sigma, 1.0, t + 1, AccountantKind::Exact) >= eps(sigma, 1.0, t, AccountantKind::Exact));
        let mu = (f64::from(t) / (sigma * sigma)).sqrt(); // as the ledger composes it
        if e > 0.0 {
            // delta(eps) <= target, and a hair less epsilon exceeds it
            prop_assert!(gaussian_delta(mu, e) <= d);
            prop_assert!(gaussian_delta(mu, e * (1.0 - 1e-9)) > d * (1.0 - 1e-6));
        }
        prop_assert!((gaussian_epsilon(mu, d) - e).abs() <= 1e-12 * e.max(1.0));
    }

    #[test]
    fn best_is_at_most_each_and_pld_at_least_exact(sigma in 0.5f64..6.0, q in prop::sample::select(vec![1.0, 0.5, 0.05]), t in 1u32..40) {
        let ev = [PrivacyEvent::gaussian(sigma, q, t)];
        let best = epsilon(&ev, 1e-6, AccountantKind::Best).unwrap();
        for k in [AccountantKind::Exact, AccountantKind::Rdp, AccountantKind::Pld] {
            match epsilon(&ev, 1e-6, k) {
                Ok(r) => prop_assert!(best.epsilon <= r.epsilon, "{k}: {} > {}", best.epsilon, r.epsilon),
                Err(Error::NotApplicable { .. }) => prop_assert!(q < 1.0 && k == AccountantKind::Exact),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        if q == 1.0 {
            let exact = epsilon(&ev, 1e-6, AccountantKind::Exact).unwrap().epsilon;
            let pld = epsilon(&ev, 1e-6, AccountantKind::Pld).unwrap().epsilon;
            prop_assert!(pld >= exact && pld <= exact + 1e-3, "pld {pld} exact {exact}");
            prop_assert_eq!(best.accountant, AccountantKind::Exact);
        }
    }

    #[test]
    fn calibration_round_trips(target in 0.2f64..10.0, q in prop::sample::select(vec![1.0, 0.1, 0.01]), t in 1u32..3000, exact in any::<bool>()) {
        let kind = if exact && q == 1.0 { AccountantKind::Exact } else { AccountantKind::Rdp };
        let s = calibrate_noise_multiplier(target, 1e-5, q, t, kind).unwrap();
        prop_assert!(eps(s, q, t, kind) <= target);
        prop_assert!(eps(s * 0.99, q, t, kind) > target);
    }
}

#[test]
fn pld_calibration_round_trips() {
    for (target, q, t) in [(2.0, 0.05, 200u32), (1.0, 1.0, 10)] {
        let s = calibrate_noise_multiplier(target, 1e-5, q, t, AccountantKind::Pld).unwrap();
        assert!(eps(s, q, t, AccountantKind::Pld) <= target);
        assert!(eps(s * 0.99, q, t, AccountantKind::Pld) > target);
        let b = calibrate_noise_multiplier(target, 1e-5, q, t, AccountantKind::Best).unwrap();
        assert!(b <= s * (1.0 + 1e-9));
        assert!(eps(b, q, t, AccountantKind::Best) <= target);
    }
}

#[test]
fn heterogeneous_ledgers_compose() {
    let mixed = [
        PrivacyEvent::gaussian(1.0, 0.02, 300),
        PrivacyEvent::gaussian(2.0, 0.05, 300),
    ];
    let lo = [PrivacyEvent::gaussian(2.0, 0.02, 600)];
    let hi = [PrivacyEvent::gaussian(1.0, 0.05, 600)];
    for k in [
        AccountantKind::Rdp,
        AccountantKind::Pld,
        AccountantKind::Best,
    ] {
        let m = epsilon(&mixed, 1e-5, k).unwrap().epsilon;
        assert!(epsilon(&lo, 1e-5, k).unwrap().epsilon <= m, "{k}");
        assert!(m <= epsilon(&hi, 1e-5, k).unwrap().epsilon, "{k}");
    }
    // Full-participation rounds of different sigma compose exactly to mu = sqrt(sum 1/s^2).
    let parts = [
        PrivacyEvent::gaussian(2.0, 1.0, 3),
        PrivacyEvent::gaussian(4.0, 1.0, 4),
    ];
    let mu = (3.0f64 / 4.0 + 4.0 / 16.0).sqrt();
    let e = epsilon(&parts, 1e-6, AccountantKind::Exact)
        .unwrap()
        .epsilon;
    assert!((e - gaussian_epsilon(mu, 1e-6)).abs() < 1e-12);
    // One event per round is the same ledger as one event with a count.
    let split: Vec<_> = (0..50)
        .map(|_| PrivacyEvent::gaussian(1.1, 0.1, 1))
        .collect();
    let joined = [PrivacyEvent::gaussian(1.1, 0.1, 50)];
    for k in [AccountantKind::Rdp, AccountantKind::Pld] {
        assert_eq!(
            epsilon(&split, 1e-5, k).unwrap().epsilon,
            epsilon(&joined, 1e-5, k).unwrap().epsilon
        );
    }
}

#[test]
fn reverse_query_is_consistent() {
    let ev = [PrivacyEvent::gaussian(1.0, 0.01, 1000)];
    for k in [
        AccountantKind::Rdp,
        AccountantKind::Pld,
        AccountantKind::Best,
    ] {
        let e = epsilon(&ev, 1e-6, k).unwrap().epsilon;
        let d = delta(&ev, e, k).unwrap();
        assert!(d <= 1e-6 * (1.0 + 1e-6), "{k}: {d}");
        assert!(delta(&ev, e * 0.98, k).unwrap() > 1e-6, "{k}");
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let g = |s, q, t| [PrivacyEvent::gaussian(s, q, t)];
    assert_eq!(
        epsilon(&g(-1.0, 1.0, 1), 1e-5, AccountantKind::Best).unwrap_err(),
        Error::InvalidNoiseMultiplier(-1.0)
    );
    assert!(matches!(
        epsilon(&g(f64::NAN, 1.0, 1), 1e-5, AccountantKind::Rdp),
        Err(Error::InvalidNoiseMultiplier(_))
    ));
    assert_eq!(
        epsilon(&g(1.0, 0.0, 1), 1e-5, AccountantKind::Rdp).unwrap_err(),
        Error::InvalidSamplingRate(0.0)
    );
    assert_eq!(
        epsilon(&g(1.0, 1.5, 1), 1e-5, AccountantKind::Rdp).unwrap_err(),
        Error::InvalidSamplingRate(1.5)
    );
    for d in [0.0, 1.0, -1.0, f64::NAN] {
        assert!(matches!(
            epsilon(&g(1.0, 1.0, 1), d, AccountantKind::Best),
            Err(Error::InvalidDelta(_))
        ));
    }
    assert!(matches!(
        delta(&g(1.0, 1.0, 1), -1.0, AccountantKind::Best),
        Err(Error::InvalidEpsilon(_))
    ));
    assert_eq!(
        calibrate_noise_multiplier(1.0, 1e-5, 1.0, 0, AccountantKind::Best).unwrap_err(),
        Error::ZeroRounds
    );
    assert!(matches!(
        calibrate_noise_multiplier(0.0, 1e-5, 1.0, 1, AccountantKind::Best),
        Err(Error::InvalidEpsilon(_))
    ));
    assert!(matches!(
        calibrate_noise_multiplier(1.0, 1e-5, 0.5, 1, AccountantKind::Exact),
        Err(Error::NotApplicable {
            accountant: AccountantKind::Exact,
            ..
        })
    ));
    // An empty ledger has spent nothing.
    assert_eq!(
        epsilon(&[], 1e-5, AccountantKind::Best).unwrap().epsilon,
        0.0
    );
    assert_eq!(
        "PLD".parse::<AccountantKind>().unwrap(),
        AccountantKind::Pld
    );
    assert!("moments".parse::<AccountantKind>().is_err());
    assert_eq!(AccountantKind::Best.to_string(), "best");
}

#[test]
fn events_serialise_with_a_mechanism_tag() {
    let e = PrivacyEvent::DiscreteLaplace {
        epsilon: 0.5,
        count: 2,
    };
    let s = serde_json::to_string(&e).unwrap();
    assert_eq!(
        s,
        r#"{"mechanism":"discrete_laplace","epsilon":0.5,"count":2}"#
    );
    let g: PrivacyEvent = serde_json::from_str(
        r#"{"mechanism":"gaussian","noise_multiplier":1.0,"sampling_rate":0.1,"count":3}"#,
    )
    .unwrap();
    assert_eq!(g, PrivacyEvent::gaussian(1.0, 0.1, 3));
}

#[test]
fn extreme_parameters_never_panic_or_return_non_finite() {
    for sigma in [1e-300, 1e-6, 1e6, 1e300] {
        for q in [1e-300, 1e-9, 0.5, 1.0] {
            for t in [1u32, u32::MAX] {
                for d in [1e-300, 0.5] {
                    let ev = [PrivacyEvent::gaussian(sigma, q, t)];
                    for k in [
                        AccountantKind::Exact,
                        AccountantKind::Rdp,
                        AccountantKind::Pld,
                        AccountantKind::Best,
                    ] {
                        match epsilon(&ev, d, k) {
                            Ok(r) => assert!(
                                r.epsilon.is_finite() && r.epsilon >= 0.0,
                                "{sigma} {q} {t} {d} {k}: {r:?}"
                            ),
                            Err(Error::NotApplicable { .. }) => {}
                            Err(e) => panic!("{sigma} {q} {t} {d} {k}: {e}"),
                        }
                        if let Ok(x) = delta(&ev, 1.0, k) {
                            assert!((0.0..=1.0).contains(&x), "{sigma} {q} {t} {k}: delta {x}");
                        }
                    }
                }
            }
        }
    }
}
