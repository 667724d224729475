//! Mask expansion: AES-128 in counter mode, fused with the wrapping add.
//!
//! A 32-byte seed s defines the keystream AES-128-CTR(key = s[0..16],
//! nonce = s[16..28], 32-bit big-endian block counter from 0). Element i of
//! the mask is the i-th little-endian word of the keystream, 4 bytes per
//! element when `modulus_bits <= 32` and 8 bytes otherwise, reduced modulo
//! 2^modulus_bits (the low bits of a uniform word are uniform).
//!
//! AES-CTR was chosen over ChaCha after measuring both on the target machine
//! (see the crate docs): with hardware AES it is 2–3× faster than ChaCha8 and
//! 5–6× faster than ChaCha20, and mask expansion is the dominant cost of the
//! protocol. Dimensions are limited to [`MAX_DIM`] so the 32-bit block counter
//! never wraps.
//!
//! [`apply_masks`] adds (or subtracts) many masks to one vector in a single
//! pass, block by block: for each block of [`BLOCK`] elements every mask's
//! keystream for that block is written into one small buffer and folded into
//! the block, so the vector is read and written from cache once per block
//! rather than once per mask from main memory, and nothing is allocated per
//! mask.

use aes::Aes128;
use ctr::Ctr32BE;
use ctr::cipher::{KeyIvInit, StreamCipher};

/// Largest supported vector dimension (keeps the CTR block counter from wrapping).
pub const MAX_DIM: usize = 1 << 31;

/// Elements per block of the fused expansion.
pub const BLOCK: usize = 2048;

type MaskCipher = Ctr32BE<Aes128>;

/// Bytes of keystream drawn per element.
pub fn word_bytes(modulus_bits: u32) -> usize {
    if modulus_bits <= 32 { 4 } else { 8 }
}

/// The bit mask of 2^modulus_bits − 1 (all ones for 64).
pub fn modulus_mask(modulus_bits: u32) -> u64 {
    if modulus_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << modulus_bits) - 1
    }
}

fn cipher(seed: &[u8; 32]) -> MaskCipher {
    let mut key = [0u8; 16];
    key.copy_from_slice(&seed[..16]);
    let mut iv = [0u8; 16];
    iv[..12].copy_from_slice(&seed[16..28]);
    MaskCipher::new(&key.into(), &iv.into())
}

/// One mask to fold into a vector: its seed and whether it is subtracted.
pub struct MaskJob {
    cipher: MaskCipher,
    negate: bool,
}

impl MaskJob {
    /// A mask expanded from `seed`, added (`negate = false`) or subtracted.
    pub fn new(seed: &[u8; 32], negate: bool) -> Self {
        MaskJob {
            cipher: cipher(seed),
            negate,
        }
    }
}

#[inline]
fn fold32(acc: &mut [u32], ks: &[u8], negate: bool) {
    let words = ks.as_chunks::<4>().0;
    if negate {
        for (a, w) in acc.iter_mut().zip(words) {
            *a = a.wrapping_sub(u32::from_le_bytes(*w));
        }
    } else {
        for (a, w) in acc.iter_mut().zip(words) {
            *a = a.wrapping_add(u32::from_le_bytes(*w));
        }
    }
}

#[inline]
fn fold64(acc: &mut [u64], ks: &[u8], negate: bool) {
    let words = ks.as_chunks::<8>().0;
    if negate {
        for (a, w) in acc.iter_mut().zip(words) {
            *a = a.wrapping_sub(u64::from_le_bytes(*w));
        }
    } else {
        for (a, w) in acc.iter_mut().zip(words) {
            *a = a.wrapping_add(u64::from_le_bytes(*w));
        }
    }
}

/// Scratch block of mask sums for [`BLOCK`] elements: u32 lanes when
/// `modulus_bits <= 32` (modulo 2^k with k <= 32 masks can be summed in u32,
/// twice as many per vector instruction), u64 otherwise.
// One lives on the stack per call; boxing the larger variant would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
enum MaskBlock {
    Narrow([u32; BLOCK]),
    Wide([u64; BLOCK]),
}

impl MaskBlock {
    fn new(modulus_bits: u32) -> Self {
        if word_bytes(modulus_bits) == 4 {
            MaskBlock::Narrow([0; BLOCK])
        } else {
            MaskBlock::Wide([0; BLOCK])
        }
    }

