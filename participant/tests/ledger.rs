//! The site's own privacy ledger, on real SQLite files.

use std::path::PathBuf;

use tessera_participant::ledger::{
    Contribution, LedgerError, LedgerStore, SiteLedger, site_ledger_report,
};
use tessera_privacy::{AccountantKind, PrivacyEvent};

mod common;
use common::contribution;

fn ledger_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("site-ledger.sqlite")
}

#[test]
fn records_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    {
        let mut ledger = SiteLedger::open(&path).unwrap();
        assert!(ledger.contributions().unwrap().is_empty());
        assert_eq!(ledger.epsilon(1e-5).unwrap(), 0.0);
        ledger.record(&contribution("fed-a", 0, 8.0)).unwrap();
        ledger.record(&contribution("fed-a", 1, 5.0)).unwrap();
        // The same round number in another federation is another contribution.
        ledger.record(&contribution("fed-b", 1, 5.0)).unwrap();
    }
    let ledger = SiteLedger::open(&path).unwrap();
    let rows = ledger.contributions().unwrap();
    assert_eq!(
        rows,
        vec![
            contribution("fed-a", 0, 8.0),
            contribution("fed-a", 1, 5.0),
            contribution("fed-b", 1, 5.0)
        ]
    );
}

#[test]
fn duplicate_round_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = SiteLedger::open(&path).unwrap();
    ledger.record(&contribution("fed-a", 3, 2.0)).unwrap();
    let err = ledger.record(&contribution("fed-a", 3, 9.0)).unwrap_err();
    assert!(
        matches!(&err, LedgerError::DuplicateRound { round: 3, federation, .. } if federation == "fed-a"),
        "{err}"
    );
    assert!(err.to_string().contains("site-ledger.sqlite"), "{err}");
    assert_eq!(ledger.contributions().unwrap().len(), 1);
    let mut bad = contribution("fed-a", 4, f64::INFINITY);
    assert!(matches!(
        ledger.record(&bad),
        Err(LedgerError::Invalid { .. })
    ));
    bad.noise_multiplier = -1.0;
    assert!(matches!(
        ledger.record(&bad),
        Err(LedgerError::Invalid { .. })
    ));
    bad.noise_multiplier = 0.0;
    assert!(matches!(
        ledger.record(&bad),
        Err(LedgerError::Invalid { .. })
    ));
}

#[test]
fn events_count_every_contribution_at_q_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SiteLedger::open(&ledger_path(&dir)).unwrap();
    for (round, sigma) in [(1, 5.0), (2, 5.0), (3, 4.0), (4, 5.0)] {
        ledger.record(&contribution("fed", round, sigma)).unwrap();
    }
    let events = ledger.events().unwrap();
    let mut total = 0;
    for event in &events {
        match event {
            PrivacyEvent::Gaussian {
                sampling_rate,
                count,
                ..
            } => {
                assert_eq!(*sampling_rate, 1.0, "the site counts q = 1");
                total += count;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(total, 4);

    let delta = 1e-5;
    let unmerged: Vec<PrivacyEvent> = ledger
        .contributions()
        .unwrap()
        .iter()
        .map(Contribution::event)
        .collect();
    let expected = tessera_privacy::epsilon(&unmerged, delta, AccountantKind::Best)
        .unwrap()
        .epsilon;
    let eps = ledger.epsilon(delta).unwrap();
    assert!(
        (eps - expected).abs() <= 1e-9 * expected,
        "{eps} vs {expected}"
    );
    // Counting at q = 1 is never below what a coordinator sampling at q < 1 reports.
    let sampled: Vec<PrivacyEvent> = [5.0, 5.0, 4.0, 5.0]
        .iter()
        .map(|&noise_multiplier| PrivacyEvent::gaussian(noise_multiplier, 0.3, 1))
        .collect();
    let coordinator = tessera_privacy::epsilon(&sampled, delta, AccountantKind::Best)
        .unwrap()
        .epsilon;
    assert!(eps >= coordinator, "{eps} < {coordinator}");
}

#[test]
fn epsilon_if_is_above_epsilon_and_matches_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SiteLedger::open(&ledger_path(&dir)).unwrap();
    let delta = 1e-5;
    let next = contribution("fed", 1, 3.0);
    let first = ledger.epsilon_if(&next, delta).unwrap();
    assert!(first > 0.0);
    assert_eq!(
        ledger.epsilon(delta).unwrap(),
        0.0,
        "epsilon_if records nothing"
    );
    ledger.record(&next).unwrap();
    assert!((ledger.epsilon(delta).unwrap() - first).abs() < 1e-12);

    let now = ledger.epsilon(delta).unwrap();
    let after = ledger
        .epsilon_if(&contribution("fed", 2, 3.0), delta)
        .unwrap();
    assert!(after > now, "{after} <= {now}");
    // Less noise costs more.
    let noisier = ledger
        .epsilon_if(&contribution("fed", 2, 10.0), delta)
        .unwrap();
    assert!(after > noisier && noisier > now);
}

#[test]
fn report_has_cumulative_epsilon_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = SiteLedger::open(&path).unwrap();
    let delta = 1e-5;
    for round in 0..5 {
        ledger
            .record(&contribution("fed", round, 4.0 + round as f64))
            .unwrap();
    }
    let reader = SiteLedger::open_read_only(&path).unwrap();
    let report = site_ledger_report(&reader, delta, Some(2.0)).unwrap();
    assert_eq!(report.rows.len(), 5);
    let mut previous = 0.0;
    for (i, row) in report.rows.iter().enumerate() {
        let prefix: Vec<PrivacyEvent> = ledger.contributions().unwrap()[..=i]
            .iter()
            .map(Contribution::event)
            .collect();
        let expected = tessera_privacy::epsilon(&prefix, delta, AccountantKind::Best)
            .unwrap()
            .epsilon;
        assert!((row.cumulative_epsilon - expected).abs() <= 1e-9 * expected);
        assert!(row.cumulative_epsilon > previous);
        previous = row.cumulative_epsilon;
    }
    assert_eq!(report.epsilon, previous);
    assert_eq!(report.epsilon, ledger.epsilon(delta).unwrap());
    assert_eq!(report.epsilon_remaining, Some((2.0 - previous).max(0.0)));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][0]["federation"], "fed");
    assert_eq!(json["max_epsilon"], 2.0);
    assert!(json["rows"][4]["cumulative_epsilon"].as_f64().unwrap() > 0.0);
    let text = report.to_string();
    assert!(text.contains("cum. eps"), "{text}");
    assert!(text.contains("q = 1"), "{text}");
    assert!(text.contains("max_epsilon = 2"), "{text}");

    // The reader is read-only and sees later writes.
    ledger.record(&contribution("fed", 9, 4.0)).unwrap();
    assert_eq!(reader.contributions().unwrap().len(), 6);
    let empty_dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        SiteLedger::open_read_only(&empty_dir.path().join("none.sqlite")),
        Err(LedgerError::Missing { .. })
    ));
    let empty = SiteLedger::open(&empty_dir.path().join("e.sqlite")).unwrap();
    let r = site_ledger_report(&empty, delta, None).unwrap();
    assert_eq!(r.epsilon, 0.0);
    assert!(r.to_string().contains("no contributions"));
}

