//! The coordinator's durable store and its operator views, on real SQLite
//! files (the metrics endpoint is tested in `web.rs`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_coordinator::store::{
    Checkpoint, LiveStatus, NewLedgerRow, RoundEnd, RoundRecord, RoundStatus, Store, StoreError,
    ledger_report, status_report, verify_checkpoint, write_checkpoint, write_checkpoint_bytes,
};
use tessera_model::RoundKind;
use tessera_privacy::{AccountantKind, PrivacyEvent};

mod common;
use common::gaussian_row;

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("coordinator.sqlite")
}

#[test]
fn append_and_read_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&store_path(&dir)).unwrap();
    assert!(store.ledger().unwrap().is_empty());
    assert_eq!(store.last_ledger_round().unwrap(), None);

    let stats = NewLedgerRow {
        round: 0,
        training_round: None,
        kind: RoundKind::Statistics,
        event: PrivacyEvent::gaussian(8.0, 1.0, 1),
        cohort_size: 10,
        clip_norm: 1.0,
        noise_multiplier: 8.0,
        sampling_rate: 1.0,
        recorded_at_ms: 1,
        not_private: false,
    };
    let first = store.append_ledger(&stats).unwrap();
    let second = store.append_ledger(&gaussian_row(1, 5.9, 1.0)).unwrap();
    let laplace = NewLedgerRow {
        round: 2,
        training_round: None,
        kind: RoundKind::Statistics,
        event: PrivacyEvent::DiscreteLaplace {
            epsilon: 0.1,
            count: 1,
        },
        cohort_size: 10,
        clip_norm: 1.0,
        noise_multiplier: 0.0,
        sampling_rate: 1.0,
        recorded_at_ms: 3,
        not_private: false,
    };
    store.append_ledger(&laplace).unwrap();
    assert!(second.id > first.id);

    let rows = store.ledger().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].kind, RoundKind::Statistics);
    assert_eq!(rows[0].training_round, None);
    assert_eq!(rows[1].round, 1);
    assert_eq!(rows[1].training_round, Some(1));
    assert_eq!(rows[1].noise_multiplier, 5.9);
    assert_eq!(rows[1].clip_norm, 0.25);
    assert_eq!(rows[1].mechanism(), "gaussian");
    assert_eq!(rows[2].kind, RoundKind::Statistics);
    assert_eq!(rows[2].event, laplace.event);
    assert_eq!(
        store.privacy_events().unwrap(),
        vec![stats.event, gaussian_row(1, 5.9, 1.0).event, laplace.event]
    );
    assert_eq!(store.last_ledger_round().unwrap(), Some(2));
}

#[test]
fn duplicate_round_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.append_ledger(&gaussian_row(4, 2.0, 1.0)).unwrap();
    let err = store.append_ledger(&gaussian_row(4, 3.0, 0.5)).unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateRound { round: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    let rows = store.ledger().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].noise_multiplier, 2.0, "the first row is kept");
}

#[test]
fn inconsistent_or_invalid_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&store_path(&dir)).unwrap();
    let mut row = gaussian_row(1, 2.0, 1.0);
    row.noise_multiplier = 3.0;
    assert!(matches!(
        store.append_ledger(&row),
        Err(StoreError::Invalid { .. })
    ));
    // A Gaussian event without noise cannot be accounted: refused.
    assert!(matches!(
        store.append_ledger(&gaussian_row(1, 0.0, 1.0)),
        Err(StoreError::Invalid { .. })
    ));
    let mut row = gaussian_row(1, 2.0, 1.0);
    row.clip_norm = f64::NAN;
    assert!(matches!(
        store.append_ledger(&row),
        Err(StoreError::Invalid { .. })
    ));
    assert!(store.ledger().unwrap().is_empty());
}

