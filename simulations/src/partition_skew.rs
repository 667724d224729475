//! Skewed splits of one CSV file, and the table that describes any split.
//!
//! Both skews hold out the pooled test set from the whole file first
//! (stratified by label and seeded, as [`crate::partition::iid`] does), then
//! split the remaining rows over `n` sites named `site-1` … `site-n`
//! (zero-padded), every draw from ChaCha8 generators seeded by the run seed:
//!
//! - **Dirichlet label skew** (`dirichlet:α`, Hsu, Qi & Brown 2019): for each
//!   label value, proportions over the sites are drawn from Dir(α, …, α)
//!   (as normalised Gamma(α, 1) draws) and that value's rows are dealt in
//!   those proportions (largest remainders). Small α gives sites dominated
//!   by one label; large α approaches IID.
//! - **Quantity skew** (`quantity:β`): site sizes follow a power law: each
//!   site draws a weight w = u^(−1/β) with u uniform in (0, 1] (a Pareto
//!   law of shape β, so P(w > x) = x^(−β)), and gets rows in proportion to
//!   it (largest remainders); the rows themselves are shuffled, so labels
//!   stay IID. Small β gives a few very large sites.
//!
//! Every site keeps at least [`MIN_SITE_ROWS`] rows: a site below that takes
//! rows, one at a time, from the largest site (of that site's most common
//! label, for the Dirichlet split), so a split never leaves a site empty.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Serialize, Serializer};

use crate::partition::{PartitionError, Partitioned, Row, SiteRows, read_table, split_test};

/// The fewest training rows a skewed split leaves a site.
pub const MIN_SITE_ROWS: usize = 2;

/// How the data is split over participants (`--partition`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partition {
    /// One participant per `--data` file.
    Natural,
    /// One file dealt IID (stratified by label) over `--participants`.
    Iid,
    /// One file, label skew: Dirichlet proportions of concentration α.
    Dirichlet(f64),
    /// One file, quantity skew: power-law site sizes of exponent β.
    Quantity(f64),
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let positive = |v: &str, what: &str| -> Result<f64, String> {
            match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(format!("{what} must be a positive number, got `{v}`")),
            }
        };
        match s.trim().split_once(':') {
            None if s.trim() == "natural" => Ok(Partition::Natural),
            None if s.trim() == "iid" => Ok(Partition::Iid),
            Some(("dirichlet", a)) => Ok(Partition::Dirichlet(positive(a, "α")?)),
            Some(("quantity", b)) => Ok(Partition::Quantity(positive(b, "β")?)),
            _ => Err(format!(
                "unknown partition `{s}` (natural, iid, dirichlet:ALPHA, quantity:BETA)"
            )),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Natural => f.write_str("natural"),
            Partition::Iid => f.write_str("iid"),
            Partition::Dirichlet(a) => write!(f, "dirichlet:{a}"),
            Partition::Quantity(b) => write!(f, "quantity:{b}"),
        }
    }
}

impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A file with its test rows held out.
struct HeldOut {
    header: Vec<String>,
    label_col: usize,
    train: Vec<Row>,
    test: Vec<Row>,
}

/// Holds out the test rows of `source` and reads the rest.
fn holdout(
    source: &Path,
    label: &str,
    test_fraction: f64,
    seed: u64,
) -> Result<HeldOut, PartitionError> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(PartitionError::BadTestFraction(test_fraction));
    }
    let table = read_table(source)?;
    let label_col = table.column(label, source)?;
    let (train, test) = split_test(&table.rows, label_col, test_fraction, seed);
    Ok(HeldOut {
        header: table.header,
        label_col,
        train,
        test,
    })
}

fn site_names(n: usize) -> Vec<String> {
    let width = n.to_string().len();
    (1..=n).map(|i| format!("site-{i:0width$}")).collect()
}

/// Splits `total` into parts proportional to `weights` (largest remainders;
/// ties to the lower index), summing to exactly `total`.
pub fn apportion(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum.is_nan() || sum <= 0.0 {
        let n = weights.len().max(1);
        return (0..weights.len())
            .map(|i| total / n + usize::from(i < total % n))
            .collect();
    }
    let exact: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut parts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let missing = total.saturating_sub(parts.iter().sum());
    for &i in order.iter().cycle().take(missing) {
        parts[i] += 1;
    }
    parts
}

