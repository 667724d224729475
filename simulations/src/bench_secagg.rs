//! `tessera-sim bench secagg`: one whole secure-aggregation round in process,
//! with real cryptography, timed per stage.
//!
//! n participants (indices 1..=n) and one coordinator run the protocol of
//! `tessera-secagg` with parameters from `RoundParams::recommended` for the
//! given dropout rate. A fraction `--dropout` of the participants (chosen
//! from the seed) disappears right after sending its encrypted shares — the
//! costliest dropout for the coordinator, which must then recompute and
//! remove every pairwise mask those participants shared with survivors.
//!
//! Everything runs on one thread, one party after the other, so the total
//! time is the sum of all parties' compute time (network excluded). The
//! "PRG lower bound" is the time, measured in the same run, of only expanding
//! the masks the protocol needs with the same PRG: each contributor's self
//! mask and pairwise masks, and the coordinator's removal of every self mask
//! and of every mask shared with a dropped participant. The ratio of the two
//! shows what the protocol costs beyond that unavoidable work.
//!
//! The neighbour degree k and threshold t default to
//! `RoundParams::recommended` (the smallest k and t meeting Bell et al.'s
//! bounds at 2^-40 security for the dropout rate). `--neighbours K` and
//! `--threshold T` set them instead, to measure at another system's
//! configuration: Flower's SecAgg+ examples use `num_shares = 5`, which
//! counts the client's own share, so `--neighbours 4`; without
//! `--threshold` the threshold is then the majority ⌊k/2⌋ + 1. The report
//! says what such a choice gives under the same bounds (the log2 of the
//! probabilities of leaking a secret, of disconnecting the survivors and of
//! failing within the dropout rate).
//!
//! `--signed-keys` runs the round as `[secagg] signed_keys = true` does:
//! every participant signs its keys (Ed25519, a key pair per participant
//! made before the clock starts, standing in for its certificate key),
//! verifies every other participant's signature, derives the graph seed
//! from all keys, and the consistency check (survivor list, signatures,
//! their verification before unmasking) is an extra stage.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::sync::Arc;
use tessera_secagg::prg::{expand_discard, modulus_mask};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use tessera_secagg::{
    ClientConfig, ClientSession, KeySigner, KeyVerifier, RoundParams, ServerMessage, ServerRound,
    StageOutcome,
};

/// Options of `tessera-sim bench secagg`.
#[derive(clap::Args, Debug, Clone)]
pub struct SecAggBenchArgs {
    /// Number of participants n.
    #[arg(long, default_value_t = 100)]
    pub participants: usize,
    /// Vector dimension d.
    #[arg(long, default_value_t = 1_000_000)]
    pub dim: usize,
    /// Fraction of participants that drop out after sending their shares.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of inputs, keys and the neighbour graph (a benchmark, not private).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Arithmetic modulo 2^modulus_bits (1..=64).
    #[arg(long, default_value_t = 32)]
    pub modulus_bits: u32,
    /// Neighbour degree k (even, or n − 1); default: the secure choice
    /// from Bell et al.'s bounds for the dropout rate.
    #[arg(long)]
    pub neighbours: Option<usize>,
    /// Shamir threshold t (k/2 < t ≤ k); default: with `--neighbours`,
    /// ⌊k/2⌋ + 1, else the secure choice.
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Signed keys, derived graph seed and the consistency check, as with
    /// `[secagg] signed_keys = true` (Ed25519 signatures).
    #[arg(long)]
    pub signed_keys: bool,
}

/// A participant's signing key in the benchmark (stands in for its
/// certificate key).
struct BenchSigner(Ed25519KeyPair);

impl KeySigner for BenchSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_ref().to_vec()
    }
}

/// Every participant's public key.
#[derive(Clone)]
struct BenchVerifier(Arc<BTreeMap<u32, Vec<u8>>>);

