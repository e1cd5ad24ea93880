//! Hint-holder choice, pure: for each replica of a write, whether it is
//! known to be down and which nodes to ask, in order, to hold a hint for it
//! if it cannot take the write.
//!
//! Holders are the healthy nodes past the key's preference list (in walk
//! order), then the live replicas themselves (this node first: no network
//! hop). Each replica known to be down starts at a different holder, so the
//! hints of one write spread over the holders; a replica never holds its
//! own hint, and this node asks nobody to hold a hint addressed to itself
//! (peers refuse hints addressed to their sender; when our own write fails
//! the other replicas and anti-entropy bring it to us).

/// One replica's part of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaPlan {
    pub target: String,
    /// The failure detector holds it down: go straight to a hint.
    pub known_down: bool,
    /// Where to store its hint, in order.
    pub holders: Vec<String>,
}

/// The plan of a write whose key walks `walk` (its first `n` are the
/// replicas), coordinated by `me`.
pub fn plan(
    walk: &[String],
    n: usize,
    me: &str,
    is_down: impl Fn(&str) -> bool,
    hinted_handoff: bool,
) -> Vec<ReplicaPlan> {
    let n = n.min(walk.len());
    let pref = &walk[..n];
    let mut holders: Vec<String> = Vec::new();
    if hinted_handoff {
        holders.extend(walk[n..].iter().filter(|h| !is_down(h)).cloned());
        if pref.iter().any(|p| p == me) {
            holders.push(me.to_string());
        }
        holders.extend(pref.iter().filter(|p| *p != me && !is_down(p)).cloned());
    }
    let mut next_holder = 0;
    pref.iter()
        .map(|target| {
            let known_down = target != me && is_down(target);
            let mut mine: Vec<String> = if target == me {
                Vec::new()
            } else {
                holders.iter().filter(|h| *h != target).cloned().collect()
            };
            if !mine.is_empty() {
                let len = mine.len();
                mine.rotate_left(next_holder % len);
            }
            if known_down {
                next_holder += 1;
            }
            ReplicaPlan {
                target: target.clone(),
                known_down,
                holders: mine,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn holders(p: &ReplicaPlan) -> Vec<&str> {
        p.holders.iter().map(String::as_str).collect()
    }

    #[test]
    fn all_up_each_replica_falls_back_past_the_list_then_to_live_replicas() {
        let p = plan(
            &walk(&["n1", "n2", "n3", "n4", "n5"]),
            3,
            "n1",
            |_| false,
            true,
        );
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|r| !r.known_down));
        assert!(p[0].holders.is_empty(), "no hint addressed to ourselves");
        assert_eq!(holders(&p[1]), ["n4", "n5", "n1", "n3"]);
        assert_eq!(holders(&p[2]), ["n4", "n5", "n1", "n2"]);
    }

    #[test]
    fn two_replicas_down_their_hints_start_at_different_holders() {
        let down = |n: &str| n == "n2" || n == "n3";
        let p = plan(&walk(&["n1", "n2", "n3", "n4", "n5"]), 3, "n1", down, true);
        assert!(p[1].known_down && p[2].known_down);
        assert_eq!(holders(&p[1]), ["n4", "n5", "n1"]);
        assert_eq!(holders(&p[2]), ["n5", "n1", "n4"], "rotated by one");
    }

    #[test]
    fn a_down_node_past_the_list_holds_nothing_and_no_handoff_means_no_holders() {
        let down = |n: &str| n == "n4";
        let p = plan(&walk(&["n1", "n2", "n3", "n4"]), 3, "n2", down, true);
        assert_eq!(holders(&p[0]), ["n2", "n3"], "n4 is down");
        let p = plan(&walk(&["n1", "n2", "n3", "n4"]), 3, "n2", |_| false, false);
        assert!(p.iter().all(|r| r.holders.is_empty()));
    }

    #[test]
    fn a_coordinator_outside_the_list_only_asks_others() {
        let p = plan(
            &walk(&["n1", "n2", "n3", "n4"]),
            3,
            "n4",
            |n| n == "n1",
            true,
        );
        assert!(p[0].known_down);
        assert_eq!(holders(&p[0]), ["n4", "n2", "n3"]);
    }
}
