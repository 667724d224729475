//! The coordinator's configuration file (TOML), validated at load.
//!
//! Every error names the key at fault. Relative paths are resolved against
//! the directory of the configuration file, so a federation directory can be
//! moved as a whole.
//!
//! ```toml
//! [federation]
//! name = "heart"
//! listen = "127.0.0.1:50051"
//! min_participants = 3
//! rounds = 20
//! output_dir = "out"
//! # allow = ["cleveland", "hungary"]     # optional allow-list of certificate names
//!
//! [tls]
//! ca = "pki/ca.crt"
//! cert = "pki/coordinator.crt"
//! key = "pki/coordinator.key"
//!
//! [task]
//! model = "logistic"
//! features = ["age", "sex", "cp"]
//! label = "num"
//! positive = "> 0"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_model::{LabelRule, ModelKind, TaskSpec};
use tessera_privacy::AccountantKind;

/// A configuration error, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `privacy.delta`.
        key: &'static str,
        /// Why.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole coordinator configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Federation-wide settings.
    pub federation: FederationSection,
    /// TLS material.
    pub tls: TlsSection,
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
}

/// `[federation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Name of the federation, for logs and the participants' ledgers.
    pub name: String,
    /// Address to listen on for participants.
    pub listen: SocketAddr,
    /// Rounds do not start with fewer participants, and a round completes
    /// only if at least this many contributed.
    pub min_participants: usize,
    /// Planned number of training rounds.
    pub rounds: u32,
    /// Where the final model, metrics and checkpoints go.
    pub output_dir: PathBuf,
    /// SQLite store (ledger, rounds, checkpoints); default `output_dir/coordinator.sqlite`.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Optional allow-list of participant certificate names.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Optional Prometheus metrics address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How many aggregations in a row may fail before the federation gives up.
    #[serde(default = "default_max_failed")]
    pub max_failed_rounds: u32,
}

fn default_max_failed() -> u32 {
    5
}

/// `[tls]`: PEM files of the federation CA and the coordinator's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The federation CA certificate; participants' certificates must chain to it.
    pub ca: PathBuf,
    /// The coordinator's certificate.
    pub cert: PathBuf,
    /// The coordinator's private key.
    pub key: PathBuf,
}

/// `[task]`: what to learn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Model kind (`logistic`).
    #[serde(default = "default_model")]
    pub model: String,
    /// Feature columns.
    pub features: Vec<String>,
    /// Label column.
    pub label: String,
    /// Positive class: `"> 0"` or a literal class value such as `"M"`.
    pub positive: String,
}

fn default_model() -> String {
    "logistic".into()
}

/// `[training]`.
#[derive(Debug, Clone, Deserialize)]
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
/// shares sent to a participant or derive its masks. It does not stop a
/// coordinator from telling different participants different stories about
/// who dropped out: the consistency check of Bonawitz et al. 2017 (survivors
/// sign the set of participants still alive before unmasking) is not
/// implemented. Nor does it help against whoever holds the CA key (which can
/// issue a certificate for any name) or against colluding participants with
/// genuine certificates; no revocation list is consulted.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

/// `[deadlines]`, in seconds.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

/// The configuration after validation, with paths resolved and σ decided.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The raw sections, paths resolved.
    pub config: CoordinatorConfig,
    /// The task participants must train.
    pub task: TaskSpec,
    /// SQLite store path.
    pub store: PathBuf,
    /// Noise multiplier of training rounds (0 when DP is off): the one the
    /// ledger, the budget and the participants account. With adaptive
    /// clipping it is the effective multiplier σ_eff of the joint release of
    /// the update sum and the clipping-bit sum (Andrew et al. 2021, Thm. 1).
    pub noise_multiplier: f64,
    /// Noise multiplier σ_Δ on the update coordinates (noise std σ_Δ·C).
    /// Equals `noise_multiplier` without adaptive clipping; 0 when DP is off.
    pub update_noise_multiplier: f64,
    /// Noise std σ_b on the sum of the centred clipping bits (adaptive
    /// clipping with DP only; 0 otherwise).
    pub clip_count_noise_multiplier: f64,
    /// ε budget (None: no limit).
    pub max_epsilon: Option<f64>,
    /// Bounds of the statistics contributions (DP only).
    pub statistics_bounds: Option<tessera_model::StatsBounds>,
    /// DP is configured but the noise is seeded (`insecure_noise_seed`):
    /// the federation's releases are NOT private.
    pub not_private: bool,
}

impl Settings {
    /// Stage deadline.
    pub fn stage_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.config.deadlines.stage_seconds)
    }

    /// Training deadline.
    pub fn training_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.config.deadlines.training_seconds)
    }
}

