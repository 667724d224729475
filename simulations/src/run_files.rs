//! The files a run leaves in its directory, and its summary table:
//!
//! - `summary.json`: the [`Summary`];
//! - `metrics.csv`: `round,accuracy,loss,epsilon,contributors,dropped` and
//!   the learning layer's columns ([`crate::learning::METRICS_COLUMNS`]:
//!   regression scores, federated evaluation), one line per released
//!   training round. Nothing in it depends on the clock
//!   or the engine, so the same options, `--seed` and `--noise-seed` give
//!   the same bytes on either engine (wall times are in `summary.json`);
//! - `metrics.png` / `metrics.svg` ([`crate::plots::metrics`]);
//! - `dropouts.csv` when dropouts were planned: per training round the
//!   planned leavers, those planned to be left out of the sum, and those the
//!   coordinator recorded as dropped;
//! - `sim.toml`: the options as given (command line, `--config` file and
//!   defaults), which `--config` reads back, and a `[resolved]` table of
//!   what the run decided from them (for reading; ignored when read back).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::dropout::{DropoutPlan, Stage};
use crate::experiment::{RunSpec, Summary};
use crate::progress::{bytes, table};

/// A released training round as the store recorded it.
#[derive(Debug, Clone)]
pub struct RoundRecordView {
    /// Training round.
    pub training_round: u32,
    /// Aggregation number.
    pub aggregation: u64,
    /// Participants in the sum.
    pub contributors: usize,
    /// Selected but not in the sum.
    pub dropped: Vec<String>,
    /// Wall seconds from announcement to release.
    pub seconds: Option<f64>,
}

/// Planned against recorded dropouts.
#[derive(Debug, Clone, Default)]
pub struct DropoutReport {
    /// Planned leavers over all training rounds.
    pub planned: usize,
    /// Of those, planned to be left out of the sum (before their input).
    pub planned_out_of_sum: usize,
    /// Recorded by the coordinator as dropped, over released rounds.
    pub reported: usize,
    /// Rounds whose recorded set differs from the planned one.
    pub mismatched_rounds: Vec<u32>,
    /// Leavings the sites themselves counted (in-process only).
    pub carried_out: Option<usize>,
    /// `dropouts.csv`.
    pub csv: String,
}

/// Compares the plan with what the coordinator recorded.
pub fn dropout_report(
    plan: &DropoutPlan,
    records: &[RoundRecordView],
    leavings: Option<&BTreeMap<u64, Vec<(String, Stage)>>>,
) -> DropoutReport {
    let mut r = DropoutReport {
        csv: String::from("training_round,planned,planned_out_of_sum,reported_dropped,match\n"),
        carried_out: leavings.map(|l| l.values().map(Vec::len).sum()),
        ..DropoutReport::default()
    };
    let by_round: BTreeMap<u32, &RoundRecordView> =
        records.iter().map(|x| (x.training_round, x)).collect();
    for (t, leavers) in &plan.by_round {
        let expected: BTreeSet<String> = plan.expected_dropped(*t).into_iter().collect();
        r.planned += leavers.len();
        r.planned_out_of_sum += expected.len();
        let Some(record) = by_round.get(t) else {
            continue;
        };
        let got: BTreeSet<String> = record.dropped.iter().cloned().collect();
        r.reported += got.len();
        let same = got == expected;
        if !same {
            r.mismatched_rounds.push(*t);
        }
        r.csv.push_str(&format!(
            "{t},{},{},{},{}\n",
            leavers.len(),
            expected.len(),
            got.len(),
            if same { "yes" } else { "no" }
        ));
    }
    if plan.by_round.is_empty() {
        r.reported = records.iter().map(|x| x.dropped.len()).sum();
    }
    r
}

fn metrics_csv(summary: &Summary, records: &[RoundRecordView]) -> String {
    let by_round: BTreeMap<u32, &RoundRecordView> =
        records.iter().map(|x| (x.training_round, x)).collect();
    let mut csv = format!(
        "round,accuracy,loss,epsilon,contributors,dropped,{}\n",
        crate::learning::METRICS_COLUMNS.join(",")
    );
    for h in &summary.history {
        let rec = by_round.get(&h.round);
        csv.push_str(&format!(
            "{},{:.6},{:.6},{},{},{},{}\n",
            h.round,
            h.accuracy,
            h.loss,
            h.epsilon.map(|e| format!("{e:.6}")).unwrap_or_default(),
            rec.map(|r| r.contributors.to_string()).unwrap_or_default(),
            rec.map(|r| r.dropped.len().to_string()).unwrap_or_default(),
            crate::learning::metrics_cells(h),
        ));
    }
    csv
}

/// What the run decided, for `sim.toml`'s `[resolved]` table.
fn resolved(spec: &RunSpec, summary: &Summary) -> toml::Table {
    let mut t = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| {
        t.insert(k.to_owned(), v);
    };
    let plan = &spec.plan;
    put("engine", spec.engine.as_str().into());
    put("partition", spec.partition.to_string().into());
    put("participants", (plan.sites.len() as i64).into());
    put("rounds", i64::from(plan.rounds).into());
    put("min_participants", (plan.min_participants as i64).into());
    put("model", plan.task.model.to_string().into());
    put("label", plan.task.label.clone().into());
    put("task", plan.task.kind.name().into());
    if let Some(positive) = plan.task.positive() {
        put("positive", positive.to_string().into());
    }
    put(
        "server_optimizer",
        plan.learning.server_optimizer.clone().into(),
    );
    put("local_epochs", i64::from(plan.training.local_epochs).into());
    put("learning_rate", plan.training.learning_rate.into());
    put("batch_size", i64::from(plan.training.batch_size).into());
    put("clip_norm", plan.training.clip_norm.into());
    put("average_last", i64::from(plan.training.average_last).into());
    put("seed", (spec.seed as i64).into());
    put("secure_aggregation", plan.secagg.into());
    put("differential_privacy", plan.privacy.is_some().into());
    if let Some(s) = summary.noise_multiplier {
        put("noise_multiplier", s.into());
    }
    if let Some(p) = &plan.privacy {
        put("delta", p.delta.into());
        if let Some(seed) = p.noise_seed {
            put("noise_seed", (seed as i64).into());
        }
    }
    if !spec.dropout.is_none() {
        put("dropout", spec.dropout.to_string().into());
    }
    if !plan.learning.monotone.is_empty() {
        let directions: toml::Table = plan
            .learning
            .monotone
            .iter()
            .map(|(f, d)| (f.clone(), d.as_str().into()))
            .collect();
        put("monotone", directions.into());
    }
    t
}

