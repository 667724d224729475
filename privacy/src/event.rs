//! Privacy events: what the ledger stores and the accountants compose.

use crate::Error;
use crate::loss::{Epsilon, NoiseMultiplier, SamplingRate};

/// One entry of a privacy ledger: a mechanism applied `count` times.
///
/// Adjacency throughout is add/remove one participant. The accountants
/// compose any list of events (heterogeneous noise, rates and mechanisms).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum PrivacyEvent {
    /// Gaussian noise of std `noise_multiplier * sensitivity` on a sum,
    /// `count` times, each with Poisson sampling rate `sampling_rate`
    /// (1.0 = full participation).
    Gaussian {
        /// sigma: noise std divided by the L2 sensitivity.
        noise_multiplier: f64,
        /// Poisson sampling rate q in (0, 1].
        sampling_rate: f64,
        /// Number of releases.
        count: u32,
        /// Total-variation distance between the releases as run and the
        /// Gaussian mechanism accounted here, summed over the `count`
        /// releases: the discretisation of the noise
        /// ([`crate::noise::discretisation_tv`]) and the minimum size of a
        /// sampled cohort ([`crate::sampling`]). A mechanism within total
        /// variation τ of an (ε, δ)-DP one is (ε, δ + (1 + e^ε)·τ)-DP, so the
        /// accountants add (1 + e^ε) times the ledger's total to δ. Absent
        /// (0) in ledgers written before it was recorded.
        #[serde(default, skip_serializing_if = "is_zero")]
        tv_slack: f64,
    },
    /// Discrete Laplace mechanism with pure `epsilon` (scale = sensitivity /
    /// epsilon), `count` times.
    DiscreteLaplace {
        /// Pure-DP epsilon of one release.
        epsilon: f64,
        /// Number of releases.
        count: u32,
    },
    /// The distributed discrete Gaussian (Kairouz, Liu & Steinke 2021):
    /// `summands` independent `N_Z(0, s²)` per coordinate on an integer sum
    /// of L2 sensitivity `l2_units`, `count` times. Accounted by RDP
    /// through Theorem 2's zCDP bound, and by the exact and PLD accountants
    /// as the Gaussian at `noise_multiplier` within a total-variation slack
    /// (see [`crate::distributed`]), without amplification by sampling.
    DistributedDiscreteGaussian {
        /// Standard deviation of the summed noise (√summands · s) divided
        /// by the L2 sensitivity.
        noise_multiplier: f64,
        /// Independent discrete Gaussians in the release (the planned
        /// cohort: the coordinator tops up the ones of sites that dropped).
        summands: u32,
        /// L2 sensitivity Δ₂ of one site's integer vector (C·2^f units).
        l2_units: f64,
        /// Coordinates of the release.
        dimension: u64,
        /// Poisson sampling rate of the cohort, for the record only: the
        /// accountants treat the release as if every site took part.
        sampling_rate: f64,
        /// Number of releases.
        count: u32,
        /// What the coordinator itself sees: how many of the summands it
        /// does not know (the noise of sites outside the assumed colluding
        /// ones, without its own top-up). 0: the coordinator sees the sum
        /// with no noise it does not know.
        honest_summands: u32,
    },
    /// Exponential mechanism (report-noisy-max form) with pure `epsilon`,
    /// `count` times.
    Exponential {
        /// Pure-DP epsilon of one selection.
        epsilon: f64,
        /// Number of selections.
        count: u32,
    },
}

impl PrivacyEvent {
    /// `count` rounds of the Gaussian mechanism with multiplier `sigma` at rate `q`.
    pub fn gaussian(sigma: f64, q: f64, count: u32) -> Self {
        Self::Gaussian {
            noise_multiplier: sigma,
            sampling_rate: q,
            count,
            tv_slack: 0.0,
        }
    }

    /// `count` releases of the distributed discrete Gaussian: `summands`
    /// sites' noise of `s_units` each, L2 sensitivity `l2_units`, `dimension`
    /// coordinates, `honest_summands` of them unknown to the coordinator.
    pub fn distributed(
        s_units: f64,
        summands: u32,
        l2_units: f64,
        dimension: u64,
        sampling_rate: f64,
        honest_summands: u32,
    ) -> Self {
        Self::DistributedDiscreteGaussian {
            noise_multiplier: f64::from(summands).sqrt() * s_units / l2_units,
            summands,
            l2_units,
            dimension,
            sampling_rate,
            count: 1,
            honest_summands,
        }
    }

