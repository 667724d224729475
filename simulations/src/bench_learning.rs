//! `tessera-sim bench mlp` and `bench trainer`: seconds per training round of
//! real federations (separate processes, loopback mutual TLS, secure
//! aggregation, no differential privacy) for the learning layer: a
//! multi-class MLP over many sites, and the built-in trainer against an
//! external trainer command.
//!
//! Both run the federation of `tessera-sim run` ([`experiment`]) and read
//! each released training round's `seconds` from the coordinator's
//! `rounds.csv` (from the round's announcement until the sum is recovered
//! and decoded: model download, local training, secure aggregation,
//! decoding). The median over the rounds is reported, so process start-up,
//! PKI and the statistics round stay out of it.
//!
//! The external trainers of `bench trainer` are run by every participant
//! once per round, as a deployment would: the participant writes the global
//! model to a safetensors file, starts the command, waits for it, and reads,
//! checks and clips the model it wrote. The *copy* trainer (`sh -c 'cp …'`)
//! does no training at all (its update is zero), so its rounds against the
//! built-in ones isolate the protocol's overhead: process start, one
//! safetensors write and one read. The NumPy example trainer
//! (`examples/trainers/numpy/train.py`) adds Python's start-up and the
//! training itself; it runs when `--python` can import numpy and safetensors.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::bench_round::read_rounds_csv;
use crate::bundled_data;
use crate::experiment::{self, LearningArgs, Partition, PrivacyArgs, RunArgs};
use crate::learning::TaskArg;

/// Options of `tessera-sim bench mlp`.
#[derive(clap::Args, Debug, Clone)]
pub struct MlpBenchArgs {
    /// Participant processes.
    #[arg(long, default_value_t = 10)]
    pub participants: usize,
    /// Training rounds (the median over them is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The model.
    #[arg(long, default_value = "mlp:64,32")]
    pub model: String,
    /// Multi-class CSV data dealt IID over the participants (default: the
    /// bundled iris data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Label column of `--data` (default: `species`).
    #[arg(long)]
    pub label: Option<String>,
    /// Keep everything in this directory (default: a temporary one, removed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as one JSON object (last line of the output).
    #[arg(long)]
    pub json: bool,
}

/// Options of `tessera-sim bench trainer`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainerBenchArgs {
    /// Participant processes.
    #[arg(long, default_value_t = 4)]
    pub participants: usize,
    /// Training rounds of each federation (the median over them is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Python interpreter for the NumPy example trainer (skipped when it
    /// cannot import numpy and safetensors).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Keep everything in this directory (default: a temporary one, removed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as one JSON object (last line of the output).
    #[arg(long)]
    pub json: bool,
}

/// Seconds of the training rounds of one federation.
#[derive(Serialize, Debug, Clone)]
pub struct RoundTimes {
    /// What was run (`built-in`, `copy`, `numpy`, or the model).
    pub name: String,
    /// Seconds of every released training round, in round order.
    pub seconds: Vec<f64>,
    /// Their median.
    pub median_seconds: f64,
    /// Pooled test accuracy of the final model.
    pub final_accuracy: f64,
}

/// What `bench mlp` measured.
#[derive(Serialize, Debug, Clone)]
pub struct MlpBenchReport {
    /// Participant processes.
    pub participants: usize,
    /// Parameters of the model.
    pub params: usize,
    /// The training rounds.
    pub rounds: RoundTimes,
}

/// What `bench trainer` measured.
#[derive(Serialize, Debug, Clone)]
pub struct TrainerBenchReport {
    /// Participant processes.
    pub participants: usize,
    /// One entry per trainer: built-in first, then the external ones.
    pub trainers: Vec<RoundTimes>,
    /// Why the NumPy trainer was left out, if it was.
    pub numpy_skipped: Option<String>,
}

/// Runs `bench mlp`.
pub fn run_mlp(args: &MlpBenchArgs) -> anyhow::Result<MlpBenchReport> {
    let (tmp, dir) = out_dir(args.out.as_deref())?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| bundled_data().join("iris.csv"));
    let label = args.label.clone().unwrap_or_else(|| "species".into());
    let mut run = base_args(vec![data], &label, args.rounds, dir.join("mlp"));
    run.participants = Some(args.participants);
    run.partition = Some(Partition::Iid);
    run.model = Some(args.model.clone());
    run.learning.task = Some(TaskArg::Multiclass);
    let times = run_federation(&args.model, run, None)?;
    let model = tessera_model::read_model(&dir.join("mlp/coordinator/model.safetensors"))?;
    drop(tmp);
    Ok(MlpBenchReport {
        participants: args.participants,
        params: model.params.len(),
        rounds: times,
    })
}

