//! Shamir secret sharing of 32-byte secrets over GF(p), p = 2^61 − 1.
//!
//! A 32-byte secret is cut into five chunks (four of 7 bytes, one of 4
//! bytes); each chunk is below 2^56 < p and is shared with its own random
//! polynomial of degree t − 1 (Shamir 1979). A share is therefore five field
//! elements, 40 bytes, evaluated at the holder's participant index (a nonzero
//! `u32`, so always a valid, distinct x-coordinate). Each chunk is perfectly
//! hidden by fewer than t shares, hence so is the secret.
//!
//! Reconstruction interpolates at zero from the first t shares and, when more
//! shares are supplied, checks that every extra share lies on the same
//! polynomial, so inconsistent shares are detected instead of silently
//! producing a wrong secret (when at least t + 1 shares are available).

use rand_core::CryptoRng;

/// The Mersenne prime 2^61 − 1.
pub const P: u64 = (1 << 61) - 1;
/// Number of field elements per share.
pub const CHUNKS: usize = 5;
/// Encoded length of one share in bytes.
pub const SHARE_LEN: usize = CHUNKS * 8;

/// Byte ranges of the five chunks of a secret.
const CHUNK_RANGES: [(usize, usize); CHUNKS] = [(0, 7), (7, 14), (14, 21), (21, 28), (28, 32)];

/// One Shamir share of a 32-byte secret (the x-coordinate is kept apart: it is
/// the holder's participant index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share(pub [u64; CHUNKS]);

/// Why a reconstruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShamirError {
    /// Fewer than t shares.
    TooFew,
    /// Two shares with the same x-coordinate, or x = 0.
    BadCoordinate,
    /// A share contains an element that is not a field element.
    NotInField,
    /// The shares do not lie on one polynomial of degree < t, or the
    /// reconstructed chunks are out of range.
    Inconsistent,
}

impl Share {
    /// Encodes the share as 40 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; SHARE_LEN] {
        let mut out = [0u8; SHARE_LEN];
        for (dst, v) in out.chunks_exact_mut(8).zip(self.0.iter()) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes 40 bytes; every element must be below p.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShamirError> {
        if bytes.len() != SHARE_LEN {
            return Err(ShamirError::NotInField);
        }
        let mut out = [0u64; CHUNKS];
        for (v, src) in out.iter_mut().zip(bytes.as_chunks::<8>().0) {
            *v = u64::from_le_bytes(*src);
            if *v >= P {
                return Err(ShamirError::NotInField);
            }
        }
        Ok(Share(out))
    }
}

#[inline]
fn reduce128(x: u128) -> u64 {
    // 2^61 ≡ 1 (mod p): fold the high part onto the low part twice.
    let lo = (x as u64) & P;
    let hi = (x >> 61) as u64; // < 2^61 for x < 2^122
    let mut r = lo + (hi & P) + (hi >> 61);
    r = (r & P) + (r >> 61);
    if r >= P { r - P } else { r }
}

#[inline]
pub(crate) fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

#[inline]
pub(crate) fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}

#[inline]
pub(crate) fn mul(a: u64, b: u64) -> u64 {
    reduce128(a as u128 * b as u128)
}

pub(crate) fn pow(mut a: u64, mut e: u64) -> u64 {
    let mut r = 1u64;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, a);
        }
        a = mul(a, a);
        e >>= 1;
    }
    r
}

/// Multiplicative inverse (Fermat); `a` must be nonzero.
pub(crate) fn inv(a: u64) -> u64 {
    pow(a, P - 2)
}

fn random_element<R: CryptoRng + ?Sized>(rng: &mut R) -> u64 {
    loop {
        let v = rng.next_u64() >> 3;
        if v < P {
            return v;
        }
    }
}

fn secret_chunks(secret: &[u8; 32]) -> [u64; CHUNKS] {
    let mut out = [0u64; CHUNKS];
    for (v, &(a, b)) in out.iter_mut().zip(CHUNK_RANGES.iter()) {
        let mut buf = [0u8; 8];
        for (dst, src) in buf.iter_mut().zip(secret.iter().skip(a).take(b - a)) {
            *dst = *src;
        }
        *v = u64::from_le_bytes(buf);
    }
    out
}

