//! Exact noise samplers, driven only by the cryptographically secure RNG
//! the caller passes in.
//!
//! # The discrete Gaussian
//!
//! Updates are summed as fixed-point integers, so the noise is added there,
//! from the discrete Gaussian `N_Z(0, sigma^2)` (`P(x) ∝ exp(-x^2 / 2 sigma^2)`
//! on the integers). The sampler is Algorithm 3 of Canonne, Kamath &
//! Steinke 2020 ("The Discrete Gaussian for Differential Privacy"): discrete
//! Laplace proposals (their Algorithm 2) accepted with probability
//! `exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))`, every Bernoulli trial drawn by
//! their Algorithm 1 from uniform integers. All arithmetic is on integers
//! (`u128` and a 256-bit square), so no floating-point step can shape the
//! output; Mironov 2012 showed how textbook floating-point noise leaks.
//!
//! sigma is given as an `f64`. The sampler turns it into an exact rational
//! `sigma_eff^2 = t M / D` with `D` a power of two and `M` rounded *up*, so
//! `sigma_eff >= sigma` (relative excess below 1e-18 at `sigma >= 1`): the
//! rounding only ever adds noise.
//!
//! # Accounting it as a continuous Gaussian
//!
//! The accountants compute the privacy of the *continuous* Gaussian. The
//! discrete one is not a post-processing of it, and its privacy profile is
//! not the same: the gap in δ shrinks only polynomially in 1/sigma (about
//! 3.6e-5 relative at sigma = 100 integer units), so "the difference is
//! exponentially small" would be wrong. Tessera bounds it explicitly instead
//! ([`crate::discretisation`]): rounding `x + N(0, sigma^2)` to the nearest
//! integer *is* a post-processing of the continuous Gaussian mechanism, and
//! the discrete Gaussian is within total variation
//! `tau(sigma) <= phi(1) / (12 sigma^2) + c3 / (48 sigma^3) + e^{-2 pi^2 sigma^2}`
//! of that rounded Gaussian, per coordinate. Each release records the sum of
//! these bounds over its coordinates as its `tv_slack`, and the accountants
//! add `(1 + e^eps)` times the ledger's total to δ. The coordinator also
//! refuses a release whose noise is below [`crate::discretisation::MIN_NOISE_UNITS`]
//! integer units, where the bound would stop being negligible. Full-
//! participation RDP needs no slack at all (the discrete Gaussian has the
//! same Rényi divergences as the continuous one, Canonne, Kamath & Steinke
//! 2020, Prop. 5), but one slack for every accountant keeps the rule simple.
//!
//! # The other samplers
//!
//! * [`sample_discrete_laplace`]: Canonne, Kamath & Steinke 2020,
//!   Algorithm 2, exact for the (dyadic) scale given.
//! * [`exponential_mechanism`] / [`report_noisy_max`]: rejection sampling
//!   (uniform candidate, accepted with an exact `Bernoulli(exp(-gamma))`),
//!   which draws exactly from `P(i) ∝ exp(eps (u_i - max u) / (2 Δ))` for the
//!   weights as computed in `f64` — see the function for the residual.
//! * [`sample_gaussian_f64`]: continuous Gaussian for simulations only.

use rand_core::{CryptoRng, Rng};

use crate::Error;

/// Largest sigma (and Laplace scale) the exact samplers accept: 2^40.
pub const MAX_SIGMA: f64 = 1_099_511_627_776.0;
/// Smallest sigma the exact sampler works with; smaller positive values are
/// rounded up to it (more noise).
pub const MIN_SIGMA: f64 = 1.0 / 1024.0;

// ---------------------------------------------------------------- bits

/// Uniform integer in `[0, n)`, `n >= 1`, exactly (Lemire's method with rejection).
fn below_u64<R: Rng + ?Sized>(n: u64, rng: &mut R) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// Uniform integer in `[0, n)`, `n >= 1`, exactly (masked rejection).
fn below_u128<R: Rng + ?Sized>(n: u128, rng: &mut R) -> u128 {
    if n <= u128::from(u64::MAX) {
        return u128::from(below_u64(n as u64, rng));
    }
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let x = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if x < n {
            return x;
        }
    }
}

