//! The coordinator's crash loop, shared by the crash-safety tests: a
//! private federation of real processes (`tessera-sim coordinator …`,
//! `tessera-sim participant …` over loopback mutual TLS, secure
//! aggregation, exact discrete Gaussian noise, the coordinator's SQLite
//! store) on the bundled breast-cancer data split IID over the sites, its
//! coordinator SIGKILLed again and again — at seeded random moments and at
//! targeted stages of rounds (keys, shares, masked input, unmask, and right
//! after a ledger row becomes durable, i.e. inside the commit) — and
//! restarted each time on the same port and store; the participants
//! reconnect by themselves ([`Scenario::kill_participants`]: one of them is
//! also SIGKILLed and restarted at most kills).
//!
//! After every kill, once every participant has seen the connection drop:
//! the store opens (a store that cannot be opened fails the test);
//! (a) what the coordinator *sent* is in the ledger — counted from the
//! coordinator's own log, whose lines are written before the messages
//! they announce leave the process: "round started" (a training round's
//! announcement carries the model of the previous training round) and
//! "round released" (the round result follows it); the ledger's ε is at
//! least the ε of those releases; (b) no round is released twice (at most
//! one `released` record per aggregation and per training round, the
//! checkpoint's own aggregation; a ledger row behind every released record
//! and every checkpoint; one checkpoint per training round, consecutive);
//! (c) at the end training resumes and completes: every planned round has
//! its checkpoint, the coordinator and the participants exit 0, the final
//! model is the last checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use tessera_coordinator::store::{RoundStatus, Store};
use tessera_model::RoundKind;
use tessera_privacy::PrivacyEvent;
use tessera_testkit::federation::{Accounting, Federation, Setup, sim_entry_points};
use tessera_testkit::files::field;
use tessera_testkit::process::free_port;

/// δ and the statistics release of the federation (`tessera-sim run`'s defaults).
const LEDGER: Accounting = Accounting::RUN_DEFAULTS;

/// What the coordinator's own logs say it sent out (or was about to: each
/// line is written before the messages it announces are queued).
#[derive(Debug, Default)]
struct Releases {
    /// The highest training round whose model was sent (in a round
    /// announcement, which carries the model of the previous training round).
    model: Option<u32>,
    /// Aggregation numbers whose result (completed) was sent.
    results: BTreeSet<u64>,
}

fn releases_in_coordinator_logs(fed: &Federation) -> Releases {
    let mut out = Releases::default();
    for n in 1..=fed.coordinator_starts() {
        for line in fed.coordinator_log_of(n).lines() {
            if line.contains("round started") && field(line, "kind") == Some("training") {
                let k: u32 = field(line, "training_round")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no training round in {line}"));
                assert!(k >= 1, "{line}");
                out.model = out.model.max(Some(k - 1));
            } else if line.contains("round released") {
                let n: u64 = field(line, "round")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no round in {line}"));
                out.results.insert(n);
            }
        }
    }
    out
}

