//! The planning step: a checked configuration becomes the [`Settings`] a
//! coordinator runs with — the task, the store path, and the noise decided
//! (σ calibrated from a target ε, split between the update and the clipping
//! bit under adaptive clipping, the statistics bounds).
//!
//! Configuration checks ([`crate::config`]) and rounds ([`crate::round`])
//! know nothing of each other; this module joins them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_model::{EvalTerms, ModelKind, Placement, StatsBounds, TaskSpec};

use crate::budget;
use crate::config::{ConfigError, CoordinatorConfig, invalid};
use crate::round::policy::{
    AdaptivePolicy, EvaluationPolicy, FederationPolicy, InitialModel, PrivacyPolicy, SecAggPolicy,
    StatisticsPolicy, TrainingPolicy,
};
use crate::round::{
    CentralNoise, FederationMachine, OptimizerState, Plugins, Resume, SecureRng, optimizer,
};

/// The configuration after checking, with paths resolved and σ decided.
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
    /// The initial model's parameters (`training.initial_model`), if given.
    pub initial_model: Option<InitialModel>,
    /// The task's monotone constraints (`training.monotone`; none when empty).
    pub monotone: tessera_model::Monotone,
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

    /// The narrow policy the federation machine runs by.
    // `statistics_bounds` is set whenever DP is on: `Settings::plan` makes
    // both from the same validated configuration, so this cannot fail on
    // anything a file or a peer supplies.
    #[allow(clippy::expect_used)]
    pub fn policy(&self) -> FederationPolicy {
        let c = &self.config;
        let t = &c.training;
        FederationPolicy {
            federation: c.federation.name.clone(),
            task: self.task.clone(),
            rounds: c.federation.rounds,
            min_participants: c.federation.min_participants,
            allow: c.federation.allow.clone(),
            max_failed_rounds: c.federation.max_failed_rounds,
            stage_deadline: self.stage_deadline(),
            training_deadline: self.training_deadline(),
            secagg: c.secagg.enabled.then_some(SecAggPolicy {
                dropout_tolerance: c.secagg.dropout_tolerance,
                signed_keys: c.secagg.signed_keys,
            }),
            training: TrainingPolicy {
                local_epochs: t.local_epochs,
                learning_rate: t.learning_rate,
                batch_size: t.batch_size,
                seed: t.seed,
                clip_norm: t.clip_norm,
                adaptive: t.adaptive_clipping.then(|| AdaptivePolicy {
                    target_quantile: t.target_quantile(),
                    clip_learning_rate: t.clip_learning_rate(),
                }),
                weight_decay: t.weight_decay,
                initial_model: self.initial_model.clone(),
                monotone: self.monotone.clone(),
            },
            privacy: c.privacy.enabled.then(|| PrivacyPolicy {
                noise_multiplier: self.noise_multiplier,
                update_noise_multiplier: self.update_noise_multiplier,
                clip_count_noise_multiplier: self.clip_count_noise_multiplier,
                statistics_noise_multiplier: c.privacy.statistics_noise_multiplier,
                statistics_bounds: self.statistics_bounds.clone().expect("planned with DP on"),
                delta: c.privacy.delta,
                sampling_rate: c.privacy.sampling_rate,
                max_epsilon: self.max_epsilon,
                accountant: c.privacy.accountant,
                not_private: self.not_private,
                placement: c.privacy.placement,
                colluding_sites: c.privacy.colluding_sites,
            }),
            statistics: StatisticsPolicy {
                value_bound: c.statistics.value_bound,
                max_rows: c.statistics.max_rows,
            },
            site_budgets: c.federation.site_budgets,
            evaluation: self.evaluation_policy(),
        }
    }

    /// Federated evaluation as the machine runs it (None when off).
    pub fn evaluation_policy(&self) -> Option<EvaluationPolicy> {
        let c = &self.config;
        let e = &c.evaluation;
        (e.every > 0).then(|| {
            // A regression's errors are bounded by a public range of its target:
            // the configured one, else ±value_bound.
            let target_range = match self.task.kind {
                tessera_model::TaskKind::Regression { .. } => Some(
                    c.statistics
                        .ranges
                        .get(&self.task.label)
                        .map(|[lo, hi]| (*lo, *hi))
                        .unwrap_or((-c.statistics.value_bound, c.statistics.value_bound)),
                ),
                _ => None,
            };
            EvaluationPolicy {
                every: e.every,
                noise_multiplier: e.noise_multiplier,
                terms: EvalTerms {
                    max_rows: e.max_rows.unwrap_or(c.statistics.max_rows),
                    bins: e.bins,
                    target_range,
                },
            }
        })
    }

    /// The federation machine these settings run: central noise drawn from
    /// `noise_rng`, the configured server optimizer (restored from
    /// `optimizer_state` when resuming), cohorts and graph seeds from `rng`.
    pub fn machine(
        &self,
        resume: Resume,
        optimizer_state: Option<&OptimizerState>,
        rng: SecureRng,
        noise_rng: SecureRng,
    ) -> Result<FederationMachine, String> {
        let t = &self.config.training;
        let mut optimizer = optimizer::build(&optimizer::OptimizerConfig {
            name: t.server_optimizer.clone(),
            learning_rate: t.server_learning_rate,
            momentum: t.server_momentum,
            beta1: t.server_beta1,
            beta2: t.server_beta2,
            tau: t.server_tau,
        })?;
        if let Some(state) = optimizer_state {
            optimizer.restore(state)?;
        }
        let plugins = Plugins {
            noise: Box::new(CentralNoise::new(noise_rng)),
            optimizer,
        };
        Ok(FederationMachine::new(
            std::sync::Arc::new(self.policy()),
            resume,
            plugins,
            rng,
        ))
    }

    /// Reads, checks and plans a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::plan(CoordinatorConfig::load(path)?)
    }

    /// Checks a configuration and decides its noise.
    pub fn plan(config: CoordinatorConfig) -> Result<Settings, ConfigError> {
        config.check()?;
        let mut task = config.task.to_task()?;
        let initial_model = match &config.training.initial_model {
            Some(path) => {
                let (layout, params) = tessera_model::tensors::read_layout(path)
                    .map_err(|e| invalid("training.initial_model", e.to_string()))?;
                if task.model == ModelKind::External {
                    task.tensors = layout.clone();
                    task.validate()
                        .map_err(|e| invalid("training.initial_model", e.to_string()))?;
                }
                // A built-in model's initial file is checked against its layout
                // once the statistics fix the number of inputs.
                Some(InitialModel::new(layout, &params))
            }
            None => None,
        };
        let monotone = tessera_model::Monotone::new(&task, &config.training.monotone)
            .map_err(|e| invalid("training.monotone", e.to_string()))?;
        let f = &config.federation;
        let p = &config.privacy;
        let (noise_multiplier, max_epsilon, update_noise_multiplier, clip_count_noise_multiplier) =
            if p.enabled {
                let sigma = match (p.noise_multiplier, p.target_epsilon) {
                    (Some(sigma), _) => sigma,
                    // An analytics-only federation trains nothing: the
                    // target is the budget of its queries alone.
                    (None, Some(_)) if f.rounds == 0 => 0.0,
                    (None, Some(eps)) => {
                        // The statistics release and the planned evaluations are
                        // fixed costs; the training rounds get the rest.
                        let mut fixed =
                            vec![budget::statistics_event(p.statistics_noise_multiplier)];
                        let evaluations = planned_evaluations(&config, f.rounds);
                        if evaluations > 0 {
                            fixed.push(budget::evaluation_event(
                                config.evaluation.noise_multiplier,
                                evaluations,
                            ));
                        }
                        // So are the `[[analytics]]` queries run before
                        // training: the same ledger counts them.
                        fixed.extend(config.analytics.iter().map(|a| a.plan.event()));
                        // Noise added by the sites is a distributed discrete
                        // Gaussian: no amplification by sampling, and
                        // accounted as the Gaussian at the same σ within a
                        // slack (tessera_privacy::distributed, "Accounting"),
                        // so the Gaussian calibration at q = 1 reaches the
                        // same ε. With local noise the target is
                        // each site's own guarantee from its own noise alone
                        // (every release: the statistics and evaluations carry
                        // each site's own noise too, at their σ); the released
                        // models, with the cohort's noise together, get a
                        // smaller ε.
                        let (q, accountant) = match p.placement {
                            Placement::Central => (p.sampling_rate, p.accountant),
                            _ => (1.0, p.accountant),
                        };
                        budget::calibrate_training_noise_with(
                            eps, p.delta, q, f.rounds, &fixed, accountant,
                        )
                        .map_err(|e| invalid("privacy.target_epsilon", e.to_string()))?
                    }
                    (None, None) => unreachable!("checked: one of the two is set"),
                };
                let (update_sigma, count_sigma) = if config.training.adaptive_clipping {
                    let count_sigma = match p.clip_count_noise_multiplier {
                        Some(b) => b,
                        None => {
                            let sites = f
                                .allow
                                .as_ref()
                                .map(|a| a.len())
                                .unwrap_or(f.min_participants);
                            budget::default_clip_count_noise(p.sampling_rate * sites as f64)
                        }
                    };
                    let update_sigma = budget::update_noise_multiplier(sigma, count_sigma)
                        .map_err(|e| {
                            invalid("privacy.clip_count_noise_multiplier", e.to_string())
                        })?;
                    (update_sigma, count_sigma)
                } else {
                    (sigma, 0.0)
                };
                (
                    sigma,
                    p.max_epsilon.or(p.target_epsilon),
                    update_sigma,
                    count_sigma,
                )
            } else {
                (0.0, None, 0.0, 0.0)
            };
        let not_private = p.enabled && p.insecure_noise_seed.is_some();
        let statistics_bounds = if p.enabled {
            Some(
                statistics_bounds(
                    &task.statistics_columns(),
                    &config.statistics.ranges,
                    config.statistics.max_rows,
                )
                .map_err(|e| invalid("statistics.ranges", e))?,
            )
        } else {
            None
        };
        let store = config
            .federation
            .store
            .clone()
            .unwrap_or_else(|| config.federation.output_dir.join("coordinator.sqlite"));
        Ok(Settings {
            config,
            task,
            store,
            noise_multiplier,
            update_noise_multiplier,
            clip_count_noise_multiplier,
            max_epsilon,
            statistics_bounds,
            not_private,
            initial_model,
            monotone,
        })
    }
}

