//! The record writer's SQLite VFS: SQLite's default one (`unix`), with the connection's
//! thread pausing for a moment after every [`PACE`] bytes it reads or writes.
//!
//! The record writer runs on idle CPU (`SCHED_IDLE`, the gateway's `records.rs`), and so
//! does the SQLite worker thread of its connection. The kernel still hands an idle-class
//! thread the core now and then (at a tick, when the thread serving calls has used its
//! share), and the idle thread then keeps it until it blocks or its slice runs out a tick
//! or more later (1.5-4 ms on a 250 Hz kernel): every call in flight waits. A commit
//! writes a batch's pages and a checkpoint copies a thousand of them, each in one
//! statement, for 1-2.5 ms of CPU without a pause (BENCHMARKS.md). Under this VFS no
//! stretch runs longer than [`PACE`] bytes of reads and writes, about a tenth of a
//! millisecond. A yield would not do: the kernel's EEVDF scheduler picks the yielding idle
//! thread again while the serving thread's own time is ahead.
//!
//! Only the writer's connection uses it (`vfs=portico-paced` in its URL); readers of the
//! same file use the default VFS, and the two share the file's locks and WAL index, since
//! this VFS hands every call but its own pauses to the default one.

use std::{
    cell::Cell,
    ffi::{c_int, c_void, CStr},
    ptr,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::Duration,
};

use libsqlite3_sys as ffi;

/// The VFS's name, for a connection URL's `vfs` parameter.
pub const NAME: &str = "portico-paced";
const C_NAME: &CStr = c"portico-paced";

/// Bytes read or written between two pauses: sixteen 4 KiB pages.
const PACE: usize = 64 * 1024;

/// A pause: long enough for the thread to leave the CPU (with the kernel's default timer
/// slack of 50 us it lasts about 70 us), short enough that a batch's commit and
/// checkpoint take only a millisecond or so longer.
const NAP: Duration = Duration::from_micros(20);

/// The writer's connection's own settings. Its WAL is copied into the database every 128
/// pages (the default is 1,000) so that the fsync after each copy, whose write-back of
/// the copied pages runs on this thread in the kernel and cannot pause, stays a tenth of
/// a millisecond or two: a commit of a busy quarter second is about 200 pages.
pub const PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 128;";

/// Pauses taken since the process started (for tests).
static NAPS: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
fn naps() -> u64 {
    NAPS.load(Ordering::Relaxed)
}

/// Leaves the CPU for a moment.
pub fn nap() {
    NAPS.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(NAP);
}

/// An open file: ours first, the default VFS's right after it (`szOsFile` covers both).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
}

/// The default VFS, once registered.
static DEFAULT: OnceLock<Result<usize, String>> = OnceLock::new();

/// Registers the VFS (once a process; later calls return the first result).
pub fn register() -> Result<(), String> {
    DEFAULT
        .get_or_init(|| {
            // SAFETY: SQLite's documented start-up calls; the registered struct is leaked,
            // so it outlives every connection, and is a copy of the default VFS's with only
            // its name, file size and `xOpen` changed.
            unsafe {
                let rc = ffi::sqlite3_initialize();
                if rc != ffi::SQLITE_OK {
                    return Err(format!("sqlite3_initialize: {rc}"));
                }
                let default = ffi::sqlite3_vfs_find(ptr::null());
                if default.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs = *default;
                vfs.szOsFile = (*default).szOsFile + std::mem::size_of::<File>() as c_int;
                vfs.pNext = ptr::null_mut();
                vfs.zName = C_NAME.as_ptr();
                vfs.xOpen = Some(open);
                let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("sqlite3_vfs_register: {rc}"));
                }
                Ok(default as usize)
            }
        })
        .clone()
        .map(|_| ())
}

fn default_vfs() -> *mut ffi::sqlite3_vfs {
    match DEFAULT.get() {
        Some(Ok(p)) => *p as *mut ffi::sqlite3_vfs,
        _ => ptr::null_mut(),
    }
}

