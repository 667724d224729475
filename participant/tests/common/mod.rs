//! A site next to a test CSV with planted values, and a coordinator's
//! announcements (sane ones, to be made hostile one term at a time), for
//! driving a `Site` without a network.

#![allow(dead_code)]

use std::path::PathBuf;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tessera_participant::config::ParticipantConfig;
use tessera_participant::data::LocalData;
use tessera_participant::ledger::{Contribution, SiteLedger};
use tessera_participant::site::{Action, Site};
use tessera_proto::convert;
use tessera_proto::v1::{
    self, CoordinatorMessage, ParticipantMessage, coordinator_message::Body as In,
    participant_message::Body as Out,
};
use tessera_secagg as sa;

/// Data rows in the planted CSV.
pub(crate) const ROWS: usize = 1237;
/// Planted in the first row's `x1`.
pub(crate) const PLANTED_X1: f64 = 7351.8264;
/// Planted in the first row's `x2`.
pub(crate) const PLANTED_X2: f64 = 0.00073194;
/// The only non-numeric value of the `probe` column, at data row
/// [`PROBE_ROW`] (file line `PROBE_ROW + 2`).
pub(crate) const PROBE_VALUE: &str = "ZQX-unique-label-5521";
/// Data row of [`PROBE_VALUE`].
pub(crate) const PROBE_ROW: usize = 1000;
/// The two values of the non-numeric `diagnosis` column.
pub(crate) const DIAGNOSES: [&str; 2] = ["malignant-zq7", "benign-zq7"];
/// The CSV's file name.
pub(crate) const CSV_NAME: &str = "records-zq4471.csv";
/// The task's features.
pub(crate) const FEATURES: [&str; 3] = ["x1", "x2", "x3"];

/// Statistics bounds: ranges of x1, x2, x3 and the row cap (below [`ROWS`]).
pub(crate) const LO: [f64; 3] = [0.0, 0.0, 0.0];
/// Upper ends of the statistics ranges.
pub(crate) const HI: [f64; 3] = [100.0, 1.0, 50.0];
/// Row cap of private statistics.
pub(crate) const MAX_ROWS: f64 = 500.0;
/// Noise multiplier of private statistics.
pub(crate) const STATS_SIGMA: f64 = 1.5;
/// Noise multipliers of adaptive clipping: σ_Δ and σ_b.
pub(crate) const SIGMA_UPDATE: f64 = 1.0;
/// Noise multiplier of the clipping bit.
pub(crate) const SIGMA_BIT: f64 = 2.0;
/// Clip norm of training rounds.
pub(crate) const CLIP: f64 = 1.0;

/// The CSV text: `x1,x2,x3,y,probe,diagnosis` with [`ROWS`] rows.
pub(crate) fn csv_text() -> String {
    let mut s = String::from("x1,x2,x3,y,probe,diagnosis\n");
    for i in 0..ROWS {
        let x1 = if i == 0 {
            PLANTED_X1
        } else {
            20.0 + (i * 37 % 61) as f64 + 0.25
        };
        let x2 = if i == 0 {
            PLANTED_X2
        } else {
            (i % 10) as f64 / 10.0
        };
        let x3 = (i * 7 % 40) as f64;
        let y = u8::from(i % 3 == 0 || x3 > 30.0);
        let probe = if i == PROBE_ROW {
            PROBE_VALUE.to_string()
        } else {
            "1.5".into()
        };
        let diagnosis = DIAGNOSES[i % 2];
        s.push_str(&format!("{x1},{x2},{x3},{y},{probe},{diagnosis}\n"));
    }
    s
}

/// A site's directory: its CSV (under a planted directory name) and state.
pub(crate) struct SiteDir {
    /// Keeps the directory alive.
    pub(crate) dir: tempfile::TempDir,
    /// The CSV.
    pub(crate) csv: PathBuf,
}

