//! Uploads of 8-byte elements that take several wire frames, through a real
//! federation (the production coordinator and participants in process, over
//! loopback mutual TLS).
//!
//! The statistics round always uses the 64-bit encoding, and its vector
//! grows with the task's columns: with 1,400 features it is 4,201 elements,
//! 33,608 bytes, two 32 KiB frames. Each site's upload must be granted once,
//! arrive in both frames and end with the second: when the coordinator
//! guessed an upload's end from 4-byte elements, the first frame ended the
//! grant and the second was refused as input without one, so no such round
//! completed.

#![cfg(unix)]

use std::path::Path;

use tessera_testkit::command::sim_summary;
use tessera_testkit::process::PATIENCE;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");

#[test]
fn a_64_bit_input_in_two_frames_is_granted_once_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wide.csv");
    tessera_simulations::synthetic::write(&data, 90, 1400, 1).unwrap();
    let out = dir.path().join("run");
    let data = data.to_string_lossy().into_owned();
    let s = sim_summary(
        Path::new(SIM),
        &[
            "run",
            "--engine",
            "inprocess",
            "--data",
            &data,
            "--label",
            "y",
            "--participants",
            "3",
            "--rounds",
            "1",
            "--noise-multiplier",
            "1.0",
            "--seed",
            "2",
        ],
        &out,
        PATIENCE,
    );
    assert_eq!(s["rounds"], 1, "{s:#}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
    assert_eq!(last[4..6], ["3", "0"], "every site contributed:\n{metrics}");
    let log = std::fs::read_to_string(out.join("logs").join("federation.log")).unwrap();
    assert!(
        log.contains("kind=\"statistics\"") && log.contains("contributors=3 dropped=0"),
        "the statistics round was released with every site"
    );
    assert!(
        !log.contains("without an upload grant"),
        "no upload refused"
    );
}
