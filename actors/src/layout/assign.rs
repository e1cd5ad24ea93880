//! Which nodes replicate which partition: a deterministic, balanced
//! assignment of N distinct nodes to each of the Q partitions, computed from
//! the members (with capacity weights) and, for a change, from the previous
//! assignment, moving as few replicas as possible.
//!
//! 1. **Targets.** Each node should hold `Q·N·weight/Σweight` partition
//!    replicas, rounded by largest remainder (ties to the lower id), and at
//!    most Q (a node holds a partition once). The targets sum to `Q·N`.
//! 2. **Keep.** A partition keeps every replica of the previous assignment
//!    that is still a member with a positive target.
//! 3. **Fill.** Partitions short of N replicas take, in partition order, the
//!    node that is furthest below its target, ties broken by the node's
//!    rendezvous score for that partition ([`score`]: xxHash64 of the
//!    partition and the node id), so an initial assignment is spread
//!    pseudo-randomly and the same on every machine.
//! 4. **Balance.** While some node holds more than its target and another
//!    fewer, one replica moves from the first to the second, on the partition
//!    (holding the first, not the second) where the second scores highest.
//!    Each move brings both nodes closer to their targets, so a change moves
//!    only what balance requires: adding a 4th node to 3 moves exactly its
//!    target, ¼ of the replicas.
//!
//! With equal weights every node ends at `⌊Q·N/k⌋` or `⌈Q·N/k⌉` replicas.
//! Pure: the same members, N, Q and previous assignment give the same result.

use super::partition::{count, PartitionId};
use std::collections::HashMap;

/// Seed of the rendezvous scores (`"ringkv-p"` read as a number).
pub const SCORE_SEED: u64 = 0x7269_6e67_6b76_2d70;

/// A member and its capacity weight (0: holds nothing, e.g. leaving).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub weight: u32,
}

impl Member {
    pub fn new(id: impl Into<String>) -> Member {
        Member {
            id: id.into(),
            weight: 1,
        }
    }
}

/// The rendezvous score of `node` for partition `p`: xxHash64, seed
/// [`SCORE_SEED`], of `p` (big-endian) followed by the id's bytes.
pub fn score(p: PartitionId, node: &str) -> u64 {
    let mut buf = Vec::with_capacity(4 + node.len());
    buf.extend_from_slice(&p.to_be_bytes());
    buf.extend_from_slice(node.as_bytes());
    twox_hash::XxHash64::oneshot(SCORE_SEED, &buf)
}

/// Replicas per partition that `members` can hold: N, or fewer nodes.
pub fn replicas_per_partition(members: &[Member], n: usize) -> usize {
    n.min(members.iter().filter(|m| m.weight > 0).count())
}

/// Each member's target number of partition replicas, in `members` order.
pub fn targets(members: &[Member], n: usize, bits: u8) -> Vec<usize> {
    let q = count(bits) as u128;
    let total = q * replicas_per_partition(members, n) as u128;
    let mut target = vec![0u128; members.len()];
    let mut capped = vec![false; members.len()];
    loop {
        let open: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].weight > 0 && !capped[i])
            .collect();
        let left = total
            - (0..members.len())
                .filter(|&i| capped[i])
                .map(|i| target[i])
                .sum::<u128>();
        let weight: u128 = open.iter().map(|&i| u128::from(members[i].weight)).sum();
        if open.is_empty() || weight == 0 {
            break;
        }
        let mut share: Vec<(usize, u128, u128)> = open
            .iter()
            .map(|&i| {
                let exact = left * u128::from(members[i].weight);
                (i, exact / weight, exact % weight)
            })
            .collect();
        let given: u128 = share.iter().map(|s| s.1).sum();
        // Largest remainder, ties to the lower id.
        share.sort_by(|a, b| b.2.cmp(&a.2).then(members[a.0].id.cmp(&members[b.0].id)));
        for s in share.iter_mut().take((left - given) as usize) {
            s.1 += 1;
        }
        let over: Vec<usize> = share.iter().filter(|s| s.1 > q).map(|s| s.0).collect();
        if over.is_empty() {
            for (i, t, _) in share {
                target[i] = t;
            }
            break;
        }
        // A node holds a partition once: cap it at Q and share the rest
        // among the others.
        for i in over {
            target[i] = q;
            capped[i] = true;
        }
    }
    target.into_iter().map(|t| t as usize).collect()
}

/// The assignment: per partition, indices into `members`.
pub fn assign(
    members: &[Member],
    n: usize,
    bits: u8,
    previous: Option<&[Vec<String>]>,
) -> Vec<Vec<usize>> {
    let q = count(bits) as usize;
    let n = replicas_per_partition(members, n);
    let target = targets(members, n, bits);
    let index: HashMap<&str, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let mut held = vec![0usize; members.len()];
    // 2. Keep.
    let mut slots: Vec<Vec<usize>> = (0..q)
        .map(|p| {
            let mut keep = Vec::with_capacity(n);
            if let Some(prev) = previous.and_then(|prev| prev.get(p)) {
                for id in prev {
                    if let Some(&i) = index.get(id.as_str()) {
                        if target[i] > 0 && !keep.contains(&i) && keep.len() < n {
                            keep.push(i);
                        }
                    }
                }
            }
            for &i in &keep {
                held[i] += 1;
            }
            keep
        })
        .collect();
    // 3. Fill.
    for (p, slot) in slots.iter_mut().enumerate() {
        while slot.len() < n {
            let best = (0..members.len())
                .filter(|i| target[*i] > 0 && !slot.contains(i))
                .max_by_key(|&i| {
                    let deficit = target[i] as i64 - held[i] as i64;
                    (deficit, score(p as PartitionId, &members[i].id))
                })
                .expect("n is at most the nodes with a positive weight");
            held[best] += 1;
            slot.push(best);
        }
    }
    // 4. Balance.
    let mut moves_left = q * n * 2;
    while moves_left > 0 {
        moves_left -= 1;
        let Some((p, pos, to)) = best_move(members, &slots, &held, &target) else {
            break;
        };
        let from = slots[p][pos];
        held[from] -= 1;
        held[to] += 1;
        slots[p][pos] = to;
    }
    slots
}

