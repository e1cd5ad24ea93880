//! What a consensus message from a peer must satisfy before openraft sees
//! it. Raft trusts its peers; these checks turn one forged or corrupt
//! message into a refusal instead of a durable, cluster-wide fault: a vote
//! must be the sender's own (a member cannot speak for another), no term
//! may come near `u64::MAX` (openraft computes `term + 1`), entries must be
//! consecutive and no newer than the sender's term, and a membership may
//! name only configured members. Pure functions, driven by hand in tests.

use super::{Entry, LogId, MetaNode, MetaTypes};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{EntryPayload, Membership, SnapshotMeta, Vote};
use std::collections::BTreeSet;

/// Highest term accepted from a peer (an election a second for 8 million
/// years stays below it).
pub const TERM_CEILING: u64 = 1 << 48;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// A vote's term is sane.
pub fn check_vote(v: &Vote<u64>) -> Result<(), Refused> {
    if v.leader_id.term > TERM_CEILING {
        return refuse(format!(
            "term {} is above the ceiling {TERM_CEILING}",
            v.leader_id.term
        ));
    }
    Ok(())
}

/// The vote is the sender's own, and sane.
fn check_sender(v: &Vote<u64>, from: u64) -> Result<(), Refused> {
    if v.leader_id.node_id != from {
        return refuse("a vote or leadership claimed for another node than its sender");
    }
    check_vote(v)
}

/// A log id is no newer than the sender's term.
fn check_log_id(id: Option<&LogId>, v: &Vote<u64>, what: &str) -> Result<(), Refused> {
    match id {
        Some(id) if id.leader_id.term > v.leader_id.term => refuse(format!(
            "{what} of term {} is newer than the sender's term {}",
            id.leader_id.term, v.leader_id.term
        )),
        _ => Ok(()),
    }
}

/// A membership names configured members only, each under its own id.
pub fn check_membership(
    m: &Membership<u64, MetaNode>,
    members: &BTreeSet<u64>,
) -> Result<(), Refused> {
    for (id, node) in m.nodes() {
        if !members.contains(id) || super::raft_id(&node.id) != *id {
            return refuse(format!(
                "a membership naming '{}', not a configured member",
                crate::wire::printable(&node.id)
            ));
        }
    }
    Ok(())
}

/// An AppendEntries from `from` (its Raft id).
pub fn check_append(
    req: &AppendEntriesRequest<MetaTypes>,
    from: u64,
    members: &BTreeSet<u64>,
) -> Result<(), Refused> {
    check_sender(&req.vote, from)?;
    check_log_id(req.prev_log_id.as_ref(), &req.vote, "the previous entry")?;
    check_log_id(req.leader_commit.as_ref(), &req.vote, "the commit")?;
    let mut expect = req.prev_log_id.map_or(0, |p| p.index + 1);
    let mut term = req.prev_log_id.map_or(0, |p| p.leader_id.term);
    for e in &req.entries {
        check_entry(e, expect, term, &req.vote, members)?;
        expect = e.log_id.index.saturating_add(1);
        term = e.log_id.leader_id.term;
    }
    Ok(())
}

fn check_entry(
    e: &Entry,
    index: u64,
    term: u64,
    vote: &Vote<u64>,
    members: &BTreeSet<u64>,
) -> Result<(), Refused> {
    if e.log_id.index != index {
        return refuse(format!(
            "entry {} where entry {index} comes next",
            e.log_id.index
        ));
    }
    if e.log_id.leader_id.term < term {
        return refuse("entries whose terms go down");
    }
    check_log_id(Some(&e.log_id), vote, "an entry")?;
    if let EntryPayload::Membership(m) = &e.payload {
        check_membership(m, members)?;
    }
    Ok(())
}

/// A vote request from `from`.
pub fn check_vote_request(req: &VoteRequest<u64>, from: u64) -> Result<(), Refused> {
    check_sender(&req.vote, from)?;
    check_log_id(req.last_log_id.as_ref(), &req.vote, "the last entry")
}

/// A snapshot's vote and meta from `from`.
pub fn check_snapshot(
    vote: &Vote<u64>,
    meta: &SnapshotMeta<u64, MetaNode>,
    from: u64,
    members: &BTreeSet<u64>,
) -> Result<(), Refused> {
    check_sender(vote, from)?;
    check_log_id(meta.last_log_id.as_ref(), vote, "the snapshot")?;
    check_log_id(
        meta.last_membership.log_id().as_ref(),
        vote,
        "the snapshot's membership",
    )?;
    check_membership(meta.last_membership.membership(), members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn append(
        term: u64,
        prev: Option<LogId>,
        entries: Vec<Entry>,
    ) -> AppendEntriesRequest<MetaTypes> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev,
            entries,
            leader_commit: None,
        }
    }

    #[test]
    fn a_sane_append_passes() {
        let members = BTreeSet::from([1, 2, 3]);
        let req = append(3, Some(id(2, 4)), vec![entry(2, 5), entry(3, 6)]);
        check_append(&req, 1, &members).unwrap();
        check_append(&append(1, None, vec![entry(1, 0)]), 1, &members).unwrap();
    }

    /// The attacks of the review: a term near u64::MAX (openraft would
    /// overflow `term + 1` and stop for good), a vote for another node,
    /// gaps, terms going down or ahead of the sender's, a stranger in a
    /// membership.
    #[test]
    fn forged_appends_and_votes_are_refused() {
        let members = BTreeSet::from([1, 2, 3]);
        let max = append(u64::MAX, None, vec![]);
        assert!(check_append(&max, 1, &members).is_err());
        assert!(
            check_append(&append(3, None, vec![]), 2, &members).is_err(),
            "not its own vote"
        );
        let gap = append(3, Some(id(2, 4)), vec![entry(2, 5), entry(3, 1_000_000)]);
        assert!(check_append(&gap, 1, &members).is_err());
        let down = append(3, Some(id(3, 4)), vec![entry(2, 5)]);
        assert!(check_append(&down, 1, &members).is_err());
        let ahead = append(3, Some(id(2, 4)), vec![entry(9, 5)]);
        assert!(check_append(&ahead, 1, &members).is_err());
        let stranger = Membership::new(
            vec![BTreeSet::from([99])],
            std::collections::BTreeMap::from([(99, MetaNode { id: "z".into() })]),
        );
        let forged = append(
            3,
            None,
            vec![Entry {
                log_id: id(3, 0),
                payload: EntryPayload::Membership(stranger),
            }],
        );
        assert!(check_append(&forged, 1, &members).is_err());
        let vote = VoteRequest::new(Vote::new(u64::MAX, 1), None);
        assert!(check_vote_request(&vote, 1).is_err());
        let vote = VoteRequest::new(Vote::new(5, 1), Some(id(6, 10)));
        assert!(
            check_vote_request(&vote, 1).is_err(),
            "a log newer than its term"
        );
        check_vote_request(&VoteRequest::new(Vote::new(5, 1), Some(id(4, 10))), 1).unwrap();
    }
}
