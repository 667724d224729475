//! The coordinator's store on a disk that loses power, fills up or turns
//! read-only (`tessera_testkit::power_loss`, an in-memory SQLite VFS that
//! keeps only what was synced): no acknowledged ledger row is ever lost, and
//! a full or read-only disk refuses the row with a clear error and loses
//! nothing once space returns.

use std::path::Path;

use tessera_coordinator::store::{RoundRecord, RoundStatus, Store};
use tessera_model::RoundKind;
use tessera_testkit::power_loss::{self, cut_everywhere};

mod common;
use common::gaussian_row;

/// Rounds the workload releases per store session.
const ROUNDS_PER_SESSION: u64 = 6;

fn record(round: u64, status: RoundStatus) -> RoundRecord {
    RoundRecord {
        round,
        training_round: u32::try_from(round).ok(),
        kind: RoundKind::Training,
        status,
        contributors: vec!["site-1".into(), "site-2".into()],
        dropped: vec![],
        reason: None,
        started_at_ms: 1_795_000_000_000,
        ended_at_ms: Some(1_795_000_000_001),
    }
}

/// Three sessions (the store closed in between, so its write-ahead log is
/// checkpointed and removed) of rounds recorded as started, their ledger
/// rows, then recorded as released, as the driver does. Returns the rounds
/// whose ledger row was acknowledged.
fn release_rounds(dir: &Path) -> Vec<u64> {
    let path = dir.join("coordinator.sqlite");
    let mut acked = Vec::new();
    for session in 0..3 {
        let Ok(mut store) = Store::open(&path) else {
            return acked;
        };
        for i in 1..=ROUNDS_PER_SESSION {
            let round = session * ROUNDS_PER_SESSION + i;
            if store
                .record_round(&record(round, RoundStatus::Started))
                .is_err()
                || store.append_ledger(&gaussian_row(round, 1.0, 1.0)).is_err()
            {
                return acked;
            }
            acked.push(round);
            if store
                .record_round(&record(round, RoundStatus::Released))
                .is_err()
            {
                return acked;
            }
        }
    }
    acked
}

fn ledger_rounds(dir: &Path) -> Result<Vec<u64>, String> {
    let store = Store::open(&dir.join("coordinator.sqlite")).map_err(|e| e.to_string())?;
    let rows = store.ledger().map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.round).collect())
}

#[test]
fn no_acknowledged_ledger_row_is_lost_to_a_power_cut_at_any_point() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let root = tempfile::tempdir().unwrap();
    let report = cut_everywhere(root.path(), release_rounds, ledger_rounds);
    assert_eq!(report.items, 18);
    assert!(report.operations > 50, "{report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// The control: the same workload on a connection that commits without
/// syncing (`synchronous=NORMAL` in WAL mode) loses acknowledged rows, so
/// the test above would catch a store that stopped syncing its commits.
#[test]
fn a_store_that_does_not_sync_its_commits_is_caught() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let root = tempfile::tempdir().unwrap();
    let workload = |dir: &Path| {
        let mut acked = Vec::new();
        let Ok(c) = tessera_common::sqlite::open_durable(&dir.join("t.sqlite")) else {
            return acked;
        };
        let setup = "PRAGMA synchronous=NORMAL; CREATE TABLE IF NOT EXISTS t (round INTEGER)";
        if c.execute_batch(setup).is_err() {
            return acked;
        }
        for round in 1..=10i64 {
            if c.execute("INSERT INTO t VALUES (?1)", [round]).is_err() {
                return acked;
            }
            acked.push(round as u64);
        }
        // Left open, as a running coordinator would be when the power goes.
        std::mem::forget(c);
        acked
    };
    let read = |dir: &Path| -> Result<Vec<u64>, String> {
        let c = tessera_common::sqlite::open_durable(&dir.join("t.sqlite"))
            .map_err(|e| e.to_string())?;
        if c.execute_batch("CREATE TABLE IF NOT EXISTS t (round INTEGER)")
            .is_err()
        {
            return Err("cannot create the table".into());
        }
        let mut stmt = c
            .prepare("SELECT round FROM t ORDER BY round")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0).map(|x| x as u64))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let report = cut_everywhere(root.path(), workload, read);
    assert_eq!(report.items, 10);
    assert!(
        !report.violations.is_empty(),
        "commits without a sync must be lost at some cut point: {report:?}"
    );
}

#[test]
fn a_full_disk_refuses_the_ledger_row_and_loses_nothing() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.sqlite");
    let mut store = Store::open(&path).unwrap();
    for round in 1..=3 {
        store.append_ledger(&gaussian_row(round, 1.0, 1.0)).unwrap();
    }
    // The disk fills up: the next row cannot be written.
    power_loss::set_capacity(dir.path(), Some(power_loss::bytes_under(dir.path())));
    let err = store
        .append_ledger(&gaussian_row(4, 1.0, 1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("full"), "{err}");
    assert!(
        err.contains("coordinator.sqlite"),
        "the error names the store: {err}"
    );
    // What was committed is still there and readable.
    let rounds: Vec<u64> = store.ledger().unwrap().iter().map(|r| r.round).collect();
    assert_eq!(rounds, [1, 2, 3]);
    // Space returns: the same row goes in, nothing before it is lost, and
    // it all survives a power cut.
    power_loss::set_capacity(dir.path(), None);
    store.append_ledger(&gaussian_row(4, 1.0, 1.0)).unwrap();
    power_loss::cut_power_after(Some(0));
    drop(store);
    power_loss::power_loss();
    let rounds: Vec<u64> = Store::open(&path)
        .unwrap()
        .ledger()
        .unwrap()
        .iter()
        .map(|r| r.round)
        .collect();
    assert_eq!(rounds, [1, 2, 3, 4]);
}

#[test]
fn a_read_only_disk_refuses_the_ledger_row_and_loses_nothing() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("coordinator.sqlite");
    // A store that cannot be created says so and where.
    power_loss::set_read_only(dir.path(), true);
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("coordinator.sqlite"), "{err}");
    power_loss::set_read_only(dir.path(), false);

    let mut store = Store::open(&path).unwrap();
    store.append_ledger(&gaussian_row(1, 1.0, 1.0)).unwrap();
    power_loss::set_read_only(dir.path(), true);
    let err = store
        .append_ledger(&gaussian_row(2, 1.0, 1.0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("readonly") || err.contains("read-only"),
        "{err}"
    );
    power_loss::set_read_only(dir.path(), false);
    store.append_ledger(&gaussian_row(2, 1.0, 1.0)).unwrap();
    let rounds: Vec<u64> = store.ledger().unwrap().iter().map(|r| r.round).collect();
    assert_eq!(rounds, [1, 2]);
}