#[test]
fn rows_cannot_be_changed_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = SiteLedger::open(&path).unwrap();
    ledger.record(&contribution("fed", 1, 2.0)).unwrap();
    drop(ledger);
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(
        raw.execute("UPDATE contributions SET noise_multiplier = 50.0", [])
            .is_err()
    );
    assert!(raw.execute("DELETE FROM contributions", []).is_err());
}

/// The version-1 schema, as an older participant wrote it.
const SCHEMA_V1: &str = r#"
CREATE TABLE contributions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    federation       TEXT    NOT NULL,
    round            INTEGER NOT NULL CHECK (round >= 0),
    training_round   INTEGER CHECK (training_round IS NULL OR training_round >= 0),
    kind             TEXT    NOT NULL,
    noise_multiplier REAL    NOT NULL,
    clip_norm        REAL    NOT NULL,
    recorded_at_ms   INTEGER NOT NULL,
    UNIQUE (federation, round)
) STRICT;
CREATE TRIGGER contributions_no_update BEFORE UPDATE ON contributions
BEGIN SELECT RAISE(ABORT, 'site ledger rows are append-only'); END;
CREATE TRIGGER contributions_no_delete BEFORE DELETE ON contributions
BEGIN SELECT RAISE(ABORT, 'site ledger rows are append-only'); END;
INSERT INTO contributions (federation, round, training_round, kind, noise_multiplier,
                           clip_norm, recorded_at_ms)
VALUES ('old', 1, NULL, 'statistics', 6.0, 2.5, 1795000000001),
       ('old', 2, 1, 'training', 3.0, 0.25, 1795000000002);
PRAGMA user_version = 1;
"#;

