//! `tessera-sim bench round`: one training round of a large model through a
//! real federation (separate coordinator and participant processes over
//! loopback mutual TLS), timed, with its payload on the wire and the peak
//! memory of each process.
//!
//! The model is the built-in one-hidden-layer MLP; its hidden width is the
//! smallest that gives at least `--params` parameters on the data's model
//! inputs (features plus missing-value indicators). The federation is the one
//! of `tessera-sim run` ([`experiment`]): an IID split of the data (bundled
//! breast-cancer data by default) over `--participants` sites, one statistics
//! round, then one training round of one local epoch, through secure
//! aggregation (at least 3 participants) or, with `--no-secagg`, plain sums
//! (then a single participant gives the two-process case).
//!
//! What is reported:
//! - the training round's wall time from the coordinator's
//!   `output_dir/rounds.csv` (`seconds`: from the round's announcement until
//!   the sum is recovered and decoded: model download, local training,
//!   secure aggregation, decoding), the same round from announcement to
//!   release (from the coordinator's store: adds the ledger commit and the
//!   checkpoint written and synced to disk), the statistics round's, and the
//!   whole run's (PKI, process start-up, both rounds, final model, evaluation);
//! - one site's local training alone (one epoch on its rows, same settings),
//!   timed in this process before the federation starts;
//! - the payload on the wire, computed from the parameter count: each
//!   participant downloads the model as `f32` (4 bytes a parameter) and
//!   uploads its masked (or, without secure aggregation, plain) fixed-point
//!   update as 32-bit words (training rounds use a 2³² modulus), both in
//!   chunks of at most 256 KiB; key and share messages are a few hundred bytes
//!   per neighbour and left out;
//! - peak resident memory: a thread reads `VmHWM` (the kernel's high-water
//!   mark of the resident set) from `/proc/<pid>/status` of every child
//!   process of this one every 50 ms while the federation runs, and keeps the
//!   last value read before the process ended. Processes are told apart by
//!   their configuration file (`coordinator.toml`, `participant.toml`). The
//!   figure misses only growth in the last 50 ms of a process's life (Linux
//!   only; elsewhere it is reported as unknown). The same readings give each
//!   process's CPU time (`utime + stime` from `/proc/<pid>/stat`) over the
//!   whole run, a figure less sensitive than wall time to other load on the
//!   machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;
use tessera_coordinator::store::{RoundStatus, Store};
use tessera_model::RoundKind;
use tessera_model::{
    LocalStats, Mlp, Model, ModelKind, Objective, Preprocessor, TrainConfig, load_csv_from_reader,
};

use crate::bundled_data;
use crate::experiment::{self, RunArgs};
use crate::procfs::ChildMonitor;
pub use crate::procfs::ProcessPeak;

/// Element payload of one wire chunk as sent.
const CHUNK_BYTES: u64 = tessera_proto::chunk::SEND_CHUNK_BYTES as u64;

/// Bytes of one model parameter on the wire (`f32`).
const MODEL_BYTES_PER_PARAM: u64 = 4;

/// Bytes of one element of a training update on the wire (32-bit fixed point).
const UPDATE_BYTES_PER_PARAM: u64 = 4;

/// Options of `tessera-sim bench round`.
#[derive(clap::Args, Debug, Clone)]
pub struct RoundBenchArgs {
    /// Least number of model parameters (the MLP's hidden width is chosen to reach it).
    #[arg(long, default_value_t = 10_000_000)]
    pub params: usize,
    /// Participant processes (secure aggregation needs at least 3).
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Sum in the clear instead of through secure aggregation (allows 1 or 2 participants).
    #[arg(long)]
    pub no_secagg: bool,
    /// CSV data to split over the participants (default: the bundled breast-cancer data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Label column of `--data` (default: `diagnosis`).
    #[arg(long)]
    pub label: Option<String>,
    /// Keep everything (PKI, logs, models, report) in this directory
    /// (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the data split, the initial model and local shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object (last line of the output).
    #[arg(long)]
    pub json: bool,
}

