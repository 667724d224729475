//! A multi-layer perceptron (ReLU hidden layers) for binary, multi-class and regression
//! tasks, trained by minibatch SGD.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Slice, Zip};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kind::Hidden;
use crate::linear::softmax_in_place;
use crate::logistic::{bce_logit, sigmoid};
use crate::model::{Model, ModelError, Objective, TrainConfig, TrainReport};
use crate::task::ModelKind;

/// Most activations (rows × units of every layer) held at once, in `f32` values (32 MiB).
/// Larger minibatches and evaluations are processed in blocks of rows.
const MAX_BLOCK_VALUES: usize = 1 << 23;

/// ChaCha stream of the initialisation, so that it never shares a keystream with another
/// use of the same seed.
const INIT_STREAM: u64 = 0x6d6c_702d_696e_6974;

/// `d` inputs → hidden layers `h₁, …, h_L` (ReLU) → `k` outputs: the sigmoid of one
/// logit (binary), the softmax of `k` logits (multi-class) or one value (regression).
///
/// The parameters are one flat `f32` vector, layer after layer, each layer's weight
/// (`out × in`, row-major: unit `j`'s input weights are a row) then its bias: the
/// `layers.i.weight`, `layers.i.bias` of [`crate::layout`]. For one hidden layer of `h`
/// units and a binary task that is `W₁` (`h × d`), `b₁` (`h`), `w₂` (`h`), `b₂`: `h·(d + 2)
/// + 1` values.
///
/// Initialisation ([`Mlp::init_params`]) is seeded and deterministic: hidden weights are
/// He uniform, `U(−√(6/fan_in), √(6/fan_in))`, suited to ReLU; the output weights are
/// Glorot uniform, `U(−√(6/(fan_in + fan_out)), …)`; the biases are zero. Random weights
/// (not zeros) are what lets the hidden units learn different features.
///
/// Training runs minibatch SGD on the mean loss of each batch (binary or multi-class
/// cross-entropy; half the squared error for regression, whose reported loss is the
/// squared error) plus the weight decay of
/// [`TrainConfig::weight_decay`] on the weights, in `f32` matrix products over the flat
/// parameter vector (activations of at most 2²³ values live at once), with the examples
/// shuffled each epoch by a ChaCha8 generator seeded from [`TrainConfig::seed`], so a call
/// is deterministic for a seed. Losses are accumulated in `f64`; [`Model::loss`] is the
/// mean cross-entropy, or the mean squared error.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Layer sizes: inputs, hidden widths, outputs.
    sizes: Vec<usize>,
    objective: Objective,
    params: Vec<f32>,
}

/// Where layer `l`'s weight and bias start in the flat vector.
fn offsets(sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut at = 0;
    sizes
        .windows(2)
        .map(|w| {
            let weight = at;
            at += w[0] * w[1];
            let bias = at;
            at += w[1];
            (weight, bias)
        })
        .collect()
}

fn layer_sizes(input_dim: usize, hidden: &[usize], objective: Objective) -> Vec<usize> {
    let mut sizes = Vec::with_capacity(hidden.len() + 2);
    sizes.push(input_dim);
    sizes.extend_from_slice(hidden);
    sizes.push(objective.outputs());
    sizes
}

impl Mlp {
    /// A model for `input_dim` inputs and hidden layers of these widths, initialised from
    /// `seed` (see [`Mlp::init_params`]).
    ///
    /// # Panics
    /// If `input_dim` is zero, or there is no hidden layer or one of width zero.
    pub fn new(input_dim: usize, hidden: &[usize], objective: Objective, seed: u64) -> Self {
        Mlp {
            sizes: layer_sizes(input_dim, hidden, objective),
            objective,
            params: Self::init_params(input_dim, hidden, objective, seed),
        }
    }

    /// Number of parameters (saturating).
    pub fn param_count(input_dim: usize, hidden: &[usize], objective: Objective) -> usize {
        layer_sizes(input_dim, hidden, objective)
            .windows(2)
            .fold(0usize, |a, w| {
                a.saturating_add(w[1].saturating_mul(w[0].saturating_add(1)))
            })
    }

