//! The coordinator side: [`ServerRound`] records messages with
//! [`ServerRound::receive`] and, when the driver decides a stage is over
//! (everyone answered or a deadline passed — a clock decision made outside),
//! [`ServerRound::close_stage`] computes who is still in and emits the next
//! stage's messages, or the sum.
//!
//! Stages follow Bonawitz et al. 2017, Figure 4 (server side), with neighbour
//! sets from Bell et al. 2020, §3:
//! - keys: participants left with fewer than t neighbours that advertised keys
//!   are removed (repeatedly), each remaining one gets its neighbours' keys
//!   (with signed keys: every other advertised key, and the graph is drawn
//!   only now, from the seed derived from them);
//! - shares: the same pruning over the participants that sent a complete set
//!   of share bundles; bundles are routed among the remaining ones;
//! - masked inputs: each is folded into one running sum as it arrives, whole
//!   or in parts ([`ServerRound::receive_masked_part`]; memory O(dim) plus
//!   the parts of inputs still arriving, never one vector per participant);
//!   an input left unfinished is taken out again; those who sent shares but
//!   no (complete) input are the dropped. Each survivor is asked, about its own neighbours
//!   only, for self-mask shares of survivors and key shares of the dropped;
//!   if some secret could not be recovered from the askable holders the round
//!   aborts before anything is revealed;
//! - consistency check (signed keys only, \[B17 Fig. 4 Round 3]): before
//!   the unmasking requests, every survivor gets the same list U3 of
//!   contributors and signs it; only those that signed are asked to unmask,
//!   and each request carries all the signatures (see [`crate::consistency`]);
//! - unmasking: b_u is reconstructed for every contributor and PRG(b_u)
//!   subtracted; s_u^SK is reconstructed for every dropped u (checked against
//!   its advertised public key) and the masks it shared with contributors are
//!   removed — all in one fused pass over the sum (in `unmask`).

use std::collections::{BTreeMap, BTreeSet};

use crate::client::KeyVerifier;
use crate::consistency::derive_graph_seed;
use crate::graph::{Graph, prune};
use crate::messages::{
    AdvertiseKeys, ClientMessage, EncryptedShare, PeerKeys, RoutedShares, ServerMessage,
    SurvivorList, UnmaskRequest,
};
use crate::params::RoundParams;
use crate::partial::{Partials, Progress};
use crate::prg::modulus_mask;
use crate::seal::CIPHERTEXT_LEN;
use crate::shamir::Share;
use crate::{Error, Violation};

mod unmask;

use unmask::parse_revealed;

/// Largest accepted key signature, in bytes.
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// Where a round stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Collecting advertised keys.
    AwaitingKeys,
    /// Collecting encrypted shares.
    AwaitingShares,
    /// Collecting masked inputs.
    AwaitingMaskedInputs,
    /// Signed keys only: collecting the survivors' signatures over U3.
    AwaitingSurvivorSignatures,
    /// Collecting revealed shares.
    AwaitingUnmasking,
    /// The sum was output.
    Finished,
    /// The round was aborted; nothing was output.
    Aborted,
}

/// What closing a stage produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageOutcome {
    /// Messages for the next stage, one per recipient.
    Send(Vec<(u32, ServerMessage)>),
    /// The round is over.
    Finished {
        /// Σ x_u over the contributors, modulo 2^modulus_bits.
        sum: Vec<u64>,
        /// Participants whose input is in the sum (sorted).
        contributors: Vec<u32>,
    },
}

