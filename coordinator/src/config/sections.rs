//! The sections of the coordinator's configuration file, with their
//! defaults: what each key means.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tessera_model::Placement;
use tessera_privacy::AccountantKind;

/// The whole coordinator configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Federation-wide settings.
    pub federation: FederationSection,
    /// TLS material: `[tls]` with `ca`, `cert` and `key` (PEM files).
    pub tls: tessera_certs::TlsFiles,
    /// The learning task.
    pub task: TaskSection,
    /// Local and server training settings.
    #[serde(default)]
    pub training: TrainingSection,
    /// Secure aggregation.
    #[serde(default)]
    pub secagg: SecAggSection,
    /// Differential privacy.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// Stage deadlines.
    #[serde(default)]
    pub deadlines: DeadlineSection,
    /// Federated statistics (pooled standardisation).
    #[serde(default)]
    pub statistics: StatisticsSection,
    /// The status page and `/metrics` (absent: no page).
    #[serde(default)]
    pub web: Option<super::web::WebSection>,
    /// Federated evaluation of the global model on the sites' held-out rows.
    #[serde(default)]
    pub evaluation: EvaluationSection,
    /// `[[analytics]]`: queries run before training, one per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analytics: Vec<super::analytics::AnalyticsEntry>,
}

/// `[federation]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Name of the federation, for logs and the participants' ledgers.
    pub name: String,
    /// Address to listen on for participants.
    pub listen: SocketAddr,
    /// Rounds do not start with fewer participants, and a round completes
    /// only if at least this many contributed.
    pub min_participants: usize,
    /// Planned number of training rounds; 0: an analytics-only federation
    /// (no statistics, no training), which answers its `[[analytics]]`
    /// queries and `tessera-coordinator query` until stopped.
    pub rounds: u32,
    /// Where the final model, metrics and checkpoints go.
    pub output_dir: PathBuf,
    /// SQLite store (ledger, rounds, checkpoints); default `output_dir/coordinator.sqlite`.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Optional allow-list of participant certificate names.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Optional address serving `/metrics` alone (kept for existing
    /// configurations; `[web]` serves it beside the status page). Off
    /// loopback it needs `web.operators`, like the page.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How many aggregations in a row may fail before the federation gives up.
    #[serde(default = "default_max_failed")]
    pub max_failed_rounds: u32,
    /// When the plan does not fit the privacy terms the sites declare as they
    /// join: `"refuse"` to start, naming the sites and figures (default),
    /// `"fit"` the number of training rounds to the tightest site, or
    /// `"proceed"` as planned, each such site sitting out what it declines.
    #[serde(default)]
    pub site_budgets: crate::round::budgets::SiteBudgetPolicy,
}

fn default_max_failed() -> u32 {
    FederationSection::DEFAULT_MAX_FAILED_ROUNDS
}

impl FederationSection {
    /// Default of `max_failed_rounds`.
    pub const DEFAULT_MAX_FAILED_ROUNDS: u32 = 5;
}

/// `[task]`: what to learn.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Task kind: `binary` (default), `multiclass` or `regression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Model: `logistic` (binary), `softmax` (multi-class), `linear`
    /// (regression), `mlp:64,32` (any), or `external` (any architecture, from
    /// `training.initial_model`). Default: the kind's linear model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Feature columns.
    pub features: Vec<String>,
    /// Label column.
    pub label: String,
    /// Binary tasks: the positive class, `"> 0"` or a literal class value such as `"M"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<String>,
    /// Multi-class tasks: the class values, in a fixed order (a site's label
    /// not in the list is an error naming file, line and value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Regression tasks: standardise the target with its pooled mean and
    /// standard deviation (default true; with DP it needs a
    /// `statistics.ranges` entry for the label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardize_target: Option<bool>,
}

