//! Chunk reassembly: a stream of chunks cut from the input (offsets,
//! totals, sizes and purposes chosen by the fuzzer) pushed into assemblers
//! of each element width. Memory must follow the bytes received. Each
//! chunk is also cut into wire frames (`chunk::frames`, fuzzer-chosen
//! element and frame sizes): the frames must carry exactly its bytes, in
//! order, at consistent offsets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_proto::chunk::{Assembler, MAX_CHUNK_BYTES, frames};
use tessera_proto::v1::{ChunkPurpose, VectorChunk};

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let expected = u64_at(data, 0) % (1 << 40);
    let mut narrow = Assembler::<u32>::new(7, ChunkPurpose::MaskedInput, expected);
    let mut wide = Assembler::<u64>::new(7, ChunkPurpose::MaskedInput, expected);
    let mut model = Assembler::<f32>::new(7, ChunkPurpose::Model, expected);
    let mut rest = data.get(8..).unwrap_or_default();
    while rest.len() >= 20 {
        let offset = u64_at(rest, 0) % (1 << 41);
        let total = if rest[8] & 1 == 0 {
            expected
        } else {
            u64_at(rest, 9)
        };
        let len = usize::from(u16::from_le_bytes([rest[17], rest[18]])) % 512;
        let purpose = i32::from(rest[19] % 4);
        let body = rest
            .get(20..20 + len.min(rest.len() - 20))
            .unwrap_or_default();
        let chunk = VectorChunk {
            round: 7,
            purpose,
            offset,
            total,
            data: body.to_vec().into(),
        };
        let element = usize::from(rest[8] >> 4) % 9;
        let max = usize::from(rest[17]) * 4;
        let mut joined = Vec::new();
        let mut next = chunk.offset;
        for f in frames(chunk.clone(), element, max) {
            assert_eq!(f.offset, next);
            assert_eq!((f.round, f.purpose, f.total), (7, purpose, total));
            next = next.saturating_add((f.data.len() / element.max(1)) as u64);
            joined.extend_from_slice(&f.data);
        }
        assert_eq!(joined, chunk.data.to_vec());
        let _ = narrow.push(&chunk);
        let _ = wide.push(&chunk);
        let _ = model.push(&chunk);
        // Never more memory than twice the elements that could have arrived.
        let received = (data.len() as u64).saturating_mul(2);
        assert!(narrow.capacity() as u64 <= received.max(MAX_CHUNK_BYTES as u64));
        assert!(wide.capacity() as u64 <= received.max(MAX_CHUNK_BYTES as u64));
        rest = rest.get(20 + body.len()..).unwrap_or_default();
    }
});