/// The coordinator's state machine for one round.
///
/// Contract: call [`ServerRound::receive`] for every message from an
/// authenticated participant, [`ServerRound::pending`] to learn whether
/// anyone is still awaited, and [`ServerRound::close_stage`] once when the
/// stage should end. A rejected message leaves the state unchanged.
#[derive(Debug)]
pub struct ServerRound {
    params: RoundParams,
    graph: Graph,
    /// The graph's seed (announced, or derived from the keys when signed).
    graph_seed: [u8; 32],
    /// Checks survivor-list signatures on arrival, if set.
    verifier: Option<SignatureCheck>,
    /// U3 as sent in the consistency check (signed keys).
    survivor_list: Vec<u32>,
    /// signer -> signature over U3 (signed keys).
    survivor_signatures: BTreeMap<u32, Vec<u8>>,
    stage: Stage,
    /// Who may send in the current stage.
    selected: BTreeSet<u32>,
    /// Who of `selected` has not sent yet.
    pending: BTreeSet<u32>,
    keys: BTreeMap<u32, AdvertiseKeys>,
    /// u -> neighbours whose keys u received.
    peer_lists: BTreeMap<u32, Vec<u32>>,
    shares: BTreeMap<u32, Vec<EncryptedShare>>,
    /// v -> participants whose shares were routed to v (v's mask partners).
    routed_from: BTreeMap<u32, Vec<u32>>,
    sum: Vec<u64>,
    /// Masked inputs arriving in parts, already in `sum`.
    partials: Partials,
    requests: BTreeMap<u32, UnmaskRequest>,
    /// owner -> (holder, share) of self-mask seeds.
    self_shares: BTreeMap<u32, Vec<(u32, Share)>>,
    /// owner -> (holder, share) of mask keys.
    key_shares: BTreeMap<u32, Vec<(u32, Share)>>,
    contributors: BTreeSet<u32>,
    dropped: BTreeSet<u32>,
    /// Holders whose revealed share disagreed with every other holder's
    /// (left out of the reconstruction).
    misbehaving: BTreeSet<u32>,
}

/// A verifier of survivor-list signatures (kept out of `Debug`).
struct SignatureCheck(Box<dyn KeyVerifier>);

impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureCheck")
    }
}

impl ServerRound {
    /// A new round awaiting keys from every participant.
    pub fn new(params: RoundParams) -> Result<Self, Error> {
        params.validate()?;
        let all: BTreeSet<u32> = params.participants.iter().copied().collect();
        let partials = Partials::new(params.dim, modulus_mask(params.modulus_bits));
        Ok(ServerRound {
            graph: Graph::new(&params),
            graph_seed: params.graph_seed,
            verifier: None,
            survivor_list: Vec::new(),
            survivor_signatures: BTreeMap::new(),
            params,
            stage: Stage::AwaitingKeys,
            selected: all.clone(),
            pending: all,
            keys: BTreeMap::new(),
            peer_lists: BTreeMap::new(),
            shares: BTreeMap::new(),
            routed_from: BTreeMap::new(),
            sum: Vec::new(),
            partials,
            requests: BTreeMap::new(),
            self_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            contributors: BTreeSet::new(),
            dropped: BTreeSet::new(),
            misbehaving: BTreeSet::new(),
        })
    }

    /// Signed keys: checks each survivor-list signature as it arrives and
    /// refuses a bad one ([`Violation::BadSignature`]), so that one
    /// participant's garbage cannot make the others refuse the forwarded
    /// list. Without it signatures are forwarded as received.
    pub fn set_verifier(&mut self, verifier: Box<dyn KeyVerifier>) {
        self.verifier = Some(SignatureCheck(verifier));
    }

    /// The neighbour graph's seed: the announced one, or with signed keys
    /// the one derived from the advertised keys (all zero until the keys
    /// stage closed).
    pub fn graph_seed(&self) -> [u8; 32] {
        self.graph_seed
    }

    /// The round's parameters.
    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Participants identified as having revealed a share that disagrees
    /// with every other holder's share of the same secret. Their share was
    /// left out and the round went on; the caller should not let them into
    /// later rounds. Identification needs `t + 2` revealed shares of the
    /// secret and a single wrong one (see
    /// [`reconstruct_excluding_liar`](crate::shamir::reconstruct_excluding_liar)).
    pub fn misbehaving(&self) -> Vec<u32> {
        self.misbehaving.iter().copied().collect()
    }

    /// Who the current stage still waits for (empty: the stage can close now).
    pub fn pending(&self) -> Vec<u32> {
        self.pending.iter().copied().collect()
    }

