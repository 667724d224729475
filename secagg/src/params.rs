//! Round parameters and the choice of neighbour degree k and threshold t.
//!
//! # How k and t are chosen (Bell et al. 2020, §3 and §5, adapted)
//!
//! Let n be the cohort size, δ the fraction of participants that may drop out
//! over the whole round, γ the fraction that may be corrupt and collude with
//! the coordinator, σ the security parameter and η the correctness parameter
//! (failure probabilities 2^−σ and 2^−η). Write D = ⌈δn⌉, C = ⌈γn⌉ and
//! R = D + C. In the randomly relabelled Harary graph ([`crate::neighbours_of`]) a
//! participant's k neighbours are a uniformly random k-subset of the other
//! n − 1, so the number of dropped (corrupt) neighbours is hypergeometric,
//! Hyp(n − 1, D, k) (resp. Hyp(n − 1, C, k)). We require, with union bounds
//! over the n participants:
//!
//! 1. **share security** — 2t > k, and n · P[Hyp(n − 1, C, k) ≥ 2t − k] ≤ 2^−σ.
//!    Then the coordinator plus corrupt neighbours can never hold t shares of
//!    both secrets of an honest participant, even if it lied about who dropped
//!    out (honest neighbours reveal at most one kind each: h_b + h_s ≤ k − c,
//!    and h_b + c ≥ t, h_s + c ≥ t would need 2t ≤ k + c);
//! 2. **graph connectivity** (k < n − 1 only) — removing the R dropped or
//!    corrupt participants must leave the honest survivors connected, or the
//!    coordinator would learn sums of separate components. Removal can only
//!    disconnect the ring if k/2 consecutive ring positions are all removed, so
//!    we require n · Π_{i<k/2} (R − i)/(n − i) ≤ 2^−σ;
//! 3. **correctness** — every participant keeps at least t surviving
//!    neighbours: n · P[Hyp(n − 1, D, k) > k − t] ≤ 2^−η.
//!
//! [`RoundParams::recommended`] takes the smallest even k (then the complete
//! graph k = n − 1) for which the smallest t meeting (1) also meets (2) and
//! (3), with the defaults σ = 40, η = 20, γ = 0.05 ([`SecurityTargets`]). If
//! even the complete graph fails (e.g. δ too close to ½) it is an error.
//! Examples: n = 100, δ = 0 → k = 12, t = 9; n = 100, δ = 0.1 → k = 28, t = 17.
//! [`RoundParams::assess`] evaluates the same bounds for explicit parameters.

use crate::Error;
use crate::prg::MAX_DIM;

/// A participant's index in the cohort: 1-based, also its Shamir x-coordinate.
pub type ParticipantIndex = u32;

/// Everything both sides must agree on for one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundParams {
    /// Round number; bound into every key and message.
    pub round: u64,
    /// The cohort: sorted, unique, nonzero participant indices.
    pub participants: Vec<u32>,
    /// Shamir threshold t (shares needed to reconstruct a secret).
    pub threshold: usize,
    /// Neighbour-graph degree k (even, or n − 1 for the complete graph).
    pub neighbours: usize,
    /// Public seed of the neighbour graph.
    pub graph_seed: [u8; 32],
    /// Vector dimension.
    pub dim: usize,
    /// Arithmetic is modulo 2^modulus_bits, 1..=64.
    pub modulus_bits: u32,
    /// Whether advertised keys are signed (opt-in active security).
    pub signed_keys: bool,
}

/// Security and correctness targets for parameter selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecurityTargets {
    /// σ: the probability that the graph or the shares leak more than the
    /// sum is at most 2^−σ.
    pub security_bits: u32,
    /// η: the probability that a round within the dropout tolerance fails is
    /// at most 2^−η.
    pub correctness_bits: u32,
    /// γ: fraction of participants assumed corrupt and colluding with the
    /// coordinator.
    pub corrupt_fraction: f64,
}

impl Default for SecurityTargets {
    fn default() -> Self {
        SecurityTargets {
            security_bits: 40,
            correctness_bits: 20,
            corrupt_fraction: 0.05,
        }
    }
}

