//! An operator's membership change (`ringkv admin join|leave|remove|
//! replace`) turned into the next layout version, or refused with a clear
//! reason. Pure: the caller proposes the result through consensus, which
//! refuses it again if another change got in first (never a fork).

use crate::layout::history::LayoutHistory;
use crate::layout::{Layout, Member};
use serde::Serialize;

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a configured node that no live version places.
    Join(String),
    /// Decommission a live node: its data streams to the new owners first.
    Leave(String),
    /// Drop a dead node: its partitions are rebuilt from the surviving
    /// replicas, and it is skipped (it will never report).
    Remove(String),
    /// A new node takes over a dead node's partitions.
    Replace { dead: String, new: String },
}

/// The next version, and what else to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub layout: Layout,
    /// Skip this node once the version is agreed (it is dead).
    pub skip: Option<String>,
    /// What the change puts at risk (only when forced past a refusal).
    pub warnings: Vec<String>,
    /// Partitions whose replica set changes.
    pub moved: usize,
}

/// A summary of a plan for the operator.
#[derive(Clone, Debug, Serialize)]
pub struct PlanSummary {
    pub version: u64,
    pub members: Vec<String>,
    pub moved_partitions: usize,
    pub partitions: u32,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn summary(&self) -> PlanSummary {
        PlanSummary {
            version: self.layout.version(),
            members: self.layout.members().map(String::from).collect(),
            moved_partitions: self.moved,
            partitions: self.layout.partitions(),
            warnings: self.warnings.clone(),
        }
    }
}

