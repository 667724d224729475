//! The power-loss disk as SQLite sees it: the VFS callbacks (open, read,
//! write, sync, truncate, delete, shared memory) that route every file
//! operation of the process's databases to the in-memory disk.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;

use rusqlite::ffi;

use super::{Fault, MemFile, SHM_SLOTS, disk};

/// An open file, as SQLite allocates it (`szOsFile` bytes, `pMethods` first).
#[repr(C)]
pub(super) struct Handle {
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

pub(super) unsafe extern "C" fn x_open(
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

pub(super) unsafe extern "C" fn x_delete(
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

pub(super) unsafe extern "C" fn x_access(
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

pub(super) unsafe extern "C" fn x_full_pathname(
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

pub(super) unsafe extern "C" fn x_randomness(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: delegated to the default VFS, which has the method (checked
    // when installing).
    unsafe {
        let d = default_of(vfs);
        (*d).xRandomness.map_or(0, |f| f(d, n, out))
    }
}

pub(super) unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as for `x_randomness`.
    unsafe {
        let d = default_of(vfs);
        (*d).xSleep.map_or(0, |f| f(d, micros))
    }
}

pub(super) unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as for `x_randomness`.
    unsafe {
        let d = default_of(vfs);
        (*d).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(d, out))
    }
}

pub(super) unsafe extern "C" fn x_current_time_int64(
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
