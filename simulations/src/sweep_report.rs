//! What a sweep reports from its finished runs: `sweep.csv` (one line per
//! run), the series of the privacy–utility plot and the table printed at
//! the end.
//!
//! The final metric is the pooled test accuracy of the final model, or its
//! RMSE for a regression (the runs' `summary.json` says which task ran).

use std::collections::BTreeMap;

use crate::plots::{SweepPoint, SweepSeries};
use crate::sweep::Job;

/// A finished run: its job and summary.
#[derive(Debug, Clone)]
pub struct Done {
    /// The job.
    pub job: Job,
    /// Its `summary.json`.
    pub summary: serde_json::Value,
}

/// The name of the final metric of runs with this summary.
pub fn metric_name(summary: &serde_json::Value) -> &'static str {
    if summary["task"] == "regression" {
        "test RMSE"
    } else {
        "test accuracy"
    }
}

/// The final metric of a run (see the module docs); NaN when missing.
pub fn final_metric(summary: &serde_json::Value) -> f64 {
    let v = if summary["task"] == "regression" {
        &summary["final_regression"]["rmse"]
    } else {
        &summary["final_accuracy"]
    };
    v.as_f64().unwrap_or(f64::NAN)
}

/// `sweep.csv`: one line per finished run.
pub fn sweep_csv(done: &[Done], varied: &[String]) -> String {
    let mut csv = String::from("setting,noise_multiplier,target_epsilon");
    for v in varied {
        csv.push_str(&format!(",{v}"));
    }
    csv.push_str(
        ",seed,epsilon,delta,final_accuracy,final_loss,final_rmse,rounds,private,task,run,\
         placement,epsilon_against_coordinator\n",
    );
    let num = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x}")).unwrap_or_default();
    for d in done {
        let s = &d.summary;
        let (setting, target) = match d.job.setting {
            Some(("target_epsilon", e)) => ("target_epsilon", format!("{e}")),
            Some(_) => ("noise_multiplier", String::new()),
            None => ("non_private", String::new()),
        };
        csv.push_str(&format!(
            "{setting},{},{target}",
            num(&s["noise_multiplier"])
        ));
        for (_, value) in &d.job.varied {
            // A value with a comma (`mlp:16,8`) is quoted.
            if value.contains(',') {
                csv.push_str(&format!(",\"{value}\""));
            } else {
                csv.push_str(&format!(",{value}"));
            }
        }
        csv.push_str(&format!(
            ",{},{},{},{},{},{},{},{},{},{},{},{}\n",
            d.job.seed,
            num(&s["epsilon"]),
            num(&s["delta"]),
            num(&s["final_accuracy"]),
            num(&s["final_loss"]),
            num(&s["final_regression"]["rmse"]),
            s["rounds"],
            s["private"],
            s["task"].as_str().unwrap_or_default(),
            d.job.name,
            s["placement"].as_str().unwrap_or_default(),
            num(&s["epsilon_against_coordinator"]),
        ));
    }
    csv
}

/// One series being gathered: per private setting the runs' ε and
/// metrics, and the non-private metrics.
#[derive(Default)]
struct Gathered {
    settings: BTreeMap<String, (Vec<f64>, Vec<f64>)>,
    non_private: Vec<f64>,
}

/// The ε a run is plotted at: the guarantee of its placement — the
/// released models' ε, except for local noise, whose promise is each site's
/// own update protected by its own noise against everyone (the coordinator
/// included; the run's `epsilon_against_coordinator`).
pub fn plotted_epsilon(summary: &serde_json::Value) -> Option<f64> {
    if summary["placement"] == "local" {
        summary["epsilon_against_coordinator"].as_f64()
    } else {
        summary["epsilon"].as_f64()
    }
}

/// The plot's series: one per combination of varied values and placement;
/// a placement's series shares the non-private runs of its combination.
pub fn series(done: &[Done]) -> Vec<SweepSeries> {
    let mut by: BTreeMap<(String, String), Gathered> = BTreeMap::new();
    let mut baseline: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for d in done {
        let label: Vec<String> = d
            .job
            .varied
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let label = label.join(", ");
        let placement = d
            .job
            .placement
            .map(|p| format!("dp = {p}"))
            .unwrap_or_default();
        let value = final_metric(&d.summary);
        match (d.job.setting, plotted_epsilon(&d.summary)) {
            (Some((k, v)), Some(eps)) => {
                let entry = by.entry((label, placement)).or_default();
                let e = entry.settings.entry(format!("{k}={v}")).or_default();
                e.0.push(eps);
                e.1.push(value);
            }
            (None, _) => baseline.entry(label).or_default().push(value),
            _ => {}
        }
    }
    // Combinations with only non-private runs still get their series.
    for label in baseline.keys() {
        if !by.keys().any(|(l, _)| l == label) {
            by.entry((label.clone(), String::new())).or_default();
        }
    }
    by.into_iter()
        .map(|((label, placement), g)| SweepSeries {
            non_private: baseline.get(&label).cloned().unwrap_or(g.non_private),
            label: match (label.is_empty(), placement.is_empty()) {
                (_, true) => label,
                (true, false) => placement,
                (false, false) => format!("{placement}, {label}"),
            },
            points: g
                .settings
                .into_values()
                .map(|(eps, values)| SweepPoint {
                    epsilon: eps.iter().sum::<f64>() / eps.len() as f64,
                    values,
                })
                .collect(),
        })
        .collect()
}

