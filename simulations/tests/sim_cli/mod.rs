//! Running `tessera-sim` as a command from integration tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `tessera-sim ARGS`, in its own process group so that on a timeout
/// it is killed together with the federation it launched; returns the
/// parsed `OUT/summary.json`.
pub(crate) fn tessera_sim(args: &[&str], out: &Path, patience: Duration) -> serde_json::Value {
    use std::os::unix::process::CommandExt;

    let log_path = out.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("creating the log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-sim"))
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("starting tessera-sim");
    let group = child.id();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("polling tessera-sim") {
            break s;
        }
        if start.elapsed() > patience {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -s KILL -- -{group}")])
                .status();
            let _ = child.wait();
            panic!(
                "tessera-sim {args:?} did not finish within {patience:?}; output:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "tessera-sim {args:?} failed ({status}):\n{output}"
    );
    let summary = std::fs::read_to_string(out.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}); output:\n{output}"));
    serde_json::from_str(&summary).expect("summary.json is JSON")
}
