//! Federated analytics inside a live federation, end to end: separate
//! `tessera-coordinator` and `tessera-participant` processes over loopback
//! mutual TLS, the four heart-disease hospitals each on its own CSV, the
//! queries of `[[analytics]]` asked through secure aggregation before
//! training.
//!
//! - `configured_queries_are_released_then_training_runs`: a count, a mean,
//!   a histogram and a most-common choice are released, the first three
//!   with values within a generous multiple of their noise's standard
//!   deviation of the exact pooled answer (the
//!   mechanisms' distributions are tested statistically in
//!   `analytics/tests`); Switzerland, whose `[analytics]` policy allows
//!   only `age`, declines the queries reading `cp` or `chol` and answers
//!   the histogram; each release is in the coordinator's ledger and store
//!   with its ε and the count of sites that answered and declined, and in
//!   the ledger of every site that answered it (and of no other); the
//!   training round then runs and the federation finishes as planned.
//! - `the_query_command_asks_a_running_coordinator`: an analytics-only
//!   federation (`rounds = 0`) whose status page is off loopback:
//!   `tessera-coordinator query` without a certificate is told to give an
//!   operator's, with a site's certificate (not an operator) is refused by
//!   the page, and with the operator's gets the release — printed with its
//!   noise scale and ε, and appended to the store.

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
const MOST_COMMON: &str = "most common cp among [1, 2, 3, 4]";

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

