//! The gRPC `Federation` service: authenticates each session by the name in
//! the peer's verified TLS certificate, applies the allow-list, and forwards
//! messages to the driver. It holds no federation state itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tessera_proto::v1::federation_server::Federation;
use tessera_proto::v1::{CoordinatorMessage, ParticipantMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Messages queued for one participant before the coordinator considers it
/// too slow and drops the session.
pub const OUTBOX_CAPACITY: usize = 512;

/// The sending half of one session's outgoing stream.
pub type Outbox = mpsc::Sender<Result<CoordinatorMessage, Status>>;

/// What the service tells the driver.
#[derive(Debug)]
pub enum SessionEvent {
    /// A verified participant opened a session.
    Connected {
        /// Certificate name.
        name: String,
        /// Session id.
        session: u64,
        /// DER leaf certificate.
        certificate: Vec<u8>,
        /// Where to send its messages.
        outbox: Outbox,
    },
    /// A message arrived.
    Message {
        /// Certificate name.
        name: String,
        /// Session id.
        session: u64,
        /// The message.
        message: ParticipantMessage,
    },
    /// The federation CA's revocation list was (re)loaded: these serial
    /// numbers are revoked. Open sessions under them are closed.
    Revoked {
        /// Serial numbers (leading zero bytes stripped).
        serials: std::collections::HashSet<Vec<u8>>,
    },
    /// The session ended.
    Disconnected {
        /// Certificate name.
        name: String,
        /// Session id.
        session: u64,
        /// Why, when it ended with an error.
        error: Option<String>,
    },
}

/// The service implementation.
#[derive(Debug, Clone)]
pub struct FederationService {
    events: mpsc::Sender<SessionEvent>,
    allow: Option<Arc<Vec<String>>>,
    next_session: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl FederationService {
    /// A service forwarding to `events`, admitting only `allow` when given.
    pub fn new(
        events: mpsc::Sender<SessionEvent>,
        allow: Option<Vec<String>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            events,
            allow: allow.map(Arc::new),
            next_session: Arc::new(AtomicU64::new(1)),
            metrics,
        }
    }
}

/// The participant's identity: the name in its verified certificate.
fn authenticate<T>(request: &Request<T>) -> Result<(String, Vec<u8>), Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let name = tessera_certs::peer_name(leaf.as_ref()).map_err(|e| {
        Status::unauthenticated(format!("client certificate has no usable name: {e}"))
    })?;
    Ok((name, leaf.as_ref().to_vec()))
}

#[tonic::async_trait]
impl Federation for FederationService {
    type SessionStream =
        Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send + 'static>>;

    async fn session(
        &self,
        request: Request<Streaming<ParticipantMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown address".into());
        let (name, certificate) = match authenticate(&request) {
            Ok(x) => x,
            Err(status) => {
                warn!(%peer, reason = status.message(), "session refused");
                return Err(status);
            }
        };
        if let Some(allow) = &self.allow
            && !allow.contains(&name)
        {
            warn!(participant = %name, %peer, "session refused: not on the allow-list");
            return Err(Status::permission_denied(format!(
                "participant `{name}` is not on this federation's allow-list"
            )));
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        self.events
            .send(SessionEvent::Connected {
                name: name.clone(),
                session,
                certificate,
                outbox,
            })
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        let mut inbound = request.into_inner();
        let events = self.events.clone();
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let error = loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        metrics.add_bytes_received(prost::Message::encoded_len(&message) as u64);
                        if events
                            .send(SessionEvent::Message {
                                name: name.clone(),
                                session,
                                message,
                            })
                            .await
                            .is_err()
                        {
                            break None;
                        }
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(status.to_string()),
                }
            };
            debug!(participant = %name, session, ?error, "session closed");
            let _ = events
                .send(SessionEvent::Disconnected {
                    name,
                    session,
                    error,
                })
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
