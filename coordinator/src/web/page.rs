//! The status page: the federation's state, rounds and who took part, ε
//! over the rounds against the budget, the ledger, evaluation metrics and
//! the privacy report, rendered from the store (read-only) as one HTML
//! document without script that reloads itself.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use super::chart::{Series, line_chart};
use super::escape;
use crate::privacy_report::{self, PrivacyReport};
use crate::store::{LedgerReport, RoundStatus, Store, format_utc_ms, ledger_report, status_report};

/// Most rounds listed on the page (the newest).
const MAX_ROUNDS_LISTED: usize = 100;

/// Where the page's figures come from.
#[derive(Debug)]
pub struct PageSource {
    /// The coordinator's store, opened read-only for every page.
    pub store: PathBuf,
    /// The federation's name.
    pub federation: String,
    /// δ at which ε is reported.
    pub delta: f64,
    /// The ε budget, if any.
    pub budget: Option<f64>,
    /// Planned training rounds.
    pub planned_rounds: u32,
    /// Seconds between automatic reloads.
    pub refresh_seconds: u32,
    /// CSV of global evaluation metrics per training round: the
    /// federation's `rounds.csv` unless configured otherwise.
    pub evaluation: Option<PathBuf>,
    cache: Mutex<Option<Cached>>,
}

/// The accountant's figures of one state of the ledger (recomputed only
/// when the ledger grows).
#[derive(Debug, Clone)]
struct Cached {
    key: (usize, usize),
    ledger: LedgerReport,
    report: PrivacyReport,
}

impl PageSource {
    /// A page over `store` for `federation`.
    pub fn new(
        store: PathBuf,
        federation: String,
        delta: f64,
        budget: Option<f64>,
        planned_rounds: u32,
        refresh_seconds: u32,
        evaluation: Option<PathBuf>,
    ) -> Self {
        Self {
            store,
            federation,
            delta,
            budget,
            planned_rounds,
            refresh_seconds,
            evaluation,
            cache: Mutex::new(None),
        }
    }

