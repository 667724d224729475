//! Fixed-point encoding of real vectors into integers modulo 2^k.
//!
//! A value x is scaled by 2^f (f = `scale_bits`), rounded *stochastically*
//! to one of the two neighbouring integers (up with probability equal to the
//! fractional part, so the encoding is unbiased), and stored in two's
//! complement modulo 2^k (k = `modulus_bits`). Sums of encodings modulo 2^k
//! decode to the sum of the values as long as the integer sum stays in
//! [−2^(k−1), 2^(k−1)).
//!
//! **Choosing f and k so n values cannot wrap.** If every participant's
//! contribution to a coordinate is bounded (after clipping, |x_i| ≤ C) then
//! the real sum is bounded by max_abs_sum = n·C and the integer sum by
//! max_abs_sum·2^f + n (each rounding adds less than one unit).
//! [`FixedPoint::for_sum`] picks the largest f with
//! max_abs_sum·2^f ≤ 2^(k−2), keeping a quarter of the range (2^(k−2) units)
//! as headroom for rounding: correct for up to 2^(k−2) summands. Every single
//! encoded value must itself satisfy |x|·2^f + 1 < 2^(k−1) or
//! [`FixedPoint::encode`] refuses it. [`FixedPoint::decode_sum_checked`]
//! verifies that a decoded sum lies within the bound it was sized for, which
//! catches a sum that wrapped because a contribution broke the bound.
//!
//! Rounding error: each coordinate is off by less than 2^−f, so
//! ‖decode(encode(x)) − x‖₂ < √d · 2^−f ([`FixedPoint::max_rounding_norm`]);
//! callers that need ‖encode(x)/2^f‖₂ ≤ C clip to C minus that bound.

use rand_core::CryptoRng;

use crate::Error;
use crate::prg::modulus_mask;

/// Fixed-point format: scale 2^scale_bits, arithmetic modulo 2^modulus_bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    /// f: values are multiplied by 2^f.
    pub scale_bits: u32,
    /// k: integers live modulo 2^k, 2..=64.
    pub modulus_bits: u32,
}

impl FixedPoint {
    /// A format with explicit parameters (modulus_bits in 2..=64, scale_bits < 1024).
    pub fn new(scale_bits: u32, modulus_bits: u32) -> Result<Self, Error> {
        if !(2..=64).contains(&modulus_bits) || scale_bits >= 1024 {
            return Err(Error::InvalidParams(format!(
                "fixed point needs 2 <= modulus_bits <= 64 and scale_bits < 1024, got {scale_bits}, {modulus_bits}"
            )));
        }
        Ok(FixedPoint {
            scale_bits,
            modulus_bits,
        })
    }

    /// The largest scale such that any sum whose real value has absolute
    /// value at most `max_abs_sum` cannot wrap (see the module docs).
    pub fn for_sum(max_abs_sum: f64, modulus_bits: u32) -> Result<Self, Error> {
        if !(max_abs_sum.is_finite() && max_abs_sum > 0.0) {
            return Err(Error::InvalidParams(format!(
                "max_abs_sum must be positive and finite, got {max_abs_sum}"
            )));
        }
        FixedPoint::new(0, modulus_bits)?;
        let headroom = 2f64.powi(modulus_bits as i32 - 2);
        let f = (headroom / max_abs_sum).log2().floor();
        if f < 0.0 {
            return Err(Error::InvalidParams(format!(
                "a sum of up to {max_abs_sum} does not fit in {modulus_bits} bits even without fractional bits"
            )));
        }
        let mut scale = f.min(1023.0) as u32;
        // Guard against log2 rounding: step down until the bound holds.
        while scale > 0 && max_abs_sum * 2f64.powi(scale as i32) > headroom {
            scale -= 1;
        }
        FixedPoint::new(scale, modulus_bits)
    }

    fn scale(&self) -> f64 {
        2f64.powi(self.scale_bits as i32)
    }

    fn limit(&self) -> f64 {
        2f64.powi(self.modulus_bits as i32 - 1)
    }

