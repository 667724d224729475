//! Splitting data for simulations: a held-out test set and one training file per site.
//!
//! Files are handled as text ([`RawTable`]): cells are copied exactly as written, so
//! missing markers (`?`, `NA`, empty cells) and number formats reach the participants
//! untouched, and every participant loads its file with the same code as a real site.
//!
//! # Holdout rule
//!
//! From **each site**, 20% of the rows ([`DEFAULT_TEST_FRACTION`]) are held out,
//! **stratified by the label value** (the label cell's text, trimmed: from each distinct
//! value's rows, `round(count · 0.2)` are drawn) and **seeded** (ChaCha8 seeded from the run
//! seed and the site's position). The held-out rows of all sites form one pooled test file.
//! The same files and seed always give the same split.
//!
//! - **natural** ([`natural`]): one input file per site; each file is split as above.
//! - **iid** ([`iid`]): one input file; the holdout is taken from the whole file (as one
//!   site), then the remaining rows are dealt to `n` sites by [`partition_iid`]: stratified
//!   by label and round-robin, so site sizes and per-class counts differ by at most one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use tessera_model::split::{deal_stratified, stratified_holdout};
use tessera_model::{DataError, RawTable, read_raw_csv, write_raw_csv};

pub use tessera_model::split::DEFAULT_TEST_FRACTION;

/// One row of a CSV file, cells as written.
pub type Row = Vec<String>;

/// Why data could not be partitioned.
#[derive(Debug)]
#[non_exhaustive]
pub enum PartitionError {
    /// Reading or writing a CSV file failed, or a column is missing.
    Data(DataError),
    /// No input file was given.
    NoSources,
    /// A site file's columns differ from the first file's.
    HeaderMismatch {
        /// The differing file.
        path: PathBuf,
        /// Columns of the first file that it lacks.
        missing: Vec<String>,
        /// Columns it has that the first file lacks.
        extra: Vec<String>,
    },
    /// More sites were asked for than there are training rows (or zero sites).
    BadSiteCount {
        /// Sites asked for.
        sites: usize,
        /// Training rows available.
        rows: usize,
    },
    /// The test fraction is not in `[0, 1)`.
    BadTestFraction(f64),
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::Data(e) => write!(f, "{e}"),
            PartitionError::NoSources => write!(f, "no data file given"),
            PartitionError::HeaderMismatch {
                path,
                missing,
                extra,
            } => write!(
                f,
                "{}: columns differ from the first data file (missing {missing:?}, extra {extra:?})",
                path.display()
            ),
            PartitionError::BadSiteCount { sites, rows } => {
                write!(f, "cannot deal {rows} training rows to {sites} sites")
            }
            PartitionError::BadTestFraction(x) => {
                write!(f, "test fraction {x} is not in [0, 1)")
            }
        }
    }
}

impl std::error::Error for PartitionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PartitionError::Data(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DataError> for PartitionError {
    fn from(e: DataError) -> Self {
        PartitionError::Data(e)
    }
}

/// Reads a CSV file as header plus text rows.
pub fn read_table(path: &Path) -> Result<RawTable, PartitionError> {
    Ok(read_raw_csv(path)?)
}

fn label_keys(rows: &[Row], label_col: usize) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.get(label_col)
                .map(|c| c.trim().to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn pick(rows: &[Row], idx: &[usize]) -> Vec<Row> {
    idx.iter().map(|&i| rows[i].clone()).collect()
}

/// Splits rows into `(train, test)`, holding out `test_fraction` of each label value's rows
/// (rounded), chosen with a ChaCha8 generator seeded by `seed`. Rows keep their file order.
pub fn split_test(
    rows: &[Row],
    label_col: usize,
    test_fraction: f64,
    seed: u64,
) -> (Vec<Row>, Vec<Row>) {
    let (train, test) = stratified_holdout(&label_keys(rows, label_col), test_fraction, seed);
    (pick(rows, &train), pick(rows, &test))
}

/// Deals rows to `n` sites: each label value's rows are shuffled (seeded), laid end to end
/// and dealt round-robin, so sizes and per-label counts differ by at most one.
pub fn partition_iid(rows: &[Row], label_col: usize, n: usize, seed: u64) -> Vec<Vec<Row>> {
    deal_stratified(&label_keys(rows, label_col), n, seed)
        .iter()
        .map(|idx| pick(rows, idx))
        .collect()
}

/// A seed for site `i` derived from the run seed (SplitMix64 of both).
fn site_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed
        ^ (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A site's name made from a file name: lower case, letters, digits and `-` only
/// (`va_long_beach.csv` → `va-long-beach`), usable as a certificate name.
pub fn site_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if name.is_empty() {
        "site".to_string()
    } else {
        name
    }
}

/// One site's training rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRows {
    /// Site (participant) name.
    pub name: String,
    /// Its training rows.
    pub rows: Vec<Row>,
    /// Rows held out from it into the pooled test set.
    pub held_out: usize,
}

/// A partitioned data set, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partitioned {
    /// The common header.
    pub header: Vec<String>,
    /// Training rows per site.
    pub sites: Vec<SiteRows>,
    /// The pooled test rows.
    pub test: Vec<Row>,
}

