//! The server step: how the averaged, noised update moves the global
//! model, behind one trait. FedAvg (McMahan et al. 2017) with a server
//! learning rate, and FedAvg with server momentum (Hsu, Qi & Brown 2019,
//! "FedAvgM"). Applying a released update is post-processing: no privacy
//! cost. Their state goes into every checkpoint.

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

/// The server optimizer a configuration names (`fedavg` or `fedavgm`).
pub fn build(
    name: &str,
    learning_rate: f64,
    momentum: f64,
) -> Result<Box<dyn ServerOptimizer>, String> {
    match name {
        "fedavg" => Ok(Box::new(FedAvg { learning_rate })),
        "fedavgm" => Ok(Box::new(FedAvgMomentum::new(learning_rate, momentum))),
        other => Err(format!(
            "unknown server optimizer `{other}` (known: fedavg, fedavgm)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_moves_by_the_scaled_mean() {
        let mut o = FedAvg { learning_rate: 0.5 };
        let mut w = vec![1.0f32, 2.0];
        let norm = o.step(&mut w, &[4.0, -2.0], 2.0);
        assert_eq!(w, vec![2.0, 1.5]);
        assert!((norm - (1.0f64 + 0.25).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn momentum_accumulates_and_restores() {
        let mut o = FedAvgMomentum::new(1.0, 0.5);
        let mut w = vec![0.0f32];
        o.step(&mut w, &[1.0], 1.0); // v = 1, w = 1
        o.step(&mut w, &[1.0], 1.0); // v = 1.5, w = 2.5
        assert_eq!(w, vec![2.5]);
        let state = o.state();
        let mut fresh = FedAvgMomentum::new(1.0, 0.5);
        fresh.restore(&state).unwrap();
        let (mut a, mut b) = (w.clone(), w.clone());
        o.step(&mut a, &[0.0], 1.0);
        fresh.step(&mut b, &[0.0], 1.0);
        assert_eq!(a, b);
        assert_eq!(a, vec![3.25]);
        assert!(FedAvg { learning_rate: 1.0 }.restore(&state).is_err());
        assert!(build("adam", 1.0, 0.9).is_err());
    }
}
