//! `tessera-sim query`: one analytics query over local CSV files, one site
//! per file. Each site checks the plan against its policy before reading a
//! row, the answering sites' bounded vectors go through a whole
//! secure-aggregation round in this process (real key agreement, Shamir
//! shares and masks, from `tessera-secagg`), and the coordinator's side of
//! `tessera-analytics` noises the sum, records the ledger event and only
//! then prints the answer with its noise scale and ε.

use std::collections::BTreeSet;
use std::path::PathBuf;

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
    #[arg(long, value_delimiter = ',')]
    pub allow: Option<Vec<String>>,
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
    /// The federation's ledger after the query.
    pub ledger: Vec<PrivacyEvent>,
    /// Whether the noise was seeded (not private).
    pub not_private: bool,
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
    let mut sites = Vec::new();
    let mut vectors = Vec::new();
    for (path, deny) in args.data.iter().zip(&denied) {
        let table = Table::read_csv(path).with_context(|| format!("reading {}", path.display()))?;
        let columns = match &args.allow {
            Some(a) => a.iter().cloned().collect(),
            None => table.columns.iter().cloned().collect::<BTreeSet<_>>(),
        };
        let policy = SitePolicy {
            columns: columns.difference(deny).cloned().collect(),
            min_noise_multiplier: floors.clone(),
            ..SitePolicy::default()
        };
        let mut site_ledger: Vec<PrivacyEvent> = Vec::new();
        let decided = policy
            .check(&plan, &site_ledger)
            .and_then(|event| Ok((event, contribution(&plan, &table)?)));
        let declined = match decided {
            Ok((event, v)) => {
                // The site records the query before its input leaves it.
                site_ledger.push(event);
                vectors.push(v);
                None
            }
            Err(r) => {
                eprintln!(
                    "site {} declines: {} [{}] ({})",
                    site_name(path),
                    r.code.text(),
                    r.code.as_str(),
                    r.detail
                );
                Some(r.code)
            }
        };
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
    let mut ledger = Vec::new();
    let release = sealed.open_after(|e| {
        ledger.push(e.clone());
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(QueryOutcome {
        release,
        sites,
        ledger,
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
    if o.not_private {
        println!("WARNING   --noise-seed: the noise is predictable, this answer is NOT private");
    }
}
