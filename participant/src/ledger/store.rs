//! What the site machine needs of its ledger, behind a small trait: the
//! contributions so far and a durable record of a new one; ε follows from
//! them. SQLite ([`super::SiteLedger`]) in production, memory
//! ([`super::MemoryLedger`]) in tests and in-process simulations.

use std::path::Path;

use tessera_privacy::{AccountantKind, PrivacyEvent};

use super::{Contribution, LedgerError, site_events};

/// A site's ledger of contributions.
pub trait LedgerStore: Send {
    /// Where it lives (a file, or a name for a memory ledger), for messages.
    fn location(&self) -> &Path;

    /// Every contribution, in the order recorded.
    fn contributions(&self) -> Result<Vec<Contribution>, LedgerError>;

    /// Records a contribution durably before returning; a second
    /// contribution to the same round of the same federation is refused
    /// with [`LedgerError::DuplicateRound`].
    fn record(&mut self, c: &Contribution) -> Result<(), LedgerError>;

    /// The privacy events the site counts: one Gaussian event with sampling
    /// rate 1 per contribution, with the announced noise multiplier and the
    /// round's slack (contributions with the same noise multiplier are
    /// merged into one event with a count and the sum of their slacks,
    /// which composes identically).
    fn events(&self) -> Result<Vec<PrivacyEvent>, LedgerError> {
        Ok(site_events(&self.contributions()?))
    }

    /// The site's ε at `delta` (best accountant); 0 with no contributions.
    fn epsilon(&self, delta: f64) -> Result<f64, LedgerError> {
        epsilon_of(self.location(), &self.events()?, delta)
    }

    /// The site's ε at `delta` if it also contributed `next`: what the site
    /// checks before it touches its data for a round.
    fn epsilon_if(&self, next: &Contribution, delta: f64) -> Result<f64, LedgerError> {
        let mut contributions = self.contributions()?;
        contributions.push(next.clone());
        epsilon_of(self.location(), &site_events(&contributions), delta)
    }
}

/// ε of `events` at `delta`, best accountant; 0 for none.
pub(crate) fn epsilon_of(
    location: &Path,
    events: &[PrivacyEvent],
    delta: f64,
) -> Result<f64, LedgerError> {
    if events.is_empty() {
        return Ok(0.0);
    }
    tessera_privacy::epsilon(events, delta, AccountantKind::Best)
        .map(|r| r.epsilon)
        .map_err(|source| LedgerError::Privacy {
            path: location.to_path_buf(),
            source,
        })
}
