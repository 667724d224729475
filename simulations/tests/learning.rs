//! The learning layer in real federations (`tessera-sim run`: one
//! coordinator and one participant process per site, loopback mutual TLS,
//! secure aggregation): multi-class and regression tasks reach their
//! targets, and the federated evaluation — sums over the sites' held-out
//! rows, the only thing the coordinator learns — equals, without DP, the
//! same metrics computed centrally on the union of those rows (here the
//! pooled test split, which the sites' evaluation shares partition).
//!
//! - `multiclass_iris_over_five_sites`: softmax and the two-layer MLP reach
//!   ≥ 0.90 on iris dealt IID over five sites; the federated accuracy and
//!   row count equal the pooled test figures exactly (counts).
//! - `regression_against_a_central_fit`: linear regression on the diabetes
//!   data over five sites reaches an R² within 0.05 of ordinary least
//!   squares fitted centrally on the union of the sites' training rows; the
//!   federated RMSE, MAE and R² equal the pooled test figures; no site's own
//!   figures appear in the coordinator's logs, `rounds.csv`, store or
//!   `status`.
//! - `private_evaluation_is_in_the_ledger`: with DP, every evaluation is a
//!   ledger event (kind `evaluation`) counted in ε, and `ledger --json`
//!   lists it.

#![cfg(unix)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_testkit::command::{COMMAND_PATIENCE, run_json, sim_summary};
use tessera_testkit::files::fresh_dir;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn work_dir(name: &str) -> PathBuf {
    fresh_dir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("learning")
            .join(name),
    )
}

fn run(name: &str, args: &[&str]) -> (Value, PathBuf) {
    let out = work_dir(name);
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    (
        sim_summary(Path::new(SIM), &all, &out, COMMAND_PATIENCE),
        out,
    )
}

