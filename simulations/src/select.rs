//! `tessera-sim sweep --select`: private selection of the best setting.
//!
//! Every private setting of the sweep is a candidate (the non-private
//! baselines are not: their models are not private). Its utility is the
//! number of validation rows its final models classify correctly, summed
//! over its seeds and over the sites: each site scores every candidate's
//! final model on at most `max_rows` of its own held-out rows
//! (`data/eval/<site>.csv`, written by runs with `--evaluate-every`),
//! the sites' count vectors go through one secure-aggregation round, and
//! the exponential mechanism (McSherry & Talwar 2007, Theorem 6) picks a
//! candidate from the exact sums, which are never shown.
//!
//! Sensitivity: with the candidate models fixed, adding or removing one
//! site changes a candidate's utility by at most `seeds × max_rows` (its
//! rows in each seed's score). The models are outputs of the runs' own
//! mechanisms, so by adaptive composition (Dwork & Roth 2014, Theorem 3.16)
//! the sweep as a whole is (Σ ε_run + ε_select, Σ δ_run)-DP; the report
//! states that sum, never less.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rand_core::{CryptoRng, Rng};
use tessera_privacy::{PrivacyEvent, exponential_mechanism};

use crate::sweep::Done;

/// What the selection chose and what it cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Selection {
    /// The chosen setting, as the sweep names it (`noise_multiplier=1`, …).
    pub chosen: String,
    /// The chosen setting's runs.
    pub runs: Vec<String>,
    /// Every candidate setting, in order.
    pub candidates: Vec<String>,
    /// ε of the selection (pure).
    pub epsilon: f64,
    /// Its ledger event.
    pub event: PrivacyEvent,
    /// Sensitivity of the utility: seeds × rows per site.
    pub sensitivity: f64,
    /// Sites whose scores are in the secure sum.
    pub sites: usize,
    /// The sweep's ε by basic composition: every private run's ε and the selection's.
    pub total_epsilon: f64,
    /// The sweep's δ: every private run's δ summed.
    pub total_delta: f64,
    /// The noise was seeded: NOT private.
    pub not_private: bool,
}

/// The name of a done run's setting (privacy setting and varied options).
fn setting_name(d: &Done) -> Option<String> {
    let (k, v) = d.job.setting?;
    let mut s = format!("{k}={v}");
    for (name, value) in &d.job.varied {
        s.push_str(&format!(", {name}={value}"));
    }
    Some(s)
}

/// Correct predictions of `model` on the first `max_rows` rows of `path`.
fn correct(model: &tessera_model::ModelFile, path: &Path, max_rows: usize) -> anyhow::Result<u64> {
    let ds = tessera_model::load_csv(path, &model.task)
        .with_context(|| format!("reading {}", path.display()))?;
    let n = ds.n_rows().min(max_rows);
    if n == 0 {
        return Ok(0);
    }
    let ds = ds.select(&(0..n).collect::<Vec<_>>());
    let e = tessera_model::evaluate(model, &ds)?;
    if !e.accuracy.is_finite() {
        bail!("--select scores classification accuracy; a regression has none");
    }
    Ok((e.accuracy * e.rows as f64).round() as u64)
}

/// Selects the best private setting of a finished sweep (see the module
/// docs); `noise_seed` seeds the keys and the choice (not private).
pub fn select(
    done: &[Done],
    runs_dir: &Path,
    epsilon: f64,
    noise_seed: Option<u64>,
) -> anyhow::Result<Selection> {
    tessera_privacy::loss::Epsilon::positive(epsilon).context("--select-epsilon")?;
    let mut by_setting: BTreeMap<String, Vec<&Done>> = BTreeMap::new();
    for d in done {
        if let Some(s) = setting_name(d) {
            by_setting.entry(s).or_default().push(d);
        }
    }
    if by_setting.len() < 2 {
        bail!("--select needs at least two private settings that finished");
    }
    let candidates: Vec<String> = by_setting.keys().cloned().collect();
    let seeds = by_setting.values().map(Vec::len).max().unwrap_or(1);
    // The sites and the public row bound: the largest held-out share any
    // site has in any run (the simulation chose the splits).
    let mut sites: Vec<String> = Vec::new();
    let mut max_rows = 0usize;
    for d in done.iter().filter(|d| d.job.setting.is_some()) {
        let eval = runs_dir.join(&d.job.name).join("data").join("eval");
        let entries = std::fs::read_dir(&eval).with_context(|| {
            format!(
                "{} has no per-site validation rows: --select needs runs with \
                 --evaluate-every",
                eval.display()
            )
        })?;
        for e in entries {
            let p = e?.path();
            let Some(stem) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let rows = tessera_model::read_raw_csv(&p)?.rows.len();
            max_rows = max_rows.max(rows);
            if !sites.contains(&stem) {
                sites.push(stem);
            }
        }
    }
    sites.sort();
    if sites.len() < 3 {
        bail!("--select needs at least 3 sites for secure aggregation");
    }
    // Each site's vector: per candidate, its correct rows over the seeds.
    let mut vectors = Vec::with_capacity(sites.len());
    for site in &sites {
        let mut v = Vec::with_capacity(candidates.len());
        for c in &candidates {
            let mut total = 0u64;
            for d in &by_setting[c] {
                let dir = runs_dir.join(&d.job.name);
                let model =
                    tessera_model::read_model(&dir.join("coordinator").join("model.safetensors"))
                        .with_context(|| format!("the final model of {}", d.job.name))?;
                let path = dir.join("data").join("eval").join(format!("{site}.csv"));
                if path.exists() {
                    total += correct(&model, &path, max_rows)?;
                }
            }
            v.push(total);
        }
        vectors.push(v);
    }
    let mut rng: Box<dyn CryptoRng> = match noise_seed {
        Some(s) => Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(s ^ 0x005e_1ec7)),
        None => Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
    };
    let mut graph_seed = [0u8; 32];
    rng.fill_bytes(&mut graph_seed);
    let mut site_rngs: Vec<Box<dyn CryptoRng>> = (0..sites.len() as u64)
        .map(|i| -> Box<dyn CryptoRng> {
            match noise_seed {
                Some(s) => Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(
                    s.wrapping_add(100 + i),
                )),
                None => Box::new(rand::rngs::StdRng::from_rng(&mut rand::rng())),
            }
        })
        .collect();
    let (sum, _) = crate::secure_sum::secure_sum(&vectors, 64, graph_seed, &mut site_rngs)?;
    let scores: Vec<f64> = sum.iter().map(|&x| x as f64).collect();
    let sensitivity = (seeds * max_rows.max(1)) as f64;
    let pick = exponential_mechanism(&scores, epsilon, sensitivity, &mut rng)?;
    let chosen = candidates[pick].clone();
    let (mut total_epsilon, mut total_delta) = (epsilon, 0.0);
    for d in done.iter().filter(|d| d.job.setting.is_some()) {
        total_epsilon += d.summary["epsilon"].as_f64().unwrap_or(f64::INFINITY);
        total_delta += d.summary["delta"].as_f64().unwrap_or(0.0);
    }
    Ok(Selection {
        runs: by_setting[&chosen]
            .iter()
            .map(|d| d.job.name.clone())
            .collect(),
        chosen,
        candidates,
        epsilon,
        event: PrivacyEvent::Exponential { epsilon, count: 1 },
        sensitivity,
        sites: sites.len(),
        total_epsilon,
        total_delta,
        not_private: noise_seed.is_some(),
    })
}