/// The table printed at the end: per setting (all seeds together) the
/// runs, the mean ε and the mean, least and greatest final metric.
pub fn table(done: &[Done]) -> String {
    let mut groups: BTreeMap<String, Vec<&Done>> = BTreeMap::new();
    for d in done {
        let seedless = d
            .job
            .name
            .rsplit_once("-seed-")
            .map_or(d.job.name.clone(), |x| x.0.to_owned());
        groups.entry(seedless).or_default().push(d);
    }
    let metric = done
        .first()
        .map_or("test accuracy", |d| metric_name(&d.summary));
    let mut out = format!(
        "{:<40} {:>5} {:>10} {:>14} {:>15}\n",
        "setting", "runs", "ε (mean)", metric, "min – max"
    );
    for (name, runs) in groups {
        let values: Vec<f64> = runs
            .iter()
            .map(|d| final_metric(&d.summary))
            .filter(|v| v.is_finite())
            .collect();
        let eps: Vec<f64> = runs
            .iter()
            .filter_map(|d| plotted_epsilon(&d.summary))
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.push_str(&format!(
            "{:<40} {:>5} {:>10} {:>14.4} {:>7.3} – {:.3}\n",
            name,
            runs.len(),
            if eps.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.3}", mean(&eps))
            },
            mean(&values),
            lo,
            hi
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(name: &str, setting: Option<(&'static str, f64)>, seed: u64, acc: f64) -> Done {
        let private = setting.is_some();
        Done {
            job: Job {
                name: name.into(),
                varied: vec![("model".into(), "mlp:16,8".into())],
                setting,
                seed,
                noise_seed: None,
                placement: None,
            },
            summary: serde_json::json!({
                "task": "binary",
                "final_accuracy": acc, "epsilon": if private { Some(2.0) } else { None },
                "delta": 1e-5, "noise_multiplier": 1.0, "final_loss": 0.3, "rounds": 5,
                "private": private,
            }),
        }
    }

    #[test]
    fn placements_make_one_series_each_and_share_the_baseline() {
        use tessera_model::Placement;
        let eps = Some(("target_epsilon", 2.0));
        let mut done = Vec::new();
        for p in [Placement::Central, Placement::Local] {
            let mut d = mk(&format!("eps-2-dp-{p}-seed-1"), eps, 1, 0.9);
            d.job.placement = Some(p);
            d.summary["placement"] = p.as_str().into();
            d.summary["epsilon_against_coordinator"] = match p {
                Placement::Local => 2.0.into(),
                _ => serde_json::Value::Null,
            };
            if p == Placement::Local {
                // The released models' ε is smaller: the sum carries n sites' noise.
                d.summary["epsilon"] = 0.4.into();
            }
            done.push(d);
        }
        done.push(mk("nonprivate-seed-1", None, 1, 0.95));
        let s = series(&done);
        let labels: Vec<&str> = s.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "dp = central, model = mlp:16,8",
                "dp = local, model = mlp:16,8"
            ]
        );
        for x in &s {
            assert_eq!(x.non_private, [0.95]);
            // Each at its own promise: ε = 2.
            assert_eq!(x.points[0].epsilon, 2.0);
        }
    }

    #[test]
    fn the_table_and_series_group_by_setting() {
        let sigma = Some(("noise_multiplier", 1.0));
        let done = vec![
            mk("sigma-1-seed-1", sigma, 1, 0.9),
            mk("sigma-1-seed-2", sigma, 2, 0.8),
            mk("nonprivate-seed-1", None, 1, 0.95),
        ];
        let s = series(&done);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].label, "model = mlp:16,8");
        assert_eq!(s[0].points.len(), 1);
        assert_eq!(s[0].points[0].values, vec![0.9, 0.8]);
        assert_eq!(s[0].non_private, vec![0.95]);
        let csv = sweep_csv(&done, &["model".into()]);
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.lines().nth(1).unwrap().starts_with(
                "noise_multiplier,1,,\"mlp:16,8\",1,2,0.00001,0.9,0.3,,5,true,binary,"
            ),
            "{csv}"
        );
        let t = table(&done);
        assert!(t.contains("test accuracy"), "{t}");
        let sigma_line = t.lines().find(|l| l.starts_with("sigma-1 ")).unwrap();
        assert!(sigma_line.contains("0.8500"), "{t}");
    }

    #[test]
    fn a_regression_reports_its_rmse() {
        let s = serde_json::json!({
            "task": "regression", "final_accuracy": null,
            "final_regression": {"rmse": 52.5, "mae": 40.0, "r2": 0.4},
        });
        assert_eq!(metric_name(&s), "test RMSE");
        assert_eq!(final_metric(&s), 52.5);
        let binary = serde_json::json!({"task": "binary", "final_accuracy": 0.9});
        assert_eq!(final_metric(&binary), 0.9);
        assert!(final_metric(&serde_json::json!({})).is_nan());
    }
}