    /// The seeded initial parameters (layout and distributions in the type docs): the same
    /// arguments always give the same vector.
    ///
    /// # Panics
    /// If `input_dim` is zero, or there is no hidden layer or one of width zero.
    pub fn init_params(
        input_dim: usize,
        hidden: &[usize],
        objective: Objective,
        seed: u64,
    ) -> Vec<f32> {
        assert!(
            input_dim > 0 && !hidden.is_empty() && hidden.iter().all(|&h| h > 0),
            "an MLP needs inputs and hidden units"
        );
        let sizes = layer_sizes(input_dim, hidden, objective);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(INIT_STREAM);
        let mut p = vec![0.0f32; Self::param_count(input_dim, hidden, objective)];
        let last = sizes.len() - 2;
        for (l, ((weight, _), w)) in offsets(&sizes)
            .into_iter()
            .zip(sizes.windows(2))
            .enumerate()
        {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = if l == last {
                (6.0 / (fan_in + fan_out) as f64).sqrt()
            } else {
                (6.0 / fan_in as f64).sqrt()
            } as f32;
            for v in &mut p[weight..weight + fan_in * fan_out] {
                *v = rng.random_range(-bound..bound);
            }
        }
        p
    }

    /// The hidden widths.
    pub fn hidden(&self) -> &[usize] {
        &self.sizes[1..self.sizes.len() - 1]
    }

    fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    fn weight(&self, l: usize) -> ArrayView2<'_, f32> {
        let (w, _) = offsets(&self.sizes)[l];
        let (i, o) = (self.sizes[l], self.sizes[l + 1]);
        ArrayView2::from_shape((o, i), &self.params[w..w + o * i]).expect("layout by construction")
    }

    fn bias(&self, l: usize) -> ArrayView1<'_, f32> {
        let (_, b) = offsets(&self.sizes)[l];
        ArrayView1::from(&self.params[b..b + self.sizes[l + 1]])
    }

    fn check_x(&self, x: &Array2<f64>) {
        assert_eq!(
            x.ncols(),
            self.sizes[0],
            "the MLP expects {} inputs",
            self.sizes[0]
        );
    }

    /// Rows per block of activations for at most `max_rows` rows.
    fn block_rows(&self, max_rows: usize) -> usize {
        let units: usize = self.sizes[1..].iter().sum();
        (MAX_BLOCK_VALUES / units.max(1)).clamp(1, max_rows.max(1))
    }

    /// The activations of every layer for a block of rows: `acts[l]` is layer `l + 1`'s
    /// output (ReLU for hidden layers, the raw pre-activations for the last).
    fn forward(&self, x: &ArrayView2<'_, f32>) -> Vec<Array2<f32>> {
        let mut acts: Vec<Array2<f32>> = Vec::with_capacity(self.layers());
        for l in 0..self.layers() {
            let input = if l == 0 { x.view() } else { acts[l - 1].view() };
            let mut a = Array2::<f32>::zeros((input.nrows(), self.sizes[l + 1]));
            general_mat_mul(1.0, &input, &self.weight(l).t(), 0.0, &mut a);
            let b = self.bias(l);
            let hidden = l + 1 < self.layers();
            for mut row in a.rows_mut() {
                Zip::from(&mut row).and(&b).for_each(|v, &bj| {
                    *v += bj;
                    if hidden {
                        *v = v.max(0.0);
                    }
                });
            }
            acts.push(a);
        }
        acts
    }

    /// Loss of one row of pre-activations `z` against `y`; leaves in `z` the gradient of
    /// the training loss with respect to them.
    fn output_loss(&self, z: &mut [f64], y: f64) -> f64 {
        match self.objective {
            Objective::Binary => {
                let loss = bce_logit(z[0], y);
                z[0] = sigmoid(z[0]) - y;
                loss
            }
            Objective::Multiclass { .. } => {
                let lse = softmax_in_place(z);
                let c = y as usize;
                let loss = lse - (z[c].ln() + lse);
                z[c] -= 1.0;
                loss
            }
            Objective::Regression => {
                let e = z[0] - y;
                z[0] = e;
                e * e
            }
        }
    }

    /// Adds to `grad` (same layout as the parameters) the gradient of
    /// `Σ_rows loss / denom` over the block `x` with labels `y`; returns the summed loss
    /// of the block (cross-entropy, or squared error).
    fn accumulate_gradient(
        &self,
        x: &ArrayView2<'_, f32>,
        y: &[f64],
        denom: f64,
        grad: &mut [f32],
    ) -> f64 {
        let mut acts = self.forward(x);
        let k = self.objective.outputs();
        let mut loss = 0.0;
        let mut dz = acts.pop().expect("at least one layer");
        let mut buf = vec![0.0f64; k];
        for (mut row, &yi) in dz.rows_mut().into_iter().zip(y) {
            for (b, v) in buf.iter_mut().zip(row.iter()) {
                *b = f64::from(*v);
            }
            loss += self.output_loss(&mut buf, yi);
            for (v, b) in row.iter_mut().zip(&buf) {
                *v = (b / denom) as f32;
            }
        }
        let offs = offsets(&self.sizes);
        for l in (0..self.layers()).rev() {
            let input = if l == 0 { x.view() } else { acts[l - 1].view() };
            let (wo, bo) = offs[l];
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            {
                let (gw, gb) = grad[wo..bo + o].split_at_mut(o * i);
                let mut gw = ArrayViewMut2::from_shape((o, i), gw).expect("layout");
                general_mat_mul(1.0, &dz.t(), &input, 1.0, &mut gw);
                for (g, s) in gb.iter_mut().zip(dz.sum_axis(Axis(0))) {
                    *g += s;
                }
            }
            if l > 0 {
                // Back through the ReLU: δ = (dz W) ⊙ 1[a > 0].
                let mut da = dz.dot(&self.weight(l));
                Zip::from(&mut da).and(&acts[l - 1]).for_each(|d, &a| {
                    if a <= 0.0 {
                        *d = 0.0;
                    }
                });
                dz = da;
            }
        }
        loss
    }

    /// Mean loss over all rows of `x` (as [`Model::loss`]) and the gradient of the mean
    /// training loss (half the squared error for regression) with respect to the parameters (same layout), as one full-batch step
    /// of [`Model::train`] without weight decay would use it.
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
        let ys = y.to_vec();
        let mut loss = 0.0;
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            loss += self.accumulate_gradient(
                &x32.slice_axis(Axis(0), Slice::from(start..end)),
                &ys[start..end],
                n as f64,
                &mut grad,
            );
        }
        (loss / n as f64, grad)
    }

    /// The raw outputs (pre-activations of the last layer) of every row, in blocks.
    fn raw_outputs(&self, x: &Array2<f64>) -> Array2<f64> {
        self.check_x(x);
        let n = x.nrows();
        let k = self.objective.outputs();
        let block = self.block_rows(n);
        let mut out = Array2::<f64>::zeros((n, k));
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            let xb = x
                .slice_axis(Axis(0), Slice::from(start..end))
                .mapv(|v| v as f32);
            let z = self.forward(&xb.view()).pop().expect("at least one layer");
            out.slice_axis_mut(Axis(0), Slice::from(start..end))
                .assign(&z.mapv(f64::from));
        }
        out
    }
}

