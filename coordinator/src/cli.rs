//! The command line, shared by the stand-alone binary and `tessera-sim`'s
//! process launcher (which runs the same code as a child process).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::driver::Outcome;
use crate::privacy_cmd::{self, PrivacyCommand};
use crate::settings::Settings;
use crate::store::{Store, ledger_report, status_report};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// The Tessera coordinator.
#[derive(Debug, Parser)]
#[command(name = "tessera-coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a federation: wait for participants, run the rounds, write the model.
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the current round, connected participants, ε spent and remaining.
    Status {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show every privacy ledger row with the cumulative ε after it.
    Ledger {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The privacy report: what ε promises, in plain words, from the ledger.
    Report {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
    },
    /// Check a configuration, its certificates and the store; print what
    /// `serve` would do. Exits non-zero when something would not work.
    Check {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask the running coordinator an analytics query and print its
    /// release (value, noise scale, ε) once its round is over.
    Query(crate::query_cmd::QueryArgs),
    /// Privacy planning: ε of a schedule, or σ for a target ε.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
}

/// Formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    /// Markdown.
    Md,
    /// A standalone HTML page.
    Html,
    /// One JSON object.
    Json,
}

/// The command line's grammar, for checking command lines written
/// elsewhere (documentation, manifests) against it.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs the command line on `args` (the first is the program name).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Privacy { command } => privacy_cmd::run(command),
        Command::Query(args) => report(crate::query_cmd::run(args)),
        Command::Serve { config } => {
            init_tracing();
            report(serve(config))
        }
        Command::Status { config, json } => report(status(config, json)),
        Command::Ledger { config, json } => report(ledger(config, json)),
        Command::Report { config, format } => report(privacy_report(config, format)),
        Command::Check { config } => {
            let r = crate::check::check(&config, std::time::SystemTime::now());
            print!("{r}");
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tessera_common::report::chain_message(&*e));
            ExitCode::FAILURE
        }
    }
}

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let settings = Arc::new(Settings::load(&config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(async move {
        let addr = settings.config.federation.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        write_address(
            &settings.config.federation.output_dir,
            listener.local_addr()?,
        )?;
        let shutdown = shutdown_signal()?;
        crate::server::run(settings, listener, shutdown).await
    })?;
    match outcome {
        Outcome::Finished {
            reason,
            success,
            rounds,
            model,
        } => {
            tracing::info!(%reason, rounds, model = ?model, "federation ended");
            if success {
                Ok(())
            } else {
                anyhow::bail!("federation failed: {reason}")
            }
        }
        Outcome::Interrupted => {
            tracing::info!("stopped before the federation finished; `serve` again resumes it");
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed
/// before this returns, so a signal that arrives early is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = which,
                "stopping: the round in progress is aborted, nothing half-released"
            );
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Writes the bound address to `output_dir/address` (atomically, newline
/// terminated) so that launchers can find a coordinator started on port 0.
fn write_address(dir: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("address.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, dir.join("address"))?;
    Ok(())
}

fn open_store(config: &std::path::Path) -> anyhow::Result<(Store, f64, Option<f64>)> {
    let settings = Settings::load(config)?;
    let store = Store::open_read_only(&settings.store)?;
    Ok((store, settings.config.privacy.delta, settings.max_epsilon))
}

fn status(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let (store, delta, max_eps) = open_store(&config)?;
    let r = status_report(&store, delta, max_eps)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{r}");
    }
    Ok(())
}

fn ledger(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let (store, delta, _) = open_store(&config)?;
    let r = ledger_report(&store, delta)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{r}");
    }
    Ok(())
}

fn privacy_report(config: PathBuf, format: ReportFormat) -> anyhow::Result<()> {
    let settings = Settings::load(&config)?;
    let store = Store::open_read_only(&settings.store)?;
    let r = crate::privacy_report::PrivacyReport::from_store(
        &store,
        &settings.config.federation.name,
        settings.config.privacy.delta,
        settings.max_epsilon,
    )?;
    match format {
        ReportFormat::Md => print!("{}", crate::privacy_report::markdown(&r)),
        ReportFormat::Html => print!("{}", crate::privacy_report::html_document(&r)),
        ReportFormat::Json => println!("{}", serde_json::to_string(&r)?),
    }
    Ok(())
}
