//! What a test decides about its federation, and the plan made from it:
//! the bundled breast-cancer data dealt IID over the sites (temporary CSV
//! splits with a pooled held-out test file), the rest decided exactly as
//! `tessera-sim run` decides it from its command line.

use std::path::{Path, PathBuf};

use clap::Parser;
use tessera_coordinator::round::budgets::SiteBudgetPolicy;
use tessera_simulations::experiment::{PrivacyArgs, RunArgs};
use tessera_simulations::launch::{FederationPlan, SitePlan, TrainingPlan};
use tessera_simulations::partition::{self, Split};

use crate::data::{breast_cancer_path, breast_cancer_task};

/// The shape of a test federation on the breast-cancer data.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Sites the data is dealt to (`site-1` …), all on the allow-list.
    pub sites: usize,
    /// Planned training rounds.
    pub rounds: u32,
    /// Least participants per round.
    pub min_participants: usize,
    /// Deadline of each secure-aggregation stage, seconds.
    pub stage_seconds: f64,
    /// Deadline of local training, seconds.
    pub training_seconds: f64,
    /// Seed of the split, the initial model and local shuffling.
    pub seed: u64,
    /// Privacy flags, as `tessera-sim run` takes them (default: none).
    pub privacy: PrivacyArgs,
    /// A fixed coordinator address (needed to restart it on the same port).
    pub listen: Option<String>,
    /// How many of the last released models the final model averages
    /// (None: `tessera-sim run`'s default).
    pub average_last: Option<u32>,
    /// Each site's own privacy limits by index: (`max_epsilon`,
    /// `min_noise_multiplier`); sites past the end have none.
    pub site_limits: Vec<(Option<f64>, Option<f64>)>,
    /// What the coordinator does when its plan does not fit those limits
    /// (default: refuse to start).
    pub site_budgets: SiteBudgetPolicy,
    /// The working directory, emptied first and kept after the run; None
    /// for a temporary directory, removed unless the test fails.
    pub dir: Option<PathBuf>,
}

impl Setup {
    /// `sites` sites without privacy, all needed every round, generous
    /// deadlines, seed 7; the final model is the last released one.
    pub fn new(sites: usize, rounds: u32) -> Self {
        Self {
            sites,
            rounds,
            min_participants: sites,
            stage_seconds: 30.0,
            training_seconds: 60.0,
            seed: 7,
            privacy: PrivacyArgs::default(),
            listen: None,
            average_last: Some(1),
            site_limits: Vec::new(),
            site_budgets: SiteBudgetPolicy::default(),
            dir: None,
        }
    }

    /// `sites` sites with a fixed noise multiplier `sigma`, at least three
    /// per round, seed 1, working in `dir`.
    pub fn private(sites: usize, rounds: u32, sigma: f64, dir: impl Into<PathBuf>) -> Self {
        Self {
            sites,
            rounds,
            min_participants: 3,
            stage_seconds: 20.0,
            training_seconds: 30.0,
            seed: 1,
            privacy: PrivacyArgs {
                noise_multiplier: Some(sigma),
                ..PrivacyArgs::default()
            },
            listen: None,
            average_last: None,
            site_limits: Vec::new(),
            site_budgets: SiteBudgetPolicy::default(),
            dir: Some(dir.into()),
        }
    }
}

/// The options of `tessera-sim run`, parsed from a command line.
#[derive(Debug, Parser)]
struct RunCli {
    #[command(flatten)]
    run: RunArgs,
}

/// A decided federation: its plan (sites on their CSV files under
/// `root/data`) and its pooled test file.
pub(super) struct Decided {
    pub(super) plan: FederationPlan,
    pub(super) test_csv: PathBuf,
}

/// Decides the federation of `setup` in `root` as `tessera-sim run` would
/// from its command line (then the test's deadlines, address and site
/// limits), and writes the data split.
pub(super) fn decide(setup: &Setup, root: &Path) -> Decided {
    let mut cli = vec![
        "tessera-sim-run".to_owned(),
        "--out".into(),
        root.to_string_lossy().into_owned(),
        "--data".into(),
        breast_cancer_path().to_string_lossy().into_owned(),
        "--label".into(),
        "diagnosis".into(),
        "--partition".into(),
        "iid".into(),
        "--participants".into(),
        setup.sites.to_string(),
        "--rounds".into(),
        setup.rounds.to_string(),
        "--model".into(),
        "logistic".into(),
        "--seed".into(),
        setup.seed.to_string(),
        "--min-participants".into(),
        setup.min_participants.to_string(),
    ];
    if let Some(k) = setup.average_last {
        cli.extend(["--average-last".to_owned(), k.to_string()]);
    }
    let mut args = RunCli::parse_from(cli).run;
    args.privacy = setup.privacy.clone();
    let spec = args.into_spec().expect("deciding the run");
    let split = spec
        .data
        .write(&root.join("data"))
        .expect("writing the data");
    let mut plan = spec.plan;
    plan.sites = SitePlan::from_split(&split);
    for (site, (max_epsilon, min_noise_multiplier)) in plan.sites.iter_mut().zip(&setup.site_limits)
    {
        site.max_epsilon = *max_epsilon;
        site.min_noise_multiplier = *min_noise_multiplier;
    }
    plan.site_budgets = setup.site_budgets;
    plan.training_seconds = setup.training_seconds;
    plan.stage_seconds = setup.stage_seconds;
    plan.listen = setup.listen.clone();
    assert_eq!(plan.dir, root);
    assert!(plan.secagg);
    assert_eq!(plan.privacy.is_some(), setup.privacy.enabled());
    assert_eq!(plan.task, breast_cancer_task());
    Decided {
        plan,
        test_csv: split.test_path,
    }
}

/// The breast-cancer data dealt IID (stratified by label) over `sites`
/// sites with 20% of each held out, written under `dir` as
/// `train/site-N.csv` and the pooled `test.csv`.
///
/// # Panics
/// If the split cannot be made or written.
pub fn breast_cancer_split(dir: &Path, sites: usize, seed: u64) -> Split {
    partition::iid(&breast_cancer_path(), "diagnosis", sites, 0.2, seed)
        .expect("splitting the breast-cancer data")
        .write(dir)
        .expect("writing the split")
}

/// A plan by hand for `sites` in `dir`: the breast-cancer task, 3 rounds
/// of at least 3 participants, `tessera-sim run`'s training without
/// privacy (2 local epochs at 0.1, batch 16, clip norm 10, seed 1, the
/// final model the last one), secure aggregation without signed keys,
/// deadlines of 60 s (training) and 30 s (other stages).
pub fn plain_plan(dir: &Path, sites: &[SitePlan]) -> FederationPlan {
    FederationPlan {
        dir: dir.to_path_buf(),
        sites: sites.to_vec(),
        task: breast_cancer_task(),
        rounds: 3,
        min_participants: 3,
        training: TrainingPlan {
            local_epochs: 2,
            learning_rate: 0.1,
            batch_size: 16,
            clip_norm: 10.0,
            server_learning_rate: 1.0,
            seed: 1,
            average_last: 1,
        },
        secagg: true,
        signed_keys: false,
        privacy: None,
        training_seconds: 60.0,
        stage_seconds: 30.0,
        listen: None,
        learning: Default::default(),
        site_budgets: SiteBudgetPolicy::default(),
    }
}
