//! Splitting large vectors into [`VectorChunk`]s and reassembling them.
//!
//! Every vector on the wire (model parameters, masked inputs) travels as a
//! sequence of chunks carrying at most [`MAX_CHUNK_BYTES`] of element data,
//! in order, so no gRPC message comes near the 4 MiB default limit. A
//! [`Cursor`] (for a receiver that consumes elements as they come) and the
//! [`Assembler`] (which keeps the whole vector) check every chunk against what it expects (purpose, round,
//! total, contiguous offsets, element size, an upper bound on the length) and
//! reports a typed [`ChunkError`] instead of trusting the sender.
//!
//! Memory follows the bytes that arrived, not the total a chunk declares:
//! an assembler grows its buffer at most geometrically with the data it has
//! received (never past the agreed length), and refuses an empty chunk of a
//! non-empty vector, so a peer can neither reserve a whole vector with one
//! empty message nor keep a stream alive without making progress.

use crate::v1::{ChunkPurpose, VectorChunk};

mod frames;
pub use frames::{Frames, frames};

/// Largest element payload of one chunk a receiver accepts (1 MiB).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Element payload of the model chunks [`split`] makes (256 KiB): the
/// granularity at which the coordinator queues the model for each
/// participant (one reference to the shared broadcast buffer per chunk, so
/// a participant's queue holds few entries whatever the model size). They
/// go on the wire re-cut into [`WIRE_FRAME_BYTES`] frames ([`frames`]).
pub const SEND_CHUNK_BYTES: usize = 256 << 10;

/// Largest element payload of one message this build puts on the wire
/// (32 KiB): input chunks are split at this size and the coordinator
/// re-cuts model chunks into frames of it as they are sent.
///
/// The coordinator's memory per connected site follows this figure, not the
/// model size: each gRPC stream keeps a decode buffer as large as the
/// largest message it has received (tonic never shrinks it), and each
/// outgoing stream holds at most a couple of encoded messages besides
/// HTTP/2's send buffer. At 32 KiB a message still carries 8,192 elements,
/// so the per-message work (a header, a channel hop) stays small next to
/// the work on the elements.
pub const WIRE_FRAME_BYTES: usize = 32 << 10;

/// Element layouts that travel in chunks.
pub trait Element: Copy + Default {
    /// Bytes per element on the wire.
    const SIZE: usize;
    /// Appends the little-endian encoding of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one element from the first `Self::SIZE` bytes (the default
    /// value if fewer are given; callers pass exactly `Self::SIZE`).
    fn get(bytes: &[u8]) -> Self;
}

impl Element for f32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        bytes
            .first_chunk::<4>()
            .map_or_else(Self::default, |b| f32::from_le_bytes(*b))
    }
}

impl Element for u32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        bytes
            .first_chunk::<4>()
            .map_or_else(Self::default, |b| u32::from_le_bytes(*b))
    }
}

impl Element for u64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        bytes
            .first_chunk::<8>()
            .map_or_else(Self::default, |b| u64::from_le_bytes(*b))
    }
}

/// Element payload of the chunks [`split`] makes for `purpose`: model
/// vectors (the coordinator's broadcast) in [`SEND_CHUNK_BYTES`], input
/// vectors (a site's upload) in [`WIRE_FRAME_BYTES`].
pub fn chunk_bytes(purpose: ChunkPurpose) -> usize {
    match purpose {
        ChunkPurpose::Model => SEND_CHUNK_BYTES,
        _ => WIRE_FRAME_BYTES,
    }
}

/// Splits `values` into chunks of at most [`chunk_bytes`]`(purpose)` each.
///
/// An empty vector still yields one (empty) chunk so the receiver learns the
/// total. The chunks' data is reference-counted: a chunk sent to many
/// participants is cloned, never copied.
pub fn split<T: Element>(round: u64, purpose: ChunkPurpose, values: &[T]) -> Vec<VectorChunk> {
    let per_chunk = (chunk_bytes(purpose) / T::SIZE).max(1);
    let total = values.len() as u64;
    if values.is_empty() {
        return vec![VectorChunk {
            round,
            purpose: purpose as i32,
            offset: 0,
            total,
            data: Default::default(),
        }];
    }
    values
        .chunks(per_chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut data = Vec::with_capacity(part.len() * T::SIZE);
            for &v in part {
                v.put(&mut data);
            }
            VectorChunk {
                round,
                purpose: purpose as i32,
                offset: (i * per_chunk) as u64,
                total,
                data: data.into(),
            }
        })
        .collect()
}

