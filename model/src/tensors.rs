//! A flat parameter vector as named `f32` tensors in a safetensors file, and back:
//! what model files and the external-trainer protocol share.
//!
//! Reading checks everything an untrusted writer could get wrong: every tensor of the
//! layout present, nothing else, each `F32` with its shape, every value finite.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::layout::TensorSpec;

/// Why a set of tensors does not match a layout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The bytes are not a safetensors file.
    #[error("not a safetensors file: {0}")]
    Format(String),
    /// A tensor of the layout is absent.
    #[error("tensor {0:?} is missing")]
    Missing(String),
    /// A tensor the layout does not have.
    #[error("tensor {0:?} is not part of the model")]
    Unexpected(String),
    /// A tensor of another data type.
    #[error("tensor {name:?} is {found}, expected F32")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its data type.
        found: String,
    },
    /// A tensor of another shape.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The layout's shape.
        expected: Vec<usize>,
    },
    /// A NaN or infinite value.
    #[error("tensor {name:?} holds a non-finite value at {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// Position in the tensor.
        index: usize,
    },
    /// A flat vector whose length is not the layout's.
    #[error("{got} values for a layout of {expected}")]
    Length {
        /// The layout's total.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
}

/// Serialises `params` (laid out as `layout`) as `f32` tensors, with `extra` tensors
/// (e.g. a model file's preprocessing) and `metadata`.
pub fn to_safetensors(
    layout: &[TensorSpec],
    params: &[f32],
    extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, TensorError> {
    let total = crate::layout::total_len(layout);
    if total != params.len() {
        return Err(TensorError::Length {
            expected: total,
            got: params.len(),
        });
    }
    let mut bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(layout.len());
    let mut at = 0;
    for t in layout {
        let n = t.len();
        let data = params[at..at + n]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        bytes.push((t.name.clone(), Dtype::F32, t.shape.clone(), data));
        at += n;
    }
    bytes.extend(extra);
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| TensorError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| TensorError::Format(e.to_string()))
}

/// The flat vector of the tensors of `layout` in `st`, checked: all present, `F32`, of
/// their shapes, finite. Names in `st` outside the layout and not accepted by `other`
/// are refused.
pub fn from_safetensors(
    st: &SafeTensors<'_>,
    layout: &[TensorSpec],
    other: impl Fn(&str) -> bool,
) -> Result<Vec<f32>, TensorError> {
    if let Some(extra) = st
        .names()
        .into_iter()
        .find(|n| !layout.iter().any(|t| t.name == **n) && !other(n))
    {
        return Err(TensorError::Unexpected(extra.to_string()));
    }
    let mut out = Vec::with_capacity(crate::layout::total_len(layout));
    for t in layout {
        let view = st
            .tensor(&t.name)
            .map_err(|_| TensorError::Missing(t.name.clone()))?;
        if view.dtype() != Dtype::F32 {
            return Err(TensorError::Dtype {
                name: t.name.clone(),
                found: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != t.shape.as_slice() {
            return Err(TensorError::Shape {
                name: t.name.clone(),
                found: view.shape().to_vec(),
                expected: t.shape.clone(),
            });
        }
        for (index, c) in view.data().chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !v.is_finite() {
                return Err(TensorError::NonFinite {
                    name: t.name.clone(),
                    index,
                });
            }
            out.push(v);
        }
    }
    Ok(out)
}

/// Reads the layout of a safetensors file whose tensors are all `F32` model tensors
/// (an initial model of any architecture), ordered by name (byte order, which does not
/// depend on the program that wrote the file), with the flat vector; tensors whose names
/// start with `pre.` (a Tessera model file's preprocessing) are left out.
pub fn read_layout(path: &Path) -> Result<(Vec<TensorSpec>, Vec<f32>), TensorError> {
    let bytes =
        std::fs::read(path).map_err(|e| TensorError::Format(format!("{}: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TensorError::Format(e.to_string()))?;
    let mut layout: Vec<TensorSpec> = st
        .iter()
        .filter(|(name, _)| !name.starts_with("pre."))
        .map(|(name, view)| TensorSpec::new(name, view.shape()))
        .collect();
    layout.sort_by(|a, b| a.name.cmp(&b.name));
    crate::layout::check(&layout).map_err(TensorError::Format)?;
    let params = from_safetensors(&st, &layout, |n| n.starts_with("pre."))?;
    Ok((layout, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Vec<TensorSpec> {
        vec![TensorSpec::new("w", &[2, 2]), TensorSpec::new("b", &[2])]
    }

    #[test]
    fn round_trip_and_checks() {
        let params = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes = to_safetensors(&layout(), &params, vec![], HashMap::new()).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(from_safetensors(&st, &layout(), |_| false).unwrap(), params);
        // A foreign file's layout is ordered by name.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let (l, p) = read_layout(&path).unwrap();
        assert_eq!(
            l,
            [TensorSpec::new("b", &[2]), TensorSpec::new("w", &[2, 2])]
        );
        assert_eq!(p, [5.0, 6.0, 1.0, 2.0, 3.0, 4.0]);

        let other = vec![TensorSpec::new("w", &[4]), TensorSpec::new("b", &[2])];
        assert!(matches!(
            from_safetensors(&st, &other, |_| false),
            Err(TensorError::Shape { .. })
        ));
        let fewer = vec![TensorSpec::new("w", &[2, 2])];
        assert_eq!(
            from_safetensors(&st, &fewer, |_| false),
            Err(TensorError::Unexpected("b".into()))
        );
        let more = [layout(), vec![TensorSpec::new("c", &[1])]].concat();
        assert_eq!(
            from_safetensors(&st, &more, |_| false),
            Err(TensorError::Missing("c".into()))
        );
        let nan = to_safetensors(
            &layout(),
            &[1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0],
            vec![],
            HashMap::new(),
        )
        .unwrap();
        let st = SafeTensors::deserialize(&nan).unwrap();
        assert_eq!(
            from_safetensors(&st, &layout(), |_| false),
            Err(TensorError::NonFinite {
                name: "w".into(),
                index: 1
            })
        );
        let f64s = safetensors::serialize(
            vec![(
                "w",
                TensorView::new(Dtype::F64, vec![2], &[0u8; 16][..]).unwrap(),
            )],
            None,
        )
        .unwrap();
        let st = SafeTensors::deserialize(&f64s).unwrap();
        assert!(matches!(
            from_safetensors(&st, &[TensorSpec::new("w", &[2])], |_| false),
            Err(TensorError::Dtype { .. })
        ));
        assert!(to_safetensors(&layout(), &[1.0], vec![], HashMap::new()).is_err());
    }
}