impl SiteDir {
    /// A fresh directory with the planted CSV.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("hospital-data-zq4471");
        std::fs::create_dir_all(&data).unwrap();
        let csv = data.join(CSV_NAME);
        std::fs::write(&csv, csv_text()).unwrap();
        Self { dir, csv }
    }

    /// The configuration: `participant` lines go in `[participant]`, `rest`
    /// (whole sections) after it.
    pub(crate) fn config(&self, participant: &str, rest: &str) -> ParticipantConfig {
        let path = self.dir.path().join("participant.toml");
        let toml = format!(
            "[participant]\ncoordinator = \"https://127.0.0.1:1\"\ndata = {:?}\nstate_dir = {:?}\n{participant}\n\
             [tls]\nca = \"ca.crt\"\ncert = \"site.crt\"\nkey = \"site.key\"\n{rest}\n",
            self.csv.to_str().unwrap(),
            self.dir.path().join("state").to_str().unwrap(),
        );
        std::fs::write(&path, toml).unwrap();
        ParticipantConfig::load(&path).unwrap()
    }

    /// A site with that configuration and its ledger, not yet welcomed.
    pub(crate) fn site(&self, participant: &str, rest: &str) -> Site {
        let config = self.config(participant, rest);
        let ledger = SiteLedger::open(&config.ledger_path()).unwrap();
        // A missing file reads as no data at all (the shell would refuse to
        // start; the machine sees nothing it can parse).
        let data = LocalData::read(&config.participant.data)
            .unwrap_or_else(|_| LocalData::from_bytes(&config.participant.data, Vec::new()));
        Site::with_defaults(config.site_policy(), data, Box::new(ledger), None)
    }

    /// A site welcomed with [`task`]; panics unless the welcome is silent.
    pub(crate) fn joined(&self, participant: &str, rest: &str) -> Site {
        let mut site = self.site(participant, rest);
        let out = site.step(welcome(task(&FEATURES, "y", "> 0")));
        assert!(out.is_empty(), "{out:?}");
        site
    }

    /// The site's ledger, read-only.
    pub(crate) fn ledger(&self) -> SiteLedger {
        SiteLedger::open_read_only(&self.dir.path().join("state").join("site-ledger.sqlite"))
            .unwrap()
    }
}

/// A coordinator message.
pub(crate) fn message(body: In) -> CoordinatorMessage {
    CoordinatorMessage { body: Some(body) }
}

/// A task on the wire.
pub(crate) fn task(features: &[&str], label: &str, positive: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        model: "logistic".into(),
        features: features.iter().map(|f| f.to_string()).collect(),
        label: label.into(),
        positive: positive.into(),
        ..Default::default()
    }
}

/// The welcome of federation `fed` with `task`.
pub(crate) fn welcome(task: v1::TaskSpec) -> CoordinatorMessage {
    message(In::Welcome(v1::Welcome {
        protocol_version: tessera_proto::PROTOCOL_VERSION,
        participant_name: "site-a".into(),
        federation: "fed".into(),
        task: Some(task),
    }))
}

/// A three-member secure-aggregation setup in which the site is index 1.
pub(crate) fn secagg() -> v1::SecAggSetup {
    v1::SecAggSetup {
        my_index: 1,
        cohort: (1..=3)
            .map(|i| v1::CohortMember {
                index: i,
                name: format!("site-{i}"),
                certificate: Vec::new(),
            })
            .collect(),
        threshold: 2,
        neighbours: 2,
        graph_seed: vec![7; 32],
        signed_keys: false,
    }
}

/// The sensitivity of the planted statistics bounds.
pub(crate) fn sensitivity() -> f64 {
    MAX_ROWS * (1.0 + 3.0 * FEATURES.len() as f64).sqrt()
}

/// A sane private statistics round with secure aggregation.
pub(crate) fn private_statistics(round: u64) -> v1::RoundAnnounce {
    v1::RoundAnnounce {
        round,
        kind: v1::AggregationKind::Statistics as i32,
        dimension: 1 + 4 * FEATURES.len() as u64,
        privacy: Some(v1::PrivacyTerms {
            enabled: true,
            noise_multiplier: STATS_SIGMA,
            clip_norm: sensitivity(),
            sampling_rate: 1.0,
            delta: 1e-5,
            ..Default::default()
        }),
        secagg: Some(secagg()),
        encoding: Some(v1::Encoding {
            scale_bits: 20,
            modulus_bits: 64,
        }),
        statistics_bounds: Some(v1::StatisticsBounds {
            lo: LO.to_vec(),
            hi: HI.to_vec(),
            max_rows: MAX_ROWS,
        }),
        ..Default::default()
    }
}

/// Preprocessing for the three features, no indicators.
pub(crate) fn preprocessing() -> v1::Preprocessing {
    v1::Preprocessing {
        mean: vec![50.0, 0.45, 19.5],
        std: vec![18.0, 0.29, 11.5],
        indicator: vec![false; 3],
        ..Default::default()
    }
}

/// The σ_eff of [`SIGMA_UPDATE`] and [`SIGMA_BIT`].
pub(crate) fn sigma_eff() -> f64 {
    tessera_privacy::calibrate::effective_noise_multiplier(SIGMA_UPDATE, SIGMA_BIT)
}

