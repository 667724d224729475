//! `tessera-sim sweep`: one run per privacy setting, per value of any other
//! option varied (`--vary model=logistic,mlp:16`) and per seed, several at
//! a time, then `sweep.csv` and the privacy–utility plot.
//!
//! Settings are noise multipliers (`--noise-multipliers 0.5,1,2,4`) or
//! target ε values (`--target-epsilons 1,2,4,8`); with `--seeds K` each runs
//! with seeds `seed … seed + K − 1` (the data split, the initial model and
//! the local shuffling change; with `--noise-seed N` the noise of seed i is
//! seeded with N + i). Unless `--no-baseline`, every seed also runs without
//! differential privacy: the non-private level of the plot.
//!
//! Every run is a `tessera-sim run` child process started from its own
//! options file (`DIR/runs/NAME/options.toml`: the sweep's run options with
//! the setting's), so it leaves the same files as any run, and `--jobs`
//! runs go at once (default: the available cores). Runs use the in-process
//! engine unless `--engine` says otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::plots::{SweepFigure, SweepPoint, SweepSeries};
use crate::progress::{Progress, Style};

/// Options of `tessera-sim sweep` besides the run's.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepOptions {
    /// Noise multipliers σ to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "target_epsilons")]
    pub noise_multipliers: Vec<f64>,
    /// Target ε values to sweep (comma-separated); σ is calibrated for each.
    #[arg(long, value_delimiter = ',')]
    pub target_epsilons: Vec<f64>,
    /// Seeds per setting, from `--seed` on.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Another option to sweep, `NAME=V1,V2,…` (e.g. `model=logistic,mlp:16`);
    /// repeat for several (every combination runs).
    #[arg(long)]
    pub vary: Vec<String>,
    /// Runs at once (default: the available cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Skip the non-private runs (no non-private line in the plot).
    #[arg(long)]
    pub no_baseline: bool,
}

