//! The coordinator's unmasking: asking the survivors (with signed keys,
//! those that signed the survivor list) for their neighbours' shares, then
//! reconstructing every contributor's self-mask seed and every dropped
//! participant's mask key and removing the masks from the sum in one fused
//! pass (Bonawitz et al. 2017, Fig. 4 Round 4).

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};

use super::{ServerRound, Stage, StageOutcome};
use crate::kdf::{agree, pairwise_mask_seed};
use crate::messages::{ServerMessage, UnmaskRequest};
use crate::prg::{MaskJob, apply_masks};
use crate::shamir::{Share, reconstruct_excluding_liar};
use crate::{Error, Violation};

impl ServerRound {
    /// Asks each of `askable` (contributors; with signed keys, those that
    /// signed U3) for the shares of its neighbours, forwarding `signatures`.
    pub(super) fn request_unmasking(
        &mut self,
        askable: &BTreeSet<u32>,
        signatures: Vec<(u32, Vec<u8>)>,
    ) -> Result<StageOutcome, Error> {
        let t = self.params.threshold;
        let contributors = self.contributors.clone();
        let mut requests = BTreeMap::new();
        for &v in askable {
            let from = self.routed_from.get(&v).map(Vec::as_slice).unwrap_or(&[]);
            let survivors: Vec<u32> = from
                .iter()
                .copied()
                .filter(|u| contributors.contains(u))
                .collect();
            let dropped: Vec<u32> = from
                .iter()
                .copied()
                .filter(|u| self.dropped.contains(u))
                .collect();
            // A participant refuses when fewer than t survivors are announced
            // to it; do not ask it.
            if survivors.len() + 1 >= t {
                requests.insert(
                    v,
                    UnmaskRequest {
                        round: self.params.round,
                        survivors,
                        dropped,
                        signatures: signatures.clone(),
                    },
                );
            }
        }
        // Every secret that must be recovered needs t askable holders;
        // otherwise abort now, before anyone reveals anything.
        let mut holders: BTreeMap<u32, usize> = BTreeMap::new();
        for r in requests.values() {
            for &u in r.survivors.iter().chain(r.dropped.iter()) {
                *holders.entry(u).or_default() += 1;
            }
        }
        let needed = contributors
            .iter()
            .chain(self.dropped.iter().filter(|u| holders.contains_key(u)));
        if let Some(have) = needed
            .map(|u| holders.get(u).copied().unwrap_or(0))
            .find(|&h| h < t)
        {
            return Err(self.below(have));
        }
        let out = requests
            .iter()
            .map(|(&v, r)| (v, ServerMessage::UnmaskRequest(r.clone())))
            .collect();
        let asked = requests.keys().copied().collect();
        self.requests = requests;
        self.enter(Stage::AwaitingUnmasking, asked);
        Ok(StageOutcome::Send(out))
    }

    pub(super) fn close_unmask(&mut self) -> Result<StageOutcome, Error> {
        let t = self.params.threshold;
        let round = self.params.round;
        let mut jobs = Vec::new();
        for &u in &self.contributors {
            let shares = self.self_shares.get(&u).map(Vec::as_slice).unwrap_or(&[]);
            if shares.len() < t {
                return Err(self.below(shares.len()));
            }
            let seed = recover(&mut self.misbehaving, shares, t, u)?;
            jobs.push(MaskJob::new(&seed, true));
        }
        for &u in &self.dropped {
            // Contributors that masked with u.
            let partners: Vec<u32> = self
                .contributors
                .iter()
                .copied()
                .filter(|v| self.routed_from.get(v).is_some_and(|f| f.contains(&u)))
                .collect();
            if partners.is_empty() {
                continue;
            }
            let shares = self.key_shares.get(&u).map(Vec::as_slice).unwrap_or(&[]);
            if shares.len() < t {
                return Err(self.below(shares.len()));
            }
            let bytes = recover(&mut self.misbehaving, shares, t, u)?;
            let sk = StaticSecret::from(bytes);
            let advertised = self.keys.get(&u).map(|k| k.mask_public_key);
            if advertised != Some(PublicKey::from(&sk).to_bytes()) {
                return Err(Violation::BadShare { owner: u }.into());
            }
            for v in partners {
                let pk = self
                    .keys
                    .get(&v)
                    .map(|k| k.mask_public_key)
                    .unwrap_or([0u8; 32]);
                let shared = agree(&sk, &pk).ok_or(Violation::BadPublicKey { peer: v })?;
                // v added +PRG(s_uv) if v < u, −PRG(s_uv) if v > u: undo it.
                jobs.push(MaskJob::new(
                    &pairwise_mask_seed(&shared, round, u, v),
                    v < u,
                ));
            }
        }
        let mut sum = std::mem::take(&mut self.sum);
        apply_masks(&mut sum, &mut jobs, self.params.modulus_bits);
        self.stage = Stage::Finished;
        self.pending.clear();
        self.selected.clear();
        self.self_shares.clear();
        self.key_shares.clear();
        Ok(StageOutcome::Finished {
            sum,
            contributors: self.contributors.iter().copied().collect(),
        })
    }
}

/// Reconstructs `owner`'s secret, leaving out (and adding to `misbehaving`)
/// a single holder whose share disagrees with all the others.
fn recover(
    misbehaving: &mut BTreeSet<u32>,
    shares: &[(u32, Share)],
    t: usize,
    owner: u32,
) -> Result<[u8; 32], Error> {
    let r = reconstruct_excluding_liar(shares, t).map_err(|_| Violation::BadShare { owner })?;
    if let Some(liar) = r.liar {
        misbehaving.insert(liar);
    }
    Ok(r.secret)
}

/// Parses revealed shares; the owners must be exactly `asked`, once each.
pub(super) fn parse_revealed(
    got: &[(u32, Vec<u8>)],
    asked: &[u32],
) -> Result<Vec<(u32, Share)>, Error> {
    if got.len() != asked.len() {
        return Err(Violation::WrongLength {
            expected: asked.len(),
            got: got.len(),
        }
        .into());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(got.len());
    for (owner, bytes) in got {
        if !asked.contains(owner) {
            return Err(Violation::NotSelected(*owner).into());
        }
        if !seen.insert(*owner) {
            return Err(Violation::Duplicate(*owner).into());
        }
        let share = Share::from_bytes(bytes).map_err(|_| Violation::BadShare { owner: *owner })?;
        out.push((*owner, share));
    }
    Ok(out)
}
