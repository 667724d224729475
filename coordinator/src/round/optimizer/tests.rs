//! The server optimizers against steps computed by hand, and restored from their
//! checkpointed state (as JSON, the store's form) to take identical next steps.

use super::*;

fn config(name: &str) -> OptimizerConfig {
    OptimizerConfig {
        name: name.into(),
        learning_rate: 0.1,
        momentum: 0.9,
        beta1: 0.9,
        beta2: 0.99,
        tau: 0.01,
    }
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() < 1e-6
}

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
    // With a server learning rate: v = 2·(sum/n) = 2, then 0.9·2 + 1 = 2.8; η = 0.5.
    let mut o = build(&OptimizerConfig {
        learning_rate: 0.5,
        ..config("fedavgm")
    })
    .unwrap();
    let mut w = vec![0.0f32];
    o.step(&mut w, &[4.0], 2.0); // w = 0.5·2 = 1
    o.step(&mut w, &[2.0], 2.0); // w = 1 + 0.5·2.8 = 2.4
    assert!(close(w[0], 2.4), "{w:?}");
}

/// Two steps of each adaptive optimizer (η = 0.1, β₁ = 0.9, β₂ = 0.99, τ = 0.01,
/// w₀ = 1, Δ₁ = 1, Δ₂ = −0.5; m₀ = 0, v₀ = τ² = 10⁻⁴), worked by hand:
///
/// FedAdagrad: m₁ = 0.1, v₁ = 10⁻⁴ + 1 = 1.0001, w₁ = 1 + 0.1·0.1/(1.00005 + 0.01)
/// = 1.0099005; m₂ = 0.09 − 0.05 = 0.04, v₂ = 1.0001 + 0.25 = 1.2501,
/// w₂ = w₁ + 0.1·0.04/(1.1180787 + 0.01) = 1.0134464.
///
/// FedAdam: v₁ = 0.99·10⁻⁴ + 0.01·1 = 0.010099, w₁ = 1 + 0.01/(0.1004938 + 0.01)
/// = 1.0905028; v₂ = 0.99·0.010099 + 0.01·0.25 = 0.01249801,
/// w₂ = w₁ + 0.004/(0.1117945 + 0.01) = 1.1233450.
///
/// FedYogi: v₁ = 10⁻⁴ − 0.01·1·sign(10⁻⁴ − 1) = 0.0101, w₁ = 1 + 0.01/(0.1004988 +
/// 0.01) = 1.0904988; v₂ = 0.0101 − 0.01·0.25·sign(0.0101 − 0.25) = 0.0126,
/// w₂ = w₁ + 0.004/(0.1122497 + 0.01) = 1.1232187.
#[test]
fn adaptive_optimizers_take_the_hand_computed_steps() {
    for (name, m, v, w) in [
        (
            "fedadagrad",
            [0.1, 0.04],
            [1.0001, 1.2501],
            [1.0099005, 1.0134464],
        ),
        (
            "fedadam",
            [0.1, 0.04],
            [0.010099, 0.01249801],
            [1.0905028, 1.1233450],
        ),
        (
            "fedyogi",
            [0.1, 0.04],
            [0.0101, 0.0126],
            [1.0904988, 1.1232187],
        ),
    ] {
        let mut o = build(&config(name)).unwrap();
        assert_eq!(o.name(), name);
        let mut model = vec![1.0f32];
        // The sums of two sites, divided by the denominator 2.
        for (step, sum) in [[2.0], [-1.0]].iter().enumerate() {
            o.step(&mut model, sum, 2.0);
            let s = o.state();
            assert_eq!(s.steps, step as u64 + 1);
            assert!(
                close(s.vectors[0].1[0], m[step]),
                "{name} m{}: {s:?}",
                step + 1
            );
            assert!(
                close(s.vectors[1].1[0], v[step]),
                "{name} v{}: {s:?}",
                step + 1
            );
            assert!(close(model[0], w[step]), "{name} w{}: {model:?}", step + 1);
        }
    }
}

/// After a restart, the optimizer restored from its stored state (the JSON the driver
/// keeps in the store) takes exactly the step the running one takes.
#[test]
fn every_optimizer_resumes_with_identical_next_steps() {
    let sums = [
        [0.3, -1.2, 2.0],
        [1.1, 0.4, -0.7],
        [-0.2, 0.9, 0.05],
        [0.6, -0.3, 1.4],
    ];
    for name in NAMES {
        let mut running = build(&config(name)).unwrap();
        let mut model = vec![0.5f32, -0.25, 1.0];
        for s in &sums[..3] {
            running.step(&mut model, s, 3.0);
        }
        let stored = serde_json::to_string(&running.state()).unwrap();
        let mut restored = build(&config(name)).unwrap();
        restored
            .restore(&serde_json::from_str(&stored).unwrap())
            .unwrap();
        assert_eq!(restored.state(), running.state(), "{name}");
        let (mut a, mut b) = (model.clone(), model.clone());
        let na = running.step(&mut a, &sums[3], 3.0);
        let nb = restored.step(&mut b, &sums[3], 3.0);
        assert_eq!(a, b, "{name}");
        assert_eq!(na, nb, "{name}");
        assert_eq!(restored.state(), running.state(), "{name}");
        // Another optimizer's state is refused, not silently dropped.
        let other = if name == "fedadam" {
            "fedyogi"
        } else {
            "fedadam"
        };
        let mut wrong = build(&config(other)).unwrap();
        if !running.state().vectors.is_empty() || name != "fedavg" {
            assert!(
                wrong.restore(&running.state()).is_err(),
                "{name} into {other}"
            );
        }
    }
    assert!(build(&config("adam")).is_err());
}

#[test]
fn yogi_keeps_its_second_moment_from_exploding() {
    // Adam's v follows Δ² up and down; Yogi's changes additively by (1 − β₂)·Δ²,
    // so one huge update moves it far less.
    let mut adam = build(&config("fedadam")).unwrap();
    let mut yogi = build(&config("fedyogi")).unwrap();
    let (mut a, mut y) = (vec![0.0f32], vec![0.0f32]);
    adam.step(&mut a, &[100.0], 1.0);
    yogi.step(&mut y, &[100.0], 1.0);
    let (va, vy) = (adam.state().vectors[1].1[0], yogi.state().vectors[1].1[0]);
    assert!((va - (0.99e-4 + 100.0)).abs() < 1e-3, "{va}");
    assert!((vy - (1e-4 + 100.0)).abs() < 1e-3, "{vy}");
    // A small update next: Adam's v decays geometrically, Yogi's moves by (1 − β₂)Δ².
    adam.step(&mut a, &[0.1], 1.0);
    yogi.step(&mut y, &[0.1], 1.0);
    let (va, vy) = (adam.state().vectors[1].1[0], yogi.state().vectors[1].1[0]);
    assert!((f64::from(va) - (0.99 * (0.99e-4 + 100.0) + 0.01 * 0.01)).abs() < 1e-3);
    assert!((f64::from(vy) - (1e-4 + 100.0 - 0.01 * 0.01)).abs() < 1e-3);
}
