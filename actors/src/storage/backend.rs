//! The file backend under redb, with the test-only storage faults of
//! [`crate::faults`]: every operation goes to redb's own `FileBackend`;
//! `sync_data` first honours `fsync_delay_ms` and fails with `EIO` while
//! `fail_fsync` is set. With no fault file both are off and the wrapper costs
//! one atomic load per fsync.
//!
//! An fsync that fails is an I/O failure whatever its errno: after it the
//! page cache may hold a commit that never reached the disk, so it must not
//! be mistaken for "disk full, nothing stored". An `ENOSPC` from fsync (NFS,
//! thin provisioning, delayed allocation) is reported without its errno so
//! the store treats it as fatal.
//!
//! File permissions: the data directory holds every record, hint and
//! tombstone of the node, so it is created 0700 and the database file 0600,
//! whatever the umask ([`prepare_data_dir`], [`open_private`]). An existing
//! directory or file that is wider is the node's own (the store refuses a
//! directory of another node): it is tightened, with a warning naming the
//! old mode; if that fails, the warning says so and the node starts anyway.

use crate::faults::Faults;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::ops::Bound;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

/// The data directory's mode.
pub const DIR_MODE: u32 = 0o700;
/// The database file's mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` with [`DIR_MODE`] (its parents as the umask says), or
/// tightens an existing one that others may read.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    tighten(dir, &std::fs::metadata(dir)?, "data directory");
    Ok(())
}

/// Opens (or creates, with [`FILE_MODE`]) the database file, tightening an
/// existing one that others may read.
pub fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, &file.metadata()?, "database file");
    Ok(file)
}

/// Drops the group and other bits of `path`'s mode, with a warning.
fn tighten(path: &Path, meta: &std::fs::Metadata, what: &str) {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return;
    }
    let tight = mode & 0o700;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(tight)) {
        Ok(()) => log::warn!(
            "the {what} {} had mode {mode:04o}, readable by other users: tightened to \
             {tight:04o} (it holds this node's records; read them through the API)",
            path.display()
        ),
        Err(e) => log::warn!(
            "the {what} {} has mode {mode:04o}, readable by other users, and cannot be \
             tightened ({e}): make it {tight:04o}",
            path.display()
        ),
    }
}

/// `EIO`, as a failed fsync reports it.
const EIO: i32 = 5;

#[derive(Debug)]
pub struct FaultyFileBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyFileBackend {
    pub fn new(inner: FileBackend, faults: Arc<Faults>) -> Self {
        FaultyFileBackend { inner, faults }
    }
}

impl StorageBackend for FaultyFileBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let delay = self.faults.fsync_delay();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.faults.fsync_fails() {
            return Err(std::io::Error::from_raw_os_error(EIO));
        }
        self.inner
            .sync_data()
            .map_err(|e| std::io::Error::other(format!("fsync failed: {e}")))
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_dir_and_file_are_private_and_wider_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/n1");
        prepare_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("db");
        drop(open_private(&file).unwrap());
        assert_eq!(mode(&file), FILE_MODE);
        // What an older version (or an operator) left world-readable.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_data_dir(&dir).unwrap();
        drop(open_private(&file).unwrap());
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    }
}
