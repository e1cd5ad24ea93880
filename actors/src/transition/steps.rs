//! What this node owes a layout change next, decided from the agreed
//! history alone (pure: the follower feeds it what it observed, the tests
//! drive it by hand).
//!
//! * **Ack** the newest version once this node routes by it and no request
//!   it started under an older view that writes to fewer versions is still
//!   running (invariant 2: fence before data moves).
//! * **Sync** a version once it is fenced and every older live version is
//!   synced by everyone: pull each partition this node gains in it from
//!   every old replica not skipped ([`gained`]), then report (invariant 4).
//! * **Sync-ack** the read version once no read this node started under an
//!   older read version is running (invariant 6).

use crate::layout::history::{LayoutHistory, Tracker};
use crate::layout::{Layout, PartitionId};

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Propose this progress report.
    Report(Tracker, u64),
    /// Pull these partitions (each from its sources), then report the sync.
    Sync {
        version: u64,
        partitions: Vec<(PartitionId, Vec<String>)>,
    },
}

/// What the follower observed of its own requests.
pub trait InFlight {
    /// A request started under a view whose newest version is below `v`
    /// is still running.
    fn writes_below(&self, v: u64) -> bool;
    /// A request started under a view whose read version is below `v` is
    /// still running.
    fn reads_below(&self, v: u64) -> bool;
}

/// The steps due now, in order: ack, sync, sync-ack. None for a node the
/// history does not count (placed by no live version).
pub fn due(h: &LayoutHistory, me: &str, seen: &impl InFlight) -> Vec<Step> {
    let mut steps = Vec::new();
    let (Some(ack), Some(sync), Some(sync_ack)) = (
        h.progress(me, Tracker::Ack),
        h.progress(me, Tracker::Sync),
        h.progress(me, Tracker::SyncAck),
    ) else {
        return steps;
    };
    let newest = h.current().version();
    if ack < newest && !seen.writes_below(newest) {
        steps.push(Step::Report(Tracker::Ack, newest));
    }
    if let Some(step) = sync_step(h, me, sync) {
        steps.push(step);
    }
    let read = h.read_version();
    if sync_ack < read && !seen.reads_below(read) {
        steps.push(Step::Report(Tracker::SyncAck, read));
    }
    steps
}

/// The sync due for the oldest live version this node has not synced, if
/// the history would take its report now.
fn sync_step(h: &LayoutHistory, me: &str, synced: u64) -> Option<Step> {
    let live = h.live();
    let i = live.iter().position(|l| l.version() > synced)?;
    let version = live[i].version();
    if !h.fenced(version) {
        return None;
    }
    // Versions sync in order: every node has synced the one before.
    if i > 0 && h.min(Tracker::Sync) < live[i - 1].version() {
        return None;
    }
    let partitions = gained(&live[..i], &live[i], me, h.skipped());
    Some(if partitions.is_empty() {
        Step::Report(Tracker::Sync, version)
    } else {
        Step::Sync {
            version,
            partitions,
        }
    })
}