#[test]
fn ledger_rows_cannot_be_changed_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    store.append_ledger(&gaussian_row(1, 2.0, 1.0)).unwrap();
    drop(store);
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(
        raw.execute("UPDATE ledger SET noise_multiplier = 100.0", [])
            .is_err()
    );
    assert!(raw.execute("DELETE FROM ledger", []).is_err());
    drop(raw);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.ledger().unwrap()[0].noise_multiplier, 2.0);
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    {
        let mut store = Store::open(&path).unwrap();
        for r in 1..=5 {
            store.append_ledger(&gaussian_row(r, 1.5, 1.0)).unwrap();
        }
        store.set_meta("federation_id", "fed-a").unwrap();
        store.participant_seen("hospital-1", 10).unwrap();
        store.participant_seen("hospital-1", 20).unwrap();
        store.participant_seen("hospital-0", 15).unwrap();
        store
            .record_round(&RoundRecord {
                round: 5,
                training_round: Some(5),
                kind: RoundKind::Training,
                status: RoundStatus::Released,
                contributors: vec!["hospital-0".into(), "hospital-1".into()],
                dropped: vec![],
                reason: None,
                started_at_ms: 100,
                ended_at_ms: Some(200),
            })
            .unwrap();
    }
    // Read-only after a clean close (no WAL files left), then for writing.
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.ledger().unwrap().len(), 5);
    assert!(!reader.writer_active());
    drop(reader);
    let store = Store::open(&path).unwrap();
    let rounds: Vec<u64> = store.ledger().unwrap().iter().map(|r| r.round).collect();
    assert_eq!(rounds, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        store.meta("federation_id").unwrap().as_deref(),
        Some("fed-a")
    );
    assert_eq!(store.meta("absent").unwrap(), None);
    let participants = store.participants().unwrap();
    assert_eq!(participants.len(), 2);
    assert_eq!(participants[1].name, "hospital-1");
    assert_eq!(participants[1].first_seen_ms, 10);
    assert_eq!(participants[1].last_seen_ms, 20);
    assert_eq!(participants[1].times_seen, 2);
    assert_eq!(store.rounds().unwrap()[0].contributors.len(), 2);
}

#[test]
fn rounds_upsert_and_released_rounds_stay_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&store_path(&dir)).unwrap();
    let mut r = RoundRecord {
        round: 3,
        training_round: Some(2),
        kind: RoundKind::Training,
        status: RoundStatus::Started,
        contributors: vec![],
        dropped: vec![],
        reason: None,
        started_at_ms: 1000,
        ended_at_ms: None,
    };
    store.record_round(&r).unwrap();
    r.status = RoundStatus::Released;
    r.contributors = vec!["a".into(), "b".into(), "c".into()];
    r.dropped = vec!["d".into()];
    r.ended_at_ms = Some(2000);
    store.record_round(&r).unwrap();
    let aborted = RoundRecord {
        round: 4,
        status: RoundStatus::Aborted,
        reason: Some("too few participants".into()),
        ..r.clone()
    };
    store.record_round(&aborted).unwrap();
    let rounds = store.rounds().unwrap();
    assert_eq!(rounds, vec![r.clone(), aborted]);

    let mut regress = r.clone();
    regress.status = RoundStatus::Aborted;
    assert!(matches!(
        store.record_round(&regress),
        Err(StoreError::RoundAlreadyReleased { round: 3, .. })
    ));
    assert_eq!(store.rounds().unwrap()[0].status, RoundStatus::Released);
}

#[test]
fn second_writer_is_refused_and_readers_see_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    assert!(matches!(
        Store::open_read_only(&path),
        Err(StoreError::Missing { .. })
    ));
    let mut writer = Store::open(&path).unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::Locked { .. })));
    writer.append_ledger(&gaussian_row(1, 2.0, 1.0)).unwrap();

    let reader = Store::open_read_only(&path).unwrap();
    assert!(reader.is_read_only());
    assert!(reader.writer_active());
    assert_eq!(reader.ledger().unwrap().len(), 1);
    // The writer keeps writing while the reader is open, and the reader sees it.
    writer.append_ledger(&gaussian_row(2, 2.0, 1.0)).unwrap();
    writer
        .set_live_status(&LiveStatus {
            current_round: Some(3),
            training_round: Some(3),
            stage: "masked_input".into(),
            connected: 7,
            pid: std::process::id(),
            updated_at_ms: 5,
            site_budgets: Vec::new(),
        })
        .unwrap();
    assert_eq!(reader.ledger().unwrap().len(), 2);
    assert_eq!(reader.live_status().unwrap().unwrap().connected, 7);

    drop(writer);
    assert!(!reader.writer_active());
    assert_eq!(reader.ledger().unwrap().len(), 2);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.ledger().unwrap().len(), 2);
}

