//! The privacy report: every figure equals the accountant's and the
//! `ledger` command's on the same store, through the library and through
//! `tessera-coordinator report` (Markdown, HTML, JSON); seeded rounds give
//! the NOT PRIVATE banner.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_coordinator::privacy_report::{PRIORS, PrivacyReport, markdown, site_view};
use tessera_coordinator::store::{NewLedgerRow, RoundRecord, RoundStatus, Store, ledger_report};
use tessera_model::RoundKind;
use tessera_privacy::{AccountantKind, PrivacyEvent};

const DELTA: f64 = 1e-5;

fn row(round: u64, kind: RoundKind, sigma: f64, q: f64, clip: f64, seeded: bool) -> NewLedgerRow {
    NewLedgerRow {
        round,
        training_round: (kind == RoundKind::Training).then_some(round as u32),
        kind,
        event: PrivacyEvent::gaussian(sigma, q, 1).with_tv_slack(1e-12),
        cohort_size: 4,
        clip_norm: clip,
        noise_multiplier: sigma,
        sampling_rate: q,
        recorded_at_ms: 1_795_000_000_000 + round as i64,
        not_private: seeded,
    }
}

fn released(round: u64) -> RoundRecord {
    RoundRecord {
        round,
        training_round: Some(round as u32),
        kind: RoundKind::Training,
        status: RoundStatus::Released,
        contributors: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        dropped: vec![],
        reason: None,
        started_at_ms: 1,
        ended_at_ms: Some(2),
    }
}

/// A store with a statistics release and `rounds` training rounds at (σ, q).
fn store(dir: &Path, rounds: u64, sigma: f64, q: f64, seeded: bool) -> PathBuf {
    let path = dir.join("out").join("coordinator.sqlite");
    let mut s = Store::open(&path).unwrap();
    s.append_ledger(&row(0, RoundKind::Statistics, 20.0, 1.0, 1.0, seeded))
        .unwrap();
    for r in 1..=rounds {
        let clip = 0.25 + 0.01 * r as f64;
        s.append_ledger(&row(r, RoundKind::Training, sigma, q, clip, seeded))
            .unwrap();
        s.record_round(&released(r)).unwrap();
    }
    path
}

fn config(dir: &Path, store: &Path, budget: Option<f64>) -> PathBuf {
    let path = dir.join("coordinator.toml");
    let budget = budget.map_or_else(String::new, |b| format!("max_epsilon = {b}\n"));
    std::fs::write(
        &path,
        format!(
            r#"
[federation]
name = "report-test"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 10
output_dir = "out"
store = "{store}"
[tls]
ca = "ca.crt"
cert = "coordinator.crt"
key = "coordinator.key"
[task]
features = ["a"]
label = "y"
positive = "> 0"
[privacy]
enabled = true
noise_multiplier = 1.1
delta = {DELTA:e}
{budget}[statistics.ranges]
a = [0.0, 1.0]
"#,
            store = store.display()
        ),
    )
    .unwrap();
    path
}