/// A chunk that does not fit the vector being assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The chunk belongs to another round.
    #[error("chunk for round {got}, expected round {expected}")]
    WrongRound {
        /// Round the assembler expects.
        expected: u64,
        /// Round in the chunk.
        got: u64,
    },
    /// The chunk carries another kind of vector.
    #[error("chunk purpose {got}, expected {expected}")]
    WrongPurpose {
        /// Purpose the assembler expects.
        expected: i32,
        /// Purpose in the chunk.
        got: i32,
    },
    /// The announced total differs from the expected length.
    #[error("vector of {got} elements, expected {expected}")]
    WrongLength {
        /// Length the assembler expects.
        expected: u64,
        /// Total announced in the chunk.
        got: u64,
    },
    /// Chunks arrived out of order, overlapping or with a gap.
    #[error("chunk at offset {got}, expected offset {expected}")]
    OutOfOrder {
        /// Next offset the assembler expects.
        expected: u64,
        /// Offset in the chunk.
        got: u64,
    },
    /// The chunk's data is not a whole number of elements, is too large, or
    /// runs past the end of the vector.
    #[error("malformed chunk data: {0}")]
    Malformed(&'static str),
    /// A chunk arrived after the vector was complete.
    #[error("vector is already complete")]
    AlreadyComplete,
}

/// Follows one vector arriving in chunks without keeping it: checks each
/// chunk against what is expected (purpose, round, total, contiguous
/// offsets, element size, the end of the vector) and decodes its elements,
/// for a receiver that consumes them as they come (e.g. folds them into a
/// running sum). Its memory is a few counters.
#[derive(Debug, Clone)]
pub struct Cursor {
    round: u64,
    purpose: ChunkPurpose,
    expected_len: u64,
    next: u64,
    started: bool,
}

impl Cursor {
    /// Expects a vector of exactly `expected_len` elements for `round`.
    pub fn new(round: u64, purpose: ChunkPurpose, expected_len: u64) -> Self {
        Self {
            round,
            purpose,
            expected_len,
            next: 0,
            started: false,
        }
    }

    /// Checks the next chunk and decodes its elements; returns the offset
    /// of the first one and the elements.
    pub fn next<T: Element>(&mut self, chunk: &VectorChunk) -> Result<(u64, Vec<T>), ChunkError> {
        let n = self.check::<T>(chunk)?;
        let mut values = Vec::with_capacity(n);
        values.extend(chunk.data.chunks_exact(T::SIZE).map(T::get));
        let offset = self.next;
        self.advance(n);
        Ok((offset, values))
    }

    /// Checks `chunk` as the next one; returns its number of elements.
    fn check<T: Element>(&self, chunk: &VectorChunk) -> Result<usize, ChunkError> {
        if self.started && self.is_complete() {
            return Err(ChunkError::AlreadyComplete);
        }
        if chunk.round != self.round {
            return Err(ChunkError::WrongRound {
                expected: self.round,
                got: chunk.round,
            });
        }
        if chunk.purpose != self.purpose as i32 {
            return Err(ChunkError::WrongPurpose {
                expected: self.purpose as i32,
                got: chunk.purpose,
            });
        }
        if chunk.total != self.expected_len {
            return Err(ChunkError::WrongLength {
                expected: self.expected_len,
                got: chunk.total,
            });
        }
        if chunk.offset != self.next {
            return Err(ChunkError::OutOfOrder {
                expected: self.next,
                got: chunk.offset,
            });
        }
        if chunk.data.len() > MAX_CHUNK_BYTES {
            return Err(ChunkError::Malformed("chunk larger than 1 MiB"));
        }
        if chunk.data.is_empty() && self.expected_len > 0 {
            return Err(ChunkError::Malformed("empty chunk of a non-empty vector"));
        }
        if !chunk.data.len().is_multiple_of(T::SIZE) {
            return Err(ChunkError::Malformed("not a whole number of elements"));
        }
        let n = chunk.data.len() / T::SIZE;
        if n as u64 > self.expected_len.saturating_sub(self.next) {
            return Err(ChunkError::Malformed(
                "chunk runs past the end of the vector",
            ));
        }
        Ok(n)
    }

    fn advance(&mut self, n: usize) {
        self.started = true;
        self.next = self.next.saturating_add(n as u64);
    }

    /// Elements received so far.
    pub fn received(&self) -> u64 {
        self.next
    }

    /// Whether every element has arrived.
    pub fn is_complete(&self) -> bool {
        self.next == self.expected_len
    }
}