/// Runs `bench trainer`.
pub fn run_trainer(args: &TrainerBenchArgs) -> anyhow::Result<TrainerBenchReport> {
    let (tmp, dir) = out_dir(args.out.as_deref())?;
    let heart = bundled_data().join("heart_disease");
    let federation = |name: &str, trainer: Option<Vec<String>>| {
        let mut run = base_args(
            ["cleveland", "hungary", "switzerland", "va_long_beach"]
                .iter()
                .map(|h| heart.join(format!("{h}.csv")))
                .collect(),
            "num",
            args.rounds,
            dir.join(name),
        );
        // The bundled hospitals are four sites; more participants deal the
        // pooled rows of the first file IID instead.
        if args.participants != 4 {
            run.data.truncate(1);
            run.participants = Some(args.participants);
            run.partition = Some(Partition::Iid);
        }
        run.positive = Some("> 0".into());
        run.model = Some("logistic".into());
        run_federation(name, run, trainer)
    };
    let mut trainers = vec![federation("built-in", None)?];
    let copy = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        r#"cp "$TESSERA_MODEL_IN" "$TESSERA_MODEL_OUT""#.to_owned(),
    ];
    trainers.push(federation("copy", Some(copy))?);
    let numpy_skipped = match python_has_numpy(&args.python) {
        Ok(()) => {
            let script = bundled_data().join("../examples/trainers/numpy/train.py");
            let script = script
                .canonicalize()
                .with_context(|| format!("locating {}", script.display()))?;
            let command = vec![args.python.clone(), script.to_string_lossy().into_owned()];
            trainers.push(federation("numpy", Some(command))?);
            None
        }
        Err(why) => Some(why),
    };
    drop(tmp);
    Ok(TrainerBenchReport {
        participants: args.participants,
        trainers,
        numpy_skipped,
    })
}

/// The run of a benchmark: no privacy, data and initial model seeded by 1,
/// the command line's other defaults.
fn base_args(data: Vec<PathBuf>, label: &str, rounds: u32, out: PathBuf) -> RunArgs {
    RunArgs {
        out: Some(out),
        data,
        label: label.to_owned(),
        positive: None,
        participants: None,
        partition: None,
        rounds,
        model: None,
        seed: 1,
        local_epochs: None,
        learning_rate: None,
        batch_size: 16,
        average_last: None,
        min_participants: None,
        privacy: PrivacyArgs::default(),
        learning: LearningArgs::default(),
        config: None,
        engine: crate::engine::Engine::Processes,
        dropout: None,
    }
}

/// Runs one federation, its sites training with `trainer` (None: the
/// built-in model), and reads its training rounds' seconds.
fn run_federation(
    name: &str,
    run: RunArgs,
    trainer: Option<Vec<String>>,
) -> anyhow::Result<RoundTimes> {
    let out = run.out.clone().expect("benchmarks set the directory");
    let mut spec = run.into_spec()?;
    // Set on the plan rather than through `--trainer`, which splits at spaces.
    spec.plan.learning.trainer = trainer;
    let summary = experiment::run(spec)?;
    let rounds = read_rounds_csv(&out.join("coordinator").join("rounds.csv"))?;
    let seconds: Vec<f64> = rounds
        .iter()
        .filter(|r| r.kind == "training" && r.status == "released")
        .map(|r| r.seconds)
        .collect();
    if seconds.is_empty() {
        bail!(
            "{name}: no training round was released; see {}",
            out.join("logs").display()
        );
    }
    Ok(RoundTimes {
        name: name.to_owned(),
        median_seconds: median(&seconds),
        seconds,
        final_accuracy: summary.final_accuracy,
    })
}

/// The median of a non-empty list.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// The benchmark's directory: `--out`, or a temporary one (the guard removes it).
fn out_dir(out: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match out {
        Some(o) => {
            std::fs::create_dir_all(o).with_context(|| format!("creating {}", o.display()))?;
            Ok((None, o.to_path_buf()))
        }
        None => {
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            let p = t.path().to_path_buf();
            Ok((Some(t), p))
        }
    }
}

/// Whether `python` can import numpy and safetensors (Err says why not).
fn python_has_numpy(python: &str) -> Result<(), String> {
    match Command::new(python)
        .args(["-c", "import numpy, safetensors.numpy"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{python} cannot import numpy and safetensors: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {python}: {e}")),
    }
}

/// Prints the `bench mlp` report.
pub fn print_mlp(r: &MlpBenchReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    println!();
    println!(
        "{} ({} parameters), {} sites, secure aggregation: {}; final pooled test accuracy {:.3}",
        r.rounds.name,
        r.params,
        r.participants,
        describe(&r.rounds),
        r.rounds.final_accuracy
    );
}

/// Prints the `bench trainer` report.
pub fn print_trainer(r: &TrainerBenchReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    println!();
    println!("seconds per training round, {} sites:", r.participants);
    let base = r.trainers[0].median_seconds;
    for t in &r.trainers {
        println!(
            "  {:<9} {} ({:.2}× built-in)",
            t.name,
            describe(t),
            t.median_seconds / base
        );
    }
    if let Some(why) = &r.numpy_skipped {
        println!("  numpy     skipped: {why}");
    }
}

fn describe(t: &RoundTimes) -> String {
    let all: Vec<String> = t.seconds.iter().map(|s| format!("{s:.3}")).collect();
    format!(
        "median {:.3} s per round (rounds: {})",
        t.median_seconds,
        all.join(", ")
    )
}