#[test]
fn open_names_the_path_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("coordinator.sqlite");
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("blocker"), "{err}");

    // Not a database.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = Store::open(&junk).unwrap_err();
    assert!(err.to_string().contains("junk.sqlite"), "{err}");
}

fn test_model(round: u32, scale: f32) -> tessera_model::ModelFile {
    tessera_model::ModelFile {
        task: tessera_model::TaskSpec::binary(
            tessera_model::ModelKind::Logistic,
            vec!["age".into(), "chol".into()],
            "num",
            "> 0".parse().unwrap(),
        ),
        params: vec![0.5 * scale, -1.25 * scale, 0.125],
        preprocessor: tessera_model::Preprocessor {
            mean: vec![50.0, 200.0],
            std: vec![10.0, 40.0],
            indicator: vec![false, false],
            target: None,
        },
        round,
    }
}

#[test]
fn checkpoints_are_written_atomically_recorded_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&store_path(&dir)).unwrap();
    let models = dir.path().join("models");
    assert_eq!(store.latest_checkpoint().unwrap(), None);

    let model = test_model(1, 1.0);
    let (path, sha, bytes) = write_checkpoint(&models, 1, &model).unwrap();
    assert_eq!(path, models.join("model-round-0001.safetensors"));
    assert_eq!(sha.len(), 64);
    assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(tessera_model::read_model(&path).unwrap(), model);
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&models).unwrap().count(), 1);

    let c1 = Checkpoint {
        round: 2,
        training_round: 1,
        path: path.clone(),
        sha256: sha.clone(),
        bytes,
        created_at_ms: 10,
    };
    store.record_checkpoint(&c1).unwrap();
    store.record_checkpoint(&c1).unwrap(); // idempotent
    let (path2, sha2, bytes2) = write_checkpoint(&models, 2, &test_model(2, 2.0)).unwrap();
    assert_ne!(sha2, sha);
    let c2 = Checkpoint {
        round: 3,
        training_round: 2,
        path: path2.clone(),
        sha256: sha2,
        bytes: bytes2,
        created_at_ms: 20,
    };
    store.record_checkpoint(&c2).unwrap();
    assert_eq!(store.latest_checkpoint().unwrap(), Some(c2.clone()));
    assert_eq!(store.checkpoints().unwrap(), vec![c1.clone(), c2.clone()]);
    store.verify_checkpoint(&c2).unwrap();

    // A release whose checkpoint differs from the one recorded for its round
    // is refused, and nothing else of it is written (one transaction): not
    // the state meant to go with it, not its round record.
    let other = Checkpoint {
        sha256: "0".repeat(64),
        ..c1.clone()
    };
    store.set_meta("optimizer_state", "after round 2").unwrap();
    let released = |round: u64, training_round: u32| RoundRecord {
        round,
        training_round: Some(training_round),
        kind: RoundKind::Training,
        status: RoundStatus::Released,
        contributors: vec!["site-a".into(), "site-b".into()],
        dropped: vec!["site-c".into()],
        reason: None,
        started_at_ms: 1,
        ended_at_ms: Some(2),
    };
    assert!(matches!(
        store.record_round_end(&RoundEnd {
            round: &released(2, 1),
            checkpoint: Some(&other),
            meta: &[("optimizer_state", "wrong")],
        }),
        Err(StoreError::DuplicateCheckpoint { round: 2, .. })
    ));
    assert_eq!(
        store.meta("optimizer_state").unwrap().as_deref(),
        Some("after round 2")
    );
    assert!(store.rounds().unwrap().is_empty());
    // A new checkpoint, its state and its round record arrive together.
    let (path3, sha3, bytes3) = write_checkpoint(&models, 3, &test_model(3, 3.0)).unwrap();
    let c3 = Checkpoint {
        round: 4,
        training_round: 3,
        path: path3,
        sha256: sha3,
        bytes: bytes3,
        created_at_ms: 30,
    };
    store
        .record_round_end(&RoundEnd {
            round: &released(4, 3),
            checkpoint: Some(&c3),
            meta: &[("optimizer_state", "after round 3")],
        })
        .unwrap();
    assert_eq!(store.latest_checkpoint().unwrap(), Some(c3.clone()));
    assert_eq!(
        store.meta("optimizer_state").unwrap().as_deref(),
        Some("after round 3")
    );
    assert_eq!(store.rounds().unwrap(), vec![released(4, 3)]);
    // A release that made no model (an evaluation round) records its meta
    // and its round.
    store
        .record_round_end(&RoundEnd {
            round: &released(5, 3),
            checkpoint: None,
            meta: &[("evaluation", "{}")],
        })
        .unwrap();
    assert_eq!(store.meta("evaluation").unwrap().as_deref(), Some("{}"));
    assert_eq!(store.rounds().unwrap().len(), 2);
    let bad_hash = Checkpoint {
        round: 9,
        sha256: "xyz".into(),
        ..c1.clone()
    };
    assert!(matches!(
        store.record_checkpoint(&bad_hash),
        Err(StoreError::Invalid { .. })
    ));

    // One flipped byte is detected.
    let mut content = std::fs::read(&path2).unwrap();
    let last = content.len() - 1;
    content[last] ^= 1;
    std::fs::write(&path2, &content).unwrap();
    let err = verify_checkpoint(&c2).unwrap_err();
    match &err {
        StoreError::CheckpointMismatch {
            path,
            expected_bytes,
            actual_bytes,
            ..
        } => {
            assert_eq!(path, &path2);
            assert_eq!(expected_bytes, actual_bytes);
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains("model-round-0002"), "{err}");
    // A truncated file too.
    std::fs::write(&path2, &content[..10]).unwrap();
    assert!(matches!(
        verify_checkpoint(&c2),
        Err(StoreError::CheckpointMismatch {
            actual_bytes: 10,
            ..
        })
    ));
    // And a missing one.
    std::fs::remove_file(&path2).unwrap();
    assert!(matches!(
        verify_checkpoint(&c2),
        Err(StoreError::CheckpointIo { .. })
    ));
    // Rewriting the same round replaces the file atomically.
    let (again, _, _) = write_checkpoint_bytes(&models, 1, b"replacement").unwrap();
    assert_eq!(again, path);
    assert_eq!(std::fs::read(&path).unwrap(), b"replacement");
    assert!(matches!(
        store.verify_checkpoint(&c1),
        Err(StoreError::CheckpointMismatch { .. })
    ));
}

