//! The learning options of `tessera-sim run`: the task's kind (inferred from
//! the label column unless `--task` says it), the server optimizer, weight
//! decay, federated evaluation, an external trainer and an initial model; and
//! the per-site held-out files federated evaluation reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tessera_model::{LabelRule, ModelKind, TaskKind, TaskSpec};

use crate::launch::LearningPlan;
use crate::partition::{self, Partitioned, Split};

/// What a task predicts, as `--task` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskArg {
    /// Two classes (`--positive` names the positive one).
    Binary,
    /// Several classes (`--classes` fixes their order; default: sorted).
    Multiclass,
    /// A numeric target.
    Regression,
}

/// Learning options of `tessera-sim run`.
#[derive(Debug, Clone, clap::Args)]
pub struct LearningArgs {
    /// The task: binary, multiclass or regression (default: inferred from the
    /// label column — two values or `--positive`: binary; more than two
    /// non-numeric values: multiclass; numbers: binary `> 0` when they are
    /// integers with at most 20 distinct values, as before tasks had kinds,
    /// else regression).
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Multi-class tasks: the classes in index order, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Regression tasks: train on the target as it is, not standardised.
    #[arg(long)]
    pub raw_target: bool,
    /// Server optimizer: fedavg, fedavgm, fedadagrad, fedadam or fedyogi.
    #[arg(long, default_value = "fedavg")]
    pub server_optimizer: String,
    /// Server learning rate (default 1; the adaptive optimizers want far less, e.g. 0.05).
    #[arg(long)]
    pub server_learning_rate: Option<f64>,
    /// Server momentum of fedavgm.
    #[arg(long, default_value_t = 0.9)]
    pub server_momentum: f64,
    /// τ of the adaptive server optimizers.
    #[arg(long, default_value_t = 1e-3)]
    pub server_tau: f64,
    /// L2 weight decay of local training.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Monotone constraints from public knowledge, comma-separated
    /// feature=direction pairs: increasing (+) or decreasing (-), e.g.
    /// `age=+,thalach=-`. The coordinator keeps each weight's sign by
    /// projection (post-processing: no privacy cost); logistic and linear
    /// models only.
    #[arg(long, value_delimiter = ',')]
    pub monotone: Vec<String>,
    /// Federated evaluation every this many rounds and after the last, on each
    /// site's held-out rows (its share of the pooled test split); 0: never.
    #[arg(long, default_value_t = 0)]
    pub evaluate_every: u32,
    /// With DP: noise multiplier of the evaluation sums (their ε is accounted).
    #[arg(long, default_value_t = 5.0)]
    pub evaluation_noise_multiplier: f64,
    /// Most rows one site's evaluation sums count, the bound their noise is
    /// scaled to (default: the largest site's held-out rows, which the
    /// simulation chooses; a real federation sets a public bound).
    #[arg(long)]
    pub evaluation_max_rows: Option<f64>,
    /// Train with an external command instead of the built-in models, e.g.
    /// "python3 examples/trainers/numpy/train.py" (split at spaces).
    #[arg(long)]
    pub trainer: Option<String>,
    /// Seconds an external trainer may run per job.
    #[arg(long, default_value_t = 600.0)]
    pub trainer_timeout: f64,
    /// The federation's initial model (a safetensors file; needed by `--model external`).
    #[arg(long)]
    pub initial_model: Option<PathBuf>,
}

impl Default for LearningArgs {
    /// The command line's defaults: inferred task, FedAvg, no evaluation.
    fn default() -> Self {
        Self {
            task: None,
            classes: None,
            raw_target: false,
            server_optimizer: "fedavg".into(),
            server_learning_rate: None,
            server_momentum: 0.9,
            server_tau: 1e-3,
            weight_decay: 0.0,
            monotone: Vec::new(),
            evaluate_every: 0,
            evaluation_noise_multiplier: 5.0,
            evaluation_max_rows: None,
            trainer: None,
            trainer_timeout: 600.0,
            initial_model: None,
        }
    }
}

