//! The site's ledger on a disk that loses power, fills up or turns read-only
//! (`tessera_testkit::power_loss`, an in-memory SQLite VFS that keeps only
//! what was synced): no recorded contribution is ever lost, and a site whose
//! ledger cannot be written sends nothing of its data and loses nothing once
//! space returns.

use std::path::Path;

use tessera_participant::ledger::{LedgerStore, SiteLedger};
use tessera_proto::v1::{coordinator_message::Body as In, participant_message::Body as Out};
use tessera_testkit::power_loss::{self, cut_everywhere};

mod common;
use common::*;

/// Three sessions (the ledger closed in between) of five contributions.
fn record_rounds(dir: &Path) -> Vec<u64> {
    let path = dir.join("site-ledger.sqlite");
    let mut acked = Vec::new();
    for session in 0..3 {
        let Ok(mut ledger) = SiteLedger::open(&path) else {
            return acked;
        };
        for i in 1..=5 {
            let round = session * 5 + i;
            if ledger.record(&contribution("fed-a", round, 1.0)).is_err() {
                return acked;
            }
            acked.push(round);
        }
    }
    acked
}

fn recorded_rounds(dir: &Path) -> Result<Vec<u64>, String> {
    let ledger = SiteLedger::open(&dir.join("site-ledger.sqlite")).map_err(|e| e.to_string())?;
    let rows = ledger.contributions().map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|c| c.round).collect())
}

#[test]
fn no_recorded_contribution_is_lost_to_a_power_cut_at_any_point() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let root = tempfile::tempdir().unwrap();
    let report = cut_everywhere(root.path(), record_rounds, recorded_rounds);
    assert_eq!(report.items, 15);
    assert!(report.operations > 30, "{report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// A private round without secure aggregation: the site's plain input.
fn run_round(site: &mut tessera_participant::site::Site, out: &mut Outbox, round: u64) {
    let mut a = private_training(round);
    a.secagg = None;
    out.handle(site, message(In::Announce(a)));
    assert!(out.reply(round).expect("a reply").accept);
    for m in model(round, &[0.0; 4]) {
        out.handle(site, m);
    }
}

fn contributions(dir: &SiteDir) -> Vec<u64> {
    let path = dir.dir.path().join("state").join("site-ledger.sqlite");
    let ledger = SiteLedger::open(&path).unwrap();
    ledger
        .contributions()
        .unwrap()
        .iter()
        .map(|c| c.round)
        .collect()
}

#[test]
fn a_site_whose_ledger_disk_is_full_or_read_only_sends_nothing_and_loses_nothing() {
    let _g = power_loss::exclusive();
    power_loss::install();
    let dir = SiteDir::new();
    let state = dir.dir.path().join("state");
    let mut site = dir.joined("", "[privacy]\nrequire_secure_aggregation = false\n");
    let mut out = Outbox::default();

    run_round(&mut site, &mut out, 3);
    assert!(
        !out.input_chunks(3).is_empty(),
        "a normal round sends its input"
    );

    // The disk fills up: the site cannot write its ledger row first, so its
    // update does not leave.
    power_loss::set_capacity(&state, Some(power_loss::bytes_under(&state)));
    run_round(&mut site, &mut out, 4);
    assert!(out.input_chunks(4).is_empty(), "nothing leaves unrecorded");

    // So for a read-only ledger directory.
    power_loss::set_capacity(&state, None);
    power_loss::set_read_only(&state, true);
    run_round(&mut site, &mut out, 5);
    assert!(out.input_chunks(5).is_empty(), "nothing leaves unrecorded");

    // Space returns: the next round goes through, and only the rounds whose
    // input left are in the ledger.
    power_loss::set_read_only(&state, false);
    run_round(&mut site, &mut out, 6);
    assert!(!out.input_chunks(6).is_empty());
    assert!(
        out.exits.is_empty(),
        "the site stays in the federation: {:?}",
        out.exits
    );
    let sent_rounds: Vec<u64> = out
        .sent
        .iter()
        .filter_map(|m| match &m.body {
            Some(Out::Chunk(c)) => Some(c.round),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    drop(site);
    assert_eq!(contributions(&dir), sent_rounds);
    assert_eq!(sent_rounds, [3, 6]);
}