/// What [`RoundParams::assess`] computed (log2 of the union-bounded failure
/// probabilities; −∞ when impossible).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// log2 of the bound on leaking both shares of someone (condition 1).
    pub share_leak_log2: f64,
    /// log2 of the bound on the honest survivors being disconnected (condition 2).
    pub disconnect_log2: f64,
    /// log2 of the bound on someone lacking t surviving neighbours (condition 3).
    pub correctness_failure_log2: f64,
}

impl RoundParams {
    /// Number of participants.
    pub fn n(&self) -> usize {
        self.participants.len()
    }

    /// Structural validation: sorted unique nonzero cohort of at least 3,
    /// 2 ≤ k ≤ n − 1 with k even unless complete, k/2 < t ≤ k,
    /// 1 ≤ dim ≤ [`MAX_DIM`], 1 ≤ modulus_bits ≤ 64.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: String| Err(Error::InvalidParams(s));
        let n = self.participants.len();
        if n < 3 {
            return bad(format!("need at least 3 participants, got {n}"));
        }
        if self.participants.first() == Some(&0) {
            return bad("participant indices are 1-based".into());
        }
        if self.participants.windows(2).any(|w| w.first() >= w.get(1)) {
            return bad("participants must be sorted and unique".into());
        }
        let k = self.neighbours;
        if k < 2 || k > n - 1 || (k % 2 == 1 && k != n - 1) {
            return bad(format!(
                "neighbour degree {k} must be even in 2..={} or exactly {}",
                n - 1,
                n - 1
            ));
        }
        let t = self.threshold;
        if 2 * t <= k || t > k {
            return bad(format!(
                "threshold {t} must satisfy k/2 < t <= k for k = {k}"
            ));
        }
        if self.dim == 0 || self.dim > MAX_DIM {
            return bad(format!("dimension {} must be in 1..={MAX_DIM}", self.dim));
        }
        if !(1..=64).contains(&self.modulus_bits) {
            return bad(format!(
                "modulus_bits {} must be in 1..=64",
                self.modulus_bits
            ));
        }
        Ok(())
    }

    /// Chooses k and t for `participants` (see the module docs) with the
    /// default [`SecurityTargets`]; the complete graph when n is small.
    pub fn recommended(
        round: u64,
        participants: Vec<u32>,
        dim: usize,
        modulus_bits: u32,
        dropout_rate: f64,
        graph_seed: [u8; 32],
    ) -> Result<RoundParams, Error> {
        Self::recommended_with(
            round,
            participants,
            dim,
            modulus_bits,
            dropout_rate,
            graph_seed,
            SecurityTargets::default(),
        )
    }

    /// [`RoundParams::recommended`] with explicit targets.
    pub fn recommended_with(
        round: u64,
        participants: Vec<u32>,
        dim: usize,
        modulus_bits: u32,
        dropout_rate: f64,
        graph_seed: [u8; 32],
        targets: SecurityTargets,
    ) -> Result<RoundParams, Error> {
        let n = participants.len();
        let mut p = RoundParams {
            round,
            participants,
            threshold: 2,
            neighbours: 2,
            graph_seed,
            dim,
            modulus_bits,
            signed_keys: false,
        };
        if n < 3 {
            return Err(Error::InvalidParams(format!(
                "need at least 3 participants, got {n}"
            )));
        }
        let table = LnFact::new(n);
        let candidates = (2..n - 1).step_by(2).chain(std::iter::once(n - 1));
        for k in candidates {
            p.neighbours = k;
            for t in k / 2 + 1..=k {
                p.threshold = t;
                let Ok(a) = p.assess_with(dropout_rate, targets, &table) else {
                    continue;
                };
                if a.share_leak_log2 > -f64::from(targets.security_bits) {
                    continue; // a larger t may fix the share condition
                }
                // Smallest secure t found; larger t only hurts correctness.
                if a.disconnect_log2 <= -f64::from(targets.security_bits)
                    && a.correctness_failure_log2 <= -f64::from(targets.correctness_bits)
                {
                    p.validate()?;
                    return Ok(p);
                }
                break;
            }
        }
        Err(Error::InvalidParams(format!(
            "no neighbour degree and threshold tolerate dropout rate {dropout_rate} with {n} participants \
             at security 2^-{} / correctness 2^-{} with corrupt fraction {}",
            targets.security_bits, targets.correctness_bits, targets.corrupt_fraction
        )))
    }

    /// Evaluates the three conditions of the module docs for these parameters;
    /// an error if the parameters are invalid or a target is not met.
    pub fn assess(&self, dropout_rate: f64, targets: SecurityTargets) -> Result<Assessment, Error> {
        self.validate()?;
        let a = self.assess_with(dropout_rate, targets, &LnFact::new(self.n()))?;
        if a.share_leak_log2 > -f64::from(targets.security_bits) {
            return Err(Error::InvalidParams(format!(
                "threshold {} too low for degree {}: share leak bound 2^{:.1}",
                self.threshold, self.neighbours, a.share_leak_log2
            )));
        }
        if a.disconnect_log2 > -f64::from(targets.security_bits) {
            return Err(Error::InvalidParams(format!(
                "degree {} too low: disconnection bound 2^{:.1}",
                self.neighbours, a.disconnect_log2
            )));
        }
        if a.correctness_failure_log2 > -f64::from(targets.correctness_bits) {
            return Err(Error::InvalidParams(format!(
                "threshold {} too high for dropout rate {dropout_rate}: failure bound 2^{:.1}",
                self.threshold, a.correctness_failure_log2
            )));
        }
        Ok(a)
    }

    fn assess_with(
        &self,
        dropout_rate: f64,
        targets: SecurityTargets,
        table: &LnFact,
    ) -> Result<Assessment, Error> {
        if !(0.0..1.0).contains(&dropout_rate) {
            return Err(Error::InvalidParams(format!(
                "dropout rate {dropout_rate} must be in [0, 1)"
            )));
        }
        if !(0.0..1.0).contains(&targets.corrupt_fraction) {
            return Err(Error::InvalidParams(
                "corrupt fraction must be in [0, 1)".into(),
            ));
        }
        let n = self.n();
        let k = self.neighbours;
        let t = self.threshold;
        let frac = |f: f64| ((f * n as f64).ceil() as usize).min(n);
        let d = frac(dropout_rate);
        let c = frac(targets.corrupt_fraction);
        let log2n = (n as f64).log2();
        let others = n - 1;
        // (1) P[corrupt neighbours >= 2t - k]
        let leak = hyper_tail_ge(table, others, c.min(others), k, 2 * t - k);
        // (3) P[dropped neighbours > k - t]
        let fail = hyper_tail_ge(table, others, d.min(others), k, k - t + 1);
        // (2) P[k/2 given ring positions all removed]
        let disconnect = if k >= n - 1 {
            0.0
        } else {
            let r = (d + c).min(n);
            let h = k / 2;
            if r < h {
                0.0
            } else {
                (0..h).map(|i| (r - i) as f64 / (n - i) as f64).product()
            }
        };
        let lg = |p: f64| {
            if p <= 0.0 {
                f64::NEG_INFINITY
            } else {
                log2n + p.log2()
            }
        };
        Ok(Assessment {
            share_leak_log2: lg(leak),
            disconnect_log2: lg(disconnect),
            correctness_failure_log2: lg(fail),
        })
    }
}

