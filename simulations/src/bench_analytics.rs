//! `tessera-sim bench analytics`: the time of each step of a query over
//! local CSV files (one site per file) — every site's check and bounded
//! vector, the in-process secure-aggregation round, and the noised release —
//! as medians over repeats, for each query kind.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use rand::rand_core::CryptoRng;
use tessera_analytics::release::release;
use tessera_analytics::site::{Table, contribution};
use tessera_analytics::{KindName, QueryNoise, QueryPlan, parse_query};

/// Options of `tessera-sim bench analytics`.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalyticsBenchArgs {
    /// One CSV per site (default: the four heart-disease hospitals).
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Queries to time (default: one of each kind on the heart-disease columns).
    #[arg(long)]
    pub query: Vec<String>,
    /// Repeats per query (the medians are printed).
    #[arg(long, default_value_t = 21)]
    pub repeats: usize,
    /// Row cap per site.
    #[arg(long, default_value_t = 400)]
    pub max_rows: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Median seconds of each step of one query.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryTiming {
    /// The query.
    pub query: String,
    /// Every site's policy check and vector.
    pub sites: f64,
    /// The secure-aggregation round.
    pub secure_sum: f64,
    /// Noise and decoding.
    pub release: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark.
pub fn run(args: &AnalyticsBenchArgs) -> anyhow::Result<Vec<QueryTiming>> {
    let data = if args.data.is_empty() {
        ["cleveland", "hungary", "switzerland", "va_long_beach"]
            .iter()
            .map(|h| {
                crate::bundled_data()
                    .join("heart_disease")
                    .join(format!("{h}.csv"))
            })
            .collect()
    } else {
        args.data.clone()
    };
    let tables: Vec<Table> = data
        .iter()
        .map(|p| Table::read_csv(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let queries = if args.query.is_empty() {
        vec![
            "count where age > 65 and cp = 4".to_string(),
            "mean chol in [100, 600] where chol > 0".to_string(),
            "histogram age edges [20, 30, 40, 50, 60, 70, 80]".to_string(),
            "top 2 cp among [1, 2, 3, 4]".to_string(),
        ]
    } else {
        args.query.clone()
    };
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut out = Vec::new();
    for q in &queries {
        let query = parse_query(q).map_err(|e| anyhow::anyhow!("{q}: {e}"))?;
        let noise = match query.kind.name() {
            KindName::Histogram => QueryNoise::NoiseMultiplier(2.0),
            _ => QueryNoise::Epsilon(1.0),
        };
        let plan = QueryPlan {
            query,
            max_rows: args.max_rows,
            noise,
        };
        let policy = tessera_analytics::SitePolicy {
            columns: tables
                .iter()
                .flat_map(|t| t.columns.iter().cloned())
                .collect(),
            ..Default::default()
        };
        let (mut sites, mut sums, mut releases) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeats.max(1) {
            let t = Instant::now();
            let vectors: Vec<Vec<u64>> = tables
                .iter()
                .map(|table| {
                    policy.check(&plan, &[])?;
                    contribution(&plan, table)
                })
                .collect::<Result<_, _>>()?;
            sites.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut rngs: Vec<Box<dyn CryptoRng>> = (0..vectors.len())
                .map(|_| -> Box<dyn CryptoRng> {
                    Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng()))
                })
                .collect();
            let (sum, who) = crate::secure_sum::secure_sum(&vectors, 64, [0; 32], &mut rngs)?;
            sums.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let sealed = release(&plan, &sum, who.len(), 1e-5, &mut rng)?;
            let _ = sealed.open_after(|_| Ok::<_, anyhow::Error>(()))?;
            releases.push(t.elapsed().as_secs_f64());
        }
        out.push(QueryTiming {
            query: plan.query.to_string(),
            sites: median(sites),
            secure_sum: median(sums),
            release: median(releases),
        });
    }
    Ok(out)
}

/// Prints the timings (milliseconds) or JSON.
pub fn print(timings: &[QueryTiming], json: bool) {
    if json {
        match serde_json::to_string_pretty(timings) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return;
    }
    println!(
        "{:<52} {:>10} {:>12} {:>10}",
        "query (medians, ms)", "sites", "secure sum", "release"
    );
    for t in timings {
        println!(
            "{:<52} {:>10.3} {:>12.3} {:>10.3}",
            t.query,
            t.sites * 1e3,
            t.secure_sum * 1e3,
            t.release * 1e3
        );
    }
}
