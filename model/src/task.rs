//! The task description both sides agree on: what kind of task (binary,
//! multi-class, regression), which model, which feature columns and which
//! label, and how the label's cells become training targets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::kind::{Hidden, ModelKind};
use crate::layout::TensorSpec;
use crate::model::Objective;

/// What a federation learns: which model, from which columns, to predict which label.
///
/// The coordinator sends it to every participant; a participant whose data does not fit
/// (a column missing, a value that is not numeric, a class not in the list) refuses with a
/// [`crate::DataError`]. Its serde form is the one used in model files and in the task file
/// handed to external trainers: `{"model": "logistic", "features": [...], "label": "num",
/// "positive": "> 0"}` for a binary task (as before tasks had kinds), and with `"kind":
/// "multiclass", "classes": [...]` or `"kind": "regression", "standardize_target": true`
/// for the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TaskRepr", into = "TaskRepr")]
pub struct TaskSpec {
    /// The model to train.
    pub model: ModelKind,
    /// Feature columns, by header name, in the order the model sees them.
    pub features: Vec<String>,
    /// The label column, by header name.
    pub label: String,
    /// What is predicted, and how label cells become targets.
    pub kind: TaskKind,
    /// The model's tensors when it is [`ModelKind::External`] (from the federation's
    /// initial model file); empty for the built-in models, whose layout follows from the
    /// model kind and the inputs ([`crate::layout::builtin`]).
    pub tensors: Vec<TensorSpec>,
}

/// What a task predicts.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskKind {
    /// Two classes: label cells matching `positive` are 1, all others 0.
    Binary {
        /// Which label values are the positive class.
        positive: LabelRule,
    },
    /// Several classes, named in a fixed order so that every site encodes a label as the
    /// same class index; a label not in the list is an error naming file, line and value.
    Multiclass {
        /// The class values, in index order (compared trimmed, and as numbers when both
        /// sides are numbers, so `"1"` matches `1.0`).
        classes: Vec<String>,
    },
    /// A numeric target.
    Regression {
        /// Standardise the target with its pooled mean and standard deviation (computed
        /// by the federated statistics, like the features'); predictions are turned back
        /// into the target's units for evaluation.
        standardize: bool,
    },
}

impl TaskKind {
    /// Most classes a multi-class task may name.
    pub const MAX_CLASSES: usize = 1000;

    /// The kind's name: `binary`, `multiclass` or `regression`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Binary { .. } => "binary",
            TaskKind::Multiclass { .. } => "multiclass",
            TaskKind::Regression { .. } => "regression",
        }
    }
}

impl TaskSpec {
    /// A binary task (the only kind before tasks had kinds).
    pub fn binary(
        model: ModelKind,
        features: Vec<String>,
        label: &str,
        positive: LabelRule,
    ) -> Self {
        TaskSpec {
            model,
            features,
            label: label.into(),
            kind: TaskKind::Binary { positive },
            tensors: Vec::new(),
        }
    }

    /// What the model predicts.
    pub fn objective(&self) -> Objective {
        match &self.kind {
            TaskKind::Binary { .. } => Objective::Binary,
            TaskKind::Multiclass { classes } => Objective::Multiclass {
                classes: classes.len(),
            },
            TaskKind::Regression { .. } => Objective::Regression,
        }
    }

    /// The positive-class rule of a binary task.
    pub fn positive(&self) -> Option<&LabelRule> {
        match &self.kind {
            TaskKind::Binary { positive } => Some(positive),
            _ => None,
        }
    }

    /// Whether the regression target is standardised with pooled statistics.
    pub fn standardizes_target(&self) -> bool {
        matches!(self.kind, TaskKind::Regression { standardize: true })
    }

    /// The columns the federated statistics describe: the features, and the label last
    /// when a regression target is standardised.
    pub fn statistics_columns(&self) -> Vec<String> {
        let mut c = self.features.clone();
        if self.standardizes_target() {
            c.push(self.label.clone());
        }
        c
    }

    /// The tensors of the model for `input_dim` inputs, in the order of the flat
    /// parameter vector.
    pub fn layout(&self, input_dim: usize) -> Vec<TensorSpec> {
        match self.model {
            ModelKind::External => self.tensors.clone(),
            kind => crate::layout::builtin(kind, self.objective(), input_dim),
        }
    }

    /// Length of the flat parameter vector for `input_dim` inputs (saturating).
    pub fn num_params(&self, input_dim: usize) -> usize {
        crate::layout::total_len(&self.layout(input_dim))
    }

