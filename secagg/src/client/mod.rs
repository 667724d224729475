//! The participant side: one consuming state per stage, named for what it
//! awaits (rustls' `Expect…` states) — here the stages up to masking, in
//! `unmask` the consistency check and unmasking — plus [`ClientSession`]
//! (`session`), an enum wrapper for drivers. Every step cites Bonawitz et al. 2017, Figure 4 ("Round 0"
//! to "Round 4") and, for neighbour sets, Bell et al. 2020, §3.
//!
//! Errors are terminal: a state consumed by a failing call is gone, and the
//! participant simply stops taking part in the round — to the coordinator it
//! looks like a dropout, which the protocol tolerates.
//!
//! Secrets (the X25519 secret keys, the self-mask seed, the pairwise seeds
//! and share-encryption keys, and the Shamir shares held of the peers'
//! secrets) are wiped from memory when the state holding them is dropped
//! (`zeroize`); every state implements [`ZeroizeOnDrop`].

use std::collections::BTreeMap;
use std::fmt;

use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::consistency::derive_graph_seed;
use crate::graph::Graph;
use crate::kdf::{agree, pairwise_mask_seed, share_key};
use crate::messages::{
    AdvertiseKeys, EncryptedShare, MaskedInput, PeerKeys, RoutedShares, ShareKeys,
};
use crate::params::RoundParams;
use crate::prg::{MaskJob, apply_masks, masked_copy, modulus_mask};
use crate::seal::{open, seal};
use crate::shamir::split;
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

/// A 32-byte secret, wiped when dropped.
type Secret = Zeroizing<[u8; 32]>;

/// Signer and verifier of a signed-key round.
struct Auth {
    signer: Box<dyn KeySigner>,
    verifier: Box<dyn KeyVerifier>,
}

