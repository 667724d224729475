//! Harness of the federation integration tests: real `tessera-coordinator`
//! and `tessera-participant` processes on loopback mutual TLS, launched with
//! [`tessera_simulations::launch`], on the bundled breast-cancer data dealt
//! IID over a few sites with a pooled held-out test split.
//!
//! Every process a [`Federation`] starts is killed when it is dropped, so a
//! failing assertion never leaves processes behind; on failure the working
//! directory is kept and the tails of the logs are printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use tessera_coordinator::store::{RoundRecord, RoundStatus, Store};
use tessera_model::{LabelRule, ModelKind, TaskSpec};
use tessera_simulations::experiment::RunArgs;
use tessera_simulations::launch::{self, Binaries, FederationPlan, Layout, SitePlan};

/// How long any single wait may take before the test fails. Generous: the
/// machine may be shared and loaded; nothing here measures speed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(180);

/// The stand-alone `tessera-coordinator` and `tessera-participant` binaries.
///
/// They are looked for next to `tessera-sim` (the directory of
/// `CARGO_BIN_EXE_tessera-sim`): a workspace-wide `cargo test` builds every
/// package's binaries there. When they are missing (for example with
/// `cargo test -p tessera-simulations` on a fresh target directory) they are
/// built once with `cargo build --bin tessera-coordinator --bin
/// tessera-participant`, same profile and target directory. Binaries that
/// are present are used as they are: after changing the coordinator or the
/// participant, run the tests from the workspace root (as CI does) or build
/// the two binaries first.
pub(crate) fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let sim = PathBuf::from(env!("CARGO_BIN_EXE_tessera-sim"));
        let dir = sim
            .parent()
            .expect("tessera-sim lives in a directory")
            .to_path_buf();
        let exe = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let coordinator = exe("tessera-coordinator");
        let participant = exe("tessera-participant");
        if !(coordinator.is_file() && participant.is_file()) {
            build_binaries(&dir);
        }
        for b in [&coordinator, &participant] {
            assert!(b.is_file(), "{} is missing after building it", b.display());
        }
        Binaries {
            coordinator: vec![coordinator.to_string_lossy().into_owned()],
            participant: vec![participant.to_string_lossy().into_owned()],
        }
    })
}

/// Builds the two binaries into `dir` (`<target>/<profile>` or
/// `<target>/<triple>/<profile>`), the directory `tessera-sim` was built in.
fn build_binaries(dir: &Path) {
    let profile_dir = dir
        .file_name()
        .expect("a profile directory")
        .to_string_lossy()
        .into_owned();
    let profile = if profile_dir == "debug" {
        "dev".to_owned()
    } else {
        profile_dir
    };
    let mut target_dir = dir.parent().expect("a target directory").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--bin",
        "tessera-coordinator",
        "--bin",
        "tessera-participant",
        "--profile",
        &profile,
    ]);
    // Cargo marks the root of a target directory with CACHEDIR.TAG; without
    // it, `dir` is `<target>/<triple>/<profile>`.
    if !target_dir.join("CACHEDIR.TAG").exists() {
        let triple = target_dir
            .file_name()
            .expect("a target triple directory")
            .to_string_lossy()
            .into_owned();
        cmd.args(["--target", &triple]);
        target_dir = target_dir
            .parent()
            .expect("a target directory")
            .to_path_buf();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!(
        "building tessera-coordinator and tessera-participant ({profile}) into {}",
        target_dir.display()
    );
    let status = cmd
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace)
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the two binaries failed: {status}"
    );
}

/// The bundled breast-cancer data.
pub(crate) fn breast_cancer() -> PathBuf {
    tessera_simulations::bundled_data().join("breast_cancer_wisconsin.csv")
}

/// The breast-cancer task: every column but `diagnosis`, malignant (`M`) positive.
pub(crate) fn breast_cancer_task() -> TaskSpec {
    let header =
        tessera_model::data::read_header(&breast_cancer()).expect("reading the bundled data");
    TaskSpec {
        model: ModelKind::Logistic,
        features: header.into_iter().filter(|h| h != "diagnosis").collect(),
        label: "diagnosis".into(),
        positive: LabelRule::Equals("M".into()),
    }
}

/// `tessera-sim run`'s arguments.
#[derive(Debug, Parser)]
struct SimArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// The shape of a test federation.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Sites the data is dealt to (`site-1` …), all on the allow-list.
    pub(crate) sites: usize,
    /// Planned training rounds.
    pub(crate) rounds: u32,
    /// Least participants per round.
    pub(crate) min_participants: usize,
    /// Deadline of each secure-aggregation stage, seconds.
    pub(crate) stage_seconds: f64,
    /// Deadline of local training, seconds.
    pub(crate) training_seconds: f64,
}

