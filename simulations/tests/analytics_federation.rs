//! Federated analytics inside a live federation, end to end: separate
//! `tessera-coordinator` and `tessera-participant` processes over loopback
//! mutual TLS, the four heart-disease hospitals each on its own CSV, the
//! queries of `[[analytics]]` asked through secure aggregation before
//! training.
//!
//! - `configured_queries_are_released_then_training_runs`: a count, a mean
//!   and a histogram are released with values within a generous multiple of
//!   their noise's standard deviation of the exact pooled answer (the
//!   mechanisms' distributions are tested statistically in
//!   `analytics/tests`); Switzerland, whose `[analytics]` policy allows
//!   only `age`, declines the two queries reading `cp` or `chol` and answers
//!   the histogram; each release is in the coordinator's ledger and store
//!   with its ε and the count of sites that answered and declined, and in
//!   the ledger of every site that answered it (and of no other); the
//!   training round then runs and the federation finishes as planned.

#![cfg(unix)]

use std::io::Write;
use std::path::Path;

use tessera_analytics::site::{Table, exact_answer};
use tessera_analytics::{Answer, QueryPlan};
use tessera_coordinator::store::RoundStatus;
use tessera_model::RoundKind;
use tessera_participant::ledger::{LedgerStore, SiteLedger};
use tessera_simulations::launch::SitePlan;
use tessera_testkit::bins::BinDir;
use tessera_testkit::data::{HOSPITALS, heart_task, hospital_path};
use tessera_testkit::federation::{self, Federation, plain_plan};

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

/// Rows of the largest hospital (Cleveland, 303) fit under the cap, so the
/// capped sums are the exact ones.
const MAX_ROWS: u64 = 400;

const COUNT: &str = "count where age > 65 and cp = 4";
const MEAN: &str = "mean chol in [100, 600]";
const HISTOGRAM: &str = "histogram age edges [20, 40, 50, 60, 80]";

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("opening a configuration");
    f.write_all(text.as_bytes())
        .expect("appending to a configuration");
}

fn table(hospitals: &[&str]) -> Table {
    let tables: Vec<Table> = hospitals
        .iter()
        .map(|h| Table::read_csv(&hospital_path(h)).expect("reading a hospital"))
        .collect();
    Table::concat(&tables).expect("same columns")
}

fn plan_of(text: &str, noise: tessera_analytics::QueryNoise) -> QueryPlan {
    QueryPlan {
        query: tessera_analytics::parse_query(text).unwrap(),
        max_rows: MAX_ROWS,
        noise,
    }
}

