//! The Tessera coordinator.

pub mod privacy_cmd;
