//! Privacy-loss-distribution (PLD) accountant.
//!
//! Each mechanism is described by its hockey-stick curve `delta(eps)` for a
//! dominating pair (P, Q). On a grid `eps_j = j h` the curve is discretised
//! with the *connect-the-dots* construction of Doroshenko, Ghazi, Kamath,
//! Kumar & Manurangsi 2022 ("Connect the Dots: Tighter Discrete
//! Approximations of Privacy Loss Distributions", Sec. 3): the discrete PLD
//! whose curve equals the true one at every grid point and is linear in
//! `e^eps` in between. Because the true curve is convex in `e^eps`, the
//! discrete one lies above it: it *dominates* the mechanism (pessimistic),
//! and domination is preserved by composition, so every epsilon reported is
//! an upper bound on the true one (up to floating-point rounding, which is
//! estimated and added as slack).
//!
//! Composition multiplies discrete Fourier transforms (Koskela, Jälkö &
//! Honkela 2020, "Computing Tight Differential Privacy Guarantees Using
//! FFT"). The transform length covers a window of the composed loss chosen
//! with Chernoff bounds; the mass that may lie above the window (at most
//! `TAIL` by the bound) is added to delta, and mass outside the window that
//! wraps around can only add to delta, so truncation never undercounts.
//!
//! Add/remove adjacency: the Poisson-subsampled Gaussian has different
//! pairs for "remove" (P = (1-q) N(0, s^2) + q N(1, s^2), Q = N(0, s^2)) and
//! "add" (the roles swapped). A fixed pair of neighbouring datasets is in
//! the same direction in every round, so each direction is composed on its
//! own and the result is the worse of the two. Full-participation Gaussian
//! rounds collapse into one Gaussian (mu = sqrt(sum 1/s^2)) first, and a
//! ledger that is just that Gaussian is discretised lazily (no array, no
//! FFT). Discrete Laplace and exponential-mechanism events use randomised
//! response, whose PLD (losses +-eps) is exactly that of the discrete
//! Laplace mechanism and dominates every pure eps-DP mechanism (Kairouz, Oh
//! & Viswanath 2015).

mod fft;

use super::AccountantKind;
use crate::Error;
use crate::event::Grouped;
use crate::special::{gauss_hockey, gauss_hockey_mirror, log_add};

/// Options of the PLD accountant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PldOptions {
    /// Grid step of the privacy loss, in nats (dp_accounting's
    /// `value_discretization_interval`). The accountant may coarsen it when
    /// the composed loss would need more than `max_fft_len` grid points.
    pub value_discretization_interval: f64,
    /// Largest transform length used for one composition.
    pub max_fft_len: usize,
}

impl Default for PldOptions {
    fn default() -> Self {
        Self {
            value_discretization_interval: 1e-4,
            max_fft_len: 1 << 20,
        }
    }
}

/// Upper bound on the probability mass above the composition window (added
/// to delta).
const TAIL: f64 = 1e-18;
/// Upper bound on the mass below the window. It wraps around into the
/// window (the transform is cyclic), where it can only add to delta.
const TAIL_LOW: f64 = 1e-16;
/// Total infinite mass the per-mechanism truncation may add to delta.
const INF_BUDGET: f64 = 1e-17;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    Remove,
    Add,
}

/// One mechanism, for one direction of adjacency.
#[derive(Clone, Copy, Debug)]
enum Mech {
    /// Gaussian with mu = 1/sigma (sensitivity 1, full participation).
    Gaussian { sigma: f64 },
    /// Poisson-subsampled Gaussian.
    Sampled { sigma: f64, q: f64, dir: Dir },
    /// Randomised response with pure epsilon.
    Rr { eps: f64 },
}

impl Mech {
    /// The hockey-stick divergence `delta(eps)` of the mechanism's pair.
    fn delta(self, eps: f64) -> f64 {
        match self {
            Mech::Gaussian { sigma } => {
                let r = eps * sigma;
                let m = 0.5 / sigma;
                gauss_hockey(r - m, r + m)
            }
            Mech::Sampled {
                sigma,
                q,
                dir: Dir::Remove,
            } => {
                // L(x) = ln(1 - q + q e^{(2x-1)/(2 s^2)}) is increasing; L > eps iff x > x_eps.
                if eps <= (-q).ln_1p() {
                    return -eps.exp_m1();
                }
                let x = sigma * sigma * (eps.exp_m1() / q).ln_1p() + 0.5;
                q * gauss_hockey((x - 1.0) / sigma, x / sigma)
            }
            Mech::Sampled {
                sigma,
                q,
                dir: Dir::Add,
            } => {
                // L(x) = -ln(1 - q + q e^{(2x-1)/(2 s^2)}) is decreasing, at most -ln(1-q).
                if eps >= -(-q).ln_1p() {
                    return 0.0;
                }
                let x = sigma * sigma * ((-eps).exp_m1() / q).ln_1p() + 0.5;
                let u = -x / sigma;
                eps.exp() * q * gauss_hockey_mirror(u, u + 1.0 / sigma)
            }
            Mech::Rr { eps: e } => {
                let p_hi = 1.0 / (1.0 + (-e).exp());
                let p_lo = 1.0 - p_hi;
                let mut d = 0.0;
                if eps < e {
                    d += p_hi * -(eps - e).exp_m1();
                }
                if eps < -e {
                    d += p_lo * -(eps + e).exp_m1();
                }
                d
            }
        }
    }

