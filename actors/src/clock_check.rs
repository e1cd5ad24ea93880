//! Whose clock is wrong: the decision a node takes from the clock offsets
//! gossip measured. Pure.
//!
//! Every gossip answer carries the answering peer's wall clock in its own
//! entry, so each exchange this node started measures one peer's offset (its
//! clock minus ours; network delay on a LAN is far below the allowed drift).
//! Offsets are measured only on exchanges this node started, to the address
//! the configuration names: a process that merely connects to us cannot feed
//! us clock samples.
//!
//! When fewer than half of the members (counting this node) agree with our
//! clock within the allowed drift, our clock is the outlier, and the median
//! offset of the others is the cluster's time as far as we can tell.

/// The offset (ms) to add to our clock to get the cluster's time: 0 when our
/// clock agrees with at least half of the members (counting us), else the
/// median of the live peers' offsets.
pub fn cluster_offset(live_offsets: &[i64], max_drift_ms: i64) -> i64 {
    let agree = live_offsets
        .iter()
        .filter(|o| o.unsigned_abs() <= max_drift_ms.unsigned_abs())
        .count();
    let outlier = (agree + 1) * 2 < live_offsets.len() + 1;
    if !outlier {
        return 0;
    }
    let mut sorted = live_offsets.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_that_agrees_with_us_means_no_correction() {
        assert_eq!(cluster_offset(&[], 5_000), 0);
        assert_eq!(cluster_offset(&[10, -20, 90_000], 5_000), 0);
        assert_eq!(
            cluster_offset(&[90_000, 10], 5_000),
            0,
            "a tie keeps our clock"
        );
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        assert_eq!(cluster_offset(&[i64::MIN, i64::MIN], 5_000), i64::MIN);
        assert_eq!(cluster_offset(&[i64::MIN, 0, 1], 5_000), 0);
    }

    #[test]
    fn an_outlier_takes_the_median_of_the_others() {
        assert_eq!(
            cluster_offset(&[60_000, 60_010, 59_990, 60_005], 5_000),
            60_005
        );
        assert_eq!(cluster_offset(&[-120_000, -119_000], 5_000), -119_000);
    }
}