/// Checks (a) and (b) of the crash-safety acceptance on the store as it is.
/// `sigma`: the training rounds' noise multiplier when every round spends
/// the same (q = 1, fixed clip norm), so the ε of the releases is known
/// beforehand; `None` compares the ledger with its own rows only.
fn check_store_invariants(fed: &Federation, store: &Store, sigma: Option<f64>, when: &str) {
    let ledger = store.ledger().unwrap();
    let rounds = store.rounds().unwrap();
    let checkpoints = store.checkpoints().unwrap();
    let ledger_rounds: BTreeSet<u64> = ledger.iter().map(|r| r.round).collect();
    assert_eq!(
        ledger_rounds.len(),
        ledger.len(),
        "{when}: a round with two ledger rows"
    );

    // (b) Released at most once, and never without its ledger row.
    let mut released_training: BTreeMap<u32, u64> = BTreeMap::new();
    let mut released_statistics = 0;
    for r in rounds.iter().filter(|r| r.status == RoundStatus::Released) {
        assert!(
            ledger_rounds.contains(&r.round),
            "{when}: round {} is released but has no ledger row",
            r.round
        );
        match r.training_round {
            Some(t) => {
                if let Some(other) = released_training.insert(t, r.round) {
                    panic!(
                        "{when}: training round {t} released twice (aggregations {other} and {})",
                        r.round
                    );
                }
            }
            None => released_statistics += 1,
        }
    }
    let checkpoint_of: BTreeMap<u32, u64> = checkpoints
        .iter()
        .map(|c| (c.training_round, c.round))
        .collect();
    for (t, round) in &released_training {
        if let Some(c) = checkpoint_of.get(t) {
            assert_eq!(
                c, round,
                "{when}: training round {t} is released by aggregation {round} but its checkpoint is from {c}"
            );
        }
    }
    assert!(
        released_statistics <= 1,
        "{when}: statistics released twice"
    );
    let mut checkpointed: BTreeSet<u32> = BTreeSet::new();
    for c in &checkpoints {
        assert!(
            checkpointed.insert(c.training_round),
            "{when}: two checkpoints of training round {}",
            c.training_round
        );
        assert!(
            ledger_rounds.contains(&c.round),
            "{when}: checkpoint of aggregation {} without a ledger row",
            c.round
        );
    }
    if let Some(last) = checkpointed.last() {
        assert_eq!(
            checkpointed,
            (0..=*last).collect::<BTreeSet<u32>>(),
            "{when}: checkpoints are not consecutive"
        );
    }

    // (a) Whatever the coordinator sent out is in the ledger.
    let seen = releases_in_coordinator_logs(fed);
    for n in &seen.results {
        assert!(
            ledger_rounds.contains(n),
            "{when}: the coordinator sent the result of round {n}, but the ledger has no row for it"
        );
    }
    let final_model = fed.layout.coordinator_out.join("model.safetensors");
    let final_round = final_model.exists().then(|| {
        tessera_model::read_model(&final_model)
            .expect("final model")
            .round
    });
    let released_model = seen.model.max(final_round);
    if let Some(k) = released_model {
        assert!(
            ledger.iter().any(|r| r.kind == RoundKind::Statistics),
            "{when}: the pooled statistics went out without their ledger event"
        );
        let trained: BTreeSet<u32> = ledger.iter().filter_map(|r| r.training_round).collect();
        for t in 1..=k {
            assert!(
                trained.contains(&t),
                "{when}: the model of training round {k} went out but the ledger has no event for training round {t}"
            );
        }
        if let Some(sigma) = sigma {
            let events: Vec<PrivacyEvent> = ledger.iter().map(|r| r.event.clone()).collect();
            let ledger_eps = LEDGER.epsilon(&events);
            let released_eps = LEDGER.epsilon(&LEDGER.schedule(sigma, k));
            assert!(
                ledger_eps >= released_eps * (1.0 - 1e-12),
                "{when}: ledger ε = {ledger_eps} < ε = {released_eps} of the model of training round {k}"
            );
        }
    }
}

/// Counts the reconnection lines of every participant's log.
fn reconnect_counts(fed: &Federation) -> Vec<usize> {
    fed.site_names()
        .iter()
        .map(|n| {
            fed.log(n)
                .lines()
                .filter(|l| l.contains("connection lost; reconnecting"))
                .count()
        })
        .collect()
}

/// How a kill is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// A random delay after the process starts.
    Random,
    /// A random moment of a secure-aggregation stage (as the coordinator
    /// reports it in its live status).
    Stage(&'static str),
    /// As soon as a new ledger row is durable: inside the commit, between
    /// the ledger row and the release.
    Commit,
}

const KILL_PLAN: [KillAt; 6] = [
    KillAt::Random,
    KillAt::Stage("keys"),
    KillAt::Stage("shares"),
    KillAt::Stage("masked_input"),
    KillAt::Stage("unmask"),
    KillAt::Commit,
];

/// The coordinator's stage as its live status says, if this process wrote it.
fn live_stage(store: Option<&Store>, pid: u32) -> Option<String> {
    let status = store?.live_status().ok()??;
    (status.pid == pid).then_some(status.stage)
}