    /// Checks the task is well formed: at least one feature, no feature named twice, no
    /// empty names, the label not among the features, classes distinct and at least two,
    /// a model that fits the kind, and tensors exactly for an external model.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.features.is_empty() {
            return Err(TaskError::NoFeatures);
        }
        if self.label.trim().is_empty() {
            return Err(TaskError::EmptyName);
        }
        for (i, f) in self.features.iter().enumerate() {
            if f.trim().is_empty() {
                return Err(TaskError::EmptyName);
            }
            if self.features[..i].contains(f) {
                return Err(TaskError::DuplicateFeature(f.clone()));
            }
            if *f == self.label {
                return Err(TaskError::LabelIsFeature(f.clone()));
            }
        }
        if let TaskKind::Multiclass { classes } = &self.kind {
            if classes.len() < 2 || classes.len() > TaskKind::MAX_CLASSES {
                return Err(TaskError::Classes(format!(
                    "a multi-class task names 2 to {} classes, this one {}",
                    TaskKind::MAX_CLASSES,
                    classes.len()
                )));
            }
            for (i, c) in classes.iter().enumerate() {
                if c.trim().is_empty() {
                    return Err(TaskError::Classes("a class name is empty".into()));
                }
                if classes[..i].iter().any(|o| same_label(o, c)) {
                    return Err(TaskError::Classes(format!("class {c:?} is listed twice")));
                }
            }
        }
        let fits = matches!(
            (self.model, &self.kind),
            (ModelKind::Logistic, TaskKind::Binary { .. })
                | (ModelKind::Softmax, TaskKind::Multiclass { .. })
                | (ModelKind::Linear, TaskKind::Regression { .. })
                | (ModelKind::Mlp { .. } | ModelKind::External, _)
        );
        if !fits {
            return Err(TaskError::ModelDoesNotFit {
                model: self.model.to_string(),
                kind: self.kind.name(),
            });
        }
        match (self.model, self.tensors.is_empty()) {
            (ModelKind::External, true) => {
                return Err(TaskError::Tensors(
                    "an external model needs its tensors (the federation's initial model)".into(),
                ));
            }
            (ModelKind::External, false) => {
                crate::layout::check(&self.tensors).map_err(TaskError::Tensors)?
            }
            (_, false) => {
                return Err(TaskError::Tensors(format!(
                    "the built-in model {} has its own tensors; only an external model lists them",
                    self.model
                )));
            }
            (_, true) => {}
        }
        Ok(())
    }

    /// The index of a multi-class label cell (trimmed; numbers compared as numbers).
    pub fn class_index(&self, cell: &str) -> Option<usize> {
        match &self.kind {
            TaskKind::Multiclass { classes } => classes.iter().position(|c| same_label(c, cell)),
            _ => None,
        }
    }
}

/// Whether two label texts name the same value: equal after trimming, or equal as numbers.
pub fn same_label(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The serde form of a [`TaskSpec`] (see its docs).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRepr {
    model: ModelKind,
    features: Vec<String>,
    label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    positive: Option<LabelRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    standardize_target: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tensors: Vec<TensorSpec>,
}

impl TryFrom<TaskRepr> for TaskSpec {
    type Error = TaskError;
    fn try_from(r: TaskRepr) -> Result<Self, TaskError> {
        let kind = TaskKind::from_parts(
            r.kind.as_deref(),
            r.positive,
            r.classes,
            r.standardize_target,
        )?;
        Ok(TaskSpec {
            model: r.model,
            features: r.features,
            label: r.label,
            kind,
            tensors: r.tensors,
        })
    }
}

impl From<TaskSpec> for TaskRepr {
    fn from(t: TaskSpec) -> Self {
        let (kind, positive, classes, standardize_target) = match t.kind {
            TaskKind::Binary { positive } => (None, Some(positive), None, None),
            TaskKind::Multiclass { classes } => {
                (Some("multiclass".into()), None, Some(classes), None)
            }
            TaskKind::Regression { standardize } => {
                (Some("regression".into()), None, None, Some(standardize))
            }
        };
        TaskRepr {
            model: t.model,
            features: t.features,
            label: t.label,
            kind,
            positive,
            classes,
            standardize_target,
            tensors: t.tensors,
        }
    }
}

impl TaskKind {
    /// A kind from its written parts (configuration files, the wire, model files): the
    /// name (`binary` when absent), and the parts the name needs; a part another kind
    /// needs is refused, so that a mistyped kind does not pass silently.
    pub fn from_parts(
        name: Option<&str>,
        positive: Option<LabelRule>,
        classes: Option<Vec<String>>,
        standardize: Option<bool>,
    ) -> Result<Self, TaskError> {
        let name = name.map(str::trim).unwrap_or("binary");
        let stray = |what: &str| {
            Err(TaskError::KindParts(format!(
                "{what} does not apply to a {name} task"
            )))
        };
        match name {
            "binary" => {
                if classes.is_some() {
                    return stray("a class list");
                }
                if standardize.is_some() {
                    return stray("standardize_target");
                }
                let positive = positive.ok_or_else(|| {
                    TaskError::KindParts("a binary task needs its positive class".into())
                })?;
                Ok(TaskKind::Binary { positive })
            }
            "multiclass" => {
                if positive.is_some() {
                    return stray("a positive class");
                }
                if standardize.is_some() {
                    return stray("standardize_target");
                }
                let classes = classes.ok_or_else(|| {
                    TaskError::KindParts("a multi-class task needs its classes, in order".into())
                })?;
                Ok(TaskKind::Multiclass { classes })
            }
            "regression" => {
                if positive.is_some() {
                    return stray("a positive class");
                }
                if classes.is_some() {
                    return stray("a class list");
                }
                Ok(TaskKind::Regression {
                    standardize: standardize.unwrap_or(true),
                })
            }
            other => Err(TaskError::UnknownKind(other.to_string())),
        }
    }
}

/// Which label values count as the positive class.
///
/// Text form (used on the wire, in configuration and in model files; [`FromStr`] and
/// [`fmt::Display`] round-trip):
/// - `"> 0"` — [`LabelRule::GreaterThan`]: the label is a number, positive when greater than
///   the threshold (heart disease: `num > 0`).
/// - `"M"` (or `"= M"`) — [`LabelRule::Equals`]: positive when the label cell equals this
///   literal (after trimming); if both sides are numbers they are compared as numbers, so
///   `"1"` matches `1.0`. The `"= "` prefix is needed only for literals that begin with `>`
///   or `=`, and `Display` adds it then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LabelRule {
    /// Positive when the numeric label is strictly greater than this threshold.
    GreaterThan(f64),
    /// Positive when the label equals this class literal (e.g. `"M"`).
    Equals(String),
}

