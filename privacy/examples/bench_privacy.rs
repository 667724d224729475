//! Speed of the privacy core: samplers, accountants and calibration.
//!
//! Run with `cargo run --release -p tessera-privacy --example bench_privacy`.
//! Prints the median of several runs of each measurement.

use std::hint::black_box;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::ChaCha12Rng;
use tessera_privacy::accountant::pld::ComposedPld;
use tessera_privacy::accountant::rdp::RdpCurve;
use tessera_privacy::{
    AccountantKind, DiscreteGaussian, PrivacyEvent, add_discrete_gaussian_mod,
    calibrate_noise_multiplier, epsilon,
};

/// Median wall time in seconds of `runs` calls of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn fmt(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

fn main() {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    println!("discrete Gaussian sampler (ChaCha12):");
    for sigma in [1e2, 1e6] {
        let g = DiscreteGaussian::new(sigma).unwrap();
        let n = 200_000;
        let t = median(5, || {
            for _ in 0..n {
                black_box(g.sample(&mut rng));
            }
        });
        println!(
            "  sigma {sigma:>8.0e}: {:>6.2} M samples/s ({:.0} ns/sample)",
            n as f64 / t / 1e6,
            t / n as f64 * 1e9
        );
    }
    let mut v = vec![0u64; 1_000_000];
    let t = median(3, || add_discrete_gaussian_mod(&mut v, 32, 1e6, &mut rng));
    println!(
        "  add_discrete_gaussian_mod, d = 1e6, sigma 1e6: {}",
        fmt(t)
    );

    println!("epsilon queries (delta = 1e-5):");
    for (sigma, q, rounds) in [(1.0, 0.01, 10_000u32), (5.92, 1.0, 30)] {
        let ev = [PrivacyEvent::gaussian(sigma, q, rounds)];
        for kind in [
            AccountantKind::Exact,
            AccountantKind::Rdp,
            AccountantKind::Pld,
            AccountantKind::Best,
        ] {
            let mut out = None;
            let t = median(5, || out = Some(epsilon(&ev, 1e-5, kind)));
            match out.unwrap() {
                Ok(r) => println!(
                    "  sigma {sigma:<5} q {q:<5} T {rounds:<6} {kind:<6} eps {:<10.6} {}",
                    r.epsilon,
                    fmt(t)
                ),
                Err(e) => println!("  sigma {sigma:<5} q {q:<5} T {rounds:<6} {kind:<6} n/a ({e})"),
            }
        }
    }
    let ev = [PrivacyEvent::gaussian(1.0, 0.01, 10_000)];
    let t = median(5, || {
        black_box(RdpCurve::from_events(&ev).unwrap());
    });
    println!("  RDP curve only (156 orders), q 0.01 T 10000: {}", fmt(t));
    let t = median(3, || {
        black_box(ComposedPld::new(&ev).unwrap());
    });
    println!("  PLD composition only, q 0.01 T 10000: {}", fmt(t));

    println!("calibration (target eps 3, delta 1e-5):");
    for (q, rounds, kind) in [
        (1.0, 30u32, AccountantKind::Exact),
        (0.01, 10_000, AccountantKind::Rdp),
        (0.01, 10_000, AccountantKind::Best),
    ] {
        let mut s = 0.0;
        let t = median(3, || {
            s = calibrate_noise_multiplier(3.0, 1e-5, q, rounds, kind).unwrap()
        });
        println!(
            "  q {q:<5} T {rounds:<6} {kind:<6} sigma {s:.6}  {}",
            fmt(t)
        );
    }
}
