//! Launching a real local federation: a development PKI, one coordinator
//! process and one process per participant, talking gRPC over loopback
//! mutual TLS, each with its own configuration file and log.
//!
//! The processes are the real coordinator and participant programs. By
//! default they are started as `tessera-sim coordinator …` and
//! `tessera-sim participant …` (the same code, linked into this binary, so a
//! single `cargo run --bin tessera-sim` builds everything); the environment
//! variables `TESSERA_COORDINATOR_BIN` and `TESSERA_PARTICIPANT_BIN` point
//! the launcher at the stand-alone `tessera-coordinator` and
//! `tessera-participant` binaries instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tessera_model::TaskSpec;

/// How to start the two programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Program and leading arguments that run the coordinator.
    pub coordinator: Vec<String>,
    /// Program and leading arguments that run a participant.
    pub participant: Vec<String>,
}

impl Binaries {
    /// From the environment, else this executable's hidden subcommands.
    pub fn detect() -> anyhow::Result<Self> {
        let me = std::env::current_exe()
            .context("locating the running executable")?
            .to_string_lossy()
            .into_owned();
        let coordinator = match std::env::var("TESSERA_COORDINATOR_BIN") {
            Ok(p) => vec![p],
            Err(_) => vec![me.clone(), "coordinator".into()],
        };
        let participant = match std::env::var("TESSERA_PARTICIPANT_BIN") {
            Ok(p) => vec![p],
            Err(_) => vec![me, "participant".into()],
        };
        Ok(Self {
            coordinator,
            participant,
        })
    }
}

/// Differential privacy of a launched federation.
#[derive(Debug, Clone)]
pub struct PrivacyPlan {
    /// Noise multiplier σ, or None to calibrate from `target_epsilon`.
    pub noise_multiplier: Option<f64>,
    /// Target ε over the planned rounds.
    pub target_epsilon: Option<f64>,
    /// Hard budget (defaults to the target).
    pub max_epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Poisson sampling rate.
    pub sampling_rate: f64,
    /// Noise multiplier of the statistics release.
    pub statistics_noise_multiplier: f64,
    /// Public feature ranges for the bounded statistics.
    pub ranges: BTreeMap<String, [f64; 2]>,
    /// Largest number of rows one site contributes.
    pub max_rows: f64,
    /// Seed of the noise (simulations only; makes the run not private).
    pub noise_seed: Option<u64>,
    /// Adaptive clipping (Andrew et al. 2021), if on.
    pub adaptive_clipping: Option<AdaptiveClippingPlan>,
    /// Where the noise of training rounds is added.
    pub placement: tessera_model::Placement,
    /// Sites assumed to collude with the coordinator (reported).
    pub colluding_sites: u32,
}

/// Adaptive clipping (Andrew, Chien, Thakkar, McMahan, "Differentially
/// Private Learning with Adaptive Clipping", NeurIPS 2021): the clip norm
/// follows a quantile of the update norms, estimated privately.
#[derive(Debug, Clone)]
pub struct AdaptiveClippingPlan {
    /// Target quantile γ of the update norms.
    pub target_quantile: f64,
    /// Clip learning rate η_C.
    pub clip_learning_rate: f64,
    /// Noise std σ_b on the summed clipping bits (None: the coordinator's default).
    pub clip_count_noise_multiplier: Option<f64>,
}

/// Local and server training settings.
#[derive(Debug, Clone)]
pub struct TrainingPlan {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local batch size.
    pub batch_size: u32,
    /// Clip norm C.
    pub clip_norm: f64,
    /// Server learning rate.
    pub server_learning_rate: f64,
    /// Seed of local shuffling (not a privacy seed).
    pub seed: u64,
    /// The final model averages the last this many released models.
    pub average_last: u32,
}

