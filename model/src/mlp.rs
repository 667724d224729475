//! A one-hidden-layer perceptron classifier trained by minibatch SGD.

use ndarray::linalg::{general_mat_mul, general_mat_vec_mul};
use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Slice, Zip,
};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::logistic::{bce_logit, sigmoid};
use crate::model::{Model, ModelError, Objective, TrainConfig, TrainReport};
use crate::task::ModelKind;

/// Most hidden activations (rows × hidden units) held at once, in `f32` values (32 MiB).
/// Larger minibatches and evaluations are processed in blocks of rows.
const MAX_BLOCK_VALUES: usize = 1 << 23;

/// ChaCha stream of the initialisation, so that it never shares a keystream with another
/// use of the same seed.
const INIT_STREAM: u64 = 0x6d6c_702d_696e_6974;

/// Binary classifier `p(y = 1 | x) = σ(w₂ · relu(W₁ x + b₁) + b₂)`.
///
/// For `d` inputs and `h` hidden units there are `h·(d + 2) + 1` parameters, laid out as
/// one flat `f32` vector:
///
/// | range | tensor | shape |
/// | --- | --- | --- |
/// | `[0, h·d)` | `W₁`, row-major: hidden unit `j`'s input weights are `[j·d, (j+1)·d)` | `h × d` |
/// | `[h·d, h·d + h)` | `b₁` | `h` |
/// | `[h·d + h, h·d + 2h)` | `w₂` | `h` |
/// | `h·d + 2h` | `b₂` | scalar |
///
/// Initialisation ([`MlpClassifier::init_params`]) is seeded and deterministic: `W₁` is He
/// uniform, `U(−√(6/d), √(6/d))`, suited to ReLU; `w₂` is Glorot uniform,
/// `U(−√(6/(h+1)), √(6/(h+1)))`; the biases are zero. Random weights (not zeros) are what
/// lets the hidden units learn different features.
///
/// Training runs minibatch SGD on the mean binary cross-entropy of each batch, in `f32`
/// matrix products over the flat parameter vector (no per-example allocation; the
/// activations of at most 2²³ values live at once), with the examples shuffled each epoch
/// by a ChaCha8 generator seeded from [`TrainConfig::seed`], so a call is deterministic for
/// a seed. Losses are accumulated in `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpClassifier {
    input_dim: usize,
    hidden: usize,
    params: Vec<f32>,
}

/// Read-only views of the four tensors inside a flat parameter vector.
struct Parts<'a> {
    w1: ArrayView2<'a, f32>,
    b1: ArrayView1<'a, f32>,
    w2: ArrayView1<'a, f32>,
    b2: f32,
}

/// Mutable views of the four tensors inside a flat parameter (or gradient) vector.
struct PartsMut<'a> {
    w1: ArrayViewMut2<'a, f32>,
    b1: ArrayViewMut1<'a, f32>,
    w2: ArrayViewMut1<'a, f32>,
    b2: &'a mut f32,
}

fn parts(p: &[f32], d: usize, h: usize) -> Parts<'_> {
    let (w1, rest) = p.split_at(h * d);
    let (b1, rest) = rest.split_at(h);
    let (w2, rest) = rest.split_at(h);
    Parts {
        w1: ArrayView2::from_shape((h, d), w1).expect("layout checked by the caller"),
        b1: ArrayView1::from(b1),
        w2: ArrayView1::from(w2),
        b2: rest[0],
    }
}

fn parts_mut(p: &mut [f32], d: usize, h: usize) -> PartsMut<'_> {
    let (w1, rest) = p.split_at_mut(h * d);
    let (b1, rest) = rest.split_at_mut(h);
    let (w2, rest) = rest.split_at_mut(h);
    PartsMut {
        w1: ArrayViewMut2::from_shape((h, d), w1).expect("layout checked by the caller"),
        b1: ArrayViewMut1::from(b1),
        w2: ArrayViewMut1::from(w2),
        b2: &mut rest[0],
    }
}

/// Hidden activations `relu(x W₁ᵀ + b₁)` of a block of rows, written into `a` (rows × h).
fn hidden_layer(p: &Parts<'_>, x: &ArrayView2<'_, f32>, a: &mut ArrayViewMut2<'_, f32>) {
    general_mat_mul(1.0, x, &p.w1.t(), 0.0, a);
    for mut row in a.rows_mut() {
        Zip::from(&mut row)
            .and(&p.b1)
            .for_each(|v, &b| *v = (*v + b).max(0.0));
    }
}

impl MlpClassifier {
    /// A model for `input_dim` inputs and `hidden` hidden units, initialised from `seed`
    /// (see [`MlpClassifier::init_params`]).
    ///
    /// # Panics
    /// If `input_dim` or `hidden` is zero.
    pub fn new(input_dim: usize, hidden: usize, seed: u64) -> Self {
        MlpClassifier {
            input_dim,
            hidden,
            params: Self::init_params(input_dim, hidden, seed),
        }
    }