    /// Expands every job's keystream for the next `len` (<= BLOCK) elements
    /// and stores the signed sum of the masks.
    fn fill(&mut self, len: usize, jobs: &mut [MaskJob], ks: &mut [u8; BLOCK * 8]) {
        match self {
            MaskBlock::Narrow(acc) => {
                // len <= BLOCK: both slices exist (a caller's bug otherwise
                // leaves the block unfilled rather than panicking).
                let (Some(acc), Some(ks)) = (acc.get_mut(..len), ks.get_mut(..len * 4)) else {
                    return;
                };
                acc.fill(0);
                for job in jobs.iter_mut() {
                    job.cipher.write_keystream(ks);
                    fold32(acc, ks, job.negate);
                }
            }
            MaskBlock::Wide(acc) => {
                let (Some(acc), Some(ks)) = (acc.get_mut(..len), ks.get_mut(..len * 8)) else {
                    return;
                };
                acc.fill(0);
                for job in jobs.iter_mut() {
                    job.cipher.write_keystream(ks);
                    fold64(acc, ks, job.negate);
                }
            }
        }
    }

    /// block[i] = (block[i] + mask[i]) mod 2^k.
    fn add_into(&self, block: &mut [u64], modulus: u64) {
        match self {
            MaskBlock::Narrow(acc) => {
                for (b, m) in block.iter_mut().zip(acc.iter()) {
                    *b = b.wrapping_add(u64::from(*m)) & modulus;
                }
            }
            MaskBlock::Wide(acc) => {
                for (b, m) in block.iter_mut().zip(acc.iter()) {
                    *b = b.wrapping_add(*m) & modulus;
                }
            }
        }
    }

    /// Appends (x[i] + mask[i]) mod 2^k to `out`.
    fn extend_with(&self, x: &[u64], modulus: u64, out: &mut Vec<u64>) {
        match self {
            MaskBlock::Narrow(acc) => out.extend(
                x.iter()
                    .zip(acc.iter())
                    .map(|(x, m)| x.wrapping_add(u64::from(*m)) & modulus),
            ),
            MaskBlock::Wide(acc) => out.extend(
                x.iter()
                    .zip(acc.iter())
                    .map(|(x, m)| x.wrapping_add(*m) & modulus),
            ),
        }
    }
}

/// Adds/subtracts every job's mask to `acc` and reduces the result modulo
/// 2^modulus_bits, in one pass over `acc`. Arithmetic is wrapping; since
/// 2^modulus_bits divides 2^64 (and 2^32 for k <= 32) the reduction gives the
/// exact result. Each job's keystream is consumed; a job must not be reused.
pub fn apply_masks(acc: &mut [u64], jobs: &mut [MaskJob], modulus_bits: u32) {
    let modulus = modulus_mask(modulus_bits);
    let mut ks = [0u8; BLOCK * 8];
    let mut masks = MaskBlock::new(modulus_bits);
    for block in acc.chunks_mut(BLOCK) {
        masks.fill(block.len(), jobs, &mut ks);
        masks.add_into(block, modulus);
    }
}

/// Returns `input` plus every job's mask, modulo 2^modulus_bits, in one pass
/// (no separate copy of the input).
pub fn masked_copy(input: &[u64], jobs: &mut [MaskJob], modulus_bits: u32) -> Vec<u64> {
    let modulus = modulus_mask(modulus_bits);
    let mut out = Vec::with_capacity(input.len());
    let mut ks = [0u8; BLOCK * 8];
    let mut masks = MaskBlock::new(modulus_bits);
    for block in input.chunks(BLOCK) {
        masks.fill(block.len(), jobs, &mut ks);
        masks.extend_with(block, modulus, &mut out);
    }
    out
}

/// Reduces every element modulo 2^modulus_bits.
pub fn reduce(acc: &mut [u64], modulus_bits: u32) {
    let m = modulus_mask(modulus_bits);
    if m != u64::MAX {
        for a in acc.iter_mut() {
            *a &= m;
        }
    }
}

/// The mask of `seed` itself, as a vector (reference and tests).
pub fn expand(seed: &[u8; 32], dim: usize, modulus_bits: u32) -> Vec<u64> {
    let mut v = vec![0u64; dim];
    apply_masks(&mut v, &mut [MaskJob::new(seed, false)], modulus_bits);
    v
}