/// The next version for `change`. `configured`: the nodes of the cluster's
/// config (only those can join); `is_down`: the failure detector. Refused
/// while a change is in flight, when a node is not what the change needs
/// (joining twice, leaving while dead, removing while up), when fewer than
/// N members would remain, or when another member is down (its partitions
/// would have fewer than N replicas available while data moves) — `force`
/// turns the last three into warnings.
pub fn plan(
    h: &LayoutHistory,
    change: &Change,
    configured: &[String],
    is_down: impl Fn(&str) -> bool,
    force: bool,
) -> Result<Plan, String> {
    let cur = h.current();
    let n = cur.replication_factor();
    let mut warnings = Vec::new();
    let mut check = |ok: bool, why: String| -> Result<(), String> {
        match (ok, force) {
            (true, _) => Ok(()),
            (false, true) => {
                warnings.push(why);
                Ok(())
            }
            (false, false) => Err(format!("{why} (--force to do it anyway)")),
        }
    };
    if h.changing() {
        let live: Vec<u64> = h.live().iter().map(Layout::version).collect();
        check(
            false,
            format!(
                "a previous change is still in progress (live layout versions {live:?}): writes \
                 would need their quorum in {} versions",
                live.len() + 1
            ),
        )?;
    }
    let placed = |id: &str| cur.contains(id);
    let known = |id: &str| -> Result<(), String> {
        if configured.iter().any(|c| c == id) {
            Ok(())
        } else {
            Err(format!(
                "'{}' is not a node of the cluster's config: add it to [[nodes]] (with \
                 initial = false) on every node first",
                crate::wire::printable(id)
            ))
        }
    };
    let mut members: Vec<Member> = cur.member_weights().to_vec();
    let mut skip = None;
    match change {
        Change::Join(id) => {
            known(id)?;
            if placed(id) {
                return Err(format!(
                    "{id} is already a member (layout version {})",
                    cur.version()
                ));
            }
            check(
                !is_down(id),
                format!("{id} is not reachable: start it first (ringkv up --only {id})"),
            )?;
            members.push(Member::new(id.as_str()));
        }
        Change::Leave(id) | Change::Remove(id) => {
            if !placed(id) {
                return Err(format!(
                    "{id} is not a member of layout version {}",
                    cur.version()
                ));
            }
            if matches!(change, Change::Leave(_)) {
                check(
                    !is_down(id),
                    format!(
                        "{id} is down: a leaving node streams its data out; use `remove` for a \
                         dead node"
                    ),
                )?;
            } else {
                check(
                    is_down(id),
                    format!("{id} is up: use `leave`, which streams its data out first"),
                )?;
                skip = Some(id.clone());
            }
            members.retain(|m| &m.id != id);
        }
        Change::Replace { dead, new } => {
            known(new)?;
            if !placed(dead) {
                return Err(format!(
                    "{dead} is not a member of layout version {}",
                    cur.version()
                ));
            }
            if placed(new) {
                return Err(format!("{new} is already a member"));
            }
            check(
                is_down(dead),
                format!("{dead} is up: use `leave` and `join`, which stream its data out first"),
            )?;
            check(
                !is_down(new),
                format!("{new} is not reachable: start it first (ringkv up --only {new})"),
            )?;
            members.retain(|m| &m.id != dead);
            members.push(Member::new(new.as_str()));
            skip = Some(dead.clone());
        }
    }
    check(
        members.len() >= n,
        format!(
            "the change would leave {} members for N = {n}: every partition would have fewer \
             than N replicas",
            members.len()
        ),
    )?;
    if members.is_empty() {
        return Err("the change would leave no member".into());
    }
    let changed: Vec<&str> = match change {
        Change::Join(id) | Change::Leave(id) | Change::Remove(id) => vec![id.as_str()],
        Change::Replace { dead, new } => vec![dead.as_str(), new.as_str()],
    };
    let down: Vec<&str> = cur
        .members()
        .filter(|m| !changed.contains(m) && is_down(m))
        .collect();
    check(
        down.is_empty(),
        format!(
            "{} down: partitions it holds would have fewer than N replicas available while data \
             moves",
            down.join(", ")
        ),
    )?;
    let layout = cur.next(members);
    let moved = crate::layout::history::moves(cur, &layout).len();
    Ok(Plan {
        layout,
        skip,
        warnings,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> LayoutHistory {
        LayoutHistory::new(Layout::initial(["n1", "n2", "n3"].map(Member::new), 3, 6))
    }

    fn configured() -> Vec<String> {
        ["n1", "n2", "n3", "n4", "n5"].map(String::from).to_vec()
    }

    fn up(_: &str) -> bool {
        false
    }

    #[test]
    fn a_join_adds_the_node_and_moves_about_its_share() {
        let h = three();
        let p = plan(&h, &Change::Join("n4".into()), &configured(), up, false).unwrap();
        assert_eq!(p.layout.version(), 2);
        assert!(p.layout.contains("n4"));
        let share = p.layout.share("n4");
        assert!((share - 0.75).abs() < 0.05, "n4 stores {share}");
        assert!(p.skip.is_none() && p.warnings.is_empty());
        assert!(p.moved > 0);
    }

    /// Each refusal says why, and nothing is planned.
    #[test]
    fn changes_that_break_a_rule_are_refused_with_the_reason() {
        let h = three();
        let cfg = configured();
        let refused =
            |c: Change, down: &dyn Fn(&str) -> bool| plan(&h, &c, &cfg, down, false).unwrap_err();
        assert!(refused(Change::Join("n9".into()), &up).contains("not a node of the cluster"));
        assert!(refused(Change::Join("n1".into()), &up).contains("already a member"));
        assert!(refused(Change::Join("n4".into()), &|n| n == "n4").contains("not reachable"));
        assert!(refused(Change::Leave("n1".into()), &up).contains("fewer than N"));
        assert!(refused(Change::Remove("n1".into()), &up).contains("is up"));
        assert!(refused(Change::Leave("n4".into()), &up).contains("not a member"));
        let e = refused(Change::Join("n4".into()), &|n| n == "n2");
        assert!(e.contains("n2 down") && e.contains("--force"), "{e}");
        // Forced: done, with the risk named.
        let p = plan(&h, &Change::Join("n4".into()), &cfg, |n| n == "n2", true).unwrap();
        assert_eq!(p.warnings.len(), 1);
        // A change in flight refuses the next.
        let mut h = three();
        let p = plan(&h, &Change::Join("n4".into()), &cfg, up, false).unwrap();
        h.propose(p.layout, false).unwrap();
        let e = plan(&h, &Change::Join("n5".into()), &cfg, up, false).unwrap_err();
        assert!(e.contains("still in progress"), "{e}");
    }

    /// Remove and replace skip the dead node; replace hands the new node
    /// the dead one's place.
    #[test]
    fn remove_and_replace_skip_the_dead_node() {
        let mut h = three();
        let cfg = configured();
        let p = plan(&h, &Change::Join("n4".into()), &cfg, up, false).unwrap();
        h.propose(p.layout.clone(), false).unwrap();
        let mut h = LayoutHistory::new(p.layout);
        let dead = |n: &str| n == "n2";
        let p = plan(&h, &Change::Remove("n2".into()), &cfg, dead, false).unwrap();
        assert_eq!(p.skip.as_deref(), Some("n2"));
        assert!(!p.layout.contains("n2"));
        let r = Change::Replace {
            dead: "n2".into(),
            new: "n5".into(),
        };
        let p = plan(&h, &r, &cfg, dead, false).unwrap();
        assert_eq!(p.skip.as_deref(), Some("n2"));
        assert!(p.layout.contains("n5") && !p.layout.contains("n2"));
        h.propose(p.layout, false).unwrap();
        assert!(h.changing());
    }
}