#[test]
fn ledger_report_has_cumulative_epsilon_of_the_accountant() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&store_path(&dir)).unwrap();
    let delta = 1e-5;
    let empty = ledger_report(&store, delta).unwrap();
    assert_eq!(empty.epsilon, 0.0);
    assert!(empty.rows.is_empty());

    let sigmas = [8.0, 5.9, 5.9, 4.0, 5.9, 3.0];
    let mut events = Vec::new();
    for (i, sigma) in sigmas.iter().enumerate() {
        let q = if i % 2 == 0 { 1.0 } else { 0.5 };
        let row = gaussian_row(i as u64 + 1, *sigma, q);
        events.push(row.event.clone());
        store.append_ledger(&row).unwrap();
    }
    let report = ledger_report(&store, delta).unwrap();
    assert_eq!(report.rows.len(), sigmas.len());
    let mut previous = 0.0;
    for (i, row) in report.rows.iter().enumerate() {
        let expected = tessera_privacy::epsilon(&events[..=i], delta, AccountantKind::Best)
            .unwrap()
            .epsilon;
        assert!(
            (row.cumulative_epsilon - expected).abs() <= 1e-12 * expected.max(1.0),
            "row {i}: {} vs {expected}",
            row.cumulative_epsilon
        );
        assert!(row.cumulative_epsilon > 0.0);
        assert!(
            row.cumulative_epsilon >= previous,
            "cumulative epsilon decreased at row {i}"
        );
        previous = row.cumulative_epsilon;
    }
    assert_eq!(report.epsilon, previous);

    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["delta"], 1e-5);
    assert_eq!(json["epsilon"], previous);
    let first = &json["rows"][0];
    for key in [
        "round",
        "training_round",
        "kind",
        "mechanism",
        "noise_multiplier",
        "sampling_rate",
        "cohort_size",
        "clip_norm",
        "recorded_at",
        "cumulative_epsilon",
    ] {
        assert!(first.get(key).is_some(), "missing key {key} in {first}");
    }
    assert_eq!(first["mechanism"], "gaussian");
    assert_eq!(first["kind"], "training");
    assert_eq!(first["recorded_at"], "2026-11-18T11:06:40.001Z");

    let table = report.to_string();
    // Header, one line per row, the total, and what ε protects.
    assert_eq!(table.lines().count(), sigmas.len() + 3, "{table}");
    assert!(table.contains("Guarantee: "), "{table}");
    assert!(table.contains("cum. eps"));
    assert!(table.contains(&format!("{previous:.6}")));

    // The read-only view gives the same report.
    let reader = Store::open_read_only(store.path()).unwrap();
    assert_eq!(ledger_report(&reader, delta).unwrap(), report);
}