/// Splits `secret` into shares for the holders `xs` (distinct, nonzero), any
/// `t` of which reconstruct it. Returns one share per holder, in order.
///
/// Caller guarantees `1 <= t <= xs.len()` and distinct nonzero `xs`.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    t: usize,
    xs: &[u32],
    rng: &mut R,
) -> Vec<Share> {
    let chunks = secret_chunks(secret);
    // coefficients[c] = [a_0 = chunk, a_1, ..., a_{t-1}]
    let mut coeffs = vec![[0u64; CHUNKS]; t.max(1)];
    if let Some(first) = coeffs.first_mut() {
        *first = chunks;
    }
    for row in coeffs.iter_mut().skip(1) {
        for v in row.iter_mut() {
            *v = random_element(rng);
        }
    }
    xs.iter()
        .map(|&x| {
            let x = x as u64;
            let mut acc = [0u64; CHUNKS];
            // Horner from the highest coefficient.
            for row in coeffs.iter().rev() {
                for (a, c) in acc.iter_mut().zip(row.iter()) {
                    *a = add(mul(*a, x), *c);
                }
            }
            Share(acc)
        })
        .collect()
}

/// Lagrange weights for evaluating, at `at`, the polynomial through the points
/// with x-coordinates `xs` (distinct).
fn lagrange_weights(xs: &[u64], at: u64) -> Vec<u64> {
    xs.iter()
        .enumerate()
        .map(|(i, &xi)| {
            let mut num = 1u64;
            let mut den = 1u64;
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    num = mul(num, sub(at, xj));
                    den = mul(den, sub(xi, xj));
                }
            }
            mul(num, inv(den))
        })
        .collect()
}

fn evaluate(weights: &[u64], shares: &[(u32, Share)]) -> [u64; CHUNKS] {
    let mut acc = [0u64; CHUNKS];
    for (w, (_, s)) in weights.iter().zip(shares.iter()) {
        for (a, v) in acc.iter_mut().zip(s.0.iter()) {
            *a = add(*a, mul(*w, *v));
        }
    }
    acc
}

/// Reconstructs a secret from at least `t` shares `(holder index, share)`.
///
/// With more than `t` shares, every share beyond the first `t` must agree with
/// the polynomial the first `t` define, otherwise [`ShamirError::Inconsistent`].
pub fn reconstruct(shares: &[(u32, Share)], t: usize) -> Result<[u8; 32], ShamirError> {
    if t == 0 || shares.len() < t {
        return Err(ShamirError::TooFew);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (x, s) in shares {
        if *x == 0 || !seen.insert(*x) {
            return Err(ShamirError::BadCoordinate);
        }
        if s.0.iter().any(|&v| v >= P) {
            return Err(ShamirError::NotInField);
        }
    }
    let (base, extra) = shares.split_at(t);
    let xs: Vec<u64> = base.iter().map(|(x, _)| *x as u64).collect();
    let chunks = evaluate(&lagrange_weights(&xs, 0), base);
    for (x, s) in extra {
        let expect = evaluate(&lagrange_weights(&xs, *x as u64), base);
        if expect != s.0 {
            return Err(ShamirError::Inconsistent);
        }
    }
    let mut secret = [0u8; 32];
    for (v, &(a, b)) in chunks.iter().zip(CHUNK_RANGES.iter()) {
        let width = b - a;
        if *v >> (8 * width) != 0 {
            return Err(ShamirError::Inconsistent);
        }
        for (dst, src) in secret.iter_mut().skip(a).take(width).zip(v.to_le_bytes()) {
            *dst = src;
        }
    }
    Ok(secret)
}

/// A secret recovered by [`reconstruct_excluding_liar`], and the holder
/// whose share was left out, if one had to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The secret.
    pub secret: [u8; 32],
    /// The holder whose share disagreed with all the others' (left out).
    pub liar: Option<u32>,
}