/// A sane private training round with adaptive clipping and secure
/// aggregation: logistic regression on three inputs (4 parameters) and the
/// clipping bit.
pub(crate) fn private_training(round: u64) -> v1::RoundAnnounce {
    v1::RoundAnnounce {
        round,
        kind: v1::AggregationKind::Training as i32,
        training_round: 1,
        planned_rounds: 3,
        dimension: 5,
        training: Some(v1::TrainingSettings {
            local_epochs: 1,
            learning_rate: 0.5,
            batch_size: 16,
            shuffle_seed: 3,
            weight_decay: 0.0,
        }),
        privacy: Some(v1::PrivacyTerms {
            enabled: true,
            noise_multiplier: sigma_eff(),
            clip_norm: CLIP,
            sampling_rate: 1.0,
            delta: 1e-5,
            adaptive_clipping: true,
            update_noise_multiplier: SIGMA_UPDATE,
            clip_count_noise_multiplier: SIGMA_BIT,
            not_private: false,
            ..Default::default()
        }),
        secagg: Some(secagg()),
        encoding: Some(v1::Encoding {
            scale_bits: 16,
            modulus_bits: 32,
        }),
        preprocessing: Some(preprocessing()),
        ..Default::default()
    }
}

/// A sane private training round without adaptive clipping whose three
/// sites add the noise themselves (distributed placement): σ = 1 on the
/// sum, each site √3 times less.
pub(crate) fn distributed_training(round: u64) -> v1::RoundAnnounce {
    let mut a = private_training(round);
    a.dimension = 4;
    let scale = f64::from(a.encoding.unwrap().scale_bits).exp2();
    let p = a.privacy.as_mut().unwrap();
    p.adaptive_clipping = false;
    p.update_noise_multiplier = 0.0;
    p.clip_count_noise_multiplier = 0.0;
    p.noise_multiplier = 1.0;
    p.placement = v1::NoisePlacement::Distributed as i32;
    p.noise_summands = 3;
    p.site_noise_units = CLIP * scale / 3f64.sqrt();
    a
}

/// The global model of a training round, as chunks.
pub(crate) fn model(round: u64, params: &[f32]) -> Vec<CoordinatorMessage> {
    tessera_proto::chunk::split(round, v1::ChunkPurpose::Model, params)
        .into_iter()
        .map(|c| message(In::Chunk(c)))
        .collect()
}

/// What the site sent, and the exits it asked for.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Every message, in order.
    pub(crate) sent: Vec<ParticipantMessage>,
    /// Exit codes and (local) reasons.
    pub(crate) exits: Vec<(u8, String)>,
}

impl Outbox {
    /// Hands `message` to the site and collects what it does.
    pub(crate) fn handle(
        &mut self,
        site: &mut Site,
        message: CoordinatorMessage,
    ) -> Vec<ParticipantMessage> {
        let mut now = Vec::new();
        for a in site.step(message) {
            match a {
                Action::Send(m) => now.push(m),
                Action::Exit { code, reason } => self.exits.push((code, reason)),
            }
        }
        self.sent.extend(now.iter().cloned());
        now
    }

    /// The site's reply to `round`.
    pub(crate) fn reply(&self, round: u64) -> Option<&v1::RoundReply> {
        self.sent.iter().find_map(|m| match &m.body {
            Some(Out::RoundReply(r)) if r.round == round => Some(r),
            _ => None,
        })
    }

    /// Input chunks the site sent for `round`.
    pub(crate) fn input_chunks(&self, round: u64) -> Vec<&v1::VectorChunk> {
        self.sent
            .iter()
            .filter_map(|m| match &m.body {
                Some(Out::Chunk(c)) if c.round == round => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// The code a reply declines with, after checking its reason is exactly
/// that code's fixed text.
pub(crate) fn declined(reply: &v1::RoundReply) -> v1::DeclineCode {
    assert!(!reply.accept, "round {} was accepted", reply.round);
    let (code, text) = tessera_proto::reasons::decline_of(reply);
    assert_eq!(
        reply.reason, text,
        "a decline carries its code's fixed text"
    );
    assert_ne!(code, v1::DeclineCode::Unspecified, "{reply:?}");
    code
}

/// The plain input of `round`, decoded with `encoding`.
pub(crate) fn plain_input(out: &Outbox, round: u64, encoding: v1::Encoding) -> Vec<f64> {
    let chunks = out.input_chunks(round);
    assert!(!chunks.is_empty(), "no input for round {round}");
    let fp = sa::FixedPoint::new(encoding.scale_bits, encoding.modulus_bits).unwrap();
    let mut values = Vec::new();
    for c in chunks {
        assert_eq!(c.purpose, v1::ChunkPurpose::PlainInput as i32);
        if encoding.modulus_bits > 32 {
            values.extend(
                c.data
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap())),
            );
        } else {
            values.extend(
                c.data
                    .chunks_exact(4)
                    .map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap()))),
            );
        }
    }
    fp.decode_sum(&values)
}

