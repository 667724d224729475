//! `tessera-coordinator privacy …` against the reference vectors, and its
//! error exits.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-coordinator"))
        .arg("privacy")
        .args(args)
        .output()
        .expect("run the coordinator binary")
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run(&a);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(text.trim()).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn epsilon_matches_vector_rows() {
    // epsilon_public.csv: full, sigma 0.5, q 1, T 10, delta 1e-8: eps_exact 54.779032265451896
    let v = json(&[
        "epsilon",
        "--noise-multiplier",
        "0.5",
        "--sampling-rate",
        "1.0",
        "--rounds",
        "10",
        "--delta",
        "1e-8",
        "--accountant",
        "exact",
    ]);
    assert!(
        rel(v["epsilon"].as_f64().unwrap(), 54.779032265451896) < 1e-11,
        "{v}"
    );
    assert_eq!(v["accountant"], "exact");
    assert_eq!(v["delta"].as_f64(), Some(1e-8));
    // Default accountant is best, which picks exact for full participation.
    let b = json(&[
        "epsilon",
        "--noise-multiplier",
        "0.5",
        "--rounds",
        "10",
        "--delta",
        "1e-8",
    ]);
    assert_eq!(b["accountant"], "exact");
    assert_eq!(b["requested_accountant"], "best");
    // A Poisson row through RDP and PLD (sigma 1, q 0.01, T 1000, delta 1e-5).
    let args = [
        "epsilon",
        "--noise-multiplier",
        "1.0",
        "--sampling-rate",
        "0.01",
        "--rounds",
        "1000",
        "--delta",
        "1e-5",
    ];
    let rows = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../privacy/tests/vectors/epsilon_public.csv"
    ))
    .unwrap();
    let row = rows
        .lines()
        .find(|l| l.starts_with("poisson,1.0,0.01,1000,1e-05,"))
        .expect("row");
    let f: Vec<&str> = row.split(',').collect();
    let (want_rdp, want_pld): (f64, f64) = (f[5].parse().unwrap(), f[6].parse().unwrap());
    let mut a = args.to_vec();
    a.extend(["--accountant", "rdp"]);
    let r = json(&a);
    assert!(rel(r["epsilon"].as_f64().unwrap(), want_rdp) < 1e-9, "{r}");
    let mut a = args.to_vec();
    a.extend(["--accountant", "pld"]);
    let p = json(&a);
    assert!(
        (p["epsilon"].as_f64().unwrap() - want_pld).abs() < 5e-3,
        "{p}"
    );
    let b = json(&args);
    assert_eq!(b["accountant"], "pld");
    assert!(b["candidates"].as_array().unwrap().len() == 3, "{b}");
}

#[test]
fn calibrate_matches_vector_rows() {
    // calibration_public.csv: full, q 1, T 10, target 8, delta 1e-5: sigma_exact 1.8980909859983377
    let v = json(&[
        "calibrate",
        "--target-epsilon",
        "8",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "1",
        "--rounds",
        "10",
    ]);
    assert!(
        rel(v["noise_multiplier"].as_f64().unwrap(), 1.8980909859983377) < 1e-11,
        "{v}"
    );
    assert!(v["epsilon"].as_f64().unwrap() <= 8.0);
    assert_eq!(v["accountant"], "exact");
    let r = json(&[
        "calibrate",
        "--target-epsilon",
        "8",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "1",
        "--rounds",
        "10",
        "--accountant",
        "rdp",
    ]);
    assert!(
        rel(r["noise_multiplier"].as_f64().unwrap(), 2.0164901812816183) < 1e-8,
        "{r}"
    );
}

#[test]
fn human_output_is_a_short_table() {
    let out = run(&[
        "epsilon",
        "--noise-multiplier",
        "1",
        "--sampling-rate",
        "0.1",
        "--rounds",
        "10",
        "--delta",
        "1e-5",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("epsilon") && text.contains("rdp") && text.contains("pld"),
        "{text}"
    );
    let out = run(&[
        "calibrate",
        "--target-epsilon",
        "2",
        "--delta",
        "1e-5",
        "--rounds",
        "5",
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("noise multiplier")
    );
}

#[test]
fn bad_input_exits_with_code_2_and_a_message() {
    let cases: &[&[&str]] = &[
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sampling-rate",
            "0.5",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
            "--accountant",
            "exact",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "-1",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sampling-rate",
            "0",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--sampling-rate",
            "1.5",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--rounds",
            "0",
            "--delta",
            "1e-5",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--rounds",
            "10",
            "--delta",
            "1.5",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "nan",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
            "--json",
        ],
        &[
            "calibrate",
            "--target-epsilon",
            "-3",
            "--delta",
            "1e-5",
            "--rounds",
            "10",
        ],
        &[
            "calibrate",
            "--target-epsilon",
            "3",
            "--delta",
            "1e-5",
            "--rounds",
            "0",
        ],
        &[
            "calibrate",
            "--target-epsilon",
            "3",
            "--delta",
            "1e-5",
            "--sampling-rate",
            "0.1",
            "--rounds",
            "10",
            "--accountant",
            "exact",
        ],
        &[
            "epsilon",
            "--noise-multiplier",
            "1",
            "--rounds",
            "10",
            "--delta",
            "1e-5",
            "--accountant",
            "moments",
        ],
    ];
    for args in cases {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.trim().is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(&[
        "epsilon",
        "--noise-multiplier",
        "1",
        "--sampling-rate",
        "0.5",
        "--rounds",
        "3",
        "--delta",
        "1e-5",
        "--accountant",
        "exact",
    ]);
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("does not apply")
    );
}
