//! Views of the store for operators: the ledger with cumulative ε
//! (`tessera-coordinator ledger`) and the federation's status
//! (`tessera-coordinator status`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera_privacy::{AccountantKind, PrivacyEvent};

use super::{Checkpoint, LiveStatus, RoundStatus, Store, StoreError};

/// One ledger row with the ε of the ledger up to and including it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerReportRow {
    /// Aggregation number.
    pub round: u64,
    /// Training round, for a model update.
    pub training_round: Option<u32>,
    /// What was released (`statistics`, `training`, …).
    pub kind: String,
    /// Mechanism of the privacy event (`gaussian`, …).
    pub mechanism: String,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Sampling rate q.
    pub sampling_rate: f64,
    /// Participants in the sum.
    pub cohort_size: u32,
    /// Clip norm C.
    pub clip_norm: f64,
    /// When the row was written, RFC 3339 UTC.
    pub recorded_at: String,
    /// ε (at the report's δ, best accountant) of every row up to this one.
    pub cumulative_epsilon: f64,
    /// The noise of this release was seeded: it is NOT private.
    pub not_private: bool,
}

/// The privacy ledger with cumulative ε, for `tessera-coordinator ledger`.
/// Serialises to one JSON object; `Display` renders a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerReport {
    /// δ at which ε is reported.
    pub delta: f64,
    /// Every ledger row, by round.
    pub rows: Vec<LedgerReportRow>,
    /// ε of the whole ledger (0 when it is empty).
    pub epsilon: f64,
    /// Whether ε is a guarantee: false when any release was made without
    /// privacy (seeded noise, or a released round without a ledger row).
    pub private: bool,
    /// Rounds released without privacy, if any.
    pub non_private_rounds: Vec<u64>,
    /// What ε protects, in words.
    pub guarantee: &'static str,
}

/// What the ledger's ε protects. Every member of a cohort receives the
/// roster and the sum is divided by the announced cohort size, so who takes
/// part is not hidden: the guarantee is for one site's contribution, which
/// could be replaced by zero without the released models telling (the same
/// ε as add/remove adjacency for these mechanisms). With Poisson sampling
/// the amplification by sampling holds against those who do not see the
/// rosters; a site in a cohort sees it, which is why sites count their own
/// rounds at rate 1.
pub const GUARANTEE: &str = "epsilon bounds what the released models and statistics reveal about \
     any one site's contribution (its data could be replaced by zero: same epsilon as adding or \
     removing the site); who takes part is not hidden, since every cohort member receives the \
     roster; with sampling rate q < 1 the amplification holds against readers of the models, not \
     against cohort members, who see the roster (each site's own ledger counts q = 1)";

/// ε of `events` at `delta` with the best accountant; 0 for no events.
pub(crate) fn epsilon_of(
    path: &Path,
    events: &[PrivacyEvent],
    delta: f64,
) -> Result<f64, StoreError> {
    if events.is_empty() {
        return Ok(0.0);
    }
    tessera_privacy::epsilon(events, delta, AccountantKind::Best)
        .map(|r| r.epsilon)
        .map_err(|source| StoreError::Privacy {
            path: path.to_path_buf(),
            source,
        })
}

