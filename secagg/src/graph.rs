//! The SecAgg+ neighbour graph (Bell et al. 2020, §3.1 and §5): a Harary
//! graph H(n, k) — a ring in which every node is joined to the k/2 nearest
//! nodes on each side — whose node labels are permuted uniformly at random.
//! The permutation is drawn from the public graph seed and the round number,
//! so every party derives the same graph. For a fixed participant its k
//! neighbours are then a uniformly random k-subset of the others, the
//! property the parameter bounds in [`crate::params`] rely on. With
//! k = n − 1 the graph is complete (plain Bonawitz et al. 2017).

use std::collections::{BTreeMap, BTreeSet};

use aes::Aes128;
use ctr::Ctr32BE;
use ctr::cipher::{KeyIvInit, StreamCipher};

use crate::kdf::graph_stream_seed;
use crate::params::RoundParams;

/// The neighbour relation of one round.
#[derive(Clone, Debug)]
pub(crate) struct Graph {
    /// Participants in ring order.
    ring: Vec<u32>,
    /// Participant -> position in `ring`.
    pos: BTreeMap<u32, usize>,
    degree: usize,
}

struct Stream(Ctr32BE<Aes128>);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.write_keystream(&mut b);
        u64::from_le_bytes(b)
    }

    /// Uniform in [0, m) by rejection (m >= 1).
    fn below(&mut self, m: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % m);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % m;
            }
        }
    }
}

impl Graph {
    /// Builds the graph of validated `params` from their `graph_seed`.
    pub(crate) fn new(params: &RoundParams) -> Self {
        Self::with_seed(params, &params.graph_seed)
    }

    /// Builds the graph of validated `params` from `graph_seed` (the seed
    /// derived from the advertised keys in a signed-key round).
    pub(crate) fn with_seed(params: &RoundParams, graph_seed: &[u8; 32]) -> Self {
        let mut ring = params.participants.clone();
        let n = ring.len();
        if params.neighbours < n.saturating_sub(1) {
            let seed = graph_stream_seed(graph_seed, params.round);
            let mut key = [0u8; 16];
            key.copy_from_slice(&seed[..16]);
            let mut iv = [0u8; 16];
            iv[..12].copy_from_slice(&seed[16..28]);
            let mut s = Stream(Ctr32BE::<Aes128>::new(&key.into(), &iv.into()));
            // Fisher–Yates.
            for i in (1..n).rev() {
                let j = s.below(i as u64 + 1) as usize;
                ring.swap(i, j);
            }
        }
        let pos = ring.iter().enumerate().map(|(i, &u)| (u, i)).collect();
        Graph {
            ring,
            pos,
            degree: params.neighbours,
        }
    }

    /// Sorted neighbours of `u` (empty if `u` is not a participant).
    pub(crate) fn neighbours(&self, u: u32) -> Vec<u32> {
        let Some(&p) = self.pos.get(&u) else {
            return Vec::new();
        };
        let n = self.ring.len();
        let mut out: Vec<u32> = if self.degree >= n - 1 {
            self.ring.iter().copied().filter(|&v| v != u).collect()
        } else {
            let half = self.degree / 2;
            (1..=half)
                .flat_map(|j| [self.ring.get((p + j) % n), self.ring.get((p + n - j) % n)])
                .flatten()
                .copied()
                .collect()
        };
        out.sort_unstable();
        out
    }

    /// Removes from `set`, until none is left, members with fewer than `t`
    /// neighbours in the set (they could not receive t shares).
    pub(crate) fn prune(&self, set: BTreeSet<u32>, t: usize) -> BTreeSet<u32> {
        prune(set, t, |u| self.neighbours(u))
    }

    /// Whether `u` and `v` are neighbours.
    #[cfg(test)]
    pub(crate) fn are_neighbours(&self, u: u32, v: u32) -> bool {
        let (Some(&a), Some(&b)) = (self.pos.get(&u), self.pos.get(&v)) else {
            return false;
        };
        if a == b {
            return false;
        }
        let n = self.ring.len();
        if self.degree >= n - 1 {
            return true;
        }
        let d = a.abs_diff(b);
        d.min(n - d) <= self.degree / 2
    }
}

/// Removes, until none is left, members with fewer than `t` neighbours in the set.
pub(crate) fn prune(
    mut set: BTreeSet<u32>,
    t: usize,
    adj: impl Fn(u32) -> Vec<u32>,
) -> BTreeSet<u32> {
    loop {
        let weak: Vec<u32> = set
            .iter()
            .copied()
            .filter(|&u| adj(u).iter().filter(|v| set.contains(v)).count() < t)
            .collect();
        if weak.is_empty() {
            return set;
        }
        for u in weak {
            set.remove(&u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u32, k: usize, seed: u8) -> RoundParams {
        RoundParams {
            round: 1,
            participants: (1..=n).collect(),
            threshold: k / 2 + 1,
            neighbours: k,
            graph_seed: [seed; 32],
            dim: 1,
            modulus_bits: 32,
            signed_keys: false,
        }
    }

    #[test]
    fn regular_symmetric_and_seeded() {
        for (n, k) in [(5u32, 4usize), (10, 4), (31, 6), (100, 20), (7, 6)] {
            let p = params(n, k, 3);
            let g = Graph::new(&p);
            for u in 1..=n {
                let nb = g.neighbours(u);
                assert_eq!(nb.len(), k, "n {n} k {k}");
                assert!(!nb.contains(&u));
                for &v in &nb {
                    assert!(g.neighbours(v).contains(&u));
                    assert!(g.are_neighbours(u, v));
                }
                let count = (1..=n).filter(|&v| g.are_neighbours(u, v)).count();
                assert_eq!(count, k);
            }
            let again = Graph::new(&p);
            assert_eq!(g.ring, again.ring);
        }
        let a = Graph::new(&params(50, 6, 1));
        let b = Graph::new(&params(50, 6, 2));
        assert_ne!(a.ring, b.ring, "different seeds give different graphs");
        assert!(Graph::new(&params(50, 6, 1)).neighbours(99).is_empty());
    }

    #[test]
    fn known_answer() {
        let g = Graph::new(&params(10, 4, 0));
        assert_eq!(
            g.neighbours(1),
            vec![4, 8, 9, 10],
            "graph derivation changed: {:?}",
            g.neighbours(1)
        );
    }
}
