//! The kind of model a task trains, by name: `logistic`, `softmax`, `linear`,
//! `mlp:64,32` or `external`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::task::TaskError;

/// The widths of an MLP's hidden layers (1 to [`Hidden::MAX_LAYERS`] of them),
/// kept inline so that [`ModelKind`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hidden {
    widths: [u32; Hidden::MAX_LAYERS],
    len: u8,
}

impl Hidden {
    /// Most hidden layers an MLP may have.
    pub const MAX_LAYERS: usize = 8;

    /// One hidden layer of `width` units.
    ///
    /// # Panics
    /// If `width` is zero or above [`ModelKind::MAX_HIDDEN`].
    pub const fn one(width: usize) -> Self {
        assert!(width >= 1 && width <= ModelKind::MAX_HIDDEN, "hidden width");
        let mut widths = [0; Self::MAX_LAYERS];
        widths[0] = width as u32;
        Hidden { widths, len: 1 }
    }

    /// Hidden layers of these widths; `None` when there are none, more than
    /// [`Self::MAX_LAYERS`], or a width outside 1..=[`ModelKind::MAX_HIDDEN`].
    pub fn new(widths: &[usize]) -> Option<Self> {
        if widths.is_empty() || widths.len() > Self::MAX_LAYERS {
            return None;
        }
        let mut h = Hidden {
            widths: [0; Self::MAX_LAYERS],
            len: widths.len() as u8,
        };
        for (dst, &w) in h.widths.iter_mut().zip(widths) {
            if !(1..=ModelKind::MAX_HIDDEN).contains(&w) {
                return None;
            }
            *dst = w as u32;
        }
        Some(h)
    }

    /// The widths, input side first.
    pub fn widths(&self) -> Vec<usize> {
        self.widths[..usize::from(self.len)]
            .iter()
            .map(|&w| w as usize)
            .collect()
    }

    /// Number of hidden layers.
    pub fn depth(&self) -> usize {
        usize::from(self.len)
    }
}

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.widths()).finish()
    }
}

/// The kind of model a task trains.
///
/// Text form (configuration files, the wire, model files; [`FromStr`] and
/// [`fmt::Display`] round-trip, and serde uses the same string):
/// - `"logistic"`: logistic regression, for binary tasks;
/// - `"softmax"`: multinomial (softmax) regression, for multi-class tasks;
/// - `"linear"`: linear regression with squared loss, for regression tasks;
/// - `"mlp:64,32"`: a perceptron with ReLU hidden layers of these widths
///   (1 to 8 layers, each 1 to [`ModelKind::MAX_HIDDEN`] units), for any task;
/// - `"external"`: a model only an external trainer knows; its tensors are
///   whatever the federation's initial model file holds.
///
/// Parsing ignores case and spaces around the name and the widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelKind {
    /// Binary logistic regression (see [`crate::LogisticRegression`]).
    Logistic,
    /// Multinomial logistic (softmax) regression (see [`crate::LinearModel`]).
    Softmax,
    /// Linear regression, squared loss (see [`crate::LinearModel`]).
    Linear,
    /// A multi-layer perceptron: ReLU hidden layers, an output layer that
    /// follows the task (see [`crate::Mlp`]).
    Mlp {
        /// Widths of the hidden layers.
        hidden: Hidden,
    },
    /// A model trained only by an external trainer; its layout is the task's
    /// tensors (from the federation's initial model file).
    External,
}

impl ModelKind {
    /// The model families, as written in text (for help texts and error messages).
    pub const NAMES: &'static [&'static str] = &[
        "logistic",
        "softmax",
        "linear",
        "mlp:WIDTH[,WIDTH…]",
        "external",
    ];

    /// Widest hidden layer a task may ask for (2²⁴ units), so that a task description
    /// cannot make a site allocate an absurd model.
    pub const MAX_HIDDEN: usize = 1 << 24;

    /// An MLP with one hidden layer of `width` units.
    pub const fn mlp1(width: usize) -> Self {
        ModelKind::Mlp {
            hidden: Hidden::one(width),
        }
    }

    /// The family name, without its size (`"logistic"`, `"mlp"`…);
    /// [`fmt::Display`] gives the full text form.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Softmax => "softmax",
            ModelKind::Linear => "linear",
            ModelKind::Mlp { .. } => "mlp",
            ModelKind::External => "external",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::Mlp { hidden } => {
                let w: Vec<String> = hidden.widths().iter().map(usize::to_string).collect();
                write!(f, "mlp:{}", w.join(","))
            }
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for ModelKind {
    type Err = TaskError;

    /// Parses the text form, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let unknown = || TaskError::UnknownModel(t.to_string());
        let (name, size) = match t.split_once(':') {
            Some((n, w)) => (n.trim(), Some(w.trim())),
            None => (t, None),
        };
        for kind in [
            ModelKind::Logistic,
            ModelKind::Softmax,
            ModelKind::Linear,
            ModelKind::External,
        ] {
            if name.eq_ignore_ascii_case(kind.as_str()) {
                return match size {
                    None => Ok(kind),
                    Some(_) => Err(unknown()),
                };
            }
        }
        if name.eq_ignore_ascii_case("mlp") {
            let widths: Option<Vec<usize>> = size.and_then(|w| {
                w.split(',')
                    .map(|x| x.trim().parse::<usize>().ok())
                    .collect()
            });
            return widths
                .as_deref()
                .and_then(Hidden::new)
                .map(|hidden| ModelKind::Mlp { hidden })
                .ok_or_else(|| TaskError::BadHiddenWidth(t.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for (text, kind) in [
            ("logistic", ModelKind::Logistic),
            ("softmax", ModelKind::Softmax),
            ("linear", ModelKind::Linear),
            ("external", ModelKind::External),
            ("mlp:64", ModelKind::mlp1(64)),
            ("mlp:1", ModelKind::mlp1(1)),
            ("mlp:16777216", ModelKind::mlp1(1 << 24)),
            (
                "mlp:64,32,8",
                ModelKind::Mlp {
                    hidden: Hidden::new(&[64, 32, 8]).unwrap(),
                },
            ),
        ] {
            assert_eq!(text.parse::<ModelKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), text);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
        }
        assert_eq!(
            " MLP : 8 , 4 ".parse::<ModelKind>().unwrap().to_string(),
            "mlp:8,4"
        );
        assert_eq!(ModelKind::mlp1(8).as_str(), "mlp");
        for bad in [
            "mlp",
            "mlp:",
            "mlp:0",
            "mlp:-3",
            "mlp:x",
            "mlp:16777217",
            "mlp:4,,4",
            "mlp:1,1,1,1,1,1,1,1,1",
        ] {
            assert!(
                matches!(bad.parse::<ModelKind>(), Err(TaskError::BadHiddenWidth(_))),
                "{bad}"
            );
        }
        for bad in ["logistic:3", "cnn", "", "softmax:2"] {
            assert!(
                matches!(bad.parse::<ModelKind>(), Err(TaskError::UnknownModel(_))),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<ModelKind>("\"mlp:0\"").is_err());
        assert_eq!(
            Hidden::new(&[3, 2]).unwrap().widths(),
            vec![3, 2],
            "widths keep their order"
        );
    }
}
