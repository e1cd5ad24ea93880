//! The layout history: the layout versions still live while a membership
//! change is in flight, and each node's progress through the change. Pure:
//! the consensus log (issue 17) feeds it versions and progress reports in
//! one order on every node, so every node computes the same answers.
//!
//! Three trackers per node, as garage's layout history keeps them, each the
//! newest version the node has reached (never lowered):
//!
//! * **ack** — the node coordinates every new write to the replica sets of
//!   every live version from this one on, and no write it started under an
//!   older version is still in flight. When every node has acked version
//!   `v`, `v` is *fenced*: streaming for it may start (invariant 2).
//! * **sync** — the node holds every write acknowledged under older
//!   versions for the partitions it gains in `v` (streamed, then confirmed
//!   by anti-entropy; invariant 4). When every node has synced `v`, reads
//!   switch to `v` (invariant 5).
//! * **sync_ack** — the node reads from `v` (or newer) only, and no read of
//!   an older version is still in flight. When every node has sync-acked
//!   `v`, the older versions are dropped: their replica sets stop
//!   receiving writes and data moved away may be deleted (invariant 6).
//!
//! A write goes to the replica set of every live version and is
//! acknowledged only with W acknowledgements **in each** set
//! ([`write_met`], invariant 3). A read uses one version's set: the newest
//! synced one ([`LayoutHistory::read_version`]).
//!
//! The nodes counted are the members of every live version. A node that
//! will never report (dead) holds the change back until it is skipped
//! explicitly ([`LayoutHistory::skip`]), which says what may be lost.

use super::layout::Layout;
use super::partition::PartitionId;
use std::collections::{BTreeMap, BTreeSet};

/// Why a history refuses a new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A previous change is not finished: its versions are still live.
    InProgress { live: Vec<u64> },
    /// The version is not the next one.
    NotNext { expected: u64, got: u64 },
    /// The new layout places partitions differently in kind (Q or N).
    Incompatible(String),
    /// The new layout places no replica (no member, or every weight 0).
    Unplaceable,
}

/// At most this many versions are live, forced or not: a write needs its
/// quorum in each live version's set, so more would cost availability.
pub const MAX_LIVE_VERSIONS: usize = 3;

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InProgress { live } => write!(
                f,
                "a previous change is still in progress (live layout versions {live:?}); wait \
                 for it to finish or abort it"
            ),
            Refusal::NotNext { expected, got } => {
                write!(f, "layout version {got} is not the next one ({expected})")
            }
            Refusal::Incompatible(why) => write!(f, "{why}"),
            Refusal::Unplaceable => write!(
                f,
                "the new layout places no replica: it needs at least one member of positive \
                 weight"
            ),
        }
    }
}

/// Which tracker a progress report moves.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Tracker {
    Ack,
    Sync,
    SyncAck,
}

type Parts<'a> = (
    &'a [Layout],
    &'a BTreeMap<Tracker, BTreeMap<String, u64>>,
    &'a BTreeSet<String>,
);

/// The live layout versions and every node's progress.
#[derive(Clone, Debug)]
pub struct LayoutHistory {
    /// Oldest first; never empty. The first is the oldest a read may still
    /// use, the last the newest.
    versions: Vec<Layout>,
    trackers: BTreeMap<Tracker, BTreeMap<String, u64>>,
    /// Nodes skipped while an older version that places them is live.
    skipped: BTreeSet<String>,
}

/// A partition a skipped node held in an older live version: `skipped` of
/// its `replicas` old replicas are skipped. A write acknowledged by at most
/// `skipped` replicas (consistency `one` as soon as one is skipped, a
/// quorum once a quorum is) may exist on skipped nodes only, and be lost.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AtRisk {
    pub partition: PartitionId,
    pub skipped: usize,
    pub replicas: usize,
}

impl AtRisk {
    /// Whether writes acknowledged by `w` replicas may be lost.
    pub fn loses_writes_at(&self, w: usize) -> bool {
        self.skipped >= w
    }
}

impl LayoutHistory {
    /// A history holding only `first`, which every member has reached.
    pub fn new(first: Layout) -> LayoutHistory {
        let v = first.version();
        let mut h = LayoutHistory {
            versions: vec![first],
            trackers: BTreeMap::new(),
            skipped: BTreeSet::new(),
        };
        for t in [Tracker::Ack, Tracker::Sync, Tracker::SyncAck] {
            let map = h.current().members().map(|m| (m.to_string(), v)).collect();
            h.trackers.insert(t, map);
        }
        h
    }

