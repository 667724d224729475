//! Ledgers whose releases carry total-variation slack (discretised noise,
//! sampled cohorts with a minimum size): δ grows by (1 + e^ε)·τ, and the ε
//! reported at δ leaves room for it.

use tessera_privacy::{AccountantKind, PrivacyEvent, delta, epsilon};

fn ledger(tau: f64) -> Vec<PrivacyEvent> {
    vec![
        PrivacyEvent::gaussian(5.0, 1.0, 1).with_tv_slack(tau / 2.0),
        PrivacyEvent::gaussian(1.1, 1.0, 30).with_tv_slack(tau / 2.0),
    ]
}

#[test]
fn slack_enters_delta_and_epsilon() {
    let d = 1e-5;
    for kind in [AccountantKind::Exact, AccountantKind::Rdp, AccountantKind::Best] {
        let plain = epsilon(&ledger(0.0), d, kind).unwrap().epsilon;
        for tau in [1e-12, 1e-9, 1e-8] {
            let e = epsilon(&ledger(tau), d, kind).unwrap().epsilon;
            assert!(e > plain, "{kind:?} τ = {tau}: {e} vs {plain}");
            // δ at the reported ε, slack included, is within the target.
            let back = delta(&ledger(tau), e, kind).unwrap();
            assert!(back <= d * (1.0 + 1e-6), "{kind:?} τ = {tau}: δ {back} > {d}");
            // And δ is exactly the slack-free δ plus (1 + e^ε)·τ.
            let free = delta(&ledger(0.0), e, kind).unwrap();
            let expected = free + (1.0 + e.exp()) * tau;
            assert!((back - expected).abs() <= 1e-12 * expected.max(1e-300) + 1e-20);
        }
    }
}

#[test]
fn slack_larger_than_delta_is_refused() {
    let err = epsilon(&ledger(1e-5), 1e-5, AccountantKind::Best).unwrap_err();
    assert!(err.to_string().contains("slack"), "{err}");
    let bad = PrivacyEvent::gaussian(1.0, 1.0, 1).with_tv_slack(f64::NAN);
    assert!(epsilon(&[bad], 1e-5, AccountantKind::Best).is_err());
}

#[test]
fn old_ledgers_without_slack_still_parse() {
    let text = r#"{"mechanism":"gaussian","noise_multiplier":1.0,"sampling_rate":0.5,"count":3}"#;
    let e: PrivacyEvent = serde_json::from_str(text).unwrap();
    assert_eq!(e.tv_slack(), 0.0);
    let with = PrivacyEvent::gaussian(1.0, 0.5, 3).with_tv_slack(2e-9);
    let round: PrivacyEvent = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(round, with);
    // No slack, no field: ledgers written before stay byte-identical.
    assert!(!serde_json::to_string(&e).unwrap().contains("tv_slack"));
}
