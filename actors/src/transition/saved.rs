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

/// Saves `h` durably in `dir`.
pub fn save(dir: &Path, h: &LayoutHistory) -> Result<(), String> {
    let bytes = crate::wire::encode_value(&h.to_record()).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let at = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(at)?;
    f.write_all(&bytes).map_err(at)?;
    f.sync_all().map_err(at)?;
    std::fs::rename(&tmp, dir.join(FILE)).map_err(at)?;
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
    }
}
