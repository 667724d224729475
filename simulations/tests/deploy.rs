//! The deployment cannot drift from the programs: every command of the
//! guide (`deploy/README.md`) and every container command of the
//! Kubernetes manifests parses with the real command lines (and the guide's
//! `tessera-certs` commands run), the configurations in the manifests load
//! with the real loaders, and the image definition provides the programs,
//! user and directories the manifests assume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_testkit::bins::BinDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const PROGRAMS: [&str; 3] = [
    "tessera-coordinator",
    "tessera-participant",
    "tessera-certs",
];

/// Splits a shell command line into words (quotes removed, no expansion).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {line:?}");
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The command lines of the ```sh blocks of a Markdown text, with
/// continuation lines joined and comments dropped.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = line.trim() == "```sh";
            continue;
        }
        if !inside {
            continue;
        }
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

/// The invocation of one of the programs in a command line, if any: the
/// program and its arguments (up to a pipe).
fn invocation(line: &str) -> Option<Vec<String>> {
    let w = words(line);
    let start = w.iter().position(|t| PROGRAMS.contains(&t.as_str()))?;
    let end = w[start..]
        .iter()
        .position(|t| t == "|")
        .map_or(w.len(), |i| start + i);
    Some(w[start..end].to_vec())
}

/// Checks `args` (program first) against the program's real command line.
fn accepted(args: &[String]) -> Result<(), String> {
    let command = match args[0].as_str() {
        "tessera-coordinator" => tessera_coordinator::cli::command(),
        "tessera-participant" => tessera_participant::cli::command(),
        other => return Err(format!("no command line for {other}")),
    };
    command
        .try_get_matches_from(args)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_guides_commands_are_the_programs_commands() {
    let guide = read("deploy/README.md");
    let lines = shell_lines(&guide);
    let calls: Vec<Vec<String>> = lines.iter().filter_map(|l| invocation(l)).collect();
    let used: BTreeSet<&str> = calls.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(used.len(), 3, "the guide uses all three programs: {used:?}");
    assert!(calls.len() >= 10, "{calls:?}");
    // tessera-certs runs for real, in a scratch directory, in guide order.
    let scratch = tempfile::tempdir().unwrap();
    let certs = BinDir::of_test().require(&["tessera-certs"]).remove(0);
    for call in &calls {
        if call[0] == "tessera-certs" {
            let args: Vec<String> = call[1..]
                .iter()
                .map(|a| {
                    if a == "pki" {
                        scratch.path().join("pki").to_string_lossy().into_owned()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let out = Command::new(&certs).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{call:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else if let Err(e) = accepted(call) {
            panic!("the guide's {call:?} is refused:\n{e}");
        }
    }
    // The files the guide hands to kubectl exist.
    for line in &lines {
        let w = words(line);
        if let Some(i) = w.iter().position(|t| t == "-f") {
            let path = &w[i + 1];
            if path.starts_with("deploy/") {
                assert!(repo().join(path).is_file(), "{path} is missing");
            }
        }
        for t in &w {
            if let Some(file) = t.strip_prefix("--from-file=") {
                let file = file.split('=').next_back().unwrap();
                assert!(!file.is_empty(), "{line}");
            }
        }
    }
    // The certificate files the Secrets are made of are the ones init wrote.
    for name in [
        "ca.crt",
        "coordinator.crt",
        "coordinator.key",
        "operator.crt",
    ] {
        assert!(scratch.path().join("pki").join(name).is_file(), "{name}");
    }
}

/// `command:` and `args:` lines (JSON arrays) of a manifest, paired.
fn container_calls(yaml: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(cmd) = line.trim().strip_prefix("command: ") else {
            continue;
        };
        let mut call: Vec<String> = serde_json::from_str(cmd).unwrap();
        let args = lines[i + 1]
            .trim()
            .strip_prefix("args: ")
            .unwrap_or_else(|| panic!("no args after {line}"));
        call.extend(serde_json::from_str::<Vec<String>>(args).unwrap());
        out.push(call);
    }
    out
}

/// The literal block of `key: |` in a manifest, dedented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("no {key} block"));
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `mountPath:` values of a manifest.
fn mount_paths(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("mountPath: "))
        .map(str::to_owned)
        .collect()
}

/// Absolute paths quoted in a TOML text.
fn absolute_paths(toml: &str) -> Vec<String> {
    toml.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_manifests_run_the_programs_with_their_configurations() {
    let dir = tempfile::tempdir().unwrap();
    for (file, config_key) in [
        ("deploy/kubernetes/coordinator.yaml", "coordinator.toml"),
        ("deploy/kubernetes/participant.yaml", "participant.toml"),
    ] {
        let yaml = read(file);
        let calls = container_calls(&yaml);
        assert_eq!(calls.len(), 2, "{file}: a check and the program");
        assert!(calls.iter().any(|c| c[1] == "check"), "{file}: {calls:?}");
        for call in &calls {
            if let Err(e) = accepted(call) {
                panic!("{file}: {call:?} is refused:\n{e}");
            }
            let config = call.iter().position(|a| a == "--config").unwrap() + 1;
            assert_eq!(
                call[config],
                format!("/etc/tessera/config/{config_key}"),
                "{file}"
            );
        }
        // The configuration loads with the real loader.
        let text = block(&yaml, config_key);
        let path = dir.path().join(config_key);
        std::fs::write(&path, &text).unwrap();
        if config_key == "coordinator.toml" {
            let settings = tessera_coordinator::settings::Settings::load(&path)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let web = settings.config.web.expect("the page is configured");
            assert!(!web.operators.is_empty());
        } else {
            tessera_participant::config::ParticipantConfig::load(&path)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        // Every path it names is on a volume the container mounts.
        let mounts = mount_paths(&yaml);
        for p in absolute_paths(&text) {
            assert!(
                mounts
                    .iter()
                    .any(|m| p.starts_with(&format!("{m}/")) || &p == m),
                "{file}: {p} is on no mounted volume ({mounts:?})"
            );
        }
        assert!(yaml.contains("runAsNonRoot: true"), "{file}");
    }
}

#[test]
fn the_image_provides_what_the_manifests_assume() {
    let docker = read("deploy/Dockerfile");
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].ends_with(" AS build"));
    assert!(
        !stages[1].contains("rust"),
        "the runtime image has no toolchain"
    );
    // The three programs: built, and copied to /usr/local/bin under their names.
    let mut binaries = BTreeSet::new();
    for manifest in ["coordinator", "participant", "certs"] {
        let toml: toml::Table = read(&format!("{manifest}/Cargo.toml")).parse().unwrap();
        for bin in toml["bin"].as_array().unwrap() {
            binaries.insert(bin["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(binaries, PROGRAMS.iter().map(|s| s.to_string()).collect());
    for b in &binaries {
        assert!(docker.contains(&format!("--bin {b}")), "{b} is not built");
        assert!(
            docker.contains(&format!(
                "COPY --from=build /src/target/release/{b} /usr/local/bin/{b}"
            )),
            "{b} is not copied"
        );
    }
    // A numeric, unprivileged user, the one the manifests run as.
    let user = docker
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').unwrap();
    let (uid, gid): (u32, u32) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert!(uid >= 1000 && gid >= 1000);
    assert!(docker.contains(&format!("--uid {uid} --gid {gid}")));
    // Directories: made in the image; the state directory belongs to the user.
    let mkdir = docker
        .lines()
        .find(|l| l.contains("mkdir -p"))
        .expect("a mkdir line");
    let made: BTreeSet<&str> = mkdir
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .collect();
    assert!(docker.contains(&format!("chown {uid}:{gid} /var/lib/tessera")));
    for file in ["coordinator", "participant"] {
        let yaml = read(&format!("deploy/kubernetes/{file}.yaml"));
        assert!(yaml.contains(&format!("runAsUser: {uid}")), "{file}");
        assert!(yaml.contains(&format!("runAsGroup: {gid}")), "{file}");
        assert!(yaml.contains(&format!("fsGroup: {gid}")), "{file}");
        for m in mount_paths(&yaml) {
            assert!(
                made.contains(m.as_str()),
                "{file} mounts {m}, not made in the image"
            );
        }
        for call in container_calls(&yaml) {
            assert!(binaries.contains(&call[0]), "{file} runs {}", call[0]);
        }
        let image = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .unwrap();
        assert!(
            docker.contains(&format!("-t {image}")),
            "{file} runs {image}"
        );
    }
}

#[test]
fn words_split_like_a_shell() {
    assert_eq!(words(r#"a "b c" 'd' e=f"#), vec!["a", "b c", "d", "e=f"]);
    assert_eq!(
        shell_lines("```sh\nx \\\n  y # note\n# c\n```\n```text\nz\n```"),
        vec!["x y"]
    );
}
