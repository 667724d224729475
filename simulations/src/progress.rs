//! Progress of long runs and sweeps: a bar redrawn in place (done, ETA, the
//! latest figures) when standard output is a terminal, plain lines
//! otherwise (logs, CI, pipes); and the two-column summary table printed at
//! the end of a run.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Width of the bar, in characters.
const BAR: usize = 24;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One line redrawn in place.
    Bar,
    /// A line per step.
    Lines,
}

impl Style {
    /// A bar on a terminal, lines otherwise (`TESSERA_PROGRESS=lines`
    /// forces lines).
    pub fn detect() -> Self {
        let forced = std::env::var("TESSERA_PROGRESS").is_ok_and(|v| v == "lines");
        if !forced && std::io::stdout().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// A progress display over `total` steps.
#[derive(Debug)]
pub struct Progress {
    style: Style,
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    /// When the first step was done (the ETA counts from there, so that
    /// start-up does not distort it).
    first: Option<(Instant, u64)>,
    drawn: bool,
}

impl Progress {
    /// Progress over `total` steps called `what` (e.g. "rounds").
    pub fn new(what: &'static str, total: u64, style: Style) -> Self {
        Self {
            style,
            what,
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            first: None,
            drawn: false,
        }
    }

    /// Estimated time left, from the pace since the first step.
    pub fn eta(&self) -> Option<Duration> {
        let (at, base) = self.first?;
        let steps = self.done.checked_sub(base).filter(|s| *s > 0)?;
        let per = at.elapsed().as_secs_f64() / steps as f64;
        Some(Duration::from_secs_f64(
            per * self.total.saturating_sub(self.done) as f64,
        ))
    }

    /// `done` steps are finished; `detail` says what the latest one showed.
    pub fn set(&mut self, done: u64, detail: &str) {
        self.done = done.min(self.total);
        if self.first.is_none() {
            self.first = Some((Instant::now(), self.done));
        }
        let eta = self
            .eta()
            .map(|d| format!("ETA {}", human(d)))
            .unwrap_or_else(|| "ETA …".into());
        match self.style {
            Style::Lines => println!(
                "{} {:>w$}/{}: {detail}  ({} elapsed, {eta})",
                self.what,
                self.done,
                self.total,
                human(self.started.elapsed()),
                w = self.total.to_string().len()
            ),
            Style::Bar => {
                let filled = (BAR as u64 * self.done / self.total) as usize;
                let bar: String = "#".repeat(filled) + &"-".repeat(BAR - filled);
                print!(
                    "\r\x1b[2K[{bar}] {}/{} {}  {detail}  {eta}",
                    self.done, self.total, self.what
                );
                let _ = std::io::stdout().flush();
                self.drawn = true;
            }
        }
    }

    /// Prints a line above the bar (or just a line).
    pub fn note(&mut self, line: &str) {
        if self.style == Style::Bar && self.drawn {
            print!("\r\x1b[2K");
            self.drawn = false;
        }
        println!("{line}");
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.style == Style::Bar && self.drawn {
            println!();
            self.drawn = false;
        }
    }
}

/// A duration as `12 s`, `3 min 5 s` or `2 h 10 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1} s", d.as_secs_f64()),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Bytes as MiB or GiB.
pub fn bytes(b: u64) -> String {
    let mib = b as f64 / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// A two-column table with a title, boxed in ASCII.
pub fn table(title: &str, rows: &[(String, String)]) -> String {
    let kw = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let vw = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(title.chars().count().saturating_sub(kw + 3));
    let rule = format!("+-{}-+-{}-+", "-".repeat(kw), "-".repeat(vw));
    let mut out = format!("{rule}\n| {title:<w$} |\n{rule}\n", w = kw + vw + 3);
    for (k, v) in rows {
        let kpad = kw - k.chars().count();
        let vpad = vw - v.chars().count();
        out.push_str(&format!(
            "| {k}{} | {v}{} |\n",
            " ".repeat(kpad),
            " ".repeat(vpad)
        ));
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let t = table(
            "Run summary",
            &[
                ("engine".into(), "inprocess".into()),
                ("ε".into(), "1.234 (δ = 1e-5)".into()),
            ],
        );
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
        assert!(t.contains("| engine | inprocess"), "{t}");
    }

    #[test]
    fn eta_follows_the_pace_and_lines_do_not_panic() {
        let mut p = Progress::new("rounds", 10, Style::Lines);
        assert!(p.eta().is_none());
        p.set(1, "first");
        std::thread::sleep(Duration::from_millis(20));
        p.set(2, "second");
        let eta = p.eta().unwrap();
        assert!(eta >= Duration::from_millis(100), "{eta:?}");
        p.finish();
        assert_eq!(human(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
    }
}
