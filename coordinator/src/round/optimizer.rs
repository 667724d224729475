//! The server step: how the averaged, noised update moves the global
//! model, behind one trait. FedAvg (McMahan et al. 2017) with a server
//! learning rate, FedAvg with server momentum (Hsu, Qi & Brown 2019,
//! "FedAvgM"), and the adaptive optimizers of Reddi et al. 2021 ("Adaptive
//! Federated Optimization", Algorithm 2): FedAdagrad, FedAdam and FedYogi.
//! They act on the released (noised) average only, so applying them is
//! post-processing and costs no privacy. Their state goes into every
//! checkpoint, so a restarted coordinator takes the very next step it would
//! have taken.

use serde::{Deserialize, Serialize};

/// What an optimizer needs to be restored: its name, step count and named
/// vectors.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OptimizerState {
    /// Which optimizer wrote it.
    pub name: String,
    /// Steps taken.
    pub steps: u64,
    /// Named state vectors (e.g. the momentum buffer).
    pub vectors: Vec<(String, Vec<f32>)>,
}

/// A server optimizer.
pub trait ServerOptimizer: Send + std::fmt::Debug {
    /// Name (config value and logs).
    fn name(&self) -> &'static str;

    /// Applies one round: `sum` is the decoded (noised) sum of updates, to be
    /// divided by `denominator` (fixed under DP). Returns the L2 norm of the
    /// change applied to the model.
    fn step(&mut self, model: &mut [f32], sum: &[f64], denominator: f64) -> f64;

    /// State to checkpoint.
    fn state(&self) -> OptimizerState;

    /// Restores a checkpointed state; refuses another optimizer's.
    fn restore(&mut self, state: &OptimizerState) -> Result<(), String>;
}

/// FedAvg: w ← w + η·Σ/n. Stateless.
#[derive(Debug, Clone)]
pub struct FedAvg {
    /// Server learning rate η.
    pub learning_rate: f64,
}

impl ServerOptimizer for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn step(&mut self, model: &mut [f32], sum: &[f64], denominator: f64) -> f64 {
        let mut norm_sq = 0.0;
        for (w, d) in model.iter_mut().zip(sum) {
            let step = self.learning_rate * d / denominator;
            norm_sq += step * step;
            *w += step as f32;
        }
        norm_sq.sqrt()
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            name: self.name().into(),
            ..OptimizerState::default()
        }
    }

    fn restore(&mut self, state: &OptimizerState) -> Result<(), String> {
        check_name(self.name(), state)
    }
}

/// FedAvg with server momentum: v ← β·v + Σ/n; w ← w + η·v.
#[derive(Debug, Clone)]
pub struct FedAvgMomentum {
    /// Server learning rate η.
    pub learning_rate: f64,
    /// Momentum β in [0, 1).
    pub momentum: f64,
    velocity: Vec<f32>,
    steps: u64,
}

impl FedAvgMomentum {
    /// A fresh optimizer (zero velocity).
    pub fn new(learning_rate: f64, momentum: f64) -> Self {
        Self {
            learning_rate,
            momentum,
            velocity: Vec::new(),
            steps: 0,
        }
    }
}

impl ServerOptimizer for FedAvgMomentum {
    fn name(&self) -> &'static str {
        "fedavgm"
    }

    fn step(&mut self, model: &mut [f32], sum: &[f64], denominator: f64) -> f64 {
        if self.velocity.len() != model.len() {
            self.velocity = vec![0.0; model.len()];
        }
        let mut norm_sq = 0.0;
        for ((w, v), d) in model.iter_mut().zip(&mut self.velocity).zip(sum) {
            let next = self.momentum * f64::from(*v) + d / denominator;
            *v = next as f32;
            let step = self.learning_rate * next;
            norm_sq += step * step;
            *w += step as f32;
        }
        self.steps += 1;
        norm_sq.sqrt()
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            name: self.name().into(),
            steps: self.steps,
            vectors: vec![("velocity".into(), self.velocity.clone())],
        }
    }

    fn restore(&mut self, state: &OptimizerState) -> Result<(), String> {
        check_name(self.name(), state)?;
        self.steps = state.steps;
        self.velocity = state
            .vectors
            .iter()
            .find(|(n, _)| n == "velocity")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Ok(())
    }
}

fn check_name(expected: &str, state: &OptimizerState) -> Result<(), String> {
    if state.name == expected {
        Ok(())
    } else {
        Err(format!(
            "the checkpointed optimizer state is `{}`, this federation runs `{expected}`",
            state.name
        ))
    }
}

/// Reddi et al.'s adaptive server optimizers differ only in how they update
/// the second-moment estimate v.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adaptivity {
    /// v ← v + Δ² (FedAdagrad).
    Adagrad,
    /// v ← β₂·v + (1 − β₂)·Δ² (FedAdam).
    Adam,
    /// v ← v − (1 − β₂)·Δ²·sign(v − Δ²) (FedYogi).
    Yogi,
}

/// FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2), with Δ
/// the released average update:
/// m ← β₁·m + (1 − β₁)·Δ; v as [`Adaptivity`] says; w ← w + η·m / (√v + τ).
/// m starts at 0 and v at τ² (the paper asks v₋₁ ≥ τ²); no bias correction,
/// as in the paper. τ (the "adaptivity") bounds the step of a coordinate by
/// about η·|m|/τ.
#[derive(Debug, Clone)]
pub struct AdaptiveOptimizer {
    /// Which second-moment rule.
    pub adaptivity: Adaptivity,
    /// Server learning rate η.
    pub learning_rate: f64,
    /// β₁ of the first moment.
    pub beta1: f64,
    /// β₂ of the second moment (unused by FedAdagrad).
    pub beta2: f64,
    /// τ, the adaptivity.
    pub tau: f64,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: u64,
}

impl AdaptiveOptimizer {
    /// A fresh optimizer (m = 0, v = τ²).
    pub fn new(
        adaptivity: Adaptivity,
        learning_rate: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    ) -> Self {
        Self {
            adaptivity,
            learning_rate,
            beta1,
            beta2,
            tau,
            m: Vec::new(),
            v: Vec::new(),
            steps: 0,
        }
    }
}

impl ServerOptimizer for AdaptiveOptimizer {
    fn name(&self) -> &'static str {
        match self.adaptivity {
            Adaptivity::Adagrad => "fedadagrad",
            Adaptivity::Adam => "fedadam",
            Adaptivity::Yogi => "fedyogi",
        }
    }

    fn step(&mut self, model: &mut [f32], sum: &[f64], denominator: f64) -> f64 {
        if self.m.len() != model.len() || self.v.len() != model.len() {
            self.m = vec![0.0; model.len()];
            self.v = vec![(self.tau * self.tau) as f32; model.len()];
        }
        let (b1, b2) = (self.beta1, self.beta2);
        let mut norm_sq = 0.0;
        for (((w, m), v), s) in model.iter_mut().zip(&mut self.m).zip(&mut self.v).zip(sum) {
            let delta = s / denominator;
            let m_next = b1 * f64::from(*m) + (1.0 - b1) * delta;
            let v_prev = f64::from(*v);
            let d2 = delta * delta;
            let v_next = match self.adaptivity {
                Adaptivity::Adagrad => v_prev + d2,
                Adaptivity::Adam => b2 * v_prev + (1.0 - b2) * d2,
                Adaptivity::Yogi => v_prev - (1.0 - b2) * d2 * (v_prev - d2).signum(),
            };
            // Yogi's v stays positive in exact arithmetic from v ≥ τ² > 0; keep
            // it so in floating point too.
            let v_next = v_next.max(0.0);
            *m = m_next as f32;
            *v = v_next as f32;
            let step = self.learning_rate * f64::from(*m) / (f64::from(*v).sqrt() + self.tau);
            norm_sq += step * step;
            *w += step as f32;
        }
        self.steps += 1;
        norm_sq.sqrt()
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            name: self.name().into(),
            steps: self.steps,
            vectors: vec![("m".into(), self.m.clone()), ("v".into(), self.v.clone())],
        }
    }

    fn restore(&mut self, state: &OptimizerState) -> Result<(), String> {
        check_name(self.name(), state)?;
        let get = |name: &str| {
            state
                .vectors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (m, v) = (get("m"), get("v"));
        if m.len() != v.len() {
            return Err(format!(
                "the checkpointed `{}` state has moments of lengths {} and {}",
                self.name(),
                m.len(),
                v.len()
            ));
        }
        self.m = m;
        self.v = v;
        self.steps = state.steps;
        Ok(())
    }
}

/// The names a configuration may give the server optimizer.
pub const NAMES: [&str; 5] = ["fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"];

/// What a configuration says of the server optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// One of [`NAMES`].
    pub name: String,
    /// Server learning rate η.
    pub learning_rate: f64,
    /// Momentum β of `fedavgm`.
    pub momentum: f64,
    /// β₁ of the adaptive optimizers.
    pub beta1: f64,
    /// β₂ of FedAdam and FedYogi.
    pub beta2: f64,
    /// τ of the adaptive optimizers.
    pub tau: f64,
}

/// The server optimizer a configuration names (see [`NAMES`]).
pub fn build(c: &OptimizerConfig) -> Result<Box<dyn ServerOptimizer>, String> {
    let adaptive = |a| {
        Ok(Box::new(AdaptiveOptimizer::new(
            a,
            c.learning_rate,
            c.beta1,
            c.beta2,
            c.tau,
        )) as Box<dyn ServerOptimizer>)
    };
    match c.name.as_str() {
        "fedavg" => Ok(Box::new(FedAvg {
            learning_rate: c.learning_rate,
        })),
        "fedavgm" => Ok(Box::new(FedAvgMomentum::new(c.learning_rate, c.momentum))),
        "fedadagrad" => adaptive(Adaptivity::Adagrad),
        "fedadam" => adaptive(Adaptivity::Adam),
        "fedyogi" => adaptive(Adaptivity::Yogi),
        other => Err(format!(
            "unknown server optimizer `{other}` (known: {})",
            NAMES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests;
