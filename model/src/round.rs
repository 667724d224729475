//! What a coordinator announces for one aggregation, as both sides hold it:
//! the domain form of the wire's `RoundAnnounce` (conversions live in the
//! `tessera-proto` crate, at the edge).

use crate::evaluation::EvalTerms;
use crate::{Preprocessor, StatsBounds};

/// What an aggregation sums. One enum for the whole system: the machines,
/// the store and the wire all use it (the wire and the store through
/// conversions).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RoundKind {
    /// Per-feature counts, sums, sums of squares and missing counts.
    Statistics,
    /// A clipped model update (and, with adaptive clipping, the clipping bit).
    Training,
    /// Sums of the current model's errors on each site's held-out rows (see
    /// [`crate::evaluation`]); the model does not change.
    Evaluation,
    /// One federated-analytics query (see [`AnalyticsTerms`]): each site's
    /// bounded integer contribution, noised by the coordinator.
    Analytics,
}

impl RoundKind {
    /// Every kind.
    pub const ALL: [RoundKind; 4] = [
        RoundKind::Statistics,
        RoundKind::Training,
        RoundKind::Evaluation,
        RoundKind::Analytics,
    ];

    /// Whether the round sends the global model to its cohort.
    pub fn sends_model(self) -> bool {
        matches!(self, RoundKind::Training | RoundKind::Evaluation)
    }

    /// Text form (store, logs, metrics files).
    pub fn as_str(self) -> &'static str {
        match self {
            RoundKind::Statistics => "statistics",
            RoundKind::Training => "training",
            RoundKind::Evaluation => "evaluation",
            RoundKind::Analytics => "analytics",
        }
    }
}

impl std::fmt::Display for RoundKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RoundKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoundKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown aggregation kind `{s}`"))
    }
}

/// A site's own privacy terms, declared when it joins: its policy and its
/// own ledger's total, never anything derived from its data.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct SiteBudget {
    /// It declines rounds that would take its own ε past this.
    pub max_epsilon: Option<f64>,
    /// δ of its ε.
    pub delta: f64,
    /// It declines rounds announcing less noise than this.
    pub min_noise_multiplier: Option<f64>,
    /// ε its own ledger has counted so far (every round at rate 1).
    pub epsilon_spent: f64,
    /// It declines rounds without differential privacy.
    pub require_privacy: bool,
}

/// Local training settings of a training round.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainingSettings {
    /// Local epochs.
    pub local_epochs: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local minibatch size.
    pub batch_size: u32,
    /// Seed of local shuffling (not a privacy seed).
    pub shuffle_seed: u64,
    /// L2 weight decay λ of local training (0: none).
    pub weight_decay: f64,
}

/// Adaptive clipping terms (Andrew et al. 2021): the vector carries the
/// centred clipping bit after the update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTerms {
    /// Noise multiplier σ_Δ on the update coordinates.
    pub update_noise_multiplier: f64,
    /// Noise std σ_b on the summed centred bits.
    pub clip_count_noise_multiplier: f64,
}

/// Where the privacy noise of a training round is added.
///
/// - `Central`: the coordinator adds it all to the unmasked sum (it sees the
///   sum without noise);
/// - `Distributed`: each site adds its share to its encoded update before
///   masking, so the unmasked sum already carries the noise; the
///   coordinator tops up the shares of sites that dropped;
/// - `Local`: each site adds the whole noise to its own update, trusting
///   nobody; the sum carries the cohort's noise together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The coordinator adds the noise after unmasking.
    #[default]
    Central,
    /// The sites add shares that sum to the noise.
    Distributed,
    /// Every site adds the whole noise to its own update.
    Local,
}

impl Placement {
    /// All placements, in order.
    pub const ALL: [Placement; 3] = [Placement::Central, Placement::Distributed, Placement::Local];

    /// The name used in configurations and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Central => "central",
            Self::Distributed => "distributed",
            Self::Local => "local",
        }
    }

    /// Whether the sites add noise themselves.
    pub fn by_sites(self) -> bool {
        self != Self::Central
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown noise placement {s:?}: expected central, distributed or local")
            })
    }
}