/// Bernoulli(exp(-num/den)) for `0 <= num <= den`, `den > 0`
/// (Canonne, Kamath & Steinke 2020, Algorithm 1, case gamma in [0, 1]).
fn bernoulli_exp_small<R: Rng + ?Sized>(num: u128, den: u128, rng: &mut R) -> bool {
    let mut k: u64 = 1;
    loop {
        // Bernoulli(num / (den k)) = [uniform(k) == 0] and [uniform(den) < num].
        let a = below_u128(den, rng) < num && below_u64(k, rng) == 0;
        if !a {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// Bernoulli(exp(-1)).
fn bernoulli_exp_one<R: Rng + ?Sized>(rng: &mut R) -> bool {
    bernoulli_exp_small(1, 1, rng)
}

/// An unsigned 256-bit integer as (high, low) halves, just enough for
/// exact squares of `u128` values.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct U256(u128, u128);

impl U256 {
    fn square(a: u128) -> Self {
        let (ah, al) = (a >> 64, a & u128::from(u64::MAX));
        let ll = al * al;
        let lh = ah * al; // counted twice
        let hh = ah * ah;
        let (lo1, c1) = ll.overflowing_add(lh << 64);
        let (lo, c2) = lo1.overflowing_add(lh << 64);
        let hi = hh + (lh >> 64) * 2 + u128::from(c1) + u128::from(c2);
        U256(hi, lo)
    }

    fn sub_u128(self, b: u128) -> Self {
        let (lo, borrow) = self.1.overflowing_sub(b);
        U256(self.0 - u128::from(borrow), lo)
    }
}

/// Bernoulli(exp(-num/den)) for any `num >= 0`, `den > 0`
/// (Algorithm 1: one Bernoulli(exp(-1)) per whole unit of gamma, stopping at
/// the first failure, then the fractional part).
fn bernoulli_exp<R: Rng + ?Sized>(num: U256, den: u128, rng: &mut R) -> bool {
    let mut num = num;
    let den256 = U256(0, den);
    while num > den256 {
        if !bernoulli_exp_one(rng) {
            return false;
        }
        num = num.sub_u128(den);
    }
    bernoulli_exp_small(num.1, den, rng)
}

/// Geometric number of successes of Bernoulli(exp(-1)) before the first failure.
fn geometric_exp_one<R: Rng + ?Sized>(rng: &mut R) -> u64 {
    let mut v = 0u64;
    while bernoulli_exp_one(rng) {
        v += 1;
    }
    v
}

/// Discrete Laplace with scale `t / s` (Algorithm 2), `t >= 1`, `s = 2^shift`.
/// Returns `None` only if an intermediate would overflow (probability below
/// `exp(-2^22)` for the parameters accepted here); callers then redraw.
fn discrete_laplace_ts<R: Rng + ?Sized>(t: u64, shift: u32, rng: &mut R) -> Option<i64> {
    loop {
        let u = below_u64(t, rng);
        if !bernoulli_exp_small(u128::from(u), u128::from(t), rng) {
            continue;
        }
        let v = geometric_exp_one(rng);
        let x = v.checked_mul(t)?.checked_add(u)?;
        let y = x >> shift;
        let negative = rng.next_u32() & 1 == 1;
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).ok()?;
        return Some(if negative { -y } else { y });
    }
}

// ---------------------------------------------------------------- discrete Gaussian

/// A discrete Gaussian sampler for one sigma, with its exact rational
/// parameters precomputed. Construct once, sample many times.
#[derive(Clone, Debug)]
pub struct DiscreteGaussian {
    /// Proposal scale t = floor(sigma) + 1.
    t: u64,
    /// sigma_eff^2 / t = m / d exactly.
    m: u128,
    /// Power-of-two denominator.
    d: u128,
    /// 2 t m d, the denominator of the acceptance exponent.
    den: u128,
    sigma: f64,
}

impl DiscreteGaussian {
    /// Validates `sigma` (finite, > 0, at most [`MAX_SIGMA`]; values below
    /// [`MIN_SIGMA`] are raised to it) and precomputes the sampler.
    pub fn new(sigma: f64) -> Result<Self, Error> {
        if !(sigma.is_finite() && sigma > 0.0 && sigma <= MAX_SIGMA) {
            return Err(Error::InvalidScale {
                value: sigma,
                max: MAX_SIGMA,
            });
        }
        let sigma = sigma.max(MIN_SIGMA);
        let t = sigma.floor() as u64 + 1;
        let b = 64 - t.leading_zeros(); // t < 2^b
        let k = (63 - b).min(62);
        let d = 1u128 << k;
        // sigma = mant * 2^exp exactly.
        let (mant, exp) = decompose(sigma);
        let m2 = u128::from(mant) * u128::from(mant);
        let s = 2 * exp + k as i32;
        // m = ceil(sigma^2 d / t) = ceil(m2 * 2^s / t).
        let m = if s >= 0 {
            let num = m2 << s;
            num.div_ceil(u128::from(t))
        } else {
            let den = u128::from(t) << (-s) as u32;
            m2.div_ceil(den)
        };
        let den = 2 * u128::from(t) * m * d;
        Ok(Self {
            t,
            m,
            d,
            den,
            sigma,
        })
    }

    /// The sigma this sampler was built for (the sampled one is at most a
    /// relative 1e-18 larger, see the module docs).
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Draws one sample.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            let Some(y) = discrete_laplace_ts(self.t, 0, rng) else {
                continue;
            };
            // gamma = (|y| d - m)^2 / (2 t m d)
            let a = u128::from(y.unsigned_abs()) * self.d;
            let diff = a.abs_diff(self.m);
            if bernoulli_exp(U256::square(diff), self.den, rng) {
                return y;
            }
        }
    }

    /// Adds one sample to each value, wrapping modulo `2^modulus_bits`
    /// (`modulus_bits` in 1..=64).
    pub fn add_mod<R: CryptoRng + ?Sized>(
        &self,
        values: &mut [u64],
        modulus_bits: u32,
        rng: &mut R,
    ) -> Result<(), Error> {
        let mask = mask(modulus_bits)?;
        for v in values {
            *v = v.wrapping_add(self.sample(rng) as u64) & mask;
        }
        Ok(())
    }
}

