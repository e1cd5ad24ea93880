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
//! # Only a member speaks for itself
//! Gossip arrives from the network, so a merge accepts only what the member
//! itself said, on a connection of that member ([`Membership::merge`]): an
//! exchange carries the sender's own entry, and every entry about anyone
//! else — another member, an unknown id, ourselves — is refused and
//! counted. With peer TLS on, "a connection of X" means one whose
//! certificate names X (checked in the peer handshake), so a node, even a
//! compromised one, can lie only about itself. Dissemination does not need
//! relays: every round exchanges with every peer (the gossip actor).
//! How much a merge trusts X's entry depends on how it came ([`Source`]):
//! * A new generation of X: from an exchange we started with X, any; from a
//!   connection X opened, one no further ahead than the allowed drift of our
//!   clock (a generation is the member's clock at its start).
//! * A higher heartbeat of X's current generation: from an exchange we
//!   started with X, any; otherwise at most the rounds X could have run since
//!   we last accepted one, plus [`HEARTBEAT_SLACK`] (by our monotonic clock).
//! * A generation we hold that is beyond the drift (X once lied, or booted
//!   with a runaway clock) gives way to a lower, plausible one X states on an
//!   exchange we started: a member that lied once (or a rebuilt node reusing
//!   a compromised one's id) is not locked out until its peers restart.
//! * Addresses always come from the configuration.
//!
//! Every bound is relative (to our clock, or to what we last accepted), so
//! no value overflows and no claim locks a member out for longer than the
//! drift or a few rounds.
//!
//! Caveat: which nodes own the ring is still the configured node set; the
//! entries carry the ring epoch so joins and leaves can build on this.

use crate::wire::MemberState;
use std::collections::{BTreeMap, HashMap};

/// Rounds a member's heartbeat may run ahead of what we could have seen
/// (timer jitter, a pause of ours).
pub const HEARTBEAT_SLACK: u64 = 8;

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

/// How a gossip view reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// The answer to an exchange we started with this member, on a
    /// connection we dialed to its configured address.
    Dialed(&'a str),
    /// An exchange started on a connection this member (says it) opened.
    Accepted(&'a str),
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
    /// Our monotonic clock (ms).
    pub mono_ms: u64,
}

impl Bounds {
    /// Bounds at wall time `now_ms` and monotonic time `mono_ms` (tests).
    pub fn at(now_ms: u64, mono_ms: u64) -> Self {
        Bounds {
            now_ms,
            max_drift_ms: 5_000,
            interval_ms: 200,
            mono_ms,
        }
    }

    fn generation_ok(&self, generation: u64) -> bool {
        generation <= self.now_ms.saturating_add(self.max_drift_ms)
    }
}

#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    members: BTreeMap<String, MemberState>,
    /// Per member: our monotonic time when we last accepted an entry of it.
    accepted_ms: HashMap<String, u64>,
}

