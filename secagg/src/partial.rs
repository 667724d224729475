//! Masked inputs that arrive in parts: each part is folded into the running
//! sum as soon as it arrives, and kept (compactly) only until its input is
//! complete, so that an input that stops half-way can be taken out again.
//!
//! Memory: the sum (one vector) plus the parts of the inputs still
//! arriving — nothing once an input is complete. A participant that stops
//! mid-upload is withdrawn before the masked-input stage closes: its parts
//! are subtracted and it counts as dropped, as if it had sent nothing.

use std::collections::BTreeMap;

use crate::{Error, Violation};

/// What folding a part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More parts are expected.
    Partial,
    /// The input is complete: every element is in the sum exactly once.
    Complete,
}

/// A folded part, kept to be subtracted again if its input never completes.
#[derive(Debug)]
enum Kept {
    /// Elements below 2^32, stored as 32-bit words.
    Narrow(usize, Box<[u32]>),
    /// Wider elements.
    Wide(usize, Box<[u64]>),
}

/// The inputs still arriving: who, how far, and their parts.
#[derive(Debug)]
pub(crate) struct Partials {
    dim: usize,
    modulus: u64,
    open: BTreeMap<u32, (usize, Vec<Kept>)>,
}

impl Partials {
    /// No input arriving yet, for vectors of `dim` elements at most `modulus`.
    pub(crate) fn new(dim: usize, modulus: u64) -> Self {
        Self {
            dim,
            modulus,
            open: BTreeMap::new(),
        }
    }

    /// Whether `from` has sent part of its input but not all of it.
    #[cfg(test)]
    pub(crate) fn is_open(&self, from: u32) -> bool {
        self.open.contains_key(&from)
    }

    /// Elements held for unfinished inputs (their memory, in elements).
    pub(crate) fn held(&self) -> usize {
        self.open
            .values()
            .flat_map(|(_, parts)| parts)
            .map(|k| match k {
                Kept::Narrow(_, v) => v.len(),
                Kept::Wide(_, v) => v.len(),
            })
            .sum()
    }

    /// Adds `values`, the elements of `from`'s input starting at `offset`,
    /// to `sum`. Parts must arrive in order, without gaps or overlaps, and
    /// not run past the end; every element must be at most the modulus. A
    /// refused part leaves `sum` and the state unchanged.
    pub(crate) fn fold(
        &mut self,
        sum: &mut [u64],
        from: u32,
        offset: usize,
        values: &[u64],
    ) -> Result<Progress, Error> {
        let next = self.open.get(&from).map_or(0, |(next, _)| *next);
        if offset != next {
            return Err(Violation::OutOfOrder {
                expected: next,
                got: offset,
            }
            .into());
        }
        let end = offset.saturating_add(values.len());
        let target = match sum.get_mut(offset..end) {
            Some(t) if !values.is_empty() && end <= self.dim => t,
            _ => {
                return Err(Violation::WrongLength {
                    expected: self.dim,
                    got: end,
                }
                .into());
            }
        };
        fold_checked(target, values, self.modulus).map_err(|index| {
            Error::from(Violation::ValueOutOfRange {
                index: offset.saturating_add(index),
            })
        })?;
        if end == self.dim {
            self.open.remove(&from);
            return Ok(Progress::Complete);
        }
        let kept = if self.modulus <= u64::from(u32::MAX) {
            // Every value was checked to be at most the modulus.
            Kept::Narrow(offset, values.iter().map(|&v| v as u32).collect())
        } else {
            Kept::Wide(offset, values.into())
        };
        let entry = self.open.entry(from).or_insert_with(|| (0, Vec::new()));
        entry.0 = end;
        entry.1.push(kept);
        Ok(Progress::Partial)
    }

    /// Takes `from`'s unfinished input out of `sum`; whether it had one.
    pub(crate) fn withdraw(&mut self, sum: &mut [u64], from: u32) -> bool {
        let Some((_, parts)) = self.open.remove(&from) else {
            return false;
        };
        for part in parts {
            match part {
                Kept::Narrow(at, v) => subtract(sum, at, v.iter().map(|&x| u64::from(x))),
                Kept::Wide(at, v) => subtract(sum, at, v.iter().copied()),
            }
        }
        true
    }

