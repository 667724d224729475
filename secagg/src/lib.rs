//! Secure aggregation for Tessera: the coordinator learns the **sum** of the
//! participants' vectors and nothing else, also when some participants drop
//! out mid-round.
//!
//! This is the protocol of Bonawitz et al. 2017, "Practical Secure
//! Aggregation for Privacy-Preserving Machine Learning" (CCS; cited below as
//! **\[B17\]**, figures and sections of the full version), with the sparse
//! neighbour graph of Bell et al. 2020, "Secure Single-Server Aggregation with
//! (Poly)Logarithmic Overhead" (CCS; **\[B20\]**): each participant masks with
//! k neighbours instead of all n − 1.
//!
//! # What it does and does not do
//!
//! It is a **sans-IO** library. [`ServerRound`] (coordinator) and the client
//! states [`AwaitingPeerKeys`] → [`AwaitingShares`] → [`AwaitingInput`] →
//! [`AwaitingUnmask`] (→ [`AwaitingSignatures`] with signed keys)
//! (participant; or the [`ClientSession`] enum) take
//! messages in and give messages out. The crate owns no sockets, reads no
//! clock, starts no threads and draws randomness only from the RNG passed in.
//! Deciding *when* a stage ends (deadlines), transporting messages,
//! authenticating senders (mTLS), and converting to the wire types of
//! `tessera.v1` are the caller's job. It does not add differential-privacy
//! noise and does not check what participants put into their vectors.
//!
//! # Message flow
//!
//! ```text
//!  participant u                         coordinator
//!  AwaitingPeerKeys::start ─ AdvertiseKeys (c_u^PK, s_u^PK, sig) ─▶ receive
//!                                                                  close_stage: prune, per u:
//!  handle_peer_keys ◀──────────── PeerKeys (keys of u's neighbours)
//!   b_u, s_u^SK split t-of-k
//!   ─────────────── ShareKeys (AEAD bundle per neighbour) ───────▶ receive
//!                                                                  close_stage: prune, route
//!  handle_routed_shares ◀──────── RoutedShares (bundles to u)
//!  mask_input(x_u)
//!   ─────── MaskedInput y_u = x_u + PRG(b_u) ± Σ PRG(s_uv) ──────▶ receive: sum += y_u
//!                                                                  close_stage: survivors/dropped
//!  (signed keys only: consistency check, [B17 Round 3])
//!  handle_survivor_list ◀──────── SurvivorList (U3: whose masked input arrived, same for all)
//!   ─────── SurvivorSignature (sig over round, graph seed, U3) ───▶ receive
//!                                                                  close_stage: signers U4
//!  handle_unmask_request ◀─────── UnmaskRequest (survivors, dropped among u's neighbours;
//!   (signed: check the signatures)                signed: + every signature over U3)
//!   ─────── UnmaskResponse (b-shares of survivors, s-shares of dropped) ─▶ receive
//!                                                                  close_stage: reconstruct,
//!                                                                  remove masks → Σ x_u
//! ```
//!
//! Steps and sources: key advertisement \[B17 Fig. 4 Round 0]; neighbour
//! graph, a randomly relabelled Harary graph \[B20 §3.1], see [`neighbours_of`];
//! Shamir sharing of b_u and s_u^SK to the neighbours and encryption of the
//! share bundles with a key agreed from c \[B17 Fig. 4 Round 1, §6]; masking
//! with the self mask and the pairwise masks, + for u < v and − for u > v
//! \[B17 §4, Fig. 4 Round 2; B20 §3]; consistency check \[B17 §4.4, Fig. 4
//! Round 3] with signed keys only ([`consistency`]); unmasking, never both
//! shares of one participant \[B17 Fig. 4 Round 4]. Parameters k and t: \[B20 §3, §5] as
//! adapted in [`params`].
//!
//! # Cryptography
//!
//! X25519 key agreement (x25519-dalek; low-order keys refused), HKDF-SHA256
//! binding round and participant indices ([`kdf`]), ChaCha20-Poly1305 for
//! share bundles with associated data (round, sender, recipient) ([`seal`]),
//! Shamir sharing over GF(2^61 − 1) ([`shamir`]), and AES-128-CTR as the mask
//! PRG ([`prg`]). The PRG was chosen by measurement on the deployment
//! machine (release build, one core, shared with other work; the
//! `prg_speed` example re-measures): AES-128-CTR (`Ctr32BE`, hardware AES)
//! 7.1–8.2 GB/s, ChaCha8 2.2–2.7 GB/s, ChaCha12 1.6–1.7 GB/s, ChaCha20
//! ≈ 1.0 GB/s (rand_chacha). Mask expansion dominates the protocol's cost, so
//! AES-CTR it is. Expansion is fused with the wrapping add, block by block,
//! so the vector stays in cache and is read and written once whatever the
//! number of masks (4 keystream bytes per element when modulus_bits ≤ 32,
//! else 8); [`AwaitingInput::mask_input_owned`] masks in place. Measured
//! with `tessera-sim bench secagg` (n = 100, d = 10^6, 32-bit modulus): the
//! whole round costs about 2× the time of only expanding its masks.
//!
//! # Threat model
//!
//! - **Coordinator honest-but-curious** (default): it follows the protocol
//!   but tries to learn individual inputs. It learns only the sum of the
//!   contributors' inputs, provided fewer than the bound of corrupt
//!   participants collude with it ([`params::SecurityTargets`]).
//! - **Opt-in active security against key substitution**
//!   (`RoundParams::signed_keys`): participants sign their advertised keys
//!   ([`KeySigner`], [`signed_key_message`]) and verify their neighbours'
//!   signatures ([`KeyVerifier`]), so a coordinator cannot slip in keys of its
//!   own. The same setting turns on the defences of [`consistency`]: the
//!   graph seed is derived from the advertised keys, not chosen by the
//!   coordinator, and the consistency check of \[B17\] makes every survivor
//!   verify t signatures over the survivor set it was told before revealing
//!   a share, so a coordinator that tells different participants different
//!   stories about who dropped is caught. Independently, the threshold
//!   satisfies 2t > k + (corrupt neighbours), so even then it could not
//!   gather t shares of both secrets of one participant. Rounds must not be
//!   reused: signatures bind the round number (and, for the survivor set,
//!   the round's fresh keys), and participants remember the rounds they
//!   took part in (outside this crate).
//! - **Secrets in memory**: the client's secret keys, seeds and held shares
//!   are wiped when dropped ([`zeroize::ZeroizeOnDrop`]).
//! - **Participants** may crash, send malformed, replayed or misaddressed
//!   messages: each is a typed [`Error`] ([`Violation`]), never a panic; the
//!   rejected message changes nothing and the round goes on with the others.
//!   Well-formed but *wrong* revealed shares are detected when a secret has
//!   more than t shares or is a key (checked against its public key) and
//!   then abort the round; with exactly t shares of a self-mask seed they
//!   would go unnoticed and corrupt the sum.
//! - Too few participants at any stage abort the round with
//!   [`Error::BelowThreshold`] and nothing is output.
//!
//! # Fixed point
//!
//! [`FixedPoint`] turns clipped float vectors into integers modulo
//! 2^modulus_bits with stochastic rounding, choosing the scale so that a sum
//! within the stated bound cannot wrap; decoding can check the range. See
//! [`encoding`] for how the scale and modulus are chosen.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use tessera_secagg::{RoundParams, testing::{run_round, DropoutPlan}};
//! let params = RoundParams::recommended(7, (1..=10).collect(), 4, 32, 0.1, [9; 32]).unwrap();
//! let inputs: Vec<Vec<u64>> = (1..=10u64).map(|i| vec![i, 2 * i, 0, 1]).collect();
//! let mut plan = DropoutPlan::default();
//! plan.after_shares.insert(3); // sends its shares, then disappears
//! let out = run_round(&params, &inputs, &plan, 42).unwrap();
//! assert_eq!(out.sum, vec![55 - 3, 110 - 6, 0, 9]);
//! # }
//! ```

