//! The task a coordinator asks a site to serve: parsed, checked against the
//! site's column allow-list before any data is read, then the site's data
//! loaded for it.
//!
//! A task is a coordinator's claim too: naming a column as a feature is a
//! way to probe it (the CSV reader's errors quote cell values and the file's
//! path). So a site with `[participant] allowed_columns` refuses any other
//! column before it opens its file, and every refusal reaches the
//! coordinator only as a [`RejectCode`]; the detail stays in the site's log.

use tessera_model::{Dataset, TaskKind, TaskSpec};
use tessera_proto::v1::{self, RejectCode};
use tracing::info;

use super::SitePolicy;
use crate::data::LocalData;

/// A task refusal: the code sent and the detail kept locally.
pub(crate) type Refusal = (RejectCode, String);

/// Parses the task and checks its columns against the site's allow-list.
pub(crate) fn accept(policy: &SitePolicy, wire: &v1::TaskSpec) -> Result<TaskSpec, Refusal> {
    let task = tessera_proto::round::task_from_wire(wire).map_err(|e| {
        (
            RejectCode::InvalidTask,
            format!("cannot understand the task: {e}"),
        )
    })?;
    if let Some(allowed) = &policy.allowed_columns {
        let allows = |c: &String| allowed.iter().any(|a| a.trim() == c.trim());
        if let Some(c) = task
            .features
            .iter()
            .chain([&task.label])
            .find(|c| !allows(c))
        {
            return Err((
                RejectCode::ColumnNotAllowed,
                format!(
                    "the task names column {c:?}, which participant.allowed_columns does not list"
                ),
            ));
        }
    }
    Ok(task)
}

/// The site's data for `task` split into the rows it trains on and the rows it
/// holds out for federated evaluation (`[evaluation]`: a separate file, or a
/// seeded fraction stratified by class; none otherwise).
pub(crate) fn load_split(
    data: &LocalData,
    task: &TaskSpec,
    policy: &SitePolicy,
) -> Result<(Dataset, Option<Dataset>), Refusal> {
    let all = load_data(data, task)?;
    if let Some(held) = &data.held_out {
        let held = load_data(held, task)?;
        return Ok((all, Some(held)));
    }
    let e = &policy.evaluation;
    if e.fraction <= 0.0 {
        return Ok((all, None));
    }
    // Stratified by class; a regression's rows are one group.
    let keys: Vec<u32> = match task.kind {
        TaskKind::Regression { .. } => vec![0; all.n_rows()],
        _ => all.y.iter().map(|v| *v as u32).collect(),
    };
    let (train, test) = tessera_model::split::stratified_holdout(&keys, e.fraction, e.seed);
    info!(
        train = train.len(),
        held_out = test.len(),
        "rows held out for federated evaluation"
    );
    Ok((all.select(&train), Some(all.select(&test))))
}

/// The site's data for `task`, parsed from what the shell loaded.
pub(crate) fn load_data(data: &LocalData, task: &TaskSpec) -> Result<Dataset, Refusal> {
    let ds =
        tessera_model::load_csv_from_reader(&data.csv[..], &data.source, task).map_err(|e| {
            (
                RejectCode::DataDoesNotFit,
                format!("local data does not fit the task: {e}"),
            )
        })?;
    info!(
        rows = ds.n_rows(),
        features = ds.n_features(),
        skipped = ds.skipped_rows,
        "local data loaded"
    );
    Ok(ds)
}