    /// A loss range [lo, hi] with negligible mass below `lo` and
    /// `delta(hi) <= tau`.
    fn range(self, tau: f64) -> (f64, f64) {
        let z = (2.0 * (1.0 / tau).ln()).sqrt() + 1.0;
        let (lo, mut hi) = match self {
            Mech::Gaussian { sigma } => {
                let mu = 1.0 / sigma;
                (mu * mu / 2.0 - z * mu, mu * mu / 2.0 + z * mu)
            }
            Mech::Sampled {
                sigma,
                q,
                dir: Dir::Remove,
            } => {
                let x = 1.0 + z * sigma;
                let t = (2.0 * x - 1.0) / (2.0 * sigma * sigma);
                ((-q).ln_1p(), log_add((-q).ln_1p(), q.ln() + t))
            }
            Mech::Sampled {
                sigma,
                q,
                dir: Dir::Add,
            } => {
                let x = z * sigma;
                let t = (2.0 * x - 1.0) / (2.0 * sigma * sigma);
                (-log_add((-q).ln_1p(), q.ln() + t), -(-q).ln_1p())
            }
            Mech::Rr { eps } => (-eps, eps),
        };
        let mut guard = 0;
        while self.delta(hi) > tau && guard < 200 {
            hi += (hi - lo).max(1e-3);
            guard += 1;
        }
        (lo, hi)
    }

    /// Connect-the-dots discretisation on the grid of step `h`.
    fn discretise(self, h: f64, tau: f64) -> Pmf {
        let (lo, hi) = self.range(tau);
        let jlo = (lo / h).floor() as i64;
        let jhi = ((hi / h).ceil() as i64).max(jlo + 1);
        let d: Vec<f64> = (jlo..=jhi)
            .map(|j| self.delta(j as f64 * h).min(1.0))
            .collect();
        let n = d.len();
        let up = h.exp_m1(); // e^h - 1
        let down = -(-h).exp_m1(); // 1 - e^-h
        let mut probs = vec![0.0; n];
        for i in 0..n {
            let right = if i + 1 < n {
                (d[i + 1] - d[i]) / up
            } else {
                0.0
            };
            let left = if i > 0 {
                (d[i] - d[i - 1]) / down
            } else {
                d[0] - 1.0
            };
            probs[i] = (right - left).max(0.0);
        }
        Pmf {
            start: jlo,
            probs,
            inf_mass: d[n - 1],
        }
    }
}

/// A discrete PLD: `probs[i]` at loss `(start + i) h`, plus mass at +inf.
#[derive(Clone, Debug)]
struct Pmf {
    start: i64,
    probs: Vec<f64>,
    inf_mass: f64,
}

impl Pmf {
    fn delta(&self, h: f64, eps: f64) -> f64 {
        let mut d = self.inf_mass;
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let l = (self.start + i as i64) as f64 * h;
            if l <= eps {
                break;
            }
            d += p * -(eps - l).exp_m1();
        }
        d.min(1.0)
    }

    /// Smallest eps with delta(eps) <= target, or `None` if the infinite
    /// mass alone exceeds the target.
    fn epsilon(&self, h: f64, target: f64) -> Option<f64> {
        if self.inf_mass >= target {
            return None;
        }
        let decay = (-h).exp();
        let (mut a, mut b) = (0.0, 0.0);
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let l = (self.start + i as i64) as f64 * h;
            let d = self.inf_mass + a - b;
            if d >= target {
                let e = if b > 0.0 {
                    l + ((self.inf_mass + a - target) / b).ln()
                } else {
                    l
                };
                return Some(e.max(0.0));
            }
            a += p;
            b = (b + p) * decay;
        }
        let l = (self.start - 1) as f64 * h;
        let e = if b > 0.0 {
            l + ((self.inf_mass + a - target) / b).ln()
        } else {
            l
        };
        Some(e.max(0.0))
    }

    /// Upper bounds on the cumulant generating function at `lambdas`,
    /// computed on at most 4096 merged bins (each bin's mass placed at its
    /// worst end for the sign of lambda).
    fn log_mgf(&self, h: f64, lambdas: &[f64]) -> Vec<f64> {
        let n = self.probs.len();
        let r = n.div_ceil(4096).max(1);
        let bins: Vec<(f64, f64, f64)> = self
            .probs
            .chunks(r)
            .enumerate()
            .map(|(b, c)| {
                let first = self.start + (b * r) as i64;
                let lo = first as f64 * h;
                let hi = (first + c.len() as i64 - 1) as f64 * h;
                (lo, hi, c.iter().sum::<f64>())
            })
            .filter(|b| b.2 > 0.0)
            .collect();
        let logm: Vec<f64> = bins.iter().map(|b| b.2.ln()).collect();
        lambdas
            .iter()
            .map(|&lam| {
                let at = |(b, lm): (&(f64, f64, f64), &f64)| {
                    lm + lam * if lam > 0.0 { b.1 } else { b.0 }
                };
                let max = bins
                    .iter()
                    .zip(&logm)
                    .map(at)
                    .fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    return max;
                }
                let sum: f64 = bins.iter().zip(&logm).map(|x| (at(x) - max).exp()).sum();
                max + sum.ln()
            })
            .collect()
    }
}