/// The two other members (indices 2 and 3) of [`secagg`]'s cohort, run by
/// the secure-aggregation library, so that a site can reach its masked
/// input.
pub(crate) struct Peers {
    round: u64,
    graph_seed: [u8; 32],
    waiting: Vec<sa::AwaitingPeerKeys>,
    keys: Vec<sa::AdvertiseKeys>,
    rng: StdRng,
}

impl Peers {
    /// Peers 2 and 3 of `announce`'s round.
    pub(crate) fn new(announce: &v1::RoundAnnounce) -> Self {
        let setup = announce.secagg.clone().unwrap();
        let params = sa::RoundParams {
            round: announce.round,
            participants: vec![1, 2, 3],
            threshold: setup.threshold as usize,
            neighbours: setup.neighbours as usize,
            graph_seed: setup.graph_seed.as_slice().try_into().unwrap(),
            dim: announce.dimension as usize,
            modulus_bits: announce.encoding.unwrap().modulus_bits,
            signed_keys: false,
        };
        let mut rng = StdRng::seed_from_u64(announce.round);
        let (waiting, keys) = [2u32, 3]
            .iter()
            .map(|&me| {
                let cfg = sa::ClientConfig {
                    params: params.clone(),
                    me,
                    signer: None,
                    verifier: None,
                };
                sa::AwaitingPeerKeys::start(cfg, &mut rng).unwrap()
            })
            .unzip();
        Self {
            round: announce.round,
            graph_seed: params.graph_seed,
            waiting,
            keys,
            rng,
        }
    }

    /// Runs stages 1 and 2 with the site: hands it its peers' keys and the
    /// shares addressed to it, given what it sent so far.
    pub(crate) fn run(mut self, site: &mut Site, out: &mut Outbox) {
        let site_keys = out
            .sent
            .iter()
            .find_map(|m| match &m.body {
                Some(Out::Keys(k)) if k.round == self.round => Some(k.clone()),
                _ => None,
            })
            .expect("the site advertised keys");
        let site_keys = convert::keys_from_wire(1, &site_keys).unwrap();
        let to_site = sa::PeerKeys {
            round: self.round,
            keys: self.keys.clone(),
            graph_seed: self.graph_seed,
        };
        let now = out.handle(
            site,
            message(In::PeerKeys(convert::peer_keys_to_wire(&to_site))),
        );
        assert!(
            now.iter()
                .any(|m| matches!(m.body, Some(Out::ShareKeys(_)))),
            "{now:?}"
        );
        let mut shares = Vec::new();
        for (i, peer) in std::mem::take(&mut self.waiting).into_iter().enumerate() {
            let others: Vec<sa::AdvertiseKeys> = std::iter::once(site_keys.clone())
                .chain(
                    self.keys
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, k)| k.clone()),
                )
                .collect();
            let (_, s) = peer
                .handle_peer_keys(
                    sa::PeerKeys {
                        round: self.round,
                        keys: others,
                        graph_seed: self.graph_seed,
                    },
                    &mut self.rng,
                )
                .unwrap();
            shares.extend(s.shares.into_iter().filter(|e| e.to == 1));
        }
        let routed = sa::RoutedShares {
            round: self.round,
            shares,
        };
        out.handle(
            site,
            message(In::RoutedShares(convert::routed_shares_to_wire(&routed))),
        );
    }
}

/// A training contribution of `federation`'s round `round` at noise
/// multiplier `sigma`, as the site's ledger records it.
pub(crate) fn contribution(federation: &str, round: u64, sigma: f64) -> Contribution {
    Contribution {
        federation: federation.into(),
        round,
        training_round: Some(round as u32),
        kind: "training".into(),
        noise_multiplier: sigma,
        clip_norm: 0.25,
        tv_slack: 0.0,
        not_private: false,
        recorded_at_ms: 1_795_000_000_000 + round as i64,
        site_noise: None,
        event: None,
    }
}