    /// Records a message from the authenticated participant `from`. Masked
    /// inputs are added to the running sum immediately. Any violation is a
    /// typed error and leaves the state unchanged.
    pub fn receive(&mut self, from: u32, msg: ClientMessage) -> Result<(), Error> {
        let stage = match &msg {
            ClientMessage::AdvertiseKeys(_) => Stage::AwaitingKeys,
            ClientMessage::ShareKeys(_) => Stage::AwaitingShares,
            ClientMessage::MaskedInput(_) => Stage::AwaitingMaskedInputs,
            ClientMessage::SurvivorSignature(_) => Stage::AwaitingSurvivorSignatures,
            ClientMessage::UnmaskResponse(_) => Stage::AwaitingUnmasking,
        };
        self.check_sender(from, stage, msg.round())?;
        match msg {
            ClientMessage::AdvertiseKeys(m) => self.receive_keys(from, m)?,
            ClientMessage::ShareKeys(m) => {
                self.check_shares(from, &m.shares)?;
                self.shares.insert(from, m.shares);
            }
            ClientMessage::MaskedInput(m) => {
                if m.values.len() != self.params.dim {
                    return Err(Violation::WrongLength {
                        expected: self.params.dim,
                        got: m.values.len(),
                    }
                    .into());
                }
                // A whole input is its only part (refused after other parts).
                self.partials.fold(&mut self.sum, from, 0, &m.values)?;
                self.contributors.insert(from);
            }
            ClientMessage::SurvivorSignature(m) => {
                if m.signature.is_empty() || m.signature.len() > MAX_SIGNATURE_LEN {
                    return Err(Violation::WrongLength {
                        expected: MAX_SIGNATURE_LEN,
                        got: m.signature.len(),
                    }
                    .into());
                }
                if let Some(v) = &self.verifier {
                    let signed = crate::signed_survivors_message(
                        self.params.round,
                        &self.graph_seed,
                        &self.survivor_list,
                    );
                    if !v.0.verify(from, &signed, &m.signature) {
                        return Err(Violation::BadSignature { peer: from }.into());
                    }
                }
                self.survivor_signatures.insert(from, m.signature);
            }
            ClientMessage::UnmaskResponse(m) => {
                let Some(req) = self.requests.get(&from) else {
                    return Err(Violation::NotSelected(from).into());
                };
                let b = parse_revealed(&m.self_mask_shares, &req.survivors)?;
                let s = parse_revealed(&m.key_shares, &req.dropped)?;
                for (owner, share) in b {
                    self.self_shares
                        .entry(owner)
                        .or_default()
                        .push((from, share));
                }
                for (owner, share) in s {
                    self.key_shares
                        .entry(owner)
                        .or_default()
                        .push((from, share));
                }
            }
        }
        self.pending.remove(&from);
        Ok(())
    }

    /// Checks that `from` may send a message of `stage` naming `round` now.
    fn check_sender(&self, from: u32, stage: Stage, round: u64) -> Result<(), Error> {
        if matches!(self.stage, Stage::Finished | Stage::Aborted) {
            return Err(Violation::WrongStage.into());
        }
        if self.params.participants.binary_search(&from).is_err() {
            return Err(Violation::UnknownParticipant(from).into());
        }
        if stage != self.stage {
            return Err(Violation::WrongStage.into());
        }
        if round != self.params.round {
            return Err(Violation::WrongRound {
                expected: self.params.round,
                got: round,
            }
            .into());
        }
        if !self.selected.contains(&from) {
            return Err(Violation::NotSelected(from).into());
        }
        if !self.pending.contains(&from) {
            return Err(Violation::Duplicate(from).into());
        }
        Ok(())
    }

    /// Records part of `from`'s masked input for `round`: `values` are its
    /// elements from `offset` on, and are added to the running sum at once.
    /// Parts must come in order without gaps or overlaps; returns `true`
    /// once the input is complete (`from` is then a contributor). The parts
    /// of an input that never completes are taken out again — by
    /// [`ServerRound::withdraw_masked`] when its sender leaves, and by
    /// [`ServerRound::close_stage`] for any still open — so memory is the
    /// sum plus the parts of the inputs still arriving. A refused part
    /// leaves the state unchanged (earlier parts stay until withdrawn).
    pub fn receive_masked_part(
        &mut self,
        from: u32,
        round: u64,
        offset: usize,
        values: &[u64],
    ) -> Result<bool, Error> {
        self.check_sender(from, Stage::AwaitingMaskedInputs, round)?;
        match self.partials.fold(&mut self.sum, from, offset, values)? {
            Progress::Partial => Ok(false),
            Progress::Complete => {
                self.contributors.insert(from);
                self.pending.remove(&from);
                Ok(true)
            }
        }
    }

