//! The serialized form of layouts and layout histories, as the consensus
//! log and its snapshots carry them: the placement itself (every
//! partition's replica list), never the inputs it was computed from, so
//! every node holds the identical version even if the assignment code of
//! two releases differs. [`Layout::from_record`] checks a record whole
//! before anything is built from it: it may come from a peer.

use super::assign::Member;
use super::history::{LayoutHistory, Tracker};
use super::layout::Layout;
use super::partition::count;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most members a layout record may name.
pub const MAX_RECORD_MEMBERS: usize = 1024;
/// Most partition bits a record may claim (Q = 2^16).
pub const MAX_RECORD_BITS: u8 = 16;
/// Longest member id a record may hold, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// One layout version as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    pub version: u64,
    pub bits: u8,
    pub n: u32,
    /// (id, weight), sorted by id, distinct.
    pub members: Vec<(String, u32)>,
    /// Per partition, indices into `members`.
    pub replicas: Vec<Vec<u16>>,
}

/// A layout history as stored in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub versions: Vec<LayoutRecord>,
    pub trackers: Vec<(Tracker, Vec<(String, u64)>)>,
    pub skipped: Vec<String>,
}

impl Layout {
    pub fn to_record(&self) -> LayoutRecord {
        LayoutRecord {
            version: self.version(),
            bits: self.partition_bits(),
            n: self.replication_factor() as u32,
            members: self
                .member_weights()
                .iter()
                .map(|m| (m.id.clone(), m.weight))
                .collect(),
            replicas: self.replica_indices().to_vec(),
        }
    }

    /// The layout a record describes, or why it describes none: ids
    /// sorted, distinct, non-empty and short; Q within bounds; one replica
    /// list per partition, each of distinct valid indices, at most N long.
    pub fn from_record(r: &LayoutRecord) -> Result<Layout, String> {
        if r.bits > MAX_RECORD_BITS {
            return Err(format!(
                "{} partition bits (at most {MAX_RECORD_BITS})",
                r.bits
            ));
        }
        if r.members.len() > MAX_RECORD_MEMBERS {
            return Err(format!(
                "{} members (at most {MAX_RECORD_MEMBERS})",
                r.members.len()
            ));
        }
        if r.n == 0 || r.n as usize > MAX_RECORD_MEMBERS {
            return Err(format!("replication factor {}", r.n));
        }
        for w in r.members.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err("member ids are not sorted and distinct".into());
            }
        }
        if let Some((id, _)) = r.members.iter().find(|(id, _)| !valid_id(id)) {
            return Err(format!(
                "member id '{}' (1-{MAX_ID_BYTES} letters, digits or '-')",
                id.chars().take(64).collect::<String>().escape_debug()
            ));
        }
        if r.version == 0 || r.version > MAX_RECORD_VERSION {
            return Err(format!("layout version {}", r.version));
        }
        if r.replicas.len() != count(r.bits) as usize {
            return Err(format!(
                "{} replica lists for {} partitions",
                r.replicas.len(),
                count(r.bits)
            ));
        }
        for set in &r.replicas {
            let distinct: BTreeSet<u16> = set.iter().copied().collect();
            if set.len() > r.n as usize
                || distinct.len() != set.len()
                || set.iter().any(|&i| usize::from(i) >= r.members.len())
            {
                return Err("a replica list is too long, repeats or names no member".into());
            }
        }
        let members = r
            .members
            .iter()
            .map(|(id, weight)| Member {
                id: id.clone(),
                weight: *weight,
            })
            .collect();
        Ok(Layout::from_parts(
            r.version,
            r.bits,
            r.n as usize,
            members,
            r.replicas.clone(),
        ))
    }
}

/// Highest layout version a record may carry (far from `u64::MAX`: the
/// next version is computed as `version + 1`).
pub const MAX_RECORD_VERSION: u64 = 1 << 48;

