//! `tessera-sim run` and `demo`: the options of a run and the [`RunSpec`]
//! they decide (partition, task, privacy, training, engine, dropouts);
//! [`run`] ([`crate::runner`]) carries it out.
//!
//! This is the one code path that simulations grow on: partitions, privacy
//! settings, faults and sweeps all end up as a [`RunSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;
use tessera_model::TaskSpec;

use tessera_model::Placement;

use crate::dropout::DropoutSpec;
use crate::engine::Engine;
use crate::launch::{AdaptiveClippingPlan, FederationPlan, PrivacyPlan, TrainingPlan};
pub use crate::learning::LearningArgs;
use crate::partition::{self, Partitioned};
pub use crate::partition_skew::Partition;
pub use crate::runner::run;

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
    /// Seed the noise and each site's randomness (masks, stochastic
    /// rounding). The run is then NOT private and its masks are
    /// predictable; for reproducing simulations only.
    #[arg(long)]
    pub noise_seed: Option<u64>,
    /// Sum in the clear instead of through secure aggregation (comparisons only).
    #[arg(long)]
    pub no_secagg: bool,
    /// Participants sign their advertised keys with their certificate keys,
    /// so the coordinator cannot substitute keys.
    #[arg(long, conflicts_with = "no_secagg")]
    pub signed_keys: bool,
    /// Share of a cohort secure aggregation tolerates losing (SecAgg+ sizes
    /// its neighbourhoods for it: more tolerance, more work per site).
    /// Default: the coordinator's (0.3), raised to the planned dropouts
    /// plus 0.05 when `--dropout` asks for more.
    #[arg(long, conflicts_with = "no_secagg")]
    pub dropout_tolerance: Option<f64>,
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
    /// Where the noise of training rounds is added: `central` (the
    /// coordinator, after unmasking), `distributed` (each site adds a share
    /// before masking; needs secure aggregation) or `local` (each site adds
    /// the whole noise; σ and the target ε are then each site's own).
    #[arg(long = "dp", value_name = "PLACEMENT", default_value = "central")]
    pub placement: Placement,
    /// Sites assumed to collude with the coordinator in the guarantee
    /// against it (reported; does not change the noise).
    #[arg(long, default_value_t = 0)]
    pub colluding_sites: u32,
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
            dropout_tolerance: None,
            adaptive_clipping: false,
            target_quantile: None,
            clip_learning_rate: None,
            clip_count_noise_multiplier: None,
            placement: Placement::Central,
            colluding_sites: 0,
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
    /// A TOML file of these options (`rounds = 20`, `noise_multiplier = 1.0`,
    /// `data = ["a.csv"]`, …); flags on the command line win. The run's
    /// directory gets the resolved options back as `sim.toml`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory (kept): PKI, configs, logs, models, summary.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How the federation runs: one process per party, or every party as a
    /// task of one runtime in this process (for many sites).
    #[arg(long, value_enum, default_value_t = Engine::Processes)]
    pub engine: Engine,
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
    /// Number of participants (iid, dirichlet and quantity partitions).
    #[arg(long)]
    pub participants: Option<usize>,
    /// How to split the data: `natural` (one site per file), `iid`,
    /// `dirichlet:ALPHA` (label skew) or `quantity:BETA` (power-law sizes).
    /// Default: natural for several files, else iid.
    #[arg(long)]
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
    /// Least participants per round (default: all but one, at least 3; with
    /// dropouts, all but the planned dropouts).
    #[arg(long)]
    pub min_participants: Option<usize>,
    /// Sites that leave each training round: a share (`0.2`, each at a
    /// random secure-aggregation stage) or shares by stage
    /// (`keys=0.05,shares=0.05,input=0.05,unmask=0.05`).
    #[arg(long)]
    pub dropout: Option<DropoutSpec>,
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
    /// ε of the model updates against the coordinator itself (the noise of
    /// the sites it does not collude with; with local noise each site's own):
    /// null when the coordinator adds the noise (central) or without DP.
    pub epsilon_against_coordinator: Option<f64>,
    /// Where the training rounds' noise was added (null without DP).
    pub placement: Option<String>,
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
    /// The engine that ran it.
    pub engine: Engine,
    /// Mean wall seconds of a released training round (announcement to release).
    pub seconds_per_round: Option<f64>,
    /// CPU seconds the federation used per training round (between the
    /// first and the last round seen; all parties).
    pub cpu_seconds_per_round: Option<f64>,
    /// Peak resident memory of the federation, in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Planned dropouts over all training rounds.
    pub planned_dropouts: usize,
    /// Dropouts the coordinator recorded (selected but not in the sum)
    /// over all released training rounds.
    pub reported_dropouts: usize,
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
    /// The engine that runs it.
    pub engine: Engine,
    /// Sites leaving training rounds (none by default).
    pub dropout: DropoutSpec,
    /// Seed of the sites' randomness (`--noise-seed`; NOT secure).
    pub site_seed: Option<u64>,
    /// Secure aggregation's dropout tolerance, if set.
    pub dropout_tolerance: Option<f64>,
    /// The options as given (TOML), written back into the run's directory.
    pub options_toml: Option<String>,
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
        // Absolute: the configuration files name paths relative to themselves.
        let out = std::path::absolute(match &self.out {
            Some(o) => o.clone(),
            None => std::env::temp_dir().join(format!("tessera-sim-{}", std::process::id())),
        })?;
        let data = match partition {
            Partition::Natural => {
                if self.participants.is_some_and(|n| n != self.data.len()) {
                    bail!(
                        "--partition natural uses one participant per --data file; drop --participants"
                    );
                }
                partition::natural(&self.data, &self.label, 0.2, self.seed)?
            }
            Partition::Iid | Partition::Dirichlet(_) | Partition::Quantity(_) => {
                if self.data.len() != 1 {
                    bail!("--partition {partition} splits one --data file");
                }
                let n = self.participants.unwrap_or(4);
                let (src, label) = (&self.data[0], &self.label);
                match partition {
                    Partition::Dirichlet(a) => {
                        crate::partition_skew::dirichlet(src, label, n, a, 0.2, self.seed)?
                    }
                    Partition::Quantity(b) => {
                        crate::partition_skew::quantity(src, label, n, b, 0.2, self.seed)?
                    }
                    _ => partition::iid(src, label, n, 0.2, self.seed)?,
                }
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
        tessera_model::Monotone::new(&task, &learning.monotone)
            .map_err(|e| anyhow::anyhow!("--monotone: {e}"))?;
        let dp = self.privacy.enabled();
        let n = data.sites.len();
        if !dp && (self.privacy.placement.by_sites() || self.privacy.colluding_sites > 0) {
            anyhow::bail!(
                "--dp {} and --colluding-sites need differential privacy (--target-epsilon or \
                 --noise-multiplier)",
                self.privacy.placement
            );
        }
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
            placement: self.privacy.placement,
            colluding_sites: self.privacy.colluding_sites,
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
        let dropout = self.dropout.clone().unwrap_or_default();
        let leaving = dropout.per_round(n);
        let min_participants = self.min_participants.unwrap_or_else(|| {
            if leaving > 0 {
                n.saturating_sub(leaving)
            } else if n > 3 {
                n - 1
            } else {
                n
            }
            .max(if secagg { 3 } else { 1 })
        });
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
                // Deadlines, not waits (a stage closes as soon as every
                // answer is in): generous enough for a thousand sites
                // sharing two busy cores, where every site of a stage
                // finishes at about the same time.
                training_seconds: 60.0 + 0.3 * n as f64,
                stage_seconds: 20.0 + 0.3 * n as f64,
                listen: None,
                learning,
                site_budgets: Default::default(),
            },
            data,
            engine: self.engine,
            dropout,
            site_seed: self.privacy.noise_seed,
            dropout_tolerance: self.privacy.dropout_tolerance,
            options_toml: None,
        })
    }
}