impl KeyVerifier for BenchVerifier {
    fn verify(&self, peer: u32, message: &[u8], signature: &[u8]) -> bool {
        self.0.get(&peer).is_some_and(|pk| {
            UnparsedPublicKey::new(&ED25519, pk)
                .verify(message, signature)
                .is_ok()
        })
    }
}

/// Ed25519 key pairs of participants 1..=n, from the benchmark seed.
fn signing_keys(seed: u64, n: u32) -> anyhow::Result<(Vec<Ed25519KeyPair>, BenchVerifier)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5157_4e45_445f_4b45);
    let mut pairs = Vec::new();
    let mut public = BTreeMap::new();
    for u in 1..=n {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let pair = Ed25519KeyPair::from_seed_unchecked(&s)
            .map_err(|_| anyhow::anyhow!("cannot make an Ed25519 key"))?;
        public.insert(u, pair.public_key().as_ref().to_vec());
        pairs.push(pair);
    }
    Ok((pairs, BenchVerifier(Arc::new(public))))
}

/// Seconds spent in each protocol stage.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct StageSeconds {
    /// Stage 1: advertise keys (participant: key generation; coordinator:
    /// receiving keys and sending each participant its neighbours' keys).
    pub advertise_keys: f64,
    /// Stage 2: share keys (participant: agreement, Shamir, encryption;
    /// coordinator: checking and routing bundles).
    pub share_keys: f64,
    /// Stage 3: masked input (participant: decrypting shares and masking;
    /// coordinator: adding masked vectors to the running sum).
    pub masked_input: f64,
    /// Signed keys only: the consistency check (participant: checking and
    /// signing the survivor list; coordinator: collecting signatures).
    pub consistency_check: f64,
    /// Stage 4: unmasking (participant: revealing shares; coordinator:
    /// reconstruction and mask removal).
    pub unmask: f64,
}

impl StageSeconds {
    fn total(&self) -> f64 {
        self.advertise_keys
            + self.share_keys
            + self.masked_input
            + self.consistency_check
            + self.unmask
    }

    fn add(&mut self, stage: usize, seconds: f64) {
        match stage {
            0 => self.advertise_keys += seconds,
            1 => self.share_keys += seconds,
            2 => self.masked_input += seconds,
            3 => self.consistency_check += seconds,
            _ => self.unmask += seconds,
        }
    }

    fn divided(&self, by: [usize; 5]) -> StageSeconds {
        let d = |s: f64, n: usize| if n == 0 { 0.0 } else { s / n as f64 };
        StageSeconds {
            advertise_keys: d(self.advertise_keys, by[0]),
            share_keys: d(self.share_keys, by[1]),
            masked_input: d(self.masked_input, by[2]),
            consistency_check: d(self.consistency_check, by[3]),
            unmask: d(self.unmask, by[4]),
        }
    }
}

/// What one benchmark run measured.
#[derive(Serialize, Debug)]
pub struct SecAggBenchReport {
    /// Time of the whole round: every participant's and the coordinator's work.
    pub total_seconds: f64,
    /// Time of only expanding the masks the round needs, same PRG, same run.
    pub prg_lower_bound_seconds: f64,
    /// total_seconds / prg_lower_bound_seconds.
    pub ratio: f64,
    /// Mean payload bytes sent by a participant that completed the round.
    pub bytes_per_participant: u64,
    /// Mean payload bytes a participant that completed the round received.
    pub bytes_received_per_participant: u64,
    /// Whether the recovered sum equals the sum of the contributors' inputs.
    pub correct: bool,
    /// Mean seconds per stage for one participant.
    pub participant_stage_seconds: StageSeconds,
    /// Seconds per stage for the coordinator.
    pub coordinator_stage_seconds: StageSeconds,
    /// Number of participants n.
    pub participants: usize,
    /// Vector dimension d.
    pub dim: usize,
    /// Requested dropout fraction.
    pub dropout: f64,
    /// Participants that dropped after sending shares.
    pub dropped: usize,
    /// Participants whose input is in the sum.
    pub contributors: usize,
    /// Neighbour-graph degree k.
    pub neighbours: usize,
    /// Shamir threshold t.
    pub threshold: usize,
    /// Modulus bits.
    pub modulus_bits: u32,
    /// Masks of d elements expanded in the round (and in the lower bound).
    pub masks_expanded: u64,
    /// Whether k and t are the recommended ones (not set by flags).
    pub recommended: bool,
    /// Whether k and t meet the default security and correctness targets
    /// of `tessera-secagg` at the dropout rate.
    pub meets_targets: bool,
    /// Bell et al.'s bounds for k and t, or which target they miss.
    pub assessment: String,
}