/// Counts bytes moved by this thread and pauses once they pass [`PACE`].
fn pace(bytes: c_int) {
    thread_local!(static MOVED: Cell<usize> = const { Cell::new(0) });
    let due = MOVED
        .try_with(|m| {
            let n = m.get() + bytes.max(0) as usize;
            m.set(if n >= PACE { 0 } else { n });
            n >= PACE
        })
        .unwrap_or(false);
    if due {
        nap();
    }
}

unsafe extern "C" fn open(_: *mut ffi::sqlite3_vfs, name: ffi::sqlite3_filename, file: *mut ffi::sqlite3_file, flags: c_int, out_flags: *mut c_int) -> c_int {
    let default = default_vfs();
    let f = file.cast::<File>();
    // SAFETY: SQLite hands a buffer of `szOsFile` bytes: our `File`, then room for the
    // default VFS's file. `register` ran before any connection could name this VFS.
    unsafe {
        (*f).base.pMethods = ptr::null();
        let Some(inner_open) = default.as_ref().and_then(|d| d.xOpen) else { return ffi::SQLITE_ERROR };
        let real = file.cast::<u8>().add(std::mem::size_of::<File>()).cast::<ffi::sqlite3_file>();
        (*f).real = real;
        let rc = inner_open(default, name, real, flags, out_flags);
        // SQLite calls xClose only when pMethods is set, and the default VFS sets its own
        // only when there is something to close.
        if !(*real).pMethods.is_null() {
            (*f).base.pMethods = &METHODS;
        }
        rc
    }
}

/// The default VFS's file behind ours, and its methods.
///
/// # Safety
/// `f` is a file this VFS opened, not yet closed.
unsafe fn real<'a>(f: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'a ffi::sqlite3_io_methods) {
    // SAFETY: per the contract, `real` points at an open file of the default VFS.
    unsafe {
        let real = (*f.cast::<File>()).real;
        (real, &*(*real).pMethods)
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Each method hands the call to the default VFS's file (SQLite only calls the methods of
/// a file this VFS opened, until it closes it); a method the default VFS's file lacks (or
/// whose `iVersion` is below the one that brought it) is an I/O error.
macro_rules! forward {
    ($($name:ident => $field:ident($($arg:ident: $ty:ty),*) since $version:literal;)*) => {$(
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: see the macro's comment; the default VFS's methods take its file.
            unsafe {
                let (real, m) = real(f);
                // The version first: an older table ends before the newer methods.
                if m.iVersion < $version {
                    return ffi::SQLITE_IOERR;
                }
                match m.$field {
                    Some(x) => x(real $(, $arg)*),
                    None => ffi::SQLITE_IOERR,
                }
            }
        }
    )*};
}

forward! {
    close => xClose() since 1;
    read_unpaced => xRead(buf: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64) since 1;
    write_unpaced => xWrite(buf: *const c_void, amount: c_int, offset: ffi::sqlite3_int64) since 1;
    truncate => xTruncate(size: ffi::sqlite3_int64) since 1;
    sync => xSync(flags: c_int) since 1;
    file_size => xFileSize(size: *mut ffi::sqlite3_int64) since 1;
    lock => xLock(level: c_int) since 1;
    unlock => xUnlock(level: c_int) since 1;
    check_reserved_lock => xCheckReservedLock(out: *mut c_int) since 1;
    file_control => xFileControl(op: c_int, arg: *mut c_void) since 1;
    sector_size => xSectorSize() since 1;
    device_characteristics => xDeviceCharacteristics() since 1;
    shm_map => xShmMap(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) since 2;
    shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int) since 2;
    shm_unmap => xShmUnmap(delete: c_int) since 2;
    unfetch => xUnfetch(offset: ffi::sqlite3_int64, p: *mut c_void) since 3;
}

unsafe extern "C" fn read(f: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64) -> c_int {
    // SAFETY: the arguments are SQLite's, handed on unchanged.
    let rc = unsafe { read_unpaced(f, buf, amount, offset) };
    pace(amount);
    rc
}

