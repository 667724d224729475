//! Dropout plans: which sites leave which training round, and at which
//! secure-aggregation stage, decided from the run's seed before the
//! federation starts.
//!
//! `--dropout 0.2` makes a fifth of the sites leave every training round,
//! each at a stage drawn at random; `--dropout keys=0.05,input=0.1` names
//! the stages (`keys`, `shares`, `input`, `unmask`, or `random`). For each
//! training round the sites are shuffled (ChaCha8 seeded from the run seed
//! and the round) and the first `round(share · n)` go to the first stage
//! named, the next ones to the second, and so on, so the same seed always
//! gives the same plan.
//!
//! A planned site leaves *instead of* sending what the stage asks of it,
//! through the participant's send hook
//! ([`tessera_participant::client::SendHook::leave_before`]): the real
//! participant opens a new session, and once the coordinator has welcomed
//! it (and so dropped the site from the round) closes the old one. The site
//! is therefore dropped at exactly the planned stage, by the real
//! coordinator's dropout handling, and is connected again for the next
//! round; both engines behave alike.
//!
//! What the coordinator reports: a site that left before its masked input
//! arrived (`keys`, `shares`, `input`) is not in the sum and is listed as
//! dropped; one that left at unmasking is in the sum (its input arrived, and
//! its self mask is rebuilt from the others' shares), so it is a contributor.
//! Training round t is aggregation t + 1 (the statistics aggregation comes
//! first; a failed aggregation shifts the later plans by one).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tessera_participant::client::SendHook;
use tessera_proto::v1::{ChunkPurpose, ParticipantMessage, participant_message::Body};

/// Aggregations before the first training round (the statistics).
pub const AGGREGATIONS_BEFORE_TRAINING: u64 = 1;

/// A secure-aggregation stage at which a site can leave a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Instead of advertising its keys.
    Keys,
    /// Instead of sending its encrypted shares.
    Shares,
    /// Instead of sending its (masked) input.
    Input,
    /// Instead of answering the unmasking request.
    Unmask,
}

impl Stage {
    /// Every stage, in protocol order.
    pub const ALL: [Stage; 4] = [Stage::Keys, Stage::Shares, Stage::Input, Stage::Unmask];

    /// The stage's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Keys => "keys",
            Stage::Shares => "shares",
            Stage::Input => "input",
            Stage::Unmask => "unmask",
        }
    }

    /// Whether a site that leaves here is left out of the sum.
    pub fn leaves_the_sum(self) -> bool {
        self != Stage::Unmask
    }

    /// Whether `m` is what a site sends at this stage of aggregation `round`.
    pub fn matches(self, round: u64, m: &ParticipantMessage) -> bool {
        match (self, &m.body) {
            (Stage::Keys, Some(Body::Keys(k))) => k.round == round,
            (Stage::Shares, Some(Body::ShareKeys(s))) => s.round == round,
            (Stage::Input, Some(Body::Chunk(c))) => {
                c.round == round
                    && (c.purpose == ChunkPurpose::MaskedInput as i32
                        || c.purpose == ChunkPurpose::PlainInput as i32)
            }
            (Stage::Unmask, Some(Body::Unmask(u))) => u.round == round,
            _ => false,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the sites of one share leave: a named stage, or one drawn per site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageChoice {
    /// At this stage.
    At(Stage),
    /// At a stage drawn uniformly for each site and round.
    Random,
}

/// `--dropout`: shares of each round's sites that leave, by stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DropoutSpec {
    /// `(where, share)` in the order written.
    pub parts: Vec<(StageChoice, f64)>,
}

impl DropoutSpec {
    /// Whether nobody leaves.
    pub fn is_none(&self) -> bool {
        self.parts.iter().all(|(_, s)| *s <= 0.0)
    }

    /// The total share of sites that leave each round.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, s)| s).sum()
    }

    /// Sites that leave each round out of `n` (each share rounded).
    pub fn per_round(&self, n: usize) -> usize {
        self.parts
            .iter()
            .map(|(_, s)| (s * n as f64).round() as usize)
            .sum()
    }

    /// The plan for `sites` over training rounds `1..=rounds`, from `seed`.
    /// Without secure aggregation only the input stage exists, so every
    /// leaver leaves there.
    pub fn plan(&self, sites: &[String], rounds: u32, seed: u64, secagg: bool) -> DropoutPlan {
        let mut by_round = BTreeMap::new();
        for t in 1..=rounds {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd509_0a70 ^ (u64::from(t) << 32));
            let mut order: Vec<&String> = sites.iter().collect();
            order.shuffle(&mut rng);
            let mut at = 0;
            let mut leavers = BTreeMap::new();
            for (choice, share) in &self.parts {
                let count = ((share * sites.len() as f64).round() as usize).min(order.len() - at);
                for name in &order[at..at + count] {
                    let stage = match choice {
                        _ if !secagg => Stage::Input,
                        StageChoice::At(s) => *s,
                        StageChoice::Random => Stage::ALL[rng.random_range(0..Stage::ALL.len())],
                    };
                    leavers.insert((*name).clone(), stage);
                }
                at += count;
            }
            by_round.insert(t, leavers);
        }
        DropoutPlan { by_round }
    }
}

