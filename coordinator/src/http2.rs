//! Serves the gRPC service over HTTP/2 on the TLS connections the accept
//! loop hands over, with every HTTP/2 setting under the coordinator's
//! control.
//!
//! tonic's `Server` builder does not expose hyper's per-stream send buffer
//! (400 KiB by default), which every session stream filled during the model
//! broadcast: about 0.4 MiB of copied model bytes per connected site. Here
//! hyper's own HTTP/2 builder serves the tonic service, so that buffer is
//! [`SEND_BUFFER_BYTES`], and the limits tonic did set are set here:
//! receive windows, concurrent streams, header list size, pending resets,
//! keep-alive pings. tonic's extras that this service does not use (gRPC
//! deadlines, load shedding, HTTP/1) are left out.
//!
//! Each request carries the connection's TLS information (peer
//! certificates, addresses) in its extensions, where
//! `tonic::Request::peer_certs` and `remote_addr` read it.

use std::convert::Infallible;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tessera_proto::v1::federation_server::FederationServer;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tonic::codegen::Service;
use tonic::transport::server::Connected;
use tracing::debug;

use crate::service::FederationService;

/// Largest gRPC message accepted (chunks are at most 1 MiB of data).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Concurrent HTTP/2 streams per connection: a participant needs one
/// session stream; a few more allow a reconnect to overlap.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4;

/// HTTP/2 receive window, per stream and per connection: the bytes a site
/// can send before the coordinator reads them (about 200 Mbit/s per site
/// at 20 ms round trip). Only sites holding an upload grant send more than
/// a few small messages, so this costs memory for those few, not for every
/// connection.
pub const RECEIVE_WINDOW_BYTES: u32 = 512 << 10;

/// Bytes hyper may hold queued on one stream before it stops pulling the
/// next message from the session (hyper's default is 400 KiB). Two wire
/// frames ([`tessera_proto::chunk::WIRE_FRAME_BYTES`]): enough to keep the
/// socket busy between two polls, small enough that a broadcast to many
/// sites holds little besides the one shared model buffer; the kernel's
/// socket buffers do the rest of the queueing.
pub const SEND_BUFFER_BYTES: usize = 2 * tessera_proto::chunk::WIRE_FRAME_BYTES;

/// Largest HTTP/2 header list accepted.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Streams a peer may reset before the server has accepted them.
pub const MAX_PENDING_RESETS: usize = 16;

/// Interval of keep-alive pings, and how long an answer may take before the
/// connection is closed.
pub const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(15), Duration::from_secs(20));

/// The HTTP/2 settings of every connection.
fn builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(RECEIVE_WINDOW_BYTES)
        .initial_connection_window_size(RECEIVE_WINDOW_BYTES)
        .adaptive_window(false)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_send_buf_size(SEND_BUFFER_BYTES)
        .keep_alive_interval(KEEP_ALIVE.0)
        .keep_alive_timeout(KEEP_ALIVE.1);
    b
}

/// Serves `service` on every connection received from `connections` until
/// `stop` changes; then asks every connection to finish (HTTP/2 GOAWAY,
/// streams in flight complete) and returns once all have closed.
pub async fn serve(
    service: FederationService,
    mut connections: mpsc::Receiver<TlsStream<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    let grpc = FederationServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let http2 = builder();
    let mut tasks = JoinSet::new();
    loop {
        let stream = tokio::select! {
            s = connections.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = stop.changed() => break,
            // Reap finished connections as they go.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let info = stream.connect_info();
        let grpc = grpc.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(tonic::body::Body::new);
            request.extensions_mut().insert(info.clone());
            let mut grpc = grpc.clone();
            async move { Ok::<_, Infallible>(grpc.call(request).await.unwrap_or_else(|e| match e {})) }
        });
        let connection = http2.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(connections);
    // Every task sees `stop` itself and is finishing its connection.
    while tasks.join_next().await.is_some() {}
}
