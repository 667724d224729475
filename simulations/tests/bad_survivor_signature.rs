//! One site that sends a bad survivor signature in a signed-key round must
//! not abort the round for everyone: the coordinator verifies each
//! survivor-list signature with the sender's certificate key as it arrives,
//! drops that site from the rest of the aggregation, and forwards only
//! genuine signatures, so the honest sites reveal their shares and the sum is
//! released.
//!
//! Real processes: a coordinator and four `tessera-sim participant`s over
//! loopback mutual TLS, `[secagg] signed_keys = true`. One of them runs
//! with `--bad-survivor-signature 1` (a hostile site, see
//! `tessera_simulations::faults::BadSurvivorSignature`): its signature in
//! aggregation 1 (the statistics) has one bit flipped. Were the coordinator
//! to forward it (the check removed), every honest site would refuse the
//! unmasking request (the signature "is not over the survivor set") and
//! aggregation 1 would be
//! aborted; the test asserts it was released.

#![cfg(unix)]

use tessera_simulations::faults::BAD_SURVIVOR_SIGNATURE_FLAG;
use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};

#[test]
fn a_bad_survivor_signature_drops_its_site_not_the_round() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let split = breast_cancer_split(&data, 4, 1);
    let sites = SitePlan::from_split(&split);
    let hostile = sites[3].name.clone();
    let mut plan = plain_plan(&tmp.path().join("run"), &sites);
    plan.signed_keys = true;
    plan.rounds = 1;
    let mut fed = Federation::from_plan(plan, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    fed.start_coordinator();
    for site in &sites {
        fed.write_participant_config(site);
        if site.name == hostile {
            fed.launch_participant_with(&site.name, &[BAD_SURVIVOR_SIGNATURE_FLAG, "1"]);
        } else {
            fed.launch_participant(&site.name);
        }
    }
    let status = fed.wait_coordinator();
    let rows = fed.rounds_csv();
    assert_eq!(
        status.code(),
        Some(0),
        "coordinator exited with {status}: {rows:?}; logs in {}",
        fed.layout.logs.display()
    );
    let hostile_log = fed.log(&hostile);
    assert!(
        hostile_log.contains("simulated bad survivor signature"),
        "the fault did not fire:\n{hostile_log}"
    );
    // Aggregation 1 was released: the hostile site's masked input is in the
    // sum (it cannot be taken out without revealing both of its secrets),
    // and its self-mask was removed by the honest sites' shares.
    let first = rows.iter().find(|r| r.round == 1).expect("aggregation 1");
    assert_eq!(first.kind, "statistics", "{rows:?}");
    assert_eq!(first.status, "released", "{rows:?}");
    assert_eq!((first.cohort, first.contributors), (4, 4), "{rows:?}");
    // ... and only because the coordinator refused the signature on arrival.
    let log = fed.coordinator_log();
    assert!(
        log.lines().any(|l| l.contains("message refused")
            && l.contains(&hostile)
            && l.contains("signature")),
        "the coordinator did not refuse the bad signature:\n{log}"
    );
    for site in &sites {
        let name = &site.name;
        let log = fed.log(name);
        assert!(
            !log.contains("is not over the survivor set"),
            "{name} saw a forwarded bad signature:\n{log}"
        );
    }
    // The federation went on: the training round was released too.
    assert!(
        rows.iter()
            .any(|r| r.kind == "training" && r.status == "released"),
        "{rows:?}"
    );
}
