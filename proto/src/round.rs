//! Conversions between the wire's task and round announcement and their
//! domain forms in `tessera-model` ([`tessera_model::Announcement`],
//! [`tessera_model::TaskSpec`], [`tessera_model::RoundKind`]), with the
//! structural checks the wire cannot express. Checks of the *values*
//! (budgets, limits, consistency) belong to the machines.

use tessera_model::round::{AdaptiveTerms, CohortMember, SecAggSetup};
use tessera_model::{
    Announcement, Encoding, Preprocessor, PrivacyTerms, RoundKind, StatsBounds, TaskSpec,
    TrainingSettings,
};

use crate::v1;

/// A wire announcement or task that cannot be a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnouncementError {
    /// A required part is absent.
    #[error("the announcement has no {0}")]
    Missing(&'static str),
    /// The aggregation kind is unknown or unspecified.
    #[error("unknown aggregation kind {0}")]
    UnknownKind(i32),
    /// The graph seed is not 32 bytes.
    #[error("the graph seed must be 32 bytes, got {0}")]
    GraphSeed(usize),
    /// The task does not parse or is inconsistent.
    #[error("invalid task: {0}")]
    Task(String),
}

/// Domain kind → wire.
pub fn kind_to_wire(kind: RoundKind) -> v1::AggregationKind {
    match kind {
        RoundKind::Statistics => v1::AggregationKind::Statistics,
        RoundKind::Training => v1::AggregationKind::Training,
    }
}

/// Wire kind → domain.
pub fn kind_from_wire(kind: i32) -> Result<RoundKind, AnnouncementError> {
    match v1::AggregationKind::try_from(kind) {
        Ok(v1::AggregationKind::Statistics) => Ok(RoundKind::Statistics),
        Ok(v1::AggregationKind::Training) => Ok(RoundKind::Training),
        _ => Err(AnnouncementError::UnknownKind(kind)),
    }
}

/// The task as it travels on the wire.
pub fn task_to_wire(task: &TaskSpec) -> v1::TaskSpec {
    v1::TaskSpec {
        model: task.model.to_string(),
        features: task.features.clone(),
        label: task.label.clone(),
        positive: task.positive.to_string(),
    }
}

/// The task from its wire form, checked.
pub fn task_from_wire(t: &v1::TaskSpec) -> Result<TaskSpec, AnnouncementError> {
    let task = TaskSpec {
        model: t
            .model
            .parse()
            .map_err(|e| AnnouncementError::Task(format!("{e}")))?,
        features: t.features.clone(),
        label: t.label.clone(),
        positive: t
            .positive
            .parse()
            .map_err(|e| AnnouncementError::Task(format!("{e}")))?,
    };
    task.validate()
        .map_err(|e| AnnouncementError::Task(e.to_string()))?;
    Ok(task)
}

/// Domain announcement → wire.
pub fn announcement_to_wire(a: &Announcement) -> v1::RoundAnnounce {
    let p = &a.privacy;
    v1::RoundAnnounce {
        round: a.round,
        kind: kind_to_wire(a.kind) as i32,
        training_round: a.training_round,
        planned_rounds: a.planned_rounds,
        dimension: a.dimension,
        training: Some(v1::TrainingSettings {
            local_epochs: a.training.local_epochs,
            learning_rate: a.training.learning_rate,
            batch_size: a.training.batch_size,
            shuffle_seed: a.training.shuffle_seed,
        }),
        privacy: Some(v1::PrivacyTerms {
            enabled: p.enabled,
            noise_multiplier: p.noise_multiplier,
            clip_norm: p.clip_norm,
            sampling_rate: p.sampling_rate,
            delta: p.delta,
            adaptive_clipping: p.adaptive.is_some(),
            update_noise_multiplier: p.adaptive.map_or(0.0, |x| x.update_noise_multiplier),
            clip_count_noise_multiplier: p.adaptive.map_or(0.0, |x| x.clip_count_noise_multiplier),
            not_private: p.not_private,
        }),
        secagg: a.secagg.as_ref().map(|s| v1::SecAggSetup {
            my_index: s.my_index,
            cohort: s
                .cohort
                .iter()
                .map(|m| v1::CohortMember {
                    index: m.index,
                    name: m.name.clone(),
                    certificate: m.certificate.clone(),
                })
                .collect(),
            threshold: s.threshold,
            neighbours: s.neighbours,
            graph_seed: s.graph_seed.to_vec(),
            signed_keys: s.signed_keys,
        }),
        encoding: Some(v1::Encoding {
            scale_bits: a.encoding.scale_bits,
            modulus_bits: a.encoding.modulus_bits,
        }),
        preprocessing: a.preprocessing.as_ref().map(|p| v1::Preprocessing {
            mean: p.mean.clone(),
            std: p.std.clone(),
            indicator: p.indicator.clone(),
        }),
        statistics_bounds: a.statistics_bounds.as_ref().map(|b| v1::StatisticsBounds {
            lo: b.lo.clone(),
            hi: b.hi.clone(),
            max_rows: b.max_rows,
        }),
    }
}