impl TaskSection {
    /// The task this section describes, checked; an external model's tensors
    /// come from the initial model file (see [`crate::settings`]).
    pub fn to_task(&self) -> Result<tessera_model::TaskSpec, super::ConfigError> {
        use super::invalid;
        let positive = match &self.positive {
            Some(p) => Some(
                p.parse::<tessera_model::LabelRule>()
                    .map_err(|e| invalid("task.positive", format!("{e}")))?,
            ),
            None => None,
        };
        let kind = tessera_model::TaskKind::from_parts(
            self.kind.as_deref(),
            positive,
            self.classes.clone(),
            self.standardize_target,
        )
        .map_err(|e| invalid("task.kind", e.to_string()))?;
        let model = match &self.model {
            Some(m) => m
                .parse()
                .map_err(|e| invalid("task.model", format!("{e}")))?,
            None => match kind {
                tessera_model::TaskKind::Binary { .. } => tessera_model::ModelKind::Logistic,
                tessera_model::TaskKind::Multiclass { .. } => tessera_model::ModelKind::Softmax,
                tessera_model::TaskKind::Regression { .. } => tessera_model::ModelKind::Linear,
            },
        };
        Ok(tessera_model::TaskSpec {
            model,
            features: self.features.clone(),
            label: self.label.clone(),
            kind,
            tensors: Vec::new(),
        })
    }
}

/// `[training]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Local SGD learning rate.
    pub learning_rate: f64,
    /// Local minibatch size.
    pub batch_size: u32,
    /// L2 norm every update is clipped to (also bounds the fixed-point range).
    pub clip_norm: f64,
    /// Server learning rate applied to the averaged update (FedAvg: 1).
    pub server_learning_rate: f64,
    /// Server optimizer: `fedavg` (default), `fedavgm` (FedAvg with server
    /// momentum, Hsu, Qi & Brown 2019), or `fedadagrad`, `fedadam`, `fedyogi`
    /// (Reddi et al. 2021). They act on the released, noised average, so they
    /// cost no privacy. Their state is checkpointed with the model.
    pub server_optimizer: String,
    /// Momentum β of `fedavgm` (default 0.9).
    pub server_momentum: f64,
    /// β₁ of the adaptive optimizers (default 0.9).
    pub server_beta1: f64,
    /// β₂ of `fedadam` and `fedyogi` (default 0.99).
    pub server_beta2: f64,
    /// τ, the adaptivity of the adaptive optimizers (default 0.001); their
    /// server learning rate is usually far below 1 (e.g. 0.01 to 0.1).
    pub server_tau: f64,
    /// L2 weight decay of local training (default 0).
    pub weight_decay: f64,
    /// Monotone constraints from public knowledge: feature name →
    /// `increasing` or `decreasing` (e.g. `{ age = "increasing", thalach =
    /// "decreasing" }`). After every server step, and on the initial model,
    /// the coordinator sets a constrained weight of the wrong sign to zero
    /// (`tessera_model::monotone`): post-processing of the released model,
    /// so it costs no privacy. Built-in linear models with one output only
    /// (logistic, linear). Never derive them from the federation's data.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub monotone: BTreeMap<String, tessera_model::Direction>,
    /// The federation's initial model: a safetensors file of `F32` tensors.
    /// Required for `task.model = "external"` (its tensors, ordered by name,
    /// are the model's layout); for a built-in model its tensors must be the
    /// built-in layout's. Without it, built-in models start from their
    /// documented initialisation.
    pub initial_model: Option<std::path::PathBuf>,
    /// Seed of local shuffling and of the initial model (not a privacy seed).
    pub seed: u64,
    /// The final model averages the parameters of the last this many released
    /// models (1: the last model alone). Averaging released models is
    /// post-processing: free in privacy, and it smooths the noise.
    pub average_last: u32,
    /// Adaptive clipping (Andrew, Chien, Thakkar, McMahan, "Differentially
    /// Private Learning with Adaptive Clipping", NeurIPS 2021): `clip_norm`
    /// is only the initial C, which then follows the `target_quantile` of
    /// the participants' update norms, estimated privately each round.
    pub adaptive_clipping: bool,
    /// Adaptive clipping: the quantile γ of the update norms that C tracks
    /// (default 0.5, the median). Only with `adaptive_clipping`.
    pub target_quantile: Option<f64>,
    /// Adaptive clipping: learning rate η_C of the geometric update
    /// C ← C·exp(−η_C (b̄ − γ)) (default 0.2). Only with `adaptive_clipping`.
    pub clip_learning_rate: Option<f64>,
}

