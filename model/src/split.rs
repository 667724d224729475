//! Seeded, stratified splitting of rows: the test holdout and IID dealing to sites.
//!
//! Both functions take one key per row (the label value) and a seed, and return row
//! indices. Rows are grouped by key (groups in key order), each group is shuffled with a
//! ChaCha8 generator seeded by `seed`, and the results are returned in ascending row order,
//! so the output depends only on the keys and the seed.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The default share of each site's rows held out for testing.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

fn shuffled_groups<K: Ord + Clone>(keys: &[K], rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k.clone()).or_default().push(i);
    }
    groups
        .into_values()
        .map(|mut g| {
            g.shuffle(rng);
            g
        })
        .collect()
}

/// Splits rows into `(train, test)`: from each key's rows, `round(len · test_fraction)`
/// chosen at random go to the test set. `test_fraction` is clamped to `[0, 1]` (NaN → 0).
pub fn stratified_holdout<K: Ord + Clone>(
    keys: &[K],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let f = if test_fraction.is_nan() {
        0.0
    } else {
        test_fraction.clamp(0.0, 1.0)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for g in shuffled_groups(keys, &mut rng) {
        let n_test = ((g.len() as f64 * f).round() as usize).min(g.len());
        test.extend_from_slice(&g[..n_test]);
        train.extend_from_slice(&g[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Deals rows to `n_sites` sites, IID and stratified: each key's rows are shuffled, the
/// groups are laid end to end, and row `k` of that sequence goes to site `k mod n_sites`.
/// Site sizes differ by at most one, and so do their counts of each key.
pub fn deal_stratified<K: Ord + Clone>(keys: &[K], n_sites: usize, seed: u64) -> Vec<Vec<usize>> {
    if n_sites == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sites = vec![Vec::new(); n_sites];
    for (k, i) in shuffled_groups(keys, &mut rng)
        .into_iter()
        .flatten()
        .enumerate()
    {
        sites[k % n_sites].push(i);
    }
    for s in &mut sites {
        s.sort_unstable();
    }
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_stratified_and_seeded() {
        let keys: Vec<u8> = (0..100).map(|i| u8::from(i % 4 == 0)).collect();
        let (train, test) = stratified_holdout(&keys, 0.2, 7);
        assert_eq!(test.len(), 20);
        assert_eq!(test.iter().filter(|&&i| keys[i] == 1).count(), 5);
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(
            stratified_holdout(&keys, 0.2, 7),
            (train.clone(), test.clone())
        );
        assert_ne!(stratified_holdout(&keys, 0.2, 8).1, test);
        assert_eq!(stratified_holdout(&keys, f64::NAN, 1).1.len(), 0);
    }

    #[test]
    fn dealing_balances_sizes_and_classes() {
        let keys: Vec<u8> = (0..103).map(|i| u8::from(i % 3 == 0)).collect();
        let sites = deal_stratified(&keys, 10, 1);
        let sizes: Vec<usize> = sites.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 103);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        let pos: Vec<usize> = sites
            .iter()
            .map(|s| s.iter().filter(|&&i| keys[i] == 1).count())
            .collect();
        assert!(pos.iter().max().unwrap() - pos.iter().min().unwrap() <= 1);
        assert_eq!(deal_stratified(&keys, 10, 1), sites);
        assert!(deal_stratified(&keys, 0, 1).is_empty());
    }
}
