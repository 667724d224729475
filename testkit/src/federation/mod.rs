//! Federations of real processes: a coordinator and participant processes
//! on loopback mutual TLS with a fresh development PKI, launched with
//! [`tessera_simulations::launch`], on temporary CSV splits of the bundled
//! breast-cancer data (see [`Setup`]) or on a plan a test makes itself.
//!
//! Every process a [`Federation`] starts is killed when it is dropped, so a
//! failing assertion never leaves processes behind; on failure the working
//! directory is kept and the tails of the logs are printed.

mod accounting;
mod records;
mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use tessera_simulations::launch::{self, Binaries, FederationPlan, Layout, SitePlan};

use crate::bins::BinDir;
use crate::files;
use crate::process::{self, PATIENCE, Processes};

pub use accounting::Accounting;
pub use records::RoundsRow;
pub use setup::{Setup, breast_cancer_split, plain_plan};

/// The `tessera-sim coordinator …` and `tessera-sim participant …` entry
/// points of the `tessera-sim` binary at `sim` (the same code as the
/// stand-alone binaries).
pub fn sim_entry_points(sim: impl AsRef<Path>) -> Binaries {
    let sim = sim.as_ref().to_string_lossy().into_owned();
    Binaries {
        coordinator: vec![sim.clone(), "coordinator".into()],
        participant: vec![sim, "participant".into()],
    }
}

/// The stand-alone `tessera-coordinator` and `tessera-participant`
/// binaries in `dir`, built once if missing (see [`crate::bins`]).
pub fn standalone(dir: &BinDir) -> Binaries {
    let paths = dir.require(&["tessera-coordinator", "tessera-participant"]);
    let [coordinator, participant] =
        [&paths[0], &paths[1]].map(|p| vec![p.to_string_lossy().into_owned()]);
    Binaries {
        coordinator,
        participant,
    }
}

/// A federation in a working directory, its processes started on demand.
pub struct Federation {
    temp: Option<tempfile::TempDir>,
    /// The plan the configuration was written from (its sites are the allow-list).
    pub plan: FederationPlan,
    /// Where things are.
    pub layout: Layout,
    /// How the programs are started.
    pub bins: Binaries,
    /// The coordinator's address, `127.0.0.1:PORT` (empty before it listens,
    /// unless the plan fixes it).
    pub address: String,
    /// Training CSV of each site, by name.
    pub data: BTreeMap<String, PathBuf>,
    test_csv: Option<PathBuf>,
    coordinator: Option<Child>,
    coordinator_status: Option<ExitStatus>,
    coordinator_starts: u32,
    participants: Processes,
    participant_restarts: BTreeMap<String, u32>,
}

