//! Reloading the coordinator's TLS material while it serves: on SIGHUP, or
//! when one of the `[tls]` files (CA, certificate, key, revocation list)
//! changes, the files are read again; if they are valid the new
//! configuration applies to the next handshake and the driver is told the
//! revoked serial numbers, so it drops any session under a revoked
//! certificate before the next round. Invalid files are logged and the
//! configuration in force is kept.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tessera_certs::TlsFiles;
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::listener::TlsConfigCell;
use crate::service::SessionEvent;

/// How often the files' modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The server configuration and the revoked serial numbers of `files`.
pub fn load(files: &TlsFiles) -> anyhow::Result<(Arc<rustls::ServerConfig>, HashSet<Vec<u8>>)> {
    let material = files
        .load()
        .context("loading the coordinator's TLS material")?;
    let config =
        tessera_certs::server_config(&material).context("building the TLS configuration")?;
    let revoked = match (&material.crl_pem, &files.crl) {
        (Some(pem), Some(path)) => {
            tessera_certs::revoked_serials(pem, &path.display().to_string())?
        }
        _ => HashSet::new(),
    };
    Ok((config, revoked))
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    let paths: Vec<&PathBuf> = [&files.ca, &files.cert, &files.key]
        .into_iter()
        .chain(files.crl.as_ref())
        .collect();
    paths
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Watches `files` until `stop` changes: reloads on SIGHUP and on a change
/// of any file, swapping the configuration in `cell` and sending
/// [`SessionEvent::Revoked`] to the driver.
pub async fn watch_files(
    files: TlsFiles,
    cell: Arc<TlsConfigCell>,
    events: mpsc::Sender<SessionEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot listen for SIGHUP; the TLS files are still watched");
            None
        }
    };
    let mut seen = stamps(&files);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        let why = tokio::select! {
            _ = stop.changed() => return,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = tick.tick() => {
                let now = stamps(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                "a TLS file changed"
            }
        };
        match load(&files) {
            Ok((config, revoked)) => {
                cell.set(config);
                info!(
                    reason = why,
                    revoked = revoked.len(),
                    "TLS material reloaded"
                );
                if events
                    .send(SessionEvent::Revoked { serials: revoked })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                error!(
                    reason = why,
                    error = format!("{e:#}"),
                    "TLS material not reloaded; the configuration in force is kept"
                );
            }
        }
    }
}
