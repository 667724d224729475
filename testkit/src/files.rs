//! Working directories and log files of tests: fresh directories, logs
//! without terminal colour codes, their tails, and fields of structured log
//! lines.

use std::path::{Path, PathBuf};

/// Removes `dir` with everything in it, if it exists, and creates it empty.
///
/// # Panics
/// If the directory cannot be created.
pub fn fresh_dir(dir: impl AsRef<Path>) -> PathBuf {
    let dir = dir.as_ref().to_path_buf();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Removes terminal colour sequences (`ESC [ … letter`) from log text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log file's text, colour codes removed; empty if it cannot be read.
pub fn read_log(path: impl AsRef<Path>) -> String {
    strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}

/// Prints the last `lines` lines of each log file to stderr, under a
/// heading that names the file.
pub fn print_tails(paths: &[PathBuf], lines: usize) {
    for path in paths {
        eprintln!("--- {} (last lines) ---", path.display());
        eprintln!("{}", tail(&read_log(path), lines));
    }
}

/// The value of `key=` in a structured log line (quotes removed).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m done"),
            "time  INFO done"
        );
    }

    #[test]
    fn fields_and_tails() {
        let line = "INFO round released round=3 kind=\"training\" n=4";
        assert_eq!(field(line, "round"), Some("3"));
        assert_eq!(field(line, "kind"), Some("training"));
        assert_eq!(field(line, "n"), Some("4"));
        assert_eq!(field(line, "missing"), None);
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