fn check_sites(n: usize, rows: usize) -> Result<(), PartitionError> {
    if n == 0 || n * MIN_SITE_ROWS > rows {
        return Err(PartitionError::BadSiteCount { sites: n, rows });
    }
    Ok(())
}

/// Gives every site at least [`MIN_SITE_ROWS`] rows, taking them from the
/// largest site (its rows of `label` first, where given).
fn top_up(sites: &mut [Vec<usize>], label_of: &dyn Fn(usize) -> String) {
    loop {
        let Some(poor) = (0..sites.len()).find(|&i| sites[i].len() < MIN_SITE_ROWS) else {
            return;
        };
        // The largest site (first of equals) gives up its last row of the
        // label the poor site already has most of, else its last row.
        let rich = (0..sites.len())
            .max_by(|&a, &b| sites[a].len().cmp(&sites[b].len()).then(b.cmp(&a)))
            .expect("sites");
        if sites[rich].len() <= MIN_SITE_ROWS {
            return;
        }
        let wanted = majority(&sites[poor], label_of);
        let at = wanted
            .and_then(|w| sites[rich].iter().rposition(|&r| label_of(r) == w))
            .unwrap_or(sites[rich].len() - 1);
        let row = sites[rich].remove(at);
        sites[poor].push(row);
    }
}

fn majority(rows: &[usize], label_of: &dyn Fn(usize) -> String) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for &r in rows {
        *counts.entry(label_of(r)).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(l, _)| l)
}

/// The label of training row `r` (column `col`), trimmed.
fn label_of(train: &[Row], col: usize, r: usize) -> String {
    train[r]
        .get(col)
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// Deals `rows`, in order, to the sites in consecutive runs of
/// [`apportion`]ed sizes (by `weights`, one per site).
fn deal(rows: &[usize], weights: &[f64], sites: &mut [Vec<usize>]) {
    let mut at = 0;
    for (site, count) in sites.iter_mut().zip(apportion(rows.len(), weights)) {
        site.extend_from_slice(&rows[at..at + count]);
        at += count;
    }
}

fn assemble(
    header: Vec<String>,
    train: &[Row],
    test: Vec<Row>,
    mut sites: Vec<Vec<usize>>,
) -> Partitioned {
    let names = site_names(sites.len());
    let sites = sites
        .iter_mut()
        .zip(names)
        .map(|(idx, name)| {
            idx.sort_unstable();
            SiteRows {
                name,
                rows: idx.iter().map(|&i| train[i].clone()).collect(),
                held_out: 0,
            }
        })
        .collect();
    Partitioned {
        header,
        sites,
        test,
    }
}

/// Dirichlet label skew of `source` over `n` sites (see the module docs).
pub fn dirichlet(
    source: &Path,
    label: &str,
    n: usize,
    alpha: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<Partitioned, PartitionError> {
    let HeldOut {
        header,
        label_col: col,
        train,
        test,
    } = holdout(source, label, test_fraction, seed)?;
    check_sites(n, train.len())?;
    let gamma = Gamma::new(alpha, 1.0).map_err(|_| PartitionError::BadSiteCount {
        sites: n,
        rows: train.len(),
    })?;
    let key = |r: usize| label_of(&train, col, r);
    let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in 0..train.len() {
        by_label.entry(key(r)).or_default().push(r);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd10c_41e7);
    let mut sites = vec![Vec::new(); n];
    for rows in by_label.values_mut() {
        rows.shuffle(&mut rng);
        // Gamma(α) draws of tiny α can underflow to 0; keep them positive.
        let weights: Vec<f64> = (0..n)
            .map(|_| gamma.sample(&mut rng).max(f64::MIN_POSITIVE))
            .collect();
        deal(rows, &weights, &mut sites);
    }
    top_up(&mut sites, &key);
    Ok(assemble(header, &train, test, sites))
}

/// Quantity skew of `source` over `n` sites (see the module docs).
pub fn quantity(
    source: &Path,
    label: &str,
    n: usize,
    beta: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<Partitioned, PartitionError> {
    let HeldOut {
        header,
        label_col: col,
        train,
        test,
    } = holdout(source, label, test_fraction, seed)?;
    check_sites(n, train.len())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9a47_171e);
    let weights: Vec<f64> = (0..n)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
            u.powf(-1.0 / beta).min(1e12)
        })
        .collect();
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    let mut sites = vec![Vec::new(); n];
    deal(&order, &weights, &mut sites);
    top_up(&mut sites, &|r| label_of(&train, col, r));
    Ok(assemble(header, &train, test, sites))
}

