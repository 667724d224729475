//! What keeps an actively malicious coordinator honest in a signed-key
//! round (`RoundParams::signed_keys`): the neighbour-graph seed derived from
//! the advertised keys, and the consistency check of Bonawitz et al. 2017
//! (\[B17\], Fig. 4 Round 3 "ConsistencyCheck" and the checks of Round 4).
//!
//! # Graph seed
//!
//! Without signed keys the coordinator draws the graph seed. With them,
//! the seed is [`derive_graph_seed`]: SHA-256 over the round parameters and
//! the advertised public keys of every participant in U1 (those whose keys
//! the coordinator forwards), in index order. Every participant receives all
//! of U1's keys, verifies each signature, computes the seed itself and
//! refuses the round when the coordinator's seed differs
//! ([`Violation::GraphSeedMismatch`]). Honest participants draw their keys
//! with a CSPRNG after the round is announced, so the coordinator cannot
//! pick the graph: the SecAgg+ bounds of [`crate::params`], which assume a
//! uniformly relabelled Harary graph (Bell et al. 2020, §3.1), hold.
//!
//! What the coordinator still influences: (1) the cohort (who is announced;
//! bounded by the cohort-selection policy and visible to every member); (2)
//! which advertised keys it forwards, i.e. U1 — leaving out a participant
//! changes the seed, so with m participants it could leave out it has at
//! most 2^m candidate graphs; (3) the keys of participants colluding with
//! it, which it may choose after seeing the honest keys and so try many
//! seeds (grinding). Each candidate is a fresh uniformly random graph, so
//! with G candidates the failure bounds of [`crate::params`] (computed per
//! graph) grow at most G-fold by the union bound. The security target σ
//! must leave room for that (e.g. σ = 40 with 2^20 tries still leaves
//! 2^−20). A commit-then-reveal of the keys would remove (3); it is not
//! implemented.
//!
//! # Consistency check \[B17 §4.4, Fig. 4 Round 3]
//!
//! After the masked inputs, the coordinator sends every participant in U3
//! (those whose masked input arrived) the same list U3; each signs
//! [`signed_survivors_message`] — the round, the derived graph seed (so a
//! signature is bound to this round's fresh keys) and U3 — with its
//! certificate key. The coordinator forwards the collected signatures with
//! the unmasking request, and a participant reveals nothing unless
//! ([`verify_survivor_signatures`]): every forwarded signature is by a
//! distinct member of U3 and verifies over the list *it* was given, at
//! least t of them do, and the request treats as survivors exactly members
//! of U3 and as dropped only non-members. A coordinator that tells some
//! participants that u dropped (to collect u's mask-key shares) and others
//! that u survived (to collect its self-mask shares) cannot show either
//! group signatures over the other's list, and is caught before any share
//! leaves. The participant never reveals both shares of one peer in any
//! case ([`Violation::BothSharesRequested`]).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::client::KeyVerifier;
use crate::messages::AdvertiseKeys;
use crate::params::RoundParams;
use crate::{Error, Violation};

/// The graph seed of a signed-key round: SHA-256 of
/// `"tessera-secagg-v1 graph\0" ‖ round ‖ n ‖ cohort ‖ k ‖ t ‖ dim ‖
/// modulus_bits ‖ |U1| ‖ (index ‖ c^PK ‖ s^PK) for U1 by index` (integers
/// big-endian; `graph_seed` of `params` is not used). Signatures are left
/// out: some schemes (ECDSA) are randomised, the keys are what is signed.
pub fn derive_graph_seed<'a>(
    params: &RoundParams,
    keys: impl IntoIterator<Item = &'a AdvertiseKeys>,
) -> [u8; 32] {
    let mut sorted: Vec<&AdvertiseKeys> = keys.into_iter().collect();
    sorted.sort_by_key(|k| k.from);
    let mut h = Sha256::new();
    h.update(b"tessera-secagg-v1 graph\0");
    h.update(params.round.to_be_bytes());
    h.update((params.participants.len() as u64).to_be_bytes());
    for u in &params.participants {
        h.update(u.to_be_bytes());
    }
    h.update((params.neighbours as u64).to_be_bytes());
    h.update((params.threshold as u64).to_be_bytes());
    h.update((params.dim as u64).to_be_bytes());
    h.update(params.modulus_bits.to_be_bytes());
    h.update((sorted.len() as u64).to_be_bytes());
    for k in sorted {
        h.update(k.from.to_be_bytes());
        h.update(k.cipher_public_key);
        h.update(k.mask_public_key);
    }
    h.finalize().into()
}

/// The exact bytes a participant signs in the consistency check:
/// `"tessera-secagg-v1 survivors\0" ‖ round (BE) ‖ graph seed ‖ |U3| (BE
/// u32) ‖ each member of U3 (BE u32, increasing)`.
pub fn signed_survivors_message(round: u64, graph_seed: &[u8; 32], survivors: &[u32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(28 + 8 + 32 + 4 + 4 * survivors.len());
    m.extend_from_slice(b"tessera-secagg-v1 survivors\0");
    m.extend_from_slice(&round.to_be_bytes());
    m.extend_from_slice(graph_seed);
    m.extend_from_slice(&(survivors.len() as u32).to_be_bytes());
    for u in survivors {
        m.extend_from_slice(&u.to_be_bytes());
    }
    m
}

/// Checks a survivor list before signing it: strictly increasing, members
/// of the cohort, naming `me`, at least `threshold` long.
pub(crate) fn check_survivor_list(
    params: &RoundParams,
    me: u32,
    survivors: &[u32],
) -> Result<(), Error> {
    let mut prev = None;
    for &u in survivors {
        if prev.is_some_and(|p| p >= u) {
            return Err(Violation::NotCanonical(u).into());
        }
        prev = Some(u);
        if params.participants.binary_search(&u).is_err() {
            return Err(Violation::UnknownParticipant(u).into());
        }
    }
    if survivors.binary_search(&me).is_err() {
        return Err(Violation::LeftOutOfSurvivors(me).into());
    }
    if survivors.len() < params.threshold {
        return Err(Violation::TooFewSurvivors {
            needed: params.threshold,
            have: survivors.len(),
        }
        .into());
    }
    Ok(())
}

/// \[B17 Fig. 4 Round 4]: "assert U5 ⊆ U4, |U5| ≥ t, and every signature
/// verifies over U3". Every forwarded signature must be by a distinct
/// member of `survivors` and verify over `signed` (the message this
/// participant signed); at least `threshold` must be there. Any bad one is
/// refused rather than skipped: an honest coordinator forwards only what
/// the participants sent, and a bad signature from a participant is the
/// coordinator's to drop ([`crate::ServerRound::set_verifier`]).
pub(crate) fn verify_survivor_signatures(
    verifier: &dyn KeyVerifier,
    threshold: usize,
    survivors: &BTreeSet<u32>,
    signed: &[u8],
    signatures: &[(u32, Vec<u8>)],
) -> Result<(), Error> {
    let mut signers = BTreeSet::new();
    for (signer, signature) in signatures {
        if !survivors.contains(signer) {
            return Err(Violation::SignerNotSurvivor(*signer).into());
        }
        if !signers.insert(*signer) {
            return Err(Violation::Duplicate(*signer).into());
        }
        if !verifier.verify(*signer, signed, signature) {
            return Err(Violation::SurvivorSetMismatch { signer: *signer }.into());
        }
    }
    if signers.len() < threshold {
        return Err(Violation::TooFewSurvivorSignatures {
            needed: threshold,
            have: signers.len(),
        }
        .into());
    }
    Ok(())
}