#[test]
fn configured_queries_are_released_then_training_runs() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-analytics-")
        .tempdir()
        .unwrap();
    let sites: Vec<SitePlan> = HOSPITALS
        .iter()
        .map(|h| SitePlan {
            name: h.to_string(),
            data: hospital_path(h),
            max_epsilon: None,
            min_noise_multiplier: None,
            crash_after_shares: None,
            trainer: None,
        })
        .collect();
    let mut plan = plain_plan(dir.path(), &sites);
    plan.task = heart_task();
    plan.rounds = 1;
    let mut fed = Federation::from_plan(plan, federation::standalone(&BinDir::containing(SIM)));
    append(
        &fed.layout.coordinator_config,
        &format!(
            "\n[[analytics]]\nquery = \"{COUNT}\"\nepsilon = 4.0\nmax_rows = {MAX_ROWS}\n\
             \n[[analytics]]\nquery = \"{MEAN}\"\nepsilon = 8.0\nmax_rows = {MAX_ROWS}\n\
             \n[[analytics]]\nquery = \"{HISTOGRAM}\"\nnoise_multiplier = 0.05\nmax_rows = {MAX_ROWS}\n"
        ),
    );
    fed.start_coordinator();
    for site in fed.plan.sites.clone() {
        let config = fed.write_participant_config(&site);
        let allowed = if site.name == "switzerland" {
            "[\"age\"]"
        } else {
            "[\"age\", \"cp\", \"chol\"]"
        };
        append(
            &config,
            &format!("\n[analytics]\nallowed_columns = {allowed}\nmax_rows = {MAX_ROWS}\n"),
        );
        fed.launch_participant(&site.name);
    }
    let status = fed.wait_coordinator();
    assert!(status.success(), "{}", fed.coordinator_log());
    for (name, status) in fed.wait_participants(tessera_testkit::process::PATIENCE) {
        assert!(status.success(), "{name}: {status:?}");
    }

    let store = fed.store();
    let rows = store.analytics().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let answering = ["cleveland", "hungary", "va_long_beach"];
    // The count: three sites answered, Switzerland declined.
    let count = &rows[0];
    assert_eq!(count.origin, "config:0");
    assert_eq!((count.answered, count.declined), (3, 1));
    let release = count.release.as_ref().expect("released");
    let exact = exact_answer(
        &plan_of(COUNT, tessera_analytics::QueryNoise::Epsilon(4.0)),
        &table(&answering),
    )
    .unwrap()[0];
    let Answer::Count { value } = release.answer else {
        panic!("{:?}", release.answer)
    };
    let std = release.noise[0].std;
    assert!((std - 141.4).abs() < 1.0, "Laplace scale 100: std {std}");
    assert!((value - exact).abs() <= 6.0 * std, "{value} vs {exact}");
    assert_eq!((release.epsilon, release.delta), (4.0, 0.0));
    // The mean, with its error bar.
    let mean = rows[1].release.as_ref().expect("released");
    assert_eq!((rows[1].answered, rows[1].declined), (3, 1));
    let exact = exact_answer(
        &plan_of(MEAN, tessera_analytics::QueryNoise::Epsilon(8.0)),
        &table(&answering),
    )
    .unwrap()[0];
    let Answer::Mean {
        value: Some(m),
        std_error: Some(se),
        ..
    } = mean.answer
    else {
        panic!("{:?}", mean.answer)
    };
    assert!(se > 0.0 && (m - exact).abs() <= 6.0 * se, "{m} ± {se} vs {exact}");
    // The histogram: every hospital answered.
    let hist = rows[2].release.as_ref().expect("released");
    assert_eq!((rows[2].answered, rows[2].declined), (4, 0));
    let exact = exact_answer(
        &plan_of(
            HISTOGRAM,
            tessera_analytics::QueryNoise::NoiseMultiplier(0.05),
        ),
        &table(&HOSPITALS),
    )
    .unwrap();
    let Answer::Histogram { counts, .. } = &hist.answer else {
        panic!("{:?}", hist.answer)
    };
    let std = hist.noise[0].std;
    assert!((std - 20.0).abs() < 0.5, "σ·cap = 20: std {std}");
    for (c, e) in counts.iter().zip(&exact) {
        assert!((c - e).abs() <= 6.0 * std, "{counts:?} vs {exact:?}");
    }
    assert!(hist.delta > 0.0 && hist.epsilon > 0.0);

    // The coordinator's ledger: the three releases, then training.
    let ledger = store.ledger().unwrap();
    let kinds: Vec<RoundKind> = ledger.iter().map(|r| r.kind).collect();
    assert_eq!(kinds[..3], [RoundKind::Analytics; 3], "{ledger:?}");
    let mechanisms: Vec<String> = ledger[..3].iter().map(|r| r.mechanism()).collect();
    assert_eq!(
        mechanisms,
        ["discrete_laplace", "discrete_laplace", "gaussian"],
        "{ledger:?}"
    );
    assert_eq!(ledger[0].event, release.event);
    let rounds = fed.store_rounds();
    assert!(
        rounds
            .iter()
            .any(|r| r.kind == RoundKind::Training && r.status == RoundStatus::Released),
        "{rounds:?}"
    );

    // Every site's own ledger holds the queries it answered, and only those.
    for h in HOSPITALS {
        let path = find_ledger(dir.path(), h);
        let site = SiteLedger::open_read_only(&path).unwrap();
        let answered: Vec<String> = site
            .contributions()
            .unwrap()
            .into_iter()
            .filter(|c| c.kind == "analytics")
            .map(|c| {
                let event = serde_json::to_value(c.event.expect("a query's event")).unwrap();
                event["mechanism"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected: Vec<&str> = if h == "switzerland" {
            vec!["gaussian"]
        } else {
            vec!["discrete_laplace", "discrete_laplace", "gaussian"]
        };
        assert_eq!(answered, expected, "{h}");
    }
}

/// The site ledger of `site` somewhere under `root`.
fn find_ledger(root: &Path, site: &str) -> std::path::PathBuf {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "site-ledger.sqlite")
                && p.to_string_lossy().contains(site)
            {
                return p;
            }
        }
    }
    panic!("no site ledger of {site} under {}", root.display())
}
