//! Bad configuration files given to the coordinator binary: a missing file
//! is said once, an unknown or mistyped key is named with its file and
//! line; the binary exits non-zero without a panic.

use std::path::Path;

use tessera_testkit::command::{exit_and_text, expect_config_errors};

fn coordinator(dir: &Path, args: &[&str]) -> (i32, String) {
    exit_and_text(env!("CARGO_BIN_EXE_tessera-coordinator"), dir, args)
}

#[test]
fn a_missing_configuration_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "check", "status"] {
        let (code, said) = coordinator(dir.path(), &[command, "--config", "nowhere.toml"]);
        assert_ne!(code, 0, "{said}");
        assert_eq!(said.matches("No such file").count(), 1, "{command}: {said}");
    }
}

#[test]
fn unknown_and_mistyped_keys_name_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[federation]\nname = \"f\"\nlisten = \"127.0.0.1:0\"\nmin_participants = 3\n";
    let cases = [
        (
            "unknown.toml",
            format!("{base}colour = \"blue\"\n"),
            "colour",
            "line 5",
        ),
        (
            "mistyped.toml",
            "[federation]\nname = \"f\"\nrounds = \"three\"\n".to_owned(),
            "rounds",
            "line 3",
        ),
    ];
    let mut cases = cases.to_vec();
    cases.extend([
        (
            "query.toml",
            format!("{base}rounds = 0\n\n[[analytics]]\nquery = \"count wher age > 65\"\nepsilon = 1\n"),
            "analytics.query",
            "line 7",
        ),
        (
            "noise.toml",
            format!(
                "{base}rounds = 0\n\n[[analytics]]\nquery = \"histogram age edges [0, 50, 100]\"\nepsilon = 1\n"
            ),
            "analytics.noise_multiplier",
            "line 7",
        ),
    ]);
    expect_config_errors(
        env!("CARGO_BIN_EXE_tessera-coordinator"),
        dir.path(),
        &["serve"],
        &cases,
    );
}
