//! The participant side: one consuming state per stage, named for what it
//! awaits (rustls' `Expect…` states), plus [`ClientSession`], an enum wrapper
//! for drivers. Every step cites Bonawitz et al. 2017, Figure 4 ("Round 0"
//! to "Round 4") and, for neighbour sets, Bell et al. 2020, §3.
//!
//! Errors are terminal: a state consumed by a failing call is gone, and the
//! participant simply stops taking part in the round — to the coordinator it
//! looks like a dropout, which the protocol tolerates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::graph::Graph;
use crate::kdf::{agree, pairwise_mask_seed, share_key};
use crate::messages::{
    AdvertiseKeys, ClientMessage, EncryptedShare, MaskedInput, PeerKeys, RoutedShares,
    ServerMessage, ShareKeys, UnmaskRequest, UnmaskResponse,
};
use crate::params::RoundParams;
use crate::prg::{MaskJob, apply_masks, masked_copy, modulus_mask};
use crate::seal::{open, seal};
use crate::shamir::{Share, split};
use crate::{Error, Stage, Violation};

/// Signs a participant's advertised keys, typically with the private key of
/// its TLS certificate (implemented outside this crate).
pub trait KeySigner: Send {
    /// Signs `message` (the output of [`signed_key_message`]).
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Verifies a peer's signature on its advertised keys, against the
/// certificate the coordinator forwarded for that peer.
pub trait KeyVerifier: Send {
    /// Whether `signature` by participant `peer` over `message` is valid.
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool;
}

/// The exact bytes signed over a participant's advertised keys:
/// `"tessera-secagg-v1 keys\0" ‖ round (BE) ‖ from (BE) ‖ cipher_pk ‖ mask_pk`.
pub fn signed_key_message(
    round: u64,
    from: u32,
    cipher_pk: &[u8; 32],
    mask_pk: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(23 + 12 + 64);
    m.extend_from_slice(b"tessera-secagg-v1 keys\0");
    m.extend_from_slice(&round.to_be_bytes());
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(cipher_pk);
    m.extend_from_slice(mask_pk);
    m
}

/// What a participant needs to take part in one round.
pub struct ClientConfig {
    /// The round's parameters, as announced by the coordinator.
    pub params: RoundParams,
    /// This participant's index.
    pub me: u32,
    /// Signs the advertised keys; required when `params.signed_keys`.
    pub signer: Option<Box<dyn KeySigner>>,
    /// Verifies peers' signatures; required when `params.signed_keys`.
    pub verifier: Option<Box<dyn KeyVerifier>>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("params", &self.params)
            .field("me", &self.me)
            .field("signer", &self.signer.is_some())
            .field("verifier", &self.verifier.is_some())
            .finish()
    }
}

struct Common {
    params: RoundParams,
    me: u32,
}

impl Common {
    fn check_round(&self, round: u64) -> Result<(), Error> {
        if round != self.params.round {
            return Err(Violation::WrongRound {
                expected: self.params.round,
                got: round,
            }
            .into());
        }
        Ok(())
    }

    fn not_expected(&self, peer: u32) -> Error {
        if self.params.participants.binary_search(&peer).is_ok() {
            Violation::NotSelected(peer).into()
        } else {
            Violation::UnknownParticipant(peer).into()
        }
    }
}