impl Setup {
    /// `sites` sites, all needed, generous deadlines.
    pub(crate) fn new(sites: usize, rounds: u32) -> Self {
        Self {
            sites,
            rounds,
            min_participants: sites,
            stage_seconds: 30.0,
            training_seconds: 60.0,
        }
    }
}

/// One row of the coordinator's `rounds.csv`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoundsRow {
    /// Aggregation number.
    pub(crate) round: u64,
    /// Training round (None for the statistics round).
    pub(crate) training_round: Option<u32>,
    /// `statistics` or `training`.
    pub(crate) kind: String,
    /// `released` or `aborted`.
    pub(crate) status: String,
    /// Participants selected.
    pub(crate) cohort: usize,
    /// Participants whose inputs are in the sum.
    pub(crate) contributors: usize,
    /// Participants that dropped out.
    pub(crate) dropped: usize,
}

/// A running federation in a temporary directory.
pub(crate) struct Federation {
    dir: Option<tempfile::TempDir>,
    /// The plan the configuration was written from (its sites are the allow-list).
    pub(crate) plan: FederationPlan,
    /// Where things are.
    pub(crate) layout: Layout,
    /// The coordinator's address, `127.0.0.1:PORT`.
    pub(crate) address: String,
    /// Training CSV of each site, by name.
    pub(crate) data: BTreeMap<String, PathBuf>,
    /// The pooled held-out test CSV.
    pub(crate) test_csv: PathBuf,
    coordinator: Option<Child>,
    coordinator_status: Option<ExitStatus>,
    participants: BTreeMap<String, Child>,
}

impl Federation {
    /// Deals the data, makes the PKI and the coordinator's configuration, and
    /// starts the coordinator. No participant is started yet.
    pub(crate) fn start(setup: &Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tessera-federation-")
            .tempdir()
            .expect("creating a temporary directory");
        let root = dir.path().to_path_buf();
        // The same path as `tessera-sim run`: its arguments decide the split,
        // the task and the training defaults; the test then tightens the
        // federation's shape.
        let data = breast_cancer();
        let sites = setup.sites.to_string();
        let rounds = setup.rounds.to_string();
        let args = SimArgs::parse_from([
            "tessera-sim-run",
            "--data",
            data.to_str().expect("a UTF-8 path"),
            "--label",
            "diagnosis",
            "--partition",
            "iid",
            "--participants",
            &sites,
            "--rounds",
            &rounds,
            "--seed",
            "7",
        ]);
        let spec = args.run.into_spec().expect("deciding the run");
        let split = spec
            .data
            .write(&root.join("data"))
            .expect("writing the data");
        let data: BTreeMap<String, PathBuf> = split
            .sites
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        let mut plan = spec.plan;
        plan.dir = root.clone();
        plan.sites = SitePlan::from_split(&split);
        plan.min_participants = setup.min_participants;
        plan.stage_seconds = setup.stage_seconds;
        plan.training_seconds = setup.training_seconds;
        // The final model is then the last released checkpoint.
        plan.training.average_last = 1;
        assert!(plan.secagg && plan.privacy.is_none());
        assert_eq!(plan.task, breast_cancer_task());
        let layout = launch::prepare(&plan).expect("writing the PKI and the configuration");
        let (coordinator, address) =
            launch::start_coordinator(binaries(), &layout, "coordinator.log")
                .expect("starting the coordinator");
        Self {
            dir: Some(dir),
            plan,
            layout,
            address,
            data,
            test_csv: split.test_path,
            coordinator: Some(coordinator),
            coordinator_status: None,
            participants: BTreeMap::new(),
        }
    }

    /// The working directory.
    pub(crate) fn root(&self) -> &Path {
        &self.plan.dir
    }

