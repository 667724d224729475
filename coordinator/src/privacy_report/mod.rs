//! The privacy report: what the ledger's (ε, δ) promises, in figures an
//! ethics board can check, every one computed from the ledger.
//!
//! [`PrivacyReport::from_store`] reads the ledger and runs the accountants;
//! `render` turns the result into Markdown or an HTML fragment, and it
//! serialises to JSON as it is. `tessera-coordinator report`, the status
//! page and every `tessera-sim` run directory (`privacy_report.md`) show
//! the same report.

mod render;

use std::path::Path;

use serde::Serialize;
use tessera_privacy::{AccountantKind, PrivacyEvent};

use crate::store::{GUARANTEE, LedgerReport, LedgerRow, Store, StoreError, ledger_report};

pub use render::{html, html_document, markdown};

/// Prior beliefs (probability that a given site's data was used) of the
/// worst-case posterior table.
pub const PRIORS: [f64; 6] = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9];

/// One line of the prior → worst-case posterior table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Posterior {
    /// An observer's belief before seeing any release.
    pub prior: f64,
    /// The most that belief can become after seeing every release, except
    /// with probability δ: posterior odds ≤ e^ε × prior odds.
    pub worst_case: f64,
}

/// The releases of one kind with the same noise and sampling rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseGroup {
    /// What was released (`statistics`, `training`, …).
    pub kind: String,
    /// Mechanism (`gaussian`, …).
    pub mechanism: String,
    /// How many releases.
    pub count: u32,
    /// Noise multiplier σ (noise std σ·C on the sum).
    pub noise_multiplier: f64,
    /// Sampling rate q of the cohort (1: every available site).
    pub sampling_rate: f64,
    /// Smallest clip norm C among them.
    pub clip_norm_min: f64,
    /// Largest clip norm C among them (differs from the smallest only with
    /// adaptive clipping).
    pub clip_norm_max: f64,
    /// Smallest and largest cohort.
    pub cohort: [u32; 2],
}

/// What one accountant said of the whole ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountantFigure {
    /// The accountant.
    pub accountant: String,
    /// Its ε, when it applies.
    pub epsilon: Option<f64>,
    /// Why it does not apply, when it does not.
    pub reason: Option<String>,
}

/// The privacy report of a federation's ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyReport {
    /// The federation's name.
    pub federation: String,
    /// Whether the figures are a guarantee (no seeded or non-private release).
    pub private: bool,
    /// Rounds released without privacy (DP off or seeded noise).
    pub non_private_rounds: Vec<u64>,
    /// δ: the probability allowed for the guarantee to fail.
    pub delta: f64,
    /// ε of the whole ledger (best accountant; equals the ledger's ε).
    pub epsilon: f64,
    /// The federation's ε budget, if one is set.
    pub budget: Option<f64>,
    /// Which accountant gave `epsilon`.
    pub accountant: String,
    /// Every accountant consulted, with its ε or why it does not apply.
    pub accountants: Vec<AccountantFigure>,
    /// ε of the same ledger by the usual Rényi-DP (moments) accountant.
    pub rdp_epsilon: Option<f64>,
    /// `rdp_epsilon / epsilon`: how many times tighter the bound used is.
    pub tighter_than_rdp: Option<f64>,
    /// Released aggregations (ledger rows).
    pub releases: usize,
    /// Released training rounds (model updates).
    pub training_rounds: usize,
    /// The releases grouped by kind, noise and sampling rate.
    pub groups: Vec<ReleaseGroup>,
    /// Total-variation slack the ledger adds to δ (discretised noise,
    /// sampled cohorts with a minimum size).
    pub tv_slack: f64,
    /// ε a site that contributed to every release counts in its own ledger,
    /// at sampling rate 1 (at the same δ).
    pub site_epsilon: Option<f64>,
    /// The second guarantee: ε of the model updates against the coordinator
    /// itself (what it sees: the unmasked sum with only the participants'
    /// noise, less that of the sites assumed to collude with it). None when
    /// some training round's noise was added by the coordinator (it saw that
    /// sum without noise it does not know), or there is no training round.
    pub coordinator_epsilon: Option<f64>,
    /// Where the training rounds' noise was added: `central`,
    /// `distributed`, `local`, or `mixed`/`none`.
    pub placement: String,
    /// Prior → worst-case posterior at (ε, δ).
    pub posterior: Vec<Posterior>,
    /// The unit of privacy and the adjacency, as the ledger states them.
    pub guarantee: &'static str,
    /// ε after each release, in ledger order (for charts).
    pub epsilon_by_release: Vec<f64>,
    /// The analytics queries released (each also a ledger row above).
    pub analytics: Vec<AnalyticsRelease>,
}