    /// The event as the coordinator itself sees the release: for distributed
    /// noise, the same mechanism with only the summands it does not know;
    /// `None` when it sees the sum without noise it does not know (every
    /// central release: it adds that noise itself).
    pub fn coordinator_view(&self) -> Option<Self> {
        match *self {
            Self::DistributedDiscreteGaussian {
                noise_multiplier,
                summands,
                l2_units,
                dimension,
                sampling_rate,
                count,
                honest_summands,
            } if honest_summands > 0 => Some(Self::DistributedDiscreteGaussian {
                noise_multiplier: noise_multiplier
                    * (f64::from(honest_summands) / f64::from(summands)).sqrt(),
                summands: honest_summands,
                l2_units,
                dimension,
                sampling_rate,
                count,
                honest_summands,
            }),
            _ => None,
        }
    }

    /// The same event with `tv` added to its total-variation slack (see
    /// [`PrivacyEvent::Gaussian::tv_slack`]); pure-DP events carry none and
    /// are returned unchanged.
    pub fn with_tv_slack(mut self, tv: f64) -> Self {
        if let Self::Gaussian { tv_slack, .. } = &mut self {
            *tv_slack += tv;
        }
        self
    }

    /// The event's total-variation slack (0 for pure-DP events).
    pub fn tv_slack(&self) -> f64 {
        match self {
            Self::Gaussian { tv_slack, .. } => *tv_slack,
            _ => 0.0,
        }
    }

    /// Number of releases this event stands for.
    pub fn count(&self) -> u32 {
        match self {
            Self::Gaussian { count, .. }
            | Self::DistributedDiscreteGaussian { count, .. }
            | Self::DiscreteLaplace { count, .. }
            | Self::Exponential { count, .. } => *count,
        }
    }

    /// Checks the parameters: sigma finite and > 0, q in (0, 1], epsilon
    /// finite and > 0.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Self::Gaussian {
                noise_multiplier,
                sampling_rate,
                tv_slack,
                ..
            } => {
                NoiseMultiplier::new(noise_multiplier)?;
                SamplingRate::new(sampling_rate)?;
                if !(tv_slack.is_finite() && (0.0..1.0).contains(&tv_slack)) {
                    return Err(Error::InvalidTvSlack(tv_slack));
                }
            }
            Self::DistributedDiscreteGaussian {
                noise_multiplier,
                summands,
                l2_units,
                sampling_rate,
                honest_summands,
                ..
            } => {
                NoiseMultiplier::new(noise_multiplier)?;
                SamplingRate::new(sampling_rate)?;
                if !(l2_units.is_finite() && l2_units > 0.0) {
                    return Err(Error::InvalidScale {
                        value: l2_units,
                        max: crate::noise::MAX_SIGMA,
                    });
                }
                if summands == 0 || honest_summands > summands {
                    return Err(Error::InvalidSummands {
                        summands,
                        honest: honest_summands,
                    });
                }
            }
            Self::DiscreteLaplace { epsilon, .. } | Self::Exponential { epsilon, .. } => {
                Epsilon::positive(epsilon)?;
            }
        }
        Ok(())
    }
}

/// A ledger reduced to its distinct mechanisms with summed counts.
///
/// A ledger typically holds one event per round; grouping identical events
/// lets every accountant do its work once per distinct mechanism.
#[derive(Clone, Debug, Default)]
pub(crate) struct Grouped {
    /// Distinct Gaussian (sigma, q) pairs with q < 1, and their counts.
    pub(crate) sampled: Vec<(f64, f64, u64)>,
    /// Sum over full-participation Gaussian rounds of count / sigma^2: they
    /// compose to one Gaussian mechanism with mu = sqrt(this).
    pub(crate) full_mu2: f64,
    /// Whether any full-participation Gaussian round is present.
    pub(crate) has_full: bool,
    /// Distinct discrete-Laplace epsilons and counts.
    pub(crate) laplace: Vec<(f64, u64)>,
    /// Distinct exponential-mechanism epsilons and counts.
    pub(crate) exponential: Vec<(f64, u64)>,
    /// Total zCDP ρ of the distributed-discrete-Gaussian releases (their
    /// RDP is α·ρ at every order; see [`crate::distributed`]).
    pub(crate) distributed_rho: f64,
    /// Whether any distributed-discrete-Gaussian release is present.
    pub(crate) has_distributed: bool,
    /// Sum over distributed-discrete-Gaussian releases of count / σ², σ
    /// their noise multiplier on the sum: for the accountants of the exact
    /// Gaussian profile (exact, PLD), which count them as the Gaussian
    /// mechanism at σ within [`Grouped::tv_slack_distributed`] (see
    /// [`crate::distributed`], "Accounting").
    pub(crate) distributed_mu2: f64,
    /// Total-variation slack of the distributed-discrete-Gaussian releases
    /// against the Gaussian mechanism at their σ (RDP needs none: it uses
    /// their zCDP bound).
    pub(crate) tv_slack_distributed: f64,
    /// Total-variation slack of the ledger's full-participation Gaussian
    /// events (added to δ as (1 + e^ε)·τ, except by RDP: see
    /// [`Grouped::tv_slack_for`]).
    pub(crate) tv_slack_full: f64,
    /// Total-variation slack of its sampled Gaussian events.
    pub(crate) tv_slack_sampled: f64,
}

