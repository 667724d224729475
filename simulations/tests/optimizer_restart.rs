//! A coordinator SIGKILLed mid-federation resumes its adaptive server
//! optimizer exactly, with real processes: three sites on the
//! breast-cancer data, FedAdam, no DP (so two federations can be
//! compared). One federation runs its 24 training rounds without a break;
//! an identical one has its coordinator killed once three training rounds
//! are checkpointed, restarted on the same store and port, and completed
//! by the same participants, which reconnect by themselves.
//!
//! Every checkpointed model of the second federation equals the first's
//! within 5·10⁻³ (FedAdam with τ = 0.01). Two federations never agree
//! exactly: secure aggregation encodes each update with stochastic
//! rounding, and FedAdam's normalisation enlarges those differences on
//! coordinates whose updates are tiny (they grow with the rounds, up to
//! about 7·10⁻⁴ by round 24). The restart must carry FedAdam's moments:
//! started afresh, its first step after the restart already differs by
//! about 3·10⁻², six times the tolerance, and later ones by 0.1 or more.
//!
//! The kill lands right after a checkpoint is recorded, which is the
//! window the store closes: the checkpoint, the optimizer's state after
//! its step and the round's `released` record (with its contributors and
//! its `rounds.csv` line) are written in one transaction, and a restart
//! restores a `rounds.csv` line the kill kept from the file. Local
//! training is full-batch, so the round numbers that a restart skips (each
//! local shuffle is seeded by its round) change only the order of a sum.

#![cfg(unix)]

use std::path::PathBuf;

use tessera_simulations::launch::SitePlan;
use tessera_testkit::federation::{Federation, breast_cancer_split, plain_plan, sim_entry_points};
use tessera_testkit::files::fresh_dir;
use tessera_testkit::process::free_port;

const ROUNDS: u32 = 24;
const KILL_AFTER: u32 = 3;

/// A federation of three sites training with FedAdam in `name`, on a fixed
/// port.
fn federation(name: &str) -> Federation {
    let root = fresh_dir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("optimizer_restart")
            .join(name),
    );
    let split = breast_cancer_split(&root.join("data"), 3, 5);
    let sites = SitePlan::from_split(&split);
    let mut plan = plain_plan(&root, &sites);
    plan.rounds = ROUNDS;
    plan.training.batch_size = 100_000;
    plan.training.server_learning_rate = 0.05;
    plan.learning.server_optimizer = "fedadam".into();
    plan.learning.server_tau = 0.01;
    plan.listen = Some(format!("127.0.0.1:{}", free_port()));
    Federation::from_plan(plan, sim_entry_points(env!("CARGO_BIN_EXE_tessera-sim")))
}

/// The parameters of every checkpointed model, by training round.
fn checkpointed(fed: &Federation) -> Vec<(u32, Vec<f32>)> {
    let mut models: Vec<(u32, Vec<f32>)> = fed
        .store()
        .checkpoints()
        .expect("reading the checkpoints")
        .into_iter()
        .map(|c| {
            let m = tessera_model::read_model(&c.path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", c.path.display()));
            (c.training_round, m.params)
        })
        .collect();
    models.sort_by_key(|(t, _)| *t);
    models
}

/// Waits for the federation to end and checks it completed every planned
/// round with all its sites ([`Federation::assert_completed_with`]).
fn complete(fed: &mut Federation) {
    let names = fed.site_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    fed.assert_completed_with(&names, &[]);
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 5e-3)
}

#[test]
fn fedadam_resumes_after_a_sigkill_with_the_steps_it_would_have_taken() {
    let mut straight = federation("straight");
    straight.start_coordinator();
    straight.start_participants();
    complete(&mut straight);
    let reference = checkpointed(&straight);
    assert_eq!(
        reference.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        (0..=ROUNDS).collect::<Vec<_>>()
    );

    let mut broken = federation("killed");
    broken.start_coordinator();
    broken.start_participants();
    broken.wait_for("three checkpointed training rounds", |f| {
        f.store()
            .checkpoints()
            .ok()?
            .iter()
            .any(|c| c.training_round >= KILL_AFTER)
            .then_some(())
    });
    broken.kill_coordinator();
    let before = checkpointed(&broken);
    // Rounds take milliseconds; 24 of them leave the kill time to land.
    assert!(
        before.len() <= ROUNDS as usize,
        "the federation finished before the kill"
    );
    broken.start_coordinator();
    complete(&mut broken);
    assert_eq!(broken.coordinator_starts(), 2);
    let resumed = checkpointed(&broken);
    assert_eq!(
        resumed.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        (0..=ROUNDS).collect::<Vec<_>>(),
        "one checkpoint per training round"
    );
    for ((t, a), (_, b)) in reference.iter().zip(&resumed) {
        assert!(close(a, b), "training round {t}:\n{a:?}\n{b:?}");
    }
    eprintln!(
        "killed after {} checkpoints; largest difference {:e}",
        before.len(),
        reference
            .iter()
            .zip(&resumed)
            .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max)
    );
    // The models moved: the comparison is not between two initial models.
    let (first, last) = (&reference[0].1, &reference[ROUNDS as usize].1);
    assert!(!close(first, last), "training did not move the model");
    assert!(
        broken.root().join("coordinator/model.safetensors").exists(),
        "no final model"
    );
}
