//! Acceptance tests of noise added by the sites (`--dp distributed`), in
//! real federations: one coordinator process and one process per site
//! (`tessera-sim run`, the processes engine), gRPC over loopback mutual TLS,
//! secure aggregation, the SQLite stores of both sides.
//!
//! - `the_unmasked_sum_carries_the_planned_noise`: with one seeded training
//!   round, a central and a distributed run share everything but the noise
//!   of the releases (same data, initial model, training, clipping and
//!   stochastic rounding — the sites draw their noise after rounding; the
//!   preprocessing differs by the statistics' noise, a small change to the
//!   updates next to σ·C). So n × (model_central − model_distributed) is,
//!   coordinate by coordinate, about the coordinator's discrete Gaussian
//!   minus the sum of the sites' ones: two independent noises of std σ·C
//!   each, √2·σ·C together. A second
//!   distributed run with the same seed gives the same model (the control:
//!   nothing else differs). The released ε is central's: the sum of the
//!   sites' discrete Gaussians is accounted as the Gaussian within a slack,
//!   and the ε against the coordinator is the same figure (no site
//!   colludes, and the statistics carry the sites' noise too).
//! - `statistics_and_evaluation_sums_carry_the_sites_noise`: the statistics
//!   and evaluation sums the coordinator unmasks carry the sites' noise of
//!   the planned size (the evaluated row count against a run without DP),
//!   with distributed and with local noise, and both sides' ledgers count
//!   it.
//! - `a_dropout_below_plan_is_topped_up_and_accounted`: sites leave before
//!   their masked input in every training round; the rounds are still
//!   released (one site of five missing from each sum), each ledger row records the noise of the whole planned
//!   cohort (the coordinator's top-up) and the contributors as the summands
//!   unknown to the coordinator, and the ledger's ε is exactly that of the
//!   planned noise, while the ε against the coordinator counts only the
//!   survivors' noise and so is larger.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_coordinator::store::Store;
use tessera_model::{ModelFile, RoundKind};
use tessera_privacy::{AccountantKind, PrivacyEvent};
use tessera_testkit::command;
use tessera_testkit::data::breast_cancer_path;
use tessera_testkit::files::fresh_dir;

const SIM: &str = env!("CARGO_BIN_EXE_tessera-sim");
const SITES: usize = 5;
const SIGMA: f64 = 1.0;
const CLIP: f64 = 0.25;

fn work_dir(name: &str) -> PathBuf {
    fresh_dir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("distributed_noise")
            .join(name),
    )
}

/// One `tessera-sim run` of five sites with DP at σ = `SIGMA`, C = `CLIP`;
/// its directory and summary.
fn sim_run(name: &str, extra: &[&str]) -> (PathBuf, Value) {
    let sigma = SIGMA.to_string();
    let clip = CLIP.to_string();
    let dp = ["--noise-multiplier", &sigma, "--clip-norm", &clip];
    sim_run_with(name, &[dp.as_slice(), extra].concat())
}

/// One `tessera-sim run` of five sites with `extra` options (no DP unless
/// they ask for it); its directory and summary.
fn sim_run_with(name: &str, extra: &[&str]) -> (PathBuf, Value) {
    let dir = work_dir(name);
    let data = breast_cancer_path();
    let sites = SITES.to_string();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--label",
        "diagnosis",
        "--participants",
        &sites,
        "--partition",
        "iid",
        "--seed",
        "1",
        "--average-last",
        "1",
        "--engine",
        "processes",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    command::run_ok(&[SIM], &args);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (dir, summary)
}

fn model(dir: &Path) -> ModelFile {
    tessera_model::read_model(&dir.join("coordinator").join("model.safetensors"))
        .expect("final model")
}

fn ledger(dir: &Path) -> Vec<tessera_coordinator::store::LedgerRow> {
    Store::open_read_only(&dir.join("coordinator").join("coordinator.sqlite"))
        .unwrap()
        .ledger()
        .unwrap()
}