/// `sim.toml`: the options as given, then `[resolved]`.
pub fn sim_toml(spec: &RunSpec, summary: &Summary) -> String {
    let mut text = String::from(
        "# The options of this run (command line, --config file and defaults);\n\
         # `tessera-sim run --config sim.toml` runs it again. [resolved] shows what\n\
         # the run decided from them and is ignored when read back.\n",
    );
    if let Some(options) = &spec.options_toml {
        text.push_str(options);
        if !options.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut wrapper = toml::Table::new();
    wrapper.insert(
        "resolved".into(),
        toml::Value::Table(resolved(spec, summary)),
    );
    text.push('\n');
    text.push_str(&toml::to_string(&wrapper).unwrap_or_default());
    text
}

/// Writes every file of the run (see the module docs).
pub fn write(
    out: &Path,
    spec: &RunSpec,
    summary: &Summary,
    records: &[RoundRecordView],
    dropouts: &DropoutReport,
) -> anyhow::Result<()> {
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    std::fs::write(out.join("metrics.csv"), metrics_csv(summary, records))?;
    if !spec.dropout.is_none() {
        std::fs::write(out.join("dropouts.csv"), &dropouts.csv)?;
    }
    std::fs::write(out.join("sim.toml"), sim_toml(spec, summary))?;
    let title = format!(
        "{} sites, {} partition, {} engine{}",
        summary.participants,
        summary.partition,
        summary.engine.as_str(),
        match summary.epsilon {
            Some(e) => format!(", ε = {e:.2}"),
            None => String::new(),
        }
    );
    crate::plots::metrics(
        out,
        &crate::plots::RunFigure {
            title: &title,
            history: &summary.history,
            delta: summary.delta.filter(|_| summary.epsilon.is_some()),
        },
    )?;
    Ok(())
}

/// The table printed at the end of a run.
pub fn summary_table(spec: &RunSpec, s: &Summary, d: &DropoutReport) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("engine".into(), s.engine.as_str().into()),
        ("task".into(), s.task.clone()),
        (
            "sites".into(),
            format!(
                "{} ({} partition, seed {})",
                s.participants, s.partition, s.seed
            ),
        ),
        (
            "rounds".into(),
            format!("{} of {} released", s.rounds, s.planned_rounds),
        ),
        match &s.final_regression {
            Some(r) => (
                "final test RMSE".into(),
                format!(
                    "{:.4} (MAE {:.4}, R² {:.4}, {} test rows)",
                    r.rmse, r.mae, r.r2, s.test_rows
                ),
            ),
            None => (
                "final test accuracy".into(),
                format!(
                    "{:.4} (loss {:.4}, {} test rows)",
                    s.final_accuracy, s.final_loss, s.test_rows
                ),
            ),
        },
    ];
    rows.push((
        "privacy".into(),
        match (s.epsilon, s.delta) {
            (Some(e), Some(dl)) if s.private => format!("ε = {e:.3} at δ = {dl}"),
            (Some(e), Some(dl)) => format!("ε = {e:.3} at δ = {dl}, noise seeded: NOT private"),
            _ => "none (no differential privacy)".into(),
        },
    ));
    if let Some(sigma) = s.noise_multiplier {
        rows.push((
            "noise multiplier".into(),
            format!("{sigma:.4} (clip norm {})", s.clip_norm),
        ));
    }
    rows.push((
        "secure aggregation".into(),
        if s.secure_aggregation { "on" } else { "off" }.into(),
    ));
    if !spec.dropout.is_none() {
        let matched = if d.mismatched_rounds.is_empty() {
            "as planned".to_owned()
        } else {
            format!("differs in rounds {:?}", d.mismatched_rounds)
        };
        rows.push((
            "dropouts".into(),
            format!(
                "{} planned ({} before their input); {} recorded as dropped, {matched}",
                d.planned, d.planned_out_of_sum, d.reported
            ),
        ));
    }
    if let Some(sec) = s.seconds_per_round {
        let cpu = s
            .cpu_seconds_per_round
            .map(|c| format!(" ({c:.2} CPU s)"))
            .unwrap_or_default();
        rows.push(("seconds per round".into(), format!("{sec:.2}{cpu}")));
    }
    rows.push(("wall time".into(), format!("{:.1} s", s.wall_seconds)));
    if let Some(b) = s.peak_rss_bytes {
        let how = match s.engine {
            crate::engine::Engine::InProcess => "this process",
            crate::engine::Engine::Processes => "sum over processes, sampled",
        };
        rows.push(("peak memory".into(), format!("{} ({how})", bytes(b))));
    }
    rows.push(("finished".into(), s.finish_reason.clone()));
    rows.push(("outputs".into(), spec.out.display().to_string()));
    table("Run summary", &rows)
}