fn mask(bits: u32) -> Result<u64, Error> {
    match bits {
        64 => Ok(u64::MAX),
        1..=63 => Ok((1u64 << bits) - 1),
        _ => Err(Error::InvalidModulusBits(bits)),
    }
}

/// `x = mant * 2^exp` exactly, for finite `x > 0`.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i32;
    let f = bits & ((1u64 << 52) - 1);
    if e == 0 {
        (f, -1074)
    } else {
        (f | (1u64 << 52), e - 1075)
    }
}

/// One exact sample of the discrete Gaussian `N_Z(0, sigma^2)`.
///
/// Fast for large sigma (the cost does not grow with sigma); for many
/// samples of one sigma, [`DiscreteGaussian`] skips the setup.
///
/// Bad input never panics and never silently removes noise: `sigma == 0`
/// returns 0 (no noise was asked for); a NaN, negative, infinite or too
/// large (> [`MAX_SIGMA`]) sigma *fails private* and returns a uniformly
/// random `i64`. Validate with [`DiscreteGaussian::new`] to get an error
/// instead.
pub fn sample_discrete_gaussian<R: CryptoRng + ?Sized>(sigma: f64, rng: &mut R) -> i64 {
    if sigma == 0.0 {
        return 0;
    }
    match DiscreteGaussian::new(sigma) {
        Ok(g) => g.sample(rng),
        Err(_) => rng.next_u64() as i64,
    }
}

/// Adds exact discrete Gaussian noise to each value, wrapping modulo
/// `2^modulus_bits` (for `modulus_bits` in 1..=64; values above 64 are
/// treated as 64, and 0 as 1).
///
/// Bad sigma fails private, as in [`sample_discrete_gaussian`]: every value
/// is replaced by a uniformly random residue (infinite noise); sigma 0 adds
/// nothing. [`DiscreteGaussian::add_mod`] is the checked variant.
pub fn add_discrete_gaussian_mod<R: CryptoRng + ?Sized>(
    values: &mut [u64],
    modulus_bits: u32,
    sigma: f64,
    rng: &mut R,
) {
    let mask = mask(modulus_bits.clamp(1, 64)).unwrap_or(u64::MAX);
    if sigma == 0.0 {
        values.iter_mut().for_each(|v| *v &= mask);
        return;
    }
    match DiscreteGaussian::new(sigma) {
        Ok(g) => {
            for v in values {
                *v = v.wrapping_add(g.sample(rng) as u64) & mask;
            }
        }
        Err(_) => values.iter_mut().for_each(|v| *v = rng.next_u64() & mask),
    }
}