    /// Number of parameters for `input_dim` inputs and `hidden` units: `hidden·(input_dim + 2) + 1`.
    pub fn param_count(input_dim: usize, hidden: usize) -> usize {
        hidden
            .saturating_mul(input_dim.saturating_add(2))
            .saturating_add(1)
    }

    /// The seeded initial parameters (layout and distributions in the type docs): the same
    /// `seed` and sizes always give the same vector.
    ///
    /// # Panics
    /// If `input_dim` or `hidden` is zero.
    pub fn init_params(input_dim: usize, hidden: usize, seed: u64) -> Vec<f32> {
        assert!(
            input_dim > 0 && hidden > 0,
            "an MLP needs inputs and hidden units"
        );
        let (d, h) = (input_dim, hidden);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(INIT_STREAM);
        let mut p = vec![0.0f32; Self::param_count(d, h)];
        let he = (6.0 / d as f64).sqrt() as f32;
        for v in &mut p[..h * d] {
            *v = rng.random_range(-he..he);
        }
        let glorot = (6.0 / (h + 1) as f64).sqrt() as f32;
        for v in &mut p[h * d + h..h * d + 2 * h] {
            *v = rng.random_range(-glorot..glorot);
        }
        p
    }

    /// Width of the hidden layer.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    fn check_x(&self, x: &Array2<f64>) {
        assert_eq!(
            x.ncols(),
            self.input_dim,
            "the MLP expects {} inputs",
            self.input_dim
        );
    }

    /// Rows per block of activations for at most `max_rows` rows.
    fn block_rows(&self, max_rows: usize) -> usize {
        (MAX_BLOCK_VALUES / self.hidden).clamp(1, max_rows.max(1))
    }

    /// Logits `w₂ · relu(W₁ x + b₁) + b₂` of every row of `x`, in blocks of rows.
    fn logits(&self, x: &Array2<f64>) -> Array1<f64> {
        self.check_x(x);
        let n = x.nrows();
        let p = parts(&self.params, self.input_dim, self.hidden);
        let block = self.block_rows(n);
        let mut act = Array2::<f32>::zeros((block, self.hidden));
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            let xb = x
                .slice_axis(Axis(0), Slice::from(start..end))
                .mapv(|v| v as f32);
            let mut a = act.slice_axis_mut(Axis(0), Slice::from(..end - start));
            hidden_layer(&p, &xb.view(), &mut a);
            out.extend(a.dot(&p.w2).iter().map(|z| f64::from(z + p.b2)));
        }
        Array1::from(out)
    }

    /// Adds to `grad` (same layout as the parameters) the gradient of
    /// `Σ_rows BCE / denom` over the rows of the block `x` with labels `y`, using `act`
    /// (at least rows × h) as scratch; returns the summed loss of the block.
    fn accumulate_gradient(
        &self,
        x: &ArrayView2<'_, f32>,
        y: &[f64],
        denom: f64,
        act: &mut Array2<f32>,
        grad: &mut [f32],
    ) -> f64 {
        let (d, h) = (self.input_dim, self.hidden);
        let m = x.nrows();
        let p = parts(&self.params, d, h);
        let mut a = act.slice_axis_mut(Axis(0), Slice::from(..m));
        hidden_layer(&p, x, &mut a);
        let z = a.dot(&p.w2);
        let mut loss = 0.0;
        let dz: Array1<f32> = z
            .iter()
            .zip(y)
            .map(|(z, &y)| {
                let z = f64::from(z + p.b2);
                loss += bce_logit(z, y);
                ((sigmoid(z) - y) / denom) as f32
            })
            .collect();
        let mut g = parts_mut(grad, d, h);
        // Output layer: ∂/∂w₂ = Aᵀ dz, ∂/∂b₂ = Σ dz.
        general_mat_vec_mul(1.0, &a.t(), &dz, 1.0, &mut g.w2);
        *g.b2 += dz.sum();
        // Back through the ReLU, in place: δ[i, j] = dz[i] · w₂[j] where the unit was active.
        for (mut row, &dzi) in a.rows_mut().into_iter().zip(&dz) {
            Zip::from(&mut row)
                .and(&p.w2)
                .for_each(|v, &w| *v = if *v > 0.0 { dzi * w } else { 0.0 });
        }
        // Hidden layer: ∂/∂W₁ = δᵀ X, ∂/∂b₁ = δᵀ 1.
        general_mat_mul(1.0, &a.t(), x, 1.0, &mut g.w1);
        general_mat_vec_mul(1.0, &a.t(), &Array1::<f32>::ones(m), 1.0, &mut g.b1);
        loss
    }

    /// Mean binary cross-entropy over all rows of `x` and its gradient with respect to the
    /// parameters (same layout), as one full-batch step of [`Model::train`] would use it.
    ///
    /// # Panics
    /// If `x` has the wrong number of columns or `y` the wrong length.
    pub fn loss_and_gradient(&self, x: &Array2<f64>, y: &Array1<f64>) -> (f64, Vec<f32>) {
        self.check_x(x);
        assert_eq!(x.nrows(), y.len(), "one label per row");
        let n = x.nrows();
        let mut grad = vec![0.0f32; self.params.len()];
        if n == 0 {
            return (f64::NAN, grad);
        }
        let x32 = x.mapv(|v| v as f32);
        let block = self.block_rows(n);
        let mut act = Array2::<f32>::zeros((block, self.hidden));
        let ys = y.to_vec();
        let mut loss = 0.0;
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            loss += self.accumulate_gradient(
                &x32.slice_axis(Axis(0), Slice::from(start..end)),
                &ys[start..end],
                n as f64,
                &mut act,
                &mut grad,
            );
        }
        (loss / n as f64, grad)
    }

    /// Probability of the positive class for each row of `x`.
    pub fn predict_proba(&self, x: &Array2<f64>) -> Array1<f64> {
        self.logits(x).mapv(sigmoid)
    }
}