/// Default target quantile γ of adaptive clipping (Andrew et al. 2021).
pub const DEFAULT_TARGET_QUANTILE: f64 = 0.5;
/// Default clip learning rate η_C of adaptive clipping (Andrew et al. 2021).
pub const DEFAULT_CLIP_LEARNING_RATE: f64 = 0.2;

impl TrainingSection {
    /// The target quantile γ of adaptive clipping.
    pub fn target_quantile(&self) -> f64 {
        self.target_quantile.unwrap_or(DEFAULT_TARGET_QUANTILE)
    }

    /// The clip learning rate η_C of adaptive clipping.
    pub fn clip_learning_rate(&self) -> f64 {
        self.clip_learning_rate
            .unwrap_or(DEFAULT_CLIP_LEARNING_RATE)
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            local_epochs: 1,
            learning_rate: 0.5,
            batch_size: 16,
            clip_norm: 10.0,
            server_learning_rate: 1.0,
            server_optimizer: "fedavg".into(),
            server_momentum: 0.9,
            server_beta1: 0.9,
            server_beta2: 0.99,
            server_tau: 1e-3,
            weight_decay: 0.0,
            monotone: BTreeMap::new(),
            initial_model: None,
            seed: 0,
            average_last: 1,
            adaptive_clipping: false,
            target_quantile: None,
            clip_learning_rate: None,
        }
    }
}

/// `[secagg]`.
///
/// # Signed keys (`signed_keys = true`)
///
/// Opt-in active security against key substitution: each participant signs
/// its two advertised public keys (bound to the round and its cohort index)
/// with the private key of its TLS certificate; the coordinator forwards
/// every cohort member's certificate with the announcement and refuses
/// unsigned keys. Each participant checks that every forwarded certificate
/// chains to the federation CA and names the member it is listed as,
/// declines the round otherwise, and leaves the round if a neighbour's keys
/// do not carry that neighbour's signature (see `tessera_participant::signing`).
///
/// This stops a coordinator from slipping in keys of its own to open the
/// shares sent to a participant or derive its masks. Signed keys also turn
/// on the defences against a coordinator that lies (they need the
/// signatures, so they are off without them; see
/// `tessera_secagg::consistency`):
/// - the neighbour graph's seed is derived from every advertised key and
///   checked by each participant, so the coordinator cannot choose the graph
///   (the announced `graph_seed` is unused and zero);
/// - the consistency check of Bonawitz et al. 2017 (Round 3): after the
///   masked inputs, every survivor signs the survivor list it was given, and
///   reveals no share unless t signatures over the same list come back, so
///   the coordinator cannot tell some that a site dropped and others that it
///   survived (one more message exchange per round);
/// - participants remember the signed-key rounds they took part in and
///   decline a round number announced again.
///
/// It does not help against whoever holds the CA key (which can issue a
/// certificate for any name) or against colluding participants with
/// genuine certificates beyond the Shamir threshold; no revocation list is
/// consulted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecAggSection {
    /// Secure aggregation on (default). Off only for plain-FedAvg comparisons.
    pub enabled: bool,
    /// Fraction of a cohort that may drop out while the round still completes.
    pub dropout_tolerance: f64,
    /// Participants sign their advertised keys with their certificate key
    /// (default off; see above for what it protects against).
    pub signed_keys: bool,
}

impl Default for SecAggSection {
    fn default() -> Self {
        Self {
            enabled: true,
            dropout_tolerance: 0.3,
            signed_keys: false,
        }
    }
}