/// ε of every prefix `events[..=i]`, computed on up to
/// `MAX_REPORT_THREADS` threads (one accountant run per row; the runs are
/// independent, and with Poisson sampling each takes a noticeable time).
fn prefix_epsilons(
    store: &Store,
    events: &[PrivacyEvent],
    delta: f64,
) -> Result<Vec<f64>, StoreError> {
    let path = store.path();
    let n = events.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .clamp(1, MAX_REPORT_THREADS)
        .min(n.max(1));
    let results: Vec<Vec<(usize, Result<f64, StoreError>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            (
                                i,
                                epsilon_of(path, events.get(..=i).unwrap_or_default(), delta),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut out = vec![0.0; n];
    for (i, eps) in results.into_iter().flatten() {
        if let Some(slot) = out.get_mut(i) {
            *slot = eps?;
        }
    }
    Ok(out)
}

/// Most threads [`ledger_report`] uses for its accountant runs.
const MAX_REPORT_THREADS: usize = 8;

/// Every ledger row with the cumulative ε after it (the best accountant on
/// the rows up to it, at `delta`), and the ledger's total ε.
pub fn ledger_report(store: &Store, delta: f64) -> Result<LedgerReport, StoreError> {
    let ledger = store.ledger()?;
    let events: Vec<PrivacyEvent> = ledger.iter().map(|r| r.event.clone()).collect();
    let cumulative = prefix_epsilons(store, &events, delta)?;
    let mut rows = Vec::with_capacity(ledger.len());
    for (row, cumulative_epsilon) in ledger.into_iter().zip(cumulative) {
        let mechanism = row.mechanism();
        rows.push(LedgerReportRow {
            round: row.round,
            training_round: row.training_round,
            kind: row.kind.to_string(),
            mechanism,
            noise_multiplier: row.noise_multiplier,
            sampling_rate: row.sampling_rate,
            cohort_size: row.cohort_size,
            clip_norm: row.clip_norm,
            recorded_at: format_utc_ms(row.recorded_at_ms),
            cumulative_epsilon,
            not_private: row.not_private,
        });
    }
    let epsilon = rows.last().map_or(0.0, |r| r.cumulative_epsilon);
    let non_private_rounds = store.non_private_releases()?;
    Ok(LedgerReport {
        delta,
        rows,
        epsilon,
        private: non_private_rounds.is_empty(),
        non_private_rounds,
        guarantee: GUARANTEE,
    })
}

impl fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() && self.private {
            return writeln!(
                f,
                "privacy ledger is empty: epsilon = 0 at delta = {:e}",
                self.delta
            );
        }
        writeln!(
            f,
            "{:>6} {:>6} {:<11} {:<16} {:>8} {:>8} {:>6} {:>8} {:<24} {:>12}",
            "round",
            "train",
            "kind",
            "mechanism",
            "sigma",
            "q",
            "cohort",
            "clip",
            "recorded at",
            "cum. eps"
        )?;
        for r in &self.rows {
            let train = r
                .training_round
                .map_or_else(|| "-".to_owned(), |t| t.to_string());
            writeln!(
                f,
                "{:>6} {:>6} {:<11} {:<16} {:>8.4} {:>8.4} {:>6} {:>8.4} {:<24} {:>12.6}",
                r.round,
                train,
                r.kind,
                r.mechanism,
                r.noise_multiplier,
                r.sampling_rate,
                r.cohort_size,
                r.clip_norm,
                r.recorded_at,
                r.cumulative_epsilon
            )?;
            if r.not_private {
                writeln!(
                    f,
                    "{:>6} ^ NOT PRIVATE: the noise of this round was seeded",
                    ""
                )?;
            }
        }
        if !self.private {
            let list: Vec<String> = self.non_private_rounds.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "NOT PRIVATE: round(s) {} were released without privacy (DP off or seeded noise); \
                 epsilon below is no guarantee for this federation",
                list.join(", ")
            )?;
        }
        writeln!(
            f,
            "{} released aggregation(s): epsilon = {:.6} at delta = {:e} (best accountant)",
            self.rows.len(),
            self.epsilon,
            self.delta
        )?;
        writeln!(f, "Guarantee: {}.", self.guarantee)
    }
}

/// The federation's status, for `tessera-coordinator status`. Serialises to
/// one JSON object; `Display` renders readable lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// The store read.
    pub store: PathBuf,
    /// The federation's identifier, if recorded.
    pub federation_id: Option<String>,
    /// Whether a coordinator holds the store open for writing right now.
    pub coordinator_running: bool,
    /// What the coordinator last reported about itself (round in progress,
    /// stage, participants connected).
    pub live: Option<LiveStatus>,
    /// Rounds released.
    pub rounds_released: u64,
    /// Rounds aborted.
    pub rounds_aborted: u64,
    /// Highest released aggregation number.
    pub last_released_round: Option<u64>,
    /// Highest released training round.
    pub last_training_round: Option<u32>,
    /// Participants ever seen.
    pub participants_seen: usize,
    /// δ at which ε is reported.
    pub delta: f64,
    /// ε of the ledger (best accountant).
    pub epsilon_spent: f64,
    /// The federation's ε budget, if given.
    pub target_epsilon: Option<f64>,
    /// Budget left (never negative), if a target was given.
    pub epsilon_remaining: Option<f64>,
    /// ε of every release against the coordinator itself, when the
    /// sites add the noise (see
    /// [`crate::privacy_report::coordinator_epsilon`]); None with central
    /// noise.
    pub epsilon_against_coordinator: Option<f64>,
    /// The latest checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// The latest federated evaluation's global metrics.
    pub last_evaluation: Option<EvaluationRecord>,
    /// Every analytics query answered or refused, oldest first.
    pub analytics: Vec<super::AnalyticsRow>,
}

/// Store meta key of the latest federated evaluation (JSON of
/// [`EvaluationRecord`]).
pub const META_EVALUATION: &str = "evaluation";

/// A released federated evaluation: the global metrics of the cohort's sums
/// (never one site's own figures).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvaluationRecord {
    /// Aggregation number.
    pub round: u64,
    /// The training round of the model evaluated.
    pub training_round: u32,
    /// Sites whose sums are in it.
    pub contributors: usize,
    /// The metrics.
    pub metrics: tessera_model::EvalMetrics,
}