/// The partitions `me` holds in `new` but in none of `older`, each with
/// the nodes to pull it from: its replicas in the older versions, neither
/// `me` nor skipped.
pub fn gained(
    older: &[Layout],
    new: &Layout,
    me: &str,
    skipped: &std::collections::BTreeSet<String>,
) -> Vec<(PartitionId, Vec<String>)> {
    new.partitions_of(me)
        .into_iter()
        .filter(|&p| older.iter().all(|l| !l.replicas(p).contains(&me)))
        .map(|p| {
            let mut sources: Vec<String> = Vec::new();
            for l in older {
                for r in l.replicas(p) {
                    if r != me && !skipped.contains(r) && !sources.iter().any(|s| s == r) {
                        sources.push(r.to_string());
                    }
                }
            }
            (p, sources)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Member;

    struct Seen {
        writes_below: u64,
        reads_below: u64,
    }

    impl InFlight for Seen {
        fn writes_below(&self, v: u64) -> bool {
            self.writes_below >= v
        }
        fn reads_below(&self, v: u64) -> bool {
            self.reads_below >= v
        }
    }

    const IDLE: Seen = Seen {
        writes_below: 0,
        reads_below: 0,
    };

    fn joining() -> LayoutHistory {
        let one = Layout::initial(["a", "b", "c"].map(Member::new), 3, 4);
        let two = one.next(["a", "b", "c", "d"].map(Member::new));
        let mut h = LayoutHistory::new(one);
        h.propose(two, false).unwrap();
        h
    }

    /// Walks a join through every node's steps: nobody syncs before all
    /// acked, the new node pulls what it gains from every old replica,
    /// reads switch after every sync, the old version drops after every
    /// sync-ack.
    #[test]
    fn a_join_moves_through_fence_sync_and_switch_in_order() {
        let mut h = joining();
        // An old write still running on a: a does not ack.
        let busy = Seen {
            writes_below: 2,
            reads_below: 0,
        };
        assert_eq!(due(&h, "a", &busy), vec![]);
        for n in ["a", "b", "c"] {
            assert_eq!(due(&h, n, &IDLE), vec![Step::Report(Tracker::Ack, 2)]);
            h.report(n, Tracker::Ack, 2);
        }
        // d acks too; until then nobody may sync.
        assert!(!h.fenced(2));
        assert_eq!(due(&h, "d", &IDLE), vec![Step::Report(Tracker::Ack, 2)]);
        h.report("d", Tracker::Ack, 2);
        assert!(h.fenced(2));
        // a, b and c gain nothing: they report at once.
        for n in ["a", "b", "c"] {
            assert_eq!(due(&h, n, &IDLE), vec![Step::Report(Tracker::Sync, 2)]);
            h.report(n, Tracker::Sync, 2);
        }
        let steps = due(&h, "d", &IDLE);
        let [Step::Sync {
            version: 2,
            partitions,
        }] = steps.as_slice()
        else {
            panic!("{steps:?}");
        };
        assert!(!partitions.is_empty());
        for (p, sources) in partitions {
            let old: Vec<String> = h.live()[0]
                .replicas(*p)
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(sources, &old, "partition {p}: every old replica");
        }
        assert_eq!(h.read_version(), 1, "reads wait for d");
        h.report("d", Tracker::Sync, 2);
        assert_eq!(h.read_version(), 2);
        // A read of version 1 still running holds the sync-ack back.
        let reading = Seen {
            writes_below: 0,
            reads_below: 2,
        };
        assert_eq!(due(&h, "a", &reading), vec![]);
        for n in ["a", "b", "c", "d"] {
            assert_eq!(due(&h, n, &IDLE), vec![Step::Report(Tracker::SyncAck, 2)]);
            h.report(n, Tracker::SyncAck, 2);
        }
        assert_eq!(h.live().len(), 1, "version 1 dropped");
        for n in ["a", "b", "c", "d"] {
            assert_eq!(due(&h, n, &IDLE), vec![]);
        }
        assert_eq!(due(&h, "e", &IDLE), vec![], "not counted");
    }

    /// A skipped node is no source: a partition whose old replicas are all
    /// skipped has none (and says so), the others pull from the rest.
    #[test]
    fn skipped_nodes_are_no_sources() {
        let one = Layout::initial(["a", "b", "c"].map(Member::new), 2, 4);
        let two = one.next(["a", "b", "d"].map(Member::new));
        let skipped = ["c".to_string()].into_iter().collect();
        let g = gained(std::slice::from_ref(&one), &two, "d", &skipped);
        assert!(!g.is_empty());
        for (p, sources) in g {
            assert!(!sources.contains(&"c".to_string()));
            let expect: Vec<&str> = one.replicas(p).into_iter().filter(|r| *r != "c").collect();
            assert_eq!(sources, expect);
        }
    }
}
