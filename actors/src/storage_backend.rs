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

use crate::faults::Faults;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::ops::Bound;
use std::sync::Arc;

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
