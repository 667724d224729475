//! The command line, shared by the stand-alone binary and `tessera-sim`'s
//! process launcher (which runs the same code as a child process).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ParticipantConfig;
use crate::ledger::{SiteLedger, site_ledger_report};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_certs::check::{Finding, Level, Role, check_tls_files};

/// A Tessera participant.
#[derive(Debug, Parser)]
#[command(name = "tessera-participant", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join the federation and take part until it ends.
    Run {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check the configuration, the certificates, the site's ledger and the
    /// data file (against a task, if given); print what `run` would do.
    /// Exits non-zero when something would not work.
    Check {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A file with the federation's `[task]` table (the coordinator's
        /// configuration will do): the data file is loaded as that task.
        #[arg(long)]
        task: Option<PathBuf>,
    },
    /// Show the rounds this site contributed to and its own cumulative ε.
    Ledger {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The command line's grammar, for checking command lines written
/// elsewhere (documentation, manifests) against it.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs the command line on `args` (the first is the program name).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    main_with_hook(args, None)
}

/// [`main`], with a hook that sees every message a running participant
/// sends (simulations inject their faults through it).
pub fn main_with_hook<I, T>(args: I, hook: Option<Box<dyn crate::client::SendHook>>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    main_with_options(
        args,
        crate::client::ShellOptions {
            hook,
            ..Default::default()
        },
    )
}

/// [`main`], with a simulation's options for a running participant (a
/// send hook, a seeded RNG).
pub fn main_with_options<I, T>(args: I, options: crate::client::ShellOptions) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::parse_from(args).command {
        Command::Run { config } => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                // Colours only on a terminal: a log file or journal gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            match run(config, options) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {}", tessera_common::report::chain_message(&*e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config, task } => {
            let findings = check(&config, task.as_deref());
            let count = |l| findings.iter().filter(|f| f.level == l).count();
            for f in &findings {
                println!("{:>7}  {}", f.level, f.message);
            }
            let errors = count(Level::Error);
            let ready = if errors == 0 { "ready" } else { "NOT READY" };
            println!(
                "{ready}: {errors} error(s), {} warning(s)",
                count(Level::Warning)
            );
            if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Ledger { config, json } => match ledger(config, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", tessera_common::report::chain_message(&*e));
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: PathBuf, options: crate::client::ShellOptions) -> anyhow::Result<u8> {
    let config = ParticipantConfig::load(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let stop = stop_signal()?;
        tokio::select! {
            code = crate::client::run_with_options(config, options) => code,
            () = stop => {
                // The message in hand was handled (handling never yields);
                // leaving drops the session, which the coordinator sees as
                // this site leaving the round.
                tracing::info!("stopped by signal: leaving the federation (it goes on without this site)");
                Ok(0)
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM (handlers installed before it returns).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// The `[task]` table of a task file (the coordinator's configuration has one).
#[derive(Debug, serde::Deserialize)]
struct TaskFile {
    task: TaskTable,
}

#[derive(Debug, serde::Deserialize)]
struct TaskTable {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    model: Option<String>,
    features: Vec<String>,
    label: String,
    #[serde(default)]
    positive: Option<String>,
    #[serde(default)]
    classes: Option<Vec<String>>,
    #[serde(default)]
    standardize_target: Option<bool>,
}

fn read_task(path: &std::path::Path) -> anyhow::Result<tessera_model::TaskSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = toml::from_str::<TaskFile>(&text)
        .map_err(|e| anyhow::anyhow!("{}: no usable [task] table: {e}", path.display()))?
        .task;
    let positive = match &t.positive {
        Some(p) => Some(
            p.parse()
                .map_err(|e| anyhow::anyhow!("task.positive: {e}"))?,
        ),
        None => None,
    };
    let kind = tessera_model::TaskKind::from_parts(
        t.kind.as_deref(),
        positive,
        t.classes,
        t.standardize_target,
    )
    .map_err(|e| anyhow::anyhow!("task.kind: {e}"))?;
    let model = match &t.model {
        Some(m) => m.parse().map_err(|e| anyhow::anyhow!("task.model: {e}"))?,
        None => match kind {
            tessera_model::TaskKind::Binary { .. } => tessera_model::ModelKind::Logistic,
            tessera_model::TaskKind::Multiclass { .. } => tessera_model::ModelKind::Softmax,
            tessera_model::TaskKind::Regression { .. } => tessera_model::ModelKind::Linear,
        },
    };
    Ok(tessera_model::TaskSpec {
        model,
        features: t.features,
        label: t.label,
        kind,
        tensors: Vec::new(),
    })
}

/// What `check` finds, in order: configuration, certificates, own limits
/// and ledger, data file (and its fit to a task).
fn check(config: &std::path::Path, task: Option<&std::path::Path>) -> Vec<Finding> {
    let found = |level, message: String| Finding { level, message };
    let config = match ParticipantConfig::load(config) {
        Ok(c) => c,
        Err(e) => return vec![found(Level::Error, format!("{}: {e}", config.display()))],
    };
    let mut out = vec![found(
        Level::Ok,
        format!(
            "will join {} and expect the coordinator's certificate to name {:?}",
            config.participant.coordinator,
            config.server_name()
        ),
    )];
    out.extend(check_tls_files(
        &config.tls,
        &Role::Client,
        std::time::SystemTime::now(),
    ));
    let p = &config.privacy;
    let none = || "none".to_owned();
    out.push(found(
        if p.max_epsilon.is_some() {
            Level::Ok
        } else {
            Level::Warning
        },
        format!(
            "own limits: max ε {} at δ = {:e}, min noise multiplier {}",
            p.max_epsilon.map_or_else(none, |e| e.to_string()),
            p.delta,
            p.min_noise_multiplier.map_or_else(none, |s| s.to_string()),
        ),
    ));
    let path = config.ledger_path();
    if path.exists() {
        let report = SiteLedger::open_read_only(&path)
            .map_err(anyhow::Error::from)
            .and_then(|l| Ok(site_ledger_report(&l, p.delta, p.max_epsilon)?));
        out.push(match report {
            Ok(r) => found(
                Level::Ok,
                format!(
                    "own ledger: {} contribution(s), ε spent {:.4}",
                    r.rows.len(),
                    r.epsilon
                ),
            ),
            Err(e) => found(Level::Error, tessera_common::report::chain_message(&*e)),
        });
    } else {
        out.push(found(
            Level::Ok,
            format!("no ledger yet at {}", path.display()),
        ));
    }
    let data = &config.participant.data;
    let header = std::fs::read_to_string(data).map(|t| {
        let line = t.lines().next().unwrap_or("").to_owned();
        line.split(',')
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
    });
    match &header {
        Err(e) => out.push(found(
            Level::Error,
            format!("cannot read {}: {e}", data.display()),
        )),
        Ok(cols) => out.push(found(
            Level::Ok,
            format!("data file {}: {} column(s)", data.display(), cols.len()),
        )),
    }
    let Some(task) = task else {
        return out;
    };
    match read_task(task) {
        Err(e) => out.push(found(
            Level::Error,
            tessera_common::report::chain_message(&*e),
        )),
        Ok(spec) => {
            let named = spec.features.iter().chain(std::iter::once(&spec.label));
            if let Some(allowed) = &config.participant.allowed_columns {
                let refused: Vec<&String> = named.filter(|c| !allowed.contains(c)).collect();
                if !refused.is_empty() {
                    out.push(found(
                        Level::Error,
                        format!("the task names columns this site does not allow: {refused:?}"),
                    ));
                }
            }
            out.push(match tessera_model::load_csv(data, &spec) {
                Ok(d) => found(
                    Level::Ok,
                    format!("the data file fits the task: {} usable row(s)", d.n_rows()),
                ),
                Err(e) => found(
                    Level::Error,
                    format!("the data file does not fit the task: {e}"),
                ),
            });
        }
    }
    out
}

fn ledger(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let config = ParticipantConfig::load(&config)?;
    let ledger = SiteLedger::open_read_only(&config.ledger_path())?;
    let report = site_ledger_report(&ledger, config.privacy.delta, config.privacy.max_epsilon)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
