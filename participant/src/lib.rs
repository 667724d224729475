//! The Tessera participant: runs next to a site's data, joins a federation
//! over mutual TLS, trains locally, and sends only a clipped, masked update.
//!
//! Layout:
//! - [`site`]: the site's side of each round as a machine without I/O
//!   (privacy check before touching data, training, clipping, encoding,
//!   secure aggregation), with its task and terms checks;
//! - [`trainer`]: local training behind one trait (the built-in models);
//! - [`external`]: the external trainer — a site's own program, through
//!   files and environment variables (protocol `tessera-trainer/1`);
//! - [`data`]: the site's data as the shell hands it to the machine;
//! - [`ledger`]: the site's own privacy ledger (SQLite, or in memory);
//! - [`client`]: the I/O shell — gRPC with reconnection and backoff, the
//!   files, the clock and the operating system's randomness;
//! - `upload`: the shell's side of the upload grant (input held until the
//!   coordinator grants it);
//! - [`config`]: the configuration file;
//! - [`signing`]: signed advertised keys (opt-in defence against a
//!   coordinator substituting secure-aggregation keys);
//! - [`rounds`]: the signed-key rounds the site took part in (a coordinator
//!   reusing a round is caught);
//! - [`cli`]: the command line.

// No panic on what peers or files supply: unwrap, expect and unchecked
// indexing are denied outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod cli;
pub mod client;
pub mod config;
pub mod data;
pub mod external;
pub mod ledger;
pub mod rounds;
pub mod signing;
pub mod site;
pub mod tls;
pub mod trainer;
mod upload;