impl Model for Mlp {
    fn objective(&self) -> Objective {
        self.objective
    }

    fn predict(&self, x: &Array2<f64>) -> Array2<f64> {
        let mut z = self.raw_outputs(x);
        match self.objective {
            Objective::Binary => z.mapv_inplace(sigmoid),
            Objective::Multiclass { .. } => {
                for mut row in z.rows_mut() {
                    softmax_in_place(row.as_slice_mut().expect("a standard-layout row"));
                }
            }
            Objective::Regression => {}
        }
        z
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Mlp {
            hidden: Hidden::new(self.hidden()).expect("checked when built"),
        }
    }

    fn input_dim(&self) -> usize {
        self.sizes[0]
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
        let d = self.sizes[0];
        let x32 = x.mapv(|v| v as f32);
        let block = self.block_rows(batch);
        let mut xb = Array2::<f32>::zeros((block, d));
        let mut yb = vec![0.0f64; block];
        let mut grad = vec![0.0f32; self.params.len()];
        let lr = cfg.learning_rate as f32;
        let decay = cfg.weight_decay as f32;
        let weights = offsets(&self.sizes);
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
                        &mut grad,
                    );
                }
                if decay > 0.0 {
                    for &(w, b) in &weights {
                        for (g, p) in grad[w..b].iter_mut().zip(&self.params[w..b]) {
                            *g += decay * p;
                        }
                    }
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
        let z = self.raw_outputs(x);
        let mut buf = vec![0.0; self.objective.outputs()];
        let mut total = 0.0;
        for (row, &yi) in z.rows().into_iter().zip(y) {
            buf.iter_mut().zip(row).for_each(|(b, v)| *b = *v);
            total += self.output_loss(&mut buf, yi);
        }
        total / y.len() as f64
    }
}

#[cfg(test)]
mod tests;
