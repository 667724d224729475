//! Tessera simulations: real local federations (the production coordinator
//! and participants over loopback mutual TLS, as separate processes or as
//! tasks of one runtime) on bundled or user data, sweeps, plots, the demo,
//! and benchmarks.
//!
//! - [`partition`], [`partition_skew`]: holdout and natural, IID, Dirichlet
//!   label-skew and quantity-skew splits of CSV files, and their table;
//! - [`launch`], [`configs`]: PKI, configuration files and processes;
//! - [`engine`]: the processes and in-process engines;
//! - [`dropout`]: planned dropouts at secure-aggregation stages;
//! - [`experiment`]: the options of `run`/`demo` and the run they decide;
//!   [`learning`]: the task kind, server optimizer, evaluation and
//!   external-trainer options;
//!   [`runner`] carries it out, [`run_files`] writes its files, [`plots`]
//!   draws them, [`progress`] shows it going;
//! - [`sweep`]: `tessera-sim sweep` over noise levels, seeds, models,
//!   optimizers or any option; [`sweep_report`] its table, plot series and
//!   summary;
//! - [`config_file`]: options from and back to TOML (`--config`);
//! - [`query`]: `tessera-sim query`, one federated-analytics query over
//!   local CSV files through an in-process secure-aggregation round;
//! - [`bench_secagg`], [`bench_round`], [`bench_harness`], [`bench_scale`],
//!   [`bench_learning`]: benchmarks (secure aggregation alone, one round of a
//!   large model, the in-memory harness, seconds per round and memory against
//!   the number of sites on both engines, a multi-class MLP federation and an
//!   external trainer against the built-in one); [`bench_load`]: many
//!   participants over mutual TLS to one coordinator process.

pub mod bench_analytics;
pub mod bench_harness;
pub mod bench_learning;
pub mod bench_load;
pub mod bench_round;
pub mod bench_scale;
pub mod bench_secagg;
pub mod config_file;
pub mod configs;
pub mod dropout;
pub mod engine;
pub mod experiment;
pub mod faults;
pub mod inmemory;
pub mod launch;
pub mod learning;
pub mod partition;
pub mod partition_skew;
pub mod plots;
pub mod procfs;
pub mod progress;
pub mod query;
pub mod run_files;
pub mod runner;
pub mod secure_sum;
pub mod select;
pub mod sweep;
pub mod sweep_report;
pub mod synthetic;

use std::path::PathBuf;

/// The bundled data directory (`data/` at the root of the repository).
pub fn bundled_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}
