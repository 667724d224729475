//! The coordinator's check of survivor-list signatures in a signed-key
//! round: each one is verified with the public key of its sender's TLS
//! certificate as it arrives, so that one site's bad signature drops that
//! site from the rest of the round instead of being forwarded and making
//! every honest site refuse to reveal its shares.
//!
//! # What happens to a site whose signature fails
//!
//! It sent its masked input (it is in the survivor list U3 everyone signs),
//! so its input stays in the sum: taking it out would need its pairwise
//! mask key *and* its self-mask seed, exactly the pair secure aggregation
//! must never reveal for one site (Bonawitz et al. 2017, §4, Round 4). It
//! is left out of U4 as a dropout of the consistency check is: it gets no
//! unmasking request, and the other survivors reveal the self-mask shares
//! of its input as of any survivor's. With at least t honest signatures
//! the round completes; the refused message is logged and the site is
//! gone from the round.

use std::collections::BTreeMap;

use tessera_certs::CertificateKey;
use tessera_secagg::KeyVerifier;
use tracing::warn;

/// The cohort's certificate keys by index: what the coordinator verifies
/// survivor signatures with.
#[derive(Debug, Default)]
pub struct CohortKeys {
    keys: BTreeMap<u32, CertificateKey>,
}

impl CohortKeys {
    /// The keys of the cohort's certificates (index, DER). The certificates
    /// are the ones the members' TLS sessions were verified with; a member
    /// whose certificate key cannot verify signatures here (or that has no
    /// certificate) is kept without a key, so that its signatures never
    /// verify.
    pub fn new<'a>(members: impl IntoIterator<Item = (u32, &'a [u8])>) -> Self {
        let mut keys = BTreeMap::new();
        for (index, der) in members {
            match CertificateKey::from_certificate(der) {
                Ok(k) => {
                    keys.insert(index, k);
                }
                Err(reason) => {
                    warn!(index, %reason, "a cohort member's certificate key cannot verify signatures");
                }
            }
        }
        Self { keys }
    }

    /// Whether member `index` has a usable key.
    pub fn knows(&self, index: u32) -> bool {
        self.keys.contains_key(&index)
    }
}

impl KeyVerifier for CohortKeys {
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool {
        self.keys
            .get(&peer)
            .is_some_and(|k| k.verify(message, signature))
    }
}
