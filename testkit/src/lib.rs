//! Test support shared by every Tessera crate's tests: binaries, processes
//! with kill guards, federations of real processes, data helpers, the test
//! PKI and the FedAvg reference.
//!
//! A dev-dependency only; no production crate depends on it. Each suite
//! turns on the features it needs:
//!
//! - always: [`bins`] (the workspace's binaries next to a test, built once
//!   when missing), [`process`] (waiting with patience, kill-on-drop
//!   guards, free ports), [`command`] (running a command within a time
//!   limit, its whole process group killed on a timeout), [`files`] (fresh
//!   working directories, logs without colour codes, their tails, fields of
//!   log lines), [`proxy`] (a loopback TCP proxy that cuts, stalls and slows
//!   connections);
//! - `pki`: [`pki`] (a fresh development PKI per test);
//! - `model`: [`data`] (the bundled data sets, their tasks and splits) and
//!   [`fedavg`] (the in-process FedAvg reference);
//! - `federation`: [`federation`] (a coordinator and participant processes
//!   on loopback mutual TLS, on temporary CSV splits of the bundled data);
//! - `power-loss`: [`power_loss`] (an in-memory SQLite disk that drops
//!   unsynced writes when the power goes, fills up or turns read-only).

pub mod bins;
pub mod command;
pub mod files;
pub mod process;
pub mod proxy;

#[cfg(feature = "pki")]
pub mod pki;

#[cfg(feature = "model")]
pub mod data;
#[cfg(feature = "model")]
pub mod fedavg;

#[cfg(feature = "federation")]
pub mod federation;

#[cfg(feature = "power-loss")]
#[allow(unsafe_code)] // a SQLite VFS: C callbacks, each with its SAFETY note
pub mod power_loss;