/// What one benchmark run measured.
#[derive(Serialize, Debug, Clone)]
pub struct RoundBenchReport {
    /// Parameters of the model.
    pub params: usize,
    /// Parameters asked for.
    pub requested_params: usize,
    /// The model (`mlp:HIDDEN`).
    pub model: String,
    /// Model inputs (features plus missing-value indicators).
    pub input_dim: usize,
    /// Participant processes.
    pub participants: usize,
    /// Whether the round went through secure aggregation.
    pub secure_aggregation: bool,
    /// Training rows per participant (smallest site).
    pub rows_per_participant: usize,
    /// The training round's seconds in the coordinator's `rounds.csv`
    /// (announcement to decoded sum).
    pub training_round_seconds: f64,
    /// The training round from announcement to release (coordinator's store).
    pub training_round_release_seconds: f64,
    /// The statistics round's seconds in the coordinator's `rounds.csv`.
    pub statistics_round_seconds: f64,
    /// Seconds of one local epoch of one site, timed in process.
    pub local_training_seconds: f64,
    /// Wall seconds of the federation (coordinator start to exit).
    pub federation_seconds: f64,
    /// Wall seconds of the whole benchmark (data, PKI, processes, rounds, evaluation).
    pub total_seconds: f64,
    /// Model bytes each participant downloads.
    pub model_bytes_per_participant: u64,
    /// Chunks of the model download.
    pub model_chunks_per_participant: u64,
    /// Update bytes each participant uploads.
    pub update_bytes_per_participant: u64,
    /// Model and update bytes over all participants, both directions.
    pub payload_bytes_total: u64,
    /// Peak resident memory of the coordinator, in bytes (None where unknown).
    pub coordinator_peak_rss_bytes: Option<u64>,
    /// Largest peak resident memory of a participant, in bytes (None where unknown).
    pub participant_peak_rss_bytes: Option<u64>,
    /// Every process measured.
    pub processes: Vec<ProcessPeak>,
    /// Pooled test accuracy of the released model.
    pub final_accuracy: f64,
    /// Training rounds released.
    pub rounds_released: u32,
    /// Where everything was kept (None: removed).
    pub out: Option<PathBuf>,
}

/// The smallest hidden width whose MLP has at least `params` parameters on
/// `input_dim` inputs.
pub fn hidden_for(params: usize, input_dim: usize) -> usize {
    params.saturating_sub(1).div_ceil(input_dim + 2).max(1)
}