unsafe extern "C" fn write(f: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: ffi::sqlite3_int64) -> c_int {
    // SAFETY: the arguments are SQLite's, handed on unchanged.
    let rc = unsafe { write_unpaced(f, buf, amount, offset) };
    pace(amount);
    rc
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: as in `forward!`.
    unsafe {
        let (real, m) = real(f);
        if m.iVersion >= 2 {
            if let Some(x) = m.xShmBarrier {
                x(real)
            }
        }
    }
}

unsafe extern "C" fn fetch(f: *mut ffi::sqlite3_file, offset: ffi::sqlite3_int64, amount: c_int, out: *mut *mut c_void) -> c_int {
    // SAFETY: as in `forward!`; without the default VFS's xFetch, SQLite is told to read.
    unsafe {
        let (real, m) = real(f);
        match if m.iVersion >= 3 { m.xFetch } else { None } {
            Some(x) => x(real, offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::{
        calls::{self, CallRecord},
        Store,
    };

    /// Call `i`, of merchant `mch_{i % 3}`.
    fn one(i: usize) -> CallRecord {
        CallRecord {
            id: format!("cal_{i:028x}"),
            at: 1_700_000_000_000 + i as i64,
            trace_id: format!("{i:032x}"),
            merchant_id: Some(format!("mch_{}", i % 3)),
            app_id: Some("app_1".into()),
            api: Some("order.get@1.0".into()),
            status: 200,
            code: 0,
            latency_us: 900,
            bytes_in: 10,
            bytes_out: 20,
            client_ip: "203.0.113.9".into(),
        }
    }

    /// The record writer's connection goes through this VFS: it pauses as it writes, its
    /// database is in WAL mode and checkpoints, and readers on the default VFS see every
    /// call it wrote.
    #[tokio::test]
    async fn the_record_writer_pauses_and_readers_see_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/paced.db?mode=rwc", dir.path().display()), 4).await.unwrap();
        let writer = store.records_writer();
        assert!(writer.pool.connect_options().database_url.as_str().contains("vfs=portico-paced"));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&writer.pool).await.unwrap();
        assert_eq!(mode, "wal");
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&writer.pool).await.unwrap();
        assert_eq!(pages, 128);

        let before = naps();
        for batch in 0..3 {
            let rows: Vec<CallRecord> = (batch * 10_000..(batch + 1) * 10_000).map(one).collect();
            calls::write(&writer, &rows, &[]).await.unwrap();
        }
        // Three batches of about 400 KiB of segments, plus their index rows.
        assert!(naps() - before >= 10, "{} pauses", naps() - before);
        let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&writer.pool).await.unwrap();
        assert_eq!(checkpoint.try_get::<i64, _>(0).unwrap(), 0, "the checkpoint was not blocked");

        let mut reader = store.read_records().await.unwrap();
        let per_merchant: Vec<(String, i64)> = sqlx::query("SELECT merchant_id, SUM(calls) FROM call_segments GROUP BY merchant_id ORDER BY merchant_id")
            .fetch_all(&mut *reader)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(per_merchant, vec![("mch_0".into(), 10_000), ("mch_1".into(), 10_000), ("mch_2".into(), 10_000)]);
    }

    /// The VFS joins URLs of the other forms too: `sqlite:` without slashes, no query.
    #[tokio::test]
    async fn the_paced_writer_opens_from_every_url_form() {
        let dir = tempfile::tempdir().unwrap();
        // Without `mode=rwc` the files must exist (empty files are empty databases).
        for file in ["b.db", "b-records.db"] {
            std::fs::File::create(dir.path().join(file)).unwrap();
        }
        for url in [format!("sqlite:{}/a.db?mode=rwc", dir.path().display()), format!("sqlite://{}/b.db", dir.path().display())] {
            let store = Store::open(&url, 2).await.unwrap();
            let writer = store.records_writer();
            assert!(writer.paced, "{url}");
            let rows: Vec<CallRecord> = (0..100).map(|i| CallRecord { merchant_id: None, ..one(i) }).collect();
            calls::write(&writer, &rows, &[]).await.unwrap();
            let mut reader = store.read_records().await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT SUM(calls) FROM call_segments").fetch_one(&mut *reader).await.unwrap();
            assert_eq!(n, 100, "{url}");
        }
    }
}
