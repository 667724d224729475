//! # tessera-privacy
//!
//! Everything private in Tessera goes through this crate: clipping of
//! updates, exact noise in the integer domain, and the accountants that turn
//! the privacy ledger into an (epsilon, delta) guarantee.
//!
//! It is a pure library: no I/O, no clock, no threads, no global RNG. Noise
//! is drawn only from the [`rand_core::CryptoRng`] the caller passes in.
//!
//! ## The privacy contract
//!
//! * Adjacency is add/remove one participant (participant-level DP, as in
//!   DP-FedAvg, McMahan et al. 2018). The update of each participant is
//!   clipped to L2 norm C ([`clip_l2`]), so the sensitivity of the sum is C.
//! * Each round adds noise of standard deviation sigma * C to the sum
//!   (sigma is the *noise multiplier*), drawn from the exact discrete
//!   Gaussian in fixed-point units ([`sample_discrete_gaussian`],
//!   [`add_discrete_gaussian_mod`]); the ledger records a
//!   [`PrivacyEvent::Gaussian`] with the round's sigma and sampling rate q.
//! * Counts and histograms go through the discrete Laplace mechanism,
//!   private choices through the exponential mechanism; both are ledger
//!   events too.
//! * The accountants ([`epsilon`], [`delta`], [`calibrate_noise_multiplier`])
//!   only ever *over*-state the privacy spent.
//!
//! ## Example
//!
//! ```
//! use tessera_privacy::{epsilon, AccountantKind, PrivacyEvent};
//! let ledger = vec![PrivacyEvent::gaussian(1.0, 0.01, 10_000)];
//! let r = epsilon(&ledger, 1e-5, AccountantKind::Best).unwrap();
//! assert!(r.epsilon > 6.0 && r.epsilon < 6.3);
//! ```

pub mod accountant;
pub mod calibrate;
pub mod clip;
pub mod discretisation;
pub mod distributed;
mod error;
pub mod event;
pub mod loss;
pub mod noise;
pub mod sampling;
mod special;

pub use accountant::{AccountantKind, Candidate, EpsilonReport, delta, epsilon};
pub use calibrate::calibrate_noise_multiplier;
pub use clip::{ClipOutcome, clip_l2, clip_l2_f32};
pub use discretisation::{MIN_NOISE_UNITS, discretisation_tv, release_tv};
pub use error::Error;
pub use event::PrivacyEvent;
pub use noise::{
    DiscreteGaussian, add_discrete_gaussian_mod, exponential_mechanism, report_noisy_max,
    sample_discrete_gaussian, sample_discrete_laplace, sample_gaussian_f64,
};