/// Parses `RunArgs` from a command line, so that the benchmark gets exactly the
/// defaults of `tessera-sim run`.
#[derive(Parser, Debug)]
pub(crate) struct RunCommand {
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs the benchmark (see the [module docs](self)).
pub fn run(args: &RoundBenchArgs) -> anyhow::Result<RoundBenchReport> {
    let started = Instant::now();
    if args.params == 0 {
        bail!("--params must be at least 1");
    }
    let temp = match &args.out {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let out = match (&args.out, &temp) {
        (Some(o), _) => o.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory exists without --out"),
    };
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| bundled_data().join("breast_cancer_wisconsin.csv"));
    let label = args.label.clone().unwrap_or_else(|| "diagnosis".into());
    let mut cmd: Vec<String> = vec![
        "run".into(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
        "--data".into(),
        data.to_string_lossy().into_owned(),
        "--label".into(),
        label,
        "--partition".into(),
        "iid".into(),
        "--participants".into(),
        args.participants.to_string(),
        "--min-participants".into(),
        args.participants.to_string(),
        "--rounds".into(),
        "1".into(),
        "--local-epochs".into(),
        "1".into(),
        "--seed".into(),
        args.seed.to_string(),
    ];
    if args.no_secagg {
        cmd.push("--no-secagg".into());
    }
    let mut spec = RunCommand::try_parse_from(cmd)
        .context("building the run")?
        .run
        .into_spec()?;

    // The model inputs are the features plus one indicator per feature with a
    // missing value in the training rows (see `Preprocessor::from_pooled`).
    let header = &spec.data.header;
    let feature_cols: Vec<usize> = spec
        .task
        .features
        .iter()
        .filter_map(|f| header.iter().position(|h| h == f))
        .collect();
    let with_missing = feature_cols
        .iter()
        .filter(|&&c| {
            spec.data
                .sites
                .iter()
                .flat_map(|s| &s.rows)
                .any(|r| tessera_model::data::is_missing(&r[c]))
        })
        .count();
    let input_dim = feature_cols.len() + with_missing;
    let hidden = hidden_for(args.params, input_dim);
    if hidden > ModelKind::MAX_HIDDEN {
        bail!(
            "{} parameters need {hidden} hidden units, more than the {} an MLP may have",
            args.params,
            ModelKind::MAX_HIDDEN
        );
    }
    let kind = ModelKind::mlp1(hidden);
    spec.task.model = kind;
    spec.plan.task.model = kind;
    let params = tessera_model::model::num_params(kind, Objective::Binary, input_dim);
    // Deadlines wide enough that a slow machine measures the round instead of
    // dropping its participants.
    spec.plan.training_seconds = spec.plan.training_seconds.max(600.0);
    spec.plan.stage_seconds = spec.plan.stage_seconds.max(300.0);

    let rows_per_participant = spec
        .data
        .sites
        .iter()
        .map(|s| s.rows.len())
        .min()
        .unwrap_or(0);
    let local_training_seconds = time_local_training(&spec, kind, input_dim, args.seed)?;

    let monitor = ChildMonitor::start();
    let federation_started = Instant::now();
    let result = experiment::run(spec);
    let federation_seconds = federation_started.elapsed().as_secs_f64();
    let processes = monitor.finish();
    let summary = result?;

    let rounds = read_rounds_csv(&out.join("coordinator").join("rounds.csv"))?;
    let seconds_of = |kind: &str| {
        rounds
            .iter()
            .find(|r| r.kind == kind && r.status == "released")
            .map(|r| r.seconds)
    };
    let Some(training_round_seconds) = seconds_of("training") else {
        bail!(
            "the training round was not released; see the logs in {}",
            out.join("logs").display()
        );
    };
    let statistics_round_seconds = seconds_of("statistics").unwrap_or(f64::NAN);
    let store = Store::open_read_only(&out.join("coordinator").join("coordinator.sqlite"))?;
    let training_round_release_seconds = store
        .rounds()?
        .iter()
        .find(|r| r.kind == RoundKind::Training && r.status == RoundStatus::Released)
        .and_then(|r| Some((r.ended_at_ms? - r.started_at_ms) as f64 / 1000.0))
        .unwrap_or(f64::NAN);
    drop(store);

    let model_bytes = params as u64 * MODEL_BYTES_PER_PARAM;
    let update_bytes = params as u64 * UPDATE_BYTES_PER_PARAM;
    let n = args.participants as u64;
    let peak = |coordinator: bool| {
        processes
            .iter()
            .filter(|p| (p.name == "coordinator") == coordinator)
            .map(|p| p.peak_rss_bytes)
            .max()
    };
    let report = RoundBenchReport {
        params,
        requested_params: args.params,
        model: kind.to_string(),
        input_dim,
        participants: args.participants,
        secure_aggregation: !args.no_secagg,
        rows_per_participant,
        training_round_seconds,
        training_round_release_seconds,
        statistics_round_seconds,
        local_training_seconds,
        federation_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        model_bytes_per_participant: model_bytes,
        model_chunks_per_participant: model_bytes.div_ceil(CHUNK_BYTES),
        update_bytes_per_participant: update_bytes,
        payload_bytes_total: n * (model_bytes + update_bytes),
        coordinator_peak_rss_bytes: peak(true),
        participant_peak_rss_bytes: peak(false),
        processes,
        final_accuracy: summary.final_accuracy,
        rounds_released: summary.rounds,
        out: args.out.clone(),
    };
    if args.out.is_some() {
        std::fs::write(
            out.join("bench-round.json"),
            serde_json::to_string_pretty(&report)? + "\n",
        )?;
    }
    Ok(report)
}

/// Seconds of one local epoch of the first site on its own rows, with the
/// federation's local settings, from the federation's initial model.
fn time_local_training(
    spec: &experiment::RunSpec,
    kind: ModelKind,
    input_dim: usize,
    seed: u64,
) -> anyhow::Result<f64> {
    let Some(site) = spec.data.sites.first() else {
        bail!("no participant has data");
    };
    let mut csv = Vec::new();
    {
        let mut w = csv_line_writer(&mut csv);
        w(&spec.data.header);
        for r in &site.rows {
            w(r);
        }
    }
    let ds = load_csv_from_reader(&csv[..], Path::new(&site.name), &spec.task)?;
    let pre = Preprocessor::from_pooled(&LocalStats::compute(&ds))?;
    let x = pre.transform(&ds.x);
    if x.ncols() != input_dim {
        bail!(
            "site {} has {} model inputs, the federation {input_dim}",
            site.name,
            x.ncols()
        );
    }
    let ModelKind::Mlp { hidden } = kind else {
        bail!("the round benchmark trains an MLP");
    };
    let mut model = Mlp::new(input_dim, &hidden.widths(), Objective::Binary, seed);
    let t = &spec.plan.training;
    let cfg = TrainConfig {
        epochs: t.local_epochs,
        learning_rate: t.learning_rate,
        batch_size: t.batch_size as usize,
        seed,
        weight_decay: 0.0,
    };
    let started = Instant::now();
    model.train(&x, &ds.y, &cfg);
    Ok(started.elapsed().as_secs_f64())
}

/// A function that appends one CSV record (RFC 4180 quoting) to `out`.
fn csv_line_writer(out: &mut Vec<u8>) -> impl FnMut(&[String]) + '_ {
    move |fields: &[String]| {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if f.contains([',', '"', '\n', '\r']) {
                out.push(b'"');
                out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(f.as_bytes());
            }
        }
        out.push(b'\n');
    }
}

/// One line of the coordinator's `rounds.csv`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoundLine {
    /// The round's kind (`statistics`, `training`, `evaluation`, …).
    pub(crate) kind: String,
    /// `released` or why not.
    pub(crate) status: String,
    /// Seconds from the round's announcement until its sum was decoded.
    pub(crate) seconds: f64,
}

