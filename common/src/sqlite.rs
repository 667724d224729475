//! Opening SQLite databases the way both stores need them: for writing in
//! WAL mode with `synchronous=FULL` (a committed transaction survives a
//! crash), or read-only next to a running writer.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long a statement waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a database could not be opened as needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite reported an error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database would not switch to WAL mode.
    #[error("cannot switch to WAL journal mode (got {0})")]
    NotWal(String),
}

/// Opens (creating if needed) a database for writing: busy timeout, WAL
/// journal, `synchronous=FULL`, foreign keys on.
pub fn open_durable(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Opens an existing database for reading only; works while a writer has it
/// open.
pub fn open_read_only(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// The schema version stored in `PRAGMA user_version`.
pub fn user_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_and_read_only_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let w = open_durable(&path).unwrap();
        w.execute_batch(
            "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1); PRAGMA user_version = 3;",
        )
        .unwrap();
        let sync: i64 = w
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let r = open_read_only(&path).unwrap();
        assert_eq!(user_version(&r).unwrap(), 3);
        assert!(r.execute("INSERT INTO t VALUES (2)", []).is_err());
        assert!(open_read_only(&dir.path().join("missing.sqlite")).is_err());
    }
}