impl LearningArgs {
    /// The launch plan of these options (the per-site evaluation files are
    /// added when the data is written).
    pub fn plan(&self) -> anyhow::Result<LearningPlan> {
        if !tessera_coordinator::round::optimizer::NAMES.contains(&self.server_optimizer.as_str()) {
            bail!(
                "--server-optimizer {}: known are {}",
                self.server_optimizer,
                tessera_coordinator::round::optimizer::NAMES.join(", ")
            );
        }
        let trainer = match &self.trainer {
            Some(t) => {
                let words: Vec<String> = t.split_whitespace().map(str::to_owned).collect();
                if words.is_empty() {
                    bail!("--trainer names no command");
                }
                Some(words)
            }
            None => None,
        };
        let monotone = tessera_model::monotone::parse_pairs(&self.monotone)
            .map_err(|e| anyhow::anyhow!("--monotone: {e}"))?;
        Ok(LearningPlan {
            server_optimizer: self.server_optimizer.clone(),
            server_momentum: self.server_momentum,
            server_tau: self.server_tau,
            weight_decay: self.weight_decay,
            monotone,
            evaluate_every: self.evaluate_every,
            evaluation_noise_multiplier: self.evaluation_noise_multiplier,
            evaluation_data: BTreeMap::new(),
            evaluation_max_rows: self.evaluation_max_rows,
            trainer,
            trainer_timeout_seconds: self.trainer_timeout,
            initial_model: self.initial_model.clone(),
        })
    }

    /// The task for `label` of the data in `path`: its kind (from `--task`, or
    /// inferred), `positive` for a binary task, the model (`--model`, else the
    /// kind's linear model).
    pub fn task(
        &self,
        path: &Path,
        label: &str,
        positive: Option<&str>,
        model: Option<&str>,
        features: Vec<String>,
    ) -> anyhow::Result<TaskSpec> {
        let values = label_values(path, label)?;
        let numeric = values.iter().all(|v| v.parse::<f64>().is_ok());
        let integers = numeric
            && values
                .iter()
                .all(|v| v.parse::<f64>().is_ok_and(|x| x.fract() == 0.0));
        let arg = match (self.task, positive, &self.classes) {
            (Some(t), _, _) => t,
            (None, Some(_), _) => TaskArg::Binary,
            (None, None, Some(_)) => TaskArg::Multiclass,
            (None, None, None) if !numeric && values.len() > 2 => TaskArg::Multiclass,
            (None, None, None) if !numeric || (integers && values.len() <= 20) => TaskArg::Binary,
            (None, None, None) => TaskArg::Regression,
        };
        let kind = match arg {
            TaskArg::Binary => TaskKind::Binary {
                positive: match positive {
                    Some(p) => p.parse().map_err(|e| anyhow::anyhow!("--positive: {e}"))?,
                    None => default_positive(&values, label)?,
                },
            },
            TaskArg::Multiclass => TaskKind::Multiclass {
                classes: match &self.classes {
                    Some(c) => c.iter().map(|x| x.trim().to_owned()).collect(),
                    None => sorted_classes(values, numeric),
                },
            },
            TaskArg::Regression => {
                if !numeric {
                    bail!("--task regression: label `{label}` has values that are not numbers");
                }
                TaskKind::Regression {
                    standardize: !self.raw_target,
                }
            }
        };
        let model: ModelKind = match model {
            Some(m) => m.parse().map_err(|e| anyhow::anyhow!("--model: {e}"))?,
            None => match kind {
                TaskKind::Binary { .. } => ModelKind::Logistic,
                TaskKind::Multiclass { .. } => ModelKind::Softmax,
                TaskKind::Regression { .. } => ModelKind::Linear,
            },
        };
        let mut task = TaskSpec {
            model,
            features,
            label: label.to_owned(),
            kind,
            tensors: Vec::new(),
        };
        if model == ModelKind::External {
            let path = self
                .initial_model
                .as_ref()
                .context("--model external needs --initial-model")?;
            if self.evaluate_every == 0 {
                bail!(
                    "an external model is scored by federated evaluation (the simulation \
                     cannot run it on the pooled test rows): add --evaluate-every K"
                );
            }
            task.tensors = tessera_model::tensors::read_layout(path)
                .with_context(|| format!("--initial-model {}", path.display()))?
                .0;
        }
        task.validate()
            .map_err(|e| anyhow::anyhow!("the task: {e}"))?;
        Ok(task)
    }
}

