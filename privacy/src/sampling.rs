//! Poisson-sampled cohorts with a minimum size: what the coordinator's
//! redraws cost in privacy.
//!
//! Under Poisson sampling every available site joins a round's cohort
//! independently with probability q. A cohort that is too small to run
//! (fewer than the minimum, or one that would fall below it after the
//! tolerated dropouts) is discarded and a fresh one drawn, so the rounds
//! that are *released* are not plain Poisson samples: they are conditioned
//! on their size, and whether a draw goes ahead depends, a little, on
//! whether the target site was in it. Accounting the plain rate q would
//! undercount. Tessera accounts what the code does, in two ways at once:
//!
//! * **Total-variation slack.** Couple the coordinator with an ideal one
//!   that never redraws. Until the first draw that is discarded they do the
//!   same thing; for a neighbouring federation without the target site, a
//!   draw is discarded with probability at most
//!   `p_fail = P(Bin(N − 1, q) < m)`, where `N` counts the available sites
//!   and `m` is the least cohort the round needs. Each released round
//!   therefore records `tv_slack = 2·p_fail` (the factor 2 also covers the
//!   zero-out reading of adjacency, where the target's membership shifts the
//!   size test by one: both neighbours' draws are within `p_fail` of the
//!   ideal one); see [`crate::PrivacyEvent`] for how the slack enters δ.
//! * **Inclusion rate.** A released round includes the target with
//!   probability `P(t ∈ S | |S| ≥ m) = q·P(Bin(N−1, q) ≥ m−1) / P(Bin(N, q) ≥ m)
//!   ≤ q / (1 − p_fail)`. The ledger records this upper bound (rounded up)
//!   as the round's sampling rate, so it never counts less than accounting
//!   the released rounds at their true inclusion rate would.
//!
//! With secure aggregation, a round also needs enough of its cohort to
//! survive to the end. The analysis assumes that at most the configured
//! share `f` of a cohort drops out (honest-but-curious sites crash for
//! reasons unrelated to their data); then a cohort of `⌈m / (1 − f)⌉` or
//! more always keeps `m` contributors, and that is the `m` used above
//! ([`min_cohort_with_dropouts`]). The coordinator stops sampled rounds if a
//! round ever loses more than that.
//!
//! Configurations where `p_fail` is not negligible are refused by the
//! coordinator ([`negligible`]): their slack would eat δ, and they are the
//! ones where sampling amplifies little anyway.

use crate::Error;

/// `P(Bin(n, q) < m)`, summed term by term in log space and rounded up.
pub fn binomial_below(n: u64, q: f64, m: u64) -> Result<f64, Error> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(Error::InvalidCohort(format!(
            "rate must be in (0, 1], got {q}"
        )));
    }
    if m == 0 {
        return Ok(0.0);
    }
    if m > n {
        return Ok(1.0);
    }
    if q == 1.0 {
        // Bin(n, 1) = n ≥ m.
        return Ok(0.0);
    }
    let (ln_q, ln_p) = (q.ln(), (-q).ln_1p());
    // ln C(n, k), built up one factor at a time.
    let mut ln_choose = 0.0f64;
    let mut terms = Vec::with_capacity(m as usize);
    for k in 0..m {
        if k > 0 {
            ln_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        terms.push(ln_choose + k as f64 * ln_q + (n - k) as f64 * ln_p);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    let p = (max + sum.ln()).exp();
    // Relative margin for the accumulated rounding of m log terms.
    Ok((p * (1.0 + 1e-9 * (m as f64 + 10.0))).min(1.0))
}

/// The least cohort that keeps `min_contributors` after the tolerated
/// share `dropout_tolerance` (in [0, 1)) drops out: `⌈m / (1 − f)⌉`.
pub fn min_cohort_with_dropouts(min_contributors: u64, dropout_tolerance: f64) -> u64 {
    let f = dropout_tolerance.clamp(0.0, 0.999_999);
    let m = min_contributors as f64 / (1.0 - f);
    // Rounding guard: never below the exact ceiling.
    let mut c = m.ceil() as u64;
    while (c as f64) * (1.0 - f) < min_contributors as f64 {
        c += 1;
    }
    c.max(min_contributors)
}

/// What one released round of a sampled cohort is accounted as.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampledRound {
    /// Sampling rate the ledger records: an upper bound on the probability
    /// that a released round includes a given site (≥ q).
    pub inclusion_rate: f64,
    /// Total-variation slack of the round (`2·p_fail`).
    pub tv_slack: f64,
    /// `p_fail = P(Bin(N − 1, q) < m)`: how likely a draw is to be discarded.
    pub p_fail: f64,
}

