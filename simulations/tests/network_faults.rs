//! A site behind a bad link, with real processes: four sites in a
//! federation with secure aggregation, one of them (`site-4`) connected
//! through a loopback TCP proxy the test drives (`tessera_testkit::proxy`;
//! TLS passes through it untouched). In turn the link gets slow (latency on
//! every read: the site still contributes), stalls past the stage deadline
//! (a site too slow: the round is released on time with the other three,
//! who are not held hostage), is cut (every connection shut: the site
//! reconnects and contributes again) and is cut in the middle of a
//! message (the same). The federation completes every planned round and
//! every process exits 0.

#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_coordinator::store::{RoundRecord, RoundStatus};
use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};
use tessera_testkit::proxy::Proxy;

const PROXIED: &str = "site-4";
const DIRECT: [&str; 3] = ["site-1", "site-2", "site-3"];
const ROUNDS: u32 = 200;
const STAGE_SECONDS: f64 = 2.0;

/// Waits until a released round after `after` satisfies `want`; returns it.
fn released_round(
    fed: &Federation,
    after: u64,
    what: &str,
    want: impl Fn(&RoundRecord) -> bool,
) -> RoundRecord {
    let t = Instant::now();
    loop {
        if let Some(r) = fed
            .try_store_rounds()
            .into_iter()
            .filter(|r| r.round > after && r.status == RoundStatus::Released)
            .find(|r| want(r))
        {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no released round after {after} where {what}:\n{}",
            fed.coordinator_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn with_site(r: &RoundRecord) -> bool {
    r.training_round.is_some() && r.contributors.iter().any(|c| c == PROXIED)
}

#[test]
fn a_site_behind_a_bad_link_rejoins_and_nobody_waits_for_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("network_faults");
    let root = tessera_testkit::files::fresh_dir(&dir);
    let split = breast_cancer_split(&root.join("data"), 4, 3);
    let sites = SitePlan::from_split(&split);
    let mut plan = plain_plan(&root, &sites);
    plan.rounds = ROUNDS;
    plan.stage_seconds = STAGE_SECONDS;
    plan.training_seconds = STAGE_SECONDS;
    let sim = env!("CARGO_BIN_EXE_tessera-sim");
    let mut fed = Federation::from_plan(plan, sim_entry_points(sim));
    fed.start_coordinator();
    for name in DIRECT {
        fed.start_site(name);
    }
    let proxy = Proxy::start(fed.address());
    let site = fed.site(PROXIED);
    fed.write_participant_config_at(&site, &proxy.address());
    fed.launch_participant(PROXIED);

    // Through the proxy, the site takes part.
    let r = released_round(&fed, 0, "the proxied site contributes", with_site);

    // A slow link (every read delayed): still in.
    proxy.set_latency(Duration::from_millis(30));
    let r = released_round(&fed, r.round, "it contributes over a slow link", with_site);
    proxy.set_latency(Duration::ZERO);

    // A stalled link: the others' round is released without it, on time.
    proxy.stall(true);
    let stalled_at = Instant::now();
    let without = released_round(&fed, r.round, "it is dropped", |r| {
        r.training_round.is_some() && r.dropped.iter().any(|d| d == PROXIED)
    });
    assert!(
        stalled_at.elapsed() < Duration::from_secs_f64(3.0 * STAGE_SECONDS + 10.0),
        "the others waited {:?}",
        stalled_at.elapsed()
    );
    let mut who = without.contributors.clone();
    who.sort();
    assert_eq!(who, DIRECT, "{without:?}");
    proxy.stall(false);

    // Cut: it reconnects and contributes again.
    let before = proxy.accepted();
    proxy.cut_all();
    let r = released_round(&fed, without.round, "it rejoins after a cut", with_site);
    assert!(proxy.accepted() > before, "no new connection after the cut");

    // Cut in the middle of a message (the next connection, a few KiB in).
    let cuts = proxy.cuts();
    proxy.cut_downstream_after(3_000);
    proxy.cut_all();
    let r = released_round(&fed, r.round, "it rejoins after a cut mid-message", |x| {
        with_site(x) && proxy.cuts() >= cuts + 2
    });
    assert!(r.round > 0);

    let status = fed.wait_coordinator_within(Duration::from_secs(300));
    assert!(status.success(), "{status}:\n{}", fed.coordinator_log());
    for (name, status) in fed.wait_participants(Duration::from_secs(60)) {
        assert!(status.success(), "{name}: {status}:\n{}", fed.log(&name));
    }
    let rounds = fed.store_rounds();
    let trained = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
        .count();
    assert_eq!(trained, ROUNDS as usize);
    println!(
        "{} connections through the proxy, {} cut, {} bytes up, {} bytes down",
        proxy.accepted(),
        proxy.cuts(),
        proxy.bytes_up(),
        proxy.bytes_down()
    );
}
