//! The membership a coordinator routes by: the live layout versions (one,
//! or more while a change is in flight) and a client per peer. Pure
//! routing decisions over a [`LayoutHistory`]:
//!
//! * a read uses one version's replica set, the read layout's
//!   ([`LayoutHistory::read_layout`], invariant 5);
//! * a write goes to the replica set of **every** live version and needs
//!   its W acknowledgements in each ([`ClusterView::write_sets`],
//!   invariant 3);
//! * two nodes compare a partition by anti-entropy when both hold it in
//!   some live version ([`ClusterView::shared`]): that is how a new owner
//!   pulls what the old owners hold.

use crate::layout::history::LayoutHistory;
use crate::layout::{Layout, PartitionId};
use crate::peer::Peers;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How to reach one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub http_addr: String,
    pub peer_addr: String,
}

/// Replaced as a whole when the layout history moves; a request keeps the
/// view it started with (and holding it is what tells the layout follower
/// that a request of an older view is still in flight).
pub struct ClusterView {
    /// The layout reads use.
    pub layout: Arc<Layout>,
    /// The live versions, oldest first (the read layout among them).
    pub history: Arc<LayoutHistory>,
    /// Every configured member, this node included.
    pub members: Vec<MemberInfo>,
    pub peers: Peers,
    fingerprint: u64,
}

impl ClusterView {
    /// A view of a single layout version (no change in flight).
    pub fn stable(layout: Arc<Layout>, members: Vec<MemberInfo>, peers: Peers) -> ClusterView {
        Self::new(LayoutHistory::new((*layout).clone()), members, peers)
    }

    /// A view of `history`.
    pub fn new(history: LayoutHistory, members: Vec<MemberInfo>, peers: Peers) -> ClusterView {
        let fingerprint = live_fingerprint(history.live());
        ClusterView {
            layout: Arc::new(history.read_layout().clone()),
            history: Arc::new(history),
            members,
            peers,
            fingerprint,
        }
    }

    /// A hash of every live version's placement: two nodes route alike
    /// (and compare trees) only when theirs match.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The newest live version.
    pub fn newest(&self) -> u64 {
        self.history.current().version()
    }

    /// Whether `node` is placed by some live version.
    pub fn places(&self, node: &str) -> bool {
        self.history.live().iter().any(|l| l.contains(node))
    }

    /// Why this replica refuses a write from a coordinator whose newest
    /// live version is `newest` (0: not said): it is older than every
    /// version still live here, so every node but it finished the change —
    /// it was skipped, or its consensus lags — and its write could miss
    /// the new owners.
    pub fn refuses_coordinator(&self, newest: u64) -> Option<String> {
        let oldest = self.history.live()[0].version();
        (newest != 0 && newest < oldest).then(|| {
            format!(
                "the coordinator routes by layout version {newest}, dropped here (oldest live: \
                 {oldest}): it must catch up with the layout history first"
            )
        })
    }

    /// The replica set of `key` in each live version, oldest first.
    pub fn write_sets(&self, key: &[u8]) -> Vec<Vec<String>> {
        let p = self.layout.partition_of_key(key);
        self.history
            .write_sets(p)
            .into_iter()
            .map(|s| s.into_iter().map(String::from).collect())
            .collect()
    }

    /// Where a write of `key` goes: every node of its write sets (the
    /// newest version's first), then the other members of the newest
    /// version clockwise from the key (hint holders). Answers the walk and
    /// how many of its first nodes are replicas.
    pub fn write_walk(&self, key: &[u8]) -> (Vec<String>, usize) {
        let sets = self.write_sets(key);
        let mut walk: Vec<String> = Vec::new();
        for set in sets.iter().rev() {
            for node in set {
                if !walk.contains(node) {
                    walk.push(node.clone());
                }
            }
        }
        let targets = walk.len();
        for node in self.history.current().walk(key) {
            if !walk.iter().any(|w| w == node) {
                walk.push(node.to_string());
            }
        }
        (walk, targets)
    }

