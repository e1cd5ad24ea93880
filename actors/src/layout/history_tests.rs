//! The transition invariants of a membership change, driven by hand: each
//! test names the invariant of ARCHITECTURE.md ("Layout history") it
//! tries to break.

use super::*;
use crate::layout::Member;

fn members(ids: &[&str]) -> Vec<Member> {
    ids.iter().map(|i| Member::new(*i)).collect()
}

/// A 3-node history (N = 3, Q = 16) with a 4th node proposed.
fn joining() -> LayoutHistory {
    let first = Layout::initial(members(&["n1", "n2", "n3"]), 3, 4);
    let next = first.next(members(&["n1", "n2", "n3", "n4"]));
    let mut h = LayoutHistory::new(first);
    h.propose(next, false)
        .expect("the first change is accepted");
    h
}

fn all(h: &mut LayoutHistory, t: Tracker, v: u64) {
    for n in ["n1", "n2", "n3", "n4"] {
        h.report(n, t, v);
    }
}

/// Invariant 7 (and "refused while a change is in progress"): a second
/// change is refused until the first is done, unless forced; a version
/// out of sequence or of another Q or N is always refused.
#[test]
fn a_change_is_refused_while_another_is_in_flight_or_out_of_sequence() {
    let mut h = joining();
    let third = h.current().next(members(&["n1", "n2", "n3", "n4", "n5"]));
    assert!(matches!(
        h.propose(third.clone(), false),
        Err(Refusal::InProgress { ref live }) if live == &[1, 2]
    ));
    let skipping = third.next(members(&["n1", "n2"]));
    assert!(matches!(
        h.propose(skipping, true),
        Err(Refusal::NotNext {
            expected: 3,
            got: 4
        })
    ));
    let other_q = Layout::initial(members(&["n1"]), 3, 5).next(members(&["n1", "n2"]));
    assert!(matches!(
        LayoutHistory::new(Layout::initial(members(&["n1"]), 3, 4)).propose(other_q, true),
        Err(Refusal::Incompatible(_))
    ));
    h.propose(third, true).expect("forced");
    assert_eq!(h.live().len(), 3);
    // Third review: forced versions are bounded.
    let fourth = h
        .current()
        .next(members(&["n1", "n2", "n3", "n4", "n5", "n6"]));
    assert!(matches!(
        h.propose(fourth, true),
        Err(Refusal::InProgress { .. })
    ));
    // A layout that places nothing is refused, forced or not.
    let mut h = LayoutHistory::new(Layout::initial(members(&["n1", "n2"]), 3, 4));
    let nobody = h.current().next(vec![Member {
        id: "n1".into(),
        weight: 0,
    }]);
    assert_eq!(h.propose(nobody, true), Err(Refusal::Unplaceable));
}

/// Third review of issue 16: a node new in a *forced* version started as
/// done with the version before it, so the oldest version was dropped
/// while that node could still be reading it.
#[test]
fn a_node_new_in_a_forced_version_holds_the_oldest_version_live() {
    let mut h = joining();
    let third = h.current().next(members(&["n1", "n2", "n3", "n4", "n5"]));
    h.propose(third, true).unwrap();
    assert_eq!(h.progress("n5", Tracker::SyncAck), Some(1));
    let all = ["n1", "n2", "n3", "n4", "n5"];
    for t in [Tracker::Ack, Tracker::Sync] {
        for n in all {
            assert!(h.report(n, t, 2), "{n} {t:?}");
        }
    }
    for n in &all[..4] {
        assert!(h.report(n, Tracker::SyncAck, 2));
    }
    assert_eq!(h.live()[0].version(), 1, "n5 has not stopped reading 1");
    assert!(h.report("n5", Tracker::SyncAck, 2));
    assert_eq!(h.live()[0].version(), 2);
}

/// Third review of issue 16: versions sync in order — with 2 forced in
/// behind 3, a sync of 3 is ignored (and says so) until every node has
/// synced 2, so reads never jump to 3 past writes only 1's set holds.
#[test]
fn versions_sync_in_order() {
    let mut h = joining();
    let third = h.current().next(members(&["n1", "n2", "n3", "n4", "n5"]));
    h.propose(third, true).unwrap();
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        h.report(n, Tracker::Ack, 3);
    }
    assert!(h.fenced(3));
    assert!(!h.report("n1", Tracker::Sync, 3), "2 is not synced yet");
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        assert!(h.report(n, Tracker::Sync, 2));
    }
    assert_eq!(h.read_version(), 2);
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        h.report(n, Tracker::Sync, 3);
    }
    assert_eq!(h.read_version(), 3);
}

