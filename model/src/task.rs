//! The task description both sides agree on: model kind, feature columns, label and positive class.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a federation learns: which model, from which columns, to predict which label.
///
/// The coordinator sends it to every participant; a participant whose data does not fit
/// (a column missing, a value that is not numeric) refuses with a [`crate::DataError`].
/// Its serde form is the one used in configuration files and model files:
/// `{ model = "logistic", features = [...], label = "num", positive = "> 0" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The model to train.
    pub model: ModelKind,
    /// Feature columns, by header name, in the order the model sees them.
    pub features: Vec<String>,
    /// The label column, by header name.
    pub label: String,
    /// Which label values are the positive class (1); all others are 0.
    pub positive: LabelRule,
}

impl TaskSpec {
    /// Checks the task is well formed: at least one feature, no feature named twice,
    /// no empty names, and the label not among the features.
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
        Ok(())
    }
}

/// The kind of model a task trains.
///
/// Text form (configuration files, the wire, model files; [`FromStr`] and [`fmt::Display`]
/// round-trip, and serde uses the same string):
/// - `"logistic"` — [`ModelKind::Logistic`];
/// - `"mlp:64"` — [`ModelKind::Mlp`] with 64 hidden units (1 to [`ModelKind::MAX_HIDDEN`]).
///
/// Parsing ignores case and spaces around the name and the width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelKind {
    /// Binary logistic regression (see [`crate::LogisticRegression`]).
    Logistic,
    /// A one-hidden-layer perceptron: ReLU hidden layer, sigmoid output
    /// (see [`crate::MlpClassifier`]).
    Mlp {
        /// Width of the hidden layer.
        hidden: usize,
    },
}

impl ModelKind {
    /// The model families, as written in text (for help texts and error messages).
    pub const NAMES: &'static [&'static str] = &["logistic", "mlp:HIDDEN"];

    /// Widest hidden layer a task may ask for (2²⁴ units), so that a task description
    /// cannot make a site allocate an absurd model.
    pub const MAX_HIDDEN: usize = 1 << 24;

    /// The family name, without its size (`"logistic"`, `"mlp"`); [`fmt::Display`] gives the
    /// full text form.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Mlp { .. } => "mlp",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::Logistic => f.write_str("logistic"),
            ModelKind::Mlp { hidden } => write!(f, "mlp:{hidden}"),
        }
    }
}

impl FromStr for ModelKind {
    type Err = TaskError;

    /// Parses `"logistic"` or `"mlp:HIDDEN"`, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let unknown = || TaskError::UnknownModel(t.to_string());
        let (name, size) = match t.split_once(':') {
            Some((n, w)) => (n.trim(), Some(w.trim())),
            None => (t, None),
        };
        if name.eq_ignore_ascii_case("logistic") {
            return match size {
                None => Ok(ModelKind::Logistic),
                Some(_) => Err(unknown()),
            };
        }
        if name.eq_ignore_ascii_case("mlp") {
            let hidden = size
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|h| (1..=ModelKind::MAX_HIDDEN).contains(h))
                .ok_or_else(|| TaskError::BadHiddenWidth(t.to_string()))?;
            return Ok(ModelKind::Mlp { hidden });
        }
        Err(unknown())
    }
}

impl TryFrom<String> for ModelKind {
    type Error = TaskError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ModelKind> for String {
    fn from(k: ModelKind) -> String {
        k.to_string()
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
    #[error("unknown model kind {0:?} (known: logistic, mlp:HIDDEN)")]
    UnknownModel(String),
    /// An `mlp` model without a valid hidden width.
    #[error(
        "model {0:?}: an MLP needs a hidden width from 1 to {max}, written like \"mlp:64\"",
        max = ModelKind::MAX_HIDDEN
    )]
    BadHiddenWidth(String),
    /// The positive-class rule could not be parsed.
    #[error(
        "invalid positive-class rule {0:?}: expected \"> NUMBER\" or a class literal such as \"M\""
    )]
    BadLabelRule(String),
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
mod tests {
    use super::*;

