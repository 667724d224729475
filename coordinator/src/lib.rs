//! The Tessera coordinator: schedules rounds over mutual-TLS gRPC, sums the
//! participants' updates through secure aggregation, adds the privacy noise,
//! keeps the privacy ledger and releases the model.
//!
//! Layout:
//! - [`round`]: the sans-IO federation machine (no sockets, clock or disk);
//! - [`budget`]: calibration and the budget check;
//! - [`driver`]: the tokio task that feeds the machine and carries out its outputs;
//! - [`service`]: the gRPC service (authenticates peers by certificate name);
//! - [`server`]: listener, TLS handshakes, shutdown;
//! - [`http2`]: the gRPC service served over HTTP/2 with our own settings;
//! - [`upload`]: the upload grant (which sites may send their input now);
//! - [`outgoing`]: a session's outgoing stream (the model in small frames);
//! - [`store`]: the durable SQLite state (ledger, rounds, checkpoints);
//! - [`web`]: the status page and `/metrics` (HTTP, mutual TLS off loopback);
//! - [`privacy_report`]: the privacy report for non-experts;
//! - [`config`], [`metrics`], [`privacy_cmd`].

// No panic on what peers or files supply: unwrap, expect and unchecked
// indexing are denied outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod budget;
pub mod check;
pub mod cli;
pub mod config;
pub mod driver;
pub mod http2;
pub mod listener;
pub mod metrics;
pub mod outgoing;
pub mod privacy_cmd;
pub mod privacy_report;
pub mod query_cmd;
pub mod round;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod tls_reload;
pub mod upload;
pub mod web;
