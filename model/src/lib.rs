//! The learning task of a Tessera federation, shared by coordinator and participants.
//!
//! Everything here is pure computation (reading and writing local files is the only I/O):
//!
//! - [`task`]: what is learned — model kind, feature columns, label column and the rule
//!   that turns a label value into the positive class.
//! - [`data`]: loading a site's CSV export into a [`Dataset`] (missing markers become `NaN`,
//!   rows without a label are skipped and counted).
//! - [`stats`]: the federated-statistics step. Each site computes [`LocalStats`] (counts, sums,
//!   sums of squares, missing counts per feature) as one flat vector; the vectors are summed
//!   across sites (plainly, or through secure aggregation with noise), and every site builds
//!   the same [`Preprocessor`] from the pooled sum. [`StatsBounds`] bounds each site's
//!   contribution so that a differentially private sum has a known L2 sensitivity.
//! - [`model`], [`logistic`] and [`mlp`]: built-in models (logistic regression, a
//!   one-hidden-layer perceptron) behind the [`Model`] trait, with flat `f32` parameter
//!   vectors so that updates can be clipped, encoded and summed; [`initial_params`] gives a
//!   federation's starting model.
//! - [`model_file`]: the safetensors model file (parameters, preprocessing, task, round),
//!   written atomically, and [`evaluate`].
//! - [`split`]: seeded, stratified holdout and IID dealing of rows, used by simulations and
//!   by the tests so that every run holds out the same test rows for a seed.
//!
//! ```
//! use tessera_model::{LabelRule, ModelKind, TaskSpec};
//! let task = TaskSpec {
//!     model: ModelKind::Logistic,
//!     features: vec!["age".into(), "chol".into()],
//!     label: "num".into(),
//!     positive: "> 0".parse().unwrap(),
//! };
//! assert_eq!(task.positive, LabelRule::GreaterThan(0.0));
//! assert_eq!(task.positive.to_string(), "> 0");
//! ```

pub mod data;
pub mod logistic;
pub mod mlp;
pub mod model;
pub mod model_file;
pub mod round;
pub mod split;
pub mod stats;
pub mod task;

pub use data::{
    DataError, Dataset, RawTable, load_csv, load_csv_from_reader, read_header, read_raw_csv,
    write_raw_csv,
};
pub use logistic::LogisticRegression;
pub use mlp::MlpClassifier;
pub use model::{
    Metrics, Model, ModelError, Objective, TrainConfig, TrainReport, build_model, initial_params,
    score,
};
pub use model_file::{Evaluation, ModelFile, evaluate, read_model, write_model};
pub use round::{Announcement, Encoding, PrivacyTerms, RoundKind, TrainingSettings};
pub use stats::{LocalStats, Preprocessor, StatsBounds, l2_sensitivity};
pub use task::{LabelRule, ModelKind, TaskError, TaskSpec};
