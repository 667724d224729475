//! `tessera-sim run` and `demo`: partition the data, launch a real local
//! federation, follow its rounds, evaluate every released model on the
//! pooled test split, and write `summary.json`, `metrics.csv` and
//! `privacy_report.md`.
//!
//! This is the one code path that simulations grow on: partitions, privacy
//! settings, faults and sweeps all end up as a [`RunSpec`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tessera_model::{Dataset, TaskSpec};

use crate::launch::{
    self, AdaptiveClippingPlan, Binaries, FederationPlan, PrivacyPlan, SitePlan, TrainingPlan,
};
pub use crate::learning::LearningArgs;
use crate::partition::{self, Partitioned};

/// How the data is split over participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    /// One participant per `--data` file.
    Natural,
    /// One file dealt IID (stratified by label) over `--participants`.
    Iid,
}

/// Differential-privacy options of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct PrivacyArgs {
    /// Noise multiplier σ (noise std σ·C on the summed update). Turns DP on.
    #[arg(long, conflicts_with = "target_epsilon")]
    pub noise_multiplier: Option<f64>,
    /// Target ε over the planned rounds; σ is calibrated from it. Turns DP on.
    #[arg(long)]
    pub target_epsilon: Option<f64>,
    /// Stop before ε would exceed this (default: the target ε).
    #[arg(long)]
    pub max_epsilon: Option<f64>,
    /// δ of the guarantee.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Clip norm C of each update (default 0.25 with DP, 10 without).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Poisson sampling rate q of the cohort (1 = everyone every round).
    #[arg(long, default_value_t = 1.0)]
    pub sampling_rate: f64,
    /// Noise multiplier of the pooled-statistics release.
    #[arg(long, default_value_t = 20.0)]
    pub statistics_noise_multiplier: f64,
    /// Seed the noise. The run is then NOT private; for reproducing simulations only.
    #[arg(long)]
    pub noise_seed: Option<u64>,
    /// Sum in the clear instead of through secure aggregation (comparisons only).
    #[arg(long)]
    pub no_secagg: bool,
    /// Participants sign their advertised keys with their certificate keys,
    /// so the coordinator cannot substitute keys.
    #[arg(long, conflicts_with = "no_secagg")]
    pub signed_keys: bool,
    /// Adaptive clipping (Andrew et al. 2021): `--clip-norm` is the initial
    /// C, which then tracks a quantile of the update norms, estimated with
    /// its own noise (accounted). Needs DP on.
    #[arg(long)]
    pub adaptive_clipping: bool,
    /// Adaptive clipping: target quantile γ of the update norms (default 0.5).
    #[arg(long, requires = "adaptive_clipping")]
    pub target_quantile: Option<f64>,
    /// Adaptive clipping: clip learning rate η_C (default 0.2).
    #[arg(long, requires = "adaptive_clipping")]
    pub clip_learning_rate: Option<f64>,
    /// Adaptive clipping: noise std σ_b on the summed clipping bits (default:
    /// the bit release takes a tenth of each round's privacy).
    #[arg(long, requires = "adaptive_clipping")]
    pub clip_count_noise_multiplier: Option<f64>,
}

/// Share of each round's privacy `tessera-sim` gives the clipping bits of
/// adaptive clipping when σ_b is not set.
pub const CLIP_COUNT_PRIVACY_SHARE: f64 = 0.1;

impl Default for PrivacyArgs {
    /// The command line's defaults: DP off, δ = 1e-5, everyone every round.
    fn default() -> Self {
        Self {
            noise_multiplier: None,
            target_epsilon: None,
            max_epsilon: None,
            delta: 1e-5,
            clip_norm: None,
            sampling_rate: 1.0,
            statistics_noise_multiplier: 20.0,
            noise_seed: None,
            no_secagg: false,
            signed_keys: false,
            adaptive_clipping: false,
            target_quantile: None,
            clip_learning_rate: None,
            clip_count_noise_multiplier: None,
        }
    }
}

impl PrivacyArgs {
    /// Whether differential privacy is on.
    pub fn enabled(&self) -> bool {
        self.noise_multiplier.is_some() || self.target_epsilon.is_some()
    }
}