fn check_fraction(test_fraction: f64) -> Result<(), PartitionError> {
    if (0.0..1.0).contains(&test_fraction) {
        Ok(())
    } else {
        Err(PartitionError::BadTestFraction(test_fraction))
    }
}

/// Natural partition: one site per file, named after the file ([`site_name`], with `-2`,
/// `-3`… appended to repeated names). Every file must have the same columns (in any
/// order; rows are rewritten in the first file's order). Holdout as in the module docs.
pub fn natural(
    sources: &[PathBuf],
    label: &str,
    test_fraction: f64,
    seed: u64,
) -> Result<Partitioned, PartitionError> {
    check_fraction(test_fraction)?;
    let first_path = sources.first().ok_or(PartitionError::NoSources)?;
    let first = read_table(first_path)?;
    let label_col = first.column(label, first_path)?;
    let header = first.header.clone();
    let mut sites = Vec::new();
    let mut test = Vec::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for (i, path) in sources.iter().enumerate() {
        let table = if i == 0 {
            first.clone()
        } else {
            read_table(path)?
        };
        let rows = reorder(&header, table, path)?;
        let (train, held) = split_test(&rows, label_col, test_fraction, site_seed(seed, i));
        let base = site_name(path);
        let count = used.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
        };
        sites.push(SiteRows {
            name,
            rows: train,
            held_out: held.len(),
        });
        test.extend(held);
    }
    Ok(Partitioned {
        header,
        sites,
        test,
    })
}

/// Rewrites a table's rows into the column order of `header`.
fn reorder(header: &[String], table: RawTable, path: &Path) -> Result<Vec<Row>, PartitionError> {
    if table.header == header {
        return Ok(table.rows);
    }
    let missing: Vec<String> = header
        .iter()
        .filter(|h| !table.header.contains(h))
        .cloned()
        .collect();
    let extra: Vec<String> = table
        .header
        .iter()
        .filter(|h| !header.contains(h))
        .cloned()
        .collect();
    if !missing.is_empty() || !extra.is_empty() || table.header.len() != header.len() {
        return Err(PartitionError::HeaderMismatch {
            path: path.to_path_buf(),
            missing,
            extra,
        });
    }
    let idx: Vec<usize> = header
        .iter()
        .map(|h| table.column(h, path))
        .collect::<Result<_, _>>()?;
    Ok(table
        .rows
        .into_iter()
        .map(|r| idx.iter().map(|&j| r[j].clone()).collect())
        .collect())
}

