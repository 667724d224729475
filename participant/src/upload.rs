//! The participant's side of the upload grant (protocol version 3): the
//! site's input vector waits here until the coordinator grants the upload.
//!
//! The coordinator reads a few uploads at a time and wants the others to
//! hold their bytes themselves (see the coordinator's `upload` module).
//! So when the site machine hands the shell the chunks of an input vector
//! (`MASKED_INPUT` or `PLAIN_INPUT`), the shell sends an `UploadRequest`
//! for the round and keeps the chunks here; an `UploadGrant` for that round
//! releases them, in order. If the round ends first (its result, a later
//! round's announcement, or the federation's end arrives), the chunks are
//! dropped and an `UploadWithdrawn` gives the place back; a grant for a
//! round with nothing held is given back the same way. The site machine
//! never sees any of this: to it the input was sent.
//!
//! Sans-IO: messages in, messages to send out.

use tessera_proto::v1::coordinator_message::Body as In;
use tessera_proto::v1::participant_message::Body as Out;
use tessera_proto::v1::{
    ChunkPurpose, CoordinatorMessage, ParticipantMessage, UploadRequest, UploadWithdrawn,
};

/// An input vector waiting for its grant.
#[derive(Debug)]
struct Held {
    round: u64,
    chunks: Vec<ParticipantMessage>,
    /// Whether its `UploadRequest` has gone out.
    requested: bool,
}

/// The input held until its grant (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct UploadQueue {
    held: Option<Held>,
}

/// The round of the input chunk in `message`, if it is one.
fn input_round(message: &ParticipantMessage) -> Option<u64> {
    match &message.body {
        Some(Out::Chunk(c))
            if c.purpose == ChunkPurpose::MaskedInput as i32
                || c.purpose == ChunkPurpose::PlainInput as i32 =>
        {
            Some(c.round)
        }
        _ => None,
    }
}

fn withdrawn(round: u64) -> ParticipantMessage {
    ParticipantMessage {
        body: Some(Out::UploadWithdrawn(UploadWithdrawn { round })),
    }
}

/// What an inbound message means to the queue.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A grant: send these (the held chunks, or a withdrawal of a grant
    /// that came too late); the site does not see it.
    Grant(Vec<ParticipantMessage>),
    /// A message for the site; send `withdraw` first if it ended the round
    /// whose input was held.
    Site {
        withdraw: Option<ParticipantMessage>,
    },
}

impl UploadQueue {
    /// Takes one message the site wants sent; returns what to send now. An
    /// input chunk is held (after the withdrawal of an older vector still
    /// held, if any); its request goes out with [`flush`](Self::flush).
    pub(crate) fn outgoing(&mut self, message: ParticipantMessage) -> Vec<ParticipantMessage> {
        let Some(round) = input_round(&message) else {
            return vec![message];
        };
        let mut now = Vec::new();
        match &mut self.held {
            Some(h) if h.round == round && !h.requested => h.chunks.push(message),
            _ => {
                if let Some(old) = self.held.take().filter(|h| h.requested) {
                    now.push(withdrawn(old.round));
                }
                self.held = Some(Held {
                    round,
                    chunks: vec![message],
                    requested: false,
                });
            }
        }
        now
    }

    /// The request for the held vector, once the site has handed over all
    /// of it (the shell calls this after taking everything one message
    /// made the site send; a site emits a whole input vector at once). It
    /// names the vector's size in bytes, which tells the coordinator which
    /// chunk ends the upload.
    pub(crate) fn flush(&mut self) -> Option<ParticipantMessage> {
        let h = self.held.as_mut().filter(|h| !h.requested)?;
        h.requested = true;
        let bytes = h
            .chunks
            .iter()
            .map(|m| match &m.body {
                Some(Out::Chunk(c)) => c.data.len() as u64,
                _ => 0,
            })
            .sum();
        Some(ParticipantMessage {
            body: Some(Out::UploadRequest(UploadRequest {
                round: h.round,
                bytes,
            })),
        })
    }

    /// Looks at one message from the coordinator (see [`Inbound`]).
    pub(crate) fn inbound(&mut self, message: &CoordinatorMessage) -> Inbound {
        let held_round = self.held.as_ref().map(|h| h.round);
        let ends_held = match (&message.body, held_round) {
            (Some(In::UploadGrant(g)), _) => {
                return Inbound::Grant(match self.held.take() {
                    Some(h) if h.round == g.round => h.chunks,
                    other => {
                        self.held = other;
                        vec![withdrawn(g.round)]
                    }
                });
            }
            (_, None) => false,
            (Some(In::Result(r)), Some(h)) => r.round == h,
            (Some(In::Announce(a)), Some(h)) => a.round != h,
            (Some(In::Done(_)), Some(_)) => true,
            _ => false,
        };
        Inbound::Site {
            withdraw: if ends_held {
                self.held.take().map(|h| withdrawn(h.round))
            } else {
                None
            },
        }
    }

