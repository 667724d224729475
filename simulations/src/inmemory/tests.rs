//! The in-memory harness at scale: one private round of 100 sites with
//! dropouts at every secure-aggregation stage, deterministic.

use std::collections::BTreeSet;

use super::scenario::{ROUND, Scenario};
use super::{DropStage, Outcome};

const SITES: usize = 100;
const HUNDRED: Scenario = Scenario {
    sites: SITES,
    drops: 3,
};

#[test]
fn a_hundred_sites_with_dropouts_at_every_stage() {
    let started = std::time::Instant::now();
    let out = HUNDRED.run(42).unwrap();
    let elapsed = started.elapsed();
    let (reason, success) = out.finished.clone().unwrap();
    assert!(success, "{reason}");
    assert!(out.aborted.is_empty(), "{:?}", out.aborted);
    assert_eq!(out.released.len(), 1);
    let c = &out.released[0];
    let s = &c.summary;
    assert_eq!((s.round, s.training_round), (ROUND, Some(1)));
    assert_eq!(s.cohort.len(), SITES);
    // Sites gone before their masked input left are not in the sum; those
    // that vanished at unmasking are (their input arrived), and their masks
    // were recovered from the others' shares.
    let gone_before_input: BTreeSet<String> = HUNDRED
        .plan()
        .into_iter()
        .filter(|(_, st)| *st != DropStage::Unmask)
        .map(|(n, _)| n)
        .collect();
    let dropped: BTreeSet<String> = s.dropped.iter().cloned().collect();
    assert_eq!(dropped, gone_before_input);
    assert_eq!(s.contributors.len(), SITES - 9);
    // The ledger: one private training round over the announced cohort.
    let entry = c.privacy.as_ref().expect("private");
    assert_eq!(
        (entry.noise_multiplier, entry.cohort_size),
        (1.0, SITES as u32)
    );
    assert!(entry.event.tv_slack() > 0.0);
    // Each site's own ledger holds the round if it got as far as sending
    // its input (written before the input leaves: the masked-input droppers
    // counted it too, the safe side).
    let recorded = out.site_ledgers.values().filter(|l| l.len() == 1).count();
    assert_eq!(recorded, SITES - 6);
    assert!(out.site_ledgers.values().all(|l| l.len() <= 1));
    let model = out.model().unwrap();
    assert!(model.iter().all(|w| w.is_finite()) && model.iter().any(|&w| w != 0.0));
    // The update points the way the data does (a and b up, c down), far
    // beyond the noise of 91 sites.
    assert!(model[0] > 0.0 && model[2] < 0.0, "{model:?}");
    eprintln!(
        "100 sites, one private round, 12 dropouts: {:.3} s here ({} messages, {:.1} virtual s)",
        elapsed.as_secs_f64(),
        out.messages,
        out.virtual_seconds
    );
}

#[test]
fn runs_are_deterministic() {
    let a = HUNDRED.run(7).unwrap();
    let b = HUNDRED.run(7).unwrap();
    let bits =
        |o: &Outcome| -> Vec<u32> { o.model().unwrap().iter().map(|w| w.to_bits()).collect() };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.messages, b.messages);
    let c = HUNDRED.run(8).unwrap();
    assert_ne!(bits(&a), bits(&c), "another seed, another noise");
}
