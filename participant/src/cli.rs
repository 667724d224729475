//! The command line, shared by the stand-alone binary and `tessera-sim`'s
//! process launcher (which runs the same code as a child process).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ParticipantConfig;
use crate::ledger::{SiteLedger, site_ledger_report};
use anyhow::Context;
use clap::{Parser, Subcommand};

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
    match Cli::parse_from(args).command {
        Command::Run { config } => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            match run(config, hook) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ledger { config, json } => match ledger(config, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: PathBuf, hook: Option<Box<dyn crate::client::SendHook>>) -> anyhow::Result<u8> {
    let config = ParticipantConfig::load(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(crate::client::run_with(config, hook))
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