#[test]
fn the_unmasked_sum_carries_the_planned_noise() {
    // An MLP: hundreds of coordinates to measure the noise's size on.
    let one_round = ["--rounds", "1", "--model", "mlp:16", "--noise-seed", "7"];
    let with = |p: &'static str| [one_round.as_slice(), &["--dp", p]].concat();
    let (central_dir, central) = sim_run("central", &with("central"));
    let (dist_dir, dist) = sim_run("distributed", &with("distributed"));
    let (control_dir, _) = sim_run("distributed_again", &with("distributed"));
    let (c, d, again) = (model(&central_dir), model(&dist_dir), model(&control_dir));
    // The statistics carry the sites' noise in one run and the
    // coordinator's in the other: the preprocessing differs a little, and
    // with it the clipped updates, which the comparison below absorbs (the
    // noise of σ·C per coordinate dwarfs it).
    assert_ne!(
        c.preprocessor, d.preprocessor,
        "the statistics noise differs"
    );
    assert_eq!(d.params, again.params, "the same seed, the same release");
    assert_eq!(c.params.len(), d.params.len());
    let n = SITES as f64;
    let diffs: Vec<f64> = c
        .params
        .iter()
        .zip(&d.params)
        .map(|(x, y)| n * (f64::from(*x) - f64::from(*y)))
        .collect();
    let k = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / k;
    let std = (diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
    let planned = std::f64::consts::SQRT_2 * SIGMA * CLIP;
    // ≈ 500 coordinates: the sample std is within 3 standard errors
    // (√(1/2k) ≈ 3%) of the planned one.
    assert!(
        (std / planned - 1.0).abs() < 0.1,
        "noise of std {std} on the sum, planned {planned} ({k} coordinates)"
    );
    assert!(mean.abs() < 4.0 * planned / k.sqrt(), "mean {mean}");

    // The ledger: one distributed discrete Gaussian of the five sites.
    let rows = ledger(&dist_dir);
    let training: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Training)
        .collect();
    assert_eq!(training.len(), 1);
    match training[0].event {
        PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier,
            summands,
            honest_summands,
            ..
        } => {
            assert!(
                (noise_multiplier - SIGMA).abs() < 1e-9,
                "{noise_multiplier}"
            );
            assert_eq!((summands, honest_summands), (5, 5));
        }
        ref e => panic!("not a distributed event: {e:?}"),
    }
    let (eps_c, eps_d) = (
        central["epsilon"].as_f64().unwrap(),
        dist["epsilon"].as_f64().unwrap(),
    );
    // The same noise, the same ε: the sum of the sites' discrete Gaussians
    // is accounted as the Gaussian at σ within the central release's own
    // slack (tessera_privacy::distributed, "Accounting"); RDP alone
    // (Theorem 2's bound) would say more.
    let events: Vec<PrivacyEvent> = rows.iter().map(|r| r.event.clone()).collect();
    let rdp = tessera_privacy::epsilon(&events, 1e-5, AccountantKind::Rdp)
        .unwrap()
        .epsilon;
    assert!((eps_d - eps_c).abs() < 1e-3 * eps_c, "{eps_d} vs {eps_c}");
    assert!(rdp > 1.03 * eps_d, "{rdp} vs {eps_d}");
    assert!(central["epsilon_against_coordinator"].is_null());
    let against = dist["epsilon_against_coordinator"].as_f64().unwrap();
    // Every release carries the sites' noise, none colludes and none
    // dropped: against the coordinator, the whole ledger's ε.
    assert!(
        (against - eps_d).abs() < 1e-9 * eps_d,
        "{against} vs {eps_d}"
    );
    let report = std::fs::read_to_string(dist_dir.join("privacy_report.md")).unwrap();
    assert!(report.contains("distributed placement"), "{report}");
}