/// The name of an analytics mechanism as the ledger spells it
/// (`discrete_laplace`, `discrete_gaussian`, `exponential`).
pub fn mechanism_name(m: tessera_analytics::Mechanism) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{m:?}"))
}

/// One released analytics query, as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalyticsRelease {
    /// Aggregation number of its round.
    pub round: Option<u64>,
    /// The query's canonical text.
    pub query: String,
    /// The answer, in one line.
    pub answer: String,
    /// The mechanism of its noise (`discrete_laplace`, …).
    pub mechanism: String,
    /// ε of this release alone.
    pub epsilon: f64,
    /// δ of that ε (0 for pure ε).
    pub delta: f64,
    /// Sites whose data is in it.
    pub answered: u32,
    /// Sites that declined it.
    pub declined: u32,
}

/// The worst-case posterior after evidence worth `epsilon`: posterior odds
/// ≤ e^ε × prior odds.
pub fn worst_case_posterior(prior: f64, epsilon: f64) -> f64 {
    if prior <= 0.0 {
        return 0.0;
    }
    if prior >= 1.0 {
        return 1.0;
    }
    let odds = prior / (1.0 - prior) * epsilon.exp();
    if odds.is_infinite() {
        1.0
    } else {
        odds / (1.0 + odds)
    }
}

/// The ledger's events as a site counts them in its own ledger: every
/// Gaussian release at sampling rate 1 (a site cannot check the
/// coordinator's sampling), the same noise and slack.
pub fn site_view(events: &[PrivacyEvent]) -> Vec<PrivacyEvent> {
    events
        .iter()
        .map(|e| match e {
            PrivacyEvent::Gaussian {
                noise_multiplier,
                count,
                tv_slack,
                ..
            } => PrivacyEvent::gaussian(*noise_multiplier, 1.0, *count).with_tv_slack(*tv_slack),
            other => other.clone(),
        })
        .collect()
}

impl PrivacyReport {
    /// Reads the ledger of `store` and computes the report at `delta`.
    pub fn from_store(
        store: &Store,
        federation: &str,
        delta: f64,
        budget: Option<f64>,
    ) -> Result<Self, StoreError> {
        let ledger = ledger_report(store, delta)?;
        let rows = store.ledger()?;
        let mut report = Self::from_ledger(store.path(), federation, &ledger, &rows, budget)?;
        report.analytics = store
            .analytics()?
            .into_iter()
            .filter_map(|a| {
                let r = a.release?;
                Some(AnalyticsRelease {
                    round: a.round,
                    answer: r.answer.summary(),
                    mechanism: r
                        .noise
                        .first()
                        .map(|n| mechanism_name(n.mechanism))
                        .unwrap_or_default(),
                    query: r.query,
                    epsilon: r.epsilon,
                    delta: r.delta,
                    answered: a.answered,
                    declined: a.declined,
                })
            })
            .collect();
        Ok(report)
    }

