//! `tessera-sim`: run local federations on real data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tessera_simulations::engine::Engine;
use tessera_simulations::experiment::{self, LearningArgs, PrivacyArgs, RunArgs};
use tessera_simulations::{
    bench_harness, bench_learning, bench_load, bench_round, bench_scale, bench_secagg,
    bundled_data, config_file, sweep, synthetic,
};

/// The demo's monotone constraints: the direction of each heart-disease
/// attribute's effect on the risk of coronary artery disease, from clinical
/// knowledge and the attributes' documented codes (`data/heart_disease`'s
/// README), never from the data. Each is an established risk factor or an
/// abnormal test finding whose higher code is the more abnormal one: age,
/// male sex (`sex` 1), resting blood pressure, cholesterol, fasting blood
/// sugar > 120 mg/dl (`fbs` 1), resting ECG abnormality (`restecg` 0 normal,
/// 1 ST-T abnormality, 2 left ventricular hypertrophy), exercise-induced
/// angina (`exang` 1), ST depression (`oldpeak`), ST slope (1 upsloping, 2
/// flat, 3 downsloping), vessels coloured by fluoroscopy (`ca`) and the
/// thallium defect (`thal` 3 normal, 6 fixed, 7 reversible) raise it; a
/// higher maximum heart rate on exercise (`thalach`) lowers it. Chest pain
/// type (`cp`) is a category with no clinical order of risk, so it is free.
const HEART_DISEASE_DIRECTIONS: [(&str, &str); 12] = [
    ("age", "increasing"),
    ("sex", "increasing"),
    ("trestbps", "increasing"),
    ("chol", "increasing"),
    ("fbs", "increasing"),
    ("restecg", "increasing"),
    ("thalach", "decreasing"),
    ("exang", "increasing"),
    ("oldpeak", "increasing"),
    ("slope", "increasing"),
    ("ca", "increasing"),
    ("thal", "increasing"),
];

