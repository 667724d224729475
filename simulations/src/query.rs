//! `tessera-sim query`: one analytics query over local CSV files, one site
//! per file. Each site checks the plan against its policy before reading a
//! row, the answering sites' bounded vectors go through a whole
//! secure-aggregation round in this process (real key agreement, Shamir
//! shares and masks, from `tessera-secagg`), and the coordinator's side of
//! `tessera-analytics` noises the sum, records the ledger event and only
//! then prints the answer with its noise scale and ε.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rand_core::{CryptoRng, Rng};
use tessera_analytics::release::{Release, release};
use tessera_analytics::site::{Table, contribution};
use tessera_analytics::{KindName, QueryNoise, QueryPlan, RefusalCode, SitePolicy, parse_query};
use tessera_privacy::PrivacyEvent;

/// Options of `tessera-sim query`.
#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    /// The query, e.g. "count where age > 65 and cp = 4" (see the README's
    /// "Federated analytics").
    pub query: String,
    /// One CSV file per site (at least 3: secure aggregation needs them).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Pure ε of the query (count, sum, mean, most common / top k).
    #[arg(long, default_value_t = 1.0)]
    pub epsilon: f64,
    /// Gaussian noise multiplier σ of a histogram (noise std σ × row cap per bin).
    #[arg(long, default_value_t = 2.0)]
    pub noise_multiplier: f64,
    /// Most rows one site contributes (the row cap that bounds the sensitivity).
    #[arg(long, default_value_t = 1000)]
    pub max_rows: u64,
    /// δ at which a histogram's ε is stated.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Columns every site allows to be queried (comma-separated; default:
    /// every column of its file).
    #[arg(long, value_delimiter = ',', conflicts_with = "policy")]
    pub allow: Option<Vec<String>>,
    /// Every site's policy from a TOML file, as a site states it: `columns`,
    /// `min_noise_multiplier` (a table by kind), `max_epsilon`, `delta`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Keep the ledgers here across queries: `sites/<site>.json` (each
    /// site's own, written before its vector is used) and `federation.json`
    /// (written before the answer is shown). A site with `max_epsilon`
    /// declines once its ledger would pass it.
    #[arg(long)]
    pub ledger_dir: Option<PathBuf>,
    /// Columns the site of the `--data` file at this 1-based position does
    /// not allow, e.g. `2:cp` (repeatable): to see a site decline.
    #[arg(long)]
    pub deny: Vec<String>,
    /// Least noise multiplier every site accepts per kind, e.g. `count=2`
    /// (repeatable; see the README for what the multiplier is per kind).
    #[arg(long)]
    pub min_noise: Vec<String>,
    /// Seed of the noise and of the secure-aggregation keys: the answer is
    /// then NOT private (for reproducible examples only).
    #[arg(long)]
    pub noise_seed: Option<u64>,
    /// Print the release as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One site's decision on the query.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteOutcome {
    /// The site (the file's stem).
    pub site: String,
    /// None when it answered; else the code it declined with.
    pub declined: Option<RefusalCode>,
    /// ε of the site's own ledger after the query (pure events add up).
    pub site_epsilon: f64,
}

/// What `tessera-sim query` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryOutcome {
    /// The release.
    pub release: Release,
    /// Each site's decision.
    pub sites: Vec<SiteOutcome>,
    /// The federation's ledger after the query (with `--ledger-dir`, every
    /// query so far).
    pub ledger: Vec<LedgerRecord>,
    /// ε of the federation's ledger (the accountant's, at `ledger_delta`).
    pub ledger_epsilon: f64,
    /// δ of `ledger_epsilon` (`--delta`).
    pub ledger_delta: f64,
    /// Whether the noise was seeded (not private).
    pub not_private: bool,
}

/// One release in the federation's ledger.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LedgerRecord {
    /// The query's canonical text.
    pub query: String,
    /// Its privacy event.
    pub event: PrivacyEvent,
}

