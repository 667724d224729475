//! Calibration: the smallest noise multiplier that keeps a budget.
//!
//! Epsilon falls monotonically as sigma grows, so calibration is a root
//! search on sigma. The search keeps a bracket `[lo, hi]` with
//! `eps(hi) <= target < eps(lo)` and returns `hi`: the answer always meets
//! the target, i.e. it is rounded toward *more* noise. Exact and RDP are
//! solved to a relative width of 1e-12, PLD (costlier, and discretised
//! anyway) to 1e-7.

use crate::Error;
use crate::accountant::{AccountantKind, epsilon_grouped, exact, pld, rdp};
use crate::event::{Grouped, PrivacyEvent};
use crate::loss::{Delta, Epsilon, SamplingRate};

/// Largest noise multiplier the search will consider.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e7;
/// Smallest noise multiplier the search will consider.
pub const MIN_NOISE_MULTIPLIER: f64 = 1e-4;

/// Smallest sigma such that `rounds` Gaussian rounds at Poisson rate
/// `sampling_rate` are (`target_epsilon`, `delta`)-DP under accountant
/// `kind`, rounded toward more noise.
///
/// For `Best`, the smallest sigma that any applicable accountant certifies.
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    rounds: u32,
    kind: AccountantKind,
) -> Result<f64, Error> {
    let target = Epsilon::positive(target_epsilon)?.get();
    let delta = Delta::new(delta)?.get();
    let q = SamplingRate::new(sampling_rate)?.get();
    if rounds == 0 {
        return Err(Error::ZeroRounds);
    }
    match kind {
        AccountantKind::Exact => {
            if q < 1.0 {
                return Err(Error::NotApplicable {
                    accountant: kind,
                    reason: "exact composition needs sampling rate 1".into(),
                });
            }
            calibrate_exact(target, delta, rounds)
        }
        AccountantKind::Rdp | AccountantKind::Pld => search(
            |s| eps_at(s, q, rounds, delta, kind),
            target,
            None,
            tolerance(kind),
        ),
        AccountantKind::Best => {
            if q == 1.0 {
                return calibrate_exact(target, delta, rounds);
            }
            let s_rdp = search(
                |s| eps_at(s, q, rounds, delta, AccountantKind::Rdp),
                target,
                None,
                tolerance(kind),
            )?;
            let f = |s| eps_at(s, q, rounds, delta, AccountantKind::Pld);
            if f(s_rdp) > target {
                return Ok(s_rdp);
            }
            let s_pld = search(f, target, Some(s_rdp), tolerance(AccountantKind::Pld))?;
            Ok(s_pld.min(s_rdp))
        }
    }
}

fn tolerance(kind: AccountantKind) -> f64 {
    if kind == AccountantKind::Pld {
        1e-7
    } else {
        1e-12
    }
}

/// Epsilon at sigma, with "does not apply" read as "too little noise".
fn eps_at(sigma: f64, q: f64, rounds: u32, delta: f64, kind: AccountantKind) -> f64 {
    let ev = [PrivacyEvent::gaussian(sigma, q, rounds)];
    let Ok(g) = Grouped::new(&ev) else {
        return f64::INFINITY;
    };
    let r = match kind {
        AccountantKind::Rdp => rdp::RdpCurve::from_grouped(&g).epsilon(delta).map(|x| x.0),
        AccountantKind::Pld => pld::ComposedPld::from_grouped(&g, pld::PldOptions::default())
            .and_then(|p| p.epsilon(delta)),
        _ => epsilon_grouped(&g, delta, kind).map(|r| r.epsilon),
    };
    r.unwrap_or(f64::INFINITY)
}