/// Local multi-process Tessera federations.
#[derive(Debug, Parser)]
#[command(name = "tessera-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bundled demo: four real hospitals (heart disease), private by default.
    Demo {
        /// Keep everything (certificates, logs, model, metrics) in this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Training rounds.
        #[arg(long, default_value_t = 16)]
        rounds: u32,
        /// Turn differential privacy off (secure aggregation stays on).
        #[arg(long)]
        no_privacy: bool,
        /// Target ε of the private demo.
        #[arg(long, default_value_t = 8.0)]
        target_epsilon: f64,
    },
    /// A federation on any CSV data.
    Run(Box<RunArgs>),
    /// Runs over noise multipliers or target ε values and seeds, several at
    /// once: `sweep.csv` and the privacy–utility plot.
    Sweep(Box<SweepArgs>),
    /// One federated-analytics query over local CSV files (one site per
    /// file): count, sum, mean, histogram, most common / top k.
    Query(Box<tessera_simulations::query::QueryArgs>),
    /// Writes synthetic classification data (for runs of many sites).
    Synthetic(synthetic::SyntheticArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Runs the coordinator (used by the launcher; same as `tessera-coordinator`).
    #[command(hide = true, disable_help_flag = true)]
    Coordinator {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs a participant (used by the launcher; same as `tessera-participant`).
    #[command(hide = true, disable_help_flag = true)]
    Participant {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Options of `tessera-sim sweep`: a run's, and the sweep's own.
#[derive(Debug, clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    sweep: sweep::SweepOptions,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Each step of an analytics query over local CSV files (site vectors, secure sum, release).
    Analytics(tessera_simulations::bench_analytics::AnalyticsBenchArgs),
    /// One secure-aggregation round in process: time per stage, bytes, ratio to the PRG bound.
    Secagg(bench_secagg::SecAggBenchArgs),
    /// One training round of a large MLP through a real federation: time, bytes, peak memory.
    Round(bench_round::RoundBenchArgs),
    /// One private round of N sites in the in-memory harness (no sockets, TLS or files).
    Harness(bench_harness::HarnessBenchArgs),
    /// Many participants (tasks of this process) over mutual TLS to one coordinator process.
    Load(bench_load::LoadBenchArgs),
    /// Seconds per round and peak memory against the number of sites, both engines.
    Scale(bench_scale::ScaleBenchArgs),
    /// Seconds per round of a multi-class MLP federation (10 sites by default).
    Mlp(bench_learning::MlpBenchArgs),
    /// Seconds per round with the built-in trainer and with external trainer commands.
    Trainer(bench_learning::TrainerBenchArgs),
}

/// Subcommands whose flags a `--config` TOML file may set.
const CONFIGURABLE: [&str; 2] = ["run", "sweep"];

/// The command line with a `--config` file's options expanded (see
/// [`config_file`]).
fn expand_config(argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(sub) = argv.get(1).filter(|s| CONFIGURABLE.contains(&s.as_str())) else {
        return Ok(argv);
    };
    let cli = Cli::command();
    let Some(cmd) = cli.find_subcommand(sub) else {
        return Ok(argv);
    };
    let rest = config_file::expand(cmd, argv[2..].to_vec())?;
    Ok(argv[..2].iter().cloned().chain(rest).collect())
}

fn main() -> ExitCode {
    let argv = match expand_config(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::command();
    let matches = cli.clone().get_matches_from(&argv);
    let options = |name: &str| {
        let cmd = cli.find_subcommand(name)?;
        let m = matches.subcommand_matches(name)?;
        Some((config_file::matches_to_toml(cmd, m), m.clone()))
    };
    let parsed = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match parsed.command {
        Command::Coordinator { args } => tessera_coordinator::cli::main(
            std::iter::once("tessera-coordinator".to_string()).chain(args),
        ),
        Command::Participant { args } => tessera_simulations::faults::participant_main(args),
        Command::Query(args) => match tessera_simulations::query::run(&args) {
            Ok(outcome) => {
                tessera_simulations::query::print(&outcome, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Bench {
            which: Bench::Secagg(args),
        } => match bench_secagg::run(&args) {
            Ok(report) => {
                bench_secagg::print(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Analytics(args),
        } => match tessera_simulations::bench_analytics::run(&args) {
            Ok(timings) => {
                tessera_simulations::bench_analytics::print(&timings, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Harness(args),
        } => match bench_harness::run(&args) {
            Ok(report) => {
                bench_harness::print(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Load(args),
        } => match bench_load::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Round(args),
        } => match bench_round::run(&args) {
            Ok(report) => {
                bench_round::print(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Mlp(args),
        } => match bench_learning::run_mlp(&args) {
            Ok(report) => {
                bench_learning::print_mlp(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Trainer(args),
        } => match bench_learning::run_trainer(&args) {
            Ok(report) => {
                bench_learning::print_trainer(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Demo {
            out,
            rounds,
            no_privacy,
            target_epsilon,
        } => {
            let heart = bundled_data().join("heart_disease");
            let args = RunArgs {
                out,
                data: ["cleveland", "hungary", "switzerland", "va_long_beach"]
                    .iter()
                    .map(|h| heart.join(format!("{h}.csv")))
                    .collect(),
                label: "num".into(),
                positive: Some("> 0".into()),
                participants: None,
                partition: None,
                rounds,
                model: Some("logistic".into()),
                seed: 1,
                local_epochs: None,
                // Small local steps and a small clip norm over many rounds,
                // with the second half of the released models averaged:
                // tuned on this data for the private demo (see README).
                learning_rate: (!no_privacy).then_some(0.1),
                batch_size: 16,
                average_last: (!no_privacy).then_some((rounds / 2).max(1)),
                min_participants: None,
                config: None,
                engine: Engine::Processes,
                dropout: None,
                privacy: PrivacyArgs {
                    target_epsilon: (!no_privacy).then_some(target_epsilon),
                    clip_norm: (!no_privacy).then_some(0.15),
                    ..PrivacyArgs::default()
                },
                learning: LearningArgs {
                    monotone: HEART_DISEASE_DIRECTIONS
                        .iter()
                        .map(|(f, d)| format!("{f}={d}"))
                        .collect(),
                    ..LearningArgs::default()
                },
            };
            run(args, None)
        }
        Command::Run(args) => run(*args, options("run").map(|o| o.0)),
        Command::Sweep(args) => {
            let (text, m) = options("sweep").unzip();
            let engine_given = m.is_some_and(|m| {
                m.value_source("engine") == Some(clap::parser::ValueSource::CommandLine)
            });
            match run_sweep(*args, text.unwrap_or_default(), engine_given) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Synthetic(a) => match synthetic::write(&a.out, a.rows, a.features, a.seed) {
            Ok(()) => {
                println!("wrote {} rows to {}", a.rows, a.out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            which: Bench::Scale(args),
        } => match bench_scale::run(&args) {
            Ok(points) => {
                bench_scale::print(&points, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Keys of `tessera-sim sweep`'s own options, left out of its runs' options.
const SWEEP_KEYS: [&str; 11] = [
    "noise_multipliers",
    "target_epsilons",
    "seeds",
    "models",
    "server_optimizers",
    "vary",
    "jobs",
    "no_baseline",
    "select",
    "select_epsilon",
    "placements",
];

fn run_sweep(args: SweepArgs, options: String, engine_given: bool) -> anyhow::Result<()> {
    let mut base: toml::Table = options.parse()?;
    for k in SWEEP_KEYS {
        base.remove(k);
    }
    if !engine_given {
        // Many runs at once: the in-process engine unless asked otherwise.
        base.insert("engine".into(), Engine::InProcess.as_str().into());
    }
    let out = args.run.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tessera-sweep-{}", std::process::id()))
    });
    sweep::run(
        &args.sweep,
        base,
        &out,
        args.run.seed,
        args.run.privacy.noise_seed,
        args.run.privacy.delta,
    )?;
    Ok(())
}

fn run(args: RunArgs, options: Option<String>) -> ExitCode {
    let result = args.into_spec().and_then(|mut spec| {
        spec.options_toml = options;
        experiment::run(spec)
    });
    match result {
        Ok(s) => {
            println!();
            match &s.final_regression {
                Some(r) => println!(
                    "Final pooled test RMSE: {:.3}, MAE {:.3}, R² {:.3} after {} rounds ({} participants)",
                    r.rmse, r.mae, r.r2, s.rounds, s.participants
                ),
                None => println!(
                    "Final pooled test accuracy: {:.3} after {} rounds ({} participants)",
                    s.final_accuracy, s.rounds, s.participants
                ),
            }
            if let Some(f) = s.history.iter().rev().find_map(|h| h.federated.as_ref()) {
                println!("Federated evaluation of the last model: {}", f.summary());
            }
            match (s.epsilon, s.delta) {
                (Some(e), Some(d)) if s.private => println!("Privacy spent: ε = {e:.3} at δ = {d}"),
                (Some(e), Some(d)) => println!(
                    "ε = {e:.3} at δ = {d} as accounted, but the noise was seeded: NOT private"
                ),
                _ => println!("Not private: no differential privacy in this run."),
            }
            println!("Finished: {}", s.finish_reason);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
