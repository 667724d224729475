//! The listener: TLS 1.3 handshakes with required client certificates, the
//! gRPC server on top, the driver beside it, and shutdown.
//!
//! TLS is terminated here rather than inside tonic (see [`crate::listener`])
//! so that every refused handshake (no certificate, unknown CA, revoked,
//! old TLS version) gets a log line naming the peer and the reason, while
//! the coordinator keeps serving everyone else; the TLS files are reloaded
//! on SIGHUP or change ([`crate::tls_reload`]). HTTP/2 is served by
//! [`crate::http2`], bounded per connection (streams, header size, pending
//! resets, receive windows, send buffer).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::driver::{Driver, Outcome};
pub use crate::http2::{
    MAX_HEADER_LIST_BYTES, MAX_MESSAGE_BYTES, MAX_STREAMS_PER_CONNECTION, RECEIVE_WINDOW_BYTES,
    SEND_BUFFER_BYTES,
};
pub use crate::listener::AcceptLimits;
use crate::listener::{TlsConfigCell, accept_loop};
use crate::metrics::Metrics;
use crate::service::{FederationService, SessionEvent};
use crate::settings::Settings;
use crate::tls_reload;

/// Runs a coordinator on `listener` until the federation ends or `shutdown`
/// resolves; returns how the federation ended.
pub async fn run(
    settings: Arc<Settings>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Outcome> {
    run_with_limits(settings, listener, AcceptLimits::default(), shutdown).await
}

/// [`run`] with explicit bounds on connections still in their handshake.
pub async fn run_with_limits(
    settings: Arc<Settings>,
    listener: TcpListener,
    limits: AcceptLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Outcome> {
    tessera_certs::install_crypto_provider();
    let tls_files = settings.config.tls.clone();
    let (tls_config, revoked) = tls_reload::load(&tls_files)?;
    let tls_cell = Arc::new(TlsConfigCell::new(tls_config));
    let metrics = Arc::new(Metrics::new());

    let (events_tx, events_rx) = mpsc::channel(1024);
    let service = FederationService::new(
        events_tx.clone(),
        settings.config.federation.allow.clone(),
        Arc::clone(&metrics),
    );
    let mut driver = Driver::open(Arc::clone(&settings), Arc::clone(&metrics))?;
    let queries = driver.query_sender();
    events_tx
        .send(SessionEvent::Revoked { serials: revoked })
        .await
        .map_err(|_| anyhow::anyhow!("the driver stopped before starting"))?;

    // Accept loop: TCP → TLS → gRPC.
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let local = listener.local_addr()?;
    info!(address = %local, federation = %settings.config.federation.name, "coordinator listening (TLS 1.3, client certificates required)");
    let accept_task = tokio::spawn(accept_loop(
        listener,
        Arc::clone(&tls_cell),
        limits,
        conn_tx,
        stop_rx.clone(),
    ));
    let reload_task = tokio::spawn(tls_reload::watch_files(
        tls_files,
        tls_cell,
        events_tx,
        stop_rx.clone(),
    ));

    let web_tasks = crate::web::start_with_queries(
        &settings,
        Arc::clone(&metrics),
        stop_rx.clone(),
        Some(queries),
    )
    .await?;

    let grpc = crate::http2::serve(service, conn_rx, stop_rx.clone());
    let grpc_task = tokio::spawn(grpc);

    let outcome = driver.run(events_rx, shutdown).await;
    // Let FederationDone (or the shutdown's messages) reach the participants
    // before closing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let _ = stop_rx.changed().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    accept_task.abort();
    reload_task.abort();
    for t in web_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    outcome
}