    /// The site plan of allow-listed site `name`.
    pub(crate) fn site(&self, name: &str) -> SitePlan {
        self.plan
            .sites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name} in the plan"))
            .clone()
    }

    /// Starts allow-listed site `name` with its own data and certificate.
    pub(crate) fn start_site(&mut self, name: &str) {
        let site = self.site(name);
        self.start_participant(&site);
    }

    /// Starts a participant process for `site`: its certificate and key are
    /// `pki/<site.name>.crt|key`, its log `logs/<site.name>.log`.
    pub(crate) fn start_participant(&mut self, site: &SitePlan) {
        launch::write_participant_config(&self.plan, &mut self.layout, site, &self.address)
            .expect("writing a participant configuration");
        let child = launch::start_participant(
            binaries(),
            &self.layout,
            &site.name,
            &format!("{}.log", site.name),
        )
        .expect("starting a participant");
        self.participants.insert(site.name.clone(), child);
    }

    /// Waits for participant `name` to exit; fails the test after [`PATIENCE`].
    pub(crate) fn wait_participant(&mut self, name: &str) -> ExitStatus {
        let start = Instant::now();
        loop {
            let child = self
                .participants
                .get_mut(name)
                .unwrap_or_else(|| panic!("no participant {name} was started"));
            if let Some(status) = child.try_wait().expect("polling a participant") {
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "participant {name} did not exit within {PATIENCE:?}; its log:\n{}",
                    self.log(name)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills participant `name` with SIGKILL and reaps it.
    pub(crate) fn kill_participant(&mut self, name: &str) -> ExitStatus {
        let child = self
            .participants
            .get_mut(name)
            .unwrap_or_else(|| panic!("no participant {name} was started"));
        child.kill().expect("killing a participant");
        child.wait().expect("reaping a participant")
    }

    /// Process id of participant `name`.
    pub(crate) fn participant_pid(&self, name: &str) -> u32 {
        self.participants
            .get(name)
            .unwrap_or_else(|| panic!("no participant {name} was started"))
            .id()
    }

    /// Waits for the coordinator to exit; fails the test after [`PATIENCE`].
    pub(crate) fn wait_coordinator(&mut self) -> ExitStatus {
        if let Some(s) = self.coordinator_status {
            return s;
        }
        let start = Instant::now();
        let child = self.coordinator.as_mut().expect("the coordinator");
        loop {
            if let Some(status) = child.try_wait().expect("polling the coordinator") {
                self.coordinator_status = Some(status);
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "the coordinator did not exit within {PATIENCE:?}; its log:\n{}",
                    self.coordinator_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `cond` every 20 ms until it holds; fails the test after [`PATIENCE`]
    /// or if the coordinator exits first.
    pub(crate) fn wait_for<T>(&mut self, what: &str, cond: impl FnMut(&Self) -> Option<T>) -> T {
        match self.wait_for_while_running(what, cond) {
            Some(v) => v,
            None => panic!(
                "the coordinator exited while waiting for {what}; its log:\n{}",
                self.coordinator_log()
            ),
        }
    }

    /// Polls `cond` every 20 ms until it holds (`Some`) or the coordinator
    /// exits (`None`); fails the test after [`PATIENCE`].
    pub(crate) fn wait_for_while_running<T>(
        &mut self,
        what: &str,
        mut cond: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = cond(self) {
                return Some(v);
            }
            if self.coordinator_status.is_some() {
                return None;
            }
            if let Some(status) = self
                .coordinator
                .as_mut()
                .and_then(|c| c.try_wait().expect("polling the coordinator"))
            {
                self.coordinator_status = Some(status);
                // One last look: the condition may have become true just before the exit.
                return cond(self);
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "gave up waiting for {what} after {PATIENCE:?}; coordinator log:\n{}",
                    self.coordinator_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the coordinator has seen (accepted a session from) every one of `names`.
    pub(crate) fn wait_joined(&mut self, names: &[&str]) {
        let what = format!("{names:?} to join");
        self.wait_for(&what, |f| {
            let seen: Vec<String> = f
                .open_store()?
                .participants()
                .ok()?
                .into_iter()
                .map(|p| p.name)
                .collect();
            names
                .iter()
                .all(|n| seen.iter().any(|s| s == n))
                .then_some(())
        });
    }

    fn open_store(&self) -> Option<Store> {
        Store::open_read_only(&self.layout.store()).ok()
    }

    /// Every round the coordinator's store holds.
    pub(crate) fn store_rounds(&self) -> Vec<RoundRecord> {
        Store::open_read_only(&self.layout.store())
            .expect("opening the coordinator's store")
            .rounds()
            .expect("reading the rounds")
    }

    /// Rounds in the store, or none if it cannot be read yet.
    pub(crate) fn try_store_rounds(&self) -> Vec<RoundRecord> {
        self.open_store()
            .and_then(|s| s.rounds().ok())
            .unwrap_or_default()
    }

    /// The store's `finish_reason`.
    pub(crate) fn finish_reason(&self) -> Option<String> {
        Store::open_read_only(&self.layout.store())
            .expect("opening the coordinator's store")
            .meta("finish_reason")
            .expect("reading the store's meta")
    }

    /// The coordinator's `rounds.csv`, parsed (checks its header).
    pub(crate) fn rounds_csv(&self) -> Vec<RoundsRow> {
        let path = self.layout.coordinator_out.join("rounds.csv");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm"
            ),
            "header of rounds.csv"
        );
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 10, "rounds.csv line {line:?}");
                let num = |i: usize| -> usize {
                    f[i].parse()
                        .unwrap_or_else(|_| panic!("rounds.csv line {line:?}"))
                };
                RoundsRow {
                    round: num(0) as u64,
                    training_round: (!f[1].is_empty()).then(|| num(1) as u32),
                    kind: f[2].to_owned(),
                    status: f[3].to_owned(),
                    cohort: num(4),
                    contributors: num(5),
                    dropped: num(6),
                }
            })
            .collect()
    }

    /// A log file's text (`logs/<name>.log`), terminal colour codes removed.
    pub(crate) fn log(&self, name: &str) -> String {
        let path = self.layout.logs.join(format!("{name}.log"));
        strip_ansi(&std::fs::read_to_string(&path).unwrap_or_default())
    }

    /// The coordinator's log.
    pub(crate) fn coordinator_log(&self) -> String {
        self.log("coordinator")
    }

    /// Whether the coordinator has written its final model.
    pub(crate) fn model_path(&self) -> PathBuf {
        self.layout.coordinator_out.join("model.safetensors")
    }

    /// The common checks of a federation that completed its planned training
    /// rounds with the participants `good` (all of which exited 0):
    /// coordinator exit 0, the store's finish reason, one released training
    /// round per planned round in the store and in `rounds.csv`, none of
    /// them with a contributor outside `good` and `earlier` (participants
    /// that contributed before they went away).
    pub(crate) fn assert_completed_with(&mut self, good: &[&str], earlier: &[&str]) {
        let rounds = self.plan.rounds;
        for name in good {
            let status = self.wait_participant(name);
            assert_eq!(
                status.code(),
                Some(0),
                "participant {name} exited with {status}; its log:\n{}",
                self.log(name)
            );
            let log = self.log(name);
            assert!(
                log.contains(&format!("federation finished after {rounds} rounds")),
                "participant {name} does not report the end of the federation:\n{log}"
            );
        }
        let status = self.wait_coordinator();
        assert!(
            status.success(),
            "the coordinator exited with {status}; its log:\n{}",
            self.coordinator_log()
        );
        assert_eq!(
            self.finish_reason().as_deref(),
            Some(format!("all {rounds} planned rounds completed").as_str())
        );
        let released: Vec<RoundRecord> = self
            .store_rounds()
            .into_iter()
            .filter(|r| r.status == RoundStatus::Released && r.training_round.is_some())
            .collect();
        let numbers: Vec<u32> = released.iter().filter_map(|r| r.training_round).collect();
        assert_eq!(
            numbers,
            (1..=rounds).collect::<Vec<_>>(),
            "released training rounds in the store"
        );
        for r in &released {
            assert!(
                r.contributors.len() >= self.plan.min_participants,
                "round {} released with too few contributors: {r:?}",
                r.round
            );
            for c in &r.contributors {
                assert!(
                    good.contains(&c.as_str()) || earlier.contains(&c.as_str()),
                    "round {} counts {c}, which is not one of {good:?} {earlier:?}: {r:?}",
                    r.round
                );
            }
        }
        let csv: Vec<u32> = self
            .rounds_csv()
            .iter()
            .filter(|r| r.kind == "training" && r.status == "released")
            .filter_map(|r| r.training_round)
            .collect();
        assert_eq!(
            csv,
            (1..=rounds).collect::<Vec<_>>(),
            "released training rounds in rounds.csv"
        );
        assert!(self.model_path().is_file(), "no final model written");
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for child in self
            .participants
            .values_mut()
            .chain(self.coordinator.as_mut())
        {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("federation directory kept: {}", kept.display());
            if let Ok(entries) = std::fs::read_dir(kept.join("logs")) {
                for e in entries.flatten() {
                    let text = strip_ansi(&std::fs::read_to_string(e.path()).unwrap_or_default());
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    eprintln!("--- {} (last lines) ---", e.path().display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// Removes terminal colour sequences (`ESC [ … letter`) from log text.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