// ---------------------------------------------------------------- discrete Laplace

/// A discrete Laplace sampler, `P(x) ∝ exp(-|x| / scale)` on the integers.
#[derive(Clone, Copy, Debug)]
pub struct DiscreteLaplace {
    t: u64,
    shift: u32,
}

impl DiscreteLaplace {
    /// Validates `scale` (finite, > 0, at most [`MAX_SIGMA`]; values below
    /// 2^-10 are raised to 2^-10) and precomputes its exact form
    /// `scale = t / 2^shift`.
    pub fn new(scale: f64) -> Result<Self, Error> {
        if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SIGMA) {
            return Err(Error::InvalidScale {
                value: scale,
                max: MAX_SIGMA,
            });
        }
        let (mut mant, mut exp) = decompose(scale.max(MIN_SIGMA));
        while mant & 1 == 0 && exp < 0 {
            mant >>= 1;
            exp += 1;
        }
        if exp >= 0 {
            Ok(Self {
                t: mant << exp,
                shift: 0,
            })
        } else {
            Ok(Self {
                t: mant,
                shift: (-exp) as u32,
            })
        }
    }

    /// The scale that gives pure `epsilon`-DP for an integer query of L1
    /// sensitivity `sensitivity`: `sensitivity / epsilon`, rounded up.
    pub fn scale_for(epsilon: f64, sensitivity: f64) -> Result<f64, Error> {
        crate::loss::Epsilon::positive(epsilon)?;
        if !(sensitivity.is_finite() && sensitivity > 0.0) {
            return Err(Error::InvalidSensitivity(sensitivity));
        }
        let s = sensitivity / epsilon;
        Ok(if s * epsilon < sensitivity {
            s.next_up()
        } else {
            s
        })
    }

    /// Draws one sample.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            if let Some(y) = discrete_laplace_ts(self.t, self.shift, rng) {
                return y;
            }
        }
    }
}

/// One exact sample of the discrete Laplace distribution with the given
/// scale (`P(x) ∝ exp(-|x| / scale)`); `scale = Δ / epsilon` gives pure
/// epsilon-DP for an integer query of L1 sensitivity Δ.
///
/// Bad input fails private like [`sample_discrete_gaussian`]: `scale == 0`
/// returns 0, an invalid scale returns a uniformly random `i64`.
/// [`DiscreteLaplace::new`] is the checked variant.
pub fn sample_discrete_laplace<R: CryptoRng + ?Sized>(scale: f64, rng: &mut R) -> i64 {
    if scale == 0.0 {
        return 0;
    }
    match DiscreteLaplace::new(scale) {
        Ok(l) => l.sample(rng),
        Err(_) => rng.next_u64() as i64,
    }
}

// ---------------------------------------------------------------- exponential mechanism

/// Private selection by the exponential mechanism (McSherry & Talwar 2007):
/// returns index `i` with probability `∝ exp(epsilon * scores[i] / (2 * sensitivity))`,
/// which is epsilon-DP when each score changes by at most `sensitivity`
/// between neighbouring datasets.
///
/// Sampling is by rejection: a uniform candidate `i` is kept with
/// probability `exp(-gamma_i)`, `gamma_i = epsilon (max - scores[i]) / (2 sensitivity)`,
/// by an exact Bernoulli trial on `gamma_i` rounded *up* to a multiple of
/// 2^-60. The output is exactly distributed for those weights; the residual
/// is the `f64` rounding in computing `gamma_i` (relative 2^-52) and the
/// 2^-60 grid, which perturb each log-weight by far less than any epsilon
/// of interest. Candidates with `gamma_i >= 2^66` (weight below
/// `exp(-7e19)`) are never chosen.
///
/// Errors: no candidates, a non-finite score, epsilon or sensitivity not
/// finite and > 0.
pub fn exponential_mechanism<R: CryptoRng + ?Sized>(
    scores: &[f64],
    epsilon: f64,
    sensitivity: f64,
    rng: &mut R,
) -> Result<usize, Error> {
    crate::loss::Epsilon::positive(epsilon)?;
    if !(sensitivity.is_finite() && sensitivity > 0.0) {
        return Err(Error::InvalidSensitivity(sensitivity));
    }
    if scores.is_empty() {
        return Err(Error::NoCandidates);
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::NonFinite);
    }
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let scale = epsilon / (2.0 * sensitivity);
    const GRID: f64 = 1_152_921_504_606_846_976.0; // 2^60
    let nums: Vec<Option<u128>> = scores
        .iter()
        .map(|&s| {
            let g = ((max - s) * scale * GRID).ceil();
            if g.is_finite() && g < 2f64.powi(126) {
                Some(g as u128)
            } else {
                None
            }
        })
        .collect();
    if nums.iter().all(Option::is_none) {
        // Cannot happen (the maximum has gamma 0), kept for robustness.
        return Err(Error::NonFinite);
    }
    let n = scores.len() as u64;
    loop {
        let i = below_u64(n, rng) as usize;
        if let Some(num) = nums[i]
            && bernoulli_exp(U256(0, num), 1u128 << 60, rng)
        {
            return Ok(i);
        }
    }
}

