//! Tests of the MLP: layout and initialisation, gradients against finite differences for
//! every objective and depth, blocks, and learning what a linear model cannot.

use ndarray::array;

use super::*;
use crate::LogisticRegression;

fn cfg(epochs: u32, lr: f64, batch: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        learning_rate: lr,
        batch_size: batch,
        seed,
        weight_decay: 0.0,
    }
}

#[test]
fn layout_and_initialisation() {
    let m = Mlp::new(3, &[5], Objective::Binary, 7);
    assert_eq!(m.num_params(), 5 * 5 + 1);
    assert_eq!(Mlp::param_count(3, &[5], Objective::Binary), 26);
    assert_eq!(m.kind(), ModelKind::mlp1(5));
    let p = m.params();
    let he = (6.0f32 / 3.0).sqrt();
    assert!(p[..15].iter().all(|v| v.abs() <= he));
    assert!(p[..15].iter().any(|v| *v != 0.0));
    assert!(p[15..20].iter().all(|v| *v == 0.0), "b1 starts at zero");
    let glorot = (6.0f32 / 6.0).sqrt();
    assert!(p[20..25].iter().all(|v| v.abs() <= glorot && *v != 0.0));
    assert_eq!(p[25], 0.0);
    // Deterministic for a seed, different across seeds.
    assert_eq!(Mlp::new(3, &[5], Objective::Binary, 7), m);
    assert_ne!(Mlp::new(3, &[5], Objective::Binary, 8).params(), p);
    // Hidden units do not start identical (symmetry is broken).
    let w1 = m.weight(0);
    for j in 1..5 {
        assert_ne!(w1.row(0), w1.row(j));
    }
    // Two hidden layers, three classes: the layout of `crate::layout`.
    let deep = Mlp::new(4, &[6, 3], Objective::Multiclass { classes: 3 }, 1);
    let layout = crate::layout::builtin(deep.kind(), Objective::Multiclass { classes: 3 }, 4);
    assert_eq!(deep.num_params(), crate::layout::total_len(&layout));
    assert_eq!(deep.weight(1).shape(), [3, 6]);
    assert_eq!(deep.weight(2).shape(), [3, 3]);
}

/// The gradient equals finite differences of the loss (the training loss is half the
/// squared error for regression), for every objective, with one and two hidden layers;
/// and one full-batch SGD step is exactly `params − lr · gradient`.
#[test]
fn gradient_matches_finite_differences() {
    let x = array![
        [0.5, -1.0, 0.3],
        [1.5, 2.0, -0.7],
        [-0.3, 0.7, 1.1],
        [0.9, -0.2, -1.4],
        [-1.2, 0.4, 0.2]
    ];
    for (objective, y) in [
        (Objective::Binary, array![1.0, 0.0, 1.0, 0.0, 1.0]),
        (
            Objective::Multiclass { classes: 3 },
            array![2.0, 0.0, 1.0, 1.0, 2.0],
        ),
        (Objective::Regression, array![0.5, -1.0, 2.0, 0.0, 1.5]),
    ] {
        for hidden in [&[4][..], &[4, 3][..]] {
            let mut m = Mlp::new(3, hidden, objective, 11);
            // Non-zero biases so that every parameter has a gradient to check.
            let mut p = m.params().to_vec();
            for (l, (_, b)) in offsets(&m.sizes).into_iter().enumerate() {
                for (k, v) in p[b..b + m.sizes[l + 1]].iter_mut().enumerate() {
                    *v = 0.1 * (k as f32 + 1.0) + 0.02 * l as f32;
                }
            }
            m.set_params(&p).unwrap();
            let scale = if objective == Objective::Regression {
                0.5
            } else {
                1.0
            };
            let (loss, grad) = m.loss_and_gradient(&x, &y);
            assert!((loss - m.loss(&x, &y)).abs() < 1e-5);
            for k in 0..m.num_params() {
                // Small enough not to cross a ReLU kink of these inputs.
                let h = 2e-3f32;
                let mut q = p.clone();
                q[k] += h;
                let mut plus = m.clone();
                plus.set_params(&q).unwrap();
                q[k] -= 2.0 * h;
                let mut minus = m.clone();
                minus.set_params(&q).unwrap();
                let fd = scale * (plus.loss(&x, &y) - minus.loss(&x, &y)) / (2.0 * f64::from(h));
                let g = f64::from(grad[k]);
                assert!(
                    (fd - g).abs() < 3e-3 * (1.0 + g.abs()),
                    "{objective:?} {hidden:?} param {k}: finite difference {fd} vs gradient {g}"
                );
            }
            let lr = 0.05;
            let mut stepped = m.clone();
            stepped.train(&x, &y, &cfg(1, lr, 0, 3));
            for k in 0..m.num_params() {
                let want = p[k] - lr as f32 * grad[k];
                assert!((stepped.params()[k] - want).abs() < 1e-6, "param {k}");
            }
        }
    }
}

