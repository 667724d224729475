//! Cohort selection: everyone available, or Poisson sampling with rate q.
//!
//! Under Poisson sampling every available participant is selected
//! independently with probability q, drawn from the machine's CSPRNG; this is
//! the sampling scheme the accountant assumes for amplification, so the
//! cohort is used as drawn, never topped up or trimmed.

use rand::RngExt;
use rand::rand_core::CryptoRng;

/// Selects the cohort from `eligible` (sorted names); `q = 1` selects all.
/// The result is sorted, and cohort index i + 1 belongs to element i.
pub fn select<R: CryptoRng + ?Sized>(eligible: &[String], q: f64, rng: &mut R) -> Vec<String> {
    let mut cohort: Vec<String> = if q >= 1.0 {
        eligible.to_vec()
    } else {
        eligible
            .iter()
            .filter(|_| rng.random_bool(q))
            .cloned()
            .collect()
    };
    cohort.sort();
    cohort
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn full_participation_takes_everyone() {
        let names: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        assert_eq!(select(&names, 1.0, &mut rng), vec!["a", "b", "c"]);
    }

    #[test]
    fn poisson_sampling_rate_is_close_to_q() {
        let names: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut total = 0;
        for _ in 0..20 {
            total += select(&names, 0.1, &mut rng).len();
        }
        let rate = total as f64 / 20_000.0;
        assert!((rate - 0.1).abs() < 0.01, "{rate}");
    }
}
