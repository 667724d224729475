//! The external trainer: a site's own program (a PyTorch or NumPy script)
//! trains the model, through files and environment variables — protocol
//! `tessera-trainer/1`, documented in the README ("Bring your own trainer").
//!
//! For each job the participant makes a private directory, writes the
//! global model (`model_in.safetensors`: the task's tensors, `F32`, by
//! name), the site's rows already preprocessed (`data.csv`), the task
//! (`task.json`) and the pooled preprocessing (`preprocessing.json`), and runs
//! the command in its own process group with the `TESSERA_*` variables set.
//! It then checks what the command wrote — every tensor of the layout, by
//! name, `F32`, of its shape, finite, nothing else — before anything is
//! clipped, encoded and masked as usual. A command that exits non-zero, runs
//! past its timeout (its whole process group is killed), or writes a wrong,
//! missing or non-finite tensor is an error for the site's own log; the site
//! then contributes nothing of its data to that round ([`crate::site`]).
//! `TESSERA_METRICS_OUT`, if the command writes it, is logged locally and
//! never sent.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ndarray::Array2;
use safetensors::SafeTensors;
use tessera_model::{Dataset, Preprocessor, TaskKind, TaskSpec, TensorSpec};
use tracing::{info, warn};

use crate::trainer::{TrainError, TrainJob, Trainer};

/// The protocol version this participant speaks (`TESSERA_PROTOCOL`).
pub const PROTOCOL: u32 = 1;

/// Most bytes of `TESSERA_METRICS_OUT` read (and logged).
const MAX_METRICS_BYTES: u64 = 64 * 1024;

/// How often a running command is polled.
const POLL: Duration = Duration::from_millis(10);

/// A trainer that runs a command per job.
#[derive(Debug, Clone)]
pub struct ExternalTrainer {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Longest a job may run before its process group is killed.
    pub timeout: Duration,
    /// Where each job's private directory is made.
    pub work_dir: PathBuf,
}

/// What a job asks of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train,
    Predict,
}

impl ExternalTrainer {
    /// A trainer running `command` with `timeout`, its files under `work_dir`.
    pub fn new(command: Vec<String>, timeout: Duration, work_dir: PathBuf) -> Self {
        Self {
            command,
            timeout,
            work_dir,
        }
    }

    /// Writes the job's inputs to `dir`; returns the environment to run with.
    fn prepare(
        &self,
        dir: &Path,
        mode: Mode,
        task: &TaskSpec,
        pre: &Preprocessor,
        data: &Dataset,
        global: &[f32],
    ) -> Result<Vec<(&'static str, String)>, TrainError> {
        let layout = task.layout(pre.output_dim());
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let meta = HashMap::from([("format".to_string(), format!("tessera-trainer/{PROTOCOL}"))]);
        let bytes = tessera_model::tensors::to_safetensors(&layout, global, vec![], meta)
            .map_err(|e| failed(format!("writing the global model: {e}")))?;
        write(dir, "model_in.safetensors", &bytes)?;
        let inputs = input_names(pre, &task.features);
        write(dir, "data.csv", &data_csv(task, pre, data, &inputs)?)?;
        let task_json = task_json(task, pre, &inputs, &layout);
        write(dir, "task.json", task_json.to_string().as_bytes())?;
        let pre_json = serde_json::json!({
            "mean": pre.mean, "std": pre.std, "indicator": pre.indicator,
            "target": pre.target.map(|t| serde_json::json!({"mean": t.mean, "std": t.std})),
        });
        write(dir, "preprocessing.json", pre_json.to_string().as_bytes())?;
        Ok(vec![
            ("TESSERA_PROTOCOL", PROTOCOL.to_string()),
            (
                "TESSERA_MODE",
                match mode {
                    Mode::Train => "train",
                    Mode::Predict => "predict",
                }
                .into(),
            ),
            ("TESSERA_MODEL_IN", path("model_in.safetensors")),
            ("TESSERA_MODEL_OUT", path("model_out.safetensors")),
            ("TESSERA_PREDICTIONS_OUT", path("predictions.safetensors")),
            ("TESSERA_DATA", path("data.csv")),
            ("TESSERA_TASK", path("task.json")),
            ("TESSERA_PREPROCESSING", path("preprocessing.json")),
            ("TESSERA_METRICS_OUT", path("metrics.json")),
        ])
    }