/// IID partition of one file over `n` sites named `site-1` … `site-n`: the holdout is taken
/// from the whole file, the rest dealt by [`partition_iid`] (see the module docs).
pub fn iid(
    source: &Path,
    label: &str,
    n: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Partitioned, PartitionError> {
    check_fraction(test_fraction)?;
    let table = read_table(source)?;
    let label_col = table.column(label, source)?;
    let (train, test) = split_test(&table.rows, label_col, test_fraction, site_seed(seed, 0));
    if n == 0 || n > train.len() {
        return Err(PartitionError::BadSiteCount {
            sites: n,
            rows: train.len(),
        });
    }
    let dealt = partition_iid(&train, label_col, n, site_seed(seed, 1));
    // Each site's share of the held-out rows, for the description (dealt the same way).
    let width = n.to_string().len();
    let sites = dealt
        .into_iter()
        .enumerate()
        .map(|(i, rows)| SiteRows {
            name: format!("site-{:0width$}", i + 1),
            rows,
            held_out: test.len() / n + usize::from(i < test.len() % n),
        })
        .collect();
    Ok(Partitioned {
        header: table.header,
        sites,
        test,
    })
}

/// Where a partition was written and how big each part is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// One entry per site, in order.
    pub sites: Vec<SiteSplit>,
    /// The pooled test file.
    pub test_path: PathBuf,
    /// Rows in the pooled test file.
    pub test_rows: usize,
}

/// One site's training file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSplit {
    /// Site (participant) name.
    pub name: String,
    /// Its training CSV.
    pub path: PathBuf,
    /// Rows in it.
    pub train_rows: usize,
    /// Rows it contributed to the pooled test set (for IID, its even share).
    pub test_rows: usize,
}

impl Partitioned {
    /// Writes `DIR/train/<site>.csv` for every site and the pooled `DIR/test.csv` (creating
    /// the directories) and describes what was written.
    pub fn write(&self, dir: &Path) -> Result<Split, PartitionError> {
        let train_dir = dir.join("train");
        std::fs::create_dir_all(&train_dir).map_err(|source| DataError::Io {
            path: train_dir.clone(),
            source,
        })?;
        let mut sites = Vec::new();
        for s in &self.sites {
            let path = train_dir.join(format!("{}.csv", s.name));
            write_raw_csv(&path, &self.header, &s.rows)?;
            sites.push(SiteSplit {
                name: s.name.clone(),
                path,
                train_rows: s.rows.len(),
                test_rows: s.held_out,
            });
        }
        let test_path = dir.join("test.csv");
        write_raw_csv(&test_path, &self.header, &self.test)?;
        Ok(Split {
            sites,
            test_path,
            test_rows: self.test.len(),
        })
    }
}