/// Options of `tessera-sim run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Output directory (kept): PKI, configs, logs, models, summary.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// CSV file(s): one per site (natural), or one to split (iid).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Label column.
    #[arg(long)]
    pub label: String,
    /// Positive class: `"> 0"` or a class value such as `M` (default: `> 0`
    /// for numeric labels, else the last of the two classes in sort order).
    #[arg(long)]
    pub positive: Option<String>,
    /// Number of participants (iid partition).
    #[arg(long)]
    pub participants: Option<usize>,
    /// How to split the data.
    #[arg(long, value_enum)]
    pub partition: Option<Partition>,
    /// Training rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Model: logistic, softmax, linear, mlp:WIDTH[,WIDTH…] or external
    /// (default: the task's linear model).
    #[arg(long)]
    pub model: Option<String>,
    /// Seed of the data split, the initial model and local shuffling (never of the noise).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Local epochs per round (default 2, or 3 with DP).
    #[arg(long)]
    pub local_epochs: Option<u32>,
    /// Local learning rate (default 0.1, or 0.5 with DP).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Local batch size.
    #[arg(long, default_value_t = 16)]
    pub batch_size: u32,
    /// The final model averages the last this many released models
    /// (default 1 without DP; with DP, a third of the rounds).
    #[arg(long)]
    pub average_last: Option<u32>,
    /// Least participants per round (default: all but one, at least 3).
    #[arg(long)]
    pub min_participants: Option<usize>,
    /// Privacy.
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// Task kind, server optimizer, weight decay, evaluation, external trainer.
    #[command(flatten)]
    pub learning: LearningArgs,
}

/// One evaluated round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundMetrics {
    /// Training round.
    pub round: u32,
    /// Pooled test accuracy of the released model.
    pub accuracy: f64,
    /// Pooled test loss.
    pub loss: f64,
    /// Cumulative ε after the round (None when not private).
    pub epsilon: Option<f64>,
    /// Seconds since the federation started.
    pub seconds: f64,
    /// Regression: pooled test RMSE, MAE and R² in the target's units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<tessera_model::RegressionScores>,
    /// The federated evaluation of this round's model, as the coordinator
    /// released it (the sites' held-out rows are the pooled test rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated: Option<tessera_model::EvalMetrics>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The task's kind (binary, multiclass, regression).
    pub task: String,
    /// Pooled test accuracy of the final model (0..1; NaN for a regression).
    pub final_accuracy: f64,
    /// Regression: the final model's pooled test RMSE, MAE and R².
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_regression: Option<tessera_model::RegressionScores>,
    /// Pooled test loss of the final model.
    pub final_loss: f64,
    /// Training rounds released.
    pub rounds: u32,
    /// Planned rounds.
    pub planned_rounds: u32,
    /// Participants launched.
    pub participants: usize,
    /// ε of the ledger after the last released round (null when not private).
    pub epsilon: Option<f64>,
    /// δ (null when not private).
    pub delta: Option<f64>,
    /// Noise multiplier of training rounds (null when not private).
    pub noise_multiplier: Option<f64>,
    /// Whether the run is differentially private (DP on and noise not seeded).
    pub private: bool,
    /// Whether updates went through secure aggregation.
    pub secure_aggregation: bool,
    /// Whether the noise was seeded (never private).
    pub noise_seeded: bool,
    /// Clip norm.
    pub clip_norm: f64,
    /// How the data was split.
    pub partition: Partition,
    /// Data seed.
    pub seed: u64,
    /// Rows in the pooled test split.
    pub test_rows: usize,
    /// Why the federation ended.
    pub finish_reason: String,
    /// Wall seconds of the federation.
    pub wall_seconds: f64,
    /// The final model file.
    pub model: Option<PathBuf>,
    /// Per-round figures.
    pub history: Vec<RoundMetrics>,
}

/// A run, fully decided.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Where everything goes.
    pub out: PathBuf,
    /// The partitioned data.
    pub data: Partitioned,
    /// How it was split.
    pub partition: Partition,
    /// The task.
    pub task: TaskSpec,
    /// The federation to launch (dir, sites and task are filled in by [`run`]).
    pub plan: FederationPlan,
    /// Data seed.
    pub seed: u64,
}