/// Wire announcement → domain. Only the structure is checked here: absent
/// parts, the kind, the graph seed's length. Absent privacy terms mean a
/// round without differential privacy; absent training settings, zeros.
pub fn announcement_from_wire(a: &v1::RoundAnnounce) -> Result<Announcement, AnnouncementError> {
    let kind = kind_from_wire(a.kind)?;
    // No terms: a round without differential privacy.
    let terms = a.privacy.unwrap_or_default();
    let encoding = a.encoding.ok_or(AnnouncementError::Missing("encoding"))?;
    let training = a.training.unwrap_or_default();
    let secagg = match &a.secagg {
        None => None,
        Some(s) => Some(SecAggSetup {
            my_index: s.my_index,
            cohort: s
                .cohort
                .iter()
                .map(|m| CohortMember {
                    index: m.index,
                    name: m.name.clone(),
                    certificate: m.certificate.clone(),
                })
                .collect(),
            threshold: s.threshold,
            neighbours: s.neighbours,
            graph_seed: s
                .graph_seed
                .as_slice()
                .try_into()
                .map_err(|_| AnnouncementError::GraphSeed(s.graph_seed.len()))?,
            signed_keys: s.signed_keys,
        }),
    };
    Ok(Announcement {
        round: a.round,
        kind,
        training_round: a.training_round,
        planned_rounds: a.planned_rounds,
        dimension: a.dimension,
        training: TrainingSettings {
            local_epochs: training.local_epochs,
            learning_rate: training.learning_rate,
            batch_size: training.batch_size,
            shuffle_seed: training.shuffle_seed,
        },
        privacy: PrivacyTerms {
            enabled: terms.enabled,
            noise_multiplier: terms.noise_multiplier,
            clip_norm: terms.clip_norm,
            sampling_rate: terms.sampling_rate,
            delta: terms.delta,
            adaptive: terms.adaptive_clipping.then_some(AdaptiveTerms {
                update_noise_multiplier: terms.update_noise_multiplier,
                clip_count_noise_multiplier: terms.clip_count_noise_multiplier,
            }),
            not_private: terms.not_private,
        },
        secagg,
        encoding: Encoding {
            scale_bits: encoding.scale_bits,
            modulus_bits: encoding.modulus_bits,
        },
        preprocessing: a.preprocessing.as_ref().map(|p| Preprocessor {
            mean: p.mean.clone(),
            std: p.std.clone(),
            indicator: p.indicator.clone(),
        }),
        statistics_bounds: a.statistics_bounds.as_ref().map(|b| StatsBounds {
            lo: b.lo.clone(),
            hi: b.hi.clone(),
            max_rows: b.max_rows,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Announcement {
        Announcement {
            round: 7,
            kind: RoundKind::Training,
            training_round: 3,
            planned_rounds: 10,
            dimension: 31,
            training: TrainingSettings {
                local_epochs: 2,
                learning_rate: 0.5,
                batch_size: 16,
                shuffle_seed: 99,
            },
            privacy: PrivacyTerms {
                enabled: true,
                noise_multiplier: 1.5,
                clip_norm: 0.25,
                sampling_rate: 1.0,
                delta: 1e-5,
                adaptive: Some(AdaptiveTerms {
                    update_noise_multiplier: 1.6,
                    clip_count_noise_multiplier: 2.0,
                }),
                not_private: false,
            },
            secagg: Some(SecAggSetup {
                my_index: 2,
                cohort: vec![CohortMember {
                    index: 1,
                    name: "a".into(),
                    certificate: vec![1, 2],
                }],
                threshold: 2,
                neighbours: 2,
                graph_seed: [7; 32],
                signed_keys: true,
            }),
            encoding: Encoding {
                scale_bits: 20,
                modulus_bits: 32,
            },
            preprocessing: Some(Preprocessor {
                mean: vec![0.5],
                std: vec![2.0],
                indicator: vec![true],
            }),
            statistics_bounds: None,
        }
    }

    #[test]
    fn announcements_round_trip() {
        let a = sample();
        assert_eq!(
            announcement_from_wire(&announcement_to_wire(&a)).unwrap(),
            a
        );
    }

    #[test]
    fn broken_announcements_are_refused() {
        let mut w = announcement_to_wire(&sample());
        w.kind = 0;
        assert_eq!(
            announcement_from_wire(&w),
            Err(AnnouncementError::UnknownKind(0))
        );
        let mut w = announcement_to_wire(&sample());
        w.encoding = None;
        assert_eq!(
            announcement_from_wire(&w),
            Err(AnnouncementError::Missing("encoding"))
        );
        let mut w = announcement_to_wire(&sample());
        w.secagg.as_mut().unwrap().graph_seed = vec![1; 5];
        assert_eq!(
            announcement_from_wire(&w),
            Err(AnnouncementError::GraphSeed(5))
        );
    }
}