/// Report-noisy-max form of the exponential mechanism: the index of the
/// largest `scores[i] + Gumbel(2 sensitivity / epsilon)` noise. That
/// distribution is *identical* to [`exponential_mechanism`]'s (the Gumbel-max
/// identity), so this draws from it exactly through the same sampler.
pub fn report_noisy_max<R: CryptoRng + ?Sized>(
    scores: &[f64],
    epsilon: f64,
    sensitivity: f64,
    rng: &mut R,
) -> Result<usize, Error> {
    exponential_mechanism(scores, epsilon, sensitivity, rng)
}

// ---------------------------------------------------------------- continuous

/// A continuous Gaussian sample with standard deviation `sigma`
/// (Box–Muller on 53-bit uniforms), **for comparison in simulations only**:
/// floating-point noise is not a safe DP mechanism (Mironov 2012). Returns
/// 0 for a sigma that is not finite and > 0.
pub fn sample_gaussian_f64<R: Rng + ?Sized>(sigma: f64, rng: &mut R) -> f64 {
    if !(sigma.is_finite() && sigma > 0.0) {
        return 0.0;
    }
    let unit = |r: &mut R| ((r.next_u64() >> 11) as f64 + 1.0) * (1.0 / 9_007_199_254_740_992.0);
    let u1 = unit(rng); // (0, 1]
    let u2 = unit(rng);
    sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u256_square_matches_schoolbook() {
        for a in [
            0u128,
            1,
            u128::from(u64::MAX),
            1u128 << 64,
            (1u128 << 100) + 12345,
            u128::MAX >> 1,
        ] {
            let s = U256::square(a);
            // check s = a^2 via (a^2) mod 2^128 and high part by floats
            assert_eq!(s.1, a.wrapping_mul(a));
            let approx = (a as f64) * (a as f64) / 2f64.powi(128);
            assert!((s.0 as f64 - approx).abs() <= approx * 1e-12 + 1.0);
        }
    }

    #[test]
    fn decompose_is_exact() {
        for x in [1.0, 0.3, 1e6 + 0.5, 3.75, MIN_SIGMA] {
            let (m, e) = decompose(x);
            assert_eq!(m as f64 * 2f64.powi(e), x);
        }
    }

    #[test]
    fn sigma_rounding_only_adds_noise() {
        for s in [0.7, 1.0, 3.3, 1234.567, 1e6, 1e9] {
            let g = DiscreteGaussian::new(s).unwrap();
            let eff2 = g.t as f64 * g.m as f64 / g.d as f64;
            assert!(eff2 >= s * s * (1.0 - 1e-15), "{s}");
            assert!(eff2 <= s * s * (1.0 + 1e-12), "{s}");
        }
    }

    #[test]
    fn bad_parameters_are_errors_or_fail_private() {
        assert!(DiscreteGaussian::new(f64::NAN).is_err());
        assert!(DiscreteGaussian::new(-1.0).is_err());
        assert!(DiscreteGaussian::new(1e20).is_err());
        assert!(DiscreteLaplace::new(0.0).is_err());
        assert_eq!(mask(0), Err(Error::InvalidModulusBits(0)));
        assert_eq!(mask(65), Err(Error::InvalidModulusBits(65)));
        assert_eq!(mask(64), Ok(u64::MAX));
    }
}