fn hospitals() -> Vec<SitePlan> {
    HOSPITALS
        .iter()
        .map(|h| SitePlan {
            name: h.to_string(),
            data: hospital_path(h),
            max_epsilon: None,
            min_noise_multiplier: None,
            crash_after_shares: None,
            trainer: None,
        })
        .collect()
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
    let mut plan = plain_plan(dir.path(), &hospitals());
    plan.task = heart_task();
    plan.rounds = 1;
    let mut fed = Federation::from_plan(plan, federation::standalone(&BinDir::containing(SIM)));
    append(
        &fed.layout.coordinator_config,
        &format!(
            "\n[[analytics]]\nquery = \"{COUNT}\"\nepsilon = 4.0\nmax_rows = {MAX_ROWS}\n\
             \n[[analytics]]\nquery = \"{MEAN}\"\nepsilon = 8.0\nmax_rows = {MAX_ROWS}\n\
             \n[[analytics]]\nquery = \"{HISTOGRAM}\"\nnoise_multiplier = 0.05\nmax_rows = {MAX_ROWS}\n\
             \n[[analytics]]\nquery = \"{MOST_COMMON}\"\nepsilon = 2.0\nmax_rows = {MAX_ROWS}\n"
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
    let exit = fed.wait_coordinator();
    assert!(exit.success(), "{}", fed.coordinator_log());
    for (name, status) in fed.wait_participants(tessera_testkit::process::PATIENCE) {
        assert!(status.success(), "{name}: {status:?}");
    }

    let store = fed.store();
    let rows = store.analytics().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
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
    assert!(
        se > 0.0 && (m - exact).abs() <= 6.0 * se,
        "{m} ± {se} vs {exact}"
    );
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
    // The most common chest-pain type: chosen by the exponential mechanism
    // among the public candidates (only the choice is released).
    let mode = rows[3].release.as_ref().expect("released");
    assert_eq!((rows[3].answered, rows[3].declined), (3, 1));
    let Answer::TopK { chosen } = &mode.answer else {
        panic!("{:?}", mode.answer)
    };
    assert!(chosen.len() == 1 && [1.0, 2.0, 3.0, 4.0].contains(&chosen[0]));
    assert_eq!((mode.epsilon, mode.delta), (2.0, 0.0));

    // The coordinator's ledger: the three releases, then training.
    let ledger = store.ledger().unwrap();
    let kinds: Vec<RoundKind> = ledger.iter().map(|r| r.kind).collect();
    assert_eq!(kinds[..4], [RoundKind::Analytics; 4], "{ledger:?}");
    let mechanisms: Vec<String> = ledger[..4].iter().map(|r| r.mechanism()).collect();
    assert_eq!(
        mechanisms,
        [
            "discrete_laplace",
            "discrete_laplace",
            "gaussian",
            "exponential"
        ],
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

    // `status` and the plain-language report list the releases with their ε.
    let coordinator = BinDir::containing(SIM).exe("tessera-coordinator");
    let config = fed.layout.coordinator_config.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&coordinator)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = run(&["status", "--config", &config]);
    assert!(
        status.contains("analytics:           count where (age > 65 and cp = 4) = ")
            && status.contains("ε = 4, δ = 0; 3 sites answered, 1 declined"),
        "{status}"
    );
    let report = run(&["report", "--config", &config]);
    assert!(report.contains("Analytics releases"), "{report}");
    assert!(report.contains("mean chol in [100, 600]"), "{report}");
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
            vec![
                "discrete_laplace",
                "discrete_laplace",
                "gaussian",
                "exponential",
            ]
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

#[test]
fn the_query_command_asks_a_running_coordinator() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-analytics-query-")
        .tempdir()
        .unwrap();
    let mut plan = plain_plan(dir.path(), &hospitals());
    plan.task = heart_task();
    plan.rounds = 0;
    let bins = BinDir::containing(SIM);
    let mut fed = Federation::from_plan(plan, federation::standalone(&bins));
    let coordinator = bins.exe("tessera-coordinator");
    tessera_certs::issue(&fed.layout.pki, "operator").unwrap();
    append(
        &fed.layout.coordinator_config,
        "\n[web]\nlisten = \"0.0.0.0:0\"\noperators = [\"operator\"]\n",
    );
    fed.start_coordinator();
    fed.wait_for("the page's address", |f| {
        std::fs::read_to_string(f.layout.coordinator_out.join("web_address"))
            .ok()
            .filter(|a| a.ends_with('\n'))
    });
    for site in fed.plan.sites.clone() {
        let config = fed.write_participant_config(&site);
        append(
            &config,
            "\n[analytics]\nallowed_columns = [\"age\", \"cp\"]\n",
        );
        fed.launch_participant(&site.name);
    }
    fed.wait_joined(&HOSPITALS);
    let config = fed.layout.coordinator_config.to_string_lossy().into_owned();
    let pki = fed.layout.pki.clone();
    let ask = |extra: &[String]| {
        let mut cmd = std::process::Command::new(&coordinator);
        cmd.args([
            "query",
            "--config",
            &config,
            "--epsilon",
            "2",
            "--max-rows",
            "400",
            "count where age > 65 and cp = 4",
        ]);
        cmd.args(extra);
        let out = cmd.output().expect("running tessera-coordinator query");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert_of = |name: &str| {
        vec![
            "--cert".to_owned(),
            pki.join(format!("{name}.crt"))
                .to_string_lossy()
                .into_owned(),
            "--key".to_owned(),
            pki.join(format!("{name}.key"))
                .to_string_lossy()
                .into_owned(),
        ]
    };
    let (ok, _, err) = ask(&[]);
    assert!(
        !ok && err.contains("--cert") && err.contains("operator"),
        "{err}"
    );
    let (ok, _, err) = ask(&cert_of("cleveland"));
    assert!(!ok && err.contains("operator list"), "{err}");
    assert!(fed.store().analytics().unwrap().is_empty());
    let (ok, out, err) = ask(&cert_of("operator"));
    assert!(ok, "{err}\n{}", fed.coordinator_log());
    assert!(out.contains("answer:"), "{out}");
    assert!(
        out.contains("scale 200.0000"),
        "Laplace scale 400 / 2: {out}"
    );
    assert!(out.contains("ε = 2 (δ = 0)"), "{out}");
    assert!(out.contains("4 answered, 0 declined"), "{out}");
    let rows = fed.store().analytics().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].origin, "operator");
    let release = rows[0].release.as_ref().expect("released");
    let Answer::Count { value } = release.answer else {
        panic!("{:?}", release.answer)
    };
    assert!(out.contains(&format!("answer:  {value}")), "{out}");
    assert_eq!(fed.store().ledger().unwrap().len(), 1);
    // A query that does not parse is refused with its position, before
    // anything reaches the coordinator.
    let mut cmd = std::process::Command::new(&coordinator);
    let out = cmd
        .args([
            "query",
            "--config",
            &config,
            "--epsilon",
            "1",
            "count wher age > 1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position 7"));
}
