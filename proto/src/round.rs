//! Conversions between the wire's task and round announcement and their
//! domain forms in `tessera-model` ([`tessera_model::Announcement`],
//! [`tessera_model::TaskSpec`], [`tessera_model::RoundKind`]), with the
//! structural checks the wire cannot express. Checks of the *values*
//! (budgets, limits, consistency) belong to the machines.

use tessera_model::round::{AdaptiveTerms, CohortMember, SecAggSetup, SiteBudget};
use tessera_model::{
    AnalyticsTerms, Announcement, Encoding, EvalTerms, Placement, Preprocessor, PrivacyTerms,
    RoundKind, StatsBounds, TargetScale, TaskKind, TaskSpec, TensorSpec, TrainingSettings,
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
    /// The noise placement is unknown.
    #[error("unknown noise placement {0}")]
    Placement(i32),
}

/// Domain kind → wire.
pub fn kind_to_wire(kind: RoundKind) -> v1::AggregationKind {
    match kind {
        RoundKind::Statistics => v1::AggregationKind::Statistics,
        RoundKind::Training => v1::AggregationKind::Training,
        RoundKind::Evaluation => v1::AggregationKind::Evaluation,
        RoundKind::Analytics => v1::AggregationKind::Analytics,
    }
}

/// Wire kind → domain.
pub fn kind_from_wire(kind: i32) -> Result<RoundKind, AnnouncementError> {
    match v1::AggregationKind::try_from(kind) {
        Ok(v1::AggregationKind::Statistics) => Ok(RoundKind::Statistics),
        Ok(v1::AggregationKind::Training) => Ok(RoundKind::Training),
        Ok(v1::AggregationKind::Evaluation) => Ok(RoundKind::Evaluation),
        Ok(v1::AggregationKind::Analytics) => Ok(RoundKind::Analytics),
        _ => Err(AnnouncementError::UnknownKind(kind)),
    }
}

/// The task as it travels on the wire.
pub fn task_to_wire(task: &TaskSpec) -> v1::TaskSpec {
    let (kind, positive, classes, standardize_target) = match &task.kind {
        TaskKind::Binary { positive } => {
            (v1::TaskKind::Binary, positive.to_string(), vec![], false)
        }
        TaskKind::Multiclass { classes } => (
            v1::TaskKind::Multiclass,
            String::new(),
            classes.clone(),
            false,
        ),
        TaskKind::Regression { standardize } => (
            v1::TaskKind::Regression,
            String::new(),
            vec![],
            *standardize,
        ),
    };
    v1::TaskSpec {
        model: task.model.to_string(),
        features: task.features.clone(),
        label: task.label.clone(),
        positive,
        kind: kind as i32,
        classes,
        standardize_target,
        tensors: task
            .tensors
            .iter()
            .map(|t| v1::TensorShape {
                name: t.name.clone(),
                shape: t.shape.iter().map(|&d| d as u64).collect(),
            })
            .collect(),
    }
}