/// The privacy terms a coordinator commits to for one aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PrivacyTerms {
    /// Differential privacy on.
    pub enabled: bool,
    /// σ: noise std σ·C on the sum (σ_eff with adaptive clipping).
    pub noise_multiplier: f64,
    /// L2 sensitivity C of one site's contribution.
    pub clip_norm: f64,
    /// Poisson sampling rate (1 = everyone).
    pub sampling_rate: f64,
    /// δ of the federation's budget.
    pub delta: f64,
    /// Adaptive clipping, if on.
    pub adaptive: Option<AdaptiveTerms>,
    /// The noise is seeded: NOT private.
    pub not_private: bool,
    /// Where the noise is added (training rounds; others are central).
    pub placement: Placement,
    /// With noise added by the sites: the standard deviation, in integer
    /// units of the encoding, of the discrete Gaussian each site adds to
    /// every coordinate of its encoded vector (0 for central noise).
    pub site_noise_units: f64,
    /// With noise added by the sites: how many sites' noise the released
    /// sum carries (the cohort; the coordinator tops up the noise of sites
    /// that dropped). 0 for central noise.
    pub noise_summands: u32,
}

/// Fixed-point encoding: values × 2^scale_bits, summed modulo 2^modulus_bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    /// f.
    pub scale_bits: u32,
    /// k.
    pub modulus_bits: u32,
}

/// One cohort member as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortMember {
    /// Index in the cohort (1-based).
    pub index: u32,
    /// Certificate name.
    pub name: String,
    /// DER certificate (only when keys are signed).
    pub certificate: Vec<u8>,
}

/// Secure-aggregation setup of one aggregation, as one member receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecAggSetup {
    /// This member's index.
    pub my_index: u32,
    /// The whole cohort.
    pub cohort: Vec<CohortMember>,
    /// Shamir threshold t.
    pub threshold: u32,
    /// Masking neighbours per member.
    pub neighbours: u32,
    /// Seed of the neighbour graph.
    pub graph_seed: [u8; 32],
    /// Keys are signed with the certificate key.
    pub signed_keys: bool,
}

/// One aggregation as announced to one cohort member.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// Aggregation number.
    pub round: u64,
    /// What it sums.
    pub kind: RoundKind,
    /// Training round (1-based; 0 for statistics).
    pub training_round: u32,
    /// Planned training rounds.
    pub planned_rounds: u32,
    /// Vector length.
    pub dimension: u64,
    /// Local training settings.
    pub training: TrainingSettings,
    /// Privacy terms.
    pub privacy: PrivacyTerms,
    /// Secure aggregation, or None for plain sums.
    pub secagg: Option<SecAggSetup>,
    /// Fixed-point encoding.
    pub encoding: Encoding,
    /// Pooled preprocessing (training rounds).
    pub preprocessing: Option<Preprocessor>,
    /// Bounds of a statistics contribution (statistics rounds with DP).
    pub statistics_bounds: Option<StatsBounds>,
    /// The public terms of an evaluation round.
    pub evaluation: Option<EvalTerms>,
    /// The query of an analytics round.
    pub analytics: Option<AnalyticsTerms>,
}

/// The query an analytics round asks, as announced: its text (each site
/// parses it itself) and the plan's parameters. Exactly one of `epsilon`
/// (counts, sums, means, top k) and `noise_multiplier` (histograms) is
/// positive.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalyticsTerms {
    /// The query text, e.g. `count where age > 65 and cp = 4`.
    pub query: String,
    /// Most rows one site contributes.
    pub max_rows: u64,
    /// ε of a pure-DP query (0 for a histogram).
    pub epsilon: f64,
    /// σ of a histogram's discrete Gaussian (0 otherwise).
    pub noise_multiplier: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_text() {
        for k in RoundKind::ALL {
            assert_eq!(k.as_str().parse::<RoundKind>().unwrap(), k);
        }
        assert!("histogram".parse::<RoundKind>().is_err());
    }
}
