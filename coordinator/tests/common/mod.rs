//! Rows and records the store tests write.

use tessera_coordinator::store::NewLedgerRow;
use tessera_model::RoundKind;
use tessera_privacy::PrivacyEvent;

/// The ledger row of a Gaussian training round `round` at noise multiplier
/// `sigma` and sampling rate `q`.
pub(crate) fn gaussian_row(round: u64, sigma: f64, q: f64) -> NewLedgerRow {
    NewLedgerRow {
        round,
        training_round: u32::try_from(round).ok(),
        kind: RoundKind::Training,
        event: PrivacyEvent::gaussian(sigma, q, 1),
        cohort_size: 10,
        clip_norm: 0.25,
        noise_multiplier: sigma,
        sampling_rate: q,
        recorded_at_ms: 1_795_000_000_000 + round as i64,
        not_private: false,
    }
}