/// Only generates the keystream of one mask of `dim` elements, through the
/// same buffer size as [`apply_masks`], and discards it (returns a checksum so
/// the work cannot be optimised away). This is the unit of the "PRG lower
/// bound" the benchmark compares the protocol against.
pub fn expand_discard(seed: &[u8; 32], dim: usize, modulus_bits: u32) -> u8 {
    let wb = word_bytes(modulus_bits);
    let mut c = cipher(seed);
    let mut buf = [0u8; BLOCK * 8];
    let mut remaining = dim;
    let mut check = 0u8;
    while remaining > 0 {
        let len = remaining.min(BLOCK);
        if let Some(part) = buf.get_mut(..len * wb) {
            c.write_keystream(part);
        }
        check ^= buf.first().copied().unwrap_or(0);
        remaining -= len;
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_width() {
        let seed: [u8; 32] = core::array::from_fn(|i| i as u8);
        let v32 = expand(&seed, 4, 32);
        let v64 = expand(&seed, 2, 64);
        // The same keystream read as 4-byte or 8-byte little-endian words.
        assert_eq!(v64[0], v32[0] | (v32[1] << 32));
        assert_eq!(v64[1], v32[2] | (v32[3] << 32));
        // Fixed seed -> fixed first words (AES-128-CTR keystream format).
        assert_eq!(
            v32,
            vec![0x62ce4b07, 0x01b98cd9, 0x5869ec1c, 0x36fcb4eb],
            "keystream changed: {v32:x?}"
        );
        // Independently: the first keystream block is AES-128(key, nonce ‖ 0).
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        let aes = Aes128::new(&core::array::from_fn::<u8, 16, _>(|i| i as u8).into());
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(&seed[16..28]);
        let mut block = block.into();
        aes.encrypt_block(&mut block);
        let words: Vec<u64> = block
            .as_chunks::<4>()
            .0
            .iter()
            .map(|w| u64::from(u32::from_le_bytes(*w)))
            .collect();
        assert_eq!(words, v32);
    }

    #[test]
    fn fused_matches_reference_for_all_widths() {
        let seeds: Vec<[u8; 32]> = (0..5u8)
            .map(|i| [i.wrapping_mul(37).wrapping_add(1); 32])
            .collect();
        for bits in [1u32, 7, 31, 32, 33, 61, 64] {
            for dim in [1usize, 5, BLOCK - 1, BLOCK, BLOCK + 3, 3 * BLOCK + 17] {
                let input: Vec<u64> = (0..dim as u64)
                    .map(|i| i.wrapping_mul(0x9e3779b97f4a7c15) & modulus_mask(bits))
                    .collect();
                let mut fused = input.clone();
                let mut jobs: Vec<MaskJob> = seeds
                    .iter()
                    .enumerate()
                    .map(|(i, s)| MaskJob::new(s, i % 2 == 1))
                    .collect();
                apply_masks(&mut fused, &mut jobs, bits);
                let mut reference = input.clone();
                for (i, s) in seeds.iter().enumerate() {
                    let m = expand(s, dim, bits);
                    for (r, x) in reference.iter_mut().zip(m) {
                        *r = if i % 2 == 1 {
                            r.wrapping_sub(x)
                        } else {
                            r.wrapping_add(x)
                        };
                    }
                }
                reduce(&mut reference, bits);
                assert_eq!(fused, reference, "bits {bits} dim {dim}");
                let mut jobs: Vec<MaskJob> = seeds
                    .iter()
                    .enumerate()
                    .map(|(i, s)| MaskJob::new(s, i % 2 == 1))
                    .collect();
                assert_eq!(masked_copy(&input, &mut jobs, bits), reference);
                // Adding and subtracting the same mask is the identity.
                let mut roundtrip = input.clone();
                apply_masks(
                    &mut roundtrip,
                    &mut [
                        MaskJob::new(&seeds[0], false),
                        MaskJob::new(&seeds[0], true),
                    ],
                    bits,
                );
                assert_eq!(roundtrip, input);
            }
        }
    }

    #[test]
    fn masks_look_uniform() {
        // Crude sanity check: mean bit density of a long mask is about 1/2 and
        // different seeds give different masks.
        let a = expand(&[1u8; 32], 1 << 14, 32);
        let b = expand(&[2u8; 32], 1 << 14, 32);
        assert_ne!(a, b);
        let ones: u32 = a.iter().map(|w| w.count_ones()).sum();
        let frac = f64::from(ones) / (32.0 * a.len() as f64);
        assert!((frac - 0.5).abs() < 0.01, "{frac}");
        assert!(a.iter().all(|&w| w < 1 << 32));
    }
}