impl Membership {
    /// `others` are the configured members; only they are ever accepted.
    pub fn new(me: MemberState, others: impl IntoIterator<Item = MemberState>) -> Self {
        let mut members: BTreeMap<_, _> = others.into_iter().map(|m| (m.id.clone(), m)).collect();
        let id = me.id.clone();
        members.insert(id.clone(), me);
        Membership {
            me: id,
            members,
            accepted_ms: HashMap::new(),
        }
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
            m.heartbeat = m.heartbeat.saturating_add(1);
        }
    }

    pub fn snapshot(&self) -> Vec<MemberState> {
        self.members.values().cloned().collect()
    }

    /// What to send: our own entry only (nobody accepts relayed ones), with
    /// our wall clock, hint floor and clock's high-water mark stamped in.
    pub fn outgoing(&mut self, now_ms: u64, hints_floor: u64, hlc_ts: u64) -> Vec<MemberState> {
        let me = self.members.get_mut(&self.me).expect("own entry");
        me.wall_ms = now_ms;
        me.hints_floor = hints_floor;
        me.hlc_ts = hlc_ts;
        vec![me.clone()]
    }

    /// Folds in a view that came from `source`, accepting only what passes
    /// the checks described in the module header.
    pub fn merge(&mut self, remote: &[MemberState], source: Source, b: Bounds) -> MergeReport {
        let mut report = MergeReport::default();
        let speaker = match source {
            Source::Dialed(id) | Source::Accepted(id) => id,
        };
        for r in remote {
            let local = match self.members.get_mut(&r.id) {
                Some(local) if r.id == speaker && r.id != self.me => local,
                _ => {
                    report.refused += 1;
                    continue;
                }
            };
            let dialed = matches!(source, Source::Dialed(_));
            // A generation we hold that no clock within the drift could have
            // produced (a lie, or a boot with a runaway clock) gives way to
            // a plausible lower one the member states on the connection we
            // dialed: nothing locks a member out until its peers restart.
            let unlocks = dialed
                && r.generation < local.generation
                && !b.generation_ok(local.generation)
                && b.generation_ok(r.generation);
            if (r.generation, r.heartbeat) <= (local.generation, local.heartbeat) && !unlocks {
                continue;
            }
            let plausible = if r.generation != local.generation {
                dialed || b.generation_ok(r.generation)
            } else {
                let since = self
                    .accepted_ms
                    .get(&r.id)
                    .map_or(b.mono_ms, |t| b.mono_ms.saturating_sub(*t));
                let rounds = since / b.interval_ms.max(1) + HEARTBEAT_SLACK;
                dialed || r.heartbeat <= local.heartbeat.saturating_add(rounds)
            };
            if !plausible {
                report.refused += 1;
                continue;
            }
            if r.generation != local.generation && local.generation > 0 {
                report.restarted.push(r.id.clone());
            }
            report.advanced.push(r.id.clone());
            self.accepted_ms.insert(r.id.clone(), b.mono_ms);
            let (http, peer) = (local.http_addr.clone(), local.peer_addr.clone());
            *local = r.clone();
            // Addresses come from the configuration, never from gossip.
            local.http_addr = http;
            local.peer_addr = peer;
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(id: &str, generation: u64, heartbeat: u64) -> MemberState {
        MemberState::new(id, generation, heartbeat)
    }

    const NOW: u64 = 1_000_000;

    /// Bounds one hour of monotonic time after our start.
    fn b() -> Bounds {
        Bounds::at(NOW, 3_600_000)
    }

    fn dialed(id: &str) -> Source<'_> {
        Source::Dialed(id)
    }

    #[test]
    fn a_member_that_claimed_an_impossible_generation_is_not_locked_out() {
        let mut a = Membership::new(m("a", NOW, 0), [m("b", NOW - 5_000, 0)]);
        let r = a.merge(&[m("b", u64::MAX, 0)], dialed("b"), b());
        assert_eq!(r.restarted, vec!["b"], "b's own word, on our exchange");
        // b (rebuilt, or its clock fixed) states an honest generation again:
        // not on a connection it opened...
        let honest = m("b", NOW + 1, 1);
        let r = a.merge(std::slice::from_ref(&honest), Source::Accepted("b"), b());
        assert!(r.advanced.is_empty());
        // ... but on the exchange we started, it replaces the impossible one.
        let r = a.merge(&[honest], dialed("b"), b());
        assert_eq!(r.restarted, vec!["b"]);
        assert_eq!(a.get("b").unwrap().generation, NOW + 1);
        // A plausible generation never gives way to a lower one.
        let r = a.merge(&[m("b", NOW - 1, 9)], dialed("b"), b());
        assert!(r.advanced.is_empty());
        assert_eq!(a.get("b").unwrap().generation, NOW + 1);
    }

    #[test]
    fn newer_heartbeats_and_generations_win() {
        let mut a = Membership::new(m("a", 1, 0), [m("b", 0, 0)]);
        let r = a.merge(&[m("b", 1, 5)], dialed("b"), b());
        assert_eq!(r.advanced, vec!["b"]);
        assert!(r.restarted.is_empty(), "first sighting is not a restart");
        assert!(a
            .merge(&[m("b", 1, 4)], dialed("b"), b())
            .advanced
            .is_empty());
        let r = a.merge(&[m("b", 2, 0)], dialed("b"), b());
        assert_eq!(r.restarted, vec!["b"]);
        assert_eq!(a.get("b").unwrap().generation, 2);
    }

    #[test]
    fn our_own_entry_is_never_overwritten() {
        let mut a = Membership::new(m("a", 3, 7), []);
        let r = a.merge(&[m("a", u64::MAX, 9)], dialed("b"), b());
        assert_eq!((a.me().generation, a.me().heartbeat), (3, 7));
        assert_eq!(r.refused, 1);
        a.beat();
        assert_eq!(a.me().heartbeat, 8);
    }

    /// Regression (05 finding 8): gossip for `n2` with `generation =
    /// u64::MAX` made every node ignore n2 forever.
    #[test]
    fn impossible_generations_are_refused_unless_the_member_says_so() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", NOW - 5_000, 3)]);
        for source in [Source::Accepted("n2"), Source::Accepted("n3"), dialed("n3")] {
            let r = a.merge(&[m("n2", u64::MAX, 0)], source, b());
            assert_eq!(r.refused, 1, "{source:?}");
        }
        assert_eq!(a.get("n2").unwrap().generation, NOW - 5_000);
        // Within the drift, from the member's own connection: a restart.
        let r = a.merge(&[m("n2", NOW + 1_000, 0)], Source::Accepted("n2"), b());
        assert_eq!(r.restarted, vec!["n2"]);
        // A member whose generation is far ahead (it once booted with a clock
        // in the future) is still heard on the connection we dialed.
        let r = a.merge(&[m("n2", NOW + 86_400_000, 0)], dialed("n2"), b());
        assert_eq!(r.restarted, vec!["n2"]);
    }

    #[test]
    fn heartbeats_on_accepted_connections_advance_no_faster_than_rounds() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", 0, 0)]);
        a.merge(&[m("n2", NOW, 10)], dialed("n2"), Bounds::at(NOW, 0));
        // 1 s later (5 rounds): up to 10 + 5 + slack on n2's own connection.
        let later = Bounds::at(NOW, 1_000);
        let too_far = m("n2", NOW, 10 + 5 + HEARTBEAT_SLACK + 1);
        assert_eq!(
            a.merge(&[too_far], Source::Accepted("n2"), later).refused,
            1
        );
        assert_eq!(
            a.merge(&[m("n2", NOW, u64::MAX)], Source::Accepted("n2"), later)
                .refused,
            1
        );
        let r = a.merge(
            &[m("n2", NOW, 10 + 5 + HEARTBEAT_SLACK)],
            Source::Accepted("n2"),
            later,
        );
        assert_eq!(r.advanced, vec!["n2"]);
        // The member itself, on the connection we dialed, is believed.
        let r = a.merge(&[m("n2", NOW, 1_000_000)], dialed("n2"), later);
        assert_eq!(r.advanced, vec!["n2"]);
    }

    /// Step 07: everything learned about a member comes from a connection
    /// of that member; another member relaying (or forging) it is refused,
    /// however plausible the entry.
    #[test]
    fn only_a_member_speaks_for_itself() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", NOW - 5_000, 3), m("n3", NOW, 0)]);
        for source in [dialed("n3"), Source::Accepted("n3")] {
            let r = a.merge(&[m("n2", NOW, 1), m("n2", NOW - 5_000, 4)], source, b());
            assert_eq!((r.refused, r.advanced.len()), (2, 0), "{source:?}");
        }
        assert_eq!(a.get("n2").unwrap().heartbeat, 3);
        let r = a.merge(&[m("n2", NOW, 1)], dialed("n2"), b());
        assert_eq!(r.restarted, vec!["n2"]);
        assert_eq!(a.outgoing(NOW, 0, 0).len(), 1, "only our own entry is sent");
    }

    #[test]
    fn unknown_members_are_refused_and_never_stored() {
        let mut a = Membership::new(m("a", NOW, 0), [m("n2", NOW, 0)]);
        let fakes: Vec<_> = (0..100).map(|i| m(&format!("fake{i}"), NOW, 1)).collect();
        let r = a.merge(&fakes, dialed("n2"), b());
        assert_eq!(r.refused, 100);
        assert_eq!(a.snapshot().len(), 2);
    }

    /// Review of 05: a forged heartbeat of `u64::MAX` for ourselves used to
    /// overflow or push us out of every peer's bounds. Nobody speaks for us.
    #[test]
    fn claims_about_ourselves_are_refused() {
        let mut a = Membership::new(m("a", NOW - 5_000, 10), [m("n2", NOW, 0)]);
        for claim in [
            m("a", NOW - 5_000, 20),
            m("a", NOW - 5_000, u64::MAX),
            m("a", u64::MAX, 0),
            m("a", NOW + 100, 0),
        ] {
            let r = a.merge(&[claim], Source::Accepted("n2"), b());
            assert_eq!(r.refused, 1);
        }
        assert_eq!((a.me().generation, a.me().heartbeat), (NOW - 5_000, 10));
    }

    #[test]
    fn addresses_come_from_the_configuration() {
        let mut conf = m("n2", NOW - 1_000, 0);
        conf.peer_addr = "10.0.0.2:7000".into();
        let mut a = Membership::new(m("a", NOW, 0), [conf]);
        let mut claim = m("n2", NOW - 1_000, 2);
        claim.peer_addr = "6.6.6.6:1".into();
        a.merge(&[claim], dialed("n2"), b());
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
            // Every entry comes from its own member (as the exchanges we
            // start do), so everything plausible is accepted.
            let mut forward = Membership::new(m("me", 1, 0), members.clone());
            for v in &views {
                for e in v { forward.merge(std::slice::from_ref(e), dialed(&e.id), b()); }
            }
            let mut backward = Membership::new(m("me", 1, 0), members);
            for v in views.iter().rev() {
                for e in v { backward.merge(std::slice::from_ref(e), dialed(&e.id), b()); }
                for e in v { backward.merge(std::slice::from_ref(e), dialed(&e.id), b()); }
            }
            prop_assert_eq!(forward.snapshot(), backward.snapshot());
        }
    }
}
