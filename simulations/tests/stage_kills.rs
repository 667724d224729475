//! Participants SIGKILLed at each secure-aggregation stage, with real
//! processes: five sites, one of which (`site-5`) freezes itself
//! (`tessera-sim participant --stop-after STAGE:ROUND`) right after its
//! last message of one stage of the first training round and is then
//! SIGKILLed by the test — so it dies at a known point of the protocol:
//!
//! | stopped after | dies while the coordinator waits for | recovery |
//! | --- | --- | --- |
//! | accepting the round | its keys | none needed |
//! | its keys | its encrypted shares | it leaves the graph |
//! | its shares | its masked input | its pairwise masks are removed with the survivors' shares of its key |
//! | its masked input | its unmasking answer | its input stays in the sum, its self-mask removed with the survivors' shares |
//!
//! Each time the round is released and the coordinator's log names the
//! victim as dropped *at that stage*: before its masked input arrived, the
//! four others are the contributors and the victim is recorded as dropped;
//! after it, the victim's input is in the sum (five contributors) although
//! it never answered the unmasking request. The federation completes its
//! planned rounds without it, and the other four exit 0. Without dropout
//! recovery the round would abort.

#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_coordinator::store::RoundStatus;
use tessera_simulations::faults::STOP_AFTER_FLAG;
use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};
use tessera_testkit::files::field;

const VICTIM: &str = "site-5";
const OTHERS: [&str; 4] = ["site-1", "site-2", "site-3", "site-4"];

/// Runs the federation with the victim stopping after `stage` of the first
/// training round, kills it there, and checks the outcome; `dropped_at` is
/// the coordinator's name of the stage it is dropped in, `in_sum` whether
/// its masked input had arrived (it is then a contributor).
fn kill_after(stage: &str, dropped_at: &str, in_sum: bool) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stage_kills/{stage}"));
    let root = tessera_testkit::files::fresh_dir(&dir);
    let split = breast_cancer_split(&root.join("data"), 5, 3);
    let sites = SitePlan::from_split(&split);
    let mut plan = plain_plan(&root, &sites);
    plan.rounds = 3;
    plan.stage_seconds = 20.0;
    let sim = env!("CARGO_BIN_EXE_tessera-sim");
    let mut fed = Federation::from_plan(plan, sim_entry_points(sim));
    fed.start_coordinator();
    for name in OTHERS {
        fed.start_site(name);
    }
    // Aggregation 1 pools the feature statistics; 2 is training round 1.
    const TARGET: u64 = 2;
    let plain = fed.bins.participant.clone();
    fed.bins
        .participant
        .extend([STOP_AFTER_FLAG.to_owned(), format!("{stage}:{TARGET}")]);
    fed.start_site(VICTIM);
    fed.bins.participant = plain;

    let said = format!("simulated stop after {stage}");
    let waited = Instant::now();
    while !fed.log(VICTIM).contains(&said) {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "{VICTIM} never stopped after {stage}:\n{}",
            fed.log(VICTIM)
        );
        assert!(
            fed.exited_participants().is_empty(),
            "a participant exited before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = fed.kill_participant(VICTIM);
    assert_eq!(killed.code(), None, "killed by a signal");

    fed.assert_completed_with(&OTHERS, &[VICTIM]);
    let rounds = fed.store_rounds();
    let r = rounds
        .iter()
        .find(|r| r.round == TARGET)
        .expect("the round of the kill");
    assert_eq!(r.training_round, Some(1), "{r:?}");
    assert_eq!(r.status, RoundStatus::Released, "{r:?}");
    let mut who = r.contributors.clone();
    who.sort();
    if in_sum {
        assert!(r.dropped.is_empty(), "{r:?}");
        let mut all = OTHERS.to_vec();
        all.push(VICTIM);
        assert_eq!(who, all, "{r:?}");
    } else {
        assert_eq!(r.dropped, [VICTIM], "{r:?}");
        assert_eq!(who, OTHERS, "{r:?}");
    }
    let log = fed.coordinator_log();
    let drop_line = log
        .lines()
        .find(|l| {
            l.contains("participant dropped from the round")
                && l.contains(VICTIM)
                && field(l, "round") == Some("2")
        })
        .unwrap_or_else(|| panic!("no drop of {VICTIM} in round {TARGET}:\n{log}"));
    assert_eq!(field(drop_line, "stage"), Some(dropped_at), "{drop_line}");
}

#[test]
fn site_killed_before_its_keys() {
    kill_after("reply", "keys", false);
}

#[test]
fn site_killed_before_its_shares() {
    kill_after("keys", "shares", false);
}

#[test]
fn site_killed_before_its_masked_input() {
    kill_after("shares", "masked_input", false);
}

#[test]
fn site_killed_before_unmasking() {
    kill_after("masked", "unmask", true);
}
