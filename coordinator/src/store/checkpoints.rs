//! Model checkpoints: safetensors files on disk, referenced in the store by
//! path, size and SHA-256.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, sql_error_at, to_i64, to_u32, to_u64};

/// A model checkpoint recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Aggregation number of the round that produced the model.
    pub round: u64,
    /// Training round of the model.
    pub training_round: u32,
    /// The model file.
    pub path: PathBuf,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// When it was recorded (ms since the Unix epoch).
    pub created_at_ms: i64,
}

/// The file name of a training round's checkpoint: `model-round-NNNN.safetensors`.
pub fn checkpoint_file_name(training_round: u32) -> String {
    format!("model-round-{training_round:04}.safetensors")
}

/// Writes `model` to `dir/model-round-NNNN.safetensors` atomically (temporary
/// file, fsync, rename, fsync of the directory) and returns its path, SHA-256
/// (hex) and size. The file is durable when this returns; record it with
/// [`Store::record_round_end`](super::Store::record_round_end) (or
/// [`Store::record_checkpoint`]) afterwards.
pub fn write_checkpoint(
    dir: &Path,
    training_round: u32,
    model: &tessera_model::ModelFile,
) -> Result<(PathBuf, String, u64), StoreError> {
    let path = dir.join(checkpoint_file_name(training_round));
    let bytes = model.to_bytes().map_err(|source| StoreError::Model {
        path: path.clone(),
        source: Box::new(source),
    })?;
    write_checkpoint_bytes(dir, training_round, &bytes)
}

/// Writes an already-encoded model file as the checkpoint of `training_round`,
/// like [`write_checkpoint`].
pub fn write_checkpoint_bytes(
    dir: &Path,
    training_round: u32,
    bytes: &[u8],
) -> Result<(PathBuf, String, u64), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::CheckpointIo { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = checkpoint_file_name(training_round);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::CheckpointIo { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::CheckpointIo { path, source });
    }
    sync_dir(dir).map_err(io(dir))?;
    let sha = hex(&Sha256::digest(bytes));
    Ok((path, sha, bytes.len() as u64))
}

/// SHA-256 (lowercase hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), StoreError> {
    let io = |source| StoreError::CheckpointIo {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A checkpoint checked and converted for the `checkpoints` table, ready to
/// write inside a transaction ([`Store::record_checkpoint`], or with its
/// round in [`Store::record_round_end`](super::Store::record_round_end)).
pub(super) struct CheckpointRow {
    number: u64,
    round: i64,
    training_round: u32,
    path: String,
    sha256: String,
    bytes: i64,
    created_at_ms: i64,
}

impl CheckpointRow {
    pub(super) fn new(store: &Store, c: &Checkpoint) -> Result<Self, StoreError> {
        let sha256 = c.sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(store.invalid(format!(
                "checkpoint of round {}: {:?} is not a hex SHA-256",
                c.round, c.sha256
            )));
        }
        let path = c
            .path
            .to_str()
            .ok_or_else(|| {
                store.invalid(format!(
                    "checkpoint path {} is not valid UTF-8",
                    c.path.display()
                ))
            })?
            .to_owned();
        Ok(Self {
            number: c.round,
            round: to_i64(store, "round", c.round)?,
            training_round: c.training_round,
            path,
            sha256,
            bytes: to_i64(store, "checkpoint size", c.bytes)?,
            created_at_ms: c.created_at_ms,
        })
    }

    /// Inserts the checkpoint on `tx`. The same checkpoint again is a no-op;
    /// a different one for the same round is refused with
    /// [`StoreError::DuplicateCheckpoint`].
    pub(super) fn insert(&self, tx: &Transaction<'_>, store_path: &Path) -> Result<(), StoreError> {
        let sql_err = sql_error_at(store_path);
        let existing: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT path, sha256, bytes FROM checkpoints WHERE round = ?1",
                [self.round],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql_err)?;
        if let Some((path, sha256, bytes)) = existing {
            return if (path.as_str(), sha256.as_str(), bytes)
                == (self.path.as_str(), self.sha256.as_str(), self.bytes)
            {
                Ok(())
            } else {
                Err(StoreError::DuplicateCheckpoint {
                    path: store_path.to_path_buf(),
                    round: self.number,
                })
            };
        }
        tx.execute(
            "INSERT INTO checkpoints (round, training_round, path, sha256, bytes, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                self.round,
                self.training_round,
                self.path,
                self.sha256,
                self.bytes,
                self.created_at_ms
            ],
        )
        .map_err(sql_err)?;
        Ok(())
    }
}

impl Store {
    /// Records a checkpoint, durably. Recording the same checkpoint again is
    /// a no-op; a different one for the same round is refused with
    /// [`StoreError::DuplicateCheckpoint`]. The coordinator records a
    /// released round's checkpoint with [`Store::record_round_end`](super::Store::record_round_end).
    pub fn record_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        let row = CheckpointRow::new(self, c)?;
        self.write_transaction(|tx, path| row.insert(tx, path))
    }

    /// The checkpoint of the highest round, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.query_checkpoints("ORDER BY round DESC LIMIT 1")?.pop())
    }

    /// Every checkpoint, ordered by round.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.query_checkpoints("ORDER BY round")
    }

    /// Re-hashes a checkpoint's file and checks it against what was recorded.
    pub fn verify_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        verify_checkpoint(c)
    }

    fn query_checkpoints(&self, tail: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT round, training_round, path, sha256, bytes, created_at_ms
                 FROM checkpoints {tail}"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    round: to_u64(r.get(0)?)?,
                    training_round: to_u32(r.get(1)?)?,
                    path: PathBuf::from(r.get::<_, String>(2)?),
                    sha256: r.get(3)?,
                    bytes: to_u64(r.get(4)?)?,
                    created_at_ms: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

/// Re-hashes a checkpoint's file and checks its size and SHA-256 against
/// the record: [`StoreError::CheckpointMismatch`] if they differ,
/// [`StoreError::CheckpointIo`] if the file cannot be read.
pub fn verify_checkpoint(c: &Checkpoint) -> Result<(), StoreError> {
    let (sha, bytes) = sha256_file(&c.path)?;
    if sha.eq_ignore_ascii_case(&c.sha256) && bytes == c.bytes {
        Ok(())
    } else {
        Err(StoreError::CheckpointMismatch {
            path: c.path.clone(),
            expected_sha256: c.sha256.clone(),
            actual_sha256: sha,
            expected_bytes: c.bytes,
            actual_bytes: bytes,
        })
    }
}
