//! Authenticated encryption of share bundles (Bonawitz et al. 2017, §6,
//! ShareKeys: "e_{u,v} ← AE.enc(KA.agree(c_u^SK, c_v^PK), u ‖ v ‖ s_{u,v}^SK ‖ b_{u,v})").
//!
//! ChaCha20-Poly1305 (RFC 8439) with a key derived per direction (see
//! [`crate::kdf::share_key`]) that encrypts exactly one message, so a fixed
//! all-zero nonce is safe. The associated data binds the round, sender and
//! recipient; the plaintext repeats sender and recipient as in the paper.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::shamir::{SHARE_LEN, Share};

/// Plaintext: from (4) ‖ to (4) ‖ self-mask share (40) ‖ key share (40).
pub const PLAINTEXT_LEN: usize = 8 + 2 * SHARE_LEN;
/// Ciphertext length including the 16-byte tag.
pub const CIPHERTEXT_LEN: usize = PLAINTEXT_LEN + 16;

fn associated_data(round: u64, from: u32, to: u32) -> [u8; 40] {
    let mut ad = [0u8; 40];
    ad[..24].copy_from_slice(b"tessera-secagg-v1 share\0");
    ad[24..32].copy_from_slice(&round.to_be_bytes());
    ad[32..36].copy_from_slice(&from.to_be_bytes());
    ad[36..40].copy_from_slice(&to.to_be_bytes());
    ad
}

/// Encrypts the two shares `from` gives to `to`.
pub fn seal(
    key: &[u8; 32],
    round: u64,
    from: u32,
    to: u32,
    self_mask: &Share,
    mask_key: &Share,
) -> Vec<u8> {
    let mut pt = Vec::with_capacity(PLAINTEXT_LEN);
    pt.extend_from_slice(&from.to_be_bytes());
    pt.extend_from_slice(&to.to_be_bytes());
    pt.extend_from_slice(&self_mask.to_bytes());
    pt.extend_from_slice(&mask_key.to_bytes());
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    let ad = associated_data(round, from, to);
    // Encryption with a valid key cannot fail for messages of this size.
    #[allow(clippy::expect_used)]
    aead.encrypt(&Nonce::from([0u8; 12]), Payload { msg: &pt, aad: &ad })
        .expect("ChaCha20-Poly1305 encryption of a short message")
}

/// Decrypts and parses a share bundle; `None` if it does not authenticate or
/// does not parse (wrong length, names other participants, not field elements).
pub fn open(
    key: &[u8; 32],
    round: u64,
    from: u32,
    to: u32,
    ciphertext: &[u8],
) -> Option<(Share, Share)> {
    if ciphertext.len() != CIPHERTEXT_LEN {
        return None;
    }
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    let ad = associated_data(round, from, to);
    let pt = aead
        .decrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .ok()?;
    if pt.len() != PLAINTEXT_LEN
        || pt.get(..4) != Some(&from.to_be_bytes()[..])
        || pt.get(4..8) != Some(&to.to_be_bytes()[..])
    {
        return None;
    }
    let b = Share::from_bytes(pt.get(8..8 + SHARE_LEN)?).ok()?;
    let s = Share::from_bytes(pt.get(8 + SHARE_LEN..)?).ok()?;
    Some((b, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_binding() {
        let key = [5u8; 32];
        let b = Share([1, 2, 3, 4, 5]);
        let s = Share([6, 7, 8, 9, 10]);
        let ct = seal(&key, 7, 1, 2, &b, &s);
        assert_eq!(ct.len(), CIPHERTEXT_LEN);
        assert_eq!(open(&key, 7, 1, 2, &ct), Some((b, s)));
        assert_eq!(open(&key, 8, 1, 2, &ct), None, "other round");
        assert_eq!(open(&key, 7, 2, 1, &ct), None, "other direction");
        assert_eq!(open(&key, 7, 1, 3, &ct), None, "other recipient");
        assert_eq!(open(&[6u8; 32], 7, 1, 2, &ct), None, "other key");
        let mut flipped = ct.clone();
        flipped[3] ^= 1;
        assert_eq!(open(&key, 7, 1, 2, &flipped), None);
        assert_eq!(open(&key, 7, 1, 2, &ct[..ct.len() - 1]), None);
    }
}
