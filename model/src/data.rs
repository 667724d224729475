//! Loading a site's CSV export into a [`Dataset`].
//!
//! What a hospital export looks like, and how it is read:
//! - a header row names the columns; the task picks its feature and label columns by name
//!   (names are trimmed, matched exactly, and may appear in any order in the file);
//! - feature cells are numbers (`12`, `-0.5`, `.7`, `1e3`); a cell that is one of the missing
//!   markers `?`, empty, `NA`, `NaN`, `null` (trimmed, any case) becomes `NaN`, which the
//!   [`crate::Preprocessor`] later imputes with the pooled mean and flags with an indicator
//!   column; any other non-number (including infinities) is an error naming the column,
//!   the line and the value;
//! - the label cell becomes the target by the task's kind: 0/1 by the [`LabelRule`] of a
//!   binary task, the class index (0, 1, …, in the task's order) of a multi-class one —
//!   a value not in the list is an error naming the file, the line and the value — or
//!   the number itself for a regression; a row whose label is missing is skipped and
//!   counted in [`Dataset::skipped_rows`].

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Axis};

use crate::task::{LabelRule, TaskKind, TaskSpec};

/// The cell texts (compared trimmed and case-insensitively) that mean "missing".
pub const MISSING_MARKERS: &[&str] = &["?", "", "NA", "NaN", "null"];

/// A site's data for one task: feature matrix and targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Feature column names, in the order of the columns of `x` (the task's order).
    pub features: Vec<String>,
    /// One row per example, one column per feature; `NaN` marks a missing value.
    pub x: Array2<f64>,
    /// Targets: 1.0 for the positive class and 0.0 otherwise (binary), the class index
    /// (multi-class), or the value (regression).
    pub y: Array1<f64>,
    /// Rows of the file left out because their label was missing.
    pub skipped_rows: usize,
}

impl Dataset {
    /// Builds a dataset, checking that the shapes agree and labels are 0/1.
    pub fn new(features: Vec<String>, x: Array2<f64>, y: Array1<f64>) -> Result<Self, DataError> {
        if x.ncols() != features.len() || x.nrows() != y.len() {
            return Err(DataError::Shape {
                features: features.len(),
                columns: x.ncols(),
                rows: x.nrows(),
                labels: y.len(),
            });
        }
        if let Some(bad) = y.iter().find(|v| **v != 0.0 && **v != 1.0) {
            return Err(DataError::LabelNotBinary {
                column: "<labels>".into(),
                path: PathBuf::new(),
                detail: format!("label value {bad} is not 0 or 1"),
            });
        }
        Ok(Dataset {
            features,
            x,
            y,
            skipped_rows: 0,
        })
    }

    /// Number of examples.
    pub fn n_rows(&self) -> usize {
        self.x.nrows()
    }

    /// Number of feature columns.
    pub fn n_features(&self) -> usize {
        self.x.ncols()
    }

    /// Number of positive examples.
    pub fn positives(&self) -> usize {
        self.y.iter().filter(|v| **v > 0.5).count()
    }

    /// The rows at `indices` (in that order) as a new dataset.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            features: self.features.clone(),
            x: self.x.select(Axis(0), indices),
            y: self.y.select(Axis(0), indices),
            skipped_rows: 0,
        }
    }

    /// Stacks datasets with the same feature columns (e.g. to pool sites in a simulation).
    pub fn concat(parts: &[&Dataset]) -> Result<Dataset, DataError> {
        let first = parts.first().ok_or(DataError::Empty {
            path: PathBuf::new(),
        })?;
        for p in parts {
            if p.features != first.features {
                return Err(DataError::FeatureMismatch {
                    expected: first.features.clone(),
                    found: p.features.clone(),
                });
            }
        }
        let xs: Vec<_> = parts.iter().map(|p| p.x.view()).collect();
        let ys: Vec<_> = parts.iter().map(|p| p.y.view()).collect();
        let x = ndarray::concatenate(Axis(0), &xs).expect("same column count checked above");
        let y = ndarray::concatenate(Axis(0), &ys).expect("1-d arrays always concatenate");
        Ok(Dataset {
            features: first.features.clone(),
            x,
            y,
            skipped_rows: parts.iter().map(|p| p.skipped_rows).sum(),
        })
    }
}

