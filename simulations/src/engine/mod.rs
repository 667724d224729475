//! Engines: how a planned federation runs on this machine. Both run the
//! real coordinator (`tessera_coordinator::server::run`: the gRPC service,
//! the driver with its SQLite store, ledger and checkpoints, the federation
//! machine) and the real participants (`tessera_participant::client`: the
//! site machine, its SQLite ledger, reconnection) talking gRPC over
//! loopback mutual TLS; only the packaging differs:
//!
//! - [`Engine::Processes`] (the default): one OS process per party
//!   ([`processes`]), as in a deployment;
//! - [`Engine::InProcess`]: every party a task of one tokio runtime in this
//!   process ([`inprocess`]), which is what lets one machine run a
//!   thousand participants. The transport is the same loopback mutual TLS
//!   (one TLS connection per participant), so the protocol has one code
//!   path: nothing is simulated but the network's distance.
//!
//! Either way a run writes the same files (store, checkpoints, rounds.csv,
//! participant ledgers), which is how the runner follows it.

pub mod inprocess;
pub mod memory;
pub mod processes;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dropout::Stage;
use crate::launch::{FederationPlan, Layout};

/// Which engine runs a federation (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// One process per party (coordinator and each participant).
    #[default]
    #[value(name = "processes")]
    Processes,
    /// Every party a task of one runtime in this process.
    #[value(name = "inprocess")]
    InProcess,
}

impl Engine {
    /// A sentence saying what ran, for the run's output.
    pub fn describe(self, sites: usize) -> String {
        match self {
            Engine::Processes => format!(
                "processes: the coordinator and {sites} participants as separate processes, gRPC over loopback mutual TLS"
            ),
            Engine::InProcess => format!(
                "inprocess: the coordinator and {sites} participants as tasks of one runtime in this process, gRPC over loopback mutual TLS"
            ),
        }
    }

    /// The other engine.
    pub fn other(self) -> Engine {
        match self {
            Engine::Processes => Engine::InProcess,
            Engine::InProcess => Engine::Processes,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Processes => "processes",
            Engine::InProcess => "inprocess",
        }
    }
}

/// What a simulated site gets beyond its configuration file.
#[derive(Debug, Clone, Default)]
pub struct SiteExtras {
    /// Rounds it leaves, as `(aggregation, stage)` (see [`crate::dropout`]).
    pub leave: Vec<(u64, Stage)>,
    /// Seed of its randomness (keys, masks, stochastic rounding): NOT
    /// secure, only to reproduce a run; None for the OS's randomness.
    pub rng_seed: Option<u64>,
}

/// The seed of site `name`'s randomness in a run seeded with `seed`
/// (SplitMix64 of the seed and a hash of the name, so it does not depend
/// on the engine or the site's position).
pub fn site_rng_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h ^ 0x5173_6974_6500;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a federation ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Whether the coordinator reported success.
    pub success: bool,
    /// What it said, or where to look.
    pub detail: String,
}

/// A running federation, as the runner sees it.
pub trait Running {
    /// The coordinator's address.
    fn address(&self) -> &str;
    /// `Some` once the coordinator has ended.
    fn poll(&mut self) -> anyhow::Result<Option<Ended>>;
    /// After the end: waits up to `grace` for the participants to leave
    /// (they do on the federation's end), then stops the rest; returns a
    /// line for each that did not end cleanly.
    fn finish(&mut self, grace: std::time::Duration) -> Vec<String>;
    /// Stops everything now (a run that went wrong).
    fn kill(&mut self);
    /// Peak resident memory of the whole federation so far, in bytes.
    fn peak_rss(&self) -> Option<u64>;
    /// CPU seconds the federation has used so far.
    fn cpu_seconds(&self) -> Option<f64>;
    /// Planned leavings the sites carried out, by aggregation (in-process
    /// only: the processes engine's sites record theirs in their logs).
    fn leavings(&self) -> Option<BTreeMap<u64, Vec<(String, Stage)>>>;
}

/// Starts `plan` (prepared in `layout`) on `engine`.
pub fn start(
    engine: Engine,
    plan: &FederationPlan,
    layout: &mut Layout,
    extras: &BTreeMap<String, SiteExtras>,
) -> anyhow::Result<Box<dyn Running>> {
    Ok(match engine {
        Engine::Processes => Box::new(processes::Processes::start(plan, layout, extras)?),
        Engine::InProcess => Box::new(inprocess::InProcess::start(plan, layout, extras)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_seeds_differ_by_name_and_seed() {
        let a = site_rng_seed(1, "site-001");
        assert_eq!(a, site_rng_seed(1, "site-001"));
        assert_ne!(a, site_rng_seed(1, "site-002"));
        assert_ne!(a, site_rng_seed(2, "site-001"));
    }
}