#[test]
fn a_dropout_below_plan_is_topped_up_and_accounted() {
    let rounds = 3u32;
    let (dir, summary) = sim_run(
        "dropout",
        &[
            "--rounds",
            &rounds.to_string(),
            "--dp",
            "distributed",
            "--dropout",
            "input=0.2",
        ],
    );
    assert_eq!(summary["rounds"], rounds, "{summary}");
    let rows = ledger(&dir);
    let training: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Training)
        .collect();
    assert_eq!(training.len(), rounds as usize);
    let mut survivors = Vec::new();
    for r in &training {
        let PrivacyEvent::DistributedDiscreteGaussian {
            noise_multiplier,
            summands,
            honest_summands,
            ..
        } = r.event
        else {
            panic!("not a distributed event: {:?}", r.event);
        };
        // The release carries the whole planned cohort's noise.
        assert_eq!(summands as usize, SITES);
        assert!((noise_multiplier - SIGMA).abs() < 1e-9);
        survivors.push(honest_summands);
    }
    // One site of five leaves before its input in every round.
    assert_eq!(survivors, [4, 4, 4]);
    // The ledger's ε is that of the planned noise in every round, dropouts
    // or not: the statistics release and `rounds` full releases at σ.
    // (The statistics release carries the sites' noise too, at its own σ.)
    let planned: Vec<PrivacyEvent> = rows
        .iter()
        .map(|r| match &r.event {
            PrivacyEvent::DistributedDiscreteGaussian {
                summands,
                l2_units,
                dimension,
                ..
            } => PrivacyEvent::distributed(
                match r.kind {
                    RoundKind::Training => SIGMA,
                    _ => r.noise_multiplier,
                } * l2_units
                    / f64::from(*summands).sqrt(),
                *summands,
                *l2_units,
                *dimension,
                1.0,
                *summands,
            ),
            other => other.clone(),
        })
        .collect();
    let eps_planned = tessera_privacy::epsilon(&planned, 1e-5, AccountantKind::Best)
        .unwrap()
        .epsilon;
    let eps = summary["epsilon"].as_f64().unwrap();
    assert!(
        (eps - eps_planned).abs() < 1e-9 * eps,
        "{eps} vs {eps_planned}"
    );
    // Against the coordinator only the survivors' noise counts: more ε
    // (compared by one accountant: `best` takes the least of those that
    // apply, and which apply can change with the noise).
    let views = |all_survive: bool| -> Vec<PrivacyEvent> {
        rows.iter()
            .map(|r| {
                let mut e = r.event.clone();
                if let PrivacyEvent::DistributedDiscreteGaussian {
                    summands,
                    honest_summands,
                    ..
                } = &mut e
                    && all_survive
                {
                    *honest_summands = *summands;
                }
                e.coordinator_view().expect("a view")
            })
            .collect()
    };
    let rdp = |e: &[PrivacyEvent]| {
        tessera_privacy::epsilon(e, 1e-5, AccountantKind::Rdp)
            .unwrap()
            .epsilon
    };
    let (survivors_only, all_survive) = (rdp(&views(false)), rdp(&views(true)));
    assert!(
        survivors_only > all_survive,
        "{survivors_only} vs {all_survive}"
    );
    let against = summary["epsilon_against_coordinator"].as_f64().unwrap();
    assert!(
        against > 0.0 && against <= survivors_only * (1.0 + 1e-9),
        "{against} vs {survivors_only}"
    );
}

/// The `eval_rows` of each released evaluation in a run's `rounds.csv`, by
/// training round: the (noised) count of held-out rows the coordinator
/// decoded from the unmasked evaluation sums.
fn evaluated_rows(dir: &Path) -> Vec<(u32, f64)> {
    let text = std::fs::read_to_string(dir.join("coordinator").join("rounds.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (kind, status, round, rows) = (
        at("kind"),
        at("status"),
        at("training_round"),
        at("eval_rows"),
    );
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[kind] == "evaluation" && c[status] == "released")
        .map(|c| (c[round].parse().unwrap(), c[rows].parse().unwrap()))
        .collect()
}

