//! `tessera-sim sweep --select` on the four heart-disease hospitals: the
//! choice is one of the private settings, its ε and its ledger event are
//! reported with it, the sweep's ε composes every private run's and the
//! choice's, a large ε picks the setting whose models classify the most
//! held-out rows correctly, and a sweep that cannot score its settings is
//! refused before any run starts.

#![cfg(unix)]

use std::path::Path;
use std::process::Command;

use tessera_testkit::command::output_within;
use tessera_testkit::data::{HOSPITALS, hospital_path};
use tessera_testkit::process::PATIENCE;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

fn sweep(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(SIM);
    cmd.arg("sweep");
    for h in HOSPITALS {
        cmd.arg("--data").arg(hospital_path(h));
    }
    cmd.args([
        "--label", "num", "--rounds", "3", "--seeds", "1", "--jobs", "2",
    ])
    .args(["--noise-multipliers", "0.6,20", "--no-baseline"])
    .args(extra)
    .arg("--out")
    .arg(out);
    output_within(cmd, PATIENCE * 2)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_choice_is_reported_with_its_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let r = sweep(
        &out,
        &[
            "--evaluate-every",
            "3",
            "--select",
            "--select-epsilon",
            "100",
        ],
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(stdout.contains("Selected  noise_multiplier="), "{stdout}");
    assert!(stdout.contains("ε = 100 (pure)"), "{stdout}");
    let s = json(&out.join("selection.json"));
    assert_eq!(
        s["candidates"],
        serde_json::json!(["noise_multiplier=0.6", "noise_multiplier=20"])
    );
    assert_eq!(s["epsilon"], 100.0);
    assert_eq!(s["event"]["mechanism"], "exponential");
    assert_eq!(s["event"]["epsilon"], 100.0);
    assert_eq!(s["sites"], 4);
    assert_eq!(s["not_private"], false);
    // The sweep's ε: every private run's and the choice's.
    let mut total = 100.0;
    let mut accuracy = Vec::new();
    for run in ["sigma-0.6-seed-1", "sigma-20-seed-1"] {
        let summary = json(&out.join("runs").join(run).join("summary.json"));
        total += summary["epsilon"].as_f64().unwrap();
        accuracy.push(summary["final_accuracy"].as_f64().unwrap());
    }
    assert!((s["total_epsilon"].as_f64().unwrap() - total).abs() < 1e-9);
    // The held-out rows are the pooled test split, so at ε = 100 (weights
    // e^{100·Δu/(2·sensitivity)}) the choice is the better test accuracy
    // unless the two differ by under a few rows.
    let rows: usize = std::fs::read_dir(out.join("runs/sigma-0.6-seed-1/data/eval"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
                - 1
        })
        .sum();
    assert!(rows > 100, "{rows}");
    let gap = (accuracy[0] - accuracy[1]).abs() * rows as f64;
    if gap >= 5.0 {
        let best = if accuracy[0] > accuracy[1] {
            "noise_multiplier=0.6"
        } else {
            "noise_multiplier=20"
        };
        assert_eq!(s["chosen"], best, "{accuracy:?} over {rows} rows");
    }
}

#[test]
fn a_sweep_that_cannot_score_its_settings_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let r = sweep(&out, &["--select"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--evaluate-every"), "{err}");
    assert!(!out.join("runs").exists());
    let r = sweep(
        &out,
        &["--evaluate-every", "3", "--select", "--select-epsilon", "0"],
    );
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--select-epsilon"), "{err}");
    assert!(!out.join("runs").exists());
}
