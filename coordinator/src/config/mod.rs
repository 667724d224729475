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

pub mod analytics;
mod check;
pub mod sections;
pub mod web;

use std::path::{Path, PathBuf};

pub use analytics::AnalyticsEntry;
pub use sections::*;
pub use web::WebSection;

pub use tessera_common::config::{ConfigError, invalid};

impl CoordinatorConfig {
    /// Reads, parses and checks a configuration file, with relative paths
    /// resolved against its directory. [`crate::settings::Settings::load`]
    /// also plans the noise.
    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let config: CoordinatorConfig = tessera_common::config::read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = config.resolve(base);
        config.check()?;
        Ok(config)
    }

    fn resolve(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| tessera_common::config::resolve(base, p);
        fix(&mut self.tls.ca);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.federation.output_dir);
        if let Some(s) = self.federation.store.as_mut() {
            fix(s);
        }
        if let Some(e) = self.web.as_mut().and_then(|w| w.evaluation.as_mut()) {
            fix(e);
        }
        self
    }
}

#[cfg(test)]
mod tests;
