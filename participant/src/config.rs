//! The participant's configuration file (TOML), validated at load.
//!
//! ```toml
//! [participant]
//! coordinator = "https://localhost:50051"
//! data = "cleveland.csv"
//! state_dir = "state"
//! allowed_columns = ["age", "chol", "num"]   # optional allow-list
//!
//! [tls]
//! ca = "pki/ca.crt"
//! cert = "pki/cleveland.crt"
//! key = "pki/cleveland.key"
//!
//! [privacy]            # the site's own budget (optional)
//! max_epsilon = 8.0
//! delta = 1e-5
//! min_noise_multiplier = 0.5
//! require_secure_aggregation = true  # default: on for private rounds
//!
//! [limits]             # what an announcement may ask of the site
//! max_dimension = 50000000
//! max_cohort_size = 10000
//! max_features = 10000
//!
//! [evaluation]         # held-out rows for federated evaluation (optional)
//! fraction = 0.2       # of the data file's rows, seeded and stratified; or
//! # data = "eval.csv"  # a separate file of held-out rows
//! seed = 1
//!
//! [analytics]          # federated-analytics queries this site answers (optional)
//! allowed_columns = ["age", "cp", "chol"]   # absent: every query is declined
//! min_noise_multiplier = { count = 2.0, histogram = 1.0 }
//! max_rows = 1000      # the largest row cap a query may announce
//!
//! [trainer]            # train with your own program (optional)
//! command = ["python3", "train.py"]
//! timeout_seconds = 600
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod analytics;

pub use analytics::AnalyticsSection;
pub use tessera_common::config::{ConfigError, invalid};

/// The participant configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantConfig {
    /// Where and what.
    pub participant: ParticipantSection,
    /// TLS material: `[tls]` with `ca`, `cert` and `key` (PEM files).
    pub tls: tessera_certs::TlsFiles,
    /// The site's own privacy budget.
    #[serde(default)]
    pub privacy: SitePrivacySection,
    /// Reconnection behaviour.
    #[serde(default)]
    pub reconnect: ReconnectSection,
    /// Limits on what a coordinator's announcement may ask of the site.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The site's held-out rows for federated evaluation.
    #[serde(default)]
    pub evaluation: EvaluationSection,
    /// Which analytics queries the site answers.
    #[serde(default, skip_serializing_if = "AnalyticsSection::is_default")]
    pub analytics: AnalyticsSection,
    /// An external trainer (absent: the built-in models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<TrainerSection>,
}

/// `[evaluation]`: which of the site's rows federated evaluation uses. They
/// are held out of local training. Absent: the site has no held-out rows and
/// contributes zeros to an evaluation round.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSection {
    /// Share of the data file's rows held out (stratified by class, seeded);
    /// 0: none.
    pub fraction: f64,
    /// Seed of the held-out rows' choice (not a privacy seed).
    pub seed: u64,
    /// A separate CSV of held-out rows instead (exclusive with `fraction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
}

/// `[trainer]`: an external command trains the model (protocol
/// `tessera-trainer/1`, see the README).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerSection {
    /// Program and arguments, e.g. `["python3", "train.py"]`.
    pub command: Vec<String>,
    /// Longest one job may run; then its whole process group is killed.
    #[serde(default = "default_trainer_timeout")]
    pub timeout_seconds: f64,
}

fn default_trainer_timeout() -> f64 {
    600.0
}

/// `[participant]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSection {
    /// Coordinator URL, `https://host:port`.
    pub coordinator: String,
    /// Name expected in the coordinator's certificate (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The local CSV file.
    pub data: PathBuf,
    /// Directory of the site's ledger.
    pub state_dir: PathBuf,
    /// The only columns a task may name as features or label. Unset: any
    /// column of the file. A task naming another column is rejected before
    /// the data is read.
    #[serde(default)]
    pub allowed_columns: Option<Vec<String>>,
}

