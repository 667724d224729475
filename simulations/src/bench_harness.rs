//! `tessera-sim bench harness`: wall time of one private round of N sites
//! in the in-memory harness (the federation machine and N site machines in
//! one thread, secure aggregation with dropouts at every stage).

use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::inmemory::scenario::Scenario;

/// Options of the harness benchmark.
#[derive(Debug, Args)]
pub struct HarnessBenchArgs {
    /// Sites.
    #[arg(long, default_value_t = 100)]
    pub participants: usize,
    /// Sites vanishing at each of the four secure-aggregation stages.
    #[arg(long, default_value_t = 3)]
    pub drops: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct HarnessReport {
    /// Sites.
    pub participants: usize,
    /// Dropouts in the round.
    pub dropouts: usize,
    /// Contributors in the released sum.
    pub contributors: usize,
    /// Messages handed over per round.
    pub messages: u64,
    /// Seconds of every repetition.
    pub seconds: Vec<f64>,
    /// Their median.
    pub median_seconds: f64,
}

/// Runs the benchmark.
pub fn run(args: &HarnessBenchArgs) -> anyhow::Result<HarnessReport> {
    let scenario = Scenario {
        sites: args.participants,
        drops: args.drops,
    };
    let mut seconds = Vec::new();
    let mut last = None;
    for rep in 0..args.reps.max(1) {
        let started = Instant::now();
        let out = scenario.run(rep as u64 + 1)?;
        seconds.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(
            out.released.len() == 1,
            "the round was not released: {:?}",
            out.finished
        );
        last = Some(out);
    }
    let out = last.expect("at least one repetition");
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(HarnessReport {
        participants: args.participants,
        dropouts: 4 * args.drops,
        contributors: out.released[0].summary.contributors.len(),
        messages: out.messages,
        median_seconds: sorted[sorted.len() / 2],
        seconds,
    })
}

/// Prints a report.
pub fn print(r: &HarnessReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    println!(
        "in-memory harness: {} sites, {} dropouts ({} contributors), {} messages",
        r.participants, r.dropouts, r.contributors, r.messages
    );
    let all: Vec<String> = r.seconds.iter().map(|s| format!("{s:.3}")).collect();
    println!(
        "one private round: median {:.3} s (runs: {})",
        r.median_seconds,
        all.join(", ")
    );
}
