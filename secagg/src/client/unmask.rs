//! The participant's last stages: holding the peers' shares after masking,
//! the consistency check of a signed-key round (Bonawitz et al. 2017,
//! Fig. 4 Round 3) and the unmasking (Round 4). Never both shares of one
//! peer are revealed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Common;
use crate::consistency::{
    check_survivor_list, signed_survivors_message, verify_survivor_signatures,
};
use crate::messages::{SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse};
use crate::shamir::Share;
use crate::{Error, Violation};

/// The two shares this participant holds of one peer's secrets (its
/// self-mask seed b and its mask key s^SK); wiped when dropped.
pub struct HeldShares {
    pub(super) self_mask: Share,
    pub(super) key: Share,
}

impl Zeroize for HeldShares {
    fn zeroize(&mut self) {
        self.self_mask.0.zeroize();
        self.key.0.zeroize();
    }
}

impl Drop for HeldShares {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for HeldShares {}

#[cfg(test)]
impl HeldShares {
    pub(crate) fn new(self_mask: Share, key: Share) -> Self {
        HeldShares { self_mask, key }
    }

    pub(crate) fn values(&self) -> (ShareWords, ShareWords) {
        (self.self_mask.0, self.key.0)
    }
}

#[cfg(test)]
type ShareWords = [u64; crate::shamir::CHUNKS];

/// Masked input sent; waiting for the unmasking request — or, with signed
/// keys, first for the survivor list of the consistency check.
pub struct AwaitingUnmask {
    pub(super) common: Common,
    pub(super) held: BTreeMap<u32, HeldShares>,
}

/// Signed keys only: the survivor list U3 signed; waiting for the unmasking
/// request carrying the survivors' signatures \[B17 Fig. 4 Round 4].
pub struct AwaitingSignatures {
    common: Common,
    held: BTreeMap<u32, HeldShares>,
    /// U3 as given to this participant.
    survivors: BTreeSet<u32>,
    /// The bytes this participant signed (every signature must be over them).
    signed: Vec<u8>,
}

debug_state!(AwaitingUnmask);
debug_state!(AwaitingSignatures);
impl ZeroizeOnDrop for AwaitingUnmask {}
impl ZeroizeOnDrop for AwaitingSignatures {}

impl AwaitingUnmask {
    /// Round 4 (Unmasking) of a round *without* signed keys: reveals the
    /// self-mask shares of the announced survivors and the key shares of the
    /// announced dropouts (see [`reveal`]). In a signed-key round the
    /// consistency check must come first: refused with
    /// [`Violation::ConsistencyCheckSkipped`].
    pub fn handle_unmask_request(self, msg: UnmaskRequest) -> Result<UnmaskResponse, Error> {
        self.common.check_round(msg.round)?;
        if self.common.params.signed_keys {
            return Err(Violation::ConsistencyCheckSkipped.into());
        }
        reveal(&self.common, &self.held, &msg)
    }

    /// Round 3 (ConsistencyCheck), signed keys only \[B17 Fig. 4 Round 3]:
    /// checks the survivor list U3 (strictly increasing, cohort members,
    /// naming this participant, at least t long) and signs (round, graph
    /// seed, U3) with the certificate key. In a round without signed keys
    /// the message is out of place ([`Violation::WrongStage`]).
    pub fn handle_survivor_list(
        self,
        msg: SurvivorList,
    ) -> Result<(AwaitingSignatures, SurvivorSignature), Error> {
        let c = &self.common;
        c.check_round(msg.round)?;
        let Some(auth) = &c.auth else {
            return Err(Violation::WrongStage.into());
        };
        check_survivor_list(&c.params, c.me, &msg.survivors)?;
        let signed = signed_survivors_message(c.params.round, &c.graph_seed, &msg.survivors);
        let reply = SurvivorSignature {
            round: c.params.round,
            signature: auth.signer.sign(&signed),
        };
        let next = AwaitingSignatures {
            common: self.common,
            held: self.held,
            survivors: msg.survivors.into_iter().collect(),
            signed,
        };
        Ok((next, reply))
    }
}

impl AwaitingSignatures {
    /// Round 4 (Unmasking) of a signed-key round \[B17 Fig. 4 Round 4]:
    /// reveals nothing unless every forwarded signature is by a distinct
    /// member of U3 and verifies over the survivor list this participant
    /// signed, at least t do, and the request asks for self-mask shares of
    /// members of U3 only and key shares of non-members only; then as
    /// [`reveal`]. A coordinator that told participants different survivor
    /// sets is caught here ([`Violation::SurvivorSetMismatch`],
    /// [`Violation::TooFewSurvivorSignatures`],
    /// [`Violation::SurvivorsContradicted`]).
    pub fn handle_unmask_request(self, msg: UnmaskRequest) -> Result<UnmaskResponse, Error> {
        let c = &self.common;
        c.check_round(msg.round)?;
        let Some(auth) = &c.auth else {
            return Err(Error::ApiMisuse("a signed round needs a verifier"));
        };
        verify_survivor_signatures(
            auth.verifier.as_ref(),
            c.params.threshold,
            &self.survivors,
            &self.signed,
            &msg.signatures,
        )?;
        let contradicted = msg
            .survivors
            .iter()
            .find(|u| !self.survivors.contains(u))
            .or_else(|| msg.dropped.iter().find(|u| self.survivors.contains(u)));
        if let Some(&peer) = contradicted {
            return Err(Violation::SurvivorsContradicted { peer }.into());
        }
        reveal(c, &self.held, &msg)
    }
}

/// Reveals the self-mask shares of the announced survivors and the key
/// shares of the announced dropouts \[B17 Fig. 4 Round 4]. Refuses when one
/// participant is in both lists (never both shares of one peer), when a
/// listed participant never sent shares here, on duplicates, and when fewer
/// than t survivors (counting this participant) are announced.
fn reveal(
    c: &Common,
    held: &BTreeMap<u32, HeldShares>,
    msg: &UnmaskRequest,
) -> Result<UnmaskResponse, Error> {
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
        if !held.contains_key(&u) {
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
    let reveal = |set: &[u32], pick: fn(&HeldShares) -> &Share| -> Vec<(u32, Vec<u8>)> {
        set.iter()
            .filter_map(|u| held.get(u).map(|p| (*u, pick(p).to_bytes().to_vec())))
            .collect()
    };
    Ok(UnmaskResponse {
        round: c.params.round,
        self_mask_shares: reveal(&msg.survivors, |p| &p.self_mask),
        key_shares: reveal(&msg.dropped, |p| &p.key),
    })
}
