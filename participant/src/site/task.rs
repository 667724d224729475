//! The task a coordinator asks a site to serve: parsed, checked against the
//! site's column allow-list before any data is read, then the site's data
//! loaded for it.
//!
//! A task is a coordinator's claim too: naming a column as a feature is a
//! way to probe it (the CSV reader's errors quote cell values and the file's
//! path). So a site with `[participant] allowed_columns` refuses any other
//! column before it opens its file, and every refusal reaches the
//! coordinator only as a [`RejectCode`]; the detail stays in the site's log.

use tessera_model::{Dataset, TaskSpec};
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