    /// Runs the command with `env` in `dir` until it exits or times out.
    fn run(&self, dir: &Path, env: &[(&str, String)]) -> Result<(), TrainError> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| failed("the trainer command is empty".into()))?;
        let log = |name: &str| {
            std::fs::File::create(dir.join(name))
                .map_err(|e| failed(format!("creating the trainer's {name}: {e}")))
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("cannot start {program:?}: {e}")))?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    kill_group(&mut child);
                    return Err(failed(format!(
                        "the trainer ran past its timeout of {:?} and was stopped (its whole process group){}",
                        self.timeout,
                        tail(dir)
                    )));
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    kill_group(&mut child);
                    return Err(failed(format!("waiting for the trainer: {e}")));
                }
            }
        };
        if !status.success() {
            return Err(failed(format!(
                "the trainer exited with {status}{}",
                tail(dir)
            )));
        }
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "trainer finished"
        );
        Ok(())
    }

    /// Makes the job's private directory.
    fn job_dir(&self) -> Result<tempfile::TempDir, TrainError> {
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| failed(format!("creating {}: {e}", self.work_dir.display())))?;
        tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(&self.work_dir)
            .map_err(|e| {
                failed(format!(
                    "a directory under {}: {e}",
                    self.work_dir.display()
                ))
            })
    }
}

impl Trainer for ExternalTrainer {
    fn train(&mut self, job: &TrainJob<'_>) -> Result<Vec<f32>, TrainError> {
        let dir = self.job_dir()?;
        let mut env = self.prepare(
            dir.path(),
            Mode::Train,
            job.task,
            job.pre,
            job.data,
            job.global,
        )?;
        let s = job.settings;
        env.extend([
            ("TESSERA_ROUND", job.round.to_string()),
            ("TESSERA_SEED", s.shuffle_seed.to_string()),
            ("TESSERA_EPOCHS", s.local_epochs.max(1).to_string()),
            ("TESSERA_LEARNING_RATE", s.learning_rate.to_string()),
            ("TESSERA_BATCH_SIZE", s.batch_size.to_string()),
            ("TESSERA_WEIGHT_DECAY", s.weight_decay.to_string()),
        ]);
        self.run(dir.path(), &env)?;
        log_metrics(dir.path(), job.round);
        let layout = job.task.layout(job.pre.output_dim());
        let bytes = std::fs::read(dir.path().join("model_out.safetensors"))
            .map_err(|e| failed(format!("the trainer wrote no TESSERA_MODEL_OUT: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| failed(format!("TESSERA_MODEL_OUT is not a safetensors file: {e}")))?;
        tessera_model::tensors::from_safetensors(&st, &layout, |_| false)
            .map_err(|e| failed(format!("TESSERA_MODEL_OUT: {e}")))
    }

    fn predict(
        &mut self,
        task: &TaskSpec,
        pre: &Preprocessor,
        data: &Dataset,
        global: &[f32],
    ) -> Result<Array2<f64>, TrainError> {
        let dir = self.job_dir()?;
        let env = self.prepare(dir.path(), Mode::Predict, task, pre, data, global)?;
        self.run(dir.path(), &env)?;
        let k = task.objective().outputs();
        let expected = TensorSpec::new("predictions", &[data.n_rows(), k]);
        let bytes = std::fs::read(dir.path().join("predictions.safetensors"))
            .map_err(|e| failed(format!("the trainer wrote no TESSERA_PREDICTIONS_OUT: {e}")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            failed(format!(
                "TESSERA_PREDICTIONS_OUT is not a safetensors file: {e}"
            ))
        })?;
        let values = tessera_model::tensors::from_safetensors(&st, &[expected], |_| false)
            .map_err(|e| failed(format!("TESSERA_PREDICTIONS_OUT: {e}")))?;
        Array2::from_shape_vec(
            (data.n_rows(), k),
            values.into_iter().map(f64::from).collect(),
        )
        .map_err(|e| failed(format!("predictions: {e}")))
    }
}

fn failed(message: String) -> TrainError {
    TrainError::Failed(message)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TrainError> {
    std::fs::File::create(dir.join(name))
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| failed(format!("writing {name} for the trainer: {e}")))
}

/// Kills the child's whole process group (it leads one), then reaps it.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of the command's stderr, for the site's log.
fn tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines
        .get(lines.len().saturating_sub(12)..)
        .unwrap_or_default();
    if last.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends:\n{}", last.join("\n"))
    }
}

/// Logs what the command wrote to `TESSERA_METRICS_OUT` (local only).
fn log_metrics(dir: &Path, round: u32) {
    let path = dir.join("metrics.json");
    let Ok(meta) = std::fs::metadata(&path) else {
        return;
    };
    if meta.len() > MAX_METRICS_BYTES {
        warn!(
            round,
            bytes = meta.len(),
            "the trainer's metrics file is too large; not read"
        );
        return;
    }
    match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(v) => info!(round, metrics = %v, "trainer metrics (local only, never sent)"),
        None => warn!(round, "the trainer's metrics file is not JSON; ignored"),
    }
}

