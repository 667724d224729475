//! The crate's one error type.

use crate::accountant::AccountantKind;

/// Everything that can go wrong in `tessera-privacy`.
///
/// Every variant names the bad input or the reason a computation does not
/// apply; no function of this crate panics on bad input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A noise multiplier (sigma) that is not finite and > 0.
    #[error("noise multiplier must be finite and > 0, got {0}")]
    InvalidNoiseMultiplier(f64),
    /// A sampling rate outside (0, 1].
    #[error("sampling rate must be in (0, 1], got {0}")]
    InvalidSamplingRate(f64),
    /// A delta outside (0, 1).
    #[error("delta must be in (0, 1), got {0}")]
    InvalidDelta(f64),
    /// An epsilon that is negative, NaN or infinite (or not > 0 where a
    /// mechanism parameter or a calibration target is expected).
    #[error("epsilon must be finite and >= 0 (> 0 for a mechanism or a target), got {0}")]
    InvalidEpsilon(f64),
    /// A number of rounds equal to zero where at least one is required.
    #[error("the number of rounds must be at least 1")]
    ZeroRounds,
    /// The chosen accountant cannot bound this ledger or query.
    #[error("the {accountant} accountant does not apply: {reason}")]
    NotApplicable {
        /// The accountant that was asked.
        accountant: AccountantKind,
        /// Why it does not apply.
        reason: String,
    },
    /// A value in an update or a score list was NaN or infinite.
    #[error("input contains a NaN or infinite value")]
    NonFinite,
    /// A clipping norm that is not finite and > 0.
    #[error("clipping norm must be finite and > 0, got {0}")]
    InvalidClipNorm(f64),
    /// A noise scale or standard deviation that is not finite and > 0, or too large.
    #[error("noise scale must be finite, > 0 and at most {max}, got {value}")]
    InvalidScale {
        /// The rejected value.
        value: f64,
        /// The largest accepted value.
        max: f64,
    },
    /// A sensitivity that is not finite and > 0.
    #[error("sensitivity must be finite and > 0, got {0}")]
    InvalidSensitivity(f64),
    /// A private selection among zero candidates.
    #[error("there are no candidates to choose from")]
    NoCandidates,
    /// A modulus size outside 1..=64 bits.
    #[error("modulus must have 1..=64 bits, got {0}")]
    InvalidModulusBits(u32),
    /// A total-variation slack outside [0, 1), or one so large that no
    /// epsilon reaches the requested delta.
    #[error("total-variation slack must be in [0, 1) and below delta, got {0}")]
    InvalidTvSlack(f64),
    /// A distributed-noise event with no summand, or more honest summands
    /// than summands.
    #[error(
        "distributed noise needs 1 <= summands and honest <= summands, got {summands} and {honest}"
    )]
    InvalidSummands {
        /// Summands of the release.
        summands: u32,
        /// Summands unknown to the coordinator.
        honest: u32,
    },
    /// A Poisson cohort question with invalid parameters (population 0,
    /// minimum 0, or a rate outside (0, 1]).
    #[error("invalid sampled-cohort parameters: {0}")]
    InvalidCohort(String),
    /// Calibration could not reach the target (for instance a target epsilon
    /// so small that no noise multiplier up to the search limit meets it).
    #[error("calibration failed: {0}")]
    CalibrationFailed(String),
}
