//! Tests of federated statistics and the pooled preprocessing (`stats.rs`).

use super::*;
use ndarray::{Array1, array};

fn ds(x: Array2<f64>) -> Dataset {
    let n = x.nrows();
    let d = x.ncols();
    Dataset::new(
        (0..d).map(|j| format!("f{j}")).collect(),
        x,
        Array1::zeros(n),
    )
    .unwrap()
}

#[test]
fn vector_round_trip_and_length_checks() {
    let s = LocalStats::compute(&ds(array![[1.0, f64::NAN], [3.0, 4.0]]));
    assert_eq!(s.rows, 2.0);
    assert_eq!(s.present, vec![2.0, 1.0]);
    assert_eq!(s.sum, vec![4.0, 4.0]);
    assert_eq!(s.sum_sq, vec![10.0, 16.0]);
    assert_eq!(s.missing, vec![0.0, 1.0]);
    let v = s.to_vector();
    assert_eq!(v.len(), LocalStats::vector_len(2));
    assert_eq!(LocalStats::from_vector(&v, 2).unwrap(), s);
    assert!(LocalStats::from_vector(&v[1..], 2).is_err());
    let mut bad = v.clone();
    bad[3] = f64::NAN;
    assert!(LocalStats::from_vector(&bad, 2).is_err());
}

#[test]
fn preprocessor_imputes_standardises_and_flags() {
    let s = LocalStats::compute(&ds(array![[1.0, 5.0], [3.0, 5.0], [f64::NAN, 5.0]]));
    let p = Preprocessor::from_pooled(&s).unwrap();
    assert_eq!(p.mean, vec![2.0, 5.0]);
    assert_eq!(p.std, vec![1.0, 1.0]); // second has zero variance -> 1
    assert_eq!(p.indicator, vec![true, false]);
    assert_eq!(p.output_dim(), 3);
    let t = p.transform(&array![[3.0, 6.0], [f64::NAN, 5.0]]);
    assert_eq!(t, array![[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
}

#[test]
fn preprocessor_tolerates_noise() {
    let s = LocalStats {
        rows: -3.0,
        present: vec![-2.0, 10.0, 10.0],
        sum: vec![5.0, 10.0, 100.0],
        sum_sq: vec![1.0, 5.0, 2000.0],
        missing: vec![-0.5, 0.2, 0.0],
    };
    let p = Preprocessor::from_pooled(&s).unwrap();
    assert_eq!((p.mean[0], p.std[0]), (0.0, 1.0));
    assert_eq!((p.mean[1], p.std[1]), (1.0, 1.0)); // negative variance -> std 1
    assert_eq!((p.mean[2], p.std[2]), (10.0, 10.0));
    assert_eq!(p.indicator, vec![false, true, false]);
    assert!(p.std.iter().all(|s| s.is_finite() && *s > 0.0));
}

#[test]
fn bounded_stats_are_bounded_and_invertible() {
    let b = StatsBounds::new(&[(0.0, 10.0), (-1.0, 1.0)], 2.0).unwrap();
    let data = ds(array![[2.0, 0.5], [4.0, f64::NAN]]);
    let bs = LocalStats::compute_bounded(&data, &b).unwrap();
    let raw = b.to_raw(&bs).unwrap();
    let exact = LocalStats::compute(&data);
    for (a, e) in raw.to_vector().iter().zip(exact.to_vector()) {
        assert!((a - e).abs() < 1e-12, "{a} vs {e}");
    }
    // Worst case: many rows at the bounds, all present -> norm reaches but never exceeds.
    let big = ds(Array2::from_shape_fn((50, 2), |(_, j)| {
        if j == 0 { 1e6 } else { -1e6 }
    }));
    let v = LocalStats::compute_bounded(&big, &b).unwrap().to_vector();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm <= l2_sensitivity(&b, 2) + 1e-9, "{norm}");
    assert!(norm > 0.99 * l2_sensitivity(&b, 2));
    assert!(StatsBounds::new(&[(1.0, 1.0)], 1.0).is_err());
    assert!(StatsBounds::new(&[(0.0, 1.0)], 0.0).is_err());
    assert!(
        LocalStats::compute_bounded(&data, &StatsBounds::new(&[(0.0, 1.0)], 1.0).unwrap()).is_err()
    );
}

#[test]
fn bounded_preprocessor_clamps_and_shrinks_noise() {
    let b = StatsBounds::new(&[(0.0, 10.0), (0.0, 10.0)], 100.0).unwrap();
    let noisy = LocalStats {
        rows: 50.0,
        present: vec![0.3, 40.0],
        sum: vec![3.0, 400.0],
        sum_sq: vec![1.0, 90000.0],
        missing: vec![1.0, 0.0],
    };
    let p = Preprocessor::from_pooled_bounded(&noisy, &b, 0.0).unwrap();
    let prior_std = 5.0 / 3f64.sqrt();
    assert_eq!((p.mean[0], p.std[0]), (5.0, prior_std));
    assert_eq!((p.mean[1], p.std[1]), (10.0, prior_std));
    assert_eq!(p.indicator, vec![true, false]);
    // Without noise it is the exact preprocessing of the (clipped) data.
    let data = ds(array![[2.0, 9.0], [4.0, f64::NAN], [7.0, 1.0]]);
    let exact = Preprocessor::from_pooled(&LocalStats::compute(&data)).unwrap();
    let bs = LocalStats::compute_bounded(&data, &b).unwrap();
    let p = Preprocessor::from_pooled_bounded(&bs, &b, 0.0).unwrap();
    for j in 0..2 {
        assert!((p.mean[j] - exact.mean[j]).abs() < 1e-12);
        assert!((p.std[j] - exact.std[j]).abs() < 1e-12);
    }
    assert_eq!(p.indicator, exact.indicator);
    // Overwhelming noise gives range scaling.
    let p = Preprocessor::from_pooled_bounded(&bs, &b, 1e9).unwrap();
    let r = Preprocessor::from_bounds(&b);
    for j in 0..2 {
        assert!((p.mean[j] - r.mean[j]).abs() < 1e-6 && (p.std[j] - r.std[j]).abs() < 1e-6);
    }
    assert!(Preprocessor::from_pooled_bounded(&bs, &b, f64::NAN).is_err());
}
