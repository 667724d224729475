//! A large model through a real federation: `tessera-sim bench round` starts a
//! coordinator and participant processes on loopback mutual TLS, trains an MLP
//! of about a million parameters for one round, and reports time, payload and
//! peak memory. The ten-million-parameter figure is the same command in a
//! release build (`tessera-sim bench round --params 10000000`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tessera_model::ModelKind;
use tessera_testkit::command::output_within;

/// Runs `tessera-sim bench round --json --out DIR EXTRA…` and returns the report.
fn bench_round(dir: &Path, extra: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-sim"));
    cmd.args(["bench", "round", "--json", "--out"])
        .arg(dir)
        .args(extra);
    let out = output_within(cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera-sim bench round failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a report line");
    let report: Value = serde_json::from_str(last).expect("the last line is the JSON report");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("bench-round.json")).expect("the saved report"),
    )
    .unwrap();
    assert_eq!(saved, report);
    report
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The released model is an MLP of the reported size, trained from the seeded
/// initial model.
fn check_model(dir: &Path, report: &Value) {
    let model = tessera_model::read_model(&dir.join("coordinator/model.safetensors"))
        .expect("the final model loads");
    let params = u64_of(report, "params") as usize;
    assert_eq!(model.params.len(), params);
    assert_eq!(model.round, 1);
    let kind: ModelKind = report["model"].as_str().unwrap().parse().unwrap();
    assert_eq!(model.task.model, kind);
    let ModelKind::Mlp { hidden } = kind else {
        panic!("{kind} is not an MLP");
    };
    assert_eq!(
        params,
        model.task.num_params(u64_of(report, "input_dim") as usize)
    );
    assert!(hidden.widths()[0] > 1);
    assert!(model.params.iter().all(|v| v.is_finite()));
    let initial = tessera_model::read_model(
        &dir.join("coordinator/checkpoints/model-round-0000.safetensors"),
    )
    .expect("the initial model loads");
    assert!(
        initial.params.iter().any(|v| *v != 0.0),
        "an MLP starts from random weights, not zeros"
    );
    assert_ne!(initial.params, model.params, "the round changed the model");
    let accuracy = report["final_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
}

/// Peak memory was measured for every process, and each process held at
/// least the model's parameters.
fn check_memory(report: &Value, processes: usize) {
    if !Path::new("/proc/self/status").exists() {
        return;
    }
    let model_bytes = u64_of(report, "model_bytes_per_participant");
    assert_eq!(model_bytes, 4 * u64_of(report, "params"));
    assert!(u64_of(report, "coordinator_peak_rss_bytes") > model_bytes);
    assert!(u64_of(report, "participant_peak_rss_bytes") > model_bytes);
    let measured = report["processes"].as_array().unwrap();
    assert_eq!(measured.len(), processes, "{measured:?}");
    assert_eq!(measured[0]["name"], "coordinator");
}

#[test]
fn a_million_parameter_mlp_round_with_secure_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_round(dir.path(), &["--params", "1000000", "--participants", "3"]);
    assert!(u64_of(&report, "params") >= 1_000_000);
    assert!(u64_of(&report, "params") < 1_000_000 + 40);
    assert_eq!(report["secure_aggregation"], true);
    assert_eq!(u64_of(&report, "participants"), 3);
    assert_eq!(u64_of(&report, "rounds_released"), 1);
    let aggregated = report["training_round_seconds"].as_f64().unwrap();
    let released = report["training_round_release_seconds"].as_f64().unwrap();
    assert!(
        aggregated > 0.0 && released >= aggregated - 0.01,
        "{aggregated} {released}"
    );
    // 4 MB of model down, 4 MB of masked update up, per participant, in
    // chunks of 256 KiB.
    let chunk = tessera_proto::chunk::SEND_CHUNK_BYTES as u64;
    assert_eq!(
        u64_of(&report, "model_chunks_per_participant"),
        (4 * u64_of(&report, "params")).div_ceil(chunk)
    );
    assert_eq!(
        u64_of(&report, "payload_bytes_total"),
        3 * 2 * 4 * u64_of(&report, "params")
    );
    check_model(dir.path(), &report);
    check_memory(&report, 4);
}

#[test]
fn two_processes_without_secure_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_round(
        dir.path(),
        &["--params", "300000", "--participants", "1", "--no-secagg"],
    );
    assert!(u64_of(&report, "params") >= 300_000);
    assert_eq!(report["secure_aggregation"], false);
    assert_eq!(u64_of(&report, "rounds_released"), 1);
    check_model(dir.path(), &report);
    check_memory(&report, 2);
}

#[test]
fn secure_aggregation_needs_three_participants() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-sim"))
        .args([
            "bench",
            "round",
            "--params",
            "1000",
            "--participants",
            "2",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 3 participants"), "{err}");
}