    #[test]
    fn label_rule_text_round_trips() {
        for (text, rule) in [
            ("> 0", LabelRule::GreaterThan(0.0)),
            ("> 2.5", LabelRule::GreaterThan(2.5)),
            ("> -1", LabelRule::GreaterThan(-1.0)),
            ("M", LabelRule::Equals("M".into())),
            ("= >x", LabelRule::Equals(">x".into())),
        ] {
            assert_eq!(text.parse::<LabelRule>().unwrap(), rule);
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            ">0".parse::<LabelRule>().unwrap(),
            LabelRule::GreaterThan(0.0)
        );
        assert_eq!(
            "== B".parse::<LabelRule>().unwrap(),
            LabelRule::Equals("B".into())
        );
        assert!("> x".parse::<LabelRule>().is_err());
        assert!("".parse::<LabelRule>().is_err());
        assert!("=".parse::<LabelRule>().is_err());
    }

    #[test]
    fn label_rule_matches() {
        let gt = LabelRule::GreaterThan(0.0);
        assert_eq!(gt.is_positive("2"), Some(true));
        assert_eq!(gt.is_positive(" 0 "), Some(false));
        assert_eq!(gt.is_positive("M"), None);
        let eq = LabelRule::Equals("1".into());
        assert_eq!(eq.is_positive("1.0"), Some(true));
        assert_eq!(eq.is_positive("0"), Some(false));
        let m = LabelRule::Equals("M".into());
        assert_eq!(m.is_positive(" M"), Some(true));
        assert_eq!(m.is_positive("B"), Some(false));
    }

    #[test]
    fn model_kind_text_and_serde() {
        assert_eq!(
            "Logistic".parse::<ModelKind>().unwrap(),
            ModelKind::Logistic
        );
        assert_eq!(ModelKind::Logistic.to_string(), "logistic");
        for (text, kind) in [
            ("mlp:64", ModelKind::Mlp { hidden: 64 }),
            ("mlp:1", ModelKind::Mlp { hidden: 1 }),
            ("mlp:16777216", ModelKind::Mlp { hidden: 1 << 24 }),
        ] {
            assert_eq!(text.parse::<ModelKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), text);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
        }
        assert_eq!(
            " MLP : 8 ".parse::<ModelKind>().unwrap(),
            ModelKind::Mlp { hidden: 8 }
        );
        assert_eq!(ModelKind::Mlp { hidden: 8 }.as_str(), "mlp");
        for bad in ["mlp", "mlp:", "mlp:0", "mlp:-3", "mlp:x", "mlp:16777217"] {
            assert!(
                matches!(bad.parse::<ModelKind>(), Err(TaskError::BadHiddenWidth(_))),
                "{bad}"
            );
        }
        for bad in ["logistic:3", "cnn", ""] {
            assert!(
                matches!(bad.parse::<ModelKind>(), Err(TaskError::UnknownModel(_))),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<ModelKind>("\"mlp:0\"").is_err());
        let task = TaskSpec {
            model: ModelKind::Logistic,
            features: vec!["a".into(), "b".into()],
            label: "y".into(),
            positive: LabelRule::GreaterThan(0.0),
        };
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(
            json,
            r#"{"model":"logistic","features":["a","b"],"label":"y","positive":"> 0"}"#
        );
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), task);
        assert!(serde_json::from_str::<TaskSpec>(&json.replace("> 0", "> zero")).is_err());
    }

    #[test]
    fn validate_catches_mistakes() {
        let mut task = TaskSpec {
            model: ModelKind::Logistic,
            features: vec!["a".into(), "b".into()],
            label: "y".into(),
            positive: LabelRule::GreaterThan(0.0),
        };
        assert!(task.validate().is_ok());
        task.features.push("a".into());
        assert_eq!(
            task.validate(),
            Err(TaskError::DuplicateFeature("a".into()))
        );
        task.features = vec!["y".into()];
        assert_eq!(task.validate(), Err(TaskError::LabelIsFeature("y".into())));
        task.features.clear();
        assert_eq!(task.validate(), Err(TaskError::NoFeatures));
    }
}
