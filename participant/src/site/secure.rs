//! The site's secure-aggregation stages of an accepted round: advertising
//! keys, exchanging shares, sending the masked input (after its ledger row
//! is durable), signing the survivor list of the consistency check (signed
//! keys only) and answering the unmasking request.

use tessera_model::Announcement;
use tessera_model::round::SecAggSetup;
use tessera_proto::chunk;
use tessera_proto::convert;
use tessera_proto::v1::{self, ChunkPurpose, participant_message::Body as Out};
use tessera_secagg as sa;
use tracing::{info, warn};

use super::{Site, send};
use crate::signing::CohortCertificate;

/// Where the round's secure aggregation stands.
pub(super) enum SecureState {
    /// Plain sums: the encoded input goes as it is.
    Plain,
    AwaitingPeerKeys(sa::AwaitingPeerKeys),
    AwaitingShares(sa::AwaitingShares),
    AwaitingInput(sa::AwaitingInput),
    AwaitingUnmask(sa::AwaitingUnmask),
    AwaitingSignatures(sa::AwaitingSignatures),
    Done,
}

impl Site {
    pub(super) fn start_secagg(
        &mut self,
        a: &Announcement,
        setup: &SecAggSetup,
    ) -> Result<(sa::AwaitingPeerKeys, sa::AdvertiseKeys), String> {
        let participants: Vec<u32> = setup.cohort.iter().map(|m| m.index).collect();
        let params = sa::RoundParams {
            round: a.round,
            participants,
            threshold: setup.threshold as usize,
            neighbours: setup.neighbours as usize,
            graph_seed: setup.graph_seed,
            dim: a.dimension as usize,
            modulus_bits: a.encoding.modulus_bits,
            signed_keys: setup.signed_keys,
        };
        params.validate().map_err(|e| e.to_string())?;
        // A threshold at or below half the cohort would let the coordinator
        // reconstruct secrets with too few colluders.
        if 2 * params.threshold <= params.neighbours {
            return Err(format!("threshold {} is too low", params.threshold));
        }
        let (signer, verifier) = if setup.signed_keys {
            let signing = self.key_signing.as_ref().ok_or(
                "the round asks for signed keys and this participant's certificate key cannot sign them",
            )?;
            let cohort = setup.cohort.iter().map(CohortCertificate::from);
            match signing.for_round(setup.my_index, cohort) {
                Ok((s, v)) => {
                    info!(
                        round = a.round,
                        members = setup.cohort.len(),
                        "cohort certificates checked; keys will be signed and verified"
                    );
                    (
                        Some(Box::new(s) as Box<dyn sa::KeySigner>),
                        Some(Box::new(v) as Box<dyn sa::KeyVerifier>),
                    )
                }
                Err(e) => {
                    warn!(round = a.round, error = %e, "refusing the round: the forwarded certificates do not check out");
                    return Err(e.to_string());
                }
            }
        } else {
            (None, None)
        };
        let signed = params.signed_keys;
        let cfg = sa::ClientConfig {
            params,
            me: setup.my_index,
            signer,
            verifier,
        };
        let started = sa::AwaitingPeerKeys::start(cfg, &mut self.rng).map_err(|e| e.to_string())?;
        // Write-ahead: the round is remembered before the keys leave, so a
        // coordinator announcing it again is caught (see `crate::rounds`).
        if signed && let Err(e) = self.rounds.remember(&self.federation, a.round) {
            warn!(round = a.round, error = %e, "refusing the round");
            return Err(e.to_string());
        }
        Ok(started)
    }