impl fmt::Display for Split {
    /// One line per site (`name: N train rows, M held out`), then the test total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.sites.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &self.sites {
            writeln!(
                f,
                "  {:<w$}  {:>5} train rows, {:>4} held out",
                s.name, s.train_rows, s.test_rows
            )?;
        }
        write!(
            f,
            "  {:<w$}  {:>5} test rows (pooled)",
            "test", self.test_rows
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
    }

    fn hospitals() -> Vec<PathBuf> {
        ["cleveland", "hungary", "switzerland", "va_long_beach"]
            .iter()
            .map(|h| data_dir().join("heart_disease").join(format!("{h}.csv")))
            .collect()
    }

    fn rows(labels: &[&str]) -> Vec<Row> {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| vec![i.to_string(), l.to_string()])
            .collect()
    }

    #[test]
    fn split_test_is_stratified_complete_and_seeded() {
        let labels: Vec<&str> = (0..50)
            .map(|i| if i % 5 == 0 { "M" } else { "B" })
            .collect();
        let r = rows(&labels);
        let (train, test) = split_test(&r, 1, 0.2, 3);
        assert_eq!((train.len(), test.len()), (40, 10));
        assert_eq!(test.iter().filter(|r| r[1] == "M").count(), 2);
        let mut all: Vec<Row> = train.iter().chain(&test).cloned().collect();
        all.sort_by_key(|r| r[0].parse::<usize>().unwrap());
        assert_eq!(all, r);
        assert_eq!(split_test(&r, 1, 0.2, 3), (train, test.clone()));
        assert_ne!(split_test(&r, 1, 0.2, 4).1, test);
    }

    #[test]
    fn iid_sizes_differ_by_at_most_one_and_keep_class_mix() {
        let labels: Vec<&str> = (0..57)
            .map(|i| if i % 3 == 0 { "1" } else { "0" })
            .collect();
        let parts = partition_iid(&rows(&labels), 1, 10, 9);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 57);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        let pos: Vec<usize> = parts
            .iter()
            .map(|p| p.iter().filter(|r| r[1] == "1").count())
            .collect();
        assert!(pos.iter().max().unwrap() - pos.iter().min().unwrap() <= 1);
    }

    #[test]
    fn natural_heart_disease_keeps_missing_markers_and_is_deterministic() {
        let p = natural(&hospitals(), "num", DEFAULT_TEST_FRACTION, 1).unwrap();
        let names: Vec<&str> = p.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["cleveland", "hungary", "switzerland", "va-long-beach"]
        );
        let total: usize = p.sites.iter().map(|s| s.rows.len()).sum::<usize>() + p.test.len();
        assert_eq!(total, 303 + 294 + 123 + 200);
        assert_eq!(
            p.test.len(),
            p.sites.iter().map(|s| s.held_out).sum::<usize>()
        );
        assert!((0.18..0.22).contains(&(p.test.len() as f64 / total as f64)));
        assert!(p.sites[1].rows.iter().any(|r| r.iter().any(|c| c == "?")));
        assert_eq!(
            natural(&hospitals(), "num", DEFAULT_TEST_FRACTION, 1).unwrap(),
            p
        );
        assert_ne!(
            natural(&hospitals(), "num", DEFAULT_TEST_FRACTION, 2)
                .unwrap()
                .test,
            p.test
        );

        let dir = tempfile::tempdir().unwrap();
        let split = p.write(dir.path()).unwrap();
        assert_eq!(split.sites.len(), 4);
        let back = read_table(&split.sites[2].path).unwrap();
        assert_eq!(back.rows, p.sites[2].rows);
        assert_eq!(
            read_table(&split.test_path).unwrap().rows.len(),
            split.test_rows
        );
        let text = split.to_string();
        assert!(
            text.contains("va-long-beach") && text.contains("test rows"),
            "{text}"
        );
    }

    #[test]
    fn iid_breast_cancer_over_ten_sites() {
        let src = data_dir().join("breast_cancer_wisconsin.csv");
        let p = iid(&src, "diagnosis", 10, DEFAULT_TEST_FRACTION, 1).unwrap();
        assert_eq!(p.sites.len(), 10);
        assert_eq!(p.sites[0].name, "site-01");
        assert_eq!(p.test.len(), 113); // round(357 · 0.2) + round(212 · 0.2) = 71 + 42
        let sizes: Vec<usize> = p.sites.iter().map(|s| s.rows.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 569 - 113);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert_eq!(p.sites.iter().map(|s| s.held_out).sum::<usize>(), 113);
        assert!(matches!(
            iid(&src, "diagnosis", 0, 0.2, 1),
            Err(PartitionError::BadSiteCount { .. })
        ));
        assert!(matches!(
            iid(&src, "diagnosis", 10, 1.0, 1),
            Err(PartitionError::BadTestFraction(_))
        ));
        assert!(matches!(
            iid(&src, "nope", 10, 0.2, 1),
            Err(PartitionError::Data(DataError::MissingColumn { .. }))
        ));
    }

    #[test]
    fn natural_reorders_columns_and_rejects_other_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        let c = dir.path().join("A.csv");
        std::fs::write(&a, "x,y\n1,0\n2,1\n").unwrap();
        std::fs::write(&b, "y,x\n1,3\n0,?\n").unwrap();
        std::fs::write(&c, "x,z\n1,0\n").unwrap();
        let p = natural(&[a.clone(), b.clone()], "y", 0.0, 1).unwrap();
        assert_eq!(
            p.sites[1].rows,
            vec![
                vec!["3".to_string(), "1".into()],
                vec!["?".into(), "0".into()]
            ]
        );
        assert!(matches!(
            natural(&[a.clone(), c.clone()], "y", 0.2, 1),
            Err(PartitionError::HeaderMismatch { .. })
        ));
        assert!(matches!(
            natural(&[], "y", 0.2, 1),
            Err(PartitionError::NoSources)
        ));
        // Same stem twice gets a suffix.
        let p = natural(&[a.clone(), a], "y", 0.0, 1).unwrap();
        assert_eq!(p.sites[1].name, "a-2");
    }
}
