//! Binary logistic regression trained by minibatch SGD.

use ndarray::{Array1, Array2, ArrayView1};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::model::{Model, ModelError, Objective, TrainConfig, TrainReport};
use crate::task::ModelKind;

/// Logistic regression `p(y = 1 | x) = σ(w·x + b)`.
///
/// Parameters are `[w_0, …, w_{d−1}, b]` as `f32` (the `weight` `[1, d]` and `bias` `[1]`
/// of [`crate::layout`]), zero at start. Training runs minibatch SGD on the mean binary
/// cross-entropy of each batch (plus [`TrainConfig::weight_decay`] on `w`), in `f64`, with
/// the examples shuffled each epoch by a ChaCha8 generator seeded from
/// [`TrainConfig::seed`], so a call is deterministic for a seed.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticRegression {
    params: Vec<f32>,
}

impl LogisticRegression {
    /// A zero-initialised model for `input_dim` inputs (`input_dim + 1` parameters).
    pub fn new(input_dim: usize) -> Self {
        LogisticRegression {
            params: vec![0.0; input_dim + 1],
        }
    }

    fn weights_f64(&self) -> (Array1<f64>, f64) {
        let d = self.params.len() - 1;
        let w = Array1::from_iter(self.params[..d].iter().map(|&v| f64::from(v)));
        (w, f64::from(self.params[d]))
    }

    fn check_x(&self, x: &Array2<f64>) {
        assert_eq!(
            x.ncols(),
            self.input_dim(),
            "logistic regression expects {} inputs",
            self.input_dim()
        );
    }

    /// Probability of the positive class for each row of `x`.
    pub fn predict_proba(&self, x: &Array2<f64>) -> Array1<f64> {
        self.check_x(x);
        let (w, b) = self.weights_f64();
        x.dot(&w).mapv(|z| sigmoid(z + b))
    }
}

/// Numerically stable logistic function.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy of logit `z` against label `y`, stable for large `|z|`.
pub(crate) fn bce_logit(z: f64, y: f64) -> f64 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

impl Model for LogisticRegression {
    fn objective(&self) -> Objective {
        Objective::Binary
    }

    fn predict(&self, x: &Array2<f64>) -> Array2<f64> {
        self.predict_proba(x).insert_axis(ndarray::Axis(1))
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Logistic
    }

    fn input_dim(&self) -> usize {
        self.params.len() - 1
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
        let (mut w, mut b) = self.weights_f64();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            for chunk in order.chunks(batch) {
                let mut gw = Array1::<f64>::zeros(w.len());
                let mut gb = 0.0;
                for &i in chunk {
                    let row: ArrayView1<f64> = x.row(i);
                    let z = row.dot(&w) + b;
                    loss_sum += bce_logit(z, y[i]);
                    let err = sigmoid(z) - y[i];
                    gw.scaled_add(err, &row);
                    gb += err;
                }
                let step = cfg.learning_rate / chunk.len() as f64;
                if cfg.weight_decay > 0.0 {
                    w *= 1.0 - cfg.learning_rate * cfg.weight_decay;
                }
                w.scaled_add(-step, &gw);
                b -= step * gb;
                report.steps += 1;
            }
            report.examples += n as u64;
            report.last_epoch_loss = loss_sum / n as f64;
        }
        let d = w.len();
        for (dst, src) in self.params[..d].iter_mut().zip(w.iter()) {
            *dst = *src as f32;
        }
        self.params[d] = b as f32;
        report
    }

    fn loss(&self, x: &Array2<f64>, y: &Array1<f64>) -> f64 {
        self.check_x(x);
        if y.is_empty() {
            return f64::NAN;
        }
        let (w, b) = self.weights_f64();
        let z = x.dot(&w);
        z.iter()
            .zip(y)
            .map(|(z, y)| bce_logit(z + b, *y))
            .sum::<f64>()
            / y.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Axis, array};

    #[test]
    fn stable_loss_and_sigmoid() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(800.0) <= 1.0);
        assert!((bce_logit(0.0, 1.0) - 2f64.ln()).abs() < 1e-12);
        assert!(bce_logit(-800.0, 1.0).is_finite());
        assert!(bce_logit(800.0, 1.0) < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = array![[0.5, -1.0], [1.5, 2.0], [-0.3, 0.7]];
        let y = array![1.0, 0.0, 1.0];
        let mut m = LogisticRegression::new(2);
        m.set_params(&[0.2, -0.1, 0.05]).unwrap();
        let before = m.clone();
        // One full-batch step with lr: new = old - lr * grad.
        let lr = 1e-3;
        m.train(
            &x,
            &y,
            &TrainConfig {
                epochs: 1,
                learning_rate: lr,
                batch_size: 0,
                seed: 1,
                weight_decay: 0.0,
            },
        );
        for k in 0..3 {
            let mut plus = before.clone();
            let mut minus = before.clone();
            let h = 1e-3f32;
            let mut p = before.params().to_vec();
            p[k] += h;
            plus.set_params(&p).unwrap();
            p[k] -= 2.0 * h;
            minus.set_params(&p).unwrap();
            let g = (plus.loss(&x, &y) - minus.loss(&x, &y)) / (2.0 * f64::from(h));
            let step = f64::from(before.params()[k] - m.params()[k]) / lr;
            assert!((g - step).abs() < 1e-3, "param {k}: {g} vs {step}");
        }
    }

    #[test]
    fn learns_a_separable_problem_deterministically() {
        let x = Array2::from_shape_fn((200, 2), |(i, j)| {
            ((i * 7 + j * 13) % 17) as f64 / 8.5 - 1.0
        });
        let y = x.map_axis(Axis(1), |r| if r[0] + 0.5 * r[1] > 0.0 { 1.0 } else { 0.0 });
        let cfg = TrainConfig {
            epochs: 50,
            learning_rate: 0.5,
            batch_size: 8,
            seed: 3,
            weight_decay: 0.0,
        };
        let mut a = LogisticRegression::new(2);
        let rep = a.train(&x, &y, &cfg);
        assert_eq!(rep.steps, 50 * 25);
        assert!(a.accuracy(&x, &y) > 0.95);
        let mut b = LogisticRegression::new(2);
        b.train(&x, &y, &cfg);
        assert_eq!(a, b);
        assert!(matches!(
            a.set_params(&[1.0]),
            Err(ModelError::ParamLength {
                expected: 3,
                got: 1
            })
        ));
        assert!(matches!(
            a.set_params(&[1.0, f32::NAN, 0.0]),
            Err(ModelError::NonFinite { index: 1 })
        ));
    }
}
