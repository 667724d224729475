//! The coordinator's configuration file (TOML), checked at load.
//!
//! Every error names the key at fault. Relative paths are resolved against
//! the directory of the configuration file, so a federation directory can be
//! moved as a whole.
//!
//! ```toml
//! [federation]
//! name = "heart"
//! listen = "127.0.0.1:50051"
//! min_participants = 3
//! rounds = 20
//! output_dir = "out"
//! # allow = ["cleveland", "hungary"]     # optional allow-list of certificate names
//!
//! [tls]
//! ca = "pki/ca.crt"
//! cert = "pki/coordinator.crt"
//! key = "pki/coordinator.key"
//!
//! [task]
//! model = "logistic"
//! features = ["age", "sex", "cp"]
//! label = "num"
//! positive = "> 0"
//! ```
//!
//! The file's sections and their keys are in [`sections`], the checks of
//! their values in `check`; deciding the noise from a target ε is a separate
//! planning step ([`crate::settings`]), so this module imports nothing of the
//! rounds or the budget.

mod check;
pub mod sections;

use std::path::{Path, PathBuf};

pub use sections::*;

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

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl CoordinatorConfig {
    /// Reads, parses and checks a configuration file, with relative paths
    /// resolved against its directory. [`crate::settings::Settings::load`]
    /// also plans the noise.
    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: CoordinatorConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = config.resolve(base);
        config.check()?;
        Ok(config)
    }

    fn resolve(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.ca);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.federation.output_dir);
        if let Some(s) = self.federation.store.as_mut() {
            fix(s);
        }
        self
    }
}

#[cfg(test)]
mod tests;