impl Model for MlpClassifier {
    fn objective(&self) -> Objective {
        Objective::Binary
    }

    fn predict(&self, x: &Array2<f64>) -> Array2<f64> {
        self.predict_proba(x).insert_axis(ndarray::Axis(1))
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Mlp {
            hidden: self.hidden,
        }
    }

    fn input_dim(&self) -> usize {
        self.input_dim
    }

    fn num_params(&self) -> usize {
        self.params.len()
    }

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn set_params(&mut self, p: &[f32]) -> Result<(), ModelError> {
        crate::model::replace_params(&mut self.params, p)
    }

    fn train(&mut self, x: &Array2<f64>, y: &Array1<f64>, cfg: &TrainConfig) -> TrainReport {
        self.check_x(x);
        assert_eq!(x.nrows(), y.len(), "one label per row");
        let n = x.nrows();
        let mut report = TrainReport {
            epochs: cfg.epochs,
            steps: 0,
            examples: 0,
            last_epoch_loss: f64::NAN,
        };
        if n == 0 || cfg.epochs == 0 {
            return report;
        }
        let batch = cfg.effective_batch(n);
        let d = self.input_dim;
        let x32 = x.mapv(|v| v as f32);
        let block = self.block_rows(batch);
        let mut act = Array2::<f32>::zeros((block, self.hidden));
        let mut xb = Array2::<f32>::zeros((block, d));
        let mut yb = vec![0.0f64; block];
        let mut grad = vec![0.0f32; self.params.len()];
        let lr = cfg.learning_rate as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            for chunk in order.chunks(batch) {
                grad.fill(0.0);
                for rows in chunk.chunks(block) {
                    for (r, &i) in rows.iter().enumerate() {
                        xb.row_mut(r).assign(&x32.row(i));
                        yb[r] = y[i];
                    }
                    let m = rows.len();
                    loss_sum += self.accumulate_gradient(
                        &xb.slice_axis(Axis(0), Slice::from(..m)),
                        &yb[..m],
                        chunk.len() as f64,
                        &mut act,
                        &mut grad,
                    );
                }
                for (w, g) in self.params.iter_mut().zip(&grad) {
                    *w -= lr * g;
                }
                report.steps += 1;
            }
            report.examples += n as u64;
            report.last_epoch_loss = loss_sum / n as f64;
        }
        report
    }

    fn loss(&self, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
        assert_eq!(x.nrows(), y.len(), "one label per row");
        if y.is_empty() {
            return f64::NAN;
        }
        let z = self.logits(x);
        z.iter().zip(y).map(|(z, y)| bce_logit(*z, *y)).sum::<f64>() / y.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogisticRegression;
    use ndarray::array;

    #[test]
    fn layout_and_initialisation() {
        let m = MlpClassifier::new(3, 5, 7);
        assert_eq!(m.num_params(), 5 * 5 + 1);
        assert_eq!(MlpClassifier::param_count(3, 5), 26);
        assert_eq!(m.kind(), ModelKind::Mlp { hidden: 5 });
        let p = m.params();
        let he = (6.0f32 / 3.0).sqrt();
        assert!(p[..15].iter().all(|v| v.abs() <= he));
        assert!(p[..15].iter().any(|v| *v != 0.0));
        assert!(p[15..20].iter().all(|v| *v == 0.0), "b1 starts at zero");
        let glorot = (6.0f32 / 6.0).sqrt();
        assert!(p[20..25].iter().all(|v| v.abs() <= glorot && *v != 0.0));
        assert_eq!(p[25], 0.0);
        // Deterministic for a seed, different across seeds.
        assert_eq!(MlpClassifier::new(3, 5, 7), m);
        assert_ne!(MlpClassifier::new(3, 5, 8).params(), p);
        // Hidden units do not start identical (symmetry is broken).
        let w1 = ArrayView2::from_shape((5, 3), &p[..15]).unwrap();
        for j in 1..5 {
            assert_ne!(w1.row(0), w1.row(j));
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = array![
            [0.5, -1.0, 0.3],
            [1.5, 2.0, -0.7],
            [-0.3, 0.7, 1.1],
            [0.9, -0.2, -1.4],
            [-1.2, 0.4, 0.2]
        ];
        let y = array![1.0, 0.0, 1.0, 0.0, 1.0];
        let mut m = MlpClassifier::new(3, 4, 11);
        // Non-zero biases so that every parameter has a gradient to check.
        let mut p = m.params().to_vec();
        for (k, v) in p[12..16].iter_mut().enumerate() {
            *v = 0.1 * (k as f32 + 1.0);
        }
        p[20] = -0.2;
        m.set_params(&p).unwrap();
        let (loss, grad) = m.loss_and_gradient(&x, &y);
        assert!((loss - m.loss(&x, &y)).abs() < 1e-6);
        for k in 0..m.num_params() {
            let h = 1e-2f32;
            let mut q = p.clone();
            q[k] += h;
            let mut plus = m.clone();
            plus.set_params(&q).unwrap();
            q[k] -= 2.0 * h;
            let mut minus = m.clone();
            minus.set_params(&q).unwrap();
            let fd = (plus.loss(&x, &y) - minus.loss(&x, &y)) / (2.0 * f64::from(h));
            let g = f64::from(grad[k]);
            assert!(
                (fd - g).abs() < 2e-3 * (1.0 + g.abs()),
                "param {k}: finite difference {fd} vs gradient {g}"
            );
        }
        // One full-batch SGD step is exactly params − lr · gradient.
        let lr = 0.05;
        let mut stepped = m.clone();
        stepped.train(
            &x,
            &y,
            &TrainConfig {
                epochs: 1,
                learning_rate: lr,
                batch_size: 0,
                seed: 3,
            },
        );
        for k in 0..m.num_params() {
            let want = p[k] - lr as f32 * grad[k];
            assert!((stepped.params()[k] - want).abs() < 1e-6, "param {k}");
        }
    }

    #[test]
    fn blocks_give_the_same_answers_as_one_pass() {
        // Wide enough that evaluation and training split rows into several blocks.
        let hidden = MAX_BLOCK_VALUES / 7 + 1;
        let m = MlpClassifier::new(2, hidden, 1);
        assert!(m.block_rows(20) < 20);
        let x = Array2::from_shape_fn((20, 2), |(i, j)| (i as f64 - 10.0) / 7.0 + j as f64);
        let y = Array1::from_shape_fn(20, |i| (i % 2) as f64);
        let z = m.logits(&x);
        let p = parts(m.params(), 2, hidden);
        for i in [0, 7, 19] {
            let xi = x.row(i).mapv(|v| v as f32);
            let a = p.w1.dot(&xi) + p.b1;
            let zi: f32 = a.mapv(|v| v.max(0.0)).dot(&p.w2) + p.b2;
            assert!((z[i] - f64::from(zi)).abs() < 1e-4, "row {i}");
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
        let cfg = TrainConfig {
            epochs: 60,
            learning_rate: 0.3,
            batch_size: 16,
            seed: 2,
        };
        let mut mlp = MlpClassifier::new(2, 16, 1);
        let rep = mlp.train(&x, &y, &cfg);
        assert_eq!(rep.steps, 60 * 25);
        assert!(rep.last_epoch_loss < 0.1, "loss {}", rep.last_epoch_loss);
        assert!(
            mlp.accuracy(&x, &y) > 0.98,
            "MLP accuracy {}",
            mlp.accuracy(&x, &y)
        );
        let mut logistic = LogisticRegression::new(2);
        logistic.train(&x, &y, &cfg);
        assert!(
            logistic.accuracy(&x, &y) < 0.8,
            "logistic accuracy {}",
            logistic.accuracy(&x, &y)
        );
        // Deterministic for the seeds.
        let mut again = MlpClassifier::new(2, 16, 1);
        again.train(&x, &y, &cfg);
        assert_eq!(again, mlp);
    }

    #[test]
    fn set_params_round_trips_and_refuses_bad_vectors() {
        let a = MlpClassifier::new(4, 3, 1);
        let mut b = MlpClassifier::new(4, 3, 2);
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
        let mut m = MlpClassifier::new(2, 3, 1);
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
        assert!(
            m.accuracy(&Array2::zeros((0, 2)), &Array1::zeros(0))
                .is_nan()
        );
    }
}