/// Why a CSV could not be used for a task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A column the task needs is not in the header.
    #[error("{}: column {column:?} not found in the header", path.display())]
    MissingColumn {
        /// The column the task names.
        column: String,
        /// The file.
        path: PathBuf,
    },
    /// A column name appears more than once in the header, so it is ambiguous.
    #[error("{}: column {column:?} appears more than once in the header", path.display())]
    DuplicateColumn {
        /// The repeated name.
        column: String,
        /// The file.
        path: PathBuf,
    },
    /// A cell that must be a number is not one (and is not a missing marker).
    #[error(
        "{}: line {row}, column {column:?}: {value:?} is not a number (missing values may be written ?, NA, NaN, null or left empty)",
        path.display()
    )]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// 1-based line of the file (the header is line 1).
        row: u64,
        /// The offending cell text.
        value: String,
    },
    /// A multi-class label that is not one of the task's classes.
    #[error(
        "{}: line {row}, column {column:?}: {value:?} is not one of the task's classes ({classes})",
        path.display()
    )]
    UnknownClass {
        /// The file.
        path: PathBuf,
        /// The label column.
        column: String,
        /// 1-based line of the file (the header is line 1).
        row: u64,
        /// The label cell.
        value: String,
        /// The task's classes, listed.
        classes: String,
    },
    /// The label column does not split into two classes under the task's rule.
    #[error("{}: label column {column:?} is not binary: {detail}", path.display())]
    LabelNotBinary {
        /// The label column.
        column: String,
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file has no data rows (or none with a label).
    #[error("{}: no data rows with a label", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is not well-formed CSV (e.g. a row with the wrong number of fields).
    #[error("{}: line {line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 if unknown.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Datasets or files that should share columns do not.
    #[error("feature columns differ: expected {expected:?}, found {found:?}")]
    FeatureMismatch {
        /// The columns expected.
        expected: Vec<String>,
        /// The columns found.
        found: Vec<String>,
    },
    /// Arrays whose shapes do not agree.
    #[error(
        "shape mismatch: {features} feature names, {columns} columns, {rows} rows, {labels} labels"
    )]
    Shape {
        /// Number of feature names.
        features: usize,
        /// Number of matrix columns.
        columns: usize,
        /// Number of matrix rows.
        rows: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A statistics vector of the wrong length, or with non-finite entries.
    #[error("invalid statistics vector: {0}")]
    InvalidStats(String),
    /// Invalid bounds for the bounded (private) statistics.
    #[error("invalid statistics bounds: {0}")]
    InvalidBounds(String),
}

/// Whether a cell is a missing-value marker (see [`MISSING_MARKERS`]).
pub fn is_missing(cell: &str) -> bool {
    let t = cell.trim();
    MISSING_MARKERS.iter().any(|m| m.eq_ignore_ascii_case(t))
}

/// Parses a feature cell: `Some(NaN)` for a missing marker, `Some(x)` for a finite number,
/// `None` for anything else.
pub fn parse_cell(cell: &str) -> Option<f64> {
    if is_missing(cell) {
        return Some(f64::NAN);
    }
    match cell.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => None,
    }
}

fn io_err(path: &Path, source: io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => io_err(path, source),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("{len} fields where the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { err, .. } => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("not valid UTF-8: {err}"),
        },
        other => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("{other:?}"),
        },
    }
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| io_err(path, e))
}

fn csv_reader<R: Read>(reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader)
}