#[test]
fn version_one_ledgers_are_read_and_migrated_keeping_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(SCHEMA_V1)
        .unwrap();
    let old = |round: u64, sigma: f64| Contribution {
        federation: "old".into(),
        round,
        training_round: (round == 2).then_some(1),
        kind: if round == 1 { "statistics" } else { "training" }.into(),
        noise_multiplier: sigma,
        clip_norm: if round == 1 { 2.5 } else { 0.25 },
        tv_slack: 0.0,
        not_private: false,
        recorded_at_ms: 1_795_000_000_000 + round as i64,
        site_noise: None,
        event: None,
    };
    // Read as it is (a report while no participant runs)...
    let reader = SiteLedger::open_read_only(&path).unwrap();
    assert_eq!(reader.contributions().unwrap(), [old(1, 6.0), old(2, 3.0)]);
    drop(reader);
    // ...and migrated by a participant, rows kept.
    let mut ledger = SiteLedger::open(&path).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, tessera_participant::ledger::SCHEMA_VERSION);
    let mut new = contribution("new", 1, 3.0);
    new.tv_slack = 2.5e-9;
    new.not_private = true;
    ledger.record(&new).unwrap();
    // A round whose sites added the noise keeps its shares' figures.
    let mut distributed = contribution("new", 2, 1.5);
    distributed.site_noise = Some(tessera_participant::ledger::SiteNoise {
        summands: 4,
        l2_units: 65536.0,
        dimension: 31,
    });
    ledger.record(&distributed).unwrap();
    assert_eq!(
        ledger.contributions().unwrap(),
        [old(1, 6.0), old(2, 3.0), new.clone(), distributed.clone()]
    );
    assert!(matches!(
        distributed.event(),
        PrivacyEvent::DistributedDiscreteGaussian { summands: 4, .. }
    ));
    drop(ledger);
    // Reopening changes nothing; rows stay append-only.
    let ledger = SiteLedger::open(&path).unwrap();
    assert_eq!(ledger.contributions().unwrap().len(), 4);
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(
        raw.execute("UPDATE contributions SET tv_slack = 0.0", [])
            .is_err()
    );
    assert!(raw.execute("DELETE FROM contributions", []).is_err());
    // A ledger from a newer build is refused.
    raw.pragma_update(None, "user_version", 5).unwrap();
    assert!(matches!(
        SiteLedger::open(&path),
        Err(LedgerError::SchemaVersion { found: 5, .. })
    ));
}

#[test]
fn events_carry_the_noise_slack_and_merged_events_add_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SiteLedger::open(&ledger_path(&dir)).unwrap();
    let slacks = [1e-9, 3e-9, 5e-9];
    for (i, (sigma, tv)) in [(2.0, slacks[0]), (2.0, slacks[1]), (4.0, slacks[2])]
        .into_iter()
        .enumerate()
    {
        let mut c = contribution("fed", i as u64, sigma);
        c.tv_slack = tv;
        assert_eq!(
            c.event(),
            PrivacyEvent::gaussian(sigma, 1.0, 1).with_tv_slack(tv)
        );
        ledger.record(&c).unwrap();
    }
    let events = ledger.events().unwrap();
    assert_eq!(
        events,
        [
            PrivacyEvent::gaussian(2.0, 1.0, 2).with_tv_slack(slacks[0] + slacks[1]),
            PrivacyEvent::gaussian(4.0, 1.0, 1).with_tv_slack(slacks[2]),
        ]
    );
    // The slack costs privacy: the site's ε is above the slack-free figure.
    let delta = 1e-5;
    let without: Vec<PrivacyEvent> = [(2.0, 2), (4.0, 1)]
        .iter()
        .map(|&(s, n)| PrivacyEvent::gaussian(s, 1.0, n))
        .collect();
    let bare = tessera_privacy::epsilon(&without, delta, AccountantKind::Best)
        .unwrap()
        .epsilon;
    assert!(ledger.epsilon(delta).unwrap() > bare);
    // A slack that is not a probability is refused.
    let mut bad = contribution("fed", 9, 2.0);
    bad.tv_slack = f64::NAN;
    assert!(matches!(
        ledger.record(&bad),
        Err(LedgerError::Invalid { .. })
    ));
    bad.tv_slack = -1e-9;
    assert!(matches!(
        ledger.record(&bad),
        Err(LedgerError::Invalid { .. })
    ));
}

#[test]
fn reports_mark_rounds_with_seeded_noise_not_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = SiteLedger::open(&path).unwrap();
    ledger.record(&contribution("fed", 1, 4.0)).unwrap();
    let mut seeded = contribution("fed", 2, 4.0);
    seeded.not_private = true;
    seeded.tv_slack = 1e-9;
    ledger.record(&seeded).unwrap();
    let report = site_ledger_report(&ledger, 1e-5, None).unwrap();
    assert_eq!(report.not_private_contributions, 1);
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let row = |round: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(round))
            .unwrap()
    };
    assert!(!row("1").contains("NOT PRIVATE"), "{text}");
    assert!(row("2").contains("NOT PRIVATE"), "{text}");
    assert!(text.contains("WARNING: NOT PRIVATE"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][0]["not_private"], false);
    assert_eq!(json["rows"][1]["not_private"], true);
    assert_eq!(json["rows"][1]["tv_slack"], 1e-9);
    assert_eq!(json["not_private_contributions"], 1);
    assert!(json["warning"].as_str().unwrap().contains("NOT PRIVATE"));
    // Without such rounds there is no warning.
    let clean = tempfile::tempdir().unwrap();
    let mut ledger = SiteLedger::open(&ledger_path(&clean)).unwrap();
    ledger.record(&contribution("fed", 1, 4.0)).unwrap();
    let report = site_ledger_report(&ledger, 1e-5, None).unwrap();
    assert!(!report.to_string().contains("NOT PRIVATE"));
    assert!(
        serde_json::to_value(&report)
            .unwrap()
            .get("warning")
            .is_none()
    );
}
