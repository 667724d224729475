//! Monotone constraints: the public direction in which a feature moves a
//! linear model's prediction (a risk factor raises the risk), kept by
//! projecting the model's parameters onto the constraints.
//!
//! For the built-in linear models (`logistic` for binary tasks, `linear` for
//! regression) the prediction rises with feature `j` exactly when its weight
//! is positive: the pooled preprocessing only shifts and divides by a
//! positive scale, so the sign of a weight means the same before and after
//! it. Keeping a weight non-negative (`increasing`) or non-positive
//! (`decreasing`) is a projection onto a convex cone: the closest point that
//! satisfies every constraint is found coordinate by coordinate, by setting a
//! weight of the wrong sign to zero.
//!
//! Why it helps under differential privacy: noise of the same size lands on
//! every coordinate of a released update, and where a feature's true effect
//! is small the noise can flip its sign. The projection removes the half of
//! that noise which points against public knowledge. It reads only the
//! released model and the public constraints, so it is post-processing and
//! costs no privacy. The constraints must come from public knowledge (the
//! task's author, clinical literature), never from the federation's data.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kind::ModelKind;
use crate::task::{TaskKind, TaskSpec};

/// The direction a feature moves the prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The prediction never falls as the feature rises (weight ≥ 0).
    Increasing,
    /// The prediction never rises as the feature rises (weight ≤ 0).
    Decreasing,
}

impl Direction {
    /// The name used in configuration files: `increasing` or `decreasing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Increasing => "increasing",
            Direction::Decreasing => "decreasing",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = MonotoneError;

    /// `increasing` (or `+`) and `decreasing` (or `-`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "increasing" | "+" => Ok(Direction::Increasing),
            "decreasing" | "-" => Ok(Direction::Decreasing),
            other => Err(MonotoneError::Direction(other.to_owned())),
        }
    }
}

/// Why a set of monotone constraints cannot apply to a task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MonotoneError {
    /// A direction that is neither `increasing` nor `decreasing`.
    #[error("unknown direction {0:?} (use increasing or decreasing, or + or -)")]
    Direction(String),
    /// A constraint names a column that is not one of the task's features.
    #[error("{0:?} is not one of the task's features")]
    UnknownFeature(String),
    /// The model is not one whose weights say the direction of a feature.
    #[error(
        "monotone constraints need a built-in linear model with one output (logistic for a binary task, linear for a regression), not {model} for a {kind} task"
    )]
    Model {
        /// The task's model.
        model: String,
        /// The task's kind.
        kind: &'static str,
    },
    /// A `feature=direction` pair without its `=`.
    #[error("{0:?} is not feature=direction (e.g. age=increasing)")]
    Pair(String),
}

/// The constraints of one task: which weights must keep which sign.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Monotone {
    /// (index of the feature's weight in the parameter vector, direction),
    /// in feature order.
    columns: Vec<(usize, Direction)>,
}

impl Monotone {
    /// No constraints: [`Monotone::project`] changes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// The constraints `by_feature` (feature name → direction) for `task`.
    ///
    /// The built-in linear layout starts with the weight row `[1, inputs]`,
    /// whose first columns are the task's features in order (missing-value
    /// indicator columns come after them), so feature `j`'s weight is
    /// parameter `j`.
    pub fn new(
        task: &TaskSpec,
        by_feature: &BTreeMap<String, Direction>,
    ) -> Result<Self, MonotoneError> {
        if by_feature.is_empty() {
            return Ok(Self::none());
        }
        let linear = matches!(
            (task.model, &task.kind),
            (ModelKind::Logistic, TaskKind::Binary { .. })
                | (ModelKind::Linear, TaskKind::Regression { .. })
        );
        if !linear {
            return Err(MonotoneError::Model {
                model: task.model.to_string(),
                kind: task.kind.name(),
            });
        }
        if let Some(unknown) = by_feature.keys().find(|f| !task.features.contains(f)) {
            return Err(MonotoneError::UnknownFeature(unknown.clone()));
        }
        let columns = task
            .features
            .iter()
            .enumerate()
            .filter_map(|(j, f)| by_feature.get(f).map(|d| (j, *d)))
            .collect();
        Ok(Self { columns })
    }

