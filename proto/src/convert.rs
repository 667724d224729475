//! Conversions between wire messages and the secure-aggregation types of
//! `tessera-secagg`, with the size checks the wire cannot express.
//!
//! Wire messages never carry a sender: the receiver supplies it from the
//! authenticated session (the sender's cohort index).

use tessera_secagg as sa;

use crate::v1;

/// A wire message that cannot be a valid secure-aggregation message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A public key or seed is not 32 bytes.
    #[error("{field} must be 32 bytes, got {len}")]
    KeyLength {
        /// Which key.
        field: &'static str,
        /// Length received.
        len: usize,
    },
}

fn key(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], ConvertError> {
    bytes.try_into().map_err(|_| ConvertError::KeyLength {
        field,
        len: bytes.len(),
    })
}

/// Wire keys of participant `from` → secagg.
pub fn keys_from_wire(from: u32, m: &v1::SecAggKeys) -> Result<sa::AdvertiseKeys, ConvertError> {
    Ok(sa::AdvertiseKeys {
        round: m.round,
        from,
        cipher_public_key: key("cipher_public_key", &m.cipher_public_key)?,
        mask_public_key: key("mask_public_key", &m.mask_public_key)?,
        signature: m.signature.clone(),
    })
}

/// Secagg keys → wire (the sender is implicit).
pub fn keys_to_wire(m: &sa::AdvertiseKeys) -> v1::SecAggKeys {
    v1::SecAggKeys {
        round: m.round,
        cipher_public_key: m.cipher_public_key.to_vec(),
        mask_public_key: m.mask_public_key.to_vec(),
        signature: m.signature.clone(),
    }
}

/// Secagg peer keys → wire.
pub fn peer_keys_to_wire(m: &sa::PeerKeys) -> v1::PeerKeys {
    v1::PeerKeys {
        round: m.round,
        graph_seed: m.graph_seed.to_vec(),
        keys: m
            .keys
            .iter()
            .map(|k| v1::PeerKey {
                index: k.from,
                cipher_public_key: k.cipher_public_key.to_vec(),
                mask_public_key: k.mask_public_key.to_vec(),
                signature: k.signature.clone(),
            })
            .collect(),
    }
}

/// Wire peer keys → secagg.
pub fn peer_keys_from_wire(m: &v1::PeerKeys) -> Result<sa::PeerKeys, ConvertError> {
    Ok(sa::PeerKeys {
        round: m.round,
        graph_seed: key("graph_seed", &m.graph_seed)?,
        keys: m
            .keys
            .iter()
            .map(|k| {
                Ok(sa::AdvertiseKeys {
                    round: m.round,
                    from: k.index,
                    cipher_public_key: key("cipher_public_key", &k.cipher_public_key)?,
                    mask_public_key: key("mask_public_key", &k.mask_public_key)?,
                    signature: k.signature.clone(),
                })
            })
            .collect::<Result<_, ConvertError>>()?,
    })
}

fn shares_to_wire(shares: &[sa::EncryptedShare]) -> Vec<v1::EncryptedShare> {
    shares
        .iter()
        .map(|s| v1::EncryptedShare {
            from: s.from,
            to: s.to,
            ciphertext: s.ciphertext.clone(),
        })
        .collect()
}

fn shares_from_wire(shares: &[v1::EncryptedShare]) -> Vec<sa::EncryptedShare> {
    shares
        .iter()
        .map(|s| sa::EncryptedShare {
            from: s.from,
            to: s.to,
            ciphertext: s.ciphertext.clone(),
        })
        .collect()
}

/// Secagg share bundles → wire.
pub fn share_keys_to_wire(m: &sa::ShareKeys) -> v1::ShareKeys {
    v1::ShareKeys {
        round: m.round,
        shares: shares_to_wire(&m.shares),
    }
}

/// Wire share bundles → secagg.
pub fn share_keys_from_wire(m: &v1::ShareKeys) -> sa::ShareKeys {
    sa::ShareKeys {
        round: m.round,
        shares: shares_from_wire(&m.shares),
    }
}

/// Secagg routed shares → wire.
pub fn routed_shares_to_wire(m: &sa::RoutedShares) -> v1::RoutedShares {
    v1::RoutedShares {
        round: m.round,
        shares: shares_to_wire(&m.shares),
    }
}

/// Wire routed shares → secagg.
pub fn routed_shares_from_wire(m: &v1::RoutedShares) -> sa::RoutedShares {
    sa::RoutedShares {
        round: m.round,
        shares: shares_from_wire(&m.shares),
    }
}

/// Secagg unmask request → wire.
pub fn unmask_request_to_wire(m: &sa::UnmaskRequest) -> v1::UnmaskRequest {
    v1::UnmaskRequest {
        round: m.round,
        survivors: m.survivors.clone(),
        dropped: m.dropped.clone(),
        signatures: m
            .signatures
            .iter()
            .map(|(signer, signature)| v1::SignedSurvivors {
                signer: *signer,
                signature: signature.clone(),
            })
            .collect(),
    }
}

/// Wire unmask request → secagg.
pub fn unmask_request_from_wire(m: &v1::UnmaskRequest) -> sa::UnmaskRequest {
    sa::UnmaskRequest {
        round: m.round,
        survivors: m.survivors.clone(),
        dropped: m.dropped.clone(),
        signatures: m
            .signatures
            .iter()
            .map(|s| (s.signer, s.signature.clone()))
            .collect(),
    }
}