fn calibrate_exact(target: f64, delta: f64, rounds: u32) -> Result<f64, Error> {
    // eps grows with mu = sqrt(T)/sigma: find the largest mu meeting the
    // target (rounded down), then sigma = sqrt(T)/mu (rounded up).
    let t = f64::from(rounds).sqrt();
    let (mut lo, mut hi) = (0.0, 1.0);
    while exact::gaussian_epsilon(hi, delta) <= target {
        hi *= 2.0;
        if hi > 1e12 {
            return Err(Error::CalibrationFailed("target met with no noise".into()));
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if exact::gaussian_epsilon(mid, delta) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo <= 0.0 {
        return Err(Error::CalibrationFailed(
            "target epsilon too small for this delta".into(),
        ));
    }
    let mut sigma = t / lo;
    // Guard the division's rounding: step up until the target is met, as
    // the accountant itself computes it.
    while eps_at(sigma, 1.0, rounds, delta, AccountantKind::Exact) > target {
        sigma = sigma.next_up();
    }
    Ok(sigma)
}

/// Root search on a decreasing `f` for `f(sigma) <= target`, returning the
/// upper end of the final bracket. `hi_hint` is a sigma known to meet the
/// target, if any.
fn search(
    f: impl Fn(f64) -> f64,
    target: f64,
    hi_hint: Option<f64>,
    tol: f64,
) -> Result<f64, Error> {
    let (mut lo, mut hi);
    match hi_hint {
        Some(h) => {
            hi = h;
            lo = h * 0.9;
            while f(lo) <= target {
                hi = lo;
                lo *= 0.7;
                if lo < MIN_NOISE_MULTIPLIER {
                    return Ok(hi);
                }
            }
        }
        None => {
            lo = 1.0;
            hi = 1.0;
            if f(1.0) <= target {
                while f(lo) <= target {
                    hi = lo;
                    lo /= 2.0;
                    if lo < MIN_NOISE_MULTIPLIER {
                        return Ok(hi);
                    }
                }
            } else {
                while f(hi) > target {
                    lo = hi;
                    hi *= 2.0;
                    if hi > MAX_NOISE_MULTIPLIER {
                        return Err(Error::CalibrationFailed(format!(
                            "no noise multiplier up to {MAX_NOISE_MULTIPLIER} meets the target"
                        )));
                    }
                }
            }
        }
    }
    // Illinois-style regula falsi on (ln sigma, ln eps - ln target), with a
    // bisection step whenever the bracket does not shrink fast enough.
    let g = |s: f64| {
        let e = f(s);
        if e.is_finite() && e > 0.0 {
            e.ln() - target.ln()
        } else {
            f64::INFINITY
        }
    };
    let (mut a, mut b) = (lo.ln(), hi.ln());
    let (mut ga, mut gb) = (g(lo), g(hi));
    let mut side = 0i8;
    for _ in 0..200 {
        if (b - a) <= tol {
            break;
        }
        let width = b - a;
        let x = if ga.is_finite() && gb.is_finite() && ga != gb {
            let x = b - gb * (b - a) / (gb - ga);
            if x > a && x < b { x } else { 0.5 * (a + b) }
        } else {
            0.5 * (a + b)
        };
        let gx = g(x.exp());
        if gx > 0.0 {
            a = x;
            ga = gx;
            if side == -1 {
                gb *= 0.5;
            }
            side = -1;
        } else {
            b = x;
            gb = gx;
            if side == 1 {
                ga *= 0.5;
            }
            side = 1;
        }
        if b - a > 0.5 * width {
            // Slow progress: force a bisection.
            let m = 0.5 * (a + b);
            let gm = g(m.exp());
            if gm > 0.0 {
                a = m;
                ga = gm;
            } else {
                b = m;
                gb = gm;
            }
            side = 0;
        }
    }
    let mut s = b.exp();
    while f(s) > target {
        s = s.next_up();
    }
    Ok(s)
}

/// The effective noise multiplier of one adaptive-clipping round: the update
/// sum noised with std σ_Δ·C (sensitivity C) and the sum of centred clipping
/// bits noised with std σ_b (sensitivity 1/2) together are one Gaussian
/// mechanism with multiplier σ_eff = (σ_Δ^-2 + (2σ_b)^-2)^-1/2 (Andrew,
/// Chien, Thakkar, McMahan, "Differentially Private Learning with Adaptive
/// Clipping", NeurIPS 2021, Theorem 1). Both releases use the same cohort,
/// so sampled rounds compose exactly as one sampled Gaussian at σ_eff.
pub fn effective_noise_multiplier(update_sigma: f64, count_sigma: f64) -> f64 {
    let inv = update_sigma.powi(-2) + (2.0 * count_sigma).powi(-2);
    inv.powf(-0.5)
}
