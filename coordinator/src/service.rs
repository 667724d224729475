//! The gRPC `Federation` service: authenticates each session by the name in
//! the peer's verified TLS certificate, applies the allow-list, and forwards
//! messages to the driver. It holds no federation state itself.
//!
//! Input uploads go by grant ([`crate::upload`]): a session's input chunks
//! are read only after it asked and was given one of [`UPLOADS_AT_ONCE`]
//! places, so the coordinator's memory for uploads is a few vectors'
//! parts whatever the number of sites, and sites waiting their turn hold
//! nothing in its buffers. A granted upload that stops making progress for
//! [`UPLOAD_STALL`] loses its session (and its place in the round), so no
//! site can hold a place. Outgoing messages leave through
//! [`crate::outgoing`], which cuts the model into small frames.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tessera_proto::v1::federation_server::Federation;
use tessera_proto::v1::{CoordinatorMessage, ParticipantMessage, UploadGrant};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::outgoing::Outgoing;
use crate::upload::{InFlight, SessionUpload, UploadPermits, Verdict};
pub use crate::upload::{UPLOAD_STALL, UPLOADS_AT_ONCE, UploadGate};

/// Messages queued for one participant before the coordinator considers it
/// too slow and drops the session.
pub const OUTBOX_CAPACITY: usize = 2048;

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
        /// The upload's place and bytes in flight, held until the driver
        /// has handled the message (dropped with the event).
        upload: UploadPermits,
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
        // The session's own way to answer (grants, refusals).
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
        let inbound = request.into_inner();
        tokio::spawn(run_session(SessionTask {
            name,
            session,
            inbound,
            outbox: refuse,
            events: self.events.clone(),
            metrics: Arc::clone(&self.metrics),
            gate: self.uploads.clone(),
        }));
        Ok(Response::new(Box::pin(Outgoing::new(rx))))
    }
}

/// What one session's reading task owns.
struct SessionTask {
    name: String,
    session: u64,
    inbound: Streaming<ParticipantMessage>,
    outbox: Outbox,
    events: mpsc::Sender<SessionEvent>,
    metrics: Arc<Metrics>,
    gate: UploadGate,
}

/// A wait for one of the gate's places, kept across loop turns so the
/// session keeps its turn in the queue while it reads other messages.
type PlaceWait = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// Reads one session until it ends: applies the upload grant, forwards
/// the rest to the driver, and reports the end.
async fn run_session(task: SessionTask) {
    let SessionTask {
        name,
        session,
        mut inbound,
        outbox,
        events,
        metrics,
        gate,
    } = task;
    let mut upload = SessionUpload::default();
    let in_flight = InFlight::default();
    let mut waiting: Option<PlaceWait> = None;
    let error = loop {
        if upload.awaiting_place().is_some() && waiting.is_none() {
            waiting = Some(Box::pin(gate.clone().enter()));
        } else if upload.awaiting_place().is_none() {
            // Withdrawn while waiting: leave the queue.
            waiting = None;
        }
        let stall = upload.deadline();
        tokio::select! {
            place = wait_for(&mut waiting) => {
                waiting = None;
                let Some(place) = place else { continue };
                let Some(round) = upload.grant(place, tokio::time::Instant::now()) else {
                    continue;
                };
                let grant = CoordinatorMessage {
                    body: Some(tessera_proto::v1::coordinator_message::Body::UploadGrant(
                        UploadGrant { round },
                    )),
                };
                match outbox.try_send(Ok(grant)) {
                    Ok(()) => debug!(participant = %name, session, round, "upload granted"),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(participant = %name, session, "participant is not reading its messages; closing its session");
                        break Some("not reading its messages".to_owned());
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break None,
                }
            }
            () = sleep_until(stall) => {
                warn!(participant = %name, session, "upload stalled; closing the session");
                let _ = outbox.try_send(Err(Status::deadline_exceeded(format!(
                    "the upload made no progress for {} s; session closed",
                    UPLOAD_STALL.as_secs()
                ))));
                break Some("upload stalled".to_owned());
            }
            next = inbound.message() => match next {
                Ok(Some(message)) => {
                    metrics.add_bytes_received(prost::Message::encoded_len(&message) as u64);
                    if let Some(status) = version_refusal(&name, &message) {
                        warn!(participant = %name, session, reason = status.message(), "session refused");
                        let _ = outbox.send(Err(status)).await;
                        break Some("another protocol version".to_owned());
                    }
                    let upload_place = match upload.on_message(&message, tokio::time::Instant::now()) {
                        Verdict::Consumed => continue,
                        Verdict::Forward(place) => place,
                        Verdict::Refuse(status) => {
                            warn!(participant = %name, session, reason = status.message(), "upload refused; closing the session");
                            let reason = status.message().to_owned();
                            let _ = outbox.try_send(Err(status));
                            break Some(reason);
                        }
                    };
                    // Stop reading while the driver has enough of this
                    // upload queued (HTTP/2 flow control holds the site).
                    let in_flight = in_flight.admit(&message).await;
                    if events
                        .send(SessionEvent::Message {
                            name: name.clone(),
                            session,
                            message,
                            upload: UploadPermits {
                                place: upload_place,
                                in_flight,
                            },
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
        }
    };
    drop(waiting);
    drop(upload);
    debug!(participant = %name, session, ?error, "session closed");
    let _ = events
        .send(SessionEvent::Disconnected {
            name,
            session,
            error,
        })
        .await;
}

/// Waits for the place being waited for, or forever if none is.
async fn wait_for(waiting: &mut Option<PlaceWait>) -> Option<OwnedSemaphorePermit> {
    match waiting {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