/// `[privacy]`: the site's own limits, checked before any data is touched.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SitePrivacySection {
    /// Decline a round that would take the site's own ε past this.
    pub max_epsilon: Option<f64>,
    /// δ at which the site's ε is computed.
    pub delta: f64,
    /// Decline a round that announces less noise than this.
    pub min_noise_multiplier: Option<f64>,
    /// Decline rounds without differential privacy (or with seeded noise).
    pub require_privacy: bool,
    /// Decline rounds without secure aggregation. Unset: required for every
    /// round announced as differentially private; `true`: required for all
    /// rounds; `false`: never required.
    pub require_secure_aggregation: Option<bool>,
}

impl Default for SitePrivacySection {
    fn default() -> Self {
        Self {
            max_epsilon: None,
            delta: 1e-5,
            min_noise_multiplier: None,
            require_privacy: false,
            require_secure_aggregation: None,
        }
    }
}

impl SitePrivacySection {
    /// Whether a round announced as private (`private`) or not must use
    /// secure aggregation for this site to take part.
    pub fn secure_aggregation_required(&self, private: bool) -> bool {
        self.require_secure_aggregation.unwrap_or(private)
    }
}

/// `[limits]`: the largest announcement the site takes part in. A round
/// beyond them is declined before any data is touched.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest vector (model parameters, statistics) a round may announce.
    pub max_dimension: u64,
    /// Largest secure-aggregation cohort a round may announce.
    pub max_cohort_size: u32,
    /// Largest number of feature columns a task may name.
    pub max_features: usize,
}

/// Default of `limits.max_dimension`.
pub const DEFAULT_MAX_DIMENSION: u64 = 50_000_000;
/// Default of `limits.max_cohort_size`.
pub const DEFAULT_MAX_COHORT_SIZE: u32 = 10_000;
/// Default of `limits.max_features`.
pub const DEFAULT_MAX_FEATURES: usize = 10_000;

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_dimension: DEFAULT_MAX_DIMENSION,
            max_cohort_size: DEFAULT_MAX_COHORT_SIZE,
            max_features: DEFAULT_MAX_FEATURES,
        }
    }
}

/// `[reconnect]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSection {
    /// First wait after a lost connection, in seconds.
    pub initial_backoff_seconds: f64,
    /// Longest wait between attempts, in seconds.
    pub max_backoff_seconds: f64,
    /// Give up after this long without a connection, in seconds.
    pub give_up_after_seconds: f64,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        Self {
            initial_backoff_seconds: 0.2,
            max_backoff_seconds: 10.0,
            give_up_after_seconds: 600.0,
        }
    }
}

impl ReconnectSection {
    /// First backoff.
    pub fn initial(&self) -> Duration {
        Duration::from_secs_f64(self.initial_backoff_seconds)
    }
    /// Largest backoff.
    pub fn max(&self) -> Duration {
        Duration::from_secs_f64(self.max_backoff_seconds)
    }
    /// Give-up time.
    pub fn give_up(&self) -> Duration {
        Duration::from_secs_f64(self.give_up_after_seconds)
    }
}

