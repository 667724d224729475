//! Where a restarted coordinator stands: the store's rounds settled, a
//! non-private history refused for a private federation, and the
//! [`Resume`] the federation machine starts from.

use anyhow::Context;

use crate::round::Resume;
use crate::settings::Settings;
use crate::store::{RoundStatus, Store};
use tessera_common::time::now_ms;

/// Store meta key of the adapted clip norm for the next training round.
pub const META_CLIP_NORM: &str = "clip_norm";

/// Store meta key of the server optimizer's state after the last released
/// round (JSON of [`OptimizerState`](crate::round::OptimizerState); absent for a stateless optimizer).
pub const META_OPTIMIZER_STATE: &str = "optimizer_state";

/// Settles the records of rounds a previous coordinator left as `started`.
/// A release writes its checkpoint and its `released` record in one
/// transaction, so a `started` round was interrupted before its commit and
/// released nothing: it is `aborted`. Stores written before that
/// transaction existed may hold a `started` record for the latest
/// checkpoint's round: that round was committed (its ledger row and
/// checkpoint are durable, its model goes out on resume), so it is
/// `released`, though its contributors were never recorded.
pub fn settle_interrupted_rounds(store: &mut Store) -> anyhow::Result<()> {
    let committed = store.latest_checkpoint()?.map(|c| c.round);
    for mut r in store.rounds()? {
        if r.status != RoundStatus::Started {
            continue;
        }
        if Some(r.round) == committed {
            r.status = RoundStatus::Released;
        } else {
            r.status = RoundStatus::Aborted;
            r.reason =
                Some("interrupted: the coordinator stopped before the round was committed".into());
        }
        r.ended_at_ms = Some(now_ms());
        store.record_round(&r)?;
    }
    Ok(())
}

/// A private federation (DP on, noise not seeded) refuses a store that
/// released rounds without privacy: the ledger's ε would not count them,
/// so resuming would report a guarantee the released models do not have.
pub fn refuse_non_private_history(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    if !settings.config.privacy.enabled || settings.not_private {
        return Ok(());
    }
    let rounds = store.non_private_releases()?;
    if rounds.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = rounds.iter().take(10).map(u64::to_string).collect();
    anyhow::bail!(
        "the store {} holds {} round(s) released without privacy (DP off or seeded noise: round {}{}); \
         a private federation cannot resume it, because its ε would not count them. \
         Start the private federation on a new store (`federation.store` or a new output_dir)",
        settings.store.display(),
        rounds.len(),
        list.join(", "),
        if rounds.len() > 10 { ", …" } else { "" }
    )
}

/// Reads where the federation stood from the store.
pub fn resume_from(store: &Store) -> anyhow::Result<Resume> {
    let ledger = store.privacy_events()?;
    let last_ledger = store.last_ledger_round()?.unwrap_or(0);
    let last_round = store.rounds()?.iter().map(|r| r.round).max().unwrap_or(0);
    let clip_norm = match store.meta(META_CLIP_NORM)? {
        Some(text) => Some(
            text.parse::<f64>()
                .with_context(|| format!("stored clip norm `{text}`"))?,
        ),
        None => None,
    };
    // The last model a released evaluation round evaluated.
    let evaluated_through = store
        .rounds()?
        .iter()
        .filter(|r| {
            r.kind == tessera_model::RoundKind::Evaluation
                && r.status == crate::store::RoundStatus::Released
        })
        .filter_map(|r| r.training_round)
        .max()
        .unwrap_or(0);
    let mut resume = Resume {
        next_round: last_ledger.max(last_round) + 1,
        ledger,
        clip_norm,
        evaluated_through,
        ..Resume::default()
    };
    if let Some(cp) = store.latest_checkpoint()? {
        store.verify_checkpoint(&cp)?;
        let model = tessera_model::read_model(&cp.path)
            .with_context(|| format!("reading checkpoint {}", cp.path.display()))?;
        resume.completed_training = cp.training_round;
        resume.model = Some(model.params);
        resume.preprocessor = Some(model.preprocessor);
    }
    Ok(resume)
}
