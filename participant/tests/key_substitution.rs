//! A coordinator that substitutes secure-aggregation keys, seen from one
//! participant's session: the site signs its own keys with its certificate
//! key, takes part when its neighbours' keys carry their certificates'
//! signatures, and refuses substituted keys, forged certificates and
//! unsigned keys.

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tessera_participant::config::{
    ParticipantConfig, ParticipantSection, ReconnectSection, SitePrivacySection,
};
use tessera_participant::data::LocalData;
use tessera_participant::ledger::SiteLedger;
use tessera_participant::signing::{CertificateKeySigner, CohortCertificate, KeySigning};
use tessera_participant::site::{Action, Site};
use tessera_proto::convert;
use tessera_proto::v1::{
    self, CoordinatorMessage, DeclineCode, coordinator_message::Body as In,
    participant_message::Body as Out,
};
use tessera_secagg::{self as sa, KeySigner};
use tessera_testkit::pki::TestPki;

const ROUND: u64 = 4;
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

struct Federation {
    dir: tempfile::TempDir,
    pki: TestPki,
}

impl Federation {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path().join("pki"), &NAMES);
        let csv = "x1,x2,y\n1,2,0\n3,4,1\n5,6,1\n7,8,0\n";
        std::fs::write(dir.path().join("data.csv"), csv).unwrap();
        Self { dir, pki }
    }

    fn signing(&self, name: &str) -> KeySigning {
        KeySigning::from_material(&self.pki.files_for(name).load().unwrap()).unwrap()
    }

    fn cert_der(&self, name: &str) -> Vec<u8> {
        der_of(&self.pki.files_for(name).cert)
    }

    /// Participant `name`'s site, joined to the federation.
    fn site(&self, name: &str, signing: bool) -> Site {
        let files = self.pki.files_for(name);
        let state = self.dir.path().join("state").join(name);
        let config = ParticipantConfig {
            participant: ParticipantSection {
                coordinator: "https://localhost:1".into(),
                server_name: None,
                data: self.dir.path().join("data.csv"),
                state_dir: state.clone(),
                allowed_columns: None,
            },
            tls: files,
            privacy: SitePrivacySection::default(),
            reconnect: ReconnectSection::default(),
            limits: Default::default(),
            evaluation: Default::default(),
            analytics: Default::default(),
            trainer: None,
        };
        let ledger = SiteLedger::open(&state.join("ledger.sqlite")).unwrap();
        let data = LocalData::read(&config.participant.data).unwrap();
        let mut site = Site::with_defaults(
            config.site_policy(),
            data,
            Box::new(ledger),
            signing.then(|| self.signing(name)),
        );
        let welcome = site.step(message(In::Welcome(v1::Welcome {
            protocol_version: tessera_proto::PROTOCOL_VERSION,
            participant_name: name.into(),
            federation: "test".into(),
            task: Some(v1::TaskSpec {
                model: "logistic".into(),
                features: vec!["x1".into(), "x2".into()],
                label: "y".into(),
                positive: "> 0".into(),
                ..Default::default()
            }),
        })));
        assert!(welcome.is_empty(), "{welcome:?}");
        site
    }

    /// The genuine cohort: index i + 1 is NAMES[i], with its certificate.
    fn cohort(&self) -> Vec<v1::CohortMember> {
        NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| v1::CohortMember {
                index: i as u32 + 1,
                name: n.to_string(),
                certificate: self.cert_der(n),
            })
            .collect()
    }
}

