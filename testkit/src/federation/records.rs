//! What a running or finished [`Federation`] shows: conditions waited for,
//! the coordinator's store and `rounds.csv`, the logs, the ledgers as the
//! operator commands print them, and the checks of a completed federation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_coordinator::store::{RoundRecord, RoundStatus, Store};

use super::Federation;
use crate::command;
use crate::files;
use crate::process::PATIENCE;

/// One row of the coordinator's `rounds.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundsRow {
    /// Aggregation number.
    pub round: u64,
    /// Training round (None for the statistics round).
    pub training_round: Option<u32>,
    /// `statistics` or `training`.
    pub kind: String,
    /// `released` or `aborted`.
    pub status: String,
    /// Participants selected.
    pub cohort: usize,
    /// Participants whose inputs are in the sum.
    pub contributors: usize,
    /// Participants that dropped out.
    pub dropped: usize,
}

impl Federation {
    /// Polls `cond` every 20 ms until it holds; fails the test after [`PATIENCE`]
    /// or if the coordinator exits first.
    pub fn wait_for<T>(&mut self, what: &str, cond: impl FnMut(&Self) -> Option<T>) -> T {
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
    pub fn wait_for_while_running<T>(
        &mut self,
        what: &str,
        mut cond: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = cond(self) {
                return Some(v);
            }
            // Already exited (or never started): nothing left to wait for.
            self.coordinator.as_ref()?;
            if self.poll_coordinator().is_some() {
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
    pub fn wait_joined(&mut self, names: &[&str]) {
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

    /// The coordinator's store, opened for reading, or None if it cannot be yet.
    pub fn open_store(&self) -> Option<Store> {
        Store::open_read_only(&self.layout.store()).ok()
    }

    /// The coordinator's store, opened for reading.
    pub fn store(&self) -> Store {
        Store::open_read_only(&self.layout.store()).expect("opening the coordinator's store")
    }

    /// Every round the coordinator's store holds.
    pub fn store_rounds(&self) -> Vec<RoundRecord> {
        self.store().rounds().expect("reading the rounds")
    }

    /// Rounds in the store, or none if it cannot be read yet.
    pub fn try_store_rounds(&self) -> Vec<RoundRecord> {
        self.open_store()
            .and_then(|s| s.rounds().ok())
            .unwrap_or_default()
    }

    /// The store's `finish_reason`.
    pub fn finish_reason(&self) -> Option<String> {
        self.store()
            .meta("finish_reason")
            .expect("reading the store's meta")
    }

    /// The coordinator's `rounds.csv`, parsed (checks its header).
    pub fn rounds_csv(&self) -> Vec<RoundsRow> {
        let path = self.layout.coordinator_out.join("rounds.csv");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm,\
                 eval_rows,eval_accuracy,eval_balanced_accuracy,eval_log_loss,eval_auc,eval_rmse,eval_mae,eval_r2"
            ),
            "header of rounds.csv"
        );
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 18, "rounds.csv line {line:?}");
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
    pub fn log(&self, name: &str) -> String {
        files::read_log(self.layout.logs.join(format!("{name}.log")))
    }

    /// The log of the `n`-th coordinator process (from 1).
    pub fn coordinator_log_path(&self, n: u32) -> PathBuf {
        self.layout.logs.join(format!("coordinator-{n}.log"))
    }

    /// The log of the `n`-th coordinator process, colour codes removed.
    pub fn coordinator_log_of(&self, n: u32) -> String {
        files::read_log(self.coordinator_log_path(n))
    }

    /// Every coordinator process's log, concatenated in start order.
    pub fn coordinator_log(&self) -> String {
        (1..=self.coordinator_starts)
            .map(|n| self.coordinator_log_of(n))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the coordinator writes its final model.
    pub fn model_path(&self) -> PathBuf {
        self.layout.coordinator_out.join("model.safetensors")
    }

    /// `COORDINATOR ledger --config … --json`, parsed.
    pub fn coordinator_ledger_json(&self) -> Value {
        let config = self
            .layout
            .coordinator_config
            .to_string_lossy()
            .into_owned();
        command::run_json(
            &self.bins.coordinator,
            &["ledger", "--config", &config, "--json"],
        )
    }

    /// `PARTICIPANT ledger --config … --json` of participant `name`, parsed.
    pub fn participant_ledger_json(&self, name: &str) -> Value {
        let config = self.participant_config(name).to_string_lossy().into_owned();
        command::run_json(
            &self.bins.participant,
            &["ledger", "--config", &config, "--json"],
        )
    }

    /// The common checks of a federation that completed its planned training
    /// rounds with the participants `good` (all of which exited 0):
    /// coordinator exit 0, the store's finish reason, one released training
    /// round per planned round in the store and in `rounds.csv`, none of
    /// them with a contributor outside `good` and `earlier` (participants
    /// that contributed before they went away).
    pub fn assert_completed_with(&mut self, good: &[&str], earlier: &[&str]) {
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