/// The round parameters `args` ask for: recommended, or with `--neighbours`
/// and `--threshold` set (checked).
pub fn choose_params(args: &SecAggBenchArgs, graph_seed: [u8; 32]) -> anyhow::Result<RoundParams> {
    let n = args.participants as u32;
    let mut params = match args.neighbours {
        Some(k) => RoundParams {
            round: 1,
            participants: (1..=n).collect(),
            threshold: k / 2 + 1,
            neighbours: k,
            graph_seed,
            dim: args.dim,
            modulus_bits: args.modulus_bits,
            signed_keys: args.signed_keys,
        },
        None => RoundParams::recommended(
            1,
            (1..=n).collect(),
            args.dim,
            args.modulus_bits,
            args.dropout,
            graph_seed,
        )
        .context("choosing round parameters")?,
    };
    if let Some(t) = args.threshold {
        params.threshold = t;
    }
    params.signed_keys = args.signed_keys;
    params.validate().context("--neighbours/--threshold")?;
    Ok(params)
}

/// Whether `params` meet the default targets at `dropout`, and their
/// bounds or the target they miss.
pub fn assessment(params: &RoundParams, dropout: f64) -> (bool, String) {
    let targets = tessera_secagg::SecurityTargets::default();
    match params.assess(dropout, targets) {
        Ok(a) => (
            true,
            format!(
                "meets the targets: log2 P[secret leak] {:.1}, log2 P[survivors disconnected] {:.1}, \
                 log2 P[round fails at dropout {dropout}] {:.1}",
                a.share_leak_log2, a.disconnect_log2, a.correctness_failure_log2
            ),
        ),
        Err(e) => (
            false,
            format!("misses the 2^-{} targets: {e}", targets.security_bits),
        ),
    }
}

/// A participant's input, generated on the fly (not part of the timing).
fn input_of(seed: u64, u: u32, dim: usize, bits: u32) -> Vec<u64> {
    let mut state = seed ^ (u64::from(u) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    let mask = modulus_mask(bits);
    (0..dim)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) & mask
        })
        .collect()
}

fn timed<T>(acc: &mut f64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *acc += start.elapsed().as_secs_f64();
    out
}

