//! A disk that can lose power: an in-memory SQLite VFS that keeps, per
//! file, what was last made durable by an fsync, so a test can cut the
//! power and see exactly what a machine would find when it boots again.
//!
//! A kill of a process cannot show a missing fsync (the kernel's page cache
//! survives it); this VFS can. [`install`] registers it as the process's
//! default VFS, so every SQLite database the code under test opens (the
//! coordinator's store, a site's ledger) lives on it, through the
//! production open path unchanged. The model, as in SQLite's own crash
//! tests:
//! - a write changes the file's current content only;
//! - `xSync` makes the file's current content (and the file's existence)
//!   durable;
//! - a deletion is immediate (SQLite deletes a WAL only after syncing what
//!   it checkpointed, so a durable deletion can only lose what a missing
//!   sync would also lose);
//! - [`cut_power_after`] makes every write, sync, truncation and deletion
//!   after the given number fail with an I/O error, as if the machine had
//!   stopped there; [`power_loss`] then puts every file back to its durable
//!   content (files never synced disappear) and clears shared memory.
//!
//! [`set_capacity`] gives the disk a size: a write that would grow the files
//! past it fails with `SQLITE_FULL`, as a full disk does; [`set_read_only`]
//! makes every write fail with `SQLITE_READONLY` and refuses to create
//! files, as a read-only mount does. Only files whose path starts with the
//! given directory are affected, so a federation in one process can fill
//! the coordinator's disk while the sites' disks have room.
//!
//! The state is global to the process (SQLite calls the VFS through C
//! function pointers); tests that use it take [`exclusive`] first.

use std::collections::HashMap;
use std::ffi::{CString, c_int};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

use rusqlite::ffi;

/// Shared-memory lock slots of a WAL database (`SQLITE_SHM_NLOCK`).
const SHM_SLOTS: usize = 8;

/// One file on the disk.
#[derive(Debug, Default)]
struct MemFile {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a power loss (`None`: the file itself does not).
    durable: Option<Vec<u8>>,
}

/// The shared memory (`-shm`) of one WAL database: regions handed out to
/// SQLite by address (boxed so they never move) and the slot locks.
#[derive(Debug, Default)]
struct Shm {
    regions: Vec<Box<[u8]>>,
    shared: [u32; SHM_SLOTS],
    exclusive: [bool; SHM_SLOTS],
    /// Connections that have mapped it.
    users: u32,
}

/// A directory under a fault (full or read-only).
#[derive(Debug, Clone)]
enum Fault {
    /// Files under the directory may hold at most this many bytes in all.
    Capacity(u64),
    /// Nothing under the directory may be written.
    ReadOnly,
}

#[derive(Debug, Default)]
struct Disk {
    files: HashMap<String, MemFile>,
    shm: HashMap<String, Shm>,
    /// Writes, syncs, truncations and deletions so far.
    ops: u64,
    /// After this many operations, every further one fails.
    cut_after: Option<u64>,
    faults: Vec<(String, Fault)>,
    /// Names for files SQLite opens without one (temporary files).
    next_temp: u64,
}

impl Disk {
    /// Counts an operation that changes the disk; false once the power is cut.
    fn powered(&mut self) -> bool {
        self.ops += 1;
        self.cut_after.is_none_or(|n| self.ops <= n)
    }

    fn fault(&self, name: &str) -> Option<(&str, &Fault)> {
        self.faults
            .iter()
            .find(|(dir, _)| name.starts_with(dir.as_str()))
            .map(|(d, f)| (d.as_str(), f))
    }

    /// Bytes held by the files under `dir`.
    fn used_under(&self, dir: &str) -> u64 {
        self.files
            .iter()
            .filter(|(n, _)| n.starts_with(dir))
            .map(|(_, f)| f.current.len() as u64)
            .sum()
    }

    /// Whether `name` may grow by `extra` bytes (an error code if not).
    fn may_write(&self, name: &str, extra: u64) -> Result<(), c_int> {
        match self.fault(name) {
            None => Ok(()),
            Some((_, Fault::ReadOnly)) => Err(ffi::SQLITE_READONLY),
            Some((dir, Fault::Capacity(cap))) => {
                if extra > 0 && self.used_under(dir) + extra > *cap {
                    Err(ffi::SQLITE_FULL)
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn disk() -> MutexGuard<'static, Disk> {
    static DISK: OnceLock<Mutex<Disk>> = OnceLock::new();
    DISK.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Serialises the tests of one binary that use the disk (its state is global).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static TESTS: Mutex<()> = Mutex::new(());
    TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers the disk as this process's default SQLite VFS (once).
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the VFS and its name live for the rest of the process
        // (leaked), and registration happens once, before this process
        // opens any database through it.
        unsafe {
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!default.is_null(), "SQLite has no default VFS");
            let name = CString::new("tessera-power-loss").expect("no NUL in the name");
            let vfs = Box::new(ffi::sqlite3_vfs {
                iVersion: 2,
                szOsFile: std::mem::size_of::<Handle>() as c_int,
                mxPathname: 1024,
                pNext: std::ptr::null_mut(),
                zName: name.into_raw(),
                pAppData: default.cast(),
                xOpen: Some(x_open),
                xDelete: Some(x_delete),
                xAccess: Some(x_access),
                xFullPathname: Some(x_full_pathname),
                xDlOpen: None,
                xDlError: None,
                xDlSym: None,
                xDlClose: None,
                xRandomness: (*default).xRandomness.map(|_| x_randomness as _),
                xSleep: (*default).xSleep.map(|_| x_sleep as _),
                xCurrentTime: (*default).xCurrentTime.map(|_| x_current_time as _),
                xGetLastError: None,
                xCurrentTimeInt64: (*default)
                    .xCurrentTimeInt64
                    .map(|_| x_current_time_int64 as _),
                xSetSystemCall: None,
                xGetSystemCall: None,
                xNextSystemCall: None,
            });
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(vfs), 1);
            assert_eq!(rc, ffi::SQLITE_OK, "registering the power-loss VFS");
        }
    });
}

