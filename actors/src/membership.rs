//! Gossiped membership state: who is in the cluster, at which generation and
//! heartbeat. Pure: the gossip actor owns one and feeds it exchanges, with
//! the time passed in.
//!
//! Every member's entry is versioned by `(generation, heartbeat)`. A node bumps
//! its own heartbeat every gossip round and its generation at every restart
//! (persisted, so it only grows; it is the member's wall clock in ms when it
//! started). Merging a peer's view keeps, per member, the entry with the
//! greater `(generation, heartbeat)`; merging is commutative, associative and
//! idempotent, so views converge whatever the order of exchanges. A merge
//! reports which members advanced (fresh heartbeats feed the failure detector)
//! and which restarted (a higher generation).
//!
//! # What a peer may claim
//! Gossip arrives from the network, so a merge accepts only what the member
//! itself could have produced ([`Membership::merge`]):
//! * entries of configured members only (anything else is refused and
//!   counted: a peer cannot grow the member table or the gossip frame);
//! * a new generation only from the member itself (the exchange's `from`),
//!   and never further ahead than the allowed drift of our clock (a
//!   generation is a start time);
//! * a heartbeat no higher than the rounds the member could have run since
//!   its generation began, plus slack;
//! * nothing about ourselves: a claim that our own heartbeat is higher than
//!   it is makes us jump above it (so a forged entry is overtaken within a
//!   round), and a claim of a higher generation of ours is refused.
//!
//! Caveat: which nodes own the ring is still the configured node set; the
//! entries carry the ring epoch so joins and leaves can build on this.

use crate::wire::MemberState;
use std::collections::BTreeMap;

/// Heartbeats beyond the rounds a member could have run that are still
/// accepted (timer jitter, a member's gossip interval not exactly ours).
pub const HEARTBEAT_SLACK: u64 = 16;

/// What a merge learned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Members whose heartbeat advanced (fresh evidence they are alive).
    pub advanced: Vec<String>,
    /// Members seen with a higher generation than before (they restarted).
    pub restarted: Vec<String>,
    /// Entries refused: unknown members and impossible claims.
    pub refused: u64,
}

/// What a merge checks claims against.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Our best estimate of the cluster's wall clock (ms).
    pub now_ms: u64,
    /// How far another member's clock may run ahead of ours (ms).
    pub max_drift_ms: u64,
    /// The gossip round interval (ms).
    pub interval_ms: u64,
}

impl Bounds {
    /// Bounds that accept everything plausible at `now_ms` (tests).
    pub fn at(now_ms: u64) -> Self {
        Bounds {
            now_ms,
            max_drift_ms: 5_000,
            interval_ms: 200,
        }
    }

    fn generation_ok(&self, generation: u64) -> bool {
        generation <= self.now_ms.saturating_add(self.max_drift_ms)
    }

    /// The highest heartbeat a member of `generation` could have reached.
    fn max_heartbeat(&self, generation: u64) -> u64 {
        let elapsed = self
            .now_ms
            .saturating_add(self.max_drift_ms)
            .saturating_sub(generation);
        elapsed / self.interval_ms.max(1) + HEARTBEAT_SLACK
    }
}

#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    members: BTreeMap<String, MemberState>,
}

impl Membership {
    /// `others` are the configured members; only they are ever accepted.
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

    /// Folds in a view that member `from` sent, accepting only what passes
    /// the checks described in the module header.
    pub fn merge(&mut self, remote: &[MemberState], from: &str, bounds: Bounds) -> MergeReport {
        let mut report = MergeReport::default();
        for r in remote {
            if r.id == self.me {
                self.refute(r, &mut report);
                continue;
            }
            let Some(local) = self.members.get_mut(&r.id) else {
                report.refused += 1;
                continue;
            };
            if (r.generation, r.heartbeat) <= (local.generation, local.heartbeat) {
                continue;
            }
            let new_generation = r.generation > local.generation;
            let plausible = if new_generation {
                r.id == from && bounds.generation_ok(r.generation)
            } else {
                r.heartbeat <= bounds.max_heartbeat(r.generation)
            };
            if !plausible || r.heartbeat > bounds.max_heartbeat(r.generation) {
                report.refused += 1;
                continue;
            }
            if new_generation && local.generation > 0 {
                report.restarted.push(r.id.clone());
            }
            report.advanced.push(r.id.clone());
            let (http, peer) = (local.http_addr.clone(), local.peer_addr.clone());
            *local = r.clone();
            // Addresses come from the configuration, never from gossip.
            local.http_addr = http;
            local.peer_addr = peer;
        }
        report
    }

