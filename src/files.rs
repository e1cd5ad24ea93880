//! Writing files that other processes read while they change: certificates,
//! keys and the tokens file are replaced atomically (a temporary file in the
//! same directory, fsynced, renamed over the old one, the directory fsynced),
//! so a node reloading them sees the old file or the new one, never half.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes`. A new file gets permissions `mode`; a file
/// that exists keeps its mode, owner and group (an operator running
/// `sudo ringkv token revoke` must not leave the tokens file unreadable to
/// the node, which would keep the revoked token in force). The temporary
/// file has a random name and is created exclusively, never through a link.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", e))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(mode, |m| m.mode() & 0o7777);
    let mut random = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut random)
        .map_err(|_| format!("{}: no randomness from the system", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        name.to_string_lossy(),
        u64::from_le_bytes(random)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("cannot create a temporary file", e))?;
    let cleanup = |e: String| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    // The umask may have narrowed the mode asked for.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| cleanup(fail("cannot set permissions", e)))?;
    if let Some(m) = &existing {
        let made = f.metadata().map_err(|e| cleanup(fail("cannot stat", e)))?;
        if (m.uid(), m.gid()) != (made.uid(), made.gid()) {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).map_err(|e| {
                cleanup(fail(
                    "cannot keep the file's owner (run as its owner or root)",
                    e,
                ))
            })?;
        }
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| cleanup(fail("cannot write", e)))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("cannot replace", e)
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Holds an exclusive lock on `<path>.lock` while `f` runs, so two CLI
/// commands changing the same file do not lose each other's change.
pub fn with_lock<T>(path: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let lock_path = path.with_extension("lock");
    if let Some(dir) = lock_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("{}: cannot open: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; released when it closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "{}: cannot lock: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_with_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret.key");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn a_replaced_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.toml");
        write_atomic(&p, b"one", 0o600).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "the operator's mode survives");
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.key");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        // Whatever temporary name an attacker guesses, it is created fresh.
        for i in 0..4 {
            let _ = std::os::unix::fs::symlink(&victim, dir.path().join(format!(".a.key.tmp-{i}")));
        }
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    }
}