/// Reassembles one vector from its chunks, checking each (see [`Cursor`]).
#[derive(Debug)]
pub struct Assembler<T> {
    cursor: Cursor,
    values: Vec<T>,
}

impl<T: Element> Assembler<T> {
    /// Expects a vector of exactly `expected_len` elements for `round`.
    pub fn new(round: u64, purpose: ChunkPurpose, expected_len: u64) -> Self {
        Self {
            cursor: Cursor::new(round, purpose, expected_len),
            values: Vec::new(),
        }
    }

    /// Adds the next chunk. Returns `Ok(true)` once the vector is complete.
    pub fn push(&mut self, chunk: &VectorChunk) -> Result<bool, ChunkError> {
        let n = self.cursor.check::<T>(chunk)?;
        self.grow_for(n);
        self.cursor.advance(n);
        self.values
            .extend(chunk.data.chunks_exact(T::SIZE).map(T::get));
        Ok(self.is_complete())
    }

    /// Makes room for `n` more elements: at least doubling the buffer when
    /// it must grow (amortised O(1) per element), never past the agreed
    /// length, and never for elements that have not arrived.
    fn grow_for(&mut self, n: usize) {
        let len = self.values.len();
        let free = self.values.capacity().saturating_sub(len);
        if n <= free {
            return;
        }
        let remaining = usize::try_from(self.cursor.expected_len)
            .unwrap_or(usize::MAX)
            .saturating_sub(len);
        let want = n.max(len).min(remaining);
        self.values.reserve_exact(want);
    }

    /// Elements the assembler has room for now (its memory, in elements).
    pub fn capacity(&self) -> usize {
        self.values.capacity()
    }

    /// Whether every element has arrived.
    pub fn is_complete(&self) -> bool {
        self.cursor.is_complete()
    }

