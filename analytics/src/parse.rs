//! The query language's parser: text such as `count where age > 65 and cp = 4`
//! becomes a [`Query`], or a [`ParseError`] naming the position (1-based
//! character) of the first thing it could not read.
//!
//! ```text
//! query  := "count"                                   [where]
//!         | ("sum" | "mean") COLUMN "in" "[" NUM "," NUM "]"   [where]
//!         | "histogram" COLUMN "edges" "[" NUM ("," NUM)+ "]" [where]
//!         | "most" "common" COLUMN "among" LIST                [where]
//!         | "top" INT COLUMN "among" LIST                       [where]
//! where  := "where" or
//! or     := and ("or" and)*
//! and    := unary ("and" unary)*
//! unary  := "not" unary | "(" or ")" | COLUMN OP NUM
//! OP     := "=" | "!=" | "<" | "<=" | ">" | ">="
//! ```
//!
//! Keywords are case-insensitive, column names are not. Hostile input is
//! bounded: at most [`MAX_QUERY_CHARS`] characters, [`MAX_DEPTH`] nested
//! filter levels and [`MAX_LIST`] list entries.

use crate::query::{Bounds, CmpOp, Filter, Query, QueryKind};

/// Longest query text accepted.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Deepest nesting of `not` and parentheses accepted.
pub const MAX_DEPTH: usize = 64;
/// Most bin edges or candidates accepted.
pub const MAX_LIST: usize = 1000;

const KEYWORDS: [&str; 14] = [
    "count",
    "sum",
    "mean",
    "histogram",
    "most",
    "common",
    "top",
    "where",
    "and",
    "or",
    "not",
    "in",
    "edges",
    "among",
];

/// A query that could not be read: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct ParseError {
    /// 1-based character position in the query text.
    pub position: usize,
    /// What was expected or wrong.
    pub message: String,
}

impl ParseError {
    /// The query with a caret under the position, and the message.
    pub fn render(&self, text: &str) -> String {
        let pad = " ".repeat(self.position.saturating_sub(1));
        format!("  {text}\n  {pad}^ {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Num(f64),
    Op(CmpOp),
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Num(x) => format!("the number {x}"),
            Tok::Op(op) => format!("`{}`", op.as_str()),
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::OpenList => "`[`".into(),
            Tok::CloseList => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::End => "the end of the query".into(),
        }
    }
}

fn err<T>(position: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        position,
        message: message.into(),
    })
}