    /// The nodes skipped while a version placing them is live.
    pub fn skipped(&self) -> &BTreeSet<String> {
        &self.skipped
    }

    /// Its parts, for [`super::record`].
    pub(super) fn parts(&self) -> Parts<'_> {
        (&self.versions, &self.trackers, &self.skipped)
    }

    /// A history from checked parts ([`LayoutHistory::from_record`]).
    pub(super) fn from_parts(
        versions: Vec<Layout>,
        trackers: BTreeMap<Tracker, BTreeMap<String, u64>>,
        skipped: BTreeSet<String>,
    ) -> LayoutHistory {
        LayoutHistory {
            versions,
            trackers,
            skipped,
        }
    }

    /// The newest version.
    pub fn current(&self) -> &Layout {
        self.versions.last().expect("never empty")
    }

    /// The live versions, oldest first.
    pub fn live(&self) -> &[Layout] {
        &self.versions
    }

    /// Whether a change is in flight (more than one version is live).
    pub fn changing(&self) -> bool {
        self.versions.len() > 1
    }

    /// Appends the next version. Refused while a change is in flight
    /// unless `force` (then writes go to every live version's set, and a
    /// read still uses one synced version).
    pub fn propose(&mut self, next: Layout, force: bool) -> Result<(), Refusal> {
        let cur = self.current();
        if next.version() != cur.version() + 1 {
            return Err(Refusal::NotNext {
                expected: cur.version() + 1,
                got: next.version(),
            });
        }
        if next.partitions() != cur.partitions()
            || next.replication_factor() != cur.replication_factor()
        {
            return Err(Refusal::Incompatible(format!(
                "the new layout has {} partitions and N = {}, the cluster {} and N = {}",
                next.partitions(),
                next.replication_factor(),
                cur.partitions(),
                cur.replication_factor()
            )));
        }
        if next.is_empty() || next.replicas(0).is_empty() {
            return Err(Refusal::Unplaceable);
        }
        if (self.changing() && !force) || self.versions.len() >= MAX_LIVE_VERSIONS {
            return Err(Refusal::InProgress {
                live: self.versions.iter().map(Layout::version).collect(),
            });
        }
        // A node new in this version starts at the oldest live version: it
        // has acked, synced and read nothing of any change in flight (a
        // forced version's new node must not count as done with the last).
        let before = self.versions[0].version();
        for m in next.members() {
            for map in self.trackers.values_mut() {
                map.entry(m.to_string()).or_insert(before);
            }
        }
        self.versions.push(next);
        Ok(())
    }

    /// Records that `node` reached `version` on `tracker`. Lower than
    /// already recorded, past the newest version, or from a node in no
    /// live version: ignored (a late or forged report moves nothing).
    /// Out of order is ignored too: a sync before the version is fenced
    /// (streaming had not started), a sync-ack before reads switched.
    /// A sync also waits for every node to have synced the live version
    /// before it: versions sync in order, so a later one never stands in
    /// for an earlier one nobody synced. Answers whether the report moved
    /// anything (a caller re-sends an ignored one once the change moves).
    pub fn report(&mut self, node: &str, tracker: Tracker, version: u64) -> bool {
        let in_order = match tracker {
            Tracker::Ack => true,
            Tracker::Sync => {
                let previous = self
                    .versions
                    .iter()
                    .map(Layout::version)
                    .filter(|&v| v < version)
                    .max();
                self.fenced(version) && previous.is_none_or(|p| self.min(Tracker::Sync) >= p)
            }
            Tracker::SyncAck => self.read_version() >= version,
        };
        if version > self.current().version() || !in_order {
            return false;
        }
        let map = self.trackers.entry(tracker).or_default();
        let moved = match map.get_mut(node) {
            Some(v) if *v < version => {
                *v = version;
                true
            }
            _ => false,
        };
        self.prune();
        moved
    }

    /// Counts `node` as having reached the newest version on every tracker:
    /// for a node that will never report again (dead, being removed).
    /// Answers what that may lose: each partition an older live version
    /// placed on `node`, with how many of its old replicas are now skipped
    /// ([`AtRisk`]) — a write acknowledged by skipped nodes alone is not
    /// streamed to the new owners.
    pub fn skip(&mut self, node: &str) -> Vec<AtRisk> {
        self.skipped.insert(node.to_string());
        let newest = self.current().version();
        let mut risk: BTreeMap<PartitionId, AtRisk> = BTreeMap::new();
        for old in &self.versions[..self.versions.len() - 1] {
            for p in 0..old.partitions() {
                let set = old.replicas(p);
                if !set.contains(&node) {
                    continue;
                }
                let skipped = set.iter().filter(|r| self.skipped.contains(**r)).count();
                let entry = risk.entry(p).or_insert(AtRisk {
                    partition: p,
                    skipped,
                    replicas: set.len(),
                });
                entry.skipped = entry.skipped.max(skipped);
            }
        }
        for map in self.trackers.values_mut() {
            if let Some(v) = map.get_mut(node) {
                *v = newest;
            }
        }
        self.prune();
        risk.into_values().collect()
    }

    /// The lowest version every counted node has reached on `tracker`.
    pub fn min(&self, tracker: Tracker) -> u64 {
        let counted = self.counted();
        self.trackers
            .get(&tracker)
            .map(|m| {
                counted
                    .iter()
                    .map(|n| m.get(*n).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// The nodes whose progress counts: members of any live version.
    fn counted(&self) -> BTreeSet<&str> {
        self.versions.iter().flat_map(|l| l.members()).collect()
    }

    /// What `node` has reached on `tracker` (`None`: not counted).
    pub fn progress(&self, node: &str, tracker: Tracker) -> Option<u64> {
        self.counted().contains(node).then(|| {
            self.trackers
                .get(&tracker)
                .and_then(|m| m.get(node).copied())
                .unwrap_or(0)
        })
    }

    /// Whether streaming for `version` may start: every node writes to its
    /// sets, and no write under an older version is in flight.
    pub fn fenced(&self, version: u64) -> bool {
        self.min(Tracker::Ack) >= version
    }

    /// The version reads use: the newest that every node has synced.
    pub fn read_version(&self) -> u64 {
        let synced = self.min(Tracker::Sync);
        self.versions
            .iter()
            .map(Layout::version)
            .filter(|&v| v <= synced)
            .max()
            .unwrap_or_else(|| self.versions[0].version())
    }

    /// The layout reads use.
    pub fn read_layout(&self) -> &Layout {
        let v = self.read_version();
        self.versions
            .iter()
            .find(|l| l.version() == v)
            .expect("the read version is live")
    }

    /// The replica set of partition `p` in each live version a write must
    /// reach, oldest first, duplicates kept (a set is counted on its own).
    pub fn write_sets(&self, p: PartitionId) -> Vec<Vec<&str>> {
        self.versions.iter().map(|l| l.replicas(p)).collect()
    }

    /// Drops the versions older than the oldest one still read: once every
    /// node has sync-acked `v`, no read of an older version can be in
    /// flight, and older sets stop receiving writes.
    fn prune(&mut self) {
        let floor = self.min(Tracker::SyncAck).min(self.read_version());
        while self.versions.len() > 1 && self.versions[0].version() < floor {
            self.versions.remove(0);
        }
        let counted: BTreeSet<String> = self.counted().into_iter().map(String::from).collect();
        for map in self.trackers.values_mut() {
            map.retain(|n, _| counted.contains(n));
        }
        let old: BTreeSet<&str> = self.versions[..self.versions.len() - 1]
            .iter()
            .flat_map(|l| l.members())
            .collect();
        self.skipped.retain(|n| old.contains(n.as_str()));
    }
}

/// Whether a write acknowledged by `acked` is acknowledged: at least `w`
/// (capped at each set's size) in **each** of `sets`, never W in total.
/// No set, or an empty one, is never met; a node listed twice counts once.
pub fn write_met(sets: &[Vec<&str>], acked: &BTreeSet<&str>, w: usize) -> bool {
    !sets.is_empty()
        && sets.iter().all(|set| {
            let distinct: BTreeSet<&str> = set.iter().copied().collect();
            let need = w.max(1).min(distinct.len());
            need > 0 && distinct.iter().filter(|r| acked.contains(*r)).count() >= need
        })
}

/// What a change from `old` to `new` moves: per partition whose set
/// changes, the nodes that gain it (they must receive its data) and those
/// that lose it (they delete it once the old version is dropped).
pub fn moves(old: &Layout, new: &Layout) -> Vec<(PartitionId, Vec<String>, Vec<String>)> {
    (0..new.partitions())
        .filter_map(|p| {
            let (a, b) = (old.replicas(p), new.replicas(p));
            let gain: Vec<String> = b
                .iter()
                .filter(|n| !a.contains(n))
                .map(|n| n.to_string())
                .collect();
            let lose: Vec<String> = a
                .iter()
                .filter(|n| !b.contains(n))
                .map(|n| n.to_string())
                .collect();
            (!gain.is_empty() || !lose.is_empty()).then_some((p, gain, lose))
        })
        .collect()
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
