//! Ledgers whose releases carry total-variation slack (discretised noise,
//! sampled cohorts with a minimum size): δ grows by (1 + e^ε)·τ, and the ε
//! reported at δ leaves room for it. RDP needs no slack for
//! full-participation rounds (the discrete Gaussian has the continuous
//! one's Rényi divergences), only for sampled ones.

use tessera_privacy::{AccountantKind, PrivacyEvent, delta, epsilon};

/// Full participation: slack from discretised noise only.
fn full(tau: f64) -> Vec<PrivacyEvent> {
    vec![
        PrivacyEvent::gaussian(5.0, 1.0, 1).with_tv_slack(tau / 2.0),
        PrivacyEvent::gaussian(4.0, 1.0, 30).with_tv_slack(tau / 2.0),
    ]
}

/// Sampled rounds.
fn sampled(tau: f64) -> Vec<PrivacyEvent> {
    vec![PrivacyEvent::gaussian(1.0, 0.1, 50).with_tv_slack(tau)]
}

#[test]
fn slack_enters_delta_and_epsilon() {
    let d = 1e-5;
    for (ledger, kinds) in [
        (
            full as fn(f64) -> Vec<PrivacyEvent>,
            [AccountantKind::Exact, AccountantKind::Pld],
        ),
        (sampled, [AccountantKind::Rdp, AccountantKind::Pld]),
    ] {
        for kind in kinds {
            let plain = epsilon(&ledger(0.0), d, kind).unwrap().epsilon;
            for tau in [1e-12, 1e-10, 1e-9] {
                let e = epsilon(&ledger(tau), d, kind).unwrap().epsilon;
                assert!(e > plain, "{kind:?} τ = {tau}: {e} vs {plain}");
                // δ at the reported ε, slack included, is within the target.
                let back = delta(&ledger(tau), e, kind).unwrap();
                assert!(
                    back <= d * (1.0 + 1e-6),
                    "{kind:?} τ = {tau}: δ {back} > {d}"
                );
                // And δ is exactly the slack-free δ plus (1 + e^ε)·τ.
                let free = delta(&ledger(0.0), e, kind).unwrap();
                let expected = free + (1.0 + e.exp()) * tau;
                assert!((back - expected).abs() <= 1e-9 * expected, "{kind:?}");
            }
        }
    }
}

#[test]
fn rdp_needs_no_slack_for_full_participation() {
    let d = 1e-5;
    let free = epsilon(&full(0.0), d, AccountantKind::Rdp).unwrap().epsilon;
    let with = epsilon(&full(1e-9), d, AccountantKind::Rdp)
        .unwrap()
        .epsilon;
    assert_eq!(free, with);
    // Best takes the smallest valid answer, each accountant with its slack.
    let best = epsilon(&full(1e-9), d, AccountantKind::Best).unwrap();
    let exact = epsilon(&full(1e-9), d, AccountantKind::Exact)
        .unwrap()
        .epsilon;
    assert_eq!(best.epsilon, exact.min(with));
    assert_eq!(best.candidates.len(), 3);
}

#[test]
fn slack_larger_than_delta_is_refused() {
    // Sampled rounds: no accountant can absorb a slack as large as δ.
    let err = epsilon(&sampled(1e-5), 1e-5, AccountantKind::Best).unwrap_err();
    assert!(err.to_string().contains("no accountant applies"), "{err}");
    let err = epsilon(&sampled(1e-5), 1e-5, AccountantKind::Rdp).unwrap_err();
    assert!(err.to_string().contains("slack"), "{err}");
    // Full participation: RDP still bounds it.
    assert!(epsilon(&full(1e-5), 1e-5, AccountantKind::Best).is_ok());
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