fn stage_label(stage: Option<&str>) -> String {
    match stage {
        None => "starting".into(),
        Some(s) if s.starts_with("waiting") => "waiting".into(),
        Some(s) => s.to_owned(),
    }
}

/// Where a kill made right after a new ledger row landed: inside the
/// commit (the round not yet recorded as released) or just after it.
fn commit_label(store_path: &Path) -> String {
    let Ok(store) = Store::open_read_only(store_path) else {
        return "commit".into();
    };
    let ledger = store.ledger().unwrap();
    let Some(last) = ledger.last() else {
        return "commit".into();
    };
    let released = store
        .rounds()
        .unwrap()
        .iter()
        .any(|r| r.round == last.round && r.status == RoundStatus::Released);
    let checkpointed = store
        .checkpoints()
        .unwrap()
        .iter()
        .any(|c| c.round == last.round);
    match (checkpointed, released) {
        (false, _) => "commit (ledger row only)".into(),
        (true, false) => "commit (ledger row and checkpoint)".into(),
        (true, true) => "just after commit".into(),
    }
}

/// One crash loop: the federation and how hard it is hit.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Where the run is kept (logs, stores), under the test target's tmp.
    pub dir: &'static str,
    /// Sites.
    pub sites: usize,
    /// Planned training rounds: many, so that the kill loop never reaches
    /// the end (rounds take tens of milliseconds); the last start runs the rest.
    pub planned: u32,
    /// Coordinator kills.
    pub kills: usize,
    /// Noise multiplier of the training rounds.
    pub sigma: f64,
    /// Poisson sampling rate of the cohorts (1: everyone every round).
    pub sampling_rate: f64,
    /// Adaptive clipping on.
    pub adaptive_clipping: bool,
    /// Least participants per round.
    pub min_participants: usize,
    /// Also SIGKILL (and restart) one random participant at most kills.
    pub kill_participants: bool,
    /// Seed of the kill moments.
    pub seed: u64,
}

