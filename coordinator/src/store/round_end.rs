//! A round's end made durable in one transaction: for a release its
//! checkpoint, the meta that belongs to the model it made, and its
//! `released` record; for an abort its record and the meta that says so.

use super::checkpoints::CheckpointRow;
use super::rounds::RoundRow;
use super::{Checkpoint, RoundRecord, Store, StoreError, sql_error_at, upsert_meta};

/// What one ended round writes to the store, all or nothing.
#[derive(Debug, Clone, Copy)]
pub struct RoundEnd<'a> {
    /// The round's record: `released` with its contributors and dropped
    /// participants, or `aborted` with its reason.
    pub round: &'a RoundRecord,
    /// The model a released round made, if it made one (its file already
    /// durable).
    pub checkpoint: Option<&'a Checkpoint>,
    /// Meta keys that follow the round: the server optimizer's state after
    /// the step, the next clip norm, the pooled preprocessing, the latest
    /// global evaluation, the round's line of `rounds.csv`.
    pub meta: &'a [(&'a str, &'a str)],
}

impl Store {
    /// Records a round's end in one transaction, so a crash leaves all of it
    /// or none: a restart never resumes a model with another step's
    /// optimizer state, nor a checkpoint whose round record still says
    /// `started` (which would lose who contributed). A checkpoint refused as
    /// a duplicate writes nothing else either. A released round's ledger
    /// row is committed before this, on its own: a crash in between
    /// overcounts ε, never undercounts it.
    pub fn record_round_end(&mut self, end: &RoundEnd<'_>) -> Result<(), StoreError> {
        let checkpoint = end
            .checkpoint
            .map(|c| CheckpointRow::new(self, c))
            .transpose()?;
        let round = RoundRow::new(self, end.round)?;
        self.write_transaction(|tx, path| {
            if let Some(c) = &checkpoint {
                c.insert(tx, path)?;
            }
            for (key, value) in end.meta {
                upsert_meta(tx, key, value).map_err(sql_error_at(path))?;
            }
            round.write(tx, path)
        })
    }
}
