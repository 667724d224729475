//! Acceptance tests of private rounds with real processes: one coordinator
//! process and one process per participant (`tessera-sim coordinator …`,
//! `tessera-sim participant …`, the same code as the stand-alone binaries),
//! talking gRPC over loopback mutual TLS, with secure aggregation, exact
//! discrete Gaussian noise and the SQLite stores of both sides. The data is
//! the bundled breast-cancer set split IID over the sites; the model is
//! logistic so that rounds are cheap. (The coordinator killed at every
//! stage of a round: `crash_safety.rs`; fresh and seeded noise through
//! `tessera-sim run`: `fresh_noise.rs`.)
//!
//! - `budget_stop_is_exact_and_the_ledger_agrees_with_privacy_epsilon`: a
//!   federation with a fixed noise multiplier, more planned rounds than fit,
//!   and `max_epsilon = 2` at δ = 1e-5 stops on its own exactly when the next
//!   round would exceed the budget: the coordinator exits successfully, its
//!   finish reason (store and log) names the budget, the ledger's ε ≤ 2 and
//!   one more training event would take it past 2. The `ledger --json`
//!   command agrees with the accountant on the ledger's own rows and with
//!   `privacy epsilon` (to 1e-9 relative): `privacy epsilon` describes T
//!   rounds of one noise multiplier, so it expresses the training part of the
//!   ledger directly; the statistics release has another noise multiplier,
//!   and the whole ledger is expressed through the one Gaussian that full
//!   participation composes to (σ_eff = (Σ 1/σᵢ²)^-½, one round), which the
//!   exact accountant certifies identically.
//! - `site_budget_and_minimum_noise_are_enforced_by_the_sites`: seven
//!   sites; across processes, a site whose `max_epsilon` is below the
//!   federation's budget declines exactly the round that would take it past
//!   (and is invited to no later one: the coordinator counts it spent),
//!   says why in its log, and its `participant ledger
//!   --json` shows its rounds and ε ≤ its maximum — equal to the
//!   coordinator's cumulative ε after the last round it contributed to; the
//!   federation (started with `site_budgets = "proceed"`) goes on without it. Sites that took part in every round
//!   (statistics included: they count it too) report exactly the
//!   coordinator's ε, row by row. A site whose `min_noise_multiplier` is
//!   above every announced σ declines every round and records nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tessera_coordinator::budget;
use tessera_coordinator::round::budgets::SiteBudgetPolicy;
use tessera_coordinator::store::RoundStatus;
use tessera_model::RoundKind;
use tessera_privacy::{AccountantKind, PrivacyEvent};
use tessera_testkit::command;
use tessera_testkit::federation::{Accounting, Federation, Setup, sim_entry_points};
use tessera_testkit::files::field;

/// The `tessera-sim` binary built for these tests; its `coordinator` and
/// `participant` entry points run the federations.
const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

/// δ and the statistics release of every federation here (`tessera-sim
/// run`'s defaults).
const LEDGER: Accounting = Accounting::RUN_DEFAULTS;
const DELTA: f64 = LEDGER.delta;
/// Noise multiplier of the statistics release.
const STATISTICS_SIGMA: f64 = LEDGER.statistics_sigma;

fn eps(events: &[PrivacyEvent]) -> f64 {
    LEDGER.epsilon(events)
}

/// The statistics release followed by `t` training rounds at `sigma`, q = 1.
fn schedule(sigma: f64, t: u32) -> Vec<PrivacyEvent> {
    LEDGER.schedule(sigma, t)
}

/// A fresh working directory for one test under the target directory,
/// kept after the run (logs, stores) so that a failure can be examined.
fn work_dir_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("privacy")
        .join(name)
}

/// A launched federation of `setup` (nothing started yet).
fn prepare(setup: &Setup) -> Federation {
    Federation::prepare(setup, sim_entry_points(SIM))
}

/// A JSON number.
fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Relative difference of two positive figures.
fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// The largest number of training rounds at `sigma` that fits in `max_eps`
/// after the statistics release.
fn rounds_that_fit(sigma: f64, max_eps: f64) -> u32 {
    let mut t = 0;
    while eps(&schedule(sigma, t + 1)) <= max_eps {
        t += 1;
    }
    t
}