/// `[privacy]`: differential privacy of the released models.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// DP on.
    pub enabled: bool,
    /// Noise multiplier σ (noise std σ·C on the sum). Exclusive with `target_epsilon`.
    pub noise_multiplier: Option<f64>,
    /// Target ε after `federation.rounds` rounds; σ is calibrated from it.
    pub target_epsilon: Option<f64>,
    /// δ of the guarantee.
    pub delta: f64,
    /// Poisson sampling rate q; 1 = every available participant each round.
    pub sampling_rate: f64,
    /// Total budget: no round starts that would take ε past it. Defaults to
    /// `target_epsilon`, or no limit with a fixed `noise_multiplier`.
    pub max_epsilon: Option<f64>,
    /// Noise multiplier of the federated-statistics release.
    pub statistics_noise_multiplier: f64,
    /// Accountant for the ledger's ε.
    pub accountant: AccountantKind,
    /// Simulations only: seed the noise, which makes the run NOT private.
    /// Refused unless `acknowledge_not_private = true` is set as well; every
    /// ledger row, the terms sent to the sites (and so their ledgers) and
    /// every report then say "not private".
    pub insecure_noise_seed: Option<u64>,
    /// The loud opt-in `insecure_noise_seed` needs.
    pub acknowledge_not_private: bool,
    /// Adaptive clipping only: noise std σ_b on the sum of the centred
    /// clipping bits (sensitivity 1/2). Default: the expected cohort / 20, as
    /// in Andrew et al. 2021, where the expected cohort is `sampling_rate`
    /// times the allow-list's length (or `federation.min_participants`
    /// without an allow-list). Must leave room for the update's noise:
    /// (2σ_b)^-2 < σ^-2, where σ is the (effective) noise multiplier.
    pub clip_count_noise_multiplier: Option<f64>,
    /// Where the noise of every release (training updates, statistics,
    /// evaluation sums) is added: `central` (the coordinator, after
    /// unmasking; the default), `distributed` (each site adds a share before
    /// masking, the coordinator tops up for dropouts) or `local` (each site
    /// adds the whole noise; σ and `target_epsilon` are then each site's
    /// own).
    pub placement: Placement,
    /// How many sites may collude with the coordinator in the guarantee
    /// against the coordinator (their noise is known to it). Default 0: the
    /// coordinator alone. Reported, not used to size the noise.
    pub colluding_sites: u32,
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            enabled: false,
            noise_multiplier: None,
            target_epsilon: None,
            delta: 1e-5,
            sampling_rate: 1.0,
            max_epsilon: None,
            statistics_noise_multiplier: 5.0,
            accountant: AccountantKind::Best,
            insecure_noise_seed: None,
            acknowledge_not_private: false,
            clip_count_noise_multiplier: None,
            placement: Placement::Central,
            colluding_sites: 0,
        }
    }
}

/// `[deadlines]`, in seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineSection {
    /// Each secure-aggregation stage (keys, shares, unmasking).
    pub stage_seconds: f64,
    /// Local training and upload of the (masked) update.
    pub training_seconds: f64,
}

impl Default for DeadlineSection {
    fn default() -> Self {
        Self {
            stage_seconds: 30.0,
            training_seconds: 120.0,
        }
    }
}

/// `[statistics]`: bounds of each site's contribution to the pooled feature
/// statistics (they fix the fixed-point range and, with DP, the sensitivity).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsSection {
    /// Feature values are clipped to ±value_bound before summing.
    pub value_bound: f64,
    /// Largest number of rows one site contributes.
    pub max_rows: f64,
    /// Public range `[lo, hi]` of each feature; required when DP is on, so
    /// that one site's contribution to the pooled statistics is bounded.
    pub ranges: std::collections::BTreeMap<String, [f64; 2]>,
}

impl Default for StatisticsSection {
    fn default() -> Self {
        Self {
            value_bound: 1e4,
            max_rows: 1e5,
            ranges: Default::default(),
        }
    }
}

/// `[evaluation]`: federated evaluation. Every `every` training rounds, and
/// after the last, the cohort evaluates the global model on its held-out rows
/// (each site's `[evaluation]` says which) and the coordinator learns only
/// the sums, through secure aggregation: the confusion matrix, summed log loss
/// and (binary) score histograms, or a regression's error sums. With DP the
/// sums get their own noise and ledger event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSection {
    /// Evaluate every this many training rounds, and after the last (0: never).
    pub every: u32,
    /// With DP: noise multiplier of the evaluation sums (noise std σ times the
    /// per-site sensitivity `max_rows · B`).
    pub noise_multiplier: f64,
    /// Score bins of a binary task's histograms (10 to 10,000), from which the
    /// ROC AUC is computed.
    pub bins: u32,
    /// Most rows one site's sums count (weighted beyond); default
    /// `statistics.max_rows`.
    pub max_rows: Option<f64>,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        Self {
            every: 0,
            noise_multiplier: 5.0,
            bins: tessera_model::evaluation::DEFAULT_BINS,
            max_rows: None,
        }
    }
}
