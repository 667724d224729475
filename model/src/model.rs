//! The [`Model`] trait every built-in model implements, training settings and errors.
//!
//! A model is a flat `f32` parameter vector plus the code that trains and evaluates it on
//! preprocessed inputs (see [`crate::Preprocessor`]). The flat vector is what federated
//! averaging works on: participants send `local − global`, clipped and encoded, and the
//! coordinator applies the averaged sum; its named layout is in [`crate::layout`].
//! Further built-in models implement the same trait and get a [`ModelKind`] variant; an
//! external trainer works on the layout alone.

use std::path::PathBuf;

use ndarray::{Array1, Array2};

use crate::data::DataError;
use crate::linear::LinearModel;
use crate::logistic::LogisticRegression;
use crate::mlp::Mlp;
use crate::task::ModelKind;

/// Local training settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the local data.
    pub epochs: u32,
    /// Step size of minibatch SGD.
    pub learning_rate: f64,
    /// Examples per minibatch; 0 means the whole dataset (full-batch gradient descent).
    pub batch_size: usize,
    /// Seed of the example shuffling (so a round is reproducible).
    pub seed: u64,
    /// L2 weight decay λ: every step also descends `λ/2 · ‖W‖²` over the weights
    /// (not the biases), i.e. adds `λ·w` to each weight's gradient. 0 turns it off.
    pub weight_decay: f64,
}

impl Default for TrainConfig {
    /// Defaults for non-private federated averaging of the built-in logistic regression on
    /// standardised features: 2 local epochs, learning rate 0.1, batch 16, no weight decay.
    fn default() -> Self {
        TrainConfig {
            epochs: 2,
            learning_rate: 0.1,
            batch_size: 16,
            seed: 0,
            weight_decay: 0.0,
        }
    }
}

impl TrainConfig {
    /// Rows per minibatch for `n` rows: the whole set when `batch_size` is 0,
    /// never more than `n`.
    pub fn effective_batch(&self, n: usize) -> usize {
        if self.batch_size == 0 {
            n
        } else {
            self.batch_size.min(n)
        }
    }

    /// Recommended local training for DP-FedAvg with a clip norm that binds (e.g. 0.25):
    /// 1 epoch, learning rate 3, batch 16. The large step makes every site's update reach
    /// the clip norm, so the clipped update is effectively the normalised direction, which
    /// is what keeps the signal above the noise with few sites. Measured on breast cancer over
    /// ten sites (clip 0.25, σ = 5.92, 30 rounds): learning rates 1 to 5 do about equally
    /// well with standardised inputs; with range scaling from public bounds
    /// ([`crate::Preprocessor::from_bounds`]) use about 1.
    pub fn private_default() -> Self {
        TrainConfig {
            epochs: 1,
            learning_rate: 3.0,
            batch_size: 16,
            seed: 0,
            weight_decay: 0.0,
        }
    }
}

/// Replaces a model's flat parameters with `p`, refusing a wrong length or a
/// non-finite value (the shared body of [`Model::set_params`]).
pub fn replace_params(params: &mut [f32], p: &[f32]) -> Result<(), ModelError> {
    if p.len() != params.len() {
        return Err(ModelError::ParamLength {
            expected: params.len(),
            got: p.len(),
        });
    }
    if let Some(index) = p.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite { index });
    }
    params.copy_from_slice(p);
    Ok(())
}

/// What a call to [`Model::train`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// Epochs run.
    pub epochs: u32,
    /// SGD steps taken.
    pub steps: u64,
    /// Examples processed (rows × epochs).
    pub examples: u64,
    /// Mean loss over the minibatches of the last epoch, before each step (NaN if no data).
    pub last_epoch_loss: f64,
}

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A parameter vector of the wrong length.
    #[error("parameter vector has {got} values, the model needs {expected}")]
    ParamLength {
        /// Length the model needs.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A parameter is NaN or infinite.
    #[error("parameter {index} is not finite")]
    NonFinite {
        /// Position of the first bad value.
        index: usize,
    },
    /// A model file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is not a valid Tessera model.
    #[error("{}: not a valid model file: {message}", path.display())]
    Format {
        /// The file (empty when reading from memory).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Data that does not fit the model (e.g. other feature columns).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model only an external trainer can train or run.
    #[error("model {0} has no built-in implementation (an external trainer trains it)")]
    NotBuiltIn(String),
}

/// What a model predicts and is trained against: it decides the meaning of
/// the labels, the outputs, the loss and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Binary classification: labels 0/1, one output P(y = 1), binary
    /// cross-entropy, accuracy at threshold 0.5.
    Binary,
    /// Multi-class classification: labels are class indices 0..classes,
    /// `classes` outputs (probabilities), cross-entropy, accuracy of the
    /// most probable class.
    Multiclass {
        /// Number of classes.
        classes: usize,
    },
    /// Regression: real labels, one output (the prediction), mean squared
    /// error; RMSE and MAE as metrics.
    Regression,
}

