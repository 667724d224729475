//! The model file: a safetensors file holding the model's tensors, preprocessing, task
//! and round.
//!
//! Layout (format `tessera-model/2`):
//! - the model's tensors, `F32`, by the names and shapes of its layout
//!   ([`crate::layout`]: `weight`/`bias` for the linear models, `layers.i.weight`/
//!   `layers.i.bias` for an MLP, the initial model's names for an external one); the
//!   flat parameter vector is their concatenation in the layout's order;
//! - tensors `pre.mean` and `pre.std` (F64, `[n_features]`) and `pre.indicator`
//!   (U8 0/1, `[n_features]`): the [`Preprocessor`]; `pre.target` (F64, `[2]`: mean,
//!   std) when a regression target is standardised;
//! - `__metadata__`: `format` = `"tessera-model/2"`, `task` = the [`TaskSpec`] as JSON,
//!   `round` = the round number in decimal.
//!
//! Files of format `tessera-model/1` (one `params` tensor holding the flat vector) are
//! still read. Any safetensors reader (e.g. Python's `safetensors.numpy.load_file`) can
//! open both. [`write_model`] writes atomically: a temporary file in the same directory,
//! flushed to disk, then renamed over the target, so a reader never sees a half-written
//! model.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::data::{DataError, Dataset};
use crate::model::{Metrics, ModelError, Objective, build_model, score};
use crate::stats::{Preprocessor, TargetScale};
use crate::task::TaskSpec;

/// Value of the `format` metadata key of the files this build writes.
pub const FORMAT: &str = "tessera-model/2";
/// The earlier format, with one flat `params` tensor; still read.
pub const FORMAT_V1: &str = "tessera-model/1";

/// A trained (or in-training) model with everything needed to use it on new data.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The task the model solves.
    pub task: TaskSpec,
    /// The model's flat parameter vector.
    pub params: Vec<f32>,
    /// The preprocessing its inputs need.
    pub preprocessor: Preprocessor,
    /// The federation round that produced it (0 = initial model).
    pub round: u32,
}

/// How a model does on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Fraction classified correctly (NaN for a regression).
    pub accuracy: f64,
    /// Mean loss: cross-entropy, or squared error in the target's units.
    pub loss: f64,
    /// Rows evaluated.
    pub rows: usize,
    /// Regression: root mean squared error, mean absolute error and R², in the target's
    /// units.
    pub regression: Option<RegressionScores>,
}

/// Regression scores.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegressionScores {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination, 1 − SSE / SST.
    pub r2: f64,
}