/// The learning side of a launched federation beyond the local training
/// settings: the server optimizer, weight decay, federated evaluation, an
/// external trainer and an initial model.
#[derive(Debug, Clone)]
pub struct LearningPlan {
    /// Server optimizer name (`fedavg`, `fedavgm`, `fedadagrad`, `fedadam`,
    /// `fedyogi`).
    pub server_optimizer: String,
    /// Momentum β of `fedavgm`.
    pub server_momentum: f64,
    /// τ of the adaptive optimizers.
    pub server_tau: f64,
    /// L2 weight decay of local training.
    pub weight_decay: f64,
    /// Monotone constraints (feature → direction; empty: none).
    pub monotone: BTreeMap<String, tessera_model::Direction>,
    /// Federated evaluation every this many rounds (and after the last; 0: never).
    pub evaluate_every: u32,
    /// Noise multiplier of the evaluation sums under DP.
    pub evaluation_noise_multiplier: f64,
    /// Each site's held-out rows for federated evaluation, by site name.
    pub evaluation_data: BTreeMap<String, PathBuf>,
    /// Most rows one site's evaluation sums count (`[evaluation] max_rows`;
    /// None: the coordinator's default, `statistics.max_rows`).
    pub evaluation_max_rows: Option<f64>,
    /// An external trainer command every site runs (None: the built-in models).
    pub trainer: Option<Vec<String>>,
    /// The external trainer's timeout.
    pub trainer_timeout_seconds: f64,
    /// The federation's initial model file.
    pub initial_model: Option<PathBuf>,
}

impl Default for LearningPlan {
    /// FedAvg, no weight decay, no evaluation, the built-in trainer.
    fn default() -> Self {
        Self {
            server_optimizer: "fedavg".into(),
            server_momentum: 0.9,
            server_tau: 1e-3,
            weight_decay: 0.0,
            monotone: BTreeMap::new(),
            evaluate_every: 0,
            evaluation_noise_multiplier: 5.0,
            evaluation_data: BTreeMap::new(),
            evaluation_max_rows: None,
            trainer: None,
            trainer_timeout_seconds: 600.0,
            initial_model: None,
        }
    }
}

/// A site: its certificate name, data file and own privacy limits.
#[derive(Debug, Clone)]
pub struct SitePlan {
    /// Certificate name.
    pub name: String,
    /// Training CSV.
    pub data: PathBuf,
    /// The site's own ε budget.
    pub max_epsilon: Option<f64>,
    /// The smallest noise multiplier the site accepts.
    pub min_noise_multiplier: Option<f64>,
    /// Simulated fault: crash right after sending the shares of this
    /// aggregation (needs the `tessera-sim participant` entry point).
    pub crash_after_shares: Option<u64>,
    /// The site's own external trainer command, in place of the plan's
    /// (a hospital that trains with its own script among built-in ones).
    pub trainer: Option<Vec<String>>,
}

impl SitePlan {
    /// One site per training file of a written partition, with no privacy
    /// limits of its own.
    pub fn from_split(split: &crate::partition::Split) -> Vec<SitePlan> {
        split
            .sites
            .iter()
            .map(|s| SitePlan {
                name: s.name.clone(),
                data: s.path.clone(),
                max_epsilon: None,
                min_noise_multiplier: None,
                crash_after_shares: None,
                trainer: None,
            })
            .collect()
    }
}

/// Everything needed to launch a federation.
#[derive(Debug, Clone)]
pub struct FederationPlan {
    /// Working directory: PKI, configs, logs, coordinator output.
    pub dir: PathBuf,
    /// The sites.
    pub sites: Vec<SitePlan>,
    /// The task.
    pub task: TaskSpec,
    /// Planned training rounds.
    pub rounds: u32,
    /// Least participants per round.
    pub min_participants: usize,
    /// Training settings.
    pub training: TrainingPlan,
    /// Secure aggregation on.
    pub secagg: bool,
    /// Participants sign their advertised keys with their certificate keys
    /// (`[secagg] signed_keys`; needs `secagg`).
    pub signed_keys: bool,
    /// Differential privacy, if on.
    pub privacy: Option<PrivacyPlan>,
    /// Deadline of the training stage, in seconds.
    pub training_seconds: f64,
    /// Deadline of the other stages, in seconds.
    pub stage_seconds: f64,
    /// Fixed coordinator address, or None for a free loopback port.
    pub listen: Option<String>,
    /// Server optimizer, weight decay, evaluation, external trainer.
    pub learning: LearningPlan,
    /// What the coordinator does when the plan does not fit the sites' own
    /// privacy terms.
    pub site_budgets: tessera_coordinator::round::budgets::SiteBudgetPolicy,
}

