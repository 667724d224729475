//! A hand-driven round for injecting bad messages, and test-only key
//! "signatures" for signed-key rounds.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

use crate::testing::expected_sum;
use crate::tests::inputs_for;
use crate::*;

pub(crate) struct Net {
    pub(crate) p: RoundParams,
    pub(crate) server: ServerRound,
    pub(crate) clients: BTreeMap<u32, (ClientSession, ChaCha20Rng)>,
    pub(crate) inputs: BTreeMap<u32, Vec<u64>>,
    /// Last message each participant sent (for replays).
    pub(crate) sent: BTreeMap<u32, ClientMessage>,
    /// Last message each participant got.
    pub(crate) got: BTreeMap<u32, ServerMessage>,
}

impl Net {
    pub(crate) fn new(p: RoundParams, signed: Option<&TestPki>) -> Self {
        Self::seeded(p, signed, 1000)
    }

    /// As [`Net::new`], the participants' RNGs seeded from `seed` on.
    pub(crate) fn seeded(p: RoundParams, signed: Option<&TestPki>, seed: u64) -> Self {
        let server = ServerRound::new(p.clone()).unwrap();
        let mut clients = BTreeMap::new();
        let mut sent = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let all = inputs_for(&p, 77);
        for (i, &u) in p.participants.iter().enumerate() {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + u as u64);
            let (signer, verifier) = match signed {
                Some(pki) => (
                    Some(Box::new(pki.signer(u)) as Box<dyn KeySigner>),
                    Some(Box::new(pki.clone()) as Box<dyn KeyVerifier>),
                ),
                None => (None, None),
            };
            let cfg = ClientConfig {
                params: p.clone(),
                me: u,
                signer,
                verifier,
            };
            let (s, m) = ClientSession::start(cfg, &mut rng).unwrap();
            clients.insert(u, (s, rng));
            sent.insert(u, m);
            inputs.insert(u, all[i].clone());
        }
        Net {
            p,
            server,
            clients,
            inputs,
            sent,
            got: BTreeMap::new(),
        }
    }

    pub(crate) fn deliver_all(&mut self) {
        for (&u, m) in &self.sent {
            self.server.receive(u, m.clone()).unwrap();
        }
        self.sent.clear();
    }

    /// Closes the stage and hands each message to its client; returns the
    /// clients' errors.
    pub(crate) fn step(&mut self) -> Vec<(u32, Error)> {
        let StageOutcome::Send(msgs) = self.server.close_stage().unwrap() else {
            panic!("finished early")
        };
        let mut errs = Vec::new();
        for (to, msg) in msgs {
            self.got.insert(to, msg.clone());
            let Some((s, mut rng)) = self.clients.remove(&to) else {
                continue;
            };
            match s.handle(msg, &mut rng) {
                Ok((s, reply)) => {
                    let (s, reply) = if s.wants_input() {
                        let (s, m) = s.mask_input(&self.inputs[&to]).unwrap();
                        (s, Some(m))
                    } else {
                        (s, reply)
                    };
                    if let Some(m) = reply {
                        self.sent.insert(to, m);
                    }
                    self.clients.insert(to, (s, rng));
                }
                Err(e) => errs.push((to, e)),
            }
        }
        errs
    }

    pub(crate) fn finish(&mut self) -> (Vec<u64>, Vec<u32>) {
        match self.server.close_stage().unwrap() {
            StageOutcome::Finished { sum, contributors } => (sum, contributors),
            other => panic!("not finished: {other:?}"),
        }
    }

    pub(crate) fn expected(&self, who: &[u32]) -> Vec<u64> {
        let all: Vec<Vec<u64>> = self
            .p
            .participants
            .iter()
            .map(|u| self.inputs[u].clone())
            .collect();
        expected_sum(&self.p, &all, who)
    }
}

/// Test-only "signatures": SHA-256 of a per-participant secret and the
/// message. Not a signature scheme; enough to exercise the plumbing.
#[derive(Clone)]
pub(crate) struct TestPki(BTreeMap<u32, [u8; 32]>);

pub(crate) struct TestSigner([u8; 32]);

fn mac(key: &[u8; 32], m: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(key)
        .chain_update(m)
        .finalize()
        .to_vec()
}

impl TestPki {
    pub(crate) fn new(p: &RoundParams) -> Self {
        TestPki(p.participants.iter().map(|&u| (u, [u as u8; 32])).collect())
    }
    pub(crate) fn signer(&self, u: u32) -> TestSigner {
        TestSigner(self.0[&u])
    }
}

impl KeySigner for TestSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        mac(&self.0, message)
    }
}

impl KeyVerifier for TestPki {
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool {
        self.0
            .get(&peer)
            .is_some_and(|k| mac(k, message) == signature)
    }
}

pub(crate) fn violation(r: Result<(), Error>) -> Violation {
    match r {
        Err(Error::ProtocolViolation(v)) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}