    /// Encodes `values` with stochastic rounding. NaN, infinities and values
    /// with |x|·2^f + 1 ≥ 2^(k−1) are refused.
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        values: &[f64],
        rng: &mut R,
    ) -> Result<Vec<u64>, Error> {
        let scale = self.scale();
        let limit = self.limit();
        let mask = modulus_mask(self.modulus_bits);
        values
            .iter()
            .map(|&x| {
                let y = x * scale;
                if !y.is_finite() || y.abs() + 1.0 >= limit {
                    // No value or position in the text: callers may pass it on.
                    return Err(Error::InvalidInput(
                        "a value is not finite or too large for this encoding".into(),
                    ));
                }
                let floor = y.floor();
                let frac = y - floor;
                let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                let r = if u < frac { floor + 1.0 } else { floor };
                Ok((r as i64 as u64) & mask)
            })
            .collect()
    }

    /// [`FixedPoint::encode`] for `f32` values.
    pub fn encode_f32<R: CryptoRng + ?Sized>(
        &self,
        values: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, Error> {
        let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        self.encode(&wide, rng)
    }

    /// Decodes one integer modulo 2^k as a signed value.
    fn signed(&self, v: u64) -> i128 {
        let k = self.modulus_bits;
        let v = i128::from(v & modulus_mask(k));
        if v >= 1i128 << (k - 1) {
            v - (1i128 << k)
        } else {
            v
        }
    }

    /// Decodes a sum (two's complement modulo 2^k, divided by 2^f).
    pub fn decode_sum(&self, sum: &[u64]) -> Vec<f64> {
        let inv = 1.0 / self.scale();
        sum.iter().map(|&v| self.signed(v) as f64 * inv).collect()
    }

    /// Decodes a sum of `summands` encodings and checks that every coordinate
    /// is within the bound the format was sized for (|sum| ≤ max_abs_sum plus
    /// rounding); an out-of-range coordinate means a contribution broke the
    /// bound and the sum may have wrapped.
    pub fn decode_sum_checked(
        &self,
        sum: &[u64],
        max_abs_sum: f64,
        summands: usize,
    ) -> Result<Vec<f64>, Error> {
        let bound = max_abs_sum * self.scale() + summands as f64;
        let inv = 1.0 / self.scale();
        sum.iter()
            .enumerate()
            .map(|(i, &v)| {
                if v > modulus_mask(self.modulus_bits) {
                    return Err(Error::InvalidInput(format!(
                        "sum element {i} is not below 2^{}",
                        self.modulus_bits
                    )));
                }
                let s = self.signed(v) as f64;
                if s.abs() > bound {
                    return Err(Error::InvalidInput(format!(
                        "sum element {i} out of range: the sum may have wrapped"
                    )));
                }
                Ok(s * inv)
            })
            .collect()
    }

    /// Bound on ‖decode(encode(x)) − x‖₂ for a vector of `dim` values: √dim · 2^−f.
    pub fn max_rounding_norm(&self, dim: usize) -> f64 {
        (dim as f64).sqrt() / self.scale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn for_sum_picks_largest_safe_scale() {
        let fp = FixedPoint::for_sum(100.0, 32).unwrap();
        // 100 · 2^f <= 2^30  ->  f = 23 (100·2^23 = 838860800 <= 1073741824; 2^24 too big)
        assert_eq!(fp.scale_bits, 23);
        assert!(FixedPoint::for_sum(1e30, 32).is_err());
        assert!(FixedPoint::for_sum(f64::NAN, 32).is_err());
        assert!(FixedPoint::for_sum(-1.0, 32).is_err());
        assert!(FixedPoint::for_sum(1.0, 65).is_err());
        assert_eq!(FixedPoint::for_sum(1.0, 64).unwrap().scale_bits, 62);
    }

    #[test]
    fn rejects_non_finite_and_out_of_range() {
        let fp = FixedPoint::new(10, 16).unwrap();
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        for bad in [f64::NAN, f64::INFINITY, -f64::INFINITY, 40.0, -40.0] {
            assert!(
                matches!(
                    fp.encode(&[0.0, bad], &mut rng),
                    Err(Error::InvalidInput(_))
                ),
                "{bad}"
            );
        }
        assert!(fp.encode(&[31.0, -31.0], &mut rng).is_ok());
        assert!(fp.encode_f32(&[f32::NAN], &mut rng).is_err());
        let fp64 = FixedPoint::new(0, 64).unwrap();
        assert!(fp64.encode(&[9.3e18], &mut rng).is_err());
        assert_eq!(fp64.encode(&[-1.0], &mut rng).unwrap(), vec![u64::MAX]);
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let fp = FixedPoint::new(2, 32).unwrap();
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let x = vec![0.1f64; 20000];
        let enc = fp.encode(&x, &mut rng).unwrap();
        assert!(enc.iter().all(|&v| v == 0 || v == 1));
        let mean = fp.decode_sum(&enc).iter().sum::<f64>() / x.len() as f64;
        assert!((mean - 0.1).abs() < 0.01, "{mean}");
        let neg = fp.encode(&[-0.1; 1000], &mut rng).unwrap();
        assert!(fp.decode_sum(&neg).iter().all(|&v| v == 0.0 || v == -0.25));
    }

    #[test]
    fn checked_decode_detects_wrap() {
        let fp = FixedPoint::for_sum(10.0, 16).unwrap();
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let a = fp.encode(&[9.0], &mut rng).unwrap();
        let b = fp.encode(&[9.0], &mut rng).unwrap();
        let sum = vec![(a[0] + b[0]) & 0xffff];
        assert!(fp.decode_sum_checked(&sum, 10.0, 2).is_err());
        let ok = vec![a[0]];
        assert!((fp.decode_sum_checked(&ok, 10.0, 1).unwrap()[0] - 9.0).abs() < 0.01);
        assert!(fp.decode_sum_checked(&[1 << 16], 10.0, 1).is_err());
    }

    /// The 64-bit sums of statistics and evaluation rounds: a sum past the
    /// planned bound (contributions and noise at its tail), which modulo
    /// 2^64 reads as a large value of the other sign, is refused; one within
    /// is decoded, negative values included.
    #[test]
    fn checked_decode_detects_wrap_of_64_bit_sums() {
        let fp = FixedPoint::for_sum(1000.0, 64).unwrap();
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let bound = 1000.0;
        let within = fp.encode(&[-999.0, 999.0], &mut rng).unwrap();
        let dec = fp.decode_sum_checked(&within, bound, 1).unwrap();
        assert!((dec[0] + 999.0).abs() < 0.01 && (dec[1] - 999.0).abs() < 0.01);
        // Ten sites at 999 each: the true sum is far beyond the bound.
        let mut sum = vec![0u64; 1];
        for _ in 0..10 {
            let v = fp.encode(&[999.0], &mut rng).unwrap();
            sum[0] = sum[0].wrapping_add(v[0]);
        }
        assert!(fp.decode_sum_checked(&sum, bound, 10).is_err());
        // A value half the modulus away (what a wrap produces) is refused.
        assert!(fp.decode_sum_checked(&[1u64 << 63], bound, 1).is_err());
        assert!(fp.decode_sum_checked(&[u64::MAX / 3], bound, 1).is_err());
    }

    proptest! {
        #[test]
        fn sums_decode_within_rounding(
            values in proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, 4), 1..20),
            bits in 8u32..=64,
            seed in any::<u64>(),
        ) {
            let n = values.len();
            let fp = FixedPoint::for_sum(n as f64, bits).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut sum = vec![0u64; 4];
            for v in &values {
                let e = fp.encode(v, &mut rng).unwrap();
                for (s, x) in sum.iter_mut().zip(e) {
                    *s = s.wrapping_add(x) & modulus_mask(bits);
                }
            }
            let dec = fp.decode_sum_checked(&sum, n as f64, n).unwrap();
            for (j, d) in dec.iter().enumerate() {
                let exact: f64 = values.iter().map(|v| v[j]).sum();
                prop_assert!((d - exact).abs() <= n as f64 / 2f64.powi(fp.scale_bits as i32) + 1e-9);
            }
            let one = fp.encode(&values[0], &mut rng).unwrap();
            let err: f64 = fp.decode_sum(&one).iter().zip(&values[0]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            prop_assert!(err <= fp.max_rounding_norm(4));
        }
    }
}
