//! The learning task of a Tessera federation, shared by coordinator and participants.
//!
//! Everything here is pure computation (reading and writing local files is the only I/O):
//!
//! - [`task`]: what is learned — the task's kind (binary, multi-class, regression), the
//!   model ([`kind`]), feature columns, label column, and how a label cell becomes a target.
//! - [`data`]: loading a site's CSV export into a [`Dataset`] (missing markers become `NaN`,
//!   rows without a label are skipped and counted).
//! - [`stats`]: the federated-statistics step. Each site computes [`LocalStats`] (counts, sums,
//!   sums of squares, missing counts per feature) as one flat vector; the vectors are summed
//!   across sites (plainly, or through secure aggregation with noise), and every site builds
//!   the same [`Preprocessor`] from the pooled sum. [`StatsBounds`] bounds each site's
//!   contribution so that a differentially private sum has a known L2 sensitivity.
//! - [`model`], [`logistic`], [`linear`] and [`mlp`]: built-in models (logistic, softmax
//!   and linear regression, a multi-layer perceptron) behind the [`Model`] trait, with flat
//!   `f32` parameter vectors so that updates can be clipped, encoded and summed;
//!   [`initial_params`] gives a federation's starting model, [`layout`] names the tensors
//!   of the flat vector.
//! - [`monotone`]: public monotone constraints on a linear model's feature effects, kept
//!   by projecting the released model (post-processing, no privacy cost).
//! - [`model_file`]: the safetensors model file (named tensors, preprocessing, task,
//!   round), written atomically, and [`evaluate`]; [`tensors`] reads and checks named
//!   tensors written by anyone (an external trainer, an initial model).
//! - [`evaluation`]: federated evaluation — what a site sums for its held-out rows, with
//!   a per-site bound, and the global metrics of the sum.
//! - [`split`]: seeded, stratified holdout and IID dealing of rows, used by simulations and
//!   by the tests so that every run holds out the same test rows for a seed.
//!
//! ```
//! use tessera_model::{LabelRule, ModelKind, TaskKind, TaskSpec};
//! let task = TaskSpec::binary(
//!     ModelKind::Logistic,
//!     vec!["age".into(), "chol".into()],
//!     "num",
//!     "> 0".parse().unwrap(),
//! );
//! assert_eq!(task.positive(), Some(&LabelRule::GreaterThan(0.0)));
//! let iris = TaskSpec {
//!     model: "mlp:16,8".parse().unwrap(),
//!     kind: TaskKind::Multiclass {
//!         classes: vec!["setosa".into(), "versicolor".into(), "virginica".into()],
//!     },
//!     ..task
//! };
//! assert_eq!(iris.num_params(2), 16 * 3 + 8 * 17 + 3 * 9);
//! ```

pub mod data;
pub mod evaluation;
pub mod kind;
pub mod layout;
pub mod linear;
pub mod logistic;
pub mod mlp;
pub mod model;
pub mod model_file;
pub mod monotone;
pub mod round;
pub mod split;
pub mod stats;
pub mod task;
pub mod tensors;

pub use data::{
    DataError, Dataset, RawTable, load_csv, load_csv_from_reader, read_header, read_raw_csv,
    write_raw_csv,
};
pub use evaluation::{EvalLayout, EvalMetrics, EvalTerms};
pub use layout::TensorSpec;
pub use linear::LinearModel;
pub use logistic::LogisticRegression;
pub use mlp::Mlp;
pub use model::{
    Metrics, Model, ModelError, Objective, TrainConfig, TrainReport, build_model, initial_params,
    score,
};
pub use model_file::{Evaluation, ModelFile, RegressionScores, evaluate, read_model, write_model};
pub use monotone::{Direction, Monotone, MonotoneError};
pub use round::{
    AnalyticsTerms, Announcement, Encoding, Placement, PrivacyTerms, RoundKind, TrainingSettings,
};
pub use stats::{LocalStats, Preprocessor, StatsBounds, TargetScale, l2_sensitivity};
pub use task::{Hidden, LabelRule, ModelKind, TaskError, TaskKind, TaskSpec};
