//! The in-process engine: the coordinator and every participant as tasks
//! of one multi-threaded tokio runtime (one worker per core) on a thread of
//! this process.
//!
//! The tasks are the production code, unchanged: the coordinator is
//! `tessera_coordinator::server::run` (TLS listener, gRPC service, driver,
//! SQLite store with the ledger and checkpoints, federation machine, secure
//! aggregation, noise) on a loopback socket, and each participant is
//! `tessera_participant::client::run_with_options` (mutual-TLS gRPC
//! client, reconnection, SQLite site ledger, site machine, training), each
//! started from the same configuration files the processes engine writes.
//! The transport is loopback mutual TLS, one connection per participant, so
//! the protocol runs through one code path; what this engine saves is a
//! process (and a runtime) per participant.
//!
//! Logs of every party go to `logs/federation.log`, each line in a span
//! naming its party (`site{name=…}` or `coordinator`); `TESSERA_LOG` sets
//! the filter as for the separate programs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tessera_coordinator::driver::Outcome;
use tessera_coordinator::settings::Settings;
use tessera_participant::client::{SendHook, ShellOptions};
use tessera_participant::config::ParticipantConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Ended, Running, SiteExtras, memory};
use crate::dropout::{LeaveRounds, Stage};
use crate::launch::{self, FederationPlan, Layout};

/// How long participants may take to leave after the federation ended.
const LEAVE_GRACE: Duration = Duration::from_secs(20);

/// Participants started before a short pause, so that a thousand TLS
/// handshakes do not all queue at once (which would make some time out
/// and retry).
const START_BATCH: usize = 20;

/// The pause between two batches.
const START_PAUSE: Duration = Duration::from_millis(40);

type Left = Arc<Mutex<Vec<(u64, Stage)>>>;

/// A federation running in this process.
pub struct InProcess {
    address: String,
    ended: mpsc::Receiver<Ended>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Vec<String>>>,
    left: Vec<(String, Left)>,
}

struct SiteTask {
    name: String,
    config: ParticipantConfig,
    options: ShellOptions,
}

impl InProcess {
    /// Writes every configuration, binds the coordinator's socket and
    /// starts the runtime with the coordinator and the participants.
    pub fn start(
        plan: &FederationPlan,
        layout: &mut Layout,
        extras: &BTreeMap<String, SiteExtras>,
    ) -> anyhow::Result<Self> {
        tessera_certs::install_crypto_provider();
        let settings = Arc::new(
            Settings::load(&layout.coordinator_config)
                .with_context(|| format!("loading {}", layout.coordinator_config.display()))?,
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding loopback")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let mut sites = Vec::with_capacity(plan.sites.len());
        let mut left = Vec::new();
        for site in &plan.sites {
            let path = launch::write_participant_config(plan, layout, site, &address)?;
            let config = ParticipantConfig::load(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            let x = extras.get(&site.name).cloned().unwrap_or_default();
            let hook: Option<Box<dyn SendHook>> = if x.leave.is_empty() {
                None
            } else {
                let hook = LeaveRounds::new(x.leave.clone());
                left.push((site.name.clone(), Arc::clone(&hook.left)));
                Some(Box::new(hook))
            };
            anyhow::ensure!(
                site.crash_after_shares.is_none(),
                "a simulated crash ends a process: use --engine processes for it"
            );
            let rng = x.rng_seed.map(|seed| {
                use rand::SeedableRng;
                Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed))
                    as tessera_participant::site::SecureRng
            });
            sites.push(SiteTask {
                name: site.name.clone(),
                config,
                options: ShellOptions { hook, rng },
            });
        }
        let log = layout.logs.join("federation.log");
        let (ended_tx, ended) = mpsc::channel();
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("federation".into())
            .spawn(move || run_runtime(settings, listener, sites, log, ended_tx, stop_rx))
            .context("starting the federation's thread")?;
        Ok(Self {
            address,
            ended,
            stop,
            thread: Some(thread),
            left,
        })
    }
}

/// The subscriber of the federation's log file.
fn log_dispatch(path: &PathBuf) -> anyhow::Result<tracing::Dispatch> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Arc::new(file))
        .finish();
    Ok(tracing::Dispatch::new(subscriber))
}