fn format_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl ModelFile {
    /// Checks internal consistency: preprocessor sized for the task's features, parameter
    /// count matching the task's layout, all values finite, stds positive.
    pub fn validate(&self) -> Result<(), ModelError> {
        let d = self.task.features.len();
        let p = &self.preprocessor;
        if p.mean.len() != d || p.std.len() != d || p.indicator.len() != d {
            return Err(format_err(
                Path::new(""),
                format!(
                    "preprocessor sized for {} features, task has {d}",
                    p.mean.len()
                ),
            ));
        }
        if p.mean.iter().any(|v| !v.is_finite())
            || p.std.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || p.target
                .is_some_and(|t| !(t.mean.is_finite() && t.std.is_finite() && t.std > 0.0))
        {
            return Err(format_err(
                Path::new(""),
                "preprocessor has non-finite mean or non-positive std",
            ));
        }
        let expected = self.task.num_params(p.output_dim());
        if self.params.len() != expected {
            return Err(ModelError::ParamLength {
                expected,
                got: self.params.len(),
            });
        }
        if let Some(index) = self.params.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite { index });
        }
        Ok(())
    }

    /// The file's bytes (see the [module docs](self) for the layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.validate()?;
        let p = &self.preprocessor;
        let d = p.mean.len();
        let mut extra = vec![
            (
                "pre.mean".to_string(),
                Dtype::F64,
                vec![d],
                f64_bytes(&p.mean),
            ),
            (
                "pre.std".to_string(),
                Dtype::F64,
                vec![d],
                f64_bytes(&p.std),
            ),
            (
                "pre.indicator".to_string(),
                Dtype::U8,
                vec![d],
                p.indicator.iter().map(|&b| u8::from(b)).collect(),
            ),
        ];
        if let Some(t) = p.target {
            extra.push((
                "pre.target".to_string(),
                Dtype::F64,
                vec![2],
                f64_bytes(&[t.mean, t.std]),
            ));
        }
        let task = serde_json::to_string(&self.task)
            .map_err(|e| format_err(Path::new(""), format!("encoding task: {e}")))?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("task".to_string(), task),
            ("round".to_string(), self.round.to_string()),
        ]);
        let layout = self.task.layout(p.output_dim());
        crate::tensors::to_safetensors(&layout, &self.params, extra, meta)
            .map_err(|e| format_err(Path::new(""), e.to_string()))
    }

    /// Parses a model file's bytes; `path` names the source in errors. Checks the layout,
    /// data types, shapes and consistency (see [`ModelFile::validate`]).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ModelError> {
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(path, e.to_string()))?;
        let info = meta
            .metadata()
            .as_ref()
            .ok_or_else(|| format_err(path, "no metadata"))?;
        let get = |k: &str| {
            info.get(k)
                .ok_or_else(|| format_err(path, format!("metadata key {k:?} missing")))
        };
        let format = get("format")?;
        if format != FORMAT && format != FORMAT_V1 {
            return Err(format_err(
                path,
                format!("format {format:?}, expected {FORMAT:?}"),
            ));
        }
        let task: TaskSpec = serde_json::from_str(get("task")?)
            .map_err(|e| format_err(path, format!("task metadata: {e}")))?;
        let round: u32 = get("round")?
            .parse()
            .map_err(|e| format_err(path, format!("round metadata: {e}")))?;
        let tensor = |name: &str, dtype: Dtype| -> Result<&[u8], ModelError> {
            let t = st
                .tensor(name)
                .map_err(|e| format_err(path, e.to_string()))?;
            if t.dtype() != dtype || t.shape().len() != 1 {
                return Err(format_err(
                    path,
                    format!(
                        "tensor {name:?} is {:?} {:?}, expected 1-d {dtype:?}",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            Ok(t.data())
        };
        let f64s = |data: &[u8]| -> Vec<f64> {
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect()
        };
        let mean = f64s(tensor("pre.mean", Dtype::F64)?);
        let std = f64s(tensor("pre.std", Dtype::F64)?);
        let indicator = tensor("pre.indicator", Dtype::U8)?
            .iter()
            .map(|&b| match b {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(format_err(
                    path,
                    format!("pre.indicator holds {b}, expected 0 or 1"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let target = match st.tensor("pre.target") {
            Ok(_) => match f64s(tensor("pre.target", Dtype::F64)?)[..] {
                [mean, std] => Some(TargetScale { mean, std }),
                _ => return Err(format_err(path, "pre.target must hold mean and std")),
            },
            Err(_) => None,
        };
        let preprocessor = Preprocessor {
            mean,
            std,
            indicator,
            target,
        };
        let params: Vec<f32> = if format == FORMAT_V1 {
            tensor("params", Dtype::F32)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            let layout = task.layout(preprocessor.output_dim());
            crate::tensors::from_safetensors(&st, &layout, |n| n.starts_with("pre."))
                .map_err(|e| format_err(path, e.to_string()))?
        };
        let m = ModelFile {
            task,
            params,
            preprocessor,
            round,
        };
        m.validate().map_err(|e| match e {
            ModelError::Format { message, .. } => format_err(path, message),
            other => format_err(path, other.to_string()),
        })?;
        Ok(m)
    }
}

/// Writes a model file atomically: temporary file in the same directory, `fsync`, rename
/// over `path`, then `fsync` of the directory (on Unix).
pub fn write_model(path: &Path, m: &ModelFile) -> Result<(), ModelError> {
    let bytes = m.to_bytes()?;
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| format_err(path, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    #[cfg(unix)]
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Reads and validates a model file.
pub fn read_model(path: &Path) -> Result<ModelFile, ModelError> {
    let bytes = fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ModelFile::from_bytes(&bytes, path)
}

/// How a model does on a dataset loaded for the same task (the dataset's feature columns
/// must be the task's, in order): accuracy and cross-entropy for classification; squared
/// error, RMSE, MAE and R² in the target's units for a regression.
pub fn evaluate(m: &ModelFile, ds: &Dataset) -> Result<Evaluation, ModelError> {
    m.validate()?;
    if ds.features != m.task.features {
        return Err(DataError::FeatureMismatch {
            expected: m.task.features.clone(),
            found: ds.features.clone(),
        }
        .into());
    }
    if ds.n_rows() == 0 {
        return Err(DataError::Empty {
            path: PathBuf::new(),
        }
        .into());
    }
    let x = m.preprocessor.transform(&ds.x);
    let objective = m.task.objective();
    let mut model = build_model(m.task.model, objective, m.preprocessor.output_dim())?;
    model.set_params(&m.params)?;
    let metrics: Metrics = match (objective, m.preprocessor.target) {
        (Objective::Regression, Some(t)) => {
            // Scores in the target's own units.
            let pred = model.predict(&x).mapv(|z| t.inverse(z));
            score(objective, &pred, &ds.y)
        }
        _ => model.metrics(&x, &ds.y),
    };
    let regression = match (metrics.rmse, metrics.mae, metrics.r2) {
        (Some(rmse), Some(mae), Some(r2)) => Some(RegressionScores { rmse, mae, r2 }),
        _ => None,
    };
    Ok(Evaluation {
        accuracy: metrics.accuracy.unwrap_or(f64::NAN),
        loss: match regression {
            Some(r) => r.rmse * r.rmse,
            None => metrics.loss,
        },
        rows: metrics.rows,
        regression,
    })
}
