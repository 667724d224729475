//! `tessera-sim bench scale`: seconds per round and peak memory against
//! the number of sites, for both engines — how the cost grows.
//!
//! For each engine and site count, one `tessera-sim run` child process runs
//! a private federation with secure aggregation: synthetic data
//! ([`crate::synthetic`], `--rows-per-site` training rows per site plus the
//! 20% holdout) dealt IID, the built-in MLP sized to at least `--params`
//! parameters, `--rounds` training rounds at noise multiplier
//! `--noise-multiplier` (seeded noise: these are measurements, not private
//! runs), secure aggregation sized for `--dropout-tolerance` (default 0.05). Each figure comes from the run's `summary.json`:
//!
//! - seconds per round: the mean, over released training rounds, of the
//!   coordinator's record from announcement to release (local training,
//!   every secure-aggregation stage, noise, ledger commit, checkpoint);
//! - peak memory: in-process, the run's own high-water mark (`VmHWM`, the
//!   whole federation and the runner); processes, the largest sum of the
//!   resident memory of the coordinator and participant processes, read
//!   every 100 ms.
//!
//! When both engines run a site count, their `metrics.csv` files are
//! compared byte for byte (same options, seeds and noise seed): the line
//! says whether they are identical.
//!
//! A thousand participant processes would need a thousand runtimes (and
//! gigabytes), so the processes engine skips counts above
//! `--max-processes` (default 300) unless it is raised.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::bench_round::hidden_for;
use crate::engine::Engine;
use crate::progress::bytes;

/// Options of `tessera-sim bench scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleBenchArgs {
    /// Site counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub sites: Vec<usize>,
    /// Engines (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "inprocess,processes")]
    pub engines: Vec<Engine>,
    /// Training rounds per run.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Least model parameters (the MLP's hidden width is chosen to reach it).
    #[arg(long, default_value_t = 10_000)]
    pub params: usize,
    /// Training rows per site.
    #[arg(long, default_value_t = 20)]
    pub rows_per_site: usize,
    /// Features of the synthetic data.
    #[arg(long, default_value_t = 20)]
    pub features: usize,
    /// Noise multiplier σ of the training rounds.
    #[arg(long, default_value_t = 1.0)]
    pub noise_multiplier: f64,
    /// Share of the cohort secure aggregation tolerates losing; it sizes
    /// SecAgg+'s neighbourhoods (at 1,000 sites: k = 52 at 0.05, k = 314 at
    /// the coordinator's default 0.3), and each site's share work with them.
    #[arg(long, default_value_t = 0.05)]
    pub dropout_tolerance: f64,
    /// Largest site count run on the processes engine.
    #[arg(long, default_value_t = 300)]
    pub max_processes: usize,
    /// Keep the runs here (default: a temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Engine.
    pub engine: Engine,
    /// Sites.
    pub sites: usize,
    /// Model parameters.
    pub params: usize,
    /// Mean seconds per released training round.
    pub seconds_per_round: Option<f64>,
    /// CPU seconds per training round (all parties).
    pub cpu_seconds_per_round: Option<f64>,
    /// Peak resident memory, bytes (see the module docs).
    pub peak_rss_bytes: Option<u64>,
    /// Wall seconds of the whole run (data, PKI, start-up, rounds, evaluation).
    pub wall_seconds: f64,
    /// Training rounds released.
    pub rounds: u64,
    /// Final pooled test accuracy.
    pub final_accuracy: Option<f64>,
    /// Whether `metrics.csv` is byte-identical to the one the other engine
    /// wrote for the same site count (None when only one engine ran it).
    pub same_metrics_as_other_engine: Option<bool>,
}