fn run_runtime(
    settings: Arc<Settings>,
    listener: std::net::TcpListener,
    sites: Vec<SiteTask>,
    log: PathBuf,
    ended: mpsc::Sender<Ended>,
    stop: watch::Receiver<bool>,
) -> Vec<String> {
    let fail = |e: anyhow::Error| {
        let _ = ended.send(Ended {
            success: false,
            detail: format!("{e:#}"),
        });
        vec![]
    };
    let dispatch = match log_dispatch(&log) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let for_threads = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tessera-inprocess")
        .on_thread_start(move || {
            // Every runtime thread logs to this federation's file; the
            // guard lives as long as the thread.
            std::mem::forget(tracing::dispatcher::set_default(&for_threads));
        })
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => return fail(e.into()),
    };
    runtime.block_on(federation(settings, listener, sites, ended.clone(), stop))
}

async fn federation(
    settings: Arc<Settings>,
    listener: std::net::TcpListener,
    sites: Vec<SiteTask>,
    ended: mpsc::Sender<Ended>,
    stop: watch::Receiver<bool>,
) -> Vec<String> {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ended.send(Ended {
                success: false,
                detail: format!("loopback socket: {e}"),
            });
            return vec![];
        }
    };
    let shutdown = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let coordinator = tokio::spawn(
        tessera_coordinator::server::run(settings, listener, shutdown)
            .instrument(tracing::info_span!("coordinator")),
    );
    let mut participants = JoinSet::new();
    for (i, site) in sites.into_iter().enumerate() {
        let span = tracing::info_span!("site", name = %site.name);
        let name = site.name;
        participants.spawn(
            async move {
                let result =
                    tessera_participant::client::run_with_options(site.config, site.options).await;
                (name, result)
            }
            .instrument(span),
        );
        if i % START_BATCH == START_BATCH - 1 {
            tokio::time::sleep(START_PAUSE).await;
        }
    }
    let end = match coordinator.await {
        Ok(Ok(Outcome::Finished {
            reason, success, ..
        })) => Ended {
            success,
            detail: reason,
        },
        Ok(Ok(Outcome::Interrupted)) => Ended {
            success: false,
            detail: "the federation was stopped before it finished".into(),
        },
        Ok(Err(e)) => Ended {
            success: false,
            detail: format!("the coordinator failed: {e:#}"),
        },
        Err(e) => Ended {
            success: false,
            detail: format!("the coordinator's task failed: {e}"),
        },
    };
    let _ = ended.send(end);
    // Participants leave on the federation's end; give them a moment.
    let mut problems = Vec::new();
    let grace = tokio::time::sleep(LEAVE_GRACE);
    tokio::pin!(grace);
    let mut stop = stop;
    loop {
        tokio::select! {
            next = participants.join_next() => match next {
                None => break,
                Some(Ok((_, Ok(0)))) => {}
                Some(Ok((name, Ok(code)))) => {
                    problems.push(format!("participant {name} ended with code {code}; see logs/federation.log"));
                }
                Some(Ok((name, Err(e)))) => problems.push(format!("participant {name} failed: {e:#}")),
                Some(Err(e)) => problems.push(format!("a participant's task failed: {e}")),
            },
            () = &mut grace => {
                problems.push(format!("{} participant(s) had not left {LEAVE_GRACE:?} after the end; stopped", participants.len()));
                participants.abort_all();
                break;
            }
            _ = stop.wait_for(|s| *s) => {
                participants.abort_all();
                break;
            }
        }
    }
    problems
}

impl Running for InProcess {
    fn address(&self) -> &str {
        &self.address
    }

    fn poll(&mut self) -> anyhow::Result<Option<Ended>> {
        match self.ended.try_recv() {
            Ok(e) => Ok(Some(e)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Ok(Some(Ended {
                success: false,
                detail: "the federation's thread ended without a result".into(),
            })),
        }
    }

    fn finish(&mut self, _grace: Duration) -> Vec<String> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(problems)) => problems,
            Some(Err(_)) => vec!["the federation's thread panicked".into()],
            None => vec![],
        }
    }

    fn kill(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn peak_rss(&self) -> Option<u64> {
        memory::own_peak()
    }

    fn cpu_seconds(&self) -> Option<f64> {
        memory::cpu_seconds("self")
    }

    fn leavings(&self) -> Option<BTreeMap<u64, Vec<(String, Stage)>>> {
        let mut out: BTreeMap<u64, Vec<(String, Stage)>> = BTreeMap::new();
        for (name, left) in &self.left {
            for (round, stage) in left.lock().map(|l| l.clone()).unwrap_or_default() {
                out.entry(round).or_default().push((name.clone(), stage));
            }
        }
        Some(out)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.kill();
        }
    }
}