/// Reads a JSON ledger, or an empty one if the file does not exist.
fn read_ledger<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a ledger this tool wrote", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a JSON ledger durably: a temporary file, synced, then renamed
/// over the old one, so a crash leaves the old ledger or the new one.
fn write_ledger<T: serde::Serialize>(path: &Path, ledger: &[T]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(ledger)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn parse_kind(s: &str) -> anyhow::Result<KindName> {
    KindName::ALL
        .into_iter()
        .find(|k| k.as_str() == s || (s == "most_common" && *k == KindName::TopK))
        .with_context(|| format!("unknown query kind `{s}`: count, sum, mean, histogram or top_k"))
}

fn site_name(path: &std::path::Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Runs the query (see the module docs).
pub fn run(args: &QueryArgs) -> anyhow::Result<QueryOutcome> {
    let query = parse_query(&args.query).map_err(|e| {
        anyhow::anyhow!(
            "the query cannot be read at position {}:\n{}",
            e.position,
            e.render(&args.query)
        )
    })?;
    let noise = match query.kind.name() {
        KindName::Histogram => QueryNoise::NoiseMultiplier(args.noise_multiplier),
        _ => QueryNoise::Epsilon(args.epsilon),
    };
    let plan = QueryPlan {
        query,
        max_rows: args.max_rows,
        noise,
    };
    plan.validate().context("the query plan")?;
    let mut floors = std::collections::BTreeMap::new();
    for m in &args.min_noise {
        let (k, v) = m
            .split_once('=')
            .with_context(|| format!("--min-noise {m}: expected KIND=VALUE"))?;
        let v: f64 = v
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("--min-noise {m}: not a number ≥ 0"))?;
        floors.insert(parse_kind(k)?, v);
    }
    let mut denied: Vec<BTreeSet<String>> = vec![BTreeSet::new(); args.data.len()];
    for d in &args.deny {
        let (i, cols) = d
            .split_once(':')
            .with_context(|| format!("--deny {d}: expected SITE:COLUMN[,COLUMN]"))?;
        let i: usize = i
            .parse()
            .ok()
            .filter(|i| (1..=args.data.len()).contains(i))
            .with_context(|| format!("--deny {d}: no --data file at position {i}"))?;
        denied[i - 1].extend(cols.split(',').map(|c| c.trim().to_string()));
    }
    let base_policy: Option<SitePolicy> = match &args.policy {
        Some(p) => Some(
            tessera_common::config::read_toml(p).map_err(|e| anyhow::anyhow!("--policy: {e}"))?,
        ),
        None => None,
    };
    let mut sites = Vec::new();
    let mut vectors = Vec::new();
    for (path, deny) in args.data.iter().zip(&denied) {
        // Only the header is read before the site has checked the plan.
        let header = tessera_model::read_header(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut policy = base_policy.clone().unwrap_or_else(|| SitePolicy {
            columns: match &args.allow {
                Some(a) => a.iter().cloned().collect(),
                None => header.iter().cloned().collect::<BTreeSet<_>>(),
            },
            ..SitePolicy::default()
        });
        policy.columns = policy.columns.difference(deny).cloned().collect();
        policy.min_noise_multiplier.extend(floors.clone());
        let site_path = args
            .ledger_dir
            .as_ref()
            .map(|d| d.join("sites").join(format!("{}.json", site_name(path))));
        let mut site_ledger: Vec<PrivacyEvent> = match &site_path {
            Some(p) => read_ledger(p)?,
            None => Vec::new(),
        };
        let refused = match policy.check(&plan, &site_ledger) {
            Err(r) => Some(r),
            Ok(event) => {
                // Only now is the file read.
                let table =
                    Table::read_csv(path).with_context(|| format!("reading {}", path.display()))?;
                match contribution(&plan, &table) {
                    Err(r) => Some(r),
                    Ok(v) => {
                        // The site records the query before its input leaves it.
                        site_ledger.push(event);
                        if let Some(p) = &site_path {
                            write_ledger(p, &site_ledger)?;
                        }
                        vectors.push(v);
                        None
                    }
                }
            }
        };
        let declined = refused.map(|r| {
            eprintln!(
                "site {} declines: {} [{}] ({})",
                site_name(path),
                r.code.text(),
                r.code.as_str(),
                r.detail
            );
            r.code
        });
        let site_epsilon = if site_ledger.is_empty() {
            0.0
        } else {
            tessera_privacy::epsilon(
                &site_ledger,
                args.delta,
                tessera_privacy::AccountantKind::Best,
            )
            .context("the site's ledger")?
            .epsilon
        };
        sites.push(SiteOutcome {
            site: site_name(path),
            declined,
            site_epsilon,
        });
    }
    let n = vectors.len();
    if n < 3 {
        bail!(
            "only {n} of {} sites answered; secure aggregation needs at least 3",
            args.data.len()
        );
    }
    let mut rng: Box<dyn CryptoRng> = match args.noise_seed {
        Some(s) => Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(s)),
        None => Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
    };
    let mut graph_seed = [0u8; 32];
    rng.fill_bytes(&mut graph_seed);
    // Each site's keys and masks from its own generator: the operating
    // system's, or with --noise-seed one seeded from the noise seed.
    let mut site_rngs: Vec<Box<dyn CryptoRng>> = (0..n as u64)
        .map(|i| -> Box<dyn CryptoRng> {
            match args.noise_seed {
                Some(s) => Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(
                    s.wrapping_add(1 + i),
                )),
                None => Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
            }
        })
        .collect();
    let (sum, contributors) =
        crate::secure_sum::secure_sum(&vectors, 64, graph_seed, &mut site_rngs)
            .context("the secure-aggregation round")?;
    let sealed = release(&plan, &sum, contributors.len(), args.delta, &mut rng)
        .context("releasing the sum")?;
    let fed_path = args.ledger_dir.as_ref().map(|d| d.join("federation.json"));
    let mut ledger: Vec<LedgerRecord> = match &fed_path {
        Some(p) => read_ledger(p)?,
        None => Vec::new(),
    };
    let query_text = plan.query.to_string();
    // The federation's ledger is written before the answer is opened.
    let release = sealed.open_after(|e| {
        ledger.push(LedgerRecord {
            query: query_text,
            event: e.clone(),
        });
        match &fed_path {
            Some(p) => write_ledger(p, &ledger),
            None => Ok(()),
        }
    })?;
    let events: Vec<PrivacyEvent> = ledger.iter().map(|r| r.event.clone()).collect();
    let ledger_epsilon =
        tessera_privacy::epsilon(&events, args.delta, tessera_privacy::AccountantKind::Best)
            .context("the federation's ledger")?
            .epsilon;
    Ok(QueryOutcome {
        release,
        sites,
        ledger,
        ledger_epsilon,
        ledger_delta: args.delta,
        not_private: args.noise_seed.is_some(),
    })
}

