//! A coordinator that cheats in signed-key secure aggregation, caught by a
//! real participant process (`tessera-sim participant`) over loopback
//! mutual TLS.
//!
//! The coordinator is built here from the project's own pieces (the TLS
//! accept loop, the gRPC service, `ServerRound`); two more cohort members
//! run in this process on the secure-aggregation library with their real
//! certificate keys. An honest round shows the harness works (the site
//! reveals its shares); then the coordinator lies about who dropped out,
//! announces a round number again, and picks its own graph seed — and the
//! site refuses each time, before revealing anything.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tessera_coordinator::listener::{AcceptLimits, TlsConfigCell, accept_loop};
use tessera_coordinator::metrics::Metrics;
use tessera_coordinator::service::{FederationService, Outbox, SessionEvent};
use tessera_participant::signing::{CohortCertificate, KeySigning};
use tessera_proto::chunk::Assembler;
use tessera_proto::convert;
use tessera_proto::v1::{
    self, ChunkPurpose, CoordinatorMessage, DeclineCode, coordinator_message::Body as In,
    participant_message::Body as Out,
};
use tessera_secagg as sa;
use tessera_testkit::pki::TestPki;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const DIM: usize = 9;
const PATIENCE: Duration = Duration::from_secs(60);

/// The coordinator's end of alice's session.
struct Session {
    events: mpsc::Receiver<SessionEvent>,
    outbox: Outbox,
}

impl Session {
    /// Waits for alice to connect and say hello.
    async fn accept(mut events: mpsc::Receiver<SessionEvent>) -> Self {
        let outbox = loop {
            match tokio::time::timeout(PATIENCE, events.recv()).await {
                Ok(Some(SessionEvent::Connected { name, outbox, .. })) => {
                    assert_eq!(name, "alice");
                    break outbox;
                }
                Ok(Some(_)) => continue,
                other => panic!("alice did not connect: {other:?}"),
            }
        };
        let mut s = Session { events, outbox };
        assert!(matches!(s.next().await, Some(Out::Hello(_))));
        s
    }

    /// The next message alice sends, or None if none comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Out> {
        loop {
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(SessionEvent::Message { message, .. })) => return message.body,
                Ok(Some(SessionEvent::Disconnected { error, .. })) => {
                    panic!("alice disconnected: {error:?}")
                }
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the service stopped"),
                Err(_) => return None,
            }
        }
    }

    async fn next(&mut self) -> Option<Out> {
        self.next_within(PATIENCE).await
    }

    async fn send(&self, body: In) {
        self.outbox
            .send(Ok(CoordinatorMessage { body: Some(body) }))
            .await
            .unwrap();
    }
}

/// Hands the server's messages on: alice's (index 1) over the wire, the
/// in-process peers' to them, their replies back to the server. With
/// `reply_expected`, every peer must answer.
async fn deliver(
    alice: &Session,
    server: &mut sa::ServerRound,
    peers: &mut [Peer],
    msgs: Vec<(u32, sa::ServerMessage)>,
    reply_expected: bool,
) {
    for (to, m) in msgs {
        if to == 1 {
            alice
                .send(convert::server_message_to_wire(&m).body.unwrap())
                .await;
        } else {
            let peer = peers.iter_mut().find(|p| p.index == to).unwrap();
            match peer.handle(m) {
                Some(reply) => server.receive(to, reply).unwrap(),
                None => assert!(!reply_expected, "peer {to} did not answer"),
            }
        }
    }
}

/// A cohort member run in this process: its secure-aggregation session,
/// signing with its real certificate key.
struct Peer {
    index: u32,
    session: Option<sa::ClientSession>,
    rng: StdRng,
}