impl FromStr for DropoutSpec {
    type Err = String;

    /// `0.2`, or `STAGE=SHARE[,STAGE=SHARE…]` with stages `keys`, `shares`,
    /// `input`, `unmask` and `random`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (stage, share) = match item.split_once('=') {
                Some((stage, share)) => (stage.trim(), share.trim()),
                None => ("random", item),
            };
            let choice = match stage {
                "random" => StageChoice::Random,
                name => StageChoice::At(
                    Stage::ALL
                        .into_iter()
                        .find(|st| st.as_str() == name)
                        .ok_or_else(|| {
                            format!(
                                "unknown stage `{name}` (keys, shares, input, unmask or random)"
                            )
                        })?,
                ),
            };
            let share: f64 = share
                .parse()
                .map_err(|_| format!("`{share}` is not a share such as 0.2"))?;
            if !(0.0..1.0).contains(&share) {
                return Err(format!("share {share} is not in [0, 1)"));
            }
            parts.push((choice, share));
        }
        let spec = DropoutSpec { parts };
        if spec.total() >= 1.0 {
            return Err(format!(
                "the shares add up to {} (must be below 1)",
                spec.total()
            ));
        }
        Ok(spec)
    }
}

impl fmt::Display for DropoutSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(c, s)| match c {
                StageChoice::Random => format!("random={s}"),
                StageChoice::At(st) => format!("{st}={s}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Who leaves each training round, and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropoutPlan {
    /// Training round → site → stage.
    pub by_round: BTreeMap<u32, BTreeMap<String, Stage>>,
}

impl DropoutPlan {
    /// One site's leavings as `(aggregation, stage)`.
    pub fn for_site(&self, name: &str) -> Vec<(u64, Stage)> {
        self.by_round
            .iter()
            .filter_map(|(t, m)| {
                m.get(name)
                    .map(|s| (u64::from(*t) + AGGREGATIONS_BEFORE_TRAINING, *s))
            })
            .collect()
    }

    /// The sites of training round `t` expected outside the sum.
    pub fn expected_dropped(&self, t: u32) -> Vec<String> {
        self.by_round
            .get(&t)
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| s.leaves_the_sum())
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The plan as CSV: `training_round,site,stage`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("training_round,site,stage\n");
        for (t, m) in &self.by_round {
            for (name, stage) in m {
                out.push_str(&format!("{t},{name},{stage}\n"));
            }
        }
        out
    }

    /// Arguments of `tessera-sim participant` that make `name` follow the plan.
    pub fn participant_args(&self, name: &str) -> Vec<String> {
        self.for_site(name)
            .into_iter()
            .flat_map(|(round, stage)| [LEAVE_FLAG.to_owned(), format!("{round}:{stage}")])
            .collect()
    }
}

/// The flag of `tessera-sim participant` for one planned leaving.
pub const LEAVE_FLAG: &str = "--leave-round";

/// Parses a [`LEAVE_FLAG`] value, `AGGREGATION:STAGE`.
pub fn parse_leave(value: &str) -> Result<(u64, Stage), String> {
    let (round, stage) = value
        .split_once(':')
        .ok_or_else(|| format!("`{value}` is not AGGREGATION:STAGE"))?;
    let round = round
        .parse()
        .map_err(|_| format!("`{round}` is not an aggregation number"))?;
    let stage = Stage::ALL
        .into_iter()
        .find(|s| s.as_str() == stage)
        .ok_or_else(|| format!("unknown stage `{stage}`"))?;
    Ok((round, stage))
}

