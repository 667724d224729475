//! The participant's connector: TCP to the coordinator, then TLS with the
//! project's own client policy ([`tessera_certs::client_config`]: TLS 1.3
//! only, the federation CA as the only root, this site's certificate as its
//! client identity, the federation's revocation list when `[tls] crl` is
//! set, HTTP/2 by ALPN). tonic's own TLS settings (which allow TLS 1.2 and
//! know no revocation list) are not used.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

/// Opens TLS connections to the host and port of the URI it is given,
/// verifying the coordinator's certificate for one fixed name.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A connector name that is not a valid DNS name or IP address.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a valid server name for TLS")]
pub struct BadServerName(String);

impl Connector {
    /// Connects with `config` (see [`tessera_certs::client_config`]) and
    /// expects the coordinator's certificate to name `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, BadServerName> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| BadServerName(server_name.to_owned()))?;
        Ok(Self {
            tls: TlsConnector::from(config),
            server_name,
        })
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| std::io::Error::other("the coordinator URL has no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}
