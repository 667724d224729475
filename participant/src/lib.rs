//! The Tessera participant: runs next to a site's data, joins a federation
//! over mutual TLS, trains locally, and sends only a clipped, masked update.
//!
//! Layout:
//! - [`session`]: the site's side of each round, without I/O (privacy check
//!   before touching data, training, clipping, encoding, secure aggregation);
//! - [`client`]: the gRPC client with reconnection and backoff;
//! - [`ledger`]: the site's own privacy ledger (SQLite);
//! - [`config`]: the configuration file;
//! - [`signing`]: signed advertised keys (opt-in defence against a
//!   coordinator substituting secure-aggregation keys).

pub mod cli;
pub mod client;
pub mod config;
pub mod ledger;
pub mod session;
pub mod signing;
