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
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
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

/// An open file, as SQLite allocates it (`szOsFile` bytes, `pMethods` first).
#[repr(C)]
struct Handle {
    base: ffi::sqlite3_file,
    /// The file's name (owned; freed by `xClose`).
    name: *mut String,
    delete_on_close: bool,
    /// Shared-memory slots this connection holds, shared and exclusive.
    shm_shared: u8,
    shm_exclusive: u8,
    shm_mapped: bool,
}

/// # Safety
/// `f` is a handle this VFS opened and has not closed.
unsafe fn name_of<'a>(f: *mut ffi::sqlite3_file) -> &'a str {
    // SAFETY: per the contract, `f` points at a live `Handle` whose `name`
    // was set by `x_open`.
    unsafe { (*(*f.cast::<Handle>()).name).as_str() }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_lock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let mut d = disk();
    let name = if z_name.is_null() {
        d.next_temp += 1;
        format!("/tessera-power-loss-temp/{}", d.next_temp)
    } else {
        // SAFETY: SQLite passes a NUL-terminated name.
        unsafe { CStr::from_ptr(z_name) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: SQLite hands over `szOsFile` writable bytes; a failed open
    // must leave `pMethods` null.
    unsafe { (*file).pMethods = std::ptr::null() };
    if !d.files.contains_key(&name) {
        if flags & ffi::SQLITE_OPEN_CREATE == 0 {
            return ffi::SQLITE_CANTOPEN;
        }
        if matches!(d.fault(&name), Some((_, Fault::ReadOnly))) {
            return ffi::SQLITE_CANTOPEN;
        }
        d.files.insert(name.clone(), MemFile::default());
    }
    let handle = Handle {
        base: ffi::sqlite3_file {
            pMethods: &IO_METHODS,
        },
        name: Box::into_raw(Box::new(name)),
        delete_on_close: flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
        shm_shared: 0,
        shm_exclusive: 0,
        shm_mapped: false,
    };
    // SAFETY: `file` has room for a `Handle` (`szOsFile`).
    unsafe { file.cast::<Handle>().write(handle) };
    if !out_flags.is_null() {
        // SAFETY: a valid out pointer when not null.
        unsafe { *out_flags = flags };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is a handle this VFS opened; its name is taken back
    // exactly once, here.
    let (name, delete) = unsafe {
        let h = file.cast::<Handle>();
        (Box::from_raw((*h).name), (*h).delete_on_close)
    };
    if delete {
        disk().files.remove(name.as_str());
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), usize::try_from(offset)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    let d = disk();
    // SAFETY: `file` is open; `buf` has `amount` writable bytes.
    let (data, out) = unsafe {
        (
            d.files.get(name_of(file)).map(|f| f.current.as_slice()),
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount),
        )
    };
    let data = data.unwrap_or_default();
    let available = data.len().saturating_sub(offset).min(amount);
    if available > 0 {
        out[..available].copy_from_slice(&data[offset..offset + available]);
    }
    if available < amount {
        out[available..].fill(0);
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), usize::try_from(offset)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut d = disk();
    if !d.powered() {
        return ffi::SQLITE_IOERR_WRITE;
    }
    // SAFETY: `file` is open; `buf` has `amount` readable bytes.
    let (name, bytes) = unsafe {
        (
            name_of(file),
            std::slice::from_raw_parts(buf.cast::<u8>(), amount),
        )
    };
    let len = d.files.get(name).map_or(0, |f| f.current.len());
    let growth = (offset + amount).saturating_sub(len) as u64;
    if let Err(code) = d.may_write(name, growth) {
        return code;
    }
    let Some(f) = d.files.get_mut(name) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if f.current.len() < offset + amount {
        f.current.resize(offset + amount, 0);
    }
    f.current[offset..offset + amount].copy_from_slice(bytes);
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let Ok(size) = usize::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    let mut d = disk();
    if !d.powered() {
        return ffi::SQLITE_IOERR_TRUNCATE;
    }
    // SAFETY: `file` is open.
    let name = unsafe { name_of(file) };
    if let Err(code) = d.may_write(name, 0) {
        return code;
    }
    if let Some(f) = d.files.get_mut(name) {
        f.current.truncate(size);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    let mut d = disk();
    if !d.powered() {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    // SAFETY: `file` is open.
    let name = unsafe { name_of(file) };
    if let Some(f) = d.files.get_mut(name) {
        f.durable = Some(f.current.clone());
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let d = disk();
    // SAFETY: `file` is open and `size` is writable.
    unsafe {
        let len = d.files.get(name_of(file)).map_or(0, |f| f.current.len());
        *size = ffi::sqlite3_int64::try_from(len).unwrap_or(ffi::sqlite3_int64::MAX);
    }
    ffi::SQLITE_OK
}

/// File locks are not modelled: the tests open one writer at a time, and
/// WAL readers coordinate through the shared-memory locks below.
unsafe extern "C" fn x_lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_check_reserved_lock(
    _file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: `out` is writable.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

/// No atomic or safe-append guarantees: SQLite must sync as on the plainest disk.
unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    0
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (Ok(region), Ok(size)) = (usize::try_from(region), usize::try_from(size)) else {
        return ffi::SQLITE_IOERR_SHMMAP;
    };
    let mut d = disk();
    // SAFETY: `file` is open; `out` is writable.
    unsafe {
        let h = file.cast::<Handle>();
        let shm = d.shm.entry(name_of(file).to_owned()).or_default();
        if !(*h).shm_mapped {
            (*h).shm_mapped = true;
            shm.users += 1;
        }
        while shm.regions.len() <= region && extend != 0 {
            shm.regions.push(vec![0u8; size].into_boxed_slice());
        }
        *out = match shm.regions.get_mut(region) {
            Some(r) => r.as_mut_ptr().cast(),
            None => std::ptr::null_mut(),
        };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let (Ok(offset), Ok(n)) = (usize::try_from(offset), usize::try_from(n)) else {
        return ffi::SQLITE_IOERR_SHMLOCK;
    };
    if offset + n > SHM_SLOTS {
        return ffi::SQLITE_IOERR_SHMLOCK;
    }
    let mut d = disk();
    // SAFETY: `file` is open.
    let (h, name) = unsafe { (&mut *file.cast::<Handle>(), name_of(file)) };
    let shm = d.shm.entry(name.to_owned()).or_default();
    let bits = |i: usize| 1u8 << i;
    let slots = offset..offset + n;
    if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
        for i in slots {
            if h.shm_shared & bits(i) != 0 {
                h.shm_shared &= !bits(i);
                shm.shared[i] -= 1;
            }
            if h.shm_exclusive & bits(i) != 0 {
                h.shm_exclusive &= !bits(i);
                shm.exclusive[i] = false;
            }
        }
        return ffi::SQLITE_OK;
    }
    let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
    for i in slots.clone() {
        let held_by_other = shm.exclusive[i] && h.shm_exclusive & bits(i) == 0;
        let mine = u32::from(h.shm_shared & bits(i) != 0);
        if held_by_other || (exclusive && shm.shared[i] > mine) {
            return ffi::SQLITE_BUSY;
        }
    }
    for i in slots {
        if exclusive {
            shm.exclusive[i] = true;
            h.shm_exclusive |= bits(i);
        } else if h.shm_shared & bits(i) == 0 {
            shm.shared[i] += 1;
            h.shm_shared |= bits(i);
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_barrier(_file: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let mut d = disk();
    // SAFETY: `file` is open.
    let (h, name) = unsafe { (&mut *file.cast::<Handle>(), name_of(file)) };
    if let Some(shm) = d.shm.get_mut(name) {
        for i in 0..SHM_SLOTS {
            if h.shm_shared & (1 << i) != 0 {
                shm.shared[i] -= 1;
            }
            if h.shm_exclusive & (1 << i) != 0 {
                shm.exclusive[i] = false;
            }
        }
        if h.shm_mapped {
            shm.users = shm.users.saturating_sub(1);
        }
        if delete != 0 && shm.users == 0 {
            d.shm.remove(name);
        }
    }
    h.shm_shared = 0;
    h.shm_exclusive = 0;
    h.shm_mapped = false;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(z_name) }.to_string_lossy();
    let mut d = disk();
    if !d.powered() {
        return ffi::SQLITE_IOERR_DELETE;
    }
    if let Err(code) = d.may_write(&name, 0) {
        return code;
    }
    d.files.remove(name.as_ref());
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name and a writable `out`.
    unsafe {
        let name = CStr::from_ptr(z_name).to_string_lossy();
        let d = disk();
        let exists = d.files.contains_key(name.as_ref());
        let writable = !matches!(d.fault(&name), Some((_, Fault::ReadOnly)));
        *out = c_int::from(match flags {
            ffi::SQLITE_ACCESS_READWRITE => exists && writable,
            _ => exists,
        });
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name and `n_out` writable bytes.
    unsafe {
        let name = CStr::from_ptr(z_name).to_string_lossy().into_owned();
        let full = if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            std::env::current_dir().unwrap_or_default().join(name)
        };
        let bytes = full.to_string_lossy().into_owned().into_bytes();
        let Ok(room) = usize::try_from(n_out) else {
            return ffi::SQLITE_CANTOPEN;
        };
        if bytes.len() + 1 > room {
            return ffi::SQLITE_CANTOPEN;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), z_out, bytes.len());
        *z_out.add(bytes.len()) = 0;
    }
    ffi::SQLITE_OK
}

/// The default VFS this one delegates randomness and time to.
///
/// # Safety
/// `vfs` is this VFS (its `pAppData` is the default VFS).
unsafe fn default_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: delegated to the default VFS, which has the method (checked
    // when installing).
    unsafe {
        let d = default_of(vfs);
        (*d).xRandomness.map_or(0, |f| f(d, n, out))
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as for `x_randomness`.
    unsafe {
        let d = default_of(vfs);
        (*d).xSleep.map_or(0, |f| f(d, micros))
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as for `x_randomness`.
    unsafe {
        let d = default_of(vfs);
        (*d).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(d, out))
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as for `x_randomness`.
    unsafe {
        let d = default_of(vfs);
        (*d).xCurrentTimeInt64
            .map_or(ffi::SQLITE_ERROR, |f| f(d, out))
    }
}

#[cfg(test)]
mod tests {
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
}
