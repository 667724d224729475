//! Bad files given to the participant binary: a configuration with an
//! unknown key or a mistyped value names the file, the key and the line; a
//! missing configuration is said once (not once per layer of the error
//! chain); a data file with a bad row names the file, the line and the
//! column. The binary exits non-zero each time without a panic.

use std::path::Path;

use tessera_testkit::command::{exit_and_text, expect_config_errors};

const BASE: &str =
    "[participant]\ncoordinator = \"https://localhost:1\"\ndata = \"d.csv\"\nstate_dir = \"s\"\n";
const TLS: &str = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";

/// Runs `tessera-participant ARGS` in `dir`; (exit code, stdout + stderr).
fn participant(dir: &Path, args: &[&str]) -> (i32, String) {
    exit_and_text(env!("CARGO_BIN_EXE_tessera-participant"), dir, args)
}

#[test]
fn configuration_errors_name_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            format!("{BASE}bogus = 1\n{TLS}"),
            "bogus",
            "line 5",
        ),
        (
            "mistyped.toml",
            format!("{BASE}allowed_columns = 3\n{TLS}"),
            "allowed_columns",
            "line 5",
        ),
        (
            "section.toml",
            format!("{BASE}{TLS}[limits]\nmax_rows = 10\n"),
            "max_rows",
            "line 10",
        ),
        (
            "analytics_kind.toml",
            format!(
                "{BASE}{TLS}[analytics]\nallowed_columns = [\"age\"]\nmin_noise_multiplier = {{ median = 1.0 }}\n"
            ),
            "median",
            "line 11",
        ),
        (
            "analytics_key.toml",
            format!("{BASE}{TLS}[analytics]\ncolumns = [\"age\"]\n"),
            "columns",
            "line 10",
        ),
    ];
    expect_config_errors(
        env!("CARGO_BIN_EXE_tessera-participant"),
        dir.path(),
        &["run"],
        &cases,
    );
}

#[test]
fn a_missing_configuration_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["run", "ledger"] {
        let (code, said) = participant(dir.path(), &[command, "--config", "nowhere.toml"]);
        assert_ne!(code, 0, "{said}");
        assert_eq!(said.matches("nowhere.toml").count(), 1, "{said}");
        assert_eq!(said.matches("No such file").count(), 1, "{said}");
    }
}

#[test]
fn a_bad_data_row_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.toml"), format!("{BASE}{TLS}")).unwrap();
    std::fs::write(
        dir.path().join("task.toml"),
        "[task]\nfeatures = [\"a\", \"b\"]\nlabel = \"y\"\npositive = \"> 0\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("d.csv"), "a,b,y\n1,2,1\n3,x,0\n").unwrap();
    let (code, said) = participant(
        dir.path(),
        &["check", "--config", "ok.toml", "--task", "task.toml"],
    );
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("d.csv") && said.contains("line 3") && said.contains("column \"b\""),
        "{said}"
    );
    // A row with a missing field.
    std::fs::write(dir.path().join("d.csv"), "a,b,y\n1,2,1\n4\n").unwrap();
    let (code, said) = participant(
        dir.path(),
        &["check", "--config", "ok.toml", "--task", "task.toml"],
    );
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("d.csv") && said.contains("line 3"), "{said}");
}
