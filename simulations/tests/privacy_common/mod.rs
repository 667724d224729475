//! Process helpers of the privacy acceptance tests: a real federation (the
//! `tessera-sim coordinator …` and `tessera-sim participant …` processes over
//! loopback mutual TLS) on the bundled breast-cancer data, a guard that kills
//! every child when a test fails, the operator commands, and log reading.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use tessera_simulations::experiment::{PrivacyArgs, RunArgs};
use tessera_simulations::launch::{self, Binaries, FederationPlan, Layout, SitePlan};

/// The `tessera-sim` binary built for these tests.
pub(crate) fn sim_bin() -> String {
    env!("CARGO_BIN_EXE_tessera-sim").to_owned()
}

/// The coordinator and participant programs, as the launcher runs them.
pub(crate) fn binaries() -> Binaries {
    Binaries {
        coordinator: vec![sim_bin(), "coordinator".into()],
        participant: vec![sim_bin(), "participant".into()],
    }
}

/// A fresh working directory for one test, kept after the run (logs, stores)
/// under the target directory so that a failure can be examined.
pub(crate) fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("privacy")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}

/// The bundled breast-cancer data.
pub(crate) fn breast_cancer() -> PathBuf {
    tessera_simulations::bundled_data().join("breast_cancer_wisconsin.csv")
}

/// What a test decides about its federation; the rest comes from the same
/// defaults as `tessera-sim run` (IID split of the breast-cancer data,
/// logistic model, bounded private statistics).
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Number of sites.
    pub(crate) sites: usize,
    /// Planned training rounds.
    pub(crate) rounds: u32,
    /// Privacy flags (at least a noise multiplier or a target).
    pub(crate) privacy: PrivacyArgs,
    /// Least participants per round.
    pub(crate) min_participants: usize,
    /// Deadline of the training stage (s).
    pub(crate) training_seconds: f64,
    /// Deadline of the other stages (s).
    pub(crate) stage_seconds: f64,
    /// A fixed coordinator address (needed to restart it on the same port).
    pub(crate) listen: Option<String>,
    /// How many of the last released models the final model averages
    /// (None: `tessera-sim run`'s default).
    pub(crate) average_last: Option<u32>,
}

impl Setup {
    /// `sites` sites, `rounds` rounds, a fixed noise multiplier `sigma`.
    pub(crate) fn new(sites: usize, rounds: u32, sigma: f64) -> Self {
        Self {
            sites,
            rounds,
            privacy: PrivacyArgs {
                noise_multiplier: Some(sigma),
                ..PrivacyArgs::default()
            },
            min_participants: 3,
            training_seconds: 30.0,
            stage_seconds: 20.0,
            listen: None,
            average_last: None,
        }
    }
}

/// The options of `tessera-sim run`, parsed from a command line.
#[derive(Debug, Parser)]
struct RunCli {
    #[command(flatten)]
    run: RunArgs,
}

/// A launched federation. Dropping it kills every process still running.
pub(crate) struct Federation {
    /// The plan the processes were configured from.
    pub(crate) plan: FederationPlan,
    /// Where everything is.
    pub(crate) layout: Layout,
    /// How the programs are started.
    pub(crate) bins: Binaries,
    /// The coordinator, while it runs.
    pub(crate) coordinator: Option<Child>,
    /// The participants, by name.
    pub(crate) participants: Vec<(String, Child)>,
    /// The coordinator's address.
    pub(crate) address: String,
    /// The pooled test split.
    pub(crate) test_path: PathBuf,
    /// How many coordinator processes were started (for log names).
    pub(crate) coordinator_starts: u32,
}

impl Drop for Federation {
    fn drop(&mut self) {
        if let Some(c) = self.coordinator.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, c) in &mut self.participants {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free loopback port (bound and released at once).
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

impl Federation {
    /// Partitions the data, writes the PKI and the coordinator's
    /// configuration; `site_limits` sets each site's own privacy limits
    /// (`max_epsilon`, `min_noise_multiplier`) by index. Starts nothing.
    pub(crate) fn prepare(
        dir: &Path,
        setup: &Setup,
        site_limits: &[(Option<f64>, Option<f64>)],
    ) -> Self {
        // The run is decided exactly as `tessera-sim run` decides it from
        // its command line; the privacy options are then set as given.
        let mut cli = vec![
            "tessera-sim".to_owned(),
            "--out".into(),
            dir.to_string_lossy().into_owned(),
            "--data".into(),
            breast_cancer().to_string_lossy().into_owned(),
            "--label".into(),
            "diagnosis".into(),
            "--participants".into(),
            setup.sites.to_string(),
            "--rounds".into(),
            setup.rounds.to_string(),
            "--model".into(),
            "logistic".into(),
            "--seed".into(),
            "1".into(),
            "--min-participants".into(),
            setup.min_participants.to_string(),
        ];
        if let Some(k) = setup.average_last {
            cli.extend(["--average-last".to_owned(), k.to_string()]);
        }
        let mut args = RunCli::parse_from(cli).run;
        args.privacy = setup.privacy.clone();
        let mut spec = args.into_spec().expect("deciding the run");
        let split = spec
            .data
            .write(&dir.join("data"))
            .expect("writing the partition");
        spec.plan.sites = split
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (max_epsilon, min_noise_multiplier) =
                    site_limits.get(i).copied().unwrap_or((None, None));
                SitePlan {
                    name: s.name.clone(),
                    data: s.path.clone(),
                    max_epsilon,
                    min_noise_multiplier,
                }
            })
            .collect();
        spec.plan.training_seconds = setup.training_seconds;
        spec.plan.stage_seconds = setup.stage_seconds;
        spec.plan.listen = setup.listen.clone();
        let layout = launch::prepare(&spec.plan).expect("writing the coordinator configuration");
        Self {
            plan: spec.plan,
            layout,
            bins: binaries(),
            coordinator: None,
            participants: Vec::new(),
            address: setup.listen.clone().unwrap_or_default(),
            test_path: split.test_path,
            coordinator_starts: 0,
        }
    }

