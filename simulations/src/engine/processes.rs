//! The processes engine: the coordinator and every participant as separate
//! OS processes (`tessera-sim coordinator …`, `tessera-sim participant …`,
//! see [`crate::launch`]), each with its configuration file and log.
//! A site's planned leavings and seeded randomness reach its process as
//! `tessera-sim participant` flags ([`crate::faults`]).

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use super::memory::ProcessSetWatch;
use super::{Ended, Running, SiteExtras};
use crate::dropout::Stage;
use crate::launch::{self, Binaries, FederationPlan, Layout};

/// A federation of processes.
pub struct Processes {
    coordinator: Child,
    participants: Vec<(String, Child)>,
    address: String,
    logs: std::path::PathBuf,
    memory: ProcessSetWatch,
}

impl Processes {
    /// Starts the coordinator, then every participant.
    pub fn start(
        plan: &FederationPlan,
        layout: &mut Layout,
        extras: &BTreeMap<String, SiteExtras>,
    ) -> anyhow::Result<Self> {
        let bins = Binaries::detect()?;
        let memory = ProcessSetWatch::new();
        let (coordinator, address) = launch::start_coordinator(&bins, layout, "coordinator.log")?;
        memory.add(coordinator.id());
        let mut me = Self {
            coordinator,
            participants: Vec::new(),
            address,
            logs: layout.logs.clone(),
            memory,
        };
        for site in &plan.sites {
            let path = launch::write_participant_config(plan, layout, site, &me.address)?;
            let mut args: Vec<String> = Vec::new();
            if let Some(round) = layout.crash_after_shares.get(&site.name) {
                args.extend([
                    crate::faults::CRASH_AFTER_SHARES_FLAG.to_owned(),
                    round.to_string(),
                ]);
            }
            if let Some(x) = extras.get(&site.name) {
                for (round, stage) in &x.leave {
                    args.extend([
                        crate::dropout::LEAVE_FLAG.to_owned(),
                        format!("{round}:{stage}"),
                    ]);
                }
                if let Some(seed) = x.rng_seed {
                    args.extend([
                        crate::faults::INSECURE_SEED_FLAG.to_owned(),
                        seed.to_string(),
                    ]);
                }
            }
            let config = path.to_string_lossy().into_owned();
            args.extend(["run".to_owned(), "--config".to_owned(), config]);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let log = layout.logs.join(format!("{}.log", site.name));
            match launch::spawn(&bins.participant, &argv, &log) {
                Ok(c) => {
                    me.memory.add(c.id());
                    me.participants.push((site.name.clone(), c));
                }
                Err(e) => {
                    me.kill();
                    return Err(e);
                }
            }
        }
        Ok(me)
    }
}

impl Running for Processes {
    fn address(&self) -> &str {
        &self.address
    }

    fn poll(&mut self) -> anyhow::Result<Option<Ended>> {
        Ok(self.coordinator.try_wait()?.map(|status| Ended {
            success: status.success(),
            detail: format!(
                "the coordinator exited with {status}; see {}",
                self.logs.join("coordinator.log").display()
            ),
        }))
    }

    fn finish(&mut self, grace: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut problems = Vec::new();
        for (name, c) in self.participants.iter_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(s)) if !s.success() => {
                        problems.push(format!("participant {name} exited with {s}; see its log"));
                        break;
                    }
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > grace => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        problems
    }

    fn kill(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        for (_, c) in self.participants.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn peak_rss(&self) -> Option<u64> {
        self.memory.peak()
    }

    fn cpu_seconds(&self) -> Option<f64> {
        self.memory.cpu_seconds()
    }

    fn leavings(&self) -> Option<BTreeMap<u64, Vec<(String, Stage)>>> {
        None
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Never leave processes behind (a run that failed half-way).
        for c in std::iter::once(&mut self.coordinator)
            .chain(self.participants.iter_mut().map(|(_, c)| c))
        {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
