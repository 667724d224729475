//! Composition of discretised privacy-loss distributions by FFT (Koskela,
//! Jälkö & Honkela 2020): a Chernoff window for the composed loss, one
//! transform per mechanism raised to its count, and the mass that may fall
//! outside the window added to delta, so truncation never undercounts.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

use super::{Mech, Pmf, TAIL, TAIL_LOW, not_applicable};
use crate::Error;

/// Smallest FFT-friendly length >= n, of the form 2^a 3^b 5^c with b, c <= 2.
fn fft_len(n: usize) -> usize {
    let mut best = n.next_power_of_two();
    for m in [3usize, 5, 9, 15, 25, 45, 75, 225] {
        let mut v = m;
        while v < n {
            v *= 2;
        }
        best = best.min(v);
    }
    best
}

/// Composes `(mechanism, count)` pairs of one direction. Returns the PMF and
/// the grid step used (which may be coarser than `h` for very wide losses).
pub(super) fn compose(
    mechs: &[(Mech, u64)],
    h: f64,
    tau: f64,
    max_len: usize,
) -> Result<(Pmf, f64), Error> {
    let mut h = h;
    for _attempt in 0..8 {
        let pmfs: Vec<(Pmf, u64)> = mechs
            .iter()
            .map(|&(m, c)| (m.discretise(h, tau), c))
            .collect();
        if let [(p, 1)] = pmfs.as_slice() {
            return Ok((p.clone(), h));
        }
        // Chernoff window for the sum of the finite parts.
        let lambdas: Vec<f64> = (-24..=24).map(|k| 2f64.powf(f64::from(k) / 2.0)).collect();
        let neg: Vec<f64> = lambdas.iter().map(|l| -l).collect();
        let mut kp = vec![0.0; lambdas.len()];
        let mut kn = vec![0.0; lambdas.len()];
        for (p, c) in &pmfs {
            let c = *c as f64;
            for (acc, v) in kp.iter_mut().zip(p.log_mgf(h, &lambdas)) {
                *acc += c * v;
            }
            for (acc, v) in kn.iter_mut().zip(p.log_mgf(h, &neg)) {
                *acc += c * v;
            }
        }
        let (lt, llt) = (TAIL.ln(), TAIL_LOW.ln());
        let hi = lambdas
            .iter()
            .zip(&kp)
            .map(|(l, k)| (k - lt) / l)
            .fold(f64::INFINITY, f64::min);
        let lo = lambdas
            .iter()
            .zip(&kn)
            .map(|(l, k)| (llt - k) / l)
            .fold(f64::NEG_INFINITY, f64::max);
        let base: i64 = pmfs.iter().map(|(p, c)| p.start * *c as i64).sum();
        let top: i64 = pmfs
            .iter()
            .map(|(p, c)| (p.start + p.probs.len() as i64 - 1) * *c as i64)
            .sum();
        let w_lo = ((lo / h).floor() as i64).max(base);
        let w_hi = ((hi / h).ceil() as i64).min(top);
        let width = (w_hi - w_lo + 1).max(1) as usize;
        let n = fft_len(width);
        if n > max_len {
            h *= width as f64 / (max_len as f64 * 0.9);
            continue;
        }
        // One plan serves both directions: ifft(x) = conj(fft(conj(x))) / n.
        let fwd = FftPlanner::<f64>::new().plan_fft_forward(n);
        let mut acc = vec![Complex64::new(1.0, 0.0); n];
        let mut buf = vec![Complex64::new(0.0, 0.0); n];
        let mut log_keep_finite = 0.0;
        for (p, c) in &pmfs {
            buf.iter_mut().for_each(|x| *x = Complex64::new(0.0, 0.0));
            for (i, &m) in p.probs.iter().enumerate() {
                buf[i % n].re += m;
            }
            fwd.process(&mut buf);
            let c = *c;
            for (a, z) in acc.iter_mut().zip(&buf) {
                *a *= pow_complex(*z, c);
            }
            log_keep_finite += c as f64 * (-p.inf_mass).ln_1p();
        }
        acc.iter_mut().for_each(|z| *z = z.conj());
        fwd.process(&mut acc);
        let scale = 1.0 / n as f64;
        let off = (w_lo - base).rem_euclid(n as i64) as usize;
        let mut probs = Vec::with_capacity(n);
        let mut negative = 0.0;
        for z in acc[off..].iter().chain(&acc[..off]) {
            // The real part is unchanged by the final conjugation.
            let v = z.re * scale;
            if v < 0.0 {
                negative -= v;
                probs.push(0.0);
            } else {
                probs.push(v);
            }
        }
        // Slack: Chernoff bound on the mass above the window, plus twice the
        // rounding noise seen as negative entries (an estimate of the
        // transform's rounding error on the delta sum).
        let inf_mass = (-log_keep_finite.exp_m1() + TAIL + 2.0 * negative).min(1.0);
        return Ok((
            Pmf {
                start: w_lo,
                probs,
                inf_mass,
            },
            h,
        ));
    }
    Err(not_applicable(
        "the composed privacy loss is too wide to discretise",
    ))
}

/// `z^c` by square-and-multiply (about 2 log2(c) complex products; much
/// cheaper than the polar form, whose `sin_cos` of a huge angle is slow).
fn pow_complex(z: Complex64, c: u64) -> Complex64 {
    let mut base = z;
    let mut acc = Complex64::new(1.0, 0.0);
    let mut e = c;
    while e > 0 {
        if e & 1 == 1 {
            acc *= base;
        }
        e >>= 1;
        if e > 0 {
            base = base * base;
            if base.norm_sqr() < 1e-300 {
                // |z|^(2k) already negligible: the rest can only shrink it.
                return if e > 0 { Complex64::new(0.0, 0.0) } else { acc };
            }
        }
    }
    acc
}
