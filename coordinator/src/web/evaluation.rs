//! The status page's global evaluation section: the federated evaluation's
//! metrics over the training rounds, read from the federation's own
//! `rounds.csv` (or a configured CSV), as a chart and a table. These are
//! the cohort's sums as released; no site's own figures exist here.

use std::fmt::Write as _;
use std::path::Path;

use super::chart::{Series, line_chart};
use super::escape;

/// A metric the page shows: its label, the CSV columns it may come from
/// (the first present wins), its chart colour, and whether it is charted
/// (metrics on a 0–1 scale; errors in the target's units only in the table).
struct Metric {
    label: &'static str,
    columns: &'static [&'static str],
    colour: &'static str,
    charted: bool,
}

const METRICS: [Metric; 7] = [
    Metric {
        label: "accuracy",
        columns: &["eval_accuracy", "accuracy"],
        colour: "#1e7d32",
        charted: true,
    },
    Metric {
        label: "balanced accuracy",
        columns: &["eval_balanced_accuracy", "balanced_accuracy"],
        colour: "#2e86c1",
        charted: true,
    },
    Metric {
        label: "ROC AUC",
        columns: &["eval_auc", "auc"],
        colour: "#d68910",
        charted: true,
    },
    Metric {
        label: "log loss",
        columns: &["eval_log_loss", "loss"],
        colour: "#8e44ad",
        charted: true,
    },
    Metric {
        label: "R²",
        columns: &["eval_r2", "r2"],
        colour: "#1e7d32",
        charted: true,
    },
    Metric {
        label: "RMSE",
        columns: &["eval_rmse", "rmse"],
        colour: "#b23c17",
        charted: false,
    },
    Metric {
        label: "MAE",
        columns: &["eval_mae", "mae"],
        colour: "#7f8c8d",
        charted: false,
    },
];

/// The metrics of the evaluated rounds: x (training round) and one value
/// per entry of [`METRICS`] (None where the CSV has none).
#[derive(Debug, Default, PartialEq)]
struct Table {
    rows: Vec<(f64, Vec<Option<f64>>)>,
}

impl Table {
    /// Reads a CSV with a `training_round` (or `round`) column and any of the
    /// metric columns; rows with no metric (rounds that evaluated nothing)
    /// are left out. A missing or unreadable file is an empty table.
    fn read(path: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Self::default();
        };
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        let at = |name: &str| cols.iter().position(|c| *c == name);
        let Some(x) = at("training_round").or_else(|| at("round")) else {
            return Self::default();
        };
        let metric_cols: Vec<Option<usize>> = METRICS
            .iter()
            .map(|m| m.columns.iter().find_map(|c| at(c)))
            .collect();
        let rows = lines
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(',').map(str::trim).collect();
                let get = |i: usize| cells.get(i)?.parse::<f64>().ok().filter(|v| v.is_finite());
                let values: Vec<Option<f64>> =
                    metric_cols.iter().map(|c| c.and_then(get)).collect();
                values
                    .iter()
                    .any(Option::is_some)
                    .then(|| Some((get(x)?, values)))
                    .flatten()
            })
            .collect();
        Self { rows }
    }

    /// Indices of the metrics with at least one value.
    fn present(&self) -> Vec<usize> {
        (0..METRICS.len())
            .filter(|&i| {
                self.rows
                    .iter()
                    .any(|(_, v)| v.get(i).copied().flatten().is_some())
            })
            .collect()
    }
}

/// The section, from the CSV at `path` (None: nothing recorded).
pub(super) fn section(path: Option<&Path>) -> String {
    let table = path.map(Table::read).unwrap_or_default();
    let mut h = String::from(
        "<section id=\"evaluation\"><h2>Global evaluation</h2>\
         <p class=\"muted\">Each site evaluates the released model on its own held-out rows; \
         only the sums over the cohort are released (noised under differential privacy).</p>",
    );
    let present = table.present();
    if present.is_empty() {
        h.push_str("<p class=\"muted\">No evaluation metrics recorded.</p></section>\n");
        return h;
    }
    let series: Vec<Series<'_>> = present
        .iter()
        .filter_map(|&i| METRICS.get(i).map(|m| (i, m)))
        .filter(|(_, m)| m.charted)
        .map(|(i, m)| Series {
            label: m.label,
            colour: m.colour,
            points: table
                .rows
                .iter()
                .filter_map(|(x, v)| Some((*x, v.get(i).copied().flatten()?)))
                .collect(),
        })
        .collect();
    if !series.is_empty() {
        h.push_str(&line_chart(
            "evaluation of the released models",
            "training round",
            &series,
            None,
        ));
    }
    h.push_str("<table><tr><th>training round</th>");
    for &i in &present {
        let label = METRICS.get(i).map_or("", |m| m.label);
        let _ = write!(h, "<th>{}</th>", escape(label));
    }
    h.push_str("</tr>");
    for (x, values) in &table.rows {
        let _ = write!(h, "<tr><td>{x}</td>");
        for &i in &present {
            let cell = values
                .get(i)
                .copied()
                .flatten()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
            let _ = write!(h, "<td>{cell}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></section>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_federations_rounds_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.csv");
        std::fs::write(
            &path,
            "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm,\
             eval_rows,eval_accuracy,eval_balanced_accuracy,eval_log_loss,eval_auc,eval_rmse,eval_mae,eval_r2\n\
             1,,statistics,released,4,4,0,0.1,,,,,,,,,,\n\
             2,1,training,released,4,4,0,0.1,,,,,,,,,,\n\
             3,1,evaluation,released,4,4,0,0.1,,,120.000000,0.812500,0.800000,0.450000,0.880000,,,\n",
        )
        .unwrap();
        let t = Table::read(&path);
        assert_eq!(t.rows.len(), 1, "only the evaluation round has metrics");
        assert_eq!(t.rows[0].0, 1.0, "x is the training round evaluated");
        assert_eq!(t.rows[0].1[0], Some(0.8125));
        assert_eq!(t.present(), vec![0, 1, 2, 3]);
        let html = section(Some(&path));
        assert!(
            html.contains("<th>ROC AUC</th>") && html.contains("0.8125"),
            "{html}"
        );
        assert!(!html.contains("<th>RMSE</th>"), "{html}");
    }

    #[test]
    fn regression_metrics_chart_r2_and_tabulate_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(
            &path,
            "training_round,eval_rmse,eval_mae,eval_r2\n2,55.5,44.25,0.42\n4,50,40,0.5\n",
        )
        .unwrap();
        let html = section(Some(&path));
        assert!(
            html.contains("<th>RMSE</th>") && html.contains("55.5000"),
            "{html}"
        );
        assert!(html.contains("<svg"), "R² is charted: {html}");
        assert_eq!(Table::read(&path).present(), vec![4, 5, 6]);
    }

    #[test]
    fn nothing_recorded_says_so() {
        assert!(section(None).contains("No evaluation metrics recorded"));
        let dir = tempfile::tempdir().unwrap();
        assert!(section(Some(&dir.path().join("missing.csv"))).contains("No evaluation"));
    }
}
