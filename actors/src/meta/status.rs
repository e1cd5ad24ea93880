//! What a node shows of the metadata: its Raft role and the agreed layout
//! history (`GET /v1/admin/layout`, `ringkv admin layout`), and the same
//! figures as Prometheus gauges.

use crate::layout::history::{LayoutHistory, Tracker};
use crate::layout::Layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write;

/// A member's share of one layout version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberShare {
    pub id: String,
    pub weight: u32,
    /// Fraction of the partitions it replicates.
    pub share: f64,
    pub partitions: usize,
}

/// One live layout version, as every node holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionStatus {
    pub version: u64,
    /// The layout's fingerprint, hex: equal on every node that holds it.
    pub fingerprint: String,
    pub partitions: u32,
    pub replication_factor: usize,
    pub members: Vec<MemberShare>,
}

/// A node's progress on the trackers of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub node: String,
    /// Newest version it writes to both sets for (fence).
    pub ack: u64,
    /// Newest version whose data it holds (sync).
    pub sync: u64,
    /// Newest version it knows every node synced (switch).
    pub sync_ack: u64,
    pub skipped: bool,
}

/// What the change in flight moves for one node: partitions it gains
/// (from the read version to the newest) and loses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMoves {
    pub id: String,
    pub incoming: usize,
    pub outgoing: usize,
}

/// Per node of any live version, what moves from the read version to the
/// newest (nothing when one version is live).
pub fn member_moves(h: &LayoutHistory) -> Vec<MemberMoves> {
    let nodes: BTreeSet<&str> = h.live().iter().flat_map(|l| l.members()).collect();
    let moves = crate::layout::history::moves(h.read_layout(), h.current());
    nodes
        .into_iter()
        .map(|n| MemberMoves {
            id: n.to_string(),
            incoming: moves
                .iter()
                .filter(|(_, g, _)| g.iter().any(|x| x == n))
                .count(),
            outgoing: moves
                .iter()
                .filter(|(_, _, l)| l.iter().any(|x| x == n))
                .count(),
        })
        .collect()
}

/// The metadata as this node sees it (`GET /v1/admin/layout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaStatus {
    pub node: String,
    /// leader, follower, candidate, learner, or leader-without-quorum (a
    /// leader that heard from no majority lately: `leader` is then null).
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    /// Why consensus stopped on this node, if it did (then `role` is
    /// `shutdown`: restart the node).
    pub error: Option<String>,
    pub last_applied: Option<u64>,
    /// The log index of the newest snapshot, and of the newest entry the
    /// log dropped (it is in the snapshot).
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Live layout versions, oldest first; empty until version 1 is agreed.
    pub versions: Vec<VersionStatus>,
    /// The version reads use.
    pub read_version: Option<u64>,
    pub progress: Vec<NodeProgress>,
    /// What the change in flight moves, per node.
    #[serde(default)]
    pub moves: Vec<MemberMoves>,
}

impl MetaStatus {
    /// The status as Prometheus gauges (appended to `out`).
    pub fn render_metrics(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(
                out,
                "# HELP ringkv_{name} {help}\n# TYPE ringkv_{name} gauge"
            );
        };
        gauge(out, "meta_term", "the metadata Raft term this node is in");
        let _ = writeln!(out, "ringkv_meta_term {}", self.term);
        gauge(
            out,
            "meta_leader_known",
            "1 when this node knows a metadata leader with a quorum (0: metadata changes are blocked)",
        );
        let _ = writeln!(
            out,
            "ringkv_meta_leader_known {}",
            u8::from(self.leader.is_some())
        );
        gauge(out, "meta_is_leader", "1 on the metadata leader");
        let _ = writeln!(
            out,
            "ringkv_meta_is_leader {}",
            u8::from(self.leader.as_deref() == Some(self.node.as_str()))
        );
        gauge(
            out,
            "meta_last_applied_index",
            "the last metadata log index applied here",
        );
        let _ = writeln!(
            out,
            "ringkv_meta_last_applied_index {}",
            self.last_applied.unwrap_or(0)
        );
        gauge(
            out,
            "layout_newest_version",
            "the newest agreed layout version (0: none yet)",
        );
        let newest = self.versions.last();
        let _ = writeln!(
            out,
            "ringkv_layout_newest_version {}",
            newest.map_or(0, |v| v.version)
        );
        gauge(out, "layout_read_version", "the layout version reads use");
        let _ = writeln!(
            out,
            "ringkv_layout_read_version {}",
            self.read_version.unwrap_or(0)
        );
        gauge(
            out,
            "layout_live_versions",
            "layout versions live (above 1: a change is in flight)",
        );
        let _ = writeln!(out, "ringkv_layout_live_versions {}", self.versions.len());
        gauge(
            out,
            "layout_share",
            "each member's share of the partitions in the newest version",
        );
        for m in newest.iter().flat_map(|v| &v.members) {
            let _ = writeln!(out, "ringkv_layout_share{{node=\"{}\"}} {}", m.id, m.share);
        }
        gauge(
            out,
            "layout_progress_version",
            "the newest version each node reached on each tracker (fence, sync, switch)",
        );
        for p in &self.progress {
            for (tracker, v) in [("fence", p.ack), ("sync", p.sync), ("switch", p.sync_ack)] {
                let _ = writeln!(
                    out,
                    "ringkv_layout_progress_version{{node=\"{}\",tracker=\"{tracker}\"}} {v}",
                    p.node
                );
            }
        }
    }
}

