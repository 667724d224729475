//! The power-loss disk against SQLite itself: what survives a cut, a full
//! disk and a read-only mount.

use super::*;

/// A committed row survives a power loss; a commit made without a sync
/// does not.
#[test]
fn commits_survive_and_unsynced_writes_do_not() {
    let _g = exclusive();
    install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sqlite");
    let count = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();
    }
    assert!(
        exists(&path) && !path.exists(),
        "the file is on this disk only"
    );
    // The connection closed: its checkpoint synced everything.
    power_loss();
    let c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&c), 1, "a clean close is durable");
    c.execute_batch("PRAGMA synchronous=FULL; INSERT INTO t VALUES (2);")
        .unwrap();
    c.execute_batch("PRAGMA synchronous=OFF; INSERT INTO t VALUES (3);")
        .unwrap();
    assert_eq!(count(&c), 3, "all three are visible before the power goes");
    // The power goes while the connection is still open: the unsynced
    // commit is lost, the synced ones are there.
    cut_power_after(Some(0));
    drop(c);
    power_loss();
    let c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&c), 2, "only the synced commits survive");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn full_and_read_only_directories() {
    let _g = exclusive();
    install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sqlite");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x BLOB);")
        .unwrap();
    set_capacity(dir.path(), Some(bytes_under(dir.path()) + 1000));
    let err = c
        .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
    set_capacity(dir.path(), None);
    c.execute("INSERT INTO t VALUES (zeroblob(100000))", [])
        .unwrap();
    set_read_only(dir.path(), true);
    let err = c.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly));
    set_read_only(dir.path(), false);
    c.execute("INSERT INTO t VALUES (1)", []).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}