impl CoordinatorConfig {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: CoordinatorConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base).validate()
    }

    fn resolve(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.ca);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.federation.output_dir);
        if let Some(s) = self.federation.store.as_mut() {
            fix(s);
        }
        self
    }

    /// Checks every value and decides the noise multiplier.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let f = &self.federation;
        if f.name.trim().is_empty() {
            return Err(invalid("federation.name", "must not be empty"));
        }
        if f.min_participants == 0 {
            return Err(invalid("federation.min_participants", "must be at least 1"));
        }
        if f.rounds == 0 {
            return Err(invalid("federation.rounds", "must be at least 1"));
        }
        if let Some(allow) = &f.allow
            && allow.is_empty()
        {
            return Err(invalid(
                "federation.allow",
                "an empty allow-list admits nobody; remove the key to admit every certificate of the CA",
            ));
        }
        let model: ModelKind = self
            .task
            .model
            .parse()
            .map_err(|e| invalid("task.model", format!("{e}")))?;
        if self.task.features.is_empty() {
            return Err(invalid("task.features", "list at least one feature column"));
        }
        if self.task.features.contains(&self.task.label) {
            return Err(invalid("task.label", "the label cannot also be a feature"));
        }
        let positive: LabelRule = self
            .task
            .positive
            .parse()
            .map_err(|e| invalid("task.positive", format!("{e}")))?;
        let t = &self.training;
        if t.local_epochs == 0 {
            return Err(invalid("training.local_epochs", "must be at least 1"));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(invalid(
                "training.learning_rate",
                "must be a positive number",
            ));
        }
        if t.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1"));
        }
        if !(t.clip_norm.is_finite() && t.clip_norm > 0.0) {
            return Err(invalid("training.clip_norm", "must be a positive number"));
        }
        if !(t.server_learning_rate.is_finite() && t.server_learning_rate > 0.0) {
            return Err(invalid(
                "training.server_learning_rate",
                "must be a positive number",
            ));
        }
        if let Some(g) = t.target_quantile {
            if !t.adaptive_clipping {
                return Err(invalid(
                    "training.target_quantile",
                    "only used with adaptive clipping; set adaptive_clipping = true",
                ));
            }
            if !(g > 0.0 && g < 1.0) {
                return Err(invalid("training.target_quantile", "must be in (0, 1)"));
            }
        }
        if let Some(eta) = t.clip_learning_rate {
            if !t.adaptive_clipping {
                return Err(invalid(
                    "training.clip_learning_rate",
                    "only used with adaptive clipping; set adaptive_clipping = true",
                ));
            }
            if !(eta.is_finite() && eta > 0.0) {
                return Err(invalid(
                    "training.clip_learning_rate",
                    "must be a positive number",
                ));
            }
        }
        let s = &self.secagg;
        if !(0.0..1.0).contains(&s.dropout_tolerance) {
            return Err(invalid("secagg.dropout_tolerance", "must be in [0, 1)"));
        }
        let d = &self.deadlines;
        for (key, v) in [
            ("deadlines.stage_seconds", d.stage_seconds),
            ("deadlines.training_seconds", d.training_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, "must be a positive number of seconds"));
            }
        }
        let st = &self.statistics;
        if !(st.value_bound.is_finite() && st.value_bound > 0.0) {
            return Err(invalid("statistics.value_bound", "must be positive"));
        }
        if !(st.max_rows.is_finite() && st.max_rows >= 1.0) {
            return Err(invalid("statistics.max_rows", "must be at least 1"));
        }
        let p = &self.privacy;
        let (noise_multiplier, max_epsilon, update_noise_multiplier, clip_count_noise_multiplier) =
            if p.enabled {
                if !(p.delta > 0.0 && p.delta < 1.0) {
                    return Err(invalid("privacy.delta", "must be in (0, 1)"));
                }
                if !(p.sampling_rate > 0.0 && p.sampling_rate <= 1.0) {
                    return Err(invalid("privacy.sampling_rate", "must be in (0, 1]"));
                }
                if !(p.statistics_noise_multiplier.is_finite()
                    && p.statistics_noise_multiplier > 0.0)
                {
                    return Err(invalid(
                        "privacy.statistics_noise_multiplier",
                        "must be a positive number",
                    ));
                }
                let sigma = match (p.noise_multiplier, p.target_epsilon) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "privacy.noise_multiplier",
                            "set either noise_multiplier or target_epsilon, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "privacy.noise_multiplier",
                            "privacy is enabled: set noise_multiplier or target_epsilon",
                        ));
                    }
                    (Some(sigma), None) => {
                        if !(sigma.is_finite() && sigma > 0.0) {
                            return Err(invalid("privacy.noise_multiplier", "must be positive"));
                        }
                        sigma
                    }
                    (None, Some(eps)) => {
                        if !(eps.is_finite() && eps > 0.0) {
                            return Err(invalid("privacy.target_epsilon", "must be positive"));
                        }
                        crate::budget::calibrate_training_noise(
                            eps,
                            p.delta,
                            p.sampling_rate,
                            f.rounds,
                            p.statistics_noise_multiplier,
                            p.accountant,
                        )
                        .map_err(|e| invalid("privacy.target_epsilon", e.to_string()))?
                    }
                };
                let max_eps = p.max_epsilon.or(p.target_epsilon);
                if let Some(m) = max_eps
                    && !(m.is_finite() && m > 0.0)
                {
                    return Err(invalid("privacy.max_epsilon", "must be positive"));
                }
                let (update_sigma, count_sigma) = if self.training.adaptive_clipping {
                    let count_sigma = match p.clip_count_noise_multiplier {
                        Some(b) => {
                            if !(b.is_finite() && b > 0.0) {
                                return Err(invalid(
                                    "privacy.clip_count_noise_multiplier",
                                    "must be a positive number",
                                ));
                            }
                            b
                        }
                        None => {
                            let sites = f
                                .allow
                                .as_ref()
                                .map(|a| a.len())
                                .unwrap_or(f.min_participants);
                            crate::budget::default_clip_count_noise(p.sampling_rate * sites as f64)
                        }
                    };
                    let update_sigma = crate::budget::update_noise_multiplier(sigma, count_sigma)
                        .map_err(|e| {
                        invalid("privacy.clip_count_noise_multiplier", e.to_string())
                    })?;
                    (update_sigma, count_sigma)
                } else {
                    if p.clip_count_noise_multiplier.is_some() {
                        return Err(invalid(
                            "privacy.clip_count_noise_multiplier",
                            "only used with adaptive clipping; set training.adaptive_clipping = true",
                        ));
                    }
                    (sigma, 0.0)
                };
                (sigma, max_eps, update_sigma, count_sigma)
            } else {
                if p.noise_multiplier.is_some() || p.target_epsilon.is_some() {
                    return Err(invalid(
                        "privacy.enabled",
                        "noise settings are given but privacy is not enabled; set enabled = true",
                    ));
                }
                if p.sampling_rate != 1.0 && !(p.sampling_rate > 0.0 && p.sampling_rate <= 1.0) {
                    return Err(invalid("privacy.sampling_rate", "must be in (0, 1]"));
                }
                if p.clip_count_noise_multiplier.is_some() {
                    return Err(invalid(
                        "privacy.enabled",
                        "noise settings are given but privacy is not enabled; set enabled = true",
                    ));
                }
                (0.0, None, 0.0, 0.0)
            };
        match (p.insecure_noise_seed, p.acknowledge_not_private) {
            (Some(_), false) => {
                return Err(invalid(
                    "privacy.insecure_noise_seed",
                    "a seeded noise makes every release NOT private; it is for simulations only \
                     and needs `acknowledge_not_private = true` in [privacy]",
                ));
            }
            (None, true) => {
                return Err(invalid(
                    "privacy.acknowledge_not_private",
                    "only meaningful with insecure_noise_seed; remove it",
                ));
            }
            _ => {}
        }
        let not_private = p.enabled && p.insecure_noise_seed.is_some();
        let statistics_bounds = if self.privacy.enabled {
            Some(
                crate::round::statistics_bounds(
                    &self.task.features,
                    &self.statistics.ranges,
                    self.statistics.max_rows,
                )
                .map_err(|e| invalid("statistics.ranges", e))?,
            )
        } else {
            None
        };
        if self.secagg.enabled && self.federation.min_participants < 3 {
            return Err(invalid(
                "federation.min_participants",
                "secure aggregation needs at least 3 participants per round",
            ));
        }
        let task = TaskSpec {
            model,
            features: self.task.features.clone(),
            label: self.task.label.clone(),
            positive,
        };
        let store = self
            .federation
            .store
            .clone()
            .unwrap_or_else(|| self.federation.output_dir.join("coordinator.sqlite"));
        Ok(Settings {
            config: self,
            task,
            store,
            noise_multiplier,
            update_noise_multiplier,
            clip_count_noise_multiplier,
            max_epsilon,
            statistics_bounds,
            not_private,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/coordinator.toml");
        std::fs::read_to_string(p).unwrap()
    }

    fn load_str(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        CoordinatorConfig::load(&path)
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let s = load_str(&example()).unwrap();
        assert!(s.config.privacy.enabled);
        assert!(s.noise_multiplier > 0.0);
        assert_eq!(s.max_epsilon, Some(8.0));
        assert_eq!(s.task.features.len(), 13);
        assert_eq!(s.statistics_bounds.as_ref().unwrap().lo.len(), 13);
    }

    fn invalid_key(text: &str) -> &'static str {
        match load_str(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = example();
        assert_eq!(
            invalid_key(&e.replace("delta = 1e-5", "delta = 2.0")),
            "privacy.delta"
        );
        assert_eq!(
            invalid_key(&e.replace(
                "target_epsilon = 8.0",
                "target_epsilon = 8.0\nnoise_multiplier = 1.0"
            )),
            "privacy.noise_multiplier"
        );
        assert_eq!(
            invalid_key(&e.replace("clip_norm = 0.25", "clip_norm = -1")),
            "training.clip_norm"
        );
        assert_eq!(
            invalid_key(&e.replace("min_participants = 3", "min_participants = 2")),
            "federation.min_participants"
        );
        assert_eq!(
            invalid_key(&e.replace("thal = [3, 7]", "")),
            "statistics.ranges"
        );
        assert_eq!(
            invalid_key(&e.replace("positive = \"> 0\"", "positive = \"\"")),
            "task.positive"
        );
    }

    #[test]
    fn adaptive_clipping_settings_are_validated() {
        let e = example();
        let adaptive = |training: &str, privacy: &str| {
            e.replace("clip_norm = 0.25", &format!("clip_norm = 0.25\n{training}"))
                .replace(
                    "statistics_noise_multiplier = 20.0",
                    &format!("statistics_noise_multiplier = 20.0\n{privacy}"),
                )
        };
        // σ_eff is calibrated as without adaptive clipping; σ_Δ follows.
        let fixed = load_str(&e).unwrap();
        let s = load_str(&adaptive(
            "adaptive_clipping = true",
            "clip_count_noise_multiplier = 10.0",
        ))
        .unwrap();
        assert_eq!(s.noise_multiplier, fixed.noise_multiplier);
        assert!(s.update_noise_multiplier > s.noise_multiplier);
        assert_eq!(s.clip_count_noise_multiplier, 10.0);
        let back = crate::budget::effective_noise_multiplier(
            s.update_noise_multiplier,
            s.clip_count_noise_multiplier,
        );
        assert!(back >= s.noise_multiplier && back < s.noise_multiplier * (1.0 + 1e-9));
        assert_eq!(s.config.training.target_quantile(), 0.5);
        assert_eq!(s.config.training.clip_learning_rate(), 0.2);
        // Without adaptive clipping, σ_Δ = σ and no bit noise.
        assert_eq!(fixed.update_noise_multiplier, fixed.noise_multiplier);
        assert_eq!(fixed.clip_count_noise_multiplier, 0.0);
        // The paper's default σ_b (4 sites / 20 = 0.2) leaves no room at this ε.
        assert_eq!(
            invalid_key(&adaptive("adaptive_clipping = true", "")),
            "privacy.clip_count_noise_multiplier"
        );
        assert_eq!(
            invalid_key(&adaptive(
                "adaptive_clipping = true",
                "clip_count_noise_multiplier = -1.0"
            )),
            "privacy.clip_count_noise_multiplier"
        );
        assert_eq!(
            invalid_key(&adaptive("", "clip_count_noise_multiplier = 10.0")),
            "privacy.clip_count_noise_multiplier"
        );
        for (line, key) in [
            ("target_quantile = 1.0", "training.target_quantile"),
            ("target_quantile = 0.0", "training.target_quantile"),
            ("clip_learning_rate = 0.0", "training.clip_learning_rate"),
            ("clip_learning_rate = nan", "training.clip_learning_rate"),
        ] {
            let text = adaptive(
                &format!("adaptive_clipping = true\n{line}"),
                "clip_count_noise_multiplier = 10.0",
            );
            assert_eq!(invalid_key(&text), key, "{line}");
        }
        // Adaptive-only keys without adaptive clipping.
        assert_eq!(
            invalid_key(&adaptive("target_quantile = 0.3", "")),
            "training.target_quantile"
        );
        assert_eq!(
            invalid_key(&adaptive("clip_learning_rate = 0.3", "")),
            "training.clip_learning_rate"
        );
        // Without DP adaptive clipping is allowed, with no bit noise.
        let plain = e
            .replace(
                "clip_norm = 0.25",
                "clip_norm = 0.25\nadaptive_clipping = true",
            )
            .replace("enabled = true\ntarget_epsilon = 8.0", "enabled = false");
        assert!(plain.contains("enabled = false"));
        let s = load_str(&plain).unwrap();
        assert!(s.config.training.adaptive_clipping);
        assert_eq!(s.clip_count_noise_multiplier, 0.0);
    }

    #[test]
    fn unknown_keys_and_bad_types_are_parse_errors() {
        let e = example();
        let err = load_str(&e.replace("rounds = 8", "rounds = 8\nroundz = 9")).unwrap_err();
        assert!(err.to_string().contains("roundz"), "{err}");
        let err = load_str(&e.replace("rounds = 8", "rounds = \"eight\"")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let s = load_str(&example()).unwrap();
        assert!(s.config.tls.ca.is_absolute());
        assert!(s.store.ends_with("coordinator.sqlite"));
    }
}