/// The lines of a coordinator's `rounds.csv`.
pub(crate) fn read_rounds_csv(path: &Path) -> anyhow::Result<Vec<RoundLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{} is empty", path.display()))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{} has no column {name:?}", path.display()))
    };
    let (kind, status, seconds) = (col("kind")?, col("status")?, col("seconds")?);
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let cell = |i: usize| {
                cells
                    .get(i)
                    .copied()
                    .with_context(|| format!("short line in {}: {l}", path.display()))
            };
            Ok(RoundLine {
                kind: cell(kind)?.to_owned(),
                status: cell(status)?.to_owned(),
                seconds: cell(seconds)?
                    .parse()
                    .with_context(|| format!("seconds in {}: {l}", path.display()))?,
            })
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Prints the report: a table, or one JSON line.
pub fn print(report: &RoundBenchReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot serialise the report: {e}"),
        }
        return;
    }
    let r = report;
    println!();
    println!(
        "round benchmark: {} ({} parameters, {} inputs), {} participant process{}, secure aggregation {}",
        r.model,
        r.params,
        r.input_dim,
        r.participants,
        if r.participants == 1 { "" } else { "es" },
        if r.secure_aggregation { "on" } else { "off" }
    );
    println!(
        "training round          {:>10.3} s   (rounds.csv: announcement to decoded sum)",
        r.training_round_seconds
    );
    println!(
        "  until released        {:>10.3} s   (adds ledger commit and checkpoint)",
        r.training_round_release_seconds
    );
    println!(
        "  local training        {:>10.3} s   (one epoch, {} rows, timed in process)",
        r.local_training_seconds, r.rows_per_participant
    );
    println!(
        "statistics round        {:>10.3} s",
        r.statistics_round_seconds
    );
    println!(
        "federation              {:>10.3} s   (coordinator start to exit)",
        r.federation_seconds
    );
    println!("whole benchmark         {:>10.3} s", r.total_seconds);
    println!(
        "payload per participant {:>10.1} MiB down ({} chunks), {:.1} MiB up; {:.1} MiB in all",
        mib(r.model_bytes_per_participant),
        r.model_chunks_per_participant,
        mib(r.update_bytes_per_participant),
        mib(r.payload_bytes_total)
    );
    let show = |b: Option<u64>| match b {
        Some(b) => format!("{:.1} MiB", mib(b)),
        None => "unknown".into(),
    };
    println!(
        "peak RSS                coordinator {}, participant {} (largest; VmHWM polled every 50 ms)",
        show(r.coordinator_peak_rss_bytes),
        show(r.participant_peak_rss_bytes)
    );
    for p in &r.processes {
        println!(
            "  {:<20} pid {:>7}  {:>10.1} MiB peak RSS  {:>8.2} CPU s (whole run)",
            p.name,
            p.pid,
            mib(p.peak_rss_bytes),
            p.cpu_seconds
        );
    }
    println!(
        "released {} training round(s); pooled test accuracy {:.3}",
        r.rounds_released, r.final_accuracy
    );
    if let Some(out) = &r.out {
        println!("everything kept in {}", out.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_width_reaches_the_requested_size() {
        assert_eq!(hidden_for(10_000_000, 30), 312_500);
        assert_eq!(
            tessera_model::model::num_params(ModelKind::mlp1(312_500), Objective::Binary, 30),
            10_000_001
        );
        for (p, d) in [(1, 30), (100, 7), (1_000_000, 30), (999_999, 13)] {
            let h = hidden_for(p, d);
            let n = Mlp::param_count(d, &[h], Objective::Binary);
            assert!(n >= p, "{p} on {d}: {n}");
            assert!(h == 1 || Mlp::param_count(d, &[h - 1], Objective::Binary) < p);
        }
    }

    #[test]
    fn rounds_csv_is_read_by_column_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.csv");
        std::fs::write(
            &path,
            "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm\n\
             1,,statistics,released,3,3,0,0.1250,,\n\
             2,1,training,released,3,3,0,4.5000,,0.9\n",
        )
        .unwrap();
        let r = read_rounds_csv(&path).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].kind, "training");
        assert_eq!(r[1].seconds, 4.5);
        std::fs::write(&path, "round,kind\n1,training\n").unwrap();
        assert!(read_rounds_csv(&path).is_err());
    }

    #[test]
    fn csv_records_are_quoted_when_needed() {
        let mut out = Vec::new();
        {
            let mut w = csv_line_writer(&mut out);
            w(&["a".into(), "b,c".into(), "say \"x\"".into()]);
            w(&["1".into(), String::new(), "2".into()]);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"x\"\"\"\n1,,2\n"
        );
    }
}