impl Federation {
    /// Deals the data, makes the PKI and the coordinator's configuration as
    /// `setup` says. Starts nothing.
    pub fn prepare(setup: &Setup, bins: Binaries) -> Self {
        let (temp, root) = match &setup.dir {
            Some(dir) => (None, files::fresh_dir(dir)),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("tessera-federation-")
                    .tempdir()
                    .expect("creating a temporary directory");
                let root = temp.path().to_path_buf();
                (Some(temp), root)
            }
        };
        let decided = setup::decide(setup, &root);
        let mut fed = Self::from_plan(decided.plan, bins);
        fed.temp = temp;
        fed.test_csv = Some(decided.test_csv);
        fed
    }

    /// [`Federation::prepare`], then starts the coordinator. No participant
    /// is started yet.
    pub fn start(setup: &Setup, bins: Binaries) -> Self {
        let mut fed = Self::prepare(setup, bins);
        fed.start_coordinator();
        fed
    }

    /// Makes the PKI and the coordinator's configuration of a plan the test
    /// made (its directory is the caller's, kept). Starts nothing.
    pub fn from_plan(plan: FederationPlan, bins: Binaries) -> Self {
        let layout = launch::prepare(&plan).expect("writing the PKI and the configuration");
        let data = plan
            .sites
            .iter()
            .map(|s| (s.name.clone(), s.data.clone()))
            .collect();
        Self {
            temp: None,
            address: plan.listen.clone().unwrap_or_default(),
            plan,
            layout,
            bins,
            data,
            test_csv: None,
            coordinator: None,
            coordinator_status: None,
            coordinator_starts: 0,
            participants: Processes::new(),
            participant_restarts: BTreeMap::new(),
        }
    }

    /// The working directory.
    pub fn root(&self) -> &Path {
        &self.plan.dir
    }

    /// The pooled held-out test CSV.
    ///
    /// # Panics
    /// For a federation made from a plan, which has none.
    pub fn test_csv(&self) -> &Path {
        self.test_csv
            .as_deref()
            .expect("a federation from a Setup has a pooled test split")
    }

    /// The site plan of allow-listed site `name`.
    pub fn site(&self, name: &str) -> SitePlan {
        self.plan
            .sites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name} in the plan"))
            .clone()
    }

    /// The allow-listed site names, in plan order.
    pub fn site_names(&self) -> Vec<String> {
        self.plan.sites.iter().map(|s| s.name.clone()).collect()
    }

    /// Starts a coordinator process and waits until it listens; its log is
    /// `logs/coordinator-N.log` for the N-th start.
    pub fn start_coordinator(&mut self) {
        self.coordinator_starts += 1;
        let log = format!("coordinator-{}.log", self.coordinator_starts);
        let (child, address) = launch::start_coordinator(&self.bins, &self.layout, &log)
            .expect("starting the coordinator");
        self.coordinator = Some(child);
        self.coordinator_status = None;
        self.address = address;
    }

    /// Starts a coordinator process without waiting for anything (it may be
    /// killed before it even listens); its log is `coordinator-N.log`.
    pub fn spawn_coordinator(&mut self) {
        self.coordinator_starts += 1;
        let log = self.coordinator_log_path(self.coordinator_starts);
        let config = self
            .layout
            .coordinator_config
            .to_string_lossy()
            .into_owned();
        let child = launch::spawn(
            &self.bins.coordinator,
            &["serve", "--config", &config],
            &log,
        )
        .expect("starting the coordinator");
        self.coordinator = Some(child);
        self.coordinator_status = None;
    }

    /// How many coordinator processes were started.
    pub fn coordinator_starts(&self) -> u32 {
        self.coordinator_starts
    }

    /// Process id of the running coordinator.
    ///
    /// # Panics
    /// If none runs.
    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator
            .as_ref()
            .expect("a running coordinator")
            .id()
    }

    /// The exit status of the latest coordinator process if it has exited
    /// (it is then reaped), `None` while it runs.
    pub fn poll_coordinator(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.coordinator.as_mut()
            && let Some(status) = child.try_wait().expect("polling the coordinator")
        {
            self.coordinator = None;
            self.coordinator_status = Some(status);
        }
        self.coordinator_status
    }

    /// Waits for the coordinator to exit; fails the test after [`PATIENCE`].
    pub fn wait_coordinator(&mut self) -> ExitStatus {
        self.wait_coordinator_within(PATIENCE)
    }

    /// Waits for the coordinator to exit; fails the test after `limit`.
    pub fn wait_coordinator_within(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.poll_coordinator() {
            return status;
        }
        let child = self
            .coordinator
            .as_mut()
            .expect("a coordinator was started");
        match process::wait_within(child, limit) {
            Some(status) => {
                self.coordinator = None;
                self.coordinator_status = Some(status);
                status
            }
            None => panic!(
                "the coordinator did not exit within {limit:?}; its log:\n{}",
                self.coordinator_log()
            ),
        }
    }

    /// Kills the coordinator (SIGKILL) and reaps it.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut child) = self.coordinator.take() {
            self.coordinator_status = process::kill_and_reap(&mut child);
        }
    }

    /// Writes the configuration of a participant for `site` (certificate
    /// and key `pki/<site.name>.crt|key`) and the current address.
    pub fn write_participant_config(&mut self, site: &SitePlan) -> PathBuf {
        assert!(!self.address.is_empty(), "no coordinator address");
        launch::write_participant_config(&self.plan, &mut self.layout, site, &self.address)
            .expect("writing a participant configuration")
    }

    /// Writes the configuration of a participant for `site` with `address`
    /// (`host:port`) as the coordinator's: e.g. a proxy in front of it.
    pub fn write_participant_config_at(&mut self, site: &SitePlan, address: &str) -> PathBuf {
        launch::write_participant_config(&self.plan, &mut self.layout, site, address)
            .expect("writing a participant configuration")
    }

    /// The coordinator's `host:port` (empty before it listens).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Starts participant `name` from the configuration already written;
    /// its log is `logs/<name>.log`.
    pub fn launch_participant(&mut self, name: &str) {
        let child =
            launch::start_participant(&self.bins, &self.layout, name, &format!("{name}.log"))
                .expect("starting a participant");
        self.participants.push(name, child);
    }

    /// Starts participant `name` from the configuration already written,
    /// with `faults` (flags of `tessera-sim participant`, see
    /// `tessera_simulations::faults`) before its own command line; its log
    /// is `logs/<name>.log`.
    pub fn launch_participant_with(&mut self, name: &str, faults: &[&str]) {
        let config = self.participant_config(name).to_string_lossy().into_owned();
        let mut args = faults.to_vec();
        args.extend(["run", "--config", &config]);
        let child = launch::spawn(
            &self.bins.participant,
            &args,
            &self.layout.logs.join(format!("{name}.log")),
        )
        .expect("starting a participant");
        self.participants.push(name, child);
    }

    /// Writes the configuration of a participant process for `site` and
    /// starts it.
    pub fn start_participant(&mut self, site: &SitePlan) {
        self.write_participant_config(site);
        self.launch_participant(&site.name);
    }

    /// Starts allow-listed site `name` with its own data and certificate.
    pub fn start_site(&mut self, name: &str) {
        let site = self.site(name);
        self.start_participant(&site);
    }

    /// Starts every site of the plan, in order.
    pub fn start_participants(&mut self) {
        for site in self.plan.sites.clone() {
            self.start_participant(&site);
        }
    }

    /// The configuration file of participant `name`.
    pub fn participant_config(&self, name: &str) -> PathBuf {
        self.layout.participant_configs[name].clone()
    }

    /// Waits for participant `name` to exit; fails the test after [`PATIENCE`].
    pub fn wait_participant(&mut self, name: &str) -> ExitStatus {
        self.wait_participant_within(name, PATIENCE)
    }

    /// Waits for participant `name` to exit; fails the test after `limit`.
    pub fn wait_participant_within(&mut self, name: &str, limit: Duration) -> ExitStatus {
        let child = self.participants.get_mut(name);
        match process::wait_within(child, limit) {
            Some(status) => status,
            None => panic!(
                "participant {name} did not exit within {limit:?}; its log:\n{}",
                self.log(name)
            ),
        }
    }

    /// Waits for every participant started to exit, each within `limit`;
    /// their statuses by name, in start order.
    pub fn wait_participants(&mut self, limit: Duration) -> Vec<(String, ExitStatus)> {
        self.participants
            .names()
            .into_iter()
            .map(|name| {
                let status = self.wait_participant_within(&name, limit);
                (name, status)
            })
            .collect()
    }

    /// The participants that have exited, with their statuses.
    pub fn exited_participants(&mut self) -> Vec<(String, ExitStatus)> {
        self.participants.exited()
    }

    /// Kills participant `name` (SIGKILL) and reaps it.
    pub fn kill_participant(&mut self, name: &str) -> ExitStatus {
        self.participants.kill(name)
    }

    /// Kills participant `name` (SIGKILL) and starts it again from the same
    /// configuration (its own ledger and state kept, as after a crash and a
    /// restart by its operator); the new process logs to
    /// `logs/<name>-restart-N.log`.
    pub fn restart_participant(&mut self, name: &str) {
        self.participants.remove(name);
        let restarts = self
            .participant_restarts
            .entry(name.to_owned())
            .or_default();
        *restarts += 1;
        let log = format!("{name}-restart-{restarts}.log");
        let child = launch::start_participant(&self.bins, &self.layout, name, &log)
            .expect("restarting a participant");
        self.participants.push(name, child);
    }

    /// Process id of participant `name`.
    pub fn participant_pid(&self, name: &str) -> u32 {
        self.participants.get(name).id()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.participants.kill_all();
        self.kill_coordinator();
        if !std::thread::panicking() {
            return;
        }
        match self.temp.take() {
            Some(temp) => eprintln!("federation directory kept: {}", temp.keep().display()),
            None => eprintln!("federation directory: {}", self.plan.dir.display()),
        }
        // The participants' logs and the latest coordinator's.
        let mut logs: Vec<PathBuf> = self
            .participants
            .names()
            .iter()
            .map(|n| self.layout.logs.join(format!("{n}.log")))
            .collect();
        if self.coordinator_starts > 0 {
            logs.push(self.coordinator_log_path(self.coordinator_starts));
        }
        files::print_tails(&logs, 15);
    }
}