/// Third review of issue 16: an empty set, no set, or a node listed twice
/// never meets a quorum it did not get.
#[test]
fn empty_or_duplicated_sets_never_meet_a_quorum() {
    let none = BTreeSet::new();
    let n1: BTreeSet<&str> = ["n1"].into();
    assert!(!write_met(&[], &n1, 2));
    assert!(!write_met(&[vec![]], &none, 2));
    assert!(!write_met(&[vec!["n1", "n1", "n2"]], &n1, 2));
    assert!(
        write_met(&[vec!["n1"]], &n1, 2),
        "a 1-replica set needs its one"
    );
    let h = joining();
    let out_of_range = h.write_sets(h.current().partitions());
    assert!(!write_met(&out_of_range, &n1, 1));
}

/// Invariant 2: streaming waits until every node — the new one too —
/// writes to both sets; one node short, it may not start.
#[test]
fn streaming_waits_for_every_node_to_fence() {
    let mut h = joining();
    assert!(!h.fenced(2));
    for n in ["n1", "n2", "n4"] {
        h.report(n, Tracker::Ack, 2);
    }
    assert!(
        !h.fenced(2),
        "n3 may still have writes of version 1 in flight"
    );
    // A sync reported before the fence is out of order and moves nothing.
    all(&mut h, Tracker::Sync, 2);
    assert_eq!(h.min(Tracker::Sync), 1);
    h.report("n3", Tracker::Ack, 2);
    assert!(h.fenced(2));
}

/// Invariant 3: while both versions are live, a write needs W in each
/// set; W + 1 acknowledgements in total, all from one set, are not enough.
#[test]
fn a_write_during_a_change_needs_its_quorum_in_each_set() {
    let h = joining();
    let p = (0..h.current().partitions())
        .find(|&p| h.current().replicas(p).contains(&"n4"))
        .expect("n4 gains partitions");
    let sets = h.write_sets(p);
    assert_eq!(sets.len(), 2);
    let (old, new) = (&sets[0], &sets[1]);
    let only_old: BTreeSet<&str> = old.iter().copied().collect();
    assert_eq!(only_old.len(), 3);
    // All three old replicas: two of them are in the new set.
    let in_new = new.iter().filter(|r| only_old.contains(*r)).count();
    assert_eq!(in_new, 2, "one replica moved to n4");
    assert!(write_met(&sets, &only_old, 2), "two of each set answered");
    // The leaving replica and one that stays: 2 of the old set, 1 of the new.
    let leaving = old.iter().find(|r| !new.contains(r)).unwrap();
    let staying = old.iter().find(|r| new.contains(r)).unwrap();
    let acked: BTreeSet<&str> = [*leaving, *staying].into();
    assert!(!write_met(&sets, &acked, 2), "only 1 of the new set");
    let acked: BTreeSet<&str> = [*leaving, *staying, "n4"].into();
    assert!(write_met(&sets, &acked, 2));
}

/// Invariant 5: reads stay on the old version until every node has
/// synced the new one — one lagging node keeps them there — and a read
/// uses a single version's set.
#[test]
fn reads_switch_only_when_every_node_has_synced() {
    let mut h = joining();
    all(&mut h, Tracker::Ack, 2);
    for n in ["n1", "n2", "n4"] {
        h.report(n, Tracker::Sync, 2);
    }
    assert_eq!(h.read_version(), 1, "n3 has not received its data yet");
    assert_eq!(h.read_layout().version(), 1);
    h.report("n3", Tracker::Sync, 2);
    assert_eq!(h.read_version(), 2);
    assert!(h.read_layout().contains("n4"));
}

/// Invariant 6: the old set keeps receiving writes until every node has
/// switched its reads (sync-ack); a sync-ack before the switch is out of
/// order; after the last one the old version is dropped.
#[test]
fn the_old_set_is_dropped_only_after_every_node_stopped_reading_it() {
    let mut h = joining();
    all(&mut h, Tracker::Ack, 2);
    all(&mut h, Tracker::SyncAck, 2);
    assert_eq!(h.min(Tracker::SyncAck), 1, "before the switch: ignored");
    all(&mut h, Tracker::Sync, 2);
    for n in ["n1", "n2", "n3"] {
        h.report(n, Tracker::SyncAck, 2);
    }
    assert!(h.changing(), "n4 may still be serving a read of version 1");
    assert_eq!(h.write_sets(0).len(), 2);
    h.report("n4", Tracker::SyncAck, 2);
    assert!(!h.changing());
    assert_eq!(h.write_sets(0).len(), 1);
    assert_eq!(h.live()[0].version(), 2);
}

