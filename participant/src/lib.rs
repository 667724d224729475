//! The Tessera participant: runs next to a site's data, joins a federation
//! over mutual TLS, trains locally, and sends only a clipped, masked update.
//!
//! Layout:
//! - [`session`]: the site's side of each round, without I/O (privacy check
//!   before touching data, training, clipping, encoding, secure aggregation);
//! - `task`: the task checked against the site's column allow-list, and
//!   the site's data loaded for it;
//! - [`terms`]: the check of a round's announced terms, before any data is
//!   touched, with fixed decline codes;
//! - `input`: the site's contribution to an accepted round (statistics or
//!   clipped update, encoded), or a zero vector when it cannot be computed;
//! - [`client`]: the gRPC client with reconnection and backoff;
//! - [`ledger`]: the site's own privacy ledger (SQLite);
//! - [`config`]: the configuration file;
//! - [`signing`]: signed advertised keys (opt-in defence against a
//!   coordinator substituting secure-aggregation keys).

pub mod cli;
pub mod client;
pub mod config;
mod input;
pub mod ledger;
pub mod session;
pub mod signing;
mod task;
pub mod terms;