    /// The report of a ledger already read: `ledger` is its
    /// [`ledger_report`], `rows` its rows (the same ledger).
    pub fn from_ledger(
        path: &Path,
        federation: &str,
        ledger: &LedgerReport,
        rows: &[LedgerRow],
        budget: Option<f64>,
    ) -> Result<Self, StoreError> {
        let delta = ledger.delta;
        let events: Vec<PrivacyEvent> = rows.iter().map(|r| r.event.clone()).collect();
        let privacy = |source| StoreError::Privacy {
            path: path.to_path_buf(),
            source,
        };
        let (epsilon, accountant, accountants) = if events.is_empty() {
            (0.0, "none".to_owned(), Vec::new())
        } else {
            let best =
                tessera_privacy::epsilon(&events, delta, AccountantKind::Best).map_err(privacy)?;
            let figures = best
                .candidates
                .iter()
                .map(|c| AccountantFigure {
                    accountant: c.accountant.as_str().to_owned(),
                    epsilon: c.epsilon,
                    reason: c.reason.clone(),
                })
                .collect();
            (best.epsilon, best.accountant.as_str().to_owned(), figures)
        };
        let rdp_epsilon = if events.is_empty() {
            None
        } else {
            tessera_privacy::epsilon(&events, delta, AccountantKind::Rdp)
                .ok()
                .map(|r| r.epsilon)
        };
        let site_epsilon = if events.is_empty() {
            None
        } else {
            tessera_privacy::epsilon(&site_view(&events), delta, AccountantKind::Best)
                .ok()
                .map(|r| r.epsilon)
        };
        let coordinator_epsilon = coordinator_epsilon(rows, delta);
        let posterior = PRIORS
            .iter()
            .map(|&prior| Posterior {
                prior,
                worst_case: worst_case_posterior(prior, epsilon),
            })
            .collect();
        Ok(Self {
            federation: federation.to_owned(),
            private: ledger.private,
            non_private_rounds: ledger.non_private_rounds.clone(),
            delta,
            epsilon,
            budget,
            accountant,
            accountants,
            tighter_than_rdp: rdp_epsilon
                .filter(|_| epsilon > 0.0)
                .map(|rdp| rdp / epsilon),
            rdp_epsilon,
            releases: rows.len(),
            training_rounds: rows.iter().filter(|r| r.training_round.is_some()).count(),
            groups: groups(rows),
            tv_slack: events.iter().map(PrivacyEvent::tv_slack).sum(),
            site_epsilon,
            coordinator_epsilon,
            placement: placement_of(rows),
            posterior,
            guarantee: GUARANTEE,
            epsilon_by_release: ledger.rows.iter().map(|r| r.cumulative_epsilon).collect(),
            analytics: Vec::new(),
        })
    }
}

/// ε against the coordinator of a ledger at `delta`: the accountant over
/// every release's [`PrivacyEvent::coordinator_view`] — the training
/// rounds, the statistics and the evaluations alike, since all of them are
/// computed from the sites' data. None if some release gave the
/// coordinator a sum without noise it does not know (noised centrally, as
/// every release of a central federation and the statistics and
/// evaluations of ledgers written before the sites noised those too, or
/// with every contributor assumed colluding), or if there is no release.
pub fn coordinator_epsilon(rows: &[LedgerRow], delta: f64) -> Option<f64> {
    if rows.is_empty() {
        return None;
    }
    let views: Option<Vec<PrivacyEvent>> =
        rows.iter().map(|r| r.event.coordinator_view()).collect();
    tessera_privacy::epsilon(&views?, delta, AccountantKind::Best)
        .ok()
        .map(|r| r.epsilon)
}

/// The placement of a ledger's training rounds, from their events: `local`
/// when each protects one site by its own noise alone (one honest summand),
/// `distributed` for other site-added noise, `central` for the Gaussian.
pub fn placement_of(rows: &[LedgerRow]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.kind == tessera_model::RoundKind::Training)
    {
        let p = match r.event {
            PrivacyEvent::DistributedDiscreteGaussian {
                honest_summands: 1,
                summands,
                ..
            } if summands > 1 => "local",
            PrivacyEvent::DistributedDiscreteGaussian { .. } => "distributed",
            _ => "central",
        };
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    match seen.as_slice() {
        [] => "none".into(),
        [one] => (*one).into(),
        _ => "mixed".into(),
    }
}

