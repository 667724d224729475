//! Soak: a long federation of real processes with random dropouts and
//! restarts, bounded in time. Six sites, secure aggregation, 200 planned
//! training rounds; every 20–150 ms (seeded) one random site is SIGKILLed
//! and started again from its configuration (its ledger kept), so rounds
//! lose members at every stage and sites rejoin. Checked: every planned
//! round is released (none lost: the federation completes them all), all
//! processes exit 0, and the coordinator's resident memory at the end is
//! within 25% (+4 MiB) of what it was after the first 20 rounds.
//!
//! Run (well under a minute here):
//! `cargo test -p tessera-simulations --test soak -- --ignored --nocapture`

#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use tessera_coordinator::store::RoundStatus;
use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};

const SITES: usize = 6;
const ROUNDS: u32 = 200;

/// Resident memory of process `pid` in KiB (`VmRSS`), if readable.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
#[ignore = "a soak; run it explicitly (see the module docs)"]
fn two_hundred_rounds_with_random_dropouts_and_restarts() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    let root = tessera_testkit::files::fresh_dir(&dir);
    let split = breast_cancer_split(&root.join("data"), SITES, 3);
    let sites = SitePlan::from_split(&split);
    let mut plan = plain_plan(&root, &sites);
    plan.rounds = ROUNDS;
    plan.min_participants = 3;
    plan.stage_seconds = 2.0;
    plan.training_seconds = 2.0;
    let sim = env!("CARGO_BIN_EXE_tessera-sim");
    let mut fed = Federation::from_plan(plan, sim_entry_points(sim));
    fed.start_coordinator();
    fed.start_participants();
    let pid = fed.coordinator_pid();
    let names = fed.site_names();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x50A4);

    let started = Instant::now();
    let mut restarts = 0u32;
    let mut rss_early: Option<(u64, usize)> = None;
    let mut rss_last = 0u64;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(20..150));
    let status = loop {
        if let Some(status) = fed.poll_coordinator() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the soak did not finish in 15 minutes"
        );
        let released = fed
            .try_store_rounds()
            .iter()
            .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
            .count();
        if let Some(kib) = rss_kib(pid) {
            rss_last = kib;
            if rss_early.is_none() && released >= 20 {
                rss_early = Some((kib, released));
            }
        }
        if Instant::now() >= next_kill && released < ROUNDS as usize - 5 {
            let victim = &names[rng.random_range(0..names.len())];
            fed.restart_participant(victim);
            restarts += 1;
            next_kill = Instant::now() + Duration::from_millis(rng.random_range(20..150));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}:\n{}", fed.coordinator_log());
    for (name, status) in fed.wait_participants(Duration::from_secs(90)) {
        assert!(status.success(), "{name}: {status}");
    }
    let rounds = fed.store_rounds();
    let released: Vec<_> = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
        .collect();
    let aborted = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Aborted)
        .count();
    let dropped: usize = released.iter().map(|r| r.dropped.len()).sum();
    assert_eq!(released.len(), ROUNDS as usize, "rounds lost");
    let (early, at) = rss_early.expect("an RSS reading after 20 rounds");
    println!(
        "soak: {ROUNDS} training rounds released in {:.0} s, {restarts} site kills and restarts, \
         {dropped} dropouts recorded in released rounds, {aborted} aborted aggregations (retried), \
         coordinator RSS {:.1} MiB after {at} rounds, {:.1} MiB at the end",
        started.elapsed().as_secs_f64(),
        early as f64 / 1024.0,
        rss_last as f64 / 1024.0
    );
    assert!(
        rss_last <= early + early / 4 + 4096,
        "coordinator RSS grew from {early} KiB to {rss_last} KiB"
    );
}