impl Peer {
    fn handle(&mut self, msg: sa::ServerMessage) -> Option<sa::ClientMessage> {
        let s = self.session.take().unwrap();
        let (s, reply) = s.handle(msg, &mut self.rng).unwrap();
        let (s, reply) = if s.wants_input() {
            let (s, m) = s.mask_input(&[self.index as u64; DIM]).unwrap();
            (s, Some(m))
        } else {
            (s, reply)
        };
        self.session = Some(s);
        reply
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

fn cohort(pki: &TestPki) -> Vec<v1::CohortMember> {
    NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| v1::CohortMember {
            index: i as u32 + 1,
            name: n.to_string(),
            certificate: der_of(&pki.files_for(n).cert),
        })
        .collect()
}

fn params(round: u64) -> sa::RoundParams {
    sa::RoundParams {
        round,
        participants: vec![1, 2, 3],
        threshold: 2,
        neighbours: 2,
        graph_seed: [0; 32],
        dim: DIM,
        modulus_bits: 64,
        signed_keys: true,
    }
}

/// A signed-key statistics round over alice (1), bob (2) and carol (3).
fn announce(round: u64, pki: &TestPki) -> In {
    let p = params(round);
    In::Announce(v1::RoundAnnounce {
        round,
        kind: v1::AggregationKind::Statistics as i32,
        dimension: DIM as u64,
        encoding: Some(v1::Encoding {
            scale_bits: 16,
            modulus_bits: p.modulus_bits,
        }),
        secagg: Some(v1::SecAggSetup {
            my_index: 1,
            cohort: cohort(pki),
            threshold: p.threshold as u32,
            neighbours: p.neighbours as u32,
            graph_seed: p.graph_seed.to_vec(),
            signed_keys: true,
        }),
        ..Default::default()
    })
}

/// Bob and carol joining `round` with their certificate keys; their adverts.
fn start_peers(round: u64, pki: &TestPki) -> (Vec<Peer>, Vec<sa::AdvertiseKeys>) {
    let members = cohort(pki);
    let mut out = Vec::new();
    let mut adverts = Vec::new();
    for index in [2u32, 3] {
        let files = pki.files_for(NAMES[index as usize - 1]);
        let signing = KeySigning::from_material(&files.load().unwrap()).unwrap();
        let (signer, verifier) = signing
            .for_round(index, members.iter().map(CohortCertificate::from))
            .unwrap();
        let cfg = sa::ClientConfig {
            params: params(round),
            me: index,
            signer: Some(Box::new(signer)),
            verifier: Some(Box::new(verifier)),
        };
        let mut rng = StdRng::seed_from_u64(round * 10 + index as u64);
        let (session, msg) = sa::ClientSession::start(cfg, &mut rng).unwrap();
        let sa::ClientMessage::AdvertiseKeys(k) = msg else {
            panic!()
        };
        adverts.push(k);
        out.push(Peer {
            index,
            session: Some(session),
            rng,
        });
    }
    (out, adverts)
}

/// The round driven by a `ServerRound` up to the consistency check: keys,
/// shares and masked inputs of all three. Returns the server and the peers.
async fn up_to_survivor_lists(
    alice: &mut Session,
    round: u64,
    pki: &TestPki,
) -> (sa::ServerRound, Vec<Peer>, Vec<(u32, sa::ServerMessage)>) {
    alice.send(announce(round, pki)).await;
    let Some(Out::RoundReply(r)) = alice.next().await else {
        panic!("no reply to the announcement")
    };
    assert!(r.accept, "{r:?}");
    let Some(Out::Keys(k)) = alice.next().await else {
        panic!("no keys")
    };
    let mut server = sa::ServerRound::new(params(round)).unwrap();
    server
        .receive(
            1,
            sa::ClientMessage::AdvertiseKeys(convert::keys_from_wire(1, &k).unwrap()),
        )
        .unwrap();
    let (mut peers, adverts) = start_peers(round, pki);
    for (p, a) in peers.iter().zip(adverts) {
        server
            .receive(p.index, sa::ClientMessage::AdvertiseKeys(a))
            .unwrap();
    }
    // Keys, then shares: the server's messages to alice go on the wire.
    for _ in 0..2 {
        let sa::StageOutcome::Send(msgs) = server.close_stage().unwrap() else {
            panic!()
        };
        deliver(alice, &mut server, &mut peers, msgs, false).await;
        match alice.next().await {
            Some(Out::ShareKeys(s)) => server
                .receive(
                    1,
                    sa::ClientMessage::ShareKeys(convert::share_keys_from_wire(&s)),
                )
                .unwrap(),
            Some(Out::Chunk(c)) => {
                // Alice's masked input (one chunk at this size).
                let mut a = Assembler::<u64>::new(round, ChunkPurpose::MaskedInput, DIM as u64);
                assert!(a.push(&c).unwrap());
                let values = a.finish().unwrap();
                server
                    .receive(
                        1,
                        sa::ClientMessage::MaskedInput(sa::MaskedInput { round, values }),
                    )
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let sa::StageOutcome::Send(lists) = server.close_stage().unwrap() else {
        panic!()
    };
    (server, peers, lists)
}

/// A survivor list for `round`.
fn list(round: u64, survivors: Vec<u32>) -> sa::ServerMessage {
    sa::ServerMessage::SurvivorList(sa::SurvivorList { round, survivors })
}

fn signature_of(m: Option<sa::ClientMessage>) -> Vec<u8> {
    match m {
        Some(sa::ClientMessage::SurvivorSignature(s)) => s.signature,
        other => panic!("expected a signature, got {other:?}"),
    }
}

struct Participant {
    child: Child,
    log: PathBuf,
}

impl Drop for Participant {
    fn drop(&mut self) {
        tessera_testkit::process::kill_and_reap(&mut self.child);
    }
}

fn start_alice(dir: &Path, pki: &TestPki, port: u16) -> Participant {
    let csv = dir.join("alice.csv");
    std::fs::write(&csv, "x1,x2,y\n1,2,0\n3,4,1\n5,6,1\n7,8,0\n").unwrap();
    let files = pki.files_for("alice");
    let config = dir.join("alice.toml");
    let toml = format!(
        "[participant]\ncoordinator = \"https://127.0.0.1:{port}\"\ndata = {:?}\nstate_dir = {:?}\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        csv,
        dir.join("alice-state"),
        files.ca,
        files.cert,
        files.key,
    );
    std::fs::write(&config, toml).unwrap();
    let log = dir.join("alice.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera-sim"))
        .args(["participant", "run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Participant { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheating_coordinator_is_caught_by_a_participant_process() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path().join("pki"), &NAMES);
    tessera_certs::install_crypto_provider();
    let (tls, _) = tessera_coordinator::tls_reload::load(&pki.coordinator_files()).unwrap();
    let (events_tx, events_rx) = mpsc::channel(256);
    let service = FederationService::new(events_tx, None, Arc::new(Metrics::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (conn_tx, conn_rx) = mpsc::channel(8);
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(accept_loop(
        listener,
        Arc::new(TlsConfigCell::new(tls)),
        AcceptLimits::default(),
        conn_tx,
        stop_rx.clone(),
    ));
    tokio::spawn(tessera_coordinator::http2::serve(service, conn_rx, stop_rx));

    let participant = start_alice(dir.path(), &pki, port);
    let log = || std::fs::read_to_string(&participant.log).unwrap_or_default();
    let mut alice = Session::accept(events_rx).await;
    alice
        .send(In::Welcome(v1::Welcome {
            protocol_version: tessera_proto::PROTOCOL_VERSION,
            participant_name: "alice".into(),
            federation: "hostile".into(),
            task: Some(v1::TaskSpec {
                model: "logistic".into(),
                features: vec!["x1".into(), "x2".into()],
                label: "y".into(),
                positive: "> 0".into(),
                ..Default::default()
            }),
        }))
        .await;

    // 1. Honest: the same list to everyone, every signature forwarded;
    //    alice signs, checks, and reveals her shares; the sum comes out.
    let (mut server, mut peers, lists) = up_to_survivor_lists(&mut alice, 1, &pki).await;
    deliver(&alice, &mut server, &mut peers, lists, true).await;
    let Some(Out::SurvivorSignature(s)) = alice.next().await else {
        panic!("alice did not sign the survivor list")
    };
    server
        .receive(
            1,
            sa::ClientMessage::SurvivorSignature(convert::survivor_signature_from_wire(&s)),
        )
        .unwrap();
    let sa::StageOutcome::Send(reqs) = server.close_stage().unwrap() else {
        panic!()
    };
    deliver(&alice, &mut server, &mut peers, reqs, true).await;
    let Some(Out::Unmask(u)) = alice.next().await else {
        panic!("alice did not answer the honest unmask request:\n{}", log())
    };
    server
        .receive(
            1,
            sa::ClientMessage::UnmaskResponse(convert::unmask_response_from_wire(&u)),
        )
        .unwrap();
    let sa::StageOutcome::Finished { contributors, .. } = server.close_stage().unwrap() else {
        panic!()
    };
    assert_eq!(contributors, vec![1, 2, 3]);

    // 2. The coordinator tells alice that carol dropped (to get alice's
    //    share of carol's mask key) while bob and carol sign that everyone
    //    survived. Alice signs what she was told, then refuses to reveal.
    let (_server, mut peers, _) = up_to_survivor_lists(&mut alice, 2, &pki).await;
    alice
        .send(
            convert::server_message_to_wire(&list(2, vec![1, 2]))
                .body
                .unwrap(),
        )
        .await;
    let Some(Out::SurvivorSignature(own)) = alice.next().await else {
        panic!("alice did not sign the survivor list")
    };
    let mut signatures = vec![(1, own.signature)];
    for peer in &mut peers {
        signatures.push((
            peer.index,
            signature_of(peer.handle(list(2, vec![1, 2, 3]))),
        ));
    }
    let lie = sa::UnmaskRequest {
        round: 2,
        survivors: vec![2],
        dropped: vec![3],
        signatures,
    };
    alice
        .send(In::UnmaskRequest(convert::unmask_request_to_wire(&lie)))
        .await;
    let answer = alice.next_within(Duration::from_secs(3)).await;
    assert!(
        answer.is_none(),
        "alice answered a coordinator that lied about dropouts: {answer:?}\n{}",
        log()
    );
    let text = log();
    assert!(
        text.contains("unmask request refused")
            && text.contains("is not over the survivor set this participant was given"),
        "{text}"
    );

    // 3. Round 1 announced again: declined before any key leaves.
    alice.send(announce(1, &pki)).await;
    let Some(Out::RoundReply(r)) = alice.next().await else {
        panic!("no reply to the reused round")
    };
    assert!(!r.accept);
    assert_eq!(r.code, DeclineCode::InvalidSecureAggregation as i32);
    assert!(
        log().contains("the coordinator reuses a round"),
        "{}",
        log()
    );

    // 4. A graph seed of the coordinator's choosing: alice sends no shares.
    alice.send(announce(3, &pki)).await;
    let Some(Out::RoundReply(r)) = alice.next().await else {
        panic!()
    };
    assert!(r.accept);
    let Some(Out::Keys(_)) = alice.next().await else {
        panic!()
    };
    let (_, adverts) = start_peers(3, &pki);
    let chosen = sa::PeerKeys {
        round: 3,
        keys: adverts,
        graph_seed: [0x66; 32],
    };
    alice
        .send(In::PeerKeys(convert::peer_keys_to_wire(&chosen)))
        .await;
    let answer = alice.next_within(Duration::from_secs(3)).await;
    assert!(
        answer.is_none(),
        "alice answered a chosen graph seed: {answer:?}"
    );
    assert!(
        log().contains("graph seed is not the one derived from the advertised keys"),
        "{}",
        log()
    );
    drop(participant);
}