/// The last round's pooled test figures and its federated evaluation.
fn last_round(summary: &Value) -> (&Value, &Value) {
    let last = summary["history"]
        .as_array()
        .and_then(|h| h.last())
        .expect("a round");
    (last, &last["federated"])
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn multiclass_iris_over_five_sites() {
    for model in ["softmax", "mlp:16,8"] {
        let (summary, _) = run(
            &format!("iris-{}", model.replace([':', ','], "-")),
            &[
                "--data",
                &data("iris.csv"),
                "--label",
                "species",
                "--participants",
                "5",
                "--partition",
                "iid",
                "--rounds",
                "20",
                "--model",
                model,
                "--seed",
                "1",
                "--evaluate-every",
                "10",
            ],
        );
        assert_eq!(summary["task"], "multiclass", "{summary}");
        let accuracy = num(&summary["final_accuracy"]);
        assert!(accuracy >= 0.9, "{model}: {accuracy}");
        let (last, federated) = last_round(&summary);
        assert_eq!(
            num(&federated["rows"]),
            num(&summary["test_rows"]),
            "{last}"
        );
        // Exact counts: the same number of correct rows (six decimals kept).
        let rows = num(&federated["rows"]);
        assert_eq!(
            (num(&federated["accuracy"]) * rows).round(),
            (num(&last["accuracy"]) * rows).round(),
            "{model}: {last}"
        );
        assert!(num(&federated["balanced_accuracy"]) > 0.85, "{last}");
    }
}

/// A CSV of numbers: the header and the rows.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

/// Ordinary least squares with an intercept: the coefficients solving the
/// normal equations (Gaussian elimination with partial pivoting).
fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let d = x[0].len() + 1;
    let mut a = vec![vec![0.0; d + 1]; d];
    for (row, &t) in x.iter().zip(y) {
        let z: Vec<f64> = std::iter::once(1.0).chain(row.iter().copied()).collect();
        for i in 0..d {
            for j in 0..d {
                a[i][j] += z[i] * z[j];
            }
            a[i][d] += z[i] * t;
        }
    }
    for c in 0..d {
        let p = (c..d)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    (0..d).map(|i| a[i][d] / a[i][i]).collect()
}

#[test]
fn regression_against_a_central_fit() {
    let (summary, out) = run(
        "diabetes",
        &[
            "--data",
            &data("diabetes.csv"),
            "--label",
            "progression",
            "--participants",
            "5",
            "--partition",
            "iid",
            "--rounds",
            "30",
            "--model",
            "linear",
            "--seed",
            "1",
            "--evaluate-every",
            "10",
        ],
    );
    assert_eq!(summary["task"], "regression", "{summary}");
    // The central fit on the union of the sites' training rows.
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut label = 0;
    for entry in std::fs::read_dir(out.join("data/train")).unwrap() {
        let (header, rows) = read_csv(&entry.unwrap().path());
        label = header.iter().position(|h| h == "progression").unwrap();
        for mut r in rows {
            y.push(r.remove(label));
            x.push(r);
        }
    }
    let beta = least_squares(&x, &y);
    let (_, test) = read_csv(&out.join("data/test.csv"));
    let (mut sse, mut sst) = (0.0, 0.0);
    let mean = test.iter().map(|r| r[label]).sum::<f64>() / test.len() as f64;
    for mut r in test {
        let t = r.remove(label);
        let p = beta[0] + r.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
        sse += (p - t) * (p - t);
        sst += (t - mean) * (t - mean);
    }
    let central_r2 = 1.0 - sse / sst;
    let r2 = num(&summary["final_regression"]["r2"]);
    assert!(
        r2 >= central_r2 - 0.05,
        "federated R² {r2}, central {central_r2}"
    );
    let (last, federated) = last_round(&summary);
    for metric in ["rmse", "mae", "r2"] {
        let pooled = num(&last["regression"][metric]);
        let fed = num(&federated[metric]);
        assert!(
            (pooled - fed).abs() <= 1e-5 * pooled.abs().max(1.0),
            "{metric}: federated {fed}, pooled {pooled}"
        );
    }
    sites_own_figures_stay_with_them(&out, num(&federated["rmse"]));
}

/// No site's own evaluation figures (of the final model, which the last
/// evaluation round evaluated) appear in anything the coordinator keeps or
/// says: its logs, `rounds.csv`, its store, or `status`.
/// `global_rmse`, the released figure, is found there (the search works).
fn sites_own_figures_stay_with_them(out: &Path, global_rmse: f64) {
    let model = tessera_model::read_model(&out.join("coordinator/model.safetensors")).unwrap();
    let mut kept = String::new();
    for name in ["logs/coordinator.log", "coordinator/rounds.csv"] {
        kept += &std::fs::read_to_string(out.join(name)).unwrap();
    }
    for entry in std::fs::read_dir(out.join("coordinator")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("coordinator.sqlite") {
            kept += &String::from_utf8_lossy(&std::fs::read(&path).unwrap());
        }
    }
    let config = out.join("coordinator.toml");
    let status = tessera_testkit::command::run_ok(
        &[SIM],
        &[
            "coordinator",
            "status",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    kept += &String::from_utf8_lossy(&status.stdout);
    assert!(kept.contains(&format!("{global_rmse:.4}")), "{kept}");
    let mut checked = 0;
    for entry in std::fs::read_dir(out.join("data/eval")).unwrap() {
        let path = entry.unwrap().path();
        let site = tessera_model::load_csv(&path, &model.task).unwrap();
        let own = tessera_model::evaluate(&model, &site).unwrap();
        let r = own.regression.expect("regression scores");
        for value in [r.rmse, r.mae, r.r2, own.loss] {
            for text in [
                format!("{value:.4}"),
                format!("{value:.6}"),
                format!("{value}"),
            ] {
                assert!(
                    !kept.contains(&text),
                    "{}'s own figure {text} is in what the coordinator keeps",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 4 * 3);
}

#[test]
fn private_evaluation_is_in_the_ledger() {
    let (summary, out) = run(
        "private-evaluation",
        &[
            "--data",
            &data("breast_cancer_wisconsin.csv"),
            "--label",
            "diagnosis",
            "--participants",
            "4",
            "--partition",
            "iid",
            "--rounds",
            "4",
            "--model",
            "logistic",
            "--seed",
            "1",
            "--noise-multiplier",
            "2",
            "--evaluate-every",
            "2",
        ],
    );
    let config = out.join("coordinator.toml");
    let ledger = run_json(
        &[SIM],
        &[
            "coordinator",
            "ledger",
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
    );
    let rows = ledger["rows"].as_array().expect("ledger rows");
    let evaluations: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "evaluation").collect();
    // After training rounds 2 and 4 (the last).
    assert_eq!(evaluations.len(), 2, "{ledger}");
    for e in &evaluations {
        assert!(num(&e["noise_multiplier"]) > 0.0, "{e}");
    }
    // Counted in ε: the last row's cumulative ε is the summary's.
    let last = rows.last().unwrap();
    assert!(
        (num(&last["cumulative_epsilon"]) - num(&summary["epsilon"])).abs() < 1e-9,
        "{ledger}\n{summary}"
    );
    assert_eq!(
        last["kind"], "evaluation",
        "the final evaluation comes last"
    );
}
