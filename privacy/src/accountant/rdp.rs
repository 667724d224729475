//! Rényi-DP accountant.
//!
//! * Poisson-subsampled Gaussian: the moment A_alpha of Mironov, Talwar &
//!   Zhang 2019 ("Rényi Differential Privacy of the Sampled Gaussian
//!   Mechanism"): a binomial sum for integer orders (Sec. 3.2) and the
//!   two-sided erfc series for fractional orders (Sec. 3.3). The series is
//!   summed term by term in absolute value (an upper bound of the signed
//!   sum), stopped when both partial terms decrease and lie 30 nats below the
//!   total, and an order whose series has not stopped after 1000 terms is
//!   left out (treated as infinite) — the same rules as Google's
//!   dp_accounting, so `--accountant rdp` reproduces its figures. Each
//!   order is also capped by the full-participation value `a / (2 sigma^2)`.
//! * Full participation: alpha / (2 sigma^2) per round.
//! * Distributed discrete Gaussian: alpha * rho per release, rho the zCDP
//!   bound of Kairouz, Liu & Steinke 2021, Thm. 2 ([`crate::distributed`]).
//! * Discrete Laplace with parameter epsilon: its exact RDP,
//!   `ln((e^{(a-1)eps} + e^{-a eps}) / (1 + e^{-eps})) / (a-1)`, which is
//!   also the largest RDP any pure eps-DP mechanism can have (Bun & Steinke
//!   2016, Prop. 3.3; it is the RDP of randomised response).
//! * Exponential mechanism: the minimum of that pure-DP curve and the
//!   zCDP bound `a eps^2 / 8` of eps-bounded-range mechanisms (Cesar &
//!   Rogers 2021, Lemma 3.2).
//!
//! Conversion to (eps, delta) uses the improved bound of Canonne, Kamath &
//! Steinke 2020 (Prop. 12) / Asoodeh et al. 2020, with the KL shortcut for
//! tiny divergences, exactly as dp_accounting does.

use super::AccountantKind;
use crate::Error;
use crate::event::Grouped;
use crate::special::{log_abs_binom, log_add, log_erfc};

/// dp_accounting's default orders: 1.1, 1.2, ..., 10.9, then 11..=63, then
/// 128, 256, 512, 1024 (156 orders).
pub fn default_orders() -> Vec<f64> {
    let mut o: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    o.extend((11..64).map(f64::from));
    o.extend([128.0, 256.0, 512.0, 1024.0]);
    o
}

const MAX_FRAC_TERMS: usize = 1000;

/// A composed RDP curve: one value per order (`+inf` where an order was
/// left out).
#[derive(Clone, Debug, PartialEq)]
pub struct RdpCurve {
    /// The orders alpha.
    pub orders: Vec<f64>,
    /// RDP epsilon at each order.
    pub rdp: Vec<f64>,
}

impl RdpCurve {
    /// Composes a ledger on the default orders.
    pub fn from_events(events: &[crate::PrivacyEvent]) -> Result<Self, Error> {
        Ok(Self::from_grouped(&Grouped::new(events)?))
    }

    pub(crate) fn from_grouped(g: &Grouped) -> Self {
        let orders = default_orders();
        let rdp = orders
            .iter()
            .map(|&a| {
                // zCDP ρ is RDP α·ρ at every order (Bun & Steinke 2016).
                let mut r = a / 2.0 * g.full_mu2 + a * g.distributed_rho;
                for &(s, q, c) in &g.sampled {
                    r += c as f64 * sampled_gaussian_rdp(q, s, a);
                }
                for &(e, c) in &g.laplace {
                    r += c as f64 * pure_dp_rdp(e, a);
                }
                for &(e, c) in &g.exponential {
                    r += c as f64 * pure_dp_rdp(e, a).min(a * e * e / 8.0);
                }
                r
            })
            .collect();
        Self { orders, rdp }
    }

    /// Epsilon at `delta` and the order that achieved it.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), Error> {
        let mut best = (f64::INFINITY, f64::NAN);
        for (&a, &r) in self.orders.iter().zip(&self.rdp) {
            let eps = if r.is_nan() {
                f64::INFINITY
            } else if delta * delta + (-r).exp_m1() > 0.0 {
                0.0
            } else if a > 1.01 {
                r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
            } else {
                f64::INFINITY
            };
            if eps < best.0 {
                best = (eps, a);
            }
        }
        if best.0.is_finite() {
            Ok((best.0.max(0.0), best.1))
        } else {
            Err(not_applicable("no RDP order gives a finite epsilon"))
        }
    }

    /// Delta at `eps` and the order that achieved it.
    pub fn delta(&self, eps: f64) -> (f64, f64) {
        let mut best = (f64::INFINITY, self.orders[0]);
        for (&a, &r) in self.orders.iter().zip(&self.rdp) {
            if r.is_nan() || r == f64::INFINITY {
                continue;
            }
            let mut logd = if r <= 0.0 {
                f64::NEG_INFINITY
            } else {
                0.5 * (-(-r).exp()).ln_1p()
            };
            if a > 1.01 {
                let b = (a - 1.0) * (r - eps + (-1.0 / a).ln_1p()) - a.ln();
                logd = logd.min(b);
            }
            if logd < best.0 {
                best = (logd, a);
            }
        }
        (best.0.exp().min(1.0), best.1)
    }
}

fn not_applicable(reason: &str) -> Error {
    Error::NotApplicable {
        accountant: AccountantKind::Rdp,
        reason: reason.into(),
    }
}

/// RDP at order `alpha` of one Poisson-subsampled Gaussian release.
pub fn sampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let full = alpha / (2.0 * sigma * sigma);
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    // Subsampling never hurts (joint convexity of the Rényi divergence), so
    // the full-participation value caps the series bound, which sums terms
    // in absolute value and can exceed it when q is close to 1.
    (log_a / (alpha - 1.0)).min(full)
}

/// RDP at order `alpha` of randomised response / discrete Laplace with pure
/// `eps`, the worst case over pure eps-DP mechanisms.
pub fn pure_dp_rdp(eps: f64, alpha: f64) -> f64 {
    let num = log_add((alpha - 1.0) * eps, -alpha * eps);
    let den = (-eps).exp().ln_1p();
    ((num - den) / (alpha - 1.0)).clamp(0.0, eps)
}

fn log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let n = alpha as u64;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=n {
        let fi = i as f64;
        let s = log_abs_binom(alpha, fi)
            + fi * lq
            + (alpha - fi) * l1q
            + (fi * fi - fi) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let s2 = std::f64::consts::SQRT_2 * sigma;
    let half = 0.5f64.ln();
    for i in 0..MAX_FRAC_TERMS {
        let fi = i as f64;
        let coef = log_abs_binom(alpha, fi);
        let j = alpha - fi;
        let t0 = coef + fi * lq + j * l1q;
        let t1 = coef + j * lq + fi * l1q;
        let e0 = half + log_erfc((fi - z0) / s2);
        let e1 = half + log_erfc((z0 - j) / s2);
        let s0 = t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + e0;
        let s1 = t1 + (j * j - j) / (2.0 * sigma * sigma) + e1;
        a0 = log_add(a0, s0);
        a1 = log_add(a1, s1);
        let total = log_add(a0, a1);
        if s0 < last0 && s1 < last1 && s0.max(s1) < total - 30.0 {
            return total;
        }
        last0 = s0;
        last1 = s1;
    }
    f64::INFINITY
}