/// The rows grouped by kind, mechanism, σ and q, in order of first appearance.
fn groups(rows: &[LedgerRow]) -> Vec<ReleaseGroup> {
    let mut out: Vec<ReleaseGroup> = Vec::new();
    for r in rows {
        let kind = r.kind.to_string();
        let mechanism = r.mechanism();
        let count = r.event.count();
        match out.iter_mut().find(|g| {
            g.kind == kind
                && g.mechanism == mechanism
                && g.noise_multiplier == r.noise_multiplier
                && g.sampling_rate == r.sampling_rate
        }) {
            Some(g) => {
                g.count += count;
                g.clip_norm_min = g.clip_norm_min.min(r.clip_norm);
                g.clip_norm_max = g.clip_norm_max.max(r.clip_norm);
                g.cohort = [
                    g.cohort[0].min(r.cohort_size),
                    g.cohort[1].max(r.cohort_size),
                ];
            }
            None => out.push(ReleaseGroup {
                kind,
                mechanism,
                count,
                noise_multiplier: r.noise_multiplier,
                sampling_rate: r.sampling_rate,
                clip_norm_min: r.clip_norm,
                clip_norm_max: r.clip_norm,
                cohort: [r.cohort_size, r.cohort_size],
            }),
        }
    }
    out
}

/// Reads the store at `store` and writes the Markdown report to `out`.
pub fn write_markdown(
    store: &Path,
    federation: &str,
    delta: f64,
    budget: Option<f64>,
    out: &Path,
) -> anyhow::Result<()> {
    let store = Store::open_read_only(store)?;
    let report = PrivacyReport::from_store(&store, federation, delta, budget)?;
    std::fs::write(out, markdown(&report))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posterior_follows_the_odds_bound() {
        assert_eq!(worst_case_posterior(0.5, 0.0), 0.5);
        let p = worst_case_posterior(0.5, 1.0);
        assert!((p - std::f64::consts::E / (1.0 + std::f64::consts::E)).abs() < 1e-12);
        assert_eq!(worst_case_posterior(0.5, 1e6), 1.0);
        assert_eq!(worst_case_posterior(0.0, 3.0), 0.0);
        for prior in PRIORS {
            assert!(worst_case_posterior(prior, 2.0) > prior);
        }
    }

    #[test]
    fn site_view_counts_every_release_at_rate_one() {
        let events = vec![
            PrivacyEvent::gaussian(1.0, 0.1, 5).with_tv_slack(1e-9),
            PrivacyEvent::DiscreteLaplace {
                epsilon: 0.1,
                count: 1,
            },
        ];
        let site = site_view(&events);
        assert_eq!(
            site[0],
            PrivacyEvent::gaussian(1.0, 1.0, 5).with_tv_slack(1e-9)
        );
        assert_eq!(site[1], events[1]);
    }

    fn row(kind: tessera_model::RoundKind, event: PrivacyEvent) -> LedgerRow {
        LedgerRow {
            id: 0,
            round: 1,
            training_round: None,
            kind,
            event,
            cohort_size: 5,
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            sampling_rate: 1.0,
            recorded_at_ms: 0,
            not_private: false,
        }
    }

    /// Every release counts against the coordinator, whatever its kind; one
    /// it noised itself (central) leaves no guarantee against it.
    #[test]
    fn the_coordinator_epsilon_covers_every_release() {
        use tessera_model::RoundKind as K;
        let l2 = 2f64.powi(20);
        let share = |sigma: f64, honest| {
            PrivacyEvent::distributed(sigma * l2 / 5f64.sqrt(), 5, l2, 10, 1.0, honest)
        };
        let training = row(K::Training, share(1.0, 5));
        let alone = coordinator_epsilon(std::slice::from_ref(&training), 1e-5).unwrap();
        let with_statistics =
            coordinator_epsilon(&[row(K::Statistics, share(5.0, 5)), training.clone()], 1e-5)
                .unwrap();
        assert!(with_statistics > alone, "{with_statistics} vs {alone}");
        let fewer_honest =
            coordinator_epsilon(&[row(K::Statistics, share(5.0, 3)), training.clone()], 1e-5)
                .unwrap();
        assert!(fewer_honest > with_statistics);
        let central_statistics = row(K::Statistics, PrivacyEvent::gaussian(5.0, 1.0, 1));
        assert_eq!(
            coordinator_epsilon(&[central_statistics, training], 1e-5),
            None
        );
        assert_eq!(coordinator_epsilon(&[], 1e-5), None);
    }
}
