//! Synthetic classification data for simulations at scale (a thousand
//! sites need more rows than the bundled files have): features drawn from
//! a standard normal, a binary label from a fixed random linear rule plus a
//! quadratic term and noise, all seeded. `tessera-sim synthetic` writes it.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Options of `tessera-sim synthetic`.
#[derive(Debug, Clone, clap::Args)]
pub struct SyntheticArgs {
    /// Rows to write.
    #[arg(long, default_value_t = 20_000)]
    pub rows: usize,
    /// Numeric features (`x01` …); the label column is `y`.
    #[arg(long, default_value_t = 20)]
    pub features: usize,
    /// Seed of the rule and the rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The CSV file to write.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Writes `rows` rows of `features` features and a 0/1 label `y` to `path`.
pub fn write(path: &Path, rows: usize, features: usize, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(features >= 1, "at least one feature");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::<f64>::new(0.0, 1.0).expect("valid");
    let w: Vec<f64> = (0..features).map(|_| normal.sample(&mut rng)).collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let width = features.to_string().len().max(2);
    let header: Vec<String> = (1..=features).map(|i| format!("x{i:0width$}")).collect();
    writeln!(out, "{},y", header.join(","))?;
    let scale = (features as f64).sqrt();
    for _ in 0..rows {
        let x: Vec<f64> = (0..features).map(|_| normal.sample(&mut rng)).collect();
        let linear: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / scale;
        let bend = 0.5 * (x[0] * x[0] - 1.0);
        let y = u8::from(linear + bend + 0.3 * normal.sample(&mut rng) > 0.0);
        let cells: Vec<String> = x.iter().map(|v| format!("{v:.4}")).collect();
        writeln!(out, "{},{y}", cells.join(","))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_seeded_rows_with_both_labels() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        super::write(&a, 200, 5, 3).unwrap();
        super::write(&b, 200, 5, 3).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "x01,x02,x03,x04,x05,y");
        assert_eq!(lines.len(), 201);
        let ones = lines[1..].iter().filter(|l| l.ends_with(",1")).count();
        assert!((40..160).contains(&ones), "{ones}");
    }
}