/// Rows and label counts per site: what `partition.csv` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionTable {
    /// Label values, in sort order (the count columns).
    pub labels: Vec<String>,
    /// One entry per site: name, training rows, count of each label.
    pub sites: Vec<(String, usize, Vec<usize>)>,
    /// Rows of the pooled test set, and their label counts.
    pub test: (usize, Vec<usize>),
}

impl PartitionTable {
    /// The table of a partition whose label is column `label`.
    pub fn of(p: &Partitioned, label: &str) -> Self {
        let col = p.header.iter().position(|h| h == label);
        let key = |r: &Row| {
            col.and_then(|c| r.get(c))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default()
        };
        let mut labels: Vec<String> = p
            .sites
            .iter()
            .flat_map(|s| s.rows.iter())
            .chain(&p.test)
            .map(key)
            .collect();
        labels.sort();
        labels.dedup();
        let counts = |rows: &[Row]| -> Vec<usize> {
            let mut c = vec![0; labels.len()];
            for r in rows {
                if let Ok(i) = labels.binary_search(&key(r)) {
                    c[i] += 1;
                }
            }
            c
        };
        Self {
            sites: p
                .sites
                .iter()
                .map(|s| (s.name.clone(), s.rows.len(), counts(&s.rows)))
                .collect(),
            test: (p.test.len(), counts(&p.test)),
            labels: labels.clone(),
        }
    }

    /// `site,rows,label=V…` with one line per site and a last `test` line.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        let mut out = String::from("site,rows");
        for l in &self.labels {
            out.push(',');
            out.push_str(&quote(&format!("label={l}")));
        }
        out.push('\n');
        let line = |out: &mut String, name: &str, rows: usize, counts: &[usize]| {
            out.push_str(&format!("{},{rows}", quote(name)));
            for c in counts {
                out.push_str(&format!(",{c}"));
            }
            out.push('\n');
        };
        for (name, rows, counts) in &self.sites {
            line(&mut out, name, *rows, counts);
        }
        line(&mut out, "test", self.test.0, &self.test.1);
        out
    }
}