    /// Starts the coordinator and waits until it listens.
    pub(crate) fn start_coordinator(&mut self) {
        self.coordinator_starts += 1;
        let log = format!("coordinator-{}.log", self.coordinator_starts);
        let (child, address) = launch::start_coordinator(&self.bins, &self.layout, &log)
            .expect("starting the coordinator");
        self.coordinator = Some(child);
        self.address = address;
    }

    /// Starts the coordinator without waiting for anything (it may be
    /// killed before it even listens); its log is `coordinator-N.log`.
    pub(crate) fn spawn_coordinator(&mut self) {
        self.coordinator_starts += 1;
        let log = self
            .layout
            .logs
            .join(format!("coordinator-{}.log", self.coordinator_starts));
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
    }

    /// Writes every participant's configuration for the current address
    /// and starts them.
    pub(crate) fn start_participants(&mut self) {
        assert!(!self.address.is_empty(), "no coordinator address");
        for site in self.plan.sites.clone() {
            launch::write_participant_config(&self.plan, &mut self.layout, &site, &self.address)
                .expect("writing a participant configuration");
            let child = launch::start_participant(
                &self.bins,
                &self.layout,
                &site.name,
                &format!("{}.log", site.name),
            )
            .expect("starting a participant");
            self.participants.push((site.name.clone(), child));
        }
    }

    /// Site names, in order.
    pub(crate) fn site_names(&self) -> Vec<String> {
        self.plan.sites.iter().map(|s| s.name.clone()).collect()
    }

    /// Waits for the coordinator to exit (panics after `limit`).
    pub(crate) fn wait_coordinator(&mut self, limit: Duration) -> ExitStatus {
        let child = self.coordinator.as_mut().expect("coordinator running");
        let status = wait_child(child, limit, "the coordinator");
        self.coordinator = None;
        status
    }

    /// Waits for every participant to exit; returns their statuses by name.
    pub(crate) fn wait_participants(&mut self, limit: Duration) -> Vec<(String, ExitStatus)> {
        let mut out = Vec::new();
        for (name, child) in &mut self.participants {
            out.push((name.clone(), wait_child(child, limit, name)));
        }
        self.participants.clear();
        out
    }

    /// SIGKILLs the coordinator and reaps it.
    pub(crate) fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// A participant's configuration file.
    pub(crate) fn participant_config(&self, name: &str) -> PathBuf {
        self.layout.participant_configs[name].clone()
    }

    /// A participant's log, ANSI escapes removed.
    pub(crate) fn participant_log(&self, name: &str) -> String {
        read_log(&self.layout.logs.join(format!("{name}.log")))
    }

    /// Every coordinator log so far, concatenated in start order.
    pub(crate) fn coordinator_logs(&self) -> String {
        (1..=self.coordinator_starts)
            .map(|i| read_log(&self.layout.logs.join(format!("coordinator-{i}.log"))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `tessera-sim coordinator ledger --config … --json`.
    pub(crate) fn coordinator_ledger_json(&self) -> Value {
        let config = self
            .layout
            .coordinator_config
            .to_string_lossy()
            .into_owned();
        run_json(&["coordinator", "ledger", "--config", &config, "--json"])
    }

    /// `tessera-sim participant ledger --config … --json`.
    pub(crate) fn participant_ledger_json(&self, name: &str) -> Value {
        let config = self.participant_config(name).to_string_lossy().into_owned();
        run_json(&["participant", "ledger", "--config", &config, "--json"])
    }

    /// Opens the coordinator's store for reading.
    pub(crate) fn store(&self) -> tessera_coordinator::store::Store {
        tessera_coordinator::store::Store::open_read_only(&self.layout.store())
            .expect("opening the coordinator store")
    }
}

/// Waits for a child, killing it and panicking after `limit`.
pub(crate) fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a log file and removes ANSI colour escapes.
pub(crate) fn read_log(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    strip_ansi(&raw)
}

/// Removes `ESC [ … letter` sequences.
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

/// The value of `key=` in a structured log line (quotes removed).
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Runs `tessera-sim ARGS`, asserting success.
pub(crate) fn run_sim(args: &[&str]) -> Output {
    let out = Command::new(sim_bin())
        .args(args)
        .output()
        .expect("running tessera-sim");
    assert!(
        out.status.success(),
        "tessera-sim {args:?} failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `tessera-sim ARGS` and parses its stdout as one JSON object.
pub(crate) fn run_json(args: &[&str]) -> Value {
    let out = run_sim(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tessera-sim {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Relative difference of two positive figures.
pub(crate) fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// A JSON number.
pub(crate) fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}