impl Objective {
    /// Outputs per row.
    pub fn outputs(self) -> usize {
        match self {
            Objective::Multiclass { classes } => classes,
            Objective::Binary | Objective::Regression => 1,
        }
    }
}

/// How a model does on labelled rows, by its objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// The objective's mean loss.
    pub loss: f64,
    /// Classification: fraction of rows predicted correctly.
    pub accuracy: Option<f64>,
    /// Regression: root mean squared error.
    pub rmse: Option<f64>,
    /// Regression: mean absolute error.
    pub mae: Option<f64>,
    /// Regression: coefficient of determination 1 − SSE/SST (NaN when the labels do
    /// not vary).
    pub r2: Option<f64>,
    /// Rows evaluated.
    pub rows: usize,
}

/// Fraction correct, or RMSE, MAE and R², of `outputs` (rows × objective outputs)
/// against labels `y`; NaN-free only for a non-empty `y`. The loss is left NaN (it
/// needs the model: see [`Model::metrics`]).
pub fn score(objective: Objective, outputs: &Array2<f64>, y: &Array1<f64>) -> Metrics {
    let n = y.len();
    let mut m = Metrics {
        loss: f64::NAN,
        accuracy: None,
        rmse: None,
        mae: None,
        r2: None,
        rows: n,
    };
    if n == 0 {
        return m;
    }
    match objective {
        Objective::Binary => {
            let correct = outputs
                .column(0)
                .iter()
                .zip(y)
                .filter(|(p, y)| (**p >= 0.5) == (**y > 0.5))
                .count();
            m.accuracy = Some(correct as f64 / n as f64);
        }
        Objective::Multiclass { .. } => {
            let correct = outputs
                .rows()
                .into_iter()
                .zip(y)
                .filter(|(row, y)| {
                    let best = row
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f64::NEG_INFINITY),
                            |b, (i, &p)| if p > b.1 { (i, p) } else { b },
                        )
                        .0;
                    best as f64 == **y
                })
                .count();
            m.accuracy = Some(correct as f64 / n as f64);
        }
        Objective::Regression => {
            let (mut se, mut ae) = (0.0, 0.0);
            for (p, y) in outputs.column(0).iter().zip(y) {
                se += (p - y) * (p - y);
                ae += (p - y).abs();
            }
            let mean = y.sum() / n as f64;
            let sst: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
            m.rmse = Some((se / n as f64).sqrt());
            m.mae = Some(ae / n as f64);
            m.r2 = Some(if sst > 0.0 { 1.0 - se / sst } else { f64::NAN });
        }
    }
    m
}

/// A model over preprocessed inputs, with a flat `f32` parameter vector.
/// What it predicts, and so its labels, loss and metrics, follow its
/// [`Objective`]: binary, multi-class or regression models implement the
/// same trait.
pub trait Model {
    /// Which kind of model this is.
    fn kind(&self) -> ModelKind;
    /// What it predicts.
    fn objective(&self) -> Objective;
    /// Number of inputs (columns of `x`) the model expects.
    fn input_dim(&self) -> usize;
    /// Length of the parameter vector.
    fn num_params(&self) -> usize;
    /// The parameters (layout documented by each model).
    fn params(&self) -> &[f32];
    /// Replaces the parameters; errors on a wrong length or a non-finite value.
    fn set_params(&mut self, p: &[f32]) -> Result<(), ModelError>;
    /// Trains on `x` (rows × [`input_dim`](Self::input_dim)) and labels `y`
    /// as the objective reads them.
    ///
    /// # Panics
    /// If `x` has the wrong number of columns or `y` the wrong length.
    fn train(&mut self, x: &Array2<f64>, y: &Array1<f64>, cfg: &TrainConfig) -> TrainReport;
    /// The outputs for each row of `x`: rows × `objective().outputs()`
    /// (probabilities for classification, values for regression).
    fn predict(&self, x: &Array2<f64>) -> Array2<f64>;
    /// The objective's mean loss on `x`, `y` (NaN for no rows).
    fn loss(&self, x: &Array2<f64>, y: &Array1<f64>) -> f64;
    /// Loss and the objective's metrics.
    fn metrics(&self, x: &Array2<f64>, y: &Array1<f64>) -> Metrics {
        let mut m = score(self.objective(), &self.predict(x), y);
        m.loss = self.loss(x, y);
        m
    }
    /// Classification: fraction of rows predicted correctly (NaN for no
    /// rows, or for a regression model).
    fn accuracy(&self, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
        score(self.objective(), &self.predict(x), y)
            .accuracy
            .unwrap_or(f64::NAN)
    }
}