#[test]
fn status_report_reads_live_state_budget_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut store = Store::open(&path).unwrap();
    let delta = 1e-5;
    store.set_meta("federation_id", "breast-cancer").unwrap();
    for r in 1..=3 {
        store.append_ledger(&gaussian_row(r, 5.0, 1.0)).unwrap();
        store
            .record_round(&RoundRecord {
                round: r,
                training_round: Some(r as u32),
                kind: RoundKind::Training,
                status: RoundStatus::Released,
                contributors: vec!["a".into(), "b".into()],
                dropped: vec![],
                reason: None,
                started_at_ms: 0,
                ended_at_ms: Some(1),
            })
            .unwrap();
    }
    store
        .record_round(&RoundRecord {
            round: 4,
            training_round: Some(4),
            kind: RoundKind::Training,
            status: RoundStatus::Aborted,
            contributors: vec![],
            dropped: vec!["a".into()],
            reason: Some("deadline".into()),
            started_at_ms: 2,
            ended_at_ms: Some(3),
        })
        .unwrap();
    store.participant_seen("a", 1).unwrap();
    store.participant_seen("b", 1).unwrap();
    let (cp_path, sha, bytes) =
        write_checkpoint_bytes(&dir.path().join("models"), 3, b"model bytes").unwrap();
    let checkpoint = Checkpoint {
        round: 3,
        training_round: 3,
        path: cp_path,
        sha256: sha,
        bytes,
        created_at_ms: 4,
    };
    store.record_checkpoint(&checkpoint).unwrap();
    store
        .set_live_status(&LiveStatus {
            current_round: Some(5),
            training_round: Some(5),
            stage: "keys".into(),
            connected: 2,
            pid: std::process::id(),
            updated_at_ms: 5,
            site_budgets: Vec::new(),
        })
        .unwrap();

    let reader = Store::open_read_only(&path).unwrap();
    let status = status_report(&reader, delta, Some(4.0)).unwrap();
    let expected_eps = tessera_privacy::epsilon(
        &store.privacy_events().unwrap(),
        delta,
        AccountantKind::Best,
    )
    .unwrap()
    .epsilon;
    assert!((status.epsilon_spent - expected_eps).abs() < 1e-12);
    assert!((status.epsilon_remaining.unwrap() - (4.0 - expected_eps).max(0.0)).abs() < 1e-12);
    assert!(status.coordinator_running);
    assert_eq!(status.federation_id.as_deref(), Some("breast-cancer"));
    assert_eq!(status.rounds_released, 3);
    assert_eq!(status.rounds_aborted, 1);
    assert_eq!(status.last_released_round, Some(3));
    assert_eq!(status.last_training_round, Some(3));
    assert_eq!(status.participants_seen, 2);
    assert_eq!(status.live.as_ref().unwrap().stage, "keys");
    assert_eq!(status.live.as_ref().unwrap().connected, 2);
    assert_eq!(status.last_checkpoint, Some(checkpoint));
    let text = status.to_string();
    for needle in [
        "current round:       5",
        "keys",
        "connected:           2",
        "model-round-0003",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["live"]["current_round"], 5);

    drop(store);
    let after = status_report(&reader, delta, None).unwrap();
    assert!(!after.coordinator_running);
    assert_eq!(after.epsilon_remaining, None);
}

// ---- crash safety -------------------------------------------------------

const CRASH_CHILD_ENV: &str = "TESSERA_STORE_CRASH_CHILD";