/// Feature ranges standing in for public domain knowledge: per feature, the
/// 1st to 99th percentile of the training files, widened by 10% on each side.
///
/// A real private federation takes these from the task's author (clinical
/// plausibility ranges), never from the data; simulations derive them from
/// the data they already hold, and say so. Percentiles rather than extremes
/// keep a few outliers from stretching the scale of every other value.
fn simulation_ranges(data: &Partitioned, features: &[String]) -> BTreeMap<String, [f64; 2]> {
    let mut out = BTreeMap::new();
    for f in features {
        let Some(col) = data.header.iter().position(|h| h == f) else {
            continue;
        };
        let mut values: Vec<f64> = data
            .sites
            .iter()
            .flat_map(|s| s.rows.iter())
            .filter_map(|r| tessera_model::data::parse_cell(&r[col]))
            .filter(|v| v.is_finite())
            .collect();
        values.sort_by(f64::total_cmp);
        let (lo, hi) = if values.is_empty() {
            (0.0, 1.0)
        } else {
            let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
            (at(0.01), at(0.99))
        };
        let pad = ((hi - lo) * 0.1).max(1e-6);
        out.insert(f.clone(), [lo - pad, hi + pad]);
    }
    out
}

impl RunArgs {
    /// Decides everything: partition, task, defaults.
    pub fn into_spec(self) -> anyhow::Result<RunSpec> {
        let partition = self.partition.unwrap_or(if self.data.len() > 1 {
            Partition::Natural
        } else {
            Partition::Iid
        });
        let out = match &self.out {
            Some(o) => o.clone(),
            None => std::env::temp_dir().join(format!("tessera-sim-{}", std::process::id())),
        };
        let data = match partition {
            Partition::Natural => {
                if self.participants.is_some_and(|n| n != self.data.len()) {
                    bail!(
                        "--partition natural uses one participant per --data file; drop --participants"
                    );
                }
                partition::natural(&self.data, &self.label, 0.2, self.seed)?
            }
            Partition::Iid => {
                if self.data.len() != 1 {
                    bail!("--partition iid splits one --data file");
                }
                let n = self.participants.unwrap_or(4);
                partition::iid(&self.data[0], &self.label, n, 0.2, self.seed)?
            }
        };
        let features: Vec<String> = data
            .header
            .iter()
            .filter(|h| **h != self.label)
            .cloned()
            .collect();
        let task = self.learning.task(
            &self.data[0],
            &self.label,
            self.positive.as_deref(),
            self.model.as_deref(),
            features.clone(),
        )?;
        let learning = self.learning.plan()?;
        let dp = self.privacy.enabled();
        let n = data.sites.len();
        let adaptive = if self.privacy.adaptive_clipping {
            if !dp {
                anyhow::bail!(
                    "--adaptive-clipping needs differential privacy (--target-epsilon or --noise-multiplier)"
                );
            }
            let p = &self.privacy;
            let count_sigma = match p.clip_count_noise_multiplier {
                Some(b) => b,
                None => {
                    let effective = match (p.noise_multiplier, p.target_epsilon) {
                        (Some(s), _) => s,
                        (None, Some(eps)) => tessera_coordinator::budget::calibrate_training_noise(
                            eps,
                            p.delta,
                            p.sampling_rate,
                            self.rounds,
                            p.statistics_noise_multiplier,
                            tessera_privacy::AccountantKind::Best,
                        )?,
                        (None, None) => unreachable!("dp is on"),
                    };
                    tessera_coordinator::budget::clip_count_noise_for_share(
                        effective,
                        CLIP_COUNT_PRIVACY_SHARE,
                    )
                }
            };
            Some(AdaptiveClippingPlan {
                target_quantile: p
                    .target_quantile
                    .unwrap_or(tessera_coordinator::config::DEFAULT_TARGET_QUANTILE),
                clip_learning_rate: p
                    .clip_learning_rate
                    .unwrap_or(tessera_coordinator::config::DEFAULT_CLIP_LEARNING_RATE),
                clip_count_noise_multiplier: Some(count_sigma),
            })
        } else {
            None
        };
        let privacy = dp.then(|| PrivacyPlan {
            noise_multiplier: self.privacy.noise_multiplier,
            target_epsilon: self.privacy.target_epsilon,
            max_epsilon: self.privacy.max_epsilon,
            delta: self.privacy.delta,
            sampling_rate: self.privacy.sampling_rate,
            statistics_noise_multiplier: self.privacy.statistics_noise_multiplier,
            ranges: simulation_ranges(&data, &crate::learning::range_columns(&task)),
            max_rows: data.sites.iter().map(|s| s.rows.len()).max().unwrap_or(1) as f64,
            noise_seed: self.privacy.noise_seed,
            adaptive_clipping: adaptive,
        });
        let training = TrainingPlan {
            local_epochs: self.local_epochs.unwrap_or(if dp { 3 } else { 2 }),
            learning_rate: self.learning_rate.unwrap_or(if dp { 0.5 } else { 0.1 }),
            batch_size: self.batch_size,
            clip_norm: self
                .privacy
                .clip_norm
                .unwrap_or(if dp { 0.25 } else { 10.0 }),
            server_learning_rate: self.learning.server_learning_rate.unwrap_or(1.0),
            seed: self.seed,
            average_last: self.average_last.unwrap_or(if dp {
                (self.rounds / 3).max(1)
            } else {
                1
            }),
        };
        let secagg = !self.privacy.no_secagg;
        let min_participants = self
            .min_participants
            .unwrap_or_else(|| if n > 3 { n - 1 } else { n }.max(if secagg { 3 } else { 1 }));
        if secagg && n < 3 {
            bail!(
                "secure aggregation needs at least 3 participants (use --no-secagg to compare without it)"
            );
        }
        Ok(RunSpec {
            out: out.clone(),
            partition,
            task: task.clone(),
            seed: self.seed,
            plan: FederationPlan {
                dir: out,
                sites: vec![],
                task,
                rounds: self.rounds,
                min_participants,
                training,
                secagg,
                signed_keys: secagg && self.privacy.signed_keys,
                privacy,
                training_seconds: 60.0,
                stage_seconds: 20.0,
                listen: None,
                learning,
                site_budgets: Default::default(),
            },
            data,
        })
    }
}