/// The distinct (trimmed, non-missing) values of the label column.
fn label_values(path: &Path, label: &str) -> anyhow::Result<BTreeSet<String>> {
    let table = partition::read_table(path)?;
    let col = table.column(label, path)?;
    Ok(table
        .rows
        .iter()
        .map(|r| r[col].trim().to_owned())
        .filter(|v| !tessera_model::data::is_missing(v))
        .collect())
}

/// The positive class of a binary task when not given: `> 0` for numbers,
/// else the last of the two values in sort order.
fn default_positive(values: &BTreeSet<String>, label: &str) -> anyhow::Result<LabelRule> {
    if values.iter().all(|c| c.parse::<f64>().is_ok()) {
        return Ok(LabelRule::GreaterThan(0.0));
    }
    let v: Vec<&String> = values.iter().collect();
    match v.as_slice() {
        [_, b] => Ok(LabelRule::Equals((*b).clone())),
        _ => bail!(
            "label `{label}` has {} classes ({}); name the positive one with --positive, or use --task multiclass",
            v.len(),
            v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Class values in a fixed order: numerically for numbers, else as text.
fn sorted_classes(values: BTreeSet<String>, numeric: bool) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().collect();
    if numeric {
        v.sort_by(|a, b| {
            a.parse::<f64>()
                .unwrap_or(0.0)
                .total_cmp(&b.parse::<f64>().unwrap_or(0.0))
        });
        v.dedup_by(|a, b| tessera_model::task::same_label(a, b));
    }
    v
}

/// The columns a simulation derives public ranges for: the features, and a
/// regression's label (for its standardisation and evaluation under DP).
pub fn range_columns(task: &TaskSpec) -> Vec<String> {
    let mut c = task.features.clone();
    if matches!(task.kind, TaskKind::Regression { .. }) {
        c.push(task.label.clone());
    }
    c
}

/// Writes each site's held-out rows (its share of the pooled test split) to
/// `dir/<site>.csv`: for a natural partition the rows held out of its own
/// file, for an IID one the test rows dealt like the training rows. Returns
/// the files by site and the most rows any site holds out.
pub fn write_evaluation_files(
    data: &Partitioned,
    split: &Split,
    iid: bool,
    label: &str,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<(BTreeMap<String, PathBuf>, usize)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shares: Vec<Vec<partition::Row>> = if iid {
        let col = data
            .header
            .iter()
            .position(|h| h == label)
            .context("the label column")?;
        partition::partition_iid(&data.test, col, data.sites.len(), seed ^ 0x6576_616c)
    } else {
        let mut at = 0;
        data.sites
            .iter()
            .map(|s| {
                let rows = data.test[at..at + s.held_out].to_vec();
                at += s.held_out;
                rows
            })
            .collect()
    };
    let mut out = BTreeMap::new();
    let largest = shares.iter().map(Vec::len).max().unwrap_or(0);
    for (site, rows) in split.sites.iter().zip(shares) {
        let path = dir.join(format!("{}.csv", site.name));
        tessera_model::write_raw_csv(&path, &data.header, &rows)?;
        out.insert(site.name.clone(), path);
    }
    Ok((out, largest))
}

/// The columns `metrics.csv` gains: the pooled test regression scores and the
/// federated evaluation's global metrics (`fed_…`, on the rounds evaluated).
pub const METRICS_COLUMNS: [&str; 10] = [
    "rmse",
    "mae",
    "r2",
    "fed_accuracy",
    "fed_balanced_accuracy",
    "fed_log_loss",
    "fed_auc",
    "fed_rmse",
    "fed_mae",
    "fed_r2",
];

/// The cells of [`METRICS_COLUMNS`] for one round.
pub fn metrics_cells(h: &crate::experiment::RoundMetrics) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let r = h.regression;
    let e = h.federated.clone().unwrap_or_default();
    [
        f(r.map(|r| r.rmse)),
        f(r.map(|r| r.mae)),
        f(r.map(|r| r.r2)),
        f(e.accuracy),
        f(e.balanced_accuracy),
        f(e.log_loss),
        f(e.auc),
        f(e.rmse),
        f(e.mae),
        f(e.r2),
    ]
    .join(",")
}

/// Adds to each round of `history` the federated evaluation of its model, read
/// from the coordinator's `rounds.csv` (its released evaluation rounds).
pub fn attach_federated(history: &mut Vec<crate::experiment::RoundMetrics>, rounds_csv: &Path) {
    let Ok(text) = std::fs::read_to_string(rounds_csv) else {
        return;
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return;
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(kind), Some(status), Some(round)) = (at("kind"), at("status"), at("training_round"))
    else {
        return;
    };
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.get(kind) != Some(&"evaluation") || cells.get(status) != Some(&"released") {
            continue;
        }
        let get = |name: &str| {
            at(name)
                .and_then(|i| cells.get(i))
                .and_then(|c| c.parse::<f64>().ok())
        };
        let Some(t) = cells.get(round).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        let metrics = tessera_model::EvalMetrics {
            rows: get("eval_rows").unwrap_or(0.0),
            accuracy: get("eval_accuracy"),
            balanced_accuracy: get("eval_balanced_accuracy"),
            log_loss: get("eval_log_loss"),
            recall: Vec::new(),
            auc: get("eval_auc"),
            mse: get("eval_rmse").map(|r| r * r),
            rmse: get("eval_rmse"),
            mae: get("eval_mae"),
            r2: get("eval_r2"),
        };
        match history.iter_mut().find(|h| h.round == t) {
            Some(h) => h.federated = Some(metrics),
            // A model the simulation cannot score itself (an external one):
            // the round is known by its federated evaluation alone.
            None => history.push(crate::experiment::RoundMetrics {
                round: t,
                accuracy: metrics.accuracy.unwrap_or(f64::NAN),
                loss: metrics.log_loss.or(metrics.mse).unwrap_or(f64::NAN),
                epsilon: None,
                seconds: 0.0,
                regression: None,
                federated: Some(metrics),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(
        label_values: &str,
        args: &LearningArgs,
        positive: Option<&str>,
    ) -> anyhow::Result<TaskSpec> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        let rows: String = label_values
            .split(' ')
            .map(|v| format!("1,{v}\n"))
            .collect();
        std::fs::write(&path, format!("x,y\n{rows}")).unwrap();
        args.task(&path, "y", positive, None, vec!["x".into()])
    }

    #[test]
    fn the_task_is_inferred_from_the_label() {
        let a = LearningArgs::default();
        let t = infer("B M B", &a, None).unwrap();
        assert_eq!(t.positive(), Some(&LabelRule::Equals("M".into())));
        let t = infer("setosa virginica versicolor", &a, None).unwrap();
        assert_eq!(t.model, ModelKind::Softmax);
        assert_eq!(
            t.kind,
            TaskKind::Multiclass {
                classes: vec!["setosa".into(), "versicolor".into(), "virginica".into()]
            }
        );
        // Integer labels stay binary `> 0`, as before tasks had kinds.
        let t = infer("0 1 2 3 4", &a, None).unwrap();
        assert_eq!(t.positive(), Some(&LabelRule::GreaterThan(0.0)));
        let t = infer("151 75.5 141 206", &a, None).unwrap();
        assert_eq!(t.kind, TaskKind::Regression { standardize: true });
        assert_eq!(t.model, ModelKind::Linear);
        // --task says it.
        let multi = LearningArgs {
            task: Some(TaskArg::Multiclass),
            ..LearningArgs::default()
        };
        let t = infer("10 2 1 2.0", &multi, None).unwrap();
        assert_eq!(
            t.kind,
            TaskKind::Multiclass {
                classes: vec!["1".into(), "2".into(), "10".into()]
            }
        );
        let reg = LearningArgs {
            task: Some(TaskArg::Regression),
            ..LearningArgs::default()
        };
        assert!(infer("a b", &reg, None).is_err());
        assert!(
            infer(
                "a b c",
                &LearningArgs {
                    task: Some(TaskArg::Binary),
                    ..LearningArgs::default()
                },
                None
            )
            .is_err()
        );
    }
}
