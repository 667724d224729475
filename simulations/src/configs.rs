//! The configuration files of a launched federation, built from the real
//! configuration types of the coordinator and the participant and
//! serialised, so the compiler checks every key the launcher writes.

use std::path::Path;

use anyhow::Context;
use tessera_certs::TlsFiles;
use tessera_coordinator::config::{
    CoordinatorConfig, DeadlineSection, EvaluationSection, FederationSection, PrivacySection,
    SecAggSection, StatisticsSection, TaskSection, TrainingSection,
};
use tessera_model::TaskKind;
use tessera_participant::config::{
    LimitsSection, ParticipantConfig, ParticipantSection, ReconnectSection, SitePrivacySection,
    TrainerSection,
};

use crate::launch::{FederationPlan, Layout, SitePlan};

/// The coordinator's configuration for `plan`, with its files in `layout`.
pub fn coordinator_config(
    plan: &FederationPlan,
    layout: &Layout,
) -> anyhow::Result<CoordinatorConfig> {
    let names: Vec<String> = plan.sites.iter().map(|s| s.name.clone()).collect();
    let listen = plan.listen.as_deref().unwrap_or("127.0.0.1:0");
    let t = &plan.training;
    let adaptive = plan
        .privacy
        .as_ref()
        .and_then(|p| p.adaptive_clipping.as_ref());
    let training = TrainingSection {
        local_epochs: t.local_epochs,
        learning_rate: t.learning_rate,
        batch_size: t.batch_size,
        clip_norm: t.clip_norm,
        server_learning_rate: t.server_learning_rate,
        seed: t.seed,
        average_last: t.average_last,
        adaptive_clipping: adaptive.is_some(),
        target_quantile: adaptive.map(|a| a.target_quantile),
        clip_learning_rate: adaptive.map(|a| a.clip_learning_rate),
        server_optimizer: plan.learning.server_optimizer.clone(),
        server_momentum: plan.learning.server_momentum,
        server_tau: plan.learning.server_tau,
        weight_decay: plan.learning.weight_decay,
        monotone: plan.learning.monotone.clone(),
        initial_model: plan.learning.initial_model.clone(),
        ..TrainingSection::default()
    };
    let (privacy, statistics) = match &plan.privacy {
        Some(p) => (
            PrivacySection {
                enabled: true,
                noise_multiplier: p.noise_multiplier,
                target_epsilon: p.target_epsilon,
                max_epsilon: p.max_epsilon,
                delta: p.delta,
                sampling_rate: p.sampling_rate,
                statistics_noise_multiplier: p.statistics_noise_multiplier,
                insecure_noise_seed: p.noise_seed,
                acknowledge_not_private: p.noise_seed.is_some(),
                clip_count_noise_multiplier: adaptive.and_then(|a| a.clip_count_noise_multiplier),
                placement: p.placement,
                colluding_sites: p.colluding_sites,
                ..PrivacySection::default()
            },
            StatisticsSection {
                max_rows: p.max_rows,
                ranges: p.ranges.clone(),
                ..StatisticsSection::default()
            },
        ),
        None => (PrivacySection::default(), StatisticsSection::default()),
    };
    Ok(CoordinatorConfig {
        federation: FederationSection {
            name: "tessera-sim".into(),
            listen: listen
                .parse()
                .with_context(|| format!("coordinator address {listen}"))?,
            min_participants: plan.min_participants,
            rounds: plan.rounds,
            output_dir: layout.coordinator_out.clone(),
            store: None,
            allow: Some(names),
            metrics_listen: None,
            max_failed_rounds: FederationSection::DEFAULT_MAX_FAILED_ROUNDS,
            site_budgets: plan.site_budgets,
        },
        tls: TlsFiles {
            ca: layout.pki.join("ca.crt"),
            cert: layout.pki.join("coordinator.crt"),
            key: layout.pki.join("coordinator.key"),
            crl: None,
        },
        task: task_section(&plan.task),
        training,
        secagg: SecAggSection {
            enabled: plan.secagg,
            signed_keys: plan.signed_keys,
            ..SecAggSection::default()
        },
        privacy,
        web: Default::default(),
        deadlines: DeadlineSection {
            stage_seconds: plan.stage_seconds,
            training_seconds: plan.training_seconds,
        },
        statistics,
        evaluation: EvaluationSection {
            every: plan.learning.evaluate_every,
            noise_multiplier: plan.learning.evaluation_noise_multiplier,
            max_rows: plan.learning.evaluation_max_rows,
            ..EvaluationSection::default()
        },
        analytics: Vec::new(),
    })
}

/// The `[task]` section of a task.
fn task_section(task: &tessera_model::TaskSpec) -> TaskSection {
    let (positive, classes, standardize_target) = match &task.kind {
        TaskKind::Binary { positive } => (Some(positive.to_string()), None, None),
        TaskKind::Multiclass { classes } => (None, Some(classes.clone()), None),
        TaskKind::Regression { standardize } => (None, None, Some(*standardize)),
    };
    TaskSection {
        kind: Some(task.kind.name().to_owned()),
        model: Some(task.model.to_string()),
        features: task.features.clone(),
        label: task.label.clone(),
        positive,
        classes,
        standardize_target,
    }
}

/// The configuration of participant `site` for a coordinator at `address`;
/// its state lives under `state_dir`.
pub fn participant_config(
    plan: &FederationPlan,
    layout: &Layout,
    site: &SitePlan,
    address: &str,
    state_dir: &Path,
) -> ParticipantConfig {
    ParticipantConfig {
        participant: ParticipantSection {
            coordinator: format!("https://{address}"),
            server_name: None,
            data: site.data.clone(),
            state_dir: state_dir.to_path_buf(),
            allowed_columns: None,
        },
        tls: TlsFiles {
            ca: layout.pki.join("ca.crt"),
            cert: layout.pki.join(format!("{}.crt", site.name)),
            key: layout.pki.join(format!("{}.key", site.name)),
            crl: None,
        },
        privacy: SitePrivacySection {
            max_epsilon: site.max_epsilon,
            min_noise_multiplier: site.min_noise_multiplier,
            delta: plan
                .privacy
                .as_ref()
                .map_or(SitePrivacySection::default().delta, |p| p.delta),
            // A comparison run without secure aggregation is one the sites
            // agreed to; by default a private round requires it.
            require_secure_aggregation: (!plan.secagg).then_some(false),
            ..SitePrivacySection::default()
        },
        reconnect: ReconnectSection {
            initial_backoff_seconds: 0.1,
            max_backoff_seconds: 2.0,
            give_up_after_seconds: 60.0,
        },
        limits: LimitsSection::default(),
        evaluation: tessera_participant::config::EvaluationSection {
            data: plan.learning.evaluation_data.get(&site.name).cloned(),
            ..Default::default()
        },
        trainer: site
            .trainer
            .as_ref()
            .or(plan.learning.trainer.as_ref())
            .map(|command| TrainerSection {
                command: command.clone(),
                timeout_seconds: plan.learning.trainer_timeout_seconds,
            }),
        analytics: Default::default(),
    }
}

/// Writes `config` as TOML.
pub fn write_toml<T: serde::Serialize>(path: &Path, config: &T) -> anyhow::Result<()> {
    let text = toml::to_string(config).context("serialising a configuration")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
