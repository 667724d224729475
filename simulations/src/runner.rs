//! Carrying out a [`RunSpec`]: write the split and its table, plan the
//! dropouts, start the federation on its engine, follow the rounds
//! (evaluating every released model on the pooled test split, with a
//! progress display), then write the run's files ([`crate::run_files`]) and
//! print its summary table.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tessera_coordinator::store::{RoundStatus, Store};
use tessera_model::{Dataset, RoundKind};

use crate::dropout::DropoutPlan;
use crate::engine::{self, SiteExtras, site_rng_seed};
use crate::experiment::{RoundMetrics, RunSpec, Summary};
use crate::launch::{self, Layout, SitePlan};
use crate::partition_skew::{Partition, PartitionTable};
use crate::progress::{Progress, Style};
use crate::run_files::{self, RoundRecordView};

/// Runs a federation as specified, printing progress; returns the summary.
pub fn run(mut spec: RunSpec) -> anyhow::Result<Summary> {
    let out = spec.out.clone();
    refuse_previous_run(&out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let split = spec.data.write(&out.join("data"))?;
    let table = PartitionTable::of(&spec.data, &spec.task.label);
    std::fs::write(out.join("data").join("partition.csv"), table.to_csv())?;
    println!(
        "Data: {} partition over {} sites (seed {}; rows and label counts in data/partition.csv):",
        spec.partition,
        split.sites.len(),
        spec.seed
    );
    println!("{table}");
    spec.plan.sites = SitePlan::from_split(&split);
    if spec.plan.learning.evaluate_every > 0 {
        // Each site holds out its share of the pooled test rows, so the
        // federated evaluation can be checked against the pooled figures;
        // split partitions deal the test rows like IID ones.
        let (files, largest) = crate::learning::write_evaluation_files(
            &spec.data,
            &split,
            spec.partition != Partition::Natural,
            &spec.task.label,
            spec.seed,
            &out.join("data").join("eval"),
        )?;
        spec.plan.learning.evaluation_data = files;
        // The row bound the evaluation's noise is scaled to: the simulation
        // chose the split, so the largest held-out share is a public bound.
        let learning = &mut spec.plan.learning;
        learning.evaluation_max_rows = learning.evaluation_max_rows.or(Some(largest.max(1) as f64));
    }
    let test = tessera_model::load_csv(&split.test_path, &spec.task)?;
    describe_privacy(&spec);

    let names: Vec<String> = spec.plan.sites.iter().map(|s| s.name.clone()).collect();
    let plan = spec
        .dropout
        .plan(&names, spec.plan.rounds, spec.seed, spec.plan.secagg);
    if !spec.dropout.is_none() {
        std::fs::write(out.join("dropout_plan.csv"), plan.to_csv())?;
        println!(
            "Dropouts: {} of {} sites leave each training round ({}; plan in dropout_plan.csv)",
            spec.dropout.per_round(names.len()),
            names.len(),
            spec.dropout
        );
    }
    let extras: BTreeMap<String, SiteExtras> = names
        .iter()
        .map(|n| {
            let x = SiteExtras {
                leave: plan.for_site(n),
                rng_seed: spec.site_seed.map(|s| site_rng_seed(s, n)),
            };
            (n.clone(), x)
        })
        .collect();

    let mut layout = launch::prepare(&spec.plan)?;
    set_dropout_tolerance(&layout, spec.dropout_tolerance, spec.dropout.total())?;
    println!("Engine: {}", spec.engine.describe(names.len()));
    let started = Instant::now();
    let mut fed = engine::start(spec.engine, &spec.plan, &mut layout, &extras)?;
    println!(
        "Federation: coordinator on {}, {} participants, {} rounds (logs in {})",
        fed.address(),
        names.len(),
        spec.plan.rounds,
        layout.logs.display()
    );

    let checkpoints = layout.coordinator_out.join("checkpoints");
    let mut history: Vec<RoundMetrics> = Vec::new();
    let mut progress = Progress::new("round", u64::from(spec.plan.rounds), Style::detect());
    // A backstop against a federation that hangs: the coordinator's own
    // deadlines end rounds that cannot finish.
    let deadline =
        Duration::from_secs(60 + (u64::from(spec.plan.rounds) + 1) * (30 + names.len() as u64 / 4));
    // CPU seconds of the federation when each round was seen.
    let mut cpu: Vec<(u32, f64)> = Vec::new();
    let end = loop {
        let before = history.len();
        let used = fed.cpu_seconds();
        follow_rounds(
            &checkpoints,
            &layout,
            &test,
            &spec,
            started,
            &mut history,
            &mut progress,
        );
        if let Some(u) = used {
            cpu.extend(history[before..].iter().map(|m| (m.round, u)));
        }
        if let Some(end) = fed.poll()? {
            break end;
        }
        if started.elapsed() > deadline {
            fed.kill();
            bail!(
                "the federation did not finish within {deadline:?}; see {}",
                layout.logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    follow_rounds(
        &checkpoints,
        &layout,
        &test,
        &spec,
        started,
        &mut history,
        &mut progress,
    );
    progress.finish();
    let wall = started.elapsed().as_secs_f64();
    for problem in fed.finish(Duration::from_secs(10)) {
        eprintln!("{problem}");
    }
    let peak_rss = fed.peak_rss();
    let leavings = fed.leavings();
    if !end.success {
        bail!("the federation failed: {}", end.detail);
    }
    let usage = Usage {
        wall,
        peak_rss,
        cpu_per_round: cpu_per_round(&cpu),
    };
    finish(spec, layout, test, history, plan, leavings, usage)
}

/// A directory that holds a previous run's coordinator store would resume
/// that run, whatever the new options say: refused, naming the store.
pub fn refuse_previous_run(out: &Path) -> anyhow::Result<()> {
    let store = out.join("coordinator").join("coordinator.sqlite");
    if store.exists() {
        anyhow::bail!(
            "{} holds a previous run (its coordinator store {}); choose another --out or remove it",
            out.display(),
            store.display()
        );
    }
    Ok(())
}

/// What the federation used.
struct Usage {
    wall: f64,
    peak_rss: Option<u64>,
    cpu_per_round: Option<f64>,
}

/// CPU seconds per round between the first and the last round seen;
/// `None` when every round was seen at one reading (a run too short to
/// tell, not a free one).
fn cpu_per_round(seen: &[(u32, f64)]) -> Option<f64> {
    let (first, last) = (seen.first()?, seen.last()?);
    (last.0 > first.0 && last.1 > first.1).then(|| (last.1 - first.1) / f64::from(last.0 - first.0))
}

/// Everything after the federation: evaluation of the final model, the
/// store's figures, the files and the summary table.
fn finish(
    spec: RunSpec,
    layout: Layout,
    test: Dataset,
    mut history: Vec<RoundMetrics>,
    plan: DropoutPlan,
    leavings: Option<BTreeMap<u64, Vec<(String, crate::dropout::Stage)>>>,
    usage: Usage,
) -> anyhow::Result<Summary> {
    let Usage {
        wall,
        peak_rss,
        cpu_per_round,
    } = usage;
    let out = &spec.out;
    let model_path = layout.coordinator_out.join("model.safetensors");
    crate::learning::attach_federated(&mut history, &layout.coordinator_out.join("rounds.csv"));
    history.sort_by_key(|h| h.round);
    let external = spec.task.model == tessera_model::ModelKind::External;
    let (final_accuracy, final_loss, final_regression, model) = if !model_path.exists() {
        (f64::NAN, f64::NAN, None, None)
    } else if external {
        // The simulation cannot run an external model: the final figures are
        // the last federated evaluation's (of the sites' held-out rows, which
        // are the pooled test rows).
        let last = history.iter().rev().find_map(|h| h.federated.as_ref());
        let regression = last.and_then(|f| {
            Some(tessera_model::RegressionScores {
                rmse: f.rmse?,
                mae: f.mae?,
                r2: f.r2?,
            })
        });
        (
            last.and_then(|f| f.accuracy).unwrap_or(f64::NAN),
            last.and_then(|f| f.log_loss.or(f.mse)).unwrap_or(f64::NAN),
            regression,
            Some(model_path),
        )
    } else {
        let m = tessera_model::read_model(&model_path)?;
        let e = tessera_model::evaluate(&m, &test)?;
        (e.accuracy, e.loss, e.regression, Some(model_path))
    };
    let store = Store::open_read_only(&layout.store())?;
    let finish_reason = store
        .meta("finish_reason")?
        .unwrap_or_else(|| "federation finished".into());
    let privacy = spec.plan.privacy.as_ref();
    let epsilon = match privacy {
        Some(p) => Some(tessera_coordinator::budget::ledger_epsilon(
            &store.privacy_events()?,
            p.delta,
            tessera_privacy::AccountantKind::Best,
        )?),
        None => None,
    };
    let (epsilon_against_coordinator, placement) = match privacy {
        Some(p) => {
            let rows = store.ledger()?;
            (
                tessera_coordinator::privacy_report::coordinator_epsilon(&rows, p.delta),
                Some(p.placement.as_str().to_owned()),
            )
        }
        None => (None, None),
    };
    let noise_multiplier = privacy.and_then(|_| {
        store
            .ledger()
            .ok()?
            .iter()
            .rev()
            .find(|r| r.kind == RoundKind::Training)
            .map(|r| r.noise_multiplier)
    });
    let records: Vec<RoundRecordView> = store
        .rounds()?
        .into_iter()
        .filter(|r| r.kind == RoundKind::Training && r.status == RoundStatus::Released)
        .filter_map(|r| {
            Some(RoundRecordView {
                training_round: r.training_round?,
                aggregation: r.round,
                contributors: r.contributors.len(),
                dropped: r.dropped,
                seconds: r.ended_at_ms.map(|e| (e - r.started_at_ms) as f64 / 1000.0),
            })
        })
        .collect();
    for m in history.iter_mut() {
        m.seconds = m.seconds.max(0.0);
    }
    let timed: Vec<f64> = records.iter().filter_map(|r| r.seconds).collect();
    let seconds_per_round =
        (!timed.is_empty()).then(|| timed.iter().sum::<f64>() / timed.len() as f64);
    let dropouts = run_files::dropout_report(&plan, &records, leavings.as_ref());
    let summary = Summary {
        task: spec.task.kind.name().to_owned(),
        final_accuracy,
        final_regression,
        final_loss,
        rounds: history.iter().map(|h| h.round).max().unwrap_or(0),
        planned_rounds: spec.plan.rounds,
        participants: spec.plan.sites.len(),
        epsilon,
        epsilon_against_coordinator,
        placement,
        delta: privacy.map(|p| p.delta),
        noise_multiplier,
        private: privacy.is_some_and(|p| p.noise_seed.is_none()),
        secure_aggregation: spec.plan.secagg,
        noise_seeded: privacy.is_some_and(|p| p.noise_seed.is_some()),
        clip_norm: spec.plan.training.clip_norm,
        partition: spec.partition,
        engine: spec.engine,
        seconds_per_round,
        cpu_seconds_per_round: cpu_per_round,
        peak_rss_bytes: peak_rss,
        planned_dropouts: dropouts.planned,
        reported_dropouts: dropouts.reported,
        seed: spec.seed,
        test_rows: test.n_rows(),
        finish_reason,
        wall_seconds: wall,
        model,
        history,
    };
    run_files::write(out, &spec, &summary, &records, &dropouts)?;
    tessera_coordinator::privacy_report::write_markdown(
        &layout.store(),
        "tessera-sim",
        privacy.map_or(1e-5, |p| p.delta),
        privacy.and_then(|p| p.max_epsilon.or(p.target_epsilon)),
        &out.join("privacy_report.md"),
    )?;
    println!();
    println!("{}", run_files::summary_table(&spec, &summary, &dropouts));
    Ok(summary)
}

/// Sizes secure aggregation: the coordinator's `secagg.dropout_tolerance`
/// (SecAgg+ derives its neighbourhoods and thresholds from it) is `given`,
/// or, unset, the coordinator's default raised to the planned share of
/// dropouts plus a margin.
fn set_dropout_tolerance(layout: &Layout, given: Option<f64>, planned: f64) -> anyhow::Result<()> {
    if given.is_none() && planned <= 0.0 {
        return Ok(());
    }
    let path = &layout.coordinator_config;
    let mut config = tessera_coordinator::config::CoordinatorConfig::load(path)?;
    let wanted = match given {
        Some(t) => t,
        None => config
            .secagg
            .dropout_tolerance
            .max((planned + 0.05).min(0.5)),
    };
    if config.secagg.dropout_tolerance != wanted {
        config.secagg.dropout_tolerance = wanted;
        crate::configs::write_toml(path, &config)?;
    }
    if planned > 0.0 && wanted < planned {
        println!(
            "Note: {planned} of the sites leave each round, above the dropout tolerance {wanted}: rounds may fail."
        );
    }
    Ok(())
}

/// Prints what the run's privacy is.
pub fn describe_privacy(spec: &RunSpec) {
    match &spec.plan.privacy {
        None => println!(
            "Privacy: OFF — this run is NOT differentially private (add --target-epsilon or --noise-multiplier)."
        ),
        Some(p) => {
            if p.noise_seed.is_some() {
                println!(
                    "WARNING: the noise is seeded (--noise-seed): this run is NOT private; use it only to reproduce simulations."
                );
            }
            match (p.noise_multiplier, p.target_epsilon) {
                (Some(s), _) => println!(
                    "Privacy: DP-FedAvg, noise multiplier {s}, clip norm {}, δ = {}",
                    spec.plan.training.clip_norm, p.delta
                ),
                (None, Some(e)) => println!(
                    "Privacy: DP-FedAvg, target ε = {e} at δ = {} over {} rounds, clip norm {}",
                    p.delta, spec.plan.rounds, spec.plan.training.clip_norm
                ),
                _ => {}
            }
            if let Some(a) = &p.adaptive_clipping {
                println!(
                    "Adaptive clipping: the clip norm starts at {} and tracks the {} quantile of the update norms (clip learning rate {}, bit noise σ_b = {})",
                    spec.plan.training.clip_norm,
                    a.target_quantile,
                    a.clip_learning_rate,
                    a.clip_count_noise_multiplier
                        .map(|b| format!("{b:.4}"))
                        .unwrap_or_else(|| "the coordinator's default".into()),
                );
            }
        }
    }
    if spec.site_seed.is_some() {
        println!(
            "WARNING: the sites' randomness is seeded (--noise-seed): their masks are predictable; for reproducing simulations only."
        );
    }
    if !spec.plan.secagg {
        println!("Secure aggregation: OFF (plain sums, for comparisons only).");
    }
    if spec.plan.signed_keys {
        println!(
            "Secure aggregation: advertised keys signed with the participants' certificate keys."
        );
    }
}

/// Evaluates checkpoints that appeared since the last call and shows them.
fn follow_rounds(
    dir: &Path,
    layout: &Layout,
    test: &Dataset,
    spec: &RunSpec,
    started: Instant,
    history: &mut Vec<RoundMetrics>,
    progress: &mut Progress,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut rounds: Vec<(u32, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = name
                .strip_prefix("model-round-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((r, e.path()))
        })
        .filter(|(r, _)| *r > 0 && history.iter().all(|h| h.round != *r))
        .collect();
    rounds.sort();
    for (round, path) in rounds {
        let Ok(model) = tessera_model::read_model(&path) else {
            continue;
        };
        let Ok(e) = tessera_model::evaluate(&model, test) else {
            continue;
        };
        let epsilon = spec.plan.privacy.as_ref().and_then(|p| {
            let store = Store::open_read_only(&layout.store()).ok()?;
            let events: Vec<_> = store
                .ledger()
                .ok()?
                .into_iter()
                .filter(|r| r.training_round.is_none_or(|t| t <= round))
                .map(|r| r.event)
                .collect();
            tessera_coordinator::budget::ledger_epsilon(
                &events,
                p.delta,
                tessera_privacy::AccountantKind::Best,
            )
            .ok()
        });
        let m = RoundMetrics {
            round,
            accuracy: e.accuracy,
            loss: e.loss,
            epsilon,
            seconds: started.elapsed().as_secs_f64(),
            regression: e.regression,
            federated: None,
        };
        let score = match &m.regression {
            Some(r) => format!("test RMSE {:.3}  R² {:.3}", r.rmse, r.r2),
            None => format!("test accuracy {:.3}  loss {:.4}", m.accuracy, m.loss),
        };
        let detail = match epsilon {
            Some(eps) => format!("{score}  ε = {eps:.3}"),
            None => score,
        };
        progress.set(u64::from(round), &detail);
        history.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_per_round;

    #[test]
    fn cpu_per_round_needs_two_readings() {
        assert_eq!(cpu_per_round(&[]), None);
        // Rounds 1-3 all seen at one reading: no interval to divide.
        assert_eq!(cpu_per_round(&[(1, 2.0), (2, 2.0), (3, 2.0)]), None);
        assert_eq!(cpu_per_round(&[(1, 2.0), (3, 3.0)]), Some(0.5));
    }
}