impl LabelRule {
    /// Whether the trimmed label cell `value` belongs to the positive class.
    ///
    /// Returns `None` when the rule needs a number and `value` is not one.
    pub fn is_positive(&self, value: &str) -> Option<bool> {
        let v = value.trim();
        match self {
            LabelRule::GreaterThan(t) => {
                let x: f64 = v.parse().ok()?;
                if x.is_nan() {
                    return None;
                }
                Some(x > *t)
            }
            LabelRule::Equals(lit) => {
                if v == lit {
                    return Some(true);
                }
                match (v.parse::<f64>(), lit.parse::<f64>()) {
                    (Ok(a), Ok(b)) => Some(a == b),
                    _ => Some(false),
                }
            }
        }
    }
}

impl fmt::Display for LabelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelRule::GreaterThan(t) => write!(f, "> {t}"),
            LabelRule::Equals(lit) if lit.starts_with(['>', '=']) => write!(f, "= {lit}"),
            LabelRule::Equals(lit) => f.write_str(lit),
        }
    }
}

impl FromStr for LabelRule {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('>') {
            let rest = rest.trim();
            return match rest.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(LabelRule::GreaterThan(x)),
                _ => Err(TaskError::BadLabelRule(s.to_string())),
            };
        }
        let lit = t
            .strip_prefix("==")
            .or_else(|| t.strip_prefix('='))
            .map(str::trim)
            .unwrap_or(t);
        if lit.is_empty() {
            return Err(TaskError::BadLabelRule(s.to_string()));
        }
        Ok(LabelRule::Equals(lit.to_string()))
    }
}

impl TryFrom<String> for LabelRule {
    type Error = TaskError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LabelRule> for String {
    fn from(r: LabelRule) -> String {
        r.to_string()
    }
}

/// A malformed task description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The model name is not one this build knows.
    #[error(
        "unknown model kind {0:?} (known: logistic, softmax, linear, mlp:WIDTH[,WIDTH…], external)"
    )]
    UnknownModel(String),
    /// An `mlp` model without valid hidden widths.
    #[error(
        "model {0:?}: an MLP needs 1 to {layers} hidden widths from 1 to {max}, written like \"mlp:64\" or \"mlp:64,32\"",
        layers = Hidden::MAX_LAYERS,
        max = ModelKind::MAX_HIDDEN
    )]
    BadHiddenWidth(String),
    /// The positive-class rule could not be parsed.
    #[error(
        "invalid positive-class rule {0:?}: expected \"> NUMBER\" or a class literal such as \"M\""
    )]
    BadLabelRule(String),
    /// The task kind is not one this build knows.
    #[error("unknown task kind {0:?} (known: binary, multiclass, regression)")]
    UnknownKind(String),
    /// The parts of a task kind are missing or do not belong to it.
    #[error("{0}")]
    KindParts(String),
    /// The classes of a multi-class task are unusable.
    #[error("classes: {0}")]
    Classes(String),
    /// The model does not fit the task kind.
    #[error(
        "model {model} does not fit a {kind} task (binary: logistic; multiclass: softmax; regression: linear; any: mlp:WIDTH, external)"
    )]
    ModelDoesNotFit {
        /// The model.
        model: String,
        /// The task kind.
        kind: &'static str,
    },
    /// The tensors of an external model are missing or malformed.
    #[error("model tensors: {0}")]
    Tensors(String),
    /// The task names no feature column.
    #[error("the task names no feature columns")]
    NoFeatures,
    /// A column name is empty.
    #[error("a column name in the task is empty")]
    EmptyName,
    /// A feature column is named twice.
    #[error("feature column {0:?} is listed twice")]
    DuplicateFeature(String),
    /// The label column is also listed as a feature.
    #[error("column {0:?} is both the label and a feature")]
    LabelIsFeature(String),
}

#[cfg(test)]
mod tests;