/// How many evaluation releases `rounds` training rounds make under `config`.
fn planned_evaluations(config: &CoordinatorConfig, rounds: u32) -> u32 {
    let every = config.evaluation.every;
    if every == 0 {
        return 0;
    }
    rounds / every + u32::from(!rounds.is_multiple_of(every))
}

/// Bounds of the statistics contributions, from the configuration.
pub fn statistics_bounds(
    features: &[String],
    ranges: &BTreeMap<String, [f64; 2]>,
    max_rows: f64,
) -> Result<StatsBounds, String> {
    let mut r = Vec::with_capacity(features.len());
    for f in features {
        let Some([lo, hi]) = ranges.get(f) else {
            return Err(format!("no range for feature `{f}`"));
        };
        r.push((*lo, *hi));
    }
    StatsBounds::new(&r, max_rows).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::OptimizerState;

    /// Plans a configuration with the `[task]` lines `task` (a binary task
    /// on feature `a` when empty) and the `[training]` lines `training`;
    /// a parse or planning error as text.
    fn plan(task: &str, training: &str) -> Result<Settings, String> {
        let task = if task.is_empty() {
            "features = [\"a\"]\nlabel = \"y\"\npositive = \"> 0\""
        } else {
            task
        };
        let text = format!(
            r#"
[federation]
name = "optimizers"
listen = "127.0.0.1:0"
min_participants = 3
rounds = 2
output_dir = "/nonexistent"
[tls]
ca = "a"
cert = "b"
key = "c"
[task]
{task}
[training]
{training}
"#
        );
        let config: CoordinatorConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        Settings::plan(config).map_err(|e| e.to_string())
    }

    fn settings(extra_training: &str) -> Settings {
        plan("", extra_training).unwrap()
    }

    fn rng() -> SecureRng {
        use rand::SeedableRng;
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1))
    }

    #[test]
    fn the_configured_optimizer_is_built_and_restored() {
        let m = settings("server_optimizer = \"fedavgm\"\nserver_momentum = 0.5");
        let state = OptimizerState {
            name: "fedavgm".into(),
            steps: 3,
            vectors: vec![("velocity".into(), vec![0.25, -1.0])],
        };
        let machine = m
            .machine(Resume::default(), Some(&state), rng(), rng())
            .unwrap();
        assert_eq!(machine.optimizer_state(), state);
        // A checkpoint of another optimizer is refused, not silently dropped.
        let plain = settings("");
        let err = plain
            .machine(Resume::default(), Some(&state), rng(), rng())
            .unwrap_err();
        assert!(err.contains("fedavgm") && err.contains("fedavg"), "{err}");
        // Unknown names and momenta out of range are configuration errors.
        for bad in [
            "server_optimizer = \"adam\"",
            "server_optimizer = \"fedavgm\"\nserver_momentum = 1.0",
        ] {
            let err = plan("", bad).unwrap_err();
            assert!(err.contains("training.server_"), "{err}");
        }
    }

    #[test]
    fn monotone_constraints_reach_the_policy_or_say_what_is_wrong() {
        let m = settings("monotone = { a = \"decreasing\" }");
        let mut params = vec![0.5f32, -0.2];
        assert_eq!(m.policy().training.monotone.project(&mut params), 1);
        assert_eq!(params, vec![0.0, -0.2]);
        for (bad, wanted) in [
            (
                "monotone = { b = \"increasing\" }",
                "\"b\" is not one of the task's features",
            ),
            ("monotone = { a = \"up\" }", "unknown variant `up`"),
        ] {
            let err = plan("", bad).unwrap_err();
            assert!(err.contains(wanted), "{err}");
            assert!(err.contains("monotone"), "{err}");
        }
        // A multi-class task's softmax has no single direction per feature.
        let err = plan(
            "kind = \"multiclass\"\nclasses = [\"p\", \"q\", \"r\"]\nfeatures = [\"a\"]\nlabel = \"y\"",
            "monotone = { a = \"increasing\" }",
        )
        .unwrap_err();
        assert!(
            err.contains("training.monotone") && err.contains("linear model"),
            "{err}"
        );
    }
}