impl fmt::Display for PartitionTable {
    /// Every site when there are at most 20; otherwise the spread of sizes
    /// and of the largest label share.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self.labels.iter().map(|l| format!("{l:>6}")).collect();
        if self.sites.len() <= 20 {
            let w = self
                .sites
                .iter()
                .map(|s| s.0.len())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(
                f,
                "  {:<w$}  {:>6}  labels {}",
                "site",
                "rows",
                labels.join(" ")
            )?;
            for (name, rows, counts) in &self.sites {
                let c: Vec<String> = counts.iter().map(|c| format!("{c:>6}")).collect();
                writeln!(f, "  {name:<w$}  {rows:>6}         {}", c.join(" "))?;
            }
            let c: Vec<String> = self.test.1.iter().map(|c| format!("{c:>6}")).collect();
            return write!(
                f,
                "  {:<w$}  {:>6}         {}",
                "test",
                self.test.0,
                c.join(" ")
            );
        }
        let mut sizes: Vec<usize> = self.sites.iter().map(|s| s.1).collect();
        sizes.sort_unstable();
        let mut top: Vec<f64> = self
            .sites
            .iter()
            .map(|(_, rows, c)| *c.iter().max().unwrap_or(&0) as f64 / (*rows).max(1) as f64)
            .collect();
        top.sort_by(f64::total_cmp);
        let q = |v: &[usize], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let qf = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        writeln!(
            f,
            "  {} sites: rows per site min {}, median {}, max {} (total {})",
            self.sites.len(),
            sizes[0],
            q(&sizes, 0.5),
            sizes[sizes.len() - 1],
            sizes.iter().sum::<usize>()
        )?;
        writeln!(
            f,
            "  share of a site's most common label: min {:.2}, median {:.2}, max {:.2}",
            top[0],
            qf(&top, 0.5),
            top[top.len() - 1]
        )?;
        write!(f, "  test: {} rows (pooled)", self.test.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breast_cancer() -> std::path::PathBuf {
        crate::bundled_data().join("breast_cancer_wisconsin.csv")
    }

    #[test]
    fn partitions_parse_and_print() {
        for (text, p) in [
            ("natural", Partition::Natural),
            ("iid", Partition::Iid),
            ("dirichlet:0.5", Partition::Dirichlet(0.5)),
            ("quantity:1.5", Partition::Quantity(1.5)),
        ] {
            assert_eq!(text.parse::<Partition>().unwrap(), p);
            assert_eq!(p.to_string(), text);
        }
        for bad in [
            "dirichlet",
            "dirichlet:0",
            "quantity:-1",
            "zipf:2",
            "dirichlet:x",
        ] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn apportion_sums_exactly_and_follows_weights() {
        assert_eq!(apportion(10, &[1.0, 1.0, 2.0]), vec![3, 2, 5]);
        assert_eq!(apportion(7, &[0.0, 0.0]), vec![4, 3]);
        let parts = apportion(1000, &[0.1, 0.2, 0.7]);
        assert_eq!(parts, vec![100, 200, 700]);
    }

    #[test]
    fn dirichlet_skews_labels_keeps_every_row_and_is_seeded() {
        let p = dirichlet(&breast_cancer(), "diagnosis", 20, 0.5, 0.2, 1).unwrap();
        assert_eq!(p.sites.len(), 20);
        assert_eq!(p.sites[0].name, "site-01");
        let train: usize = p.sites.iter().map(|s| s.rows.len()).sum();
        assert_eq!(train + p.test.len(), 569);
        assert!(p.sites.iter().all(|s| s.rows.len() >= MIN_SITE_ROWS));
        let table = PartitionTable::of(&p, "diagnosis");
        assert_eq!(table.labels, ["B", "M"]);
        // Label skew: at α = 0.5 many sites are dominated by one label,
        // far from the file's 63/37 mix.
        let skewed = table
            .sites
            .iter()
            .filter(|(_, rows, c)| c[0].max(c[1]) as f64 / *rows as f64 > 0.85)
            .count();
        assert!(skewed >= 5, "{table}");
        assert_eq!(
            dirichlet(&breast_cancer(), "diagnosis", 20, 0.5, 0.2, 1).unwrap(),
            p
        );
        assert_ne!(
            dirichlet(&breast_cancer(), "diagnosis", 20, 0.5, 0.2, 2).unwrap(),
            p
        );
        // A large α is close to IID.
        let flat = dirichlet(&breast_cancer(), "diagnosis", 4, 1000.0, 0.2, 1).unwrap();
        let t = PartitionTable::of(&flat, "diagnosis");
        assert!(
            t.sites
                .iter()
                .all(|(_, r, c)| (c[0] as f64 / *r as f64 - 0.63).abs() < 0.08)
        );
    }

    #[test]
    fn quantity_skew_follows_a_power_law_with_iid_labels() {
        let p = quantity(&breast_cancer(), "diagnosis", 20, 1.0, 0.2, 3).unwrap();
        let mut sizes: Vec<usize> = p.sites.iter().map(|s| s.rows.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>() + p.test.len(), 569);
        sizes.sort_unstable();
        // Heavy tail: the largest site holds several times the median.
        assert!(sizes[19] >= 3 * sizes[10], "{sizes:?}");
        assert!(sizes[0] >= MIN_SITE_ROWS);
        assert_eq!(
            quantity(&breast_cancer(), "diagnosis", 20, 1.0, 0.2, 3).unwrap(),
            p
        );
        assert!(matches!(
            quantity(&breast_cancer(), "diagnosis", 300, 1.0, 0.2, 3),
            Err(PartitionError::BadSiteCount { .. })
        ));
    }

    #[test]
    fn tiny_alpha_still_leaves_every_site_rows() {
        let p = dirichlet(&breast_cancer(), "diagnosis", 100, 0.01, 0.2, 5).unwrap();
        assert!(p.sites.iter().all(|s| s.rows.len() >= MIN_SITE_ROWS));
    }

    #[test]
    fn the_table_counts_rows_and_labels() {
        let p = dirichlet(&breast_cancer(), "diagnosis", 3, 0.5, 0.2, 1).unwrap();
        let t = PartitionTable::of(&p, "diagnosis");
        let csv = t.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "site,rows,label=B,label=M");
        assert_eq!(lines.len(), 5);
        assert!(lines[4].starts_with("test,113,"), "{csv}");
        for (name, rows, counts) in &t.sites {
            assert_eq!(counts.iter().sum::<usize>(), *rows, "{name}");
        }
        assert!(t.to_string().contains("site-1"));
    }
}
