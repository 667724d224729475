//! The upload grant: which sessions may send their input vector now.
//!
//! The coordinator folds each input chunk into its running sum as it
//! arrives but keeps the parts of an upload until it completes (to take
//! them out again if the site leaves half-way), so only
//! [`UPLOADS_AT_ONCE`] uploads are read at a time. Before protocol version
//! 3 the others were held back by HTTP/2 flow control alone: each waiting
//! site filled its stream's receive window and the decode buffer of its
//! first chunk, about 0.8 MiB per site whatever the model size. Now a site
//! whose input is ready sends an `UploadRequest` and waits, holding its
//! chunks itself, until the session is given one of the gate's places and
//! the coordinator answers `UploadGrant`. Sites in the queue cost the
//! coordinator a few counters.
//!
//! The rules, per session ([`SessionUpload`]):
//! - input chunks (`MASKED_INPUT`, `PLAIN_INPUT`) are accepted only under a
//!   grant and for the round it names; otherwise the session ends with an
//!   error (an honest participant never does this);
//! - a second request while one is pending ends the session too;
//! - from the grant on, a session that makes no progress for
//!   [`UPLOAD_STALL`] loses its session, so nobody can hold a place by
//!   ignoring its grant or stopping half-way;
//! - `UploadWithdrawn` gives a place (or the turn in the queue) back, for a
//!   round that ended while the site waited;
//! - the request names the upload's size in bytes: the chunk that brings
//!   the count to it is the upload's last, and a chunk past it ends the
//!   session (the size is the participant's word, but a wrong one only
//!   ends its own upload early or holds its place until the stall
//!   deadline; the driver checks each chunk against the round);
//! - the place is released once the driver has handled the upload's last
//!   chunk (it travels with that chunk's event), or when the session ends;
//!   other messages in between are forwarded and change nothing.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::v1::participant_message::Body;
use tessera_proto::v1::{ChunkPurpose, ParticipantMessage, VectorChunk};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::Status;

/// Sessions whose input vectors are read at the same time.
pub const UPLOADS_AT_ONCE: usize = 2;

/// Bytes of one upload's chunks handed to the driver and not yet handled
/// (8 wire frames). Past this the session stops reading, and the site is
/// held back by HTTP/2 flow control: without the bound, the driver's queue
/// (1,024 events) could hold up to 32 MiB of frames whenever the sum is
/// folded more slowly than two sites send.
pub const UPLOAD_IN_FLIGHT_BYTES: usize = 8 * tessera_proto::chunk::WIRE_FRAME_BYTES;

/// A session holding a grant that sends nothing of its input for this long
/// is closed (about 0.8 Mbit/s for a 1 MiB chunk, the largest accepted).
pub const UPLOAD_STALL: Duration = Duration::from_secs(10);

/// The places of uploads read at once (see the module docs).
#[derive(Debug, Clone)]
pub struct UploadGate(Arc<Semaphore>);

impl UploadGate {
    /// A gate letting `at_once` uploads through at a time.
    pub fn new(at_once: usize) -> Self {
        Self(Arc::new(Semaphore::new(at_once.max(1))))
    }

    /// Waits for a place, in arrival order. `None` only if the gate was
    /// closed (it never is).
    pub async fn enter(self) -> Option<OwnedSemaphorePermit> {
        self.0.acquire_owned().await.ok()
    }
}

/// Where one session stands with its upload.
#[derive(Debug, Default)]
enum State {
    /// No upload asked for.
    #[default]
    Idle,
    /// Asked for `round`'s upload of `bytes`, waiting for a place.
    AwaitingPlace { round: u64, bytes: u64 },
    /// Granted for `round`: its chunks may come until `remaining` bytes
    /// have arrived; `progress` is when the grant was sent or the last
    /// chunk arrived.
    AwaitingChunks {
        round: u64,
        remaining: u64,
        place: OwnedSemaphorePermit,
        progress: Instant,
    },
}

/// What travels with a message to the driver and is dropped once the
/// driver has handled it: the upload's place when the message ends the
/// upload, and the message's share of [`UPLOAD_IN_FLIGHT_BYTES`].
#[derive(Debug, Default)]
pub struct UploadPermits {
    /// The gate's place (the upload's last chunk).
    pub place: Option<OwnedSemaphorePermit>,
    /// The chunk's bytes in flight.
    pub in_flight: Option<OwnedSemaphorePermit>,
}

