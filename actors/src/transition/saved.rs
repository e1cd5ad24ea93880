//! The layout history this node last routed by, kept in its data directory
//! (`routing.bin`, written whole: a temporary file, fsync, rename, fsync of
//! the directory) before the node routes by it. A restarting node routes by
//! it until consensus catches up, and for good when consensus cannot start
//! (a corrupt `meta.redb`): never by the configured layout once the cluster
//! moved on. Any version newer than the saved one needed this node's ack
//! to be fenced, which it sent only after saving it.

use crate::layout::history::LayoutHistory;
use crate::layout::record::HistoryRecord;
use std::io::Write;
use std::path::Path;

pub const FILE: &str = "routing.bin";

/// The partitions wiped before their pull for one layout version
/// (`cleanup::wipe_partition`): a restart must not wipe what it pulled.
pub const WIPED_FILE: &str = "wiped.bin";

/// Saves `h` durably in `dir`.
pub fn save(dir: &Path, h: &LayoutHistory) -> Result<(), String> {
    let bytes = crate::wire::encode_value(&h.to_record()).map_err(|e| e.to_string())?;
    write_whole(dir, FILE, &bytes)
}

/// Saves that `partitions` were wiped for `version`.
pub fn save_wiped(
    dir: &Path,
    version: u64,
    partitions: &std::collections::BTreeSet<u32>,
) -> Result<(), String> {
    let bytes = crate::wire::encode_value(&(version, partitions)).map_err(|e| e.to_string())?;
    write_whole(dir, WIPED_FILE, &bytes)
}

/// The partitions wiped for `version` (none if the file names another
/// version, or there is none).
pub fn load_wiped(dir: &Path, version: u64) -> Result<std::collections::BTreeSet<u32>, String> {
    let path = dir.join(WIPED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (v, set): (u64, std::collections::BTreeSet<u32>) =
        crate::wire::decode_value(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(if v == version {
        set
    } else {
        Default::default()
    })
}

/// Writes `name` in `dir` whole: a private temporary file, fsync, rename,
/// fsync of the directory.
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!("{name}.tmp"));
    let at = |e: std::io::Error| format!("{}: {e}", tmp.display());
    // Private like the data (0600 whatever the umask), written whole.
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::storage::open_private(&tmp).map_err(at)?;
    f.write_all(bytes).map_err(at)?;
    f.sync_all().map_err(at)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(at)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The saved history (`None`: this node never saved one).
pub fn load(dir: &Path) -> Result<Option<LayoutHistory>, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let record: HistoryRecord =
        crate::wire::decode_value(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    LayoutHistory::from_record(&record)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Orders histories of one cluster: a newer newest version, then a newer
/// read version, then fewer old versions live. Installing only ever moves
/// up this order, so a node never routes by an older history than one it
/// already routed by.
pub fn order(h: &LayoutHistory) -> (u64, u64, u64) {
    (
        h.current().version(),
        h.read_version(),
        h.live()[0].version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Layout, Member};

    #[test]
    fn a_saved_history_loads_back_and_junk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let one = Layout::initial(["a", "b", "c"].map(Member::new), 3, 4);
        let mut h = LayoutHistory::new(one.clone());
        h.propose(one.next(["a", "b", "c", "d"].map(Member::new)), false)
            .unwrap();
        save(dir.path(), &h).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.to_record(), h.to_record());
        assert!(order(&back) > order(&LayoutHistory::new(one)));
        std::fs::write(dir.path().join(FILE), b"junk").unwrap();
        assert!(load(dir.path()).is_err());
        // Wiped partitions are kept per version.
        let set = [3u32, 9].into_iter().collect();
        save_wiped(dir.path(), 2, &set).unwrap();
        assert_eq!(load_wiped(dir.path(), 2).unwrap(), set);
        assert!(load_wiped(dir.path(), 3).unwrap().is_empty());
    }
}