/// The task from its wire form, checked ([`TaskSpec::validate`]). An unspecified kind is
/// a binary task (a coordinator from before tasks had kinds).
pub fn task_from_wire(t: &v1::TaskSpec) -> Result<TaskSpec, AnnouncementError> {
    let bad = |e: String| AnnouncementError::Task(e);
    let kind = match v1::TaskKind::try_from(t.kind) {
        Ok(v1::TaskKind::Unspecified | v1::TaskKind::Binary) => TaskKind::Binary {
            positive: t.positive.parse().map_err(|e| bad(format!("{e}")))?,
        },
        Ok(v1::TaskKind::Multiclass) => TaskKind::Multiclass {
            classes: t.classes.clone(),
        },
        Ok(v1::TaskKind::Regression) => TaskKind::Regression {
            standardize: t.standardize_target,
        },
        Err(_) => return Err(bad(format!("unknown task kind {}", t.kind))),
    };
    let tensors = t
        .tensors
        .iter()
        .map(|x| {
            let shape = x
                .shape
                .iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| bad(format!("tensor {:?} too large", x.name)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(TensorSpec {
                name: x.name.clone(),
                shape,
            })
        })
        .collect::<Result<Vec<_>, AnnouncementError>>()?;
    let task = TaskSpec {
        model: t.model.parse().map_err(|e| bad(format!("{e}")))?,
        features: t.features.clone(),
        label: t.label.clone(),
        kind,
        tensors,
    };
    task.validate().map_err(|e| bad(e.to_string()))?;
    Ok(task)
}

/// A site's declared budget → wire.
pub fn budget_to_wire(b: &SiteBudget) -> v1::SiteBudget {
    v1::SiteBudget {
        max_epsilon: b.max_epsilon.unwrap_or(0.0),
        delta: b.delta,
        min_noise_multiplier: b.min_noise_multiplier.unwrap_or(0.0),
        epsilon_spent: b.epsilon_spent,
        require_privacy: b.require_privacy,
    }
}

/// A site's declared budget from the wire; `None` when its figures make no
/// sense (a budget that is not positive and finite is read as none; a δ
/// outside (0, 1) or a negative or non-finite spent ε refuses the whole).
pub fn budget_from_wire(b: &v1::SiteBudget) -> Option<SiteBudget> {
    let positive = |x: f64| (x.is_finite() && x > 0.0).then_some(x);
    if !(b.delta > 0.0 && b.delta < 1.0 && b.epsilon_spent.is_finite() && b.epsilon_spent >= 0.0) {
        return None;
    }
    Some(SiteBudget {
        max_epsilon: positive(b.max_epsilon),
        delta: b.delta,
        min_noise_multiplier: positive(b.min_noise_multiplier),
        epsilon_spent: b.epsilon_spent,
        require_privacy: b.require_privacy,
    })
}

fn placement_to_wire(p: Placement) -> v1::NoisePlacement {
    match p {
        Placement::Central => v1::NoisePlacement::Central,
        Placement::Distributed => v1::NoisePlacement::Distributed,
        Placement::Local => v1::NoisePlacement::Local,
    }
}

fn placement_from_wire(p: i32) -> Result<Placement, AnnouncementError> {
    match v1::NoisePlacement::try_from(p) {
        Ok(v1::NoisePlacement::Central) => Ok(Placement::Central),
        Ok(v1::NoisePlacement::Distributed) => Ok(Placement::Distributed),
        Ok(v1::NoisePlacement::Local) => Ok(Placement::Local),
        Err(_) => Err(AnnouncementError::Placement(p)),
    }
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
            weight_decay: a.training.weight_decay,
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
            placement: placement_to_wire(p.placement) as i32,
            site_noise_units: p.site_noise_units,
            noise_summands: p.noise_summands,
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
            target_mean: p.target.map(|t| t.mean),
            target_std: p.target.map(|t| t.std),
        }),
        statistics_bounds: a.statistics_bounds.as_ref().map(|b| v1::StatisticsBounds {
            lo: b.lo.clone(),
            hi: b.hi.clone(),
            max_rows: b.max_rows,
        }),
        evaluation: a.evaluation.map(|e| v1::EvaluationTerms {
            max_rows: e.max_rows,
            bins: e.bins,
            has_target_range: e.target_range.is_some(),
            target_lo: e.target_range.map_or(0.0, |r| r.0),
            target_hi: e.target_range.map_or(0.0, |r| r.1),
        }),
        analytics: a.analytics.as_ref().map(|q| v1::AnalyticsQuery {
            query: q.query.clone(),
            max_rows: q.max_rows,
            epsilon: q.epsilon,
            noise_multiplier: q.noise_multiplier,
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
            weight_decay: training.weight_decay,
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
            placement: placement_from_wire(terms.placement)?,
            site_noise_units: terms.site_noise_units,
            noise_summands: terms.noise_summands,
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
            // Both figures or none: half a target scale is no scale.
            target: match (p.target_mean, p.target_std) {
                (Some(mean), Some(std)) => Some(TargetScale { mean, std }),
                _ => None,
            },
        }),
        statistics_bounds: a.statistics_bounds.as_ref().map(|b| StatsBounds {
            lo: b.lo.clone(),
            hi: b.hi.clone(),
            max_rows: b.max_rows,
        }),
        evaluation: a.evaluation.map(|e| EvalTerms {
            max_rows: e.max_rows,
            bins: e.bins,
            target_range: e.has_target_range.then_some((e.target_lo, e.target_hi)),
        }),
        analytics: match (&a.analytics, kind) {
            (Some(q), _) => Some(AnalyticsTerms {
                query: q.query.clone(),
                max_rows: q.max_rows,
                epsilon: q.epsilon,
                noise_multiplier: q.noise_multiplier,
            }),
            (None, RoundKind::Analytics) => {
                return Err(AnnouncementError::Missing("analytics query"));
            }
            (None, _) => None,
        },
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
                weight_decay: 0.01,
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
                placement: Placement::Distributed,
                site_noise_units: 12345.5,
                noise_summands: 4,
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
                target: Some(TargetScale {
                    mean: 150.0,
                    std: 70.0,
                }),
            }),
            statistics_bounds: None,
            evaluation: Some(EvalTerms {
                max_rows: 400.0,
                bins: 100,
                target_range: Some((25.0, 346.0)),
            }),
            analytics: None,
        }
    }

    #[test]
    fn analytics_queries_round_trip_and_are_required() {
        let mut a = sample();
        a.kind = RoundKind::Analytics;
        a.analytics = Some(AnalyticsTerms {
            query: "count where age > 65 and cp = 4".into(),
            max_rows: 300,
            epsilon: 0.5,
            noise_multiplier: 0.0,
        });
        let w = announcement_to_wire(&a);
        assert_eq!(w.kind, v1::AggregationKind::Analytics as i32);
        assert_eq!(announcement_from_wire(&w), Ok(a));
        let mut w = w;
        w.analytics = None;
        assert_eq!(
            announcement_from_wire(&w),
            Err(AnnouncementError::Missing("analytics query"))
        );
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
    fn an_unknown_noise_placement_is_refused() {
        let mut w = announcement_to_wire(&sample());
        if let Some(p) = w.privacy.as_mut() {
            p.placement = 7;
        }
        assert_eq!(
            announcement_from_wire(&w),
            Err(AnnouncementError::Placement(7))
        );
    }

    #[test]
    fn tasks_of_every_kind_round_trip() {
        let binary = TaskSpec::binary(
            "logistic".parse().unwrap(),
            vec!["a".into()],
            "y",
            "M".parse().unwrap(),
        );
        let multi = TaskSpec {
            model: "mlp:8,4".parse().unwrap(),
            kind: TaskKind::Multiclass {
                classes: vec!["x".into(), "y".into(), "z".into()],
            },
            ..binary.clone()
        };
        let reg = TaskSpec {
            model: "linear".parse().unwrap(),
            kind: TaskKind::Regression { standardize: false },
            ..binary.clone()
        };
        let ext = TaskSpec {
            model: "external".parse().unwrap(),
            tensors: vec![
                TensorSpec::new("fc.weight", &[2, 1]),
                TensorSpec::new("fc.bias", &[2]),
            ],
            ..multi.clone()
        };
        for t in [binary.clone(), multi, reg, ext] {
            assert_eq!(task_from_wire(&task_to_wire(&t)).unwrap(), t);
        }
        // A task from before kinds: unspecified kind, a positive rule.
        let mut old = task_to_wire(&binary);
        old.kind = 0;
        assert_eq!(task_from_wire(&old).unwrap(), binary);
        old.kind = 9;
        assert!(task_from_wire(&old).is_err());
        // Inconsistent: a softmax model for a binary task.
        let mut w = task_to_wire(&binary);
        w.model = "softmax".into();
        assert!(task_from_wire(&w).is_err());
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