/// The model inputs' names: the features, then `<feature>_missing` for each
/// indicator column.
pub fn input_names(pre: &Preprocessor, features: &[String]) -> Vec<String> {
    let mut names = features.to_vec();
    names.extend(
        features
            .iter()
            .zip(&pre.indicator)
            .filter(|(_, i)| **i)
            .map(|(f, _)| format!("{f}_missing")),
    );
    names
}

/// The preprocessed rows as CSV: the inputs, then the target under the task's
/// label name (0/1, the class index, or the — standardised — value).
fn data_csv(
    task: &TaskSpec,
    pre: &Preprocessor,
    data: &Dataset,
    inputs: &[String],
) -> Result<Vec<u8>, TrainError> {
    let x = pre.transform(&data.x);
    let y = pre.transform_target(&data.y);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = inputs.to_vec();
    header.push(task.label.clone());
    let bad = |e: csv::Error| failed(format!("writing data.csv: {e}"));
    w.write_record(&header).map_err(bad)?;
    for (row, yi) in x.rows().into_iter().zip(&y) {
        let mut cells: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
        cells.push(format!("{yi:?}"));
        w.write_record(&cells).map_err(bad)?;
    }
    w.into_inner()
        .map_err(|e| failed(format!("writing data.csv: {e}")))
}

/// The task as the command reads it (`TESSERA_TASK`).
fn task_json(
    task: &TaskSpec,
    pre: &Preprocessor,
    inputs: &[String],
    layout: &[TensorSpec],
) -> serde_json::Value {
    let (classes, standardized) = match &task.kind {
        TaskKind::Multiclass { classes } => (Some(classes.clone()), false),
        TaskKind::Regression { .. } => (None, pre.target.is_some()),
        TaskKind::Binary { .. } => (None, false),
    };
    serde_json::json!({
        "protocol": PROTOCOL,
        "kind": task.kind.name(),
        "model": task.model.to_string(),
        "features": task.features,
        "inputs": inputs,
        "label": task.label,
        "classes": classes,
        "positive": task.positive().map(|p| p.to_string()),
        "outputs": task.objective().outputs(),
        "target_standardized": standardized,
        "tensors": layout,
    })
}

#[cfg(test)]
mod tests;
