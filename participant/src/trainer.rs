//! Local training behind one trait: given the global model and the site's
//! data, produce the locally trained parameters (and, for federated
//! evaluation, the model's outputs on held-out rows). The built-in ndarray
//! models are one [`Trainer`]; an external command (a hospital's own script,
//! [`crate::external`]) is another. What leaves the site is decided
//! elsewhere: the site takes Δ = local − global, clips and encodes it
//! ([`crate::site`]).

use ndarray::Array2;
use tessera_model::{Dataset, Preprocessor, TaskSpec, TrainConfig, TrainingSettings};

/// Why local training (or prediction) produced nothing. The detail stays in
/// the site's log; the site then contributes a zero vector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The global model does not fit the task's model.
    #[error("the global model does not load: {0}")]
    Model(#[from] tessera_model::ModelError),
    /// The trainer failed (an external program, a numerical failure).
    #[error("local training failed: {0}")]
    Failed(String),
}

/// One local training job: everything a trainer gets.
#[derive(Debug, Clone, Copy)]
pub struct TrainJob<'a> {
    /// The federation's task.
    pub task: &'a TaskSpec,
    /// The pooled preprocessing.
    pub pre: &'a Preprocessor,
    /// The site's rows (raw features; targets as the task reads them).
    pub data: &'a Dataset,
    /// The global model's flat parameters (laid out as the task's tensors).
    pub global: &'a [f32],
    /// The announced training settings.
    pub settings: &'a TrainingSettings,
    /// The training round (1-based).
    pub round: u32,
}

/// Trains a task's model locally.
pub trait Trainer: Send {
    /// The locally trained parameters, starting from `job.global`, on the
    /// site's data transformed by the pooled preprocessing. Must return a
    /// vector of `job.global.len()` values.
    fn train(&mut self, job: &TrainJob<'_>) -> Result<Vec<f32>, TrainError>;

    /// The model's outputs for each of `data`'s rows under the pooled
    /// preprocessing (rows × outputs: probabilities for classification, the
    /// prediction in standardised units for a regression with a target
    /// scale). By default the built-in model computes them.
    fn predict(
        &mut self,
        task: &TaskSpec,
        pre: &Preprocessor,
        data: &Dataset,
        global: &[f32],
    ) -> Result<Array2<f64>, TrainError> {
        builtin_predict(task, pre, data, global)
    }
}

/// The outputs of the built-in model of `task` with parameters `global`.
pub fn builtin_predict(
    task: &TaskSpec,
    pre: &Preprocessor,
    data: &Dataset,
    global: &[f32],
) -> Result<Array2<f64>, TrainError> {
    let mut model = tessera_model::build_model(task.model, task.objective(), pre.output_dim())?;
    model.set_params(global)?;
    Ok(model.predict(&pre.transform(&data.x)))
}

/// The built-in models of `tessera-model` (logistic, softmax and linear
/// regression, MLPs), trained with minibatch SGD.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinTrainer;

impl Trainer for BuiltinTrainer {
    fn train(&mut self, job: &TrainJob<'_>) -> Result<Vec<f32>, TrainError> {
        let (task, pre, settings) = (job.task, job.pre, job.settings);
        let x = pre.transform(&job.data.x);
        let y = pre.transform_target(&job.data.y);
        let mut model = tessera_model::build_model(task.model, task.objective(), pre.output_dim())?;
        model.set_params(job.global)?;
        let cfg = TrainConfig {
            epochs: settings.local_epochs.max(1),
            learning_rate: settings.learning_rate,
            batch_size: settings.batch_size as usize,
            seed: settings.shuffle_seed,
            weight_decay: settings.weight_decay,
        };
        let report = model.train(&x, &y, &cfg);
        tracing::debug!(steps = report.steps, "local training done");
        Ok(model.params().to_vec())
    }
}
