//! A clean stop with real processes: SIGTERM reaches the coordinator
//! while a round is in progress (one site is frozen, so the round waits for
//! it). The coordinator aborts that round without releasing it, tells the
//! cohort, closes every session and the store, and exits 0. Restarted on
//! the same store and port, it resumes; the participants reconnect by
//! themselves, the federation completes, and nothing was released twice:
//! one ledger row, one released record and one checkpoint per training
//! round, and the stopped round's number never reused.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use tessera_coordinator::driver::SHUTDOWN_REASON;
use tessera_coordinator::store::RoundStatus;
use tessera_simulations::experiment::PrivacyArgs;
use tessera_testkit::federation::{Federation, Setup, sim_entry_points};
use tessera_testkit::process::free_port;

const ROUNDS: u32 = 30;
const FROZEN: &str = "site-3";

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(ok.success(), "kill -s {sig} {pid} failed");
}

#[test]
fn sigterm_mid_round_aborts_it_cleanly_and_the_store_resumes() {
    let mut setup = Setup::new(3, ROUNDS);
    setup.listen = Some(format!("127.0.0.1:{}", free_port()));
    setup.stage_seconds = 60.0;
    setup.training_seconds = 60.0;
    setup.privacy = PrivacyArgs {
        noise_multiplier: Some(2.0),
        ..PrivacyArgs::default()
    };
    let mut fed = Federation::start(&setup, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    fed.start_participants();
    fed.wait_for("a released training round", |f| {
        f.try_store_rounds()
            .iter()
            .any(|r| r.status == RoundStatus::Released && r.training_round.is_some())
            .then_some(())
    });
    // Freeze one site: still connected, it holds up the next round.
    signal(fed.participant_pid(FROZEN), "STOP");
    // Rounds take milliseconds: the one in progress now waits for the
    // frozen site until its deadline.
    std::thread::sleep(Duration::from_millis(500));
    let stuck = fed.wait_for("a round held up by the frozen site", |f| {
        f.try_store_rounds()
            .iter()
            .find(|r| r.status == RoundStatus::Started)
            .map(|r| r.round)
    });
    std::thread::sleep(Duration::from_millis(500));
    let still = fed.store_rounds();
    assert_eq!(
        still.iter().find(|r| r.round == stuck).map(|r| r.status),
        Some(RoundStatus::Started),
        "round {stuck} was not held up"
    );
    let released_before: Vec<u64> = fed
        .store()
        .ledger()
        .unwrap()
        .iter()
        .map(|r| r.round)
        .collect();

    signal(fed.coordinator_pid(), "TERM");
    let status = fed.wait_coordinator_within(Duration::from_secs(30));
    let log = fed.coordinator_log();
    assert!(
        status.success(),
        "the coordinator exited with {status}:\n{log}"
    );
    assert!(log.contains("round in progress aborted"), "{log}");
    assert!(log.contains("coordinator stopped cleanly"), "{log}");

    // The store: the round in progress aborted and not released, the
    // coordinator recorded as stopped, the lock released.
    let store = fed.store();
    assert!(!store.writer_active(), "the store is still held");
    let rounds = store.rounds().unwrap();
    let r = rounds.iter().find(|r| r.round == stuck).unwrap();
    assert_eq!(r.status, RoundStatus::Aborted, "{r:?}");
    assert_eq!(r.reason.as_deref(), Some(SHUTDOWN_REASON));
    assert!(
        rounds.iter().all(|r| r.status != RoundStatus::Started),
        "{rounds:?}"
    );
    let ledger: Vec<u64> = store.ledger().unwrap().iter().map(|r| r.round).collect();
    assert_eq!(ledger, released_before, "a release during the stop");
    assert!(!ledger.contains(&stuck));
    assert_eq!(store.live_status().unwrap().unwrap().stage, "stopped");
    drop(store);

    // The sites were told: their sessions ended with the shutdown status.
    std::thread::sleep(Duration::from_millis(500));
    let site = fed.log("site-1");
    assert!(
        site.contains("shutting down"),
        "site-1 was not told:\n{site}"
    );

    // Resume: the frozen site goes on, the coordinator restarts on the
    // same store and port, everyone reconnects and the federation completes.
    signal(fed.participant_pid(FROZEN), "CONT");
    fed.start_coordinator();
    let status = fed.wait_coordinator();
    assert!(status.success(), "{}", fed.coordinator_log());
    for (name, status) in fed.wait_participants(Duration::from_secs(60)) {
        assert!(
            status.success(),
            "{name} exited with {status}:\n{}",
            fed.log(&name)
        );
    }

    let store = fed.store();
    let ledger = store.ledger().unwrap();
    let training: Vec<u32> = ledger.iter().filter_map(|r| r.training_round).collect();
    assert_eq!(
        training,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "one row per training round"
    );
    let rows: BTreeSet<u64> = ledger.iter().map(|r| r.round).collect();
    assert_eq!(rows.len(), ledger.len());
    assert!(
        !rows.contains(&stuck),
        "the stopped round was released after all"
    );
    let rounds = store.rounds().unwrap();
    let released: BTreeSet<u64> = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Released)
        .map(|r| r.round)
        .collect();
    assert_eq!(released, rows, "released records and ledger rows differ");
    assert_eq!(
        rounds.iter().find(|r| r.round == stuck).unwrap().status,
        RoundStatus::Aborted
    );
    let checkpoints: Vec<u32> = store
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.training_round)
        .filter(|&t| t > 0)
        .collect();
    assert_eq!(checkpoints, (1..=ROUNDS).collect::<Vec<_>>());
}

#[test]
fn sigterm_makes_a_participant_leave_at_once() {
    let setup = Setup::new(3, 1);
    let mut fed = Federation::prepare(&setup, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    // No coordinator listens there: the site keeps trying to reconnect.
    fed.address = format!("127.0.0.1:{}", free_port());
    let site = fed.site("site-1");
    fed.start_participant(&site);
    std::thread::sleep(Duration::from_millis(1500));
    signal(fed.participant_pid("site-1"), "TERM");
    let status = fed.wait_participant_within("site-1", Duration::from_secs(10));
    let log = fed.log("site-1");
    assert!(status.success(), "exited with {status}:\n{log}");
    assert!(log.contains("stopped by signal"), "{log}");
}
