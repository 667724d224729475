//! A ready-made scenario for the in-memory harness: N sites with synthetic
//! data in one private training round (central DP, secure aggregation),
//! with a number of sites vanishing at each secure-aggregation stage. Used by
//! the tests and by `tessera-sim bench harness`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tessera_coordinator::config::CoordinatorConfig;
use tessera_coordinator::round::Resume;
use tessera_coordinator::settings::Settings;
use tessera_model::Preprocessor;
use tessera_participant::data::LocalData;
use tessera_participant::site::SitePolicy;

use super::{DropStage, InMemoryFederation, Outcome};

/// The training round's aggregation number (the statistics came first).
pub const ROUND: u64 = 2;

/// N sites, one private round, `drops` sites vanishing at each stage.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Number of sites.
    pub sites: usize,
    /// Sites that vanish at each of the four stages.
    pub drops: usize,
}

impl Scenario {
    /// The sites that vanish, and where: `drops` at each stage, spread out.
    pub fn plan(&self) -> Vec<(String, DropStage)> {
        let stages = [
            DropStage::Keys,
            DropStage::Shares,
            DropStage::MaskedInput,
            DropStage::Unmask,
        ];
        let stride = (self.sites / 4).max(1);
        stages
            .iter()
            .enumerate()
            .flat_map(|(s, &stage)| {
                (0..self.drops).map(move |j| (site_name(stride * s + 7 + j), stage))
            })
            .collect()
    }

    /// The federation's settings: one training round, min participants
    /// 60% of the sites.
    pub fn settings(&self) -> Settings {
        self.settings_with_rounds(1)
    }

    /// [`Scenario::settings`] with `rounds` training rounds.
    pub fn settings_with_rounds(&self, rounds: u32) -> Settings {
        self.settings_with(rounds, |_| {})
    }

    /// The scenario's configuration with `rounds` training rounds, changed
    /// by `change` before it is planned.
    pub fn settings_with(
        &self,
        rounds: u32,
        change: impl FnOnce(&mut CoordinatorConfig),
    ) -> Settings {
        let names: Vec<String> = (0..self.sites)
            .map(|i| format!("\"{}\"", site_name(i)))
            .collect();
        let text = format!(
            r#"
[federation]
name = "in-memory"
listen = "127.0.0.1:0"
min_participants = {min}
rounds = {rounds}
output_dir = "/nonexistent"
allow = [{allow}]

[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[task]
features = ["a", "b", "c"]
label = "y"
positive = "> 0"

[secagg]
dropout_tolerance = {tolerance}

[training]
clip_norm = 0.5
learning_rate = 0.5

[privacy]
enabled = true
noise_multiplier = 1.0

[statistics.ranges]
a = [-4.0, 4.0]
b = [-4.0, 4.0]
c = [-4.0, 4.0]
"#,
            min = (self.sites * 6 / 10).max(3),
            rounds = rounds,
            // The planned dropouts, with a margin: SecAgg+ sizes the
            // neighbourhoods for it (fewer neighbours, less work).
            tolerance = (4.0 * self.drops as f64 / self.sites as f64 + 0.03).min(0.5),
            allow = names.join(", ")
        );
        let mut config: CoordinatorConfig = toml::from_str(&text).expect("valid scenario");
        change(&mut config);
        Settings::plan(config).expect("valid scenario")
    }

    /// Twenty rows per site: y = 1 when a + b/2 − c plus noise is positive.
    pub fn data(&self, seed: u64) -> Vec<(String, LocalData)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::<f64>::new(0.0, 1.0).expect("valid");
        (0..self.sites)
            .map(|i| {
                let mut csv = String::from("a,b,c,y\n");
                for _ in 0..20 {
                    let (a, b, c) = (
                        normal.sample(&mut rng),
                        normal.sample(&mut rng),
                        normal.sample(&mut rng),
                    );
                    let y = u8::from(a + 0.5 * b - c + 0.3 * normal.sample(&mut rng) > 0.0);
                    csv.push_str(&format!("{a:.4},{b:.4},{c:.4},{y}\n"));
                }
                let name = site_name(i);
                let data = LocalData::from_bytes(format!("{name}.csv"), csv.into_bytes());
                (name, data)
            })
            .collect()
    }

    /// Runs the round with all randomness from `seed`.
    pub fn run(&self, seed: u64) -> anyhow::Result<Outcome> {
        let mut fed = InMemoryFederation::new(
            &self.settings(),
            resume(),
            self.data(1),
            &SitePolicy::default(),
            seed,
        )?;
        for (name, stage) in self.plan() {
            fed.drop_at(&name, ROUND, stage);
        }
        fed.run(10_000_000)
    }
}

/// Site `i`'s name.
pub fn site_name(i: usize) -> String {
    format!("site{i:03}")
}

/// The federation after its statistics: the pooled preprocessing and the
/// initial model, so the run is the one private training round.
pub(super) fn resume() -> Resume {
    Resume {
        next_round: ROUND,
        model: Some(vec![0.0; 4]),
        preprocessor: Some(Preprocessor {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            indicator: vec![false; 3],
            target: None,
        }),
        ..Resume::default()
    }
}
