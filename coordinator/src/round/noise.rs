//! The coordinator's share of a release's privacy noise, behind one trait.
//!
//! Where the noise goes is decided per round (`[privacy] placement`): with
//! central noise the coordinator adds all of it to the unmasked sum; with
//! distributed or local noise the sites add theirs before masking and the
//! coordinator adds only the top-up for sites that dropped (one
//! independent discrete Gaussian of the site's size per missing site, so
//! the release carries exactly the planned sum of discrete Gaussians).
//! Both are [`NoisedPart`]s drawn by one [`NoisePlacement`].

use std::ops::Range;

use rand::rand_core::CryptoRng;

/// One noised piece of a round's vector: its coordinates and the noise's
/// standard deviation in fixed-point units.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisedPart {
    /// Coordinates of the part.
    pub range: Range<usize>,
    /// Standard deviation, in integer units of the encoding.
    pub std_units: f64,
    /// Independent discrete Gaussians of `std_units` to add to each
    /// coordinate (1 for central noise; the number of missing sites for a
    /// top-up, possibly 0).
    pub draws: u32,
}

/// A boxed cryptographically secure RNG.
pub type SecureRng = Box<dyn CryptoRng + Send>;

/// Where and how the noise of a release is added.
pub trait NoisePlacement: Send {
    /// Name for logs (`central`, …).
    fn name(&self) -> &'static str;

    /// Adds the coordinator's share of the noise to an unmasked sum
    /// (integers modulo 2^`modulus_bits`), part by part, in order. A sum
    /// whose noise cannot be added must not be released.
    fn noise_sum(
        &mut self,
        sum: &mut [u64],
        parts: &[NoisedPart],
        modulus_bits: u32,
    ) -> Result<(), tessera_privacy::Error>;
}

/// Central DP: the coordinator adds the whole noise, an exact discrete
/// Gaussian per part, drawn from its CSPRNG, after unmasking.
pub struct CentralNoise {
    rng: SecureRng,
}

impl CentralNoise {
    /// Noise drawn from `rng` (a CSPRNG; seeded only in simulations).
    pub fn new(rng: SecureRng) -> Self {
        Self { rng }
    }
}

impl std::fmt::Debug for CentralNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CentralNoise")
    }
}

impl NoisePlacement for CentralNoise {
    fn name(&self) -> &'static str {
        "central"
    }

    fn noise_sum(
        &mut self,
        sum: &mut [u64],
        parts: &[NoisedPart],
        modulus_bits: u32,
    ) -> Result<(), tessera_privacy::Error> {
        for part in parts {
            let Some(slice) = sum.get_mut(part.range.clone()) else {
                return Err(tessera_privacy::Error::InvalidScale {
                    value: part.range.end as f64,
                    max: 0.0,
                });
            };
            if part.draws == 0 {
                continue;
            }
            let gaussian = tessera_privacy::DiscreteGaussian::new(part.std_units)?;
            for _ in 0..part.draws {
                gaussian.add_mod(slice, modulus_bits, &mut self.rng)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn central_noise_adds_to_each_part_only() {
        let mut n = CentralNoise::new(Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1)));
        let mut sum = vec![0u64; 10];
        let parts = [
            NoisedPart {
                range: 0..4,
                std_units: 1e6,
                draws: 1,
            },
            NoisedPart {
                range: 9..10,
                std_units: 1e6,
                draws: 1,
            },
        ];
        n.noise_sum(&mut sum, &parts, 64).unwrap();
        assert!(sum[..4].iter().all(|&v| v != 0));
        assert!(sum[4..9].iter().all(|&v| v == 0));
        assert_ne!(sum[9], 0);
        let outside = [NoisedPart {
            range: 8..12,
            std_units: 1.0,
            draws: 1,
        }];
        assert!(n.noise_sum(&mut sum, &outside, 64).is_err());
    }

    #[test]
    fn a_top_up_adds_one_draw_per_missing_site() {
        let mut n = CentralNoise::new(Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(2)));
        let part = |draws| NoisedPart {
            range: 0..20_000,
            std_units: 100.0,
            draws,
        };
        let mut none = vec![0u64; 20_000];
        n.noise_sum(&mut none, &[part(0)], 64).unwrap();
        assert!(none.iter().all(|&v| v == 0));
        let mut three = vec![0u64; 20_000];
        n.noise_sum(&mut three, &[part(3)], 64).unwrap();
        let var = three
            .iter()
            .map(|&v| (v as i64 as f64).powi(2))
            .sum::<f64>()
            / 20_000.0;
        // Three independent draws of variance 10⁴ each.
        assert!((var / 3e4 - 1.0).abs() < 0.05, "{var}");
    }
}
