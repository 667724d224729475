//! Measures candidate mask PRGs on this machine (release build recommended):
//! `cargo run --release -p tessera-secagg --example prg_speed`.
//!
//! Prints GB/s of keystream for AES-128-CTR (the chosen PRG, through
//! `prg::expand_discard`), rand_chacha's ChaCha8/12/20 and the fused
//! expand-and-add path of `prg::apply_masks` (per mask of one million 4-byte
//! elements).

use std::hint::black_box;
use std::time::Instant;

use rand_chacha::{ChaCha8Rng, ChaCha12Rng, ChaCha20Rng};
use rand_core::{Rng, SeedableRng};
use tessera_secagg::prg::{MaskJob, apply_masks, expand_discard, masked_copy};

const DIM: usize = 1_000_000;
const REPS: usize = 50;

fn report(name: &str, seconds: f64) {
    let bytes = (DIM * 4 * REPS) as f64;
    println!(
        "{name:<28} {:6.2} GB/s  {:6.3} ms per 1M-element mask",
        bytes / seconds / 1e9,
        seconds / REPS as f64 * 1e3
    );
}

fn chacha<R: Rng + SeedableRng>(name: &str) {
    let mut rng = R::seed_from_u64(1);
    let mut buf = vec![0u8; 8192];
    let start = Instant::now();
    for _ in 0..REPS {
        for _ in 0..(DIM * 4).div_ceil(buf.len()) {
            rng.fill_bytes(&mut buf);
            black_box(&buf);
        }
    }
    report(name, start.elapsed().as_secs_f64());
}

fn main() {
    let start = Instant::now();
    for i in 0..REPS {
        black_box(expand_discard(&[i as u8; 32], DIM, 32));
    }
    report("AES-128-CTR (Ctr32BE)", start.elapsed().as_secs_f64());
    chacha::<ChaCha8Rng>("ChaCha8 (rand_chacha)");
    chacha::<ChaCha12Rng>("ChaCha12 (rand_chacha)");
    chacha::<ChaCha20Rng>("ChaCha20 (rand_chacha)");
    let mut acc = vec![0u64; DIM];
    let mut jobs: Vec<MaskJob> = (0..REPS)
        .map(|i| MaskJob::new(&[i as u8; 32], i % 2 == 1))
        .collect();
    let start = Instant::now();
    apply_masks(&mut acc, &mut jobs, 32);
    report("AES-CTR fused expand+add", start.elapsed().as_secs_f64());
    black_box(&acc);
    // One participant of a k = 12 round: 13 masks onto a fresh output vector,
    // against only expanding those 13 masks.
    let input: Vec<u64> = (0..DIM as u64).map(|i| i & 0xffff_ffff).collect();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..13u8 {
            black_box(expand_discard(&[i; 32], DIM, 32));
        }
        let prg = start.elapsed().as_secs_f64();
        let mut jobs: Vec<MaskJob> = (0..13u8)
            .map(|i| MaskJob::new(&[i; 32], i % 2 == 1))
            .collect();
        let start = Instant::now();
        let out = masked_copy(&input, &mut jobs, 32);
        let fused = start.elapsed().as_secs_f64();
        black_box(out);
        println!(
            "13 masks: expand only {:.3} ms, masked_copy {:.3} ms (ratio {:.2})",
            prg * 1e3,
            fused * 1e3,
            fused / prg
        );
    }
}
