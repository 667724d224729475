//! Tessera simulations: real local federations (one process per
//! participant, loopback mutual TLS) on bundled or user data, the demo, and
//! benchmarks.
//!
//! - [`partition`]: holdout and natural/IID splits of CSV files;
//! - [`launch`]: PKI, configuration files and processes of a federation;
//! - [`experiment`]: `run`/`demo`: follow the rounds, evaluate, write the summary;
//! - [`learning`]: `run`'s task kind, server optimizer, evaluation and external-trainer
//!   options;
//! - [`bench_secagg`]: the in-process secure-aggregation benchmark;
//! - [`bench_round`]: one round of a large model through a real federation;
//! - [`bench_learning`]: seconds per round of a multi-class MLP over many sites,
//!   and of an external trainer against the built-in one.

pub mod bench_harness;
pub mod bench_learning;
pub mod bench_round;
pub mod bench_secagg;
pub mod configs;
pub mod experiment;
pub mod faults;
pub mod inmemory;
pub mod launch;
pub mod learning;
pub mod partition;

use std::path::PathBuf;

/// The bundled data directory (`data/` at the root of the repository).
pub fn bundled_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}