/// A node id as the config loader admits it: 1 to [`MAX_ID_BYTES`] ASCII
/// letters, digits or '-' (so it prints safely in metrics labels and on a
/// terminal).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl LayoutHistory {
    pub fn to_record(&self) -> HistoryRecord {
        let (versions, trackers, skipped) = self.parts();
        HistoryRecord {
            versions: versions.iter().map(Layout::to_record).collect(),
            trackers: trackers
                .iter()
                .map(|(t, m)| (*t, m.iter().map(|(k, v)| (k.clone(), *v)).collect()))
                .collect(),
            skipped: skipped.iter().cloned().collect(),
        }
    }

    /// The history a record describes: every version valid, versions
    /// consecutive, at most [`super::history::MAX_LIVE_VERSIONS`].
    pub fn from_record(r: &HistoryRecord) -> Result<LayoutHistory, String> {
        if r.versions.is_empty() || r.versions.len() > super::history::MAX_LIVE_VERSIONS {
            return Err(format!("{} live versions", r.versions.len()));
        }
        let versions = r
            .versions
            .iter()
            .map(Layout::from_record)
            .collect::<Result<Vec<_>, _>>()?;
        for w in versions.windows(2) {
            if w[1].version() != w[0].version() + 1 {
                return Err("live versions are not consecutive".into());
            }
            if w[1].partitions() != w[0].partitions()
                || w[1].replication_factor() != w[0].replication_factor()
            {
                return Err("live versions of different Q or N".into());
            }
        }
        if r.trackers.len() > 3 {
            return Err("more than three trackers".into());
        }
        let mut trackers = BTreeMap::new();
        for (t, m) in &r.trackers {
            if m.len() > MAX_RECORD_MEMBERS * super::history::MAX_LIVE_VERSIONS {
                return Err("a tracker names too many nodes".into());
            }
            if m.iter().any(|(id, _)| !valid_id(id)) {
                return Err("a tracker names an invalid node id".into());
            }
            trackers.insert(*t, m.iter().cloned().collect::<BTreeMap<_, _>>());
        }
        if r.skipped.len() > MAX_RECORD_MEMBERS * super::history::MAX_LIVE_VERSIONS
            || r.skipped.iter().any(|id| !valid_id(id))
        {
            return Err("too many or invalid skipped nodes".into());
        }
        Ok(LayoutHistory::from_parts(
            versions,
            trackers,
            r.skipped.iter().cloned().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Layout {
        Layout::initial(["n1", "n2", "n3"].map(Member::new), 3, 6)
    }

    /// A layout and a history survive the round trip unchanged, and the
    /// rebuilt layout places every key alike (same fingerprint).
    #[test]
    fn layouts_and_histories_round_trip() {
        let l = three();
        let back = Layout::from_record(&l.to_record()).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.fingerprint(), l.fingerprint());
        let mut h = LayoutHistory::new(l.clone());
        h.propose(l.next(["n1", "n2", "n3", "n4"].map(Member::new)), false)
            .unwrap();
        h.report("n1", Tracker::Ack, 2);
        let rec = h.to_record();
        let bytes = rmp_serde::to_vec(&rec).unwrap();
        let rec2: HistoryRecord = rmp_serde::from_slice(&bytes).unwrap();
        let h2 = LayoutHistory::from_record(&rec2).unwrap();
        assert_eq!(h2.to_record(), rec);
        assert_eq!(h2.progress("n1", Tracker::Ack), Some(2));
        assert_eq!(h2.progress("n4", Tracker::Ack), Some(1));
    }

    /// A record a hostile or broken peer could send is refused with a
    /// reason, never built (and never panics).
    #[test]
    fn malformed_records_are_refused() {
        let good = three().to_record();
        let mut cases: Vec<(&str, LayoutRecord)> = Vec::new();
        let mut r = good.clone();
        r.bits = 40;
        cases.push(("bits", r));
        let mut r = good.clone();
        r.replicas.pop();
        cases.push(("lists", r));
        let mut r = good.clone();
        r.replicas[3] = vec![0, 0];
        cases.push(("repeat", r));
        let mut r = good.clone();
        r.replicas[3] = vec![9];
        cases.push(("index", r));
        let mut r = good.clone();
        r.replicas[3] = vec![0, 1, 2, 0];
        cases.push(("long", r));
        let mut r = good.clone();
        r.members.swap(0, 1);
        cases.push(("order", r));
        let mut r = good.clone();
        r.members[0].0 = String::new();
        cases.push(("empty id", r));
        let mut r = good.clone();
        r.n = 0;
        cases.push(("n", r));
        // An id that would inject a metrics line or a terminal escape.
        let mut r = good.clone();
        r.members[2].0 = "z\"} 1\nringkv_x".into();
        cases.push(("id charset", r));
        // A version whose successor overflows.
        let mut r = good.clone();
        r.version = u64::MAX;
        cases.push(("version", r));
        for (what, r) in cases {
            assert!(Layout::from_record(&r).is_err(), "{what} accepted");
        }
        let mut h = LayoutHistory::new(three()).to_record();
        h.versions.push(h.versions[0].clone());
        assert!(
            LayoutHistory::from_record(&h).is_err(),
            "same version twice"
        );
        h.versions.clear();
        assert!(LayoutHistory::from_record(&h).is_err(), "no version");
        let mut h = LayoutHistory::new(three()).to_record();
        let other_q = Layout::initial(["a", "b", "c"].map(Member::new), 3, 3);
        let mut next = other_q.to_record();
        next.version = 2;
        h.versions.push(next);
        assert!(LayoutHistory::from_record(&h).is_err(), "another Q");
        let mut h = LayoutHistory::new(three()).to_record();
        h.skipped.push("bad id".into());
        assert!(LayoutHistory::from_record(&h).is_err(), "skipped id");
    }
}