macro_rules! debug_state {
    ($t:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("round", &self.common.params.round)
                    .field("me", &self.common.me)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Keys advertised; waiting for the neighbours' keys.
pub struct AwaitingPeerKeys {
    common: Common,
    neighbours: Vec<u32>,
    verifier: Option<Box<dyn KeyVerifier>>,
    cipher_sk: StaticSecret,
    mask_sk: StaticSecret,
    self_seed: [u8; 32],
}

/// Secret shares sent; waiting for the shares addressed to this participant.
pub struct AwaitingShares {
    common: Common,
    self_seed: [u8; 32],
    /// peer -> (key to open its share bundle, pairwise mask seed)
    peers: BTreeMap<u32, ([u8; 32], [u8; 32])>,
}

/// Shares received; waiting for the local input to mask.
pub struct AwaitingInput {
    common: Common,
    self_seed: [u8; 32],
    /// Mask partners: peers whose shares arrived, with the pairwise seed.
    partners: Vec<(u32, [u8; 32])>,
    /// owner -> (share of its self-mask seed, share of its mask key)
    held: BTreeMap<u32, (Share, Share)>,
}

/// Masked input sent; waiting for the unmasking request.
pub struct AwaitingUnmask {
    common: Common,
    held: BTreeMap<u32, (Share, Share)>,
}

debug_state!(AwaitingPeerKeys);
debug_state!(AwaitingShares);
debug_state!(AwaitingInput);
debug_state!(AwaitingUnmask);

impl AwaitingPeerKeys {
    /// Round 0 (AdvertiseKeys): draws the two X25519 key pairs (c, s) and the
    /// self-mask seed b, and returns the advertisement (signed if the round
    /// asks for it).
    pub fn start<R: CryptoRng + ?Sized>(
        cfg: ClientConfig,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys), Error> {
        cfg.params.validate()?;
        if cfg.params.participants.binary_search(&cfg.me).is_err() {
            return Err(Error::InvalidParams(format!(
                "participant {} is not in the cohort",
                cfg.me
            )));
        }
        if cfg.params.signed_keys && (cfg.signer.is_none() || cfg.verifier.is_none()) {
            return Err(Error::ApiMisuse(
                "signed keys need both a signer and a verifier",
            ));
        }
        let cipher_sk = StaticSecret::random_from_rng(rng);
        let mask_sk = StaticSecret::random_from_rng(rng);
        let mut self_seed = [0u8; 32];
        rng.fill_bytes(&mut self_seed);
        let cipher_public_key = PublicKey::from(&cipher_sk).to_bytes();
        let mask_public_key = PublicKey::from(&mask_sk).to_bytes();
        let signature = match (&cfg.signer, cfg.params.signed_keys) {
            (Some(s), true) => s.sign(&signed_key_message(
                cfg.params.round,
                cfg.me,
                &cipher_public_key,
                &mask_public_key,
            )),
            _ => Vec::new(),
        };
        let msg = AdvertiseKeys {
            round: cfg.params.round,
            from: cfg.me,
            cipher_public_key,
            mask_public_key,
            signature,
        };
        let neighbours = Graph::new(&cfg.params).neighbours(cfg.me);
        let state = AwaitingPeerKeys {
            common: Common {
                params: cfg.params,
                me: cfg.me,
            },
            neighbours,
            verifier: cfg.verifier,
            cipher_sk,
            mask_sk,
            self_seed,
        };
        Ok((state, msg))
    }

    /// Round 1 (ShareKeys): checks the neighbours' keys (neighbours only, no
    /// duplicates, at least t of them, valid signatures, usable keys), splits b
    /// and s^SK t-of-|peers| with Shamir and encrypts each peer's pair of
    /// shares to it.
    pub fn handle_peer_keys<R: CryptoRng + ?Sized>(
        self,
        msg: PeerKeys,
        rng: &mut R,
    ) -> Result<(AwaitingShares, ShareKeys), Error> {
        let c = &self.common;
        c.check_round(msg.round)?;
        let mut keys: BTreeMap<u32, &AdvertiseKeys> = BTreeMap::new();
        for k in &msg.keys {
            c.check_round(k.round)?;
            if self.neighbours.binary_search(&k.from).is_err() {
                return Err(c.not_expected(k.from));
            }
            if keys.insert(k.from, k).is_some() {
                return Err(Violation::Duplicate(k.from).into());
            }
            if c.params.signed_keys {
                let signed = signed_key_message(
                    c.params.round,
                    k.from,
                    &k.cipher_public_key,
                    &k.mask_public_key,
                );
                let ok = self
                    .verifier
                    .as_ref()
                    .is_some_and(|v| v.verify(k.from, &signed, &k.signature));
                if !ok {
                    return Err(Violation::BadSignature { peer: k.from }.into());
                }
            }
        }
        let t = c.params.threshold;
        if keys.len() < t {
            return Err(Error::BelowThreshold {
                needed: t,
                have: keys.len(),
                stage: Stage::AwaitingKeys,
            });
        }
        let round = c.params.round;
        let me = c.me;
        let mut peers = BTreeMap::new();
        let mut send_keys = Vec::with_capacity(keys.len());
        for (&v, k) in &keys {
            let cs = agree(&self.cipher_sk, &k.cipher_public_key)
                .ok_or(Violation::BadPublicKey { peer: v })?;
            let ms = agree(&self.mask_sk, &k.mask_public_key)
                .ok_or(Violation::BadPublicKey { peer: v })?;
            peers.insert(
                v,
                (
                    share_key(&cs, round, v, me),
                    pairwise_mask_seed(&ms, round, me, v),
                ),
            );
            send_keys.push(share_key(&cs, round, me, v));
        }
        let xs: Vec<u32> = keys.keys().copied().collect();
        let b_shares = split(&self.self_seed, t, &xs, rng);
        let s_shares = split(&self.mask_sk.to_bytes(), t, &xs, rng);
        let shares = xs
            .iter()
            .zip(send_keys.iter())
            .zip(b_shares.iter().zip(s_shares.iter()))
            .map(|((&v, key), (b, s))| EncryptedShare {
                from: me,
                to: v,
                ciphertext: seal(key, round, me, v, b, s),
            })
            .collect();
        let next = AwaitingShares {
            common: self.common,
            self_seed: self.self_seed,
            peers,
        };
        Ok((next, ShareKeys { round, shares }))
    }
}

impl AwaitingShares {
    /// Round 2 (MaskedInputCollection, receiving part): decrypts the share
    /// bundles routed to this participant. Each must come from a peer whose
    /// keys it received, once, and authenticate; at least t are needed. The
    /// senders become this participant's mask partners.
    pub fn handle_routed_shares(self, msg: RoutedShares) -> Result<AwaitingInput, Error> {
        let c = &self.common;
        c.check_round(msg.round)?;
        let mut held = BTreeMap::new();
        let mut partners = Vec::with_capacity(msg.shares.len());
        for s in &msg.shares {
            if s.to != c.me {
                return Err(c.not_expected(s.to));
            }
            let Some((key, seed)) = self.peers.get(&s.from) else {
                return Err(c.not_expected(s.from));
            };
            if held.contains_key(&s.from) {
                return Err(Violation::Duplicate(s.from).into());
            }
            let pair = open(key, c.params.round, s.from, c.me, &s.ciphertext)
                .ok_or(Violation::BadCiphertext { from: s.from })?;
            held.insert(s.from, pair);
            partners.push((s.from, *seed));
        }
        let t = c.params.threshold;
        if held.len() < t {
            return Err(Error::BelowThreshold {
                needed: t,
                have: held.len(),
                stage: Stage::AwaitingShares,
            });
        }
        Ok(AwaitingInput {
            common: self.common,
            self_seed: self.self_seed,
            partners,
            held,
        })
    }
}

impl AwaitingInput {
    /// Round 2 (sending part): y = x + PRG(b) + Σ_{v<u} PRG(s_{u,v}) −
    /// Σ_{v>u} PRG(s_{u,v}) mod 2^modulus_bits, over the mask partners, in one
    /// fused pass ([`crate::prg::apply_masks`]). `input` must have `dim`
    /// elements, each below 2^modulus_bits.
    pub fn mask_input(self, input: &[u64]) -> Result<(AwaitingUnmask, MaskedInput), Error> {
        let mut jobs = self.check_input(input)?;
        let values = masked_copy(input, &mut jobs, self.common.params.modulus_bits);
        Ok(self.finish(values))
    }

    /// [`AwaitingInput::mask_input`] on an owned vector, masked in place (no
    /// second vector of `dim` elements is allocated).
    pub fn mask_input_owned(
        self,
        mut input: Vec<u64>,
    ) -> Result<(AwaitingUnmask, MaskedInput), Error> {
        let mut jobs = self.check_input(&input)?;
        apply_masks(&mut input, &mut jobs, self.common.params.modulus_bits);
        Ok(self.finish(input))
    }

    /// Checks the input and prepares the mask jobs: the self mask (+) and
    /// one pairwise mask per partner, + for partners above `me`, − below.
    fn check_input(&self, input: &[u64]) -> Result<Vec<MaskJob>, Error> {
        let p = &self.common.params;
        if input.len() != p.dim {
            return Err(Error::InvalidInput(format!(
                "input has {} elements, round expects {}",
                input.len(),
                p.dim
            )));
        }
        let m = modulus_mask(p.modulus_bits);
        if input.iter().fold(0u64, |a, &x| a | x) > m {
            let i = input.iter().position(|&x| x > m).unwrap_or(0);
            return Err(Error::InvalidInput(format!(
                "input element {i} is not below 2^{}",
                p.modulus_bits
            )));
        }
        let me = self.common.me;
        let mut jobs = Vec::with_capacity(self.partners.len() + 1);
        jobs.push(MaskJob::new(&self.self_seed, false));
        for (v, seed) in &self.partners {
            jobs.push(MaskJob::new(seed, me > *v));
        }
        Ok(jobs)
    }

    fn finish(self, values: Vec<u64>) -> (AwaitingUnmask, MaskedInput) {
        let msg = MaskedInput {
            round: self.common.params.round,
            values,
        };
        (
            AwaitingUnmask {
                common: self.common,
                held: self.held,
            },
            msg,
        )
    }

    /// The participants this one masks with (whose shares it received).
    pub fn mask_partners(&self) -> Vec<u32> {
        self.partners.iter().map(|(v, _)| *v).collect()
    }
}

impl AwaitingUnmask {
    /// Round 4 (Unmasking): reveals the self-mask shares of the announced
    /// survivors and the key shares of the announced dropouts. Refuses when
    /// one participant is in both lists, when a listed participant never sent
    /// shares here, on duplicates, and when fewer than t survivors (counting
    /// this participant) are announced.
    pub fn handle_unmask_request(self, msg: UnmaskRequest) -> Result<UnmaskResponse, Error> {
        let c = &self.common;
        c.check_round(msg.round)?;
        let mut survivors = BTreeSet::new();
        for &u in &msg.survivors {
            if !survivors.insert(u) {
                return Err(Violation::Duplicate(u).into());
            }
        }
        let mut dropped = BTreeSet::new();
        for &u in &msg.dropped {
            if survivors.contains(&u) {
                return Err(Violation::BothSharesRequested { peer: u }.into());
            }
            if !dropped.insert(u) {
                return Err(Violation::Duplicate(u).into());
            }
        }
        for &u in survivors.iter().chain(dropped.iter()) {
            if !self.held.contains_key(&u) {
                return Err(Violation::NoSharesFrom { peer: u }.into());
            }
        }
        let t = c.params.threshold;
        if survivors.len() + 1 < t {
            return Err(Violation::TooFewSurvivors {
                needed: t,
                have: survivors.len() + 1,
            }
            .into());
        }
        let reveal = |set: &[u32], pick: fn(&(Share, Share)) -> &Share| -> Vec<(u32, Vec<u8>)> {
            set.iter()
                .filter_map(|u| self.held.get(u).map(|p| (*u, pick(p).to_bytes().to_vec())))
                .collect()
        };
        Ok(UnmaskResponse {
            round: c.params.round,
            self_mask_shares: reveal(&msg.survivors, |p| &p.0),
            key_shares: reveal(&msg.dropped, |p| &p.1),
        })
    }
}

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
            (ClientSession::AwaitingUnmask(s), ServerMessage::UnmaskRequest(m)) => {
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
