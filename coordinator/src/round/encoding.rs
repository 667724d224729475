//! A round's vector as the coordinator plans it: the fixed-point encoding
//! and modulus that carry its sum and noise, the total-variation slack of
//! the discretised noise, and the share of the noise each site adds under
//! distributed or local placement.

use tessera_secagg::{self as sa, FixedPoint};

use super::FederationMachine;
use super::kinds::{Layout, RoundSpec};

/// Largest noise standard deviation in fixed-point units: inside the exact
/// sampler's range (2^40), and fine enough that the discretisation slack of
/// even a very large model is negligible (about 7e-26 per coordinate).
const MAX_NOISE_UNITS: f64 = (1u64 << 39) as f64;

/// ε at which a round's total-variation slack is judged negligible when the
/// federation has no budget (`max_epsilon`): the slack enters δ as
/// (1 + e^ε)·τ, so a larger ε makes the same slack weigh more.
pub(super) const DEFAULT_SLACK_EPSILON: f64 = 10.0;

/// A round's vector, encoded: its layout, encoding and discretisation slack.
#[derive(Debug, Clone)]
pub(super) struct Encoded {
    pub(super) layout: Layout,
    pub(super) encoding: FixedPoint,
    pub(super) tv_slack: f64,
}

/// The noise the sites of a round add themselves.
#[derive(Debug, Clone, Copy)]
pub(super) struct SiteNoise {
    pub(super) placement: tessera_model::Placement,
    /// Standard deviation of each site's discrete Gaussian (integer units).
    pub(super) site_units: f64,
    /// Sites' noises in the release (the cohort; dropouts are topped up).
    pub(super) summands: u32,
    /// Δ₂ of one site's encoded vector (integer units).
    pub(super) l2_units: f64,
}

impl SiteNoise {
    /// Summands the coordinator does not know when `contributors` sites'
    /// inputs are in the sum (see [`honest_summands`]).
    pub(super) fn honest_summands(
        &self,
        contributors: u32,
        policy: &super::FederationPolicy,
    ) -> u32 {
        honest_summands(self.placement, contributors, policy)
    }
}

/// The summands of a release's noise that the coordinator does not know:
/// the contributors' own noise less that of the sites assumed to collude
/// with it (its own top-up it knows). With local noise every site's update
/// is protected by its own noise alone, whoever colludes: 1.
pub(super) fn honest_summands(
    placement: tessera_model::Placement,
    contributors: u32,
    policy: &super::FederationPolicy,
) -> u32 {
    match placement {
        tessera_model::Placement::Local => 1,
        _ => contributors.saturating_sub(policy.privacy.as_ref().map_or(0, |p| p.colluding_sites)),
    }
}

impl FederationMachine {
    /// The encoding of a round of `spec` for a cohort of `n`, with (under DP)
    /// the total-variation slack of its discretised noise. The 32-bit
    /// encoding where its noise is fine enough, else the 64-bit one; `Err`
    /// is the reason the federation cannot go on.
    pub(super) fn encode(&self, spec: &dyn RoundSpec, n: usize) -> Result<Encoded, String> {
        let layout = spec.layout(&self.round_state(), n);
        let dp = self.policy.privacy.as_ref();
        let eps_ref = dp
            .and_then(|p| p.max_epsilon)
            .unwrap_or(DEFAULT_SLACK_EPSILON);
        // The planned releases: training rounds, statistics, evaluations.
        let planned = self.planned_releases();
        let mut last_error = String::new();
        for bits in [layout.modulus_bits, 64] {
            let encoding = match FixedPoint::for_sum(layout.max_abs_sum(), bits)
                .and_then(|e| limit_resolution(e, layout.largest_noise()))
            {
                Ok(e) => e,
                Err(e) => {
                    last_error = format!("no fixed-point encoding fits this round: {e}");
                    continue;
                }
            };
            if layout.needs_exact() && encoding.scale_bits == 0 {
                last_error = "no fixed-point encoding represents the clipping bit exactly".into();
                continue;
            }
            let units = layout.smallest_noise() * f64::from(encoding.scale_bits).exp2();
            if dp.is_some() && units < tessera_privacy::MIN_NOISE_UNITS {
                last_error = format!(
                    "the noise would be {units:.0} fixed-point units, below the {} the exact \
                     discrete noise is accounted for",
                    tessera_privacy::MIN_NOISE_UNITS
                );
                continue;
            }
            let tv_slack = match dp {
                Some(_) => layout
                    .tv_slack(encoding.scale_bits)
                    .map_err(|e| e.to_string())?,
                None => 0.0,
            };
            let fine = dp.is_none_or(|p| {
                tessera_privacy::sampling::negligible(tv_slack, planned, p.delta, eps_ref)
            });
            if fine || bits == 64 {
                return Ok(Encoded {
                    layout,
                    encoding,
                    tv_slack,
                });
            }
        }
        Err(last_error)
    }