fn header_of<R: Read>(rdr: &mut csv::Reader<R>, path: &Path) -> Result<Vec<String>, DataError> {
    let h = rdr.headers().map_err(|e| csv_err(path, e))?;
    let names: Vec<String> = h
        .iter()
        .map(|s| s.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(names)
}

/// Reads only the header row of a CSV file (column names, trimmed).
pub fn read_header(path: &Path) -> Result<Vec<String>, DataError> {
    let mut rdr = csv_reader(open(path)?);
    header_of(&mut rdr, path)
}

fn column_index(header: &[String], name: &str, path: &Path) -> Result<usize, DataError> {
    let mut hits = header.iter().enumerate().filter(|(_, h)| *h == name);
    let (i, _) = hits.next().ok_or_else(|| DataError::MissingColumn {
        column: name.to_string(),
        path: path.to_path_buf(),
    })?;
    if hits.next().is_some() {
        return Err(DataError::DuplicateColumn {
            column: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(i)
}

/// Loads the task's columns of a CSV file.
///
/// Features come out in the task's order; missing markers become `NaN`; labels become 0/1
/// by the task's rule; rows with a missing label are skipped and counted. Errors name the
/// file, column, line and value (see [`DataError`]).
pub fn load_csv(path: &Path, task: &TaskSpec) -> Result<Dataset, DataError> {
    load_csv_from_reader(open(path)?, path, task)
}

/// Like [`load_csv`], from any reader; `source` names the data in error messages.
pub fn load_csv_from_reader<R: Read>(
    reader: R,
    source: &Path,
    task: &TaskSpec,
) -> Result<Dataset, DataError> {
    let path = source;
    let mut rdr = csv_reader(reader);
    let header = header_of(&mut rdr, path)?;
    let feat_idx: Vec<usize> = task
        .features
        .iter()
        .map(|f| column_index(&header, f, path))
        .collect::<Result<_, _>>()?;
    let label_idx = column_index(&header, &task.label, path)?;

    let d = feat_idx.len();
    let mut xs: Vec<f64> = Vec::new();
    let mut ys: Vec<f64> = Vec::new();
    let mut skipped = 0usize;
    // Distinct label texts, to check an equality rule really describes two classes.
    let mut label_values: BTreeSet<String> = BTreeSet::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(path, e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let label_cell = record.get(label_idx).unwrap_or("");
        if is_missing(label_cell) {
            skipped += 1;
            continue;
        }
        let not_numeric = || DataError::NotNumeric {
            path: path.to_path_buf(),
            column: task.label.clone(),
            row: line,
            value: label_cell.to_string(),
        };
        let yv = match &task.kind {
            TaskKind::Binary { positive } => {
                let yes = positive.is_positive(label_cell).ok_or_else(not_numeric)?;
                if matches!(positive, LabelRule::Equals(_)) && label_values.len() <= 2 {
                    label_values.insert(normalise_label(label_cell));
                }
                if yes { 1.0 } else { 0.0 }
            }
            TaskKind::Multiclass { classes } => {
                task.class_index(label_cell)
                    .ok_or_else(|| DataError::UnknownClass {
                        path: path.to_path_buf(),
                        column: task.label.clone(),
                        row: line,
                        value: label_cell.to_string(),
                        classes: classes.join(", "),
                    })? as f64
            }
            TaskKind::Regression { .. } => match label_cell.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => return Err(not_numeric()),
            },
        };
        for (&ci, name) in feat_idx.iter().zip(&task.features) {
            let cell = record.get(ci).unwrap_or("");
            let v = parse_cell(cell).ok_or_else(|| DataError::NotNumeric {
                path: path.to_path_buf(),
                column: name.clone(),
                row: line,
                value: cell.to_string(),
            })?;
            xs.push(v);
        }
        ys.push(yv);
    }
    if ys.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some(LabelRule::Equals(lit)) = task.positive() {
        let has_positive = ys.iter().any(|v| *v > 0.5);
        if label_values.len() > 2 {
            let seen: Vec<_> = label_values.iter().take(3).cloned().collect();
            return Err(DataError::LabelNotBinary {
                column: task.label.clone(),
                path: path.to_path_buf(),
                detail: format!(
                    "more than two distinct values (e.g. {}); with positive class {lit:?} use a threshold rule such as \"> 0\" or recode the column",
                    seen.join(", ")
                ),
            });
        }
        if label_values.len() == 2 && !has_positive {
            let seen: Vec<_> = label_values.iter().cloned().collect();
            return Err(DataError::LabelNotBinary {
                column: task.label.clone(),
                path: path.to_path_buf(),
                detail: format!(
                    "the values are {} but the positive class is {lit:?}",
                    seen.join(" and ")
                ),
            });
        }
    }
    let n = ys.len();
    let x = Array2::from_shape_vec((n, d), xs).expect("row-major buffer of n*d values");
    Ok(Dataset {
        features: task.features.clone(),
        x,
        y: Array1::from(ys),
        skipped_rows: skipped,
    })
}

fn normalise_label(cell: &str) -> String {
    let t = cell.trim();
    match t.parse::<f64>() {
        Ok(v) => format!("{v}"),
        Err(_) => t.to_string(),
    }
}

/// A CSV file as text: the header and every row's cells exactly as written.
///
/// Used to split files for simulations without interpreting them, so that missing markers
/// and number formats pass through untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTable {
    /// Column names (trimmed).
    pub header: Vec<String>,
    /// Data rows, each with as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl RawTable {
    /// Index of a column by name, with the errors of [`load_csv`].
    pub fn column(&self, name: &str, path: &Path) -> Result<usize, DataError> {
        column_index(&self.header, name, path)
    }
}

/// Reads a whole CSV file as text (see [`RawTable`]).
pub fn read_raw_csv(path: &Path) -> Result<RawTable, DataError> {
    read_raw_csv_from_reader(open(path)?, path)
}

/// Reads CSV text already in memory or from any reader as text (see
/// [`RawTable`]); `path` names it in errors.
pub fn read_raw_csv_from_reader<R: Read>(reader: R, path: &Path) -> Result<RawTable, DataError> {
    let mut rdr = csv_reader(reader);
    let header = header_of(&mut rdr, path)?;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_err(path, e))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(RawTable { header, rows })
}

/// Writes a header and text rows as a CSV file (quoting cells only where needed).
pub fn write_raw_csv(
    path: &Path,
    header: &[String],
    rows: &[Vec<String>],
) -> Result<(), DataError> {
    let file = File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = csv::Writer::from_writer(io::BufWriter::new(file));
    w.write_record(header).map_err(|e| csv_err(path, e))?;
    for (i, r) in rows.iter().enumerate() {
        if r.len() != header.len() {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line: i as u64 + 2,
                message: format!("{} cells where the header has {}", r.len(), header.len()),
            });
        }
        w.write_record(r).map_err(|e| csv_err(path, e))?;
    }
    w.flush().map_err(|e| io_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
