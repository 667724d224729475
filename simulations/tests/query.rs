//! `tessera-sim query` end to end on the four heart-disease hospitals: the
//! binary reads the CSVs, every site checks the plan, the answering sites'
//! vectors go through a secure-aggregation round, and the release is printed
//! with its noise and ε; a site that does not allow a column is left out
//! while the others are answered; bad input is refused with its position.

use std::process::{Command, Output};

use tessera_testkit::data::{HOSPITALS, hospital_path};

fn sim(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-sim"));
    cmd.arg("query");
    for h in HOSPITALS {
        cmd.arg("--data").arg(hospital_path(h));
    }
    cmd.args(args).output().expect("tessera-sim runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = sim(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn a_count_goes_through_secure_aggregation_with_its_noise_and_epsilon() {
    let v = json(&[
        "--max-rows",
        "400",
        "--epsilon",
        "0.5",
        "count where age > 65 and cp = 4",
    ]);
    let r = &v["release"];
    assert_eq!(r["query"], "count where (age > 65 and cp = 4)");
    assert_eq!(r["contributors"], 4);
    assert_eq!(r["answer"]["kind"], "count");
    assert!(r["answer"]["value"].as_f64().unwrap().fract() == 0.0);
    assert_eq!(r["noise"][0]["mechanism"], "discrete_laplace");
    assert_eq!(r["noise"][0]["scale"], 800.0);
    assert_eq!(r["epsilon"], 0.5);
    assert_eq!(r["delta"], 0.0);
    // The ledger holds the release's event, and every site its own.
    assert_eq!(v["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(v["ledger"][0]["event"]["mechanism"], "discrete_laplace");
    assert_eq!(v["ledger"][0]["query"], "count where (age > 65 and cp = 4)");
    assert_eq!(v["ledger"][0]["event"]["epsilon"], 0.5);
    for s in v["sites"].as_array().unwrap() {
        assert!(s["declined"].is_null());
        // The accountant's ε at δ = 1e-5: at most the pure 0.5.
        let e = s["site_epsilon"].as_f64().unwrap();
        assert!(e <= 0.5 && e > 0.49, "{e}");
    }
    assert_eq!(v["not_private"], false);
}

#[test]
fn a_site_refusing_a_column_is_left_out_and_the_others_answered() {
    let v = json(&[
        "--deny",
        "2:cp",
        "--max-rows",
        "400",
        "count where age > 65 and cp = 4",
    ]);
    let sites = v["sites"].as_array().unwrap();
    assert_eq!(sites[1]["site"], "hungary");
    assert_eq!(sites[1]["declined"], "column_not_allowed");
    assert_eq!(sites[1]["site_epsilon"], 0.0);
    for i in [0, 2, 3] {
        assert!(sites[i]["declined"].is_null());
    }
    assert_eq!(v["release"]["contributors"], 3);
    // A filter on an allowed column only is answered by all four.
    let v = json(&["--deny", "2:cp", "count where age > 65"]);
    assert_eq!(v["release"]["contributors"], 4);
    // Too little noise for a site's floor is declined the same way.
    let out = sim(&["--min-noise", "count=3", "--epsilon", "0.5", "count"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("[noise_below_minimum]").count(), 4, "{err}");
    assert!(err.contains("only 0 of 4 sites answered"), "{err}");
    let v = json(&["--min-noise", "count=2", "--epsilon", "0.5", "count"]);
    assert_eq!(v["release"]["contributors"], 4);
}

#[test]
fn a_seeded_query_is_reproducible_and_says_it_is_not_private() {
    let args = ["--noise-seed", "7", "most common cp among [1, 2, 3, 4]"];
    let (a, b) = (sim(&args), sim(&args));
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("NOT private"), "{text}");
    assert!(text.contains("exponential mechanism"), "{text}");
}

#[test]
fn bad_queries_and_options_are_refused_clearly() {
    let out = sim(&["count where age >"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("position 18"), "{err}");
    assert!(err.contains("^ expected a number"), "{err}");
    for (args, needle) in [
        (vec!["--epsilon", "NaN", "count"], "epsilon"),
        (vec!["--max-rows", "0", "count"], "row cap"),
        (
            vec!["--deny", "9:cp", "count"],
            "no --data file at position 9",
        ),
        (
            vec!["--min-noise", "median=1", "count"],
            "unknown query kind",
        ),
        (
            vec!["--deny", "1:age", "--deny", "2:age", "count where age > 1"],
            "at least 3",
        ),
        (vec!["count where weight > 1"], "at least 3"),
    ] {
        let out = sim(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn ledgers_persist_across_queries_and_a_site_budget_declines() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("site.toml");
    std::fs::write(
        &policy,
        "columns = [\"age\", \"cp\"]\nmax_epsilon = 1.2\n[min_noise_multiplier]\ncount = 1.0\n",
    )
    .unwrap();
    let ledgers = dir.path().join("ledgers");
    let args = |q: &'static str| {
        vec![
            "--policy".to_string(),
            policy.display().to_string(),
            "--ledger-dir".to_string(),
            ledgers.display().to_string(),
            "--epsilon".to_string(),
            "0.5".to_string(),
            q.to_string(),
        ]
    };
    for (i, q) in ["count where age > 65", "count where cp = 4"]
        .into_iter()
        .enumerate()
    {
        let a = args(q);
        let v = json(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(v["ledger"].as_array().unwrap().len(), i + 1);
        let e = v["ledger_epsilon"].as_f64().unwrap();
        assert!(
            e <= 0.5 * (i + 1) as f64 + 1e-12 && e > 0.49 * (i + 1) as f64,
            "{e}"
        );
    }
    let site: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(ledgers.join("sites").join("hungary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(site.len(), 2);
    assert_eq!(site[1]["mechanism"], "discrete_laplace");
    // A third query would take every site past ε = 1.2: all decline, nothing
    // is released and no ledger grows.
    let a = args("count");
    let out = sim(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("[budget_exceeded]").count(), 4, "{err}");
    let fed: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(ledgers.join("federation.json")).unwrap())
            .unwrap();
    assert_eq!(fed.len(), 2);
    assert_eq!(fed[1]["query"], "count where cp = 4");
    // A column outside the policy is declined; a policy with an unknown key
    // is refused naming it.
    let a = args("count where sex = 1");
    let err =
        String::from_utf8_lossy(&sim(&a.iter().map(String::as_str).collect::<Vec<_>>()).stderr)
            .into_owned();
    assert_eq!(err.matches("[column_not_allowed]").count(), 4, "{err}");
    std::fs::write(&policy, "columns = [\"age\"]\nbogus = 1\n").unwrap();
    let a = args("count");
    let out = sim(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `bogus`"));
}