/// The send hook that makes a site leave the planned rounds; it counts what
/// it did.
#[derive(Debug, Clone, Default)]
pub struct LeaveRounds {
    plan: Vec<(u64, Stage)>,
    /// Rounds left so far, as `(aggregation, stage)`.
    pub left: std::sync::Arc<std::sync::Mutex<Vec<(u64, Stage)>>>,
}

impl LeaveRounds {
    /// A hook following `plan` (`(aggregation, stage)` pairs).
    pub fn new(plan: Vec<(u64, Stage)>) -> Self {
        Self {
            plan,
            left: Default::default(),
        }
    }
}

impl SendHook for LeaveRounds {
    fn sent(&mut self, _message: &ParticipantMessage) {}

    fn leave_before(&mut self, message: &ParticipantMessage) -> bool {
        let Some(&(round, stage)) = self
            .plan
            .iter()
            .find(|(round, stage)| stage.matches(*round, message))
        else {
            return false;
        };
        tracing::warn!(
            aggregation = round,
            stage = stage.as_str(),
            "planned dropout: leaving the round"
        );
        if let Ok(mut left) = self.left.lock() {
            left.push((round, stage));
        }
        self.plan.retain(|p| *p != (round, stage));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("site-{i:03}")).collect()
    }

    #[test]
    fn parses_shares_and_stages() {
        let s: DropoutSpec = "0.2".parse().unwrap();
        assert_eq!(s.parts, vec![(StageChoice::Random, 0.2)]);
        let s: DropoutSpec = "keys=0.1, unmask=0.05".parse().unwrap();
        assert_eq!(
            s.parts,
            vec![
                (StageChoice::At(Stage::Keys), 0.1),
                (StageChoice::At(Stage::Unmask), 0.05)
            ]
        );
        assert_eq!(s.to_string().parse::<DropoutSpec>().unwrap(), s);
        for bad in ["1.2", "keys=x", "later=0.1", "keys=0.6,input=0.5", "-0.1"] {
            assert!(bad.parse::<DropoutSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_are_seeded_sized_and_disjoint() {
        let sites = names(50);
        let spec: DropoutSpec = "keys=0.1,input=0.1,unmask=0.04".parse().unwrap();
        let plan = spec.plan(&sites, 5, 3, true);
        assert_eq!(plan, spec.plan(&sites, 5, 3, true));
        assert_ne!(plan, spec.plan(&sites, 5, 4, true));
        for t in 1..=5 {
            let round = &plan.by_round[&t];
            assert_eq!(round.len(), 12);
            let at = |s| round.values().filter(|x| **x == s).count();
            assert_eq!(
                (at(Stage::Keys), at(Stage::Input), at(Stage::Unmask)),
                (5, 5, 2)
            );
            assert_eq!(plan.expected_dropped(t).len(), 10);
        }
        // Rounds draw different sites.
        assert_ne!(plan.by_round[&1], plan.by_round[&2]);
        // A site's leavings name aggregations, one after the statistics.
        let (name, stage) = plan.by_round[&3].iter().next().unwrap();
        assert!(plan.for_site(name).contains(&(4, *stage)));
        let args = plan.participant_args(name);
        assert_eq!(parse_leave(&args[1]).unwrap().0, plan.for_site(name)[0].0);
    }

    #[test]
    fn without_secure_aggregation_everyone_leaves_at_the_input() {
        let spec: DropoutSpec = "0.3".parse().unwrap();
        let plan = spec.plan(&names(10), 2, 1, false);
        assert!(
            plan.by_round
                .values()
                .flat_map(|m| m.values())
                .all(|s| *s == Stage::Input)
        );
        assert_eq!(plan.by_round[&1].len(), 3);
    }

    #[test]
    fn the_hook_leaves_only_the_planned_message_once() {
        use tessera_proto::v1::{SecAggKeys, UnmaskResponse};
        let mut hook = LeaveRounds::new(vec![(3, Stage::Keys)]);
        let keys = |round| ParticipantMessage {
            body: Some(Body::Keys(SecAggKeys {
                round,
                ..Default::default()
            })),
        };
        let unmask = ParticipantMessage {
            body: Some(Body::Unmask(UnmaskResponse {
                round: 3,
                ..Default::default()
            })),
        };
        assert!(!hook.leave_before(&keys(2)));
        assert!(!hook.leave_before(&unmask));
        assert!(hook.leave_before(&keys(3)));
        assert!(!hook.leave_before(&keys(3)));
        assert_eq!(*hook.left.lock().unwrap(), vec![(3, Stage::Keys)]);
    }
}