/// A composed privacy loss distribution, ready for epsilon/delta queries.
#[derive(Clone, Debug)]
pub struct ComposedPld {
    h: f64,
    kind: Composed,
}

#[derive(Clone, Debug)]
enum Composed {
    /// Nothing released.
    Empty,
    /// One Gaussian, discretised lazily.
    Gaussian { sigma: f64 },
    /// Explicit PMFs, one per direction (one if both are the same).
    Pmfs(Vec<Pmf>),
}

impl ComposedPld {
    /// Composes a ledger with the default options.
    pub fn new(events: &[crate::PrivacyEvent]) -> Result<Self, Error> {
        Self::with_options(events, PldOptions::default())
    }

    /// Composes a ledger with the given options.
    pub fn with_options(events: &[crate::PrivacyEvent], opts: PldOptions) -> Result<Self, Error> {
        let g = Grouped::new(events)?;
        Self::from_grouped(&g, opts)
    }

    pub(crate) fn from_grouped(g: &Grouped, opts: PldOptions) -> Result<Self, Error> {
        let h0 = opts.value_discretization_interval;
        if !(h0.is_finite() && h0 > 0.0) || opts.max_fft_len < 16 {
            return Err(not_applicable("invalid PLD options"));
        }
        let mut comps: Vec<(Mech, Mech, u64)> = Vec::new();
        // Full-participation Gaussian rounds and distributed discrete
        // Gaussian releases (the Gaussian within their slack, see
        // `crate::distributed`) compose to one Gaussian.
        if g.has_full || g.has_distributed {
            let m = Mech::Gaussian {
                sigma: 1.0 / g.gaussian_mu2().sqrt(),
            };
            comps.push((m, m, 1));
        }
        for &(sigma, q, c) in &g.sampled {
            comps.push((
                Mech::Sampled {
                    sigma,
                    q,
                    dir: Dir::Remove,
                },
                Mech::Sampled {
                    sigma,
                    q,
                    dir: Dir::Add,
                },
                c,
            ));
        }
        for &(eps, c) in g.laplace.iter().chain(&g.exponential) {
            comps.push((Mech::Rr { eps }, Mech::Rr { eps }, c));
        }
        if comps.is_empty() {
            return Ok(Self {
                h: h0,
                kind: Composed::Empty,
            });
        }
        if let [(Mech::Gaussian { sigma }, _, 1)] = comps.as_slice() {
            return Ok(Self {
                h: h0,
                kind: Composed::Gaussian { sigma: *sigma },
            });
        }
        let total: u64 = comps.iter().map(|c| c.2).sum();
        let tau = INF_BUDGET / total as f64;
        let symmetric = g.sampled.is_empty();
        let dirs: &[usize] = if symmetric { &[0] } else { &[0, 1] };

        // Coarsen the grid if a single mechanism's range is too wide.
        let mut h = h0;
        for &(r, a, _) in &comps {
            for m in [r, a] {
                let (lo, hi) = m.range(tau);
                if !(lo.is_finite() && hi.is_finite()) || hi - lo > 1e9 {
                    return Err(not_applicable(
                        "the privacy loss is too large to discretise (too little noise)",
                    ));
                }
                let pts = (hi - lo) / h;
                if pts > opts.max_fft_len as f64 / 2.0 {
                    h = (hi - lo) / (opts.max_fft_len as f64 / 2.0);
                }
            }
        }
        let mut out = Vec::new();
        for &d in dirs {
            let mechs: Vec<(Mech, u64)> = comps
                .iter()
                .map(|&(r, a, c)| (if d == 0 { r } else { a }, c))
                .collect();
            out.push(fft::compose(&mechs, h, tau, opts.max_fft_len)?);
        }
        let h = out.iter().map(|x| x.1).fold(0.0, f64::max);
        let pmfs = out
            .into_iter()
            .map(|(p, hh)| rescale_check(p, hh, h))
            .collect();
        Ok(Self {
            h,
            kind: Composed::Pmfs(pmfs),
        })
    }