impl Grouped {
    /// Validates and groups a ledger. Events with count 0 are ignored.
    pub(crate) fn new(events: &[PrivacyEvent]) -> Result<Self, Error> {
        let mut g = Self::default();
        for e in events {
            e.validate()?;
            if e.count() == 0 {
                continue;
            }
            let c = u64::from(e.count());
            match *e {
                PrivacyEvent::Gaussian {
                    noise_multiplier: s,
                    sampling_rate: q,
                    tv_slack,
                    ..
                } => {
                    if q == 1.0 {
                        g.tv_slack_full += tv_slack;
                    } else {
                        g.tv_slack_sampled += tv_slack;
                    }
                    if q == 1.0 {
                        g.full_mu2 += c as f64 / (s * s);
                        g.has_full = true;
                    } else if let Some(x) = g.sampled.iter_mut().find(|x| x.0 == s && x.1 == q) {
                        x.2 += c;
                    } else {
                        g.sampled.push((s, q, c));
                    }
                }
                PrivacyEvent::DistributedDiscreteGaussian {
                    noise_multiplier,
                    summands,
                    l2_units,
                    dimension,
                    ..
                } => {
                    let s = noise_multiplier * l2_units / f64::from(summands).sqrt();
                    let eps = crate::distributed::ddg_epsilon(s, summands, l2_units, dimension)?;
                    g.distributed_rho += c as f64 * eps * eps / 2.0;
                    g.has_distributed = true;
                    g.distributed_mu2 += c as f64 / (noise_multiplier * noise_multiplier);
                    g.tv_slack_distributed += c as f64
                        * crate::distributed::gaussian_tv(
                            s,
                            summands,
                            noise_multiplier * l2_units,
                            dimension,
                        )?;
                }
                PrivacyEvent::DiscreteLaplace { epsilon, .. } => add(&mut g.laplace, epsilon, c),
                PrivacyEvent::Exponential { epsilon, .. } => add(&mut g.exponential, epsilon, c),
            }
        }
        Ok(g)
    }

    /// For a ledger of pure-DP events only: the sum of their epsilons
    /// (basic composition gives (sum, 0)-DP). `None` if Gaussian rounds are present.
    pub(crate) fn pure_epsilon_sum(&self) -> Option<f64> {
        if self.has_full || !self.sampled.is_empty() || self.has_distributed {
            return None;
        }
        Some(
            self.laplace
                .iter()
                .chain(&self.exponential)
                .map(|&(e, c)| e * c as f64)
                .sum(),
        )
    }

    /// The slack accountant `kind` must add to δ. Full-participation events
    /// carry only the slack of discretised noise, and the discrete Gaussian
    /// has exactly the Rényi divergences of the continuous one (Canonne,
    /// Kamath & Steinke 2020, Prop. 5: `D_α ≤ α Δ²/(2σ²)` per coordinate,
    /// additive over independent coordinates), so RDP needs no slack for
    /// them; every other bound (the exact Gaussian profile, PLD, subsampled
    /// RDP) counts all of it.
    pub(crate) fn tv_slack_for(&self, kind: crate::AccountantKind) -> f64 {
        match kind {
            crate::AccountantKind::Rdp => self.tv_slack_sampled,
            _ => self.tv_slack_full + self.tv_slack_sampled + self.tv_slack_distributed,
        }
    }

    /// Whether some accountant adds a total-variation slack to δ.
    pub(crate) fn has_slack(&self) -> bool {
        self.tv_slack_full > 0.0 || self.tv_slack_sampled > 0.0 || self.tv_slack_distributed > 0.0
    }

    /// Whether the ledger holds only Gaussian rounds (central, or the
    /// distributed discrete Gaussian counted as one).
    pub(crate) fn only_gaussian(&self) -> bool {
        self.laplace.is_empty() && self.exponential.is_empty()
    }

    /// Sum of count / σ² over the full-participation Gaussian rounds and
    /// the distributed-discrete-Gaussian releases: they compose to one
    /// Gaussian mechanism with μ = sqrt(this) (Dong, Roth & Su 2022, Cor. 3.3),
    /// within the ledger's slack.
    pub(crate) fn gaussian_mu2(&self) -> f64 {
        self.full_mu2 + self.distributed_mu2
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn add(v: &mut Vec<(f64, u64)>, eps: f64, c: u64) {
    if let Some(x) = v.iter_mut().find(|x| x.0 == eps) {
        x.1 += c;
    } else {
        v.push((eps, c));
    }
}