#[test]
fn budget_stop_is_exact_and_the_ledger_agrees_with_privacy_epsilon() {
    const MAX_EPS: f64 = 2.0;
    const SIGMA: f64 = 4.0;
    let fit = rounds_that_fit(SIGMA, MAX_EPS);
    assert!(
        (2..=6).contains(&fit),
        "σ = {SIGMA} fits {fit} rounds in ε = {MAX_EPS}; the test wants a few"
    );
    let planned = fit + 4;

    let mut setup = Setup::private(4, planned, SIGMA, work_dir_path("budget_stop"));
    setup.privacy.max_epsilon = Some(MAX_EPS);
    setup.privacy.delta = DELTA;
    setup.privacy.statistics_noise_multiplier = STATISTICS_SIGMA;
    let mut fed = prepare(&setup);
    fed.start_coordinator();
    fed.start_participants();
    let status = fed.wait_coordinator_within(Duration::from_secs(600));
    assert!(
        status.success(),
        "the coordinator failed ({status}):\n{}",
        fed.coordinator_log()
    );
    for (name, status) in fed.wait_participants(Duration::from_secs(60)) {
        assert!(status.success(), "participant {name} exited with {status}");
    }

    // Why it stopped: the budget, in the store and in the log.
    let store = fed.store();
    let reason = store
        .meta("finish_reason")
        .unwrap()
        .expect("a finish reason");
    assert!(
        reason.contains("privacy budget reached"),
        "finish reason: {reason}"
    );
    assert!(
        reason.contains(&format!("training round {}", fit + 1)),
        "{reason}"
    );
    let log = fed.coordinator_log();
    assert!(
        log.lines()
            .any(|l| l.contains("federation finished") && l.contains("privacy budget reached")),
        "the coordinator log does not say the budget stopped it:\n{log}"
    );

    // The ledger: the statistics release, then exactly the rounds that fit.
    let rows = store.ledger().unwrap();
    assert_eq!(rows.len() as u32, fit + 1, "ledger rows: {rows:#?}");
    assert_eq!(rows[0].kind, RoundKind::Statistics);
    assert_eq!(rows[0].noise_multiplier, STATISTICS_SIGMA);
    for (i, r) in rows[1..].iter().enumerate() {
        assert_eq!(r.kind, RoundKind::Training);
        assert_eq!(r.training_round, Some(i as u32 + 1));
        assert_eq!(r.noise_multiplier, SIGMA);
        assert_eq!(r.sampling_rate, 1.0);
    }
    let events: Vec<PrivacyEvent> = rows.iter().map(|r| r.event.clone()).collect();
    let spent = eps(&events);
    assert!(spent <= MAX_EPS, "ledger ε = {spent} > {MAX_EPS}");
    let next = budget::epsilon_after(
        &events,
        &budget::training_event(SIGMA, 1.0),
        DELTA,
        AccountantKind::Best,
    )
    .unwrap();
    assert!(
        next > MAX_EPS,
        "one more round would give ε = {next} ≤ {MAX_EPS}: the federation stopped early"
    );
    let model = tessera_model::read_model(&fed.layout.coordinator_out.join("model.safetensors"))
        .expect("the final model");
    assert_eq!(model.round, fit);

    // `ledger --json` against the accountant on the ledger's own rows.
    let report = fed.coordinator_ledger_json();
    assert_eq!(num(&report["delta"], "delta"), DELTA);
    let report_rows = report["rows"].as_array().expect("rows");
    assert_eq!(report_rows.len(), rows.len());
    let mut previous = 0.0;
    for (i, r) in report_rows.iter().enumerate() {
        assert_eq!(r["round"].as_u64(), Some(rows[i].round));
        let cumulative = num(&r["cumulative_epsilon"], "cumulative_epsilon");
        let expected = eps(&events[..=i]);
        assert!(
            rel_diff(cumulative, expected) <= 1e-9,
            "row {i}: {cumulative} vs {expected}"
        );
        assert!(cumulative >= previous && cumulative <= MAX_EPS);
        previous = cumulative;
    }
    let ledger_eps = num(&report["epsilon"], "epsilon");
    assert!(
        rel_diff(ledger_eps, spent) <= 1e-9,
        "{ledger_eps} vs {spent}"
    );

    // `privacy epsilon` for the same rounds. It takes one noise multiplier
    // and one sampling rate for T rounds: the training part of the ledger
    // is exactly that.
    let t = fit.to_string();
    let sigma = format!("{SIGMA:?}");
    let delta = format!("{DELTA:e}");
    let training = run_privacy_epsilon(&sigma, &t, &delta);
    let training_eps = num(&training["epsilon"], "epsilon");
    let training_events: Vec<PrivacyEvent> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Training)
        .map(|r| r.event.clone())
        .collect();
    assert!(
        rel_diff(training_eps, eps(&training_events)) <= 1e-9,
        "privacy epsilon {training_eps} vs the ledger's training rows {}",
        eps(&training_events)
    );
    assert!(
        training_eps < ledger_eps,
        "the statistics release must count"
    );
    // The statistics release has its own noise multiplier, which `privacy
    // epsilon` cannot take alongside the training rounds. Under full
    // participation the composition of Gaussian releases is one Gaussian
    // with 1/σ_eff² = Σ 1/σᵢ² (μ-GDP), and the exact accountant certifies
    // it identically: the whole ledger as one round at σ_eff.
    let inverse_sq: f64 = rows
        .iter()
        .map(|r| {
            assert_eq!(r.sampling_rate, 1.0);
            r.noise_multiplier.powi(-2)
        })
        .sum();
    let sigma_eff = format!("{:?}", inverse_sq.powf(-0.5));
    let whole = run_privacy_epsilon(&sigma_eff, "1", &delta);
    assert_eq!(whole["accountant"], "exact", "{whole}");
    let whole_eps = num(&whole["epsilon"], "epsilon");
    assert!(
        rel_diff(whole_eps, ledger_eps) <= 1e-9,
        "privacy epsilon at σ_eff = {sigma_eff}: {whole_eps}; ledger: {ledger_eps}"
    );
}