/// Runs the benchmark, printing each point as it comes.
pub fn run(args: &ScaleBenchArgs) -> anyhow::Result<Vec<ScalePoint>> {
    let temp;
    let root = match &args.out {
        Some(o) => o.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&root)?;
    let exe = std::env::current_exe().context("locating tessera-sim")?;
    let hidden = hidden_for(args.params, args.features);
    let params = tessera_model::model::num_params(
        tessera_model::ModelKind::mlp1(hidden),
        tessera_model::Objective::Binary,
        args.features,
    );
    let mut points = Vec::new();
    for &n in &args.sites {
        let rows = (n * args.rows_per_site * 5).div_ceil(4);
        let data = root.join(format!("synthetic-{n}.csv"));
        crate::synthetic::write(&data, rows, args.features, 1)?;
        for &engine in &args.engines {
            if engine == Engine::Processes && n > args.max_processes {
                eprintln!(
                    "skipping {n} sites on the processes engine (above --max-processes {})",
                    args.max_processes
                );
                continue;
            }
            let out = root.join(format!("{}-{n}", engine.as_str()));
            let mut p = run_one(&exe, engine, n, hidden, params, &data, &out, args)?;
            // Same options and seeds, seeded noise: the engines must agree.
            let other = Engine::other(engine);
            let theirs = root
                .join(format!("{}-{n}", other.as_str()))
                .join("metrics.csv");
            if args.engines.contains(&other) && theirs.is_file() {
                let same = std::fs::read(&theirs)? == std::fs::read(out.join("metrics.csv"))?;
                p.same_metrics_as_other_engine = Some(same);
            }
            if !args.json {
                println!("{}", line(&p));
            }
            points.push(p);
        }
    }
    Ok(points)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    exe: &Path,
    engine: Engine,
    n: usize,
    hidden: usize,
    params: usize,
    data: &Path,
    out: &Path,
    args: &ScaleBenchArgs,
) -> anyhow::Result<ScalePoint> {
    let started = Instant::now();
    let status = Command::new(exe)
        .arg("run")
        .args(["--engine", engine.as_str()])
        .arg("--data")
        .arg(data)
        .args(["--label", "y", "--partition", "iid"])
        .args(["--participants", &n.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--model", &format!("mlp:{hidden}")])
        .args(["--noise-multiplier", &args.noise_multiplier.to_string()])
        .args(["--dropout-tolerance", &args.dropout_tolerance.to_string()])
        .args(["--noise-seed", "1", "--seed", "1"])
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.with_extension("log"))?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .env("TESSERA_PROGRESS", "lines")
        .status()
        .context("running tessera-sim run")?;
    if !status.success() {
        bail!(
            "{} sites on {}: the run failed ({status}); see {}",
            n,
            engine.as_str(),
            out.with_extension("log").display()
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    Ok(ScalePoint {
        engine,
        sites: n,
        params,
        seconds_per_round: summary["seconds_per_round"].as_f64(),
        cpu_seconds_per_round: summary["cpu_seconds_per_round"].as_f64(),
        peak_rss_bytes: summary["peak_rss_bytes"].as_u64(),
        wall_seconds: started.elapsed().as_secs_f64(),
        rounds: summary["rounds"].as_u64().unwrap_or(0),
        final_accuracy: summary["final_accuracy"].as_f64(),
        same_metrics_as_other_engine: None,
    })
}

/// One point as a table line.
pub fn line(p: &ScalePoint) -> String {
    format!(
        "{:<10} {:>6} sites  {:>7} params  {:>8} s/round  {:>8} CPU s/round  peak {:>10}  wall {:>7.1} s  {} rounds  accuracy {}{}",
        p.engine.as_str(),
        p.sites,
        p.params,
        p.seconds_per_round
            .map_or_else(|| "?".into(), |s| format!("{s:.3}")),
        p.cpu_seconds_per_round
            .map_or_else(|| "?".into(), |s| format!("{s:.3}")),
        p.peak_rss_bytes.map_or_else(|| "?".into(), bytes),
        p.wall_seconds,
        p.rounds,
        p.final_accuracy
            .map_or_else(|| "?".into(), |a| format!("{a:.3}")),
        match p.same_metrics_as_other_engine {
            Some(true) => "  metrics.csv identical to the other engine's",
            Some(false) => "  metrics.csv DIFFERS from the other engine's",
            None => "",
        },
    )
}

/// Prints the report.
pub fn print(points: &[ScalePoint], json: bool) {
    if json {
        println!("{}", serde_json::to_string(points).unwrap_or_default());
    }
}
