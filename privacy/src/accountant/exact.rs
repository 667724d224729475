//! Exact accounting of full-participation Gaussian rounds.
//!
//! T rounds of the Gaussian mechanism with multipliers sigma_i (q = 1)
//! compose to *one* Gaussian mechanism with mu = sqrt(sum 1/sigma_i^2)
//! (Dong, Roth & Su 2019, Cor. 3.3: Gaussian differential privacy is closed
//! under composition). Its privacy profile is the analytic Gaussian
//! mechanism's (Balle & Wang 2018, Thm. 8):
//!
//! `delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)`,
//!
//! evaluated here without cancellation (see `special::gauss_hockey`) and
//! inverted by bisection to full double precision, rounding epsilon up.

use super::AccountantKind;
use crate::Error;
use crate::event::Grouped;
use crate::special::gauss_hockey;

/// Mu of the single Gaussian mechanism the ledger composes to, or
/// `NotApplicable` when the ledger holds sampled rounds or other mechanisms.
pub(crate) fn ledger_mu(g: &Grouped) -> Result<f64, Error> {
    if !g.sampled.is_empty() {
        return Err(Error::NotApplicable {
            accountant: AccountantKind::Exact,
            reason: "exact composition needs full participation (sampling rate 1) in every round"
                .into(),
        });
    }
    if !g.only_gaussian() {
        return Err(Error::NotApplicable {
            accountant: AccountantKind::Exact,
            reason: "the ledger holds discrete-Laplace or exponential-mechanism events".into(),
        });
    }
    Ok(g.gaussian_mu2().sqrt())
}

/// Delta at `eps` of the Gaussian mechanism with parameter `mu`
/// (sensitivity / noise std). `mu = 0` releases nothing: delta 0.
pub fn gaussian_delta(mu: f64, eps: f64) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    let r = eps / mu;
    gauss_hockey(r - mu / 2.0, r + mu / 2.0).min(1.0)
}

/// Smallest epsilon >= 0 with `gaussian_delta(mu, eps) <= delta`, rounded up.
pub fn gaussian_epsilon(mu: f64, delta: f64) -> f64 {
    if mu <= 0.0 || gaussian_delta(mu, 0.0) <= delta {
        return 0.0;
    }
    if !mu.is_finite() {
        return f64::INFINITY;
    }
    // eps = mu^2/2 + mu * z puts the first term at Q(z); start near it.
    let z = (2.0 * (1.0 / delta).ln()).sqrt();
    let mut hi = (mu * mu / 2.0 + mu * z).max(1e-3);
    while gaussian_delta(mu, hi) > delta {
        hi *= 2.0;
        if !hi.is_finite() {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if gaussian_delta(mu, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}