/// Runs one round and measures it (see the module docs).
pub fn run(args: &SecAggBenchArgs) -> anyhow::Result<SecAggBenchReport> {
    ensure!(args.participants >= 3, "need at least 3 participants");
    ensure!(
        u32::try_from(args.participants).is_ok(),
        "too many participants"
    );
    ensure!(
        (0.0..1.0).contains(&args.dropout),
        "dropout must be in [0, 1)"
    );
    let n = args.participants as u32;
    let bits = args.modulus_bits;
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let mut graph_seed = [0u8; 32];
    rng.fill_bytes(&mut graph_seed);
    let params = choose_params(args, graph_seed)?;
    let (meets_targets, assessment) = assessment(&params, args.dropout);

    // Who drops after sending shares: a seeded partial shuffle.
    let mut order: Vec<u32> = (1..=n).collect();
    let n_drop = (args.dropout * f64::from(n)).round() as usize;
    for i in 0..n_drop {
        let j = i + (rng.next_u64() % (order.len() - i) as u64) as usize;
        order.swap(i, j);
    }
    let dropped: BTreeSet<u32> = order[..n_drop].iter().copied().collect();

    let mut server = ServerRound::new(params.clone())?;
    let (mut signing, verifier) = if args.signed_keys {
        let (pairs, v) = signing_keys(args.seed, n)?;
        (pairs.into_iter().map(Some).collect(), Some(v))
    } else {
        (Vec::new(), None)
    };
    let mut client_time = StageSeconds::default();
    let mut client_count = [0usize; 5];
    let mut server_time = [0f64; 5];
    // Stage slots: keys, shares, masked input, consistency check, unmask
    // (the fourth close is the unmasking one without signed keys).
    let slot = |stage: usize| {
        if !args.signed_keys && stage == 3 {
            4
        } else {
            stage
        }
    };
    let mut sent: BTreeMap<u32, u64> = BTreeMap::new();
    let mut received: BTreeMap<u32, u64> = BTreeMap::new();
    let mut sessions: BTreeMap<u32, (ClientSession, ChaCha20Rng)> = BTreeMap::new();

    // Stage 1.
    for u in 1..=n {
        let mut crng = ChaCha20Rng::seed_from_u64(
            args.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(u)),
        );
        let signer = signing
            .get_mut(u as usize - 1)
            .and_then(Option::take)
            .map(|k| Box::new(BenchSigner(k)) as Box<dyn KeySigner>);
        let cfg = ClientConfig {
            params: params.clone(),
            me: u,
            signer,
            verifier: verifier
                .clone()
                .map(|v| Box::new(v) as Box<dyn KeyVerifier>),
        };
        let mut t = 0.0;
        let (s, m) = timed(&mut t, || ClientSession::start(cfg, &mut crng))?;
        client_time.add(0, t);
        client_count[0] += 1;
        *sent.entry(u).or_default() += m.payload_len(bits);
        timed(&mut server_time[0], || server.receive(u, m))?;
        sessions.insert(u, (s, crng));
    }

    let mut expected = vec![0u64; args.dim];
    let mut masked_by: BTreeSet<u32> = BTreeSet::new();
    let mut routed_from: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut client_masks: u64 = 0;
    let sum;
    let contributors;
    let mut stage = 0usize;
    loop {
        let outcome = timed(&mut server_time[slot(stage)], || server.close_stage())?;
        let msgs = match outcome {
            StageOutcome::Send(msgs) => msgs,
            StageOutcome::Finished {
                sum: s,
                contributors: c,
            } => {
                sum = s;
                contributors = c;
                break;
            }
        };
        stage += 1;
        ensure!(stage < 5, "round did not finish in five stages");
        for (to, msg) in msgs {
            *received.entry(to).or_default() += msg.payload_len();
            if let ServerMessage::RoutedShares(r) = &msg {
                routed_from.insert(to, r.shares.iter().map(|s| s.from).collect());
                if dropped.contains(&to) {
                    sessions.remove(&to);
                    continue;
                }
            }
            let Some((session, mut crng)) = sessions.remove(&to) else {
                continue;
            };
            let mut t = 0.0;
            let (session, reply) = timed(&mut t, || session.handle(msg, &mut crng))?;
            let (session, reply) = if session.wants_input() {
                let input = input_of(args.seed, to, args.dim, bits);
                for (e, x) in expected.iter_mut().zip(&input) {
                    *e = e.wrapping_add(*x);
                }
                if let ClientSession::AwaitingInput(s) = &session {
                    client_masks += 1 + s.mask_partners().len() as u64;
                }
                masked_by.insert(to);
                let (s, m) = timed(&mut t, || session.mask_input_owned(input))?;
                (s, Some(m))
            } else {
                (session, reply)
            };
            client_time.add(slot(stage), t);
            client_count[slot(stage)] += 1;
            if let Some(m) = reply {
                *sent.entry(to).or_default() += m.payload_len(bits);
                timed(&mut server_time[slot(stage)], || server.receive(to, m))?;
            }
            sessions.insert(to, (session, crng));
        }
    }
    let mask = modulus_mask(bits);
    for e in expected.iter_mut() {
        *e &= mask;
    }
    let correct =
        sum == expected && contributors.iter().copied().collect::<BTreeSet<_>>() == masked_by;

    // The coordinator's mask work: one self mask per contributor, one pairwise
    // mask per (contributor, dropped neighbour it masked with).
    let server_masks: u64 = contributors.len() as u64
        + contributors
            .iter()
            .map(|v| {
                routed_from
                    .get(v)
                    .map_or(0, |f| f.iter().filter(|u| dropped.contains(u)).count())
                    as u64
            })
            .sum::<u64>();
    let masks_expanded = client_masks + server_masks;
    let start = Instant::now();
    let mut check = 0u8;
    for i in 0..masks_expanded {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        check ^= expand_discard(&seed, args.dim, bits);
    }
    let prg_lower_bound_seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(check);

    let coordinator = StageSeconds {
        advertise_keys: server_time[0],
        share_keys: server_time[1],
        masked_input: server_time[2],
        consistency_check: server_time[3],
        unmask: server_time[4],
    };
    let total_seconds = client_time.total() + coordinator.total();
    let completed: Vec<u32> = contributors.clone();
    if completed.is_empty() {
        bail!("no participant completed the round");
    }
    let mean = |m: &BTreeMap<u32, u64>| {
        completed
            .iter()
            .map(|u| m.get(u).copied().unwrap_or(0))
            .sum::<u64>()
            / completed.len() as u64
    };
    Ok(SecAggBenchReport {
        total_seconds,
        prg_lower_bound_seconds,
        ratio: total_seconds / prg_lower_bound_seconds.max(f64::MIN_POSITIVE),
        bytes_per_participant: mean(&sent),
        bytes_received_per_participant: mean(&received),
        correct,
        participant_stage_seconds: client_time.divided(client_count),
        coordinator_stage_seconds: coordinator,
        participants: args.participants,
        dim: args.dim,
        dropout: args.dropout,
        dropped: dropped.len(),
        contributors: contributors.len(),
        neighbours: params.neighbours,
        threshold: params.threshold,
        modulus_bits: bits,
        masks_expanded,
        recommended: args.neighbours.is_none() && args.threshold.is_none(),
        meets_targets,
        assessment,
    })
}

