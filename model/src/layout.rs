//! The named layout of a model's flat parameter vector: which tensors, of which
//! shapes, in which order. The flat vector is what federated averaging adds up;
//! the layout is how it is written to a safetensors file and handed to an external
//! trainer.
//!
//! Built-in layouts (`d` inputs, `k` outputs: 1 for binary and regression tasks,
//! the number of classes for a multi-class one):
//!
//! | model | tensors, in order |
//! | --- | --- |
//! | `logistic`, `softmax`, `linear` | `weight` `[k, d]`, `bias` `[k]` |
//! | `mlp:h₁,…,h_L` | `layers.0.weight` `[h₁, d]`, `layers.0.bias` `[h₁]`, …, `layers.L.weight` `[k, h_L]`, `layers.L.bias` `[k]` |
//!
//! Weights are row-major with one row per output unit (PyTorch's `nn.Linear`
//! convention), so for a binary logistic regression the flat vector is
//! `[w_0, …, w_{d−1}, b]`.

use serde::{Deserialize, Serialize};

use crate::kind::ModelKind;
use crate::model::Objective;

/// Most tensors an external model may have.
pub const MAX_TENSORS: usize = 4096;
/// Longest tensor name.
pub const MAX_NAME_LEN: usize = 256;
/// Most dimensions of one tensor.
pub const MAX_RANK: usize = 8;

/// One tensor of a model: its name and shape (all `f32`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name in the safetensors file.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A tensor `name` of `shape`.
    pub fn new(name: &str, shape: &[usize]) -> Self {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// Number of values (saturating).
    pub fn len(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Total number of values of a layout (saturating).
pub fn total_len(layout: &[TensorSpec]) -> usize {
    layout.iter().fold(0usize, |a, t| a.saturating_add(t.len()))
}

/// The layout of a built-in model for `input_dim` inputs (empty for
/// [`ModelKind::External`], whose layout is the task's).
pub fn builtin(kind: ModelKind, objective: Objective, input_dim: usize) -> Vec<TensorSpec> {
    let k = objective.outputs();
    match kind {
        ModelKind::Logistic | ModelKind::Softmax | ModelKind::Linear => vec![
            TensorSpec::new("weight", &[k, input_dim]),
            TensorSpec::new("bias", &[k]),
        ],
        ModelKind::Mlp { hidden } => {
            let mut sizes = vec![input_dim];
            sizes.extend(hidden.widths());
            sizes.push(k);
            sizes
                .windows(2)
                .enumerate()
                .flat_map(|(i, w)| {
                    [
                        TensorSpec::new(&format!("layers.{i}.weight"), &[w[1], w[0]]),
                        TensorSpec::new(&format!("layers.{i}.bias"), &[w[1]]),
                    ]
                })
                .collect()
        }
        ModelKind::External => Vec::new(),
    }
}

/// Checks a layout given by someone else (an initial model file, a task on the
/// wire): 1 to [`MAX_TENSORS`] tensors, distinct non-empty names of at most
/// [`MAX_NAME_LEN`] bytes that do not start with `pre.`, shapes of 1 to
/// [`MAX_RANK`] positive dimensions, and a total that fits in memory arithmetic.
pub fn check(layout: &[TensorSpec]) -> Result<(), String> {
    if layout.is_empty() || layout.len() > MAX_TENSORS {
        return Err(format!(
            "{} tensors; a model has 1 to {MAX_TENSORS}",
            layout.len()
        ));
    }
    let mut total = 0u64;
    for (i, t) in layout.iter().enumerate() {
        if t.name.is_empty() || t.name.len() > MAX_NAME_LEN || t.name.starts_with("pre.") {
            return Err(format!(
                "tensor name {:?} must have 1 to {MAX_NAME_LEN} bytes and not start with `pre.`",
                t.name
            ));
        }
        if t.name.chars().any(char::is_control) {
            return Err(format!("tensor name {:?} has control characters", t.name));
        }
        if layout[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("tensor {:?} is listed twice", t.name));
        }
        if t.shape.is_empty() || t.shape.len() > MAX_RANK || t.shape.contains(&0) {
            return Err(format!(
                "tensor {:?} has shape {:?}; shapes have 1 to {MAX_RANK} positive dimensions",
                t.name, t.shape
            ));
        }
        let len = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .filter(|&n| n <= u64::from(u32::MAX))
            .ok_or_else(|| format!("tensor {:?} is too large", t.name))?;
        total += len;
    }
    if total > u64::from(u32::MAX) {
        return Err(format!("{total} parameters in all is too many"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Hidden;

    #[test]
    fn builtin_layouts() {
        let l = builtin(ModelKind::Logistic, Objective::Binary, 3);
        assert_eq!(
            l,
            [
                TensorSpec::new("weight", &[1, 3]),
                TensorSpec::new("bias", &[1])
            ]
        );
        assert_eq!(total_len(&l), 4);
        let l = builtin(ModelKind::Softmax, Objective::Multiclass { classes: 3 }, 4);
        assert_eq!(total_len(&l), 15);
        let mlp = ModelKind::Mlp {
            hidden: Hidden::new(&[5, 2]).unwrap(),
        };
        let l = builtin(mlp, Objective::Multiclass { classes: 3 }, 4);
        let names: Vec<&str> = l.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "layers.0.weight",
                "layers.0.bias",
                "layers.1.weight",
                "layers.1.bias",
                "layers.2.weight",
                "layers.2.bias"
            ]
        );
        assert_eq!(l[2].shape, [2, 5]);
        assert_eq!(total_len(&l), 5 * 4 + 5 + 2 * 5 + 2 + 3 * 2 + 3);
        assert!(check(&l).is_ok());
    }

    #[test]
    fn foreign_layouts_are_checked() {
        let ok = vec![TensorSpec::new("fc.weight", &[2, 3])];
        assert!(check(&ok).is_ok());
        for bad in [
            vec![],
            vec![TensorSpec::new("", &[1])],
            vec![TensorSpec::new("pre.mean", &[1])],
            vec![TensorSpec::new("a", &[1]), TensorSpec::new("a", &[2])],
            vec![TensorSpec::new("a", &[])],
            vec![TensorSpec::new("a", &[3, 0])],
            vec![TensorSpec::new("a", &[1 << 20, 1 << 20])],
            vec![TensorSpec::new("a\n", &[1])],
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }
}