pub fn version_status(l: &Layout) -> VersionStatus {
    VersionStatus {
        version: l.version(),
        fingerprint: format!("{:016x}", l.fingerprint()),
        partitions: l.partitions(),
        replication_factor: l.replication_factor(),
        members: l
            .member_weights()
            .iter()
            .map(|m| MemberShare {
                id: m.id.clone(),
                weight: m.weight,
                share: l.share(&m.id),
                partitions: l.partitions_of(&m.id).len(),
            })
            .collect(),
    }
}

pub fn progress(h: &LayoutHistory) -> Vec<NodeProgress> {
    let nodes: BTreeSet<&str> = h.live().iter().flat_map(|l| l.members()).collect();
    let skipped = h.skipped();
    nodes
        .into_iter()
        .map(|n| NodeProgress {
            node: n.to_string(),
            ack: h.progress(n, Tracker::Ack).unwrap_or(0),
            sync: h.progress(n, Tracker::Sync).unwrap_or(0),
            sync_ack: h.progress(n, Tracker::SyncAck).unwrap_or(0),
            skipped: skipped.contains(n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gauges say what the status says: no leader known, the newest
    /// and read versions, each tracker per node.
    #[test]
    fn metrics_render_the_status() {
        let l1 = Layout::initial(["a", "b", "c"].map(crate::layout::Member::new), 3, 4);
        let l2 = l1.next(["a", "b", "c", "d"].map(crate::layout::Member::new));
        let mut h = LayoutHistory::new(l1);
        h.propose(l2, false).unwrap();
        let status = MetaStatus {
            node: "a".into(),
            role: "leader-without-quorum".into(),
            term: 7,
            leader: None,
            error: None,
            last_applied: Some(12),
            snapshot: None,
            purged: None,
            voters: vec!["a".into(), "b".into(), "c".into()],
            learners: vec![],
            versions: h.live().iter().map(version_status).collect(),
            read_version: Some(h.read_version()),
            progress: progress(&h),
            moves: member_moves(&h),
        };
        let d = status.moves.iter().find(|m| m.id == "d").unwrap();
        assert!(d.incoming > 0 && d.outgoing == 0, "{d:?}");
        let gained: usize = status.moves.iter().map(|m| m.incoming).sum();
        let lost: usize = status.moves.iter().map(|m| m.outgoing).sum();
        assert_eq!(gained, lost, "every replica d gains, another node loses");
        let mut out = String::new();
        status.render_metrics(&mut out);
        for line in [
            "ringkv_meta_term 7",
            "ringkv_meta_leader_known 0",
            "ringkv_meta_is_leader 0",
            "ringkv_meta_last_applied_index 12",
            "ringkv_layout_newest_version 2",
            "ringkv_layout_read_version 1",
            "ringkv_layout_live_versions 2",
            "ringkv_layout_share{node=\"d\"} 0.75",
            "ringkv_layout_progress_version{node=\"d\",tracker=\"fence\"} 1",
            "ringkv_layout_progress_version{node=\"a\",tracker=\"sync\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