fn run_privacy_epsilon(sigma: &str, rounds: &str, delta: &str) -> Value {
    command::run_json(
        &[SIM],
        &[
            "coordinator",
            "privacy",
            "epsilon",
            "--noise-multiplier",
            sigma,
            "--sampling-rate",
            "1",
            "--rounds",
            rounds,
            "--delta",
            delta,
            "--json",
        ],
    )
}

#[test]
fn site_budget_and_minimum_noise_are_enforced_by_the_sites() {
    const SIGMA: f64 = 3.0;
    const PLANNED: u32 = 5;
    const FEDERATION_MAX: f64 = 3.5;
    const LIMITED: usize = 0; // the site with its own small budget
    const STRICT: usize = 6; // the site that wants more noise than anyone announces
    const SITES: usize = 7;
    let federation_eps = eps(&schedule(SIGMA, PLANNED));
    assert!(federation_eps <= FEDERATION_MAX, "{federation_eps}");
    // The limited site fits the statistics and two training rounds.
    let fits = 2;
    let site_max = 0.5 * (eps(&schedule(SIGMA, fits)) + eps(&schedule(SIGMA, fits + 1)));
    assert!(site_max < FEDERATION_MAX);
    let strict_min = 50.0;
    assert!(strict_min > SIGMA.max(STATISTICS_SIGMA));

    let mut setup = Setup::private(SITES, PLANNED, SIGMA, work_dir_path("site_budget"));
    setup.privacy.max_epsilon = Some(FEDERATION_MAX);
    setup.privacy.delta = DELTA;
    setup.privacy.statistics_noise_multiplier = STATISTICS_SIGMA;
    // Two of seven sites decline rounds: within the default dropout
    // tolerance (0.3) of secure aggregation.
    let mut limits = vec![(None, None); SITES];
    limits[LIMITED] = (Some(site_max), None);
    limits[STRICT] = (None, Some(strict_min));
    setup.site_limits = limits;
    // The consortium accepts the limited and the strict site knowing they
    // will sit rounds out: the coordinator starts as planned.
    setup.site_budgets = SiteBudgetPolicy::Proceed;
    let mut fed = prepare(&setup);
    fed.start_coordinator();
    fed.start_participants();
    let status = fed.wait_coordinator_within(Duration::from_secs(600));
    assert!(
        status.success(),
        "the coordinator failed ({status}):\n{}",
        fed.coordinator_log()
    );
    for (name, status) in fed.wait_participants(Duration::from_secs(60)) {
        assert!(status.success(), "participant {name} exited with {status}");
    }
    let names = fed.site_names();
    let store = fed.store();
    assert_eq!(
        store.meta("finish_reason").unwrap().as_deref(),
        Some(format!("all {PLANNED} planned rounds completed").as_str()),
        "the federation did not go on without the declining sites"
    );

    // The coordinator's view: who contributed to which released round.
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len() as u32, PLANNED + 1);
    let released: Vec<_> = store
        .rounds()
        .unwrap()
        .into_iter()
        .filter(|r| r.status == RoundStatus::Released)
        .collect();
    assert_eq!(released.len() as u32, PLANNED + 1);
    let report = fed.coordinator_ledger_json();
    let coordinator_eps = num(&report["epsilon"], "epsilon");
    let cumulative_by_round: BTreeMap<u64, f64> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["round"].as_u64().unwrap(),
                num(&r["cumulative_epsilon"], "cumulative_epsilon"),
            )
        })
        .collect();
    for r in &released {
        let limited_in = r.training_round.is_none_or(|t| t <= fits);
        assert_eq!(
            r.contributors.contains(&names[LIMITED]),
            limited_in,
            "round {} ({:?}): contributors {:?}",
            r.round,
            r.training_round,
            r.contributors
        );
        assert!(!r.contributors.contains(&names[STRICT]), "{r:?}");
        assert!(r.dropped.contains(&names[STRICT]), "{r:?}");
        assert_eq!(
            r.contributors.len(),
            if limited_in { SITES - 1 } else { SITES - 2 },
            "{r:?}"
        );
    }

    // The limited site: declined exactly from the round that would pass its
    // budget, said why, and its own ledger stops within its budget.
    let log = fed.log(&names[LIMITED]);
    let declined: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("declining the round"))
        .map(|l| {
            assert!(l.contains("past its budget"), "{l}");
            field(l, "round").unwrap().parse().unwrap()
        })
        .collect();
    let beyond: Vec<u64> = released
        .iter()
        .filter(|r| r.training_round.is_some_and(|t| t > fits))
        .map(|r| r.round)
        .collect();
    // Once it has declined for its budget the coordinator counts it spent
    // and invites it no more: one decline, at the first round beyond.
    assert_eq!(declined, beyond[..1], "declined rounds:\n{log}");
    let coordinator_log = fed.coordinator_log();
    let limited = format!("participant={} ", names[LIMITED]);
    let declines_seen = coordinator_log
        .lines()
        .filter(|l| l.contains("participant declined the round") && l.contains(&limited))
        .count();
    assert_eq!(declines_seen, 1, "{coordinator_log}");
    let first_decline = log
        .lines()
        .find(|l| l.contains("declining the round"))
        .unwrap();
    assert!(
        first_decline.contains(&format!("past its budget {site_max}")),
        "{first_decline}"
    );
    let site = fed.participant_ledger_json(&names[LIMITED]);
    let site_rows = site["rows"].as_array().unwrap();
    let kinds: Vec<(&str, Option<u64>)> = site_rows
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["training_round"].as_u64()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("statistics", None),
            ("training", Some(1)),
            ("training", Some(2))
        ]
    );
    let site_eps = num(&site["epsilon"], "epsilon");
    assert!(site_eps <= site_max, "{site_eps} > {site_max}");
    assert_eq!(num(&site["max_epsilon"], "max_epsilon"), site_max);
    let last_contributed = released
        .iter()
        .find(|r| r.training_round == Some(fits))
        .unwrap()
        .round;
    let coordinator_then = cumulative_by_round[&last_contributed];
    assert!(
        rel_diff(site_eps, coordinator_then) <= 1e-9,
        "site ε {site_eps} vs the coordinator's {coordinator_then} after training round {fits}"
    );
    assert!(eps(&schedule(SIGMA, fits + 1)) > site_max);

    // Sites that took part in every round, statistics included: the same ε.
    let ledger_rounds: Vec<u64> = ledger.iter().map(|r| r.round).collect();
    for (i, name) in names.iter().enumerate() {
        if i == LIMITED || i == STRICT {
            continue;
        }
        let site = fed.participant_ledger_json(name);
        let rows = site["rows"].as_array().unwrap();
        let rounds: Vec<u64> = rows.iter().map(|r| r["round"].as_u64().unwrap()).collect();
        assert_eq!(rounds, ledger_rounds, "{name}");
        assert_eq!(rows[0]["kind"], "statistics", "{name}");
        assert_eq!(num(&rows[0]["noise_multiplier"], "σ"), STATISTICS_SIGMA);
        let e = num(&site["epsilon"], "epsilon");
        assert!(
            rel_diff(e, coordinator_eps) <= 1e-9,
            "{name}: site ε {e} vs coordinator ε {coordinator_eps}"
        );
        for (row, (round, cumulative)) in rows.iter().zip(&cumulative_by_round) {
            assert_eq!(row["round"].as_u64(), Some(*round));
            let c = num(&row["cumulative_epsilon"], "cumulative_epsilon");
            assert!(rel_diff(c, *cumulative) <= 1e-9, "{name} round {round}");
        }
    }

    // The strict site declined every round announced to it, before any data
    // was touched, and recorded nothing.
    let log = fed.log(&names[STRICT]);
    let declined: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("declining the round"))
        .map(|l| {
            assert!(l.contains("below this site's minimum"), "{l}");
            field(l, "round").unwrap().parse().unwrap()
        })
        .collect();
    let all: Vec<u64> = released.iter().map(|r| r.round).collect();
    assert_eq!(declined, all, "{log}");
    assert!(!log.contains("round accepted"), "{log}");
    let site = fed.participant_ledger_json(&names[STRICT]);
    assert_eq!(site["rows"].as_array().unwrap().len(), 0);
    assert_eq!(num(&site["epsilon"], "epsilon"), 0.0);
}