fn kill_all(children: &mut [(String, Child)]) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs a federation as specified, printing progress; returns the summary.
pub fn run(mut spec: RunSpec) -> anyhow::Result<Summary> {
    let out = spec.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let split = spec.data.write(&out.join("data"))?;
    println!("Data ({} sites):", split.sites.len());
    println!("{split}");
    spec.plan.sites = SitePlan::from_split(&split);
    if spec.plan.learning.evaluate_every > 0 {
        // Each site holds out its share of the pooled test rows, so the
        // federated evaluation can be checked against the pooled figures.
        let (files, largest) = crate::learning::write_evaluation_files(
            &spec.data,
            &split,
            spec.partition == Partition::Iid,
            &spec.task.label,
            spec.seed,
            &out.join("data").join("eval"),
        )?;
        spec.plan.learning.evaluation_data = files;
        // The row bound the evaluation's noise is scaled to: the simulation
        // chose the split, so the largest held-out share is a public bound.
        let learning = &mut spec.plan.learning;
        learning.evaluation_max_rows = learning.evaluation_max_rows.or(Some(largest.max(1) as f64));
    }
    let test = tessera_model::load_csv(&split.test_path, &spec.task)?;
    describe_privacy(&spec);

    let bins = Binaries::detect()?;
    let mut layout = launch::prepare(&spec.plan)?;
    let started = Instant::now();
    let (mut coordinator, address) = launch::start_coordinator(&bins, &layout, "coordinator.log")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for site in spec.plan.sites.clone() {
        launch::write_participant_config(&spec.plan, &mut layout, &site, &address)?;
        match launch::start_participant(&bins, &layout, &site.name, &format!("{}.log", site.name)) {
            Ok(c) => children.push((site.name.clone(), c)),
            Err(e) => {
                let _ = coordinator.kill();
                kill_all(&mut children);
                return Err(e);
            }
        }
    }
    println!(
        "Federation: coordinator on {address}, {} participants, {} rounds (logs in {})",
        children.len(),
        spec.plan.rounds,
        layout.logs.display()
    );

    let checkpoints = layout.coordinator_out.join("checkpoints");
    let mut history: Vec<RoundMetrics> = Vec::new();
    let deadline = Duration::from_secs(60 + 30 * u64::from(spec.plan.rounds));
    let status = loop {
        follow_rounds(
            &checkpoints,
            &layout.store(),
            &test,
            &spec,
            started,
            &mut history,
        );
        if let Some(status) = coordinator.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = coordinator.kill();
            kill_all(&mut children);
            bail!(
                "the federation did not finish within {deadline:?}; see {}",
                layout.logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    follow_rounds(
        &checkpoints,
        &layout.store(),
        &test,
        &spec,
        started,
        &mut history,
    );
    let wall = started.elapsed().as_secs_f64();
    // Participants leave on FederationDone; give them a moment, then make sure.
    let grace = Instant::now();
    for (name, c) in children.iter_mut() {
        loop {
            match c.try_wait()? {
                Some(s) if !s.success() => {
                    eprintln!("participant {name} exited with {s}; see its log");
                    break;
                }
                Some(_) => break,
                None if grace.elapsed() > Duration::from_secs(10) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    if !status.success() {
        bail!(
            "the coordinator failed ({status}); see {}",
            layout.logs.join("coordinator.log").display()
        );
    }
    let model_path = layout.coordinator_out.join("model.safetensors");
    let (final_accuracy, final_loss, final_regression, model) = if model_path.exists() {
        let m = tessera_model::read_model(&model_path)?;
        let e = tessera_model::evaluate(&m, &test)?;
        (e.accuracy, e.loss, e.regression, Some(model_path))
    } else {
        (f64::NAN, f64::NAN, None, None)
    };
    crate::learning::attach_federated(&mut history, &layout.coordinator_out.join("rounds.csv"));
    let store = tessera_coordinator::store::Store::open_read_only(&layout.store())?;
    let finish_reason = store
        .meta("finish_reason")?
        .unwrap_or_else(|| "federation finished".into());
    let privacy = spec.plan.privacy.as_ref();
    let epsilon = match privacy {
        Some(p) => Some(tessera_coordinator::budget::ledger_epsilon(
            &store.privacy_events()?,
            p.delta,
            tessera_privacy::AccountantKind::Best,
        )?),
        None => None,
    };
    let noise_multiplier = privacy.and_then(|_| {
        store
            .ledger()
            .ok()?
            .iter()
            .rev()
            .find(|r| r.kind == tessera_model::RoundKind::Training)
            .map(|r| r.noise_multiplier)
    });
    let summary = Summary {
        task: spec.task.kind.name().to_owned(),
        final_accuracy,
        final_regression,
        final_loss,
        rounds: history.iter().map(|h| h.round).max().unwrap_or(0),
        planned_rounds: spec.plan.rounds,
        participants: spec.plan.sites.len(),
        epsilon,
        delta: privacy.map(|p| p.delta),
        noise_multiplier,
        private: privacy.is_some_and(|p| p.noise_seed.is_none()),
        secure_aggregation: spec.plan.secagg,
        noise_seeded: privacy.is_some_and(|p| p.noise_seed.is_some()),
        clip_norm: spec.plan.training.clip_norm,
        partition: spec.partition,
        seed: spec.seed,
        test_rows: test.n_rows(),
        finish_reason,
        wall_seconds: wall,
        model,
        history,
    };
    write_outputs(&out, &summary)?;
    tessera_coordinator::privacy_report::write_markdown(
        &layout.store(),
        "tessera-sim",
        privacy.map_or(1e-5, |p| p.delta),
        privacy.and_then(|p| p.max_epsilon.or(p.target_epsilon)),
        &out.join("privacy_report.md"),
    )?;
    Ok(summary)
}

fn describe_privacy(spec: &RunSpec) {
    match &spec.plan.privacy {
        None => println!(
            "Privacy: OFF — this run is NOT differentially private (add --target-epsilon or --noise-multiplier)."
        ),
        Some(p) => {
            if p.noise_seed.is_some() {
                println!(
                    "WARNING: the noise is seeded (--noise-seed): this run is NOT private; use it only to reproduce simulations."
                );
            }
            match (p.noise_multiplier, p.target_epsilon) {
                (Some(s), _) => println!(
                    "Privacy: DP-FedAvg, noise multiplier {s}, clip norm {}, δ = {}",
                    spec.plan.training.clip_norm, p.delta
                ),
                (None, Some(e)) => println!(
                    "Privacy: DP-FedAvg, target ε = {e} at δ = {} over {} rounds, clip norm {}",
                    p.delta, spec.plan.rounds, spec.plan.training.clip_norm
                ),
                _ => {}
            }
            if let Some(a) = &p.adaptive_clipping {
                println!(
                    "Adaptive clipping: the clip norm starts at {} and tracks the {} quantile of the update norms (clip learning rate {}, bit noise σ_b = {})",
                    spec.plan.training.clip_norm,
                    a.target_quantile,
                    a.clip_learning_rate,
                    a.clip_count_noise_multiplier
                        .map(|b| format!("{b:.4}"))
                        .unwrap_or_else(|| "the coordinator's default".into()),
                );
            }
        }
    }
    if !spec.plan.secagg {
        println!("Secure aggregation: OFF (plain sums, for comparisons only).");
    }
    if spec.plan.signed_keys {
        println!(
            "Secure aggregation: advertised keys signed with the participants' certificate keys."
        );
    }
}

/// Evaluates checkpoints that appeared since the last call and prints them.
fn follow_rounds(
    dir: &Path,
    store_path: &Path,
    test: &Dataset,
    spec: &RunSpec,
    started: Instant,
    history: &mut Vec<RoundMetrics>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut rounds: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = name
                .strip_prefix("model-round-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((r, e.path()))
        })
        .filter(|(r, _)| *r > 0 && history.iter().all(|h| h.round != *r))
        .collect();
    rounds.sort();
    for (round, path) in rounds {
        let Ok(model) = tessera_model::read_model(&path) else {
            continue;
        };
        let Ok(e) = tessera_model::evaluate(&model, test) else {
            continue;
        };
        let epsilon = spec.plan.privacy.as_ref().and_then(|p| {
            let store = tessera_coordinator::store::Store::open_read_only(store_path).ok()?;
            let events: Vec<_> = store
                .ledger()
                .ok()?
                .into_iter()
                .filter(|r| r.training_round.is_none_or(|t| t <= round))
                .map(|r| r.event)
                .collect();
            tessera_coordinator::budget::ledger_epsilon(
                &events,
                p.delta,
                tessera_privacy::AccountantKind::Best,
            )
            .ok()
        });
        let m = RoundMetrics {
            round,
            accuracy: e.accuracy,
            loss: e.loss,
            epsilon,
            seconds: started.elapsed().as_secs_f64(),
            regression: e.regression,
            federated: None,
        };
        let score = match &m.regression {
            Some(r) => format!("test RMSE {:.3}  R² {:.3}", r.rmse, r.r2),
            None => format!("test accuracy {:.3}  loss {:.4}", m.accuracy, m.loss),
        };
        match epsilon {
            Some(eps) => println!(
                "round {:>3}/{}: {score}  ε = {eps:.3}",
                round, spec.plan.rounds
            ),
            None => println!("round {:>3}/{}: {score}", round, spec.plan.rounds),
        }
        history.push(m);
    }
}

fn write_outputs(out: &Path, summary: &Summary) -> anyhow::Result<()> {
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    let mut csv = format!(
        "round,accuracy,loss,epsilon,seconds,{}\n",
        crate::learning::METRICS_COLUMNS.join(",")
    );
    for h in &summary.history {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{},{:.3},{}\n",
            h.round,
            h.accuracy,
            h.loss,
            h.epsilon.map(|e| format!("{e:.6}")).unwrap_or_default(),
            h.seconds,
            crate::learning::metrics_cells(h)
        ));
    }
    std::fs::write(out.join("metrics.csv"), csv)?;
    Ok(())
}