/// Prints the report: a table, or with `json` exactly one JSON object on stdout.
pub fn print(report: &SecAggBenchReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot serialise the report: {e}"),
        }
        return;
    }
    let p = &report.participant_stage_seconds;
    let c = &report.coordinator_stage_seconds;
    println!(
        "secure aggregation: n = {}, d = {}, k = {}, t = {}, modulus 2^{}, {} dropped after shares, {} contributors",
        report.participants,
        report.dim,
        report.neighbours,
        report.threshold,
        report.modulus_bits,
        report.dropped,
        report.contributors
    );
    println!(
        "{:<18} {:>14} {:>14}",
        "stage", "participant s", "coordinator s"
    );
    for (name, a, b) in [
        ("advertise keys", p.advertise_keys, c.advertise_keys),
        ("share keys", p.share_keys, c.share_keys),
        ("masked input", p.masked_input, c.masked_input),
        (
            "consistency check",
            p.consistency_check,
            c.consistency_check,
        ),
        ("unmask", p.unmask, c.unmask),
    ] {
        println!("{name:<18} {a:>14.6} {b:>14.6}");
    }
    println!("total (all parties)       {:.3} s", report.total_seconds);
    println!(
        "PRG lower bound           {:.3} s ({} masks of {} elements)",
        report.prg_lower_bound_seconds, report.masks_expanded, report.dim
    );
    println!("ratio                     {:.2}", report.ratio);
    println!(
        "bytes per participant     {} sent, {} received",
        report.bytes_per_participant, report.bytes_received_per_participant
    );
    println!("correct                   {}", report.correct);
    let choice = if report.recommended {
        "recommended for the dropout rate"
    } else {
        "set by --neighbours/--threshold"
    };
    println!("k, t ({choice}): {}", report.assessment);
}

#[cfg(test)]
mod tests;
