//! Protocol messages, one type per message of `tessera.v1` (see
//! `proto/tessera/v1/federation.proto`). Fields map 1:1 onto the wire
//! messages; participant indices are 1-based `u32`.

/// Stage 1, participant → coordinator: two X25519 public keys
/// (wire: `SecAggKeys`; `from` is the authenticated sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// Round number.
    pub round: u64,
    /// The advertising participant.
    pub from: u32,
    /// Public key c^PK used to encrypt shares.
    pub cipher_public_key: [u8; 32],
    /// Public key s^PK used for pairwise masks.
    pub mask_public_key: [u8; 32],
    /// Signature over [`crate::signed_key_message`] (empty when keys are not signed).
    pub signature: Vec<u8>,
}

/// Stage 1 reply, coordinator → one participant: its neighbours' keys
/// (wire: `PeerKeys` of `PeerKey { index = from, ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerKeys {
    /// Round number.
    pub round: u64,
    /// Without signed keys: the keys of the recipient's neighbours that
    /// advertised keys. With signed keys: the keys of *every other*
    /// participant that advertised keys (the set U1 of \[B17\] without the
    /// recipient), from which the recipient derives the graph seed itself
    /// ([`crate::derive_graph_seed`]).
    pub keys: Vec<AdvertiseKeys>,
    /// The neighbour-graph seed the coordinator uses: the announced
    /// `graph_seed`, or with signed keys the seed derived from U1. The
    /// participant refuses a seed that differs from its own.
    pub graph_seed: [u8; 32],
}

/// One encrypted share bundle (wire: `EncryptedShare`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedShare {
    /// Sender (owner of the shared secrets).
    pub from: u32,
    /// Recipient.
    pub to: u32,
    /// AEAD ciphertext of the two shares.
    pub ciphertext: Vec<u8>,
}

/// Stage 2, participant → coordinator: one bundle per neighbour (wire: `ShareKeys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareKeys {
    /// Round number.
    pub round: u64,
    /// Bundles, one per neighbour listed in the sender's [`PeerKeys`].
    pub shares: Vec<EncryptedShare>,
}

/// Stage 2 reply, coordinator → one participant: bundles addressed to it
/// (wire: `RoutedShares`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedShares {
    /// Round number.
    pub round: u64,
    /// Bundles whose `to` is the recipient.
    pub shares: Vec<EncryptedShare>,
}

/// Stage 3, participant → coordinator: the masked vector, every element below
/// 2^modulus_bits (wire: `VectorChunk`s with purpose `MASKED_INPUT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedInput {
    /// Round number.
    pub round: u64,
    /// y = x + PRG(b_u) + Σ± PRG(s_{u,v}) mod 2^modulus_bits.
    pub values: Vec<u64>,
}

/// Consistency check (signed keys only), coordinator → every participant
/// whose masked input arrived: the set U3 of those participants \[B17
/// Fig. 4 Round 3] (wire: `SurvivorList`). Every recipient must get the
/// same list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurvivorList {
    /// Round number.
    pub round: u64,
    /// U3, strictly increasing.
    pub survivors: Vec<u32>,
}

/// Consistency check reply, participant → coordinator: its signature over
/// [`crate::signed_survivors_message`] of the list it was given (wire:
/// `SurvivorSignature`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurvivorSignature {
    /// Round number.
    pub round: u64,
    /// Signature with the participant's certificate key.
    pub signature: Vec<u8>,
}

/// Stage 4, coordinator → one participant: whose shares to reveal
/// (wire: `UnmaskRequest`). Lists only the recipient's neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Round number.
    pub round: u64,
    /// Neighbours that sent masked input: reveal their self-mask shares.
    pub survivors: Vec<u32>,
    /// Neighbours that sent shares but no masked input: reveal their key shares.
    pub dropped: Vec<u32>,
    /// With signed keys: the survivor-list signatures the coordinator
    /// collected, (signer, signature) \[B17 Fig. 4 Round 4, the list of
    /// σ'_v]; empty otherwise.
    pub signatures: Vec<(u32, Vec<u8>)>,
}

