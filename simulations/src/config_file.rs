//! `--config FILE`: every flag of a subcommand also settable in a TOML
//! file, and the options of a run written back as TOML.
//!
//! A key is a flag's long name, with `-` or `_` (`noise_multiplier = 1.0`,
//! `data = ["a.csv", "b.csv"]`, `no_secagg = true`). The file's keys become
//! flags placed before the command line's own, and a key whose flag is also
//! on the command line is skipped, so the command line wins; the flags are
//! then parsed by the subcommand's own parser, with the same checks as
//! typed flags. A `[resolved]` table (what `sim.toml` carries for reading)
//! is ignored. Writing back turns the parsed matches into the same keys,
//! defaults included.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Flags the file may not set.
const RESERVED: [&str; 3] = ["config", "help", "version"];

fn takes_no_value(arg: &clap::Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    )
}

/// The long flags written on a command line (`--name` or `--name=…`).
fn given(argv: &[String]) -> BTreeSet<String> {
    argv.iter()
        .take_while(|a| *a != "--")
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect()
}

/// The value of `--config` on `argv`, if any.
pub fn config_path(argv: &[String]) -> Option<String> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_owned());
        }
    }
    None
}

fn scalar(key: &str, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("`{key}`: {} is not a value a flag takes", other.type_str()),
    })
}

/// The flags `table` stands for under `cmd`, leaving out those in `skip`.
pub fn table_to_flags(
    cmd: &Command,
    table: &toml::Table,
    skip: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut flags = Vec::new();
    for (key, value) in table {
        if key == "resolved" && value.is_table() {
            continue;
        }
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|_| !RESERVED.contains(&long.as_str()))
            .ok_or_else(|| {
                let known: Vec<String> = cmd
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !RESERVED.contains(l))
                    .map(|l| l.replace('-', "_"))
                    .collect();
                anyhow!("unknown option `{key}` (known: {})", known.join(", "))
            })?;
        if skip.contains(&long) {
            continue;
        }
        if takes_no_value(arg) {
            match value {
                toml::Value::Boolean(true) => flags.push(format!("--{long}")),
                toml::Value::Boolean(false) => {}
                _ => bail!("`{key}` is a switch: write true or false"),
            }
            continue;
        }
        match value {
            toml::Value::Array(items) => {
                for item in items {
                    flags.push(format!("--{long}={}", scalar(key, item)?));
                }
            }
            v => flags.push(format!("--{long}={}", scalar(key, v)?)),
        }
    }
    Ok(flags)
}

/// `argv` (the subcommand's arguments, without the program and subcommand
/// names) with the flags of its `--config` file put in front.
pub fn expand(cmd: &Command, argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(Path::new(&path))
        .with_context(|| format!("reading the options file {path}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("{path}: not a TOML file of options: {e}"))?;
    let flags = table_to_flags(cmd, &table, &given(&argv)).with_context(|| path.clone())?;
    Ok(flags.into_iter().chain(argv).collect())
}

fn typed(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return i.into();
    }
    if text.parse::<u64>().is_ok() {
        // Beyond i64 (a large seed): TOML integers cannot hold it.
        return text.into();
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && text.chars().any(|c| c.is_ascii_digit())
        && !text.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return f.into();
    }
    match text {
        "true" => true.into(),
        "false" => false.into(),
        _ => text.into(),
    }
}

/// The options in `matches` (parsed under `cmd`) as TOML keys, defaults
/// included, switches as booleans; options without a value are left out.
pub fn matches_to_toml(cmd: &Command, matches: &ArgMatches) -> String {
    let mut table = toml::Table::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if RESERVED.contains(&long) {
            continue;
        }
        let key = long.replace('-', "_");
        if takes_no_value(arg) {
            if let Ok(Some(b)) = matches.try_get_one::<bool>(id) {
                table.insert(key, (*b).into());
            }
            continue;
        }
        let Ok(Some(raw)) = matches.try_get_raw(id) else {
            continue;
        };
        let values: Vec<toml::Value> = raw.map(|v| typed(&v.to_string_lossy())).collect();
        let many = matches!(arg.get_action(), ArgAction::Append)
            || matches.value_source(id) == Some(ValueSource::CommandLine) && values.len() > 1;
        match values.len() {
            0 => {}
            1 if !many => {
                table.insert(key, values.into_iter().next().expect("one"));
            }
            _ => {
                table.insert(key, toml::Value::Array(values));
            }
        }
    }
    toml::to_string(&table).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: crate::experiment::RunArgs,
    }

    fn parse(argv: Vec<String>) -> (crate::experiment::RunArgs, String) {
        let cmd = Cli::command();
        let argv = expand(&cmd, argv).unwrap();
        let matches = cmd
            .clone()
            .try_get_matches_from(std::iter::once("run".to_owned()).chain(argv))
            .unwrap();
        let args = Cli::from_arg_matches(&matches).unwrap().run;
        (args, matches_to_toml(&cmd, &matches))
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_file_sets_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sim.toml");
        std::fs::write(
            &file,
            "data = [\"a.csv\", \"b.csv\"]\nlabel = \"y\"\nrounds = 7\nnoise_multiplier = 1.5\n\
             no-secagg = true\nengine = \"inprocess\"\ndropout = \"keys=0.1\"\n\
             partition = \"dirichlet:0.5\"\n[resolved]\nparticipants = 3\n",
        )
        .unwrap();
        let path = file.to_string_lossy().into_owned();
        let (args, written) = parse(s(&["--config", &path, "--rounds", "9"]));
        assert_eq!(args.rounds, 9);
        assert_eq!(args.data.len(), 2);
        assert_eq!(args.label, "y");
        assert_eq!(args.privacy.noise_multiplier, Some(1.5));
        assert!(args.privacy.no_secagg);
        assert_eq!(args.engine, crate::engine::Engine::InProcess);
        assert_eq!(
            args.partition,
            Some(crate::experiment::Partition::Dirichlet(0.5))
        );
        assert_eq!(args.dropout.unwrap().to_string(), "keys=0.1");
        // Written back, it reads back to the same options.
        assert!(written.contains("rounds = 9"), "{written}");
        assert!(
            written.contains("seed = 1"),
            "defaults are written: {written}"
        );
        std::fs::write(&file, &written).unwrap();
        let (again, rewritten) = parse(s(&["--config", &path]));
        assert_eq!(again.rounds, 9);
        assert_eq!(again.data, args.data);
        assert_eq!(rewritten, written);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let cmd = Cli::command();
        let none = BTreeSet::new();
        let t: toml::Table = "round = 3".parse().unwrap();
        let e = table_to_flags(&cmd, &t, &none).unwrap_err().to_string();
        assert!(
            e.contains("unknown option `round`") && e.contains("rounds"),
            "{e}"
        );
        let t: toml::Table = "no_secagg = 1".parse().unwrap();
        assert!(table_to_flags(&cmd, &t, &none).is_err());
        let t: toml::Table = "rounds = { a = 1 }".parse().unwrap();
        assert!(table_to_flags(&cmd, &t, &none).is_err());
        let t: toml::Table = "config = \"x\"".parse().unwrap();
        assert!(table_to_flags(&cmd, &t, &none).is_err());
    }
}
