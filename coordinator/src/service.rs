//! The gRPC `Federation` service: authenticates each session by the name in
//! the peer's verified TLS certificate, applies the allow-list, and forwards
//! messages to the driver. It holds no federation state itself.
//!
//! Input uploads pass an [`UploadGate`]: at most [`UPLOADS_AT_ONCE`]
//! sessions' vectors are read at a time. The coordinator folds each chunk
//! into its running sum as it arrives but must keep the parts of an upload
//! until it completes (to take them out again if the site leaves half-way),
//! so this bounds that memory by a few vectors whatever the number of
//! sites; the other uploaders wait, held back by HTTP/2 flow control. An
//! upload that stops making progress for [`UPLOAD_STALL`] loses its session
//! (and its place in the round), so no site can hold the gate.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tessera_proto::v1::federation_server::Federation;
use tessera_proto::v1::participant_message::Body;
use tessera_proto::v1::{ChunkPurpose, CoordinatorMessage, ParticipantMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Messages queued for one participant before the coordinator considers it
/// too slow and drops the session.
pub const OUTBOX_CAPACITY: usize = 2048;

/// Sessions whose input vectors are read at the same time.
pub const UPLOADS_AT_ONCE: usize = 2;

/// A session that has started an upload and sends nothing more for this
/// long is closed (about 0.8 Mbit/s for a full 1 MiB chunk).
pub const UPLOAD_STALL: Duration = Duration::from_secs(10);

/// Admits [`UPLOADS_AT_ONCE`] uploads at a time (see the module docs).
#[derive(Debug, Clone)]
pub struct UploadGate(Arc<Semaphore>);

impl UploadGate {
    /// A gate letting `at_once` uploads through at a time.
    pub fn new(at_once: usize) -> Self {
        Self(Arc::new(Semaphore::new(at_once.max(1))))
    }

    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).acquire_owned().await.ok()
    }
}

/// Where a message stands in an input upload: `None` if it is no input
/// chunk, else whether it is the last one. The element size is not known
/// here; taking 4 bytes errs towards ending an upload of 8-byte elements
/// up to half a chunk early (a slightly weaker bound, never a stuck gate).
fn upload_step(message: &ParticipantMessage) -> Option<bool> {
    match &message.body {
        Some(Body::Chunk(c))
            if c.purpose == ChunkPurpose::MaskedInput as i32
                || c.purpose == ChunkPurpose::PlainInput as i32 =>
        {
            Some(c.offset.saturating_add((c.data.len() / 4) as u64) >= c.total)
        }
        _ => None,
    }
}

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
        /// The upload gate's place, held until the driver has handled the
        /// last chunk of an upload (dropped with the event).
        upload: Option<OwnedSemaphorePermit>,
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
    uploads: UploadGate,
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
            uploads: UploadGate::new(UPLOADS_AT_ONCE),
        }
    }

    /// The same service with its own upload gate of `at_once` places.
    pub fn with_upload_gate(mut self, at_once: usize) -> Self {
        self.uploads = UploadGate::new(at_once);
        self
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

/// The refusal of a Hello that speaks another protocol version: the
/// participant and this coordinator would misread each other's messages
/// (for example a signed-key round's graph seed), so the session ends at
/// once with both versions named, instead of failing later mid-round.
fn version_refusal(name: &str, message: &ParticipantMessage) -> Option<Status> {
    let Some(tessera_proto::v1::participant_message::Body::Hello(h)) = &message.body else {
        return None;
    };
    (h.protocol_version != tessera_proto::PROTOCOL_VERSION).then(|| {
        Status::failed_precondition(format!(
            "participant `{name}` speaks protocol version {}, this coordinator version {}: \
             run the same Tessera release on both sides",
            h.protocol_version,
            tessera_proto::PROTOCOL_VERSION
        ))
    })
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
        // The session's own way to refuse it (another protocol version).
        let refuse = outbox.clone();
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
        let gate = self.uploads.clone();
        tokio::spawn(async move {
            // Held from an upload's first chunk until its last is handled.
            let mut place: Option<OwnedSemaphorePermit> = None;
            let error = loop {
                let next = if place.is_some() {
                    match tokio::time::timeout(UPLOAD_STALL, inbound.message()).await {
                        Ok(next) => next,
                        Err(_) => {
                            warn!(participant = %name, session, "upload stalled; closing the session");
                            break Some("upload stalled".to_owned());
                        }
                    }
                } else {
                    inbound.message().await
                };
                match next {
                    Ok(Some(message)) => {
                        metrics.add_bytes_received(prost::Message::encoded_len(&message) as u64);
                        if let Some(status) = version_refusal(&name, &message) {
                            warn!(participant = %name, session, reason = status.message(), "session refused");
                            let _ = refuse.send(Err(status)).await;
                            break Some("another protocol version".to_owned());
                        }
                        let upload = match upload_step(&message) {
                            Some(last) => {
                                if place.is_none() {
                                    place = gate.enter().await;
                                }
                                if last { place.take() } else { None }
                            }
                            // Anything else ends an upload.
                            None => place.take(),
                        };
                        if events
                            .send(SessionEvent::Message {
                                name: name.clone(),
                                session,
                                message,
                                upload,
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
            drop(place);
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