    /// Withdraws every unfinished input; returns whose.
    pub(crate) fn withdraw_all(&mut self, sum: &mut [u64]) -> Vec<u32> {
        let open: Vec<u32> = self.open.keys().copied().collect();
        for &u in &open {
            self.withdraw(sum, u);
        }
        open
    }

    /// Forgets every unfinished input (the round is over).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }
}

fn subtract(sum: &mut [u64], at: usize, values: impl Iterator<Item = u64>) {
    for (s, v) in sum.iter_mut().skip(at).zip(values) {
        *s = s.wrapping_sub(v);
    }
}

/// sum += values (wrapping), block by block in one pass, checking that every
/// value is at most `modulus`; on a bad value (its index is the error) the
/// blocks already added are subtracted again, so the sum is unchanged.
pub(crate) fn fold_checked(sum: &mut [u64], values: &[u64], modulus: u64) -> Result<(), usize> {
    const B: usize = 4096;
    for (bi, (s, v)) in sum.chunks_mut(B).zip(values.chunks(B)).enumerate() {
        if v.iter().fold(0u64, |a, &x| a | x) > modulus {
            let index = bi * B + v.iter().position(|&x| x > modulus).unwrap_or(0);
            for (s, v) in sum.iter_mut().take(bi * B).zip(values) {
                *s = s.wrapping_sub(*v);
            }
            return Err(index);
        }
        for (s, x) in s.iter_mut().zip(v) {
            *s = s.wrapping_add(*x);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_checked_rolls_back() {
        let mut sum: Vec<u64> = (0..10_000u64).map(|i| i * 7 % 256).collect();
        let before = sum.clone();
        let mut values = vec![1u64; 10_000];
        values[9_000] = 256;
        assert_eq!(fold_checked(&mut sum, &values, 255), Err(9_000));
        assert_eq!(sum, before);
        values[9_000] = 1;
        fold_checked(&mut sum, &values, 255).unwrap();
        assert_eq!(sum[0], 1);
        assert_eq!(sum[9_000], before[9_000] + 1);
    }

    /// Parts fold into the sum at once; an unfinished input is held until
    /// withdrawn, which restores the sum exactly; a complete one is not held.
    #[test]
    fn parts_fold_at_once_and_unfinished_inputs_withdraw_exactly() {
        let dim = 10;
        let modulus = u64::from(u32::MAX);
        let mut p = Partials::new(dim, modulus);
        let mut sum = vec![5u64; dim];
        let a: Vec<u64> = (0..dim as u64)
            .map(|i| i * 1_000_000_007 % modulus)
            .collect();
        assert_eq!(p.fold(&mut sum, 1, 0, &a[..4]).unwrap(), Progress::Partial);
        assert_eq!(p.fold(&mut sum, 2, 0, &a[..6]).unwrap(), Progress::Partial);
        assert_eq!(p.held(), 10);
        assert_eq!(p.fold(&mut sum, 1, 4, &a[4..]).unwrap(), Progress::Complete);
        assert!(!p.is_open(1));
        assert_eq!(p.held(), 6);
        assert_eq!(p.withdraw_all(&mut sum), vec![2]);
        let want: Vec<u64> = a.iter().map(|v| v + 5).collect();
        assert_eq!(sum, want);
        assert_eq!(p.held(), 0);
    }

    /// Out-of-order, overlapping, empty, too long and out-of-range parts are
    /// refused and change nothing.
    #[test]
    fn bad_parts_change_nothing() {
        let mut p = Partials::new(8, 255);
        let mut sum = vec![0u64; 8];
        p.fold(&mut sum, 1, 0, &[1, 1, 1]).unwrap();
        let before = sum.clone();
        let refused = [
            (2, vec![1u64]),
            (0, vec![1]),
            (3, vec![]),
            (3, vec![1; 6]),
            (3, vec![1, 256]),
        ];
        for (offset, values) in refused {
            assert!(
                p.fold(&mut sum, 1, offset, &values).is_err(),
                "{offset} {values:?}"
            );
            assert_eq!(sum, before);
        }
        assert!(matches!(
            p.fold(&mut sum, 1, 3, &[1, 256]),
            Err(Error::ProtocolViolation(Violation::ValueOutOfRange {
                index: 4
            }))
        ));
        assert_eq!(p.held(), 3);
    }
}
