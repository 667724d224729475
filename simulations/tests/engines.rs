//! `tessera-sim run` on both engines, small sizes: the real coordinator and
//! participants over loopback mutual TLS, as processes or as tasks of one
//! runtime.
//!
//! What each test proves:
//! - `engines_agree_byte_for_byte`: the same options, `--seed` and
//!   `--noise-seed` give byte-identical `metrics.csv` on the in-process
//!   engine twice and on the processes engine (secure aggregation and DP
//!   on, 6 sites, a model whose uploads take several wire frames), each
//!   run says which engine ran it, and another noise
//!   seed gives other figures;
//! - `planned_dropouts_are_the_reported_ones`: with a site leaving at each
//!   secure-aggregation stage of every round (in process), every round is
//!   released, the coordinator's dropped sites are exactly the planned ones
//!   that left before their input, the sites carried out every planned
//!   leaving, and `dropouts.csv` says so round by round;
//! - `dropouts_on_the_processes_engine`: the same plan through
//!   `tessera-sim participant` processes gives the same metrics as in
//!   process;
//! - `dirichlet_split_of_a_users_csv_writes_every_output`: α = 0.5 over 20
//!   sites of a CSV outside the bundled data completes and writes the
//!   partition table (rows and label counts per site), metrics, plots,
//!   summary, privacy report and the resolved options;
//! - `a_config_file_sets_every_option_and_reads_back`: `--config` takes the
//!   options from TOML, the command line wins, and the `sim.toml` a run
//!   writes runs again to the same metrics.

#![cfg(unix)]

use std::path::{Path, PathBuf};

use tessera_testkit::command::sim_summary;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::process::PATIENCE;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

fn base(sites: usize, extra: &[&str]) -> Vec<String> {
    let data = breast_cancer_path().to_string_lossy().into_owned();
    let sites = sites.to_string();
    let mut v: Vec<String> = [
        "run",
        "--data",
        &data,
        "--label",
        "diagnosis",
        "--participants",
        &sites,
        "--rounds",
        "3",
        "--noise-multiplier",
        "1.0",
        "--seed",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String], out: &Path) -> serde_json::Value {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    sim_summary(Path::new(SIM), &a, out, PATIENCE)
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A model of 9,601 parameters (30 inputs, 300 hidden units): each masked
/// input takes two wire frames, so every upload is granted, sent in parts
/// and ended by its requested size.
const WIDE: &str = "--model=mlp:300";

#[test]
fn engines_agree_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut metrics = Vec::new();
    for (name, engine) in [("a", "inprocess"), ("b", "inprocess"), ("c", "processes")] {
        let out = dir.path().join(name);
        let s = run(
            &base(6, &["--engine", engine, "--noise-seed", "9", WIDE]),
            &out,
        );
        assert_eq!(s["engine"], engine);
        assert_eq!(s["rounds"], 3, "{s:#}");
        assert_eq!(s["noise_seeded"], true);
        assert!(s["seconds_per_round"].as_f64().unwrap() > 0.0);
        assert!(s["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
        metrics.push(read(out.join("metrics.csv")));
    }
    assert_eq!(metrics[0], metrics[1], "in process twice");
    assert_eq!(metrics[0], metrics[2], "in process and processes");
    let lines: Vec<&str> = metrics[0].lines().collect();
    assert!(
        lines[0].starts_with("round,accuracy,loss,epsilon,contributors,dropped,"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 4);
    let last: Vec<&str> = lines[3].split(',').collect();
    assert_eq!(last[4..6], ["6", "0"], "{}", metrics[0]);
    let other = dir.path().join("d");
    run(
        &base(6, &["--engine", "inprocess", "--noise-seed", "10", WIDE]),
        &other,
    );
    assert_ne!(read(other.join("metrics.csv")), metrics[0]);
}

/// One site leaves at each stage of every round.
const EACH_STAGE: &str = "keys=0.1,shares=0.1,input=0.1,unmask=0.1";

fn dropout_run(engine: &str, out: &Path) -> serde_json::Value {
    let args = base(
        10,
        &[
            "--engine",
            engine,
            "--noise-seed",
            "5",
            "--dropout",
            EACH_STAGE,
        ],
    );
    run(&args, out)
}

#[test]
fn planned_dropouts_are_the_reported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let s = dropout_run("inprocess", &out);
    assert_eq!(s["rounds"], 3, "{s:#}");
    // 4 leave each round; 3 of them before their input arrives.
    assert_eq!(s["planned_dropouts"], 12);
    assert_eq!(s["reported_dropouts"], 9);
    let report = read(out.join("dropouts.csv"));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "training_round,planned,planned_out_of_sum,reported_dropped,match"
    );
    assert_eq!(
        &lines[1..],
        ["1,4,3,3,yes", "2,4,3,3,yes", "3,4,3,3,yes"],
        "{report}"
    );
    // The coordinator's store names exactly the planned sites.
    let plan = read(out.join("dropout_plan.csv"));
    let store = tessera_coordinator::store::Store::open_read_only(
        &out.join("coordinator").join("coordinator.sqlite"),
    )
    .unwrap();
    for r in store.rounds().unwrap() {
        let Some(t) = r.training_round else { continue };
        let mut expected: Vec<String> = plan
            .lines()
            .filter(|l| l.starts_with(&format!("{t},")) && !l.ends_with(",unmask"))
            .map(|l| l.split(',').nth(1).unwrap().to_owned())
            .collect();
        expected.sort();
        let mut got = r.dropped.clone();
        got.sort();
        assert_eq!(got, expected, "training round {t}");
        assert_eq!(r.contributors.len(), 7);
    }
    let metrics = read(out.join("metrics.csv"));
    assert!(
        metrics
            .lines()
            .skip(1)
            .all(|l| l.split(',').skip(4).take(2).eq(["7", "3"])),
        "{metrics}"
    );
    // Each site that left is connected again for the next round: the
    // federation log shows every planned leaving.
    let log = read(out.join("logs").join("federation.log"));
    assert_eq!(
        log.matches("planned dropout: leaving the round").count(),
        12
    );
}

#[test]
fn dropouts_on_the_processes_engine() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let s = dropout_run("processes", &a);
    assert_eq!(
        (
            s["planned_dropouts"].clone(),
            s["reported_dropouts"].clone()
        ),
        (12.into(), 9.into())
    );
    dropout_run("inprocess", &b);
    assert_eq!(read(a.join("metrics.csv")), read(b.join("metrics.csv")));
    assert_eq!(read(a.join("dropouts.csv")), read(b.join("dropouts.csv")));
}