/// One run of the sweep.
#[derive(Debug, Clone)]
pub struct Job {
    /// Directory name under `runs/`.
    pub name: String,
    /// The varied options' values (`--vary`), in order.
    pub varied: Vec<(String, String)>,
    /// The privacy setting: `("noise_multiplier", σ)`,
    /// `("target_epsilon", ε)`, or None without DP.
    pub setting: Option<(&'static str, f64)>,
    /// Seed.
    pub seed: u64,
    /// Noise seed, if the sweep seeds the noise.
    pub noise_seed: Option<u64>,
}

/// A finished run: its job and summary.
#[derive(Debug, Clone)]
pub struct Done {
    /// The job.
    pub job: Job,
    /// Its `summary.json`.
    pub summary: serde_json::Value,
}

fn parse_vary(v: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (name, values) = v
        .split_once('=')
        .with_context(|| format!("--vary {v}: write NAME=V1,V2"))?;
    let values: Vec<String> = values.split(',').map(|x| x.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        bail!("--vary {v}: an empty value");
    }
    Ok((name.trim().replace('-', "_"), values))
}

/// Every run of a sweep, in order.
pub fn jobs(o: &SweepOptions, seed: u64, noise_seed: Option<u64>) -> anyhow::Result<Vec<Job>> {
    let settings: Vec<Option<(&'static str, f64)>> = if !o.noise_multipliers.is_empty() {
        o.noise_multipliers
            .iter()
            .map(|s| Some(("noise_multiplier", *s)))
            .collect()
    } else if !o.target_epsilons.is_empty() {
        o.target_epsilons
            .iter()
            .map(|e| Some(("target_epsilon", *e)))
            .collect()
    } else {
        bail!("name the settings: --noise-multipliers 0.5,1,2,4 or --target-epsilons 1,2,4,8");
    };
    if o.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut combos: Vec<Vec<(String, String)>> = vec![vec![]];
    for v in &o.vary {
        let (name, values) = parse_vary(v)?;
        let mut next = Vec::new();
        for c in &combos {
            for x in &values {
                let mut c = c.clone();
                c.push((name.clone(), x.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    let all = settings.into_iter().chain((!o.no_baseline).then_some(None));
    let mut out = Vec::new();
    for setting in all {
        for combo in &combos {
            for i in 0..o.seeds {
                let s = seed + i;
                let mut name = match setting {
                    Some(("noise_multiplier", v)) => format!("sigma-{v}"),
                    Some((_, v)) => format!("eps-{v}"),
                    None => "nonprivate".into(),
                };
                for (k, v) in combo {
                    name.push_str(&format!("-{k}-{}", v.replace([':', '/', ' '], "_")));
                }
                name.push_str(&format!("-seed-{s}"));
                out.push(Job {
                    name,
                    varied: combo.clone(),
                    setting,
                    seed: s,
                    noise_seed: noise_seed.map(|n| n + i),
                });
            }
        }
    }
    Ok(out)
}

/// The options file of one run: the sweep's options with the job's.
pub fn job_options(base: &toml::Table, job: &Job, dir: &Path) -> toml::Table {
    let mut t = base.clone();
    for key in [
        "noise_multiplier",
        "target_epsilon",
        "out",
        "seed",
        "noise_seed",
    ] {
        t.remove(key);
    }
    t.insert("out".into(), dir.to_string_lossy().into_owned().into());
    t.insert("seed".into(), (job.seed as i64).into());
    if let Some((key, value)) = job.setting {
        t.insert(key.into(), value.into());
        if let Some(n) = job.noise_seed {
            t.insert("noise_seed".into(), (n as i64).into());
        }
    }
    for (k, v) in &job.varied {
        t.insert(k.clone(), v.clone().into());
    }
    t
}

fn start(exe: &Path, job: &Job, base: &toml::Table, runs: &Path) -> anyhow::Result<Child> {
    let dir = runs.join(&job.name);
    std::fs::create_dir_all(&dir)?;
    let options = dir.join("options.toml");
    std::fs::write(&options, toml::to_string(&job_options(base, job, &dir))?)?;
    let log = std::fs::File::create(dir.join("run.log"))?;
    Command::new(exe)
        .args(["run", "--config"])
        .arg(&options)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("TESSERA_PROGRESS", "lines")
        .spawn()
        .with_context(|| format!("starting the run {}", job.name))
}

/// Runs every job, `jobs` at a time; returns the finished ones (a failed
/// run is reported and left out).
pub fn run_all(
    base: &toml::Table,
    all: Vec<Job>,
    jobs: usize,
    out: &Path,
) -> anyhow::Result<Vec<Done>> {
    let exe = std::env::current_exe().context("locating tessera-sim")?;
    let runs = out.join("runs");
    let mut queue: std::collections::VecDeque<Job> = all.into();
    let mut running: Vec<(Job, Child)> = Vec::new();
    let mut done = Vec::new();
    let total = queue.len() as u64;
    let mut progress = Progress::new("run", total, Style::detect());
    let mut finished = 0;
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs.max(1)
            && let Some(job) = queue.pop_front()
        {
            let child = start(&exe, &job, base, &runs)?;
            running.push((job, child));
        }
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].1.try_wait()? else {
                i += 1;
                continue;
            };
            let (job, _) = running.swap_remove(i);
            finished += 1;
            let dir = runs.join(&job.name);
            let summary = std::fs::read_to_string(dir.join("summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            match summary {
                Some(summary) if status.success() => {
                    let acc = summary["final_accuracy"].as_f64().unwrap_or(f64::NAN);
                    let eps = summary["epsilon"]
                        .as_f64()
                        .map(|e| format!(", ε = {e:.3}"))
                        .unwrap_or_default();
                    progress.set(finished, &format!("{}: accuracy {acc:.3}{eps}", job.name));
                    done.push(Done { job, summary });
                }
                _ => {
                    progress.note(&format!(
                        "run {} failed ({status}); see {}",
                        job.name,
                        dir.join("run.log").display()
                    ));
                    progress.set(finished, &format!("{}: failed", job.name));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.finish();
    Ok(done)
}

/// `sweep.csv`: one line per finished run.
pub fn sweep_csv(done: &[Done], varied: &[String]) -> String {
    let mut csv = String::from("setting,noise_multiplier,target_epsilon");
    for v in varied {
        csv.push_str(&format!(",{v}"));
    }
    csv.push_str(",seed,epsilon,delta,final_accuracy,final_loss,rounds,private,run\n");
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
            csv.push_str(&format!(",{value}"));
        }
        csv.push_str(&format!(
            ",{},{},{},{},{},{},{},{}\n",
            d.job.seed,
            num(&s["epsilon"]),
            num(&s["delta"]),
            num(&s["final_accuracy"]),
            num(&s["final_loss"]),
            s["rounds"],
            s["private"],
            d.job.name
        ));
    }
    csv
}

/// One series being gathered: per private setting the runs' ε and
/// accuracies, and the non-private accuracies.
#[derive(Default)]
struct Gathered {
    settings: BTreeMap<String, (Vec<f64>, Vec<f64>)>,
    non_private: Vec<f64>,
}

/// The plot's series: one per combination of varied values.
pub fn series(done: &[Done]) -> Vec<SweepSeries> {
    let mut by: BTreeMap<String, Gathered> = BTreeMap::new();
    for d in done {
        let label: Vec<String> = d
            .job
            .varied
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let entry = by.entry(label.join(", ")).or_default();
        let acc = d.summary["final_accuracy"].as_f64().unwrap_or(f64::NAN);
        match (d.job.setting, d.summary["epsilon"].as_f64()) {
            (Some((k, v)), Some(eps)) => {
                let e = entry.settings.entry(format!("{k}={v}")).or_default();
                e.0.push(eps);
                e.1.push(acc);
            }
            (None, _) => entry.non_private.push(acc),
            _ => {}
        }
    }
    by.into_iter()
        .map(|(label, g)| SweepSeries {
            label,
            non_private: g.non_private,
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

/// Runs the sweep: `base` holds the run options (TOML keys), `out` the
/// sweep's directory.
pub fn run(
    o: &SweepOptions,
    base: toml::Table,
    out: &Path,
    seed: u64,
    noise_seed: Option<u64>,
    delta: f64,
) -> anyhow::Result<PathBuf> {
    let all = jobs(o, seed, noise_seed)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let jobs = o
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    println!(
        "Sweep: {} runs ({} at a time), each in {}",
        all.len(),
        jobs,
        out.join("runs").display()
    );
    let varied: Vec<String> = o
        .vary
        .iter()
        .filter_map(|v| parse_vary(v).ok())
        .map(|v| v.0)
        .collect();
    let done = run_all(&base, all.clone(), jobs, out)?;
    if done.is_empty() {
        bail!(
            "no run of the sweep finished; see the run.log files under {}",
            out.join("runs").display()
        );
    }
    std::fs::write(out.join("sweep.csv"), sweep_csv(&done, &varied))?;
    let series = series(&done);
    let title = format!(
        "Privacy and utility: {} runs, {} seeds per setting",
        done.len(),
        o.seeds
    );
    crate::plots::privacy_utility(
        out,
        &SweepFigure {
            title: &title,
            metric: "test accuracy",
            delta,
            series: &series,
        },
    )?;
    println!();
    print_table(&done);
    println!(
        "{} of {} runs finished; wrote {}, {} and {}",
        done.len(),
        all.len(),
        out.join("sweep.csv").display(),
        out.join("privacy_utility.png").display(),
        out.join("privacy_utility.svg").display()
    );
    Ok(out.to_path_buf())
}

fn print_table(done: &[Done]) {
    let mut groups: BTreeMap<String, Vec<&Done>> = BTreeMap::new();
    for d in done {
        let seedless = d
            .job
            .name
            .rsplit_once("-seed-")
            .map_or(d.job.name.clone(), |x| x.0.to_owned());
        groups.entry(seedless).or_default().push(d);
    }
    println!(
        "{:<34} {:>5} {:>10} {:>10} {:>12}",
        "setting", "runs", "ε (mean)", "accuracy", "min – max"
    );
    for (name, runs) in groups {
        let acc: Vec<f64> = runs
            .iter()
            .filter_map(|d| d.summary["final_accuracy"].as_f64())
            .collect();
        let eps: Vec<f64> = runs
            .iter()
            .filter_map(|d| d.summary["epsilon"].as_f64())
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let lo = acc.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = acc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<34} {:>5} {:>10} {:>10.4} {:>5.3} – {:.3}",
            name,
            runs.len(),
            if eps.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.3}", mean(&eps))
            },
            mean(&acc),
            lo,
            hi
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SweepOptions {
        SweepOptions {
            noise_multipliers: vec![0.5, 2.0],
            target_epsilons: vec![],
            seeds: 2,
            vary: vec!["model=logistic,mlp:8".into()],
            jobs: None,
            no_baseline: false,
        }
    }

    #[test]
    fn every_setting_value_and_seed_runs_once() {
        let all = jobs(&opts(), 5, Some(100)).unwrap();
        // (2 settings + baseline) × 2 models × 2 seeds.
        assert_eq!(all.len(), 12);
        let names: std::collections::BTreeSet<&str> = all.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names.len(), 12);
        assert!(names.contains("sigma-0.5-model-mlp_8-seed-6"), "{names:?}");
        assert!(names.contains("nonprivate-model-logistic-seed-5"));
        let j = all
            .iter()
            .find(|j| j.name == "sigma-2-model-logistic-seed-6")
            .unwrap();
        assert_eq!(j.noise_seed, Some(101));
        let base: toml::Table = "rounds = 3\nnoise_multiplier = 9.0\nseed = 1\ndata = [\"x.csv\"]"
            .parse()
            .unwrap();
        let t = job_options(&base, j, Path::new("/tmp/r"));
        assert_eq!(t["noise_multiplier"].as_float(), Some(2.0));
        assert_eq!(t["seed"].as_integer(), Some(6));
        assert_eq!(t["model"].as_str(), Some("logistic"));
        assert_eq!(t["noise_seed"].as_integer(), Some(101));
        let baseline = all.iter().find(|j| j.setting.is_none()).unwrap();
        let t = job_options(&base, baseline, Path::new("/tmp/r"));
        assert!(!t.contains_key("noise_multiplier") && !t.contains_key("noise_seed"));
    }

    #[test]
    fn a_sweep_needs_settings_and_seeds() {
        let mut o = opts();
        o.noise_multipliers.clear();
        assert!(jobs(&o, 1, None).is_err());
        let mut o = opts();
        o.seeds = 0;
        assert!(jobs(&o, 1, None).is_err());
        let mut o = opts();
        o.vary = vec!["model".into()];
        assert!(jobs(&o, 1, None).is_err());
    }

    #[test]
    fn the_table_and_series_group_by_setting() {
        let mk = |name: &str, setting, seed, acc: f64, eps: Option<f64>| Done {
            job: Job {
                name: name.into(),
                varied: vec![],
                setting,
                seed,
                noise_seed: None,
            },
            summary: serde_json::json!({
                "final_accuracy": acc, "epsilon": eps, "delta": 1e-5,
                "noise_multiplier": 1.0, "final_loss": 0.3, "rounds": 5, "private": true,
            }),
        };
        let done = vec![
            mk(
                "sigma-1-seed-1",
                Some(("noise_multiplier", 1.0)),
                1,
                0.9,
                Some(2.0),
            ),
            mk(
                "sigma-1-seed-2",
                Some(("noise_multiplier", 1.0)),
                2,
                0.8,
                Some(2.0),
            ),
            mk("nonprivate-seed-1", None, 1, 0.95, None),
        ];
        let s = series(&done);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points.len(), 1);
        assert_eq!(s[0].points[0].values, vec![0.9, 0.8]);
        assert_eq!(s[0].non_private, vec![0.95]);
        let csv = sweep_csv(&done, &[]);
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("noise_multiplier,1,,1,2,0.00001,0.9,"),
            "{csv}"
        );
    }
}