    fn figures(&self, store: &Store) -> Result<Cached, String> {
        let key = (
            store.ledger().map_err(|e| e.to_string())?.len(),
            store
                .non_private_releases()
                .map_err(|e| e.to_string())?
                .len(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.key == key) {
            return Ok(c.clone());
        }
        let ledger = ledger_report(store, self.delta).map_err(|e| e.to_string())?;
        let rows = store.ledger().map_err(|e| e.to_string())?;
        let report =
            PrivacyReport::from_ledger(store.path(), &self.federation, &ledger, &rows, self.budget)
                .map_err(|e| e.to_string())?;
        let fresh = Cached {
            key,
            ledger,
            report,
        };
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    fn open(&self) -> Result<Store, String> {
        Store::open_read_only(&self.store).map_err(|e| e.to_string())
    }
}

/// The privacy report as Markdown.
pub(super) fn render_report_md(source: &PageSource) -> Result<String, String> {
    let store = source.open()?;
    Ok(privacy_report::markdown(&source.figures(&store)?.report))
}

/// The privacy report as JSON.
pub(super) fn render_report_json(source: &PageSource) -> Result<String, String> {
    let store = source.open()?;
    serde_json::to_string(&source.figures(&store)?.report).map_err(|e| e.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;\
padding:0 16px 32px;color:#222;background:#fafafa}h1{margin:16px 0 4px}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:12px 0}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #eee;\
padding:3px 6px;text-align:left;vertical-align:top}th{background:#f2f2f2}\
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#666}dd{margin:0}\
.banner{background:#c0392b;color:#fff;padding:8px 12px;font-weight:bold;border-radius:4px}\
.chart{width:100%;max-width:720px;height:auto}.muted{color:#777}\
.released{color:#1e7d32}.aborted{color:#b23c17}.started{color:#1f5fa8}";

/// The whole page.
pub(super) fn render_page(source: &PageSource) -> Result<String, String> {
    let store = source.open()?;
    let status = status_report(&store, source.delta, source.budget).map_err(|e| e.to_string())?;
    let rounds = store.rounds().map_err(|e| e.to_string())?;
    let figures = source.figures(&store)?;
    let finish = store.meta("finish_reason").map_err(|e| e.to_string())?;
    let fed = escape(&source.federation);
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Tessera: {fed}</title><link rel=\"icon\" href=\"data:,\">\
         <style>{STYLE}</style></head><body>\n<h1>Federation {fed}</h1>\n",
        source.refresh_seconds
    );
    if !figures.ledger.private {
        let _ = writeln!(
            h,
            "<p class=\"banner\" id=\"not-private\">NOT PRIVATE: round(s) {} were released \
             without differential privacy; ε below is no guarantee for this federation.</p>",
            escape(
                &figures
                    .ledger
                    .non_private_rounds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        );
    }

    // State.
    let state = if status.coordinator_running {
        "running".to_owned()
    } else {
        match &finish {
            Some(reason) => format!("finished: {reason}"),
            None => "not running (stopped; `serve` resumes it)".to_owned(),
        }
    };
    h.push_str("<section id=\"status\"><h2>Now</h2><dl>");
    let mut item = |k: &str, v: &str| {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    };
    item("state", &state);
    if let Some(live) = &status.live {
        let round = live
            .current_round
            .map_or_else(|| "-".to_owned(), |r| r.to_string());
        let train = live
            .training_round
            .map_or_else(String::new, |t| format!(" (training round {t})"));
        item("current round", &format!("{round}{train}"));
        item("stage", &live.stage);
        item("participants connected", &live.connected.to_string());
        item("updated", &format_utc_ms(live.updated_at_ms));
    }
    item(
        "rounds",
        &format!(
            "{} released, {} aborted (training rounds planned: {})",
            status.rounds_released, status.rounds_aborted, source.planned_rounds
        ),
    );
    item("participants seen", &status.participants_seen.to_string());
    let budget = status
        .target_epsilon
        .map_or_else(|| "no budget set".to_owned(), |b| format!("budget {b}"));
    item(
        "ε spent",
        &format!(
            "{:.4} at δ = {:e} ({budget})",
            status.epsilon_spent, status.delta
        ),
    );
    h.push_str("</dl></section>\n");

    // ε over the rounds.
    h.push_str("<section id=\"epsilon\"><h2>Privacy spent over the releases</h2>");
    let eps: Vec<(f64, f64)> = figures
        .ledger
        .rows
        .iter()
        .map(|r| (r.round as f64, r.cumulative_epsilon))
        .collect();
    if eps.is_empty() {
        h.push_str("<p class=\"muted\">No private release yet.</p>");
    } else {
        let budget_label = source.budget.map(|b| format!("budget ε = {b}"));
        h.push_str(&line_chart(
            "cumulative ε after each release",
            "aggregation",
            &[Series {
                label: "ε spent",
                colour: "#1f5fa8",
                points: eps,
            }],
            source.budget.zip(budget_label.as_deref()),
        ));
    }
    h.push_str("</section>\n");

    // The sites' own budgets, as they declared them.
    if let Some(live) = status.live.as_ref().filter(|l| !l.site_budgets.is_empty()) {
        h.push_str(
            "<section id=\"site-budgets\"><h2>The sites' own privacy terms</h2>\
             <p class=\"muted\">As each connected site declared them when it joined: its own \
             budget and the ε its own ledger had counted then. Every site also checks each \
             round against its ledger and declines what would pass its budget.</p>\
             <table><tr><th>site</th><th>its budget</th><th>δ</th><th>ε spent when it joined</th>\
             <th>least noise multiplier</th><th>state</th></tr>",
        );
        for b in &live.site_budgets {
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}"));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:e}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>",
                escape(&b.name),
                b.max_epsilon
                    .map_or_else(|| "none".to_owned(), |m| format!("ε ≤ {m}")),
                b.delta,
                b.epsilon_spent,
                opt(b.min_noise_multiplier),
                if b.exhausted {
                    "budget spent: sits out"
                } else {
                    "taking part"
                }
            );
        }
        h.push_str("</table></section>\n");
    }

    h.push_str(&super::evaluation::section(source.evaluation.as_deref()));

    // Rounds and who took part.
    let _ = write!(
        h,
        "<section id=\"rounds\"><h2>Rounds</h2><p class=\"muted\">Names are certificate \
         names; no site's data or figures are shown. Newest first{}.</p>\
         <table><tr><th>round</th><th>kind</th><th>training round</th><th>status</th>\
         <th>in the sum</th><th>dropped</th><th>reason</th><th>seconds</th></tr>",
        if rounds.len() > MAX_ROUNDS_LISTED {
            format!(", the last {MAX_ROUNDS_LISTED}")
        } else {
            String::new()
        }
    );
    for r in rounds.iter().rev().take(MAX_ROUNDS_LISTED) {
        let names = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(|n| escape(n)).collect::<Vec<_>>().join(", ")
            }
        };
        let seconds = r.ended_at_ms.map_or_else(
            || "-".to_owned(),
            |end| format!("{:.1}", (end - r.started_at_ms) as f64 / 1000.0),
        );
        let status = match r.status {
            RoundStatus::Released => "released",
            RoundStatus::Aborted => "aborted",
            RoundStatus::Started => "started",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{status}\">{status}</td>\
             <td class=\"contributors\">{}</td><td class=\"dropped\">{}</td><td>{}</td><td>{}</td></tr>",
            r.round,
            escape(r.kind.as_str()),
            r.training_round
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            names(&r.contributors),
            names(&r.dropped),
            escape(r.reason.as_deref().unwrap_or("")),
            seconds
        );
    }
    h.push_str("</table></section>\n");

    // The ledger.
    h.push_str(
        "<section id=\"ledger\"><h2>Privacy ledger</h2><table><tr><th>round</th>\
         <th>training round</th><th>kind</th><th>mechanism</th><th>σ</th><th>q</th>\
         <th>sites in the sum</th><th>C</th><th>recorded at</th><th>cumulative ε</th></tr>",
    );
    for r in &figures.ledger.rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{:.4}</td><td>{:.4}</td>\
             <td>{}</td><td>{:.4}</td><td>{}</td><td>{:.4}</td></tr>",
            r.round,
            r.training_round
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            escape(&r.kind),
            escape(&r.mechanism),
            if r.not_private { " (NOT PRIVATE)" } else { "" },
            r.noise_multiplier,
            r.sampling_rate,
            r.cohort_size,
            r.clip_norm,
            escape(&r.recorded_at),
            r.cumulative_epsilon
        );
    }
    h.push_str("</table></section>\n");

    h.push_str(&privacy_report::html(&figures.report));
    let _ = writeln!(
        h,
        "<footer class=\"muted\"><p>Read from {} at {}; reloads every {} s. \
         The privacy report is also at <a href=\"report.md\">report.md</a> and \
         <a href=\"report.json\">report.json</a>.</p></footer></body></html>",
        escape(&source.store.display().to_string()),
        format_utc_ms(tessera_common::time::now_ms()),
        source.refresh_seconds
    );
    Ok(h)
}