/// The sites' ledgers of a run, by site.
fn site_ledgers(dir: &Path) -> Vec<(String, Vec<tessera_participant::ledger::Contribution>)> {
    use tessera_participant::ledger::{LedgerStore, SiteLedger};
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("sites")).unwrap() {
        let site = entry.unwrap().path();
        let ledger = SiteLedger::open_read_only(&site.join("state").join("site-ledger.sqlite"))
            .unwrap_or_else(|e| panic!("{}: {e}", site.display()));
        let name = site.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, ledger.contributions().unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// With `--dp distributed` the statistics and the evaluation sums carry the
/// sites' noise too: the coordinator unmasks them already noised. The
/// evaluation's row count is a coordinate of the evaluation sums that does
/// not depend on the model, so a run without DP (the same seed, split and
/// held-out rows) gives its exact value; the distributed run's counts, over
/// sixteen evaluations, differ from it by noise of the planned standard
/// deviation σ_e·Δ (σ_e the evaluation's noise multiplier, Δ its
/// sensitivity, both from the ledger). The coordinator adds nothing here
/// (every site survives), so that noise is the sites'. Both ledgers record
/// distributed discrete Gaussians of the five sites for the statistics and
/// every evaluation, and the ε against the coordinator is the ledger's.
#[test]
fn statistics_and_evaluation_sums_carry_the_sites_noise() {
    let evaluations: u32 = 16;
    let rounds = evaluations.to_string();
    let eval = [
        "--rounds",
        &rounds,
        "--evaluate-every",
        "1",
        "--evaluation-max-rows",
        "1000",
    ];
    let (exact_dir, _) = sim_run_with("evaluation_exact", &eval);
    let exact = evaluated_rows(&exact_dir);
    assert_eq!(exact.len(), evaluations as usize, "{exact:?}");
    let count = exact[0].1;
    assert!(
        count > 50.0 && exact.iter().all(|&(_, r)| r == count),
        "the held-out rows are counted exactly, every time: {exact:?}"
    );

    // σ_e·Δ = 0.001 × 1000·B (B the bound of one row's sums): a few rows
    // of noise per count. Local noise: each site adds the whole σ_e·Δ, so
    // the sum carries √5 times as much; half the σ keeps the count clear of
    // zero.
    let summary = check_site_noise_on_sums(&eval, "distributed", "0.001", count, evaluations, 5);
    let eps = summary["epsilon"].as_f64().unwrap();
    let against = summary["epsilon_against_coordinator"].as_f64().unwrap();
    assert!((against - eps).abs() < 1e-9 * eps, "{against} vs {eps}");
    // Local: each release protects a site by its own noise alone, so
    // against the coordinator the guarantee is weaker than the released
    // sums'.
    let summary = check_site_noise_on_sums(&eval, "local", "0.0005", count, evaluations, 1);
    let eps = summary["epsilon"].as_f64().unwrap();
    let against = summary["epsilon_against_coordinator"].as_f64().unwrap();
    assert!(against > eps, "{against} vs {eps}");
}

/// One seeded run of `placement` with evaluations at noise multiplier
/// `sigma_e` after every training round; checks that each evaluated row
/// count differs from the exact `count` by noise of the planned size, that
/// the statistics and evaluations are distributed releases with `honest`
/// summands unknown to the coordinator on the coordinator's ledger and
/// with the sites' noise on every site's ledger. Returns the run's summary.
fn check_site_noise_on_sums(
    eval: &[&str],
    placement: &str,
    sigma_e: &str,
    count: f64,
    evaluations: u32,
    honest: u32,
) -> Value {
    let noisy = [
        eval,
        &[
            "--dp",
            placement,
            "--noise-seed",
            "11",
            "--evaluation-noise-multiplier",
            sigma_e,
        ],
    ]
    .concat();
    let (dir, summary) = sim_run(&format!("evaluation_{placement}"), &noisy);
    let rows = ledger(&dir);
    let evaluation_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == RoundKind::Evaluation)
        .collect();
    assert_eq!(evaluation_rows.len(), evaluations as usize);
    for r in rows.iter().filter(|r| r.kind != RoundKind::Training) {
        match r.event {
            PrivacyEvent::DistributedDiscreteGaussian {
                summands,
                honest_summands,
                ..
            } => assert_eq!((summands, honest_summands), (5, honest), "{r:?}"),
            ref e => panic!("a {:?} release noised centrally: {e:?}", r.kind),
        }
    }
    let planned = evaluation_rows[0].noise_multiplier * evaluation_rows[0].clip_norm;
    let noise: Vec<f64> = evaluated_rows(&dir)
        .iter()
        .map(|&(_, r)| r - count)
        .collect();
    assert_eq!(noise.len(), evaluations as usize);
    let k = noise.len() as f64;
    let rms = (noise.iter().map(|x| x * x).sum::<f64>() / k).sqrt();
    // k·(rms/σ)² is χ² with k degrees of freedom: below 4 or above 41
    // with probability under 0.1% each for k = 16 (the seed is fixed, so
    // the outcome is too). No noise at all, or noise of another size, fails.
    assert!(
        rms > 0.5 * planned && rms < 1.6 * planned,
        "noise of rms {rms} on the row count, planned {planned}: {noise:?}"
    );
    assert!(count > 6.0 * planned, "the count is not clamped at zero");

    // The sites' ledgers count the same releases as distributed noise of
    // the five sites, at the announced σ.
    let sites = site_ledgers(&dir);
    assert_eq!(sites.len(), SITES);
    for (name, contributions) in &sites {
        for r in rows.iter().filter(|r| r.kind != RoundKind::Training) {
            let c = contributions
                .iter()
                .find(|c| c.round == r.round)
                .unwrap_or_else(|| panic!("{name} did not record aggregation {}", r.round));
            let site_noise = c
                .site_noise
                .unwrap_or_else(|| panic!("{name} recorded aggregation {} as central", r.round));
            assert_eq!(site_noise.summands, 5, "{name}: {c:?}");
            assert!(
                (c.noise_multiplier - r.noise_multiplier).abs() < 1e-9 * r.noise_multiplier,
                "{name}: {c:?} vs {r:?}"
            );
        }
    }
    summary
}