    /// Whether input is held.
    #[cfg(test)]
    fn holds(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::{RoundAnnounce, RoundResult, UploadGrant, VectorChunk};

    fn chunk(round: u64, offset: u64, purpose: ChunkPurpose) -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Out::Chunk(VectorChunk {
                round,
                purpose: purpose as i32,
                offset,
                total: 2,
                data: vec![0u8; 4].into(),
            })),
        }
    }

    fn grant(round: u64) -> CoordinatorMessage {
        CoordinatorMessage {
            body: Some(In::UploadGrant(UploadGrant { round })),
        }
    }

    fn request(round: u64, bytes: u64) -> ParticipantMessage {
        ParticipantMessage {
            body: Some(Out::UploadRequest(UploadRequest { round, bytes })),
        }
    }

    /// The input waits for its grant and then leaves whole and in order;
    /// other messages are never held.
    #[test]
    fn input_waits_for_its_grant() {
        let mut q = UploadQueue::default();
        let keys = ParticipantMessage {
            body: Some(Out::Keys(Default::default())),
        };
        assert_eq!(q.outgoing(keys.clone()), vec![keys.clone()]);
        let a = chunk(3, 0, ChunkPurpose::MaskedInput);
        let b = chunk(3, 1, ChunkPurpose::MaskedInput);
        assert_eq!(q.outgoing(a.clone()), vec![]);
        assert_eq!(q.outgoing(b.clone()), vec![]);
        assert_eq!(q.outgoing(keys.clone()), vec![keys]);
        // Once the site has handed over the whole vector, the request names
        // its size; it goes out once.
        assert_eq!(q.flush(), Some(request(3, 8)));
        assert_eq!(q.flush(), None);
        // A message for the site changes nothing.
        let announce = CoordinatorMessage {
            body: Some(In::Announce(RoundAnnounce {
                round: 3,
                ..Default::default()
            })),
        };
        assert!(matches!(
            q.inbound(&announce),
            Inbound::Site { withdraw: None }
        ));
        let Inbound::Grant(out) = q.inbound(&grant(3)) else {
            panic!("a grant");
        };
        assert_eq!(out, vec![a, b]);
        assert!(!q.holds());
        // Plain input goes by grant too; model chunks are not input.
        assert_eq!(q.outgoing(chunk(4, 0, ChunkPurpose::PlainInput)), vec![]);
        assert_eq!(q.flush(), Some(request(4, 4)));
        let model = chunk(4, 0, ChunkPurpose::Model);
        assert_eq!(q.outgoing(model.clone()), vec![model]);
    }

    /// A round that ends while its input waits gives the place back; so
    /// does a grant for a round with nothing held; a newer input replaces
    /// an older one.
    #[test]
    fn stale_input_and_stale_grants_are_given_back() {
        let mut q = UploadQueue::default();
        q.outgoing(chunk(5, 0, ChunkPurpose::MaskedInput));
        q.flush();
        let other_result = CoordinatorMessage {
            body: Some(In::Result(RoundResult {
                round: 4,
                ..Default::default()
            })),
        };
        assert!(matches!(
            q.inbound(&other_result),
            Inbound::Site { withdraw: None }
        ));
        let result = CoordinatorMessage {
            body: Some(In::Result(RoundResult {
                round: 5,
                ..Default::default()
            })),
        };
        let Inbound::Site { withdraw: Some(w) } = q.inbound(&result) else {
            panic!("the held input is withdrawn");
        };
        assert_eq!(w, withdrawn(5));
        assert!(!q.holds());
        let Inbound::Grant(out) = q.inbound(&grant(5)) else {
            panic!("a grant");
        };
        assert_eq!(out, vec![withdrawn(5)], "a late grant is given back");

        q.outgoing(chunk(6, 0, ChunkPurpose::MaskedInput));
        q.flush();
        assert_eq!(
            q.outgoing(chunk(7, 0, ChunkPurpose::MaskedInput)),
            vec![withdrawn(6)]
        );
        assert_eq!(q.flush(), Some(request(7, 4)));
        let Inbound::Grant(out) = q.inbound(&grant(6)) else {
            panic!("a grant");
        };
        assert_eq!(out, vec![withdrawn(6)]);
        assert!(q.holds(), "the newer input still waits");
        let next = CoordinatorMessage {
            body: Some(In::Announce(RoundAnnounce {
                round: 8,
                ..Default::default()
            })),
        };
        assert!(matches!(
            q.inbound(&next),
            Inbound::Site { withdraw: Some(w) } if w == withdrawn(7)
        ));
    }
}