/// Prints an outcome for people (or as JSON).
pub fn print(o: &QueryOutcome, json: bool) {
    if json {
        match serde_json::to_string_pretty(o) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return;
    }
    let r = &o.release;
    let answered: Vec<&str> = o
        .sites
        .iter()
        .filter(|s| s.declined.is_none())
        .map(|s| s.site.as_str())
        .collect();
    let declined: Vec<String> = o
        .sites
        .iter()
        .filter_map(|s| s.declined.map(|c| format!("{} ({})", s.site, c.as_str())))
        .collect();
    println!("query     {}", r.query);
    println!(
        "sites     {} answered ({}){}",
        answered.len(),
        answered.join(", "),
        if declined.is_empty() {
            String::new()
        } else {
            format!(", declined: {}", declined.join(", "))
        }
    );
    println!("answer    {}", r.answer.summary());
    for n in &r.noise {
        println!(
            "noise     {}: {}, scale {:.4} (std {:.4})",
            n.part,
            n.mechanism.as_str(),
            n.scale,
            n.std
        );
    }
    if r.delta > 0.0 {
        println!("privacy   ε = {:.4} at δ = {:e}", r.epsilon, r.delta);
    } else {
        println!("privacy   ε = {:.4} (pure)", r.epsilon);
    }
    if o.ledger.len() > 1 {
        println!(
            "ledger    {} releases so far: ε = {:.4} at δ = {:e} (accountant)",
            o.ledger.len(),
            o.ledger_epsilon,
            o.ledger_delta
        );
    }
    if o.not_private {
        println!("WARNING   --noise-seed: the noise is predictable, this answer is NOT private");
    }
}