/// Bounds one session's input bytes handed to the driver and not yet
/// handled (see [`UPLOAD_IN_FLIGHT_BYTES`]).
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Semaphore>);

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(UPLOAD_IN_FLIGHT_BYTES)))
    }
}

impl InFlight {
    /// Waits until `message`'s input bytes may be handed over (at once for
    /// anything but an input chunk); the permit goes with the message.
    pub async fn admit(&self, message: &ParticipantMessage) -> Option<OwnedSemaphorePermit> {
        let bytes = input_chunk(message)?
            .data
            .len()
            .clamp(1, UPLOAD_IN_FLIGHT_BYTES);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::clone(&self.0).acquire_many_owned(bytes).await.ok()
    }
}

/// What the session does with one inbound message.
#[derive(Debug)]
pub enum Verdict {
    /// Hand it to the driver, with the gate's place when this message ends
    /// an upload (dropped once the driver has handled it).
    Forward(Option<OwnedSemaphorePermit>),
    /// A message of the grant protocol, handled here.
    Consumed,
    /// The peer broke the grant protocol: end the session with this status.
    Refuse(Status),
}

/// One session's side of the upload grant (see the module docs). It owns
/// no clock: the caller passes `now` and waits for [`deadline`](Self::deadline).
#[derive(Debug, Default)]
pub struct SessionUpload {
    state: State,
}

/// The input chunk in `message`, if it is one.
fn input_chunk(message: &ParticipantMessage) -> Option<&VectorChunk> {
    match &message.body {
        Some(Body::Chunk(c))
            if c.purpose == ChunkPurpose::MaskedInput as i32
                || c.purpose == ChunkPurpose::PlainInput as i32 =>
        {
            Some(c)
        }
        _ => None,
    }
}

impl SessionUpload {
    /// The round this session waits for a place for, if it does.
    pub fn awaiting_place(&self) -> Option<u64> {
        match self.state {
            State::AwaitingPlace { round, .. } => Some(round),
            _ => None,
        }
    }

    /// Gives the waiting session its place at `now`; returns the round to
    /// name in the grant (`None`, and the place goes back, if the session
    /// no longer waits).
    pub fn grant(&mut self, place: OwnedSemaphorePermit, now: Instant) -> Option<u64> {
        let State::AwaitingPlace { round, bytes } = self.state else {
            return None;
        };
        self.state = State::AwaitingChunks {
            round,
            remaining: bytes,
            place,
            progress: now,
        };
        Some(round)
    }

