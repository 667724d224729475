//! Agreement with Google's dp_accounting (and mpmath, prv-accountant) on the
//! reference vectors in `tests/vectors/` (see its README for tolerances).

use std::collections::HashMap;

use tessera_privacy::accountant::pld::ComposedPld;
use tessera_privacy::accountant::rdp::RdpCurve;
use tessera_privacy::{AccountantKind, PrivacyEvent, calibrate_noise_multiplier, delta, epsilon};

type Row = HashMap<String, String>;

fn rows(name: &str) -> Vec<Row> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut r = csv::Reader::from_path(&path).expect("vector file");
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn num(r: &Row, k: &str) -> Option<f64> {
    r.get(k)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().unwrap())
}

fn ledger(r: &Row) -> Vec<PrivacyEvent> {
    let t = num(r, "T").unwrap() as u32;
    vec![PrivacyEvent::gaussian(
        num(r, "sigma").unwrap(),
        num(r, "q").unwrap(),
        t,
    )]
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn epsilon_exact_matches_analytic_gaussian() {
    let mut n = 0;
    for r in rows("epsilon_public.csv") {
        let Some(want) = num(&r, "eps_exact") else {
            continue;
        };
        let got = epsilon(
            &ledger(&r),
            num(&r, "delta").unwrap(),
            AccountantKind::Exact,
        )
        .unwrap();
        assert!(
            rel(got.epsilon, want) < 1e-11,
            "{r:?}: exact {} vs {want}",
            got.epsilon
        );
        n += 1;
    }
    assert!(n >= 30, "{n}");
}

#[test]
fn epsilon_exact_is_not_applicable_when_sampled() {
    for r in rows("epsilon_public.csv") {
        if num(&r, "q").unwrap() < 1.0 {
            let e = epsilon(&ledger(&r), 1e-5, AccountantKind::Exact).unwrap_err();
            assert!(
                matches!(e, tessera_privacy::Error::NotApplicable { .. }),
                "{e}"
            );
            return;
        }
    }
}

#[test]
fn epsilon_rdp_matches_dp_accounting() {
    let mut n = 0;
    for r in rows("epsilon_public.csv") {
        let want = num(&r, "eps_rdp").unwrap();
        let curve = RdpCurve::from_events(&ledger(&r)).unwrap();
        let (got, order) = curve.epsilon(num(&r, "delta").unwrap()).unwrap();
        let excluded = !r["rdp_orders_excluded"].is_empty();
        if excluded {
            assert!(got <= want * (1.0 + 1e-9), "{r:?}: rdp {got} > {want}");
        } else {
            assert!(
                rel(got, want) < 1e-9,
                "{r:?}: rdp {got} vs {want} (order {order})"
            );
            assert_eq!(order, num(&r, "rdp_order").unwrap(), "{r:?}");
        }
        n += 1;
    }
    assert_eq!(n, 233);
}

#[test]
fn epsilon_pld_within_band_and_above_truth() {
    // Group rows by (sigma, q, T) so that each composition runs once.
    let mut groups: HashMap<(String, String, String), Vec<Row>> = HashMap::new();
    for r in rows("epsilon_public.csv") {
        if num(&r, "eps_pld").is_some() {
            groups
                .entry((r["sigma"].clone(), r["q"].clone(), r["T"].clone()))
                .or_default()
                .push(r);
        }
    }
    let mut n = 0;
    for rs in groups.values() {
        let pld = ComposedPld::new(&ledger(&rs[0])).unwrap();
        for r in rs {
            let d = num(r, "delta").unwrap();
            let got = pld.epsilon(d).unwrap();
            let want = num(r, "eps_pld").unwrap();
            let band = (0.01 * want).max(5e-3);
            assert!((got - want).abs() <= band, "{r:?}: pld {got} vs {want}");
            if let Some(fine) = num(r, "eps_pld_fine") {
                assert!(
                    (got - fine).abs() <= band,
                    "{r:?}: pld {got} vs fine {fine}"
                );
            }
            if let Some(exact) = num(r, "eps_exact") {
                assert!(
                    got >= exact * (1.0 - 1e-12),
                    "{r:?}: pld {got} < exact {exact}"
                );
            }
            if let Some(lower) = num(r, "eps_prv_lower") {
                assert!(got >= lower, "{r:?}: pld {got} < prv lower {lower}");
            }
            n += 1;
        }
    }
    assert!(n > 150, "{n}");
}

#[test]
fn delta_queries_match() {
    let mut n = 0;
    for r in rows("delta_public.csv") {
        let ev = ledger(&r);
        let eps = num(&r, "eps").unwrap();
        let want_rdp = num(&r, "delta_rdp").unwrap();
        let got_rdp = delta(&ev, eps, AccountantKind::Rdp).unwrap();
        assert!(
            rel(got_rdp, want_rdp) < 1e-8 || (got_rdp - want_rdp).abs() < 1e-15,
            "{r:?}: rdp {got_rdp}"
        );
        if let Some(want) = num(&r, "delta_exact") {
            let got = delta(&ev, eps, AccountantKind::Exact).unwrap();
            assert!(
                rel(got, want) < 1e-9 || (got - want).abs() < 1e-15,
                "{r:?}: exact {got}"
            );
        }
        if let Some(want) = num(&r, "delta_pld") {
            let got = delta(&ev, eps, AccountantKind::Pld).unwrap();
            if let Some(exact) = num(&r, "delta_exact") {
                assert!(
                    got >= exact * (1.0 - 1e-9) - 1e-300,
                    "{r:?}: pld {got} < exact {exact}"
                );
            }
            // Below ~1e-13 both values sit at the numerical floor of an FFT
            // composition (rounding of ~1e-16 relative to the largest grid
            // probability, summed over 1e5..1e6 grid points), which this
            // accountant adds to delta on purpose rather than dropping.
            let tol = (0.05 * want).max(5e-14);
            assert!((got - want).abs() <= tol, "{r:?}: pld {got} vs {want}");
        }
        n += 1;
    }
    assert_eq!(n, 72);
}

#[test]
fn calibration_matches() {
    for r in rows("calibration_public.csv") {
        let q = num(&r, "q").unwrap();
        let t = num(&r, "T").unwrap() as u32;
        let target = num(&r, "target_eps").unwrap();
        let d = num(&r, "delta").unwrap();
        let want = num(&r, "sigma_rdp").unwrap();
        let got = calibrate_noise_multiplier(target, d, q, t, AccountantKind::Rdp).unwrap();
        assert!(rel(got, want) < 1e-8, "{r:?}: rdp sigma {got} vs {want}");
        if let Some(want) = num(&r, "sigma_exact") {
            let got = calibrate_noise_multiplier(target, d, q, t, AccountantKind::Exact).unwrap();
            assert!(rel(got, want) < 1e-11, "{r:?}: exact sigma {got} vs {want}");
            let best = calibrate_noise_multiplier(target, d, q, t, AccountantKind::Best).unwrap();
            assert_eq!(best, got);
        }
        if let Some(want) = num(&r, "sigma_pld") {
            let got = calibrate_noise_multiplier(target, d, q, t, AccountantKind::Pld).unwrap();
            assert!(
                (got - want).abs() <= 1e-3 * want + 1e-5,
                "{r:?}: pld sigma {got} vs {want}"
            );
        }
    }
}