/// Reads the federation's status from the store: live state written by the
/// running coordinator, released and aborted rounds, ε spent and remaining
/// at `delta`, and the latest checkpoint.
pub fn status_report(
    store: &Store,
    delta: f64,
    target_epsilon: Option<f64>,
) -> Result<StatusReport, StoreError> {
    let ledger = store.ledger()?;
    let rounds = store.rounds()?;
    let events: Vec<PrivacyEvent> = ledger.iter().map(|r| r.event.clone()).collect();
    let epsilon_spent = epsilon_of(store.path(), &events, delta)?;
    let count = |s: RoundStatus| rounds.iter().filter(|r| r.status == s).count() as u64;
    Ok(StatusReport {
        store: store.path().to_path_buf(),
        federation_id: store.meta(super::META_FEDERATION_ID)?,
        coordinator_running: store.writer_active(),
        live: store.live_status()?,
        // A ledger row is the proof of a release, even if the round record
        // was not updated before a crash.
        rounds_released: count(RoundStatus::Released).max(ledger.len() as u64),
        rounds_aborted: count(RoundStatus::Aborted),
        last_released_round: ledger.iter().map(|r| r.round).max(),
        last_training_round: ledger.iter().filter_map(|r| r.training_round).max(),
        participants_seen: store.participants()?.len(),
        delta,
        epsilon_spent,
        target_epsilon,
        epsilon_remaining: target_epsilon.map(|t| (t - epsilon_spent).max(0.0)),
        epsilon_against_coordinator: crate::privacy_report::coordinator_epsilon(&ledger, delta),
        last_checkpoint: store.latest_checkpoint()?,
        last_evaluation: store
            .meta(META_EVALUATION)?
            .and_then(|json| serde_json::from_str(&json).ok()),
        analytics: store.analytics()?,
    })
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store:               {}", self.store.display())?;
        if let Some(id) = &self.federation_id {
            writeln!(f, "federation:          {id}")?;
        }
        writeln!(
            f,
            "coordinator:         {}",
            if self.coordinator_running {
                "running"
            } else {
                "not running"
            }
        )?;
        match &self.live {
            Some(live) => {
                let round = live
                    .current_round
                    .map_or_else(|| "-".to_owned(), |r| r.to_string());
                let train = live
                    .training_round
                    .map_or_else(String::new, |t| format!(" (training round {t})"));
                writeln!(f, "current round:       {round}{train}")?;
                writeln!(f, "stage:               {}", live.stage)?;
                writeln!(f, "connected:           {}", live.connected)?;
                writeln!(
                    f,
                    "status written at:   {}",
                    format_utc_ms(live.updated_at_ms)
                )?;
                for b in &live.site_budgets {
                    let max = b
                        .max_epsilon
                        .map_or_else(|| "no budget".to_owned(), |m| format!("ε ≤ {m}"));
                    let min = b
                        .min_noise_multiplier
                        .map_or_else(String::new, |m| format!(", σ ≥ {m}"));
                    writeln!(
                        f,
                        "site {:<14} {max} at δ = {} ({:.4} spent when it joined{min}){}",
                        b.name,
                        b.delta,
                        b.epsilon_spent,
                        if b.exhausted { "; budget spent" } else { "" }
                    )?;
                }
            }
            None => writeln!(f, "current round:       - (no live status recorded)")?,
        }
        writeln!(
            f,
            "rounds:              {} released, {} aborted",
            self.rounds_released, self.rounds_aborted
        )?;
        if let Some(r) = self.last_released_round {
            let train = self
                .last_training_round
                .map_or_else(String::new, |t| format!(", last training round {t}"));
            writeln!(f, "last released:       aggregation {r}{train}")?;
        }
        writeln!(f, "participants seen:   {}", self.participants_seen)?;
        if let Some(e) = &self.last_evaluation {
            writeln!(
                f,
                "last evaluation:     training round {} over {} sites: {}",
                e.training_round,
                e.contributors,
                e.metrics.summary()
            )?;
        }
        writeln!(
            f,
            "epsilon spent:       {:.6} at delta = {:e}",
            self.epsilon_spent, self.delta
        )?;
        if let Some(e) = self.epsilon_against_coordinator {
            writeln!(
                f,
                "against coordinator: {e:.6} (model updates; noise added by the sites)"
            )?;
        }
        if let (Some(target), Some(left)) = (self.target_epsilon, self.epsilon_remaining) {
            writeln!(f, "epsilon remaining:   {left:.6} of {target}")?;
        }
        for a in &self.analytics {
            match &a.release {
                Some(r) => writeln!(
                    f,
                    "analytics:           {} = {} (ε = {}, δ = {}; {} sites answered, {} declined)",
                    a.query,
                    r.answer.summary(),
                    r.epsilon,
                    r.delta,
                    a.answered,
                    a.declined
                )?,
                None => writeln!(
                    f,
                    "analytics:           {}: not answered ({})",
                    a.query,
                    a.reason.as_deref().unwrap_or("no reason recorded")
                )?,
            }
        }
        match &self.last_checkpoint {
            Some(c) => writeln!(
                f,
                "last checkpoint:     training round {} (aggregation {}): {} ({} bytes, sha256 {})",
                c.training_round,
                c.round,
                c.path.display(),
                c.bytes,
                c.sha256
            ),
            None => writeln!(f, "last checkpoint:     none"),
        }
    }
}

pub use tessera_common::time::format_utc_ms;