/// Paths of a launched federation.
#[derive(Debug, Clone)]
pub struct Layout {
    /// PKI directory.
    pub pki: PathBuf,
    /// Logs directory.
    pub logs: PathBuf,
    /// Coordinator output directory.
    pub coordinator_out: PathBuf,
    /// Coordinator configuration file.
    pub coordinator_config: PathBuf,
    /// Participant configuration files, by name.
    pub participant_configs: BTreeMap<String, PathBuf>,
    /// Sites that crash after sending their shares of this aggregation
    /// (simulated faults; see [`crate::faults`]).
    pub crash_after_shares: BTreeMap<String, u64>,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            pki: dir.join("pki"),
            logs: dir.join("logs"),
            coordinator_out: dir.join("coordinator"),
            coordinator_config: dir.join("coordinator.toml"),
            participant_configs: BTreeMap::new(),
            crash_after_shares: BTreeMap::new(),
        }
    }

    /// The coordinator's SQLite store.
    pub fn store(&self) -> PathBuf {
        self.coordinator_out.join("coordinator.sqlite")
    }

    /// The file the coordinator writes its bound address to.
    pub fn address_file(&self) -> PathBuf {
        self.coordinator_out.join("address")
    }
}

/// Writes the PKI and the coordinator's configuration; returns the layout.
pub fn prepare(plan: &FederationPlan) -> anyhow::Result<Layout> {
    let layout = Layout::new(&plan.dir);
    std::fs::create_dir_all(&layout.logs)?;
    std::fs::create_dir_all(&layout.coordinator_out)?;
    let names: Vec<String> = plan.sites.iter().map(|s| s.name.clone()).collect();
    if !layout.pki.join("ca.key").exists() {
        tessera_certs::init(&layout.pki, &names, &[]).context("creating the development PKI")?;
    }
    let config = crate::configs::coordinator_config(plan, &layout)?;
    crate::configs::write_toml(&layout.coordinator_config, &config)?;
    Ok(layout)
}

/// Writes one participant's configuration for a coordinator at `address`.
pub fn write_participant_config(
    plan: &FederationPlan,
    layout: &mut Layout,
    site: &SitePlan,
    address: &str,
) -> anyhow::Result<PathBuf> {
    let dir = plan.dir.join("sites").join(&site.name);
    std::fs::create_dir_all(&dir)?;
    let config =
        crate::configs::participant_config(plan, layout, site, address, &dir.join("state"));
    let path = dir.join("participant.toml");
    crate::configs::write_toml(&path, &config)?;
    layout
        .participant_configs
        .insert(site.name.clone(), path.clone());
    match site.crash_after_shares {
        Some(round) => layout.crash_after_shares.insert(site.name.clone(), round),
        None => layout.crash_after_shares.remove(&site.name),
    };
    Ok(path)
}

/// Starts a program with its stderr and stdout going to `log`.
pub fn spawn(program: &[String], args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    Command::new(&program[0])
        .args(&program[1..])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .env(
            "TESSERA_LOG",
            std::env::var("TESSERA_LOG").unwrap_or_else(|_| "info".into()),
        )
        .spawn()
        .with_context(|| format!("starting {}", program[0]))
}

/// Starts the coordinator and waits until it has written its address.
pub fn start_coordinator(
    bins: &Binaries,
    layout: &Layout,
    log_name: &str,
) -> anyhow::Result<(Child, String)> {
    let _ = std::fs::remove_file(layout.address_file());
    let config = layout.coordinator_config.to_string_lossy().into_owned();
    let mut child = spawn(
        &bins.coordinator,
        &["serve", "--config", &config],
        &layout.logs.join(log_name),
    )?;
    let start = Instant::now();
    loop {
        if let Ok(addr) = std::fs::read_to_string(layout.address_file())
            && addr.ends_with('\n')
        {
            return Ok((child, addr.trim().to_owned()));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the coordinator exited with {status} before listening; see {}",
                layout.logs.join(log_name).display()
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("the coordinator did not start listening within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts one participant.
pub fn start_participant(
    bins: &Binaries,
    layout: &Layout,
    name: &str,
    log_name: &str,
) -> anyhow::Result<Child> {
    let config = layout
        .participant_configs
        .get(name)
        .with_context(|| format!("no configuration written for {name}"))?
        .to_string_lossy()
        .into_owned();
    let fault = layout.crash_after_shares.get(name).map(u64::to_string);
    let mut args: Vec<&str> = Vec::new();
    if let Some(round) = &fault {
        // Understood by `tessera-sim participant` (the default entry point).
        args.extend([crate::faults::CRASH_AFTER_SHARES_FLAG, round.as_str()]);
    }
    args.extend(["run", "--config", &config]);
    spawn(&bins.participant, &args, &layout.logs.join(log_name))
}
