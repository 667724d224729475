//! A site ledger in memory: the same rules as the SQLite one (rows checked,
//! one per round of a federation, append-only), for tests and in-process
//! simulations where nothing must outlive the process.

use std::path::{Path, PathBuf};

use super::{Contribution, LedgerError, LedgerStore};

/// A ledger that lives in memory.
#[derive(Debug, Clone)]
pub struct MemoryLedger {
    name: PathBuf,
    rows: Vec<Contribution>,
}

impl MemoryLedger {
    /// An empty ledger known as `name` in messages.
    pub fn new(name: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            rows: Vec::new(),
        }
    }
}

impl LedgerStore for MemoryLedger {
    fn location(&self) -> &Path {
        &self.name
    }

    fn contributions(&self) -> Result<Vec<Contribution>, LedgerError> {
        Ok(self.rows.clone())
    }

    fn record(&mut self, c: &Contribution) -> Result<(), LedgerError> {
        c.check().map_err(|reason| LedgerError::Invalid {
            path: self.name.clone(),
            reason,
        })?;
        if self
            .rows
            .iter()
            .any(|r| r.federation == c.federation && r.round == c.round)
        {
            return Err(LedgerError::DuplicateRound {
                path: self.name.clone(),
                federation: c.federation.clone(),
                round: c.round,
            });
        }
        self.rows.push(c.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: u64, sigma: f64) -> Contribution {
        Contribution {
            federation: "f".into(),
            round,
            training_round: Some(round as u32),
            kind: "training".into(),
            noise_multiplier: sigma,
            clip_norm: 1.0,
            tv_slack: 0.0,
            not_private: false,
            recorded_at_ms: 0,
            site_noise: None,
            event: None,
        }
    }

    #[test]
    fn same_rules_as_the_sqlite_ledger() {
        let mut m = MemoryLedger::new("memory");
        assert_eq!(m.epsilon(1e-5).unwrap(), 0.0);
        m.record(&row(1, 2.0)).unwrap();
        assert!(matches!(
            m.record(&row(1, 2.0)),
            Err(LedgerError::DuplicateRound { .. })
        ));
        assert!(m.record(&row(2, f64::NAN)).is_err());
        let one = m.epsilon(1e-5).unwrap();
        let two = m.epsilon_if(&row(2, 2.0), 1e-5).unwrap();
        assert!(one > 0.0 && two > one);
        let expected = tessera_privacy::epsilon(
            &[tessera_privacy::PrivacyEvent::gaussian(2.0, 1.0, 2)],
            1e-5,
            tessera_privacy::AccountantKind::Best,
        )
        .unwrap()
        .epsilon;
        assert!((two - expected).abs() < 1e-12);
    }
}