/// A fresh model of `kind` with `objective` for `input_dim` inputs (the preprocessor's
/// [`output_dim`](crate::Preprocessor::output_dim)), with its documented initialisation
/// (for an MLP, the one of [`initial_params`] with seed 0). A binary `logistic` model is
/// [`LogisticRegression`]; `softmax` and `linear` are [`LinearModel`]; `mlp:…` is [`Mlp`].
/// [`ModelKind::External`] has no built-in implementation.
pub fn build_model(
    kind: ModelKind,
    objective: Objective,
    input_dim: usize,
) -> Result<Box<dyn Model + Send>, ModelError> {
    match (kind, objective) {
        (ModelKind::Logistic, Objective::Binary) => {
            Ok(Box::new(LogisticRegression::new(input_dim)))
        }
        (ModelKind::Softmax, Objective::Multiclass { .. })
        | (ModelKind::Linear, Objective::Regression) => {
            Ok(Box::new(LinearModel::new(objective, input_dim)))
        }
        (ModelKind::Mlp { hidden }, _) => Ok(Box::new(Mlp::new(
            input_dim,
            &hidden.widths(),
            objective,
            0,
        ))),
        (kind, objective) => Err(ModelError::NotBuiltIn(format!("{kind} for {objective:?}"))),
    }
}

/// Number of parameters a model of `kind` with `objective` has for `input_dim` inputs
/// (0 for an external model, whose layout is the task's).
pub fn num_params(kind: ModelKind, objective: Objective, input_dim: usize) -> usize {
    crate::layout::total_len(&crate::layout::builtin(kind, objective, input_dim))
}

/// The initial global model of a federation: zeros for the linear models (their losses
/// are convex, so zero is a fine start), the seeded random initialisation of
/// [`Mlp::init_params`] for an MLP (zeros would leave every hidden unit identical
/// forever), and nothing for an external model (its initial model file gives it). The
/// same arguments always give the same vector.
pub fn initial_params(
    kind: ModelKind,
    objective: Objective,
    input_dim: usize,
    seed: u64,
) -> Vec<f32> {
    match kind {
        ModelKind::Mlp { hidden } => Mlp::init_params(input_dim, &hidden.widths(), objective, seed),
        ModelKind::External => Vec::new(),
        _ => vec![0.0; num_params(kind, objective, input_dim)],
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn scores_follow_the_objective() {
        let y = array![1.0, 0.0, 1.0, 1.0];
        let p = array![[0.9], [0.2], [0.4], [0.5]];
        let m = score(Objective::Binary, &p, &y);
        assert_eq!(m.accuracy, Some(0.75));
        assert_eq!((m.rmse, m.rows), (None, 4));

        let classes = array![2.0, 0.0, 1.0];
        let probs = array![[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]];
        let m = score(Objective::Multiclass { classes: 3 }, &probs, &classes);
        assert!((m.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Objective::Multiclass { classes: 3 }.outputs(), 3);

        let values = array![1.0, 2.0];
        let pred = array![[1.5], [1.0]];
        let m = score(Objective::Regression, &pred, &values);
        assert_eq!(m.accuracy, None);
        assert!((m.rmse.unwrap() - (1.25f64 / 2.0).sqrt()).abs() < 1e-12);
        assert!((m.mae.unwrap() - 0.75).abs() < 1e-12);
        // SST = 0.5, SSE = 1.25.
        assert!((m.r2.unwrap() - (1.0 - 1.25 / 0.5)).abs() < 1e-12);
        assert!(
            score(Objective::Regression, &pred, &array![])
                .rmse
                .is_none()
        );
    }
}
