//! `tessera-coordinator check`: validates a configuration, the
//! coordinator's certificates and its store, and prints what `serve` would
//! do — without starting anything or writing anywhere.

use std::path::Path;
use std::time::SystemTime;

use tessera_certs::check::{Finding, Level, Role, check_tls_files};

use crate::config::web::needs_operators;
use crate::settings::Settings;
use crate::store::{Store, status_report};

/// Everything `check` found, in order.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// One line each.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    fn push(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }

    /// Whether nothing was an error.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Error)
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{:>7}  {}", finding.level, finding.message)?;
        }
        let errors = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count();
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .count();
        writeln!(
            f,
            "{}: {errors} error(s), {warnings} warning(s)",
            if errors == 0 { "ready" } else { "NOT READY" }
        )
    }
}

/// Checks the configuration at `config` (and what it names) at time `now`.
pub fn check(config: &Path, now: SystemTime) -> CheckReport {
    let mut r = CheckReport::default();
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            r.push(Level::Error, format!("{}: {e}", config.display()));
            return r;
        }
    };
    r.push(
        Level::Ok,
        format!("{} is a valid configuration", config.display()),
    );
    plan(&mut r, &settings);
    let tls = &settings.config.tls;
    let files = tessera_certs::TlsFiles {
        ca: tls.ca.clone(),
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        crl: tls.crl.clone(),
    };
    r.findings
        .extend(check_tls_files(&files, &Role::Coordinator(Vec::new()), now));
    store(&mut r, &settings);
    r
}

/// What `serve` would do, from the settings.
fn plan(r: &mut CheckReport, s: &Settings) {
    let c = &s.config;
    let f = &c.federation;
    r.push(
        Level::Ok,
        format!(
            "federation {:?}: listens on {} for participants, {} training round(s), at least {} \
             participant(s) per round",
            f.name, f.listen, f.rounds, f.min_participants
        ),
    );
    match &f.allow {
        Some(allow) => r.push(Level::Ok, format!("admits only: {}", allow.join(", "))),
        None => r.push(
            Level::Warning,
            "no allow-list: every certificate of the CA is admitted (set federation.allow)",
        ),
    }
    if c.privacy.enabled {
        let mut line = format!(
            "differential privacy: noise multiplier {:.4}, clip norm {}, sampling rate {}, δ = {:e}",
            s.noise_multiplier, c.training.clip_norm, c.privacy.sampling_rate, c.privacy.delta
        );
        let mut events = vec![crate::budget::statistics_event(
            c.privacy.statistics_noise_multiplier,
        )];
        events.push(tessera_privacy::PrivacyEvent::gaussian(
            s.noise_multiplier,
            c.privacy.sampling_rate,
            f.rounds,
        ));
        if let Ok(eps) =
            crate::budget::ledger_epsilon(&events, c.privacy.delta, c.privacy.accountant)
        {
            line.push_str(&format!("; ε after all planned rounds ≈ {eps:.4}"));
        }
        if let Some(b) = s.max_epsilon {
            line.push_str(&format!("; budget ε = {b}"));
        }
        r.push(Level::Ok, line);
        if s.not_private {
            r.push(
                Level::Warning,
                "the noise is seeded (insecure_noise_seed): this federation is NOT private",
            );
        }
    } else {
        r.push(
            Level::Warning,
            "differential privacy is OFF: released models carry no privacy guarantee",
        );
    }
    if !c.secagg.enabled {
        r.push(
            Level::Warning,
            "secure aggregation is OFF: the coordinator would see each participant's update",
        );
    }
    if let Some(w) = &c.web {
        let how = if needs_operators(&w.listen) {
            format!(
                "HTTPS, client certificates of the federation CA named {}",
                w.operators.join(", ")
            )
        } else {
            "plain HTTP on loopback".to_owned()
        };
        r.push(
            Level::Ok,
            format!("status page and /metrics at {} ({how})", w.listen),
        );
    }
    if let Some(m) = f.metrics_listen {
        r.push(Level::Ok, format!("/metrics alone at {m}"));
    }
}

/// The store: absent (fine), or readable, resumable, with its ε so far.
fn store(r: &mut CheckReport, s: &Settings) {
    if !s.store.exists() {
        r.push(
            Level::Ok,
            format!("no store yet at {}: `serve` creates it", s.store.display()),
        );
        return;
    }
    let store = match Store::open_read_only(&s.store) {
        Ok(store) => store,
        Err(e) => {
            r.push(Level::Error, e.to_string());
            return;
        }
    };
    match status_report(&store, s.config.privacy.delta, s.max_epsilon) {
        Ok(st) => {
            r.push(
                Level::Ok,
                format!(
                    "store {}: {} round(s) released, ε spent {:.4}{}",
                    s.store.display(),
                    st.rounds_released,
                    st.epsilon_spent,
                    if st.coordinator_running {
                        "; a coordinator is running on it now"
                    } else {
                        ""
                    }
                ),
            );
            if let Some(cp) = &st.last_checkpoint {
                match store.verify_checkpoint(cp) {
                    Ok(()) => r.push(
                        Level::Ok,
                        format!(
                            "checkpoint of training round {} verified",
                            cp.training_round
                        ),
                    ),
                    Err(e) => r.push(Level::Error, e.to_string()),
                }
            }
        }
        Err(e) => r.push(Level::Error, e.to_string()),
    }
    if let Err(e) = crate::driver::refuse_non_private_history(&store, s) {
        r.push(Level::Error, tessera_common::report::chain_message(&*e));
    }
}