/// How a round drawn at rate `q` from `available` sites, going ahead only
/// with at least `min_cohort` of them, is accounted (see the module docs).
pub fn sampled_round(available: u64, q: f64, min_cohort: u64) -> Result<SampledRound, Error> {
    if available == 0 || min_cohort == 0 {
        return Err(Error::InvalidCohort(
            "the population and the minimum cohort must be at least 1".into(),
        ));
    }
    let p_fail = binomial_below(available - 1, q, min_cohort)?;
    if q >= 1.0 {
        return Ok(SampledRound {
            inclusion_rate: 1.0,
            tv_slack: 0.0,
            p_fail,
        });
    }
    if p_fail >= 0.5 {
        return Err(Error::InvalidCohort(format!(
            "a cohort drawn at rate {q} from {available} sites is below {min_cohort} \
             with probability {p_fail:.3}"
        )));
    }
    let rate = round_up_6(q / (1.0 - p_fail)).min(1.0);
    Ok(SampledRound {
        inclusion_rate: rate,
        tv_slack: 2.0 * p_fail,
        p_fail,
    })
}

/// Whether a per-round slack is negligible for a federation of `rounds`
/// rounds at `delta`, when ε may reach `epsilon`: the whole slack's share
/// of δ, `(1 + e^ε)·rounds·slack`, stays below δ / 1000.
pub fn negligible(tv_per_round: f64, rounds: u32, delta: f64, epsilon: f64) -> bool {
    (1.0 + epsilon.exp()) * f64::from(rounds.max(1)) * tv_per_round <= delta / 1000.0
}

/// Rounds up to 6 significant digits (so rounds at the same population share
/// one ledger group), never down.
fn round_up_6(x: f64) -> f64 {
    if x <= 0.0 {
        return x;
    }
    let e = x.log10().floor() as i32 - 5;
    let unit = 10f64.powi(e);
    let r = (x / unit).ceil() * unit;
    if r < x { r + unit } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(Bin(n, q) < m) by exact rational-free summation in f64 for small n.
    fn naive(n: u64, q: f64, m: u64) -> f64 {
        let mut total = 0.0;
        for k in 0..m.min(n + 1) {
            let mut c = 1.0;
            for j in 0..k {
                c = c * (n - j) as f64 / (j + 1) as f64;
            }
            total += c * q.powi(k as i32) * (1.0 - q).powi((n - k) as i32);
        }
        total
    }

    #[test]
    fn binomial_tail_matches_direct_summation() {
        for &(n, q, m) in &[
            (10, 0.3, 3),
            (9, 0.3, 3),
            (99, 0.05, 3),
            (50, 0.5, 20),
            (5, 0.9, 5),
            (30, 0.01, 1),
        ] {
            let a = binomial_below(n, q, m).unwrap();
            let b = naive(n, q, m);
            assert!(a >= b && a <= b * (1.0 + 1e-6), "{n} {q} {m}: {a} vs {b}");
        }
        assert_eq!(binomial_below(3, 0.5, 5).unwrap(), 1.0);
        assert_eq!(binomial_below(3, 0.5, 0).unwrap(), 0.0);
        assert!(binomial_below(3, 0.0, 1).is_err());
        // Large populations do not underflow to zero too early.
        let big = binomial_below(1_000_000, 0.001, 900).unwrap();
        assert!(big > 1e-4 && big < 1e-3, "{big}");
    }

    #[test]
    fn dropouts_raise_the_minimum_cohort() {
        assert_eq!(min_cohort_with_dropouts(3, 0.0), 3);
        assert_eq!(min_cohort_with_dropouts(3, 0.3), 5);
        assert_eq!(min_cohort_with_dropouts(10, 0.5), 20);
        assert_eq!(min_cohort_with_dropouts(7, 0.3), 10);
    }

    #[test]
    fn inclusion_rate_bounds_the_conditioned_one() {
        for &(n, q, m) in &[(10u64, 0.3, 3u64), (100, 0.05, 3), (40, 0.2, 5)] {
            let r = sampled_round(n, q, m).unwrap();
            let exact = q * (1.0 - naive(n - 1, q, m - 1)) / (1.0 - naive(n, q, m));
            assert!(r.inclusion_rate >= exact, "{n} {q} {m}");
            assert!(r.inclusion_rate >= q);
        }
        assert!(sampled_round(5, 0.1, 3).is_err());
        assert_eq!(sampled_round(5, 1.0, 3).unwrap().inclusion_rate, 1.0);
    }

    #[test]
    fn rounding_is_upward_and_coarse() {
        for x in [0.123_456_01, 0.5, 1e-7 + 3e-15, 0.999_999_91] {
            let r = round_up_6(x);
            assert!(r >= x && r - x <= x * 1e-5, "{x} -> {r}");
        }
    }
}