/// Secagg survivor list → wire.
pub fn survivor_list_to_wire(m: &sa::SurvivorList) -> v1::SurvivorList {
    v1::SurvivorList {
        round: m.round,
        survivors: m.survivors.clone(),
    }
}

/// Wire survivor list → secagg.
pub fn survivor_list_from_wire(m: &v1::SurvivorList) -> sa::SurvivorList {
    sa::SurvivorList {
        round: m.round,
        survivors: m.survivors.clone(),
    }
}

/// Secagg survivor-list signature → wire.
pub fn survivor_signature_to_wire(m: &sa::SurvivorSignature) -> v1::SurvivorSignature {
    v1::SurvivorSignature {
        round: m.round,
        signature: m.signature.clone(),
    }
}

/// Wire survivor-list signature → secagg.
pub fn survivor_signature_from_wire(m: &v1::SurvivorSignature) -> sa::SurvivorSignature {
    sa::SurvivorSignature {
        round: m.round,
        signature: m.signature.clone(),
    }
}

fn revealed_to_wire(v: &[(u32, Vec<u8>)]) -> Vec<v1::RevealedShare> {
    v.iter()
        .map(|(owner, share)| v1::RevealedShare {
            owner: *owner,
            share: share.clone(),
        })
        .collect()
}

fn revealed_from_wire(v: &[v1::RevealedShare]) -> Vec<(u32, Vec<u8>)> {
    v.iter().map(|s| (s.owner, s.share.clone())).collect()
}

/// Secagg unmask response → wire.
pub fn unmask_response_to_wire(m: &sa::UnmaskResponse) -> v1::UnmaskResponse {
    v1::UnmaskResponse {
        round: m.round,
        self_mask_shares: revealed_to_wire(&m.self_mask_shares),
        key_shares: revealed_to_wire(&m.key_shares),
    }
}

/// Wire unmask response → secagg.
pub fn unmask_response_from_wire(m: &v1::UnmaskResponse) -> sa::UnmaskResponse {
    sa::UnmaskResponse {
        round: m.round,
        self_mask_shares: revealed_from_wire(&m.self_mask_shares),
        key_shares: revealed_from_wire(&m.key_shares),
    }
}

/// A coordinator-side secagg message → the wire envelope.
pub fn server_message_to_wire(m: &sa::ServerMessage) -> v1::CoordinatorMessage {
    use v1::coordinator_message::Body;
    let body = match m {
        sa::ServerMessage::PeerKeys(k) => Body::PeerKeys(peer_keys_to_wire(k)),
        sa::ServerMessage::RoutedShares(s) => Body::RoutedShares(routed_shares_to_wire(s)),
        sa::ServerMessage::SurvivorList(l) => Body::SurvivorList(survivor_list_to_wire(l)),
        sa::ServerMessage::UnmaskRequest(r) => Body::UnmaskRequest(unmask_request_to_wire(r)),
    };
    v1::CoordinatorMessage { body: Some(body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_reject_bad_lengths() {
        let k = sa::AdvertiseKeys {
            round: 4,
            from: 2,
            cipher_public_key: [1; 32],
            mask_public_key: [2; 32],
            signature: vec![9, 9],
        };
        let wire = keys_to_wire(&k);
        assert_eq!(keys_from_wire(2, &wire).unwrap(), k);
        let mut short = wire.clone();
        short.mask_public_key.pop();
        assert_eq!(
            keys_from_wire(2, &short),
            Err(ConvertError::KeyLength {
                field: "mask_public_key",
                len: 31
            })
        );
        let peers = sa::PeerKeys {
            round: 4,
            keys: vec![k.clone()],
            graph_seed: [5; 32],
        };
        assert_eq!(
            peer_keys_from_wire(&peer_keys_to_wire(&peers)).unwrap(),
            peers
        );
        let mut no_seed = peer_keys_to_wire(&peers);
        no_seed.graph_seed.truncate(31);
        assert_eq!(
            peer_keys_from_wire(&no_seed),
            Err(ConvertError::KeyLength {
                field: "graph_seed",
                len: 31
            })
        );
    }

    #[test]
    fn unmask_round_trip() {
        let r = sa::UnmaskResponse {
            round: 1,
            self_mask_shares: vec![(3, vec![1, 2])],
            key_shares: vec![(5, vec![3])],
        };
        assert_eq!(unmask_response_from_wire(&unmask_response_to_wire(&r)), r);
        let q = sa::UnmaskRequest {
            round: 1,
            survivors: vec![1, 2],
            dropped: vec![3],
            signatures: vec![(1, vec![7; 64]), (2, vec![8; 70])],
        };
        assert_eq!(unmask_request_from_wire(&unmask_request_to_wire(&q)), q);
        let l = sa::SurvivorList {
            round: 1,
            survivors: vec![1, 2, 4],
        };
        assert_eq!(survivor_list_from_wire(&survivor_list_to_wire(&l)), l);
        let sig = sa::SurvivorSignature {
            round: 1,
            signature: vec![9; 71],
        };
        assert_eq!(
            survivor_signature_from_wire(&survivor_signature_to_wire(&sig)),
            sig
        );
    }
}