/// [`reconstruct`], surviving one holder that reveals a wrong share.
///
/// When the shares are inconsistent and there are at least `t + 2` of them,
/// each share is left out in turn: if the others (at least `t + 1`) lie on
/// one polynomial for exactly one left-out share, that share's holder is
/// the liar, and the secret is the one the others define. Two different
/// left-out shares cannot both leave a consistent set (their intersection,
/// at least `t` shares, would fix one polynomial that both outliers lie
/// on), so the holder named is unambiguous. With fewer shares, or more than
/// one wrong share, the result is [`ShamirError::Inconsistent`] as before.
pub fn reconstruct_excluding_liar(
    shares: &[(u32, Share)],
    t: usize,
) -> Result<Recovered, ShamirError> {
    match reconstruct(shares, t) {
        Ok(secret) => return Ok(Recovered { secret, liar: None }),
        Err(ShamirError::Inconsistent) if shares.len() >= t.saturating_add(2) => {}
        Err(e) => return Err(e),
    }
    let mut found = None;
    for (i, (holder, _)) in shares.iter().enumerate() {
        let rest: Vec<(u32, Share)> = shares
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        if let Ok(secret) = reconstruct(&rest, t) {
            if found.is_some() {
                return Err(ShamirError::Inconsistent);
            }
            found = Some(Recovered {
                secret,
                liar: Some(*holder),
            });
        }
    }
    found.ok_or(ShamirError::Inconsistent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(P - 1, P - 1), 1); // (-1)^2
        assert_eq!(add(P - 1, 1), 0);
        assert_eq!(sub(0, 1), P - 1);
        for a in [1u64, 2, 3, 12345, P - 2, 1 << 60] {
            assert_eq!(mul(a, inv(a)), 1);
        }
        assert_eq!(pow(3, P - 1), 1);
        assert_eq!(reduce128(u128::from(P) * u128::from(P)), 0);
    }

    #[test]
    fn known_answer() {
        // Fixed seed and secret: the shares are part of the format (the
        // coordinator and participants may run different builds).
        let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
        let secret: [u8; 32] = core::array::from_fn(|i| i as u8);
        let shares = split(&secret, 2, &[1, 2, 3], &mut rng);
        // Degree-1 polynomials: share(2) − share(1) == share(3) − share(2).
        for c in 0..CHUNKS {
            assert_eq!(
                sub(shares[1].0[c], shares[0].0[c]),
                sub(shares[2].0[c], shares[1].0[c])
            );
        }
        // The constant term is the chunk: 2·share(1) − share(2).
        let chunk0 = sub(mul(2, shares[0].0[0]), shares[1].0[0]);
        assert_eq!(chunk0, u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 0]));
        assert_eq!(
            shares[0].to_bytes()[..8],
            [0x1e, 0x41, 0x14, 0xf2, 0x4e, 0xda, 0x44, 0x08],
            "share encoding changed: {:02x?}",
            &shares[0].to_bytes()[..8]
        );
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut rng = ChaCha20Rng::from_seed([1u8; 32]);
        let secret = [0xabu8; 32];
        let shares = split(&secret, 3, &[4, 9, 11, 20], &mut rng);
        let pts: Vec<(u32, Share)> = [4u32, 9, 11, 20].into_iter().zip(shares).collect();
        assert_eq!(reconstruct(&pts[..2], 3), Err(ShamirError::TooFew));
        let dup = vec![pts[0], pts[0], pts[1]];
        assert_eq!(reconstruct(&dup, 3), Err(ShamirError::BadCoordinate));
        let mut bad = pts.clone();
        bad[3].1.0[2] = add(bad[3].1.0[2], 1);
        assert_eq!(reconstruct(&bad, 3), Err(ShamirError::Inconsistent));
        let mut notf = pts.clone();
        notf[0].1.0[0] = P;
        assert_eq!(reconstruct(&notf, 3), Err(ShamirError::NotInField));
        assert_eq!(Share::from_bytes(&[0u8; 39]), Err(ShamirError::NotInField));
        assert_eq!(
            Share::from_bytes(&[0xffu8; 40]),
            Err(ShamirError::NotInField)
        );
        assert_eq!(reconstruct(&pts, 3), Ok(secret));
    }

    #[test]
    fn fewer_than_t_shares_are_uniform_for_any_secret() {
        // With t = 2, one share of two different secrets under the same
        // coefficients differs exactly by the secret difference; what matters
        // is that a single share's distribution does not depend on the secret:
        // check the share is a uniformly random-looking field element by
        // verifying that the same randomness gives a different share for a
        // different secret while both stay in the field.
        let mut r1 = ChaCha20Rng::from_seed([3u8; 32]);
        let mut r2 = ChaCha20Rng::from_seed([3u8; 32]);
        let a = split(&[0u8; 32], 2, &[5], &mut r1);
        let b = split(&[1u8; 32], 2, &[5], &mut r2);
        assert_ne!(a, b);
        assert!(a[0].0.iter().chain(b[0].0.iter()).all(|&v| v < P));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_t_subset_reconstructs(
            secret in proptest::array::uniform32(any::<u8>()),
            seed in any::<u64>(),
            n in 1usize..12,
            t_frac in 0.0f64..1.0,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 12),
        ) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let xs: Vec<u32> = (0..n as u32).map(|i| i * 7 + 3).collect();
            let shares = split(&secret, t, &xs, &mut rng);
            let mut pts: Vec<(u32, Share)> = xs.iter().copied().zip(shares).collect();
            // Shuffle by the picks and keep between t and n of them.
            for (i, p) in picks.iter().enumerate().take(n) {
                let j = p.index(n);
                pts.swap(i, j);
            }
            let keep = t + picks[0].index(n - t + 1);
            prop_assert_eq!(reconstruct(&pts[..keep], t), Ok(secret));
            if t > 1 {
                prop_assert_eq!(reconstruct(&pts[..t - 1], t), Err(ShamirError::TooFew));
            }
            for (x, s) in &pts {
                prop_assert_eq!(Share::from_bytes(&s.to_bytes()), Ok(*s));
                prop_assert!(*x != 0);
            }
        }
    }

    #[test]
    fn one_lying_holder_is_named_and_left_out() {
        let mut rng = ChaCha20Rng::from_seed([9u8; 32]);
        let secret: [u8; 32] = core::array::from_fn(|i| (i * 7) as u8);
        let holders: Vec<u32> = (1..=7).collect();
        let t = 4;
        let shares = split(&secret, t, &holders, &mut rng);
        let mut pts: Vec<(u32, Share)> = holders.iter().copied().zip(shares).collect();
        assert_eq!(
            reconstruct_excluding_liar(&pts, t),
            Ok(Recovered { secret, liar: None })
        );
        // Holder 3 lies (any position, including among the first t).
        pts[2].1.0[1] = add(pts[2].1.0[1], 1);
        assert_eq!(reconstruct(&pts, t), Err(ShamirError::Inconsistent));
        assert_eq!(
            reconstruct_excluding_liar(&pts, t),
            Ok(Recovered {
                secret,
                liar: Some(3)
            })
        );
        // Two liars: no holder can be named.
        pts[5].1.0[0] = add(pts[5].1.0[0], 5);
        assert_eq!(
            reconstruct_excluding_liar(&pts, t),
            Err(ShamirError::Inconsistent)
        );
        // One liar among only t + 1 shares: detected, not attributable.
        let few: Vec<(u32, Share)> = holders
            .iter()
            .copied()
            .zip(split(&secret, t, &holders, &mut rng))
            .take(t + 1)
            .enumerate()
            .map(|(i, (h, mut s))| {
                if i == 1 {
                    s.0[0] = add(s.0[0], 1);
                }
                (h, s)
            })
            .collect();
        assert_eq!(
            reconstruct_excluding_liar(&few, t),
            Err(ShamirError::Inconsistent)
        );
    }
}