/// Stage 4 reply, participant → coordinator (wire: `UnmaskResponse` of
/// `RevealedShare { owner, share }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// Round number.
    pub round: u64,
    /// (owner, share of the owner's self-mask seed b).
    pub self_mask_shares: Vec<(u32, Vec<u8>)>,
    /// (owner, share of the owner's mask secret key s^SK).
    pub key_shares: Vec<(u32, Vec<u8>)>,
}

/// Anything a participant sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Stage 1.
    AdvertiseKeys(AdvertiseKeys),
    /// Stage 2.
    ShareKeys(ShareKeys),
    /// Stage 3.
    MaskedInput(MaskedInput),
    /// Consistency check (signed keys only).
    SurvivorSignature(SurvivorSignature),
    /// Stage 4.
    UnmaskResponse(UnmaskResponse),
}

/// Anything the coordinator sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Reply to stage 1.
    PeerKeys(PeerKeys),
    /// Reply to stage 2.
    RoutedShares(RoutedShares),
    /// Consistency check request (signed keys only).
    SurvivorList(SurvivorList),
    /// Stage 4 request.
    UnmaskRequest(UnmaskRequest),
}

impl ClientMessage {
    /// The round the message names.
    pub fn round(&self) -> u64 {
        match self {
            ClientMessage::AdvertiseKeys(m) => m.round,
            ClientMessage::ShareKeys(m) => m.round,
            ClientMessage::MaskedInput(m) => m.round,
            ClientMessage::SurvivorSignature(m) => m.round,
            ClientMessage::UnmaskResponse(m) => m.round,
        }
    }

    /// Payload size in bytes (keys, signatures, ciphertexts, shares, vector
    /// elements at 4 bytes when `modulus_bits <= 32` else 8, 4 per index),
    /// ignoring wire framing. Used for traffic accounting.
    pub fn payload_len(&self, modulus_bits: u32) -> u64 {
        let shares = |v: &[(u32, Vec<u8>)]| v.iter().map(|(_, s)| 4 + s.len() as u64).sum::<u64>();
        8 + match self {
            ClientMessage::AdvertiseKeys(m) => 64 + m.signature.len() as u64,
            ClientMessage::ShareKeys(m) => {
                m.shares.iter().map(|s| 8 + s.ciphertext.len() as u64).sum()
            }
            ClientMessage::MaskedInput(m) => {
                m.values.len() as u64 * crate::prg::word_bytes(modulus_bits) as u64
            }
            ClientMessage::SurvivorSignature(m) => m.signature.len() as u64,
            ClientMessage::UnmaskResponse(m) => shares(&m.self_mask_shares) + shares(&m.key_shares),
        }
    }
}

impl ServerMessage {
    /// The round the message names.
    pub fn round(&self) -> u64 {
        match self {
            ServerMessage::PeerKeys(m) => m.round,
            ServerMessage::RoutedShares(m) => m.round,
            ServerMessage::SurvivorList(m) => m.round,
            ServerMessage::UnmaskRequest(m) => m.round,
        }
    }

    /// Payload size in bytes, ignoring wire framing (see [`ClientMessage::payload_len`]).
    pub fn payload_len(&self) -> u64 {
        8 + match self {
            ServerMessage::PeerKeys(m) => {
                32 + m
                    .keys
                    .iter()
                    .map(|k| 68 + k.signature.len() as u64)
                    .sum::<u64>()
            }
            ServerMessage::RoutedShares(m) => {
                m.shares.iter().map(|s| 8 + s.ciphertext.len() as u64).sum()
            }
            ServerMessage::SurvivorList(m) => 4 * m.survivors.len() as u64,
            ServerMessage::UnmaskRequest(m) => {
                4 * (m.survivors.len() + m.dropped.len()) as u64
                    + m.signatures
                        .iter()
                        .map(|(_, s)| 4 + s.len() as u64)
                        .sum::<u64>()
            }
        }
    }
}