    /// The noise the sites add to a round of `spec` with a cohort of `n`
    /// (None: the coordinator adds it all). Every kind of round gets it
    /// under distributed or local placement — training updates, the
    /// statistics and the evaluation sums alike — each with the σ and L2
    /// sensitivity its central release is announced and accounted with, so
    /// the coordinator never unmasks a sum without noise it does not know.
    /// `Err` is why the federation cannot go on: a per-site noise too small
    /// to be accounted.
    pub(super) fn site_noise(
        &self,
        spec: &dyn RoundSpec,
        n: usize,
        encoded: &Encoded,
    ) -> Result<Option<SiteNoise>, String> {
        let Some(p) = self.policy.privacy.as_ref() else {
            return Ok(None);
        };
        if !p.placement.by_sites() {
            return Ok(None);
        }
        let sigma = spec.noise_multiplier(&self.policy);
        let scale = f64::from(encoded.encoding.scale_bits).exp2();
        // Δ₂ of one site's encoded vector: the kind's sensitivity (C for
        // training) times 2^f. The site clips to it less the rounding slack
        // √d·2^−f, so stochastic rounding keeps it within (see
        // tessera_privacy::distributed).
        let l2_units = spec.sensitivity(&self.round_state()) * scale;
        let site_units = match p.placement {
            // Shares of the whole noise: n sites' variances sum to (σ·Δ₂)².
            tessera_model::Placement::Distributed => sigma * l2_units / (n as f64).sqrt(),
            // Every site the whole noise.
            _ => sigma * l2_units,
        };
        if !(site_units.is_finite()
            && site_units >= tessera_privacy::distributed::MIN_SITE_NOISE_UNITS)
        {
            return Err(format!(
                "each site's noise in a {} round would be {site_units:.1} fixed-point units, below \
                 the {} the distributed discrete Gaussian is accounted for; use fewer sites or \
                 more noise",
                spec.kind().as_str(),
                tessera_privacy::distributed::MIN_SITE_NOISE_UNITS
            ));
        }
        Ok(Some(SiteNoise {
            placement: p.placement,
            site_units,
            summands: n as u32,
            l2_units,
        }))
    }

    /// How many releases the plan makes: the training rounds, the statistics
    /// and the evaluations (for the share of δ each may take as slack).
    pub(super) fn planned_releases(&self) -> u32 {
        self.rounds + 1 + self.policy.planned_evaluations(self.rounds)
    }
}

/// Lowers the fixed-point scale when the noise std would exceed
/// `MAX_NOISE_UNITS` (2^39) units: resolution much finer than the noise buys
/// nothing, and the exact sampler works on a bounded integer range.
pub fn limit_resolution(e: FixedPoint, noise_std: f64) -> Result<FixedPoint, sa::Error> {
    if noise_std <= 0.0 {
        return Ok(e);
    }
    let mut scale_bits = e.scale_bits;
    while scale_bits > 0 && noise_std * (scale_bits as f64).exp2() > MAX_NOISE_UNITS {
        scale_bits -= 1;
    }
    FixedPoint::new(scale_bits, e.modulus_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_is_limited_by_the_noise() {
        let e = FixedPoint::new(50, 64).unwrap();
        let limited = limit_resolution(e, 1000.0).unwrap();
        assert!(1000.0 * f64::from(limited.scale_bits).exp2() <= MAX_NOISE_UNITS);
        assert_eq!(limit_resolution(e, 0.0).unwrap().scale_bits, 50);
    }
}
