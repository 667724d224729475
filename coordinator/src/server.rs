//! The listener: TLS 1.3 handshakes with required client certificates, the
//! gRPC server on top, the driver beside it, and shutdown.
//!
//! TLS is terminated here rather than inside tonic so that every refused
//! handshake (no certificate, unknown CA, old TLS version) gets a log line
//! naming the peer and the reason, while the coordinator keeps serving
//! everyone else.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tessera_proto::v1::federation_server::FederationServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use crate::driver::{Driver, Outcome};
use crate::metrics::Metrics;
use crate::service::FederationService;
use crate::settings::Settings;

/// Largest gRPC message accepted (chunks are at most 1 MiB of data).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Handshakes in progress at once; more wait.
const MAX_HANDSHAKES: usize = 256;
/// A peer that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a coordinator on `listener` until the federation ends or `shutdown`
/// resolves; returns how the federation ended.
pub async fn run(
    settings: Arc<Settings>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Outcome> {
    tessera_certs::install_crypto_provider();
    let material = settings
        .config
        .tls
        .load()
        .context("loading the coordinator's TLS material")?;
    let tls_config =
        tessera_certs::server_config(&material).context("building the TLS configuration")?;
    let acceptor = TlsAcceptor::from(tls_config);
    let metrics = Arc::new(Metrics::new());

    let (events_tx, events_rx) = mpsc::channel(1024);
    let service = FederationService::new(
        events_tx,
        settings.config.federation.allow.clone(),
        Arc::clone(&metrics),
    );
    let driver = Driver::open(Arc::clone(&settings), Arc::clone(&metrics))?;

    // Accept loop: TCP → TLS → gRPC.
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let local = listener.local_addr()?;
    info!(address = %local, federation = %settings.config.federation.name, "coordinator listening (TLS 1.3, client certificates required)");
    let accept_task = {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop_rx.changed() => break,
                };
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = conn_tx.send(Ok::<_, std::io::Error>(stream)).await;
                        }
                        Ok(Err(e)) => {
                            warn!(%peer, reason = %tessera_certs::describe_tls_error(&e), "TLS handshake refused");
                        }
                        Err(_) => warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        })
    };

    let web_tasks = crate::web::start(&settings, Arc::clone(&metrics), stop_rx.clone()).await?;

    let grpc = {
        let mut stop_rx = stop_rx.clone();
        tonic::transport::Server::builder()
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .http2_keepalive_interval(Some(Duration::from_secs(15)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(
                FederationServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
                let _ = stop_rx.changed().await;
            })
    };
    let grpc_task = tokio::spawn(grpc);

    let outcome = driver.run(events_rx, shutdown).await;
    // Let FederationDone (or the shutdown's messages) reach the participants
    // before closing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let _ = stop_rx.changed().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    accept_task.abort();
    for t in web_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    outcome
}
