//! What a private test federation spends, as the accountant counts it: the
//! statistics release followed by training rounds of one noise multiplier,
//! everyone in every round.

use tessera_coordinator::budget;
use tessera_privacy::{AccountantKind, PrivacyEvent};

/// The δ and the statistics release of a private test federation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accounting {
    /// δ of the guarantee.
    pub delta: f64,
    /// Noise multiplier of the statistics release.
    pub statistics_sigma: f64,
}

impl Accounting {
    /// `tessera-sim run`'s defaults: δ = 1e-5, statistics released at σ = 20.
    pub const RUN_DEFAULTS: Self = Self {
        delta: 1e-5,
        statistics_sigma: 20.0,
    };

    /// ε of `events` at δ by the best accountant (0 for no events).
    ///
    /// # Panics
    /// If the accountant refuses the events.
    pub fn epsilon(&self, events: &[PrivacyEvent]) -> f64 {
        if events.is_empty() {
            return 0.0;
        }
        tessera_privacy::epsilon(events, self.delta, AccountantKind::Best)
            .expect("accounting")
            .epsilon
    }

    /// The statistics release followed by `t` training rounds at `sigma`, q = 1.
    pub fn schedule(&self, sigma: f64, t: u32) -> Vec<PrivacyEvent> {
        let mut v = vec![budget::statistics_event(self.statistics_sigma)];
        v.extend((0..t).map(|_| budget::training_event(sigma, 1.0)));
        v
    }
}
