//! Gossiped membership state: who is in the cluster, at which generation and
//! heartbeat. Pure: the gossip actor owns one and feeds it exchanges.
//!
//! Every member's entry is versioned by `(generation, heartbeat)`. A node bumps
//! its own heartbeat every gossip round and its generation at every restart
//! (persisted, so it only grows). Merging a peer's view keeps, per member, the
//! entry with the greater `(generation, heartbeat)`; merging is commutative,
//! associative and idempotent, so views converge whatever the order of
//! exchanges. A merge reports which members advanced (fresh heartbeats feed the
//! failure detector) and which restarted (a higher generation).
//!
//! Caveat: which nodes own the ring is still the configured node set; the
//! entries carry the ring epoch so joins and leaves can build on this.

use crate::wire::MemberState;
use std::collections::BTreeMap;

/// What a merge learned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Members whose heartbeat advanced (fresh evidence they are alive).
    pub advanced: Vec<String>,
    /// Members seen with a higher generation than before (they restarted).
    pub restarted: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    members: BTreeMap<String, MemberState>,
}

impl Membership {
    pub fn new(me: MemberState, others: impl IntoIterator<Item = MemberState>) -> Self {
        let mut members: BTreeMap<_, _> = others.into_iter().map(|m| (m.id.clone(), m)).collect();
        let id = me.id.clone();
        members.insert(id.clone(), me);
        Membership { me: id, members }
    }

    pub fn me(&self) -> &MemberState {
        &self.members[&self.me]
    }

    pub fn get(&self, id: &str) -> Option<&MemberState> {
        self.members.get(id)
    }

    /// One gossip round passed: bump our own heartbeat.
    pub fn beat(&mut self) {
        if let Some(m) = self.members.get_mut(&self.me) {
            m.heartbeat += 1;
        }
    }

    pub fn snapshot(&self) -> Vec<MemberState> {
        self.members.values().cloned().collect()
    }

    /// The view to send: ours, with our wall clock stamped in our own entry.
    pub fn outgoing(&mut self, now_ms: u64) -> Vec<MemberState> {
        if let Some(m) = self.members.get_mut(&self.me) {
            m.wall_ms = now_ms;
        }
        self.snapshot()
    }

    /// Folds in a peer's view.
    pub fn merge(&mut self, remote: &[MemberState]) -> MergeReport {
        let mut report = MergeReport::default();
        for r in remote {
            if r.id == self.me {
                continue;
            }
            match self.members.get_mut(&r.id) {
                Some(local)
                    if (r.generation, r.heartbeat) > (local.generation, local.heartbeat) =>
                {
                    if r.generation > local.generation && local.generation > 0 {
                        report.restarted.push(r.id.clone());
                    }
                    report.advanced.push(r.id.clone());
                    *local = r.clone();
                }
                Some(_) => {}
                None => {
                    report.advanced.push(r.id.clone());
                    self.members.insert(r.id.clone(), r.clone());
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(id: &str, generation: u64, heartbeat: u64) -> MemberState {
        MemberState {
            id: id.into(),
            http_addr: String::new(),
            peer_addr: String::new(),
            generation,
            heartbeat,
            wall_ms: 0,
            ring_epoch: 0,
        }
    }

    #[test]
    fn newer_heartbeats_and_generations_win() {
        let mut a = Membership::new(m("a", 1, 0), [m("b", 0, 0)]);
        let r = a.merge(&[m("b", 1, 5)]);
        assert_eq!(r.advanced, vec!["b"]);
        assert!(r.restarted.is_empty(), "first sighting is not a restart");
        assert!(a.merge(&[m("b", 1, 4)]).advanced.is_empty());
        let r = a.merge(&[m("b", 2, 0)]);
        assert_eq!(r.restarted, vec!["b"]);
        assert_eq!(a.get("b").unwrap().generation, 2);
    }

    #[test]
    fn our_own_entry_is_never_overwritten() {
        let mut a = Membership::new(m("a", 3, 7), []);
        a.merge(&[m("a", 9, 9)]);
        assert_eq!((a.me().generation, a.me().heartbeat), (3, 7));
        a.beat();
        assert_eq!(a.me().heartbeat, 8);
    }

    proptest! {
        #[test]
        fn merging_converges_in_any_order(
            views in proptest::collection::vec(
                proptest::collection::vec((0u8..4, 0u64..3, 0u64..5), 0..6), 2..5)
        ) {
            let views: Vec<Vec<MemberState>> = views.into_iter().map(|v| {
                v.into_iter().map(|(id, g, h)| m(&format!("n{id}"), g, h)).collect()
            }).collect();
            let mut forward = Membership::new(m("me", 1, 0), []);
            for v in &views { forward.merge(v); }
            let mut backward = Membership::new(m("me", 1, 0), []);
            for v in views.iter().rev() { backward.merge(v); backward.merge(v); }
            prop_assert_eq!(forward.snapshot(), backward.snapshot());
        }
    }
}
