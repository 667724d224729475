//! Secure aggregation across real processes, with a participant that dies
//! mid-round.
//!
//! [`a_site_dying_mid_round_leaves_the_model_of_a_federation_without_it`]:
//! four participant processes and a coordinator, secure aggregation on, no
//! noise. One site crashes (exits abruptly) in the very first aggregation
//! right after sending its encrypted shares — after its pairwise masks are
//! committed, before its masked input — so the coordinator must recover the
//! sum by reconstructing its mask key from the survivors' shares. The
//! federation goes on with the other three. Its final model must equal,
//! up to fixed-point rounding, the model of a federation in which that site
//! was never there; and a federation in which the site takes part throughout
//! must give a clearly different model (so the comparison can tell).

#![cfg(unix)]

use std::path::{Path, PathBuf};

use tessera_model::ModelFile;
use tessera_simulations::faults::EXIT_SIMULATED_CRASH;
use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};

/// Runs a federation of `sites`; `crash` names a site that crashes after
/// sending its shares in aggregation 1. Returns the final model and the
/// coordinator's rounds.csv.
fn federation(dir: &Path, sites: &[SitePlan], crash: Option<&str>) -> (ModelFile, String) {
    let plan = plain_plan(dir, sites);
    let mut fed = Federation::from_plan(plan, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    fed.start_coordinator();
    for site in sites {
        let mut site = site.clone();
        if crash == Some(site.name.as_str()) {
            site.crash_after_shares = Some(1);
        }
        fed.write_participant_config(&site);
        fed.launch_participant(&site.name);
    }
    let status = fed.wait_coordinator();
    assert_eq!(
        status.code(),
        Some(0),
        "coordinator exited with {status}; logs in {}",
        fed.layout.logs.display()
    );
    for site in sites {
        let name = &site.name;
        let status = fed.wait_participant(name);
        let expected = if crash == Some(name.as_str()) {
            i32::from(EXIT_SIMULATED_CRASH)
        } else {
            0
        };
        assert_eq!(
            status.code(),
            Some(expected),
            "{name} exited with {status}; logs in {}",
            fed.layout.logs.display()
        );
    }
    let model = tessera_model::read_model(&fed.model_path()).unwrap();
    let rounds = std::fs::read_to_string(fed.layout.coordinator_out.join("rounds.csv")).unwrap();
    (model, rounds)
}

fn max_abs_diff(a: &ModelFile, b: &ModelFile) -> f64 {
    assert_eq!(a.params.len(), b.params.len());
    a.params
        .iter()
        .zip(&b.params)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn a_site_dying_mid_round_leaves_the_model_of_a_federation_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let split = breast_cancer_split(&data, 4, 1);
    let sites = SitePlan::from_split(&split);
    let victim = sites[3].name.clone();
    let run = |name: &str| -> PathBuf { tmp.path().join(name) };

    let (with_crash, rounds) = federation(&run("crash"), &sites, Some(&victim));
    // The statistics aggregation (round 1) lost the victim after its shares
    // and was still released, from the other three.
    let first = rounds
        .lines()
        .find(|l| l.starts_with("1,"))
        .expect("round 1 in rounds.csv");
    let cols: Vec<&str> = first.split(',').collect();
    assert_eq!(cols[2], "statistics", "{first}");
    assert_eq!(cols[3], "released", "{first}");
    assert_eq!(
        (cols[4], cols[5], cols[6]),
        ("4", "3", "1"),
        "cohort, contributors, dropped: {first}"
    );
    assert_eq!(
        rounds
            .lines()
            .filter(|l| l.contains(",training,released,"))
            .count(),
        3,
        "{rounds}"
    );

    let (never_there, _) = federation(&run("without"), &sites[..3], None);
    let (all_four, _) = federation(&run("all"), &sites, None);

    let recovered = max_abs_diff(&with_crash, &never_there);
    let included = max_abs_diff(&all_four, &never_there);
    assert!(
        recovered < 1e-3,
        "the recovered federation differs from one without the site by {recovered}"
    );
    assert!(
        included > 20.0 * recovered.max(1e-5),
        "the comparison cannot tell the site's presence: {included} vs {recovered}"
    );
}
