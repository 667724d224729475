//! The sites' own budgets agreed before the first round, with the real
//! machines: a plan that does not fit is refused naming the sites and the
//! figures, or fitted to the tightest site; the sites' ledgers stay within
//! what they declared.

use tessera_coordinator::round::Resume;
use tessera_coordinator::round::budgets::SiteBudgetPolicy;
use tessera_coordinator::settings::Settings;
use tessera_participant::config::SitePrivacySection;
use tessera_participant::site::SitePolicy;

use super::InMemoryFederation;
use super::scenario::Scenario;

const SITES: usize = 4;

/// The in-memory scenario over four sites, at σ = 2 with `rounds` planned
/// rounds and the sites' budgets handled by `site_budgets`.
fn settings(rounds: u32, site_budgets: SiteBudgetPolicy) -> Settings {
    scenario().settings_with(rounds, |c| {
        c.federation.min_participants = 3;
        c.federation.site_budgets = site_budgets;
        c.privacy.noise_multiplier = Some(2.0);
    })
}

fn scenario() -> Scenario {
    Scenario {
        sites: SITES,
        drops: 0,
    }
}

fn policy(max_epsilon: f64) -> SitePolicy {
    SitePolicy {
        privacy: SitePrivacySection {
            max_epsilon: Some(max_epsilon),
            ..SitePrivacySection::default()
        },
        ..SitePolicy::default()
    }
}

fn data() -> Vec<(String, tessera_participant::data::LocalData)> {
    scenario().data(3)
}

#[test]
fn a_plan_past_the_sites_budgets_is_refused_before_the_first_round() {
    let fed = InMemoryFederation::new(
        &settings(300, SiteBudgetPolicy::Refuse),
        Resume::default(),
        data(),
        &policy(10.0),
        1,
    )
    .unwrap();
    let out = fed.run(100_000).unwrap();
    let (reason, success) = out.finished.unwrap();
    assert!(!success);
    assert!(
        reason.contains("does not fit the sites' own privacy terms"),
        "{reason}"
    );
    assert!(
        reason.contains("site000") && reason.contains("ε ≤ 10"),
        "{reason}"
    );
    assert!(reason.contains("of the 300 remaining rounds"), "{reason}");
    assert!(out.released.is_empty() && out.aborted.is_empty());
}

#[test]
fn a_plan_fitted_to_the_tightest_site_runs_to_its_end() {
    let fed = InMemoryFederation::new(
        &settings(300, SiteBudgetPolicy::Fit),
        Resume::default(),
        data(),
        &policy(3.0),
        2,
    )
    .unwrap();
    let out = fed.run(10_000_000).unwrap();
    let (reason, success) = out.finished.clone().unwrap();
    assert!(success, "{reason}");
    let training = out
        .released
        .iter()
        .filter(|c| c.summary.training_round.is_some())
        .count();
    assert!(
        training > 0 && training < 300,
        "{training} rounds, {reason}"
    );
    assert!(
        reason.contains(&format!("all {training} planned rounds completed")),
        "{reason}"
    );
    // No site had to decline: each ledger is within the budget it declared.
    assert!(out.aborted.is_empty(), "{:?}", out.aborted);
    for (name, rows) in &out.site_ledgers {
        let events: Vec<_> = rows.iter().map(|c| c.event()).collect();
        let eps = tessera_privacy::epsilon(&events, 1e-5, tessera_privacy::AccountantKind::Best)
            .unwrap()
            .epsilon;
        assert!(eps <= 3.0, "{name}: ε {eps}");
        assert_eq!(
            rows.len(),
            training + 1,
            "{name}: statistics and every training round"
        );
    }
}
