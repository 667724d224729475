//! Where the privacy noise is added: the placement of a federation's noise
//! behind one trait. Today the coordinator adds all of it to the unmasked
//! sum ([`CentralNoise`]); placements where the sites add it come next.

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
            tessera_privacy::DiscreteGaussian::new(part.std_units)?.add_mod(
                slice,
                modulus_bits,
                &mut self.rng,
            )?;
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
            },
            NoisedPart {
                range: 9..10,
                std_units: 1e6,
            },
        ];
        n.noise_sum(&mut sum, &parts, 64).unwrap();
        assert!(sum[..4].iter().all(|&v| v != 0));
        assert!(sum[4..9].iter().all(|&v| v == 0));
        assert_ne!(sum[9], 0);
        let outside = [NoisedPart {
            range: 8..12,
            std_units: 1.0,
        }];
        assert!(n.noise_sum(&mut sum, &outside, 64).is_err());
    }
}