/// ln(i!) for i = 0..=n.
struct LnFact(Vec<f64>);

impl LnFact {
    fn new(n: usize) -> Self {
        let mut v = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        v.push(0.0);
        for i in 1..=n {
            acc += (i as f64).ln();
            v.push(acc);
        }
        LnFact(v)
    }

    fn ln_choose(&self, a: usize, b: usize) -> f64 {
        let at = |i: usize| self.0.get(i).copied().unwrap_or(f64::NAN);
        at(a) - at(b) - at(a.wrapping_sub(b))
    }
}

/// P[X >= at] for X ~ Hyp(population, successes, draws).
fn hyper_tail_ge(
    table: &LnFact,
    population: usize,
    successes: usize,
    draws: usize,
    at: usize,
) -> f64 {
    let lo = at.max(draws.saturating_sub(population - successes));
    let hi = successes.min(draws);
    if lo > hi {
        return 0.0;
    }
    let denom = table.ln_choose(population, draws);
    (lo..=hi)
        .map(|x| {
            (table.ln_choose(successes, x) + table.ln_choose(population - successes, draws - x)
                - denom)
                .exp()
        })
        .sum::<f64>()
        .min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(n: u32) -> Vec<u32> {
        (1..=n).collect()
    }

    #[test]
    fn hypergeometric_tail_matches_direct_count() {
        let t = LnFact::new(20);
        // Hyp(10, 3, 4): P[X >= 2] = (C(3,2)C(7,2) + C(3,3)C(7,1)) / C(10,4) = (63 + 7)/210
        let p = hyper_tail_ge(&t, 10, 3, 4, 2);
        assert!((p - 70.0 / 210.0).abs() < 1e-12, "{p}");
        assert_eq!(hyper_tail_ge(&t, 10, 3, 4, 4), 0.0);
        assert!((hyper_tail_ge(&t, 10, 3, 4, 0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn recommended_examples_from_the_docs() {
        let p = RoundParams::recommended(1, cohort(100), 10, 32, 0.0, [0; 32]).unwrap();
        assert_eq!((p.neighbours, p.threshold), (12, 9));
        let p = RoundParams::recommended(1, cohort(100), 10, 32, 0.1, [0; 32]).unwrap();
        assert_eq!((p.neighbours, p.threshold), (28, 17));
        // Small cohorts get the complete graph.
        let p = RoundParams::recommended(1, cohort(5), 10, 32, 0.2, [0; 32]).unwrap();
        assert_eq!(p.neighbours, 4);
        // Half the cohort dropping cannot be tolerated.
        assert!(matches!(
            RoundParams::recommended(1, cohort(100), 10, 32, 0.5, [0; 32]),
            Err(Error::InvalidParams(_))
        ));
        assert!(RoundParams::recommended(1, cohort(2), 10, 32, 0.0, [0; 32]).is_err());
        assert!(RoundParams::recommended(1, cohort(10), 10, 32, f64::NAN, [0; 32]).is_err());
    }

    #[test]
    fn recommended_always_validates_and_assesses() {
        for n in [3u32, 4, 7, 16, 50, 200, 1000] {
            for rate in [0.0, 0.05, 0.1, 0.2, 0.3] {
                if let Ok(p) = RoundParams::recommended(0, cohort(n), 1, 32, rate, [1; 32]) {
                    p.validate().unwrap();
                    p.assess(rate, SecurityTargets::default()).unwrap();
                    if rate <= 0.1 {
                        assert!(
                            p.neighbours <= 100,
                            "n {n} rate {rate}: k = {}",
                            p.neighbours
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn validate_rejects_malformed() {
        let good = RoundParams::recommended(1, cohort(10), 10, 32, 0.1, [0; 32]).unwrap();
        good.validate().unwrap();
        type Mutation = Box<dyn Fn(&mut RoundParams)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|p| p.participants = vec![1, 2]),
            Box::new(|p| p.participants[0] = 0),
            Box::new(|p| p.participants.swap(0, 1)),
            Box::new(|p| p.participants[1] = p.participants[0]),
            Box::new(|p| p.neighbours = 3),
            Box::new(|p| p.neighbours = 10),
            Box::new(|p| p.neighbours = 0),
            Box::new(|p| p.threshold = p.neighbours / 2),
            Box::new(|p| p.threshold = p.neighbours + 1),
            Box::new(|p| p.dim = 0),
            Box::new(|p| p.modulus_bits = 0),
            Box::new(|p| p.modulus_bits = 65),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut p = good.clone();
            f(&mut p);
            assert!(
                matches!(p.validate(), Err(Error::InvalidParams(_))),
                "case {i}"
            );
        }
        // Too sparse for the security target.
        let mut sparse = RoundParams::recommended(1, cohort(100), 10, 32, 0.1, [0; 32]).unwrap();
        sparse.neighbours = 4;
        sparse.threshold = 3;
        assert!(sparse.assess(0.1, SecurityTargets::default()).is_err());
    }
}