fn der_of(pem_path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(pem_path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn message(body: In) -> CoordinatorMessage {
    CoordinatorMessage { body: Some(body) }
}

fn params(signed: bool) -> sa::RoundParams {
    sa::RoundParams {
        round: ROUND,
        participants: vec![1, 2, 3],
        threshold: 2,
        neighbours: 2,
        graph_seed: [9; 32],
        dim: 9,
        modulus_bits: 48,
        signed_keys: signed,
    }
}

/// A statistics aggregation over the three sites, as sent to `me`.
fn announce(me: u32, cohort: Vec<v1::CohortMember>, signed: bool) -> CoordinatorMessage {
    let p = params(signed);
    message(In::Announce(v1::RoundAnnounce {
        round: ROUND,
        kind: v1::AggregationKind::Statistics as i32,
        dimension: p.dim as u64,
        encoding: Some(v1::Encoding {
            scale_bits: 16,
            modulus_bits: p.modulus_bits,
        }),
        secagg: Some(v1::SecAggSetup {
            my_index: me,
            cohort,
            threshold: p.threshold as u32,
            neighbours: p.neighbours as u32,
            graph_seed: p.graph_seed.to_vec(),
            signed_keys: signed,
        }),
        ..Default::default()
    }))
}

/// What the site sent in reply to an announcement: its acceptance (or the
/// code it declined with, after checking the reason is that code's fixed
/// text) and its advertised keys, if any.
fn reply(actions: &[Action]) -> (Result<(), DeclineCode>, Option<v1::SecAggKeys>) {
    let mut accepted = Err(DeclineCode::Unspecified);
    let mut keys = None;
    for a in actions {
        match a {
            Action::Send(m) => match &m.body {
                Some(Out::RoundReply(r)) if r.accept => accepted = Ok(()),
                Some(Out::RoundReply(r)) => {
                    let (code, text) = tessera_proto::reasons::decline_of(r);
                    assert_eq!(r.reason, text, "declines carry the fixed text only");
                    accepted = Err(code);
                }
                Some(Out::Keys(k)) => keys = Some(k.clone()),
                other => panic!("unexpected message {other:?}"),
            },
            Action::Exit { reason, .. } => panic!("the site exited: {reason}"),
        }
    }
    (accepted, keys)
}

fn sent_share_keys(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Send(m) if matches!(m.body, Some(Out::ShareKeys(_)))))
}

/// Bob's and Carol's genuine advertisements, signed with their
/// certificate keys by their own secure-aggregation clients.
fn peers(f: &Federation) -> Vec<sa::AdvertiseKeys> {
    let mut rng = StdRng::seed_from_u64(1);
    let cohort = f.cohort();
    [2u32, 3]
        .iter()
        .map(|&me| {
            let name = NAMES[me as usize - 1];
            let (signer, verifier) = f
                .signing(name)
                .for_round(me, cohort.iter().map(CohortCertificate::from))
                .unwrap();
            let cfg = sa::ClientConfig {
                params: params(true),
                me,
                signer: Some(Box::new(signer)),
                verifier: Some(Box::new(verifier)),
            };
            sa::AwaitingPeerKeys::start(cfg, &mut rng).unwrap().1
        })
        .collect()
}

/// The peers' keys as an honest coordinator forwards them in a signed-key
/// round, with the graph seed derived from them and Alice's own keys.
fn peer_keys(keys: Vec<sa::AdvertiseKeys>, alice: &sa::AdvertiseKeys) -> CoordinatorMessage {
    let graph_seed = sa::derive_graph_seed(&params(true), keys.iter().chain([alice]));
    message(In::PeerKeys(convert::peer_keys_to_wire(&sa::PeerKeys {
        round: ROUND,
        keys,
        graph_seed,
    })))
}

/// Alice's site in a signed-key round, after accepting and advertising her
/// signed keys; and those keys.
fn alice_in_round(f: &Federation) -> (Site, sa::AdvertiseKeys) {
    let mut alice = f.site("alice", true);
    let (accepted, keys) = reply(&alice.step(announce(1, f.cohort(), true)));
    accepted.unwrap();
    let keys = keys.expect("alice advertised keys");
    // Her keys carry her certificate's signature, which Bob can check.
    let adv = convert::keys_from_wire(1, &keys).unwrap();
    let (_, bob_verifier) = f
        .signing("bob")
        .for_round(2, f.cohort().iter().map(CohortCertificate::from))
        .unwrap();
    let signed = sa::signed_key_message(ROUND, 1, &adv.cipher_public_key, &adv.mask_public_key);
    assert!(sa::KeyVerifier::verify(
        &bob_verifier,
        1,
        &signed,
        &adv.signature
    ));
    (alice, adv)
}

#[test]
fn honest_signed_round_goes_on() {
    let f = Federation::new();
    let (mut alice, own) = alice_in_round(&f);
    let actions = alice.step(peer_keys(peers(&f), &own));
    assert!(sent_share_keys(&actions), "{actions:?}");
}

