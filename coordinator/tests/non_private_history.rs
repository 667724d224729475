//! A store that released rounds without privacy: its ledger report says so,
//! and a private federation refuses to resume it. Version-1 stores (before
//! the `not_private` column) are migrated on open.

use std::path::Path;

use tessera_coordinator::config::CoordinatorConfig;
use tessera_coordinator::driver::refuse_non_private_history;
use tessera_coordinator::settings::Settings;
use tessera_coordinator::store::{NewLedgerRow, RoundRecord, RoundStatus, Store, ledger_report};
use tessera_model::RoundKind;
use tessera_privacy::PrivacyEvent;

fn settings(dir: &Path, privacy: &str) -> Settings {
    let text = format!(
        r#"
[federation]
name = "history"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 5
output_dir = "{out}"
[tls]
ca = "a"
cert = "b"
key = "c"
[task]
features = ["a"]
label = "y"
positive = "> 0"
[privacy]
{privacy}
[statistics.ranges]
a = [0.0, 1.0]
"#,
        out = dir.display()
    );
    let config: CoordinatorConfig = toml::from_str(&text).unwrap();
    Settings::plan(config).unwrap()
}

const PRIVATE: &str = "enabled = true\nnoise_multiplier = 1.0";
const SEEDED: &str = "enabled = true\nnoise_multiplier = 1.0\ninsecure_noise_seed = 3\nacknowledge_not_private = true";

fn released(round: u64) -> RoundRecord {
    RoundRecord {
        round,
        training_round: Some(round as u32),
        kind: RoundKind::Training,
        status: RoundStatus::Released,
        contributors: vec!["a".into(), "b".into(), "c".into()],
        dropped: vec![],
        reason: None,
        started_at_ms: 1,
        ended_at_ms: Some(2),
    }
}

fn ledger_row(round: u64, not_private: bool) -> NewLedgerRow {
    NewLedgerRow {
        round,
        training_round: Some(round as u32),
        kind: RoundKind::Training,
        event: PrivacyEvent::gaussian(1.0, 1.0, 1),
        cohort_size: 3,
        clip_norm: 0.25,
        noise_multiplier: 1.0,
        sampling_rate: 1.0,
        recorded_at_ms: 5,
        not_private,
    }
}

#[test]
fn rounds_released_without_dp_block_a_private_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), PRIVATE);
    let mut store = Store::open(&s.store).unwrap();
    // Round 1 released privately, round 2 with DP off (no ledger row).
    store.append_ledger(&ledger_row(1, false)).unwrap();
    store.record_round(&released(1)).unwrap();
    store.record_round(&released(2)).unwrap();
    assert_eq!(store.non_private_releases().unwrap(), vec![2]);
    let err = refuse_non_private_history(&store, &s)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("released without privacy") && err.contains("round 2"),
        "{err}"
    );
    // A federation without DP, or a seeded one, may go on with it.
    refuse_non_private_history(&store, &settings(dir.path(), "")).unwrap();
    refuse_non_private_history(&store, &settings(dir.path(), SEEDED)).unwrap();
    let report = ledger_report(&store, 1e-5).unwrap();
    assert!(!report.private);
    assert_eq!(report.non_private_rounds, vec![2]);
    assert!(report.to_string().contains("NOT PRIVATE"), "{report}");
}

#[test]
fn seeded_ledger_rows_block_a_private_resume_and_show_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), PRIVATE);
    let mut store = Store::open(&s.store).unwrap();
    store.append_ledger(&ledger_row(1, true)).unwrap();
    store.record_round(&released(1)).unwrap();
    assert!(store.ledger().unwrap()[0].not_private);
    assert!(refuse_non_private_history(&store, &s).is_err());
    let report = ledger_report(&store, 1e-5).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("NOT PRIVATE: the noise of this round was seeded"),
        "{text}"
    );
    assert!(text.contains("Guarantee:"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][0]["not_private"], true);
    assert_eq!(json["private"], false);
}

#[test]
fn a_clean_private_store_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), PRIVATE);
    let mut store = Store::open(&s.store).unwrap();
    store.append_ledger(&ledger_row(1, false)).unwrap();
    store.record_round(&released(1)).unwrap();
    refuse_non_private_history(&store, &s).unwrap();
    assert!(ledger_report(&store, 1e-5).unwrap().private);
}

#[test]
fn version_1_stores_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE ledger (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                round INTEGER NOT NULL UNIQUE, training_round INTEGER, kind TEXT NOT NULL,
                mechanism TEXT NOT NULL, event TEXT NOT NULL, cohort_size INTEGER NOT NULL,
                clip_norm REAL NOT NULL, noise_multiplier REAL NOT NULL,
                sampling_rate REAL NOT NULL, recorded_at_ms INTEGER NOT NULL) STRICT;
             INSERT INTO ledger (round, training_round, kind, mechanism, event, cohort_size,
                 clip_norm, noise_multiplier, sampling_rate, recorded_at_ms)
             VALUES (1, 1, 'training', 'gaussian',
                 '{\"mechanism\":\"gaussian\",\"noise_multiplier\":1.0,\"sampling_rate\":1.0,\"count\":1}',
                 3, 0.25, 1.0, 1.0, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let rows = store.ledger().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].not_private);
    assert_eq!(rows[0].event.tv_slack(), 0.0);
}