/// After `ops` more disk-changing operations (from now), every further one
/// fails; `None` restores the power.
pub fn cut_power_after(ops: Option<u64>) {
    let mut d = disk();
    d.cut_after = ops.map(|n| d.ops + n);
}

/// Disk-changing operations so far (writes, syncs, truncations, deletions).
pub fn operations() -> u64 {
    disk().ops
}

/// The power comes back: every file returns to its durable content (files
/// never synced are gone), shared memory is cleared and the power is on.
/// Every connection must be closed before.
pub fn power_loss() {
    let mut d = disk();
    d.files.retain(|_, f| f.durable.is_some());
    for f in d.files.values_mut() {
        f.current = f.durable.clone().unwrap_or_default();
    }
    d.shm.clear();
    d.cut_after = None;
}

/// Files under `dir` may hold at most `bytes` in all (`None`: no limit).
pub fn set_capacity(dir: &Path, bytes: Option<u64>) {
    set_fault(dir, bytes.map(Fault::Capacity));
}

/// Makes `dir` read-only (or writable again).
pub fn set_read_only(dir: &Path, read_only: bool) {
    set_fault(dir, read_only.then_some(Fault::ReadOnly));
}

fn set_fault(dir: &Path, fault: Option<Fault>) {
    let key = dir_key(dir);
    let mut d = disk();
    d.faults.retain(|(k, _)| *k != key);
    if let Some(f) = fault {
        d.faults.push((key, f));
    }
}

/// Bytes held by the files under `dir`.
pub fn bytes_under(dir: &Path) -> u64 {
    disk().used_under(&dir_key(dir))
}

/// Whether a file exists on the disk.
pub fn exists(path: &Path) -> bool {
    disk()
        .files
        .contains_key(&path.to_string_lossy().into_owned())
}

/// What [`cut_everywhere`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CutReport {
    /// Disk operations of the whole workload (one power cut after each).
    pub operations: u64,
    /// Items the workload wrote and acknowledged without a power cut.
    pub items: usize,
    /// What went wrong at each cut point where something did (empty: the
    /// workload is durable at every point).
    pub violations: Vec<String>,
}

/// Runs `workload` once on a fresh directory under `root` with the power on
/// (counting its disk operations), then once per cut point `k`, each on a
/// fresh directory, with the power cut after `k` operations; after each cut
/// the power comes back ([`power_loss`]) and `read` reads what survived.
///
/// The workload writes items `1, 2, 3, …` in order and returns those it saw
/// acknowledged (committed); `read` returns the items it finds. At every cut
/// point the survivors must be `1..=m` with every acknowledged item among
/// them and at most the one in flight beyond: a lost acknowledged item, a
/// hole or an item never written is a violation.
pub fn cut_everywhere(
    root: &Path,
    workload: impl Fn(&Path) -> Vec<u64>,
    read: impl Fn(&Path) -> Result<Vec<u64>, String>,
) -> CutReport {
    let before = operations();
    let items = workload(&root.join("uncut")).len();
    let total = operations() - before;
    let mut violations = Vec::new();
    for cut in 0..total {
        let dir = root.join(format!("cut-{cut}"));
        cut_power_after(Some(cut));
        let acked = workload(&dir);
        power_loss();
        let found = match read(&dir) {
            Ok(found) => found,
            Err(e) => {
                violations.push(format!("cut after {cut} operations: cannot read back: {e}"));
                continue;
            }
        };
        let in_order = found.iter().enumerate().all(|(i, &x)| x == i as u64 + 1);
        let kept = acked.iter().all(|a| found.contains(a));
        if !in_order || !kept || found.len() > acked.len() + 1 {
            violations.push(format!(
                "cut after {cut} operations: acknowledged {acked:?}, found {found:?}"
            ));
        }
    }
    CutReport {
        operations: total,
        items,
        violations,
    }
}

/// `dir` as a prefix of the paths under it.
fn dir_key(dir: &Path) -> String {
    let mut s = dir.to_string_lossy().into_owned();
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests;
mod vfs;

use vfs::{
    Handle, x_access, x_current_time, x_current_time_int64, x_delete, x_full_pathname, x_open,
    x_randomness, x_sleep,
};
