//! `tessera-sim sweep` and `tessera-sim bench scale`, small sizes.
//!
//! What each test proves:
//! - `a_sweep_writes_the_table_and_the_plot`: two noise multipliers × two
//!   seeds plus the non-private baseline (six runs, two at a time, in
//!   process) give one `sweep.csv` row per run with ε, δ, seed and the
//!   final accuracy, ε smaller for more noise, each run's own directory,
//!   and `privacy_utility.png`/`.svg` with the axes and legend text;
//! - `the_scale_benchmark_prints_its_figures`: `bench scale` on a tiny
//!   federation prints seconds per round and peak memory for the engine.

#![cfg(unix)]

use std::process::Command;

use tessera_testkit::command::output_within;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::process::PATIENCE;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

#[test]
fn a_sweep_writes_the_table_and_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let mut cmd = Command::new(SIM);
    cmd.args(["sweep", "--data"])
        .arg(breast_cancer_path())
        .args([
            "--label",
            "diagnosis",
            "--participants",
            "4",
            "--rounds",
            "2",
        ])
        .args([
            "--noise-multipliers",
            "0.8,3",
            "--seeds",
            "2",
            "--jobs",
            "2",
        ])
        .arg("--out")
        .arg(&out);
    let result = output_within(cmd, PATIENCE * 2);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 6, "{csv}");
    assert!(csv.starts_with(
        "setting,noise_multiplier,target_epsilon,seed,epsilon,delta,final_accuracy,final_loss,final_rmse,rounds,private,task,run,placement,epsilon_against_coordinator\n"
    ));
    let eps_of = |sigma: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r[0] == "noise_multiplier" && r[1] == sigma)
            .map(|r| r[4].parse().unwrap())
            .collect()
    };
    let (low, high) = (eps_of("0.8"), eps_of("3"));
    assert_eq!((low.len(), high.len()), (2, 2), "{csv}");
    assert!(low[0] > high[0], "more noise, less ε: {csv}");
    let baseline: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == "non_private").collect();
    assert_eq!(baseline.len(), 2);
    assert!(
        baseline.iter().all(|r| r[4].is_empty()),
        "no ε without DP: {csv}"
    );
    for r in &rows {
        let acc: f64 = r[6].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(r[11], "binary");
        assert!(out.join("runs").join(r[12]).join("summary.json").is_file());
    }
    for file in ["privacy_utility.png", "privacy_utility.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let svg = std::fs::read_to_string(out.join("privacy_utility.svg")).unwrap();
    for text in [
        "ε spent",
        "final test accuracy",
        "mean over seeds",
        "non-private",
    ] {
        assert!(svg.contains(text), "{text} missing from the plot");
    }
    assert!(stdout.contains("6 of 6 runs finished"), "{stdout}");
}

#[test]
fn the_scale_benchmark_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(SIM);
    cmd.args(["bench", "scale", "--sites", "4", "--engines", "inprocess"])
        .args(["--rounds", "1", "--params", "200", "--json", "--out"])
        .arg(dir.path());
    let result = output_within(cmd, PATIENCE);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let points: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let p = &points[0];
    assert_eq!(p["engine"], "inprocess");
    assert_eq!(p["sites"], 4);
    assert!(p["params"].as_u64().unwrap() >= 200);
    assert!(p["seconds_per_round"].as_f64().unwrap() > 0.0);
    assert!(p["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
}