    /// Whether there is any constraint.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Projects `params` onto the constraints: every constrained weight of
    /// the wrong sign becomes zero. Returns how many changed. Parameters past
    /// the end of `params` are ignored (a layout is checked elsewhere).
    pub fn project(&self, params: &mut [f32]) -> usize {
        let mut changed = 0;
        for &(j, direction) in &self.columns {
            let Some(w) = params.get_mut(j) else {
                continue;
            };
            let wrong = match direction {
                Direction::Increasing => *w < 0.0,
                Direction::Decreasing => *w > 0.0,
            };
            if wrong {
                *w = 0.0;
                changed += 1;
            }
        }
        changed
    }
}

/// Parses `feature=direction` pairs (`age=increasing`, `thalach=-`).
pub fn parse_pairs<S: AsRef<str>>(
    pairs: &[S],
) -> Result<BTreeMap<String, Direction>, MonotoneError> {
    pairs
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let (feature, direction) = p
                .split_once('=')
                .ok_or_else(|| MonotoneError::Pair(p.to_owned()))?;
            Ok((feature.trim().to_owned(), direction.parse()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::LabelRule;

    fn task(model: ModelKind) -> TaskSpec {
        TaskSpec {
            model,
            features: vec!["age".into(), "chol".into(), "thalach".into()],
            label: "num".into(),
            kind: TaskKind::Binary {
                positive: "> 0".parse::<LabelRule>().unwrap(),
            },
            tensors: Vec::new(),
        }
    }

    fn constraints(pairs: &[&str]) -> BTreeMap<String, Direction> {
        parse_pairs(pairs).unwrap()
    }

    #[test]
    fn wrong_signs_become_zero_and_others_stay() {
        let m = Monotone::new(
            &task(ModelKind::Logistic),
            &constraints(&["age=increasing", "thalach=-"]),
        )
        .unwrap();
        // weight row [age, chol, thalach, indicator], then the bias.
        let mut p = vec![-0.5, -0.7, 0.3, -0.2, -1.0];
        assert_eq!(m.project(&mut p), 2);
        assert_eq!(p, vec![0.0, -0.7, 0.0, -0.2, -1.0]);
        // A projected model already keeps every constraint.
        assert_eq!(m.project(&mut p), 0);
        let mut q = vec![0.5, -0.7, -0.3, -0.2, 1.0];
        assert_eq!(m.project(&mut q), 0);
        assert_eq!(q, vec![0.5, -0.7, -0.3, -0.2, 1.0]);
    }

    #[test]
    fn projection_is_the_closest_point_of_the_cone() {
        // Any other point of the cone is at least as far from p.
        let m = Monotone::new(&task(ModelKind::Logistic), &constraints(&["age=+"])).unwrap();
        let p = [-0.4f32, 1.0, 1.0, 0.0, 0.0];
        let mut proj = p;
        m.project(&mut proj);
        let dist = |a: &[f32]| -> f32 { a.iter().zip(&p).map(|(x, y)| (x - y).powi(2)).sum() };
        for age in [0.0f32, 0.1, 0.5, 2.0] {
            let mut other = p;
            other[0] = age;
            assert!(dist(&proj) <= dist(&other));
        }
    }

    #[test]
    fn other_models_and_unknown_features_are_refused() {
        let c = constraints(&["age=increasing"]);
        for model in [ModelKind::Softmax, ModelKind::External] {
            let err = Monotone::new(&task(model), &c).unwrap_err();
            assert!(matches!(err, MonotoneError::Model { .. }), "{err}");
        }
        let mlp = Monotone::new(&task("mlp:8".parse().unwrap()), &c).unwrap_err();
        assert!(mlp.to_string().contains("linear model"), "{mlp}");
        let err = Monotone::new(&task(ModelKind::Logistic), &constraints(&["sex=+"])).unwrap_err();
        assert_eq!(err, MonotoneError::UnknownFeature("sex".into()));
        // No constraint applies to any model.
        assert!(
            Monotone::new(&task(ModelKind::Softmax), &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn pairs_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_pairs(&["age = increasing", "thalach=decreasing", "chol=+"]).unwrap(),
            BTreeMap::from([
                ("age".to_owned(), Direction::Increasing),
                ("chol".to_owned(), Direction::Increasing),
                ("thalach".to_owned(), Direction::Decreasing),
            ])
        );
        assert_eq!(
            parse_pairs(&["age"]).unwrap_err(),
            MonotoneError::Pair("age".into())
        );
        assert!(
            parse_pairs(&["age=up"])
                .unwrap_err()
                .to_string()
                .contains("increasing or decreasing")
        );
    }
}