    /// A claim about ourselves: overtake a higher heartbeat of our current
    /// generation; refuse anything else newer than what we are.
    fn refute(&mut self, claim: &MemberState, report: &mut MergeReport) {
        let me = self.members.get_mut(&self.me).expect("own entry");
        if claim.generation == me.generation && claim.heartbeat > me.heartbeat {
            me.heartbeat = claim.heartbeat + 1;
        } else if claim.generation > me.generation {
            report.refused += 1;
        }
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

    const NOW: u64 = 1_000_000;

    fn b() -> Bounds {
        Bounds::at(NOW)
    }

    #[test]
    fn newer_heartbeats_and_generations_win() {
        let mut a = Membership::new(m("a", 1, 0), [m("b", 0, 0)]);
        let r = a.merge(&[m("b", 1, 5)], "b", b());
        assert_eq!(r.advanced, vec!["b"]);
        assert!(r.restarted.is_empty(), "first sighting is not a restart");
        assert!(a.merge(&[m("b", 1, 4)], "b", b()).advanced.is_empty());
        let r = a.merge(&[m("b", 2, 0)], "b", b());
        assert_eq!(r.restarted, vec!["b"]);
        assert_eq!(a.get("b").unwrap().generation, 2);
    }

    #[test]
    fn our_own_entry_is_never_overwritten() {
        let mut a = Membership::new(m("a", 3, 7), []);
        let r = a.merge(&[m("a", 9, 9)], "b", b());
        assert_eq!((a.me().generation, a.me().heartbeat), (3, 7));
        assert_eq!(r.refused, 1);
        a.beat();
        assert_eq!(a.me().heartbeat, 8);
    }

    /// Regression (05 finding 8): gossip for `n2` with `generation =
    /// u64::MAX` made every node ignore n2 forever.
    #[test]
    fn impossible_generations_and_heartbeats_are_refused() {
        let mut a = Membership::new(m("a", NOW - 10_000, 0), [m("n2", NOW - 5_000, 3)]);
        let r = a.merge(&[m("n2", u64::MAX, 0)], "n2", b());
        assert_eq!(
            (r.refused, a.get("n2").unwrap().generation),
            (1, NOW - 5_000)
        );
        let r = a.merge(&[m("n2", NOW - 5_000, u64::MAX)], "n3", b());
        assert_eq!(r.refused, 1);
        // Within what 5 s of 200 ms rounds (plus drift and slack) allows.
        let r = a.merge(&[m("n2", NOW - 5_000, 40)], "n3", b());
        assert_eq!(r.advanced, vec!["n2"]);
        let r = a.merge(&[m("n2", NOW - 5_000, 1_000)], "n3", b());
        assert_eq!(r.refused, 1);
    }

    #[test]
    fn a_new_generation_is_accepted_only_from_the_member_itself() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", NOW - 5_000, 3)]);
        let r = a.merge(&[m("n2", NOW, 1)], "n3", b());
        assert_eq!(r.refused, 1, "a relay cannot restart n2");
        let r = a.merge(&[m("n2", NOW, 1)], "n2", b());
        assert_eq!(r.restarted, vec!["n2"]);
    }

    #[test]
    fn unknown_members_are_refused_and_never_stored() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", NOW, 0)]);
        let fakes: Vec<_> = (0..100).map(|i| m(&format!("fake{i}"), NOW, 1)).collect();
        let r = a.merge(&fakes, "n2", b());
        assert_eq!(r.refused, 100);
        assert_eq!(a.snapshot().len(), 2);
    }

    #[test]
    fn a_forged_heartbeat_of_ours_is_overtaken() {
        let mut a = Membership::new(m("a", NOW - 5_000, 10), [m("n2", NOW, 0)]);
        a.merge(&[m("a", NOW - 5_000, 30)], "n2", b());
        assert_eq!(a.me().heartbeat, 31);
    }

    #[test]
    fn addresses_come_from_the_configuration() {
        let mut conf = m("n2", NOW - 1_000, 0);
        conf.peer_addr = "10.0.0.2:7000".into();
        let mut a = Membership::new(m("a", NOW, 0), [conf]);
        let mut claim = m("n2", NOW - 1_000, 2);
        claim.peer_addr = "6.6.6.6:1".into();
        a.merge(&[claim], "n2", b());
        assert_eq!(a.get("n2").unwrap().peer_addr, "10.0.0.2:7000");
        assert_eq!(a.get("n2").unwrap().heartbeat, 2);
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
            let members: Vec<MemberState> = (0..4).map(|i| m(&format!("n{i}"), 0, 0)).collect();
            let mut forward = Membership::new(m("me", 1, 0), members.clone());
            // Each view is sent by its first member (so generations are direct).
            let from = |v: &[MemberState]| v.first().map(|x| x.id.clone()).unwrap_or_default();
            for v in &views {
                for e in v { forward.merge(std::slice::from_ref(e), &e.id, b()); }
                forward.merge(v, &from(v), b());
            }
            let mut backward = Membership::new(m("me", 1, 0), members);
            for v in views.iter().rev() {
                for e in v { backward.merge(std::slice::from_ref(e), &e.id, b()); }
                backward.merge(v, &from(v), b());
                backward.merge(v, &from(v), b());
            }
            prop_assert_eq!(forward.snapshot(), backward.snapshot());
        }
    }
}