/// The next move of step 4: (partition, position in it, node to put there).
fn best_move(
    members: &[Member],
    slots: &[Vec<usize>],
    held: &[usize],
    target: &[usize],
) -> Option<(usize, usize, usize)> {
    let excess = |i: usize| held[i] as i64 - target[i] as i64;
    let mut over: Vec<usize> = (0..members.len()).filter(|&i| excess(i) > 0).collect();
    let mut under: Vec<usize> = (0..members.len()).filter(|&i| excess(i) < 0).collect();
    over.sort_by_key(|&i| (std::cmp::Reverse(excess(i)), i));
    under.sort_by_key(|&i| (excess(i), i));
    for &from in &over {
        for &to in &under {
            let found = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.contains(&from) && !s.contains(&to))
                .max_by_key(|(p, _)| score(*p as PartitionId, &members[to].id))
                .map(|(p, s)| (p, s.iter().position(|&x| x == from).expect("holds it")));
            if let Some((p, pos)) = found {
                return Some((p, pos, to));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter().map(|id| Member::new(*id)).collect()
    }

    fn ids(m: &[Member], a: &[Vec<usize>]) -> Vec<Vec<String>> {
        a.iter()
            .map(|s| s.iter().map(|&i| m[i].id.clone()).collect())
            .collect()
    }

    fn held(a: &[Vec<usize>], nodes: usize) -> Vec<usize> {
        let mut h = vec![0; nodes];
        for s in a {
            for &i in s {
                h[i] += 1;
            }
        }
        h
    }

    /// Replicas that changed node between two assignments (by id).
    fn moved(before: &[Vec<String>], after: &[Vec<String>]) -> usize {
        before
            .iter()
            .zip(after)
            .map(|(b, a)| a.iter().filter(|x| !b.contains(x)).count())
            .sum()
    }

    #[test]
    fn every_partition_gets_n_distinct_nodes_and_shares_are_even() {
        for k in 1..=7 {
            let m: Vec<Member> = (1..=k).map(|i| Member::new(format!("n{i}"))).collect();
            let a = assign(&m, 3, 8, None);
            let n = 3.min(k);
            assert_eq!(a.len(), 256);
            for s in &a {
                let mut d = s.clone();
                d.sort();
                d.dedup();
                assert_eq!(d.len(), n, "{s:?}");
            }
            let h = held(&a, k);
            let (lo, hi) = (256 * n / k, (256 * n).div_ceil(k));
            assert!(h.iter().all(|&x| x == lo || x == hi), "{k} nodes: {h:?}");
        }
    }

    #[test]
    fn the_assignment_is_a_function_of_the_members_not_their_order() {
        let a = members(&["a", "b", "c", "d"]);
        let mut b = a.clone();
        b.reverse();
        b.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(
            ids(&a, &assign(&a, 3, 6, None)),
            ids(&b, &assign(&b, 3, 6, None))
        );
    }

    #[test]
    fn adding_a_node_moves_exactly_its_share() {
        let three = members(&["n1", "n2", "n3"]);
        let before = ids(&three, &assign(&three, 3, 8, None));
        let four = members(&["n1", "n2", "n3", "n4"]);
        let after = ids(&four, &assign(&four, 3, 8, Some(&before)));
        assert_eq!(moved(&before, &after), 256 * 3 / 4, "¼ of the replicas");
        let five = members(&["n1", "n2", "n3", "n4", "n5"]);
        let fifth = ids(&five, &assign(&five, 3, 8, Some(&after)));
        let ideal = 256 * 3 / 5;
        let m = moved(&after, &fifth);
        assert!(m.abs_diff(ideal) <= 1, "{m} vs {ideal}");
    }

    #[test]
    fn removing_a_node_moves_only_its_replicas() {
        let four = members(&["n1", "n2", "n3", "n4"]);
        let before = ids(&four, &assign(&four, 3, 8, None));
        let three = members(&["n1", "n2", "n4"]);
        let after = ids(&three, &assign(&three, 3, 8, Some(&before)));
        let held_by_n3 = before
            .iter()
            .filter(|s| s.contains(&"n3".to_string()))
            .count();
        assert_eq!(moved(&before, &after), held_by_n3);
        assert!(after.iter().all(|s| !s.contains(&"n3".to_string())));
    }

    #[test]
    fn weights_scale_shares_and_a_zero_weight_holds_nothing() {
        let mut m = members(&["a", "b", "c", "d"]);
        m[0].weight = 2;
        m[3].weight = 0;
        let a = assign(&m, 2, 8, None);
        let h = held(&a, 4);
        assert_eq!(h[3], 0);
        assert_eq!(h.iter().sum::<usize>(), 512);
        assert!(h[0].abs_diff(256) <= 1 && h[1].abs_diff(128) <= 1, "{h:?}");
        // A target above Q is capped at Q: a node holds a partition once.
        let mut m = members(&["big", "x", "y"]);
        m[0].weight = 100;
        let t = targets(&m, 2, 4);
        assert_eq!(t, vec![16, 8, 8]);
    }
}
