//! Cutting a chunk into smaller wire frames that share its buffer, so a
//! sender can hold a large chunk by reference and put one small frame at a
//! time on the wire.

use crate::v1::VectorChunk;

/// Cuts `chunk` into frames of at most `max_bytes` of element data each,
/// `element_size` bytes per element, in order. The frames share the
/// chunk's buffer (nothing is copied), so a sender can hold one large
/// chunk by reference and put one small frame at a time on the wire.
///
/// A chunk that cannot be cut on element boundaries (its data is not a
/// whole number of elements, or the sizes are zero) and a chunk already
/// small enough come out whole; the receiver's checks are unchanged.
pub fn frames(chunk: VectorChunk, element_size: usize, max_bytes: usize) -> Frames {
    let per_frame = max_bytes.checked_div(element_size).unwrap_or(0);
    let cuttable = per_frame > 0 && chunk.data.len().is_multiple_of(element_size);
    Frames {
        rest: Some(chunk),
        frame_bytes: if cuttable {
            per_frame * element_size
        } else {
            usize::MAX
        },
        element_size,
    }
}

/// The frames of one chunk (see [`frames`]).
#[derive(Debug, Clone)]
pub struct Frames {
    rest: Option<VectorChunk>,
    frame_bytes: usize,
    element_size: usize,
}

impl Iterator for Frames {
    type Item = VectorChunk;

    fn next(&mut self) -> Option<VectorChunk> {
        let mut rest = self.rest.take()?;
        if rest.data.len() <= self.frame_bytes {
            return Some(rest);
        }
        let head = rest.data.split_to(self.frame_bytes);
        let frame = VectorChunk {
            round: rest.round,
            purpose: rest.purpose,
            offset: rest.offset,
            total: rest.total,
            data: head,
        };
        rest.offset = rest
            .offset
            .saturating_add((self.frame_bytes / self.element_size) as u64);
        self.rest = Some(rest);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{Assembler, Element, SEND_CHUNK_BYTES, WIRE_FRAME_BYTES, split};
    use crate::v1::ChunkPurpose;

    /// Frames cut from a chunk share its buffer, carry the right offsets,
    /// and put the vector back together exactly.
    #[test]
    fn frames_share_the_chunk_and_reassemble() {
        let values: Vec<f32> = (0..200_000).map(|i| i as f32 * 0.5).collect();
        let chunks = split(7, ChunkPurpose::Model, &values);
        assert_eq!(chunks[0].data.len(), SEND_CHUNK_BYTES);
        let mut a = Assembler::<f32>::new(7, ChunkPurpose::Model, values.len() as u64);
        let mut n = 0;
        for c in &chunks {
            let base = c.data.as_ptr() as usize;
            for f in frames(c.clone(), f32::SIZE, WIRE_FRAME_BYTES) {
                assert!(f.data.len() <= WIRE_FRAME_BYTES && !f.data.is_empty());
                let p = f.data.as_ptr() as usize;
                assert!(
                    p >= base && p < base + c.data.len(),
                    "a frame is a view, not a copy"
                );
                a.push(&f).unwrap();
                n += 1;
            }
        }
        assert_eq!(n, (values.len() * 4).div_ceil(WIRE_FRAME_BYTES));
        assert_eq!(a.finish().unwrap(), values);
    }

    /// What cannot be cut on element boundaries, or needs no cutting,
    /// comes out whole.
    #[test]
    fn frames_leave_uncuttable_chunks_whole() {
        let chunk = |len: usize| VectorChunk {
            round: 1,
            purpose: ChunkPurpose::Model as i32,
            offset: 3,
            total: 1_000_000,
            data: vec![1u8; len].into(),
        };
        for (len, element, max) in [(10, 4, 4), (64, 4, 64), (64, 0, 8), (64, 8, 4), (0, 4, 8)] {
            let out: Vec<_> = frames(chunk(len), element, max).collect();
            assert_eq!(out, vec![chunk(len)], "{len} {element} {max}");
        }
        // 8-byte elements, 20-byte frames: cut at 16 bytes (2 elements).
        let out: Vec<_> = frames(chunk(40), 8, 20).collect();
        let lens: Vec<_> = out.iter().map(|f| (f.offset, f.data.len())).collect();
        assert_eq!(lens, vec![(3, 16), (5, 16), (7, 8)]);
    }

    /// Input vectors are split at the wire frame size, model vectors at
    /// the queueing size.
    #[test]
    fn inputs_are_split_in_wire_frames() {
        let values = vec![7u32; 100_000];
        for c in split(1, ChunkPurpose::MaskedInput, &values) {
            assert!(c.data.len() <= WIRE_FRAME_BYTES);
        }
        assert_eq!(
            split(1, ChunkPurpose::PlainInput, &values).len(),
            (values.len() * 4).div_ceil(WIRE_FRAME_BYTES)
        );
        assert_eq!(
            split(1, ChunkPurpose::Model, &vec![0f32; 100_000]).len(),
            (100_000 * 4usize).div_ceil(SEND_CHUNK_BYTES)
        );
    }
}