/// Runs `sc` and checks the invariants after every kill and at the end.
pub(crate) fn run(sc: &Scenario) {
    let planned = sc.planned;
    // Kill moments: up to RANDOM_SPAN_MS after the start (which spans the
    // start-up, the participants' reconnection and the first rounds), or
    // the first time a targeted stage is seen after up to TARGET_SPAN_MS.
    const RANDOM_SPAN_MS: u64 = 500;
    const TARGET_SPAN_MS: u64 = 80;
    // The ε of the releases is known beforehand only for identical rounds.
    let known_sigma = (sc.sampling_rate == 1.0 && !sc.adaptive_clipping).then_some(sc.sigma);
    // Kept after the run (logs, stores) so that a failure can be examined.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(sc.dir);
    let mut setup = Setup::private(sc.sites, planned, sc.sigma, dir);
    setup.privacy.delta = LEDGER.delta;
    setup.privacy.statistics_noise_multiplier = LEDGER.statistics_sigma;
    setup.privacy.sampling_rate = sc.sampling_rate;
    setup.privacy.adaptive_clipping = sc.adaptive_clipping;
    setup.min_participants = sc.min_participants;
    setup.listen = Some(format!("127.0.0.1:{}", free_port()));
    setup.training_seconds = 20.0;
    setup.stage_seconds = 10.0;
    // The final model is then the last checkpoint itself.
    setup.average_last = Some(1);
    let mut fed = Federation::prepare(&setup, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")));
    fed.start_coordinator();
    fed.start_participants();
    let names = fed.site_names();
    let mut participant_kills = 0usize;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sc.seed);
    let mut kills: Vec<(KillAt, String)> = Vec::new();
    let mut first = true;
    let mut completed = 0;
    let started = Instant::now();
    while kills.len() < sc.kills {
        if !first {
            fed.spawn_coordinator();
        }
        first = false;
        let plan = KILL_PLAN[kills.len() % KILL_PLAN.len()];
        let pid = fed.coordinator_pid();
        let spawned = Instant::now();
        let store_path = fed.layout.store();
        let mut store: Option<Store> = None;
        // The last ledger row when this process started (None: not read yet).
        let mut last_row_at_start: Option<Option<u64>> = None;
        // Past half the planned rounds (a fast machine), shorter waits.
        let slow_down = if completed * 2 > planned { 4 } else { 1 };
        let pre_delay = match plan {
            KillAt::Random => {
                Duration::from_millis(rng.random_range(0..RANDOM_SPAN_MS) / slow_down)
            }
            _ => Duration::from_millis(rng.random_range(0..TARGET_SPAN_MS) / slow_down),
        };
        let jitter = Duration::from_millis(rng.random_range(0..4));
        let mut last_stage: Option<String> = None;
        let mut finished_by_itself = None;
        let mut targeted = false;
        // Wait for the chosen moment (bounded), watching the process.
        loop {
            if let Some(status) = fed.poll_coordinator() {
                finished_by_itself = Some(status);
                break;
            }
            if store.is_none() && store_path.exists() {
                store = Store::open_read_only(&store_path).ok();
            }
            if last_row_at_start.is_none() {
                last_row_at_start = store.as_ref().and_then(|s| s.last_ledger_round().ok());
            }
            if let Some(s) = live_stage(store.as_ref(), pid) {
                last_stage = Some(s);
            }
            let waited = spawned.elapsed();
            if waited >= pre_delay {
                let hit = match plan {
                    KillAt::Random => true,
                    KillAt::Stage(stage) => last_stage.as_deref() == Some(stage),
                    // A cheap query, polled tightly: the commit lasts milliseconds.
                    KillAt::Commit => match (&store, last_row_at_start) {
                        (Some(s), Some(at_start)) => s
                            .last_ledger_round()
                            .map(|last| last > at_start)
                            .unwrap_or(false),
                        _ => false,
                    },
                };
                if hit {
                    targeted = true;
                    if plan != KillAt::Commit {
                        std::thread::sleep(jitter);
                    }
                    break;
                }
            }
            if waited > Duration::from_secs(45) {
                break; // the moment never came: kill wherever it is
            }
            std::thread::sleep(if plan == KillAt::Commit {
                Duration::from_micros(200)
            } else {
                Duration::from_millis(1)
            });
        }
        if let Some(status) = finished_by_itself {
            panic!(
                "the coordinator exited on its own ({status}) after {} kills; \
                 planned rounds too few for the kill loop?\n{}",
                kills.len(),
                fed.coordinator_log_of(fed.coordinator_starts())
            );
        }
        // The stage at the last moment: re-read, the kill follows at once.
        if plan != KillAt::Commit
            && let Some(s) = live_stage(store.as_ref(), pid)
        {
            last_stage = Some(s);
        }
        // A participant dies at the same moment, half of the time.
        let victim = (sc.kill_participants && rng.random_range(0..2) == 0)
            .then(|| names[rng.random_range(0..names.len())].clone());
        if let Some(v) = &victim {
            fed.restart_participant(v);
            participant_kills += 1;
        }
        fed.kill_coordinator();
        drop(store);
        // Reconnection lines logged from now on are after the kill (the
        // coordinator stays down until the check is done, so a participant
        // that already noticed logs failed reconnections within its backoff).
        let before = reconnect_counts(&fed);
        let label = match plan {
            KillAt::Commit if targeted => commit_label(&store_path),
            _ => stage_label(last_stage.as_deref()),
        };
        kills.push((plan, label));

        // Let every participant notice the loss (it has then handled every
        // message the killed process sent), then check the store.
        let noticed = Instant::now();
        loop {
            let now = reconnect_counts(&fed);
            let exited = fed.exited_participants();
            if let Some((name, status)) = exited.first() {
                panic!(
                    "participant {name} exited during the kill loop ({status}):\n{}",
                    fed.log(name)
                );
            }
            // A restarted participant logs elsewhere; it was not connected.
            let waiting = names
                .iter()
                .zip(now.iter().zip(&before))
                .any(|(n, (a, b))| victim.as_ref() != Some(n) && a <= b);
            if !waiting {
                break;
            }
            if noticed.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The store must open after any kill; only a coordinator killed
        // before it ever created its store may leave none.
        let opened = match Store::open_read_only(&store_path) {
            Ok(store) => Some(store),
            Err(_) if !store_path.exists() && kills.len() == 1 => None,
            Err(e) => panic!(
                "after kill {} the store {} cannot be opened: {e}",
                kills.len(),
                store_path.display()
            ),
        };
        if let Some(store) = opened {
            check_store_invariants(
                &fed,
                &store,
                known_sigma,
                &format!("after kill {}", kills.len()),
            );
            completed = store
                .latest_checkpoint()
                .unwrap()
                .map_or(0, |c| c.training_round);
            if completed + 5 > planned {
                panic!(
                    "training got too far during the kill loop ({completed} of {planned} rounds)"
                );
            }
            let (plan, label) = kills.last().unwrap();
            println!(
                "kill {:>2} at {:>5.1} s: {plan:?} -> {label}; {completed} training rounds released",
                kills.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let kill_seconds = started.elapsed().as_secs_f64();

    // The last start runs to the end.
    fed.spawn_coordinator();
    let status = fed.wait_coordinator_within(Duration::from_secs(600));
    assert!(
        status.success(),
        "the final coordinator failed ({status}):\n{}",
        fed.coordinator_log()
    );
    for (name, status) in fed.wait_participants(Duration::from_secs(90)) {
        assert!(
            status.success(),
            "participant {name} exited with {status}:\n{}",
            fed.log(&name)
        );
    }
    let store = fed.store();
    check_store_invariants(&fed, &store, known_sigma, "at the end");
    let reason = store.meta("finish_reason").unwrap().unwrap_or_default();
    assert_eq!(reason, format!("all {planned} planned rounds completed"));
    let rounds = store.rounds().unwrap();
    let released: BTreeSet<u32> = rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Released)
        .filter_map(|r| r.training_round)
        .collect();
    // Every planned round has its model checkpoint (0 is the statistics'
    // initial model) behind a ledger row (checked above).
    let checkpointed: BTreeMap<u32, u64> = store
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| (c.training_round, c.round))
        .collect();
    assert_eq!(
        checkpointed.keys().copied().collect::<Vec<u32>>(),
        (0..=planned).collect::<Vec<u32>>()
    );
    assert!(released.iter().all(|t| (1..=planned).contains(t)));
    // A kill between the checkpoint and the round record leaves the round
    // recorded as `started` although the resumed coordinator released its
    // model; the ledger row and the checkpoint are what count.
    let stale: Vec<u32> = (1..=planned).filter(|t| !released.contains(t)).collect();
    for t in &stale {
        let record = rounds
            .iter()
            .find(|r| r.round == checkpointed[t])
            .expect("a record of every checkpointed round");
        assert_eq!(record.status, RoundStatus::Started, "{record:?}");
    }
    let latest = store.latest_checkpoint().unwrap().expect("a checkpoint");
    assert_eq!(latest.training_round, planned);
    let model_path = fed.layout.coordinator_out.join("model.safetensors");
    let model = tessera_model::read_model(&model_path).expect("the final model");
    assert_eq!(model.round, planned);
    let last = tessera_model::read_model(&latest.path).expect("the last checkpoint");
    assert_eq!(
        model.params, last.params,
        "the final model is not the last checkpoint"
    );

    let mut by_stage: BTreeMap<String, usize> = BTreeMap::new();
    for (_, label) in &kills {
        *by_stage.entry(label.clone()).or_default() += 1;
    }
    let ledger = store.ledger().unwrap();
    println!(
        "{}: {} kills ({participant_kills} participants killed too) in {kill_seconds:.0} s, \
         by stage at the kill: {by_stage:?}; \
         {} coordinator starts, {} ledger rows for {planned} training rounds, {} aborted or unfinished rounds, \
         {} released rounds still recorded as started",
        sc.dir,
        kills.len(),
        fed.coordinator_starts(),
        ledger.len(),
        rounds
            .iter()
            .filter(|r| r.status != RoundStatus::Released)
            .count(),
        stale.len()
    );
    for wanted in ["keys", "shares", "masked_input", "unmask", "commit"] {
        assert!(
            by_stage.keys().any(|k| k.starts_with(wanted)),
            "no kill landed in stage {wanted}: {by_stage:?}"
        );
    }
}