#![forbid(unsafe_code)]
// No panic from outside: input from the network or a file must not reach
// an unwrap, an expect or an unchecked index (tests may use them).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod client;
pub mod consistency;
pub mod encoding;
mod error;
mod graph;
pub mod kdf;
pub mod messages;
pub mod params;
mod partial;
pub mod prg;
pub mod seal;
pub mod server;
pub mod shamir;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cheating;
#[cfg(test)]
mod tests_client_refusals;
#[cfg(test)]
mod tests_liar;
#[cfg(test)]
mod tests_net;
#[cfg(test)]
mod tests_server_refusals;

pub use client::{
    AwaitingInput, AwaitingPeerKeys, AwaitingShares, AwaitingSignatures, AwaitingUnmask,
    ClientConfig, ClientSession, HeldShares, KeySigner, KeyVerifier, signed_key_message,
};
pub use consistency::{derive_graph_seed, signed_survivors_message};
pub use encoding::FixedPoint;
pub use error::{Error, Violation};
pub use messages::{
    AdvertiseKeys, ClientMessage, EncryptedShare, MaskedInput, PeerKeys, RoutedShares,
    ServerMessage, ShareKeys, SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
pub use params::{ParticipantIndex, RoundParams, SecurityTargets};
pub use server::{ServerRound, Stage, StageOutcome};

/// The neighbours of participant `i` in the round's graph (sorted; empty if
/// `i` is not in the cohort). Deterministic from the public `graph_seed` and
/// the round number, so every party computes the same graph.
pub fn neighbours_of(params: &RoundParams, i: u32) -> Vec<u32> {
    graph::Graph::new(params).neighbours(i)
}
