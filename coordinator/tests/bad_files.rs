//! Bad configuration files given to the coordinator binary: a missing file
//! is said once, an unknown or mistyped key is named with its file and
//! line; the binary exits non-zero without a panic.

use std::path::Path;
use std::process::Command;

fn coordinator(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-coordinator"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
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
    for (file, text, key, line) in cases {
        std::fs::write(dir.path().join(file), text).unwrap();
        let (code, said) = coordinator(dir.path(), &["serve", "--config", file]);
        assert_ne!(code, 0, "{said}");
        for wanted in [file, key, line] {
            assert!(said.contains(wanted), "{file}: no {wanted:?} in {said}");
        }
    }
}