struct Common {
    params: RoundParams,
    me: u32,
    /// Present exactly when `params.signed_keys`.
    auth: Option<Auth>,
    /// The graph seed in use: announced, or (signed keys) derived from U1
    /// once the peers' keys arrived.
    graph_seed: [u8; 32],
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

mod session;
mod unmask;

pub use session::ClientSession;
pub use unmask::{AwaitingSignatures, AwaitingUnmask, HeldShares};

/// Keys advertised; waiting for the neighbours' keys (with signed keys:
/// every other participant's keys).
pub struct AwaitingPeerKeys {
    common: Common,
    /// The neighbours by the announced graph seed (unused with signed
    /// keys: the graph is known once the keys are).
    neighbours: Vec<u32>,
    /// This participant's own advertisement (part of U1 for the seed).
    own: AdvertiseKeys,
    cipher_sk: StaticSecret,
    mask_sk: StaticSecret,
    self_seed: Secret,
}

/// Secret shares sent; waiting for the shares addressed to this participant.
pub struct AwaitingShares {
    common: Common,
    self_seed: Secret,
    /// peer -> (key to open its share bundle, pairwise mask seed)
    peers: BTreeMap<u32, (Secret, Secret)>,
}

/// Shares received; waiting for the local input to mask.
pub struct AwaitingInput {
    common: Common,
    self_seed: Secret,
    /// Mask partners: peers whose shares arrived, with the pairwise seed.
    partners: Vec<(u32, Secret)>,
    /// owner -> shares of its self-mask seed and of its mask key
    held: BTreeMap<u32, HeldShares>,
}

debug_state!(AwaitingPeerKeys);
debug_state!(AwaitingShares);
debug_state!(AwaitingInput);

// Every field holding a secret zeroises itself when dropped (StaticSecret,
// `Secret`, `HeldShares`), so the states do too.
impl ZeroizeOnDrop for AwaitingPeerKeys {}
impl ZeroizeOnDrop for AwaitingShares {}
impl ZeroizeOnDrop for AwaitingInput {}

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
        let mut self_seed = Secret::new([0u8; 32]);
        rng.fill_bytes(self_seed.as_mut());
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
        let neighbours = if cfg.params.signed_keys {
            Vec::new()
        } else {
            Graph::new(&cfg.params).neighbours(cfg.me)
        };
        let auth = match (cfg.signer, cfg.verifier, cfg.params.signed_keys) {
            (Some(signer), Some(verifier), true) => Some(Auth { signer, verifier }),
            _ => None,
        };
        let graph_seed = cfg.params.graph_seed;
        let state = AwaitingPeerKeys {
            common: Common {
                params: cfg.params,
                me: cfg.me,
                auth,
                graph_seed,
            },
            neighbours,
            own: msg.clone(),
            cipher_sk,
            mask_sk,
            self_seed,
        };
        Ok((state, msg))
    }

    /// Signed keys: checks that `msg` holds signed keys of distinct cohort
    /// members other than this one (all of U1 but itself), derives the graph
    /// seed from U1 and compares it with the coordinator's, and returns the
    /// seed and this participant's neighbours among the members of U1 that
    /// survive pruning (the same pruning the coordinator does).
    fn signed_view(&self, msg: &PeerKeys) -> Result<([u8; 32], Vec<u32>), Error> {
        let c = &self.common;
        let Some(auth) = &c.auth else {
            return Err(Error::ApiMisuse("signed keys need a verifier"));
        };
        let mut u1: BTreeMap<u32, &AdvertiseKeys> = BTreeMap::new();
        for k in &msg.keys {
            c.check_round(k.round)?;
            if c.params.participants.binary_search(&k.from).is_err() {
                return Err(Violation::UnknownParticipant(k.from).into());
            }
            if k.from == c.me || u1.insert(k.from, k).is_some() {
                return Err(Violation::Duplicate(k.from).into());
            }
            let signed = signed_key_message(
                c.params.round,
                k.from,
                &k.cipher_public_key,
                &k.mask_public_key,
            );
            if !auth.verifier.verify(k.from, &signed, &k.signature) {
                return Err(Violation::BadSignature { peer: k.from }.into());
            }
        }
        u1.insert(c.me, &self.own);
        let seed = derive_graph_seed(&c.params, u1.values().copied());
        if msg.graph_seed != seed {
            return Err(Violation::GraphSeedMismatch.into());
        }
        let graph = Graph::with_seed(&c.params, &seed);
        let t = c.params.threshold;
        let alive = graph.prune(u1.keys().copied().collect(), t);
        let neighbours: Vec<u32> = graph
            .neighbours(c.me)
            .into_iter()
            .filter(|v| alive.contains(v))
            .collect();
        if !alive.contains(&c.me) {
            return Err(Error::BelowThreshold {
                needed: t,
                have: neighbours.len(),
                stage: Stage::AwaitingKeys,
            });
        }
        Ok((seed, neighbours))
    }

    /// Round 1 (ShareKeys): checks the neighbours' keys (neighbours only, no
    /// duplicates, at least t of them, valid signatures, usable keys), splits b
    /// and s^SK t-of-|peers| with Shamir and encrypts each peer's pair of
    /// shares to it. With signed keys the message holds every other
    /// participant's keys, all of which must be validly signed, and the
    /// coordinator's graph seed must be the one derived from them
    /// ([`crate::consistency`]).
    pub fn handle_peer_keys<R: CryptoRng + ?Sized>(
        mut self,
        msg: PeerKeys,
        rng: &mut R,
    ) -> Result<(AwaitingShares, ShareKeys), Error> {
        self.common.check_round(msg.round)?;
        let mut keys: BTreeMap<u32, &AdvertiseKeys> = BTreeMap::new();
        if self.common.params.signed_keys {
            let (seed, neighbours) = self.signed_view(&msg)?;
            self.common.graph_seed = seed;
            for k in &msg.keys {
                if neighbours.binary_search(&k.from).is_ok() {
                    keys.insert(k.from, k);
                }
            }
        } else {
            let c = &self.common;
            if msg.graph_seed != c.params.graph_seed {
                return Err(Violation::GraphSeedMismatch.into());
            }
            for k in &msg.keys {
                c.check_round(k.round)?;
                if self.neighbours.binary_search(&k.from).is_err() {
                    return Err(c.not_expected(k.from));
                }
                if keys.insert(k.from, k).is_some() {
                    return Err(Violation::Duplicate(k.from).into());
                }
            }
        }
        let c = &self.common;
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
                    Secret::new(share_key(&cs, round, v, me)),
                    Secret::new(pairwise_mask_seed(&ms, round, me, v)),
                ),
            );
            send_keys.push(Secret::new(share_key(&cs, round, me, v)));
        }
        let xs: Vec<u32> = keys.keys().copied().collect();
        let b_shares = split(&self.self_seed, t, &xs, rng);
        let s_shares = split(&Secret::new(self.mask_sk.to_bytes()), t, &xs, rng);
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
        drop(send_keys);
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
            let (self_mask, key) = open(key, c.params.round, s.from, c.me, &s.ciphertext)
                .ok_or(Violation::BadCiphertext { from: s.from })?;
            held.insert(s.from, HeldShares { self_mask, key });
            partners.push((s.from, seed.clone()));
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
