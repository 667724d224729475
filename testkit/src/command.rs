//! Commands run by tests: within a time limit, in their own process group
//! (so that a command that launched a federation is killed together with
//! it on a timeout), their output captured; asserting success; parsing
//! what they print or write as JSON.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::process;

/// How long a command run by [`run_ok`] may take.
pub const COMMAND_PATIENCE: Duration = Duration::from_secs(600);

/// Runs `cmd` (stdin closed, stdout and stderr captured) in its own process
/// group and returns what it printed, whatever its exit status.
///
/// # Panics
/// If it cannot be started, or still runs after `limit`: then its whole
/// process group is killed and the panic shows its output so far.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let what = describe(&cmd);
    let capture = Capture::new();
    cmd.stdin(Stdio::null())
        .stdout(capture.file("stdout"))
        .stderr(capture.file("stderr"));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    match process::wait_within(&mut child, limit) {
        Some(status) => Output {
            status,
            stdout: capture.read("stdout"),
            stderr: capture.read("stderr"),
        },
        None => {
            kill_group(child.id());
            process::kill_and_reap(&mut child);
            panic!(
                "{what} did not finish within {limit:?}; its output:\n{}\n{}",
                String::from_utf8_lossy(&capture.read("stdout")),
                String::from_utf8_lossy(&capture.read("stderr"))
            );
        }
    }
}

/// Runs `program args…` within [`COMMAND_PATIENCE`], asserting that it
/// succeeds; `program` is the executable and any leading arguments.
pub fn run_ok<S: AsRef<OsStr>>(program: &[S], args: &[&str]) -> Output {
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]).args(args);
    let what = describe(&cmd);
    let out = output_within(cmd, COMMAND_PATIENCE);
    assert!(
        out.status.success(),
        "{what} failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `program args…` like [`run_ok`] and parses its stdout as one JSON
/// value.
pub fn run_json<S: AsRef<OsStr>>(program: &[S], args: &[&str]) -> Value {
    let out = run_ok(program, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `tessera-sim ARGS --out OUT` (`run` or `demo`) within `patience`,
/// asserting success; returns the parsed `OUT/summary.json`.
pub fn sim_summary(sim: &Path, args: &[&str], out: &Path, patience: Duration) -> Value {
    let mut cmd = Command::new(sim);
    cmd.args(args).arg("--out").arg(out);
    let result = output_within(cmd, patience);
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success(),
        "tessera-sim {args:?} failed ({}):\n{output}",
        result.status
    );
    let summary = std::fs::read_to_string(out.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}); output:\n{output}"));
    serde_json::from_str(&summary).expect("summary.json is JSON")
}

/// `program args…`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Kills every process of group `group` (SIGKILL).
fn kill_group(group: u32) {
    if cfg!(unix) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -s KILL -- -{group}")])
            .status();
    }
}

/// Files that receive a command's output: a pipe could fill up while the
/// command runs, a file cannot, and a grandchild that keeps it open blocks
/// nothing.
struct Capture {
    base: PathBuf,
}

impl Capture {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("tessera-command-{}-{n}", std::process::id()));
        Self { base }
    }

    fn path(&self, stream: &str) -> PathBuf {
        self.base.with_extension(stream)
    }

    fn file(&self, stream: &str) -> File {
        let path = self.path(stream);
        File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
    }

    fn read(&self, stream: &str) -> Vec<u8> {
        std::fs::read(self.path(stream)).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for stream in ["stdout", "stderr"] {
            let _ = std::fs::remove_file(self.path(stream));
        }
    }
}

/// Runs `program ARGS` in `dir` for a bad-input test: its exit code and its
/// stdout and stderr together, after checking it did not panic.
pub fn exit_and_text(program: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// Writes each case's `(file, text)` to `dir`, runs `program` with `args`
/// followed by `--config FILE`, and checks it fails naming the file, the
/// `key` and the `line` (e.g. `"line 5"`).
pub fn expect_config_errors(
    program: &str,
    dir: &Path,
    args: &[&str],
    cases: &[(&str, String, &str, &str)],
) {
    for (file, text, key, line) in cases {
        std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("writing {file}: {e}"));
        let mut all = args.to_vec();
        all.extend(["--config", file]);
        let (code, said) = exit_and_text(program, dir, &all);
        assert_ne!(code, 0, "{said}");
        for wanted in [*file, *key, *line] {
            assert!(said.contains(wanted), "{file}: no {wanted:?} in {said}");
        }
    }
}
