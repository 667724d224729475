//! Ledgers that mix Gaussian rounds with discrete-Laplace and
//! exponential-mechanism events.

use tessera_privacy::{AccountantKind, PrivacyEvent, delta, epsilon};

const KINDS: [AccountantKind; 3] = [
    AccountantKind::Rdp,
    AccountantKind::Pld,
    AccountantKind::Best,
];

#[test]
fn mixed_ledger_is_at_least_each_part() {
    let parts = [
        PrivacyEvent::gaussian(1.0, 0.02, 500),
        PrivacyEvent::gaussian(3.0, 1.0, 10),
        PrivacyEvent::DiscreteLaplace {
            epsilon: 0.5,
            count: 3,
        },
        PrivacyEvent::Exponential {
            epsilon: 0.2,
            count: 5,
        },
    ];
    for k in KINDS {
        let all = epsilon(&parts, 1e-6, k).unwrap().epsilon;
        for p in &parts {
            let one = epsilon(std::slice::from_ref(p), 1e-6, k).unwrap().epsilon;
            assert!(all >= one, "{k}: ledger {all} < part {p:?} {one}");
        }
    }
    // Exact does not apply to mechanisms other than full-participation Gaussians.
    assert!(epsilon(&parts, 1e-6, AccountantKind::Exact).is_err());
}

#[test]
fn pure_dp_events_compose_below_the_sum() {
    let few = [
        PrivacyEvent::DiscreteLaplace {
            epsilon: 0.3,
            count: 2,
        },
        PrivacyEvent::Exponential {
            epsilon: 0.4,
            count: 1,
        },
    ];
    for k in KINDS {
        let e = epsilon(&few, 1e-6, k).unwrap().epsilon;
        assert!(e <= 1.0 + 1e-12, "{k}: {e}");
        assert_eq!(delta(&few, 1.0, k).unwrap(), 0.0);
    }
    // Many small events: advanced composition beats the sum (10.0) by far.
    let many = [PrivacyEvent::DiscreteLaplace {
        epsilon: 0.1,
        count: 100,
    }];
    for k in KINDS {
        let e = epsilon(&many, 1e-6, k).unwrap().epsilon;
        assert!(e < 7.0, "{k}: {e}");
    }
    // PLD of randomised response is tight: it beats RDP here.
    let p = epsilon(&many, 1e-6, AccountantKind::Pld).unwrap().epsilon;
    let r = epsilon(&many, 1e-6, AccountantKind::Rdp).unwrap().epsilon;
    assert!(p <= r, "pld {p} rdp {r}");
    let single = [PrivacyEvent::Exponential {
        epsilon: 1.0,
        count: 1,
    }];
    for k in KINDS {
        assert!(epsilon(&single, 1e-9, k).unwrap().epsilon <= 1.0, "{k}");
    }
}

#[test]
fn discrete_laplace_pld_matches_closed_form() {
    // k-fold randomised response at eps0: delta(eps) = sum over i of
    // binomial terms (Kairouz, Oh & Viswanath 2015, Thm. 3.5).
    let (e0, k) = (0.2f64, 40u32);
    let ev = [PrivacyEvent::DiscreteLaplace {
        epsilon: e0,
        count: k,
    }];
    let p = 1.0 / (1.0 + e0.exp());
    let mut lbin = vec![0.0f64; k as usize + 1];
    for i in 1..=k as usize {
        lbin[i] = lbin[i - 1] + ((k as usize - i + 1) as f64).ln() - (i as f64).ln();
    }
    for eps in [0.5f64, 1.0, 2.0] {
        // loss = (k - 2i) e0 with prob C(k,i) p^i (1-p)^(k-i)
        let mut d = 0.0;
        for (i, lb) in lbin.iter().enumerate() {
            let l = (k as f64 - 2.0 * i as f64) * e0;
            if l > eps {
                let pr = (lb + i as f64 * p.ln() + (k as usize - i) as f64 * (1.0 - p).ln()).exp();
                d += pr * (1.0 - (eps - l).exp());
            }
        }
        let got = delta(&ev, eps, AccountantKind::Pld).unwrap();
        assert!(got >= d * (1.0 - 1e-9), "eps {eps}: pld {got} < true {d}");
        assert!(got <= d * 1.05 + 1e-12, "eps {eps}: pld {got} vs true {d}");
    }
}
