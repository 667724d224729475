//! What an analytics query asks: the query kinds, the row filter and its
//! three-valued evaluation on a row, and the canonical text form.

use std::collections::BTreeSet;
use std::fmt;

/// A comparison operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// A row filter: comparisons of numeric columns with constants, combined by
/// `and`, `or` and `not`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Filter {
    /// `column op value`.
    Cmp {
        /// Column name.
        column: String,
        /// Operator.
        op: CmpOp,
        /// Constant (finite).
        value: f64,
    },
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// Does not hold.
    Not(Box<Filter>),
}

impl Filter {
    /// Evaluates the filter on a row, with SQL's three-valued logic: a
    /// comparison with a missing cell (`NaN`) is *unknown* (`None`), `not`
    /// of unknown is unknown, and `and`/`or` follow Kleene's tables. A row
    /// is selected only when the filter is `Some(true)`, so a missing value
    /// never counts as a match, also under `!=` or `not`.
    ///
    /// `value_of` maps a column name to the row's value (`NaN` if missing).
    pub fn eval(&self, value_of: &dyn Fn(&str) -> f64) -> Option<bool> {
        match self {
            Filter::Cmp { column, op, value } => {
                let v = value_of(column);
                if v.is_nan() {
                    None
                } else {
                    Some(op.holds(v, *value))
                }
            }
            Filter::And(a, b) => match (a.eval(value_of), b.eval(value_of)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Filter::Or(a, b) => match (a.eval(value_of), b.eval(value_of)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Filter::Not(a) => a.eval(value_of).map(|x| !x),
        }
    }

    fn collect_columns<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Filter::Cmp { column, .. } => {
                out.insert(column);
            }
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.collect_columns(out);
                b.collect_columns(out);
            }
            Filter::Not(a) => a.collect_columns(out),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Cmp { column, op, value } => write!(f, "{column} {} {value}", op.as_str()),
            Filter::And(a, b) => write!(f, "({a} and {b})"),
            Filter::Or(a, b) => write!(f, "({a} or {b})"),
            Filter::Not(a) => write!(f, "not {a}"),
        }
    }
}

/// Public bounds of a column's values: values are clamped into them before
/// they are summed, which bounds one row's contribution.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    /// Lower bound (finite).
    pub lo: f64,
    /// Upper bound (finite, > `lo`).
    pub hi: f64,
}

impl Bounds {
    /// The largest |value| after clamping.
    pub fn max_abs(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }
}

/// What is computed over the selected rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QueryKind {
    /// The number of selected rows.
    Count,
    /// The sum of a column's values, clamped to public bounds (rows with a
    /// missing value are skipped).
    Sum {
        /// Column.
        column: String,
        /// Public clamping bounds.
        bounds: Bounds,
    },
    /// The mean of a column's values, clamped to public bounds, released as
    /// noised sum / noised count.
    Mean {
        /// Column.
        column: String,
        /// Public clamping bounds.
        bounds: Bounds,
    },
    /// Counts of a column's values in public bins `[e_i, e_{i+1})` (the last
    /// bin closed); values outside every bin, and missing values, are not
    /// counted.
    Histogram {
        /// Column.
        column: String,
        /// Bin edges, strictly increasing, at least two.
        edges: Vec<f64>,
    },
    /// The `k` most common of a public list of a categorical column's
    /// values, chosen by the exponential mechanism (`most common` is k = 1).
    TopK {
        /// Column.
        column: String,
        /// How many to choose (1 ≤ k < number of candidates).
        k: usize,
        /// The public candidate values.
        candidates: Vec<f64>,
    },
}

impl QueryKind {
    /// The kind's name, as in site policies and ledgers.
    pub fn name(&self) -> KindName {
        match self {
            QueryKind::Count => KindName::Count,
            QueryKind::Sum { .. } => KindName::Sum,
            QueryKind::Mean { .. } => KindName::Mean,
            QueryKind::Histogram { .. } => KindName::Histogram,
            QueryKind::TopK { .. } => KindName::TopK,
        }
    }

    /// The column whose values the query aggregates, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            QueryKind::Count => None,
            QueryKind::Sum { column, .. }
            | QueryKind::Mean { column, .. }
            | QueryKind::Histogram { column, .. }
            | QueryKind::TopK { column, .. } => Some(column),
        }
    }
}

/// The name of a query kind (site policies set a noise floor per kind).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    /// `count`.
    Count,
    /// `sum`.
    Sum,
    /// `mean`.
    Mean,
    /// `histogram`.
    Histogram,
    /// `most common` / `top k`.
    TopK,
}

impl KindName {
    /// Every kind.
    pub const ALL: [KindName; 5] = [
        KindName::Count,
        KindName::Sum,
        KindName::Mean,
        KindName::Histogram,
        KindName::TopK,
    ];

    /// Text form.
    pub fn as_str(self) -> &'static str {
        match self {
            KindName::Count => "count",
            KindName::Sum => "sum",
            KindName::Mean => "mean",
            KindName::Histogram => "histogram",
            KindName::TopK => "top_k",
        }
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole query: what is computed, over the rows the filter selects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Query {
    /// What is computed.
    pub kind: QueryKind,
    /// Which rows (None: every row).
    pub filter: Option<Filter>,
}

impl Query {
    /// Every column the query reads (aggregated column and filter columns).
    pub fn columns(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        if let Some(c) = self.kind.column() {
            out.insert(c);
        }
        if let Some(f) = &self.filter {
            f.collect_columns(&mut out);
        }
        out
    }
}

fn list(f: &mut fmt::Formatter<'_>, xs: &[f64]) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Query {
    /// The canonical text, which parses back to the same query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            QueryKind::Count => f.write_str("count")?,
            QueryKind::Sum { column, bounds } => {
                write!(f, "sum {column} in [{}, {}]", bounds.lo, bounds.hi)?
            }
            QueryKind::Mean { column, bounds } => {
                write!(f, "mean {column} in [{}, {}]", bounds.lo, bounds.hi)?
            }
            QueryKind::Histogram { column, edges } => {
                write!(f, "histogram {column} edges ")?;
                list(f, edges)?;
            }
            QueryKind::TopK {
                column,
                k,
                candidates,
            } => {
                if *k == 1 {
                    write!(f, "most common {column} among ")?;
                } else {
                    write!(f, "top {k} {column} among ")?;
                }
                list(f, candidates)?;
            }
        }
        if let Some(filter) = &self.filter {
            write!(f, " where {filter}")?;
        }
        Ok(())
    }
}