    /// When the session loses its place for making no progress, if it
    /// holds one.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitingChunks { progress, .. } => Some(*progress + UPLOAD_STALL),
            _ => None,
        }
    }

    /// Applies the rules to one inbound message, arrived at `now`.
    pub fn on_message(&mut self, message: &ParticipantMessage, now: Instant) -> Verdict {
        match (&message.body, &mut self.state) {
            (Some(Body::UploadRequest(r)), State::Idle) => {
                self.state = State::AwaitingPlace {
                    round: r.round,
                    bytes: r.bytes,
                };
                Verdict::Consumed
            }
            (Some(Body::UploadRequest(r)), _) => {
                Verdict::Refuse(Status::invalid_argument(format!(
                    "upload request for round {} while another upload is pending",
                    r.round
                )))
            }
            (Some(Body::UploadWithdrawn(w)), State::AwaitingPlace { round, .. })
            | (Some(Body::UploadWithdrawn(w)), State::AwaitingChunks { round, .. })
                if *round == w.round =>
            {
                // Dropping the state gives the place back.
                self.state = State::Idle;
                Verdict::Consumed
            }
            // A late withdrawal (the upload already ended): nothing to do.
            (Some(Body::UploadWithdrawn(_)), _) => Verdict::Consumed,
            _ => match (input_chunk(message), &mut self.state) {
                (
                    Some(c),
                    State::AwaitingChunks {
                        round,
                        remaining,
                        progress,
                        ..
                    },
                ) => {
                    if c.round != *round {
                        return Verdict::Refuse(Status::invalid_argument(format!(
                            "input chunk for round {} under an upload grant for round {round}",
                            c.round
                        )));
                    }
                    let Some(left) = remaining.checked_sub(c.data.len() as u64) else {
                        return Verdict::Refuse(Status::invalid_argument(format!(
                            "input chunk for round {round} goes past the upload's requested size"
                        )));
                    };
                    *remaining = left;
                    *progress = now;
                    if left == 0 {
                        Verdict::Forward(self.release())
                    } else {
                        Verdict::Forward(None)
                    }
                }
                (Some(c), _) => Verdict::Refuse(Status::invalid_argument(format!(
                    "input chunk for round {} sent without an upload grant",
                    c.round
                ))),
                // Anything else is the driver's; it does not end a grant.
                (None, _) => Verdict::Forward(None),
            },
        }
    }

    /// Ends the upload; returns its place.
    fn release(&mut self) -> Option<OwnedSemaphorePermit> {
        match std::mem::take(&mut self.state) {
            State::AwaitingChunks { place, .. } => Some(place),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::{UploadRequest, UploadWithdrawn};

    fn request(round: u64, bytes: u64) -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Body::UploadRequest(UploadRequest { round, bytes })),
        }
    }

    fn withdrawn(round: u64) -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Body::UploadWithdrawn(UploadWithdrawn { round })),
        }
    }

    fn chunk(round: u64, offset: u64, elements: usize, total: u64) -> ParticipantMessage {
        wide_chunk(round, offset, elements * 4, total)
    }

    fn wide_chunk(round: u64, offset: u64, bytes: usize, total: u64) -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Body::Chunk(VectorChunk {
                round,
                purpose: ChunkPurpose::MaskedInput as i32,
                offset,
                total,
                data: vec![0u8; bytes].into(),
            })),
        }
    }

    fn hello() -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Body::Hello(Default::default())),
        }
    }

    fn place(gate: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        Arc::clone(gate).try_acquire_owned().unwrap()
    }

    fn refused(v: Verdict, words: &str) {
        match v {
            Verdict::Refuse(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                assert!(s.message().contains(words), "{}", s.message());
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Request, grant, chunks: the place comes back with the last chunk,
    /// and the stall deadline follows the last progress.
    #[test]
    fn a_granted_upload_releases_its_place_with_its_last_chunk() {
        let gate = Arc::new(Semaphore::new(1));
        let t0 = Instant::now();
        let mut s = SessionUpload::default();
        assert!(matches!(s.on_message(&hello(), t0), Verdict::Forward(None)));
        assert!(matches!(
            s.on_message(&request(4, 80), t0),
            Verdict::Consumed
        ));
        assert_eq!(s.awaiting_place(), Some(4));
        assert_eq!(s.deadline(), None, "no stall clock while queued");
        assert_eq!(s.grant(place(&gate), t0), Some(4));
        assert_eq!(gate.available_permits(), 0);
        assert_eq!(s.deadline(), Some(t0 + UPLOAD_STALL));
        let t1 = t0 + Duration::from_secs(3);
        assert!(matches!(
            s.on_message(&chunk(4, 0, 10, 20), t1),
            Verdict::Forward(None)
        ));
        assert_eq!(s.deadline(), Some(t1 + UPLOAD_STALL));
        // Other messages neither end the grant nor count as progress.
        assert!(matches!(
            s.on_message(&hello(), t1 + UPLOAD_STALL),
            Verdict::Forward(None)
        ));
        assert_eq!(s.deadline(), Some(t1 + UPLOAD_STALL));
        let Verdict::Forward(Some(p)) = s.on_message(&chunk(4, 10, 10, 20), t1) else {
            panic!("the last chunk carries the place");
        };
        assert_eq!(s.deadline(), None);
        drop(p);
        assert_eq!(gate.available_permits(), 1);
        // A new upload may be asked for.
        assert!(matches!(
            s.on_message(&request(5, 4), t1),
            Verdict::Consumed
        ));
    }

    /// Input without a grant, for another round than the grant's, or a
    /// second request, ends the session with an error naming the rounds.
    #[test]
    fn input_without_a_grant_is_refused() {
        let gate = Arc::new(Semaphore::new(1));
        let t = Instant::now();
        let mut s = SessionUpload::default();
        refused(
            s.on_message(&chunk(3, 0, 10, 10), t),
            "without an upload grant",
        );
        assert!(matches!(
            s.on_message(&request(3, 40), t),
            Verdict::Consumed
        ));
        refused(
            s.on_message(&chunk(3, 0, 10, 10), t),
            "without an upload grant",
        );
        refused(
            s.on_message(&request(3, 40), t),
            "while another upload is pending",
        );
        s.grant(place(&gate), t);
        refused(
            s.on_message(&chunk(2, 0, 10, 10), t),
            "round 2 under an upload grant for round 3",
        );
        refused(
            s.on_message(&request(3, 40), t),
            "while another upload is pending",
        );
        // Plain input is input too; model chunks are not the gate's.
        let mut idle = SessionUpload::default();
        let mut plain = chunk(1, 0, 1, 1);
        if let Some(Body::Chunk(c)) = &mut plain.body {
            c.purpose = ChunkPurpose::PlainInput as i32;
        }
        refused(idle.on_message(&plain, t), "without an upload grant");
        let mut model = chunk(1, 0, 1, 1);
        if let Some(Body::Chunk(c)) = &mut model.body {
            c.purpose = ChunkPurpose::Model as i32;
        }
        assert!(matches!(idle.on_message(&model, t), Verdict::Forward(None)));
    }

    /// A withdrawal gives the place (or the turn) back; a late one for
    /// another round changes nothing.
    #[test]
    fn a_withdrawal_gives_the_place_back() {
        let gate = Arc::new(Semaphore::new(1));
        let t = Instant::now();
        let mut s = SessionUpload::default();
        s.on_message(&request(8, 4), t);
        assert!(matches!(s.on_message(&withdrawn(7), t), Verdict::Consumed));
        assert_eq!(s.awaiting_place(), Some(8));
        assert!(matches!(s.on_message(&withdrawn(8), t), Verdict::Consumed));
        assert_eq!(s.awaiting_place(), None);
        // A grant that comes after the withdrawal is not taken.
        assert_eq!(s.grant(place(&gate), t), None);
        assert_eq!(gate.available_permits(), 1);

        s.on_message(&request(9, 4), t);
        s.grant(place(&gate), t);
        assert_eq!(gate.available_permits(), 0);
        assert!(matches!(s.on_message(&withdrawn(9), t), Verdict::Consumed));
        assert_eq!(gate.available_permits(), 1);
        assert_eq!(s.deadline(), None);
        refused(
            s.on_message(&chunk(9, 0, 1, 1), t),
            "without an upload grant",
        );
    }

    /// An upload of 8-byte elements in several wire frames ends with its
    /// last frame, not when the frames' bytes read as 4-byte elements would
    /// reach the vector's length (a 10,011-element vector of 8-byte
    /// elements is three 32 KiB frames; the second used to end the grant
    /// and the third was refused as input without one).
    #[test]
    fn a_wide_upload_in_several_frames_ends_with_its_last_frame() {
        let gate = Arc::new(Semaphore::new(1));
        let t = Instant::now();
        let mut s = SessionUpload::default();
        let (total, frame) = (10_011u64, 4_096u64);
        let bytes = total * 8;
        assert!(matches!(
            s.on_message(&request(2, bytes), t),
            Verdict::Consumed
        ));
        s.grant(place(&gate), t);
        for offset in (0..total).step_by(frame as usize) {
            let elements = frame.min(total - offset);
            let last = offset + elements == total;
            match s.on_message(&wide_chunk(2, offset, (elements * 8) as usize, total), t) {
                Verdict::Forward(Some(p)) if last => drop(p),
                Verdict::Forward(None) if !last => {}
                other => panic!("frame at {offset}: {other:?}"),
            }
        }
        assert_eq!(gate.available_permits(), 1);
        assert_eq!(s.deadline(), None);

        // Bytes past the requested size end the session.
        assert!(matches!(
            s.on_message(&request(3, 16), t),
            Verdict::Consumed
        ));
        s.grant(place(&gate), t);
        assert!(matches!(
            s.on_message(&wide_chunk(3, 0, 8, 3), t),
            Verdict::Forward(None)
        ));
        refused(
            s.on_message(&wide_chunk(3, 1, 16, 3), t),
            "past the upload's requested size",
        );
    }
}