/// Not a test of its own: the body of the child process of
/// `ledger_survives_sigkill_at_random_moments`, which re-runs this test
/// binary with only this test selected and the store path in the environment.
#[test]
fn crash_child_entry() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let mut store = Store::open(&path).expect("child: open");
    let models = path.parent().unwrap().join("models");
    let mut round = store.last_ledger_round().unwrap().map_or(1, |r| r + 1);
    let mut out = std::io::stdout().lock();
    loop {
        let started = now_ms();
        store
            .record_round(&RoundRecord {
                round,
                training_round: Some(round as u32),
                kind: RoundKind::Training,
                status: RoundStatus::Started,
                contributors: vec![],
                dropped: vec![],
                reason: None,
                started_at_ms: started,
                ended_at_ms: None,
            })
            .unwrap();
        store
            .append_ledger(&gaussian_row(round, 1.0 + (round % 7) as f64, 1.0))
            .unwrap();
        // The row is durable: tell the parent.
        writeln!(out, "committed {round}").unwrap();
        out.flush().unwrap();
        let (cp, sha, bytes) =
            write_checkpoint_bytes(&models, round as u32, &round.to_le_bytes().repeat(512))
                .unwrap();
        store
            .record_checkpoint(&Checkpoint {
                round,
                training_round: round as u32,
                path: cp,
                sha256: sha,
                bytes,
                created_at_ms: now_ms(),
            })
            .unwrap();
        store
            .record_round(&RoundRecord {
                round,
                training_round: Some(round as u32),
                kind: RoundKind::Training,
                status: RoundStatus::Released,
                contributors: vec!["a".into(), "b".into()],
                dropped: vec![],
                reason: None,
                started_at_ms: started,
                ended_at_ms: Some(now_ms()),
            })
            .unwrap();
        store.set_meta("last", &round.to_string()).unwrap();
        round += 1;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// xorshift64*, seeded from the clock; the seed is printed for reruns.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn ledger_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let seed = std::env::var("TESSERA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set TESSERA_CRASH_SEED to rerun)");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut committed: Vec<u64> = Vec::new();
    let kills = 24;
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut rounds = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(r) = line.strip_prefix("committed ") {
                    rounds.push(r.trim().parse::<u64>().unwrap());
                }
            }
            rounds
        });
        // Some kills land while the child starts or opens the store, most
        // in the middle of its write loop.
        let delay = Duration::from_micros(rng.next() % 250_000);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "kill {kill}: the child exited on its own"
        );
        let reported = reader.join().unwrap();
        committed.extend(&reported);

        // After each kill the store opens cleanly and holds every row the
        // child reported committed, each round once, without gaps. A reader
        // (the `status` command) sees the same rows before the next writer
        // recovers the WAL.
        match Store::open_read_only(&path) {
            Ok(reader) => {
                let seen: Vec<u64> = reader.ledger().unwrap().iter().map(|r| r.round).collect();
                for r in &committed {
                    assert!(seen.contains(r), "kill {kill}: reader misses round {r}");
                }
                assert!(
                    !reader.writer_active(),
                    "kill {kill}: lock outlived the child"
                );
            }
            // Killed before the first schema was committed.
            Err(StoreError::Missing { .. } | StoreError::SchemaVersion { found: 0, .. })
                if committed.is_empty() => {}
            Err(e) => panic!("kill {kill}: read-only open: {e}"),
        }
        let store = Store::open(&path).unwrap_or_else(|e| panic!("kill {kill}: reopen: {e}"));
        let rows = store.ledger().unwrap();
        let rounds: Vec<u64> = rows.iter().map(|r| r.round).collect();
        let expected: Vec<u64> = (1..=rounds.len() as u64).collect();
        assert_eq!(rounds, expected, "kill {kill}: rounds not contiguous");
        for r in &committed {
            assert!(
                rounds.contains(r),
                "kill {kill}: round {r} was reported committed but is missing"
            );
        }
        // Every row decodes to the event that was written.
        for row in &rows {
            assert_eq!(
                row.event,
                gaussian_row(row.round, 1.0 + (row.round % 7) as f64, 1.0).event
            );
        }
        // A recorded checkpoint's file is complete.
        if let Some(c) = store.latest_checkpoint().unwrap() {
            verify_checkpoint(&c).unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        }
        let check: String = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
        assert_eq!(check, "ok", "kill {kill}");
    }
    assert!(
        !committed.is_empty(),
        "no child ever committed a row; the kills were too early"
    );
    eprintln!(
        "{kills} kills, {} rows reported committed, all present",
        committed.len()
    );
}

// The store moves between threads (the coordinator keeps it behind a mutex).
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
};