    /// Takes the parts `from` sent of an input it did not finish back out
    /// of the sum (it left, or sent a part that was refused): it then
    /// counts as having sent no input. Returns whether it had such parts.
    pub fn withdraw_masked(&mut self, from: u32) -> bool {
        self.partials.withdraw(&mut self.sum, from)
    }

    /// Elements held for masked inputs still arriving (memory, in elements).
    pub fn held_partial_elements(&self) -> usize {
        self.partials.held()
    }

    fn receive_keys(&mut self, from: u32, m: AdvertiseKeys) -> Result<(), Error> {
        if m.from != from {
            return Err(Violation::WrongSender {
                claimed: m.from,
                actual: from,
            }
            .into());
        }
        if m.signature.len() > MAX_SIGNATURE_LEN {
            return Err(Violation::WrongLength {
                expected: MAX_SIGNATURE_LEN,
                got: m.signature.len(),
            }
            .into());
        }
        if self.params.signed_keys && m.signature.is_empty() {
            return Err(Violation::BadSignature { peer: from }.into());
        }
        self.keys.insert(from, m);
        Ok(())
    }

    fn check_shares(&self, from: u32, shares: &[EncryptedShare]) -> Result<(), Error> {
        let peers = self.peer_lists.get(&from).map(Vec::as_slice).unwrap_or(&[]);
        if shares.len() != peers.len() {
            return Err(Violation::WrongLength {
                expected: peers.len(),
                got: shares.len(),
            }
            .into());
        }
        let mut seen = BTreeSet::new();
        for s in shares {
            if s.from != from {
                return Err(Violation::WrongSender {
                    claimed: s.from,
                    actual: from,
                }
                .into());
            }
            if peers.binary_search(&s.to).is_err() {
                return Err(if self.params.participants.binary_search(&s.to).is_ok() {
                    Violation::NotSelected(s.to)
                } else {
                    Violation::UnknownParticipant(s.to)
                }
                .into());
            }
            if !seen.insert(s.to) {
                return Err(Violation::Duplicate(s.to).into());
            }
            if s.ciphertext.len() != CIPHERTEXT_LEN {
                return Err(Violation::WrongLength {
                    expected: CIPHERTEXT_LEN,
                    got: s.ciphertext.len(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Ends the current stage: computes who is still in and returns the
    /// messages of the next stage, or the sum after unmasking. Fewer than t
    /// participants (or a secret that cannot be recovered) aborts the round
    /// with [`Error::BelowThreshold`]; nothing is output. A single revealed
    /// share that disagrees with the other holders' is left out and its
    /// holder named in [`ServerRound::misbehaving`]; shares that stay
    /// inconsistent abort the round with [`Violation::BadShare`].
    pub fn close_stage(&mut self) -> Result<StageOutcome, Error> {
        let result = match self.stage {
            Stage::Finished | Stage::Aborted => return Err(Error::ApiMisuse("the round is over")),
            Stage::AwaitingKeys => self.close_keys(),
            Stage::AwaitingShares => self.close_shares(),
            Stage::AwaitingMaskedInputs => self.close_masked(),
            Stage::AwaitingSurvivorSignatures => self.close_signatures(),
            Stage::AwaitingUnmasking => self.close_unmask(),
        };
        if result.is_err() {
            self.abort();
        }
        result
    }

    fn abort(&mut self) {
        self.stage = Stage::Aborted;
        self.sum = Vec::new();
        self.partials.clear();
        self.self_shares.clear();
        self.key_shares.clear();
        self.survivor_signatures.clear();
        self.selected.clear();
        self.pending.clear();
    }

    fn below(&self, have: usize) -> Error {
        Error::BelowThreshold {
            needed: self.params.threshold,
            have,
            stage: self.stage,
        }
    }

    fn enter(&mut self, stage: Stage, selected: BTreeSet<u32>) {
        self.stage = stage;
        self.pending = selected.clone();
        self.selected = selected;
    }

    fn close_keys(&mut self) -> Result<StageOutcome, Error> {
        let t = self.params.threshold;
        let signed = self.params.signed_keys;
        if signed {
            // The graph follows from every advertised key (U1): drawn now.
            self.graph_seed = derive_graph_seed(&self.params, self.keys.values());
            self.graph = Graph::with_seed(&self.params, &self.graph_seed);
        }
        let advertised: BTreeSet<u32> = self.keys.keys().copied().collect();
        let graph = &self.graph;
        let alive = prune(advertised, t, |u| graph.neighbours(u));
        if alive.len() < t {
            return Err(self.below(alive.len()));
        }
        let mut out = Vec::with_capacity(alive.len());
        for &u in &alive {
            let peers: Vec<u32> = self
                .graph
                .neighbours(u)
                .into_iter()
                .filter(|v| alive.contains(v))
                .collect();
            let keys = if signed {
                // All of U1 but u, for u to derive the seed itself.
                self.keys
                    .values()
                    .filter(|k| k.from != u)
                    .cloned()
                    .collect()
            } else {
                peers
                    .iter()
                    .filter_map(|v| self.keys.get(v).cloned())
                    .collect()
            };
            self.peer_lists.insert(u, peers);
            out.push((
                u,
                ServerMessage::PeerKeys(PeerKeys {
                    round: self.params.round,
                    keys,
                    graph_seed: self.graph_seed,
                }),
            ));
        }
        self.enter(Stage::AwaitingShares, alive);
        Ok(StageOutcome::Send(out))
    }

    fn close_shares(&mut self) -> Result<StageOutcome, Error> {
        let t = self.params.threshold;
        let sent: BTreeSet<u32> = self.shares.keys().copied().collect();
        let lists = &self.peer_lists;
        let alive = prune(sent, t, |u| lists.get(&u).cloned().unwrap_or_default());
        if alive.len() < t {
            return Err(self.below(alive.len()));
        }
        let mut inbox: BTreeMap<u32, Vec<EncryptedShare>> =
            alive.iter().map(|&v| (v, Vec::new())).collect();
        for &u in &alive {
            for s in self.shares.get(&u).map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(list) = inbox.get_mut(&s.to) {
                    list.push(s.clone());
                }
            }
        }
        self.shares.clear();
        let round = self.params.round;
        let mut out = Vec::with_capacity(inbox.len());
        for (v, shares) in inbox {
            self.routed_from
                .insert(v, shares.iter().map(|s| s.from).collect());
            out.push((
                v,
                ServerMessage::RoutedShares(RoutedShares { round, shares }),
            ));
        }
        self.sum = vec![0u64; self.params.dim];
        self.enter(Stage::AwaitingMaskedInputs, alive);
        Ok(StageOutcome::Send(out))
    }

    fn close_masked(&mut self) -> Result<StageOutcome, Error> {
        // Inputs that stopped half-way are out of the sum: their senders
        // are dropped like those who sent nothing.
        self.partials.withdraw_all(&mut self.sum);
        let t = self.params.threshold;
        let contributors = self.contributors.clone();
        if contributors.len() < t {
            return Err(self.below(contributors.len()));
        }
        self.dropped = self.selected.difference(&contributors).copied().collect();
        if self.params.signed_keys {
            // [B17 Fig. 4 Round 3]: the same U3 to every member of U3.
            self.survivor_list = contributors.iter().copied().collect();
            let list = SurvivorList {
                round: self.params.round,
                survivors: self.survivor_list.clone(),
            };
            let out = contributors
                .iter()
                .map(|&v| (v, ServerMessage::SurvivorList(list.clone())))
                .collect();
            self.enter(Stage::AwaitingSurvivorSignatures, contributors);
            return Ok(StageOutcome::Send(out));
        }
        self.request_unmasking(&contributors, Vec::new())
    }

    fn close_signatures(&mut self) -> Result<StageOutcome, Error> {
        let signers: BTreeSet<u32> = self.survivor_signatures.keys().copied().collect();
        if signers.len() < self.params.threshold {
            return Err(self.below(signers.len()));
        }
        let signatures = std::mem::take(&mut self.survivor_signatures)
            .into_iter()
            .collect();
        self.request_unmasking(&signers, signatures)
    }
}
