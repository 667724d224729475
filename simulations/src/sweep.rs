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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::plots::SweepFigure;
use crate::progress::{Progress, Style};
pub use crate::sweep_report::Done;
use crate::sweep_report::{final_metric, metric_name};

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
    /// Models to sweep, one per flag (`--models logistic --models mlp:16,8`),
    /// as `--model` names them.
    #[arg(long)]
    pub models: Vec<String>,
    /// Server optimizers to sweep (comma-separated: `fedavg,fedadam`).
    #[arg(long, value_delimiter = ',')]
    pub server_optimizers: Vec<String>,
    /// Another option to sweep, `NAME=V1,V2,…` (e.g. `task=binary,multiclass`,
    /// `weight_decay=0,0.01`); repeat for several (every combination runs).
    #[arg(long)]
    pub vary: Vec<String>,
    /// Runs at once (default: the available cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Skip the non-private runs (no non-private line in the plot).
    #[arg(long)]
    pub no_baseline: bool,
    /// After the runs, choose the best private setting by the exponential
    /// mechanism on the sites' secure-summed validation scores (needs
    /// `--evaluate-every`); writes `selection.json` (see `select`).
    #[arg(long)]
    pub select: bool,
    /// ε of the choice (`--select`).
    #[arg(long, default_value_t = 1.0)]
    pub select_epsilon: f64,
    /// Noise placements to sweep (comma-separated: `central,distributed,local`),
    /// crossed with the privacy settings: one curve per placement. At a
    /// target ε each placement reaches it for its own promise (see the
    /// README): the released models for central and distributed noise, each
    /// site's own update for local noise.
    #[arg(long, value_delimiter = ',')]
    pub placements: Vec<tessera_model::Placement>,
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
    /// Noise placement of a private run, when the sweep varies it.
    pub placement: Option<tessera_model::Placement>,
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

