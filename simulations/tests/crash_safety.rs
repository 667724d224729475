//! Crash safety of the privacy ledger with real processes: the
//! coordinator SIGKILLed again and again (see [`crash_loop`] for the loop
//! and what is checked after every kill and at the end).
//!
//! - [`sigkill_at_random_moments_never_undercounts_nor_releases_twice`]:
//!   four sites, everyone every round, a fixed clip norm — the ε of what
//!   was released is known beforehand and compared with the ledger's;
//! - [`sampled_adaptive_federation_with_dying_sites_never_undercounts`]:
//!   Poisson-sampled cohorts, adaptive clipping, and a participant killed
//!   and restarted along with the coordinator at about half the kills.

mod crash_loop;

use crash_loop::{Scenario, run};

#[test]
fn sigkill_at_random_moments_never_undercounts_nor_releases_twice() {
    run(&Scenario {
        dir: "privacy/crash_safety",
        sites: 4,
        planned: 250,
        kills: 60,
        sigma: 2.0,
        sampling_rate: 1.0,
        adaptive_clipping: false,
        min_participants: 3,
        kill_participants: false,
        seed: 0x5EED_C0DE,
    });
}

#[test]
fn sampled_adaptive_federation_with_dying_sites_never_undercounts() {
    run(&Scenario {
        dir: "privacy/crash_safety_sampled",
        sites: 8,
        planned: 250,
        kills: 30,
        sigma: 2.0,
        sampling_rate: 0.9,
        adaptive_clipping: true,
        min_participants: 3,
        kill_participants: true,
        seed: 0xC0FF_EE00,
    });
}