#[test]
fn substituted_keys_are_refused() {
    let f = Federation::new();
    // The coordinator's own keys for Carol: unsigned, signed with a key of
    // its own making, or signed with its genuine (federation-issued)
    // coordinator key.
    let made_up = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let coordinator_key = std::fs::read(f.pki.coordinator_files().key).unwrap();
    let signers: Vec<Option<CertificateKeySigner>> = vec![
        None,
        Some(CertificateKeySigner::from_pem(made_up.as_bytes()).unwrap()),
        Some(CertificateKeySigner::from_pem(&coordinator_key).unwrap()),
        // Bob's genuine key signing keys in Carol's name.
        Some(f.signing("bob").signer()),
    ];
    for signer in signers {
        let (mut alice, own) = alice_in_round(&f);
        let mut keys = peers(&f);
        let carol = &mut keys[1];
        assert_eq!(carol.from, 3);
        carol.mask_public_key = [0x42; 32];
        carol.cipher_public_key = [0x24; 32];
        carol.signature = match &signer {
            None => Vec::new(),
            Some(s) => s.sign(&sa::signed_key_message(
                ROUND,
                3,
                &carol.cipher_public_key,
                &carol.mask_public_key,
            )),
        };
        let actions = alice.step(peer_keys(keys, &own));
        assert!(actions.is_empty(), "{actions:?}");
        // Alice left the round: the genuine keys arriving afterwards change nothing.
        assert!(alice.step(peer_keys(peers(&f), &own)).is_empty());
    }
}

#[test]
fn replayed_and_moved_signatures_are_refused() {
    let f = Federation::new();
    // Carol's genuine keys and signature, presented as Bob's.
    let (mut alice, own) = alice_in_round(&f);
    let keys = peers(&f);
    let mut moved = keys.clone();
    moved[0].cipher_public_key = keys[1].cipher_public_key;
    moved[0].mask_public_key = keys[1].mask_public_key;
    moved[0].signature = keys[1].signature.clone();
    assert!(alice.step(peer_keys(moved, &own)).is_empty());
    // Bob's keys signed for an earlier round.
    let (mut alice, own) = alice_in_round(&f);
    let mut old = peers(&f);
    let bob = f.signing("bob").signer();
    old[0].signature = bob.sign(&sa::signed_key_message(
        ROUND - 1,
        2,
        &old[0].cipher_public_key,
        &old[0].mask_public_key,
    ));
    assert!(alice.step(peer_keys(old, &own)).is_empty());
}

#[test]
fn a_forged_certificate_makes_the_site_decline_the_round() {
    let f = Federation::new();
    // A certificate for "carol" from a CA the coordinator made itself.
    let other = tempfile::tempdir().unwrap();
    let forged_pki = TestPki::new(other.path(), &["carol"]);
    let mut cohort = f.cohort();
    cohort[2].certificate = der_of(&forged_pki.files_for("carol").cert);
    let mut alice = f.site("alice", true);
    let (accepted, keys) = reply(&alice.step(announce(1, cohort, true)));
    // Which certificate failed, and why, stays in the site's log.
    assert_eq!(accepted, Err(DeclineCode::InvalidSecureAggregation));
    assert!(keys.is_none(), "no keys are advertised in a refused round");

    // Bob's genuine certificate in Carol's place.
    let mut cohort = f.cohort();
    cohort[2].certificate = f.cert_der("bob");
    let mut alice = f.site("alice", true);
    let (accepted, keys) = reply(&alice.step(announce(1, cohort, true)));
    assert_eq!(accepted, Err(DeclineCode::InvalidSecureAggregation));
    assert!(keys.is_none());
}

#[test]
fn without_a_signing_key_signed_rounds_are_declined_and_plain_ones_accepted() {
    let f = Federation::new();
    let mut alice = f.site("alice", false);
    let (accepted, keys) = reply(&alice.step(announce(1, f.cohort(), true)));
    assert_eq!(accepted, Err(DeclineCode::InvalidSecureAggregation));
    assert!(keys.is_none());
    let mut alice = f.site("alice", false);
    let (accepted, keys) = reply(&alice.step(announce(1, f.cohort(), false)));
    accepted.unwrap();
    assert!(keys.unwrap().signature.is_empty());
}
