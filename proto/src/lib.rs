//! The Tessera wire protocol (`tessera.v1`): protobuf messages and the
//! generated gRPC client and server for the `Federation` service.
//!
//! The schema lives in `tessera/v1/federation.proto`; its header comment draws
//! the message flow of one aggregation. This crate also holds the helpers that
//! split large vectors into [`v1::VectorChunk`]s and put them back together.

// No panic from outside: input from the network or a file must not reach
// an unwrap, an expect or an unchecked index (tests may use them).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod chunk;
pub mod convert;
pub mod reasons;
pub mod round;

/// Generated code for package `tessera.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

/// The wire protocol version this build speaks. Version 2 added the
/// signed-key round's survivor list and signatures and its derived graph
/// seed, and the site noise of distributed and local placements. Version 3
/// added the upload grant (`UploadRequest`, `UploadGrant`,
/// `UploadWithdrawn`): a participant sends its input only when granted; and
/// the analytics aggregation kind (`AnalyticsQuery` in the announcement,
/// with its decline codes). A coordinator refuses a participant that speaks
/// another version.
pub const PROTOCOL_VERSION: u32 = 3;