    /// The assembled vector, once complete.
    pub fn finish(self) -> Option<Vec<T>> {
        self.is_complete().then_some(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broadcast chunk cloned for every participant shares one buffer
    /// (the coordinator's memory does not grow with the cohort).
    #[test]
    fn cloned_chunks_share_their_data() {
        let values: Vec<f32> = (0..300_000).map(|i| i as f32).collect();
        let chunks = split(1, ChunkPurpose::Model, &values);
        let copies: Vec<VectorChunk> = (0..50).map(|_| chunks[0].clone()).collect();
        for c in &copies {
            assert_eq!(c.data.as_ptr(), chunks[0].data.as_ptr());
        }
    }

    /// A cursor hands out each chunk's elements with their offset and
    /// refuses what an assembler refuses (out of order, past the end,
    /// after completion), keeping nothing itself.
    #[test]
    fn cursor_decodes_chunk_by_chunk() {
        let values: Vec<u32> = (0..600_000).collect();
        let chunks = split(4, ChunkPurpose::MaskedInput, &values);
        assert!(chunks.len() > 2);
        let mut cursor = Cursor::new(4, ChunkPurpose::MaskedInput, values.len() as u64);
        assert!(matches!(
            cursor.next::<u32>(&chunks[1]),
            Err(ChunkError::OutOfOrder { expected: 0, .. })
        ));
        let mut got = Vec::new();
        for c in &chunks {
            let (offset, part) = cursor.next::<u32>(c).unwrap();
            assert_eq!(offset as usize, got.len());
            got.extend(part);
        }
        assert_eq!(got, values);
        assert!(cursor.is_complete());
        assert_eq!(
            cursor.next::<u32>(&chunks[0]),
            Err(ChunkError::AlreadyComplete)
        );
    }

    #[test]
    fn round_trip_large_vector() {
        let values: Vec<f32> = (0..600_000).map(|i| i as f32 * 0.5).collect();
        let chunks = split(7, ChunkPurpose::Model, &values);
        assert_eq!(chunks.len(), 600_000usize.div_ceil(SEND_CHUNK_BYTES / 4));
        assert!(chunks.iter().all(|c| c.data.len() <= SEND_CHUNK_BYTES));
        let mut asm = Assembler::<f32>::new(7, ChunkPurpose::Model, values.len() as u64);
        let mut done = false;
        for c in &chunks {
            done = asm.push(c).unwrap();
        }
        assert!(done);
        assert_eq!(asm.finish().unwrap(), values);
    }

    #[test]
    fn rejects_bad_chunks() {
        // Two chunks (inputs are split in 32 KiB wire frames).
        let values: Vec<u32> = (0..12_000).collect();
        let chunks = split(3, ChunkPurpose::MaskedInput, &values);
        assert_eq!(chunks.len(), 2);
        let mut asm = Assembler::<u32>::new(3, ChunkPurpose::MaskedInput, 12_000);
        assert!(matches!(
            asm.push(&chunks[1]),
            Err(ChunkError::OutOfOrder { expected: 0, .. })
        ));
        let mut wrong_round = chunks[0].clone();
        wrong_round.round = 2;
        assert!(matches!(
            asm.push(&wrong_round),
            Err(ChunkError::WrongRound { .. })
        ));
        let mut wrong_total = chunks[0].clone();
        wrong_total.total = 10;
        assert!(matches!(
            asm.push(&wrong_total),
            Err(ChunkError::WrongLength { .. })
        ));
        let mut ragged = chunks[0].clone();
        ragged.data.truncate(ragged.data.len() - 1);
        assert!(matches!(asm.push(&ragged), Err(ChunkError::Malformed(_))));
        let mut model = chunks[0].clone();
        model.purpose = ChunkPurpose::Model as i32;
        assert!(matches!(
            asm.push(&model),
            Err(ChunkError::WrongPurpose { .. })
        ));
        assert!(!asm.push(&chunks[0]).unwrap());
        assert!(asm.push(&chunks[1]).unwrap());
        assert!(matches!(
            asm.push(&chunks[1]),
            Err(ChunkError::AlreadyComplete)
        ));
        assert_eq!(asm.finish().unwrap(), values);
    }

    #[test]
    fn rejects_overrun_and_handles_empty() {
        let chunks = split(1, ChunkPurpose::Model, &[1.0f32; 10]);
        let mut asm = Assembler::<f32>::new(1, ChunkPurpose::Model, 10);
        let mut long = chunks[0].clone();
        long.data = [&long.data[..], &[0; 4]].concat().into();
        assert!(matches!(asm.push(&long), Err(ChunkError::Malformed(_))));

        let mut empty_data = chunks[0].clone();
        empty_data.data.clear();
        assert!(matches!(
            asm.push(&empty_data),
            Err(ChunkError::Malformed(_))
        ));

        let empty = split::<f32>(1, ChunkPurpose::Model, &[]);
        let mut asm = Assembler::<f32>::new(1, ChunkPurpose::Model, 0);
        assert!(asm.push(&empty[0]).unwrap());
        assert_eq!(asm.finish().unwrap(), Vec::<f32>::new());
    }

    /// A peer that declares a huge vector and sends nothing (or an empty
    /// chunk) costs no memory: the buffer follows the bytes received.
    #[test]
    fn memory_follows_received_bytes_not_the_declared_total() {
        let total: u64 = 100_000_000;
        let mut asm = Assembler::<u32>::new(1, ChunkPurpose::MaskedInput, total);
        let empty = VectorChunk {
            round: 1,
            purpose: ChunkPurpose::MaskedInput as i32,
            offset: 0,
            total,
            data: Default::default(),
        };
        assert!(matches!(asm.push(&empty), Err(ChunkError::Malformed(_))));
        assert_eq!(asm.capacity(), 0);
        let one = VectorChunk {
            data: vec![1, 0, 0, 0].into(),
            ..empty.clone()
        };
        assert!(!asm.push(&one).unwrap());
        assert!(asm.capacity() < 1024, "capacity {}", asm.capacity());
        // Full chunks grow it geometrically, never past the data received.
        let mut offset = 1u64;
        for _ in 0..8 {
            let data = vec![0u8; MAX_CHUNK_BYTES];
            let chunk = VectorChunk {
                offset,
                data: data.into(),
                ..empty.clone()
            };
            asm.push(&chunk).unwrap();
            offset += (MAX_CHUNK_BYTES / 4) as u64;
            assert!(
                asm.capacity() as u64 <= 2 * offset,
                "capacity {}",
                asm.capacity()
            );
        }
    }

    /// The buffer never grows past the agreed length, however it is cut.
    #[test]
    fn capacity_is_capped_by_the_agreed_length() {
        let values: Vec<u64> = (0..300_000).collect();
        let chunks = split(4, ChunkPurpose::MaskedInput, &values);
        let mut asm = Assembler::<u64>::new(4, ChunkPurpose::MaskedInput, 300_000);
        for c in &chunks {
            asm.push(c).unwrap();
            assert!(asm.capacity() <= 300_000);
        }
        assert_eq!(asm.finish().unwrap(), values);
    }
}