    /// The partitions both `a` and `b` hold in some live version,
    /// ascending.
    pub fn shared(&self, a: &str, b: &str) -> Vec<PartitionId> {
        (0..self.layout.partitions())
            .filter(|&p| {
                let holders = self.holders(p);
                holders.contains(a) && holders.contains(b)
            })
            .collect()
    }

    /// Every node that holds `p` in some live version.
    pub fn holders(&self, p: PartitionId) -> BTreeSet<&str> {
        self.history
            .live()
            .iter()
            .flat_map(|l| l.replicas(p))
            .collect()
    }
}

/// [`ClusterView::fingerprint`] of `live`.
pub fn live_fingerprint(live: &[Layout]) -> u64 {
    if let [only] = live {
        return only.fingerprint();
    }
    use std::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0x6c69_7665);
    for l in live {
        h.write_u64(l.fingerprint());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Member;

    fn view_of(history: LayoutHistory) -> ClusterView {
        ClusterView::new(history, Vec::new(), Peers::default())
    }

    /// A stable view routes as its layout: writes to the preference list,
    /// the rest of the walk as hint holders, fingerprints as the layout's.
    #[test]
    fn a_single_version_routes_as_its_layout() {
        let l = Layout::initial(["a", "b", "c", "d"].map(Member::new), 2, 4);
        let v = ClusterView::stable(Arc::new(l.clone()), Vec::new(), Peers::default());
        for key in [&b"k1"[..], b"k2", b"other"] {
            let (walk, n) = v.write_walk(key);
            assert_eq!(n, 2);
            let expect: Vec<String> = l.walk(key).iter().map(|s| s.to_string()).collect();
            assert_eq!(walk, expect);
            assert_eq!(v.write_sets(key).len(), 1);
        }
        assert_eq!(v.fingerprint(), l.fingerprint());
        assert_eq!(v.shared("a", "b"), l.shared("a", "b"));
    }

    /// While a change is in flight a write reaches both versions' sets,
    /// reads keep the old set, and a new owner shares its gained
    /// partitions with their old owners (so anti-entropy can pull them).
    #[test]
    fn a_change_in_flight_writes_to_both_sets_and_reads_the_old() {
        let one = Layout::initial(["a", "b", "c"].map(Member::new), 3, 4);
        let two = one.next(["a", "b", "c", "d"].map(Member::new));
        let mut h = LayoutHistory::new(one.clone());
        h.propose(two.clone(), false).unwrap();
        let v = view_of(h);
        assert_eq!(v.layout.version(), 1, "reads stay on version 1");
        assert_ne!(v.fingerprint(), one.fingerprint());
        assert_ne!(v.fingerprint(), two.fingerprint());
        let mut moved = 0;
        for p in 0..one.partitions() {
            let key = (0..10_000u32)
                .map(|i| i.to_be_bytes())
                .find(|k| one.partition_of_key(k) == p)
                .unwrap();
            let (walk, n) = v.write_walk(&key);
            let union: BTreeSet<&str> =
                one.replicas(p).into_iter().chain(two.replicas(p)).collect();
            assert_eq!(n, union.len(), "partition {p}");
            assert_eq!(
                walk[..n]
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>(),
                union
            );
            if two.replicas(p).contains(&"d") {
                moved += 1;
                assert!(v.shared("d", "a").contains(&p) || !one.replicas(p).contains(&"a"));
            }
        }
        assert!(moved > 0, "d gains partitions");
        assert!(v.places("d") && !v.places("e"));
        assert!(v.refuses_coordinator(1).is_none() && v.refuses_coordinator(0).is_none());
    }

    /// Once version 1 is dropped, a coordinator still routing by it (a
    /// skipped node, or one whose consensus lags) is refused; one routing
    /// by version 2, or one that does not say, is not.
    #[test]
    fn a_replica_refuses_a_coordinator_routing_by_a_dropped_version() {
        let one = Layout::initial(["a", "b", "c"].map(Member::new), 3, 4);
        let two = one.next(["a", "b", "d"].map(Member::new));
        let v = view_of(LayoutHistory::new(two));
        assert!(v
            .refuses_coordinator(1)
            .is_some_and(|w| w.contains("version 1")));
        assert!(v.refuses_coordinator(2).is_none());
        assert!(v.refuses_coordinator(0).is_none());
    }
}
