//! Configuration files: one error type that names the file or key at fault,
//! and reading a TOML file into a configuration type.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration error, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `privacy.delta`.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// A [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Reads and parses a TOML file (unknown keys are refused by the type's
/// `deny_unknown_fields`).
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Makes a relative path relative to `base` (the configuration file's
/// directory), so a directory of configuration can be moved as a whole.
pub fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        assert!(matches!(
            read_toml::<Sample>(&path),
            Err(ConfigError::Read { .. })
        ));
        std::fs::write(&path, "name = \"x\"\nother = 1\n").unwrap();
        let err = read_toml::<Sample>(&path).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("other"), "{err}");
        std::fs::write(&path, "name = \"x\"\n").unwrap();
        read_toml::<Sample>(&path).unwrap();
        let mut p = PathBuf::from("a/b");
        resolve(Path::new("/base"), &mut p);
        assert_eq!(p, PathBuf::from("/base/a/b"));
    }
}
