//! Multinomial (softmax) regression and linear regression, trained by minibatch SGD.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::model::{Model, ModelError, Objective, TrainConfig, TrainReport};
use crate::task::ModelKind;

/// `z = W x + b` with `k` outputs: softmax probabilities for a multi-class task
/// (`softmax`), the prediction itself for a regression (`linear`).
///
/// Parameters are `W` (`k × d`, row-major, one row per output) then `b` (`k`), as
/// `f32`, zero at start (see [`crate::layout`]). Training runs minibatch SGD in `f64` on
/// the mean cross-entropy (multi-class) or half the mean squared error (regression) of
/// each batch, plus the weight decay of [`TrainConfig::weight_decay`], with the examples
/// shuffled each epoch by a ChaCha8 generator seeded from [`TrainConfig::seed`], so a call
/// is deterministic for a seed. [`Model::loss`] is the mean cross-entropy, or the mean
/// squared error.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    objective: Objective,
    input_dim: usize,
    params: Vec<f32>,
}

/// Numerically stable softmax of `z` in place; returns `log Σ exp(z)`.
pub(crate) fn softmax_in_place(z: &mut [f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
    max + sum.ln()
}

impl LinearModel {
    /// A zero-initialised model for `input_dim` inputs.
    ///
    /// # Panics
    /// For a binary objective: that is [`crate::LogisticRegression`].
    pub fn new(objective: Objective, input_dim: usize) -> Self {
        assert!(
            objective != Objective::Binary,
            "a binary linear model is LogisticRegression"
        );
        let k = objective.outputs();
        LinearModel {
            objective,
            input_dim,
            params: vec![0.0; k * (input_dim + 1)],
        }
    }

    fn outputs(&self) -> usize {
        self.objective.outputs()
    }

    fn weights(&self) -> (Array2<f64>, Array1<f64>) {
        let (k, d) = (self.outputs(), self.input_dim);
        let w = Array2::from_shape_fn((k, d), |(i, j)| f64::from(self.params[i * d + j]));
        let b = Array1::from_shape_fn(k, |i| f64::from(self.params[k * d + i]));
        (w, b)
    }

    fn check_x(&self, x: &ArrayView2<'_, f64>) {
        assert_eq!(
            x.ncols(),
            self.input_dim,
            "the linear model expects {} inputs",
            self.input_dim
        );
    }

    /// Turns a row of pre-activations into outputs; returns its loss against `y`
    /// and, through `z`, the gradient of that loss with respect to the pre-activations.
    fn link(&self, z: &mut [f64], y: f64) -> f64 {
        match self.objective {
            Objective::Multiclass { .. } => {
                let lse = softmax_in_place(z);
                let c = y as usize;
                let zc = z[c].ln() + lse;
                // z now holds probabilities; the gradient is p − onehot(y).
                z[c] -= 1.0;
                lse - zc
            }
            _ => {
                let e = z[0] - y;
                z[0] = e;
                e * e
            }
        }
    }
}

impl Model for LinearModel {
    fn kind(&self) -> ModelKind {
        match self.objective {
            Objective::Regression => ModelKind::Linear,
            _ => ModelKind::Softmax,
        }
    }

    fn objective(&self) -> Objective {
        self.objective
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
        self.check_x(&x.view());
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
        let (k, d) = (self.outputs(), self.input_dim);
        let batch = cfg.effective_batch(n);
        let (mut w, mut b) = self.weights();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut z = vec![0.0; k];
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            for chunk in order.chunks(batch) {
                let mut gw = Array2::<f64>::zeros((k, d));
                let mut gb = Array1::<f64>::zeros(k);
                for &i in chunk {
                    let row = x.row(i);
                    for (c, zc) in z.iter_mut().enumerate() {
                        *zc = w.row(c).dot(&row) + b[c];
                    }
                    loss_sum += self.link(&mut z, y[i]);
                    for (c, &dz) in z.iter().enumerate() {
                        gw.row_mut(c).scaled_add(dz, &row);
                        gb[c] += dz;
                    }
                }
                let step = cfg.learning_rate / chunk.len() as f64;
                if cfg.weight_decay > 0.0 {
                    w *= 1.0 - cfg.learning_rate * cfg.weight_decay;
                }
                w.scaled_add(-step, &gw);
                b.scaled_add(-step, &gb);
                report.steps += 1;
            }
            report.examples += n as u64;
            report.last_epoch_loss = loss_sum / n as f64;
        }
        for (dst, src) in self.params[..k * d].iter_mut().zip(w.iter()) {
            *dst = *src as f32;
        }
        for (dst, src) in self.params[k * d..].iter_mut().zip(b.iter()) {
            *dst = *src as f32;
        }
        report
    }

    fn predict(&self, x: &Array2<f64>) -> Array2<f64> {
        self.check_x(&x.view());
        let (w, b) = self.weights();
        let mut z = x.dot(&w.t()) + &b.insert_axis(Axis(0));
        if let Objective::Multiclass { .. } = self.objective {
            for mut row in z.rows_mut() {
                softmax_in_place(row.as_slice_mut().expect("a standard-layout row"));
            }
        }
        z
    }

    fn loss(&self, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
        self.check_x(&x.view());
        if y.is_empty() {
            return f64::NAN;
        }
        let (w, b) = self.weights();
        let z = x.dot(&w.t()) + &b.insert_axis(Axis(0));
        let mut buf = vec![0.0; self.outputs()];
        let mut total = 0.0;
        for (row, &yi) in z.rows().into_iter().zip(y) {
            buf.copy_from_slice(row.as_slice().expect("a standard-layout row"));
            total += self.link(&mut buf, yi);
        }
        total / y.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn full_batch(lr: f64, decay: f64) -> TrainConfig {
        TrainConfig {
            epochs: 1,
            learning_rate: lr,
            batch_size: 0,
            seed: 1,
            weight_decay: decay,
        }
    }

    /// One full-batch step equals `p − lr·∇loss` (finite differences), for both objectives.
    #[test]
    fn gradient_matches_finite_differences() {
        let x = array![[0.5, -1.0], [1.5, 2.0], [-0.3, 0.7], [0.2, 0.1]];
        for (objective, y, p) in [
            (
                Objective::Multiclass { classes: 3 },
                array![0.0, 2.0, 1.0, 2.0],
                vec![0.2, -0.1, 0.05, 0.3, -0.2, 0.4, 0.1, -0.3, 0.2],
            ),
            (
                Objective::Regression,
                array![1.0, -2.0, 0.5, 3.0],
                vec![0.2, -0.1, 0.05],
            ),
        ] {
            let mut m = LinearModel::new(objective, 2);
            m.set_params(&p).unwrap();
            let before = m.clone();
            let lr = 1e-3;
            m.train(&x, &y, &full_batch(lr, 0.0));
            // Regression trains on half the squared error, whose gradient is half the MSE's.
            let scale = if objective == Objective::Regression {
                0.5
            } else {
                1.0
            };
            for k in 0..p.len() {
                let h = 1e-3f32;
                let mut q = p.clone();
                q[k] += h;
                let mut plus = before.clone();
                plus.set_params(&q).unwrap();
                q[k] -= 2.0 * h;
                let mut minus = before.clone();
                minus.set_params(&q).unwrap();
                let g = scale * (plus.loss(&x, &y) - minus.loss(&x, &y)) / (2.0 * f64::from(h));
                let step = f64::from(p[k] - m.params()[k]) / lr;
                assert!(
                    (g - step).abs() < 2e-3,
                    "{objective:?} param {k}: {g} vs {step}"
                );
            }
        }
    }

    #[test]
    fn weight_decay_shrinks_weights_not_biases() {
        let x = array![[1.0, 0.0]];
        let y = array![0.0];
        let mut m = LinearModel::new(Objective::Regression, 2);
        m.set_params(&[1.0, 0.0, 0.0]).unwrap();
        // Prediction 1, error 1: the weight moves by −lr·(1 + λ·1), the bias by −lr·1.
        m.train(&x, &y, &full_batch(0.1, 0.5));
        assert!((m.params()[0] - 0.85).abs() < 1e-6, "{:?}", m.params());
        assert!((m.params()[2] + 0.1).abs() < 1e-7);
    }

    #[test]
    fn learns_three_classes_and_a_line() {
        let n = 300;
        let x = Array2::from_shape_fn((n, 2), |(i, j)| ((i * 7 + j * 13) % 23) as f64 / 11.5 - 1.0);
        let y = x.map_axis(Axis(1), |r| {
            if r[0] > 0.3 {
                2.0
            } else if r[1] > 0.0 {
                1.0
            } else {
                0.0
            }
        });
        let cfg = TrainConfig {
            epochs: 60,
            learning_rate: 0.5,
            batch_size: 16,
            seed: 2,
            weight_decay: 0.0,
        };
        let mut m = LinearModel::new(Objective::Multiclass { classes: 3 }, 2);
        m.train(&x, &y, &cfg);
        assert!(m.accuracy(&x, &y) > 0.9, "{}", m.accuracy(&x, &y));
        let p = m.predict(&x);
        assert!(p.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-9));
        let t = x.map_axis(Axis(1), |r| 3.0 * r[0] - 2.0 * r[1] + 0.5);
        let mut r = LinearModel::new(Objective::Regression, 2);
        r.train(
            &x,
            &t,
            &TrainConfig {
                learning_rate: 0.1,
                ..cfg
            },
        );
        assert!(r.loss(&x, &t) < 1e-6, "{}", r.loss(&x, &t));
        assert_eq!(r.kind(), ModelKind::Linear);
        let mut again = LinearModel::new(Objective::Regression, 2);
        again.train(
            &x,
            &t,
            &TrainConfig {
                learning_rate: 0.1,
                ..cfg
            },
        );
        assert_eq!(again, r);
    }
}
