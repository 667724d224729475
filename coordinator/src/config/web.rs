//! `[web]`: the read-only status page and `/metrics`, and who may read them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, CoordinatorConfig, invalid};

/// Default address of the status page: loopback only.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8080";

/// The port of [`DEFAULT_WEB_LISTEN`].
const DEFAULT_WEB_PORT: u16 = 8080;

/// `[web]`: the coordinator's status page and `/metrics` on one HTTP
/// listener. Absent: no page (and `/metrics` only at
/// `federation.metrics_listen`, if set).
///
/// On a loopback address the page is plain HTTP, readable by whoever can
/// log in to the machine. On any other address it is HTTPS with the
/// coordinator's certificate, and every client must present a certificate
/// of the federation CA whose name is in `operators`: never open to anyone.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Address of the page and `/metrics` (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Certificate names (of the federation CA) that may read the page and
    /// `/metrics` when `listen` is not a loopback address.
    pub operators: Vec<String>,
    /// Seconds between the page's automatic reloads.
    pub refresh_seconds: u32,
    /// CSV of global evaluation metrics per training round (a
    /// `training_round` or `round` column and `eval_accuracy`/`accuracy`,
    /// `eval_log_loss`/`loss`, `eval_auc`, `eval_r2`, … columns); default:
    /// the federation's own `rounds.csv`, which federated evaluation fills.
    pub evaluation: Option<PathBuf>,
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_WEB_PORT)),
            operators: Vec::new(),
            refresh_seconds: 10,
            evaluation: None,
        }
    }
}

/// Whether a listener on `addr` needs mutual TLS and the operator list.
pub fn needs_operators(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

impl CoordinatorConfig {
    /// Checks `[web]` and `federation.metrics_listen`: an address other
    /// than loopback needs a non-empty `web.operators`.
    pub(super) fn check_web(&self) -> Result<(), ConfigError> {
        let operators = self.web.as_ref().map_or(&[][..], |w| &w.operators[..]);
        if let Some(w) = &self.web {
            if needs_operators(&w.listen) && w.operators.is_empty() {
                return Err(invalid(
                    "web.operators",
                    format!(
                        "web.listen = {} is not a loopback address: list the certificate names \
                         that may read the page (the page is never open to anyone)",
                        w.listen
                    ),
                ));
            }
            if w.refresh_seconds < 2 {
                return Err(invalid("web.refresh_seconds", "must be at least 2"));
            }
            if w.operators.iter().any(|o| o.trim().is_empty()) {
                return Err(invalid("web.operators", "names must not be empty"));
            }
        }
        if let Some(addr) = self.federation.metrics_listen
            && needs_operators(&addr)
            && operators.is_empty()
        {
            return Err(invalid(
                "federation.metrics_listen",
                format!(
                    "{addr} is not a loopback address: list the certificate names that may \
                     scrape it in web.operators (served over mutual TLS)"
                ),
            ));
        }
        Ok(())
    }
}