/// The options a sweep varies besides privacy and seeds, in order:
/// `--models`, `--server-optimizers`, then each `--vary`.
pub fn varied(o: &SweepOptions) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    if !o.models.is_empty() {
        out.push(("model".to_owned(), o.models.clone()));
    }
    if !o.server_optimizers.is_empty() {
        out.push(("server_optimizer".to_owned(), o.server_optimizers.clone()));
    }
    for v in &o.vary {
        let (name, values) = parse_vary(v)?;
        if out.iter().any(|(n, _)| *n == name) {
            bail!("`{name}` is varied twice");
        }
        out.push((name, values));
    }
    Ok(out)
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
    for (name, values) in varied(o)? {
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
    if o.placements
        .iter()
        .enumerate()
        .any(|(i, p)| o.placements[..i].contains(p))
    {
        bail!("--placements names a placement twice");
    }
    // The non-private baseline has no placement: it runs once per combination.
    let placements: Vec<Option<tessera_model::Placement>> = if o.placements.is_empty() {
        vec![None]
    } else {
        o.placements.iter().copied().map(Some).collect()
    };
    let all = settings.into_iter().chain((!o.no_baseline).then_some(None));
    let mut out = Vec::new();
    for setting in all {
        let placements = if setting.is_some() {
            placements.as_slice()
        } else {
            &[None]
        };
        for &placement in placements {
            for combo in &combos {
                for i in 0..o.seeds {
                    let s = seed + i;
                    let mut name = match setting {
                        Some(("noise_multiplier", v)) => format!("sigma-{v}"),
                        Some((_, v)) => format!("eps-{v}"),
                        None => "nonprivate".into(),
                    };
                    if let Some(p) = placement {
                        name.push_str(&format!("-dp-{p}"));
                    }
                    for (k, v) in combo {
                        name.push_str(&format!("-{k}-{}", v.replace([':', '/', ' ', ','], "_")));
                    }
                    name.push_str(&format!("-seed-{s}"));
                    out.push(Job {
                        name,
                        varied: combo.clone(),
                        setting,
                        seed: s,
                        noise_seed: noise_seed.map(|n| n + i),
                        placement,
                    });
                }
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
        if let Some(p) = job.placement {
            t.insert("dp".into(), p.as_str().into());
        }
    } else {
        // A non-private run has no placement (and a swept one is not its).
        t.remove("dp");
        t.remove("colluding_sites");
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
                    let value = final_metric(&summary);
                    let eps = summary["epsilon"]
                        .as_f64()
                        .map(|e| format!(", ε = {e:.3}"))
                        .unwrap_or_default();
                    let metric = metric_name(&summary);
                    progress.set(finished, &format!("{}: {metric} {value:.3}{eps}", job.name));
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
    if o.select
        && base
            .get("evaluate_every")
            .and_then(toml::Value::as_integer)
            .unwrap_or(0)
            < 1
    {
        bail!(
            "--select scores each setting on the sites' held-out rows: add --evaluate-every N \
             (e.g. the number of rounds)"
        );
    }
    if o.select && !(o.select_epsilon.is_finite() && o.select_epsilon > 0.0) {
        bail!(
            "--select-epsilon {} must be a finite number above 0",
            o.select_epsilon
        );
    }
    if out.join("sweep.csv").exists() || out.join("runs").exists() {
        anyhow::bail!(
            "{} holds a previous sweep; choose another --out or remove it",
            out.display()
        );
    }
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
    let varied: Vec<String> = varied(o)?.into_iter().map(|v| v.0).collect();
    let done = run_all(&base, all.clone(), jobs, out)?;
    if done.is_empty() {
        bail!(
            "no run of the sweep finished; see the run.log files under {}",
            out.join("runs").display()
        );
    }
    std::fs::write(
        out.join("sweep.csv"),
        crate::sweep_report::sweep_csv(&done, &varied),
    )?;
    let series = crate::sweep_report::series(&done);
    let first = &done[0].summary;
    let data = base
        .get("data")
        .and_then(|d| d.as_array()?.first()?.as_str().map(str::to_owned))
        .and_then(|d| Some(Path::new(&d).file_stem()?.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let title = format!(
        "{data}: {} sites, {} rounds, {} runs, {} seeds per setting",
        first["participants"],
        first["planned_rounds"],
        done.len(),
        o.seeds
    );
    crate::plots::privacy_utility(
        out,
        &SweepFigure {
            title: &title,
            metric: metric_name(first),
            delta,
            series: &series,
        },
    )?;
    println!();
    print!("{}", crate::sweep_report::table(&done));
    println!(
        "{} of {} runs finished; wrote {}, {} and {}",
        done.len(),
        all.len(),
        out.join("sweep.csv").display(),
        out.join("privacy_utility.png").display(),
        out.join("privacy_utility.svg").display()
    );
    if o.select {
        let s = crate::select::select(&done, &out.join("runs"), o.select_epsilon, noise_seed)?;
        std::fs::write(
            out.join("selection.json"),
            serde_json::to_string_pretty(&s)?,
        )?;
        println!();
        println!("Selected  {} (runs {})", s.chosen, s.runs.join(", "));
        println!(
            "          by the exponential mechanism over {} settings on {} sites' \
             secure-summed validation scores (sensitivity {}): ε = {} (pure)",
            s.candidates.len(),
            s.sites,
            s.sensitivity,
            s.epsilon
        );
        println!(
            "          the sweep in all (every private run and the choice, basic \
             composition): ε ≤ {:.4} at δ = {:e}; wrote {}",
            s.total_epsilon,
            s.total_delta,
            out.join("selection.json").display()
        );
        if s.not_private {
            println!("WARNING   --noise-seed: the choice is predictable, NOT private");
        }
    }
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SweepOptions {
        SweepOptions {
            noise_multipliers: vec![0.5, 2.0],
            target_epsilons: vec![],
            seeds: 2,
            models: vec![],
            server_optimizers: vec![],
            vary: vec!["model=logistic,mlp:8".into()],
            jobs: None,
            no_baseline: false,
            select: false,
            select_epsilon: 1.0,
            placements: vec![],
        }
    }

    #[test]
    fn placements_cross_the_private_settings_only() {
        use tessera_model::Placement;
        let mut o = opts();
        o.vary.clear();
        o.seeds = 1;
        o.placements = vec![Placement::Central, Placement::Local];
        let all = jobs(&o, 1, None).unwrap();
        // 2 σ × 2 placements, and one baseline without a placement.
        assert_eq!(all.len(), 5);
        let base = toml::Table::new();
        let dir = Path::new("/tmp/x");
        let local = all
            .iter()
            .find(|j| j.name == "sigma-2-dp-local-seed-1")
            .unwrap();
        assert_eq!(job_options(&base, local, dir)["dp"].as_str(), Some("local"));
        let baseline = all.iter().find(|j| j.setting.is_none()).unwrap();
        let mut with_dp = base.clone();
        with_dp.insert("dp".into(), "distributed".into());
        assert!(!job_options(&with_dp, baseline, dir).contains_key("dp"));
        o.placements = vec![Placement::Local, Placement::Local];
        assert!(jobs(&o, 1, None).is_err());
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
    fn models_and_optimizers_are_swept_like_any_option() {
        let o = SweepOptions {
            models: vec!["logistic".into(), "mlp:16,8".into()],
            server_optimizers: vec!["fedavg".into(), "fedadam".into()],
            vary: vec![],
            no_baseline: true,
            seeds: 1,
            ..opts()
        };
        let all = jobs(&o, 1, None).unwrap();
        // 2 settings × 2 models × 2 optimizers × 1 seed.
        assert_eq!(all.len(), 8);
        let j = all
            .iter()
            .find(|j| j.name == "sigma-2-model-mlp_16_8-server_optimizer-fedadam-seed-1")
            .unwrap();
        let t = job_options(&toml::Table::new(), j, Path::new("/tmp/r"));
        assert_eq!(t["model"].as_str(), Some("mlp:16,8"));
        assert_eq!(t["server_optimizer"].as_str(), Some("fedadam"));
        // The same option twice is refused.
        let twice = SweepOptions {
            vary: vec!["model=softmax".into()],
            ..o
        };
        assert!(jobs(&twice, 1, None).is_err());
    }
}