#[test]
fn weight_decay_shrinks_weights_only() {
    let x = array![[0.0, 0.0]];
    let y = array![0.0];
    let mut m = Mlp::new(2, &[2], Objective::Regression, 1);
    // Zero inputs and zero biases: the loss gradient of every weight is zero, so decay
    // alone moves them, by the factor (1 − lr·λ); the biases get only the loss gradient.
    let before = m.params().to_vec();
    m.train(
        &x,
        &y,
        &TrainConfig {
            weight_decay: 0.5,
            ..cfg(1, 0.1, 0, 1)
        },
    );
    let offs = offsets(&m.sizes);
    for (w, b) in offs {
        for (k, (after, before)) in m.params()[w..b].iter().zip(&before[w..b]).enumerate() {
            assert!((after - before * 0.95).abs() < 1e-7, "weight {}", w + k);
        }
    }
}

#[test]
fn blocks_give_the_same_answers_as_one_pass() {
    // Wide enough that evaluation and training split rows into several blocks.
    let hidden = MAX_BLOCK_VALUES / 7 + 1;
    let m = Mlp::new(2, &[hidden], Objective::Binary, 1);
    assert!(m.block_rows(20) < 20);
    let x = Array2::from_shape_fn((20, 2), |(i, j)| (i as f64 - 10.0) / 7.0 + j as f64);
    let y = Array1::from_shape_fn(20, |i| (i % 2) as f64);
    let z = m.raw_outputs(&x);
    for i in [0, 7, 19] {
        let xi = x.row(i).mapv(|v| v as f32);
        let a = m.weight(0).dot(&xi) + m.bias(0);
        let zi: f32 = a.mapv(|v| v.max(0.0)).dot(&m.weight(1).row(0)) + m.bias(1)[0];
        assert!((z[[i, 0]] - f64::from(zi)).abs() < 1e-4, "row {i}");
    }
    let (loss, _) = m.loss_and_gradient(&x, &y);
    assert!((loss - m.loss(&x, &y)).abs() < 1e-5);
}

#[test]
fn learns_xor_where_logistic_regression_cannot() {
    // Four noisy clusters; the label is the XOR of the two signs.
    let n = 400;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        let sign = if (i >> j) & 1 == 1 { 1.0 } else { -1.0 };
        sign + rng.random_range(-0.5..0.5)
    });
    let y = x.map_axis(Axis(1), |r| {
        if (r[0] > 0.0) != (r[1] > 0.0) {
            1.0
        } else {
            0.0
        }
    });
    let c = cfg(60, 0.3, 16, 2);
    let mut mlp = Mlp::new(2, &[16], Objective::Binary, 1);
    let rep = mlp.train(&x, &y, &c);
    assert_eq!(rep.steps, 60 * 25);
    assert!(rep.last_epoch_loss < 0.1, "loss {}", rep.last_epoch_loss);
    assert!(
        mlp.accuracy(&x, &y) > 0.98,
        "MLP accuracy {}",
        mlp.accuracy(&x, &y)
    );
    let mut logistic = LogisticRegression::new(2);
    logistic.train(&x, &y, &c);
    assert!(logistic.accuracy(&x, &y) < 0.8);
    // Deterministic for the seeds.
    let mut again = Mlp::new(2, &[16], Objective::Binary, 1);
    again.train(&x, &y, &c);
    assert_eq!(again, mlp);
    // Two hidden layers and four classes (the quadrant) learn it too.
    let q = x.map_axis(Axis(1), |r| {
        f64::from(u8::from(r[0] > 0.0) * 2 + u8::from(r[1] > 0.0))
    });
    let mut deep = Mlp::new(2, &[16, 8], Objective::Multiclass { classes: 4 }, 3);
    deep.train(&x, &q, &c);
    assert!(deep.accuracy(&x, &q) > 0.98, "{}", deep.accuracy(&x, &q));
}

#[test]
fn set_params_round_trips_and_refuses_bad_vectors() {
    let a = Mlp::new(4, &[3], Objective::Binary, 1);
    let mut b = Mlp::new(4, &[3], Objective::Binary, 2);
    assert_ne!(a, b);
    b.set_params(a.params()).unwrap();
    assert_eq!(a, b);
    assert!(matches!(
        b.set_params(&[0.0; 3]),
        Err(ModelError::ParamLength {
            expected: 19,
            got: 3
        })
    ));
    let mut bad = a.params().to_vec();
    bad[17] = f32::INFINITY;
    assert!(matches!(
        b.set_params(&bad),
        Err(ModelError::NonFinite { index: 17 })
    ));
    assert_eq!(a, b, "a refused vector leaves the model unchanged");
}

#[test]
fn empty_data_and_zero_epochs_do_nothing() {
    let mut m = Mlp::new(2, &[3], Objective::Regression, 1);
    let before = m.clone();
    let rep = m.train(
        &Array2::zeros((0, 2)),
        &Array1::zeros(0),
        &TrainConfig::default(),
    );
    assert_eq!(rep.steps, 0);
    assert!(rep.last_epoch_loss.is_nan());
    assert_eq!(m, before);
    assert!(m.loss(&Array2::zeros((0, 2)), &Array1::zeros(0)).is_nan());
}