/// Splits the text into tokens with their 1-based positions.
fn tokens(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let pos = i + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            '[' => Some(Tok::OpenList),
            ']' => Some(Tok::CloseList),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, pos));
            i += 1;
            continue;
        }
        if matches!(c, '=' | '!' | '<' | '>') {
            let (op, len) = match (c, next) {
                ('=', Some('=')) => (CmpOp::Eq, 2),
                ('=', _) => (CmpOp::Eq, 1),
                ('!', Some('=')) => (CmpOp::Ne, 2),
                ('<', Some('>')) => (CmpOp::Ne, 2),
                ('<', Some('=')) => (CmpOp::Le, 2),
                ('<', _) => (CmpOp::Lt, 1),
                ('>', Some('=')) => (CmpOp::Ge, 2),
                ('>', _) => (CmpOp::Gt, 1),
                _ => return err(pos, "`!` must be followed by `=`"),
            };
            out.push((Tok::Op(op), pos));
            i += len;
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || (matches!(c, '-' | '+' | '.')
                && next.is_some_and(|n| n.is_ascii_digit() || n == '.'));
        if starts_number {
            let start = i;
            i += 1;
            while let Some(&d) = chars.get(i) {
                let exp_sign =
                    matches!(d, '+' | '-') && matches!(chars.get(i - 1), Some('e') | Some('E'));
                if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            let s: String = chars[start..i].iter().collect();
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() => out.push((Tok::Num(v), pos)),
                _ => return err(pos, format!("`{s}` is not a finite number")),
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while let Some(&d) = chars.get(i) {
                if d.is_alphanumeric() || d == '_' || d == '.' {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), pos));
            continue;
        }
        return err(pos, format!("unexpected character `{c}`"));
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> (&Tok, usize) {
        match self.toks.get(self.at) {
            Some((t, p)) => (t, *p),
            None => (&Tok::End, self.toks.last().map_or(1, |x| x.1)),
        }
    }

    fn bump(&mut self) -> (Tok, usize) {
        let (t, p) = self.peek();
        let t = t.clone();
        if self.at < self.toks.len() {
            self.at += 1;
        }
        (t, p)
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek().0, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.is_keyword(kw) {
            self.bump();
            Ok(())
        } else {
            let (t, p) = self.peek();
            err(p, format!("expected `{kw}`, found {}", t.describe()))
        }
    }

    fn expect(&mut self, want: Tok) -> Result<(), ParseError> {
        let (t, p) = self.bump();
        if t == want {
            Ok(())
        } else {
            err(
                p,
                format!("expected {}, found {}", want.describe(), t.describe()),
            )
        }
    }

    fn column(&mut self) -> Result<String, ParseError> {
        match self.bump() {
            (Tok::Word(w), p) => {
                if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(&w)) {
                    err(
                        p,
                        format!("expected a column name, found the keyword `{w}`"),
                    )
                } else {
                    Ok(w)
                }
            }
            (t, p) => err(p, format!("expected a column name, found {}", t.describe())),
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        match self.bump() {
            (Tok::Num(x), _) => Ok(x),
            (t, p) => err(p, format!("expected a number, found {}", t.describe())),
        }
    }

    /// `[a, b, ...]`, with its opening position.
    fn list(&mut self) -> Result<(Vec<f64>, usize), ParseError> {
        let open = self.peek().1;
        self.expect(Tok::OpenList)?;
        let mut xs = vec![self.number()?];
        loop {
            match self.bump() {
                (Tok::Comma, _) => {
                    if xs.len() >= MAX_LIST {
                        return err(open, format!("a list of more than {MAX_LIST} values"));
                    }
                    xs.push(self.number()?);
                }
                (Tok::CloseList, _) => return Ok((xs, open)),
                (t, p) => return err(p, format!("expected `,` or `]`, found {}", t.describe())),
            }
        }
    }

    fn kind(&mut self) -> Result<QueryKind, ParseError> {
        let (t, p) = self.bump();
        let word = match t {
            Tok::Word(w) => w.to_ascii_lowercase(),
            other => {
                return err(
                    p,
                    format!(
                        "expected `count`, `sum`, `mean`, `histogram`, `most common` or `top`, found {}",
                        other.describe()
                    ),
                );
            }
        };
        match word.as_str() {
            "count" => Ok(QueryKind::Count),
            "sum" | "mean" => {
                let column = self.column()?;
                self.keyword("in")?;
                let (xs, open) = self.list()?;
                let [lo, hi] = xs[..] else {
                    return err(open, "bounds must be two numbers `[low, high]`");
                };
                if lo >= hi {
                    return err(
                        open,
                        format!("the lower bound {lo} is not below the upper {hi}"),
                    );
                }
                let bounds = Bounds { lo, hi };
                Ok(if word == "sum" {
                    QueryKind::Sum { column, bounds }
                } else {
                    QueryKind::Mean { column, bounds }
                })
            }
            "histogram" => {
                let column = self.column()?;
                self.keyword("edges")?;
                let (edges, open) = self.list()?;
                if edges.len() < 2 {
                    return err(open, "a histogram needs at least two bin edges");
                }
                if edges.windows(2).any(|w| w[0] >= w[1]) {
                    return err(open, "bin edges must be strictly increasing");
                }
                Ok(QueryKind::Histogram { column, edges })
            }
            "most" | "top" => {
                let k = if word == "most" {
                    self.keyword("common")?;
                    1
                } else {
                    let (t, kp) = self.bump();
                    match t {
                        Tok::Num(x) if x >= 1.0 && x.fract() == 0.0 && x <= MAX_LIST as f64 => {
                            x as usize
                        }
                        other => {
                            return err(
                                kp,
                                format!(
                                    "expected how many to choose (a whole number ≥ 1), found {}",
                                    other.describe()
                                ),
                            );
                        }
                    }
                };
                let column = self.column()?;
                self.keyword("among")?;
                let (candidates, open) = self.list()?;
                let mut sorted = candidates.clone();
                sorted.sort_by(f64::total_cmp);
                if sorted.windows(2).any(|w| w[0] == w[1]) {
                    return err(open, "the candidates must be distinct");
                }
                if candidates.len() <= k {
                    return err(
                        open,
                        format!(
                            "choosing {k} of {} candidates reveals nothing worth a privacy cost: \
                             list more candidates than are chosen",
                            candidates.len()
                        ),
                    );
                }
                Ok(QueryKind::TopK {
                    column,
                    k,
                    candidates,
                })
            }
            _ => err(
                p,
                format!(
                    "unknown query `{word}`: expected `count`, `sum`, `mean`, `histogram`, \
                     `most common` or `top`"
                ),
            ),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Filter, ParseError> {
        let mut left = self.and(depth)?;
        while self.is_keyword("or") {
            self.bump();
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, ParseError> {
        let mut left = self.unary(depth)?;
        while self.is_keyword("and") {
            self.bump();
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, ParseError> {
        let p = self.peek().1;
        if depth >= MAX_DEPTH {
            return err(
                p,
                format!("the filter nests deeper than {MAX_DEPTH} levels"),
            );
        }
        if self.is_keyword("not") {
            self.bump();
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if *self.peek().0 == Tok::Open {
            self.bump();
            let inner = self.or(depth + 1)?;
            self.expect(Tok::Close)?;
            return Ok(inner);
        }
        let column = self.column()?;
        let op = match self.bump() {
            (Tok::Op(op), _) => op,
            (t, p) => {
                return err(
                    p,
                    format!(
                        "expected a comparison (=, !=, <, <=, >, >=), found {}",
                        t.describe()
                    ),
                );
            }
        };
        let value = self.number()?;
        Ok(Filter::Cmp { column, op, value })
    }
}

/// Parses a query (see the module docs for the grammar).
pub fn parse_query(text: &str) -> Result<Query, ParseError> {
    let n = text.chars().count();
    if n > MAX_QUERY_CHARS {
        return err(
            MAX_QUERY_CHARS + 1,
            format!("the query is {n} characters long, the limit is {MAX_QUERY_CHARS}"),
        );
    }
    let mut p = Parser {
        toks: tokens(text)?,
        at: 0,
    };
    if *p.peek().0 == Tok::End {
        return err(
            1,
            "empty query: expected `count`, `sum`, `mean`, `histogram`, `most common` or `top`",
        );
    }
    let kind = p.kind()?;
    let filter = if p.is_keyword("where") {
        p.bump();
        Some(p.or(0)?)
    } else {
        None
    };
    match p.peek() {
        (Tok::End, _) => Ok(Query { kind, filter }),
        (t, pos) => err(
            pos,
            format!(
                "expected {} the end of the query, found {}",
                if filter.is_some() {
                    "`and`, `or` or"
                } else {
                    "`where` or"
                },
                t.describe()
            ),
        ),
    }
}

impl std::str::FromStr for Query {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_query(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str) -> (usize, String) {
        let e = parse_query(text).unwrap_err();
        (e.position, e.message)
    }

    #[test]
    fn parses_the_query_kinds() {
        let q = parse_query("count where age > 65 and cp = 4").unwrap();
        assert_eq!(q.kind, QueryKind::Count);
        assert_eq!(q.columns().into_iter().collect::<Vec<_>>(), ["age", "cp"]);
        let q = parse_query("MEAN chol IN [100, 400] where not (sex = 0 or age <= 40)").unwrap();
        assert_eq!(
            q.kind,
            QueryKind::Mean {
                column: "chol".into(),
                bounds: Bounds {
                    lo: 100.0,
                    hi: 400.0
                }
            }
        );
        let q = parse_query("histogram age edges [20, 40, 60, 80.5]").unwrap();
        assert!(matches!(q.kind, QueryKind::Histogram { ref edges, .. } if edges.len() == 4));
        let q = parse_query("top 2 cp among [1, 2, 3, 4] where age >= -1e1").unwrap();
        assert!(matches!(q.kind, QueryKind::TopK { k: 2, .. }));
        let q = parse_query("most common cp among [1,2,3,4]").unwrap();
        assert!(matches!(q.kind, QueryKind::TopK { k: 1, .. }));
        assert!(parse_query("sum chol in [-5, 5] where a != 1 or b <> 2 or c == 3").is_ok());
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let q = parse_query("count where a = 1 or b = 2 and c = 3").unwrap();
        assert!(matches!(q.filter, Some(Filter::Or(_, ref r)) if matches!(**r, Filter::And(..))));
    }

    #[test]
    fn canonical_text_parses_back() {
        for text in [
            "count",
            "count where not (age > 65 and cp = 4) or sex != 1",
            "sum chol in [0, 600] where age < 50",
            "mean age in [-1.5, 99]",
            "histogram age edges [0, 50, 100]",
            "most common cp among [1, 2, 3, 4]",
            "top 3 cp among [1, 2, 3, 4] where age >= 30",
        ] {
            let q = parse_query(text).unwrap();
            assert_eq!(parse_query(&q.to_string()).unwrap(), q, "{text}");
        }
    }

    #[test]
    fn errors_name_the_position() {
        assert_eq!(pos("count where age >").0, 18);
        assert_eq!(pos("count where age 65").0, 17);
        assert_eq!(pos("count where (age > 65").0, 22);
        assert_eq!(pos("cout").0, 1);
        assert!(pos("cout").1.contains("unknown query `cout`"));
        assert_eq!(pos("count age").0, 7);
        assert_eq!(pos("count where age > 65 cp = 4").0, 22);
        assert_eq!(pos("count where and > 1").0, 13);
        assert!(pos("count where and > 1").1.contains("keyword"));
        assert_eq!(pos("count where age ! 3").0, 17);
        assert_eq!(pos("count where age > $").0, 19);
        assert_eq!(pos("").0, 1);
        assert_eq!(pos("sum chol in [400, 100]").0, 13);
        assert_eq!(pos("sum chol in [1]").0, 13);
        assert_eq!(pos("sum chol in [1, 2, 3]").0, 13);
        assert_eq!(pos("histogram age edges [1]").0, 21);
        assert_eq!(pos("histogram age edges [1, 3, 2]").0, 21);
        assert_eq!(pos("top 0 cp among [1, 2]").0, 5);
        assert_eq!(pos("top 1.5 cp among [1, 2]").0, 5);
        assert_eq!(pos("top 2 cp among [1, 2]").0, 16);
        assert_eq!(pos("most common cp among [1, 1, 2]").0, 22);
        assert_eq!(pos("count where age > 1e999").0, 19);
        let e = parse_query("count where age >").unwrap_err();
        assert!(
            e.render("count where age >")
                .contains("                 ^ expected a number")
        );
    }

    #[test]
    fn hostile_inputs_are_bounded() {
        let deep = format!("count where {}a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(pos(&deep).1.contains("nests deeper"));
        let nots = format!("count where {}a = 1", "not ".repeat(100));
        assert!(pos(&nots).1.contains("nests deeper"));
        let long = format!("count where {}", "a = 1 or ".repeat(1000));
        assert!(pos(&long).1.contains("limit"));
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        let wide = format!("histogram a edges [{}]", many.join(","));
        assert!(parse_query(&wide).is_err());
        assert!(parse_query("count where a = NaN").is_err());
        assert!(parse_query("count where a = inf").is_err());
        assert!(parse_query("count where \u{0} = 1").is_err());
    }
}
