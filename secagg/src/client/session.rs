//! [`ClientSession`]: a participant's whole round as one enum, for drivers
//! that prefer a single type over the consuming states.

use rand_core::CryptoRng;

use super::{
    AwaitingInput, AwaitingPeerKeys, AwaitingShares, AwaitingSignatures, AwaitingUnmask,
    ClientConfig,
};
use crate::messages::{ClientMessage, ServerMessage};
use crate::{Error, Violation};

/// A participant's whole round as one value, for drivers that prefer a
/// single type. Errors are terminal (the session is consumed).
#[derive(Debug)]
pub enum ClientSession {
    /// See [`AwaitingPeerKeys`].
    AwaitingPeerKeys(AwaitingPeerKeys),
    /// See [`AwaitingShares`].
    AwaitingShares(AwaitingShares),
    /// See [`AwaitingInput`]: call [`ClientSession::mask_input`].
    AwaitingInput(AwaitingInput),
    /// See [`AwaitingUnmask`].
    AwaitingUnmask(AwaitingUnmask),
    /// See [`AwaitingSignatures`] (signed keys only).
    AwaitingSignatures(AwaitingSignatures),
    /// The participant's part of the round is over.
    Done,
}

impl ClientSession {
    /// Starts a session; returns it and the key advertisement to send.
    pub fn start<R: CryptoRng + ?Sized>(
        cfg: ClientConfig,
        rng: &mut R,
    ) -> Result<(Self, ClientMessage), Error> {
        let (s, m) = AwaitingPeerKeys::start(cfg, rng)?;
        Ok((
            ClientSession::AwaitingPeerKeys(s),
            ClientMessage::AdvertiseKeys(m),
        ))
    }

    /// Handles a coordinator message; returns the next session and the reply
    /// to send, if any. A message the current state does not expect is a
    /// [`Violation::WrongStage`].
    pub fn handle<R: CryptoRng + ?Sized>(
        self,
        msg: ServerMessage,
        rng: &mut R,
    ) -> Result<(Self, Option<ClientMessage>), Error> {
        match (self, msg) {
            (ClientSession::AwaitingPeerKeys(s), ServerMessage::PeerKeys(m)) => {
                let (next, out) = s.handle_peer_keys(m, rng)?;
                Ok((
                    ClientSession::AwaitingShares(next),
                    Some(ClientMessage::ShareKeys(out)),
                ))
            }
            (ClientSession::AwaitingShares(s), ServerMessage::RoutedShares(m)) => Ok((
                ClientSession::AwaitingInput(s.handle_routed_shares(m)?),
                None,
            )),
            (ClientSession::AwaitingUnmask(s), ServerMessage::SurvivorList(m)) => {
                let (next, out) = s.handle_survivor_list(m)?;
                Ok((
                    ClientSession::AwaitingSignatures(next),
                    Some(ClientMessage::SurvivorSignature(out)),
                ))
            }
            (ClientSession::AwaitingUnmask(s), ServerMessage::UnmaskRequest(m)) => {
                let out = s.handle_unmask_request(m)?;
                Ok((
                    ClientSession::Done,
                    Some(ClientMessage::UnmaskResponse(out)),
                ))
            }
            (ClientSession::AwaitingSignatures(s), ServerMessage::UnmaskRequest(m)) => {
                let out = s.handle_unmask_request(m)?;
                Ok((
                    ClientSession::Done,
                    Some(ClientMessage::UnmaskResponse(out)),
                ))
            }
            _ => Err(Violation::WrongStage.into()),
        }
    }

    /// Masks the local input (only in [`ClientSession::AwaitingInput`]).
    pub fn mask_input(self, input: &[u64]) -> Result<(Self, ClientMessage), Error> {
        match self {
            ClientSession::AwaitingInput(s) => {
                let (next, out) = s.mask_input(input)?;
                Ok((
                    ClientSession::AwaitingUnmask(next),
                    ClientMessage::MaskedInput(out),
                ))
            }
            _ => Err(Error::ApiMisuse(
                "mask_input called before the shares arrived or twice",
            )),
        }
    }

    /// [`ClientSession::mask_input`] on an owned vector, masked in place.
    pub fn mask_input_owned(self, input: Vec<u64>) -> Result<(Self, ClientMessage), Error> {
        match self {
            ClientSession::AwaitingInput(s) => {
                let (next, out) = s.mask_input_owned(input)?;
                Ok((
                    ClientSession::AwaitingUnmask(next),
                    ClientMessage::MaskedInput(out),
                ))
            }
            _ => Err(Error::ApiMisuse(
                "mask_input called before the shares arrived or twice",
            )),
        }
    }

    /// Whether the session waits for the local input.
    pub fn wants_input(&self) -> bool {
        matches!(self, ClientSession::AwaitingInput(_))
    }
}