    pub(super) fn peer_keys(&mut self, k: v1::PeerKeys) {
        let Some(r) = self.round.as_mut() else {
            return;
        };
        let SecureState::AwaitingPeerKeys(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = k.round, "peer keys out of order ignored");
            return;
        };
        let msg = match convert::peer_keys_from_wire(&k) {
            Ok(m) => m,
            Err(e) => return self.abandon(format!("bad peer keys: {e}")),
        };
        match state.handle_peer_keys(msg, &mut self.rng) {
            Ok((next, shares)) => {
                r.secure = SecureState::AwaitingShares(next);
                self.actions
                    .push_back(send(Out::ShareKeys(convert::share_keys_to_wire(&shares))));
            }
            Err(e) => self.abandon(format!("peer keys refused: {e}")),
        }
    }

    pub(super) fn routed_shares(&mut self, s: v1::RoutedShares) {
        let Some(r) = self.round.as_mut() else {
            return;
        };
        let SecureState::AwaitingShares(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = s.round, "shares out of order ignored");
            return;
        };
        match state.handle_routed_shares(convert::routed_shares_from_wire(&s)) {
            Ok(next) => {
                r.secure = SecureState::AwaitingInput(next);
                self.maybe_send_input();
            }
            Err(e) => self.abandon(format!("shares refused: {e}")),
        }
    }

    /// The consistency check of a signed-key round: signs the survivor list
    /// (Bonawitz et al. 2017, Round 3).
    pub(super) fn survivor_list(&mut self, l: v1::SurvivorList) {
        let Some(r) = self.round.as_mut() else {
            return;
        };
        let SecureState::AwaitingUnmask(state) =
            std::mem::replace(&mut r.secure, SecureState::Done)
        else {
            warn!(round = l.round, "survivor list out of order ignored");
            return;
        };
        match state.handle_survivor_list(convert::survivor_list_from_wire(&l)) {
            Ok((next, signature)) => {
                r.secure = SecureState::AwaitingSignatures(next);
                self.actions.push_back(send(Out::SurvivorSignature(
                    convert::survivor_signature_to_wire(&signature),
                )));
            }
            Err(e) => self.abandon(format!("survivor list refused: {e}")),
        }
    }

    pub(super) fn unmask(&mut self, req: v1::UnmaskRequest) {
        let Some(r) = self.round.as_mut() else {
            return;
        };
        let request = convert::unmask_request_from_wire(&req);
        let answer = match std::mem::replace(&mut r.secure, SecureState::Done) {
            SecureState::AwaitingUnmask(state) => state.handle_unmask_request(request),
            SecureState::AwaitingSignatures(state) => state.handle_unmask_request(request),
            _ => {
                warn!(round = req.round, "unmask request out of order ignored");
                return;
            }
        };
        match answer {
            Ok(resp) => self
                .actions
                .push_back(send(Out::Unmask(convert::unmask_response_to_wire(&resp)))),
            Err(e) => self.abandon(format!("unmask request refused: {e}")),
        }
    }

    /// Leaves the round for a reason of the coordinator's making (never of
    /// the data's).
    fn abandon(&mut self, reason: String) {
        warn!(%reason, "leaving the round");
        self.round = None;
    }

    /// Sends the input once it is computed and the protocol is ready for it.
    pub(super) fn maybe_send_input(&mut self) {
        let Some(r) = self.round.as_ref() else {
            return;
        };
        if r.sent || r.input.is_none() {
            return;
        }
        if !matches!(r.secure, SecureState::Plain | SecureState::AwaitingInput(_)) {
            return;
        }
        // Write-ahead: the site's ledger row is durable before anything leaves.
        // A zero vector sent in place of a contribution that could not be
        // computed does not depend on the data: the site's privacy loss in
        // this round is zero, and the round is not counted (see `input`).
        // With adaptive clipping its bit is −1/2, not zero: counted.
        let uncounted = r.fallback && !r.plan.adaptive;
        if uncounted {
            info!(
                round = r.announce.round,
                "this site contributes nothing of its data to the round; its own ledger does not count it"
            );
        }
        if r.plan.private && !uncounted {
            let contribution = self.contribution(&r.announce, &r.plan);
            if let Err(e) = self.ledger.record(&contribution) {
                return self.abandon(format!("cannot write the site ledger: {e}"));
            }
        }
        let Some(r) = self.round.as_mut() else {
            return;
        };
        let Some(input) = r.input.take() else {
            return;
        };
        let round = r.announce.round;
        let wide = r.plan.encoding.modulus_bits > 32;
        let (values, purpose) = match std::mem::replace(&mut r.secure, SecureState::Done) {
            SecureState::AwaitingInput(state) => match state.mask_input(&input) {
                Ok((next, masked)) => {
                    r.secure = SecureState::AwaitingUnmask(next);
                    (masked.values, ChunkPurpose::MaskedInput)
                }
                Err(e) => return self.abandon(format!("masking failed: {e}")),
            },
            _ => (input, ChunkPurpose::PlainInput),
        };
        r.sent = true;
        let chunks = if wide {
            chunk::split(round, purpose, &values)
        } else {
            let narrow: Vec<u32> = values.iter().map(|&v| v as u32).collect();
            chunk::split(round, purpose, &narrow)
        };
        self.actions
            .extend(chunks.into_iter().map(|c| send(Out::Chunk(c))));
    }
}