#[test]
fn dirichlet_split_of_a_users_csv_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    // A user's file: synthetic rows, somewhere else.
    let csv = dir.path().join("my data.csv");
    tessera_simulations::synthetic::write(&csv, 1200, 6, 2).unwrap();
    let out = dir.path().join("run");
    let data = csv.to_string_lossy().into_owned();
    let s = run(
        &[
            "run",
            "--engine",
            "inprocess",
            "--data",
            &data,
            "--label",
            "y",
            "--partition",
            "dirichlet:0.5",
            "--participants",
            "20",
            "--rounds",
            "2",
            "--dropout-tolerance",
            "0.1",
        ]
        .map(String::from),
        &out,
    );
    assert_eq!(s["partition"], "dirichlet:0.5");
    assert_eq!(s["participants"], 20);
    assert_eq!(s["rounds"], 2);
    let table = read(out.join("data").join("partition.csv"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "site,rows,label=0,label=1");
    assert_eq!(lines.len(), 22, "20 sites and the test line");
    for l in &lines[1..21] {
        let cells: Vec<usize> = l.split(',').skip(1).map(|c| c.parse().unwrap()).collect();
        assert_eq!(cells[0], cells[1] + cells[2], "{l}");
    }
    for file in [
        "metrics.csv",
        "metrics.png",
        "metrics.svg",
        "summary.json",
        "privacy_report.md",
        "sim.toml",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let written = read(out.join("sim.toml"));
    assert!(
        written.contains("partition = \"dirichlet:0.5\""),
        "{written}"
    );
    assert!(written.contains("[resolved]"), "{written}");
}

#[test]
fn a_config_file_sets_every_option_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.toml");
    std::fs::write(
        &file,
        format!(
            "engine = \"inprocess\"\ndata = [{:?}]\nlabel = \"diagnosis\"\nparticipants = 5\n\
             rounds = 9\nnoise_multiplier = 1.0\nnoise_seed = 2\npartition = \"quantity:1.5\"\n",
            breast_cancer_path()
        ),
    )
    .unwrap();
    let a = dir.path().join("a");
    let config = file.to_string_lossy().into_owned();
    // The command line wins over the file (2 rounds, not 9).
    let s = run(
        &["run", "--config", &config, "--rounds", "2"].map(String::from),
        &a,
    );
    assert_eq!(
        (s["rounds"].clone(), s["participants"].clone()),
        (2.into(), 5.into())
    );
    assert_eq!(s["partition"], "quantity:1.5");
    let written = a.join("sim.toml");
    let text = read(written.clone());
    assert!(
        text.contains("rounds = 2") && text.contains("noise_seed = 2"),
        "{text}"
    );
    // Run again from what was written (into another directory).
    let b = dir.path().join("b");
    let again = written.to_string_lossy().into_owned();
    run(&["run", "--config", &again].map(String::from), &b);
    assert_eq!(read(a.join("metrics.csv")), read(b.join("metrics.csv")));
    // A misspelt option is refused with the known ones.
    std::fs::write(&file, "round = 3\n").unwrap();
    let out = std::process::Command::new(SIM)
        .args(["run", "--config", &config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown option `round`") && err.contains("rounds"),
        "{err}"
    );
}