/// Reports are monotonic and bounded: a lower version, a version not yet
/// proposed, or a node in no live version changes nothing.
#[test]
fn late_future_or_foreign_reports_move_nothing() {
    let mut h = joining();
    all(&mut h, Tracker::Ack, 2);
    h.report("n1", Tracker::Ack, 1);
    assert_eq!(h.progress("n1", Tracker::Ack), Some(2));
    h.report("n1", Tracker::Sync, 99);
    assert_eq!(h.progress("n1", Tracker::Sync), Some(1));
    h.report("stranger", Tracker::Ack, 2);
    assert_eq!(h.progress("stranger", Tracker::Ack), None);
}

/// Invariant 7: a dead node holds a change back until it is skipped
/// explicitly, and skipping names the partitions that may lose writes, by
/// how many of their old replicas are skipped — counting every node
/// skipped so far, not this one alone.
#[test]
fn a_dead_node_is_skipped_only_explicitly_and_the_risk_is_named() {
    // N = 1: each partition on one node. Removing n2 moves its partitions.
    let first = Layout::initial(members(&["n1", "n2"]), 1, 3);
    let next = first.next(members(&["n1"]));
    let n2_held: Vec<PartitionId> = first.partitions_of("n2");
    assert!(!n2_held.is_empty());
    let mut h = LayoutHistory::new(first);
    h.propose(next, false).unwrap();
    h.report("n1", Tracker::Ack, 2);
    assert!(!h.fenced(2), "n2 never reports");
    let risk = h.skip("n2");
    let parts: Vec<PartitionId> = risk.iter().map(|r| r.partition).collect();
    assert_eq!(parts, n2_held);
    assert!(risk.iter().all(|r| r.loses_writes_at(1)));
    assert!(h.fenced(2));
    // N = 3, two of the old nodes dead: the first skip puts writes at
    // `one` at risk only; the second, where both held a partition, puts
    // quorum writes at risk there too.
    let first = Layout::initial(members(&["n1", "n2", "n3", "n4"]), 3, 4);
    let next = first.next(members(&["n1", "n2", "n5", "n6"]));
    let mut h = LayoutHistory::new(first.clone());
    h.propose(next, false).unwrap();
    let one = h.skip("n3");
    assert!(one
        .iter()
        .all(|r| r.loses_writes_at(1) && !r.loses_writes_at(2)));
    let two = h.skip("n4");
    let both: Vec<PartitionId> = (0..first.partitions())
        .filter(|&p| {
            let r = first.replicas(p);
            r.contains(&"n3") && r.contains(&"n4")
        })
        .collect();
    assert!(!both.is_empty());
    let quorum_lost: Vec<PartitionId> = two
        .iter()
        .filter(|r| r.loses_writes_at(2))
        .map(|r| r.partition)
        .collect();
    assert_eq!(quorum_lost, both);
}

/// What moves when a 4th node joins 3 (N = 3): it gains exactly its
/// share, and each partition it gains is lost by one old replica.
#[test]
fn moves_name_the_gaining_and_losing_nodes() {
    let h = joining();
    let (old, new) = (&h.live()[0], &h.live()[1]);
    let m = moves(old, new);
    let q = new.partitions() as usize;
    assert_eq!(m.len(), new.partitions_of("n4").len());
    assert_eq!(m.len(), q * 3 / 4);
    for (_, gain, lose) in &m {
        assert_eq!(gain, &["n4"]);
        assert_eq!(lose.len(), 1);
    }
}

/// The data a change moves is within 10% of the ideal: a 4th node joining
/// 3 (N = 3) takes ¼ of the replicas, a 5th ⅕, and leaving moves back about
/// the leaver's share — counted in replica moves, at Q = 256.
#[test]
fn growing_and_shrinking_move_close_to_the_ideal_share() {
    let ids = |n: usize| {
        (1..=n)
            .map(|i| Member::new(format!("n{i}")))
            .collect::<Vec<_>>()
    };
    let moved = |a: &Layout, b: &Layout| -> usize {
        moves(a, b).iter().map(|(_, gain, _)| gain.len()).sum()
    };
    let three = Layout::initial(ids(3), 3, 8);
    let four = three.next(ids(4));
    let five = four.next(ids(5));
    let back = five.next(ids(4));
    let replicas = 256.0 * 3.0;
    for (what, got, ideal) in [
        ("3 → 4", moved(&three, &four), replicas / 4.0),
        ("4 → 5", moved(&four, &five), replicas / 5.0),
        ("5 → 4", moved(&five, &back), replicas / 5.0),
    ] {
        let ratio = got as f64 / ideal;
        eprintln!("{what}: {got} replica moves, ideal {ideal}, ratio {ratio:.3}");
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{what}: {got} replica moves, ideal {ideal}"
        );
    }
}