fn coordinator(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-coordinator"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn figures_equal_the_accountant_and_the_ledger() {
    for (q, sampled) in [(1.0, false), (0.5, true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = store(dir.path(), 6, 1.1, q, false);
        let s = Store::open_read_only(&path).unwrap();
        let r = PrivacyReport::from_store(&s, "fed", DELTA, Some(50.0)).unwrap();
        let events = s.privacy_events().unwrap();
        let best = tessera_privacy::epsilon(&events, DELTA, AccountantKind::Best).unwrap();
        let rdp = tessera_privacy::epsilon(&events, DELTA, AccountantKind::Rdp).unwrap();
        let site =
            tessera_privacy::epsilon(&site_view(&events), DELTA, AccountantKind::Best).unwrap();
        let ledger = ledger_report(&s, DELTA).unwrap();
        assert!(
            close(r.epsilon, best.epsilon),
            "{} vs {}",
            r.epsilon,
            best.epsilon
        );
        assert!(close(r.epsilon, ledger.epsilon));
        assert_eq!(r.accountant, best.accountant.as_str());
        assert!(close(r.rdp_epsilon.unwrap(), rdp.epsilon));
        assert!(close(
            r.tighter_than_rdp.unwrap(),
            rdp.epsilon / best.epsilon
        ));
        assert!(r.tighter_than_rdp.unwrap() >= 1.0);
        assert!(close(r.site_epsilon.unwrap(), site.epsilon));
        if sampled {
            assert!(r.site_epsilon.unwrap() > r.epsilon, "q = 1 counts more");
        } else {
            assert!(close(r.site_epsilon.unwrap(), r.epsilon));
            assert_eq!(r.accountant, "exact");
        }
        assert_eq!(r.releases, 7);
        assert_eq!(r.training_rounds, 6);
        assert!(r.private);
        assert_eq!(r.delta, DELTA);
        assert!(close(r.tv_slack, 7e-12));
        // Groups: the statistics release, then six training rounds at one σ and q.
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.groups[1].count, 6);
        assert_eq!(r.groups[1].noise_multiplier, 1.1);
        assert_eq!(r.groups[1].sampling_rate, q);
        assert!(close(r.groups[1].clip_norm_min, 0.26));
        assert!(close(r.groups[1].clip_norm_max, 0.31));
        // Prior → posterior: odds grow by e^ε at most.
        assert_eq!(r.posterior.len(), PRIORS.len());
        for p in &r.posterior {
            let odds = |x: f64| x / (1.0 - x);
            assert!(close(
                odds(p.worst_case),
                odds(p.prior) * best.epsilon.exp()
            ));
        }
        // ε after each release is the ledger's cumulative ε.
        let cumulative: Vec<f64> = ledger.rows.iter().map(|r| r.cumulative_epsilon).collect();
        assert_eq!(r.epsilon_by_release, cumulative);
        // The Markdown carries the figures as printed.
        let md = markdown(&r);
        assert!(md.contains(&format!("ε = {:.4}", best.epsilon)), "{md}");
        assert!(md.contains(&format!("ε = {:.4}", rdp.epsilon)));
        assert!(md.contains(&format!("ε = {:.4}", site.epsilon)));
        assert!(md.contains("one hospital's whole contribution"));
        assert!(md.contains(r.guarantee));
        assert!(md.contains("linked with other data sets"));
        assert!(!md.contains("NOT PRIVATE"));
    }
}

#[test]
fn the_command_prints_the_same_figures_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 5, 1.3, 1.0, false);
    let cfg = config(dir.path(), &path, Some(20.0));
    let cfg = cfg.to_str().unwrap();
    let ledger: serde_json::Value =
        serde_json::from_str(coordinator(&["ledger", "--config", cfg, "--json"]).trim()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(coordinator(&["report", "--config", cfg, "--format", "json"]).trim())
            .unwrap();
    let eps = ledger["epsilon"].as_f64().unwrap();
    assert!(close(json["epsilon"].as_f64().unwrap(), eps), "{json}");
    assert_eq!(json["budget"].as_f64(), Some(20.0));
    assert_eq!(json["federation"], "report-test");
    assert_eq!(json["private"], true);
    let md = coordinator(&["report", "--config", cfg]);
    assert!(md.starts_with("# Privacy report: report-test"), "{md}");
    assert!(md.contains(&format!("ε = {eps:.4}")));
    assert!(md.contains(&format!("{:.4} left", 20.0 - eps)));
    let html = coordinator(&["report", "--config", cfg, "--format", "html"]);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&format!("ε = {eps:.4}")));
    assert!(!html.contains("<script"));
}

#[test]
fn seeded_rounds_are_announced_as_not_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 3, 1.0, 1.0, true);
    let s = Store::open_read_only(&path).unwrap();
    let r = PrivacyReport::from_store(&s, "fed", DELTA, None).unwrap();
    assert!(!r.private);
    assert_eq!(r.non_private_rounds, vec![0, 1, 2, 3]);
    let md = markdown(&r);
    assert!(md.contains("> **NOT PRIVATE."), "{md}");
    let html = tessera_coordinator::privacy_report::html(&r);
    assert!(html.contains("class=\"banner\">NOT PRIVATE."));
}

#[test]
fn an_empty_ledger_reports_nothing_spent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.sqlite");
    drop(Store::open(&path).unwrap());
    let s = Store::open_read_only(&path).unwrap();
    let r = PrivacyReport::from_store(&s, "fed", DELTA, None).unwrap();
    assert_eq!(r.epsilon, 0.0);
    assert!(r.private && r.site_epsilon.is_none() && r.rdp_epsilon.is_none());
    assert!(markdown(&r).contains("ε = 0"));
}
