//! `tessera-sim bench load`: many participants over mutual TLS to one
//! coordinator on loopback, several rounds with secure aggregation.
//!
//! The coordinator is the real program in its own process; the
//! participants (1,000 by default) are the real participant client, each
//! with its own certificate, configuration, ledger and data file, run as
//! tasks of this one process (a thousand processes would not fit a small
//! machine). Each site holds a few rows of the bundled breast-cancer data
//! (drawn in turn, so sites overlap). A round starts once `--min-participants`
//! sites are connected; the cohort is every site connected then.
//!
//! Reported: connections (participants that finished the federation),
//! each round's time from the coordinator's `rounds.csv`, the whole run,
//! and the coordinator's peak resident memory (`VmHWM`) and most open file
//! descriptors, read from `/proc/<pid>` every 100 ms (Linux).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use crate::bench_round::{RunCommand, read_rounds_csv};
use crate::bundled_data;
use crate::launch::{self, SitePlan};
use crate::procfs;

/// Options of `tessera-sim bench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadBenchArgs {
    /// Participants (in this process, one task each).
    #[arg(long, default_value_t = 1000)]
    pub participants: usize,
    /// Training rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Sites connected before a round starts (default: 95% of them).
    #[arg(long)]
    pub min_participants: Option<usize>,
    /// Rows of data per site.
    #[arg(long, default_value_t = 12)]
    pub rows: usize,
    /// Share of the cohort secure aggregation tolerates losing. It sizes
    /// SecAgg+'s neighbourhoods, and so each site's share work: at 1,000
    /// sites 0.05 gives k = 52 neighbours, the coordinator's default 0.3
    /// gives k = 314 (`tessera-sim bench secagg --dropout` shows k).
    #[arg(long, default_value_t = 0.05)]
    pub dropout_tolerance: f64,
    /// Keep everything here (default: a temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Writes `n` site files of `rows` rows each, drawn in turn from `csv`.
fn write_sites(csv: &Path, dir: &Path, n: usize, rows: usize) -> anyhow::Result<Vec<SitePlan>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("the data file is empty")?;
    let body: Vec<&str> = lines.collect();
    if body.is_empty() {
        bail!("the data file has no rows");
    }
    std::fs::create_dir_all(dir)?;
    (0..n)
        .map(|i| {
            let name = format!("site-{i:04}");
            let path = dir.join(format!("{name}.csv"));
            let mut out = format!("{header}\n");
            for j in 0..rows {
                let row = body.get((i * rows + j) % body.len()).copied().unwrap_or("");
                out.push_str(row);
                out.push('\n');
            }
            std::fs::write(&path, out)?;
            Ok(SitePlan {
                name,
                data: path,
                max_epsilon: None,
                min_noise_multiplier: None,
                crash_after_shares: None,
                trainer: None,
            })
        })
        .collect()
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &LoadBenchArgs) -> anyhow::Result<()> {
    if args.participants < 3 {
        bail!("secure aggregation needs at least 3 participants");
    }
    let temp = tempfile::tempdir()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let data = bundled_data().join("breast_cancer_wisconsin.csv");
    // The federation of `tessera-sim run` on the bundled data, then our sites.
    let cmd: Vec<String> = [
        "run",
        "--out",
        &out.to_string_lossy(),
        "--data",
        &data.to_string_lossy(),
        "--label",
        "diagnosis",
        "--participants",
        "3",
        "--rounds",
        &args.rounds.to_string(),
        "--local-epochs",
        "1",
        "--dropout-tolerance",
        &args.dropout_tolerance.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spec = RunCommand::try_parse_from(cmd)
        .context("building the run")?
        .run
        .into_spec()?;
    let sites = write_sites(&data, &out.join("data"), args.participants, args.rows)?;
    spec.plan.dir = out.clone();
    spec.plan.sites = sites.clone();
    spec.plan.min_participants = args
        .min_participants
        .unwrap_or(args.participants * 95 / 100)
        .clamp(3, args.participants);
    spec.plan.training_seconds = 600.0;
    spec.plan.stage_seconds = 300.0;
    let pki_started = Instant::now();
    let mut layout = launch::prepare(&spec.plan)?;
    let pki_seconds = pki_started.elapsed().as_secs_f64();
    let bins = launch::Binaries::detect()?;
    let started = Instant::now();
    let (mut coordinator, address) = launch::start_coordinator(&bins, &layout, "coordinator.log")?;
    let pid = coordinator.id();

    let done = Arc::new(AtomicBool::new(false));
    let (hwm, fds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let monitor = {
        let (done, hwm, fds) = (Arc::clone(&done), Arc::clone(&hwm), Arc::clone(&fds));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let pid_text = pid.to_string();
                if let Some(h) = procfs::status_bytes(&pid_text, "VmHWM:") {
                    hwm.fetch_max(h / 1024, Ordering::Relaxed);
                }
                if let Some(f) = procfs::open_fds(pid) {
                    fds.fetch_max(f, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut configs = Vec::with_capacity(sites.len());
    for site in &sites {
        let path = launch::write_participant_config(&spec.plan, &mut layout, site, &address)?;
        configs.push(tessera_participant::config::ParticipantConfig::load(&path)?);
    }
    // The participants' logs, all in one file.
    let log = std::fs::File::create(layout.logs.join("participants.log"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .try_init();
    let runtime = tokio::runtime::Runtime::new()?;
    let codes: Vec<u8> = runtime.block_on(async {
        let tasks: Vec<_> = configs
            .into_iter()
            .map(|c| tokio::spawn(tessera_participant::client::run(c)))
            .collect();
        let mut codes = Vec::with_capacity(tasks.len());
        for t in tasks {
            codes.push(match t.await {
                Ok(Ok(code)) => code,
                _ => u8::MAX,
            });
        }
        codes
    });
    let status = coordinator.wait()?;
    let wall = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    if !status.success() {
        bail!(
            "the coordinator exited with {status}; see {}",
            layout.logs.join("coordinator.log").display()
        );
    }
    let finished = codes.iter().filter(|&&c| c == 0).count();
    let rounds = read_rounds_csv(&out.join("coordinator").join("rounds.csv"))?;
    println!(
        "load benchmark: {} participants over mutual TLS to one coordinator on loopback, secure aggregation",
        args.participants
    );
    println!(
        "PKI ({} certificates)      {pki_seconds:.1} s",
        args.participants + 1
    );
    println!(
        "participants finished     {finished} of {} (exit 0)",
        args.participants
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "round {:>2} {:<10} {:<9} {:>8.2} s",
            i + 1,
            r.kind,
            r.status,
            r.seconds
        );
    }
    println!("federation                {wall:.1} s (coordinator start to exit)");
    println!(
        "coordinator               peak RSS {:.1} MiB, most open file descriptors {}",
        hwm.load(Ordering::Relaxed) as f64 / 1024.0,
        fds.load(Ordering::Relaxed)
    );
    drop(temp);
    Ok(())
}
