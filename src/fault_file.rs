//! The test-only fault file (`testing.fault_file`): read at start, then
//! re-read every [`POLL_INTERVAL`]; its text sets the engine's fault
//! switches ([`Faults::apply`]).
//!
//! A missing file means no faults (every switch off). Any other read error
//! (a file being replaced, unreadable, not UTF-8) says nothing about the
//! faults wanted: that tick is skipped and the switches stay as they are —
//! reading it as an empty file would clear every fault a test had set.

use ringkv_actors::faults::{Faults, POLL_INTERVAL};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The fault file's text: `""` when it does not exist, `None` when it
/// cannot be read now.
fn read(file: &Path) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == ErrorKind::NotFound => Some(String::new()),
        Err(_) => None,
    }
}

/// What one poll saw.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// The text is the one already applied.
    Same,
    /// New text, applied.
    Applied,
    /// The file could not be read: nothing changed.
    Unreadable,
}

/// Re-reads `file`; applies its text to `faults` when it changed since
/// `last` (which it then becomes).
fn poll(file: &Path, faults: &Faults, last: &mut Option<String>) -> Tick {
    let Some(text) = read(file) else {
        return Tick::Unreadable;
    };
    if last.as_ref() == Some(&text) {
        return Tick::Same;
    }
    for bad in faults.apply(&text) {
        log::warn!("fault file {}: ignoring '{bad}'", file.display());
    }
    *last = Some(text);
    Tick::Applied
}

/// Applies the fault file now, then re-reads it every [`POLL_INTERVAL`].
pub fn watch(file: PathBuf, faults: Arc<Faults>) {
    let mut last = None;
    if poll(&file, &faults, &mut last) == Tick::Unreadable {
        log::warn!(
            "fault file {} cannot be read: no faults until it can",
            file.display()
        );
    }
    actix_rt::spawn(async move {
        // Logged once per stretch of failed reads, not every poll.
        let mut unreadable = false;
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            match poll(&file, &faults, &mut last) {
                Tick::Unreadable if !unreadable => {
                    unreadable = true;
                    log::warn!(
                        "fault file {} cannot be read: the fault switches stay as they are",
                        file.display()
                    );
                }
                Tick::Unreadable | Tick::Same => {}
                Tick::Applied => {
                    unreadable = false;
                    log::warn!("fault switches now: {faults:?}");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweep L4: a read error (here: the file is not UTF-8, then a
    /// directory) read as an empty file, which cleared every fault a test
    /// had set. Now that tick is skipped; only a missing file means none.
    #[test]
    fn a_fault_file_that_cannot_be_read_changes_no_switch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("faults.txt");
        let faults = Faults::default();
        let mut last = None;
        std::fs::write(&file, "fail_fsync = true\npeer_delay_ms = 50\n").unwrap();
        assert_eq!(poll(&file, &faults, &mut last), Tick::Applied);
        assert!(faults.fsync_fails());

        std::fs::write(&file, b"fail_fsync = \xff\xfe\n").unwrap();
        assert_eq!(poll(&file, &faults, &mut last), Tick::Unreadable);
        assert!(
            faults.fsync_fails(),
            "an unreadable file cleared the faults"
        );
        assert_eq!(faults.peer_delay(), std::time::Duration::from_millis(50));

        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert_eq!(poll(&file, &faults, &mut last), Tick::Unreadable);
        assert!(
            faults.fsync_fails(),
            "an unreadable file cleared the faults"
        );

        // A missing file means no faults.
        std::fs::remove_dir(&file).unwrap();
        assert_eq!(poll(&file, &faults, &mut last), Tick::Applied);
        assert!(!faults.fsync_fails());
        assert_eq!(poll(&file, &faults, &mut last), Tick::Same);
    }
}