    /// The grid step actually used (after any coarsening).
    pub fn discretization_interval(&self) -> f64 {
        self.h
    }

    /// Smallest epsilon with delta(epsilon) <= `delta` (an upper bound on
    /// the true epsilon).
    pub fn epsilon(&self, delta: f64) -> Result<f64, Error> {
        match &self.kind {
            Composed::Empty => Ok(0.0),
            Composed::Gaussian { sigma } => Ok(lazy_gaussian_epsilon(*sigma, self.h, delta)),
            Composed::Pmfs(p) => {
                let mut e: f64 = 0.0;
                for pmf in p {
                    match pmf.epsilon(self.h, delta) {
                        Some(x) => e = e.max(x),
                        None => {
                            return Err(not_applicable(
                                "delta is below the numerical floor of the discretised distribution",
                            ));
                        }
                    }
                }
                Ok(e)
            }
        }
    }

    /// Delta at `epsilon` (an upper bound on the true delta).
    pub fn delta(&self, epsilon: f64) -> f64 {
        match &self.kind {
            Composed::Empty => 0.0,
            Composed::Gaussian { sigma } => lazy_gaussian_delta(*sigma, self.h, epsilon),
            Composed::Pmfs(p) => p
                .iter()
                .map(|x| x.delta(self.h, epsilon))
                .fold(0.0, f64::max),
        }
    }
}

/// Both directions must end on the same grid; `compose` only ever coarsens
/// in lockstep because it starts from the same `h` and the same window rule,
/// but if they differ, the finer PMF is regridded upward (pessimistic).
fn rescale_check(p: Pmf, h_p: f64, h: f64) -> Pmf {
    if h_p == h {
        return p;
    }
    let mut probs: Vec<f64> = Vec::new();
    let mut start = i64::MAX;
    let mut entries = Vec::with_capacity(p.probs.len());
    for (i, &m) in p.probs.iter().enumerate() {
        let l = (p.start + i as i64) as f64 * h_p;
        let j = (l / h).ceil() as i64;
        start = start.min(j);
        entries.push((j, m));
    }
    for (j, m) in entries {
        let k = (j - start) as usize;
        if probs.len() <= k {
            probs.resize(k + 1, 0.0);
        }
        probs[k] += m;
    }
    Pmf {
        start,
        probs,
        inf_mass: p.inf_mass,
    }
}

fn not_applicable(reason: &str) -> Error {
    Error::NotApplicable {
        accountant: AccountantKind::Pld,
        reason: reason.into(),
    }
}

fn lazy_gaussian_delta(sigma: f64, h: f64, eps: f64) -> f64 {
    let m = Mech::Gaussian { sigma };
    let j = (eps / h).floor();
    let (e0, e1) = (j * h, (j + 1.0) * h);
    let (d0, d1) = (m.delta(e0), m.delta(e1));
    // Linear in e^eps between the grid points.
    let t = (eps - e0).exp_m1() / h.exp_m1();
    (d0 + (d1 - d0) * t).clamp(0.0, 1.0)
}

fn lazy_gaussian_epsilon(sigma: f64, h: f64, target: f64) -> f64 {
    let m = Mech::Gaussian { sigma };
    if m.delta(0.0) <= target {
        return 0.0;
    }
    let e = super::exact::gaussian_epsilon(1.0 / sigma, target);
    if !(e / h).is_finite() || e / h > 1e15 {
        return f64::INFINITY;
    }
    // The true epsilon lies in grid cell j; rounding may put it one cell off.
    let mut j = (e / h).floor();
    for _ in 0..4 {
        if j > 0.0 && m.delta(j * h) <= target {
            j -= 1.0;
        }
    }
    for _ in 0..8 {
        if m.delta((j + 1.0) * h) > target {
            j += 1.0;
        }
    }
    let (d0, d1) = (m.delta(j * h), m.delta((j + 1.0) * h));
    if d0 <= target {
        return (j * h).max(0.0);
    }
    let e = j * h + ((d0 - target) * h.exp_m1() / (d0 - d1)).ln_1p();
    e.clamp(j * h, (j + 1.0) * h).max(0.0)
}