impl ParticipantConfig {
    /// Reads, parses and validates a configuration file; relative paths are
    /// resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: ParticipantConfig = tessera_common::config::read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut c.participant.data,
            &mut c.participant.state_dir,
            &mut c.tls.ca,
            &mut c.tls.cert,
            &mut c.tls.key,
        ] {
            tessera_common::config::resolve(base, p);
        }
        if let Some(p) = c.tls.crl.as_mut() {
            tessera_common::config::resolve(base, p);
        }
        if let Some(p) = c.evaluation.data.as_mut() {
            tessera_common::config::resolve(base, p);
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.participant.coordinator;
        if !url.starts_with("https://") {
            return Err(invalid(
                "participant.coordinator",
                format!("`{url}` must be an https:// URL (connections are always mutual TLS)"),
            ));
        }
        if self.server_name().is_empty() {
            return Err(invalid("participant.coordinator", "no host in the URL"));
        }
        let p = &self.privacy;
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return Err(invalid("privacy.delta", "must be in (0, 1)"));
        }
        if let Some(m) = p.max_epsilon
            && !(m.is_finite() && m > 0.0)
        {
            return Err(invalid("privacy.max_epsilon", "must be positive"));
        }
        if let Some(m) = p.min_noise_multiplier
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(invalid(
                "privacy.min_noise_multiplier",
                "must be non-negative",
            ));
        }
        if let Some(cols) = &self.participant.allowed_columns
            && let Some(c) = cols.iter().find(|c| c.trim().is_empty())
        {
            return Err(invalid(
                "participant.allowed_columns",
                format!("empty column name {c:?}"),
            ));
        }
        self.validate_analytics()?;
        let e = &self.evaluation;
        if !(0.0..1.0).contains(&e.fraction) {
            return Err(invalid("evaluation.fraction", "must be in [0, 1)"));
        }
        if e.fraction > 0.0 && e.data.is_some() {
            return Err(invalid(
                "evaluation.data",
                "give either a fraction of the data file or a separate file, not both",
            ));
        }
        if let Some(t) = &self.trainer {
            if t.command.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(invalid("trainer.command", "name the program to run"));
            }
            if !(t.timeout_seconds.is_finite() && t.timeout_seconds > 0.0) {
                return Err(invalid(
                    "trainer.timeout_seconds",
                    "must be a positive number of seconds",
                ));
            }
        }
        let l = &self.limits;
        if l.max_dimension == 0 {
            return Err(invalid("limits.max_dimension", "must be at least 1"));
        }
        if l.max_cohort_size == 0 {
            return Err(invalid("limits.max_cohort_size", "must be at least 1"));
        }
        if l.max_features == 0 {
            return Err(invalid("limits.max_features", "must be at least 1"));
        }
        let r = &self.reconnect;
        for (key, v) in [
            (
                "reconnect.initial_backoff_seconds",
                r.initial_backoff_seconds,
            ),
            ("reconnect.max_backoff_seconds", r.max_backoff_seconds),
            ("reconnect.give_up_after_seconds", r.give_up_after_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, "must be a positive number of seconds"));
            }
        }
        Ok(())
    }

    /// The name the coordinator's certificate must carry.
    pub fn server_name(&self) -> String {
        if let Some(n) = &self.participant.server_name {
            return n.clone();
        }
        let rest = self.participant.coordinator.trim_start_matches("https://");
        let host = rest.split('/').next().unwrap_or("");
        if let Some(stripped) = host.strip_prefix('[') {
            return stripped.split(']').next().unwrap_or("").to_owned();
        }
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_owned()
    }

    /// The part of the configuration the site machine decides by.
    pub fn site_policy(&self) -> crate::site::SitePolicy {
        crate::site::SitePolicy {
            privacy: self.privacy.clone(),
            limits: self.limits.clone(),
            allowed_columns: self.participant.allowed_columns.clone(),
            evaluation: self.evaluation.clone(),
            analytics: self.analytics.clone(),
        }
    }

    /// Path of the site ledger.
    pub fn ledger_path(&self) -> PathBuf {
        self.participant.state_dir.join("site-ledger.sqlite")
    }

    /// The record of the signed-key rounds this site took part in
    /// ([`crate::rounds::RoundLog`]).
    pub fn rounds_path(&self) -> PathBuf {
        self.participant.state_dir.join("rounds.sqlite")
    }

    /// The trainer this site trains with: the external command of `[trainer]`
    /// (its files under `state_dir/trainer`), else the built-in models.
    pub fn trainer(&self) -> Box<dyn crate::trainer::Trainer> {
        match &self.trainer {
            Some(t) => Box::new(crate::external::ExternalTrainer::new(
                t.command.clone(),
                Duration::from_secs_f64(t.timeout_seconds),
                self.participant.state_dir.join("trainer"),
            )),
            None => Box::new(crate::trainer::BuiltinTrainer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configurations_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for site in ["cleveland", "hungary", "switzerland", "va-long-beach"] {
            let c = ParticipantConfig::load(&dir.join(format!("participant-{site}.toml"))).unwrap();
            assert_eq!(c.server_name(), "127.0.0.1");
            assert!(
                c.participant.data.exists(),
                "{}",
                c.participant.data.display()
            );
            assert_eq!(c.privacy.max_epsilon, Some(10.0));
            assert_eq!(
                c.participant.allowed_columns.as_ref().map(Vec::len),
                Some(14)
            );
            assert_eq!(c.privacy.require_secure_aggregation, None);
            assert_eq!(c.limits.max_dimension, DEFAULT_MAX_DIMENSION);
        }
    }

    #[test]
    fn analytics_policies_are_checked() {
        let tls = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let c = load_text(&format!(
            "{tls}[analytics]\nallowed_columns = [\"age\"]\nmin_noise_multiplier = {{ count = 2.0 }}\n"
        ))
        .unwrap();
        assert_eq!(c.analytics.allowed_columns, ["age"]);
        assert_eq!(
            c.analytics.min_noise_multiplier[&tessera_analytics::KindName::Count],
            2.0
        );
        assert!(load_text(tls).unwrap().analytics.is_default());
        for (text, key) in [
            ("allowed_columns = [\" \"]", "analytics.allowed_columns"),
            (
                "min_noise_multiplier = { mean = -1.0 }",
                "analytics.min_noise_multiplier",
            ),
            (
                "min_noise_multiplier = { mean = nan }",
                "analytics.min_noise_multiplier",
            ),
            ("max_rows = 0", "analytics.max_rows"),
        ] {
            let e = load_text(&format!("{tls}[analytics]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        // Never past what the site lets any task or query see.
        let e = load_text(&format!(
            "allowed_columns = [\"age\"]\n{tls}[analytics]\nallowed_columns = [\"age\", \"cp\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("\"cp\""), "{e}");
    }

    fn load_text(text: &str) -> Result<ParticipantConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            format!(
                "[participant]\ncoordinator = \"https://x:1\"\ndata = \"d.csv\"\nstate_dir = \"s\"\n{text}"
            ),
        )
        .unwrap();
        ParticipantConfig::load(&path)
    }

    #[test]
    fn trust_keys_have_their_defaults_and_are_checked() {
        let tls = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let c = load_text(tls).unwrap();
        assert_eq!(c.participant.allowed_columns, None);
        assert_eq!(c.privacy.require_secure_aggregation, None);
        assert!(c.privacy.secure_aggregation_required(true));
        assert!(!c.privacy.secure_aggregation_required(false));
        assert_eq!(c.limits.max_dimension, 50_000_000);
        assert_eq!(c.limits.max_cohort_size, 10_000);
        assert_eq!(c.limits.max_features, 10_000);

        let c = load_text(&format!(
            "allowed_columns = [\"a\", \"b\"]\n{tls}[privacy]\nrequire_secure_aggregation = false\n\
             [limits]\nmax_dimension = 7\nmax_cohort_size = 5\nmax_features = 3\n"
        ))
        .unwrap();
        assert_eq!(c.participant.allowed_columns.unwrap(), ["a", "b"]);
        assert!(!c.privacy.secure_aggregation_required(true));
        assert_eq!(
            (
                c.limits.max_dimension,
                c.limits.max_cohort_size,
                c.limits.max_features
            ),
            (7, 5, 3)
        );
        let c = load_text(&format!(
            "{tls}[privacy]\nrequire_secure_aggregation = true\n"
        ))
        .unwrap();
        assert!(c.privacy.secure_aggregation_required(false));

        for (text, key) in [
            (
                format!("allowed_columns = [\" \"]\n{tls}"),
                "participant.allowed_columns",
            ),
            (
                format!("{tls}[limits]\nmax_dimension = 0\n"),
                "limits.max_dimension",
            ),
            (
                format!("{tls}[limits]\nmax_cohort_size = 0\n"),
                "limits.max_cohort_size",
            ),
            (
                format!("{tls}[limits]\nmax_features = 0\n"),
                "limits.max_features",
            ),
        ] {
            let err = load_text(&text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{err}"
            );
        }
        assert!(matches!(
            load_text(&format!("{tls}[limits]\nmax_rows = 3\n")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn plain_http_is_refused_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[participant]\ncoordinator = \"http://x:1\"\ndata = \"d.csv\"\nstate_dir = \"s\"\n\
             [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        )
        .unwrap();
        let err = ParticipantConfig::load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "participant.coordinator",
                    ..
                }
            ),
            "{err}"
        );
    }
}
