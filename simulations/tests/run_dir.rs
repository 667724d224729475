//! A run's directory is its own: `tessera-sim run` into a directory that
//! holds a previous run's coordinator store would silently resume that run
//! (its results, whatever the new options say), so it is refused with a
//! message naming the store, and nothing of the previous run changes.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_testkit::command::{COMMAND_PATIENCE, output_within, sim_summary};
use tessera_testkit::files::fresh_dir;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

fn iris_run<'a>(seed: &'a str, iris: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--data",
        iris,
        "--label",
        "species",
        "--participants",
        "3",
        "--partition",
        "iid",
        "--rounds",
        "2",
        "--seed",
        seed,
    ]
}

#[test]
fn a_second_run_into_the_same_directory_is_refused() {
    let out = fresh_dir(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("run_dir"));
    let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/iris.csv");
    let iris = iris.to_str().unwrap();
    let first = sim_summary(Path::new(SIM), &iris_run("1", iris), &out, COMMAND_PATIENCE);
    let summary = std::fs::read(out.join("summary.json")).unwrap();

    let mut again = Command::new(SIM);
    again.args(iris_run("2", iris)).arg("--out").arg(&out);
    let second = output_within(again, COMMAND_PATIENCE);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{first}");
    assert!(
        stderr.contains("holds a previous run") && stderr.contains("coordinator.sqlite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
}
