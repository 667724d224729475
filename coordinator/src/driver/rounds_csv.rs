//! The per-round log `output_dir/rounds.csv`: one line per ended round,
//! appended in one write. Each line is also stored with its round's end, so
//! a restart restores the line a crash kept from the file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tracing::warn;

use crate::round::RoundSummary;
use crate::store::Store;

/// Store meta key of the `rounds.csv` line of the last ended round, written
/// in the transaction that ends it.
pub const META_ROUNDS_CSV_LINE: &str = "rounds_csv_line";

/// The global metrics columns of `rounds.csv` (filled by evaluation rounds).
pub const EVALUATION_COLUMNS: [&str; 8] = [
    "eval_rows",
    "eval_accuracy",
    "eval_balanced_accuracy",
    "eval_log_loss",
    "eval_auc",
    "eval_rmse",
    "eval_mae",
    "eval_r2",
];

/// The header line of `rounds.csv`.
pub fn header() -> String {
    format!(
        "round,training_round,kind,status,cohort,contributors,dropped,seconds,epsilon,update_norm,{}",
        EVALUATION_COLUMNS.join(",")
    )
}

/// A round's line (without its newline); an evaluation round also fills the
/// global metrics' columns.
pub fn line(
    s: &RoundSummary,
    status: &str,
    epsilon: Option<f64>,
    update_norm: Option<f64>,
    evaluation: Option<&tessera_model::EvalMetrics>,
) -> String {
    let cell = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let eval: Vec<String> = match evaluation {
        Some(m) => [
            Some(m.rows),
            m.accuracy,
            m.balanced_accuracy,
            m.log_loss,
            m.auc,
            m.rmse,
            m.mae,
            m.r2,
        ]
        .into_iter()
        .map(cell)
        .collect(),
        None => vec![String::new(); EVALUATION_COLUMNS.len()],
    };
    format!(
        "{},{},{},{},{},{},{},{:.4},{},{},{}",
        s.round,
        s.training_round.map(|r| r.to_string()).unwrap_or_default(),
        s.kind.as_str(),
        status,
        s.cohort.len(),
        s.contributors.len(),
        s.dropped.len(),
        s.seconds,
        cell(epsilon),
        cell(update_norm),
        eval.join(","),
    )
}

/// Appends `line` to the file at `path` in one write (with the header first
/// if the file is new or empty), so a crash never leaves half of it.
pub fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let empty = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len()
        == 0;
    let text = if empty {
        format!("{}\n{line}\n", header())
    } else {
        format!("{line}\n")
    };
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Brings `rounds.csv` in line with the store after a restart: a last line
/// without its newline (torn by a crash) is cut off, and the line of the
/// last ended round is appended if the file lacks it (the coordinator
/// stopped between the round's end and its line).
pub fn repair(path: &Path, store: &Store) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        warn!(
            path = %path.display(),
            bytes = text.len() - whole,
            "cutting off a torn last line of rounds.csv"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(whole as u64)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("truncating {}", path.display()))?;
    }
    let Some(last) = store.meta(META_ROUNDS_CSV_LINE)? else {
        return Ok(());
    };
    if text[..whole]
        .lines()
        .skip(1)
        .any(|l| round_and_status(l) == round_and_status(&last))
    {
        return Ok(());
    }
    warn!(path = %path.display(), line = %last, "restoring the last round's line of rounds.csv");
    append(path, &last)
}

/// The round number and status cells of a line: what identifies it (a
/// round ends once).
fn round_and_status(line: &str) -> (Option<&str>, Option<&str>) {
    let mut cells = line.split(',');
    (cells.next(), cells.nth(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("coordinator.sqlite")).unwrap()
    }

    #[test]
    fn a_torn_line_is_cut_and_the_stored_line_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.csv");
        let mut store = store(&dir);
        append(&path, "1,,statistics,released,3,3,0,0.1000,,").unwrap();
        // The crash left half of the next line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2,1,train")
            .unwrap();
        store
            .set_meta(META_ROUNDS_CSV_LINE, "2,1,training,released,3,3,0,0.2000,,")
            .unwrap();
        repair(&path, &store).unwrap();
        let expected = format!(
            "{}\n1,,statistics,released,3,3,0,0.1000,,\n2,1,training,released,3,3,0,0.2000,,\n",
            header()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        // Repairing again changes nothing.
        repair(&path, &store).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
    }

    #[test]
    fn a_missing_file_gets_its_header_and_the_stored_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.csv");
        let mut store = store(&dir);
        repair(&path, &store).unwrap();
        assert!(!path.exists(), "nothing ended, nothing to write");
        store
            .set_meta(META_ROUNDS_CSV_LINE, "1,,statistics,aborted,3,0,3,0.5000,,")
            .unwrap();
        repair(&path, &store).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n1,,statistics,aborted,3,0,3,0.5000,,\n", header())
        );
    }
}
