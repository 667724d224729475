//! Local training behind one trait: given the global model and the site's
//! data, produce the locally trained parameters. The built-in ndarray
//! models are one [`Trainer`]; an external trainer (a hospital's own
//! script) is another. What leaves the site is decided elsewhere: the site
//! takes Δ = local − global, clips and encodes it ([`crate::site`]).

use tessera_model::{Dataset, Preprocessor, TaskSpec, TrainConfig, TrainingSettings};

/// Why local training produced no parameters. The detail stays in the
/// site's log; the site then contributes a zero vector.
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

/// Trains a task's model locally.
pub trait Trainer: Send {
    /// The locally trained parameters, starting from `global`, on `data`
    /// transformed by `pre`, with the announced `settings`. Must return a
    /// vector of `global.len()` values.
    fn train(
        &mut self,
        task: &TaskSpec,
        pre: &Preprocessor,
        data: &Dataset,
        global: &[f32],
        settings: &TrainingSettings,
    ) -> Result<Vec<f32>, TrainError>;
}

/// The built-in models of `tessera-model` (logistic regression, MLP),
/// trained with minibatch SGD.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinTrainer;

impl Trainer for BuiltinTrainer {
    fn train(
        &mut self,
        task: &TaskSpec,
        pre: &Preprocessor,
        data: &Dataset,
        global: &[f32],
        settings: &TrainingSettings,
    ) -> Result<Vec<f32>, TrainError> {
        let x = pre.transform(&data.x);
        let mut model = tessera_model::build_model(task.model, pre.output_dim());
        model.set_params(global)?;
        let cfg = TrainConfig {
            epochs: settings.local_epochs.max(1),
            learning_rate: settings.learning_rate,
            batch_size: settings.batch_size as usize,
            seed: settings.shuffle_seed,
        };
        let report = model.train(&x, &data.y, &cfg);
        tracing::debug!(steps = report.steps, "local training done");
        Ok(model.params().to_vec())
    }
}
